//! The health check of every SQL backend: each query prepared and the
//! lookups run once with probe values, as [`check_queries`] says.

use keygate_core::BackendError;

use super::{describe_error, require_columns, Queries, SqlConnection};

/// The health check of every SQL backend: prepares both queries (one bind
/// parameter where the driver says, four columns), then runs each with a
/// probe value exactly as a lookup runs it, so a query that fails on every
/// lookup (a PostgreSQL integer column compared with the text parameter)
/// is reported here, not at the first request. `query_all`, when set, is
/// only prepared (no bind parameter, four columns): running it would read
/// every agent. Each step waits at most `limit`.
pub async fn check_queries<C: SqlConnection>(
    conn: &mut C,
    queries: Queries<'_>,
    limit: std::time::Duration,
) -> Result<(), BackendError> {
    for (key, sql, probe) in queries.with_probes() {
        // Run first, describe second: a description prepared without the
        // parameter's type would be cached by the driver (PostgreSQL) and
        // break later lookups on `$1::int`; after the run, it is the
        // statement the lookups use. When the run fails, what the server
        // says about the statement explains it best, if it says anything.
        let run = tokio::time::timeout(limit, conn.run_probe(sql, probe))
            .await
            .map_err(|_| BackendError::Timeout(limit))?;
        let described = tokio::time::timeout(limit, conn.describe_query(sql))
            .await
            .map_err(|_| BackendError::Timeout(limit))?;
        match (run, described) {
            (Ok(()), Ok((parameters, columns))) => check_described(key, parameters, columns, 1)?,
            (Ok(()), Err(e)) => return Err(query_error(key, "does not prepare", &e)),
            (Err(e), Ok((parameters, columns))) => {
                check_described(key, parameters, columns, 1)?;
                return Err(query_error(
                    key,
                    &format!("fails when run (with {probe})"),
                    &e,
                ));
            }
            (Err(e), Err(_)) => {
                return Err(query_error(
                    key,
                    &format!("fails when run (with {probe})"),
                    &e,
                ))
            }
        }
    }
    if let Some(all) = queries.query_all {
        let described = tokio::time::timeout(limit, conn.describe_query(all))
            .await
            .map_err(|_| BackendError::Timeout(limit))?;
        match described {
            Ok((parameters, columns)) => check_described("query_all", parameters, columns, 0)?,
            Err(e) => return Err(query_error("query_all", "does not prepare", &e)),
        }
    }
    Ok(())
}

/// Checks what the server said about a prepared query: `wanted` bind
/// parameters where the driver reports the count, and at least four
/// columns.
fn check_described(
    key: &str,
    parameters: Option<usize>,
    columns: usize,
    wanted: usize,
) -> Result<(), BackendError> {
    if let Some(n) = parameters {
        if n != wanted {
            return Err(BackendError::Internal(format!(
                "{key} has {n} bind parameters; {}",
                if wanted == 0 {
                    "none is allowed"
                } else {
                    "exactly 1 is needed"
                }
            )));
        }
    }
    require_columns(columns).map_err(|e| BackendError::Internal(format!("{key}: {e}")))
}

/// The error for a query the server refuses (a missing table, a syntax
/// error, a type mismatch, no privilege on the table): a configuration
/// problem, named by its key. A lost connection stays an outage.
fn query_error(key: &str, what: &str, e: &sqlx::Error) -> BackendError {
    match describe_error(e) {
        BackendError::Unavailable(s) if matches!(e, sqlx::Error::Database(_)) => {
            BackendError::Internal(format!("{key} {what}: {s}"))
        }
        BackendError::Internal(s) => BackendError::Internal(format!("{key} {what}: {s}")),
        BackendError::LoginRefused(s) => BackendError::LoginRefused(format!("{key} {what}: {s}")),
        other => other,
    }
}
