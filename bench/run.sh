#!/usr/bin/env bash
# The benchmarks behind the README's Performance section.
#
#   bash bench/run.sh                              # everything, 10 s per load run
#   ROUTES="1000" DURATION=5 MODES=resolve bash bench/run.sh
#
# MODES (default "resolve writes startup"):
# - resolve: for each route count in ROUTES, seeds a SQLite store through the store
#   (not the API) with a reader key per tenant, starts the release server as
#   production runs it (TM_PROFILE=prod, no other setting: JSON access log, rate
#   limits, every policy on), pinned to CPU 0, and nginx (one worker, also CPU 0)
#   configured to return a body and headers of the same size. wrk, pinned to CPU 1,
#   sends resolves spread at random over the whole index, each with its tenant's key,
#   and alternates server / nginx three times; the ratio is the median of the three
#   pairs. A second server on the same store with TM_LOG_LEVEL=warn is measured twice
#   beside it. Then oha (from crates.io, built once into target/tools) sends a fixed
#   rate of half the server's throughput (at most 18,000/s: it is one key's, and a
#   key's resolve budget is 20,000/s), with latency correction, to the server and
#   then to nginx: the latency at that rate, and the floor the machine and the
#   generator show for a server doing nothing.
# - writes: on SQLite and on PostgreSQL (a throwaway cluster with fsync on), a
#   write-only run (every request creates an active route) and a mixed run (95%
#   resolve, 5% such writes), 16 connections each; logs at warn and budgets raised,
#   since these runs measure the store.
# - tail: how much the index's size costs resolve's tail at full load. A server on
#   TAIL_SMALL routes (default 1k) and one on TAIL_LARGE (default 1M), both as
#   production runs them and both up at once, are loaded in turn TAIL_PAIRS times
#   (default 12) as in the resolve mode; prints each pair's p99 and the medians. A
#   single pair says little: a p99 at full load moves by a third from run to run.
# - startup: start-up time and memory with PG_ROUTES (default 1M) routes on PostgreSQL.
# - propagation: three instances on one PostgreSQL database, PROPAGATION_WRITES writes
#   spread over them; the time from each change to its arrival in every instance's
#   snapshot, from their routing_propagation_seconds histograms.
# - events: change events relayed to a tansu Kafka broker (built from crates.io into
#   target/tools once, as the test command does) and delivered to a webhook receiver, on
#   SQLite and on PostgreSQL: a backlog of EVENTS_BACKLOG (default 20000) events drained
#   into Kafka, then EVENTS_RATE writes a second (default 200) for DURATION seconds with
#   each event's lag to a Kafka consumer and to the receiver (crates/tm-app/examples/
#   events.rs; the registry runs in that process with TM_PROFILE=prod, the write budget
#   raised and no log written).
# - watch: the release server as production runs it, WATCHERS (default 4000) long polls
#   of one service held at once over ten reader keys, then a write that changes it, five
#   times: the time from the write's request to each watcher's answer, and the server's
#   memory with the watchers held (crates/tm-app/examples/fanout.rs).
# - probes: the release server as production runs it (loopback allowed to probes and
#   webhooks: TM_WEBHOOK_ALLOW_NETWORKS), PROBE_ROUTES (default 1000) routes checked
#   every second over HTTP against nginx; probes per second and the server's CPU.
# - backup: BACKUP_ROUTES (default 100000) routes seeded into SQLite and into PostgreSQL
#   (fsync on); `traffic-manager backup` to a directory, as production runs it (export,
#   compress, write, read back, restore into a scratch store, compare, record), and
#   `traffic-manager restore` of it into an empty store: the time of each, the
#   backup's size, and the export's size uncompressed.
# - tracing: what exporting spans costs resolve. TRACING_ROUTES (default 100000) routes;
#   the release server as production runs it (tracing off), then the same with
#   OTEL_EXPORTER_OTLP_ENDPOINT set to a collector on loopback (a Python one, pinned to
#   CPU 1 with wrk, answering every export) and the default sampler (every trace that
#   starts here is recorded), then with 1 % of traces recorded
#   (parentbased_traceidratio 0.01). Each is loaded three times as in the resolve mode:
#   the median throughput and p99, and the spans the collector received.
# Everything runs on 127.0.0.1 and every load run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUTES=${ROUTES:-"1000 100000 1000000"}
PG_ROUTES=${PG_ROUTES:-1000000}
MODES=${MODES:-"resolve tail writes startup propagation events"}
TAIL_SMALL=${TAIL_SMALL:-1000}
TAIL_LARGE=${TAIL_LARGE:-1000000}
TAIL_PAIRS=${TAIL_PAIRS:-12}
PROPAGATION_WRITES=${PROPAGATION_WRITES:-600}
BACKUP_ROUTES=${BACKUP_ROUTES:-100000}
TRACING_ROUTES=${TRACING_ROUTES:-100000}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
PORT_APP=${PORT_APP:-18181}
PORT_NGINX=${PORT_NGINX:-18182}

log() { printf '==> %s\n' "$*" >&2; }
source scripts/postgres.sh
source scripts/tansu.sh

need() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing+=(nginx-light)
    command -v taskset >/dev/null || missing+=(util-linux)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]} from Debian's packages"
        as_root apt-get update -qq
        # Only the binaries are wanted: keep the package's own nginx service from starting.
        echo exit 101 | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod +x /usr/sbin/policy-rc.d
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
        as_root rm -f /usr/sbin/policy-rc.d
    fi
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tm-bench.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    stop_postgres
    rm -rf "$WORK"
}
trap cleanup EXIT

need
OHA="$PWD/target/tools/oha/bin/oha"
if [ ! -x "$OHA" ]; then
    log "building oha (fixed-rate load generator) from crates.io"
    cargo install --quiet --locked oha --root "$PWD/target/tools/oha"
fi
log "building the release binary and the seeder"
cargo build --release --quiet -p traffic-manager
cargo build --release --quiet -p tm-app --example seed
BIN=target/release/traffic-manager
SEED=target/release/examples/seed
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

wait_http() {
    for _ in $(seq 1 600); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing answered at $1" >&2
    return 1
}

rss_mib() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

ADMIN_KEY="bench-admin-key-not-used-0123456789"

# Starts the release server pinned to CPU 0 as production runs it — TM_PROFILE=prod and
# nothing else but where to keep its data and listen — plus the given environment; sets
# APP (its pid) and STARTUP (seconds until it answered). Its log goes to a file, as
# stdout would go to a collector.
start_server() {
    local data=$1 started
    shift
    started=$(date +%s.%N)
    env TM_DATA_DIR="$data" TM_LISTEN="127.0.0.1:$PORT_APP" TM_PROFILE=prod \
        TM_BOOTSTRAP_ADMIN_KEY="$ADMIN_KEY" "$@" \
        taskset -c 0 "$BIN" serve >>"$WORK/app-$PORT_APP.log" 2>&1 &
    APP=$!
    PIDS+=("$APP")
    wait_http "http://127.0.0.1:$PORT_APP/healthz"
    STARTUP=$(python3 -c "import time,sys; print(f'{time.time()-float(sys.argv[1]):.2f}')" "$started")
}

stop_server() {
    kill "$APP"
    wait "$APP" 2>/dev/null || true
}

# Runs wrk pinned to CPU 1 with resolves spread over the seeded routes (see
# bench/resolve-spread.lua) and prints its JSON summary line: `load <base url> <keys file> <routes>`.
load() {
    BENCH_KEYS_FILE=$2 BENCH_ROUTES=$3 taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        -s bench/resolve-spread.lua "$1" | grep '^{'
}

json() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

resolve_table() {
    printf '| routes | server req/s | nginx req/s | ratio (median of 3 pairs) | p50 ms | p99 ms | p99.9 ms | logs at warn: req/s, ratio | p99 ms at half rate, server / nginx | server-side p99 ms at half rate | RSS MiB | start-up s |\n'
    printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
    for n in $ROUTES; do
        data="$WORK/data-$n"
        keys="$WORK/keys-$n"
        log "seeding $n routes"
        "$SEED" --routes "$n" --data-dir "$data" >"$keys"
        # The same store, twice: production defaults, and the same with logs at warn.
        cp -r "$data" "$data-warn"
        # The seed and the copy leave gigabytes to write back at 1M routes; written
        # first, so that the start-up timed below does not share the disk with them.
        sync
        PORT_APP=$((PORT_APP + 10)) start_server "$data-warn" TM_LOG_LEVEL=warn
        quiet=$APP
        start_server "$data"
        app=$APP startup=$STARTUP
        key=$(awk '$1 == "t2" { print $2 }' "$keys")
        url="http://127.0.0.1:$PORT_APP/api/v1/routes/resolve?tenant=t2&service=svc-2&env=prod"
        curl -fsS -D "$WORK/headers" -o "$WORK/body" -H "Authorization: Bearer $key" "$url"

        # nginx returns the same body with headers of the same names and sizes.
        mkdir -p "$WORK/nginx"
        {
            echo "worker_processes 1; daemon off; pid $WORK/nginx/pid; error_log $WORK/nginx/error.log;"
            echo "events { worker_connections 4096; }"
            echo "http { access_log off; server_tokens off; client_body_temp_path $WORK/nginx;"
            echo "  server { listen 127.0.0.1:$PORT_NGINX; location / { default_type application/json;"
            grep -i -E '^(etag|cache-control|x-rate-limit-[a-z]+|x-request-id|x-correlation-id|x-content-type-options|referrer-policy|x-frame-options|content-security-policy):' "$WORK/headers" |
                tr -d '\r' | sed -E 's/"/\\"/g; s/^([^:]+): (.*)$/    add_header \1 "\2" always;/'
            printf "    return 200 '%s'; } } }\n" "$(cat "$WORK/body")"
        } >"$WORK/nginx/nginx.conf"
        taskset -c 0 "$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
        nginx=$!
        PIDS+=("$nginx")
        wait_http "http://127.0.0.1:$PORT_NGINX/"

        log "$n routes: (server, nginx) x 3, then the server with logs at warn x 2 (${DURATION}s each)"
        runs=()
        for _ in 1 2 3; do
            runs+=("$(load "http://127.0.0.1:$PORT_APP" "$keys" "$n")")
            runs+=("$(load "http://127.0.0.1:$PORT_NGINX" "$keys" "$n")")
        done
        warn1=$(load "http://127.0.0.1:$((PORT_APP + 10))" "$keys" "$n")
        warn2=$(load "http://127.0.0.1:$((PORT_APP + 10))" "$keys" "$n")
        for r in "${runs[0]}" "${runs[2]}" "${runs[4]}" "$warn1" "$warn2"; do
            [ "$(json "$r" errors)" = "0" ] || { echo "errors in a server run: $r" >&2; exit 1; }
        done
        rss=$(rss_mib "$app")
        # One key sends the fixed-rate run, so the rate stays under a key's resolve
        # budget (20,000/s by default): beyond it, answers would be 429s, not resolves.
        half=$(python3 -c "import json,sys; print(min(18000, int(sorted(json.loads(a)['rps'] for a in sys.argv[1:])[1] / 2)))" "${runs[0]}" "${runs[2]}" "${runs[4]}")
        log "$n routes: fixed rate of $half req/s (${DURATION}s)"
        curl -fsS "http://127.0.0.1:$PORT_APP/metrics" >"$WORK/metrics-before"
        taskset -c 1 "$OHA" -z "${DURATION}s" -q "$half" -c "$CONNECTIONS" --latency-correction --no-tui \
            --output-format json -H "Authorization: Bearer $key" "$url" >"$WORK/oha-$n.json"
        curl -fsS "http://127.0.0.1:$PORT_APP/metrics" >"$WORK/metrics-after"
        # The same rate against nginx: the floor this machine and generator can show.
        taskset -c 1 "$OHA" -z "${DURATION}s" -q "$half" -c "$CONNECTIONS" --latency-correction --no-tui \
            --output-format json "http://127.0.0.1:$PORT_NGINX/" >"$WORK/oha-nginx-$n.json"
        python3 - "$n" "$rss" "$startup" "$WORK/oha-$n.json" "$WORK/oha-nginx-$n.json" "$WORK/metrics-before" "$WORK/metrics-after" "$warn1" "$warn2" "${runs[@]}" <<'PY'
import json, statistics, sys
n, rss, startup, oha, oha_nginx, before, after, warn1, warn2 = sys.argv[1:10]
runs = [json.loads(r) for r in sys.argv[10:]]

def buckets(path):
    """Resolve's latency histogram: cumulative count per upper bound."""
    out = {}
    for line in open(path):
        if line.startswith("http_request_duration_seconds_bucket{") and '/api/v1/routes/resolve"' in line:
            le = line.split('le="')[1].split('"')[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.split()[-1])
    return out

# The server's own view of the fixed-rate run: the bucket its 99th percentile falls in.
b0, b1 = buckets(before), buckets(after)
delta = {le: b1[le] - b0.get(le, 0.0) for le in b1}
total = delta[float("inf")]
p99_server = min(le for le, count in delta.items() if count >= 0.99 * total) * 1000
fixed = json.load(open(oha))
assert fixed["summary"]["successRate"] == 1.0, fixed["summary"]
assert set(fixed["statusCodeDistribution"]) == {"200"}, fixed["statusCodeDistribution"]
p99_half = fixed["latencyPercentiles"]["p99"] * 1000
p99_half_nginx = json.load(open(oha_nginx))["latencyPercentiles"]["p99"] * 1000
server, nginx = runs[0::2], runs[1::2]
ratio = statistics.median(a["rps"] / b["rps"] for a, b in zip(server, nginx))
app = statistics.median(a["rps"] for a in server)
ngx = statistics.median(b["rps"] for b in nginx)
mid = sorted(server, key=lambda x: x["p99_ms"])[1]
quiet = (json.loads(warn1)["rps"] + json.loads(warn2)["rps"]) / 2
print(f"| {int(n):,} | {app:,.0f} | {ngx:,.0f} | {ratio:.2f} | {mid['p50_ms']:.3f} | {mid['p99_ms']:.3f} | {mid['p999_ms']:.3f} | {quiet:,.0f}, {quiet / ngx:.2f} | {p99_half:.3f} / {p99_half_nginx:.3f} | ≤ {p99_server:g} | {rss} | {startup} |")
PY
        kill "$app" "$quiet" "$nginx"
        wait "$app" "$quiet" "$nginx" 2>/dev/null || true
        rm -rf "$data" "$data-warn"
    done
}

# Two servers, one on a small and one on a large index, loaded in turn; each pair's
# p99 and the medians of all pairs.
tail_table() {
    local n port apps=() ports=() runs=()
    for n in "$TAIL_SMALL" "$TAIL_LARGE"; do
        log "seeding $n routes"
        "$SEED" --routes "$n" --data-dir "$WORK/data-tail-$n" >"$WORK/keys-tail-$n"
        sync
        port=$((PORT_APP + 20 + ${#ports[@]}))
        PORT_APP=$port start_server "$WORK/data-tail-$n"
        apps+=("$APP")
        ports+=("$port")
    done
    log "tail: ($TAIL_SMALL, $TAIL_LARGE routes) x $TAIL_PAIRS (${DURATION}s each)"
    for _ in $(seq 1 "$TAIL_PAIRS"); do
        runs+=("$(load "http://127.0.0.1:${ports[0]}" "$WORK/keys-tail-$TAIL_SMALL" "$TAIL_SMALL")")
        runs+=("$(load "http://127.0.0.1:${ports[1]}" "$WORK/keys-tail-$TAIL_LARGE" "$TAIL_LARGE")")
    done
    kill "${apps[@]}"
    wait "${apps[@]}" 2>/dev/null || true
    rm -rf "$WORK"/data-tail-*
    python3 - "$TAIL_SMALL" "$TAIL_LARGE" "${runs[@]}" <<'PY'
import json, statistics, sys
small, large = int(sys.argv[1]), int(sys.argv[2])
runs = [json.loads(r) for r in sys.argv[3:]]
for run in runs:
    assert run["errors"] == 0, run
pairs = list(zip(runs[0::2], runs[1::2]))
print(f"| pair | {small:,} routes: req/s, p50 ms, p99 ms | {large:,} routes: req/s, p50 ms, p99 ms | p99 ratio |")
print("|---:|---:|---:|---:|")
for i, (a, b) in enumerate(pairs, 1):
    print(f"| {i} | {a['rps']:,.0f}, {a['p50_ms']:.3f}, {a['p99_ms']:.3f} | {b['rps']:,.0f}, {b['p50_ms']:.3f}, {b['p99_ms']:.3f} | {b['p99_ms'] / a['p99_ms']:.2f} |")
med = lambda xs, key: statistics.median(x[key] for x in xs)
a, b = runs[0::2], runs[1::2]
print(f"| median | {med(a, 'rps'):,.0f}, {med(a, 'p50_ms'):.3f}, {med(a, 'p99_ms'):.3f} | {med(b, 'rps'):,.0f}, {med(b, 'p50_ms'):.3f}, {med(b, 'p99_ms'):.3f} | {statistics.median(y['p99_ms'] / x['p99_ms'] for x, y in pairs):.2f} |")
PY
}

# Write-only and mixed runs on one backend: `writes_row <name> [server env...]`.
writes_row() {
    local name=$1 data="$WORK/data-writes-$1"
    shift
    # Logs at warn and budgets above what one client sends: these runs measure the store.
    start_server "$data" TM_LOG_LEVEL=warn TM_RATE_LIMIT_WRITE=10000000/s TM_RATE_LIMIT_RESOLVE=10000000/s "$@"
    local path="/api/v1/routes/resolve?tenant=bench&service=svc-0&env=prod&key=user-42"
    curl -fsS -o /dev/null -H "Authorization: Bearer $ADMIN_KEY" -H "Content-Type: application/json" \
        -d '{"tenant":"bench","service":"svc-0","env":"prod","version":"v1","url":"http://10.0.0.1:8080","active":true}' \
        "http://127.0.0.1:$PORT_APP/api/v1/routes"
    log "$name: write-only, then 95% resolve / 5% writes (${DURATION}s each)"
    local w m
    w=$(BENCH_KEY=$ADMIN_KEY taskset -c 1 wrk -t1 -c16 -d"${DURATION}s" --latency \
        -s bench/writes.lua "http://127.0.0.1:$PORT_APP/api/v1/routes" | grep '^{')
    m=$(BENCH_KEY=$ADMIN_KEY BENCH_RESOLVE_PATH="$path" taskset -c 1 wrk -t1 -c16 -d"${DURATION}s" \
        --latency -s bench/mixed.lua "http://127.0.0.1:$PORT_APP" | grep '^{')
    log "mixed: $m"
    # What was answered, by status: any error in the table is explained here.
    curl -fsS "http://127.0.0.1:$PORT_APP/metrics" | grep -E '^http_requests_total.*routes' | grep -v ' 0$' >&2
    stop_server
    python3 - "$name" "$w" "$m" <<'PY'
import json, sys
name, w, m = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"| {name} | {w['rps']:,.0f} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f} | {w['errors']} | {m['rps']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['errors']} |")
PY
}

writes_table() {
    printf '| backend | writes/s | p50 ms | p99 ms | errors | mixed req/s | mixed p50 ms | mixed p99 ms | errors |\n'
    printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
    writes_row sqlite
    [ -n "$PG_DIR" ] || start_postgres
    psql_db create writes
    writes_row postgresql TM_DATABASE_URL="${PG_URL%/*}/writes"
}

psql_db() {
    "$PG_BIN/psql" -q -d "$PG_URL" -c "$1 DATABASE $2" >/dev/null
}

# Three instances on one PostgreSQL database; writes go to each in turn, and every
# instance records in routing_propagation_seconds how long each change took to reach
# its snapshot. Prints the merged histogram's percentiles (bucket upper bounds).
propagation_table() {
    [ -n "$PG_DIR" ] || start_postgres
    psql_db create propagation
    local url="${PG_URL%/*}/propagation" port pids=() ports=(18191 18192 18193)
    for port in "${ports[@]}"; do
        PORT_APP=$port start_server "$WORK/data-propagation-$port" TM_DATABASE_URL="$url" TM_LOG_LEVEL=warn
        pids+=("$APP")
    done
    log "propagation: $PROPAGATION_WRITES writes spread over 3 instances"
    python3 - "$ADMIN_KEY" "$PROPAGATION_WRITES" "${ports[@]}" <<'PY'
import json, sys, time, urllib.request
key, writes, ports = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
for i in range(writes):
    body = json.dumps({"tenant": "bench", "service": f"p{i}", "env": "prod", "version": "v1",
                       "url": "http://10.0.0.9:8080", "active": True}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{ports[i % len(ports)]}/api/v1/routes",
        data=body, method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    urllib.request.urlopen(request).read()
    time.sleep(0.005)
time.sleep(1)
merged, count = {}, 0.0
for port in ports:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith("routing_propagation_seconds_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            bound = float("inf") if le == "+Inf" else float(le)
            merged[bound] = merged.get(bound, 0.0) + float(line.split()[-1])
        elif line.startswith("routing_propagation_seconds_count"):
            count += float(line.split()[-1])
def pct(p):
    return min(b for b, c in merged.items() if c >= p * count) * 1000
print("| instances | changes | applications observed | p50 ms | p99 ms |")
print("|---:|---:|---:|---:|---:|")
print(f"| {len(ports)} | {writes} | {count:.0f} | ≤ {pct(0.5):g} | ≤ {pct(0.99):g} |")
PY
    for port in "${pids[@]}"; do kill "$port"; wait "$port" 2>/dev/null || true; done
}

events_table() {
    provide_tansu
    cargo build --release --quiet -p tm-app --example events
    local args=(--backlog "${EVENTS_BACKLOG:-20000}" --rate "${EVENTS_RATE:-200}" --seconds "$DURATION")
    log "events on SQLite"
    TM_TEST_KAFKA_BROKER="$TM_TEST_KAFKA_BROKER" target/release/examples/events "${args[@]}"
    [ -n "$PG_DIR" ] || start_postgres
    psql_db create events
    log "events on PostgreSQL"
    TM_TEST_KAFKA_BROKER="$TM_TEST_KAFKA_BROKER" target/release/examples/events "${args[@]}" \
        --database-url "${PG_URL%/*}/events"
}

watch_table() {
    cargo build --release --quiet -p tm-app --example fanout
    ulimit -n "$(ulimit -Hn)"
    start_server "$WORK/data-watch"
    target/release/examples/fanout watch --url "http://127.0.0.1:$PORT_APP" \
        --admin-key "$ADMIN_KEY" --pid "$APP" --watchers "${WATCHERS:-4000}" --rounds 5
    stop_server
}

probes_table() {
    cargo build --release --quiet -p tm-app --example fanout
    local dir="$WORK/nginx-probes"
    mkdir -p "$dir"
    printf '%s\n' "worker_processes 1;" "error_log $dir/error.log;" "pid $dir/nginx.pid;" \
        "events { worker_connections 4096; }" \
        "http { access_log off; client_body_temp_path $dir;" \
        "  server { listen 127.0.0.1:$PORT_NGINX; location / { return 200 ok; } } }" \
        >"$dir/nginx.conf"
    taskset -c 1 "$NGINX" -c "$dir/nginx.conf" -g 'daemon off;' &
    local upstream=$!
    PIDS+=("$upstream")
    start_server "$WORK/data-probes" TM_WEBHOOK_ALLOW_NETWORKS=127.0.0.0/8
    target/release/examples/fanout probes --url "http://127.0.0.1:$PORT_APP" \
        --admin-key "$ADMIN_KEY" --pid "$APP" --upstream "http://127.0.0.1:$PORT_NGINX" \
        --routes "${PROBE_ROUTES:-1000}" --seconds "$DURATION"
    stop_server
    kill "$upstream"
    wait "$upstream" 2>/dev/null || true
}

startup_table() {
    [ -n "$PG_DIR" ] || start_postgres
    psql_db create startup
    local url="${PG_URL%/*}/startup"
    log "seeding $PG_ROUTES routes into PostgreSQL"
    "$SEED" --routes "$PG_ROUTES" --database-url "$url" >/dev/null
    sync
    start_server "$WORK/data-startup" TM_DATABASE_URL="$url" TM_LOG_LEVEL=warn
    printf '| backend | routes | start-up s | RSS MiB after start-up |\n|---|---:|---:|---:|\n'
    printf '| postgresql | %s | %s | %s |\n' "$PG_ROUTES" "$STARTUP" "$(rss_mib "$APP")"
    stop_server
}

# Seconds since $1 (from date +%s.%N), to two decimals.
since() { python3 -c "import time,sys; print(f'{time.time()-float(sys.argv[1]):.2f}')" "$1"; }

backup_table() {
    [ -n "$PG_DIR" ] || start_postgres
    printf '| backend | routes | backup s (verified) | backup MiB | uncompressed MiB | restore s |\n'
    printf '|---|---:|---:|---:|---:|---:|\n'
    local backend from to target started backup_s restore_s
    for backend in sqlite postgresql; do
        target="$WORK/backups-$backend"
        if [ "$backend" = postgresql ]; then
            psql_db create backup_from
            psql_db create backup_to
            from=(TM_DATABASE_URL="${PG_URL%/*}/backup_from")
            to=(TM_DATABASE_URL="${PG_URL%/*}/backup_to")
            "$SEED" --routes "$BACKUP_ROUTES" --database-url "${PG_URL%/*}/backup_from" >/dev/null
        else
            from=(TM_DATA_DIR="$WORK/backup-from")
            to=(TM_DATA_DIR="$WORK/backup-to")
            "$SEED" --routes "$BACKUP_ROUTES" --data-dir "$WORK/backup-from" >/dev/null
        fi
        sync
        started=$(date +%s.%N)
        env TM_DATA_DIR="$WORK/backup-from" TM_LOG_LEVEL=warn "${from[@]}" \
            "$BIN" backup --to "$target" >/dev/null
        backup_s=$(since "$started")
        started=$(date +%s.%N)
        env TM_DATA_DIR="$WORK/backup-to" TM_LOG_LEVEL=warn "${to[@]}" \
            "$BIN" restore --from "$target" --yes >/dev/null
        restore_s=$(since "$started")
        printf '| %s | %s | %s | %s | %s | %s |\n' "$backend" "$BACKUP_ROUTES" "$backup_s" \
            "$(du -sb "$target" | awk '{printf "%.1f", $1 / 1048576}')" \
            "$(python3 -c 'import json,sys,glob; m=json.load(open(glob.glob(sys.argv[1]+"/*/manifest.json")[0])); print("%.1f" % (sum(f["source_bytes"] for f in m["files"]) / 1048576))' "$target")" \
            "$restore_s"
        rm -rf "$WORK/backup-from" "$WORK/backup-to"
    done
}

# An OTLP/HTTP collector on port $1 that takes every export and counts the requests and
# their bytes (a GET answers "<requests> <bytes>"). Sets COLLECTOR (its pid).
start_collector() {
    cat >"$WORK/collector.py" <<'PY'
import http.server, sys, threading
count = {"requests": 0, "bytes": 0}
lock = threading.Lock()
class Collector(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        with lock:
            count["requests"] += 1
            count["bytes"] += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def do_GET(self):
        with lock:
            text = f'{count["requests"]} {count["bytes"]}'.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Collector).serve_forever()
PY
    taskset -c 1 python3 "$WORK/collector.py" "$1" &
    COLLECTOR=$!
    PIDS+=("$COLLECTOR")
    wait_http "http://127.0.0.1:$1/"
}

tracing_table() {
    local n=$TRACING_ROUTES data="$WORK/data-tracing" keys="$WORK/keys-tracing"
    local collector_port=$((PORT_NGINX + 20)) settings=(off on ratio)
    log "seeding $n routes"
    "$SEED" --routes "$n" --data-dir "$data" >"$keys"
    for setting in on ratio; do cp -r "$data" "$data-$setting"; done
    mv "$data" "$data-off"
    sync
    start_collector "$collector_port"
    local endpoint="http://127.0.0.1:$collector_port"
    # The three servers are up at once (an idle one does nothing) and loaded in turn,
    # three rounds, so that a drift of the machine falls on all three alike.
    PORT_APP=$((PORT_APP + 30)) start_server "$data-off"
    local app_off=$APP
    PORT_APP=$((PORT_APP + 31)) start_server "$data-on" OTEL_EXPORTER_OTLP_ENDPOINT="$endpoint"
    local app_on=$APP
    PORT_APP=$((PORT_APP + 32)) start_server "$data-ratio" OTEL_EXPORTER_OTLP_ENDPOINT="$endpoint" \
        OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.01
    local app_ratio=$APP
    declare -A runs exported
    for round in 1 2 3; do
        for i in 0 1 2; do
            local setting=${settings[$i]} before after
            log "tracing $setting, round $round (${DURATION}s)"
            before=$(curl -fsS "$endpoint/")
            runs[$setting]+="$(load "http://127.0.0.1:$((PORT_APP + 30 + i))" "$keys" "$n") "
            # What the run made is exported within a couple of batches' delays.
            sleep 3
            after=$(curl -fsS "$endpoint/")
            exported[$setting]+="$before $after,"
        done
    done
    kill "$app_off" "$app_on" "$app_ratio"
    wait "$app_off" "$app_on" "$app_ratio" 2>/dev/null || true
    printf '| tracing | req/s (median of 3) | p50 ms | p99 ms | exports a run | MiB exported a run |\n'
    printf '|---|---:|---:|---:|---:|---:|\n'
    for setting in "${settings[@]}"; do
        python3 - "$setting" "${exported[$setting]}" ${runs[$setting]} <<'PY'
import json, statistics, sys
setting, exported = sys.argv[1:3]
runs = [json.loads(r) for r in sys.argv[3:]]
assert len(runs) == 3 and all(r["errors"] == 0 for r in runs), runs
mid = sorted(runs, key=lambda r: r["rps"])[1]
pairs = [list(map(int, p.split())) for p in exported.strip(",").split(",")]
requests = statistics.median(p[2] - p[0] for p in pairs)
mib = statistics.median(p[3] - p[1] for p in pairs) / 2**20
label = {"off": "off (production default)", "on": "on, every trace", "ratio": "on, 1 % of traces"}[setting]
print(f"| {label} | {statistics.median(r['rps'] for r in runs):,.0f} | {mid['p50_ms']:.3f} | {mid['p99_ms']:.3f} | {requests:,.0f} | {mib:.1f} |")
PY
    done
    rm -rf "$data-off" "$data-on" "$data-ratio"
}

for mode in $MODES; do
    case $mode in
        resolve) resolve_table ;;
        tail) tail_table ;;
        writes) writes_table ;;
        startup) startup_table ;;
        propagation) propagation_table ;;
        events) events_table ;;
        watch) watch_table ;;
        probes) probes_table ;;
        backup) backup_table ;;
        tracing) tracing_table ;;
        *) echo "unknown mode: $mode" >&2; exit 2 ;;
    esac
    echo
done
