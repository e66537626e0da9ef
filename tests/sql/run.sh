#!/usr/bin/env bash
# Database tests of sql/init.sql.
#
#   PGHOST=/work/main/.pg/run PGPORT=54320 bash tests/sql/run.sh
#
# Connects as the superuser (PGUSER, default postgres) to the server named by
# PGHOST/PGPORT, recreates the scratch database $SQLTEST_DB (default
# payments_sqltest), installs pgTAP, loads sql/init.sql twice (the second load
# proves it is re-runnable), checks that a database made by the previous
# sql/init.sql upgrades to the same schema (upgrade.sh, in the scratch
# database ${SQLTEST_DB}_upgrade), runs the pgTAP files tests/sql/[0-9]*.sql
# with pg_prove, then the multi-session tests (concurrency.sh).  Exits
# non-zero on any failure.  The scratch databases are left behind for
# inspection.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

export PGUSER=${PGUSER:-postgres}
export PGHOST=${PGHOST:-$top/.pg/run}
export PGPORT=${PGPORT:-54320}
export SQLTEST_DB=${SQLTEST_DB:-payments_sqltest}

psql_su() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

for tool in psql pg_prove pg_dump sha256sum; do
    command -v "$tool" >/dev/null || { echo "FAIL: $tool not found (pgTAP: apt-get install postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl)" >&2; exit 1; }
done

echo "# scratch database $SQLTEST_DB on $PGHOST:$PGPORT"
psql_su -d postgres -c "DROP DATABASE IF EXISTS $SQLTEST_DB WITH (FORCE)" 2>/dev/null
psql_su -d postgres -c "CREATE DATABASE $SQLTEST_DB"
psql_su -d "$SQLTEST_DB" -c "CREATE EXTENSION pgtap"

for pass in 1 2; do
    if ! out=$(psql_su -d "$SQLTEST_DB" -f "$top/sql/init.sql" 2>&1); then
        echo "$out" >&2
        echo "FAIL: sql/init.sql did not load (pass $pass)" >&2
        exit 1
    fi
    echo "# sql/init.sql loaded (pass $pass)"
done

# A re-run must leave the same schema: compare a dump after one more load.
# (\restrict lines of newer pg_dump carry a random key: drop them.)
dump() { pg_dump --schema-only -d "$SQLTEST_DB" 2>/dev/null | grep -Ev '^(--|\\(un)?restrict )'; }
before=$(dump)
psql_su -d "$SQLTEST_DB" -f "$top/sql/init.sql" >/dev/null 2>&1
if [ "$before" != "$(dump)" ]; then
    echo "FAIL: loading sql/init.sql again changed the schema" >&2
    diff <(echo "$before") <(dump) >&2 || true
    exit 1
fi
echo "# sql/init.sql loaded (pass 3): schema unchanged"

status=0
echo "# upgrade from the previous sql/init.sql"
bash "$here/upgrade.sh" || status=1

pg_prove -d "$SQLTEST_DB" --ext .sql "$here"/[0-9]*.sql || status=1

echo "# concurrency and commit-time tests"
bash "$here/concurrency.sh" || status=1

if [ $status -eq 0 ]; then
    echo "# ALL DATABASE TESTS PASSED"
else
    echo "# DATABASE TESTS FAILED" >&2
fi
exit $status
