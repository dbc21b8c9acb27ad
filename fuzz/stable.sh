#!/usr/bin/env bash
# The fuzz targets on the stable toolchain: builds them instrumented for
# libFuzzer with the coverage flags cargo-fuzz passes (sanitizer coverage
# through stable -C flags; no AddressSanitizer, which needs nightly), then
# runs them.
#
#   bash fuzz/stable.sh                    # build every target, run each on
#                                          # FUZZ_RUNS inputs (default 100000; CI)
#   FUZZ_RUNS=0 bash fuzz/stable.sh        # build only
#   bash fuzz/stable.sh request -max_total_time=600   # fuzz one target for
#                                          # 10 minutes, corpus in fuzz/corpus/request
#
# A long run stops at a crash with the input in fuzz/artifacts/TARGET/, a
# smoke run with it in $CARGO_TARGET_DIR/fuzz/artifacts/ (fuzz/corpus and
# fuzz/artifacts are ignored by git). Builds go to $CARGO_TARGET_DIR/fuzz
# (target/fuzz by default), with a lock file of their own (fuzz/Cargo.lock).
set -euo pipefail
cd "$(dirname "$0")"
# The targets: every [[bin]] of Cargo.toml.
mapfile -t targets < <(sed -n '/^\[\[bin\]\]/{n;s/^name = "\(.*\)"$/\1/p}' Cargo.toml)
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no [[bin]] in fuzz/Cargo.toml" >&2; exit 1; }
host=$(rustc -vV | sed -n 's/^host: //p')
target_dir="${CARGO_TARGET_DIR:-$(cd .. && pwd)/target}/fuzz"
# --target: the flags reach the targets and their dependencies only, not
# build scripts or proc macros (an instrumented proc macro cannot load).
RUSTFLAGS="--cfg fuzzing -Cdebug-assertions -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares" \
    cargo build --locked --release --target "$host" --target-dir "$target_dir" --bins
bin="$target_dir/$host/release"

if [ $# -gt 0 ]; then
    t=$1; shift
    mkdir -p "corpus/$t" "artifacts/$t"
    exec "$bin/$t" -artifact_prefix="artifacts/$t/" "$@" "corpus/$t"
fi
runs=${FUZZ_RUNS:-100000}
[ "$runs" -gt 0 ] || exit 0
# No corpus directory, and a crash's input under the target dir: a smoke
# run leaves nothing in the source tree. -seed: the same inputs every time.
mkdir -p "$target_dir/artifacts"
for t in "${targets[@]}"; do
    log="$target_dir/$t.log"
    if "$bin/$t" -runs="$runs" -seed=1 -artifact_prefix="$target_dir/artifacts/$t-" >"$log" 2>&1; then
        echo "fuzz: $t: $(tail -n 1 "$log")"
    else
        cat "$log" >&2
        echo "fuzz: $t FAILED (input in $target_dir/artifacts/)" >&2
        exit 1
    fi
done
