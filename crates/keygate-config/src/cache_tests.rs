//! `[cache]`, and what a reload keeps of the cache ([`Config::cache_kept`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keygate_core::Kept;
use std::path::Path;

use crate::{load_str, Config};

fn config(text: &str) -> Config {
    load_str(text, Path::new("/etc/keygate")).unwrap_or_else(|e| panic!("{e}"))
}

fn problems(text: &str) -> Vec<String> {
    load_str(text, Path::new("/etc/keygate"))
        .unwrap_err()
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// `negative_capacity` is read, defaults to 10,000, and must be at least 1.
#[test]
fn negative_capacity_has_its_default_and_its_bound() {
    let backend = "[[backend]]\nname = \"k\"\ntype = \"file\"\npath = \"k\"\n";
    let c = config(backend);
    assert_eq!(c.cache.unwrap().negative_capacity, 10_000);
    let c = config(&format!("[cache]\nnegative_capacity = 50\n{backend}"));
    assert_eq!(c.cache.unwrap().negative_capacity, 50);
    let p = problems(&format!("[cache]\nnegative_capacity = 0\n{backend}"));
    assert_eq!(p, ["cache.negative_capacity: must be at least 1"]);
}

const TWO: &str = "[[backend]]\nname = \"db\"\ntype = \"file\"\npath = \"/var/lib/k.csv\"\n\
                   [[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"/etc/k/client.keys\"\n";

fn kept(old: &str, new: &str) -> Kept {
    config(old).cache_kept(&config(new))
}

fn pairs(names: &[(&str, &str)]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The same backends: everything is kept; renamed only: everything too,
/// under the new names (issue 24, point 8).
#[test]
fn a_reload_with_the_same_backends_keeps_everything() {
    let all = Kept {
        backends: pairs(&[("db", "db"), ("keys", "keys")]),
        everything: true,
    };
    assert_eq!(kept(TWO, &format!("[log]\nlevel = \"debug\"\n{TWO}")), all);
    let renamed = TWO.replace("\"keys\"", "\"client-keys\"");
    assert_eq!(
        kept(TWO, &renamed),
        Kept {
            backends: pairs(&[("db", "db"), ("keys", "client-keys")]),
            everything: true,
        }
    );
}

/// A backend whose config changed in any key but its name loses its
/// cached answers, and so do the backends after it; not-found answers go
/// whenever anything changed (issue 24, point 8: the file's `path` pointed
/// at a store with a rotated key and the old key was still served).
#[test]
fn a_reload_drops_the_answers_of_a_changed_backend_and_the_ones_after_it() {
    let path = TWO.replace("/etc/k/client.keys", "/etc/k/rotated.keys");
    assert_eq!(
        kept(TWO, &path),
        Kept {
            backends: pairs(&[("db", "db")]),
            everything: false,
        }
    );
    for change in [
        TWO.replace("/var/lib/k.csv", "/var/lib/other.csv"),
        TWO.replace("name = \"db\"\n", "name = \"db\"\nformat = \"csv\"\n"),
        TWO.replace("name = \"db\"\n", "name = \"db\"\ntimeout = \"1s\"\n"),
        TWO.replace(
            "name = \"db\"\n",
            "name = \"db\"\non_not_found = \"stop\"\n",
        ),
        // Backends swapped, or one added in front.
        "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"/etc/k/client.keys\"\n\
         [[backend]]\nname = \"db\"\ntype = \"file\"\npath = \"/var/lib/k.csv\"\n"
            .to_owned(),
        format!("[[backend]]\nname = \"first\"\ntype = \"file\"\npath = \"/f\"\n{TWO}"),
    ] {
        assert_eq!(kept(TWO, &change), Kept::default(), "{change}");
    }
    // One appended: the answers of the two kept, not-found answers dropped.
    let added = format!("{TWO}[[backend]]\nname = \"last\"\ntype = \"file\"\npath = \"/l\"\n");
    assert_eq!(
        kept(TWO, &added),
        Kept {
            backends: pairs(&[("db", "db"), ("keys", "keys")]),
            everything: false,
        }
    );
}
