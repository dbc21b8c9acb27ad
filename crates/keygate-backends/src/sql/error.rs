//! A driver error as a [`BackendError`]: what happened, in the server's
//! own words, never the connection URL or a password; a refused login told
//! apart from an outage.

use keygate_core::BackendError;

/// Describes a driver error without the connection URL or any password:
/// only the error's kind and the server's own message. A refused login is
/// [`BackendError::LoginRefused`] (6, a configuration problem), not an
/// outage: the server answered, and every retry would be refused alike.
pub fn describe_error(e: &sqlx::Error) -> BackendError {
    use sqlx::Error as E;
    match e {
        E::Database(db) if login_refused(db.as_ref()) => {
            BackendError::LoginRefused(format!("database error: {}", db.message()))
        }
        E::Database(db) => BackendError::Unavailable(format!("database error: {}", db.message())),
        // sqlx reports a rejected certificate as an I/O error.
        E::Io(io) if io.to_string().contains("certificate") => {
            BackendError::Unavailable(format!("TLS error: {io}"))
        }
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

/// Whether the server refused keygate's login or its access to the agents:
/// SQLSTATE class 28, invalid authorization (a wrong user or password:
/// MySQL's 1045 and 1698, PostgreSQL's 28P01 and 28000, a `pg_hba.conf`
/// rejection), PostgreSQL's 42501 (no privilege on the table), and
/// MySQL's 1044 (no access to the database), 1142 and 1143 (no `SELECT`
/// on the table or a column), whose SQLSTATE 42000 is shared with syntax
/// errors.
fn login_refused(db: &dyn sqlx::error::DatabaseError) -> bool {
    if db
        .code()
        .is_some_and(|c| c.starts_with("28") || c == "42501")
    {
        return true;
    }
    #[cfg(feature = "mysql")]
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return matches!(my.number(), 1044 | 1045 | 1142 | 1143 | 1698);
    }
    false
}
