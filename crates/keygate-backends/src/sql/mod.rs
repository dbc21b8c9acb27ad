//! What the SQL backends (SQLite, MySQL/MariaDB, PostgreSQL) share: the
//! queries and their validation, turning a row's first four columns into a
//! validated record, the health check, and describing driver errors
//! without leaking secrets. [`server`] is the one backend for database
//! servers, generic over a [`server::Dialect`].
//!
//! Queries return the columns id, name, ip, key in that order, under any
//! names, as the seed's own scripts do (`SELECT id,name,ip,agent_key ...`).
//! A lookup's row and a listed row (`query_all`) are decoded and validated
//! by the same code ([`record_from_row`]).

mod error;
mod fetch;
mod health;
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub mod pool;
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub mod server;

pub use error::describe_error;
pub use fetch::{fetch_one_record, Failed};
pub use health::check_queries;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use keygate_core::record::Field;
use keygate_core::{AgentId, AgentRecord, BackendError, ListStream, Query, RecordError};

use crate::listing;

/// One column value, decoded to what a record field can be made of.
#[derive(Debug)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// Any text type.
    Text(String),
    /// Any integer type.
    Int(i64),
    /// A type keygate cannot use (the name says which).
    Other(String),
}

/// Builds a record from the first four cells of a row: an integer id is
/// zero-padded (`7` → `007`); a NULL or an unusable type is a bad record.
pub fn record_from_cells(cells: [Cell; 4]) -> Result<AgentRecord, BackendError> {
    let [id, name, ip, key] = cells;
    let id = match id {
        Cell::Int(n) => AgentId::from_integer(n)?.as_str().to_owned(),
        other => text(other, Field::Id)?,
    };
    let record = AgentRecord::parse(
        &id,
        &text(name, Field::Name)?,
        &text(ip, Field::Ip)?,
        &text(key, Field::Key)?,
    )?;
    Ok(record)
}

/// Decodes a row with the driver's `decode` and validates it: the one path
/// every row takes, looked up or listed.
pub fn record_from_row<R, F>(row: &R, decode: F) -> Result<AgentRecord, BackendError>
where
    F: Fn(&R) -> Result<[Cell; 4], BackendError>,
{
    record_from_cells(decode(row)?)
}

/// Where a listed row is, for a report: `row 12 (id 007)`. The id is shown
/// only when it is a valid agent id (digits), so a query whose columns are
/// in the wrong order never shows a key here.
fn row_label<R, F>(n: u64, row: &R, decode: F) -> String
where
    F: Fn(&R) -> Result<[Cell; 4], BackendError>,
{
    let id = match decode(row) {
        Ok([Cell::Int(i), ..]) => AgentId::from_integer(i).ok(),
        Ok([Cell::Text(s), ..]) => AgentId::parse(&s).ok(),
        _ => None,
    };
    match id {
        Some(id) => format!("row {n} (id {})", id.as_str()),
        None => format!("row {n} (no valid id)"),
    }
}

/// Streams the rows of `sql` (`query_all`, no bind parameter) from `pool`,
/// one at a time (`fetch`, never `fetch_all`), each decoded and validated
/// like a lookup's row: a bad row is `Listed::Invalid` at `row N (id
/// ...)`; a driver failure ends the listing. Each step is bounded by
/// [`listing::LIST_STEP_TIMEOUT`].
pub fn list_rows<'p, DB, F>(pool: &'p sqlx::Pool<DB>, sql: &'p str, decode: F) -> ListStream<'p>
where
    DB: sqlx::Database,
    &'p sqlx::Pool<DB>: sqlx::Executor<'p, Database = DB>,
    <DB as sqlx::Database>::Arguments<'p>: sqlx::IntoArguments<'p, DB>,
    F: Fn(&DB::Row) -> Result<[Cell; 4], BackendError> + Send + 'p,
{
    let mut n = 0u64;
    let rows = sqlx::query::<DB>(sql).fetch(pool).map(move |row| {
        n += 1;
        let row = row.map_err(|e| describe_error(&e))?;
        listing::entry(record_from_row(&row, &decode), || {
            row_label(n, &row, &decode)
        })
    });
    listing::bounded(rows.boxed(), listing::LIST_STEP_TIMEOUT)
}

fn text(cell: Cell, field: Field) -> Result<String, RecordError> {
    match cell {
        Cell::Null => Err(RecordError::Missing(field)),
        Cell::Text(s) => Ok(s),
        Cell::Int(n) => Ok(n.to_string()),
        Cell::Other(_) => Err(RecordError::Invalid {
            field,
            rule: "column type cannot be read as text",
        }),
    }
}

/// Which placeholder style a database uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placeholders {
    /// `?` (SQLite, MySQL).
    Question,
    /// `$1`, `$2`, ... (PostgreSQL; SQLite accepts it too).
    Dollar,
}

/// Counts the distinct bind parameters in `sql`, ignoring quoted strings,
/// quoted identifiers and comments. For `$n` style, returns the highest n.
pub fn count_parameters(sql: &str, style: Placeholders) -> usize {
    let b = sql.as_bytes();
    let (mut i, mut count, mut highest) = (0, 0usize, 0usize);
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() {
                    if b[i] == b'\\' && q != b'`' {
                        i += 2;
                        continue;
                    }
                    if b[i] == q {
                        // A doubled quote is an escaped quote.
                        if b.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'?' if style == Placeholders::Question => count += 1,
            b'$' if style == Placeholders::Dollar => {
                let digits: String = b[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .map(|&c| c as char)
                    .collect();
                if let Ok(n) = digits.parse::<usize>() {
                    highest = highest.max(n);
                    i += digits.len();
                }
            }
            _ => {}
        }
        i += 1;
    }
    match style {
        Placeholders::Question => count,
        Placeholders::Dollar => highest,
    }
}

/// Validates one query setting: not empty, exactly `wanted` bind
/// parameters (1 for a lookup, 0 for `query_all`).
pub fn validate_query(
    problems: &mut crate::Problems<'_>,
    key: &str,
    sql: &str,
    style: Placeholders,
    wanted: usize,
) {
    let placeholder = match style {
        Placeholders::Question => "?",
        Placeholders::Dollar => "$1",
    };
    if sql.trim().is_empty() {
        problems.push(key, "must not be empty");
        return;
    }
    let n = count_parameters(sql, style);
    if n != wanted {
        let message = match wanted {
            0 => format!("must have no bind parameter, found {n}"),
            _ => format!("must have exactly one bind parameter ({placeholder}), found {n}"),
        };
        problems.push(key, message);
    }
}

/// Checks a row has at least the four columns a record needs.
pub fn require_columns(len: usize) -> Result<(), BackendError> {
    if len < 4 {
        Err(BackendError::Internal(format!(
            "the query returns {len} columns; id, name, ip, key (4) are needed"
        )))
    } else {
        Ok(())
    }
}

/// The queries every SQL backend has (the config keys `query_by_id`,
/// `query_by_ip` and the optional `query_all`, declared by each backend's
/// config).
#[derive(Clone, Copy, Debug)]
pub struct Queries<'a> {
    /// `query_by_id`: one bind parameter (`?` for SQLite and MySQL, `$1` for
    /// PostgreSQL, where it is bound as text), returning the columns id,
    /// name, ip, key in that order, under any names.
    pub query_by_id: &'a str,
    /// `query_by_ip`, like `query_by_id` (on PostgreSQL write `$1::inet` for
    /// an `inet` column).
    pub query_by_ip: &'a str,
    /// `query_all`: no bind parameter, the same four columns, every agent;
    /// only `keygate list` and the commands built on it run it. Without it
    /// the backend cannot list.
    pub query_all: Option<&'a str>,
}

/// The probe values a health check runs each query with: valid input that
/// no agent can have (agent 000 is the Wazuh manager itself; 0.0.0.0 is no
/// peer's address).
const PROBE_ID: &str = "000";
const PROBE_IP: &str = "0.0.0.0";

impl<'a> Queries<'a> {
    /// Reports an empty query or one without exactly one bind parameter.
    pub fn validate(&self, problems: &mut crate::Problems<'_>, style: Placeholders) {
        validate_query(problems, "query_by_id", self.query_by_id, style, 1);
        validate_query(problems, "query_by_ip", self.query_by_ip, style, 1);
        if let Some(all) = self.query_all {
            validate_query(problems, "query_all", all, style, 0);
        }
    }

    /// `query_all`, or the error that names the missing key.
    pub fn all(&self, backend: &str) -> Result<&'a str, BackendError> {
        self.query_all.ok_or_else(|| {
            listing::missing_key(
                backend,
                "query_all",
                "a query without bind parameters returning id, name, ip, key of every agent",
            )
        })
    }

    /// The query that answers `query`.
    pub fn for_query(&self, query: &Query) -> &'a str {
        match query {
            Query::Id(_) => self.query_by_id,
            Query::Ip(_) => self.query_by_ip,
        }
    }

    /// Each query with its key and its probe value.
    fn with_probes(&self) -> [(&'static str, &'a str, &'static str); 2] {
        [
            ("query_by_id", self.query_by_id, PROBE_ID),
            ("query_by_ip", self.query_by_ip, PROBE_IP),
        ]
    }
}

/// What the SQL backends need of a database connection; implemented for
/// each driver's connection type by `sql_connection!`.
pub trait SqlConnection: sqlx::Connection {
    /// Streams the rows of `sql` (no bind parameter) from `pool` as listed
    /// entries (see [`list_rows`]).
    fn list<'p>(pool: &'p sqlx::Pool<Self::Database>, sql: &'p str) -> ListStream<'p>;

    /// Runs `sql` with `value` bound and returns its only row as a record
    /// (see [`fetch_one_record`]); a failure says whether the connection
    /// is lost with it.
    fn lookup_record<'c>(
        &'c mut self,
        sql: &'c str,
        value: String,
    ) -> BoxFuture<'c, Result<Option<AgentRecord>, Failed>>;

    /// [`lookup_record`](Self::lookup_record), with only the error.
    fn fetch_record<'c>(
        &'c mut self,
        sql: &'c str,
        value: String,
    ) -> BoxFuture<'c, Result<Option<AgentRecord>, BackendError>> {
        use futures_util::FutureExt;
        Box::pin(
            self.lookup_record(sql, value)
                .map(|r| r.map_err(|f| f.error)),
        )
    }

    /// Prepares `sql`: its bind parameter count (where the driver reports
    /// it) and its column count.
    fn describe_query<'c>(
        &'c mut self,
        sql: &'c str,
    ) -> BoxFuture<'c, Result<(Option<usize>, usize), sqlx::Error>>;

    /// Runs `sql` with `value` bound exactly as a lookup does, rows ignored.
    fn run_probe<'c>(
        &'c mut self,
        sql: &'c str,
        value: &'static str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;
}

/// Implements [`SqlConnection`] for a driver's connection type, with the
/// driver's row decoding.
macro_rules! sql_connection {
    ($conn:ty, $decode:path) => {
        impl $crate::sql::SqlConnection for $conn {
            fn list<'p>(
                pool: &'p sqlx::Pool<<$conn as sqlx::Connection>::Database>,
                sql: &'p str,
            ) -> keygate_core::ListStream<'p> {
                $crate::sql::list_rows(pool, sql, $decode)
            }

            fn lookup_record<'c>(
                &'c mut self,
                sql: &'c str,
                value: String,
            ) -> futures_util::future::BoxFuture<
                'c,
                Result<Option<keygate_core::AgentRecord>, $crate::sql::Failed>,
            > {
                Box::pin($crate::sql::fetch_one_record(self, sql, value, $decode))
            }

            fn describe_query<'c>(
                &'c mut self,
                sql: &'c str,
            ) -> futures_util::future::BoxFuture<'c, Result<(Option<usize>, usize), sqlx::Error>>
            {
                Box::pin(async move {
                    let described = sqlx::Executor::describe(self, sql).await?;
                    let parameters = match described.parameters() {
                        Some(sqlx::Either::Left(types)) => Some(types.len()),
                        Some(sqlx::Either::Right(n)) => Some(n),
                        None => None,
                    };
                    Ok((parameters, described.columns().len()))
                })
            }

            fn run_probe<'c>(
                &'c mut self,
                sql: &'c str,
                value: &'static str,
            ) -> futures_util::future::BoxFuture<'c, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query(sql).bind(value).fetch_optional(self).await?;
                    Ok(())
                })
            }
        }
    };
}
pub(crate) use sql_connection;

/// Turns the bytes of a text or binary string column into a cell: UTF-8
/// is text, anything else is unusable.
pub fn utf8_cell(bytes: Vec<u8>) -> Cell {
    match String::from_utf8(bytes) {
        Ok(s) => Cell::Text(s),
        Err(_) => Cell::Other("bytes that are not UTF-8".into()),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_question_marks_outside_quotes_and_comments() {
        let q = |s| count_parameters(s, Placeholders::Question);
        assert_eq!(q("SELECT id,name,ip,agent_key FROM agent WHERE id = ?"), 1);
        assert_eq!(
            q("SELECT id,name,ip,`agent_key?` FROM agent WHERE id = ? AND name <> '?'"),
            1
        );
        assert_eq!(q("SELECT 1 FROM t WHERE a = ? OR b = ?"), 2);
        assert_eq!(q("SELECT 1 -- ?\nFROM t /* ? */ WHERE a = 'it''s ?'"), 0);
        assert_eq!(q(r"SELECT 'a\'?' , ?"), 1);
    }

    #[test]
    fn counts_dollar_parameters() {
        let q = |s| count_parameters(s, Placeholders::Dollar);
        assert_eq!(
            q("SELECT id,name,ip,agent_key FROM agent WHERE ip = $1::inet"),
            1
        );
        assert_eq!(q("SELECT 1 WHERE a = $1 OR b = $1"), 1);
        assert_eq!(q("SELECT 1 WHERE a = $1 OR b = $2"), 2);
        assert_eq!(q("SELECT '$1' FROM t"), 0);
    }

    #[test]
    fn cells_become_records() {
        let ok = record_from_cells([
            Cell::Int(7),
            Cell::Text("a".into()),
            Cell::Text("any".into()),
            Cell::Text("k".into()),
        ])
        .unwrap();
        assert_eq!(ok.id.as_str(), "007");
        let null = record_from_cells([
            Cell::Text("001".into()),
            Cell::Text("a".into()),
            Cell::Text("any".into()),
            Cell::Null,
        ]);
        assert_eq!(
            null.unwrap_err().code(),
            keygate_core::ErrorCode::InvalidRecord
        );
        let blob = record_from_cells([
            Cell::Text("001".into()),
            Cell::Other("BLOB".into()),
            Cell::Text("any".into()),
            Cell::Text("k".into()),
        ]);
        assert_eq!(
            blob.unwrap_err().code(),
            keygate_core::ErrorCode::InvalidRecord
        );
    }
}
