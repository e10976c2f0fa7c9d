# Throwaway PostgreSQL clusters for the test and benchmark scripts (sourced, not run).
#
#   start_postgres [server option...]   # sets PG_URL, PG_BIN, PG_RUN; e.g. -c fsync=off
#   stop_postgres
#
# PostgreSQL is installed from Debian's packages when missing. The cluster runs as an
# unprivileged user on 127.0.0.1, on a free port, in a temporary directory.

pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_postgres() {
    printf '==> %s\n' "installing PostgreSQL from Debian's packages" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
}

PG_DIR=""
PG_RUN=()
stop_postgres() {
    if [ -n "$PG_DIR" ] && [ -f "$PG_DIR/data/postmaster.pid" ]; then
        printf '==> %s\n' "stopping PostgreSQL (pid $(head -n 1 "$PG_DIR/data/postmaster.pid"))" >&2
        "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null || true
    fi
    [ -n "$PG_DIR" ] && rm -rf "$PG_DIR"
    PG_DIR=""
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
    PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tm-pg.XXXXXX")
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
        -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c max_connections=300 $*" >/dev/null
    PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
    printf '==> %s\n' "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
}
