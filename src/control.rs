//! The control socket: admin commands for a running daemon (`keygate cache
//! flush|stats`, `keygate backends`, `keygate reload`). It is a separate
//! socket with mode 0600; Wazuh's socket never accepts these commands.
//!
//! Protocol: the client sends one command line, the daemon answers with
//! one JSON object and closes.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use keygate_core::Request;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use crate::out::{errln, outln};
use crate::serve::Daemon;

/// Serves admin commands until the task is aborted.
pub async fn serve(listener: UnixListener, daemon: Arc<Daemon>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            };
            let command = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
            let reply = execute(&daemon, &command).await;
            let _ = stream.write_all(reply.to_string().as_bytes()).await;
        });
    }
}

async fn execute(daemon: &Daemon, command: &str) -> Value {
    let words: Vec<&str> = command.split_whitespace().collect();
    let admin = daemon.admin.load_full();
    match words.as_slice() {
        ["reload"] => match daemon.reload().await {
            Ok(message) => json!({"ok": true, "message": message}),
            Err(problems) => json!({"ok": false, "errors": problems}),
        },
        ["cache", "stats"] => match &admin.cache {
            Some(cache) => {
                cache.run_pending_tasks().await;
                let s = cache.stats();
                json!({"ok": true, "stats": {
                    "entries": s.entries, "hits": s.hits, "negative_hits": s.negative_hits,
                    "misses": s.misses, "stale_served": s.stale_served,
                    "coalesced_waits": s.coalesced_waits, "refreshes": s.refreshes,
                }})
            }
            None => {
                json!({"ok": false, "errors": ["the cache is disabled ([cache] enabled = false)"]})
            }
        },
        ["cache", "flush"] => match &admin.cache {
            Some(cache) => {
                cache.flush_all().await;
                tracing::info!("Cache flushed.");
                json!({"ok": true, "message": "flushed every entry"})
            }
            None => {
                json!({"ok": false, "errors": ["the cache is disabled ([cache] enabled = false)"]})
            }
        },
        ["cache", "flush", query] => match (&admin.cache, Request::parse(query.as_bytes())) {
            (None, _) => {
                json!({"ok": false, "errors": ["the cache is disabled ([cache] enabled = false)"]})
            }
            (_, Err(e)) => json!({"ok": false, "errors": [format!("{query}: {e}")]}),
            (Some(cache), Ok(q)) => {
                let found = cache.flush(&q).await;
                tracing::info!(query = %q, found, "Cache entry flushed.");
                json!({"ok": true, "message": if found { format!("flushed {q}") } else { format!("{q} was not cached") }})
            }
        },
        ["backends"] => {
            let list: Vec<Value> = admin
                .breakers
                .iter()
                .map(|b| {
                    let s = b.snapshot();
                    json!({
                        "name": s.name, "state": s.state.as_str(), "last_error": s.last_error,
                        "host": s.current_host,
                        "lookups": s.lookups, "skipped": s.skipped,
                        "consecutive_failures": s.consecutive_failures,
                        "p50_ms": s.p50.map(|d| d.as_secs_f64() * 1000.0),
                        "p99_ms": s.p99.map(|d| d.as_secs_f64() * 1000.0),
                    })
                })
                .collect();
            json!({"ok": true, "backends": list})
        }
        _ => json!({"ok": false, "errors": [format!(
            "unknown command {command:?}; expected: reload | cache stats | cache flush [id:N|ip:A] | backends"
        )]}),
    }
}

/// The CLI side: sends `command` to the daemon named by the config and
/// prints the answer for a person. Exit code 1 when the daemon refuses.
pub fn client(config_path: &Path, command: &str) -> ExitCode {
    let socket = keygate_config::control_socket_of(config_path);
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        errln!("keygate: cannot start the runtime");
        return ExitCode::FAILURE;
    };
    let raw = match runtime.block_on(keygate_server::client::ask(
        &socket,
        command.as_bytes(),
        Duration::from_secs(60),
    )) {
        Ok(raw) => raw,
        Err(e) => {
            errln!(
                "keygate: cannot reach the daemon's control socket {}: {e}",
                socket.display()
            );
            return ExitCode::from(69);
        }
    };
    let Ok(v) = serde_json::from_slice::<Value>(&raw) else {
        errln!("keygate: unreadable answer from the daemon");
        return ExitCode::FAILURE;
    };
    if v["ok"] != json!(true) {
        for e in v["errors"].as_array().into_iter().flatten() {
            errln!("{}", e.as_str().unwrap_or_default());
        }
        return ExitCode::FAILURE;
    }
    if let Some(m) = v["message"].as_str() {
        outln!("{m}");
    }
    if let Some(stats) = v["stats"].as_object() {
        for (k, n) in stats {
            outln!("{k:<16} {n}");
        }
    }
    if let Some(list) = v["backends"].as_array() {
        outln!(
            "{:<20} {:<8} {:>9} {:>8} {:>9} {:>9}  {:<40}  LAST ERROR",
            "BACKEND",
            "STATE",
            "LOOKUPS",
            "SKIPPED",
            "P50",
            "P99",
            "HOST"
        );
        for b in list {
            let ms = |x: &Value| {
                x.as_f64()
                    .map_or_else(|| "-".to_owned(), |m| format!("{m:.2}ms"))
            };
            outln!(
                "{:<20} {:<8} {:>9} {:>8} {:>9} {:>9}  {:<40}  {}",
                b["name"].as_str().unwrap_or_default(),
                b["state"].as_str().unwrap_or_default(),
                b["lookups"],
                b["skipped"],
                ms(&b["p50_ms"]),
                ms(&b["p99_ms"]),
                b["host"].as_str().unwrap_or("-"),
                b["last_error"].as_str().unwrap_or("")
            );
        }
    }
    ExitCode::SUCCESS
}
