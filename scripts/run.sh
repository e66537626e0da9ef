#!/usr/bin/env bash
# Run paymentsd on localhost:8000 from a fresh Debian 12 machine: install
# what is missing, build, start the private PostgreSQL (loading
# sql/init.sql), start provider-sim on :8001, then paymentsd in the
# foreground.  Ctrl-C stops both; scripts/pg.sh stop stops the database.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

scripts/deps.sh
scripts/build.sh build
scripts/pg.sh start
mkdir -p var

sim_pid=""
if [ -x build/provider-sim/provider-sim ]; then
    build/provider-sim/provider-sim -c conf/provider-sim.conf &
    sim_pid=$!
    echo "run.sh: provider-sim on 127.0.0.1:8001 (pid $sim_pid)"
fi
stop_sim() {
    if [ -n "$sim_pid" ]; then
        kill "$sim_pid" 2>/dev/null || true
        wait "$sim_pid" 2>/dev/null || true
    fi
}
trap stop_sim EXIT

echo "run.sh: paymentsd on http://localhost:8000 (Ctrl-C to stop)"
build/paymentsd -c conf/paymentsd.conf
