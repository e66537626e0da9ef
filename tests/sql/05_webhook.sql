-- webhook_apply: not_found, duplicate, applied (PAID with ledger / FAILED),
-- not_applied with and without conflict, input validation.  (Racing
-- deliveries of one event: concurrency.sh.)
BEGIN;
\ir helpers.psql
SELECT plan(42);

CREATE TEMP TABLE o AS SELECT
    pg_temp.mk_order()                  AS processing,
    pg_temp.mk_order('PENDING_PAYMENT') AS pending,
    pg_temp.mk_order()                  AS processing2,
    pg_temp.mk_order('PENDING_PAYMENT') AS pending2,
    pg_temp.mk_order('PAID')            AS paid,
    pg_temp.mk_order('FAILED')          AS failed;

-- not_found -----------------------------------------------------------------
SELECT results_eq($$ SELECT * FROM webhook_apply('evt-nf', gen_random_uuid(), 'PAID', '{"x":1}') $$,
                  $$ VALUES ('not_found', NULL::text, false) $$, 'unknown order: not_found');
SELECT is((SELECT count(*) FROM webhook_events WHERE event_id = 'evt-nf'), 0::bigint,
          'not_found records nothing (so the provider retries)');

-- applied: PAID on PROCESSING --------------------------------------------------
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-1', %L, 'PAID', '{"event_id":"evt-1"}') $$, processing),
                  $$ VALUES ('applied', 'PAID', false) $$, 'PAID on a PROCESSING order: applied')
  FROM o;
SELECT results_eq(format($$ SELECT status, failure_reason FROM orders WHERE id = %L $$, processing),
                  $$ VALUES ('PAID', NULL::text) $$, 'the order is PAID') FROM o;
SELECT results_eq(
    format($$ SELECT e.account, e.direction, e.amount_cents, e.currency::text
                FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.txn_id
               WHERE t.order_id = %L AND t.kind = 'payment' ORDER BY e.direction DESC $$, processing),
    $$ VALUES ('cash', 'DEBIT', 5000::bigint, 'EUR'), ('seller_payable', 'CREDIT', 5000::bigint, 'EUR') $$,
    'with its payment in the ledger') FROM o;
SELECT results_eq(format($$ SELECT order_id, outcome, payload, applied, received_at = now()
                              FROM webhook_events WHERE event_id = 'evt-1' $$),
                  format($$ VALUES (%L::uuid, 'PAID', '{"event_id":"evt-1"}', true, true) $$, processing),
                  'the event is recorded, applied, with its raw payload') FROM o;

-- duplicate -------------------------------------------------------------------
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-1', %L, 'PAID', '{"again":true}') $$, processing),
                  $$ VALUES ('duplicate', 'PAID', false) $$, 'the same event again: duplicate') FROM o;
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-1', %L, 'FAILED', '{}') $$, processing),
                  $$ VALUES ('duplicate', 'PAID', false) $$, 'the same event id with another outcome: duplicate') FROM o;
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-1', %L, 'FAILED', '{}') $$, pending2),
                  $$ VALUES ('duplicate', 'PENDING_PAYMENT', false) $$,
                  'the same event id for another order: duplicate') FROM o;
SELECT results_eq($$ SELECT * FROM webhook_apply('evt-1', gen_random_uuid(), 'PAID', '{}') $$,
                  $$ VALUES ('duplicate', NULL::text, false) $$,
                  'the same event id with an unknown order: duplicate, not not_found');
SELECT results_eq($$ SELECT count(*), min(payload) FROM webhook_events WHERE event_id = 'evt-1' $$,
                  $$ VALUES (1::bigint, '{"event_id":"evt-1"}') $$, 'duplicates recorded nothing');
SELECT results_eq(format($$ SELECT status FROM orders WHERE id = %L $$, pending2),
                  $$ VALUES ('PENDING_PAYMENT') $$, 'a duplicate changed no order') FROM o;
SELECT is((SELECT count(*) FROM ledger_transactions WHERE order_id = processing), 1::bigint,
          'duplicates wrote no second payment') FROM o;

-- applied: the other starting states and outcomes --------------------------
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-2', %L, 'PAID', '{}') $$, pending),
                  $$ VALUES ('applied', 'PAID', false) $$, 'PAID on a PENDING_PAYMENT order: applied') FROM o;
SELECT is((SELECT count(*) FROM ledger_transactions WHERE order_id = pending AND kind = 'payment'), 1::bigint,
          'with its payment') FROM o;
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-3', %L, 'FAILED', '{}') $$, processing2),
                  $$ VALUES ('applied', 'FAILED', false) $$, 'FAILED on a PROCESSING order: applied') FROM o;
SELECT results_eq(format($$ SELECT status, failure_reason FROM orders WHERE id = %L $$, processing2),
                  $$ VALUES ('FAILED', 'declined') $$, 'the order is FAILED, declined') FROM o;
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-4', %L, 'FAILED', '{}') $$, pending2),
                  $$ VALUES ('applied', 'FAILED', false) $$, 'FAILED on a PENDING_PAYMENT order: applied') FROM o;
SELECT results_eq(format($$ SELECT status, failure_reason FROM orders WHERE id = %L $$, pending2),
                  $$ VALUES ('FAILED', 'declined') $$, 'the order is FAILED, declined') FROM o;
SELECT is((SELECT count(*) FROM ledger_transactions WHERE order_id IN (processing2, pending2)), 0::bigint,
          'no ledger for a failed payment') FROM o;
SELECT is((SELECT applied FROM webhook_events WHERE event_id = 'evt-4'), true, 'the event is recorded applied');

-- not_applied ---------------------------------------------------------------
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-5', %L, 'PAID', '{}') $$, paid),
                  $$ VALUES ('not_applied', 'PAID', false) $$, 'PAID on a PAID order: not_applied, no conflict') FROM o;
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-6', %L, 'FAILED', '{}') $$, paid),
                  $$ VALUES ('not_applied', 'PAID', true) $$, 'FAILED on a PAID order: not_applied, conflict') FROM o;
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-7', %L, 'FAILED', '{}') $$, failed),
                  $$ VALUES ('not_applied', 'FAILED', false) $$, 'FAILED on a FAILED order: not_applied, no conflict') FROM o;
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-8', %L, 'PAID', '{}') $$, failed),
                  $$ VALUES ('not_applied', 'FAILED', true) $$, 'PAID on a FAILED order: not_applied, conflict') FROM o;
SELECT results_eq($$ SELECT event_id, applied, outcome FROM webhook_events
                     WHERE event_id IN ('evt-5', 'evt-6', 'evt-7', 'evt-8') ORDER BY 1 $$,
                  $$ VALUES ('evt-5', false, 'PAID'), ('evt-6', false, 'FAILED'),
                            ('evt-7', false, 'FAILED'), ('evt-8', false, 'PAID') $$,
                  'not_applied events are recorded with applied = false');
SELECT results_eq(format($$ SELECT status, failure_reason FROM orders WHERE id IN (%L, %L) ORDER BY status $$, failed, paid),
                  $$ VALUES ('FAILED', 'declined'), ('PAID', NULL) $$, 'final orders did not change') FROM o;
SELECT is((SELECT count(*) FROM ledger_transactions WHERE order_id IN (paid, failed)), 1::bigint,
          'still one payment for the PAID order, none for the FAILED one') FROM o;
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-5', %L, 'PAID', '{}') $$, paid),
                  $$ VALUES ('duplicate', 'PAID', false) $$, 'a not_applied event replayed: duplicate') FROM o;

-- Webhook events are append-only ----------------------------------------------
SELECT pg_temp.throws(q.sql, '42501', q.msg, q.msg)
  FROM (VALUES ($$ UPDATE webhook_events SET applied = NOT applied WHERE event_id = 'evt-1' $$,
                'webhook_events is append-only: UPDATE is not allowed'),
               ($$ DELETE FROM webhook_events WHERE event_id = 'evt-1' $$,
                'webhook_events is append-only: DELETE is not allowed'),
               ($$ TRUNCATE webhook_events $$,
                'webhook_events is append-only: TRUNCATE is not allowed')) AS q(sql, msg);

-- Validation ------------------------------------------------------------------
SELECT pg_temp.throws(format($$ SELECT * FROM webhook_apply(%s) $$, a.args), a.code, a.pat, a.why)
  FROM (VALUES
    ($$NULL, gen_random_uuid(), 'PAID', '{}'$$,            '22004', 'webhook_apply: no argument may be NULL', 'NULL event id'),
    ($$'e', NULL, 'PAID', '{}'$$,                          '22004', 'webhook_apply: no argument may be NULL', 'NULL order id'),
    ($$'e', gen_random_uuid(), NULL, '{}'$$,               '22004', 'webhook_apply: no argument may be NULL', 'NULL outcome'),
    ($$'e', gen_random_uuid(), 'PAID', NULL$$,             '22004', 'webhook_apply: no argument may be NULL', 'NULL payload'),
    ($$'', gen_random_uuid(), 'PAID', '{}'$$,              '22023', '%p_event_id must be 1..255%',            'empty event id'),
    ($$repeat('e', 256), gen_random_uuid(), 'PAID', '{}'$$, '22023', '%p_event_id must be 1..255%',           'event id of 256 characters'),
    ($$'e', gen_random_uuid(), 'paid', '{}'$$,             '22023', '%p_outcome must be PAID or FAILED%',     'lower-case outcome'),
    ($$'e', gen_random_uuid(), 'REFUNDED', '{}'$$,         '22023', '%p_outcome must be PAID or FAILED%',     'unknown outcome'))
    AS a(args, code, pat, why);
SELECT results_eq(format($$ SELECT result FROM webhook_apply(repeat('e', 255), %L, 'PAID', '') $$, processing),
                  $$ VALUES ('not_applied') $$, 'an event id of 255 characters and an empty payload are accepted')
  FROM o;

SELECT pg_temp.passes('SET CONSTRAINTS ALL IMMEDIATE', 'everything above passes the commit-time checks');

SELECT * FROM finish();
ROLLBACK;
