-- Housekeeper functions: purge_expired_idempotency_keys (TTL from
-- completion), checkout_claim_stale (a new lock token per claim),
-- pending_orders_due, and the duration floors, for app too.  (SKIP LOCKED
-- between sessions: concurrency.sh; reversals_due: 08_reversals.sql.)
BEGIN;
\ir helpers.psql
SELECT plan(52);

-- A key in the given state for a new order (or the given one): an
-- in-progress key holds a lock token, a completed one was answered
-- p_completed_ago (default: when it was created).
CREATE FUNCTION pg_temp.mk_key(p_key text, p_state text, p_created_ago interval, p_locked_ago interval,
                               p_order uuid DEFAULT NULL, p_completed_ago interval DEFAULT NULL)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v uuid := coalesce(p_order, pg_temp.mk_order());
BEGIN
    INSERT INTO idempotency_keys (key, fingerprint, state, order_id, created_at, locked_at,
                                  response_status, response_body, lock_token, completed_at)
    VALUES (p_key, pg_temp.fp(p_key), p_state, v, now() - p_created_ago, now() - p_locked_ago,
            CASE WHEN p_state = 'completed' THEN 201 END,
            CASE WHEN p_state = 'completed' THEN '{"stored":true}' END,
            CASE WHEN p_state = 'in_progress' THEN gen_random_uuid() END,
            CASE WHEN p_state = 'completed' THEN now() - coalesce(p_completed_ago, p_created_ago) END);
    RETURN v;
END
$$;

-- purge_expired_idempotency_keys --------------------------------------------
-- The TTL counts from completed_at: creation times are deliberately in the
-- other order, and older than any TTL here.
DO $$
BEGIN
    PERFORM pg_temp.mk_key('c-old-1', 'completed', interval '40 days', interval '40 days', NULL, interval '25 hours');
    PERFORM pg_temp.mk_key('c-old-2', 'completed', interval '35 days', interval '35 days', NULL, interval '26 hours');
    PERFORM pg_temp.mk_key('c-old-3', 'completed', interval '30 days', interval '30 days', NULL, interval '27 hours');
    PERFORM pg_temp.mk_key('c-fresh', 'completed', interval '50 days', interval '50 days', NULL, interval '23 hours');
    PERFORM pg_temp.mk_key('ip-old', 'in_progress', interval '3 days', interval '3 days');
END
$$;

SELECT is(purge_expired_idempotency_keys('24 hours', 2), 2, 'purge deletes at most p_limit keys');
SELECT is(ARRAY(SELECT key FROM idempotency_keys WHERE key LIKE 'c-old-%' ORDER BY key), ARRAY['c-old-1'],
          'the oldest answers go first (completed_at, not created_at)');
SELECT is(purge_expired_idempotency_keys('24 hours', 2), 1, 'the next batch gets the rest');
SELECT is(purge_expired_idempotency_keys('24 hours', 2), 0, 'then nothing is left to purge');
SELECT is(ARRAY(SELECT key FROM idempotency_keys ORDER BY key), ARRAY['c-fresh', 'ip-old'],
          'keys answered inside the TTL (however old) and in-progress keys (however old) are kept');
SELECT is((SELECT count(*) FROM orders), 5::bigint, 'purging keys deletes no order');
SELECT is(purge_expired_idempotency_keys('22 hours', 100), 1, 'a shorter TTL purges younger keys');
SELECT pg_temp.throws(format('SELECT purge_expired_idempotency_keys(%s)', a.args), a.code, a.pat, a.why)
  FROM (VALUES ($$NULL, 10$$,        '22004', '%no argument may be NULL', 'purge rejects a NULL TTL'),
               ($$'1 h', NULL$$,     '22004', '%no argument may be NULL', 'purge rejects a NULL limit'),
               ($$'0 s', 10$$,       '22023', 'purge_expired_idempotency_keys: the idempotency TTL must be at least 1 minute', 'purge rejects a TTL of 0'),
               ($$'-1 h', 10$$,      '22023', 'purge_expired_idempotency_keys: the idempotency TTL must be at least 1 minute', 'purge rejects a negative TTL'),
               ($$'59 s', 10$$,      '22023', 'purge_expired_idempotency_keys: the idempotency TTL must be at least 1 minute', 'purge rejects a TTL under the floor (59 s)'),
               ($$'1 h', 0$$,        '22023', '%p_limit must be positive',  'purge rejects a limit of 0')) AS a(args, code, pat, why);

-- The floor holds for whoever calls: app (whose password the workers hold)
-- cannot expire a key early and have it charged twice.
DO $$
BEGIN
    PERFORM pg_temp.mk_key('c-2min', 'completed', interval '2 min', interval '2 min');
    PERFORM pg_temp.mk_key('c-30s', 'completed', interval '30 s', interval '30 s');
END
$$;
SELECT pg_temp.throws($$ SELECT pg_temp.as_app('SELECT purge_expired_idempotency_keys(''59 seconds'', 100)') $$,
    '22023', 'purge_expired_idempotency_keys: the idempotency TTL must be at least 1 minute',
    'regression: app cannot purge keys with a TTL under 1 minute');
SELECT pg_temp.throws($$ SELECT pg_temp.as_app('SELECT purge_expired_idempotency_keys(''1 ms'', 100)') $$,
    '22023', 'purge_expired_idempotency_keys: the idempotency TTL must be at least 1 minute',
    'nor with a TTL of 1 ms');
SELECT is(ARRAY(SELECT key FROM idempotency_keys WHERE key IN ('c-2min', 'c-30s') ORDER BY key), ARRAY['c-2min', 'c-30s'],
          'the young keys are still there');
SELECT is(pg_temp.as_app($$ SELECT purge_expired_idempotency_keys('1 minute', 100) $$), '1',
          'a TTL of exactly 1 minute is allowed (and purges the key answered 2 minutes ago)');
SELECT is(ARRAY(SELECT key FROM idempotency_keys WHERE key IN ('c-2min', 'c-30s')), ARRAY['c-30s'],
          'only that one');

-- checkout_claim_stale --------------------------------------------------------
DELETE FROM idempotency_keys;
CREATE TEMP TABLE s AS SELECT
    pg_temp.mk_key('s1', 'in_progress', interval '6 min', interval '5 min',
                   pg_temp.mk_order('PROCESSING', 1111, 'USD')) AS s1,          -- stale, oldest
    pg_temp.mk_key('s2', 'in_progress', interval '6 min', interval '2 min') AS s2, -- stale
    pg_temp.mk_key('s3', 'in_progress', interval '6 min', interval '10 s') AS s3,  -- fresh lock
    pg_temp.mk_key('s4', 'in_progress', interval '6 min', interval '5 min',
                   pg_temp.mk_order('PAID')) AS s4,                               -- stale, order final
    pg_temp.mk_key('s5', 'completed', interval '6 min', interval '5 min') AS s5,   -- done
    pg_temp.mk_key('s6', 'in_progress', interval '2 hours', interval '1 hour',
                   pg_temp.mk_order('FAILED')) AS s6;                             -- stale, order final

CREATE TEMP TABLE tok0 AS SELECT key, lock_token FROM idempotency_keys;   -- the dead workers' tokens
CREATE TEMP TABLE c1 AS SELECT * FROM checkout_claim_stale('30 seconds', 1);
SELECT results_eq($$ SELECT key, order_id, amount_cents, currency FROM c1 $$,
                  format($$ VALUES ('s1', %L::uuid, 1111::bigint, 'USD') $$, s1),
                  'claim_stale hands out the stalest key of a PROCESSING order, with amount and currency')
  FROM s;
SELECT ok((SELECT c1.lock_token IS NOT NULL AND c1.lock_token <> tok0.lock_token
             FROM c1 JOIN tok0 USING (key)),
          'with a new lock token');
SELECT results_eq($$ SELECT locked_at, lock_token FROM idempotency_keys WHERE key = 's1' $$,
                  $$ SELECT now(), lock_token FROM c1 $$,
                  'and takes its lock over (locked_at = now(), the new token)');
SELECT results_eq($$ SELECT key, state, response_status, response_body, completed_at FROM idempotency_keys WHERE key = 's6' $$,
                  format($$ VALUES ('s6', 'completed', 201, %L, now()) $$, order_get(s6)),
                  'a stale key whose order is already final is completed with the order as it is, completed now')
  FROM s;
SELECT is((SELECT state FROM idempotency_keys WHERE key = 's4'), 'in_progress',
          'p_limit applies to those too (the stalest first)');
SELECT results_eq($$ SELECT key FROM checkout_claim_stale('30 seconds', 10) $$, $$ VALUES ('s2') $$,
                  'the next call: the other stale key (s1 is locked again now, s3 is fresh)');
SELECT results_eq($$ SELECT state, response_body::json ->> 'status' FROM idempotency_keys WHERE key = 's4' $$,
                  $$ VALUES ('completed', 'PAID') $$, 'and the other final one is completed');
SELECT is((SELECT count(*) FROM checkout_claim_stale('30 seconds', 10)), 0::bigint, 'then nothing is stale');
SELECT results_eq($$ SELECT key, state, locked_at FROM idempotency_keys WHERE key IN ('s3', 's5') ORDER BY key $$,
                  $$ VALUES ('s3', 'in_progress', now() - interval '10 s'), ('s5', 'completed', now() - interval '5 min') $$,
                  'fresh and completed keys are left alone');
SELECT is((SELECT count(*) FROM orders o JOIN s ON o.id IN (s1, s2, s3) WHERE o.status = 'PROCESSING'), 3::bigint,
          'claiming changes no order');
SELECT is((SELECT result FROM checkout_begin('s1', pg_temp.fp('s1'), 'b', 's', 1, 'EUR', 'trusted', '30 s', '1 d')),
          'in_progress', 'a client retry of a claimed key sees it in progress');
-- The worker that held s1 was not dead after all, and comes back:
SELECT results_eq(format($$ SELECT result, status FROM checkout_finish(%L, 's1', %L, 'succeeded', 'ch_zombie', 10000) $$,
                         s1, (SELECT lock_token FROM tok0 WHERE key = 's1')),
                  $$ VALUES ('stale', NULL::text) $$, 'the old holder''s finish is stale after a claim')
  FROM s;
-- Each claim is a new lock: a second housekeeper's claim outdates the first.
CREATE TEMP TABLE s2_first AS SELECT lock_token FROM idempotency_keys WHERE key = 's2';
UPDATE idempotency_keys SET locked_at = now() - interval '1 hour' WHERE key = 's2';
CREATE TEMP TABLE c2 AS SELECT * FROM checkout_claim_stale('30 seconds', 10);
SELECT results_eq($$ SELECT c2.key, c2.lock_token <> s2_first.lock_token, c2.lock_token = k.lock_token
                       FROM c2, s2_first, idempotency_keys k WHERE k.key = 's2' $$,
                  $$ VALUES ('s2', true, true) $$, 'a key claimed again gets another new token');
-- The housekeeper learned the provider never saw the charge:
SELECT results_eq(format($$ SELECT result, status, response_body::json ->> 'failure_reason', reversal
                              FROM checkout_finish(%L, 's1', %L, 'not_charged', NULL, 0) $$,
                         s1, (SELECT lock_token FROM c1)),
                  $$ VALUES ('finished', 'FAILED', 'provider_unavailable', true) $$,
                  'then finishes it with its token: not_charged -> FAILED provider_unavailable, with a reversal to ask for')
  FROM s;
SELECT results_eq($$ SELECT result, response_body::json ->> 'status' FROM checkout_begin('s1', pg_temp.fp('s1'), 'b', 's', 1, 'EUR', 'trusted', '30 s', '1 d') $$,
                  $$ VALUES ('replay', 'FAILED') $$, 'and the client''s retry replays that answer');
SELECT pg_temp.throws(format('SELECT * FROM checkout_claim_stale(%s)', a.args), a.code, a.pat, a.why)
  FROM (VALUES ($$NULL, 10$$,    '22004', '%no argument may be NULL', 'claim_stale rejects a NULL lock timeout'),
               ($$'30 s', NULL$$, '22004', '%no argument may be NULL', 'claim_stale rejects a NULL limit'),
               ($$'0 s', 10$$,    '22023', 'checkout_claim_stale: the lock timeout must be at least 1 second', 'claim_stale rejects a lock timeout of 0'),
               ($$'999 ms', 10$$, '22023', 'checkout_claim_stale: the lock timeout must be at least 1 second', 'claim_stale rejects a lock timeout under the floor (999 ms)'),
               ($$'-1 h', 10$$,   '22023', 'checkout_claim_stale: the lock timeout must be at least 1 second', 'claim_stale rejects a negative lock timeout'),
               ($$'30 s', -1$$,   '22023', '%p_limit must be positive', 'claim_stale rejects a negative limit')) AS a(args, code, pat, why);
SELECT pg_temp.throws($$ SELECT pg_temp.as_app('SELECT count(*) FROM checkout_claim_stale(''1 ms'', 100)') $$,
    '22023', 'checkout_claim_stale: the lock timeout must be at least 1 second',
    'app cannot take live locks over with a lock timeout under 1 second');
SELECT is((SELECT result FROM checkout_begin('s3', pg_temp.fp('s3'), 'b', 's', 1, 'EUR', 'trusted', '30 s', '1 d')),
          'in_progress', 's3 (locked 10 s ago) is still its worker''s');
SELECT is((SELECT count(*) FROM checkout_claim_stale('1 second', 100) WHERE key = 's3'), 1::bigint,
          'a lock timeout of exactly 1 second is allowed');

-- pending_orders_due --------------------------------------------------------------
CREATE TEMP TABLE p AS SELECT
    pg_temp.mk_order('PENDING_PAYMENT', 2222, 'GBP') AS pend_old,
    pg_temp.mk_order('PENDING_PAYMENT', 3333, 'EUR') AS pend_older,
    pg_temp.mk_order('PENDING_PAYMENT')              AS pend_new,
    pg_temp.mk_order('PROCESSING')                   AS proc_old,
    pg_temp.mk_order('FAILED')                       AS failed_old;
DO $$
BEGIN
    PERFORM pg_temp.age_order(pend_old, interval '10 min'), pg_temp.age_order(pend_older, interval '20 min'),
            pg_temp.age_order(proc_old, interval '1 hour'), pg_temp.age_order(failed_old, interval '1 hour')
       FROM p;
END
$$;
SELECT results_eq($$ SELECT * FROM pending_orders_due('5 min', 10) $$,
                  format($$ VALUES (%L::uuid, 3333::bigint, 'EUR'), (%L::uuid, 2222::bigint, 'GBP') $$, pend_older, pend_old),
                  'pending_orders_due: PENDING_PAYMENT orders older than p_age, oldest first')
  FROM p;
SELECT results_eq($$ SELECT order_id FROM pending_orders_due('5 min', 1) $$,
                  format($$ VALUES (%L::uuid) $$, pend_older), 'p_limit caps the batch') FROM p;
SELECT is((SELECT count(*) FROM pending_orders_due('15 min', 10)), 1::bigint, 'p_age is honoured');
SELECT is((SELECT count(*) FROM pending_orders_due('0 s', 10)), 2::bigint,
          'p_age 0: every PENDING_PAYMENT order not updated in this very instant');
SELECT is((SELECT updated_at FROM orders WHERE id = pend_old), now() - interval '10 min',
          'pending_orders_due changes nothing') FROM p;
SELECT pg_temp.throws(format('SELECT * FROM pending_orders_due(%s)', a.args), a.code, a.pat, a.why)
  FROM (VALUES ($$NULL, 10$$,     '22004', '%no argument may be NULL', 'pending_orders_due rejects a NULL age'),
               ($$'5 min', NULL$$, '22004', '%no argument may be NULL', 'pending_orders_due rejects a NULL limit'),
               ($$'-1 s', 10$$,    '22023', '%p_age must not be negative%', 'pending_orders_due rejects a negative age'),
               ($$'5 min', 0$$,    '22023', '%p_limit must be positive', 'pending_orders_due rejects a limit of 0')) AS a(args, code, pat, why);

SELECT pg_temp.passes('SET CONSTRAINTS ALL IMMEDIATE', 'everything above passes the commit-time checks');

SELECT * FROM finish();
ROLLBACK;
