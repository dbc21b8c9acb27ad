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

/// How a connection to a database server uses TLS (`tls = ...`), shared by
/// the MySQL/MariaDB and PostgreSQL backends.
#[cfg(any(feature = "mysql", feature = "postgres"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain text only.
    Disable,
    /// TLS if the server offers it, plain text otherwise (the default).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not verified.
    Require,
    /// TLS with the certificate verified against `ca_file` (or the system
    /// roots) and the host name checked.
    VerifyFull,
}

/// `url` with any password replaced by `***`, for `Debug` output and
/// `keygate backends`. Messages never print a URL at all.
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "<not a URL>".into();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    let password = if userinfo.contains(':') { ":***" } else { "" };
    format!("{}{user}{password}{}", &url[..scheme_end + 3], &rest[at..])
}

/// What differs between the MySQL/MariaDB and PostgreSQL configs.
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub trait Dialect: Clone + Send + Sync + 'static {
    /// The config's name in `Debug` output.
    const CONFIG_NAME: &'static str;
    /// The URL schemes accepted (`mysql`, `postgres`, ...).
    const SCHEMES: &'static [&'static str];
    /// The database's own bind placeholder.
    const PLACEHOLDERS: Placeholders;
}

/// `[[backend]] type = "mysql"` or `"postgres"`: the keys both database
/// backends have, deserialized once for both ([`crate::mysql::MysqlConfig`],
/// [`crate::postgres::PostgresConfig`]).
#[cfg(any(feature = "mysql", feature = "postgres"))]
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, bound = "")]
pub struct ServerConfig<D: Dialect> {
    /// Connection URL, `mysql://` (or `mariadb://`) or `postgres://` (or
    /// `postgresql://`) `user[:password]@host[:port]/database`. Never shown
    /// in messages. Either `url` or `urls` is required.
    #[serde(default)]
    pub url: Option<String>,
    /// Several hosts instead of `url`, tried in order: a failed host is
    /// skipped, and the first host is used again after `failback_after` of
    /// health on it.
    #[serde(default)]
    pub urls: Vec<String>,
    /// With `urls`: how long the first host must stay healthy before
    /// traffic goes back to it (default `"5m"`).
    #[serde(default = "default_failback_after", with = "humantime_serde")]
    pub failback_after: std::time::Duration,
    /// File whose first line is the password; overrides a password in
    /// `url`. Relative paths are resolved against the config file's
    /// directory.
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
    /// Longest wait for a connection, including connecting (default `"3s"`).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: std::time::Duration,
    /// Most connections kept open (default 4).
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// `disable`, `prefer` (default), `require` or `verify-full`
    /// (certificate checked against `ca_file` and the host name). For
    /// PostgreSQL it overrides any `sslmode` in `url`.
    #[serde(default)]
    pub tls: TlsMode,
    /// PEM file of the CA that signed the server's certificate.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Query for `id:` requests: one bind parameter (`?` for MySQL, `$1`
    /// for PostgreSQL, where it is bound as text), returning the columns
    /// id, name, ip, key in that order, under any names.
    pub query_by_id: String,
    /// Query for `ip:` requests, like `query_by_id` (on PostgreSQL write
    /// `$1::inet` for an `inet` column).
    pub query_by_ip: String,
    /// Which database; not a config key.
    #[serde(skip)]
    pub dialect: std::marker::PhantomData<D>,
}

#[cfg(any(feature = "mysql", feature = "postgres"))]
fn default_connect_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(3)
}

#[cfg(any(feature = "mysql", feature = "postgres"))]
fn default_pool_size() -> u32 {
    4
}

#[cfg(any(feature = "mysql", feature = "postgres"))]
fn default_failback_after() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}

/// Shows everything but the password.
#[cfg(any(feature = "mysql", feature = "postgres"))]
impl<D: Dialect> std::fmt::Debug for ServerConfig<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(D::CONFIG_NAME)
            .field("url", &self.url.as_deref().map(redact_url))
            .field(
                "urls",
                &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
            .field("failback_after", &self.failback_after)
            .field("password_file", &self.password_file)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_size", &self.pool_size)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("query_by_id", &self.query_by_id)
            .field("query_by_ip", &self.query_by_ip)
            .finish()
    }
}

#[cfg(any(feature = "mysql", feature = "postgres"))]
impl<D: Dialect> ServerConfig<D> {
    /// The settings as the shared validation reads them.
    pub fn settings(&self) -> ServerSettings<'_> {
        ServerSettings {
            url: self.url.as_deref(),
            urls: &self.urls,
            schemes: D::SCHEMES,
            password_file: self.password_file.as_deref(),
            connect_timeout: self.connect_timeout,
            pool_size: self.pool_size,
            tls: self.tls,
            ca_file: self.ca_file.as_deref(),
            query_by_id: &self.query_by_id,
            query_by_ip: &self.query_by_ip,
            placeholders: D::PLACEHOLDERS,
        }
    }

    /// Makes `password_file` and `ca_file` absolute against `base`.
    pub fn resolve_file_paths(&mut self, base: &std::path::Path) {
        for path in [&mut self.password_file, &mut self.ca_file]
            .into_iter()
            .flatten()
        {
            crate::resolve(base, path);
        }
    }
}

/// The settings the MySQL/MariaDB and PostgreSQL backends share, borrowed
/// from either config struct so validation is written once.
#[cfg(any(feature = "mysql", feature = "postgres"))]
#[derive(Debug)]
pub struct ServerSettings<'a> {
    /// `url`.
    pub url: Option<&'a str>,
    /// `urls`.
    pub urls: &'a [String],
    /// The URL schemes this backend type accepts (`mysql`, `postgres`, ...).
    pub schemes: &'a [&'a str],
    /// `password_file`.
    pub password_file: Option<&'a std::path::Path>,
    /// `connect_timeout`.
    pub connect_timeout: std::time::Duration,
    /// `pool_size`.
    pub pool_size: u32,
    /// `tls`.
    pub tls: TlsMode,
    /// `ca_file`.
    pub ca_file: Option<&'a std::path::Path>,
    /// `query_by_id`.
    pub query_by_id: &'a str,
    /// `query_by_ip`.
    pub query_by_ip: &'a str,
    /// The placeholder style of this database.
    pub placeholders: Placeholders,
}

#[cfg(any(feature = "mysql", feature = "postgres"))]
impl ServerSettings<'_> {
    /// Reports every problem with these settings, without touching the
    /// network. `parses` says whether the driver accepts a URL. Messages
    /// never contain a URL: it may carry a password.
    pub fn validate(&self, problems: &mut crate::Problems<'_>, parses: impl Fn(&str) -> bool) {
        match (self.url, self.urls.is_empty()) {
            (Some(_), false) => problems.push("urls", "set either url or urls, not both"),
            (None, true) => problems.push("url", "is required (or urls, a list of hosts)"),
            (Some(url), true) => self.validate_url(problems, "url", url, &parses),
            (None, false) => {
                for (i, url) in self.urls.iter().enumerate() {
                    self.validate_url(problems, &format!("urls[{i}]"), url, &parses);
                }
            }
        }
        if self.password_file.is_some_and(|p| p.as_os_str().is_empty()) {
            problems.push("password_file", "must not be empty");
        }
        if self.connect_timeout.is_zero() {
            problems.push("connect_timeout", "must be greater than zero");
        }
        if !(1..=64).contains(&self.pool_size) {
            problems.push("pool_size", "must be between 1 and 64");
        }
        if let Some(ca) = self.ca_file {
            if ca.as_os_str().is_empty() {
                problems.push("ca_file", "must not be empty");
            } else if self.tls == TlsMode::Disable {
                problems.push("ca_file", "is set but tls = \"disable\"");
            }
        }
        validate_query(problems, "query_by_id", self.query_by_id, self.placeholders);
        validate_query(problems, "query_by_ip", self.query_by_ip, self.placeholders);
    }

    fn validate_url(
        &self,
        problems: &mut crate::Problems<'_>,
        key: &str,
        url: &str,
        parses: &impl Fn(&str) -> bool,
    ) {
        let scheme = url.split("://").next().unwrap_or("");
        let expected = self
            .schemes
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(" or ");
        if url.trim().is_empty() {
            problems.push(key, "must not be empty");
        } else if !url.contains("://") || !self.schemes.contains(&scheme) {
            problems.push(
                key,
                format!(
                    "must start with {expected} (the URL is not shown: it may hold a password)"
                ),
            );
        } else if !parses(url) {
            problems.push(
                key,
                "is not a valid connection URL (the URL is not shown: it may hold a password)",
            );
        }
    }

    /// The configured URLs in order: `url` alone, or `urls`.
    pub fn hosts(&self) -> Vec<&str> {
        match self.url {
            Some(url) => vec![url],
            None => self.urls.iter().map(String::as_str).collect(),
        }
    }
}

/// One database host of a backend: its lazy pool, and its URL without a
/// password for logs and `keygate backends`.
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub struct SqlHost<DB: sqlx::Database> {
    /// The host's pool.
    pub pool: sqlx::Pool<DB>,
    label: String,
    probe_timeout: std::time::Duration,
}

#[cfg(any(feature = "mysql", feature = "postgres"))]
impl<DB: sqlx::Database> SqlHost<DB> {
    /// The host at `url`, served by `pool`; a failback probe waits at most
    /// `probe_timeout` for a connection.
    pub fn new(pool: sqlx::Pool<DB>, url: &str, probe_timeout: std::time::Duration) -> Self {
        Self {
            pool,
            label: redact_url(url),
            probe_timeout,
        }
    }
}

#[cfg(any(feature = "mysql", feature = "postgres"))]
impl<DB: sqlx::Database> crate::failback::Host for SqlHost<DB> {
    async fn probe(&self) -> bool {
        matches!(
            tokio::time::timeout(self.probe_timeout, self.pool.acquire()).await,
            Ok(Ok(_))
        )
    }

    fn label(&self) -> &str {
        &self.label
    }
}

/// Checks what the server said about a prepared query: one bind parameter
/// where the driver reports the count, and at least four columns.
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub fn check_described(
    key: &str,
    parameters: Option<usize>,
    columns: usize,
) -> Result<(), BackendError> {
    if let Some(n) = parameters {
        if n != 1 {
            return Err(BackendError::Internal(format!(
                "{key} has {n} bind parameters; exactly 1 is needed"
            )));
        }
    }
    require_columns(columns).map_err(|e| BackendError::Internal(format!("{key}: {e}")))
}

/// The error for a query the server refuses to prepare (a missing table,
/// a syntax error): a configuration problem, named by its key.
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub fn prepare_error(key: &str, e: &sqlx::Error) -> BackendError {
    let reason = match describe_error(e) {
        BackendError::Unavailable(s) | BackendError::Internal(s) => s,
        other => other.to_string(),
    };
    BackendError::Internal(format!("{key} does not prepare: {reason}"))
}

/// Turns the bytes of a text or binary string column into a cell: UTF-8
/// is text, anything else is unusable.
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub fn utf8_cell(bytes: Vec<u8>) -> Cell {
    match String::from_utf8(bytes) {
        Ok(s) => Cell::Text(s),
        Err(_) => Cell::Other("bytes that are not UTF-8".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(feature = "mysql", feature = "postgres"))]
    #[test]
    fn redacted_urls_keep_everything_but_the_password() {
        assert_eq!(
            redact_url("mysql://kg:s3cr%40t@db:3306/wazuh?x=1"),
            "mysql://kg:***@db:3306/wazuh?x=1"
        );
        assert_eq!(redact_url("postgres://kg@db/w"), "postgres://kg@db/w");
        assert_eq!(
            redact_url("postgres://db/w?user=a@b"),
            "postgres://db/w?user=a@b"
        );
        assert_eq!(redact_url("p@ss"), "<not a URL>");
    }

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
