//! `keygate-bench wazuh-standin`: the Wazuh API stand-in as a process, for
//! `bench.sh sync` (it writes its CA and prints its URL, then serves until
//! killed), optionally holding `gen`'s agents already and with the API's
//! rate limit switched on; `keygate-bench inventory`: the inventory (CMDB)
//! stand-in with the generated agents, for `bench.sh http`.

use std::time::Duration;

use anyhow::Result;
use clap::Args;

/// `wazuh-standin` options.
#[derive(Args)]
pub struct StandinArgs {
    /// Where to write the stand-in's CA certificate (PEM).
    #[arg(long)]
    ca: std::path::PathBuf,
    /// The API user.
    #[arg(long, default_value = "keygate")]
    user: String,
    /// The API password.
    #[arg(long)]
    password: String,
    /// Agents registered at start (`gen`'s agents 1..=N).
    #[arg(long, default_value_t = 0)]
    agents: u32,
    /// The API's rate limit: at most this many calls (authentication
    /// excepted) per `--window`, HTTP 429 beyond (Wazuh: 300 a minute).
    #[arg(long)]
    limit: Option<usize>,
    /// The rate limit's window (Wazuh: a minute; shorter to scale a run).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    window: Duration,
}

/// Serves until killed.
pub fn main(a: StandinArgs) -> Result<()> {
    let standin = keygate_wazuh_standin::StandIn::start(&a.user, &a.password);
    for i in 1..=a.agents {
        let (id, name, ip, key) = crate::gen::agent(i);
        standin.put(&id, &name, &ip, &key);
    }
    if let Some(limit) = a.limit {
        standin.set_rate_limit(limit, a.window);
    }
    standin.write_ca(&a.ca);
    println!("{}", standin.url());
    std::io::Write::flush(&mut std::io::stdout())?;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// `inventory` options.
#[derive(Args)]
pub struct InventoryArgs {
    /// Where to write the inventory's CA certificate (PEM).
    #[arg(long)]
    ca: std::path::PathBuf,
    /// How many generated agents it serves (`gen`'s agents 1..=N).
    #[arg(long, default_value_t = 100_000)]
    count: u32,
}

/// Serves the generated agents until killed.
pub fn inventory(a: InventoryArgs) -> Result<()> {
    let agents: Vec<(String, String, String, String)> =
        (1..=a.count).map(crate::gen::agent).collect();
    let refs: Vec<(&str, &str, &str, &str)> = agents
        .iter()
        .map(|x| (x.0.as_str(), x.1.as_str(), x.2.as_str(), x.3.as_str()))
        .collect();
    let inventory = keygate_wazuh_standin::inventory::Inventory::cmdb(&refs);
    inventory.write_ca(&a.ca);
    println!("{}", inventory.url());
    std::io::Write::flush(&mut std::io::stdout())?;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
