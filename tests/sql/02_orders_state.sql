-- Orders: the state machine, immutable columns, updated_at, the charge id,
-- "PAID means a payment transaction", and the JSON rendering (order_json,
-- order_get).
BEGIN;
\ir helpers.psql
SELECT plan(65);

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

-- Every API path renders with order_json(o, r), inlined ---------------------
-- Orders in every status, and FAILED ones with each kind of reversal, made
-- through the API; each path that stores or returns an order's JSON (the
-- single and the batch finish, checkout_claim_stale, order_get,
-- order_get_many) must give the bytes of order_json(o) and of the layout
-- spelt out below.  track_functions counts the calls of SQL functions that
-- were not inlined: the API paths must make none of order_json.
SET LOCAL track_functions = 'all';
CREATE FUNCTION pg_temp.explain(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE 'EXPLAIN (VERBOSE, COSTS OFF) ' || q;
END
$$;
CREATE TEMP TABLE t_api (label text PRIMARY KEY, id uuid, token uuid, body text);
INSERT INTO t_api (label, id, token)
SELECT v.label, b.order_id, b.lock_token
  FROM unnest(ARRAY['processing', 'paid', 'rev_pending', 'declined', 'pending_payment',
                    'rev_canceled', 'rev_refunded', 'stale']) AS v(label)
 CROSS JOIN LATERAL checkout_begin('json-' || v.label, pg_temp.fp(v.label), 'b-1', 's-1', 5000,
                                   'EUR', CASE v.label WHEN 'pending_payment' THEN 'trusted'
                                                       ELSE 'untrusted' END,
                                   '30 seconds', '1 day') b;
WITH f AS (
    SELECT t.label, f.response_body
      FROM t_api t
     CROSS JOIN LATERAL checkout_finish(t.id, 'json-' || t.label, t.token,
                                        CASE t.label WHEN 'paid' THEN 'succeeded'
                                                     ELSE 'unavailable' END, 'ch_1', 10000) f
     WHERE t.label IN ('paid', 'rev_pending'))
UPDATE t_api SET body = f.response_body FROM f WHERE t_api.label = f.label;
WITH a AS (
    SELECT array_agg(t.label ORDER BY t.label) AS labels, array_agg(t.id ORDER BY t.label) AS ids,
           array_agg('json-' || t.label ORDER BY t.label) AS keys,
           array_agg(t.token ORDER BY t.label) AS tokens,
           array_agg(CASE t.label WHEN 'declined' THEN 'declined' ELSE 'unavailable' END
                     ORDER BY t.label) AS outcomes
      FROM t_api t
     WHERE t.label IN ('declined', 'pending_payment', 'rev_canceled', 'rev_refunded')),
f AS (
    SELECT a.labels[f.ord] AS label, f.response_body
      FROM a CROSS JOIN LATERAL checkout_finish_many(a.ids, a.keys, a.tokens, a.outcomes,
                                                     array_fill('ch_1'::text, ARRAY[4]),
                                                     array_fill(10000::bigint, ARRAY[4])) f)
UPDATE t_api SET body = f.response_body FROM f WHERE t_api.label = f.label;
SELECT reversal_settle(id, CASE label WHEN 'rev_canceled' THEN 'canceled' ELSE 'refunded' END)
  FROM t_api WHERE label IN ('rev_canceled', 'rev_refunded');
-- stale: a webhook failed its order and a PAID event opened a reversal, since
-- canceled, while its worker died; checkout_claim_stale completes the key.
SELECT webhook_apply('json-stale-' || o, id, o, '{}')
  FROM t_api, unnest(ARRAY['FAILED', 'PAID']) WITH ORDINALITY AS e(o, n)
 WHERE label = 'stale' ORDER BY n;
SELECT reversal_settle(id, 'canceled') FROM t_api WHERE label = 'stale';
UPDATE idempotency_keys SET locked_at = now() - interval '1 hour' WHERE key = 'json-stale';
SELECT is((SELECT count(*) FROM checkout_claim_stale('30 seconds', 100)), 0::bigint,
          'checkout_claim_stale completes a stale key whose order is final (nothing to claim)');
UPDATE t_api SET body = ik.response_body
  FROM idempotency_keys ik WHERE ik.key = 'json-stale' AND t_api.label = 'stale';
CREATE TEMP TABLE t_read AS
SELECT t.label, order_get(t.id) AS got, g.body AS got_many
  FROM t_api t
  JOIN order_get_many(ARRAY(SELECT id FROM t_api ORDER BY label)) g
    ON g.ord = (SELECT count(*) FROM t_api x WHERE x.label <= t.label);
SELECT is((SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions
            WHERE schemaname = 'public' AND funcname = 'order_json'), 0::numeric,
          'checkout_finish(_many), checkout_claim_stale, order_get(_many): order_json is inlined');
SELECT is((SELECT count(*) FROM t_api WHERE body IS NOT NULL), 7::bigint,
          'every key but the PROCESSING one has its stored body');
-- The layout, spelt out for these orders (rev: the reversal's status, NULL
-- for none).
CREATE FUNCTION pg_temp.want_json(o orders, rev text) RETURNS text LANGUAGE sql AS $$
    SELECT '{"order_id":"' || o.id || '","status":"' || o.status || '","ready_to_ship":'
        || (o.status = 'PAID') || ',"amount_cents":5000,"currency":"EUR","buyer_id":"b-1",'
        || '"seller_id":"s-1","buyer_trust":"' || o.buyer_trust || '"'
        || CASE WHEN o.status = 'FAILED'
                THEN ',"failure_reason":"' || o.failure_reason || '"' ELSE '' END
        || CASE WHEN rev IS NOT NULL
                THEN ',"reversal":{"status":"' || rev || '","amount_cents":5000}' ELSE '' END
        || ',"created_at":"' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        || '","updated_at":"' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        || '"}'
$$;
SELECT results_eq(
    $$ SELECT t.label, t.body, r.got, r.got_many, order_json(o), order_json(o, rv)
         FROM t_api t JOIN t_read r USING (label) JOIN orders o ON o.id = t.id
         LEFT JOIN order_reversals rv ON rv.order_id = o.id
        ORDER BY t.label $$,
    $$ SELECT t.label,
              CASE WHEN t.label IN ('rev_canceled', 'rev_refunded')
                   THEN pg_temp.want_json(o, 'pending')     -- when it was stored
                   WHEN t.label <> 'processing' THEN pg_temp.want_json(o, rv.status) END,
              pg_temp.want_json(o, rv.status), pg_temp.want_json(o, rv.status),
              pg_temp.want_json(o, rv.status), pg_temp.want_json(o, rv.status)
         FROM t_api t JOIN orders o ON o.id = t.id
         LEFT JOIN order_reversals rv ON rv.order_id = o.id
        ORDER BY t.label $$,
    'stored (single and batch finish, claim_stale), order_get, order_get_many, order_json(o) '
    'and order_json(o, r): the bytes of the layout, for every status and reversal');
SELECT results_eq(
    $$ SELECT o.status, o.failure_reason, rv.status FROM t_api t JOIN orders o ON o.id = t.id
         LEFT JOIN order_reversals rv ON rv.order_id = o.id ORDER BY t.label $$,
    $$ VALUES ('FAILED', 'declined', NULL), ('PAID', NULL, NULL),
              ('PENDING_PAYMENT', NULL, NULL), ('PROCESSING', NULL, NULL),
              ('FAILED', 'provider_unavailable', 'canceled'),
              ('FAILED', 'provider_unavailable', 'pending'),
              ('FAILED', 'provider_unavailable', 'refunded'),
              ('FAILED', 'declined', 'canceled') $$,
    'the orders cover every status, and FAILED with no, a pending, a canceled, a refunded reversal');
SELECT is(order_json(o, NULL::order_reversals), order_json(o, ROW(NULL, NULL, NULL, NULL, NULL,
                                                                  NULL, NULL, NULL)::order_reversals),
          'order_json(o, r): a NULL reversal and one of NULLs (a plpgsql row not found) render alike')
  FROM orders o JOIN t_api t ON o.id = t.id WHERE t.label = 'declined';
SELECT unalike((SELECT string_agg(x, E'\n')
                 FROM pg_temp.explain($$ SELECT order_json(o, r) FROM orders o
                                          LEFT JOIN order_reversals r ON r.order_id = o.id $$) x),
              '%order_json%', 'EXPLAIN VERBOSE: order_json(o, r) is inlined (no call left)');
SELECT alike((SELECT string_agg(x, E'\n')
               FROM pg_temp.explain($$ SELECT order_json(o) FROM orders o $$) x),
            '%order_json(o.*)%', 'EXPLAIN VERBOSE: order_json(o), with its sub-select, is a call');

SELECT * FROM finish();
ROLLBACK;
