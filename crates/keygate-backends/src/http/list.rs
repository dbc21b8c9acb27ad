//! Listing every agent of an http backend: `url_all`, page by page when it
//! has `{offset}` and `{limit}` (`limit` is `page_size`), else in one
//! response. Each page's result list is read entry by entry with the
//! lookups' own pointers; a bad entry is reported as `entry N` (from 1,
//! over the whole listing) with its id when it has a usable one. Only one
//! page is held in memory at a time.
//!
//! The listing must never look complete when it is not (`sync --prune`
//! deletes what it lacks), so paging ends only on an empty page, or once
//! `[backend.fields] total` says every agent was read. A page shorter
//! than `{limit}` is not the end: many APIs cap `limit` silently, and the
//! next `{offset}` is the number of entries received so far. A page that
//! repeats the previous one (an inventory that ignores `{offset}`), more
//! than [`MAX_PAGES`] pages, a `total` that changes between pages or that
//! the pages do not reach fail the listing.
//!
//! Every page comes from one host; a host that fails restarts the listing
//! on the next one ([`listing::one_host`]).

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};

use futures_util::stream::{self, StreamExt};
use keygate_core::{BackendError, ListStream};
use serde_json::Value;

use super::client::{self, Host};
use super::HttpBackend;
use crate::listing;

/// Most pages one listing reads (with `page_size = 500`, 50 million
/// agents; with an inventory that caps pages at 100, 10 million): past it,
/// an inventory that never sends its empty page fails the listing instead
/// of looping.
pub const MAX_PAGES: usize = 100_000;

/// Where the listing on one host is.
struct State {
    /// Entries of the current page not yet emitted.
    pending: VecDeque<Value>,
    /// Entries received so far (the next page's `{offset}`).
    received: usize,
    /// Pages received so far.
    pages: usize,
    /// A digest of the previous page's entries.
    previous: Option<u64>,
    /// The inventory's count of agents, from `[backend.fields] total`.
    total: Option<u64>,
    /// Whether the last page has been received.
    done: bool,
    /// The key of the page digests (random for each listing).
    key: RandomState,
}

/// A paging anomaly: the listing cannot be trusted to be complete.
fn incomplete(why: impl std::fmt::Display) -> BackendError {
    BackendError::Internal(format!("the listing is incomplete: {why}"))
}

impl HttpBackend {
    /// Fetches the page at `offset` from `host`: its entries, and the
    /// `total` it reports (when `[backend.fields] total` is set).
    async fn page(
        &self,
        host: &Host,
        template: &str,
        offset: usize,
    ) -> Result<(Vec<Value>, Option<u64>), BackendError> {
        let (offset, limit) = (offset.to_string(), self.page_size.to_string());
        let values = [("offset", offset.as_str()), ("limit", limit.as_str())];
        let url = Self::url(host, template, &values)?;
        let (status, body) = host.get(url, client::MAX_PAGE_BODY).await?;
        if !status.is_success() {
            return Err(client::unexpected(status));
        }
        let doc = super::record::parse(&body)?;
        let total = match &self.total {
            Some(pointer) => Some(total_at(&doc, pointer)?),
            None => None,
        };
        Ok((self.pointers.entries(&doc)?.to_vec(), total))
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
        listing::one_host(&self.hosts, move |host| self.list_on(host, template))
    }

    /// Every page of `template` from `host` alone.
    fn list_on<'a>(&'a self, host: &'a Host, template: &'a str) -> ListStream<'a> {
        let paged = template.contains("{offset}");
        let entries = stream::unfold(Some(State::new()), move |state| async move {
            let mut state = state?;
            loop {
                if let Some(entry) = state.pending.pop_front() {
                    let n = state.received - state.pending.len();
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
                let next = match self.page(host, template, state.received).await {
                    Ok((page, total)) => state.take(page, total, paged),
                    Err(e) => Err(e),
                };
                if let Err(e) = next {
                    return Some((Err(e), None));
                }
            }
        });
        listing::bounded(entries.boxed(), listing::LIST_STEP_TIMEOUT)
    }
}

impl State {
    /// Before the first page.
    fn new() -> Self {
        Self {
            pending: VecDeque::new(),
            received: 0,
            pages: 0,
            previous: None,
            total: None,
            done: false,
            key: RandomState::new(),
        }
    }

    /// Takes in the page at `self.received`, or says why the listing
    /// cannot go on.
    fn take(
        &mut self,
        page: Vec<Value>,
        total: Option<u64>,
        paged: bool,
    ) -> Result<(), BackendError> {
        if let (Some(before), Some(now)) = (self.total, total) {
            if before != now {
                return Err(incomplete(format_args!(
                    "the inventory's total changed from {before} to {now} during the listing \
                     (agents added or removed between pages may have been skipped)"
                )));
            }
        }
        self.total = total;
        if page.is_empty() {
            return self.end();
        }
        if paged {
            let digest = self.key.hash_one(&page[..]);
            if self.previous == Some(digest) {
                return Err(incomplete(format_args!(
                    "the page at offset {} repeats the previous page: the inventory seems to \
                     ignore {{offset}} in url_all",
                    self.received
                )));
            }
            self.previous = Some(digest);
            self.pages += 1;
            if self.pages > MAX_PAGES {
                return Err(incomplete(format_args!(
                    "more than {MAX_PAGES} pages without an empty page: the inventory seems \
                     never to end its listing"
                )));
            }
        }
        self.received += page.len();
        self.pending = page.into();
        if !paged {
            return self.end();
        }
        match self.total {
            Some(total) if self.received as u64 > total => Err(incomplete(format_args!(
                "the inventory sent {} entries but its total says {total}",
                self.received
            ))),
            Some(total) if self.received as u64 == total => self.end(),
            _ => Ok(()),
        }
    }

    /// The last page came: complete unless `total` says otherwise.
    fn end(&mut self) -> Result<(), BackendError> {
        match self.total {
            Some(total) if self.received as u64 != total => Err(incomplete(format_args!(
                "the inventory's total is {total} but its pages ended after {} entries",
                self.received
            ))),
            _ => {
                self.done = true;
                Ok(())
            }
        }
    }
}

/// The count of agents at `pointer` in a page: a JSON number, or a string
/// of digits.
fn total_at(doc: &Value, pointer: &str) -> Result<u64, BackendError> {
    let bad = |what: &str| {
        BackendError::Internal(format!(
            "the inventory's response {what} at {pointer:?}, where [backend.fields] total \
             expects the count of agents"
        ))
    };
    match doc.pointer(pointer) {
        None => Err(bad("has nothing")),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| bad("has no whole number")),
        Some(Value::String(s)) => s.parse().map_err(|_| bad("has no whole number")),
        Some(_) => Err(bad("has no number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(from: usize, n: usize) -> Vec<Value> {
        (from..from + n).map(|i| json!({ "id": i })).collect()
    }

    /// An inventory that never sends its empty page (each page new) fails
    /// the listing after [`MAX_PAGES`] pages instead of paging forever.
    #[test]
    fn more_than_max_pages_fails_the_listing() {
        let mut s = State::new();
        for p in 0..MAX_PAGES {
            s.take(page(p, 1), None, true).unwrap();
            s.pending.clear();
        }
        let e = s.take(page(MAX_PAGES, 1), None, true).unwrap_err();
        assert!(e.to_string().contains("more than 100000 pages"), "{e}");
    }

    /// With `total`: the listing ends once that many were received
    /// (without asking for the empty page), and fails when the pages end
    /// before, go past it, or the total changes between pages.
    #[test]
    fn total_ends_the_listing_or_proves_it_incomplete() {
        let mut s = State::new();
        s.take(page(0, 100), Some(200), true).unwrap();
        assert!(!s.done);
        s.take(page(100, 100), Some(200), true).unwrap();
        assert!(s.done);

        let mut s = State::new();
        s.take(page(0, 100), Some(300), true).unwrap();
        let e = s.take(Vec::new(), Some(300), true).unwrap_err();
        assert!(
            e.to_string()
                .contains("total is 300 but its pages ended after 100"),
            "{e}"
        );

        let mut s = State::new();
        s.take(page(0, 100), Some(300), true).unwrap();
        let e = s.take(page(100, 100), Some(301), true).unwrap_err();
        assert!(e.to_string().contains("changed from 300 to 301"), "{e}");

        let mut s = State::new();
        let e = s.take(page(0, 100), Some(50), true).unwrap_err();
        assert!(e.to_string().contains("sent 100 entries"), "{e}");

        // One response (no paging): it must hold the whole total.
        let mut s = State::new();
        let e = s.take(page(0, 100), Some(120), false).unwrap_err();
        assert!(e.to_string().contains("ended after 100"), "{e}");
        let mut s = State::new();
        s.take(page(0, 100), None, false).unwrap();
        assert!(s.done);
    }
}
