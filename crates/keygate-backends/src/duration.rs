//! Durations as the config writes them (`"800ms"`, `"5m"`), with one upper
//! bound for every duration key of the config: a deadline computed from a
//! duration of thousands of years overflows a clock, and no setting of
//! keygate means more than a year.
//!
//! keygate-config's section reader checks its keys against [`MAX`]; a
//! backend's own struct reads its durations through this module
//! (`#[serde(with = "crate::duration")]`, or `crate::duration::option`).

use std::time::Duration;

use serde::de::Error as _;
use serde::Deserializer;

/// The longest duration any key accepts: one year, as `humantime` counts
/// it (365.25 days), written `"1year"`.
pub const MAX: Duration = Duration::from_secs(31_557_600);

/// What a key longer than [`MAX`] is told.
pub const TOO_LONG: &str = "must be at most \"1year\" (the longest duration keygate accepts)";

/// `d`, or the problem with it if it is longer than [`MAX`].
pub fn check(d: Duration) -> Result<Duration, &'static str> {
    if d > MAX {
        Err(TOO_LONG)
    } else {
        Ok(d)
    }
}

/// Reads a duration (`"5m"`) no longer than [`MAX`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value: Duration = humantime_serde::deserialize(d)?;
    check(value).map_err(D::Error::custom)
}

/// The same for an optional key.
pub mod option {
    use super::*;

    /// Reads an optional duration no longer than [`MAX`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let value: Option<Duration> = humantime_serde::deserialize(d)?;
        value.map(check).transpose().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound is what its message says, and only past it is there a
    /// problem.
    #[test]
    fn the_bound_is_one_year_and_says_so() {
        #[derive(serde::Deserialize)]
        struct T(#[serde(with = "humantime_serde")] Duration);
        let year: T = serde_json::from_str("\"1year\"").unwrap();
        assert_eq!(year.0, MAX);
        assert!(TOO_LONG.contains("\"1year\""));
        assert_eq!(check(MAX), Ok(MAX));
        assert_eq!(check(MAX + Duration::from_nanos(1)), Err(TOO_LONG));
    }
}
