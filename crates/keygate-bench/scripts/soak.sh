#!/usr/bin/env bash
# Soak (issue 10, "Proof"): 8 Wazuh-style clients at about 80 % of the
# measured maximum against MariaDB with the cache on, for SOAK (default 5m,
# at most 10m); MariaDB is killed (SIGKILL) and restarted once in the middle.
# Reports total requests, failed connections, wrong answers (every reply is
# checked against the fixture `keygate-bench gen` wrote), replies by code,
# and keygate's RSS and open file descriptors at start and end.
#
#   cargo build --release --workspace
#   crates/keygate-bench/scripts/soak.sh            # SOAK=5m CLIENTS=8 AGENTS=20000
#
# MariaDB is a private mariadbd on a free port with a temp datadir (as
# tests/resilience_mysql.rs starts one); the shared server is not touched.
# Not part of tests/run.
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
KG=$ROOT/target/release/keygate
BENCH=$ROOT/target/release/keygate-bench
CLIENTS=${CLIENTS:-8}
AGENTS=${AGENTS:-20000}
SOAK=${SOAK:-5m}
OUTAGE=${OUTAGE:-10}   # seconds MariaDB stays down
[ -x "$KG" ] && [ -x "$BENCH" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
secs=$(python3 -c "import sys,re; m=re.fullmatch(r'(\d+)(s|m)', sys.argv[1]); print(int(m[1])*(60 if m[2]=='m' else 1))" "$SOAK")
[ "$secs" -le 600 ] || { echo "SOAK must be at most 10m" >&2; exit 1; }

WORK=$(mktemp -d /tmp/keygate-soak.XXXXXX)
MARIADB_PID= KG_PID=
cleanup() {
    [ -n "$KG_PID" ] && kill "$KG_PID" 2>/dev/null || true
    [ -n "$MARIADB_PID" ] && kill "$MARIADB_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)
mkdir "$WORK/data"

start_mariadb() {
    "$MARIADBD" --no-defaults --datadir="$WORK/data" --socket="$WORK/mysqld.sock" \
        --pid-file="$WORK/mysqld.pid" --port="$PORT" --bind-address=127.0.0.1 --user=root \
        --skip-grant-tables --skip-log-bin --innodb-buffer-pool-size=64M \
        >>"$WORK/mariadbd.log" 2>&1 &
    MARIADB_PID=$!
    for _ in $(seq 1 300); do
        mariadb -h 127.0.0.1 -P "$PORT" -u root -e 'SELECT 1' >/dev/null 2>&1 && return
        sleep 0.1
    done
    cat "$WORK/mariadbd.log" >&2; exit 1
}

usage() { # RSS (kB) and open fds of keygate
    echo "rss_kb=$(awk '/VmRSS/{print $2}' /proc/$KG_PID/status) fds=$(ls /proc/$KG_PID/fd | wc -l)"
}

echo "# soak $(date -u '+%F %H:%M') UTC, $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
start_mariadb
mariadb -h 127.0.0.1 -P "$PORT" -u root -e "CREATE DATABASE wazuh;
  CREATE TABLE wazuh.agent (id VARCHAR(8) PRIMARY KEY, name VARCHAR(128), ip VARCHAR(19), agent_key VARCHAR(128), INDEX(ip));"
"$BENCH" gen --count "$AGENTS" --format sql | mariadb -h 127.0.0.1 -P "$PORT" -u root wazuh
# One clean restart before the load: a SIGKILL soon after creating a fresh
# datadir can leave InnoDB's system tablespace unreadable (seen here: "Header
# page consists of zero bytes in datafile: ./ibdata1"), which would test the
# fresh datadir, not keygate. After this the kill in the middle is a real crash.
kill -TERM "$MARIADB_PID"; wait "$MARIADB_PID" 2>/dev/null || true
start_mariadb

cat > "$WORK/keygate.toml" <<TOML
[server]
socket = "$WORK/keygate.sock"
request_timeout = "5s"
[log]
level = "warn"
file = "$WORK/keygate.log"
[cache]
enabled = true
capacity = 200000
ttl = "30s"
[[backend]]
name = "mariadb"
type = "mysql"
url = "mysql://root@127.0.0.1:$PORT/wazuh"
timeout = "1s"
connect_timeout = "1s"
max_retry_interval = "2s"
query_by_id = "SELECT id, name, ip, agent_key FROM agent WHERE id = ?"
query_by_ip = "SELECT id, name, ip, agent_key FROM agent WHERE ip = ?"
TOML
"$KG" --config "$WORK/keygate.toml" serve 2>>"$WORK/keygate.stderr" &
KG_PID=$!
for _ in $(seq 1 200); do [ -S "$WORK/keygate.sock" ] && break; sleep 0.05; done

# The maximum, measured here with the same clients and mix.
max=$("$BENCH" socket --socket "$WORK/keygate.sock" --clients "$CLIENTS" --duration 10s \
      --id-min 1 --id-max "$AGENTS" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rps"])')
rate=$(python3 -c "print(round($max * 0.8))")
echo "measured maximum: ${max%.*} req/s; soak rate (80 %): $rate req/s for $SOAK"
echo "start: $(usage)"

"$BENCH" socket --socket "$WORK/keygate.sock" --clients "$CLIENTS" --duration "$SOAK" \
    --id-min 1 --id-max "$AGENTS" --rate "$rate" --verify --json > "$WORK/soak.json" &
LOAD=$!
sleep $((secs / 2))
echo "middle: $(usage); killing MariaDB (SIGKILL) for ${OUTAGE}s"
kill -9 "$MARIADB_PID"; wait "$MARIADB_PID" 2>/dev/null || true
sleep "$OUTAGE"
start_mariadb
echo "MariaDB back: $(usage)"
wait "$LOAD"
echo "end: $(usage)"
python3 - "$WORK/soak.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"requests={r['requests']} rps={r['rps']:.0f} p50={r['p50_ms']:.3f}ms p99={r['p99_ms']:.3f}ms "
      f"max={r['max_ms']:.1f}ms codes={r['codes']} failed_connections={r['failed_connections']} "
      f"bad_replies={r['bad_replies']} wrong_answers={r['wrong_answers']}")
ok = r['failed_connections'] == 0 and r['wrong_answers'] == 0 and r['bad_replies'] == 0
sys.exit(0 if ok else 1)
PY
