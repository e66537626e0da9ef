#!/usr/bin/env bash
# Install the Debian 12 packages that paymentsd needs to build, run and test,
# when some are missing, and Swagger UI's files (for /docs) into
# vendor/swagger-ui.  Idempotent: does nothing when all are there.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
swagger_ui() { "$top/scripts/swagger-ui.sh" "$top/vendor/swagger-ui"; }

packages=(
    # build
    gcc make autoconf automake pkg-config
    libevent-dev libpq-dev libjson-c-dev libssl-dev libcmocka-dev
    # the private database and its tests
    postgresql-15 postgresql-client-15 postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
    # end-to-end tests and the README's demos (logrotate: conf/logrotate.example, tested;
    # promtool, from prometheus, checks a live /metrics scrape)
    python3 curl openssl logrotate prometheus
    # the browser test of /docs
    chromium
    # docker-compose.yml's check (tests/e2e/test_regress_compose.py); no engine needed
    docker-compose
    # the fuzzers (tests/fuzz): clang and its libFuzzer runtime
    clang libclang-rt-14-dev
)
if [ "${WITH_BENCH:-0}" = 1 ]; then
    packages+=(wrk nginx-light postgresql-contrib)
fi
# make check-cluster and scripts/cluster.sh: HAProxy, pg_auto_failover,
# network namespaces (ip) and setpriv (util-linux).
if [ "${WITH_CLUSTER:-0}" = 1 ]; then
    packages+=(haproxy postgresql-15-auto-failover iproute2 util-linux)
fi

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
# npm fetches Swagger UI; a nodejs from elsewhere may bring its own npm.
command -v npm >/dev/null || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && { swagger_ui; exit 0; }

echo "deps.sh: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then
    sudo="sudo"
fi
# Only our private cluster should exist: no system-wide "main" cluster.
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    $sudo mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
# prometheus is here for promtool only: a server that we installed must
# not keep running (it would listen on :9090).
if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
# Nor Debian's haproxy service: scripts/cluster.sh starts its own HAProxy.
if [[ " ${missing[*]} " == *" haproxy "* ]] && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now haproxy >/dev/null 2>&1 || true
fi
swagger_ui
