#!/usr/bin/env bash
# ../shared/bench/compare.sh, with paymentsd's template database made by
# today's SQL API.  The shared harness prefills its template with the
# checkout_finish of before lock tokens (issue 9), which no longer exists;
# it skips making a template that is already there, so this makes it first,
# under the same name (keyed by init.sql and PREFILL), then runs it.
#
#   bench/compare.sh [ROUNDS]       (from a built checkout, as root)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
BENCH="$top/../shared/bench"
export BENCH_VAR="${BENCH_VAR:-/tmp/paymentsd-bench}"
PGP="${PGPORT:-55432}"
PREFILL="${PREFILL:-100000}"
INIT_SQL="$(realpath "${INIT_SQL:-sql/init.sql}")"
TAG="$(sha1sum "$INIT_SQL" | cut -c1-8)_$PREFILL"
ADMIN="postgresql://app@127.0.0.1:$PGP/postgres"
sql() { psql "$ADMIN" -XAtq -v ON_ERROR_STOP=1 -c "$1"; }

PGPORT="$PGP" "$BENCH/pg-up.sh" >/dev/null
if [ "$(sql "select count(*) from pg_database where datname='pd_tpl_$TAG'")" != 1 ]; then
    echo "== template pd_tpl_$TAG: init.sql + $PREFILL checkouts (lock tokens)"
    sql "DROP DATABASE IF EXISTS pd_tpl_tmp WITH (FORCE)"
    sql "CREATE DATABASE pd_tpl_tmp"
    url="postgresql://app@127.0.0.1:$PGP/pd_tpl_tmp"
    psql "$url" -Xq -v ON_ERROR_STOP=1 -f "$INIT_SQL" >/dev/null
    psql "$url" -Xq -v ON_ERROR_STOP=1 <<SQL
DO \$\$ DECLARE b record; BEGIN
  FOR i IN 1..$PREFILL LOOP
    SELECT * INTO b FROM checkout_begin('pre-' || i, repeat('a', 64), 'bench-buyer', 'bench-seller',
        1999, 'EUR', 'untrusted', '30 seconds'::interval, '24 hours'::interval);
    PERFORM checkout_finish(b.order_id, 'pre-' || i, b.lock_token, 'succeeded', 'ch_pre', 10000);
  END LOOP; END \$\$;
VACUUM ANALYZE;
SQL
    sql "ALTER DATABASE pd_tpl_tmp RENAME TO pd_tpl_$TAG"
fi
exec "$BENCH/compare.sh" "$@"
