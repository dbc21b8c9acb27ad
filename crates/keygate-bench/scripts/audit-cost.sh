#!/usr/bin/env bash
# What writing the audit line before the answer costs (docs/dev/benchmarks-history.md,
# "The audit line before the answer"): keygate's own CPU per request (user +
# system, /proc/PID/stat), its voluntary context switches per request, the
# rate and p99, for a fixed number of requests (8 clients x PER), the file
# backend with 100,000 agents, the log file at warn with the audit events in
# it as bench.sh configures (AUDIT_FILE=1: in their own file); cache off
# (CACHE=true: on, every agent asked once first).
#   crates/keygate-bench/scripts/audit-cost.sh
# Env: VARIANTS (default "refuse serve": the daemon's audit_failure; "base"
#      runs $KG_BASE, another build, with its own defaults), PASSES (5),
#      PER (25000), KG (target/release/keygate), KG_BASE.
# Needs release builds: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/../../.."
KG=${KG:-$PWD/target/release/keygate}
BENCH=$PWD/target/release/keygate-bench
PER=${PER:-25000}; PASSES=${PASSES:-5}; CACHE=${CACHE:-false}
W=$(mktemp -d /tmp/keygate-audit-cost.XXXXXX)
trap 'rm -rf "$W"' EXIT
"$BENCH" gen --count 100000 > "$W/client.keys"
tick=$(getconf CLK_TCK)
where="in the log file"; [ -n "${AUDIT_FILE:-}" ] && where="in its own file"
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); cache $CACHE; audit events $where"
for pass in $(seq 1 "$PASSES"); do
    for v in ${VARIANTS:-refuse serve}; do
        bin=$KG; policy="audit_failure = '$v'"
        [ "$v" = base ] && { bin=$KG_BASE; policy=""; }
        rm -f "$W/keygate.sock" "$W/keygate.log" "$W/audit.log"
        cat > "$W/k.toml" <<TOML
[server]
socket = "$W/keygate.sock"
[log]
level = "warn"
file = "$W/keygate.log"
${AUDIT_FILE:+audit_file = '$W/audit.log'}
$policy
[cache]
enabled = $CACHE
capacity = 200000
[[backend]]
name = "keys"
type = "file"
path = "$W/client.keys"
TOML
        "$bin" --config "$W/k.toml" serve & pid=$!
        for _ in $(seq 1 200); do [ -S "$W/keygate.sock" ] && break; sleep 0.05; done
        if [ "$CACHE" = true ]; then
            "$BENCH" socket --socket "$W/keygate.sock" --clients 1 --duration 300s --id-min 1 --id-max 100000 \
                --sequential --max-requests 100000 > /dev/null
        fi
        "$BENCH" socket --socket "$W/keygate.sock" --clients 8 --duration 1s --id-min 1 --id-max 100000 > /dev/null
        switches() { cat /proc/"$pid"/task/*/status | awk '/^voluntary_ctxt_switches/{s+=$2} END{print s}'; }
        c0=$(awk '{print $14+$15}' /proc/"$pid"/stat); s0=$(switches)
        out=$("$BENCH" socket --socket "$W/keygate.sock" --clients 8 --duration 300s --max-requests "$PER" --id-min 1 --id-max 100000)
        c1=$(awk '{print $14+$15}' /proc/"$pid"/stat); s1=$(switches)
        kill "$pid"; wait "$pid" 2>/dev/null || true
        n=$(echo "$out" | sed -n 's/.*requests=\([0-9]*\).*/\1/p')
        python3 -c "import sys; c, s, n, t = map(float, sys.argv[1:5]); print(f'pass $pass $v: {c / t / n * 1e6:.1f} µs keygate CPU/request, {s / n:.2f} context switches/request, ' + sys.argv[5])" \
            "$((c1 - c0))" "$((s1 - s0))" "$n" "$tick" "$(echo "$out" | grep -oE 'rps=[0-9]+ .*p99=[0-9.]+ms') load $(cut -d' ' -f1 /proc/loadavg)"
    done
done
