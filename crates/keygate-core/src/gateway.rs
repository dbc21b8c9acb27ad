//! From raw request bytes to a reply: the path both front ends share.

use std::time::Duration;

use crate::backend::humanize;
use crate::{KeyBackend, Query, Reply, Request};

/// Parses `raw` and answers it from `stack`, within `deadline`.
pub async fn answer(stack: &dyn KeyBackend, raw: &[u8], deadline: Duration) -> Reply {
    match Request::parse(raw) {
        Ok(query) => answer_query(stack, &query, deadline).await,
        Err(e) => Reply::error(e.code(), e.to_string()),
    }
}

/// Answers an already parsed query from `stack`, within `deadline`. A
/// record is checked against the query once more here, so no layer can
/// forward a record for another agent.
pub async fn answer_query(stack: &dyn KeyBackend, query: &Query, deadline: Duration) -> Reply {
    match crate::timeout::within(deadline, stack.lookup(query)).await {
        Err(_) => Reply::error(
            crate::ErrorCode::Unavailable,
            format!(
                "no backend could answer within the request timeout of {}",
                humanize(deadline)
            ),
        ),
        Ok(Ok(Some(record))) => match record.check_matches(query) {
            Ok(()) => Reply::Found(record),
            Err(e) => Reply::error(
                crate::ErrorCode::InvalidRecord,
                format!("invalid record: {e}"),
            ),
        },
        Ok(Ok(None)) => Reply::not_found(),
        Ok(Err(e)) => Reply::error(e.code(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{q, Fake};
    use crate::{AgentRecord, ErrorCode};

    const DEADLINE: Duration = Duration::from_secs(5);

    /// A stack that hands back a record for another agent (here one that
    /// answers every query with agent 002, address `any`, and no chain in
    /// front to catch it) gets 5, never the record: the final check in
    /// `answer_query` is the last guard against forwarding one agent's key
    /// to another. Kills the mutant that returns `Reply::Found(record)`
    /// without `check_matches`.
    #[tokio::test]
    async fn a_record_for_another_agent_is_never_forwarded() {
        let liar = Fake::liar("liar", "002", "other");
        for request in ["id:001", "ip:10.0.0.1"] {
            let reply = answer_query(&liar, &q(request), DEADLINE).await;
            let Reply::Error { code, message } = &reply else {
                panic!("{request}: forwarded {reply:?}");
            };
            assert_eq!(*code, ErrorCode::InvalidRecord, "{request}: {message}");
            assert!(message.starts_with("invalid record: "), "{message}");
            assert!(!message.contains("key-002"), "{message}");
        }
        assert_eq!(liar.calls(), 2);
    }

    /// The same check lets through a record that answers its query: by id,
    /// and by an address its network contains.
    #[tokio::test]
    async fn a_record_that_answers_the_query_is_forwarded() {
        let net = AgentRecord::parse("003", "branch", "10.0.0.0/24", "key-003").unwrap();
        let stack = Fake::with("good", "001", "right").and(net.clone());
        let by_id = answer_query(&stack, &q("id:001"), DEADLINE).await;
        assert!(
            matches!(&by_id, Reply::Found(r) if r.name.as_str() == "right"),
            "{by_id:?}"
        );
        let by_ip = answer_query(&stack, &q("ip:10.0.0.7"), DEADLINE).await;
        assert_eq!(by_ip, Reply::Found(net));
    }
}
