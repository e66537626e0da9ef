-- checkout_begin and checkout_finish: every result, every outcome, lock
-- tokens (a finish without the current one changes nothing), TTL expiry
-- counted from completion, stale-lock recovery, the reversal a FAILED
-- provider_unavailable order opens, charge ids that cannot be stored, and
-- input validation with the duration floors.  (Many sessions on one key at
-- once: concurrency.sh.)
BEGIN;
\ir helpers.psql
SELECT plan(120);

-- checkout_begin with the usual body; the fingerprint is derived from a label.
CREATE FUNCTION pg_temp.cb(p_key text, p_label text DEFAULT 'body-1', p_amount bigint DEFAULT 5000,
                           p_trust text DEFAULT 'trusted')
RETURNS TABLE (result text, order_id uuid, response_status int, response_body text, lock_token uuid,
               completed_at_ms bigint)
LANGUAGE sql AS $$
    SELECT * FROM checkout_begin(p_key, pg_temp.fp(p_label), 'buyer-1', 'seller-1', p_amount, 'EUR',
                                 p_trust, interval '30 seconds', interval '24 hours')
$$;

-- What checkout_begin answered, by label.
CREATE TEMP TABLE r (label text PRIMARY KEY, result text, order_id uuid, response_status int, response_body text,
                     lock_token uuid, completed_at_ms bigint);
CREATE FUNCTION pg_temp.keep(p_label text, q text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO r SELECT %L, * FROM (%s) x', p_label, q);
END
$$;
CREATE FUNCTION pg_temp.oid_of(p_label text) RETURNS uuid LANGUAGE sql AS $$
    SELECT order_id FROM r WHERE label = p_label
$$;
CREATE FUNCTION pg_temp.tok_of(p_label text) RETURNS uuid LANGUAGE sql AS $$
    SELECT lock_token FROM r WHERE label = p_label
$$;

-- What checkout_finish answered, by label.
CREATE TEMP TABLE f (label text PRIMARY KEY, result text, status text, response_status int, response_body text,
                     completed_at_ms bigint, reversal boolean);
CREATE FUNCTION pg_temp.fin(p_label text, p_order uuid, p_key text, p_token uuid, p_outcome text,
                            p_charge text DEFAULT NULL, p_cap bigint DEFAULT 10000) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO f SELECT p_label, * FROM checkout_finish(p_order, p_key, p_token, p_outcome, p_charge, p_cap)
$$;

-- A timestamp as the API reports it: Unix milliseconds.
CREATE FUNCTION pg_temp.ms(t timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (extract(epoch FROM t) * 1000)::bigint
$$;

-- new -------------------------------------------------------------------------
SELECT pg_temp.keep('new', $$ SELECT * FROM pg_temp.cb('key-1') $$);
SELECT is((SELECT result FROM r WHERE label = 'new'), 'new', 'begin on a fresh key: new');
SELECT isnt(pg_temp.oid_of('new'), NULL, 'new gives the new order id');
SELECT is((SELECT (response_status, response_body, completed_at_ms)::text FROM r WHERE label = 'new'), '(,,)',
          'new has no stored response');
SELECT isnt(pg_temp.tok_of('new'), NULL, 'new hands out a lock token');
SELECT results_eq(
    format($$ SELECT status, buyer_id, seller_id, amount_cents, currency::text, buyer_trust, failure_reason,
                     provider_charge_id, created_at = now() FROM orders WHERE id = %L $$, pg_temp.oid_of('new')),
    $$ VALUES ('PROCESSING', 'buyer-1', 'seller-1', 5000::bigint, 'EUR', 'trusted', NULL::text, NULL::text, true) $$,
    'new created the order, PROCESSING, with the request''s fields');
SELECT results_eq(
    $$ SELECT state, fingerprint, order_id, locked_at = now(), created_at = now(), lock_token, completed_at
         FROM idempotency_keys WHERE key = 'key-1' $$,
    format($$ VALUES ('in_progress', %L, %L::uuid, true, true, %L::uuid, NULL::timestamptz) $$,
           pg_temp.fp('body-1'), pg_temp.oid_of('new'), pg_temp.tok_of('new')),
    'new stored the key in_progress, locked now under its token, with its fingerprint and order');

-- in_progress -------------------------------------------------------------------
SELECT pg_temp.keep('again', $$ SELECT * FROM pg_temp.cb('key-1') $$);
SELECT results_eq($$ SELECT result, order_id, lock_token FROM r WHERE label = 'again' $$,
                  format($$ VALUES ('in_progress', %L::uuid, NULL::uuid) $$, pg_temp.oid_of('new')),
                  'same key and body while the first runs: in_progress, with its order id but not its lock token');
SELECT is((SELECT count(*) FROM orders), 1::bigint, 'in_progress created no order');
SELECT is((SELECT lock_token FROM idempotency_keys WHERE key = 'key-1'), pg_temp.tok_of('new'),
          'in_progress left the lock with its holder');

-- reused ---------------------------------------------------------------------
SELECT pg_temp.keep('reused', $$ SELECT * FROM pg_temp.cb('key-1', 'body-2', 7000) $$);
SELECT is((SELECT (result, order_id, response_status, response_body, lock_token, completed_at_ms)::text
             FROM r WHERE label = 'reused'),
          '(reused,,,,,)', 'same key, other body: reused, and no order id or token given away');
SELECT is((SELECT fingerprint FROM idempotency_keys WHERE key = 'key-1'), pg_temp.fp('body-1'),
          'reused changed nothing');

-- finish: succeeded -----------------------------------------------------------
SELECT pg_temp.fin('finish', pg_temp.oid_of('new'), 'key-1', pg_temp.tok_of('new'), 'succeeded', 'ch_1');
CREATE TEMP TABLE body1 AS SELECT response_body AS body FROM f WHERE label = 'finish';
SELECT results_eq($$ SELECT result, status, response_status, completed_at_ms, reversal FROM f WHERE label = 'finish' $$,
                  $$ VALUES ('finished', 'PAID', 201, pg_temp.ms(now()), false) $$,
                  'finish succeeded: finished, PAID, 201, answered now, no reversal');
SELECT is((SELECT body FROM body1), order_get(pg_temp.oid_of('new')), 'finish answers the order''s JSON');
SELECT results_eq(
    format($$ SELECT status, provider_charge_id FROM orders WHERE id = %L $$, pg_temp.oid_of('new')),
    $$ VALUES ('PAID', 'ch_1') $$, 'the order is PAID with the provider''s charge id');
SELECT results_eq(
    $$ SELECT state, response_status, response_body, completed_at FROM idempotency_keys WHERE key = 'key-1' $$,
    format($$ VALUES ('completed', 201, %L, now()) $$, (SELECT body FROM body1)),
    'the key is completed with the response, completed_at now');
SELECT results_eq(
    format($$ SELECT e.account, e.direction, e.amount_cents, e.currency::text
                FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.txn_id
               WHERE t.order_id = %L AND t.kind = 'payment' ORDER BY e.direction DESC $$, pg_temp.oid_of('new')),
    $$ VALUES ('cash', 'DEBIT', 5000::bigint, 'EUR'), ('seller_payable', 'CREDIT', 5000::bigint, 'EUR') $$,
    'finish succeeded wrote the payment: cash DEBIT, seller_payable CREDIT');
SELECT pg_temp.passes('SET CONSTRAINTS ALL IMMEDIATE', 'the paid checkout passes the commit-time checks');

-- replay ------------------------------------------------------------------------
SELECT pg_temp.keep('replay', $$ SELECT * FROM pg_temp.cb('key-1') $$);
SELECT results_eq($$ SELECT result, order_id, response_status, response_body, lock_token, completed_at_ms
                       FROM r WHERE label = 'replay' $$,
                  format($$ VALUES ('replay', %L::uuid, 201, %L, NULL::uuid, pg_temp.ms(now())) $$,
                         pg_temp.oid_of('new'), (SELECT body FROM body1)),
                  'same key and body after finish: replay of the stored response, with when it was stored');
SELECT is((SELECT result FROM pg_temp.cb('key-1', 'body-2')), 'reused', 'other body on a completed key: reused');

-- duplicate finish ----------------------------------------------------------
SELECT pg_temp.fin('dup', pg_temp.oid_of('new'), 'key-1', pg_temp.tok_of('new'), 'declined');
SELECT results_eq($$ SELECT result, status, response_status, response_body, completed_at_ms, reversal
                       FROM f WHERE label = 'dup' $$,
                  format($$ VALUES ('replay', 'PAID', 201, %L, pg_temp.ms(now()), false) $$, (SELECT body FROM body1)),
                  'a second finish returns the stored response unchanged (replay)');
SELECT pg_temp.fin('dup-other-token', pg_temp.oid_of('new'), 'key-1', gen_random_uuid(), 'declined');
SELECT results_eq($$ SELECT result, status FROM f WHERE label = 'dup-other-token' $$,
                  $$ VALUES ('replay', 'PAID') $$,
                  'a finish with another token on a completed key replays too');
SELECT is((SELECT count(*) FROM ledger_transactions), 1::bigint, 'a second finish writes no second payment');

-- finish: the other outcomes ------------------------------------------------
-- (key, amount, trust, outcome, cap) -> status, failure_reason, reversal
CREATE TEMP TABLE outcomes (k text, amount bigint, trust text, outcome text, cap bigint,
                            want_status text, want_reason text, want_reversal boolean, why text);
INSERT INTO outcomes VALUES
    ('o-declined',     5000, 'trusted',   'declined',    10000, 'FAILED', 'declined',             false, 'declined -> FAILED declined'),
    ('o-pending',      4999, 'trusted',   'unavailable',  5000, 'PENDING_PAYMENT', NULL,          false, 'unavailable, trusted, under the cap -> PENDING_PAYMENT'),
    ('o-at-cap',       5000, 'trusted',   'unavailable',  5000, 'FAILED', 'provider_unavailable', true,  'unavailable, trusted, amount = cap -> FAILED provider_unavailable, with a reversal'),
    ('o-untrusted',     100, 'untrusted', 'unavailable',  5000, 'FAILED', 'provider_unavailable', true,  'unavailable, untrusted -> FAILED provider_unavailable, with a reversal'),
    ('o-not-charged',   100, 'trusted',   'not_charged',  5000, 'FAILED', 'provider_unavailable', true,  'not_charged -> FAILED provider_unavailable, even under the cap, with a reversal');
SELECT pg_temp.keep(k, format($$ SELECT * FROM pg_temp.cb(%L, %L, %s, %L) $$, k, k, amount, trust)) FROM outcomes;
SELECT pg_temp.fin('f-' || k, pg_temp.oid_of(k), k, pg_temp.tok_of(k), outcome, NULL, cap) FROM outcomes;
SELECT results_eq(
    format($$ SELECT f.result, f.status, o.status, o.failure_reason, f.response_body::json ->> 'failure_reason',
                     (f.response_body::json ->> 'ready_to_ship')::boolean, f.response_body = order_json(o), f.reversal
                FROM f, orders o WHERE f.label = %L AND o.id = %L $$, 'f-' || k, pg_temp.oid_of(k)),
    format($$ VALUES ('finished', %L, %1$L, %L, %2$L, false, true, %L::boolean) $$, want_status, want_reason, want_reversal),
    why)
  FROM outcomes ORDER BY k;
SELECT is((SELECT count(*) FROM ledger_transactions t JOIN outcomes o ON t.order_id = pg_temp.oid_of(o.k)), 0::bigint,
          'no ledger for orders that are not PAID');
SELECT is((SELECT provider_charge_id FROM orders WHERE id = pg_temp.oid_of('o-declined')), NULL,
          'a NULL charge id stores nothing');

-- The reversal of a FAILED provider_unavailable order ------------------------
-- (unavailable means unknown: the provider may capture the charge after all)
SELECT results_eq(
    $$ SELECT o.k, v.status, v.amount_cents, v.currency::text, v.attempts, v.last_attempt_at
         FROM outcomes o JOIN order_reversals v ON v.order_id = pg_temp.oid_of(o.k) ORDER BY o.k $$,
    $$ VALUES ('o-at-cap', 'pending', 5000::bigint, 'EUR', 0, NULL::timestamptz),
              ('o-not-charged', 'pending', 100::bigint, 'EUR', 0, NULL::timestamptz),
              ('o-untrusted', 'pending', 100::bigint, 'EUR', 0, NULL::timestamptz) $$,
    'regression: a FAILED provider_unavailable order opens a reversal');
SELECT is((SELECT f.response_body::jsonb -> 'reversal' FROM f WHERE label = 'f-o-untrusted'),
          '{"status":"pending","amount_cents":100}'::jsonb,
          'the answer shows the pending reversal');
SELECT results_eq($$ SELECT f.result, f.response_body::jsonb -> 'reversal' FROM pg_temp.cb('o-untrusted', 'o-untrusted', 100, 'untrusted') f $$,
                  $$ VALUES ('replay', '{"status":"pending","amount_cents":100}'::jsonb) $$,
                  'and so does its replay');
SELECT is((SELECT count(*) FROM order_reversals WHERE order_id IN (pg_temp.oid_of('o-declined'), pg_temp.oid_of('o-pending'))),
          0::bigint, 'declined and PENDING_PAYMENT open no reversal');

-- The response is the one first sent, even after the order moves on ---------
SELECT results_eq($$ SELECT f.result, f.response_body::json ->> 'status' FROM pg_temp.cb('o-pending', 'o-pending', 4999) f $$,
                  $$ VALUES ('replay', 'PENDING_PAYMENT') $$, 'replay of a PENDING_PAYMENT checkout');
SELECT is((SELECT result FROM webhook_apply('evt-pending', pg_temp.oid_of('o-pending'), 'PAID', '{}')), 'applied',
          'the webhook makes it PAID');
SELECT results_eq($$ SELECT f.result, f.response_body::json ->> 'status' FROM pg_temp.cb('o-pending', 'o-pending', 4999) f $$,
                  $$ VALUES ('replay', 'PENDING_PAYMENT') $$, 'the replay still shows the response first sent');
SELECT is(order_get(pg_temp.oid_of('o-pending'))::json ->> 'status', 'PAID', 'while GET shows the current state');

-- finish after a webhook got there first ------------------------------------
SELECT pg_temp.keep('wh-first', $$ SELECT * FROM pg_temp.cb('wh-first') $$);
SELECT is((SELECT result FROM webhook_apply('evt-wh-first', pg_temp.oid_of('wh-first'), 'PAID', '{}')), 'applied',
          'a webhook pays the order while its checkout is in progress');
SELECT pg_temp.fin('f-wh-first', pg_temp.oid_of('wh-first'), 'wh-first', pg_temp.tok_of('wh-first'), 'unavailable', 'ch_late');
SELECT results_eq($$ SELECT result, status, response_status, response_body::json ->> 'status', reversal
                       FROM f WHERE label = 'f-wh-first' $$,
                  $$ VALUES ('finished', 'PAID', 201, 'PAID', false) $$,
                  'finish keeps the PAID state and reports it (no reversal for a PAID order)');
SELECT results_eq(format($$ SELECT o.status, o.provider_charge_id, k.state FROM orders o, idempotency_keys k
                             WHERE o.id = %L AND k.key = 'wh-first' $$, pg_temp.oid_of('wh-first')),
                  $$ VALUES ('PAID', NULL::text, 'completed') $$,
                  'the order is untouched and the key completed');
SELECT is((SELECT count(*) FROM ledger_transactions WHERE order_id = pg_temp.oid_of('wh-first')), 1::bigint,
          'still one payment');
SELECT pg_temp.keep('wh-failed', $$ SELECT * FROM pg_temp.cb('wh-failed') $$);
SELECT is((SELECT result FROM webhook_apply('evt-wh-failed', pg_temp.oid_of('wh-failed'), 'FAILED', '{}')), 'applied',
          'a webhook fails the order while its checkout is in progress');
SELECT pg_temp.fin('f-wh-failed', pg_temp.oid_of('wh-failed'), 'wh-failed', pg_temp.tok_of('wh-failed'), 'succeeded', 'ch_2');
SELECT is((SELECT status FROM f WHERE label = 'f-wh-failed'), 'FAILED', 'finish succeeded cannot revive a FAILED order');
SELECT is((SELECT count(*) FROM ledger_transactions WHERE order_id = pg_temp.oid_of('wh-failed')), 0::bigint,
          'and writes no payment for it');
-- But the provider just said it took the money, for an order we refused:
-- the same case as a PAID event for a FAILED order (05_webhook.sql), which
-- opens a reversal.  KNOWN BUG in sql/init.sql (this one fails):
-- checkout_finish opens a reversal only when it moves the order itself.
SELECT results_eq($$ SELECT f.reversal, f.response_body::jsonb -> 'reversal' ->> 'status',
                            (SELECT v.status FROM order_reversals v WHERE v.order_id = pg_temp.oid_of('wh-failed'))
                       FROM f WHERE f.label = 'f-wh-failed' $$,
                  $$ VALUES (true, 'pending', 'pending') $$,
                  'finish succeeded for an order a webhook FAILED opens a reversal (the money is asked back, not dropped)');
SELECT pg_temp.keep('by-hand', $$ SELECT * FROM pg_temp.cb('by-hand') $$);
UPDATE orders SET status = 'PENDING_PAYMENT' WHERE id = pg_temp.oid_of('by-hand');   -- not via the API
SELECT is((SELECT status FROM checkout_finish(pg_temp.oid_of('by-hand'), 'by-hand', pg_temp.tok_of('by-hand'),
                                              'succeeded', 'ch_h', 10000)),
          'PENDING_PAYMENT', 'finish moves only a PROCESSING order: PENDING_PAYMENT is left to the webhook');

-- finish: errors --------------------------------------------------------------
SELECT pg_temp.keep('other', $$ SELECT * FROM pg_temp.cb('key-other') $$);
CREATE TEMP TABLE other AS SELECT pg_temp.oid_of('other') AS id, pg_temp.tok_of('other') AS tok;
SELECT pg_temp.throws(format($$ SELECT * FROM checkout_finish(%L, 'no-such-key', %L, 'succeeded', NULL, 1) $$, id, tok),
    'P0002', 'checkout_finish: no idempotency key no-such-key', 'finish with an unknown key: P0002') FROM other;
SELECT pg_temp.throws(format($$ SELECT * FROM checkout_finish(%L, 'key-other', %L, 'succeeded', NULL, 1) $$,
                             pg_temp.oid_of('wh-first'), tok),
    '55000', '%belongs to order%', 'finish with an in-progress key of another order: 55000') FROM other;
SELECT pg_temp.throws(format($$ SELECT * FROM checkout_finish(%L, 'key-1', %L, 'succeeded', NULL, 1) $$, id, tok),
    '55000', '%belongs to order%', 'finish with a completed key of another order: 55000') FROM other;
SELECT pg_temp.throws(format($$ SELECT * FROM checkout_finish(%L, 'key-other', %L, %s) $$, other.id, other.tok, a.args),
    a.code, a.pat, a.why)
  FROM other, (VALUES ('''ok'', NULL, 1',              '22023', '%p_outcome must be%',            'finish rejects an unknown outcome'),
                      ('NULL, NULL, 1',                '22004', '%must not be NULL',              'finish rejects a NULL outcome'),
                      ('''unavailable'', NULL, NULL',  '22004', '%p_outage_cap_cents is needed%', 'finish unavailable needs the cap'),
                      ('''succeeded'', NULL, -1',      '22023', '%must not be negative',          'finish rejects a negative cap'))
       AS a(args, code, pat, why);
SELECT pg_temp.throws(format($$ SELECT * FROM checkout_finish(NULL, 'key-other', %L, 'succeeded', NULL, 1) $$, tok),
    '22004', '%must not be NULL', 'finish rejects a NULL order id') FROM other;
SELECT pg_temp.throws(format($$ SELECT * FROM checkout_finish(%L, NULL, %L, 'succeeded', NULL, 1) $$, id, tok),
    '22004', '%must not be NULL', 'finish rejects a NULL key') FROM other;
SELECT pg_temp.throws(format($$ SELECT * FROM checkout_finish(%L, 'key-other', NULL, 'succeeded', NULL, 1) $$, id),
    '22004', '%p_lock_token%must not be NULL', 'finish rejects a NULL lock token') FROM other;
SELECT results_eq($$ SELECT state, lock_token FROM idempotency_keys WHERE key = 'key-other' $$,
                  $$ SELECT 'in_progress', tok FROM other $$, 'failed finishes changed nothing');
SELECT is((SELECT status FROM checkout_finish(id, 'key-other', tok, 'succeeded', repeat('c', 255), NULL)),
          'PAID', 'the cap may be NULL unless the outcome is unavailable; a charge id of 255 characters is fine')
  FROM other;
SELECT is((SELECT provider_charge_id FROM orders WHERE id = (SELECT id FROM other)), repeat('c', 255),
          'and it is stored');

-- Charge ids that cannot be stored ------------------------------------------
-- The order may not hold them; failing the finish would leave the key in
-- progress and every retry failing the same way (the charge already
-- happened).  They are dropped (with a WARNING: concurrency.sh) instead.
SET LOCAL client_min_messages = error;   -- (the six WARNINGs are expected)
CREATE TEMP TABLE bad_ids (n int PRIMARY KEY, charge_id text);
INSERT INTO bad_ids VALUES (1, ''), (2, repeat('c', 256)), (3, 'ch 1'), (4, 'ch_é'), (5, E'ch\n1'), (6, E'ch_1\t');
SELECT pg_temp.keep('bad-' || n, format($$ SELECT * FROM pg_temp.cb('key-bad-%s') $$, n)) FROM bad_ids;
SELECT pg_temp.fin('f-bad-' || n, pg_temp.oid_of('bad-' || n), 'key-bad-' || n, pg_temp.tok_of('bad-' || n),
                   'succeeded', charge_id)
  FROM bad_ids;
SELECT results_eq(
    $$ SELECT b.n, f.result, f.status, o.status, o.provider_charge_id, k.state
         FROM bad_ids b
         JOIN f ON f.label = 'f-bad-' || b.n
         JOIN orders o ON o.id = pg_temp.oid_of('bad-' || b.n)
         JOIN idempotency_keys k ON k.key = 'key-bad-' || b.n
        ORDER BY b.n $$,
    $$ SELECT n, 'finished', 'PAID', 'PAID', NULL::text, 'completed' FROM generate_series(1, 6) AS n $$,
    'regression: an invalid charge id does not wedge checkout_finish');
SET LOCAL client_min_messages = warning;
SELECT is((SELECT count(*) FROM ledger_transactions t JOIN bad_ids b ON t.order_id = pg_temp.oid_of('bad-' || b.n)),
          6::bigint, 'each of those orders got its payment');
SELECT is((SELECT result FROM pg_temp.cb('key-bad-2')), 'replay', 'and a retry replays the answer');

-- TTL --------------------------------------------------------------------------
-- key-1 is completed (PAID order).  It expires p_ttl after completed_at.
UPDATE idempotency_keys SET completed_at = now() - interval '23 hours 59 minutes' WHERE key = 'key-1';
SELECT results_eq($$ SELECT result, completed_at_ms FROM pg_temp.cb('key-1') $$,
                  $$ VALUES ('replay', pg_temp.ms(now() - interval '23 hours 59 minutes')) $$,
                  'a completed key inside its TTL replays, saying when it was answered');
UPDATE idempotency_keys SET completed_at = now() - interval '24 hours 1 second' WHERE key = 'key-1';
SELECT pg_temp.keep('expired', $$ SELECT * FROM pg_temp.cb('key-1', 'body-3', 700) $$);
SELECT is((SELECT result FROM r WHERE label = 'expired'), 'new',
          'a completed key past its TTL is free again: new (even with another body)');
SELECT isnt(pg_temp.oid_of('expired'), pg_temp.oid_of('new'), 'with a new order');
SELECT ok(pg_temp.tok_of('expired') IS NOT NULL AND pg_temp.tok_of('expired') <> pg_temp.tok_of('new'),
          'and a new lock token');
SELECT results_eq(
    $$ SELECT state, fingerprint, order_id, response_status, response_body, created_at = now(), locked_at = now(),
              completed_at, lock_token
         FROM idempotency_keys WHERE key = 'key-1' $$,
    format($$ VALUES ('in_progress', %L, %L::uuid, NULL::int, NULL::text, true, true, NULL::timestamptz, %L::uuid) $$,
           pg_temp.fp('body-3'), pg_temp.oid_of('expired'), pg_temp.tok_of('expired')),
    'the key now belongs to the new request');
SELECT results_eq(format($$ SELECT status, amount_cents FROM orders WHERE id IN (%L, %L) ORDER BY amount_cents $$,
                         pg_temp.oid_of('expired'), pg_temp.oid_of('new')),
                  $$ VALUES ('PROCESSING', 700::bigint), ('PAID', 5000::bigint) $$,
                  'the new order is PROCESSING, the old one is untouched');
SELECT is((SELECT result FROM pg_temp.cb('key-1', 'body-3', 700)), 'in_progress', 'the replaced key is locked as usual');

-- A checkout that took long (an outage): created two days ago, answered 23
-- hours ago.  Its key lives until 24 hours after the answer: a retry now is
-- the same request, not a new one (counting from created_at would charge it
-- twice).
SELECT pg_temp.keep('late', $$ SELECT * FROM pg_temp.cb('key-late') $$);
SELECT pg_temp.fin('f-late', pg_temp.oid_of('late'), 'key-late', pg_temp.tok_of('late'), 'succeeded', 'ch_late');
UPDATE idempotency_keys SET created_at = now() - interval '2 days', locked_at = now() - interval '2 days',
                            completed_at = now() - interval '23 hours'
 WHERE key = 'key-late';
SELECT results_eq($$ SELECT result, order_id, response_body::json ->> 'status' FROM pg_temp.cb('key-late') $$,
                  format($$ VALUES ('replay', %L::uuid, 'PAID') $$, pg_temp.oid_of('late')),
                  'regression: TTL counts from completion, a key completed late lives its full TTL');
SELECT is(purge_expired_idempotency_keys('24 hours', 100), 0, 'and purge keeps it too');

-- An in-progress key is never replaced, however old.
SELECT pg_temp.keep('old-ip', $$ SELECT * FROM pg_temp.cb('key-old-ip') $$);
UPDATE idempotency_keys SET created_at = now() - interval '3 days' WHERE key = 'key-old-ip';
SELECT results_eq($$ SELECT result, order_id FROM pg_temp.cb('key-old-ip') $$,
                  format($$ VALUES ('in_progress', %L::uuid) $$, pg_temp.oid_of('old-ip')),
                  'an expired in-progress key with a fresh lock: in_progress, not new');
UPDATE idempotency_keys SET locked_at = now() - interval '1 hour' WHERE key = 'key-old-ip';
SELECT results_eq($$ SELECT result, order_id FROM pg_temp.cb('key-old-ip') $$,
                  format($$ VALUES ('recover', %L::uuid) $$, pg_temp.oid_of('old-ip')),
                  'an expired in-progress key with a stale lock: recover its order');

-- Stale lock recovery -------------------------------------------------------
SELECT pg_temp.keep('stale', $$ SELECT * FROM pg_temp.cb('key-stale') $$);
UPDATE idempotency_keys SET locked_at = now() - interval '30 seconds' WHERE key = 'key-stale';
SELECT is((SELECT result FROM pg_temp.cb('key-stale')), 'in_progress', 'a lock exactly p_lock_timeout old still holds');
UPDATE idempotency_keys SET locked_at = now() - interval '31 seconds' WHERE key = 'key-stale';
SELECT is((SELECT result FROM pg_temp.cb('key-stale', 'body-2')), 'reused', 'a stale lock with another body: reused');
SELECT results_eq($$ SELECT locked_at, lock_token FROM idempotency_keys WHERE key = 'key-stale' $$,
                  $$ VALUES (now() - interval '31 seconds', pg_temp.tok_of('stale')) $$,
                  'reused did not take the lock');
SELECT pg_temp.keep('recover', $$ SELECT * FROM pg_temp.cb('key-stale') $$);
SELECT results_eq($$ SELECT result, order_id, response_status, response_body, completed_at_ms FROM r WHERE label = 'recover' $$,
                  format($$ VALUES ('recover', %L::uuid, NULL::int, NULL::text, NULL::bigint) $$, pg_temp.oid_of('stale')),
                  'a stale lock, same body: recover, with the existing order');
SELECT ok(pg_temp.tok_of('recover') IS NOT NULL AND pg_temp.tok_of('recover') <> pg_temp.tok_of('stale'),
          'recover hands out a new lock token');
SELECT results_eq($$ SELECT locked_at, lock_token FROM idempotency_keys WHERE key = 'key-stale' $$,
                  $$ VALUES (now(), pg_temp.tok_of('recover')) $$,
                  'recover took the lock (locked_at = now(), the new token)');
SELECT is((SELECT count(*) FROM orders WHERE id = pg_temp.oid_of('stale')), 1::bigint, 'recover created no order');
SELECT is((SELECT result FROM pg_temp.cb('key-stale')), 'in_progress', 'after recover the lock is fresh: in_progress');

-- The worker that lost the lock comes back with the provider's answer: its
-- finish must not move the order under the new holder's feet.
SELECT pg_temp.fin('f-stale-old', pg_temp.oid_of('stale'), 'key-stale', pg_temp.tok_of('stale'), 'succeeded', 'ch_old');
SELECT results_eq(
    $$ SELECT f.result, f.status, f.response_status, f.response_body, f.completed_at_ms, f.reversal,
              o.status, o.provider_charge_id, k.state, k.lock_token = pg_temp.tok_of('recover'), k.locked_at = now(),
              (SELECT count(*) FROM ledger_transactions t WHERE t.order_id = o.id),
              (SELECT count(*) FROM order_reversals v WHERE v.order_id = o.id)
         FROM f, orders o, idempotency_keys k
        WHERE f.label = 'f-stale-old' AND o.id = pg_temp.oid_of('stale') AND k.key = 'key-stale' $$,
    $$ VALUES ('stale', NULL::text, NULL::int, NULL::text, NULL::bigint, false,
               'PROCESSING', NULL::text, 'in_progress', true, true, 0::bigint, 0::bigint) $$,
    'regression: a stale finish (lost lock) changes nothing');
SELECT pg_temp.fin('f-stale-any', pg_temp.oid_of('stale'), 'key-stale', gen_random_uuid(), 'not_charged');
SELECT results_eq($$ SELECT f.result, o.status FROM f, orders o WHERE f.label = 'f-stale-any' AND o.id = pg_temp.oid_of('stale') $$,
                  $$ VALUES ('stale', 'PROCESSING') $$, 'a finish with any other token is stale too');
SELECT pg_temp.fin('f-stale-new', pg_temp.oid_of('stale'), 'key-stale', pg_temp.tok_of('recover'), 'declined', 'ch_s', 0);
SELECT results_eq($$ SELECT f.result, f.status, o.provider_charge_id FROM f, orders o
                      WHERE f.label = 'f-stale-new' AND o.id = pg_temp.oid_of('stale') $$,
                  $$ VALUES ('finished', 'FAILED', 'ch_s') $$,
                  'the token holder finishes the recovered checkout normally');
SELECT pg_temp.fin('f-stale-old-2', pg_temp.oid_of('stale'), 'key-stale', pg_temp.tok_of('stale'), 'succeeded', 'ch_old');
SELECT results_eq($$ SELECT f.result, f.status, (SELECT count(*) FROM ledger_transactions t WHERE t.order_id = pg_temp.oid_of('stale'))
                       FROM f WHERE f.label = 'f-stale-old-2' $$,
                  $$ VALUES ('replay', 'FAILED', 0::bigint) $$,
                  'the old holder, after that: a replay of the holder''s answer, still no payment');

-- checkout_begin: input validation ----------------------------------------
SELECT pg_temp.throws(
    'SELECT * FROM checkout_begin(' || array_to_string(
        (ARRAY['''k-null''', quote_literal(pg_temp.fp('x')), '''b''', '''s''', '100', '''EUR''',
               '''trusted''', '''30 s''', '''24 h'''])[1:i-1] || ARRAY['NULL']
        || (ARRAY['''k-null''', quote_literal(pg_temp.fp('x')), '''b''', '''s''', '100', '''EUR''',
                  '''trusted''', '''30 s''', '''24 h'''])[i+1:9], ', ') || ')',
    '22004', 'checkout_begin: no argument may be NULL', 'checkout_begin rejects NULL argument ' || i)
  FROM generate_series(1, 9) AS i;
SELECT pg_temp.throws(
    format('SELECT * FROM checkout_begin(%L, %L, %L, %L, %s, %L, %L, %L, %L)',
           v.k, v.f, v.b, v.s, v.a, v.c, v.t, v.l, v.ttl),
    '22023', v.pat, v.why)
  FROM (VALUES
    ('',               repeat('a', 64), 'b', 's', 1, 'EUR', 'trusted', '30 s', '1 d', '%p_key must be%',        'empty key'),
    (repeat('k', 256), repeat('a', 64), 'b', 's', 1, 'EUR', 'trusted', '30 s', '1 d', '%p_key must be%',        'key of 256 characters'),
    ('a b',            repeat('a', 64), 'b', 's', 1, 'EUR', 'trusted', '30 s', '1 d', '%p_key must be%',        'key with a space'),
    ('clé',            repeat('a', 64), 'b', 's', 1, 'EUR', 'trusted', '30 s', '1 d', '%p_key must be%',        'key with a non-ASCII character'),
    ('k',              repeat('A', 64), 'b', 's', 1, 'EUR', 'trusted', '30 s', '1 d', '%p_fingerprint must be%', 'upper-case fingerprint'),
    ('k',              repeat('a', 63), 'b', 's', 1, 'EUR', 'trusted', '30 s', '1 d', '%p_fingerprint must be%', 'fingerprint of 63 digits'),
    ('k',              repeat('a', 64), 'b b', 's', 1, 'EUR', 'trusted', '30 s', '1 d', '%p_buyer_id must be%', 'buyer_id with a space'),
    ('k',              repeat('a', 64), repeat('b', 65), 's', 1, 'EUR', 'trusted', '30 s', '1 d', '%p_buyer_id must be%', 'buyer_id of 65 characters'),
    ('k',              repeat('a', 64), 'b', '', 1, 'EUR', 'trusted', '30 s', '1 d', '%p_seller_id must be%',   'empty seller_id'),
    ('k',              repeat('a', 64), 'b', 's', 0, 'EUR', 'trusted', '30 s', '1 d', '%p_amount_cents must be positive', 'amount 0'),
    ('k',              repeat('a', 64), 'b', 's', -1, 'EUR', 'trusted', '30 s', '1 d', '%p_amount_cents must be positive', 'negative amount'),
    ('k',              repeat('a', 64), 'b', 's', 1, 'eur', 'trusted', '30 s', '1 d', '%p_currency must be%',  'lower-case currency'),
    ('k',              repeat('a', 64), 'b', 's', 1, 'EURO', 'trusted', '30 s', '1 d', '%p_currency must be%', 'four-letter currency'),
    ('k',              repeat('a', 64), 'b', 's', 1, 'EUR', 'Trusted', '30 s', '1 d', '%p_buyer_trust must be%', 'unknown buyer_trust'),
    ('k',              repeat('a', 64), 'b', 's', 1, 'EUR', 'trusted', '0 s', '1 d', 'checkout_begin: the lock timeout must be at least 1 second', 'lock timeout 0'),
    ('k',              repeat('a', 64), 'b', 's', 1, 'EUR', 'trusted', '999 ms', '1 d', 'checkout_begin: the lock timeout must be at least 1 second', 'lock timeout under the floor (999 ms)'),
    ('k',              repeat('a', 64), 'b', 's', 1, 'EUR', 'trusted', '-30 s', '1 d', 'checkout_begin: the lock timeout must be at least 1 second', 'negative lock timeout'),
    ('k',              repeat('a', 64), 'b', 's', 1, 'EUR', 'trusted', '30 s', '-1 d', 'checkout_begin: the idempotency TTL must be at least 1 minute', 'negative TTL'),
    ('k',              repeat('a', 64), 'b', 's', 1, 'EUR', 'trusted', '30 s', '0 s', 'checkout_begin: the idempotency TTL must be at least 1 minute', 'TTL 0'),
    ('k',              repeat('a', 64), 'b', 's', 1, 'EUR', 'trusted', '30 s', '59.999 s', 'checkout_begin: the idempotency TTL must be at least 1 minute', 'TTL under the floor (59.999 s)'))
    AS v(k, f, b, s, a, c, t, l, ttl, pat, why);
SELECT is((SELECT count(*) FROM idempotency_keys WHERE key IN ('k', 'k-null')), 0::bigint, 'rejected calls stored nothing');
SELECT is((SELECT result FROM checkout_begin(repeat('~', 254) || '!', pg_temp.fp('x'), repeat('b', 64), 'Az09_.:-',
                                              9223372036854775807, 'XTS', 'untrusted', '1 s', '1 min')),
          'new', 'the limits themselves are accepted (lock timeout 1 s, TTL 1 min)');

-- A key that vanishes between the INSERT and the SELECT (purged) -------------
-- Simulated by a trigger that swallows the INSERT n times: checkout_begin
-- finds no row, goes back to the INSERT, and gives up after 10 tries.
CREATE FUNCTION public.t_swallow_key_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n int := coalesce(nullif(current_setting('t.swallow', true), ''), '0')::int;
BEGIN
    IF n > 0 THEN
        PERFORM set_config('t.swallow', (n - 1)::text, true);
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER t_swallow BEFORE INSERT ON idempotency_keys FOR EACH ROW EXECUTE FUNCTION public.t_swallow_key_insert();
DO $$ BEGIN PERFORM set_config('t.swallow', '3', true); END $$;
SELECT is((SELECT result FROM pg_temp.cb('key-vanish')), 'new', 'a key that vanished is claimed again: new');
SELECT is(current_setting('t.swallow'), '0', 'after three lost INSERTs');
DO $$ BEGIN PERFORM set_config('t.swallow', '10', true); END $$;
SELECT pg_temp.throws($$ SELECT * FROM pg_temp.cb('key-vanish-2') $$,
    '40001', 'checkout_begin: key key-vanish-2 kept changing, retry', 'a key that never settles: 40001 after 10 tries');
DROP TRIGGER t_swallow ON idempotency_keys;

SELECT pg_temp.passes('SET CONSTRAINTS ALL IMMEDIATE', 'everything above passes the commit-time checks');

SELECT * FROM finish();
ROLLBACK;
