#!/usr/bin/env bash
# Many paymentsd hosts behind HAProxy, on a PostgreSQL that survives losing
# its primary, all on one machine (see "Running many hosts" in README.md).
#
#   scripts/cluster.sh up        install what is missing, start what is not
#                                running (safe to run again), print the URLs
#   scripts/cluster.sh down      stop every process it started (by pid) and
#                                delete its network namespaces and files
#   scripts/cluster.sh status    processes, database nodes, HAProxy servers
#   scripts/cluster.sh primary   the name of the primary node (empty: none now)
#
# Layout (NAME = $CLUSTER_NAME, NET = $CLUSTER_NET):
#   NAME-core  a bridge br0 at NET.1: the pg_auto_failover monitor (:5431),
#              provider-sim (:8001) and HAProxy's inner listener (:8080,
#              where provider-sim sends its webhooks)
#   NAME-h1..3 one paymentsd host each at NET.11..13:8000 (own master,
#              workers, housekeeper, shared memory and conf)
#   NAME-db1/2 one PostgreSQL node each, NET.21:5432 and NET.22:5433, kept
#              by pg_autoctl: a primary and a synchronous standby
#   HAProxy itself runs here and listens on 127.0.0.1 only; it reaches the
#   namespaces with its "namespace" keyword.  Nothing else is added to the
#   machine's own network: the bridge and the veth pairs live inside the
#   namespaces, and the database sockets are files under $CLUSTER_DIR.
#
# Environment: CLUSTER_NAME (pdc), CLUSTER_NET (10.77.0), CLUSTER_DIR
# (/tmp/paymentsd-cluster-NAME), CLUSTER_PORT (8080, the API on 127.0.0.1),
# CLUSTER_ADMIN_PORT (8081, provider-sim's admin API), CLUSTER_STATS_PORT
# (8082, HAProxy's stats page), CLUSTER_HOSTS (3), CLUSTER_WORKERS (2),
# BUILD_DIR (build), and PAYMENTSD_<KEY> to override a key of every host.
# Root is needed (network namespaces); PostgreSQL runs as user postgres.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
NAME=${CLUSTER_NAME:-pdc}
NET=${CLUSTER_NET:-10.77.0}
DIR=${CLUSTER_DIR:-/tmp/paymentsd-cluster-$NAME}
PORT=${CLUSTER_PORT:-8080}
ADMIN_PORT=${CLUSTER_ADMIN_PORT:-8081}
STATS_PORT=${CLUSTER_STATS_PORT:-8082}
HOSTS=${CLUSTER_HOSTS:-3}
WORKERS=${CLUSTER_WORKERS:-2}
BUILD_DIR=${BUILD_DIR:-$top/build}
PAYMENTSD=${PAYMENTSD:-$BUILD_DIR/paymentsd}
PROVIDER_SIM=${PROVIDER_SIM:-$BUILD_DIR/provider-sim/provider-sim}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SECRET=whsec_c2ltdWxhdG9yLXNlY3JldC1mb3ItZGV2ZWxvcG1lbnQ=
MONITOR_URI="postgres://autoctl_node@$NET.1:5431/pg_auto_failover?sslmode=disable"
DB_URI="postgresql://app:app@$NET.21:5432,$NET.22:5433/payments?target_session_attrs=read-write&connect_timeout=2"

die() { echo "cluster.sh: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*" >&2; }

# Wait up to $1 seconds for the command that follows to succeed.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Everything PostgreSQL runs as "postgres", with pg_autoctl's files under $DIR.
PG_ENV=(XDG_CONFIG_HOME="$DIR/xdg/config" XDG_DATA_HOME="$DIR/xdg/data"
        XDG_RUNTIME_DIR="$DIR/xdg/run" PGHOST="$DIR/run" PATH="$PG_BIN:$PATH")
as_pg() { runuser -u postgres -- env "${PG_ENV[@]}" "$@"; }
# The same in the namespace NAME-$1.
as_pg_in() { local ns=$1; shift; ip netns exec "$NAME-$ns" runuser -u postgres -- env "${PG_ENV[@]}" "$@"; }

ensure_deps() {
    if ! command -v haproxy >/dev/null || ! command -v pg_autoctl >/dev/null \
        || ! command -v ip >/dev/null; then
        WITH_CLUSTER=1 "$top/scripts/deps.sh"
    fi
    [ "$(id -u)" = 0 ] || die "network namespaces need root"
    [ -x "$PAYMENTSD" ] && [ -x "$PROVIDER_SIM" ] \
        || die "build first (scripts/build.sh build), or set PAYMENTSD and PROVIDER_SIM"
}

# A namespace joined to the bridge in NAME-core by a veth pair.
ensure_ns() {
    local ns=$1 addr=$2
    [ -e "/run/netns/$NAME-$ns" ] && return
    ip netns add "$NAME-$ns"
    ip -n "$NAME-$ns" link set lo up
    ip -n "$NAME-core" link add "v-$ns" type veth peer name eth0 netns "$NAME-$ns"
    ip -n "$NAME-core" link set "v-$ns" master br0 up
    ip -n "$NAME-$ns" addr add "$addr/24" dev eth0
    ip -n "$NAME-$ns" link set eth0 up
}

net_up() {
    if [ ! -e "/run/netns/$NAME-core" ]; then
        ip netns add "$NAME-core"
        ip -n "$NAME-core" link set lo up
        ip -n "$NAME-core" link add br0 type bridge
        ip -n "$NAME-core" addr add "$NET.1/24" dev br0
        ip -n "$NAME-core" link set br0 up
    fi
    for i in $(seq 1 "$HOSTS"); do
        ensure_ns "h$i" "$NET.$((10 + i))"
    done
    ensure_ns db1 "$NET.21"
    ensure_ns db2 "$NET.22"
}

# Start "pg_autoctl run" for a data dir in a namespace, in the background.
# setpriv, unlike runuser, execs: the pid recorded is pg_autoctl's own.
autoctl_run() {
    local ns=$1 pgdata=$2 name=$3
    alive "$DIR/pids/$name.pid" && return
    setsid ip netns exec "$NAME-$ns" setpriv --reuid=postgres --regid=postgres --clear-groups \
        env "${PG_ENV[@]}" pg_autoctl run --pgdata "$pgdata" >>"$DIR/log/$name.log" 2>&1 </dev/null &
    echo $! >"$DIR/pids/$name.pid"
}

monitor_up() {
    if [ ! -d "$DIR/monitor" ]; then
        as_pg "$PG_BIN/initdb" -D "$DIR/monitor" -U postgres --auth=trust -E UTF8 \
            --locale=C.UTF-8 >"$DIR/log/initdb-monitor.log" 2>&1
        cat >>"$DIR/monitor/postgresql.conf" <<CONF
unix_socket_directories = '$DIR/run'
# Notice a lost node within about 3 s (defaults: 5 s checks, 20 s unhealthy).
pgautofailover.health_check_period = 1000
pgautofailover.health_check_timeout = 1000
pgautofailover.health_check_max_retries = 1
pgautofailover.health_check_retry_delay = 500
pgautofailover.node_considered_unhealthy_timeout = 3000
# Before promoting, the monitor waits this long for the old primary to have
# demoted itself (default 30 s); it must stay above the nodes'
# network_partition_timeout (3 s here, see node_up).
pgautofailover.primary_demote_timeout = 5000
CONF
        as_pg_in core pg_autoctl create monitor --pgdata "$DIR/monitor" --pgport 5431 \
            --hostname "$NET.1" --auth trust --no-ssl >>"$DIR/log/monitor.log" 2>&1 \
            || { tail -20 "$DIR/log/monitor.log" >&2; die "pg_autoctl create monitor failed"; }
    fi
    autoctl_run core "$DIR/monitor" monitor
    wait_for 30 as_pg psql -X -h "$DIR/run" -p 5431 -d pg_auto_failover -c "select 1" \
        || die "the monitor did not start (see $DIR/log/monitor.log)"
}

# A database node: db1 is created first and becomes the primary, db2 is
# cloned from it and becomes its synchronous standby.
node_up() {
    local n=$1 port=$((5431 + $1)) pgdata="$DIR/db$1"
    if [ ! -f "$pgdata/.created" ]; then
        if [ "$n" = 1 ]; then
            as_pg "$PG_BIN/initdb" -D "$pgdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
                -E UTF8 --locale=C.UTF-8 >"$DIR/log/initdb-db$n.log" 2>&1
            cat >>"$pgdata/postgresql.conf" <<CONF
unix_socket_directories = '$DIR/run'
max_connections = 100
shared_buffers = 64MB
CONF
            # The application, from the hosts' subnet only, with a password.
            echo "host payments app $NET.0/24 scram-sha-256" >>"$pgdata/pg_hba.conf"
        fi
        as_pg_in "db$n" pg_autoctl create postgres --pgdata "$pgdata" --pghost "$DIR/run" --pgport "$port" \
            --listen "$NET.$((20 + n))" --hostname "$NET.$((20 + n))" --name "db$n" \
            --dbname payments --monitor "$MONITOR_URI" --auth trust --no-ssl \
            --replication-quorum true --candidate-priority 50 >>"$DIR/log/db$n.log" 2>&1 \
            || { tail -20 "$DIR/log/db$n.log" >&2; die "pg_autoctl create postgres db$n failed"; }
        # A primary that reaches neither the monitor nor its standby for 3 s
        # (default 20 s) stops itself: the monitor may then promote sooner.
        as_pg pg_autoctl config set --pgdata "$pgdata" timeout.network_partition_timeout 3 \
            >>"$DIR/log/db$n.log" 2>&1
        touch "$pgdata/.created"
    fi
    autoctl_run "db$n" "$pgdata" "db$n"
}

# The node named $1 has reached state $2 on the monitor.
node_state_is() {
    [ "$(as_pg psql -X -A -t -h "$DIR/run" -p 5431 -d pg_auto_failover -c \
        "select reportedstate from pgautofailover.node where nodename = '$1'")" = "$2" ]
}

# Which node is primary now (empty while none is).
primary() {
    as_pg psql -X -A -t -h "$DIR/run" -p 5431 -d pg_auto_failover -c \
        "select nodename from pgautofailover.node
          where reportedstate in ('primary', 'wait_primary', 'single') and goalstate = reportedstate" \
        2>/dev/null | head -1
}

has_primary() { [ -n "$(primary)" ]; }

database_up() {
    monitor_up
    if [ -f "$DIR/db2/.created" ]; then
        # Created before: start what is down; a node that lost its primary
        # role rejoins as a standby by itself.
        node_up 1
        node_up 2
        wait_for 60 has_primary || die "no primary after 60 s (see $DIR/log/db*.log)"
        return
    fi
    node_up 1
    wait_for 60 node_state_is db1 single || die "db1 did not start (see $DIR/log/db1.log)"
    if [ ! -f "$DIR/db1/.loaded" ]; then
        wait_for 30 as_pg psql -X -p 5432 -d payments -c "select 1" || die "db1 does not answer"
        as_pg psql -X -q -v ON_ERROR_STOP=1 -p 5432 -d payments \
            -f "$top/sql/init.sql" >"$DIR/log/init-sql.log" 2>&1 \
            || { tail -20 "$DIR/log/init-sql.log" >&2; die "loading sql/init.sql failed"; }
        touch "$DIR/db1/.loaded"
    fi
    node_up 2
    # The standby clones the primary first: allow it a minute and a half.
    wait_for 90 node_state_is db2 secondary || die "db2 is no standby after 90 s (see $DIR/log/db2.log)"
}

sim_up() {
    alive "$DIR/pids/provider-sim.pid" && return
    cat >"$DIR/provider-sim.conf" <<CONF
listen = $NET.1:8001
admin_allow = 127.0.0.0/8 $NET.1/32
webhook_url = http://$NET.1:8080/webhooks/provider
webhook_secret = $SECRET
decline_rate = 0.1
timeout_rate = 0
latency = 0ms
seed = 1
webhook_delay = 2s
state_file = $DIR/provider-sim.state
CONF
    setsid ip netns exec "$NAME-core" "$PROVIDER_SIM" -c "$DIR/provider-sim.conf" \
        >>"$DIR/log/provider-sim.log" 2>&1 </dev/null &
    echo $! >"$DIR/pids/provider-sim.pid"
}

host_up() {
    local i=$1 conf="$DIR/h$1/paymentsd.conf"
    alive "$DIR/pids/h$i.pid" && return
    mkdir -p "$DIR/h$i/var"
    cat >"$conf" <<CONF
listen = $NET.$((10 + i)):8000
workers = $WORKERS
database = $DB_URI
db_pool_size = 2
db_timeout = 3s
provider_url = http://$NET.1:8001
provider_timeout = 800ms
webhook_secret = $SECRET
idempotency_lock_timeout = 10s
housekeeper_interval = 2s
shm_cache_size = 8m
pid_file = $DIR/h$i/var/paymentsd.pid
error_log = $DIR/h$i/var/error.log
access_log = $DIR/h$i/var/access.log
CONF
    setsid ip netns exec "$NAME-h$i" "$PAYMENTSD" -c "$conf" >>"$DIR/h$i/var/stderr.log" 2>&1 \
        </dev/null &
    echo $! >"$DIR/pids/h$i.pid"
}

haproxy_up() {
    alive "$DIR/pids/haproxy.pid" && return
    printf 'HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n{"error": {"code": "service_unavailable", "message": "no paymentsd host is ready; retry with the same Idempotency-Key"}}\n' \
        >"$DIR/503.http"
    {
        cat <<CONF
# paymentsd behind HAProxy (written by scripts/cluster.sh).
global
    log stderr format short local0 notice
    stats socket $DIR/haproxy.sock mode 600 level admin
    pidfile $DIR/pids/haproxy.pid

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 30s
    timeout server 10s
    timeout check 1s
    # A host that is gone is retried on another one.  Only when no answer
    # came back; a checkout with its Idempotency-Key is safe to send again.
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response
    errorfile 503 $DIR/503.http

frontend api
    bind 127.0.0.1:$PORT
    bind $NET.1:8080 namespace $NAME-core
    # HAProxy's own request id, unless the client sent one; paymentsd logs
    # it, answers it and passes it on to the provider.
    unique-id-format %{+X}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid
    http-request set-header X-Request-Id %[unique-id] unless { req.hdr(X-Request-Id) -m found }
    default_backend paymentsd

backend paymentsd
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    # Which host answered, for people and for tests/cluster.
    http-response set-header X-Served-By %s
    # "namespace" on each server line: HAProxy connects, and checks, from
    # inside NAME-core, never through this machine's own routes.
    default-server check inter 500 fall 2 rise 2
CONF
        for i in $(seq 1 "$HOSTS"); do
            echo "    server h$i $NET.$((10 + i)):8000 namespace $NAME-core"
        done
        cat <<CONF

# provider-sim's admin API (GET /admin/charges), on loopback only.
listen provider-admin
    bind 127.0.0.1:$ADMIN_PORT
    server sim $NET.1:8001 namespace $NAME-core

listen stats
    bind 127.0.0.1:$STATS_PORT
    stats enable
    stats uri /
    stats refresh 2s
CONF
    } >"$DIR/haproxy.cfg"
    haproxy -c -q -f "$DIR/haproxy.cfg" || die "HAProxy rejects $DIR/haproxy.cfg"
    haproxy -D -f "$DIR/haproxy.cfg" >>"$DIR/log/haproxy.log" 2>&1
    wait_for 5 alive "$DIR/pids/haproxy.pid" || die "HAProxy did not start"
}

print_urls() {
    cat <<EOF
API (HAProxy)       http://127.0.0.1:$PORT   e.g. curl http://127.0.0.1:$PORT/readyz
HAProxy stats       http://127.0.0.1:$STATS_PORT/
provider-sim admin  http://127.0.0.1:$ADMIN_PORT/admin/charges
database (hosts)    $DB_URI
database (here)     psql -h $DIR/run -p 5432 -U postgres payments   (db1; db2 is port 5433)
monitor             psql -h $DIR/run -p 5431 -U postgres pg_auto_failover
                    runuser -u postgres -- env XDG_CONFIG_HOME=$DIR/xdg/config pg_autoctl show state --pgdata $DIR/monitor
EOF
}

up() {
    ensure_deps
    mkdir -p "$DIR"/{pids,log,run,xdg/config,xdg/data,xdg/run}
    chown postgres: "$DIR" "$DIR"/{run,log,xdg,xdg/config,xdg/data,xdg/run}
    chmod 755 "$DIR"
    net_up
    database_up
    sim_up
    for i in $(seq 1 "$HOSTS"); do
        host_up "$i"
    done
    haproxy_up
    wait_for 30 curl -sf "http://127.0.0.1:$PORT/readyz" \
        || die "no host is ready behind HAProxy (see $DIR/h*/var/error.log)"
    print_urls
}

# Stop one pid (or, given "-PGID", the process group that setsid made for
# it): TERM, then KILL after 10 s.
stop_pid() {
    local target=$1
    kill -0 -- "$target" 2>/dev/null || return 0
    kill -TERM -- "$target" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 -- "$target" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -KILL -- "$target" 2>/dev/null || true
}

down() {
    local f
    [ -d "$DIR" ] || { say "nothing to stop in $DIR"; }
    for f in "$DIR"/pids/haproxy.pid "$DIR"/pids/h*.pid "$DIR"/pids/provider-sim.pid; do
        [ -f "$f" ] && stop_pid "$(cat "$f")"
    done
    # pg_autoctl with its services and its postgres: the whole group.
    for f in "$DIR"/pids/db*.pid "$DIR"/pids/monitor.pid; do
        [ -f "$f" ] && stop_pid "-$(cat "$f")"
    done
    # A node whose pg_autoctl was killed may leave its postmaster behind.
    for f in "$DIR"/db1 "$DIR"/db2 "$DIR"/monitor; do
        if [ -f "$f/postmaster.pid" ]; then
            stop_pid "$(head -1 "$f/postmaster.pid")"
        fi
    done
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^$NAME-(core|h[0-9]+|db[0-9])$" || true); do
        ip netns del "$ns"
    done
    if [ "${CLUSTER_KEEP:-0}" != 1 ]; then
        rm -rf "$DIR"
    fi
}

status() {
    local f
    for f in "$DIR"/pids/*.pid; do
        [ -f "$f" ] || continue
        if alive "$f"; then
            echo "$(basename "$f" .pid): running (pid $(cat "$f"))"
        else
            echo "$(basename "$f" .pid): not running"
        fi
    done
    if [ -d "$DIR/monitor" ]; then
        as_pg psql -X -h "$DIR/run" -p 5431 -d pg_auto_failover -c \
            "select nodename, nodehost, nodeport, reportedstate, goalstate, reportedlsn
               from pgautofailover.node order by nodeid" 2>/dev/null || echo "monitor: not answering"
    fi
    if [ -S "$DIR/haproxy.sock" ]; then
        python3 - "$DIR/haproxy.sock" <<'PY' || true
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
for line in data.decode().splitlines()[1:]:
    f = line.split(",")
    if len(f) > 17 and f[0] == "paymentsd" and f[1] not in ("FRONTEND", "BACKEND"):
        print("haproxy server %s: %s" % (f[1], f[17]))
PY
    fi
    print_urls
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
primary) primary ;;
*) echo "usage: $0 up|down|status|primary" >&2; exit 2 ;;
esac
