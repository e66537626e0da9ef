-- The batch (group commit) functions: checkout_begin_many,
-- checkout_finish_many, webhook_apply_many and order_get_many.  Each item
-- answers as the single-item call would, items of one key or order as the
-- same calls one after the other, rows in ordinal order whatever order the
-- items ran in; a bad item or array fails the whole batch; app may call
-- them, and they run as paymentsd_owner.  (Concurrent batches locking the
-- same keys in opposite orders, and a batch whose COMMIT fails:
-- concurrency.sh.)
BEGIN;
\ir helpers.psql
SELECT plan(62);

-- checkout_begin_many with the usual body (as 04_checkout.sql); the
-- fingerprint of each item is derived from its label.
CREATE FUNCTION pg_temp.cbm(p_keys text[], p_labels text[], p_amounts bigint[] DEFAULT NULL)
RETURNS TABLE (ord int, result text, order_id uuid, response_status int, response_body text, lock_token uuid,
               completed_at_ms bigint)
LANGUAGE sql AS $$
    SELECT * FROM checkout_begin_many(
        p_keys, ARRAY(SELECT pg_temp.fp(l) FROM unnest(p_labels) WITH ORDINALITY AS u(l, i) ORDER BY i),
        array_fill('buyer-1'::text, ARRAY[cardinality(p_keys)]),
        array_fill('seller-1'::text, ARRAY[cardinality(p_keys)]),
        coalesce(p_amounts, array_fill(5000::bigint, ARRAY[cardinality(p_keys)])),
        array_fill('EUR'::text, ARRAY[cardinality(p_keys)]),
        array_fill('trusted'::text, ARRAY[cardinality(p_keys)]),
        array_fill(interval '30 seconds', ARRAY[cardinality(p_keys)]),
        array_fill(interval '24 hours', ARRAY[cardinality(p_keys)]))
$$;

-- checkout_begin of one key with the usual body.
CREATE FUNCTION pg_temp.cb(p_key text, p_label text DEFAULT 'body-1')
RETURNS TABLE (result text, order_id uuid, response_status int, response_body text, lock_token uuid,
               completed_at_ms bigint)
LANGUAGE sql AS $$
    SELECT * FROM checkout_begin(p_key, pg_temp.fp(p_label), 'buyer-1', 'seller-1', 5000, 'EUR',
                                 'trusted', interval '30 seconds', interval '24 hours')
$$;

-- What a key holds now.
CREATE FUNCTION pg_temp.oid_of(p_key text) RETURNS uuid LANGUAGE sql AS $$
    SELECT order_id FROM idempotency_keys WHERE key = p_key
$$;
CREATE FUNCTION pg_temp.tok_of(p_key text) RETURNS uuid LANGUAGE sql AS $$
    SELECT lock_token FROM idempotency_keys WHERE key = p_key
$$;

-- Shape ------------------------------------------------------------------------
-- Each batch function takes an array of each argument of its single-item
-- function and returns ord, then exactly the single function's columns.
CREATE FUNCTION pg_temp.args(p regprocedure) RETURNS text[] LANGUAGE sql AS $$
    SELECT array_agg(format_type(t, NULL) ORDER BY i)
      FROM pg_proc, unnest(proargtypes::oid[]) WITH ORDINALITY AS u(t, i) WHERE oid = p
$$;
CREATE FUNCTION pg_temp.cols(p regprocedure) RETURNS text[] LANGUAGE sql AS $$
    SELECT array_agg(n || ' ' || format_type(t, NULL) ORDER BY i)
      FROM pg_proc, unnest(proargnames, proargmodes, proallargtypes) WITH ORDINALITY AS u(n, m, t, i)
     WHERE oid = p AND m = 't'
$$;
SELECT is(pg_temp.args(many),
          ARRAY(SELECT a || '[]' FROM unnest(pg_temp.args(single)) WITH ORDINALITY AS u(a, i) ORDER BY i),
          one || '_many takes an array of each argument of ' || one)
  FROM (VALUES ('checkout_begin',
                'checkout_begin(text, text, text, text, bigint, text, text, interval, interval)'::regprocedure,
                'checkout_begin_many(text[], text[], text[], text[], bigint[], text[], text[], interval[], interval[])'::regprocedure),
               ('checkout_finish', 'checkout_finish(uuid, text, uuid, text, text, bigint)',
                'checkout_finish_many(uuid[], text[], uuid[], text[], text[], bigint[])'),
               ('webhook_apply', 'webhook_apply(text, uuid, text, text)', 'webhook_apply_many(text[], uuid[], text[], text[])'),
               ('order_get', 'order_get(uuid)', 'order_get_many(uuid[])')) AS v(one, single, many);
SELECT is(pg_temp.cols(many), 'ord integer'::text || pg_temp.cols(single),
          one || '_many returns ord, then exactly the columns of ' || one)
  FROM (VALUES ('checkout_begin',
                'checkout_begin(text, text, text, text, bigint, text, text, interval, interval)'::regprocedure,
                'checkout_begin_many(text[], text[], text[], text[], bigint[], text[], text[], interval[], interval[])'::regprocedure),
               ('checkout_finish', 'checkout_finish(uuid, text, uuid, text, text, bigint)',
                'checkout_finish_many(uuid[], text[], uuid[], text[], text[], bigint[])'),
               ('webhook_apply', 'webhook_apply(text, uuid, text, text)', 'webhook_apply_many(text[], uuid[], text[], text[])'))
       AS v(one, single, many);
SELECT is(pg_temp.cols('order_get_many(uuid[])'), ARRAY['ord integer', 'body text'],
          'order_get_many returns ord, then the body order_get returns');

-- checkout_begin_many: one key twice ---------------------------------------------
CREATE TEMP TABLE twice AS SELECT * FROM pg_temp.cbm(ARRAY['twice', 'twice'], ARRAY['body-1', 'body-1']);
SELECT results_eq($$ SELECT ord, result, order_id = (SELECT order_id FROM twice WHERE ord = 1), lock_token IS NULL FROM twice $$,
                  $$ VALUES (1, 'new', true, false), (2, 'in_progress', true, true) $$,
                  'regression: a key twice in one batch is new, then in_progress with the same order and no token (as two calls)');
SELECT results_eq($$ SELECT count(*), min(k.lock_token::text) FROM orders o JOIN idempotency_keys k ON k.order_id = o.id
                      WHERE k.key = 'twice' $$,
                  $$ SELECT 1::bigint, lock_token::text FROM twice WHERE ord = 1 $$,
                  'one key, one order, locked by the first item''s token');

-- checkout_begin_many: one key reused with another body ---------------------------
CREATE TEMP TABLE reused AS SELECT * FROM pg_temp.cbm(ARRAY['reused', 'reused'], ARRAY['body-1', 'body-2'], ARRAY[5000, 7000]::bigint[]);
SELECT results_eq($$ SELECT ord, result, order_id IS NULL, lock_token IS NULL FROM reused $$,
                  $$ VALUES (1, 'new', false, false), (2, 'reused', true, true) $$,
                  'regression: a key reused with another body in one batch is new, then reused (no order id given away)');
SELECT results_eq($$ SELECT k.fingerprint, o.amount_cents FROM idempotency_keys k JOIN orders o ON o.id = k.order_id
                      WHERE k.key = 'reused' $$,
                  $$ VALUES (pg_temp.fp('body-1'), 5000::bigint) $$,
                  'the key keeps the first item''s body and order');

-- checkout_begin_many: new, replay, in_progress, recover, reused, expired at once ----
DO $$
BEGIN
    PERFORM pg_temp.cb(k) FROM unnest(ARRAY['mix-replay', 'mix-busy', 'mix-stale', 'mix-expired']) AS k;
    PERFORM checkout_finish(pg_temp.oid_of(k), k, pg_temp.tok_of(k), 'declined', NULL, 0)
       FROM unnest(ARRAY['mix-replay', 'mix-expired']) AS k;
    UPDATE idempotency_keys SET locked_at = now() - interval '1 minute' WHERE key = 'mix-stale';
    UPDATE idempotency_keys SET completed_at = now() - interval '2 days' WHERE key = 'mix-expired';
END
$$;
CREATE TEMP TABLE before AS
    SELECT key, order_id, lock_token, response_body, completed_at FROM idempotency_keys WHERE key LIKE 'mix-%';
CREATE TEMP TABLE orders_before AS SELECT count(*) AS n FROM orders;
-- (ordinal order is not key order: the items run sorted by key)
CREATE TEMP TABLE mix AS
    SELECT row_number() OVER () AS pos, m.*
      FROM pg_temp.cbm(ARRAY['mix-z-new', 'mix-replay', 'mix-busy', 'mix-stale', 'mix-a-new', 'mix-replay', 'mix-expired'],
                       ARRAY['body-1', 'body-1', 'body-1', 'body-1', 'body-1', 'body-2', 'body-1'],
                       ARRAY[101, 102, 103, 104, 105, 106, 107]::bigint[]) m;
SELECT results_eq($$ SELECT pos::int, ord, result FROM mix $$,
                  $$ VALUES (1, 1, 'new'), (2, 2, 'replay'), (3, 3, 'in_progress'), (4, 4, 'recover'), (5, 5, 'new'),
                            (6, 6, 'reused'), (7, 7, 'new') $$,
                  'regression: a batch of new, replay, in_progress, recover, reused and expired keys answers each, rows in ordinal order');
SELECT results_eq($$ SELECT m.order_id, m.response_status, m.response_body, m.completed_at_ms, m.lock_token
                       FROM mix m WHERE m.ord = 2 $$,
                  $$ SELECT b.order_id, 201, b.response_body, (extract(epoch FROM b.completed_at) * 1000)::bigint, NULL::uuid
                       FROM before b WHERE b.key = 'mix-replay' $$,
                  'the replay item gets the stored response and when it was stored');
SELECT results_eq($$ SELECT m.order_id, m.lock_token IS NULL FROM mix m WHERE m.ord = 3 $$,
                  $$ SELECT b.order_id, true FROM before b WHERE b.key = 'mix-busy' $$,
                  'the in_progress item gets the running order and no token');
SELECT results_eq($$ SELECT m.order_id, m.lock_token = k.lock_token, m.lock_token <> b.lock_token, k.locked_at = now()
                       FROM mix m, idempotency_keys k, before b
                      WHERE m.ord = 4 AND k.key = 'mix-stale' AND b.key = 'mix-stale' $$,
                  $$ SELECT b.order_id, true, true, true FROM before b WHERE b.key = 'mix-stale' $$,
                  'the recover item takes the stale lock over with a new token, for the same order');
SELECT results_eq($$ SELECT m.ord, m.order_id = k.order_id, m.lock_token = k.lock_token, k.state, o.amount_cents, o.status
                       FROM mix m JOIN (VALUES (1, 'mix-z-new'), (5, 'mix-a-new'), (7, 'mix-expired')) AS w(ord, key) ON w.ord = m.ord
                       JOIN idempotency_keys k ON k.key = w.key
                       JOIN orders o ON o.id = m.order_id
                      ORDER BY m.ord $$,
                  $$ VALUES (1, true, true, 'in_progress', 101::bigint, 'PROCESSING'),
                            (5, true, true, 'in_progress', 105::bigint, 'PROCESSING'),
                            (7, true, true, 'in_progress', 107::bigint, 'PROCESSING') $$,
                  'the new items (two fresh keys, one expired key replaced) hold their new orders under their tokens');
SELECT is((SELECT count(*) FROM orders) - (SELECT n FROM orders_before), 3::bigint,
          'the batch created exactly the three new orders');

-- checkout_begin_many: the same calls one after the other --------------------------
-- 40 items over 5 keys and 2 bodies, in an order that is not key order: the
-- batch's results, item by item, are those of the single calls made in
-- ordinal order (on other keys).
CREATE TEMP TABLE seq AS
    SELECT i, 'seq-' || (i * 7 % 5) AS k, CASE WHEN i % 4 = 0 THEN 'body-2' ELSE 'body-1' END AS label
      FROM generate_series(1, 40) i;
CREATE TEMP TABLE seq_single (i int, result text);
DO $$
DECLARE
    s record;
BEGIN
    FOR s IN SELECT * FROM seq ORDER BY i LOOP
        INSERT INTO seq_single SELECT s.i, c.result FROM pg_temp.cb('single-' || s.k, s.label) c;
    END LOOP;
END
$$;
SELECT results_eq($$ SELECT ord, result FROM pg_temp.cbm(ARRAY(SELECT 'batch-' || k FROM seq ORDER BY i),
                                                         ARRAY(SELECT label FROM seq ORDER BY i)) $$,
                  $$ SELECT i, result FROM seq_single ORDER BY i $$,
                  'regression: a batch answers item by item as the same calls made one after the other');

-- checkout_finish_many ----------------------------------------------------------
DO $$ BEGIN PERFORM pg_temp.cb(k) FROM unnest(ARRAY['fin-a', 'fin-b', 'fin-c', 'fin-d', 'fin-e']) AS k; END $$;
CREATE TEMP TABLE fin_items (i int, k text, tok uuid, outcome text, cap bigint);
INSERT INTO fin_items VALUES
    (1, 'fin-d', pg_temp.tok_of('fin-d'), 'succeeded',   10000),
    (2, 'fin-c', gen_random_uuid(),       'declined',    10000),   -- a token that lost its lock
    (3, 'fin-d', pg_temp.tok_of('fin-d'), 'declined',    10000),   -- the same finish again
    (4, 'fin-b', pg_temp.tok_of('fin-b'), 'unavailable', 100),     -- amount >= cap
    (5, 'fin-a', pg_temp.tok_of('fin-a'), 'declined',    10000);
CREATE TEMP TABLE fm AS
    SELECT row_number() OVER () AS pos, f.*
      FROM checkout_finish_many(ARRAY(SELECT pg_temp.oid_of(k) FROM fin_items ORDER BY i),
                                ARRAY(SELECT k FROM fin_items ORDER BY i),
                                ARRAY(SELECT tok FROM fin_items ORDER BY i),
                                ARRAY(SELECT outcome FROM fin_items ORDER BY i),
                                ARRAY(SELECT 'ch_' || i FROM fin_items ORDER BY i),
                                ARRAY(SELECT cap FROM fin_items ORDER BY i)) f;
SELECT results_eq($$ SELECT pos::int, ord, result, status, response_status, reversal FROM fm $$,
                  $$ VALUES (1, 1, 'finished', 'PAID', 201, false),
                            (2, 2, 'stale', NULL, NULL, false),
                            (3, 3, 'replay', 'PAID', 201, false),
                            (4, 4, 'finished', 'FAILED', 201, true),
                            (5, 5, 'finished', 'FAILED', 201, false) $$,
                  'regression: a batch of finishes with a stale token and a second finish of one key: finished, stale, replay, in ordinal order');
SELECT results_eq($$ SELECT response_body, completed_at_ms FROM fm WHERE ord = 3 $$,
                  $$ SELECT response_body, completed_at_ms FROM fm WHERE ord = 1 $$,
                  'the second finish of a key in one batch replays the first one''s answer');
SELECT results_eq($$ SELECT k.state, k.lock_token, o.status, o.provider_charge_id FROM idempotency_keys k JOIN orders o ON o.id = k.order_id
                      WHERE k.key = 'fin-c' $$,
                  $$ SELECT 'in_progress', pg_temp.tok_of('fin-c'), 'PROCESSING', NULL::text $$,
                  'the stale item changed nothing');
SELECT results_eq($$ SELECT k.key, o.status, o.failure_reason, o.provider_charge_id, k.response_body = order_json(o),
                            (SELECT count(*) FROM ledger_transactions t WHERE t.order_id = o.id AND t.kind = 'payment'),
                            (SELECT v.status FROM order_reversals v WHERE v.order_id = o.id)
                       FROM idempotency_keys k JOIN orders o ON o.id = k.order_id
                      WHERE k.key IN ('fin-a', 'fin-b', 'fin-d') ORDER BY k.key $$,
                  $$ VALUES ('fin-a', 'FAILED', 'declined', 'ch_5', true, 0::bigint, NULL::text),
                            ('fin-b', 'FAILED', 'provider_unavailable', 'ch_4', true, 0::bigint, 'pending'),
                            ('fin-d', 'PAID', NULL, 'ch_1', true, 1::bigint, NULL::text) $$,
                  'each finished item moved its order: one payment, one reversal, answers stored on the keys');

-- checkout_finish_many, set-based: every outcome at once --------------------------
-- A batch of well-formed items on distinct keys (the set-based path) answers,
-- item by item, and leaves the database, exactly as the same checkout_finish
-- calls made one after the other: once with single calls on keys eq1-*,
-- once as one batch on keys eq2-*.
CREATE FUNCTION pg_temp.fin_scenario(p text)
RETURNS TABLE (i int, k text, order_id uuid, tok uuid, outcome text, charge_id text, cap bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT * FROM (VALUES
        (1, 'paid', 'succeeded', 10000), (2, 'declined', 'declined', 10000),
        (3, 'pending', 'unavailable', 10000), (4, 'capped', 'unavailable', 100),
        (5, 'notch', 'not_charged', NULL), (6, 'whpaid', 'succeeded', 10000),
        (7, 'whfail', 'succeeded', 10000), (8, 'stale', 'declined', 10000),
        (9, 'done', 'succeeded', 10000), (10, 'refunded', 'succeeded', 10000),
        (11, 'canceled', 'succeeded', 10000), (12, 'nocharge', 'succeeded', 10000))
        AS x(i, label, outcome, cap)
    LOOP
        PERFORM pg_temp.cb(p || '-' || v.label);
        i := v.i; k := p || '-' || v.label; order_id := pg_temp.oid_of(k); tok := pg_temp.tok_of(k);
        outcome := v.outcome; cap := v.cap;
        charge_id := CASE WHEN v.label <> 'nocharge' THEN 'ch_' || v.i END;
        IF v.label = 'whpaid' THEN
            PERFORM webhook_apply(k || '-evt', order_id, 'PAID', '{}');
        ELSIF v.label IN ('whfail', 'refunded', 'canceled') THEN
            PERFORM webhook_apply(k || '-evt', order_id, 'FAILED', '{}');
            IF v.label <> 'whfail' THEN
                PERFORM pg_temp.mk_reversal(order_id, v.label);
            END IF;
        ELSIF v.label = 'stale' THEN
            tok := gen_random_uuid();
        ELSIF v.label = 'done' THEN
            PERFORM checkout_finish(order_id, k, tok, 'declined', NULL, 0);
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
CREATE TEMP TABLE eq1 AS SELECT * FROM pg_temp.fin_scenario('eq1');
CREATE TEMP TABLE eq2 AS SELECT * FROM pg_temp.fin_scenario('eq2');
CREATE TEMP TABLE eq1_out AS
    SELECT e.i AS ord, f.* FROM eq1 e, LATERAL checkout_finish(e.order_id, e.k, e.tok, e.outcome, e.charge_id, e.cap) f
     ORDER BY e.i;
CREATE TEMP TABLE eq2_out AS
    SELECT * FROM checkout_finish_many(ARRAY(SELECT order_id FROM eq2 ORDER BY i), ARRAY(SELECT k FROM eq2 ORDER BY i),
                                       ARRAY(SELECT tok FROM eq2 ORDER BY i), ARRAY(SELECT outcome FROM eq2 ORDER BY i),
                                       ARRAY(SELECT charge_id FROM eq2 ORDER BY i), ARRAY(SELECT cap FROM eq2 ORDER BY i));
-- One row per item: the answer, whether its body is the key's stored one
-- (and the order's JSON as it is now), and what the item left behind.
CREATE FUNCTION pg_temp.fin_view(p text) RETURNS TABLE (line text) LANGUAGE sql AS $$
    SELECT concat_ws(' | ', x.ord, x.result, x.status, x.response_status, x.reversal,
                     x.response_body IS NOT DISTINCT FROM ik.response_body,
                     ik.response_body = order_json(o),
                     x.completed_at_ms IS NOT DISTINCT FROM (extract(epoch FROM ik.completed_at) * 1000)::bigint,
                     ik.state, o.status, o.failure_reason, o.provider_charge_id,
                     (SELECT count(*) FROM ledger_transactions t WHERE t.order_id = o.id),
                     (SELECT r.status FROM order_reversals r WHERE r.order_id = o.id))
      FROM (SELECT * FROM eq1_out WHERE p = 'eq1' UNION ALL SELECT * FROM eq2_out WHERE p = 'eq2') x
      JOIN (SELECT * FROM eq1 WHERE p = 'eq1' UNION ALL SELECT * FROM eq2 WHERE p = 'eq2') e ON e.i = x.ord
      JOIN idempotency_keys ik ON ik.key = e.k
      JOIN orders o ON o.id = e.order_id
     ORDER BY x.ord
$$;
SELECT results_eq($$ SELECT line FROM pg_temp.fin_view('eq2') $$, $$ SELECT line FROM pg_temp.fin_view('eq1') $$,
                  'a set-based finish batch answers and writes as the same single calls one after the other');
SELECT results_eq($$ SELECT ord, result, status, reversal FROM eq2_out $$,
                  $$ VALUES (1, 'finished', 'PAID', false), (2, 'finished', 'FAILED', false),
                            (3, 'finished', 'PENDING_PAYMENT', false), (4, 'finished', 'FAILED', true),
                            (5, 'finished', 'FAILED', true), (6, 'finished', 'PAID', false),
                            (7, 'finished', 'FAILED', true), (8, 'stale', NULL, false),
                            (9, 'replay', 'FAILED', false), (10, 'finished', 'FAILED', false),
                            (11, 'finished', 'FAILED', true), (12, 'finished', 'PAID', false) $$,
                  'the batch: paid, declined, pending, capped, not charged, webhook first (paid, failed, refunded, canceled), stale, replay');
SELECT results_eq($$ SELECT count(*) FILTER (WHERE t.kind = 'payment'), count(DISTINCT t.order_id) FILTER (WHERE t.kind = 'payment')
                       FROM ledger_transactions t JOIN eq2 e ON e.order_id = t.order_id $$,
                  $$ VALUES (3::bigint, 3::bigint) $$,
                  'one payment each for the three paid orders, none twice');
SELECT pg_temp.passes('SET CONSTRAINTS ALL IMMEDIATE', 'the set-based batch passes the commit-time checks');

-- webhook_apply_many ------------------------------------------------------------
CREATE TEMP TABLE wo AS SELECT pg_temp.mk_order() AS p1, pg_temp.mk_order('FAILED') AS failed,
                               pg_temp.mk_order(p_amount => 900) AS p2;
CREATE TEMP TABLE wh_items (i int, event_id text, order_id uuid, outcome text);
INSERT INTO wh_items SELECT v.i, v.e, v.o, v.outcome FROM wo, LATERAL (VALUES
    (1, 'bevt-1', p1,                'PAID'),
    (2, 'bevt-1', p1,                'PAID'),     -- the same delivery twice
    (3, 'bevt-2', failed,            'PAID'),     -- money for an order we refused
    (4, 'bevt-3', p2,                'FAILED'),
    (5, 'bevt-4', p2,                'PAID'),     -- after item 4 failed it
    (6, 'bevt-5', gen_random_uuid(), 'PAID'),
    (7, 'bevt-1', gen_random_uuid(), 'PAID')) AS v(i, e, o, outcome);
CREATE TEMP TABLE wm AS
    SELECT row_number() OVER () AS pos, w.*
      FROM webhook_apply_many(ARRAY(SELECT event_id FROM wh_items ORDER BY i),
                              ARRAY(SELECT order_id FROM wh_items ORDER BY i),
                              ARRAY(SELECT outcome FROM wh_items ORDER BY i),
                              ARRAY(SELECT '{"event_id":"' || event_id || '"}' FROM wh_items ORDER BY i)) w;
SELECT results_eq($$ SELECT pos::int, ord, result, order_status, conflict, reversal, amount_cents, currency FROM wm $$,
                  $$ VALUES (1, 1, 'applied',     'PAID',   false, false, 5000::bigint, 'EUR'),
                            (2, 2, 'duplicate',   'PAID',   false, false, 5000::bigint, 'EUR'),
                            (3, 3, 'not_applied', 'FAILED', true,  true,  5000::bigint, 'EUR'),
                            (4, 4, 'applied',     'FAILED', false, false, 900::bigint,  'EUR'),
                            (5, 5, 'not_applied', 'FAILED', true,  true,  900::bigint,  'EUR'),
                            (6, 6, 'not_found',   NULL,     false, false, NULL::bigint, NULL::text),
                            (7, 7, 'duplicate',   NULL,     false, false, NULL::bigint, NULL::text) $$,
                  'regression: a webhook batch with an event twice and a PAID for a FAILED order: applied, duplicate, not_applied with reversal, in ordinal order');
SELECT results_eq($$ SELECT event_id, count(*), min(payload) FROM webhook_events WHERE event_id LIKE 'bevt-%' GROUP BY 1 ORDER BY 1 $$,
                  $$ VALUES ('bevt-1', 1::bigint, '{"event_id":"bevt-1"}'), ('bevt-2', 1::bigint, '{"event_id":"bevt-2"}'),
                            ('bevt-3', 1::bigint, '{"event_id":"bevt-3"}'), ('bevt-4', 1::bigint, '{"event_id":"bevt-4"}') $$,
                  'each event is recorded once');
SELECT results_eq($$ SELECT (SELECT count(*) FROM ledger_transactions t WHERE t.order_id = p1),
                            (SELECT string_agg(v.order_id::text || ':' || v.status, ',' ORDER BY v.order_id)
                               FROM order_reversals v WHERE v.order_id IN (failed, p2))
                       FROM wo $$,
                  $$ SELECT 1::bigint, string_agg(x::text || ':pending', ',' ORDER BY x) FROM wo, unnest(ARRAY[failed, p2]) x $$,
                  'one payment for the paid order; a pending reversal for each PAID event on a FAILED order');

-- order_get_many ----------------------------------------------------------------
SELECT results_eq($$ SELECT g.ord, g.body FROM wo, order_get_many(ARRAY[wo.p2, gen_random_uuid(), NULL, wo.p1]) g $$,
                  $$ SELECT v.* FROM wo, LATERAL (VALUES (1, order_get(wo.p2)), (2, NULL), (3, NULL), (4, order_get(wo.p1))) AS v(ord, body) $$,
                  'order_get_many: each order''s JSON, NULL for an unknown or NULL id, in ordinal order');
SELECT is((SELECT count(body) FROM order_get_many(ARRAY(SELECT p1 FROM wo, generate_series(1, 1000)))), 1000::bigint,
          'a batch may hold 1000 items');

-- A bad item fails the whole batch -------------------------------------------------
-- (the worker validates every call before it queues it, so this is a bug;
-- no item of the batch is stored)
SELECT pg_temp.throws(
    $$ SELECT * FROM checkout_begin_many(ARRAY['bad-1', 'bad-2'], ARRAY[repeat('a', 64), 'not-hex'],
           ARRAY['b', 'b'], ARRAY['s', 's'], ARRAY[1, 1]::bigint[], ARRAY['EUR', 'EUR'], ARRAY['trusted', 'trusted'],
           ARRAY['30 s', '30 s']::interval[], ARRAY['1 d', '1 d']::interval[]) $$,
    '22023', 'checkout_begin: p_fingerprint must be%', 'a begin batch with a malformed item fails whole with that item''s error');
SELECT pg_temp.throws(
    $$ SELECT * FROM checkout_begin_many(ARRAY['bad-3', NULL], ARRAY[repeat('a', 64), repeat('a', 64)],
           ARRAY['b', 'b'], ARRAY['s', 's'], ARRAY[1, 1]::bigint[], ARRAY['EUR', 'EUR'], ARRAY['trusted', 'trusted'],
           ARRAY['30 s', '30 s']::interval[], ARRAY['1 d', '1 d']::interval[]) $$,
    '22004', 'checkout_begin: no argument may be NULL', 'a NULL element fails the batch with the single call''s 22004');
-- Two malformed items: the error is that of the first in ordinal order, as
-- the same calls made one after the other would raise (not the first in key
-- order, the order the items run in).
SELECT pg_temp.throws(
    $$ SELECT * FROM checkout_begin_many(ARRAY['bad-5', 'bad-4'], ARRAY['not-hex', repeat('a', 64)],
           ARRAY['b', NULL], ARRAY['s', 's'], ARRAY[1, 1]::bigint[], ARRAY['EUR', 'EUR'], ARRAY['trusted', 'trusted'],
           ARRAY['30 s', '30 s']::interval[], ARRAY['1 d', '1 d']::interval[]) $$,
    '22023', 'checkout_begin: p_fingerprint must be%',
    'regression: a begin batch with two malformed items fails with the error of the first in ordinal order');
SELECT is((SELECT count(*) FROM idempotency_keys WHERE key LIKE 'bad-%'), 0::bigint, 'no item of a failed batch was stored');
SELECT pg_temp.throws(
    format($$ SELECT * FROM checkout_finish_many(ARRAY[%L, %L]::uuid[], ARRAY['fin-e', 'no-such-key'], ARRAY[%L, %L]::uuid[],
                  ARRAY['succeeded', 'succeeded'], ARRAY[NULL, NULL]::text[], ARRAY[1, 1]::bigint[]) $$,
           pg_temp.oid_of('fin-e'), pg_temp.oid_of('fin-e'), pg_temp.tok_of('fin-e'), pg_temp.tok_of('fin-e')),
    'P0002', 'checkout_finish: no idempotency key no-such-key', 'a finish batch with an unknown key fails whole (P0002)');
SELECT is((SELECT state FROM idempotency_keys WHERE key = 'fin-e'), 'in_progress', 'and its good item did not finish');
SELECT pg_temp.throws(
    $$ SELECT * FROM webhook_apply_many(ARRAY['evt-ok', 'evt-bad'], ARRAY[gen_random_uuid(), gen_random_uuid()],
                                        ARRAY['PAID', 'REFUNDED'], ARRAY['{}', '{}']) $$,
    '22023', 'webhook_apply: p_outcome must be PAID or FAILED%', 'a webhook batch with an unknown outcome fails whole');

-- Array sizes --------------------------------------------------------------------
SELECT pg_temp.throws(q, '22023', pat, why)
  FROM (VALUES
    ($$ SELECT * FROM pg_temp.cbm(ARRAY['k1', 'k2'], ARRAY['body-1']) $$,
     'checkout_begin_many: the arrays must be one-dimensional, of one length, 1..1000 (lengths 2, 1, 2, 2, 2, 2, 2, 2, 2)',
     'checkout_begin_many: arrays of different lengths: 22023'),
    ($$ SELECT * FROM checkout_finish_many(ARRAY[gen_random_uuid()], ARRAY['k'], ARRAY[gen_random_uuid()],
                                           ARRAY['succeeded'], ARRAY[NULL]::text[], ARRAY[1, 2]::bigint[]) $$,
     'checkout_finish_many: the arrays must be%(lengths 1, 1, 1, 1, 1, 2)',
     'checkout_finish_many: arrays of different lengths: 22023'),
    ($$ SELECT * FROM webhook_apply_many(ARRAY['e1', 'e2'], ARRAY[gen_random_uuid(), gen_random_uuid()], ARRAY['PAID'],
                                         ARRAY['{}', '{}']) $$,
     'webhook_apply_many: the arrays must be%(lengths 2, 2, 1, 2)', 'webhook_apply_many: arrays of different lengths: 22023'),
    ($$ SELECT * FROM pg_temp.cbm(ARRAY[]::text[], ARRAY[]::text[]) $$,
     'checkout_begin_many: the arrays must be%(lengths 0, %', 'an empty batch: 22023'),
    ($$ SELECT * FROM order_get_many(ARRAY(SELECT gen_random_uuid() FROM generate_series(1, 1001))) $$,
     'order_get_many: the arrays must be%(lengths 1001)', 'a batch of 1001 items: 22023'),
    ($$ SELECT * FROM order_get_many(ARRAY[[gen_random_uuid()], [gen_random_uuid()]]) $$,
     'order_get_many: the arrays must be one-dimensional%(lengths 0)', 'a two-dimensional array: 22023'))
    AS v(q, pat, why);
SELECT pg_temp.throws(q, '22004', fn || ': no array may be NULL', fn || ': a NULL array: 22004')
  FROM (VALUES
    ('checkout_begin_many', $$ SELECT * FROM checkout_begin_many(ARRAY['k'], ARRAY[repeat('a', 64)], ARRAY['b'], ARRAY['s'],
                                 ARRAY[1]::bigint[], ARRAY['EUR'], ARRAY['trusted'], ARRAY['30 s']::interval[], NULL) $$),
    ('checkout_finish_many', $$ SELECT * FROM checkout_finish_many(NULL, ARRAY['k'], ARRAY[gen_random_uuid()],
                                  ARRAY['succeeded'], ARRAY[NULL]::text[], ARRAY[1]::bigint[]) $$),
    ('webhook_apply_many', $$ SELECT * FROM webhook_apply_many(ARRAY['e'], ARRAY[gen_random_uuid()], ARRAY['PAID'], NULL) $$),
    ('order_get_many', $$ SELECT * FROM order_get_many(NULL) $$)) AS v(fn, q);

-- Privileges ---------------------------------------------------------------------
SELECT function_privs_are(f, args, 'app', ARRAY['EXECUTE'], 'app may call ' || f)
  FROM (VALUES ('checkout_begin_many', ARRAY['text[]', 'text[]', 'text[]', 'text[]', 'bigint[]', 'text[]', 'text[]',
                                             'interval[]', 'interval[]']),
               ('checkout_finish_many', ARRAY['uuid[]', 'text[]', 'uuid[]', 'text[]', 'text[]', 'bigint[]']),
               ('webhook_apply_many', ARRAY['text[]', 'uuid[]', 'text[]', 'text[]']),
               ('order_get_many', ARRAY['uuid[]'])) AS v(f, args);
SELECT function_privs_are(f, args, 'app', ARRAY[]::text[], 'app may not call the internal helper ' || f)
  FROM (VALUES ('batch_len', ARRAY['anyarray']), ('batch_size', ARRAY['text', 'integer[]'])) AS v(f, args);
SELECT is(ARRAY(SELECT p.proname::text || ':' || p.proowner::regrole::text || ':' || p.prosecdef
                  FROM pg_proc p WHERE p.proname IN ('checkout_begin_many', 'checkout_finish_many', 'webhook_apply_many',
                                                     'order_get_many', 'batch_len', 'batch_size')
                 ORDER BY 1),
          ARRAY['batch_len:paymentsd_owner:false', 'batch_size:paymentsd_owner:false',
                'checkout_begin_many:paymentsd_owner:true', 'checkout_finish_many:paymentsd_owner:true',
                'order_get_many:paymentsd_owner:true', 'webhook_apply_many:paymentsd_owner:true'],
          'the batch functions belong to paymentsd_owner and run as it (SECURITY DEFINER); the helpers do not');
SELECT is(pg_temp.as_app($$ SELECT string_agg(ord || ':' || result, ',')
                              FROM checkout_begin_many(ARRAY['app-1', 'app-1'], ARRAY[repeat('a', 64), repeat('b', 64)],
                                       ARRAY['b', 'b'], ARRAY['s', 's'], ARRAY[1, 1]::bigint[], ARRAY['EUR', 'EUR'],
                                       ARRAY['trusted', 'trusted'], ARRAY['30 s', '30 s']::interval[],
                                       ARRAY['1 d', '1 d']::interval[]) $$),
          '1:new,2:reused', 'app: checkout_begin_many works');
SELECT is(pg_temp.as_app(format($$ SELECT string_agg(ord || ':' || result || ':' || status, ',')
                                     FROM checkout_finish_many(ARRAY[%L]::uuid[], ARRAY['app-1'], ARRAY[%L]::uuid[],
                                              ARRAY['succeeded'], ARRAY['ch_app'], ARRAY[10000]::bigint[]) $$,
                                pg_temp.oid_of('app-1'), pg_temp.tok_of('app-1'))),
          '1:finished:PAID', 'app: checkout_finish_many works');
SELECT is(pg_temp.as_app(format($$ SELECT string_agg(ord || ':' || result, ',')
                                     FROM webhook_apply_many(ARRAY['app-evt'], ARRAY[%L]::uuid[], ARRAY['PAID'], ARRAY['{}']) $$,
                                pg_temp.oid_of('app-1'))),
          '1:not_applied', 'app: webhook_apply_many works');
SELECT is(pg_temp.as_app(format($$ SELECT string_agg(ord || ':' || (body::json ->> 'status'), ',')
                                     FROM order_get_many(ARRAY[%L]::uuid[]) $$, pg_temp.oid_of('app-1'))),
          '1:PAID', 'app: order_get_many works');

SELECT pg_temp.passes('SET CONSTRAINTS ALL IMMEDIATE', 'what the batches did passes the commit-time checks');

-- The write batches plan their statements once per session (generic plans):
-- planned again on every call they cost the planner a tenth of the database's
-- CPU per checkout.
SELECT is((SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p
           WHERE p.proname IN ('checkout_begin_many', 'checkout_finish_many', 'webhook_apply_many')
             AND 'plan_cache_mode=force_generic_plan' = ANY (p.proconfig)),
          ARRAY['checkout_begin_many', 'checkout_finish_many', 'webhook_apply_many'],
          'the write batches run with generic plans');

SELECT * FROM finish();
ROLLBACK;
