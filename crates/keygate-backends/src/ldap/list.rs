//! Listing every agent of an LDAP backend: one paged search (the simple
//! paged results control, RFC 2696, through ldap3's [`PagedResults`]) under
//! `base_dn` with `filter_all`, each entry mapped like a lookup's
//! ([`record_from_entry`]); an entry that fails validation is reported by
//! its DN. Entries are handed out as the pages arrive, never collected.
//! The listing ends without an error only when the search did (result
//! code 0): a size or time limit, or a referral to another server, fails
//! it, since agents would be missing.

use futures_util::stream::{self, StreamExt, TryStreamExt};
use keygate_core::{BackendError, ListStream, Listed};
use ldap3::adapters::PagedResults;
use ldap3::{SearchEntry, SearchStream};

use super::pool::LdapHost;
use super::{describe, record_from_entry, result_error, LdapBackend};
use crate::listing::{self, LIST_STEP_TIMEOUT};

/// Entries asked per page (within slapd's default size limit of 500).
const PAGE_SIZE: i32 = 400;

/// The running search: entries borrowed attribute names of the config.
type Search<'a> = SearchStream<'a, &'a str, Vec<&'a str>>;

impl LdapBackend {
    /// Lists every agent from one server: the active one, or after an
    /// outage (connecting or midway) the next one, from the start
    /// ([`listing::one_host`]).
    pub(super) fn list_all(&self) -> ListStream<'_> {
        listing::one_host(&self.hosts, move |host| {
            let search = async move {
                let filter = self.config.filter_all();
                self.start_search(host, &filter).await
            };
            let entries = stream::once(search)
                .map_ok(|search| stream::unfold(Some(search), |state| self.next_entry(state)))
                .try_flatten();
            listing::bounded(entries.boxed(), LIST_STEP_TIMEOUT)
        })
    }

    /// Starts the paged search on `host`, through the pool.
    async fn start_search(
        &self,
        host: &LdapHost,
        filter: &str,
    ) -> Result<Search<'_>, BackendError> {
        let (i, mut ldap) = self.pool.handle(host).await?;
        let started = ldap
            .with_timeout(LIST_STEP_TIMEOUT)
            .streaming_search_with(
                PagedResults::new(PAGE_SIZE),
                &self.config.base_dn,
                self.config.scope.into(),
                filter,
                self.config.attributes.all().to_vec(),
            )
            .await;
        match started {
            Ok(search) => Ok(search),
            Err(e) => {
                let (error, broken) = describe(&e, "listing search");
                if broken {
                    self.pool.discard(i).await;
                }
                Err(error)
            }
        }
    }

    /// The next listed entry of `state`'s search; at its end, the
    /// search's result (an error when the server ended it early).
    async fn next_entry<'a>(
        &'a self,
        state: Option<Search<'a>>,
    ) -> Option<(Result<Listed, BackendError>, Option<Search<'a>>)> {
        let mut search = state?;
        loop {
            match search.next().await {
                Ok(Some(entry)) if entry.is_intermediate() => continue,
                // Part of the tree is on another server, which keygate
                // does not ask: its agents would be missing.
                Ok(Some(entry)) if entry.is_ref() => {
                    return Some((Err(referral_error()), None));
                }
                Ok(Some(entry)) => {
                    let entry = SearchEntry::construct(entry);
                    let record = record_from_entry(&entry, &self.config.attributes)
                        .map_err(BackendError::InvalidRecord);
                    let item = listing::entry(record, || entry.dn.clone());
                    return Some((item, Some(search)));
                }
                Ok(None) => {
                    let result = search.finish().await;
                    return match result.rc {
                        0 => None,
                        rc => Some((Err(end_error(rc)), None)),
                    };
                }
                Err(e) => return Some((Err(describe(&e, "listing search").0), None)),
            }
        }
    }
}

/// Why a listing that met a search reference (a referral to another
/// server) fails.
fn referral_error() -> BackendError {
    BackendError::Internal(
        "LDAP listing search: the server referred part of the search to another server \
         (referrals are not followed), so agents would be missing: the listing is \
         incomplete; point base_dn and urls at the server that holds every agent"
            .into(),
    )
}

/// Why a listing search ended early. sizeLimitExceeded (4) says what to
/// change on the server: slapd caps a paged search's total at the hard
/// size limit unless the identity is allowed more.
fn end_error(rc: u32) -> BackendError {
    match rc {
        4 => BackendError::Internal(
            "LDAP listing search: the server's size limit ended the listing (rc 4); allow the \
             bound identity more entries (OpenLDAP: limits dn.exact=\"<bind_dn>\" \
             size.prtotal=unlimited)"
                .into(),
        ),
        rc => result_error(rc, "listing search"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing cut short by the server's size limit says what to change;
    /// other codes read as for a lookup's search.
    #[test]
    fn a_size_limit_names_the_server_setting_to_change() {
        let e = end_error(4).to_string();
        assert!(e.contains("size.prtotal=unlimited"), "{e}");
        assert_eq!(end_error(4).code(), keygate_core::ErrorCode::Internal);
        assert_eq!(
            end_error(51).to_string(),
            "unavailable: LDAP listing search failed (rc 51)"
        );
    }
}
