#!/usr/bin/env bash
# Mutation testing of keygate's security-critical code with cargo-mutants
# (https://mutants.rs): each mutant is a deliberate bug (a condition
# inverted, a function returning a default, an operator swapped); the
# package's tests are run against it, and a mutant they still pass is a
# check no test pins. Not part of tests/run (it takes hours on 2 cores);
# mutants/RESULTS.md holds the last result, mutants/survivors.md explains
# every mutant that is left.
#
#   bash mutants/run.sh                 # every group, one after the other
#   bash mutants/run.sh core server     # some groups
#   bash mutants/run.sh --list          # the groups and their files
#   bash mutants/run.sh sync -- -F plan # extra arguments for cargo mutants
#
# The mutants are made in a copy of the working tree (uncommitted changes
# included) under $CARGO_TARGET_DIR/mutants/tree, built in place with its own
# target directory, which is kept between runs: the first run builds
# everything once, later runs rebuild only what a mutant touches. Results go
# to $CARGO_TARGET_DIR/mutants/out/GROUP/mutants.out (outcomes.json,
# missed.txt, caught.txt, timeout.txt, unviable.txt); `python3
# mutants/summary.py` turns them into RESULTS.md's table.
#
# Needs cargo-mutants (`cargo install --locked cargo-mutants`), cargo-nextest
# and the servers tests/setup.sh starts (the daemon group runs end-to-end
# tests against the file backend only).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
base=${CARGO_TARGET_DIR:-$root/target}/mutants
tree=$base/tree
out=$base/out

# group -> the files it mutates and how its tests run. Each group's tests
# are its package's own (cargo-mutants' default), except where named.
groups=(core redact server sync daemon wazuh-http)
files() {
  case $1 in
    core) # record validation, the gateway's final record-matches-request
      # check, the Wazuh version guard (IPv6 before 4.4, the 127-byte cap)
      echo crates/keygate-core/src/record/mod.rs crates/keygate-core/src/record/address.rs \
        crates/keygate-core/src/wazuh/mod.rs \
        crates/keygate-core/src/gateway.rs crates/keygate-core/src/wazuh/guard.rs ;;
    server) # peer checks at accept, allowed_uids/gids, the control socket's uid check
      echo crates/keygate-server/src/wazuh.rs crates/keygate-server/src/control.rs \
        crates/keygate-server/src/server/mod.rs crates/keygate-server/src/server/connection.rs ;;
    redact) # URLs with secrets never shown
      echo crates/keygate-backends/src/endpoint/redact.rs ;;
    sync) # what sync --apply --prune decides and does
      echo crates/keygate-wazuh/src/sync/mod.rs crates/keygate-wazuh/src/sync/plan.rs \
        crates/keygate-wazuh/src/sync/apply.rs crates/keygate-wazuh/src/sync/backup.rs \
        crates/keygate-wazuh/src/sync/report.rs ;;
    wazuh-http) # no redirect followed with keys, 429 and the pace
      echo crates/keygate-wazuh/src/http.rs crates/keygate-wazuh/src/pace.rs ;;
    daemon) # the daemon's wiring: access lists, limits, reload, the control commands
      echo src/daemon.rs ;;
    *) echo "unknown group: $1 (groups: ${groups[*]})" >&2; return 2 ;;
  esac
}
test_args() {
  case $1 in
    # keygate-backends' other tests need every database server; redaction
    # is tested by the library's unit tests.
    redact) echo --test-tool=cargo --cargo-test-arg=--lib ;;
    # The root package's 30 test binaries take minutes to link for each
    # mutant: the binary's unit tests and those that run the daemon.
    daemon) echo --test-tool=cargo --cargo-test-arg=--bin=keygate \
      --cargo-test-arg=--test=e2e_socket --cargo-test-arg=--test=e2e_control \
      --cargo-test-arg=--test=e2e_hardening --cargo-test-arg=--test=e2e_observe \
      --cargo-test-arg=--test=e2e_audit ;;
    *) echo --test-tool=nextest ;;
  esac
}

selected=() extra=()
while (($#)); do
  case $1 in
    --list) for g in "${groups[@]}"; do echo "$g: $(files "$g")"; done; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) files "$1" >/dev/null; selected+=("$1") ;;
  esac
  shift
done
((${#selected[@]})) || selected=("${groups[@]}")

command -v cargo-mutants >/dev/null ||
  { echo "cargo-mutants is not installed: cargo install --locked cargo-mutants" >&2; exit 2; }

# The copy: every file git knows or would add, as it is in the working tree.
# Compared by content and written with a new mtime (not -a's old one): a
# file put back to an older mtime (after an interrupted run left a mutant
# in the copy) would look older than what was built from the mutant, and
# cargo would not rebuild it.
mkdir -p "$tree" "$out"
(cd "$root" && git ls-files -z --cached --others --exclude-standard) |
  rsync -rlp --checksum --from0 --files-from=- "$root"/ "$tree"/
export CARGO_TARGET_DIR=$tree/target
# No debug info: a mutant's rebuild is mostly linking.
export CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0

for g in "${selected[@]}"; do
  args=()
  for f in $(files "$g"); do args+=(-f "$f"); done
  # shellcheck disable=SC2046
  (cd "$tree" && cargo mutants --in-place --workspace --no-shuffle --all-features \
    --output "$out/$g" $(test_args "$g") "${args[@]}" "${extra[@]}") || true
  echo "== $g: $(wc -l < "$out/$g/mutants.out/caught.txt") caught," \
    "$(wc -l < "$out/$g/mutants.out/missed.txt") missed," \
    "$(wc -l < "$out/$g/mutants.out/timeout.txt") timed out," \
    "$(wc -l < "$out/$g/mutants.out/unviable.txt") unviable"
done
