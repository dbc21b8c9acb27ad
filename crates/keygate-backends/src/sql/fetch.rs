//! A lookup's one query: run with its bound value, its rows read, and a
//! failure told apart by whether the connection survived it.

use futures_util::TryStreamExt;
use keygate_core::{AgentRecord, BackendError};

use super::{describe_error, record_from_row, Cell};

/// Why a lookup failed, and whether its connection is lost with it.
#[derive(Debug)]
pub struct Failed {
    /// What the lookup answers.
    pub error: BackendError,
    /// The connection broke (I/O, protocol, the server shutting down or
    /// killing it): it must not be reused, and a connection that was idle
    /// before this lookup is worth one retry on a fresh one.
    pub lost: bool,
}

impl Failed {
    /// A driver error, described without secrets.
    pub fn driver(e: &sqlx::Error) -> Self {
        Self {
            error: describe_error(e),
            lost: connection_lost(e),
        }
    }

    /// An answer the connection survived (a bad record, two rows).
    pub fn answer(error: BackendError) -> Self {
        Self { error, lost: false }
    }
}

/// Whether `e` means the connection itself is gone, rather than the query
/// failing on a healthy one. SQLSTATE class 08 is a connection exception
/// (MariaDB's server shutdown is 08S01), class 57 an operator intervention
/// (PostgreSQL's `admin_shutdown` 57P01, `crash_shutdown` 57P02), 70100 a
/// MariaDB connection killed.
pub fn connection_lost(e: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match e {
        E::Io(_) | E::Protocol(_) | E::Tls(_) | E::WorkerCrashed => true,
        E::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57") || c == "70100"),
        _ => false,
    }
}

/// Runs `query` with one bound value and returns its only row as a record:
/// no row is `Ok(None)`, two or more are ambiguous. `decode` turns a row
/// into four cells; it is the only database-specific part. At most two
/// rows are read; the driver discards the rest before the connection's
/// next statement.
pub async fn fetch_one_record<'e, DB, E, F>(
    executor: E,
    sql: &'e str,
    value: String,
    decode: F,
) -> Result<Option<AgentRecord>, Failed>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB> + 'e,
    String: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    <DB as sqlx::Database>::Arguments<'e>: sqlx::IntoArguments<'e, DB>,
    F: Fn(&DB::Row) -> Result<[Cell; 4], BackendError>,
{
    let mut rows = sqlx::query::<DB>(sql).bind(value).fetch(executor);
    let first = rows.try_next().await.map_err(|e| Failed::driver(&e))?;
    let Some(first) = first else { return Ok(None) };
    if rows
        .try_next()
        .await
        .map_err(|e| Failed::driver(&e))?
        .is_some()
    {
        return Err(Failed::answer(BackendError::Ambiguous));
    }
    record_from_row(&first, decode)
        .map(Some)
        .map_err(Failed::answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Transport failures lose the connection; a query the server rejects
    /// or a value that does not decode does not.
    #[test]
    fn only_transport_failures_lose_the_connection() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert!(connection_lost(&io));
        assert!(connection_lost(&sqlx::Error::Protocol("eof".into())));
        assert!(!connection_lost(&sqlx::Error::RowNotFound));
        assert!(!connection_lost(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
