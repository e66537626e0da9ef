#!/usr/bin/env bash
# Upgrade test of sql/init.sql (bash + psql only), TAP output.
#
# A database made by the last sql/init.sql before lock tokens (found in git
# history), holding a completed key, an in-progress key and a payment, is
# loaded with today's sql/init.sql: it must end with the same schema as a
# fresh database ($SQLTEST_DB, loaded by run.sh), its completed key must keep
# its TTL (completed_at = created_at) and its in-progress key must get a lock
# token its holder can finish with.
#
# Needs PGHOST/PGPORT (PGUSER = a superuser), the fresh $SQLTEST_DB, and git
# (skipped, with a note, without them).  Recreates ${SQLTEST_DB}_upgrade and
# leaves it behind for inspection.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
DB=${SQLTEST_DB:-payments_sqltest}
UDB=${DB}_upgrade
export PGUSER=${PGUSER:-postgres}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

su() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$UDB" "$@"; }
fp() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
dump() { pg_dump --schema-only -d "$1" 2>/dev/null | grep -Ev '^(--|\\(un)?restrict )'; }

n=0
failed=0
check() {   # description, got, want
    n=$((n + 1))
    if [ "$2" = "$3" ]; then
        echo "ok $n - $1"
    else
        echo "not ok $n - $1"
        printf '#   got:  %s\n#   want: %s\n' "$2" "$3"
        failed=$((failed + 1))
    fi
}

# The previous schema: the newest committed sql/init.sql without lock tokens.
old=
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
    for c in $(git -C "$top" log --format=%H -- sql/init.sql); do
        if git -C "$top" show "$c:sql/init.sql" >"$tmp/old.sql" 2>/dev/null && ! grep -q lock_token "$tmp/old.sql"; then
            old=$c
            break
        fi
    done
fi
if [ -z "$old" ]; then
    echo "1..0 # SKIP no git history with a sql/init.sql before lock tokens"
    exit 0
fi
echo "# upgrading a database made by sql/init.sql of ${old:0:12}"

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $UDB WITH (FORCE)" 2>/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $UDB"
su -c "CREATE EXTENSION pgtap"    # as in $DB, so that the schemas compare
check "the old sql/init.sql loads" "$(su -f "$tmp/old.sql" 2>&1)" ""

# Data as the old API left it: a key completed a day ago (a PAID order with
# its payment) and a key still in progress.
got=$(su 2>&1 <<SQL
SELECT order_id AS done_id FROM checkout_begin('up-done', '$(fp done)', 'b', 's', 1500, 'EUR', 'trusted', '30 s', '1 d') \gset
SELECT status FROM checkout_finish(:'done_id', 'up-done', 'succeeded', 'ch_up', 10000);
UPDATE idempotency_keys SET created_at = now() - interval '23 hours' WHERE key = 'up-done';
SELECT result FROM checkout_begin('up-open', '$(fp open)', 'b', 's', 900, 'EUR', 'untrusted', '30 s', '1 d');
SQL
)
check "the old API stores a completed and an in-progress key" "$(tr '\n' ' ' <<<"$got")" "PAID new "

check "today's sql/init.sql loads over it" "$(su -f "$top/sql/init.sql" 2>&1)" ""
check "and loads again" "$(su -f "$top/sql/init.sql" 2>&1)" ""
if diff <(dump "$DB") <(dump "$UDB") >"$tmp/schema.diff"; then
    check "the upgraded schema is the fresh one" "same" "same"
else
    check "the upgraded schema is the fresh one" "$(head -20 "$tmp/schema.diff")" "same"
fi
check "the old checkout_finish signature is gone" \
    "$(su -c "SELECT string_agg(oid::regprocedure::text, ' ') FROM pg_proc WHERE proname = 'checkout_finish'")" \
    "checkout_finish(uuid,text,uuid,text,text,bigint)"
check "the completed key's TTL counts from its creation (completed_at = created_at), no token needed" \
    "$(su -c "SELECT (completed_at = created_at) || ':' || (lock_token IS NULL) FROM idempotency_keys WHERE key = 'up-done'")" \
    "true:true"
check "it replays, saying when it was answered" \
    "$(su -c "SELECT b.result || ':' || (b.completed_at_ms = (extract(epoch FROM k.created_at) * 1000)::bigint)
               FROM checkout_begin('up-done', '$(fp done)', 'b', 's', 1500, 'EUR', 'trusted', '30 s', '1 d') b,
                    idempotency_keys k WHERE k.key = 'up-done'")" \
    "replay:true"
check "the in-progress key got a lock token, and no completed_at" \
    "$(su -c "SELECT (lock_token IS NOT NULL) || ':' || (completed_at IS NULL) FROM idempotency_keys WHERE key = 'up-open'")" \
    "true:true"
check "its holder finishes with it (FAILED provider_unavailable opens a reversal)" \
    "$(su -c "SELECT f.result || ':' || f.status || ':' || f.reversal
                FROM idempotency_keys k, checkout_finish(k.order_id, k.key, k.lock_token, 'unavailable', NULL, 10000) f
               WHERE k.key = 'up-open'")" \
    "finished:FAILED:true"
check "the widened ledger takes the late capture and the refund" \
    "$(su -c "SELECT reversal_settle(order_id, 'refunded') FROM idempotency_keys WHERE key = 'up-open'")$(su -c "SELECT ':' || string_agg(t.kind, ',' ORDER BY t.created_at) FROM ledger_transactions t JOIN idempotency_keys k ON k.order_id = t.order_id WHERE k.key = 'up-open'")" \
    "refunded:late_capture,refund"
check "the functions belong to paymentsd_owner" \
    "$(su -c "SELECT count(*) FROM pg_proc WHERE proname IN ('checkout_begin', 'checkout_finish', 'webhook_apply', 'reversal_settle') AND proowner <> 'paymentsd_owner'::regrole")" 0

echo "1..$n"
if [ "$failed" -ne 0 ]; then
    echo "# FAILED $failed of $n upgrade tests"
    exit 1
fi
echo "# all $n upgrade tests passed"
