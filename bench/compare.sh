#!/usr/bin/env bash
# ../shared/bench/compare.sh, with paymentsd's template database made by
# today's SQL API.  The shared harness prefills its template with the
# checkout_finish of before lock tokens (issue 9), which no longer exists;
# it skips making a template that is already there, so this makes it first,
# under the same name (keyed by init.sql and PREFILL), then runs it.  The
# checkouts go in batches of 1,000 (checkout_begin_many/finish_many, a
# commit each), so that PREFILL=1000000 takes minutes, not an hour.
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
DO \$\$ DECLARE n int; k text[]; ids uuid[]; toks uuid[]; BEGIN
  FOR c IN 0..($PREFILL - 1) / 1000 LOOP
    k := ARRAY(SELECT 'pre-' || g FROM generate_series(c * 1000 + 1, least(c * 1000 + 1000, $PREFILL)) g);
    n := cardinality(k);
    SELECT array_agg(b.order_id ORDER BY b.ord), array_agg(b.lock_token ORDER BY b.ord) INTO ids, toks
      FROM checkout_begin_many(k, array_fill(repeat('a', 64), ARRAY[n]),
          array_fill('bench-buyer'::text, ARRAY[n]), array_fill('bench-seller'::text, ARRAY[n]),
          array_fill(1999::bigint, ARRAY[n]), array_fill('EUR'::text, ARRAY[n]),
          array_fill('untrusted'::text, ARRAY[n]), array_fill('30 seconds'::interval, ARRAY[n]),
          array_fill('24 hours'::interval, ARRAY[n])) b;
    PERFORM checkout_finish_many(ids, k, toks, array_fill('succeeded'::text, ARRAY[n]),
        array_fill('ch_pre'::text, ARRAY[n]), array_fill(10000::bigint, ARRAY[n]));
    COMMIT;
    -- The functions' generic plans are made from the statistics: without
    -- fresh ones they scan the growing tables (autovacuum hears of no change
    -- until this block ends), and the prefill slows quadratically.
    IF c % 16 = 0 THEN
      ANALYZE idempotency_keys, orders, ledger_transactions, ledger_entries;
    END IF;
  END LOOP; END \$\$;
VACUUM ANALYZE;
SQL
    sql "ALTER DATABASE pd_tpl_tmp RENAME TO pd_tpl_$TAG"
fi
exec "$BENCH/compare.sh" "$@"
