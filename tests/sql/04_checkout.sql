-- checkout_begin and checkout_finish: every result, every outcome, TTL
-- expiry, stale-lock recovery, and input validation.  (Many sessions on one
-- key at once: concurrency.sh.)
BEGIN;
\ir helpers.psql
SELECT plan(99);

-- checkout_begin with the usual body; the fingerprint is derived from a label.
CREATE FUNCTION pg_temp.cb(p_key text, p_label text DEFAULT 'body-1', p_amount bigint DEFAULT 5000,
                           p_trust text DEFAULT 'trusted')
RETURNS TABLE (result text, order_id uuid, response_status int, response_body text)
LANGUAGE sql AS $$
    SELECT * FROM checkout_begin(p_key, pg_temp.fp(p_label), 'buyer-1', 'seller-1', p_amount, 'EUR',
                                 p_trust, interval '30 seconds', interval '24 hours')
$$;

CREATE TEMP TABLE r (label text PRIMARY KEY, result text, order_id uuid, response_status int, response_body text);
CREATE FUNCTION pg_temp.keep(p_label text, q text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO r SELECT %L, * FROM (%s) x', p_label, q);
END
$$;
CREATE FUNCTION pg_temp.oid_of(p_label text) RETURNS uuid LANGUAGE sql AS $$
    SELECT order_id FROM r WHERE label = p_label
$$;

-- new -------------------------------------------------------------------------
SELECT pg_temp.keep('new', $$ SELECT * FROM pg_temp.cb('key-1') $$);
SELECT is((SELECT result FROM r WHERE label = 'new'), 'new', 'begin on a fresh key: new');
SELECT isnt(pg_temp.oid_of('new'), NULL, 'new gives the new order id');
SELECT is((SELECT (response_status, response_body)::text FROM r WHERE label = 'new'), '(,)',
          'new has no stored response');
SELECT results_eq(
    format($$ SELECT status, buyer_id, seller_id, amount_cents, currency::text, buyer_trust, failure_reason,
                     provider_charge_id, created_at = now() FROM orders WHERE id = %L $$, pg_temp.oid_of('new')),
    $$ VALUES ('PROCESSING', 'buyer-1', 'seller-1', 5000::bigint, 'EUR', 'trusted', NULL::text, NULL::text, true) $$,
    'new created the order, PROCESSING, with the request''s fields');
SELECT results_eq(
    $$ SELECT state, fingerprint, order_id, locked_at = now(), created_at = now() FROM idempotency_keys WHERE key = 'key-1' $$,
    format($$ VALUES ('in_progress', %L, %L::uuid, true, true) $$, pg_temp.fp('body-1'), pg_temp.oid_of('new')),
    'new stored the key in_progress, locked now, with its fingerprint and order');

-- in_progress -------------------------------------------------------------------
SELECT pg_temp.keep('again', $$ SELECT * FROM pg_temp.cb('key-1') $$);
SELECT results_eq($$ SELECT result, order_id FROM r WHERE label = 'again' $$,
                  format($$ VALUES ('in_progress', %L::uuid) $$, pg_temp.oid_of('new')),
                  'same key and body while the first runs: in_progress, with its order id');
SELECT is((SELECT count(*) FROM orders), 1::bigint, 'in_progress created no order');

-- reused ---------------------------------------------------------------------
SELECT pg_temp.keep('reused', $$ SELECT * FROM pg_temp.cb('key-1', 'body-2', 7000) $$);
SELECT is((SELECT (result, order_id, response_status, response_body)::text FROM r WHERE label = 'reused'),
          '(reused,,,)', 'same key, other body: reused, and no order id given away');
SELECT is((SELECT fingerprint FROM idempotency_keys WHERE key = 'key-1'), pg_temp.fp('body-1'),
          'reused changed nothing');

-- finish: succeeded -----------------------------------------------------------
SELECT pg_temp.keep('finish', format($$ SELECT 'finish', NULL::uuid, response_status, response_body || '|' || status
                                           FROM checkout_finish(%L, 'key-1', 'succeeded', 'ch_1', 10000) $$,
                                        pg_temp.oid_of('new')));
CREATE TEMP TABLE body1 AS
    SELECT split_part(response_body, '|', 1) AS body, split_part(response_body, '|', 2) AS status,
           response_status FROM r WHERE label = 'finish';
SELECT is((SELECT status FROM body1), 'PAID', 'finish succeeded: status PAID');
SELECT is((SELECT response_status FROM body1), 201, 'finish answers 201');
SELECT is((SELECT body FROM body1), order_get(pg_temp.oid_of('new')), 'finish answers the order''s JSON');
SELECT results_eq(
    format($$ SELECT status, provider_charge_id FROM orders WHERE id = %L $$, pg_temp.oid_of('new')),
    $$ VALUES ('PAID', 'ch_1') $$, 'the order is PAID with the provider''s charge id');
SELECT results_eq(
    $$ SELECT state, response_status, response_body FROM idempotency_keys WHERE key = 'key-1' $$,
    format($$ VALUES ('completed', 201, %L) $$, (SELECT body FROM body1)),
    'the key is completed with the response');
SELECT results_eq(
    format($$ SELECT e.account, e.direction, e.amount_cents, e.currency::text
                FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.txn_id
               WHERE t.order_id = %L AND t.kind = 'payment' ORDER BY e.direction DESC $$, pg_temp.oid_of('new')),
    $$ VALUES ('cash', 'DEBIT', 5000::bigint, 'EUR'), ('seller_payable', 'CREDIT', 5000::bigint, 'EUR') $$,
    'finish succeeded wrote the payment: cash DEBIT, seller_payable CREDIT');
SELECT pg_temp.passes('SET CONSTRAINTS ALL IMMEDIATE', 'the paid checkout passes the commit-time checks');

-- replay ------------------------------------------------------------------------
SELECT pg_temp.keep('replay', $$ SELECT * FROM pg_temp.cb('key-1') $$);
SELECT results_eq($$ SELECT result, order_id, response_status, response_body FROM r WHERE label = 'replay' $$,
                  format($$ VALUES ('replay', %L::uuid, 201, %L) $$, pg_temp.oid_of('new'), (SELECT body FROM body1)),
                  'same key and body after finish: replay of the stored response');
SELECT is((SELECT result FROM pg_temp.cb('key-1', 'body-2')), 'reused', 'other body on a completed key: reused');

-- duplicate finish ----------------------------------------------------------
SELECT results_eq(format($$ SELECT status, response_status, response_body
                              FROM checkout_finish(%L, 'key-1', 'declined', NULL, 10000) $$, pg_temp.oid_of('new')),
                  format($$ VALUES ('PAID', 201, %L) $$, (SELECT body FROM body1)),
                  'a second finish returns the stored response unchanged');
SELECT is((SELECT count(*) FROM ledger_transactions), 1::bigint, 'a second finish writes no second payment');

-- finish: the other outcomes ------------------------------------------------
-- (key, amount, trust, outcome, cap) -> status, failure_reason
CREATE TEMP TABLE outcomes (k text, amount bigint, trust text, outcome text, cap bigint,
                            want_status text, want_reason text, why text);
INSERT INTO outcomes VALUES
    ('o-declined',     5000, 'trusted',   'declined',    10000, 'FAILED', 'declined',             'declined -> FAILED declined'),
    ('o-pending',      4999, 'trusted',   'unavailable',  5000, 'PENDING_PAYMENT', NULL,          'unavailable, trusted, under the cap -> PENDING_PAYMENT'),
    ('o-at-cap',       5000, 'trusted',   'unavailable',  5000, 'FAILED', 'provider_unavailable', 'unavailable, trusted, amount = cap -> FAILED provider_unavailable'),
    ('o-untrusted',     100, 'untrusted', 'unavailable',  5000, 'FAILED', 'provider_unavailable', 'unavailable, untrusted -> FAILED provider_unavailable'),
    ('o-not-charged',   100, 'trusted',   'not_charged',  5000, 'FAILED', 'provider_unavailable', 'not_charged -> FAILED provider_unavailable, even under the cap');
SELECT pg_temp.keep(k, format($$ SELECT * FROM pg_temp.cb(%L, %L, %s, %L) $$, k, k, amount, trust)) FROM outcomes;
SELECT pg_temp.keep('f-' || k, format($$ SELECT status, NULL::uuid, response_status, response_body
                                           FROM checkout_finish(%L, %L, %L, NULL, %s) $$,
                                        pg_temp.oid_of(k), k, outcome, cap))
  FROM outcomes;
SELECT results_eq(
    format($$ SELECT f.result, o.status, o.failure_reason, f.response_body::json ->> 'failure_reason',
                     (f.response_body::json ->> 'ready_to_ship')::boolean, f.response_body = order_json(o)
                FROM r f, orders o WHERE f.label = %L AND o.id = %L $$, 'f-' || k, pg_temp.oid_of(k)),
    format($$ VALUES (%L, %1$L, %L, %2$L, false, true) $$, want_status, want_reason),
    why)
  FROM outcomes ORDER BY k;
SELECT is((SELECT count(*) FROM ledger_transactions t JOIN outcomes o ON t.order_id = pg_temp.oid_of(o.k)), 0::bigint,
          'no ledger for orders that are not PAID');
SELECT is((SELECT provider_charge_id FROM orders WHERE id = pg_temp.oid_of('o-declined')), NULL,
          'a NULL charge id stores nothing');

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
SELECT results_eq(format($$ SELECT status, response_status, response_body::json ->> 'status'
                              FROM checkout_finish(%L, 'wh-first', 'unavailable', 'ch_late', 10000) $$,
                         pg_temp.oid_of('wh-first')),
                  $$ VALUES ('PAID', 201, 'PAID') $$,
                  'finish keeps the PAID state and reports it');
SELECT results_eq(format($$ SELECT o.status, o.provider_charge_id, k.state FROM orders o, idempotency_keys k
                             WHERE o.id = %L AND k.key = 'wh-first' $$, pg_temp.oid_of('wh-first')),
                  $$ VALUES ('PAID', NULL::text, 'completed') $$,
                  'the order is untouched and the key completed');
SELECT is((SELECT count(*) FROM ledger_transactions WHERE order_id = pg_temp.oid_of('wh-first')), 1::bigint,
          'still one payment');
SELECT pg_temp.keep('wh-failed', $$ SELECT * FROM pg_temp.cb('wh-failed') $$);
SELECT is((SELECT result FROM webhook_apply('evt-wh-failed', pg_temp.oid_of('wh-failed'), 'FAILED', '{}')), 'applied',
          'a webhook fails the order while its checkout is in progress');
SELECT results_eq(format($$ SELECT status FROM checkout_finish(%L, 'wh-failed', 'succeeded', 'ch_2', 10000) $$,
                         pg_temp.oid_of('wh-failed')),
                  $$ VALUES ('FAILED') $$, 'finish succeeded cannot revive a FAILED order');
SELECT is((SELECT count(*) FROM ledger_transactions WHERE order_id = pg_temp.oid_of('wh-failed')), 0::bigint,
          'and writes no payment for it');
SELECT pg_temp.keep('by-hand', $$ SELECT * FROM pg_temp.cb('by-hand') $$);
UPDATE orders SET status = 'PENDING_PAYMENT' WHERE id = pg_temp.oid_of('by-hand');   -- not via the API
SELECT results_eq(format($$ SELECT status FROM checkout_finish(%L, 'by-hand', 'succeeded', 'ch_h', 10000) $$,
                         pg_temp.oid_of('by-hand')),
                  $$ VALUES ('PENDING_PAYMENT') $$,
                  'finish moves only a PROCESSING order: PENDING_PAYMENT is left to the webhook');

-- finish: errors --------------------------------------------------------------
SELECT pg_temp.keep('other', $$ SELECT * FROM pg_temp.cb('key-other') $$);
SELECT pg_temp.throws(format($$ SELECT * FROM checkout_finish(%L, 'no-such-key', 'succeeded', NULL, 1) $$, pg_temp.oid_of('other')),
    'P0002', 'checkout_finish: no idempotency key no-such-key', 'finish with an unknown key: P0002');
SELECT pg_temp.throws(format($$ SELECT * FROM checkout_finish(%L, 'key-other', 'succeeded', NULL, 1) $$, pg_temp.oid_of('wh-first')),
    '55000', '%belongs to order%', 'finish with an in-progress key of another order: 55000');
SELECT pg_temp.throws(format($$ SELECT * FROM checkout_finish(%L, 'key-1', 'succeeded', NULL, 1) $$, pg_temp.oid_of('other')),
    '55000', '%belongs to order%', 'finish with a completed key of another order: 55000');
SELECT pg_temp.throws(format($$ SELECT * FROM checkout_finish(%L, 'key-other', %s) $$, pg_temp.oid_of('other'), a.args),
    a.code, a.pat, a.why)
  FROM (VALUES ('''ok'', NULL, 1',                     '22023', '%p_outcome must be%',            'finish rejects an unknown outcome'),
               ('NULL, NULL, 1',                       '22004', '%must not be NULL',              'finish rejects a NULL outcome'),
               ('''unavailable'', NULL, NULL',         '22004', '%p_outage_cap_cents is needed%', 'finish unavailable needs the cap'),
               ('''succeeded'', NULL, -1',             '22023', '%must not be negative',          'finish rejects a negative cap'),
               ('''succeeded'', '''', 1',              '22023', '%p_charge_id must be%',          'finish rejects an empty charge id'),
               ('''succeeded'', repeat(''c'', 256), 1','22023', '%p_charge_id must be%',          'finish rejects a charge id of 256 characters'))
       AS a(args, code, pat, why);
SELECT pg_temp.throws($$ SELECT * FROM checkout_finish(NULL, 'key-other', 'succeeded', NULL, 1) $$,
    '22004', '%must not be NULL', 'finish rejects a NULL order id');
SELECT pg_temp.throws(format($$ SELECT * FROM checkout_finish(%L, NULL, 'succeeded', NULL, 1) $$, pg_temp.oid_of('other')),
    '22004', '%must not be NULL', 'finish rejects a NULL key');
SELECT is((SELECT state FROM idempotency_keys WHERE key = 'key-other'), 'in_progress', 'failed finishes changed nothing');
SELECT is((SELECT status FROM checkout_finish(pg_temp.oid_of('other'), 'key-other', 'succeeded', repeat('c', 255), NULL)),
          'PAID', 'the cap may be NULL unless the outcome is unavailable; a charge id of 255 characters is fine');

-- TTL --------------------------------------------------------------------------
-- key-1 is completed (PAID order).  Age it past the TTL.
UPDATE idempotency_keys SET created_at = now() - interval '23 hours 59 minutes' WHERE key = 'key-1';
SELECT is((SELECT result FROM pg_temp.cb('key-1')), 'replay', 'a completed key inside its TTL replays');
UPDATE idempotency_keys SET created_at = now() - interval '24 hours 1 second' WHERE key = 'key-1';
SELECT pg_temp.keep('expired', $$ SELECT * FROM pg_temp.cb('key-1', 'body-3', 700) $$);
SELECT is((SELECT result FROM r WHERE label = 'expired'), 'new',
          'a completed key past its TTL is free again: new (even with another body)');
SELECT isnt(pg_temp.oid_of('expired'), pg_temp.oid_of('new'), 'with a new order');
SELECT results_eq(
    $$ SELECT state, fingerprint, order_id, response_status, response_body, created_at = now(), locked_at = now()
         FROM idempotency_keys WHERE key = 'key-1' $$,
    format($$ VALUES ('in_progress', %L, %L::uuid, NULL::int, NULL::text, true, true) $$,
           pg_temp.fp('body-3'), pg_temp.oid_of('expired')),
    'the key now belongs to the new request');
SELECT results_eq(format($$ SELECT status, amount_cents FROM orders WHERE id IN (%L, %L) ORDER BY amount_cents $$,
                         pg_temp.oid_of('expired'), pg_temp.oid_of('new')),
                  $$ VALUES ('PROCESSING', 700::bigint), ('PAID', 5000::bigint) $$,
                  'the new order is PROCESSING, the old one is untouched');
SELECT is((SELECT result FROM pg_temp.cb('key-1', 'body-3', 700)), 'in_progress', 'the replaced key is locked as usual');

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
SELECT is((SELECT locked_at FROM idempotency_keys WHERE key = 'key-stale'), now() - interval '31 seconds',
          'reused did not take the lock');
SELECT pg_temp.keep('recover', $$ SELECT * FROM pg_temp.cb('key-stale') $$);
SELECT results_eq($$ SELECT result, order_id, response_status, response_body FROM r WHERE label = 'recover' $$,
                  format($$ VALUES ('recover', %L::uuid, NULL::int, NULL::text) $$, pg_temp.oid_of('stale')),
                  'a stale lock, same body: recover, with the existing order');
SELECT is((SELECT locked_at FROM idempotency_keys WHERE key = 'key-stale'), now(), 'recover took the lock (locked_at = now())');
SELECT is((SELECT count(*) FROM orders WHERE id = pg_temp.oid_of('stale')), 1::bigint, 'recover created no order');
SELECT is((SELECT result FROM pg_temp.cb('key-stale')), 'in_progress', 'after recover the lock is fresh: in_progress');
SELECT is((SELECT status FROM checkout_finish(pg_temp.oid_of('stale'), 'key-stale', 'declined', 'ch_s', 0)), 'FAILED',
          'the recovered checkout finishes normally');

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
    ('k',              repeat('a', 64), 'b', 's', 1, 'EUR', 'trusted', '0 s', '1 d', '%must be positive',      'lock timeout 0'),
    ('k',              repeat('a', 64), 'b', 's', 1, 'EUR', 'trusted', '30 s', '-1 d', '%must be positive',    'negative TTL'))
    AS v(k, f, b, s, a, c, t, l, ttl, pat, why);
SELECT is((SELECT count(*) FROM idempotency_keys WHERE key IN ('k', 'k-null')), 0::bigint, 'rejected calls stored nothing');
SELECT is((SELECT result FROM checkout_begin(repeat('~', 254) || '!', pg_temp.fp('x'), repeat('b', 64), 'Az09_.:-',
                                              9223372036854775807, 'XTS', 'untrusted', '1 ms', '1 ms')),
          'new', 'the limits themselves are accepted');

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
