//! The dispatch of every request (the log, the gate, the token, the
//! timeline of writes) and the endpoints that read: authenticate, list,
//! key; the writes are in `writes`. Each answers as the specification says.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::gate::{Write, WriteKind};
use crate::writes::{delete, insert};
use crate::{Response, State};

pub(crate) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
pub(crate) const MANAGER: (&str, &str, &str) = ("000", "wazuh-manager", "127.0.0.1");

pub(crate) async fn handle(state: &Arc<Mutex<State>>, request: Request<Incoming>) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let auth = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (response, write, delay) = answer(state, &method, &path, &query, &auth, &body);
    if let Some(index) = write {
        // The answer leaves after the delay, without holding the state:
        // other requests meanwhile show up as overlapping writes.
        tokio::time::sleep(delay).await;
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        let finished = s.event();
        if let Some(w) = s.timeline.get_mut(index) {
            w.finished = finished;
        }
    }
    response
}

/// The answer, under the state's lock; for a write, its place in the
/// timeline and how long to hold its answer.
fn answer(
    state: &Arc<Mutex<State>>,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    auth: &str,
    body: &[u8],
) -> (Response, Option<usize>, Duration) {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let mut delay = s.write_delay;
    s.log.push(match request_query(query) {
        q if q.is_empty() => format!("{method} {path}"),
        q => format!("{method} {path}?{q}"),
    });
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let authentication = method == Method::POST && segments == ["security", "user", "authenticate"];
    if let Some(answer) = s.gate(path, authentication) {
        return (answer, None, delay);
    }
    if authentication {
        return (authenticate(&mut s, auth), None, delay);
    }
    let token = auth.strip_prefix("Bearer ").unwrap_or("");
    let budget = s.token_budget;
    match s
        .tokens
        .iter_mut()
        .find(|(t, _)| !token.is_empty() && t == token)
    {
        Some((_, used)) if budget.is_none_or(|b| *used < b) => *used += 1,
        _ => {
            let e = error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Invalid token",
                401,
            );
            return (e, None, delay);
        }
    }
    let write = write_kind(method, &segments, body).map(|kind| {
        let started = s.event();
        let ids = match kind {
            WriteKind::Delete => param(query, "agents_list").unwrap_or("").to_owned(),
            _ => serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|b| b.get("id").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default(),
        };
        let slow = s
            .slow_writes
            .iter()
            .find(|(i, _)| *i == ids)
            .map(|(_, d)| *d);
        delay = slow.unwrap_or(delay);
        s.timeline.push(Write {
            kind,
            ids,
            started,
            finished: 0,
        });
        s.timeline.len() - 1
    });
    let response = match (method, segments.as_slice()) {
        (&Method::GET, ["agents"]) => list(&s, query),
        (&Method::GET, ["agents", id, "key"]) => key(&s, id),
        (&Method::POST, ["agents", "insert"]) => insert(&mut s, query, body),
        (&Method::DELETE, ["agents"]) => delete(&mut s, query),
        _ => error(
            StatusCode::NOT_FOUND,
            "Not Found",
            "The requested URL was not found on the server.",
            404,
        ),
    };
    (response, write, delay)
}

/// Which write a request is, if it is one.
fn write_kind(method: &Method, segments: &[&str], body: &[u8]) -> Option<WriteKind> {
    match (method, segments) {
        (&Method::DELETE, ["agents"]) => Some(WriteKind::Delete),
        (&Method::POST, ["agents", "insert"]) => {
            let force = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|b| b.pointer("/force/enabled").and_then(Value::as_bool))
                // The specification's default for `force.enabled`.
                .unwrap_or(true);
            Some(if force {
                WriteKind::Replace
            } else {
                WriteKind::Insert
            })
        }
        _ => None,
    }
}

fn request_query(query: &[(String, String)]) -> String {
    query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

pub(crate) fn respond(status: StatusCode, body: Value) -> Response {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

pub(crate) fn error(status: StatusCode, title: &str, detail: &str, code: i64) -> Response {
    respond(
        status,
        json!({"title": title, "detail": detail, "error": code}),
    )
}

fn authenticate(s: &mut State, auth: &str) -> Response {
    let expected = format!("{}:{}", s.user, s.password);
    let given = auth
        .strip_prefix("Basic ")
        .and_then(|b| B64.decode(b).ok())
        .unwrap_or_default();
    if given != expected.as_bytes() {
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Invalid credentials",
            401,
        );
    }
    s.serial += 1;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = format!(
        "{}.{}.{}",
        b64url.encode(r#"{"alg":"ES512","typ":"JWT"}"#),
        b64url.encode(json!({"iss": "wazuh", "sub": s.user, "run_as": false, "rbac_roles": [1], "n": s.serial}).to_string()),
        b64url.encode(format!("stand-in signature {}", s.serial)),
    );
    s.tokens.push((token.clone(), 0));
    s.logins += 1;
    respond(
        StatusCode::OK,
        json!({"data": {"token": token}, "error": 0}),
    )
}

/// Refuses any parameter the endpoint does not define, as the API does.
pub(crate) fn check_params(query: &[(String, String)], allowed: &[&str]) -> Option<Response> {
    query
        .iter()
        .find(|(k, _)| !allowed.contains(&k.as_str()))
        .map(|(k, _)| {
            error(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                &format!("Invalid field found {{'{k}'}}"),
                400,
            )
        })
}

pub(crate) fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub(crate) fn items(
    affected: Vec<Value>,
    total: usize,
    failed: BTreeMap<(i64, String), Vec<String>>,
) -> Value {
    let failed_count: usize = failed.values().map(Vec::len).sum();
    let error = match (affected.is_empty(), failed_count) {
        (_, 0) => 0,
        (false, _) => 1,
        (true, _) => 2,
    };
    let failed_items: Vec<Value> = failed
        .into_iter()
        .map(|((code, message), ids)| json!({"error": {"code": code, "message": message, "remediation": "(stand-in)"}, "id": ids}))
        .collect();
    json!({
        "data": {
            "affected_items": affected,
            "total_affected_items": total,
            "total_failed_items": failed_count,
            "failed_items": failed_items,
        },
        "message": if error == 0 { "All selected items were returned" } else { "Some items were not returned" },
        "error": error,
    })
}

pub(crate) fn not_found() -> (i64, String) {
    (1701, "Agent does not exist".to_owned())
}

fn list(s: &State, query: &[(String, String)]) -> Response {
    if let Some(r) = check_params(
        query,
        &[
            "offset",
            "limit",
            "select",
            "sort",
            "agents_list",
            "q",
            "pretty",
            "wait_for_complete",
        ],
    ) {
        return r;
    }
    // `q` filters before paging; the stand-in knows the one filter keygate
    // sends (every agent but the manager).
    let without_manager = match param(query, "q") {
        None => false,
        Some("id!=000") => true,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                "the stand-in supports q=id!=000 only",
                400,
            )
        }
    };
    let offset: usize = param(query, "offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit: usize = match param(query, "limit").map(str::parse) {
        None => 500,
        Some(Ok(l)) if (1..=100_000).contains(&l) => l,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                "limit must be between 1 and 100000",
                400,
            )
        }
    };
    let select: Vec<&str> = param(query, "select").map_or_else(
        || vec!["id", "name", "ip", "registerIP"],
        |s| s.split(',').collect(),
    );
    if let Some(bad) = select
        .iter()
        .find(|f| !["id", "name", "ip", "registerIP", "status"].contains(f))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            &format!("Field '{bad}' does not exist"),
            1724,
        );
    }
    if !matches!(param(query, "sort"), None | Some("+id") | Some("id")) {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "the stand-in sorts by id only",
            400,
        );
    }
    let render = |id: &str, name: &str, ip: &str| {
        let mut item = serde_json::Map::new();
        item.insert("id".into(), json!(id));
        for field in &select {
            match *field {
                "name" => item.insert("name".into(), json!(name)),
                "ip" | "registerIP" => item.insert((*field).into(), json!(ip)),
                "status" => item.insert("status".into(), json!("active")),
                _ => None,
            };
        }
        Value::Object(item)
    };
    let mut all: Vec<Value> = Vec::new();
    let mut failed = BTreeMap::new();
    match param(query, "agents_list") {
        Some(list) => {
            for id in list.split(',') {
                if id == MANAGER.0 && without_manager {
                    continue;
                } else if id == MANAGER.0 {
                    all.push(render(MANAGER.0, MANAGER.1, MANAGER.2));
                } else if let Some(a) = s.agents.get(id) {
                    all.push(render(id, &a.name, &a.ip));
                } else {
                    failed
                        .entry(not_found())
                        .or_insert_with(Vec::new)
                        .push(id.to_owned());
                }
            }
            all.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        }
        None => {
            if !without_manager {
                all.push(render(MANAGER.0, MANAGER.1, MANAGER.2));
            }
            all.extend(s.agents.iter().map(|(id, a)| render(id, &a.name, &a.ip)));
        }
    }
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    respond(StatusCode::OK, items(page, total, failed))
}

fn key(s: &State, id: &str) -> Response {
    match s.agents.get(id) {
        Some(a) => {
            let line = format!("{id} {} {} {}", a.name, a.ip, a.key);
            respond(
                StatusCode::OK,
                items(
                    vec![json!({"id": id, "key": B64.encode(line)})],
                    1,
                    BTreeMap::new(),
                ),
            )
        }
        None => {
            let mut failed = BTreeMap::new();
            failed.insert(not_found(), vec![id.to_owned()]);
            respond(StatusCode::OK, items(Vec::new(), 0, failed))
        }
    }
}
