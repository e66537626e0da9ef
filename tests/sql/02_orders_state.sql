-- Orders: the state machine, immutable columns, updated_at, the charge id,
-- "PAID means a payment transaction", and the JSON rendering (order_json,
-- order_get).
BEGIN;
\ir helpers.psql
SELECT plan(57);

-- Born PROCESSING ------------------------------------------------------------
SELECT pg_temp.throws(format($$ INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust, status%s)
                                VALUES ('b', 's', 1, 'EUR', 'trusted', %L%s) $$,
                             CASE WHEN st = 'FAILED' THEN ', failure_reason' ELSE '' END, st,
                             CASE WHEN st = 'FAILED' THEN ', ''declined''' ELSE '' END),
    '23514', '%must be inserted as PROCESSING, not ' || st, 'an order cannot be inserted as ' || st)
  FROM unnest(ARRAY['PAID', 'FAILED', 'PENDING_PAYMENT']) AS st;
CREATE TEMP TABLE t_new AS SELECT pg_temp.mk_order() AS id;
SELECT is((SELECT status FROM orders WHERE id = (SELECT id FROM t_new)), 'PROCESSING',
          'status defaults to PROCESSING');

-- Legal transitions -------------------------------------------------------
SELECT lives_ok(format($$ UPDATE orders SET status = 'PAID' WHERE id = %1$L;
                          SELECT ledger_write_payment(%1$L, 5000, 'EUR') $$, pg_temp.mk_order()),
    'PROCESSING -> PAID');
SELECT lives_ok(format($$ UPDATE orders SET status = 'FAILED', failure_reason = 'declined' WHERE id = %L $$,
                       pg_temp.mk_order()),
    'PROCESSING -> FAILED (declined)');
SELECT lives_ok(format($$ UPDATE orders SET status = 'FAILED', failure_reason = 'provider_unavailable' WHERE id = %L $$,
                       pg_temp.mk_order()),
    'PROCESSING -> FAILED (provider_unavailable)');
SELECT lives_ok(format($$ UPDATE orders SET status = 'PENDING_PAYMENT' WHERE id = %L $$, pg_temp.mk_order()),
    'PROCESSING -> PENDING_PAYMENT');
SELECT lives_ok(format($$ UPDATE orders SET status = 'PAID' WHERE id = %1$L;
                          SELECT ledger_write_payment(%1$L, 5000, 'EUR') $$, pg_temp.mk_order('PENDING_PAYMENT')),
    'PENDING_PAYMENT -> PAID');
SELECT lives_ok(format($$ UPDATE orders SET status = 'FAILED', failure_reason = 'declined' WHERE id = %L $$,
                       pg_temp.mk_order('PENDING_PAYMENT')),
    'PENDING_PAYMENT -> FAILED');
SELECT lives_ok(format($$ UPDATE orders SET provider_charge_id = 'ch_1' WHERE id = %L $$, pg_temp.mk_order()),
    'a PROCESSING order may record its charge id without a transition');
SELECT lives_ok(format($$ UPDATE orders SET provider_charge_id = 'ch_1' WHERE id = %L $$,
                       pg_temp.mk_order('PENDING_PAYMENT')),
    'a PENDING_PAYMENT order may record its charge id without a transition');

-- Every illegal transition -----------------------------------------------
-- (each row satisfies the CHECKs, so only the state machine can refuse it)
SELECT pg_temp.throws(
    format($$ UPDATE orders SET status = %L, failure_reason = %L WHERE id = %L $$,
           t.to_st, CASE WHEN t.to_st = 'FAILED' THEN 'declined' END, pg_temp.mk_order(t.from_st)),
    '23514', t.pat, t.from_st || ' -> ' || t.to_st || ' is refused')
  FROM (VALUES ('PENDING_PAYMENT', 'PROCESSING',      '%illegal transition PENDING_PAYMENT -> PROCESSING'),
               ('PAID',            'PROCESSING',      '%is PAID (final)%'),
               ('PAID',            'FAILED',          '%is PAID (final)%'),
               ('PAID',            'PENDING_PAYMENT', '%is PAID (final)%'),
               ('PAID',            'PAID',            '%is PAID (final)%'),
               ('FAILED',          'PROCESSING',      '%is FAILED (final)%'),
               ('FAILED',          'PAID',            '%is FAILED (final)%'),
               ('FAILED',          'PENDING_PAYMENT', '%is FAILED (final)%'),
               ('FAILED',          'FAILED',          '%is FAILED (final)%')) AS t(from_st, to_st, pat);
SELECT pg_temp.throws(format($$ UPDATE orders SET provider_charge_id = 'late' WHERE id = %L $$,
                             pg_temp.mk_order('PAID')),
    '23514', '%is PAID (final)%', 'a PAID order cannot record a charge id any more');
SELECT pg_temp.throws(format($$ UPDATE orders SET failure_reason = 'provider_unavailable' WHERE id = %L $$,
                             pg_temp.mk_order('FAILED')),
    '23514', '%is FAILED (final)%', 'a FAILED order cannot change its failure_reason');
-- The state machine also covers a status the CHECK would let through
-- (PROCESSING is valid, but not after PENDING_PAYMENT) -- done above -- and
-- runs before the CHECK for an unknown one:
SELECT pg_temp.throws(format($$ UPDATE orders SET status = 'SHIPPED' WHERE id = %L $$, pg_temp.mk_order()),
    '23514', '%illegal transition PROCESSING -> SHIPPED', 'PROCESSING -> SHIPPED is refused');

-- Immutable columns ---------------------------------------------------------
SELECT pg_temp.throws(format($$ UPDATE orders SET %s WHERE id = %L $$, c.assignment, pg_temp.mk_order()),
    '23514', '%never change', 'orders.' || c.col || ' is immutable')
  FROM (VALUES ('id',           'id = gen_random_uuid()'),
               ('buyer_id',     'buyer_id = ''other-buyer'''),
               ('seller_id',    'seller_id = ''other-seller'''),
               ('amount_cents', 'amount_cents = amount_cents + 1'),
               ('currency',     'currency = ''USD'''),
               ('buyer_trust',  'buyer_trust = ''untrusted'''),
               ('created_at',   'created_at = created_at - interval ''1 day''')) AS c(col, assignment);
SELECT pg_temp.throws(format($$ UPDATE orders SET buyer_id = 'other', status = 'PENDING_PAYMENT' WHERE id = %L $$,
                             pg_temp.mk_order()),
    '23514', '%never change', 'a legal transition does not excuse an identity change');

-- The provider charge id is set once -----------------------------------------
CREATE TEMP TABLE t_o AS SELECT pg_temp.mk_order() AS id;
UPDATE orders SET provider_charge_id = 'ch_1' WHERE id = (SELECT id FROM t_o);
SELECT pg_temp.throws($$ UPDATE orders SET provider_charge_id = 'ch_2' WHERE id = (SELECT id FROM t_o) $$,
    '23514', '%provider_charge_id is already set', 'a charge id cannot be replaced');
SELECT pg_temp.throws($$ UPDATE orders SET provider_charge_id = NULL WHERE id = (SELECT id FROM t_o) $$,
    '23514', '%provider_charge_id is already set', 'a charge id cannot be erased');
SELECT lives_ok($$ UPDATE orders SET status = 'PENDING_PAYMENT', provider_charge_id = 'ch_1'
                    WHERE id = (SELECT id FROM t_o) $$,
    'rewriting the same charge id is no change');

-- updated_at is the trigger's -------------------------------------------------
CREATE TEMP TABLE t_aged AS SELECT pg_temp.mk_order() AS id;
SELECT pg_temp.age_order(id, interval '1 hour') FROM t_aged;
UPDATE orders SET status = 'PENDING_PAYMENT', updated_at = '2000-01-01'
 WHERE id = (SELECT id FROM t_aged);
SELECT is((SELECT updated_at FROM orders WHERE id = (SELECT id FROM t_aged)), now(),
          'an UPDATE sets updated_at to now(), whatever the statement says');
SELECT is((SELECT created_at FROM orders WHERE id = (SELECT id FROM t_aged)), now() - interval '1 hour',
          'created_at is left alone');

-- PAID needs its payment transaction by COMMIT ------------------------------
SELECT pg_temp.passes(format($$ UPDATE orders SET status = 'PAID' WHERE id = %L $$, pg_temp.mk_order()),
    'PAID without a payment passes the statement (the check is deferred)');
SELECT pg_temp.throws(format($$ UPDATE orders SET status = 'PAID' WHERE id = %L;
                                SET CONSTRAINTS ALL IMMEDIATE $$, pg_temp.mk_order()),
    '23514', '%is PAID without a payment ledger transaction', 'PAID without a payment fails at commit');
SELECT pg_temp.throws(format($$ UPDATE orders SET status = 'PAID' WHERE id = %L;
                                SET CONSTRAINTS ALL IMMEDIATE $$, pg_temp.mk_order('PENDING_PAYMENT')),
    '23514', '%is PAID without a payment ledger transaction',
    'PENDING_PAYMENT -> PAID without a payment fails at commit');
SELECT pg_temp.passes(format($$ UPDATE orders SET status = 'PAID' WHERE id = %1$L;
                                SELECT ledger_write_payment(%1$L, 5000, 'EUR');
                                SET CONSTRAINTS ALL IMMEDIATE $$, pg_temp.mk_order()),
    'PAID with its payment passes the commit checks');

-- order_json ----------------------------------------------------------------
SET LOCAL timezone = 'America/New_York';   -- the rendering must not depend on it
SELECT is(order_json(ROW('00000000-0000-0000-0000-000000000001', 'b-1', 's-1', 5000, 'EUR', 'trusted',
                         'PROCESSING', NULL, NULL,
                         '2026-11-24 10:00:00.123456+00', '2026-11-24 10:00:01.5+00')::orders),
    '{"order_id":"00000000-0000-0000-0000-000000000001","status":"PROCESSING","ready_to_ship":false,'
    '"amount_cents":5000,"currency":"EUR","buyer_id":"b-1","seller_id":"s-1","buyer_trust":"trusted",'
    '"created_at":"2026-11-24T10:00:00.123456Z","updated_at":"2026-11-24T10:00:01.500000Z"}',
    'order_json: PROCESSING, compact, fixed member order, UTC timestamps with microseconds');
SELECT is(order_json(ROW('00000000-0000-0000-0000-000000000002', 'b', 's', 1, 'USD', 'untrusted',
                         'FAILED', 'provider_unavailable', 'ch_9',
                         '2026-01-02 03:04:05+00', '2026-01-02 03:04:05+00')::orders),
    '{"order_id":"00000000-0000-0000-0000-000000000002","status":"FAILED","ready_to_ship":false,'
    '"amount_cents":1,"currency":"USD","buyer_id":"b","seller_id":"s","buyer_trust":"untrusted",'
    '"failure_reason":"provider_unavailable",'
    '"created_at":"2026-01-02T03:04:05.000000Z","updated_at":"2026-01-02T03:04:05.000000Z"}',
    'order_json: FAILED carries failure_reason');
SELECT is(order_json(ROW('00000000-0000-0000-0000-000000000003', 'b', 's', 99, 'EUR', 'trusted',
                         'PAID', NULL, 'ch_1',
                         '2026-01-02 03:04:05+00', '2026-01-02 03:04:06+00')::orders),
    '{"order_id":"00000000-0000-0000-0000-000000000003","status":"PAID","ready_to_ship":true,'
    '"amount_cents":99,"currency":"EUR","buyer_id":"b","seller_id":"s","buyer_trust":"trusted",'
    '"created_at":"2026-01-02T03:04:05.000000Z","updated_at":"2026-01-02T03:04:06.000000Z"}',
    'order_json: PAID is ready_to_ship');
SELECT is(order_json(ROW('00000000-0000-0000-0000-000000000004', 'b', 's', 99, 'EUR', 'trusted',
                         'PENDING_PAYMENT', NULL, NULL,
                         '2026-01-02 03:04:05+00', '2026-01-02 03:04:06+00')::orders)::json ->> 'ready_to_ship',
    'false', 'order_json: PENDING_PAYMENT is not ready_to_ship');
SELECT is(order_json(ROW('00000000-0000-0000-0000-000000000005', 'a"b\c', 's', 1, 'EUR', 'trusted',
                         'PROCESSING', NULL, NULL, now(), now())::orders)::json ->> 'buyer_id',
    'a"b\c', 'order_json escapes strings (valid JSON whatever the row holds)');
CREATE TEMP TABLE t_failed AS SELECT pg_temp.mk_order('FAILED') AS id;
SELECT is(ARRAY(SELECT json_object_keys(order_json(o)::json) FROM orders o WHERE o.id = (SELECT id FROM t_failed)),
    ARRAY['order_id', 'status', 'ready_to_ship', 'amount_cents', 'currency', 'buyer_id', 'seller_id',
          'buyer_trust', 'failure_reason', 'created_at', 'updated_at'],
    'order_json of a stored FAILED order parses, with every member');
SELECT is((SELECT order_json(o)::jsonb -> 'reversal' FROM orders o WHERE o.id = (SELECT id FROM t_failed)), NULL,
          'order_json: no reversal member for an order without a reversal');

-- order_json: the reversal of a FAILED order, after failure_reason ----------
CREATE TEMP TABLE t_rev AS SELECT
    pg_temp.mk_reversal(pg_temp.mk_order('FAILED', 777, 'USD', p_reason => 'provider_unavailable')) AS pending,
    pg_temp.mk_reversal(pg_temp.mk_order('FAILED'), 'canceled') AS canceled,
    pg_temp.mk_reversal(pg_temp.mk_order('FAILED'), 'refunded') AS refunded;
SELECT is((SELECT order_json(o) FROM orders o WHERE o.id = pending),
    '{"order_id":"' || pending || '","status":"FAILED","ready_to_ship":false,'
    '"amount_cents":777,"currency":"USD","buyer_id":"buyer-1","seller_id":"seller-1","buyer_trust":"trusted",'
    '"failure_reason":"provider_unavailable","reversal":{"status":"pending","amount_cents":777},'
    '"created_at":"' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    || '","updated_at":"' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"}',
    'order_json: a pending reversal, exactly, after failure_reason') FROM t_rev;
SELECT is(ARRAY(SELECT json_object_keys(order_json(o)::json) FROM orders o WHERE o.id = (SELECT pending FROM t_rev)),
    ARRAY['order_id', 'status', 'ready_to_ship', 'amount_cents', 'currency', 'buyer_id', 'seller_id',
          'buyer_trust', 'failure_reason', 'reversal', 'created_at', 'updated_at'],
    'order_json with a reversal parses, reversal between failure_reason and created_at');
SELECT is((SELECT order_json(o)::jsonb -> 'reversal' FROM orders o WHERE o.id = canceled),
          '{"status":"canceled","amount_cents":5000}'::jsonb, 'order_json: a canceled reversal') FROM t_rev;
SELECT is((SELECT order_json(o)::jsonb -> 'reversal' FROM orders o WHERE o.id = refunded),
          '{"status":"refunded","amount_cents":5000}'::jsonb, 'order_json: a refunded reversal') FROM t_rev;
SELECT is(order_get(pending), (SELECT order_json(o) FROM orders o WHERE o.id = pending),
          'order_get shows the reversal too') FROM t_rev;
SELECT is((SELECT order_json(o)::jsonb FROM orders o WHERE o.id = (SELECT id FROM t_aged)),
          jsonb_build_object('order_id', (SELECT id FROM t_aged), 'status', 'PENDING_PAYMENT',
                             'ready_to_ship', false, 'amount_cents', 5000, 'currency', 'EUR',
                             'buyer_id', 'buyer-1', 'seller_id', 'seller-1', 'buyer_trust', 'trusted',
                             'created_at', to_char((now() - interval '1 hour') AT TIME ZONE 'UTC',
                                                   'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                             'updated_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
          'order_json of a stored order holds its values');

-- order_get -------------------------------------------------------------------
SELECT is(order_get((SELECT id FROM t_aged)),
          (SELECT order_json(o) FROM orders o WHERE o.id = (SELECT id FROM t_aged)),
          'order_get returns the order_json rendering');
SELECT is(order_get(gen_random_uuid()), NULL, 'order_get of an unknown order is NULL');
SELECT is(order_get(NULL), NULL, 'order_get(NULL) is NULL');

SELECT * FROM finish();
ROLLBACK;
