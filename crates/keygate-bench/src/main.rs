//! keygate-bench: load that looks exactly like Wazuh's client.
//!
//! Each of N client threads loops: connect, ONE send without terminator,
//! ONE recv of at most 64 KiB, close, for a fixed duration. Requests come
//! from a file (`id:...` / `ip:...` lines) or are generated, uniform or
//! Zipf-distributed over an id range. The report gives throughput, p50, p99
//! and max latency, replies by error code, and failed connections.
//!
//! `--floor` also runs the same load against a built-in responder that
//! returns a fixed reply without any lookup, in the same invocation: the
//! real floor is plain threads blocking in `accept()` (accept, one read,
//! one write, close; no async runtime), and `--floor blocking,tokio` adds a
//! tokio responder as a second, labelled reference.
//! `exec` times `keygate --config F id X` runs, as Wazuh's exec mode does.

mod exec;
mod floor;
mod gen;
mod load;
mod socket;
mod standin;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keygate-bench",
    about = "Wazuh-style load generator for keygate"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Socket load: N clients, one connection per request.
    Socket(socket::SocketArgs),
    /// Exec-mode timer: runs `keygate --config F id X` repeatedly.
    Exec(exec::ExecArgs),
    /// Writes N synthetic agents (ids 001.., addresses 10.x.y.z, 64-hex keys).
    Gen(gen::GenArgs),
    /// Runs the Wazuh API stand-in (for `keygate sync`) until killed:
    /// writes its CA to --ca and prints its URL.
    WazuhStandin(standin::StandinArgs),
    /// Runs an inventory (CMDB) stand-in over the generated agents (for
    /// the http backend) until killed: writes its CA to --ca and prints
    /// its URL.
    Inventory(standin::InventoryArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Socket(a) => socket::main(a),
        Cmd::Gen(a) => gen::main(a),
        Cmd::WazuhStandin(a) => standin::main(a),
        Cmd::Inventory(a) => standin::inventory(a),
        Cmd::Exec(a) => {
            if a.runs == 0 {
                bail!("--runs must be at least 1");
            }
            exec::main(a)
        }
    }
}
