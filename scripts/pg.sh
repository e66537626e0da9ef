#!/usr/bin/env bash
# A private PostgreSQL 15 cluster for development and tests.
#
#   scripts/pg.sh start    initdb on first use, start, create db "payments",
#                          load sql/init.sql (safe to run again)
#   scripts/pg.sh stop     fast shutdown
#   scripts/pg.sh status   exit 0 when running
#   scripts/pg.sh env      print PGHOST/PGPORT lines to eval in a shell
#
# The cluster lives under .pg/ in the project (git-ignored), listens on
# 127.0.0.1:$PG_PORT (default 54320) and on a socket dir of its own, and never
# touches a system service.  PostgreSQL refuses to run as root, so as root it
# runs as the "postgres" user through runuser.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
PG_PORT=${PG_PORT:-54320}
PG_DIR=${PG_DIR:-$top/.pg}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || dirname "$(command -v pg_ctl)")}

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# As root the data must belong to "postgres", and every folder above it must
# let that user through.  A clone under /root does not: keep the data under
# /tmp then, reached through the .pg symlink so that the layout stays the same.
prepare_dir() {
    if [ -d "$PG_DIR/data" ]; then
        return
    fi
    mkdir -p "$PG_DIR"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$PG_DIR"
        if ! runuser -u postgres -- test -w "$PG_DIR"; then
            local alt
            alt=$(mktemp -d /tmp/paymentsd-pg.XXXXXX)
            chown postgres: "$alt"
            chmod 700 "$alt"
            rmdir "$PG_DIR"
            ln -s "$alt" "$PG_DIR"
            echo "pg.sh: $top is not reachable by user postgres; data kept in $alt" >&2
        fi
    fi
    mkdir -p "$PG_DIR/run"
    [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR/run"
    as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust \
        --encoding=UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 \
        || { cat "$PG_DIR/initdb.log" >&2; exit 1; }
    cat >>"$PG_DIR/data/postgresql.conf" <<CONF
# paymentsd private cluster
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_DIR/run'
max_connections = 200
shared_buffers = 256MB
CONF
}

running() {
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1
}

psql_pg() {
    as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR/run" -p "$PG_PORT" -U postgres "$@"
}

case "${1:-}" in
start)
    prepare_dir
    if ! running; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" \
            -o "-p $PG_PORT" -w -t 60 start >/dev/null \
            || { tail -n 20 "$PG_DIR/server.log" >&2; exit 1; }
    fi
    if [ -z "$(psql_pg -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = 'payments'")" ]; then
        psql_pg -d postgres -c "CREATE DATABASE payments"
    fi
    psql_pg -d payments -f "$top/sql/init.sql" >/dev/null
    echo "pg.sh: PostgreSQL on 127.0.0.1:$PG_PORT (socket $PG_DIR/run), database payments loaded"
    ;;
stop)
    if [ -d "$PG_DIR/data" ] && running; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null
    fi
    ;;
status)
    [ -d "$PG_DIR/data" ] && running
    ;;
env)
    echo "PGHOST=$PG_DIR/run"
    echo "PGPORT=$PG_PORT"
    ;;
*)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
