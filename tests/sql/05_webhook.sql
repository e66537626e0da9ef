-- webhook_apply: not_found, duplicate, applied (PAID with ledger / FAILED),
-- not_applied with and without conflict, the reversal a PAID event for a
-- FAILED order opens, the order's amount and currency in every answer, input
-- validation.  (Racing deliveries of one event: concurrency.sh.)
BEGIN;
\ir helpers.psql
SELECT plan(55);

CREATE TEMP TABLE o AS SELECT
    pg_temp.mk_order()                  AS processing,
    pg_temp.mk_order('PENDING_PAYMENT') AS pending,
    pg_temp.mk_order()                  AS processing2,
    pg_temp.mk_order('PENDING_PAYMENT') AS pending2,
    pg_temp.mk_order('PAID')            AS paid,
    pg_temp.mk_order('FAILED')          AS failed,
    pg_temp.mk_order('FAILED', 1234, 'USD') AS failed_usd,
    pg_temp.mk_order('FAILED', p_reason => 'provider_unavailable') AS failed_unavail,
    pg_temp.mk_reversal(pg_temp.mk_order('FAILED', 700), 'refunded') AS failed_refunded,
    pg_temp.mk_reversal(pg_temp.mk_order('FAILED', 800), 'canceled') AS failed_canceled;
-- (as checkout_finish leaves it: FAILED provider_unavailable with a pending reversal)
DO $$ BEGIN PERFORM pg_temp.mk_reversal(failed_unavail) FROM o; END $$;

-- not_found -----------------------------------------------------------------
SELECT results_eq($$ SELECT * FROM webhook_apply('evt-nf', gen_random_uuid(), 'PAID', '{"x":1}') $$,
                  $$ VALUES ('not_found', NULL::text, false, false, NULL::bigint, NULL::text) $$, 'unknown order: not_found');
SELECT is((SELECT count(*) FROM webhook_events WHERE event_id = 'evt-nf'), 0::bigint,
          'not_found records nothing (so the provider retries)');

-- applied: PAID on PROCESSING --------------------------------------------------
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-1', %L, 'PAID', '{"event_id":"evt-1"}') $$, processing),
                  $$ VALUES ('applied', 'PAID', false, false, 5000::bigint, 'EUR') $$,
                  'PAID on a PROCESSING order: applied, with the order''s amount and currency')
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
                  $$ VALUES ('duplicate', 'PAID', false, false, 5000::bigint, 'EUR') $$, 'the same event again: duplicate') FROM o;
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-1', %L, 'FAILED', '{}') $$, processing),
                  $$ VALUES ('duplicate', 'PAID', false, false, 5000::bigint, 'EUR') $$, 'the same event id with another outcome: duplicate') FROM o;
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-1', %L, 'FAILED', '{}') $$, pending2),
                  $$ VALUES ('duplicate', 'PENDING_PAYMENT', false, false, 5000::bigint, 'EUR') $$,
                  'the same event id for another order: duplicate') FROM o;
SELECT results_eq($$ SELECT * FROM webhook_apply('evt-1', gen_random_uuid(), 'PAID', '{}') $$,
                  $$ VALUES ('duplicate', NULL::text, false, false, NULL::bigint, NULL::text) $$,
                  'the same event id with an unknown order: duplicate, not not_found');
SELECT results_eq($$ SELECT count(*), min(payload) FROM webhook_events WHERE event_id = 'evt-1' $$,
                  $$ VALUES (1::bigint, '{"event_id":"evt-1"}') $$, 'duplicates recorded nothing');
SELECT results_eq(format($$ SELECT status FROM orders WHERE id = %L $$, pending2),
                  $$ VALUES ('PENDING_PAYMENT') $$, 'a duplicate changed no order') FROM o;
SELECT is((SELECT count(*) FROM ledger_transactions WHERE order_id = processing), 1::bigint,
          'duplicates wrote no second payment') FROM o;

-- applied: the other starting states and outcomes --------------------------
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-2', %L, 'PAID', '{}') $$, pending),
                  $$ VALUES ('applied', 'PAID', false, false, 5000::bigint, 'EUR') $$, 'PAID on a PENDING_PAYMENT order: applied') FROM o;
SELECT is((SELECT count(*) FROM ledger_transactions WHERE order_id = pending AND kind = 'payment'), 1::bigint,
          'with its payment') FROM o;
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-3', %L, 'FAILED', '{}') $$, processing2),
                  $$ VALUES ('applied', 'FAILED', false, false, 5000::bigint, 'EUR') $$, 'FAILED on a PROCESSING order: applied') FROM o;
SELECT results_eq(format($$ SELECT status, failure_reason FROM orders WHERE id = %L $$, processing2),
                  $$ VALUES ('FAILED', 'declined') $$, 'the order is FAILED, declined') FROM o;
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-4', %L, 'FAILED', '{}') $$, pending2),
                  $$ VALUES ('applied', 'FAILED', false, false, 5000::bigint, 'EUR') $$, 'FAILED on a PENDING_PAYMENT order: applied') FROM o;
SELECT results_eq(format($$ SELECT status, failure_reason FROM orders WHERE id = %L $$, pending2),
                  $$ VALUES ('FAILED', 'declined') $$, 'the order is FAILED, declined') FROM o;
SELECT is((SELECT count(*) FROM ledger_transactions WHERE order_id IN (processing2, pending2)), 0::bigint,
          'no ledger for a failed payment') FROM o;
SELECT is((SELECT applied FROM webhook_events WHERE event_id = 'evt-4'), true, 'the event is recorded applied');

-- not_applied ---------------------------------------------------------------
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-5', %L, 'PAID', '{}') $$, paid),
                  $$ VALUES ('not_applied', 'PAID', false, false, 5000::bigint, 'EUR') $$, 'PAID on a PAID order: not_applied, no conflict') FROM o;
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-6', %L, 'FAILED', '{}') $$, paid),
                  $$ VALUES ('not_applied', 'PAID', true, false, 5000::bigint, 'EUR') $$,
                  'FAILED on a PAID order: not_applied, conflict, no reversal') FROM o;
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-7', %L, 'FAILED', '{}') $$, failed),
                  $$ VALUES ('not_applied', 'FAILED', false, false, 5000::bigint, 'EUR') $$,
                  'FAILED on a FAILED order: not_applied, no conflict, no reversal') FROM o;
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-8', %L, 'PAID', '{}') $$, failed),
                  $$ VALUES ('not_applied', 'FAILED', true, true, 5000::bigint, 'EUR') $$,
                  'PAID on a FAILED order: not_applied, conflict, and reversal = true') FROM o;
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
                  $$ VALUES ('duplicate', 'PAID', false, false, 5000::bigint, 'EUR') $$, 'a not_applied event replayed: duplicate') FROM o;

-- A PAID event for a FAILED order: the provider holds money we refused ------
SELECT results_eq(format($$ SELECT * FROM webhook_apply('evt-usd', %L, 'PAID', '{}') $$, failed_usd),
                  $$ VALUES ('not_applied', 'FAILED', true, true, 1234::bigint, 'USD') $$,
                  'PAID on a FAILED order: reversal = true, with the amount and currency to ask back') FROM o;
SELECT results_eq(format($$ SELECT v.status, v.amount_cents, v.currency::text, v.attempts, o.status, o.failure_reason,
                                   (SELECT w.applied FROM webhook_events w WHERE w.event_id = 'evt-usd')
                              FROM order_reversals v JOIN orders o ON o.id = v.order_id WHERE v.order_id = %L $$, failed_usd),
                  $$ VALUES ('pending', 1234::bigint, 'USD', 0, 'FAILED', 'declined', false) $$,
                  'regression: a PAID event for a FAILED order opens a reversal (not dropped)') FROM o;
SELECT is((SELECT count(*) FROM order_reversals WHERE order_id = failed), 1::bigint,
          'the PAID event on the other FAILED order opened its reversal too') FROM o;
SELECT results_eq(format($$ SELECT result, reversal FROM webhook_apply('evt-usd-2', %L, 'PAID', '{}') $$, failed_usd),
                  $$ VALUES ('not_applied', true) $$,
                  'another PAID event while the reversal is pending: reversal = true again') FROM o;
SELECT results_eq(format($$ SELECT result, reversal FROM webhook_apply('evt-usd', %L, 'PAID', '{}') $$, failed_usd),
                  $$ VALUES ('duplicate', false) $$,
                  'a replayed PAID event opens nothing (duplicate)') FROM o;
SELECT is((SELECT count(*) FROM order_reversals WHERE order_id = failed_usd), 1::bigint,
          'still one reversal for the order') FROM o;
SELECT is(order_get(failed_usd)::jsonb -> 'reversal', '{"status":"pending","amount_cents":1234}'::jsonb,
          'GET shows the pending reversal') FROM o;
SELECT results_eq(format($$ SELECT result, conflict, reversal FROM webhook_apply('evt-unavail', %L, 'PAID', '{}') $$, failed_unavail),
                  $$ VALUES ('not_applied', true, true) $$,
                  'PAID on a FAILED provider_unavailable order with its pending reversal: reversal = true') FROM o;
SELECT results_eq(format($$ SELECT result, reversal FROM webhook_apply('evt-refunded', %L, 'PAID', '{}') $$, failed_refunded),
                  $$ VALUES ('not_applied', false) $$,
                  'PAID on a FAILED order whose money came back (refunded): nothing more to ask') FROM o;
SELECT is((SELECT status FROM order_reversals WHERE order_id = failed_refunded), 'refunded',
          'and the refunded reversal stays refunded') FROM o;
SELECT is((SELECT count(*) FROM order_reversals WHERE order_id IN (paid, processing2, pending2)), 0::bigint,
          'no reversal for a PAID order, nor for orders failed by a FAILED event') FROM o;
-- The cancel was answered canceled (or not_found: the charge request had not
-- reached the provider yet); then the provider captures after all and says
-- PAID.  That money must be asked back too -- now, and by the housekeeper's
-- retries until the provider answers (canceled -> refunded exists for it).
-- KNOWN BUG in sql/init.sql (these two fail): reversal_open() finds the
-- canceled reversal, inserts nothing and returns false, so the event is
-- recorded not_applied with reversal = false and nobody asks for the money.
CREATE TEMP TABLE w_canceled AS
    SELECT w.* FROM o, webhook_apply('evt-canceled', o.failed_canceled, 'PAID', '{}') w;
SELECT results_eq($$ SELECT result, conflict, reversal, amount_cents, currency FROM w_canceled $$,
                  $$ VALUES ('not_applied', true, true, 800::bigint, 'EUR') $$,
                  'a PAID event after a canceled reversal says reversal = true (the capture came after all; not dropped)');
DO $$ BEGIN PERFORM pg_temp.age_reversal(failed_canceled, interval '2 hours') FROM o; END $$;
SELECT is((SELECT count(*) FROM o, reversals_due('1 hour', 1000) d WHERE d.order_id = o.failed_canceled), 1::bigint,
          'and the housekeeper keeps asking for it (reversals_due hands it out)');

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
