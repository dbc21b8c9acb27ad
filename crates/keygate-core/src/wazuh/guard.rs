//! [`VersionGuard`]: the layer at the top of the stack that refuses what the
//! Wazuh version served cannot take, however the record got there (a
//! backend, the cache, a stale entry). It is only built for a version that
//! refuses something (before 4.4), so newer versions pay nothing for it.

use std::sync::Arc;

use async_trait::async_trait;

use super::{OncePerAgent, WazuhVersion};
use crate::backend::ListStream;
use crate::{AgentRecord, BackendError, KeyBackend, Query};

/// Agents remembered as already logged; past this many the memory is
/// cleared and each agent is logged once more.
const LOGGED_AGENTS: usize = 100_000;

/// Refuses (code 5, with the reason) a record the version served cannot
/// take. Each refused agent is logged once and every refusal is counted
/// (`keygate_wazuh_refused_total{reason="ipv6"}`).
pub struct VersionGuard {
    inner: Arc<dyn KeyBackend>,
    version: WazuhVersion,
    logged: OncePerAgent,
}

impl VersionGuard {
    /// `inner` guarded for `version`; `inner` itself when the version
    /// refuses nothing.
    pub fn wrap(inner: Arc<dyn KeyBackend>, version: WazuhVersion) -> Arc<dyn KeyBackend> {
        if version.takes_ipv6() {
            return inner;
        }
        Arc::new(Self {
            inner,
            version,
            logged: OncePerAgent::new(LOGGED_AGENTS),
        })
    }

    fn log_once(&self, record: &AgentRecord) {
        if self.logged.first(record.id.as_str()) {
            tracing::warn!(
                agent_id = record.id.as_str(),
                agent_name = record.name.as_str(),
                ip = record.ip.as_str(),
                wazuh_version = %self.version,
                "Record refused: this Wazuh version cannot take an IPv6 address; its authd would exit."
            );
        }
    }
}

#[async_trait]
impl KeyBackend for VersionGuard {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        let found = self.inner.lookup(query).await?;
        if let Some(record) = &found {
            if let Some(refusal) = self.version.refuses(record) {
                self.log_once(record);
                crate::metrics::wazuh_refused("ipv6");
                return Err(BackendError::InvalidRecord(refusal));
            }
        }
        Ok(found)
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.inner.health().await
    }

    fn current_host(&self) -> Option<String> {
        self.inner.current_host()
    }

    /// The listing is the store's, unguarded: the commands that list say
    /// themselves what the version cannot take.
    fn list(&self) -> ListStream<'_> {
        self.inner.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Fake;
    use crate::{gateway, ErrorCode, Reply};
    use std::time::Duration;

    fn store() -> Arc<dyn KeyBackend> {
        Arc::new(
            Fake::empty("store")
                .and(AgentRecord::parse("006", "v6-host", "2001:db8::6", "k6").unwrap())
                .and(AgentRecord::parse("007", "mapped", "::ffff:192.168.7.7", "k7").unwrap())
                .and(AgentRecord::parse("008", "v4-host", "192.168.7.8", "k8").unwrap()),
        )
    }

    async fn answer(stack: &dyn KeyBackend, request: &str) -> Reply {
        gateway::answer(stack, request.as_bytes(), Duration::from_secs(5)).await
    }

    /// For `version = "3.13"` an IPv6 record (IPv4-mapped included) answers
    /// 5 with the reason, an IPv4 one is served; for `"4.14"` both are
    /// served and no layer is added.
    #[tokio::test]
    async fn ipv6_refused_for_3_13_and_served_for_4_14() {
        let old = VersionGuard::wrap(store(), "3.13".parse().unwrap());
        for request in ["id:006", "id:007", "ip:2001:db8::6"] {
            match answer(old.as_ref(), request).await {
                Reply::Error { code, message } => {
                    assert_eq!(code, ErrorCode::InvalidRecord, "{request}");
                    assert!(
                        message.contains(
                            "Wazuh 3.13 cannot take an IPv6 address; its authd would exit"
                        ),
                        "{request}: {message}"
                    );
                }
                other => panic!("{request}: {other:?}"),
            }
        }
        assert!(matches!(
            answer(old.as_ref(), "id:008").await,
            Reply::Found(_)
        ));
        let inner = store();
        let new = VersionGuard::wrap(inner.clone(), "4.14".parse().unwrap());
        assert!(
            Arc::ptr_eq(&new, &inner),
            "no layer for a version that takes IPv6"
        );
        for request in ["id:006", "id:007", "id:008"] {
            assert!(
                matches!(answer(new.as_ref(), request).await, Reply::Found(_)),
                "{request}"
            );
        }
        // The listing is the store's own, for the commands to report.
        use futures_util::StreamExt;
        assert_eq!(old.list().count().await, 3);
    }

    /// Each refused agent is logged once (a Wazuh that asks again every few
    /// seconds does not flood the log) and every refusal is still answered
    /// 5; another agent gets its own line.
    #[tokio::test]
    async fn each_refused_agent_is_logged_once() {
        let guard = VersionGuard::wrap(store(), "4.3".parse().unwrap());
        let ((), text) = crate::testing::logs_of(async {
            for request in ["id:006", "id:006", "ip:2001:db8::6", "id:007", "id:007"] {
                assert!(
                    matches!(answer(guard.as_ref(), request).await, Reply::Error { .. }),
                    "{request}"
                );
            }
        })
        .await;
        let logged = |id: &str| {
            text.lines()
                .filter(|l| l.contains("cannot take an IPv6 address"))
                .filter(|l| {
                    l.contains(&format!("agent_id=\"{id}\""))
                        || l.contains(&format!("agent_id={id}"))
                })
                .count()
        };
        assert_eq!(logged("006"), 1, "{text}");
        assert_eq!(logged("007"), 1, "{text}");
    }

    /// The guard is invisible to what asks the stack about its backends:
    /// the name, the health and the host in use are the guarded backend's.
    #[tokio::test]
    async fn the_guard_shows_the_guarded_backends_name_health_and_host() {
        let inner = Fake::down("mysql").at_host("db1.example:3306");
        let guard = VersionGuard::wrap(Arc::new(inner.clone()), "3.13".parse().unwrap());
        assert_eq!(guard.name(), "mysql");
        assert_eq!(guard.current_host().as_deref(), Some("db1.example:3306"));
        assert!(guard.health().await.is_err(), "the store is down");
        inner.set_down(false);
        assert!(guard.health().await.is_ok());
    }
}
