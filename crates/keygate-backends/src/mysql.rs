//! `type = "mysql"`: a MySQL or MariaDB table, read by the database server
//! backend ([`crate::sql::server`]); this module is the dialect: the
//! driver's connect options and how its column types become record fields.
//! Values are only ever bound to the query's one `?`.

use std::str::FromStr;

use keygate_core::BackendError;
use sqlx::mysql::{MySqlConnectOptions, MySqlRow, MySqlSslMode};
use sqlx::{ConnectOptions, Row, TypeInfo, ValueRef};

use crate::sql::server::{Connect, Dialect, ServerConfig, TlsMode};
use crate::sql::{self, Cell, Placeholders};

/// MySQL or MariaDB.
#[derive(Clone, Copy, Debug)]
pub struct MySqlDialect;

/// `[[backend]] type = "mysql"` (MySQL or MariaDB); its keys are
/// [`ServerConfig`]'s.
pub type MysqlConfig = ServerConfig<MySqlDialect>;

impl Dialect for MySqlDialect {
    type Db = sqlx::MySql;
    const TYPE: &'static str = "mysql";
    const CONFIG_NAME: &'static str = "MysqlConfig";
    const SCHEMES: &'static [&'static str] = &["mysql", "mariadb"];
    const PLACEHOLDERS: Placeholders = Placeholders::Question;

    /// URL, then password, TLS.
    fn connect_options(c: Connect<'_>) -> Option<MySqlConnectOptions> {
        // sqlx only knows the mysql scheme; mariadb:// means the same.
        let url = match c.url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => c.url.to_owned(),
        };
        let mut options = MySqlConnectOptions::from_str(&url).ok()?;
        if let Some(password) = c.password {
            options = options.password(password);
        }
        options = options.ssl_mode(match c.tls {
            TlsMode::Disable => MySqlSslMode::Disabled,
            TlsMode::Prefer => MySqlSslMode::Preferred,
            TlsMode::Require => MySqlSslMode::Required,
            TlsMode::VerifyFull => MySqlSslMode::VerifyIdentity,
        });
        if let Some(pem) = c.ca_pem {
            options = options.ssl_ca_from_pem(pem.to_vec());
        }
        // Statement logs would only repeat the configured SQL at info level.
        Some(options.disable_statement_logging())
    }
}

sql::sql_connection!(sqlx::MySqlConnection, decode);

/// Decodes the first four columns: integers of any width and sign, text
/// types, and binary string types holding UTF-8 (`VARBINARY`, `BLOB`).
fn decode(row: &MySqlRow) -> Result<[Cell; 4], BackendError> {
    sql::require_columns(row.len())?;
    let cell = |i: usize| -> Result<Cell, BackendError> {
        let raw = row.try_get_raw(i).map_err(|e| sql::describe_error(&e))?;
        if raw.is_null() {
            return Ok(Cell::Null);
        }
        // The type's name is borrowed, not copied: four cells per lookup.
        let info = raw.type_info();
        let ty = info.name();
        let get_err = |e: sqlx::Error| sql::describe_error(&e);
        Ok(match ty {
            "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "BOOLEAN" => {
                Cell::Int(row.try_get::<i64, _>(i).map_err(get_err)?)
            }
            "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
            | "BIGINT UNSIGNED" => {
                let n = row.try_get::<u64, _>(i).map_err(get_err)?;
                // Too large for an id anyway; as text it fails validation.
                i64::try_from(n).map_or_else(|_| Cell::Text(n.to_string()), Cell::Int)
            }
            "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM"
            | "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
                sql::utf8_cell(row.try_get::<Vec<u8>, _>(i).map_err(get_err)?)
            }
            _ => Cell::Other(ty.to_owned()),
        })
    };
    Ok([cell(0)?, cell(1)?, cell(2)?, cell(3)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendSpec, Problems};
    use serde::Deserialize;
    use std::path::PathBuf;
    use std::time::Duration;

    fn config(url: &str) -> MysqlConfig {
        MysqlConfig::new(
            url,
            "SELECT id,name,ip,`agent_key` FROM agent WHERE id = ?",
            "SELECT id,name,ip,`agent_key` FROM agent WHERE ip = ?",
        )
    }

    fn problems(c: &MysqlConfig) -> Vec<crate::Problem> {
        let mut list = Vec::new();
        c.validate(&mut Problems::new("backend[0]", &mut list));
        list
    }

    #[test]
    fn the_documented_config_is_valid() {
        assert_eq!(
            problems(&config("mysql://keygate@db1.example:3306/wazuh")),
            []
        );
        assert_eq!(problems(&config("mariadb://keygate@db1/wazuh")), []);
    }

    #[test]
    fn validation_reports_every_problem_without_the_password() {
        let mut c = config("postgres://kg:hunter2@db/wazuh");
        c.query_by_id = "SELECT id,name,ip,k FROM agent WHERE id = $1".into();
        c.query_by_ip = "SELECT id,name,ip,k FROM agent WHERE ip = ? OR ip = ?".into();
        c.pool_size = 0;
        c.hosts.connect_timeout = Some(Duration::ZERO);
        c.tls = TlsMode::Disable;
        c.ca_file = Some(PathBuf::from("/ca.pem"));
        let list = problems(&c);
        let paths: Vec<&str> = list.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "backend[0].url",
                "backend[0].connect_timeout",
                "backend[0].pool_size",
                "backend[0].ca_file",
                "backend[0].query_by_id",
                "backend[0].query_by_ip",
            ]
        );
        for p in &list {
            assert!(!p.message.contains("hunter2"), "{p}");
        }
    }

    #[test]
    fn urls_replace_url_and_take_the_documented_defaults() {
        let c: MysqlConfig = serde_json::from_str(
            r#"{"urls": ["mysql://kg@db1/wazuh", "mariadb://kg@db2/wazuh"],
                "query_by_id": "SELECT id,name,ip,agent_key FROM agent WHERE id = ?",
                "query_by_ip": "SELECT id,name,ip,agent_key FROM agent WHERE ip = ?"}"#,
        )
        .unwrap();
        assert_eq!(problems(&c), []);
        assert_eq!(c.connect_timeout(), Duration::from_secs(3));
        assert_eq!(c.pool_size, 4);
        assert_eq!(c.tls, TlsMode::Prefer);
        assert_eq!(c.hosts.failback_after, Duration::from_secs(300));
        let unknown = serde_json::from_str::<MysqlConfig>(
            r#"{"url": "mysql://kg@db1/wazuh", "query_by_id": "?", "query_by_ip": "?", "colour": 1}"#,
        );
        assert!(unknown.is_err(), "an unknown key is refused");
    }

    #[test]
    fn debug_output_hides_the_password() {
        let text = format!("{:?}", config("mysql://kg:hunter2@db/wazuh?pwd=hunter2"));
        assert!(
            !text.contains("hunter2") && text.contains("mysql://db/wazuh?pwd=***"),
            "{text}"
        );
    }

    #[test]
    fn tls_modes_parse_from_their_config_names() {
        #[derive(Deserialize)]
        struct T {
            tls: TlsMode,
        }
        let modes: Vec<TlsMode> = ["disable", "prefer", "require", "verify-full"]
            .iter()
            .map(|m| {
                serde_json::from_str::<T>(&format!(r#"{{"tls":"{m}"}}"#))
                    .unwrap()
                    .tls
            })
            .collect();
        assert_eq!(
            modes,
            [
                TlsMode::Disable,
                TlsMode::Prefer,
                TlsMode::Require,
                TlsMode::VerifyFull
            ]
        );
    }

    #[tokio::test]
    async fn build_succeeds_with_no_server_and_lookups_fail_as_outages() {
        let mut c = config("mysql://kg@127.0.0.1:1/wazuh");
        c.hosts.connect_timeout = Some(Duration::from_millis(300));
        let b = c.build("db").await.unwrap();
        let q = keygate_core::Request::parse(b"id:001").unwrap();
        let e = b.lookup(&q).await.unwrap_err();
        assert_eq!(e.code(), keygate_core::ErrorCode::Unavailable, "{e}");
    }

    /// Build errors name their key and file: a missing password file or
    /// CA file is reported as such, not as an internal error.
    #[tokio::test]
    async fn unreadable_password_and_ca_files_fail_the_build_with_their_key() {
        let mut c = config("mysql://kg@127.0.0.1:1/wazuh");
        c.hosts.password_file = Some(PathBuf::from("/nonexistent/keygate.pass"));
        let e = c.build("db").await.err().unwrap();
        assert_eq!(
            e.problem("backend[1]").to_string(),
            "backend[1].password_file: cannot read /nonexistent/keygate.pass: \
             No such file or directory"
        );
        let mut c = config("mysql://kg@127.0.0.1:1/wazuh");
        c.ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        let e = c.build("db").await.err().unwrap();
        assert_eq!(
            e.problem("backend[1]").to_string(),
            "backend[1].ca_file: cannot read /nonexistent/ca.pem: No such file or directory"
        );
    }
}
