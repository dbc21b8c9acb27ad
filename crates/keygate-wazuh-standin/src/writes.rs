//! The endpoints that write: `POST /agents/insert` with the key, id and
//! `force` rules of the specification, and `DELETE /agents` with its
//! `older_than` default of 7 days and `000` refused.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::StatusCode;
use serde_json::{json, Value};

use crate::handlers::{check_params, error, items, not_found, param, respond, B64, MANAGER};
use crate::{Agent, Response, State};

/// `1h`, `30m`, `0s`, `7d`, or plain seconds.
fn duration(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    Some(Duration::from_secs(n * scale))
}

pub(crate) fn insert(s: &mut State, query: &[(String, String)], body: &[u8]) -> Response {
    if let Some(r) = check_params(query, &["pretty", "wait_for_complete"]) {
        return r;
    }
    let bad = |detail: &str| error(StatusCode::BAD_REQUEST, "Bad Request", detail, 400);
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return bad("Invalid JSON body");
    };
    let text = |k: &str| body.get(k).and_then(Value::as_str);
    let (Some(id), Some(name), Some(ip), Some(key)) =
        (text("id"), text("name"), text("ip"), text("key"))
    else {
        return bad("id, name, ip and key are required strings here");
    };
    if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return bad("'key' is not a 'wazuh_key': exactly 64 alphanumeric characters are required");
    }
    if id.len() < 3 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return bad("'id' is not a 'numbers' of at least 3 digits");
    }
    if id == MANAGER.0 {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "Operation not allowed on the manager",
            1703,
        );
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return bad("'name' is not a 'names'");
    }
    if ip != "any" && ip.parse::<std::net::IpAddr>().is_err() && !ip.contains('/') {
        return bad("'ip' is not an IP address, a network or 'any'");
    }
    // The specification's defaults for `force`.
    let force = body.get("force");
    let flag = |v: Option<&Value>, default: bool| v.and_then(Value::as_bool).unwrap_or(default);
    let enabled = flag(force.and_then(|f| f.get("enabled")), true);
    let disconnected = force.and_then(|f| f.get("disconnected_time"));
    let disconnected_enabled = flag(disconnected.and_then(|d| d.get("enabled")), true);
    let after = force
        .and_then(|f| f.get("after_registration_time"))
        .and_then(Value::as_str)
        .unwrap_or("1h");
    let Some(after) = duration(after) else {
        return bad("'after_registration_time' is not a time");
    };
    let clashes: Vec<(String, i64, &str)> = s
        .agents
        .iter()
        .filter_map(|(other, a)| {
            if other == id {
                Some((other.clone(), 1708, "There is an agent with the same ID"))
            } else if a.name == name {
                Some((other.clone(), 1705, "There is an agent with the same name"))
            } else if ip != "any" && a.ip == ip {
                Some((other.clone(), 1706, "There is an agent with the same IP"))
            } else {
                None
            }
        })
        .collect();
    if let Some((_, code, message)) = clashes.first() {
        if !enabled {
            return error(StatusCode::BAD_REQUEST, "Bad Request", message, *code);
        }
        for (other, _, _) in &clashes {
            let a = &s.agents[other];
            // Every stand-in agent counts as connected: a `disconnected_time`
            // condition never holds.
            if disconnected_enabled || a.registered.elapsed() < after {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Bad Request",
                    &format!("{message}; the force conditions (disconnected_time, after_registration_time) do not allow replacing it"),
                    *code,
                );
            }
        }
        for (other, _, _) in clashes {
            s.agents.remove(&other);
        }
    }
    s.agents.insert(
        id.to_owned(),
        Agent {
            name: name.into(),
            ip: ip.into(),
            key: key.into(),
            registered: Instant::now(),
        },
    );
    s.writes += 1;
    let line = format!("{id} {name} {ip} {key}");
    respond(
        StatusCode::OK,
        json!({"data": {"id": id, "key": B64.encode(line)}, "error": 0}),
    )
}

pub(crate) fn delete(s: &mut State, query: &[(String, String)]) -> Response {
    if let Some(r) = check_params(
        query,
        &[
            "agents_list",
            "status",
            "older_than",
            "purge",
            "pretty",
            "wait_for_complete",
        ],
    ) {
        return r;
    }
    let Some(list) = param(query, "agents_list") else {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "agents_list is required",
            400,
        );
    };
    if param(query, "status").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "status is required",
            400,
        );
    }
    let Some(older_than) = duration(param(query, "older_than").unwrap_or("7d")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "older_than is not a time",
            400,
        );
    };
    let mut affected = Vec::new();
    let mut failed = BTreeMap::new();
    for id in list.split(',') {
        if id == MANAGER.0 {
            failed
                .entry((1703, "Operation not allowed on the manager".to_owned()))
                .or_insert_with(Vec::new)
                .push(id.to_owned());
        } else if let Some(a) = s.agents.get(id) {
            if a.registered.elapsed() >= older_than {
                s.agents.remove(id);
                s.writes += 1;
                affected.push(json!(id));
            }
        } else {
            failed
                .entry(not_found())
                .or_insert_with(Vec::new)
                .push(id.to_owned());
        }
    }
    let total = affected.len();
    respond(StatusCode::OK, items(affected, total, failed))
}
