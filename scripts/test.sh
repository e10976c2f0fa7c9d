#!/usr/bin/env bash
# Runs the whole test suite on both backends: SQLite, then PostgreSQL.
#
# PostgreSQL is installed from Debian's packages when missing, started as a throwaway
# cluster (unprivileged user, 127.0.0.1, random port, temporary directory) and stopped
# again on exit. Set TM_TEST_DATABASE_URL to use a server of your own instead.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_postgres() {
    log "installing PostgreSQL from Debian's packages"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
}

PG_DIR=""
PG_RUN=()
stop_postgres() {
    if [ -n "$PG_DIR" ] && [ -f "$PG_DIR/data/postmaster.pid" ]; then
        log "stopping PostgreSQL (pid $(head -n 1 "$PG_DIR/data/postmaster.pid"))"
        "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null || true
    fi
    [ -n "$PG_DIR" ] && rm -rf "$PG_DIR"
}

free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$(( (RANDOM % 20000) + 30000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    echo "no free port found" >&2
    return 1
}

start_postgres() {
    PG_BIN=$(pg_bindir) || { install_postgres; PG_BIN=$(pg_bindir); }
    PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tm-test-pg.XXXXXX")
    if [ "$(id -u)" -eq 0 ]; then
        # initdb refuses to run as root: run the cluster as the packages' postgres user.
        id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$PG_DIR"
        PG_RUN=(runuser -u postgres --)
    fi
    local port
    port=$(free_port)
    "${PG_RUN[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
    "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c fsync=off -c max_connections=300" >/dev/null
    TM_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
    # The fault tests start clusters of their own with the same binaries.
    export TM_TEST_PG_BINDIR="$PG_BIN"
    if [ "$(id -u)" -eq 0 ]; then export TM_TEST_PG_USER=postgres; fi
    log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

# promtool checks the /metrics output; it comes with Debian's prometheus package, of
# which only the promtool binary is unpacked (no service is installed or started).
provide_promtool() {
    if command -v promtool >/dev/null; then
        TM_TEST_PROMTOOL=$(command -v promtool)
        return
    fi
    local dir="$PWD/target/tools/prometheus"
    if [ ! -x "$dir/usr/bin/promtool" ]; then
        log "unpacking promtool from Debian's prometheus package"
        mkdir -p "$dir"
        (cd "$dir" && apt-get download prometheus >/dev/null 2>&1) ||
            { as_root apt-get update -qq && (cd "$dir" && apt-get download prometheus >/dev/null 2>&1); }
        dpkg-deb -x "$dir"/prometheus_*.deb "$dir"
    fi
    TM_TEST_PROMTOOL="$dir/usr/bin/promtool"
}

# schemathesis drives the API from its OpenAPI document; it comes from PyPI into a
# virtual environment of the project's own.
SCHEMATHESIS_VERSION=4.32.5
provide_schemathesis() {
    local venv="$PWD/target/tools/venv"
    if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
        log "installing schemathesis $SCHEMATHESIS_VERSION from PyPI"
        python3 -m venv "$venv" 2>/dev/null ||
            { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$venv"; }
        "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
    fi
    TM_TEST_SCHEMATHESIS="$venv/bin/schemathesis"
}

OUTPUT=$(mktemp "${TMPDIR:-/tmp}/tm-test-output.XXXXXX")
cleanup() { stop_postgres; rm -f "$OUTPUT"; }
trap cleanup EXIT

# Adds up cargo's "test result:" lines from both runs into one closing line.
summary() {
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
         END { printf "summary: %d passed, %d failed\n", p, f }' "$OUTPUT"
}

provide_promtool
provide_schemathesis
export TM_TEST_PROMTOOL TM_TEST_SCHEMATHESIS

log "tests on SQLite"
cargo test --workspace --locked 2>&1 | tee -a "$OUTPUT"

if [ -z "${TM_TEST_DATABASE_URL:-}" ]; then
    start_postgres
fi
log "tests on PostgreSQL"
TM_TEST_DATABASE_URL="$TM_TEST_DATABASE_URL" cargo test --locked -p tm-app -p tm-store 2>&1 | tee -a "$OUTPUT"
summary
