//! Link flags for the `keygate` binary.
//!
//! Wazuh starts `keygate ... id 001` once per lookup, so start-up time is
//! the exec one-shot's product (see docs/dev/benchmarks-history.md, "One-shot
//! start" and "One-shot start, second pass"). The binary stays
//! position-independent (rustc's default, full ASLR): keygate hands out
//! secrets and Wazuh runs it as root, which is worth the 0.3-0.45 ms a
//! one-shot spends relocating its image (docs/dev/benchmarks-history.md,
//! "PIE again").
//! tests/packaging.rs checks that this script asks for no `-no-pie` and that
//! the binary is an ELF `ET_DYN`.
//!
//! The one lever kept, for release builds on glibc targets: the unwinder is
//! linked in from `libgcc_eh.a` (what `gcc -static-libgcc` does) instead of
//! loading `libgcc_s.so.1`: one shared library fewer for the loader to map,
//! search at every symbol binding and list in `/proc/self/maps` (which std's
//! start-up parses). Only the unwinder's 14 `_Unwind_*` functions came from
//! that library; panics unwind and print backtraces the same way. It is
//! linked as a whole archive ahead of std's `-lgcc_s`, so both GNU ld and
//! lld leave `libgcc_s.so.1` out (`--as-needed`). Debian builds
//! `libgcc_eh.a` position-independent, so the PIE link takes it as is.
//! libc and libm stay shared: glibc's name service (group names, host names)
//! needs a dynamic libc.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let glibc = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    // A +crt-static build links the unwinder statically already.
    let crt_static = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .is_ok_and(|f| f.split(',').any(|f| f == "crt-static"));
    if release && linux && glibc && !crt_static {
        println!("cargo:rustc-link-lib=static:+whole-archive=gcc_eh");
    }
}
