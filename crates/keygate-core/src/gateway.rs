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
