# Throwaway PostgreSQL clusters for the test and benchmark scripts (sourced, not run).
#
#   start_postgres [server option...]   # sets PG_URL, PG_PORT, PG_BIN, PG_RUN; e.g. -c fsync=off
#   stop_postgres
#   start_pgbouncer                     # sets PGB_URL: transaction pooling in front of it
#   stop_pgbouncer
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

# A port nothing listens on, below Linux's ephemeral range (32768 and up by default), so
# that no outgoing connection of the tests can be holding it when the server binds it.
free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$(( (RANDOM % 12000) + 20000 ))
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
    "${PG_RUN[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
    # A port taken between the choice and the bind fails the start: another port is tried.
    local port attempt
    for attempt in 1 2 3; do
        port=$(free_port)
        "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w start \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c max_connections=300 $*" >/dev/null && break
        if [ "$attempt" -eq 3 ]; then
            printf '==> %s
' "PostgreSQL did not start; its log:" >&2
            cat "$PG_DIR/server.log" >&2
            return 1
        fi
    done
    PG_PORT=$port
    PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
    printf '==> %s\n' "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
}

# PgBouncer from Debian's package, in transaction pooling mode, in front of the cluster
# that start_postgres started. What the service needs of it (see the README):
# server_reset_query = DEALLOCATE ALL with server_reset_query_always = 1 (a statement
# name from one client must not meet another's), and extra_float_digits ignored.
PGB_DIR=""
start_pgbouncer() {
    if [ ! -x /usr/sbin/pgbouncer ]; then
        printf '==> %s\n' "installing PgBouncer from Debian's packages" >&2
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq pgbouncer >/dev/null
    fi
    PGB_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tm-pgbouncer.XXXXXX")
    local port attempt
    # A port taken between the choice and the bind stops PgBouncer: another port is tried.
    for attempt in 1 2 3; do
        port=$(free_port)
        launch_pgbouncer "$port" && break
        if [ "$attempt" -eq 3 ]; then
            printf '==> %s\n' "PgBouncer did not start; its log:" >&2
            cat "$PGB_DIR/pgbouncer.log" >&2 2>/dev/null
            return 1
        fi
    done
    PGB_URL="postgres://postgres@127.0.0.1:$port/postgres"
    printf '==> %s\n' "PgBouncer $(/usr/sbin/pgbouncer --version | awk 'NR==1 {print $2}') (transaction pooling) on 127.0.0.1:$port" >&2
}

# Starts PgBouncer on port $1 in $PGB_DIR; succeeds once it runs and accepts connections.
launch_pgbouncer() {
    local port=$1
    rm -f "$PGB_DIR/pgbouncer.log"
    cat >"$PGB_DIR/pgbouncer.ini" <<EOF
[databases]
* = host=127.0.0.1 port=$PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $PGB_DIR/userlist.txt
pool_mode = transaction
max_client_conn = 2000
default_pool_size = 60
server_reset_query = DEALLOCATE ALL
server_reset_query_always = 1
ignore_startup_parameters = extra_float_digits
logfile = $PGB_DIR/pgbouncer.log
pidfile = $PGB_DIR/pgbouncer.pid
EOF
    echo '"postgres" ""' >"$PGB_DIR/userlist.txt"
    if [ "$(id -u)" -eq 0 ]; then chown -R postgres "$PGB_DIR"; fi
    "${PG_RUN[@]}" /usr/sbin/pgbouncer -d -q "$PGB_DIR/pgbouncer.ini" || return 1
    for _ in $(seq 1 100); do
        if [ -f "$PGB_DIR/pgbouncer.pid" ] && kill -0 "$(cat "$PGB_DIR/pgbouncer.pid")" 2>/dev/null &&
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        # It forks before it binds: a port found taken ends it with a FATAL line.
        grep -q FATAL "$PGB_DIR/pgbouncer.log" 2>/dev/null && return 1
        sleep 0.1
    done
    return 1
}

stop_pgbouncer() {
    if [ -n "$PGB_DIR" ] && [ -f "$PGB_DIR/pgbouncer.pid" ]; then
        local pid
        pid=$(cat "$PGB_DIR/pgbouncer.pid")
        printf '==> %s\n' "stopping PgBouncer (pid $pid)" >&2
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    [ -n "$PGB_DIR" ] && rm -rf "$PGB_DIR"
    PGB_DIR=""
}
