#!/usr/bin/env bash
# Builds keygate's Debian package: target/debian/keygate_<version>-1_<arch>.deb
#
#   packaging/build-deb.sh               # release build, then the package
#   packaging/build-deb.sh --no-build    # package the binary already in target/release
#   packaging/build-deb.sh --no-build --fast --output DIR   # extra args go to `cargo deb`
#
# Steps: `cargo build --release`; the man pages and shell completions are
# generated from the built binary's own CLI (`keygate generate`) into
# target/release/packaging/; then `cargo deb --no-build` packs what
# [package.metadata.deb] in Cargo.toml lists. Needs cargo-deb
# (`cargo install cargo-deb --locked`; tests/setup.sh installs it).
# CARGO_TARGET_DIR is honoured, as cargo-deb honours it.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
args=()
for a in "$@"; do
    if [ "$a" = "--no-build" ]; then build=""; else args+=("$a"); fi
done

command -v cargo-deb >/dev/null || {
    echo "build-deb: cargo-deb is missing: cargo install cargo-deb --locked" >&2
    exit 1
}
if [ -n "$build" ]; then
    cargo build --release --locked --bin keygate
fi
release="${CARGO_TARGET_DIR:-target}/release"
[ -x "$release/keygate" ] || {
    echo "build-deb: $release/keygate is missing; run without --no-build" >&2
    exit 1
}
rm -rf "$release/packaging"
"$release/keygate" generate man "$release/packaging/man" >/dev/null
# Debian policy: man pages compressed (cargo-deb compresses only the assets
# it did not see built under target/release).
gzip -9n "$release/packaging/man/"*.1 "$release/packaging/man/"*.5
"$release/keygate" generate completions "$release/packaging/completions" >/dev/null
cargo deb --no-build --locked "${args[@]}"
