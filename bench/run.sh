#!/usr/bin/env bash
# Load benchmarks, side by side on this machine (numbers, not a test):
#   1. pgbench: the SQL of one checkout, straight to PostgreSQL (the ceiling)
#   2. wrk: POST /checkout with a fresh key per request (new orders)
#   3. wrk: POST /checkout replaying one key (answered from the shm cache)
#   4. wrk: the same request to nginx answering a fixed 200 JSON body (the
#      HTTP ceiling of this machine)
# Usage: bench/run.sh [seconds per run (default 10)] [connections (default 32)]
# Needs: scripts/build.sh build, scripts/pg.sh start; installs wrk if missing.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
secs=${1:-10}
conns=${2:-32}
WITH_BENCH=1 scripts/deps.sh
scripts/build.sh build >/dev/null
scripts/pg.sh start >/dev/null
eval "$(scripts/pg.sh env)"
db="postgresql://app:app@127.0.0.1:$PGPORT/payments"
out=$(mktemp -d /tmp/paymentsd-bench.XXXXXX)
port=18080
sim_port=18081
nginx_port=18082

cat >"$out/sim.conf" <<CONF
listen = 127.0.0.1:$sim_port
latency = 0ms
decline_rate = 0
timeout_rate = 0
seed = 1
log_level = warn
CONF
cat >"$out/paymentsd.conf" <<CONF
listen = 127.0.0.1:$port
workers = auto
database = $db
provider_url = http://127.0.0.1:$sim_port
pid_file = $out/paymentsd.pid
error_log = $out/error.log
access_log = off
log_level = warn
db_pool_size = ${DB_POOL_SIZE:-8}
CONF

mkdir -p "$out/nginx/logs"
cat >"$out/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $out/nginx/nginx.pid;
error_log $out/nginx/logs/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$nginx_port;
        location / { default_type application/json; return 200 '{"ok":true}'; }
    }
}
CONF

build/provider-sim/provider-sim -c "$out/sim.conf" >"$out/sim.log" 2>&1 &
sim=$!
build/paymentsd -c "$out/paymentsd.conf" &
pd=$!
nginx -p "$out/nginx" -c "$out/nginx/nginx.conf" -g "daemon off;" &
ngx=$!
cleanup() {
    kill "$pd" "$sim" "$ngx" 2>/dev/null || true
    wait "$pd" "$sim" "$ngx" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 50); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

echo "== machine: $(nproc) cores, $(uname -r), PostgreSQL $(psql -V | awk '{print $3}')"
echo "== 1. pgbench ceiling: $conns clients, ${secs}s"
pgbench -n -M prepared -c "$conns" -j 2 -T "$secs" -f bench/checkout.pgbench "$db" 2>&1 \
    | grep -E "^(tps|latency average|number of failed)"
echo "== 2. wrk new checkouts: $conns connections, ${secs}s"
wrk -t 2 -c "$conns" -d "${secs}s" --latency -s bench/checkout_new.lua "http://127.0.0.1:$port" 2>&1 \
    | grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors|requests in"
echo "== 3. wrk replays of one key (shm cache): $conns connections, ${secs}s"
REPLAY_KEY="bench-replay-$(date +%s)" wrk -t 2 -c "$conns" -d "${secs}s" --latency \
    -s bench/checkout_replay.lua "http://127.0.0.1:$port" 2>&1 \
    | grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors|requests in"
echo "== 4. wrk against nginx return 200 (HTTP ceiling): $conns connections, ${secs}s"
wrk -t 2 -c "$conns" -d "${secs}s" --latency -s bench/checkout_replay.lua "http://127.0.0.1:$nginx_port" 2>&1 \
    | grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors|requests in"
