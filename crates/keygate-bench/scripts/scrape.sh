#!/usr/bin/env bash
# Does scraping /metrics slow the answers being served?
#   crates/keygate-bench/scripts/scrape.sh
# keygate on a client.keys of AGENTS agents (default 100000), every one
# cached first; then ROUNDS (default 3) pairs of DURATION (default 10s) runs
# of CLIENTS (default 8) Wazuh-style clients asking random ids (all cache
# hits): one run with nothing scraping, one with a scrape of /metrics every
# INTERVAL (default 0.1 s), and one with a request for a path that is not
# there (/none, answered 404) as often: the same connection, process and
# HTTP cost for the scraper and the endpoint, without the scrape's own work.
# Prints p50/p99 of each run and the ratios of the p99s to the quiet run's. Needs release builds: cargo build --release -p keygate -p keygate-bench
# (CARGO_TARGET_DIR is honoured); curl.
set -euo pipefail
cd "$(dirname "$0")/../../.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
KG=$TARGET/release/keygate
BENCH=$TARGET/release/keygate-bench
AGENTS=${AGENTS:-100000}
CLIENTS=${CLIENTS:-8}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
INTERVAL=${INTERVAL:-0.1}
PORT=${PORT:-19187}
[ -x "$KG" ] && [ -x "$BENCH" ] || { echo "build first: cargo build --release -p keygate -p keygate-bench" >&2; exit 1; }
WORK=$(mktemp -d /tmp/keygate-scrape.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

echo "# $(date -u +%F) $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); load $(cut -d' ' -f1-3 /proc/loadavg)"
"$BENCH" gen --count "$AGENTS" > "$WORK/client.keys"
cat > "$WORK/keygate.toml" <<TOML
[server]
socket = "$WORK/keygate.sock"
[log]
level = "warn"
file = "$WORK/keygate.log"
[cache]
capacity = $((AGENTS * 2))
ttl = "1h"
refresh_ahead = 0.0
[metrics]
listen = "127.0.0.1:$PORT"
[[backend]]
name = "keys"
type = "file"
path = "$WORK/client.keys"
TOML
"$KG" --config "$WORK/keygate.toml" serve &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$WORK/keygate.sock" ] && break; sleep 0.1; done
# Every agent once, so that every later request is a cache hit.
"$BENCH" socket --socket "$WORK/keygate.sock" --clients 1 --duration 120s --id-max "$AGENTS" --sequential --max-requests "$AGENTS" > /dev/null
echo "cache: $(curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^keygate_cache_(entries|hits_total|misses_total) ')" | tr '\n' ' '
echo

times=$(for _ in $(seq 21); do curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$PORT/metrics"; done | sort -n)
echo "one scrape, as curl times it: median $(echo "$times" | sed -n 11p) s, max $(echo "$times" | tail -1) s"
run() { "$BENCH" socket --socket "$WORK/keygate.sock" --clients "$CLIENTS" --duration "$DURATION" --id-max "$AGENTS" --json; }
p99() { sed -n 's/.*"p99_ms":\([0-9.]*\).*/\1/p'; }
p50() { sed -n 's/.*"p50_ms":\([0-9.]*\).*/\1/p'; }
# scraped PATH: a run while PATH is fetched every INTERVAL.
scraped() {
    ( while true; do curl -s -o /dev/null "http://127.0.0.1:$PORT$1"; sleep "$INTERVAL"; done ) &
    local scraper=$!
    run
    kill "$scraper"; wait "$scraper" 2>/dev/null || true
}
for r in $(seq "$ROUNDS"); do
    quiet=$(run); none=$(scraped /none); metrics=$(scraped /metrics)
    q99=$(echo "$quiet" | p99); n99=$(echo "$none" | p99); m99=$(echo "$metrics" | p99)
    printf 'round %s: quiet p50=%sms p99=%sms | /none p50=%sms p99=%sms (%.2fx) | /metrics p50=%sms p99=%sms (%.2fx)\n' \
        "$r" "$(echo "$quiet" | p50)" "$q99" "$(echo "$none" | p50)" "$n99" "$(echo "$n99 / $q99" | bc -l)" \
        "$(echo "$metrics" | p50)" "$m99" "$(echo "$m99 / $q99" | bc -l)"
done
