//! `keygate-bench wazuh-standin`: the Wazuh API stand-in as a process, for
//! `bench.sh sync` (it writes its CA and prints its URL, then serves until
//! killed).

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
}

/// Serves until killed.
pub fn main(a: StandinArgs) -> Result<()> {
    let standin = keygate_wazuh_standin::StandIn::start(&a.user, &a.password);
    standin.write_ca(&a.ca);
    println!("{}", standin.url());
    std::io::Write::flush(&mut std::io::stdout())?;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
