//! What the SQL backends (SQLite, MySQL/MariaDB, PostgreSQL) share: turning
//! a row's first four columns into a validated record, counting bind
//! parameters, and describing driver errors without leaking secrets.
//!
//! Queries return the columns id, name, ip, key in that order, under any
//! names, as the seed's own scripts do (`SELECT id,name,ip,agent_key ...`).

use futures_util::TryStreamExt;
use keygate_core::record::Field;
use keygate_core::{AgentId, AgentRecord, BackendError, RecordError};

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

/// Validates one query setting: not empty, exactly one bind parameter.
pub fn validate_query(
    problems: &mut crate::Problems<'_>,
    key: &str,
    sql: &str,
    style: Placeholders,
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
    if n != 1 {
        problems.push(
            key,
            format!("must have exactly one bind parameter ({placeholder}), found {n}"),
        );
    }
}

/// Describes a driver error without the connection URL or any password:
/// only the error's kind and the server's own message.
pub fn describe_error(e: &sqlx::Error) -> BackendError {
    use sqlx::Error as E;
    match e {
        E::Database(db) => BackendError::Unavailable(format!("database error: {}", db.message())),
        E::Io(io) => BackendError::Unavailable(format!("I/O error: {io}")),
        E::Tls(tls) => BackendError::Unavailable(format!("TLS error: {tls}")),
        E::PoolTimedOut => {
            BackendError::Unavailable("timed out waiting for a database connection".into())
        }
        E::PoolClosed => BackendError::Unavailable("connection pool closed".into()),
        E::Protocol(_) => BackendError::Unavailable("database protocol error".into()),
        E::Configuration(_) => BackendError::Internal("invalid connection settings".into()),
        E::ColumnIndexOutOfBounds { len, .. } => BackendError::Internal(format!(
            "the query returns {len} columns; id, name, ip, key (4) are needed"
        )),
        E::ColumnDecode { index, .. } => {
            BackendError::Internal(format!("cannot decode column {index}"))
        }
        E::WorkerCrashed => BackendError::Unavailable("database worker crashed".into()),
        _ => BackendError::Unavailable("database driver error".into()),
    }
}

/// Runs `query` with one bound value and returns its only row as a record:
/// no row is `Ok(None)`, two or more are ambiguous. `decode` turns a row
/// into four cells; it is the only database-specific part.
pub async fn fetch_one_record<'e, DB, E, F>(
    executor: E,
    sql: &'e str,
    value: String,
    decode: F,
) -> Result<Option<AgentRecord>, BackendError>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB> + 'e,
    String: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    <DB as sqlx::Database>::Arguments<'e>: sqlx::IntoArguments<'e, DB>,
    F: Fn(&DB::Row) -> Result<[Cell; 4], BackendError>,
{
    let mut rows = sqlx::query::<DB>(sql).bind(value).fetch(executor);
    let first = rows.try_next().await.map_err(|e| describe_error(&e))?;
    let Some(first) = first else { return Ok(None) };
    if rows
        .try_next()
        .await
        .map_err(|e| describe_error(&e))?
        .is_some()
    {
        return Err(BackendError::Ambiguous);
    }
    let cells = decode(&first)?;
    record_from_cells(cells).map(Some)
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
