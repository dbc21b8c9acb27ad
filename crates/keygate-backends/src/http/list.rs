//! Listing every agent of an http backend: `url_all`, page by page when it
//! has `{offset}` and `{limit}` (`limit` is `page_size`; a page shorter than
//! that is the last), else in one response. Each page's result list is read
//! entry by entry with the lookups' own pointers; a bad entry is reported
//! as `entry N` (from 1, over the whole listing) with its id when it has a
//! usable one. Only one page is held in memory at a time.

use std::collections::VecDeque;

use futures_util::stream::{self, StreamExt};
use keygate_core::{BackendError, ListStream};
use serde_json::Value;

use super::client::{self, Host};
use super::HttpBackend;
use crate::listing;

/// Where the listing is.
struct State {
    /// Entries of the current page not yet emitted.
    pending: VecDeque<Value>,
    /// Entries emitted or pending so far (the next page's `{offset}`).
    seen: usize,
    /// Whether the last page has been fetched.
    done: bool,
}

impl HttpBackend {
    /// Fetches the page at `offset` (through the hosts' failover).
    async fn page(&self, template: &str, offset: usize) -> Result<Vec<Value>, BackendError> {
        let (offset, limit) = (offset.to_string(), self.page_size.to_string());
        let values = [("offset", offset.as_str()), ("limit", limit.as_str())];
        let doc = self
            .hosts
            .run(|host: &Host| async move {
                let url = Self::url(host, template, &values)?;
                let (status, body) = host.get(url, client::MAX_PAGE_BODY).await?;
                if !status.is_success() {
                    return Err(client::unexpected(status));
                }
                super::record::parse(&body)
            })
            .await?;
        Ok(self.pointers.entries(&doc)?.to_vec())
    }

    /// The listing (see the module's documentation).
    pub(super) fn list_all(&self) -> ListStream<'_> {
        let Some(template) = self.all.as_deref() else {
            return listing::failed(listing::missing_key(
                &self.name,
                "url_all",
                "the URL of every agent, with [backend.fields] through a result list",
            ));
        };
        if !self.pointers.has_list() {
            return listing::failed(BackendError::Internal(format!(
                "backend '{}' cannot list its agents: [backend.fields] must go through a \
                 result list (like /data/0/id)",
                self.name
            )));
        }
        let paged = template.contains("{offset}");
        let start = State {
            pending: VecDeque::new(),
            seen: 0,
            done: false,
        };
        let entries = stream::unfold(Some(start), move |state| async move {
            let mut state = state?;
            loop {
                if let Some(entry) = state.pending.pop_front() {
                    let n = state.seen - state.pending.len();
                    let item =
                        listing::entry(self.pointers.record(&entry).map_err(Into::into), || {
                            match self.pointers.id_of(&entry) {
                                Some(id) => format!("entry {n} (id {id})"),
                                None => format!("entry {n}"),
                            }
                        });
                    return Some((item, Some(state)));
                }
                if state.done {
                    return None;
                }
                match self.page(template, state.seen).await {
                    Err(e) => return Some((Err(e), None)),
                    Ok(page) => {
                        state.done = !paged || page.len() < self.page_size || page.is_empty();
                        state.seen += page.len();
                        state.pending = page.into();
                    }
                }
            }
        });
        listing::bounded(entries.boxed(), listing::LIST_STEP_TIMEOUT)
    }
}
