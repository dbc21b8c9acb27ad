#!/usr/bin/env bash
# Reproduces one row of BENCHMARKS.md:  crates/keygate-bench/scripts/bench.sh ROW
#   ROW: floor | cache | file | sqlite | mysql | postgres | redis | ldap | exec | seed | memory | storm | sync | sweep
#        | exec-backend | http | all (every row but sweep, one after another)
# Env: CLIENTS (default 8), DURATION (default 10s), AGENTS (default 100000),
#      ROUNDS (cache: on/off pairs, default 2; memory: check runs, default 3),
#      KEYGATE_TEST_MYSQL_URL, KEYGATE_TEST_POSTGRES_URL (as for the tests),
#      BENCH_DB (default keygate_bench), DB_SOCKET=1 (mysql/postgres rows over
#      the Unix sockets MYSQL_SOCKET, PG_SOCKET_DIR instead of TCP).
#      AUDIT_FAILURE (refuse | serve: the daemon's [log] audit_failure; default
#      its own), AUDIT_FILE=1 (audit events in their own file, not the log).
#      ROUNDS (socket rows: floor and keygate measured side by side this many
#      times, then the median ratio; default 3 for cache and file, else 1).
# The file, mysql and postgres rows also split the CPU per request between
# the load generator, keygate and the rest (the database server); the cache
# row compares keygate's own CPU per request, cache on and off.
# The mysql and postgres rows also measure the two-hop floor (floor/dbfloor.c,
# built with gcc, libmariadb-dev and libpq-dev): the least any responder
# between the Wazuh socket and the database can do, beside keygate and the
# database's own tool.
# Every socket row measures the real floor (blocking threads: accept, one
# read, one write, close; no runtime) in the same invocation, just before
# keygate, and prints keygate's ratio to it.
# Needs release builds: cargo build --release --workspace (or KG= and BENCH=
# naming the binaries, e.g. from another CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
KG=${KG:-$ROOT/target/release/keygate}
BENCH=${BENCH:-$ROOT/target/release/keygate-bench}
CLIENTS=${CLIENTS:-8}
DURATION=${DURATION:-10s}
AGENTS=${AGENTS:-100000}
MYSQL_URL=${KEYGATE_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306}
PG_URL=${KEYGATE_TEST_POSTGRES_URL:-postgres://root@127.0.0.1:5432/postgres}
BENCH_DB=${BENCH_DB:-keygate_bench}
MYSQL_SOCKET=${MYSQL_SOCKET:-/run/mysqld/mysqld.sock}
PG_SOCKET_DIR=${PG_SOCKET_DIR:-/var/run/postgresql}
WORK=$(mktemp -d /tmp/keygate-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
[ -x "$KG" ] && [ -x "$BENCH" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }

machine() { echo "# $(date -u +%F) $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/{print $2}') GiB"; }

keys_file() { "$BENCH" gen --count "$AGENTS" > "$WORK/client.keys"; }

# start_daemon BACKEND_TOML [CACHE_ENABLED]
start_daemon() {
    cat > "$WORK/keygate.toml" <<TOML
[server]
socket = "$WORK/keygate.sock"
request_timeout = "10s"
[log]
level = "${LOG_LEVEL:-warn}"
file = "$WORK/keygate.log"
${AUDIT_FAILURE:+audit_failure = '$AUDIT_FAILURE'}
${AUDIT_FILE:+audit_file = '$WORK/audit.log'}
[cache]
enabled = ${2:-false}
capacity = 200000
$1
TOML
    "$KG" --config "$WORK/keygate.toml" serve &
    PIDS+=($!)
    for _ in $(seq 1 200); do [ -S "$WORK/keygate.sock" ] && break; sleep 0.05; done
    [ -S "$WORK/keygate.sock" ] || { cat "$WORK/keygate.log" >&2; exit 1; }
}

socket_load() { "$BENCH" socket --socket "$WORK/keygate.sock" --clients "$CLIENTS" --duration "$DURATION" --id-min 1 --id-max "$AGENTS" \
    --rounds "${ROUNDS:-1}" --floor "$@"; }

# socket_load's output shown on stderr, its keygate line on stdout (not
# `tee /dev/stderr`: that reopens stderr and truncates a log file it points to).
load_line() { local out; out=$(socket_load "$@"); printf '%s\n' "$out" >&2; printf '%s\n' "$out" | grep -E '^keygate ' | tail -1; }

# Every agent asked once, in order, by one client: the cache then holds all.
warm_cache() {
    "$BENCH" socket --socket "$WORK/keygate.sock" --clients 1 --duration 300s --id-min 1 --id-max "$AGENTS" \
        --sequential --max-requests "$AGENTS" | sed 's/^/# warm-up: /'
}

mysql_db() { # creates BENCH_DB with AGENTS agents
    local auth=${MYSQL_URL#mysql://}; local hostport=${auth#*@}; local user=${auth%@*}
    MYSQL="mariadb -h ${hostport%:*} -P ${hostport#*:} -u ${user%%:*}"
    $MYSQL -e "DROP DATABASE IF EXISTS $BENCH_DB; CREATE DATABASE $BENCH_DB;
      CREATE TABLE $BENCH_DB.agent (id VARCHAR(8) PRIMARY KEY, name VARCHAR(128), ip VARCHAR(19), agent_key VARCHAR(128), INDEX(ip));"
    "$BENCH" gen --count "$AGENTS" --format sql | $MYSQL "$BENCH_DB"
}

pg_db() {
    psql "$PG_URL" -q -c "DROP DATABASE IF EXISTS $BENCH_DB" -c "CREATE DATABASE $BENCH_DB"
    local db=${PG_URL%/*}/$BENCH_DB
    psql "$db" -q -c "CREATE TABLE agent (id VARCHAR(8) PRIMARY KEY, name VARCHAR(128), ip VARCHAR(19), agent_key VARCHAR(128)); CREATE INDEX ON agent(ip);"
    "$BENCH" gen --count "$AGENTS" --format sql | psql "$db" -q
    PG_DB=$db
}

# compare TOOL RATE: keygate's rate (from the load generator's output in
# $WORK/keygate.out) and the two-hop floor's ($WORK/dbfloor.out) against
# the database tool's, and their ratios.
compare() {
    local kg fl; kg=$(rate_of "$WORK/keygate.out"); fl=$(rate_of "$WORK/dbfloor.out")
    sed 's/^/# /' "$WORK/db.out"
    python3 -c "import sys; k, f, d = map(float, sys.argv[1:4]); print(f'# {sys.argv[4]}: {d:,.0f}/s at $CLIENTS clients; keygate {k:,.0f}/s: ratio {k / d:.2f}x; two-hop floor (dbfloor) {f:,.0f}/s: ratio {f / d:.2f}x; keygate / two-hop floor {k / f:.2f}x')" "$kg" "$fl" "$2" "$1"
}
rate_of() { sed -n 's/^keygate .*rps=\([0-9.]*\).*/\1/p' "$1" | tail -1; }

# dbfloor_row DATABASE CONN...: the two-hop floor (floor/dbfloor.c: blocking
# threads with the database's own client library, one prepared lookup per
# request, nothing else), built here, started on the bench table and queries
# with one connection per client, and measured with keygate's load; its CPU
# split in SPLIT_FLOOR. keygate is stopped first, so the two never share the
# machine.
dbfloor_row() {
    local src=$ROOT/crates/keygate-bench/floor/dbfloor.c by_id=$1 by_ip=$2; shift 2
    kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
    # shellcheck disable=SC2046 # the *_config flags are words
    gcc -O2 -pthread "$src" $(mariadb_config --cflags --libs) -I"$(pg_config --includedir)" -lpq -o "$WORK/dbfloor" \
        || { echo "bench.sh: dbfloor needs gcc, libmariadb-dev and libpq-dev (apt-get install gcc libmariadb-dev libpq-dev)" >&2; exit 1; }
    "$WORK/dbfloor" "$WORK/dbfloor.sock" "$CLIENTS" "$@" -- "$by_id" "$by_ip" &
    PIDS+=($!)
    for _ in $(seq 1 200); do [ -S "$WORK/dbfloor.sock" ] && break; sleep 0.05; done
    "$BENCH" socket --socket "$WORK/dbfloor.sock" --clients "$CLIENTS" --duration "$DURATION" --id-min 1 --id-max "$AGENTS" \
        | tee "$WORK/dbfloor.out" | sed 's/^keygate /two-hop floor (dbfloor) /'
    cpu_split "$WORK/dbfloor.sock" dbfloor; SPLIT_FLOOR=$SPLIT
}

# Where the CPU goes, per request, in µs: the whole machine's busy time (all
# cores, /proc/stat) during a run, the client's own (/usr/bin/time) and
# keygate's (/proc/PID/stat); "the rest" is the database server (and the
# kernel's own threads: run on a quiet machine).
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8; exit}' /proc/stat; }
proc_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# cpu_split SOCKET LABEL: a load (no floor) of SPLIT_DURATION (default 3s)
# on SOCKET, served by the last process started (LABEL), split into load
# generator, that process and the rest: the line in SPLIT, the process's
# own µs per request in SPLIT_US.
cpu_split() {
    local pid=${PIDS[-1]} sock=$1 label=$2 b0 k0 b1 k1 n
    b0=$(busy_ticks); k0=$(proc_ticks "$pid")
    /usr/bin/time -f "%U %S" -o "$WORK/client.cpu" "$BENCH" socket --socket "$sock" --clients "$CLIENTS" \
        --duration "${SPLIT_DURATION:-3s}" --id-min 1 --id-max "$AGENTS" > "$WORK/split.out"
    b1=$(busy_ticks); k1=$(proc_ticks "$pid")
    n=$(sed -n 's/^keygate .*requests=\([0-9]*\).*/\1/p' "$WORK/split.out" | tail -1)
    SPLIT=$(python3 -c "import sys; t, n = int(sys.argv[4]), int(sys.argv[5]); busy, kg = (int(sys.argv[1]) / t, int(sys.argv[2]) / t); client = sum(map(float, sys.argv[3].split())); us = lambda x: x / n * 1e6
print(f'{us(busy):.0f} = load generator {us(client):.0f} + {sys.argv[6]} {us(kg):.0f} + the rest {us(busy - client - kg):.0f}')
print(f'{us(kg):.1f}')" \
        "$((b1 - b0))" "$((k1 - k0))" "$(cat "$WORK/client.cpu")" "$(getconf CLK_TCK)" "$n" "$label")
    SPLIT_US=$(printf '%s\n' "$SPLIT" | tail -1); SPLIT=$(printf '%s\n' "$SPLIT" | head -1)
}
# cpu_split_keygate: cpu_split of keygate's socket, in SPLIT_KG and SPLIT_KG_US.
cpu_split_keygate() { cpu_split "$WORK/keygate.sock" keygate; SPLIT_KG=$SPLIT; SPLIT_KG_US=$SPLIT_US; }
# tool_split CMD...: runs the database's own tool (output to $WORK/db.out)
# and keeps the machine's busy time and the tool's own CPU during it.
tool_split() {
    local b0; b0=$(busy_ticks)
    /usr/bin/time -f "%U %S" -o "$WORK/tool.cpu" "$@" > "$WORK/db.out" 2>&1 || { cat "$WORK/db.out" >&2; exit 1; }
    TOOL_BUSY=$(( $(busy_ticks) - b0 ))
}
# print_split TOOL N: both splits, the tool's over its N queries.
print_split() {
    local tool
    tool=$(python3 -c "import sys; t, n = int(sys.argv[3]), float(sys.argv[4]); busy = int(sys.argv[1]) / t; client = sum(map(float, sys.argv[2].split())); us = lambda x: x / n * 1e6
print(f'{us(busy):.0f} = the tool {us(client):.0f} + the rest {us(busy - client):.0f}')" \
        "$TOOL_BUSY" "$(cat "$WORK/tool.cpu")" "$(getconf CLK_TCK)" "$2")
    echo "# CPU per request, µs of all cores' busy time (the rest: mostly the database server): keygate path $SPLIT_KG; two-hop floor path $SPLIT_FLOOR; $1 $tool"
}

# $WORK/seed-wrap.sh: the seed script (crates/keygate-bench/seed) called as
# keygate is (`--config F id X`; it ignores the config and reads SEED_DB_*).
seed_wrapper() {
    python3 -c 'import mysql.connector' 2>/dev/null || pip install -q mysql-connector-python
    cat > "$WORK/seed-wrap.sh" <<SH
#!/bin/sh
shift 2; SEED_DB_NAME=$BENCH_DB exec python3 $ROOT/crates/keygate-bench/seed/seed_script.py "\$@"
SH
    chmod +x "$WORK/seed-wrap.sh"
}

row=${1:?usage: bench.sh ROW}
machine
case $row in
floor)
    "$BENCH" socket --floor blocking,tokio --clients "${FLOOR_CLIENTS:-1,8}" --duration "$DURATION" ;;
cache)
    # The cache in front of the in-memory file backend must not serve fewer
    # requests than the same backend with the cache off: both daemons run
    # in this one invocation, alternately (ROUNDS times each), and the row
    # ends with the ratio of their medians.
    keys_file
    FILE_BACKEND="[[backend]]
name = \"keys\"
type = \"file\"
path = \"$WORK/client.keys\""
    on=(); off=(); on_us=(); off_us=()
    for round in $(seq 1 "${ROUNDS:-2}"); do
        start_daemon "$FILE_BACKEND" true
        warm_cache
        "$KG" --config "$WORK/keygate.toml" cache stats | sed 's/^/# after warm-up: /'
        line=$(ROUNDS=1 load_line)
        on+=("$(echo "$line" | sed -n 's/.*rps=\([0-9.]*\).*/\1/p')")
        cpu_split_keygate; on_us+=("$SPLIT_KG_US")
        "$KG" --config "$WORK/keygate.toml" cache stats | sed 's/^/# after the run: /'
        kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; rm -f "$WORK/keygate.sock"
        start_daemon "$FILE_BACKEND" false
        line=$(ROUNDS=1 load_line)
        off+=("$(echo "$line" | sed -n 's/.*rps=\([0-9.]*\).*/\1/p')")
        cpu_split_keygate; off_us+=("$SPLIT_KG_US")
        kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; rm -f "$WORK/keygate.sock"
        echo "# round $round: cache on ${on[-1]}/s, cache off ${off[-1]}/s; keygate's own CPU per request ${on_us[-1]} µs on, ${off_us[-1]} µs off"
    done
    median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
    m_on=$(median "${on[@]}"); m_off=$(median "${off[@]}")
    echo "# cache hits vs cache off (file backend, $CLIENTS clients, medians of ${ROUNDS:-2}): $m_on/s vs $m_off/s = $(echo "scale=3; $m_on / $m_off" | bc) x (target >= 1)"
    echo "# keygate's own CPU per request (medians of ${ROUNDS:-2}, a separate ${SPLIT_DURATION:-3s} run each): $(median "${on_us[@]}") µs cache on vs $(median "${off_us[@]}") µs cache off" ;;
file)
    keys_file
    start_daemon "[[backend]]
name = \"keys\"
type = \"file\"
path = \"$WORK/client.keys\""
    ROUNDS=${ROUNDS:-3} socket_load
    cpu_split_keygate
    echo "# CPU per request, µs of all cores' busy time: keygate path $SPLIT_KG" ;;
sqlite)
    "$BENCH" gen --count "$AGENTS" --format sql > "$WORK/agents.sql"
    python3 - "$WORK" <<'PY'
import sqlite3, sys
w = sys.argv[1]
c = sqlite3.connect(f"{w}/agents.db")
c.execute("CREATE TABLE agent (id VARCHAR(8) PRIMARY KEY, name VARCHAR(128), ip VARCHAR(19), agent_key VARCHAR(128))")
c.execute("CREATE INDEX agent_ip ON agent(ip)")
c.executescript(open(f"{w}/agents.sql").read())
c.commit()
PY
    start_daemon "[[backend]]
name = \"db\"
type = \"sqlite\"
path = \"$WORK/agents.db\"
pool_size = 8
query_by_id = \"SELECT id,name,ip,agent_key FROM agent WHERE id = ?\"
query_by_ip = \"SELECT id,name,ip,agent_key FROM agent WHERE ip = ?\""
    socket_load ;;
mysql)
    # keygate (cache off, pool of CLIENTS) and mariadb-slap: CLIENTS clients
    # each, point selects by primary key on the same table, uniform ids.
    # DB_SOCKET=1: both over MariaDB's Unix socket instead of TCP.
    mysql_db
    if [ "${DB_SOCKET:-0}" = 1 ]; then
        url="mysql://root@localhost/$BENCH_DB?socket=$MYSQL_SOCKET"; slap=(--socket="$MYSQL_SOCKET")
        floor=(localhost 0 root "$BENCH_DB" "$MYSQL_SOCKET")
    else
        H=${MYSQL_URL#*@}; url="$MYSQL_URL/$BENCH_DB"; slap=(-h "${H%:*}" -P "${H#*:}")
        floor=("${H%:*}" "${H#*:}" root "$BENCH_DB")
    fi
    start_daemon "[[backend]]
name = \"db\"
type = \"mysql\"
url = \"$url\"
pool_size = $CLIENTS
tls = \"disable\"
query_by_id = \"SELECT id,name,ip,agent_key FROM agent WHERE id = ?\"
query_by_ip = \"SELECT id,name,ip,agent_key FROM agent WHERE ip = ?\""
    socket_load | tee "$WORK/keygate.out"
    cpu_split_keygate
    dbfloor_row "SELECT id,name,ip,agent_key FROM agent WHERE id = ?" "SELECT id,name,ip,agent_key FROM agent WHERE ip = ?" \
        mysql "${floor[@]}"
    # 5,000 random ids; each client cycles through them.
    python3 -c "import random,sys; n=int(sys.argv[1]); print(''.join(f\"SELECT id,name,ip,agent_key FROM agent WHERE id = '{random.randint(1,n):03d}';\" for _ in range(5000)))" "$AGENTS" > "$WORK/slap.sql"
    n=$((CLIENTS * ${SLAP_QUERIES:-20000}))
    tool_split mariadb-slap "${slap[@]}" -u root --concurrency="$CLIENTS" --iterations=1 --number-of-queries="$n" \
        --create-schema="$BENCH_DB" --query="$WORK/slap.sql" --delimiter=";"
    secs=$(sed -n 's/.*Average number of seconds to run all queries: *\([0-9.]*\).*/\1/p' "$WORK/db.out")
    compare "mariadb-slap" "$(python3 -c "print($n / $secs)")"
    print_split mariadb-slap "$n" ;;
postgres)
    # keygate (cache off, pool of CLIENTS) and pgbench -S style: CLIENTS
    # clients each, prepared point selects by primary key on the same
    # table, uniform ids. DB_SOCKET=1: both over PostgreSQL's Unix socket.
    pg_db
    if [ "${DB_SOCKET:-0}" = 1 ]; then
        url="postgres://root@localhost/$BENCH_DB?host=$PG_SOCKET_DIR"; pgb=(-h "$PG_SOCKET_DIR" -U root "$BENCH_DB")
        floor="postgresql://root@/$BENCH_DB?host=$PG_SOCKET_DIR&sslmode=disable"
    else
        url="$PG_DB"; pgb=("$PG_DB"); floor="$PG_DB$(case $PG_DB in *\?*) echo '&';; *) echo '?';; esac)sslmode=disable"
    fi
    start_daemon "[[backend]]
name = \"db\"
type = \"postgres\"
url = \"$url\"
pool_size = $CLIENTS
tls = \"disable\"
query_by_id = \"SELECT id,name,ip,agent_key FROM agent WHERE id = \$1\"
query_by_ip = \"SELECT id,name,ip,agent_key FROM agent WHERE ip = \$1\""
    socket_load | tee "$WORK/keygate.out"
    cpu_split_keygate
    dbfloor_row "SELECT id,name,ip,agent_key FROM agent WHERE id = \$1" "SELECT id,name,ip,agent_key FROM agent WHERE ip = \$1" \
        postgres "$floor"
    cat > "$WORK/select.sql" <<SQL
\\set n random(1, $AGENTS)
SELECT id,name,ip,agent_key FROM agent WHERE id = lpad(:n::text, 3, '0');
SQL
    tool_split pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "${DURATION%s}" -f "$WORK/select.sql" "${pgb[@]}"
    compare "pgbench -M prepared" "$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/db.out" | head -1)"
    print_split pgbench "$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$WORK/db.out")" ;;
redis)
    PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
    redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --logfile "$WORK/redis.log" &
    PIDS+=($!)
    for _ in $(seq 1 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
    "$BENCH" gen --count "$AGENTS" --format redis | redis-cli -p "$PORT" --pipe >/dev/null
    start_daemon "[[backend]]
name = \"kv\"
type = \"redis\"
url = \"redis://127.0.0.1:$PORT/0\""
    socket_load
    echo "# redis-benchmark HGETALL at the same concurrency:"
    redis-benchmark -p "$PORT" -c "$CLIENTS" -n 200000 -q HGETALL wazuh:agent:05000 2>&1 | tail -1 | sed 's/^/# /' ;;
ldap)
    # A private slapd from the same slapd.conf.in the tests use, loaded with
    # AGENTS generated device+ipHost entries by slapadd.
    PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
    mkdir -p "$WORK/ldap/db"
    # Same config, with room for AGENTS entries (the fixture's mdb is 16 MiB).
    sed -e "s#@DIR@#$WORK/ldap#g" -e 's#^maxsize .*#maxsize 1073741824#' "$ROOT/docker/ldap/slapd.conf.in" > "$WORK/ldap/slapd.conf"
    "$BENCH" gen --count "$AGENTS" --format ldif > "$WORK/agents.ldif"
    /usr/sbin/slapadd -q -f "$WORK/ldap/slapd.conf" -l "$WORK/agents.ldif"
    /usr/sbin/slapd -f "$WORK/ldap/slapd.conf" -h "ldap://127.0.0.1:$PORT/" -d 0 2>/dev/null &
    PIDS+=($!)
    for _ in $(seq 1 100); do ldapsearch -x -H "ldap://127.0.0.1:$PORT/" -b "" -s base >/dev/null 2>&1 && break; sleep 0.1; done
    echo keygate-test-password > "$WORK/ldap.pass"
    start_daemon "[[backend]]
name = \"directory\"
type = \"ldap\"
urls = [\"ldap://127.0.0.1:$PORT\"]
bind_dn = \"cn=keygate,ou=services,dc=example,dc=org\"
password_file = \"$WORK/ldap.pass\"
base_dn = \"ou=agents,dc=example,dc=org\"
pool_size = 4"
    socket_load
    echo "# slapd CPU during the run is what bounds this row (see BENCHMARKS.md)." ;;
exec)
    # Target 4: the one-shot through a running daemon against the spawn time
    # of /bin/true (<= 2.5 x, the binary PIE); target 3: the one-shot with no daemon, directly against
    # MariaDB, against the seed script on the same table. Every reference
    # runs interleaved with keygate's runs in the same loop (see
    # keygate-bench exec --references / --versus), so the ratios hold on a
    # busy machine. EXEC_RUNS (default 300) one-shots per part.
    # The one-shot is timed from a copy of the binary, as a package installs
    # it: the file as the linker wrote it takes ~15 more page faults per
    # start (docs/dev/benchmarks-history.md, "One-shot start, second pass").
    runs=${EXEC_RUNS:-300}
    cp "$KG" "$WORK/keygate"; KG=$WORK/keygate
    keys_file
    start_daemon "[[backend]]
name = \"keys\"
type = \"file\"
path = \"$WORK/client.keys\"" true
    echo "# daemon up (file backend, $AGENTS agents, cache on); /bin/true and keygate --version interleaved:"
    "$BENCH" exec --keygate "$KG" --config "$WORK/keygate.toml" --runs "$runs" --id-max "$AGENTS" --references --ratio-target 2.5
    kill "${PIDS[-1]}"; sleep 0.5
    echo "# daemon down, direct file ($AGENTS agents: every run loads the whole file):"
    "$BENCH" exec --keygate "$KG" --config "$WORK/keygate.toml" --runs 20 --id-max "$AGENTS"
    mysql_db
    seed_wrapper
    cat > "$WORK/direct-mysql.toml" <<TOML
[server]
socket = "$WORK/none.sock"
[[backend]]
name = "db"
type = "mysql"
url = "$MYSQL_URL/$BENCH_DB"
tls = "disable"
query_by_id = "SELECT id,name,ip,agent_key FROM agent WHERE id = ?"
query_by_ip = "SELECT id,name,ip,agent_key FROM agent WHERE ip = ?"
TOML
    echo "# daemon down, direct MariaDB ($MYSQL_URL), the seed script on the same table interleaved:"
    "$BENCH" exec --keygate "$KG" --config "$WORK/direct-mysql.toml" --runs "$runs" --id-max "$AGENTS" \
        --versus "$WORK/seed-wrap.sh" --versus-label "seed script" --versus-runs "${SEED_RUNS:-50}" --references ;;
seed)
    mysql_db
    seed_wrapper
    echo "# the seed script (python3 + mysql.connector, fresh connection per lookup):"
    "$BENCH" exec --keygate "$WORK/seed-wrap.sh" --config /dev/null --runs 50 --id-max "$AGENTS" ;;
memory)
    # RSS of the daemon with AGENTS agents loaded, then all of them cached;
    # then `keygate check` (which loads the file) on a 1,000,000-line
    # client.keys under /usr/bin/time -v: wall time and peak RSS.
    keys_file
    start_daemon "[[backend]]
name = \"keys\"
type = \"file\"
path = \"$WORK/client.keys\"" true
    PID=${PIDS[-1]}
    echo "# RSS after start, $AGENTS agents loaded: $(awk '/VmRSS/{print $2" "$3}' /proc/$PID/status)"
    warm_cache
    "$KG" --config "$WORK/keygate.toml" cache stats | sed 's/^/# /'
    rss=$(awk '/VmRSS/{print $2}' /proc/$PID/status)
    echo "# RSS with $AGENTS agents cached: $rss kB = $(echo "scale=1; $rss / 1024" | bc) MiB = $(echo "scale=2; $rss / 1024 / 96" | bc) x the 96 MiB target"
    kill "$PID"; sleep 0.5
    "$BENCH" gen --count 1000000 > "$WORK/big.keys"
    cat > "$WORK/big.toml" <<TOML
[[backend]]
name = "big"
type = "file"
path = "$WORK/big.keys"
TOML
    "$KG" --config "$WORK/big.toml" check > /dev/null # the file in the page cache
    for run in $(seq 1 "${ROUNDS:-3}"); do
        /usr/bin/time -v "$KG" --config "$WORK/big.toml" check > /dev/null 2> "$WORK/time.txt" || { cat "$WORK/time.txt" >&2; exit 1; }
        wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$WORK/time.txt" | awk -F: '{print $(NF-1)*60 + $NF}')
        peak=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time.txt")
        echo "# keygate check, 1,000,000-line client.keys, run $run: wall $wall s = $(echo "scale=2; $wall / 0.5" | bc) x the 0.5 s target; peak RSS $peak kB = $(echo "scale=1; $peak / 1024" | bc) MiB = $(echo "scale=2; $peak / 1024 / 300" | bc) x the 300 MiB target"
    done
    LOG_LEVEL=info start_daemon "[[backend]]
name = \"big\"
type = \"file\"
path = \"$WORK/big.keys\""
    for _ in $(seq 1 100); do grep -q 'elapsed_ms=' "$WORK/keygate.log" && break; sleep 0.1; done
    grep -o 'agents=[0-9]* invalid=[0-9]* elapsed_ms=[0-9]*' "$WORK/keygate.log" | sed 's/^/# 1,000,000-line client.keys loaded by the daemon: /'
    echo "# RSS with 1,000,000 agents loaded: $(awk '/VmRSS/{print $2" "$3}' /proc/${PIDS[-1]}/status)" ;;
storm)
    mysql_db
    start_daemon "[[backend]]
name = \"db\"
type = \"mysql\"
url = \"$MYSQL_URL/$BENCH_DB\"
tls = \"disable\"
query_by_id = \"SELECT id,name,ip,agent_key FROM agent WHERE id = ?\"
query_by_ip = \"SELECT id,name,ip,agent_key FROM agent WHERE ip = ?\"" true
    start=$(date +%s.%N)
    "$BENCH" socket --socket "$WORK/keygate.sock" --clients 1 --duration 600s --id-min 1 --id-max 10000 --sequential --max-requests 10000
    echo "# storm: 10,000 distinct ids, 1 client, cache cold, MariaDB: $(echo "$(date +%s.%N) - $start" | bc) s total" ;;
sync)
    # keygate sync against the Wazuh API stand-in holding SYNC_AGENTS
    # (default 10,000) agents with the API's rate limit switched on (300 a
    # minute, login excepted, 429 beyond) and keygate's default pace (100 a
    # minute): API calls and wall time of a no-change sync and of one with
    # SYNC_CHANGES (default 1,000) changed keys, with and without [wazuh]
    # client_keys. The minute is scaled down SYNC_SCALE times (default 60:
    # the API's window is 1 s, its limit 300 a second, keygate's pace 100 a
    # second), so the wall time here times SYNC_SCALE is the time at the
    # real pace; the call counts do not depend on the scale.
    n=${SYNC_AGENTS:-10000}; changes=${SYNC_CHANGES:-1000}; scale=${SYNC_SCALE:-60}
    "$BENCH" gen --count "$n" > "$WORK/manager.keys"
    awk -v c="$changes" 'NR <= c { $4 = "Z" substr($4, 2) } { print }' "$WORK/manager.keys" > "$WORK/changed.keys"
    echo "bench-api-password" > "$WORK/api.pass"
    window_ms=$((60000 / scale))
    standin() {
        [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null || true
        rm -f "$WORK/standin.url"
        "$BENCH" wazuh-standin --ca "$WORK/ca.pem" --password bench-api-password --agents "$n" \
            --limit 300 --window "${window_ms}ms" > "$WORK/standin.url" 2> "$WORK/standin.err" &
        SPID=$!; PIDS+=($SPID)
        for _ in $(seq 300); do [ -s "$WORK/standin.url" ] && break; sleep 0.1; done
    }
    # one STORE CLIENT_KEYS(yes|no) ARGS...: writes "calls seconds 429s
    # replaced unchanged" to $WORK/result (not a subshell: the stand-in's
    # pid must stay known to be stopped).
    one() {
        local store=$1 ck=$2; shift 2
        standin
        { cat <<TOML
[[backend]]
name = "keys"
type = "file"
path = "$WORK/$store"
[wazuh]
url = "$(head -1 "$WORK/standin.url")"
user = "keygate"
password_file = "$WORK/api.pass"
ca_file = "$WORK/ca.pem"
concurrency = ${CONCURRENCY:-8}
max_requests_per_minute = $((100 * scale))
backup_dir = "$WORK/backups"
TOML
          if [ "$ck" = yes ]; then echo "client_keys = \"$WORK/manager.keys\""; else echo "client_keys = \"$WORK/none\""; fi
        } > "$WORK/keygate.toml"
        local s e
        s=$(date +%s.%N)
        "$KG" --config "$WORK/keygate.toml" sync --json "$@" > "$WORK/out" 2> "$WORK/err" || true
        e=$(date +%s.%N)
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["api_calls"], sys.argv[2], r["throttled"], len(r["replaced"]), r["unchanged"])' \
            "$WORK/out" "$(echo "$e - $s" | bc)" > "$WORK/result" || { cat "$WORK/err" >&2; echo "? ? ? ? ?" > "$WORK/result"; }
    }
    row() {
        one "$@"
        read -r calls secs throttled replaced unchanged < "$WORK/result"
        real=$(echo "scale=2; $calls / 100" | bc)
        printf '# %-42s %6s API calls (+1 login), %7.1f s scaled, ~%5s min at 100/min; 429s %s, replaced %s, unchanged %s\n' \
            "$label" "$calls" "$secs" "$real" "$throttled" "$replaced" "$unchanged"
    }
    echo "# sync: $n agents, stand-in limit 300/min, pace 100/min, minute scaled 1/$scale"
    label="no change, with client_keys"; row manager.keys yes
    label="no change, without client_keys"; row manager.keys no
    label="$changes changes (--apply), with client_keys"; row changed.keys yes --apply
    label="$changes changes (--apply), without client_keys"; row changed.keys no --apply
    kill "$SPID" 2>/dev/null || true ;;
exec-backend)
    # The exec backend running the seed script (python3 + mysql.connector, a
    # new interpreter and connection per lookup) against MariaDB: cache off,
    # then cache on after every agent was asked once. EXEC_AGENTS (default
    # 200) agents, so the warm-up (one script run each) stays short.
    AGENTS=${EXEC_AGENTS:-200}
    python3 -c 'import mysql.connector' 2>/dev/null || { echo "needs python3 with mysql-connector-python: bash tests/setup.sh" >&2; exit 1; }
    mysql_db
    auth=${MYSQL_URL#mysql://}; hostport=${auth#*@}; user=${auth%@*}
    backend="[[backend]]
name = \"legacy\"
type = \"exec\"
command = [\"python3\", \"$ROOT/crates/keygate-bench/seed/seed_script.py\"]
timeout = \"10s\"
max_concurrent = ${EXEC_CONCURRENT:-4}
env = { SEED_DB_HOST = \"${hostport%:*}\", SEED_DB_USER = \"${user%%:*}\", SEED_DB_NAME = \"keygate_bench\" }"
    start_daemon "$backend" false
    off=$(load_line | sed -n 's/.*rps=\([0-9.]*\).*/\1/p')
    kill "${PIDS[-1]}"; for _ in $(seq 1 100); do [ -S "$WORK/keygate.sock" ] || break; sleep 0.05; done
    start_daemon "$backend" true
    warm_cache
    on=$(load_line | sed -n 's/.*rps=\([0-9.]*\).*/\1/p')
    echo "# exec backend + seed script, $AGENTS agents, $CLIENTS clients, max_concurrent ${EXEC_CONCURRENT:-4}: cache off $off rps, cache on (warm) $on rps, ratio $(echo "scale=0; $on / $off" | bc)x" ;;
http)
    # The http backend against the inventory stand-in (keygate-bench
    # inventory: HTTPS with its own CA, hyper on 2 threads, the same
    # machine) serving AGENTS generated agents; cache off, with the floor.
    "$BENCH" inventory --ca "$WORK/ca.pem" --count "$AGENTS" > "$WORK/inventory.url" &
    PIDS+=($!)
    for _ in $(seq 1 300); do [ -s "$WORK/inventory.url" ] && break; sleep 0.1; done
    URL=$(head -1 "$WORK/inventory.url")
    echo bench-token > "$WORK/cmdb.token"
    start_daemon "[[backend]]
name = \"cmdb\"
type = \"http\"
url_by_id = \"$URL/api/agents/{id}\"
url_by_ip = \"$URL/api/agents?ip={ip}\"
token_file = \"$WORK/cmdb.token\"
ca_file = \"$WORK/ca.pem\"
[backend.fields]
id = \"/data/0/agent_id\"
name = \"/data/0/hostname\"
ip = \"/data/0/ip\"
key = \"/data/0/wazuh_key\""
    socket_load
    echo "# the inventory stand-in shares the cores with keygate and the load generator." ;;
all)
    # Every row of BENCHMARKS.md's tables, one after another (sweep is separate: it draws the chart).
    for r in floor cache file sqlite mysql postgres redis ldap exec seed memory storm sync exec-backend http; do
        echo "## bench.sh $r"; "$0" "$r" || echo "## bench.sh $r FAILED (exit $?)"
    done ;;
sweep)
    # Throughput against concurrency for each backend; writes a CSV for chart.py.
    out=${SWEEP_OUT:-$ROOT/crates/keygate-bench/results/sweep.csv}
    mkdir -p "$(dirname "$out")"; echo "backend,clients,rps,p99_ms" > "$out"
    for b in floor file sqlite mysql postgres redis ldap; do
        for c in 1 2 4 8 16 32; do
            line=$(CLIENTS=$c FLOOR_CLIENTS=$c DURATION=${DURATION} "$0" "$b" 2>/dev/null | grep -E "^(keygate|floor) " | tail -1)
            rps=$(echo "$line" | sed -n 's/.*rps=\([0-9.]*\).*/\1/p'); p99=$(echo "$line" | sed -n 's/.*p99=\([0-9.]*\)ms.*/\1/p')
            echo "$b,$c,$rps,$p99" | tee -a "$out"
        done
    done
    python3 "$ROOT/crates/keygate-bench/scripts/chart.py" "$out" "$ROOT/docs/dev/benchmarks-throughput.svg" ;;
*) echo "unknown row $row" >&2; exit 2 ;;
esac
