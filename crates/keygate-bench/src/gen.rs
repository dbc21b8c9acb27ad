//! `gen`: synthetic agents in every backend's format. Agent `i` is always
//! the same ([`agent`]), so a load run can check every answer it gets.

use std::io::Write;

use anyhow::Result;
use clap::{Args, ValueEnum};

#[derive(Args)]
pub struct GenArgs {
    /// How many agents.
    #[arg(long, default_value_t = 100_000)]
    count: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GenFormat::ClientKeys)]
    format: GenFormat,
    /// Table name for the SQL format.
    #[arg(long, default_value = "agent")]
    table: String,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum GenFormat {
    /// Wazuh client.keys lines.
    ClientKeys,
    /// CSV with an id,name,ip,key header.
    Csv,
    /// Batched INSERTs into the documented `agent` table.
    Sql,
    /// Redis commands (HSET wazuh:agent:{id}, SET wazuh:agent-ip:{ip}).
    Redis,
    /// LDIF for slapadd: the base, the keygate service account and one
    /// device+ipHost entry per agent (the documented default mapping).
    Ldif,
}

/// Synthetic agent `i`: id (zero-padded), name, address and key.
pub fn agent(i: u32) -> (String, String, String, String) {
    let id = format!("{i:03}");
    let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    let key = format!(
        "{:016x}{:016x}{:016x}{:016x}",
        i,
        u64::from(i) * 0x9e37_79b9,
        u64::from(i) ^ 0x5555,
        u64::from(i) << 7
    );
    (id, format!("agent-{i}"), ip, key)
}

/// Writes `args.count` agents to stdout.
pub fn main(args: GenArgs) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.format == GenFormat::Csv {
        writeln!(out, "id,name,ip,key")?;
    }
    if args.format == GenFormat::Ldif {
        writeln!(out, "dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: example\n")?;
        writeln!(
            out,
            "dn: ou=services,dc=example,dc=org\nobjectClass: organizationalUnit\nou: services\n"
        )?;
        writeln!(
            out,
            "dn: cn=keygate,ou=services,dc=example,dc=org\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\ncn: keygate\nuserPassword: keygate-test-password\n"
        )?;
        writeln!(
            out,
            "dn: ou=agents,dc=example,dc=org\nobjectClass: organizationalUnit\nou: agents\n"
        )?;
    }
    for i in 1..=args.count {
        let (id, name, ip, key) = agent(i);
        match args.format {
            GenFormat::ClientKeys => writeln!(out, "{id} {name} {ip} {key}")?,
            GenFormat::Csv => writeln!(out, "{id},{name},{ip},{key}")?,
            GenFormat::Sql => {
                if (i - 1) % 1000 == 0 {
                    write!(
                        out,
                        "INSERT INTO {} (id,name,ip,agent_key) VALUES ",
                        args.table
                    )?;
                } else {
                    write!(out, ",")?;
                }
                write!(out, "('{id}','{name}','{ip}','{key}')")?;
                if i % 1000 == 0 || i == args.count {
                    writeln!(out, ";")?;
                }
            }
            GenFormat::Ldif => {
                writeln!(
                    out,
                    "dn: cn={name},ou=agents,dc=example,dc=org\nobjectClass: device\nobjectClass: ipHost\ncn: {name}\nserialNumber: {id}\nipHostNumber: {ip}\ndescription: {key}\n"
                )?;
            }
            GenFormat::Redis => {
                writeln!(
                    out,
                    "HSET wazuh:agent:{id} id {id} name {name} ip {ip} key {key}"
                )?;
                writeln!(out, "SET wazuh:agent-ip:{ip} {id}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
