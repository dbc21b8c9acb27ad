#!/usr/bin/env bash
# Brings up everything keygate's test suite needs, on a Debian-based machine:
# installs Debian's slapd/ldap-utils (and the database servers) when missing,
# the packaging tools (systemd-analyze, docker-compose, cargo-deb, lintian),
# the test runner (cargo-nextest) and a C++ compiler (libFuzzer), and starts
# MariaDB, PostgreSQL and Redis when they are not running.
# Servers elsewhere: set KEYGATE_TEST_MYSQL_URL / KEYGATE_TEST_POSTGRES_URL /
# KEYGATE_TEST_REDIS_URL and this script leaves local servers alone.
# Fails loudly: a test that needs a server must never skip silently.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        log "apt-get update"
        $SUDO apt-get update -qq >/dev/null || die "apt-get update failed"
        apt_updated=1
    fi
    log "installing $*"
    # Keep package scripts from starting system-wide daemons (slapd on :389):
    # the tests start their own instances on free ports.
    local policy=/usr/sbin/policy-rc.d created=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod +x "$policy"
        created=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || { [ -n "$created" ] && $SUDO rm -f "$policy"; die "apt-get install $* failed"; }
    if [ -n "$created" ]; then $SUDO rm -f "$policy"; fi
}

wait_for() { # name, seconds, command...
    local name=$1 secs=$2; shift 2
    for _ in $(seq 1 $((secs * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    die "$name did not come up within ${secs}s"
}

# --- packages -----------------------------------------------------------
need=()
[ -x /usr/sbin/slapd ] || need+=(slapd)
command -v ldapsearch >/dev/null || need+=(ldap-utils)
command -v openssl >/dev/null || need+=(openssl)
command -v redis-server >/dev/null || need+=(redis-server)
# The log rotation test runs the shipped config/logrotate/keygate.
command -v logrotate >/dev/null || [ -x /usr/sbin/logrotate ] || need+=(logrotate)
if [ -z "${KEYGATE_TEST_MYSQL_URL:-}" ]; then
    command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
    command -v mariadb >/dev/null || need+=(mariadb-client)
fi
if [ -z "${KEYGATE_TEST_POSTGRES_URL:-}" ]; then
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
    command -v psql >/dev/null || need+=(postgresql-client)
fi
# tests/packaging.rs: `systemd-analyze verify|security` (Debian's systemd
# package; no running systemd needed), a compose parser (the docker compose
# plugin if present, else Debian's docker-compose), dpkg-deb, lintian (run on
# the built package), binutils (readelf: the binary is PIE; strip and objcopy
# for cargo-deb).
command -v systemd-analyze >/dev/null || need+=(systemd)
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || need+=(docker-compose)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v lintian >/dev/null || need+=(lintian)
command -v readelf >/dev/null || need+=(binutils)
[ -x /usr/bin/time ] || need+=(time)      # peak memory of the 100,000-agent listing test
[ -x /bin/kill ] || need+=(procps)   # the unit's ExecReload, checked by verify
command -v python3 >/dev/null || need+=(python3 python3-pip)  # the exec backend's seed-script test
command -v c++ >/dev/null || need+=(g++)  # libfuzzer-sys builds libFuzzer (fuzz/stable.sh)
if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi

# cargo-deb builds the Debian package in tests/packaging.rs (a few minutes
# to compile on 2 cores, once per machine).
if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb (cargo install cargo-deb --locked)"
    cargo install cargo-deb --locked --quiet || die "cargo install cargo-deb failed"
fi

# tests/run checks formatting and lints.
for c in rustfmt clippy; do
    if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
        log "installing the $c component (rustup component add $c)"
        rustup component add "$c" >/dev/null || die "rustup component add $c failed"
    fi
done

# cargo-nextest runs the tests (tests/run): each in its own process, with the
# time limit of .config/nextest.toml.
if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest (cargo install cargo-nextest --locked)"
    cargo install cargo-nextest --locked --quiet || die "cargo install cargo-nextest failed"
fi

# The exec backend's tests run the seed document's Python example
# (crates/keygate-bench/seed/seed_script.py), which needs
# mysql-connector-python: pip first, then pip with Debian's
# externally-managed override.
if ! python3 -c 'import mysql.connector' >/dev/null 2>&1; then
    log "installing mysql-connector-python (pip)"
    python3 -m pip install -q mysql-connector-python >/dev/null 2>&1 \
        || python3 -m pip install -q --break-system-packages mysql-connector-python >/dev/null 2>&1 \
        || true
    python3 -c 'import mysql.connector' >/dev/null 2>&1 \
        || die "python3 cannot import mysql.connector (pip install mysql-connector-python failed)"
fi

# --- MariaDB --------------------------------------------------------------
if [ -z "${KEYGATE_TEST_MYSQL_URL:-}" ]; then
    if ! mariadb-admin -h127.0.0.1 -P3306 -uroot ping >/dev/null 2>&1; then
        log "starting MariaDB"
        $SUDO mkdir -p /run/mysqld && $SUDO chown mysql:mysql /run/mysqld 2>/dev/null || true
        if [ ! -d /var/lib/mysql/mysql ]; then
            $SUDO mariadb-install-db --user=mysql >/dev/null 2>&1 || die "mariadb-install-db failed"
        fi
        $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
        wait_for MariaDB 60 mariadb-admin -h127.0.0.1 -P3306 -uroot ping
    fi
    log "MariaDB is up on 127.0.0.1:3306"
fi

# --- PostgreSQL -------------------------------------------------------------
if [ -z "${KEYGATE_TEST_POSTGRES_URL:-}" ]; then
    if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
        log "starting PostgreSQL"
        version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
        if [ -z "$version" ]; then
            version=$(ls /usr/lib/postgresql | sort -V | tail -1)
            $SUDO pg_createcluster "$version" main >/dev/null || die "pg_createcluster failed"
        fi
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || die "cannot start PostgreSQL $version"
        wait_for PostgreSQL 60 pg_isready -h 127.0.0.1 -p 5432 -q
    fi
    # The tests connect as root over TCP: make sure that role exists.
    if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='root'" 2>/dev/null | grep -q 1; then
        $SUDO -u postgres psql -q -c "CREATE ROLE root SUPERUSER LOGIN" >/dev/null 2>&1 \
            || psql -h 127.0.0.1 -U postgres -d postgres -q -c "CREATE ROLE root SUPERUSER LOGIN" >/dev/null 2>&1 || true
    fi
    log "PostgreSQL is up on 127.0.0.1:5432"
fi

# --- Redis (the shared instance; Redis tests start their own server) --------
if [ -z "${KEYGATE_TEST_REDIS_URL:-}" ]; then
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        log "starting Redis"
        $SUDO mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log
        wait_for Redis 30 redis-cli -h 127.0.0.1 -p 6379 ping
    fi
    log "Redis is up on 127.0.0.1:6379"
fi

command -v systemd-analyze >/dev/null || die "systemd-analyze is not installed"
command -v cargo-deb >/dev/null || die "cargo-deb is not installed"
command -v cargo-nextest >/dev/null || die "cargo-nextest is not installed"
command -v lintian >/dev/null || die "lintian is not installed"
[ -x /usr/sbin/slapd ] || die "slapd is not installed"
log "slapd is installed ($(/usr/sbin/slapd -VV 2>&1 | head -1 | sed 's/^@(#) //'))"
