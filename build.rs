//! Link flags for the `keygate` binary.
//!
//! Release builds of the binary are linked as a position-dependent
//! executable (`-no-pie`). Wazuh starts `keygate ... id 001` once per
//! lookup, so start-up time is the exec one-shot's product, and in a PIE
//! build most of it was the dynamic loader applying ~23,700 relative
//! relocations to the 21 MB image and copying the pages they touch (see
//! BENCHMARKS.md, "One-shot start"). The code is still compiled as PIC
//! (rustc's default for the target), so the libraries and tests are
//! unchanged; only the final link of this binary differs. Debug builds stay
//! PIE.
//!
//! The trade: the binary's own image loads at a fixed address (libraries,
//! heap and stack are still randomised; NX and full RELRO are kept). A
//! packager who prefers a PIE binary builds with `KEYGATE_PIE=1`.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KEYGATE_PIE");
    let pie = std::env::var_os("KEYGATE_PIE").is_some_and(|v| v == "1");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release") && !pie;
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if release && linux {
        println!("cargo:rustc-link-arg-bin=keygate=-no-pie");
    }
}
