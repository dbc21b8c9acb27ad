#!/usr/bin/env bash
# Builds keygate's Debian package: target/debian/keygate_<version>-1_<arch>.deb
#
#   packaging/build-deb.sh               # release build, then the package
#   packaging/build-deb.sh --no-build    # package the binary already in target/release
#   packaging/build-deb.sh --no-build --fast --output DIR   # extra args go to `cargo deb`
#
# Steps: `cargo build --release` (position-independent, C code hardened by
# .cargo/config.toml's CFLAGS); the binary is refused unless it is PIE; the
# man pages and shell completions are generated from the built binary's own
# CLI (`keygate generate`) into target/release/packaging/; `cargo deb
# --no-build --strip` packs what [package.metadata.deb] in Cargo.toml lists,
# stripping the binary; then the md5sums control file (which cargo-deb does
# not write) is added. Needs cargo-deb (`cargo install cargo-deb --locked`;
# tests/setup.sh installs it), binutils (readelf, strip) and dpkg-deb.
# CARGO_TARGET_DIR is honoured, as cargo-deb honours it. docs/install.md
# says what lintian reports on the result and why.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "build-deb: $*" >&2; exit 1; }

build=1
args=()
for a in "$@"; do
    if [ "$a" = "--no-build" ]; then build=""; else args+=("$a"); fi
done

command -v cargo-deb >/dev/null || die "cargo-deb is missing: cargo install cargo-deb --locked"
command -v readelf >/dev/null || die "readelf is missing: apt-get install binutils"
if [ -n "$build" ]; then
    cargo build --release --locked --bin keygate
fi
release="${CARGO_TARGET_DIR:-target}/release"
[ -x "$release/keygate" ] || die "$release/keygate is missing; run without --no-build"
# keygate hands out secrets and Wazuh runs it as root: never package a
# binary whose image loads at a fixed address (ELF type EXEC).
type=$(LC_ALL=C readelf -h "$release/keygate" | sed -n 's/^ *Type: *\([A-Z]*\).*/\1/p')
[ "$type" = DYN ] || die "$release/keygate is not position-independent (ELF type ${type:-unknown}, not DYN)"

rm -rf "$release/packaging"
"$release/keygate" generate man "$release/packaging/man" >/dev/null
# Debian policy: man pages compressed (cargo-deb compresses only the assets
# it did not see built under target/release).
gzip -9n "$release/packaging/man/"*.1 "$release/packaging/man/"*.5
"$release/keygate" generate completions "$release/packaging/completions" >/dev/null
# --strip: whatever the profile left (a test run packages its debug build),
# the packaged binary has no symbols or debug info.
deb=$(cargo deb --no-build --locked --strip "${args[@]}" | tail -n 1)
[ -f "$deb" ] || die "cargo deb did not report the package it wrote (got '$deb')"

# md5sums: every file of the package but the conffiles (dpkg tracks those
# itself), as dh_md5sums writes it. The package is unpacked and packed again
# with the same modes, root-owned.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -R "$deb" "$work/root"
(
    cd "$work/root"
    conffiles=DEBIAN/conffiles
    find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort \
        | while IFS= read -r path; do
            if [ -f "$conffiles" ] && grep -qxF "/$path" "$conffiles"; then continue; fi
            printf '%s\0' "$path"
        done | xargs -0 -r md5sum > DEBIAN/md5sums
)
chmod 0644 "$work/root/DEBIAN/md5sums"
level=()
for a in "${args[@]}"; do [ "$a" = --fast ] && level=(-z1); done
dpkg-deb --root-owner-group -Zxz "${level[@]}" --build "$work/root" "$deb" >/dev/null
echo "$deb"
