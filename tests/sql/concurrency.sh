#!/usr/bin/env bash
# Multi-session tests of sql/init.sql (bash + psql only), TAP output.
#
# What one pgTAP transaction cannot show: many sessions racing on one
# idempotency key or one webhook event, finishes with old and new lock tokens
# at once, a finish racing webhooks over a reversal, reversal answers and
# housekeepers racing, SKIP LOCKED between housekeepers, the deferred checks
# firing at a real COMMIT, and fresh sessions (app, paymentsd_owner); batches
# (group commit) over the same keys and orders in opposite orders, and a
# batch whose COMMIT fails.
#
# A race: N sessions (as role app) queue on an advisory lock that a holder
# session keeps until all N are waiting in pg_locks, then releases: they all
# run their statement at the same instant.
#
# Needs PGHOST/PGPORT (and PGUSER = a superuser, default postgres) and the
# database $SQLTEST_DB (default payments_sqltest) loaded with sql/init.sql;
# run.sh sets this up.  Safe to run again on the same database (names carry
# a per-run tag).
set -uo pipefail

DB=${SQLTEST_DB:-payments_sqltest}
N=${CONC_SESSIONS:-16}
export PGUSER=${PGUSER:-postgres}
tag=$(date +%s%N)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

su() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
app() { PGUSER=app PGPASSWORD=${APP_PASSWORD:-app} psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
fp() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

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

# race NAME SQL: run SQL in N app sessions at once.  In SQL, :i is the
# session's number (1..N).  Each session's output: $tmp/NAME.out.I, errors:
# $tmp/NAME.err.I.  Prints all outputs, one per line, sorted.
race() {
    local name=$1 sql=$2 gate=$((RANDOM * 2 + 100000)) i
    su -c "SELECT pg_advisory_lock($gate)" \
       -c "DO \$\$ BEGIN
             FOR i IN 1..2000 LOOP   -- at most ~20 s
                 EXIT WHEN (SELECT count(*) FROM pg_locks
                             WHERE locktype = 'advisory' AND objid = $gate AND NOT granted) >= $N;
                 PERFORM pg_sleep(0.01);
             END LOOP;
           END \$\$" \
       -c "SELECT pg_advisory_unlock($gate)" >/dev/null &
    local holder=$!
    until [ "$(su -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $gate AND granted")" = 1 ]; do
        sleep 0.01
    done
    local pids=()
    for i in $(seq 1 "$N"); do
        printf 'DO $$ BEGIN PERFORM pg_advisory_lock_shared(%s); END $$;\n%s\n' "$gate" "$sql" \
            | app -v i="$i" >"$tmp/$name.out.$i" 2>"$tmp/$name.err.$i" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i"; done
    wait "$holder"
    cat "$tmp/$name".out.* | sort
}
errors_of() { cat "$tmp/$1".err.* | head -5; }
count_of() { grep -cx "$2" <<<"$1"; }

echo "# $N sessions per race, tag $tag"

# 1. checkout_begin: one key, N sessions at once -------------------------------
key="race-$tag"
out=$(race begin "SELECT result FROM checkout_begin('$key', '$(fp body)', 'race-buyer-$tag', 'seller', 5000, 'EUR', 'trusted', '30 s', '24 h');")
check "checkout_begin race: no error leaks" "$(errors_of begin)" ""
check "checkout_begin race: exactly one new" "$(count_of "$out" new)" 1
check "checkout_begin race: all others in_progress" "$(count_of "$out" in_progress)" $((N - 1))
check "checkout_begin race: exactly one order" \
    "$(su -c "SELECT count(*) FROM orders WHERE buyer_id = 'race-buyer-$tag'")" 1
check "checkout_begin race: the key names that order" \
    "$(su -c "SELECT count(*) FROM idempotency_keys k JOIN orders o ON o.id = k.order_id WHERE k.key = '$key' AND o.buyer_id = 'race-buyer-$tag'")" 1

# 2. checkout_begin: a stale lock, N retries at once --------------------------
su -c "UPDATE idempotency_keys SET locked_at = now() - interval '1 minute' WHERE key = '$key'"
out=$(race recover "SELECT result FROM checkout_begin('$key', '$(fp body)', 'race-buyer-$tag', 'seller', 5000, 'EUR', 'trusted', '30 s', '24 h');")
check "stale-lock race: no error leaks" "$(errors_of recover)" ""
check "stale-lock race: exactly one recover" "$(count_of "$out" recover)" 1
check "stale-lock race: all others in_progress" "$(count_of "$out" in_progress)" $((N - 1))
check "stale-lock race: still one order" \
    "$(su -c "SELECT count(*) FROM orders WHERE buyer_id = 'race-buyer-$tag'")" 1

# 3. checkout_begin: an expired completed key, N new requests at once ---------
IFS='|' read -r oid tok <<<"$(su -c "SELECT order_id, lock_token FROM idempotency_keys WHERE key = '$key'")"
check "the recovered key can be finished with its token" \
    "$(su -c "SELECT result || ':' || status FROM checkout_finish('$oid', '$key', '$tok', 'declined', NULL, 0)")" "finished:FAILED"
su -c "UPDATE idempotency_keys SET completed_at = now() - interval '2 days' WHERE key = '$key'"
out=$(race expired "SELECT result FROM checkout_begin('$key', '$(fp body2)', 'race-buyer-$tag', 'seller', 700, 'EUR', 'trusted', '30 s', '24 h');")
check "expired-key race: no error leaks" "$(errors_of expired)" ""
check "expired-key race: exactly one new" "$(count_of "$out" new)" 1
check "expired-key race: all others in_progress" "$(count_of "$out" in_progress)" $((N - 1))
check "expired-key race: one new order beside the old one" \
    "$(su -c "SELECT string_agg(status || ':' || amount_cents, ',' ORDER BY amount_cents) FROM orders WHERE buyer_id = 'race-buyer-$tag'")" \
    "PROCESSING:700,FAILED:5000"

# 4. webhook_apply: one event delivered N times at once ---------------------
oid=$(su -c "SELECT id FROM orders WHERE buyer_id = 'race-buyer-$tag' AND status = 'PROCESSING'")
out=$(race webhook "SELECT result FROM webhook_apply('evt-$tag', '$oid', 'PAID', '{\"event_id\":\"evt-$tag\"}');")
check "webhook race: no error leaks" "$(errors_of webhook)" ""
check "webhook race: exactly one applied" "$(count_of "$out" applied)" 1
check "webhook race: all others duplicate" "$(count_of "$out" duplicate)" $((N - 1))
check "webhook race: one event recorded" "$(su -c "SELECT count(*) FROM webhook_events WHERE event_id = 'evt-$tag'")" 1
check "webhook race: one payment transaction" \
    "$(su -c "SELECT count(*) FROM ledger_transactions WHERE order_id = '$oid'")" 1
check "webhook race: the order is PAID" "$(su -c "SELECT status FROM orders WHERE id = '$oid'")" PAID

# 5. webhook_apply: N different events for one PENDING_PAYMENT order --------
oid=$(su -c "INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
             VALUES ('race-pend-$tag', 's', 300, 'EUR', 'trusted') RETURNING id" | head -1)
su -c "UPDATE orders SET status = 'PENDING_PAYMENT' WHERE id = '$oid'"
out=$(race events "SELECT result || ':' || conflict FROM webhook_apply('evt-$tag-' || :i, '$oid', 'PAID', '{}');")
check "many-events race: no error leaks" "$(errors_of events)" ""
check "many-events race: exactly one applied" "$(count_of "$out" applied:false)" 1
check "many-events race: the others not_applied, no conflict" "$(count_of "$out" not_applied:false)" $((N - 1))
check "many-events race: one payment transaction" \
    "$(su -c "SELECT count(*) FROM ledger_transactions WHERE order_id = '$oid'")" 1
check "many-events race: every event recorded, one applied" \
    "$(su -c "SELECT count(*) || '/' || count(*) FILTER (WHERE applied) FROM webhook_events WHERE order_id = '$oid'")" "$N/1"

# 6. checkout_finish racing webhooks for the same order ---------------------
fkey="race-fin-$tag"
IFS='|' read -r oid tok <<<"$(su -c "SELECT order_id, lock_token FROM checkout_begin('$fkey', '$(fp fin)', 'race-fin-$tag', 's', 900, 'EUR', 'trusted', '30 s', '24 h')")"
out=$(race finish "SELECT CASE WHEN :i = 1
                      THEN (SELECT 'finish:' || status FROM checkout_finish('$oid', '$fkey', '$tok', 'succeeded', 'ch_$tag', 10000))
                      ELSE (SELECT 'webhook:' || result FROM webhook_apply('fin-evt-$tag-' || :i, '$oid', 'PAID', '{}'))
                    END;")
check "finish-vs-webhook race: no error leaks" "$(errors_of finish)" ""
check "finish-vs-webhook race: finish reports PAID" "$(count_of "$out" finish:PAID)" 1
check "finish-vs-webhook race: at most one webhook applied" \
    "$(( $(count_of "$out" webhook:applied) <= 1 ))" 1
check "finish-vs-webhook race: one payment transaction" \
    "$(su -c "SELECT count(*) FROM ledger_transactions WHERE order_id = '$oid'")" 1
check "finish-vs-webhook race: the key is completed with a PAID response" \
    "$(su -c "SELECT state || ':' || (response_body::json ->> 'status') FROM idempotency_keys WHERE key = '$fkey'")" \
    "completed:PAID"

# 7. checkout_claim_stale: N housekeepers, each key handed out once ------------
su -c "DO \$\$
       DECLARE o uuid;
       BEGIN
           FOR i IN 1..20 LOOP
               INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
               VALUES ('race-hk-$tag', 's', 100 + i, 'EUR', 'trusted') RETURNING id INTO o;
               INSERT INTO idempotency_keys (key, fingerprint, state, order_id, locked_at, lock_token)
               VALUES ('hk-$tag-' || i, repeat('a', 64), 'in_progress', o, now() - interval '1 hour', gen_random_uuid());
           END LOOP;
       END \$\$"
out=$(race claim "SELECT key || ' ' || lock_token FROM checkout_claim_stale('30 s', 3) WHERE key LIKE 'hk-$tag-%';")
check "claim_stale race: no error leaks" "$(errors_of claim)" ""
check "claim_stale race: all 20 stale keys claimed" "$(grep -c . <<<"$out")" 20
check "claim_stale race: none claimed twice" "$(cut -d' ' -f1 <<<"$out" | sort -u | grep -c .)" 20
check "claim_stale race: each claim's token is the key's token now" \
    "$(su -c "SELECT count(*) FROM idempotency_keys WHERE key || ' ' || lock_token IN ($(sed "s/.*/'&'/" <<<"$out" | paste -sd,))")" 20

# 8. SKIP LOCKED: a key locked by another session is skipped, not waited for --
su -c "DO \$\$
       DECLARE o uuid;
       BEGIN
           FOR i IN 1..2 LOOP
               INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
               VALUES ('skip-$tag', 's', 100, 'EUR', 'trusted') RETURNING id INTO o;
               INSERT INTO idempotency_keys (key, fingerprint, state, order_id, locked_at, lock_token)
               VALUES ('skip-$tag-' || i, repeat('a', 64), 'in_progress', o, now() - interval '1 hour', gen_random_uuid());
               INSERT INTO idempotency_keys (key, fingerprint, state, order_id, created_at, completed_at,
                                             response_status, response_body)
               VALUES ('purge-$tag-' || i, repeat('a', 64), 'completed', o, now() - interval '3 days',
                       now() - interval '3 days', 201, '{}');
           END LOOP;
       END \$\$"
su -c "BEGIN" \
   -c "SELECT 1 FROM idempotency_keys WHERE key IN ('skip-$tag-1', 'purge-$tag-1') FOR UPDATE" \
   -c "SELECT pg_sleep(4) /* skip-locked-holder-$tag */" -c "COMMIT" >/dev/null &
holder=$!
until [ "$(su -c "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%skip-locked-holder-$tag%' AND state = 'active' AND pid <> pg_backend_pid()")" = 1 ]; do
    sleep 0.02
done
start=$(date +%s%N)
got=$(app -c "SET lock_timeout = '1s'" -c "SELECT key FROM checkout_claim_stale('30 s', 100) WHERE key LIKE 'skip-$tag-%'" 2>&1)
check "claim_stale skips a key another session holds (SKIP LOCKED)" "$got" "skip-$tag-2"
app -c "SET lock_timeout = '1s'" -c "SELECT purge_expired_idempotency_keys('1 day', 100)" >/dev/null 2>"$tmp/purge.err"
check "purge skips a key another session holds, without error" \
    "$(cat "$tmp/purge.err")$(su -c "SELECT string_agg(key, ',' ORDER BY key) FROM idempotency_keys WHERE key LIKE 'purge-$tag-%'")" \
    "purge-$tag-1"
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "neither waited for the lock (${elapsed_ms} ms)" "$(( elapsed_ms < 2000 ))" 1
wait "$holder"
check "once released, the skipped key is claimed" \
    "$(app -c "SELECT key FROM checkout_claim_stale('30 s', 100) WHERE key LIKE 'skip-$tag-%'")" "skip-$tag-1"

# 9. Finishes with the old and the new lock token at once ----------------------
# A worker lost its lock (a recover took the key over) but comes back with
# the provider's answer while the new holder finishes: only the holder's
# finish may move the order.  Two sessions, then N.
tokens_race() {   # name sessions
    local name=$1 tkey="race-tok-$1-$tag" oid tok_old tok_new
    IFS='|' read -r oid tok_old <<<"$(su -c "SELECT order_id, lock_token FROM checkout_begin('$tkey', '$(fp tok)', 'race-tok-$tag', 's', 600, 'EUR', 'trusted', '30 s', '24 h')")"
    su -c "UPDATE idempotency_keys SET locked_at = now() - interval '1 minute' WHERE key = '$tkey'"
    IFS='|' read -r res tok_new <<<"$(su -c "SELECT result, lock_token FROM checkout_begin('$tkey', '$(fp tok)', 'race-tok-$tag', 's', 600, 'EUR', 'trusted', '30 s', '24 h')")"
    check "$name: the new worker recovered the key with a new token" "$res:$([ "$tok_new" != "$tok_old" ] && echo new)" "recover:new"
    local saved=$N
    N=$2
    out=$(race "$name" "SELECT CASE WHEN :i % 2 = 1 THEN 'old:' ELSE 'new:' END || result
                          FROM checkout_finish('$oid', '$tkey',
                                               CASE WHEN :i % 2 = 1 THEN '$tok_old' ELSE '$tok_new' END::uuid,
                                               CASE WHEN :i % 2 = 1 THEN 'succeeded' ELSE 'declined' END,
                                               CASE WHEN :i % 2 = 1 THEN 'ch_old' ELSE 'ch_new' END, 10000);")
    N=$saved
    check "$name: no error leaks" "$(errors_of "$name")" ""
    check "$name: only the token holder's finish moved the order" \
        "$(count_of "$out" new:finished)/$(count_of "$out" old:finished)" "1/0"
    check "$name: the old token's finishes were stale, or replays once the holder had finished" \
        "$(( $(count_of "$out" old:stale) + $(count_of "$out" old:replay) ))" $(($2 / 2))
    check "$name: the order is the holder's (FAILED declined, its charge id, no payment)" \
        "$(su -c "SELECT o.status || ':' || o.failure_reason || ':' || o.provider_charge_id || ':'
                         || (SELECT count(*) FROM ledger_transactions t WHERE t.order_id = o.id)
                    FROM orders o WHERE o.id = '$oid'")" "FAILED:declined:ch_new:0"
    check "$name: the key holds the holder's answer" \
        "$(su -c "SELECT state || ':' || (response_body::json ->> 'failure_reason') FROM idempotency_keys WHERE key = '$tkey'")" \
        "completed:declined"
}
tokens_race tokens2 2
tokens_race tokensN "$N"

# 10. checkout_finish (unavailable) racing PAID webhooks for the same order ----
# Either a webhook got there first (PAID, with its payment) or the finish
# did (FAILED provider_unavailable with a pending reversal, and every later
# PAID event says reversal = true).  Never a FAILED order whose money the
# provider holds without a reversal.  Run twice: all at once (the webhooks
# tend to win), and with the webhooks 50 ms late (the finish tends to win).
unavail_race() {   # name webhook_delay_seconds
    local name=$1 ukey="race-unavail-$1-$tag" oid tok state want
    IFS='|' read -r oid tok <<<"$(su -c "SELECT order_id, lock_token FROM checkout_begin('$ukey', '$(fp unavail)', 'race-unavail-$tag', 's', 950, 'EUR', 'untrusted', '30 s', '24 h')")"
    out=$(race "$name" "SELECT CASE WHEN :i = 1
                           THEN (SELECT 'finish:' || status || ':' || reversal FROM checkout_finish('$oid', '$ukey', '$tok', 'unavailable', NULL, 10000))
                           ELSE (SELECT 'webhook:' || result || ':' || reversal
                                   FROM pg_sleep($2), webhook_apply('$name-evt-$tag-' || :i, '$oid', 'PAID', '{}'))
                         END;")
    check "$name: no error leaks" "$(errors_of "$name")" ""
    state=$(su -c "SELECT o.status || ':' || (SELECT count(*) FROM ledger_transactions t WHERE t.order_id = o.id) || ':'
                          || coalesce((SELECT v.status FROM order_reversals v WHERE v.order_id = o.id), 'none')
                     FROM orders o WHERE o.id = '$oid'")
    case $state in   # what the finish and the N - 1 webhooks must have said
        PAID:1:none)      want="finish:PAID:false applied:1 not_applied-with-reversal:0" ;;
        FAILED:0:pending) want="finish:FAILED:true applied:0 not_applied-with-reversal:$((N - 1))" ;;
        *)                want="(no valid end state)" ;;
    esac
    check "$name: PAID with its payment, or FAILED with a pending reversal ($state)" \
        "$(grep -cxE 'PAID:1:none|FAILED:0:pending' <<<"$state")" 1
    check "$name: the finish and every webhook say so" \
        "$(grep '^finish:' <<<"$out") applied:$(count_of "$out" webhook:applied:false) not_applied-with-reversal:$(count_of "$out" webhook:not_applied:true)" \
        "$want"
    check "$name: the key is completed with that state" \
        "$(su -c "SELECT state || ':' || (response_body::json ->> 'status') FROM idempotency_keys WHERE key = '$ukey'")" \
        "completed:${state%%:*}"
}
unavail_race finish-vs-paid 0
unavail_race finish-vs-late-paid 0.05

# 11. reversal_settle: canceled and refunded answers for one reversal at once --
# (replies to cancels sent twice cross): the capture happened, so it ends
# refunded, with exactly one late capture and one refund, whatever the order.
oid=$(su -c "INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
             VALUES ('race-settle-$tag', 's', 4321, 'EUR', 'trusted') RETURNING id" | head -1)
su -c "UPDATE orders SET status = 'FAILED', failure_reason = 'provider_unavailable' WHERE id = '$oid'" \
   -c "INSERT INTO order_reversals (order_id, amount_cents, currency) VALUES ('$oid', 4321, 'EUR')"
out=$(race settle "SELECT CASE WHEN :i % 2 = 1 THEN 'c:' || reversal_settle('$oid', 'canceled')
                                          ELSE 'r:' || reversal_settle('$oid', 'refunded') END;")
check "settle race: no error leaks" "$(errors_of settle)" ""
check "settle race: every refunded answer reports refunded, every canceled one canceled or (after) refunded" \
    "$(count_of "$out" r:refunded)/$(( $(count_of "$out" c:canceled) + $(count_of "$out" c:refunded) ))" "$((N / 2))/$(((N + 1) / 2))"
check "settle race: the reversal ends refunded" "$(su -c "SELECT status FROM order_reversals WHERE order_id = '$oid'")" refunded
check "settle race: one late capture and one refund" \
    "$(su -c "SELECT string_agg(kind, ',' ORDER BY kind) FROM ledger_transactions WHERE order_id = '$oid'")" "late_capture,refund"

# 12. reversals_due: N housekeepers, each pending reversal handed out once -----
# (pending reversals left by earlier runs on this database would compete for
# the batches: cancel them first)
su -c "UPDATE order_reversals SET status = 'canceled' WHERE status = 'pending'"
su -c "DO \$\$
       DECLARE o uuid;
       BEGIN
           FOR i IN 1..20 LOOP
               INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
               VALUES ('race-rev-$tag', 's', 200 + i, 'EUR', 'trusted') RETURNING id INTO o;
               UPDATE orders SET status = 'FAILED', failure_reason = 'provider_unavailable' WHERE id = o;
               INSERT INTO order_reversals (order_id, amount_cents, currency) VALUES (o, 200 + i, 'EUR');
           END LOOP;
           SET LOCAL session_replication_role = replica;   -- opened two hours ago
           UPDATE order_reversals SET created_at = now() - interval '2 hours'
            WHERE order_id IN (SELECT id FROM orders WHERE buyer_id = 'race-rev-$tag');
       END \$\$"
out=$(race due "SELECT r.order_id FROM reversals_due('1 hour', 3) r JOIN orders o ON o.id = r.order_id
                 WHERE o.buyer_id = 'race-rev-$tag';")
check "reversals_due race: no error leaks" "$(errors_of due)" ""
check "reversals_due race: all 20 due reversals handed out" "$(grep -c . <<<"$out")" 20
check "reversals_due race: none twice" "$(sort -u <<<"$out" | grep -c .)" 20
check "reversals_due race: each tried once" \
    "$(su -c "SELECT string_agg(DISTINCT attempts::text, ',') FROM order_reversals v JOIN orders o ON o.id = v.order_id
               WHERE o.buyer_id = 'race-rev-$tag'")" 1

# 13. The deferred checks at a real COMMIT -------------------------------------
bad=$(su -c "SELECT gen_random_uuid()")
got=$(su 2>&1 <<SQL
BEGIN;
INSERT INTO orders (id, buyer_id, seller_id, amount_cents, currency, buyer_trust)
VALUES ('$bad', 'commit-$tag', 's', 5000, 'EUR', 'trusted');
UPDATE orders SET status = 'PAID' WHERE id = '$bad';
INSERT INTO ledger_transactions (id, order_id, kind) VALUES ('$bad', '$bad', 'payment');
INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
VALUES ('$bad', 'cash', 'DEBIT', 5000, 'EUR'), ('$bad', 'seller_payable', 'CREDIT', 4999, 'EUR');
SELECT 'statements-done';
COMMIT;
SQL
)
check "an unbalanced ledger transaction passes its statements" "$(grep -c '^statements-done$' <<<"$got")" 1
check "and COMMIT refuses it" "$(grep -c "ERROR:  ledger transaction $bad does not balance" <<<"$got")" 1
check "nothing of it was committed" "$(su -c "SELECT count(*) FROM orders WHERE id = '$bad'")" 0
got=$(su 2>&1 <<SQL
BEGIN;
INSERT INTO orders (id, buyer_id, seller_id, amount_cents, currency, buyer_trust)
VALUES ('$bad', 'commit-$tag', 's', 5000, 'EUR', 'trusted');
UPDATE orders SET status = 'PAID' WHERE id = '$bad';
COMMIT;
SQL
)
check "COMMIT refuses a PAID order without its payment" \
    "$(grep -c "ERROR:  order $bad is PAID without a payment ledger transaction" <<<"$got")" 1
got=$(su 2>&1 <<SQL
BEGIN;
INSERT INTO orders (id, buyer_id, seller_id, amount_cents, currency, buyer_trust)
VALUES ('$bad', 'commit-$tag', 's', 5000, 'EUR', 'trusted');
UPDATE orders SET status = 'PAID' WHERE id = '$bad';
INSERT INTO ledger_transactions (id, order_id, kind) VALUES ('$bad', '$bad', 'payment');
INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
VALUES ('$bad', 'cash', 'DEBIT', 5000, 'EUR'), ('$bad', 'seller_payable', 'CREDIT', 5000, 'EUR');
COMMIT;
SQL
)
check "a balanced payment commits" "$got$(su -c "SELECT status FROM orders WHERE id = '$bad'")" "PAID"
check "README query on it: cash DEBIT, seller_payable CREDIT" \
    "$(app -c "SELECT e.account, e.direction, e.amount_cents, e.currency FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.txn_id WHERE t.order_id = '$bad' ORDER BY e.direction DESC" | tr '\n' ' ')" \
    "cash|DEBIT|5000|EUR seller_payable|CREDIT|5000|EUR "
rev=$(su -c "SELECT gen_random_uuid()")
got=$(su 2>&1 <<SQL
BEGIN;
INSERT INTO orders (id, buyer_id, seller_id, amount_cents, currency, buyer_trust)
VALUES ('$rev', 'commit-$tag', 's', 5000, 'EUR', 'trusted');
UPDATE orders SET status = 'FAILED', failure_reason = 'provider_unavailable' WHERE id = '$rev';
INSERT INTO order_reversals (order_id, amount_cents, currency) VALUES ('$rev', 5000, 'EUR');
UPDATE order_reversals SET status = 'refunded' WHERE order_id = '$rev';
SELECT 'statements-done';
COMMIT;
SQL
)
check "a reversal refunded without its ledger passes its statements" "$(grep -c '^statements-done$' <<<"$got")" 1
check "and COMMIT refuses it" \
    "$(grep -c "ERROR:  reversal of order $rev is refunded without its late_capture and refund ledger transactions" <<<"$got")" 1
got=$(su 2>&1 <<SQL
BEGIN;
INSERT INTO ledger_transactions (id, order_id, kind) VALUES ('$rev', '$bad', 'late_capture');
INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
VALUES ('$rev', 'cash', 'DEBIT', 5000, 'EUR'), ('$rev', 'refunds_payable', 'CREDIT', 5000, 'EUR');
COMMIT;
SQL
)
check "COMMIT refuses a late capture for a PAID order" \
    "$(grep -c "ERROR:  late_capture transaction $rev is for an order that is PAID, not FAILED" <<<"$got")" 1
ikey="app-commit-$tag"
got=$(app 2>&1 <<SQL
SELECT order_id, lock_token FROM checkout_begin('$ikey', '$(fp commit)', 'commit-$tag', 's', 777, 'EUR', 'untrusted', '30 s', '24 h') \\gset
SELECT 'finish:' || result || ':' || status || ':' || reversal FROM checkout_finish(:'order_id', '$ikey', :'lock_token', 'unavailable', E'ch\\tbad', 10000);
SELECT 'settle:' || reversal_settle(:'order_id', 'refunded');
SQL
)
check "app: an invalid charge id is dropped with a WARNING, and the finish commits" \
    "$(grep -c "WARNING:  checkout_finish: order .*: dropping a charge id that is not 1..255 visible ASCII characters" <<<"$got"):$(grep '^finish:' <<<"$got")" \
    "1:finish:finished:FAILED:true"
check "app: a refunded reversal commits with its ledger (the deferred checks run as app)" \
    "$(grep '^settle:' <<<"$got"):$(su -c "SELECT string_agg(t.kind, ',' ORDER BY t.created_at) FROM ledger_transactions t JOIN orders o ON o.id = t.order_id WHERE o.buyer_id = 'commit-$tag' AND o.status = 'FAILED' AND o.provider_charge_id IS NULL")" \
    "settle:refunded:late_capture,refund"

# 14. Fresh sessions -----------------------------------------------------------
check "a fresh app session cannot create temporary tables" \
    "$(app -c "CREATE TEMP TABLE evil (a int)" 2>&1 | grep -c 'permission denied to create temporary tables')" 1
check "app cannot SET ROLE paymentsd_owner" \
    "$(app -c "SET ROLE paymentsd_owner" 2>&1 | grep -c 'permission denied to set role "paymentsd_owner"')" 1
check "nobody logs in as paymentsd_owner (NOLOGIN)" \
    "$(PGUSER=paymentsd_owner psql -X -q -At -d "$DB" -c "SELECT 1" 2>&1 | grep -c 'role "paymentsd_owner" is not permitted to log in')" 1

# 15. Batches (group commit) ---------------------------------------------------
# N sessions each send ONE batch over the same 8 keys (or orders), half of
# them in ascending, half in descending order.  Locking the items' keys in
# ordinal order would deadlock such batches (40P01); the batch functions take
# their locks sorted (keys, then orders) whatever the items' order, so they
# queue instead.
bfp=$(fp batch)
begin_batch_sql() {   # key prefix: 8 new keys, ascending for even sessions, descending for odd
    cat <<SQL
SELECT b.result FROM checkout_begin_many(
    ARRAY(SELECT '$1-' || g FROM generate_series(1, 8) g ORDER BY CASE WHEN :i % 2 = 0 THEN g ELSE -g END),
    array_fill('$bfp'::text, ARRAY[8]), array_fill('batch-$tag'::text, ARRAY[8]), array_fill('s'::text, ARRAY[8]),
    array_fill(1500::bigint, ARRAY[8]), array_fill('EUR'::text, ARRAY[8]), array_fill('trusted'::text, ARRAY[8]),
    array_fill('30 s'::interval, ARRAY[8]), array_fill('24 h'::interval, ARRAY[8])) b;
SQL
}
# finish_batch_sql PREFIX: finish (succeeded) the 8 keys, ascending by key for
# even sessions, descending for odd ones.
finish_batch_sql() {
    cat <<SQL
SELECT f.result
  FROM (SELECT array_agg(order_id ORDER BY r) AS o, array_agg(key ORDER BY r) AS k,
               array_agg(lock_token ORDER BY r) AS t
          FROM (SELECT key, order_id, lock_token,
                       CASE WHEN :i % 2 = 0 THEN row_number() OVER (ORDER BY key)
                            ELSE row_number() OVER (ORDER BY key DESC) END AS r
                  FROM idempotency_keys WHERE key LIKE '$1-%') x) a,
       checkout_finish_many(a.o, a.k, a.t, array_fill('succeeded'::text, ARRAY[8]),
                            array_fill('ch_batch'::text, ARRAY[8]), array_fill(10000::bigint, ARRAY[8])) f;
SQL
}
for round in 1 2 3; do
    out=$(race "batch-begin-$round" "$(begin_batch_sql "bb$round-$tag")")
    check "begin batches over 8 keys in opposite orders (round $round): no error, no deadlock" \
        "$(errors_of "batch-begin-$round")" ""
    check "begin batches (round $round): each key new exactly once, in_progress for every other session" \
        "$(count_of "$out" new)/$(count_of "$out" in_progress)" "8/$((8 * (N - 1)))"
done
check "begin batches: one order per key" \
    "$(su -c "SELECT count(*) || '/' || count(DISTINCT k.key) FROM idempotency_keys k JOIN orders o ON o.id = k.order_id
               WHERE k.key ~ '^bb[123]-$tag-' AND o.buyer_id = 'batch-$tag'")" "24/24"

out=$(race batch-finish "$(finish_batch_sql "bb1-$tag")")
check "finish batches over 8 keys in opposite orders: no error, no deadlock" "$(errors_of batch-finish)" ""
check "finish batches: each key finished exactly once, replayed for every other session" \
    "$(count_of "$out" finished)/$(count_of "$out" replay)" "8/$((8 * (N - 1)))"
check "finish batches: 8 PAID orders, one payment each" \
    "$(su -c "SELECT count(*) || ':' || string_agg(DISTINCT o.status, ',') || ':'
                     || sum((SELECT count(*) FROM ledger_transactions t WHERE t.order_id = o.id))
                FROM idempotency_keys k JOIN orders o ON o.id = k.order_id WHERE k.key LIKE 'bb1-$tag-%'")" "8:PAID:8"

# Finish batches (keys ascending) against webhook batches paying the same
# orders (order ids descending): both lock orders sorted, after any keys.
out=$(race batch-finish-webhook "SELECT CASE WHEN :i % 2 = 0 THEN (SELECT string_agg(result, ' ') FROM ($(finish_batch_sql "bb2-$tag" | sed 's/;$//')) r)
       ELSE (SELECT string_agg(w.result, ' ')
               FROM (SELECT array_agg(order_id ORDER BY order_id DESC) AS o FROM idempotency_keys WHERE key LIKE 'bb2-$tag-%') a,
                    webhook_apply_many(ARRAY(SELECT 'bw-$tag-' || :i || '-' || g FROM generate_series(1, 8) g), a.o,
                                       array_fill('PAID'::text, ARRAY[8]), array_fill('{}'::text, ARRAY[8])) w)
       END;")
check "finish batches against webhook batches on the same orders: no error, no deadlock" \
    "$(errors_of batch-finish-webhook)" ""
check "finish against webhook batches: 8 PAID orders, one payment each, keys completed" \
    "$(su -c "SELECT count(*) || ':' || string_agg(DISTINCT o.status, ',') || ':' || string_agg(DISTINCT k.state, ',') || ':'
                     || sum((SELECT count(*) FROM ledger_transactions t WHERE t.order_id = o.id))
                FROM idempotency_keys k JOIN orders o ON o.id = k.order_id WHERE k.key LIKE 'bb2-$tag-%'")" "8:PAID:completed:8"

# A batch whose COMMIT fails: every item fails, nothing of any item stays.
# A deferred constraint trigger (installed for this test, then dropped)
# refuses orders of a marker amount at COMMIT, as the ledger checks would
# refuse a bad payment.
mark=424242
su -c "SELECT order_id FROM checkout_begin('cf-replay-$tag', '$bfp', 'cf-$tag', 's', 700, 'EUR', 'trusted', '30 s', '24 h')" >/dev/null
su -c "SELECT f.status FROM idempotency_keys k, checkout_finish(k.order_id, k.key, k.lock_token, 'declined', NULL, 0) f
        WHERE k.key = 'cf-replay-$tag'" >/dev/null
su -c "SELECT count(*) FROM unnest(ARRAY[700, $mark]) a,
                            checkout_begin('cf-fin-' || a || '-$tag', '$bfp', 'cf-$tag', 's', a, 'EUR', 'trusted', '30 s', '24 h')" >/dev/null
su <<SQL
CREATE FUNCTION commit_fail_marker() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    RAISE EXCEPTION 'commit-fail marker: order %', NEW.id USING ERRCODE = 'check_violation';
END
\$\$;
CREATE CONSTRAINT TRIGGER commit_fail_marker AFTER INSERT OR UPDATE ON orders
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.amount_cents = $mark)
    EXECUTE FUNCTION commit_fail_marker();
SQL
got=$(app 2>&1 <<SQL
SELECT 'row:' || ord || ':' || result FROM checkout_begin_many(
    ARRAY['cf-new-1-$tag', 'cf-replay-$tag', 'cf-new-2-$tag'], array_fill('$bfp'::text, ARRAY[3]),
    array_fill('cf-$tag'::text, ARRAY[3]), array_fill('s'::text, ARRAY[3]), ARRAY[700, 700, $mark]::bigint[],
    array_fill('EUR'::text, ARRAY[3]), array_fill('trusted'::text, ARRAY[3]),
    array_fill('30 s'::interval, ARRAY[3]), array_fill('24 h'::interval, ARRAY[3]));
SQL
)
check "regression: a begin batch whose COMMIT fails returns no row, only the error" \
    "$(grep -c '^row:' <<<"$got"):$(grep -c 'ERROR:  commit-fail marker' <<<"$got")" "0:1"
check "and stores nothing of any item (keys, orders)" \
    "$(su -c "SELECT (SELECT count(*) FROM idempotency_keys WHERE key LIKE 'cf-new-%-$tag') || ':'
                     || (SELECT count(*) FROM orders WHERE buyer_id = 'cf-$tag')")" "0:3"
finish_cf="SELECT 'row:' || f.ord || ':' || f.result || ':' || f.status
  FROM (SELECT array_agg(order_id ORDER BY key) AS o, array_agg(key ORDER BY key) AS k, array_agg(lock_token ORDER BY key) AS t
          FROM idempotency_keys WHERE key LIKE 'cf-fin-%-$tag') a,
       checkout_finish_many(a.o, a.k, a.t, ARRAY['succeeded', 'succeeded'], ARRAY['ch_cf1', 'ch_cf2'], ARRAY[10000, 10000]::bigint[]) f;"
got=$(app -c "$finish_cf" 2>&1)
check "regression: a finish batch whose COMMIT fails returns no row, only the error" \
    "$(grep -c '^row:' <<<"$got"):$(grep -c 'ERROR:  commit-fail marker' <<<"$got")" "0:1"
check "and no item finished: keys in progress, orders PROCESSING, no payment" \
    "$(su -c "SELECT string_agg(DISTINCT k.state || ':' || o.status, ',') || ':'
                     || (SELECT count(*) FROM ledger_transactions t JOIN orders x ON x.id = t.order_id WHERE x.buyer_id = 'cf-$tag')
                FROM idempotency_keys k JOIN orders o ON o.id = k.order_id WHERE k.key LIKE 'cf-fin-%-$tag'")" \
    "in_progress:PROCESSING:0"
su -c "DROP TRIGGER commit_fail_marker ON orders" -c "DROP FUNCTION commit_fail_marker()"
check "the worker's retry of that batch finishes both items (their tokens still hold)" \
    "$(app -c "$finish_cf" 2>&1 | tr '\n' ' ')" "row:1:finished:PAID row:2:finished:PAID "

echo "1..$n"
if [ "$failed" -ne 0 ]; then
    echo "# FAILED $failed of $n concurrency/commit tests"
    exit 1
fi
echo "# all $n concurrency/commit tests passed"
