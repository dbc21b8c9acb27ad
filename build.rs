//! Link flags for the `keygate` binary.
//!
//! Wazuh starts `keygate ... id 001` once per lookup, so start-up time is
//! the exec one-shot's product (see docs/dev/benchmarks-history.md, "One-shot start" and
//! "One-shot start, second pass"). Release builds therefore differ from
//! debug builds in two link steps; the code itself is compiled as usual.
//!
//! - The binary is linked position-dependent (`-no-pie`): in a PIE build
//!   most of a one-shot's start was the dynamic loader applying ~23,700
//!   relative relocations to the 21 MB image and copying the pages they
//!   touch. The code is still compiled as PIC (rustc's default for the
//!   target), so the libraries and tests are unchanged; only the final link
//!   of this binary differs. The trade: the binary's own image loads at a
//!   fixed address (libraries, heap and stack are still randomised; NX and
//!   full RELRO are kept). A packager who prefers a PIE binary builds with
//!   `KEYGATE_PIE=1`.
//! - On glibc targets the unwinder is linked in from `libgcc_eh.a` (what
//!   `gcc -static-libgcc` does) instead of loading `libgcc_s.so.1`: one
//!   shared library fewer for the loader to map, search at every symbol
//!   binding and list in `/proc/self/maps` (which std's start-up parses).
//!   Only the unwinder's 14 `_Unwind_*` functions came from that library;
//!   panics unwind and print backtraces the same way. It is linked as a
//!   whole archive ahead of std's `-lgcc_s`, so both GNU ld and lld leave
//!   `libgcc_s.so.1` out (`--as-needed`). libc and libm stay shared: glibc's
//!   name service (group names, host names) needs a dynamic libc.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KEYGATE_PIE");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let pie = std::env::var_os("KEYGATE_PIE").is_some_and(|v| v == "1");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let glibc = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    // A +crt-static build links the unwinder statically already.
    let crt_static = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .is_ok_and(|f| f.split(',').any(|f| f == "crt-static"));
    if release && linux && !pie {
        println!("cargo:rustc-link-arg-bin=keygate=-no-pie");
    }
    if release && linux && glibc && !crt_static {
        println!("cargo:rustc-link-lib=static:+whole-archive=gcc_eh");
    }
}
