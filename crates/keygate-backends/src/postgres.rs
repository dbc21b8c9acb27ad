//! `type = "postgres"`: a PostgreSQL table, read by the database server
//! backend ([`crate::sql::server`]); this module is the dialect: the
//! driver's connect options and how its column types become record fields.
//!
//! The request value is bound to `$1` as text; queries on typed columns
//! cast it (`$1::inet`, `$1::int`). `inet`/`cidr` columns are read with
//! sqlx's `ipnet` support, the same `IpNet` type keygate's records use: a
//! host is written without `/32` or `/128`, a network keeps its prefix.

use std::str::FromStr;

use keygate_core::{AgentAddress, BackendError};
use sqlx::postgres::{PgConnectOptions, PgRow, PgSslMode};
use sqlx::{ConnectOptions, Row, TypeInfo, ValueRef};

use crate::sql::server::{Connect, Dialect, ServerConfig, TlsMode};
use crate::sql::{self, Cell, Placeholders};

/// PostgreSQL.
#[derive(Clone, Copy, Debug)]
pub struct PostgresDialect;

/// `[[backend]] type = "postgres"` (PostgreSQL); its keys are
/// [`ServerConfig`]'s.
pub type PostgresConfig = ServerConfig<PostgresDialect>;

impl Dialect for PostgresDialect {
    type Db = sqlx::Postgres;
    const TYPE: &'static str = "postgres";
    const CONFIG_NAME: &'static str = "PostgresConfig";
    const SCHEMES: &'static [&'static str] = &["postgres", "postgresql"];
    const PLACEHOLDERS: Placeholders = Placeholders::Dollar;

    /// URL, then password, TLS.
    fn connect_options(c: Connect<'_>) -> Option<PgConnectOptions> {
        let mut options = PgConnectOptions::from_str(c.url).ok()?;
        if let Some(password) = c.password {
            options = options.password(password);
        }
        options = options.ssl_mode(match c.tls {
            TlsMode::Disable => PgSslMode::Disable,
            TlsMode::Prefer => PgSslMode::Prefer,
            TlsMode::Require => PgSslMode::Require,
            TlsMode::VerifyFull => PgSslMode::VerifyFull,
        });
        if let Some(pem) = c.ca_pem {
            options = options.ssl_root_cert_from_pem(pem.to_vec());
        }
        // Statement logs would only repeat the configured SQL at info level.
        Some(
            options
                .application_name("keygate")
                .disable_statement_logging(),
        )
    }
}

sql::sql_connection!(sqlx::PgConnection, decode);

/// Decodes the first four columns: integers, text types (`char(n)`
/// padding dropped), UTF-8 `bytea`, and `inet`/`cidr`.
fn decode(row: &PgRow) -> Result<[Cell; 4], BackendError> {
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
            "INT2" => Cell::Int(row.try_get::<i16, _>(i).map_err(get_err)?.into()),
            "INT4" => Cell::Int(row.try_get::<i32, _>(i).map_err(get_err)?.into()),
            "INT8" => Cell::Int(row.try_get::<i64, _>(i).map_err(get_err)?),
            "TEXT" | "VARCHAR" | "NAME" => Cell::Text(row.try_get(i).map_err(get_err)?),
            // char(n) pads with spaces that PostgreSQL itself ignores.
            "CHAR" => Cell::Text(
                row.try_get::<String, _>(i)
                    .map_err(get_err)?
                    .trim_end_matches(' ')
                    .to_owned(),
            ),
            "BYTEA" => sql::utf8_cell(row.try_get::<Vec<u8>, _>(i).map_err(get_err)?),
            "INET" | "CIDR" => {
                let net = row.try_get::<ipnet::IpNet, _>(i).map_err(get_err)?;
                Cell::Text(AgentAddress::network(net).as_str().to_owned())
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
    use std::time::Duration;

    fn config(url: &str) -> PostgresConfig {
        PostgresConfig::new(
            url,
            "SELECT id,name,ip,agent_key FROM agent WHERE id = $1",
            "SELECT id,name,ip,agent_key FROM agent WHERE ip = $1::inet",
        )
    }

    fn problems(c: &PostgresConfig) -> Vec<crate::Problem> {
        let mut list = Vec::new();
        c.validate(&mut Problems::new("backend[2]", &mut list));
        list
    }

    #[test]
    fn postgres_and_postgresql_urls_are_valid() {
        assert_eq!(problems(&config("postgres://keygate@db1/wazuh")), []);
        assert_eq!(
            problems(&config("postgresql://keygate:pw@db1:5433/wazuh")),
            []
        );
    }

    #[test]
    fn validation_reports_every_problem_without_the_password() {
        let mut c = config("mysql://kg:hunter2@db/wazuh");
        c.query_by_id = "SELECT id,name,ip,k FROM agent WHERE id = ?".into();
        c.query_by_ip = "   ".into();
        c.pool_size = 65;
        let list = problems(&c);
        let paths: Vec<&str> = list.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "backend[2].url",
                "backend[2].pool_size",
                "backend[2].query_by_id",
                "backend[2].query_by_ip",
            ]
        );
        for p in &list {
            assert!(!p.message.contains("hunter2"), "{p}");
        }
    }

    /// The example: neither the user nor the query's password is
    /// shown, in `Debug` output or as the current host.
    #[tokio::test]
    async fn a_password_in_the_query_string_is_never_shown() {
        let c = config("postgres://kg@127.0.0.1:1/wazuh?password=hunter2");
        let text = format!("{c:?}");
        assert!(!text.contains("hunter2") && !text.contains("kg@"), "{text}");
        let b = c.build("db").await.unwrap();
        assert_eq!(
            b.current_host().unwrap(),
            "host 1 of 1: postgres://127.0.0.1:1/wazuh?password=***"
        );
        let e = b.health().await.unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[tokio::test]
    async fn build_succeeds_with_no_server_and_lookups_fail_as_outages() {
        let mut c = config("postgres://kg@127.0.0.1:1/wazuh");
        c.hosts.connect_timeout = Some(Duration::from_millis(300));
        let b = c.build("db").await.unwrap();
        let q = keygate_core::Request::parse(b"ip:10.0.0.1").unwrap();
        let e = b.lookup(&q).await.unwrap_err();
        assert_eq!(e.code(), keygate_core::ErrorCode::Unavailable, "{e}");
        assert!(b.health().await.is_err());
    }
}
