//! File descriptors: every open connection is one. The usual soft limit
//! (1024) is below what the default limits need, so the daemon raises its
//! soft `RLIMIT_NOFILE` to the hard limit at start and warns when even that
//! cannot cover the configured limits.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept for everything that is not a client connection: the
/// listeners, backend pools, log and backend files.
pub const RESERVED: u64 = 256;

/// The soft limit to ask for and, if it cannot cover `needed`, a warning.
pub fn plan(soft: u64, hard: u64, needed: u64) -> (u64, Option<String>) {
    let target = soft.max(hard);
    let warning = (target < needed).then(|| {
        format!(
            "the open-file limit is {target} (hard limit {hard}), below the {needed} the configured \
             max_connections need; raise it (LimitNOFILE= in the systemd unit) or lower max_connections"
        )
    });
    (target, warning)
}

/// Raises the soft limit to the hard one; returns the limit now in force
/// and a warning when it is below `needed` or cannot be read or set.
pub fn raise(needed: u64) -> (Option<u64>, Option<String>) {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => return (None, Some(format!("cannot read the open-file limit: {e}"))),
    };
    let (target, warning) = plan(soft, hard, needed);
    if target > soft {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            let (_, warning) = plan(soft, soft, needed);
            let why = format!("cannot raise the open-file limit from {soft} to {target}: {e}");
            return (
                Some(soft),
                Some(warning.map_or(why.clone(), |w| format!("{why}; {w}"))),
            );
        }
    }
    (Some(target), warning)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_goes_to_the_hard_one_and_a_shortfall_is_reported() {
        assert_eq!(plan(1024, 524_288, 4096 + RESERVED), (524_288, None));
        let (target, warning) = plan(1024, 1024, 4096 + RESERVED);
        assert_eq!(target, 1024);
        let w = warning.unwrap();
        assert!(w.contains("1024") && w.contains("4352"), "{w}");
        // Never lowered.
        assert_eq!(plan(8192, 4096, 100).0, 8192);
    }

    /// At start the daemon's soft limit ends at the hard limit.
    #[test]
    fn raise_sets_the_soft_limit_to_the_hard_one() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let (now, _) = raise(1);
        assert_eq!(now, Some(hard));
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, hard);
    }
}
