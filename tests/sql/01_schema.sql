-- Schema: tables, keys, indexes, triggers, functions, and every CHECK
-- constraint (each one proven to fire by a row that only it refuses).
BEGIN;
\ir helpers.psql
SELECT plan(150);

-- Tables and their keys ------------------------------------------------------
SELECT has_table('orders');
SELECT has_table('idempotency_keys');
SELECT has_table('webhook_events');
SELECT has_table('ledger_transactions');
SELECT has_table('ledger_entries');
SELECT has_table('order_reversals');

SELECT columns_are('orders', ARRAY['id', 'buyer_id', 'seller_id', 'amount_cents', 'currency',
    'buyer_trust', 'status', 'failure_reason', 'provider_charge_id', 'created_at', 'updated_at']);
SELECT columns_are('idempotency_keys', ARRAY['key', 'fingerprint', 'state', 'locked_at',
    'order_id', 'response_status', 'response_body', 'created_at', 'lock_token', 'completed_at']);
SELECT columns_are('webhook_events', ARRAY['event_id', 'order_id', 'outcome', 'payload',
    'received_at', 'applied']);
SELECT columns_are('ledger_transactions', ARRAY['id', 'order_id', 'kind', 'created_at']);
SELECT columns_are('ledger_entries', ARRAY['id', 'txn_id', 'account', 'direction',
    'amount_cents', 'currency']);
SELECT columns_are('order_reversals', ARRAY['order_id', 'status', 'amount_cents', 'currency',
    'attempts', 'last_attempt_at', 'created_at', 'updated_at']);

SELECT col_type_is('orders', 'id', 'uuid');
SELECT col_type_is('orders', 'amount_cents', 'bigint');
SELECT col_type_is('orders', 'currency', 'character(3)');
SELECT col_type_is('orders', 'created_at', 'timestamp with time zone');
SELECT col_type_is('orders', 'updated_at', 'timestamp with time zone');
SELECT col_type_is('ledger_entries', 'amount_cents', 'bigint');
SELECT col_type_is('webhook_events', 'applied', 'boolean');
SELECT col_type_is('idempotency_keys', 'lock_token', 'uuid');
SELECT col_type_is('idempotency_keys', 'completed_at', 'timestamp with time zone');
SELECT col_is_null('idempotency_keys', 'lock_token');
SELECT col_is_null('idempotency_keys', 'completed_at');
SELECT col_type_is('order_reversals', 'amount_cents', 'bigint');
SELECT col_type_is('order_reversals', 'currency', 'character(3)');
SELECT col_default_is('order_reversals', 'status', 'pending');
SELECT col_default_is('order_reversals', 'attempts', '0');
SELECT col_has_default('orders', 'id');
SELECT col_is_null('orders', 'failure_reason');
SELECT col_is_null('orders', 'provider_charge_id');
SELECT col_not_null('orders', 'status');
SELECT col_not_null('webhook_events', 'payload');

SELECT col_is_pk('orders', 'id');
SELECT col_is_pk('idempotency_keys', 'key');
SELECT col_is_pk('webhook_events', 'event_id');
SELECT col_is_pk('ledger_transactions', 'id');
SELECT col_is_pk('ledger_entries', 'id');
SELECT col_is_pk('order_reversals', 'order_id');

SELECT fk_ok('idempotency_keys', 'order_id', 'orders', 'id');
SELECT fk_ok('webhook_events', 'order_id', 'orders', 'id');
SELECT fk_ok('ledger_transactions', 'order_id', 'orders', 'id');
SELECT fk_ok('ledger_entries', 'txn_id', 'ledger_transactions', 'id');
SELECT fk_ok('order_reversals', 'order_id', 'orders', 'id');

SELECT is((SELECT condeferrable AND condeferred FROM pg_constraint
            WHERE conrelid = 'idempotency_keys'::regclass AND contype = 'f'),
          true, 'idempotency_keys.order_id FK is DEFERRABLE INITIALLY DEFERRED');

-- Indexes the queries need --------------------------------------------------
SELECT has_index('orders', 'orders_pending_updated_at_idx', 'updated_at');
SELECT has_index('idempotency_keys', 'idempotency_keys_completed_at_idx', 'completed_at');
SELECT is((SELECT pg_get_expr(indpred, indrelid) FROM pg_index
            WHERE indexrelid = 'idempotency_keys_completed_at_idx'::regclass),
          '(state = ''completed''::text)', 'the purge index holds only completed keys');
SELECT hasnt_index('idempotency_keys', 'idempotency_keys_completed_created_at_idx',
                   'the old purge index on created_at is gone');
SELECT has_index('idempotency_keys', 'idempotency_keys_in_progress_locked_at_idx', 'locked_at');
SELECT has_index('ledger_transactions', 'ledger_transactions_order_id_idx', 'order_id');
SELECT index_is_unique('ledger_transactions', 'ledger_transactions_one_payment_per_order');
SELECT index_is_unique('ledger_entries', 'ledger_entries_txn_account_direction_currency');
SELECT is((SELECT pg_get_expr(indpred, indrelid) FROM pg_index
            WHERE indexrelid = 'ledger_transactions_one_payment_per_order'::regclass),
          '(kind = ''payment''::text)', 'one payment per order: partial on kind = payment');
SELECT index_is_unique('ledger_transactions', 'ledger_transactions_one_reversal_per_order');
SELECT is((SELECT pg_get_indexdef(indexrelid) FROM pg_index
            WHERE indexrelid = 'ledger_transactions_one_reversal_per_order'::regclass),
          'CREATE UNIQUE INDEX ledger_transactions_one_reversal_per_order ON public.ledger_transactions '
          'USING btree (order_id, kind) WHERE (kind = ANY (ARRAY[''late_capture''::text, ''refund''::text]))',
          'one late_capture and one refund per order: unique (order_id, kind), partial on those kinds');
SELECT has_index('order_reversals', 'order_reversals_pending_idx', 'last_attempt_at');
SELECT is((SELECT pg_get_expr(indpred, indrelid) FROM pg_index
            WHERE indexrelid = 'order_reversals_pending_idx'::regclass),
          '(status = ''pending''::text)', 'the retry index holds only pending reversals');

-- Triggers ----------------------------------------------------------------
SELECT trigger_is('orders', 'orders_insert_processing', 'orders_check_insert');
SELECT trigger_is('orders', 'orders_state_machine', 'orders_check_update');
SELECT trigger_is('orders', 'orders_paid_has_payment', 'orders_check_paid');
SELECT trigger_is('ledger_transactions', 'ledger_transactions_append_only', 'forbid_change');
SELECT trigger_is('ledger_transactions', 'ledger_transactions_no_truncate', 'forbid_change');
SELECT trigger_is('ledger_transactions', 'ledger_transactions_balanced', 'ledger_check_txn');
SELECT trigger_is('ledger_entries', 'ledger_entries_append_only', 'forbid_change');
SELECT trigger_is('ledger_entries', 'ledger_entries_no_truncate', 'forbid_change');
SELECT trigger_is('ledger_entries', 'ledger_entries_balanced', 'ledger_check_txn');
SELECT trigger_is('webhook_events', 'webhook_events_append_only', 'forbid_change');
SELECT trigger_is('webhook_events', 'webhook_events_no_truncate', 'forbid_change');
SELECT trigger_is('order_reversals', 'order_reversals_state_machine', 'order_reversals_check');
SELECT trigger_is('order_reversals', 'order_reversals_no_delete', 'forbid_change');
SELECT trigger_is('order_reversals', 'order_reversals_no_truncate', 'forbid_change');
SELECT trigger_is('order_reversals', 'order_reversals_refunded_in_ledger', 'order_reversals_check_refunded');
SELECT is(
    ARRAY(SELECT tgname::text FROM pg_trigger
           WHERE NOT tgisinternal AND tgconstraint <> 0 AND tgdeferrable AND tginitdeferred
             AND tgrelid IN ('orders'::regclass, 'ledger_transactions'::regclass,
                             'ledger_entries'::regclass, 'order_reversals'::regclass)
           ORDER BY 1),
    ARRAY['ledger_entries_balanced', 'ledger_transactions_balanced', 'order_reversals_refunded_in_ledger',
          'orders_paid_has_payment'],
    'the commit-time checks are DEFERRABLE INITIALLY DEFERRED constraint triggers');

-- API functions: exact signatures, SECURITY DEFINER with a fixed search_path
SELECT function_returns('checkout_begin',
    ARRAY['text', 'text', 'text', 'text', 'bigint', 'text', 'text', 'interval', 'interval'],
    'setof record');
SELECT is(pg_get_function_result('checkout_begin(text,text,text,text,bigint,text,text,interval,interval)'::regprocedure),
          'TABLE(result text, order_id uuid, response_status integer, response_body text, lock_token uuid, completed_at_ms bigint)',
          'checkout_begin result columns');
SELECT is(pg_get_function_result('checkout_finish(uuid,text,uuid,text,text,bigint)'::regprocedure),
          'TABLE(result text, status text, response_status integer, response_body text, completed_at_ms bigint, reversal boolean)',
          'checkout_finish result columns');
SELECT is(pg_get_function_result('webhook_apply(text,uuid,text,text)'::regprocedure),
          'TABLE(result text, order_status text, conflict boolean, reversal boolean, amount_cents bigint, currency text)',
          'webhook_apply result columns');
SELECT is(pg_get_function_result('checkout_claim_stale(interval,integer)'::regprocedure),
          'TABLE(key text, order_id uuid, amount_cents bigint, currency text, lock_token uuid)',
          'checkout_claim_stale result columns');
SELECT is(pg_get_function_result('reversals_due(interval,integer)'::regprocedure),
          'TABLE(order_id uuid, amount_cents bigint, currency text)',
          'reversals_due result columns');
SELECT function_returns('reversal_settle', ARRAY['uuid', 'text'], 'text');
SELECT is(pg_get_function_identity_arguments('reversal_settle(uuid,text)'::regprocedure),
          'p_order_id uuid, p_answer text', 'reversal_settle argument names');
SELECT is(pg_get_function_identity_arguments('reversals_due(interval,integer)'::regprocedure),
          'p_retry_after interval, p_limit integer', 'reversals_due argument names');
SELECT is(ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'public'::regnamespace
                   AND p.proname IN ('checkout_begin', 'checkout_finish', 'webhook_apply', 'checkout_claim_stale')
                 ORDER BY 1),
          ARRAY['checkout_begin(text,text,text,text,bigint,text,text,interval,interval)',
                'checkout_claim_stale(interval,integer)',
                'checkout_finish(uuid,text,uuid,text,text,bigint)',
                'webhook_apply(text,uuid,text,text)'],
          'the changed API functions exist once each (the old checkout_finish is gone)');
SELECT is(pg_get_function_result('pending_orders_due(interval,integer)'::regprocedure),
          'TABLE(order_id uuid, amount_cents bigint, currency text)',
          'pending_orders_due result columns');
SELECT function_returns('order_json', ARRAY['orders'], 'text');
SELECT function_returns('order_json', ARRAY['orders', 'order_reversals'], 'text');
SELECT function_returns('order_get', ARRAY['uuid'], 'text');
SELECT function_returns('order_ledger', ARRAY['uuid'], 'text');
SELECT function_returns('purge_expired_idempotency_keys', ARRAY['interval', 'integer'], 'integer');
SELECT is(pg_get_function_identity_arguments('checkout_begin(text,text,text,text,bigint,text,text,interval,interval)'::regprocedure),
          'p_key text, p_fingerprint text, p_buyer_id text, p_seller_id text, p_amount_cents bigint, p_currency text, p_buyer_trust text, p_lock_timeout interval, p_ttl interval',
          'checkout_begin argument names');
SELECT is(pg_get_function_identity_arguments('checkout_finish(uuid,text,uuid,text,text,bigint)'::regprocedure),
          'p_order_id uuid, p_key text, p_lock_token uuid, p_outcome text, p_charge_id text, p_outage_cap_cents bigint',
          'checkout_finish argument names');
SELECT is(pg_get_function_identity_arguments('webhook_apply(text,uuid,text,text)'::regprocedure),
          'p_event_id text, p_order_id uuid, p_outcome text, p_payload text',
          'webhook_apply argument names');

SELECT is(
    ARRAY(SELECT p.proname::text FROM pg_proc p
           WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef
             AND p.proconfig[1] = 'search_path=public, pg_temp'
           ORDER BY 1),
    ARRAY['checkout_begin', 'checkout_begin_many', 'checkout_claim_stale', 'checkout_finish',
          'checkout_finish_many', 'order_get', 'order_get_many',
          'order_ledger', 'pending_orders_due', 'purge_expired_idempotency_keys',
          'reversal_settle', 'reversals_due', 'webhook_apply', 'webhook_apply_many'],
    'the API functions are SECURITY DEFINER with search_path = public, pg_temp');

-- CHECK constraints: each row breaks exactly one rule ------------------------
SELECT pg_temp.throws($$ INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
                         VALUES ('bad buyer', 's', 1, 'EUR', 'trusted') $$,
    '23514', '%"orders_buyer_id_format"%', 'buyer_id with a space is refused');
SELECT pg_temp.throws($$ INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
                         VALUES (repeat('b', 65), 's', 1, 'EUR', 'trusted') $$,
    '23514', '%"orders_buyer_id_format"%', 'buyer_id of 65 characters is refused');
SELECT pg_temp.throws($$ INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
                         VALUES ('', 's', 1, 'EUR', 'trusted') $$,
    '23514', '%"orders_buyer_id_format"%', 'empty buyer_id is refused');
SELECT pg_temp.throws($$ INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
                         VALUES ('b', 'sel/ler', 1, 'EUR', 'trusted') $$,
    '23514', '%"orders_seller_id_format"%', 'seller_id with a slash is refused');
SELECT pg_temp.throws($$ INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
                         VALUES ('b', repeat('s', 65), 1, 'EUR', 'trusted') $$,
    '23514', '%"orders_seller_id_format"%', 'seller_id of 65 characters is refused');
SELECT lives_ok($$ INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
                   VALUES (repeat('b', 64), 'Az09_.:-', 1, 'EUR', 'untrusted') $$,
    'ids of 64 characters and every allowed character are accepted');
SELECT pg_temp.throws($$ INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
                         VALUES ('b', 's', 0, 'EUR', 'trusted') $$,
    '23514', '%"orders_amount_positive"%', 'amount 0 is refused');
SELECT pg_temp.throws($$ INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
                         VALUES ('b', 's', -5, 'EUR', 'trusted') $$,
    '23514', '%"orders_amount_positive"%', 'negative amount is refused');
SELECT pg_temp.throws($$ INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
                         VALUES ('b', 's', 1, 'eur', 'trusted') $$,
    '23514', '%"orders_currency_format"%', 'lower-case currency is refused');
SELECT pg_temp.throws($$ INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
                         VALUES ('b', 's', 1, 'EU', 'trusted') $$,
    '23514', '%"orders_currency_format"%', 'two-letter currency is refused');
SELECT pg_temp.throws($$ INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust)
                         VALUES ('b', 's', 1, 'EUR', 'maybe') $$,
    '23514', '%"orders_buyer_trust_valid"%', 'unknown buyer_trust is refused');
-- status, failure_reason and provider_charge_id checks, with the state
-- machine triggers out of the way (they would refuse these rows first):
SELECT pg_temp.throws($$ SET LOCAL session_replication_role = replica;
                         INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust, status)
                         VALUES ('b', 's', 1, 'EUR', 'trusted', 'SHIPPED') $$,
    '23514', '%"orders_status_valid"%', 'unknown status is refused');
SELECT pg_temp.throws($$ SET LOCAL session_replication_role = replica;
                         INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust, status)
                         VALUES ('b', 's', 1, 'EUR', 'trusted', 'FAILED') $$,
    '23514', '%"orders_failure_reason_iff_failed"%', 'FAILED without a failure_reason is refused');
SELECT pg_temp.throws($$ SET LOCAL session_replication_role = replica;
                         INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust, status, failure_reason)
                         VALUES ('b', 's', 1, 'EUR', 'trusted', 'PAID', 'declined') $$,
    '23514', '%"orders_failure_reason_iff_failed"%', 'a failure_reason on a PAID order is refused');
SELECT pg_temp.throws($$ SET LOCAL session_replication_role = replica;
                         INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust, status, failure_reason)
                         VALUES ('b', 's', 1, 'EUR', 'trusted', 'FAILED', 'bored') $$,
    '23514', '%"orders_failure_reason_valid"%', 'unknown failure_reason is refused');
SELECT pg_temp.throws($$ INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust, provider_charge_id)
                         VALUES ('b', 's', 1, 'EUR', 'trusted', '') $$,
    '23514', '%"orders_provider_charge_id_length"%', 'empty provider_charge_id is refused');

-- idempotency_keys (an in-progress key holds a lock token, a completed one
-- its completed_at, so that each row below breaks only the rule it names)
SELECT pg_temp.throws(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id, lock_token)
                                VALUES ('has space', %L, 'in_progress', %L, gen_random_uuid()) $$,
                             pg_temp.fp('x'), pg_temp.mk_order()),
    '23514', '%"idempotency_keys_key_format"%', 'key with a space is refused');
SELECT pg_temp.throws(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id, lock_token)
                                VALUES (repeat('k', 256), %L, 'in_progress', %L, gen_random_uuid()) $$,
                             pg_temp.fp('x'), pg_temp.mk_order()),
    '23514', '%"idempotency_keys_key_format"%', 'key of 256 characters is refused');
SELECT pg_temp.throws(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id, lock_token)
                                VALUES ('', %L, 'in_progress', %L, gen_random_uuid()) $$,
                             pg_temp.fp('x'), pg_temp.mk_order()),
    '23514', '%"idempotency_keys_key_format"%', 'empty key is refused');
SELECT lives_ok(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id, lock_token)
                          VALUES (repeat('~', 254) || '!', %L, 'in_progress', %L, gen_random_uuid()) $$,
                       pg_temp.fp('x'), pg_temp.mk_order()),
    'key of 255 visible ASCII characters is accepted');
SELECT pg_temp.throws(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id, lock_token)
                                VALUES ('k1', %L, 'in_progress', %L, gen_random_uuid()) $$,
                             upper(pg_temp.fp('x')), pg_temp.mk_order()),
    '23514', '%"idempotency_keys_fingerprint_format"%', 'upper-case fingerprint is refused');
SELECT pg_temp.throws(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id, lock_token)
                                VALUES ('k1', 'abc', 'in_progress', %L, gen_random_uuid()) $$, pg_temp.mk_order()),
    '23514', '%"idempotency_keys_fingerprint_format"%', 'short fingerprint is refused');
SELECT pg_temp.throws(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id, lock_token)
                                VALUES ('k1', %L, 'in_progress', %L, gen_random_uuid()) $$,
                             pg_temp.fp('x') || 'a', pg_temp.mk_order()),
    '23514', '%"idempotency_keys_fingerprint_format"%', 'fingerprint of 65 hex digits is refused');
SELECT pg_temp.throws(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id)
                                VALUES ('k1', %L, 'done', %L) $$, pg_temp.fp('x'), pg_temp.mk_order()),
    '23514', '%"idempotency_keys_state_valid"%', 'unknown key state is refused');
SELECT pg_temp.throws(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id, completed_at)
                                VALUES ('k1', %L, 'completed', %L, now()) $$, pg_temp.fp('x'), pg_temp.mk_order()),
    '23514', '%"idempotency_keys_response_iff_completed"%', 'completed key without a response is refused');
SELECT pg_temp.throws(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id, response_status, completed_at)
                                VALUES ('k1', %L, 'completed', %L, 201, now()) $$, pg_temp.fp('x'), pg_temp.mk_order()),
    '23514', '%"idempotency_keys_response_iff_completed"%', 'completed key without a body is refused');
SELECT pg_temp.throws(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id, response_status, response_body, lock_token)
                                VALUES ('k1', %L, 'in_progress', %L, 201, '{}', gen_random_uuid()) $$, pg_temp.fp('x'), pg_temp.mk_order()),
    '23514', '%"idempotency_keys_response_iff_completed"%', 'in-progress key with a response is refused');
SELECT pg_temp.throws(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id, response_status, response_body, completed_at)
                                VALUES ('k1', %L, 'completed', %L, 42, '{}', now()) $$, pg_temp.fp('x'), pg_temp.mk_order()),
    '23514', '%"idempotency_keys_response_status_valid"%', 'response status 42 is refused');
SELECT pg_temp.throws(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id, lock_token)
                                VALUES ('k1', %L, 'in_progress', gen_random_uuid(), gen_random_uuid());
                                SET CONSTRAINTS ALL IMMEDIATE $$, pg_temp.fp('x')),
    '23503', '%"idempotency_keys_order_id_fkey"%', 'a key for no order is refused (at commit)');
SELECT pg_temp.throws(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id, response_status, response_body)
                                VALUES ('k1', %L, 'completed', %L, 201, '{}') $$, pg_temp.fp('x'), pg_temp.mk_order()),
    '23514', '%"idempotency_keys_completed_at_iff_completed"%', 'a completed key without completed_at is refused');
SELECT pg_temp.throws(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id, lock_token, completed_at)
                                VALUES ('k1', %L, 'in_progress', %L, gen_random_uuid(), now()) $$, pg_temp.fp('x'), pg_temp.mk_order()),
    '23514', '%"idempotency_keys_completed_at_iff_completed"%', 'an in-progress key with a completed_at is refused');
SELECT pg_temp.throws(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id)
                                VALUES ('k1', %L, 'in_progress', %L) $$, pg_temp.fp('x'), pg_temp.mk_order()),
    '23514', '%"idempotency_keys_in_progress_has_token"%', 'an in-progress key without a lock token is refused');
SELECT lives_ok(format($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id, response_status, response_body, completed_at)
                          VALUES ('k-done', %L, 'completed', %L, 201, '{}', now()) $$, pg_temp.fp('x'), pg_temp.mk_order()),
    'a completed key needs no lock token');

-- webhook_events
SELECT pg_temp.throws(format($$ INSERT INTO webhook_events (event_id, order_id, outcome, payload, applied)
                                VALUES ('', %L, 'PAID', '{}', true) $$, pg_temp.mk_order()),
    '23514', '%"webhook_events_event_id_length"%', 'empty event_id is refused');
SELECT pg_temp.throws(format($$ INSERT INTO webhook_events (event_id, order_id, outcome, payload, applied)
                                VALUES (repeat('e', 256), %L, 'PAID', '{}', true) $$, pg_temp.mk_order()),
    '23514', '%"webhook_events_event_id_length"%', 'event_id of 256 characters is refused');
SELECT pg_temp.throws(format($$ INSERT INTO webhook_events (event_id, order_id, outcome, payload, applied)
                                VALUES ('e1', %L, 'REFUNDED', '{}', true) $$, pg_temp.mk_order()),
    '23514', '%"webhook_events_outcome_valid"%', 'unknown outcome is refused');
SELECT pg_temp.throws($$ INSERT INTO webhook_events (event_id, order_id, outcome, payload, applied)
                         VALUES ('e1', gen_random_uuid(), 'PAID', '{}', true) $$,
    '23503', '%"webhook_events_order_id_fkey"%', 'an event for no order is refused');
SELECT pg_temp.throws(format($$ INSERT INTO webhook_events (event_id, order_id, outcome, payload, applied)
                                VALUES ('e1', %1$L, 'PAID', '{}', true), ('e1', %1$L, 'PAID', '{}', true) $$,
                             pg_temp.mk_order()),
    '23505', '%"webhook_events_pkey"%', 'event_id is unique');

-- ledger (balance and payment rules are in 03_ledger.sql)
SELECT pg_temp.throws(format($$ INSERT INTO ledger_transactions (order_id, kind) VALUES (%L, 'chargeback') $$,
                             pg_temp.mk_order('PAID')),   -- (its payment serves the entry tests below)
    '23514', '%"ledger_transactions_kind_valid"%', 'unknown transaction kind is refused');
SELECT pg_temp.passes(format($$ INSERT INTO ledger_transactions (order_id, kind) VALUES (%1$L, 'late_capture'), (%1$L, 'refund') $$,
                             pg_temp.mk_order('FAILED')),
    'the kinds late_capture and refund are known (their shapes: 03_ledger.sql)');
SELECT pg_temp.throws($$ INSERT INTO ledger_transactions (order_id, kind) VALUES (gen_random_uuid(), 'payment') $$,
    '23503', '%"ledger_transactions_order_id_fkey"%', 'a transaction for no order is refused');
SELECT pg_temp.throws($$ INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
                         VALUES (gen_random_uuid(), 'cash', 'DEBIT', 1, 'EUR') $$,
    '23503', '%"ledger_entries_txn_id_fkey"%', 'an entry for no transaction is refused');
SELECT pg_temp.throws($$ INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
                         SELECT id, 'Cash!', 'DEBIT', 1, 'EUR' FROM ledger_transactions LIMIT 1 $$,
    '23514', '%"ledger_entries_account_format"%', 'malformed account is refused');
SELECT pg_temp.throws(format($$ INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
                                SELECT id, %L, 'DEBIT', 1, 'EUR' FROM ledger_transactions LIMIT 1 $$, v.account),
    '23514', '%"ledger_entries_account_format"%', v.why)
  FROM (VALUES ('a' || repeat('b', 63), 'account of 64 characters is refused'),
               ('1cash', 'account starting with a digit is refused')) AS v(account, why);
SELECT lives_ok($$ INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
                   SELECT id, 'a' || repeat('z_9', 20) || 'bc', 'DEBIT', 1, 'EUR' FROM ledger_transactions LIMIT 1 $$,
    'account of 63 characters is accepted');
SELECT pg_temp.throws($$ INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
                         SELECT id, 'cash', 'DEBET', 1, 'EUR' FROM ledger_transactions LIMIT 1 $$,
    '23514', '%"ledger_entries_direction_valid"%', 'unknown direction is refused');
SELECT pg_temp.throws($$ INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
                         SELECT id, 'cash', 'DEBIT', 0, 'EUR' FROM ledger_transactions LIMIT 1 $$,
    '23514', '%"ledger_entries_amount_positive"%', 'entry amount 0 is refused');
SELECT pg_temp.throws($$ INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
                         SELECT id, 'cash', 'DEBIT', -1, 'EUR' FROM ledger_transactions LIMIT 1 $$,
    '23514', '%"ledger_entries_amount_positive"%', 'negative entry amount is refused');
SELECT pg_temp.throws($$ INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
                         SELECT id, 'cash', 'DEBIT', 1, 'eur' FROM ledger_transactions LIMIT 1 $$,
    '23514', '%"ledger_entries_currency_format"%', 'lower-case entry currency is refused');
SELECT pg_temp.throws($$ INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
                         SELECT id, 'cash', 'DEBIT', 1, 'EUR' FROM ledger_transactions LIMIT 1 $$,
    '23505', '%"ledger_entries_txn_account_direction_currency"%',
    'an account appears once per side and currency in a transaction');

-- order_reversals (its state machine: 08_reversals.sql).  The CHECKs, with
-- the triggers out of the way (the opening rules would refuse these rows
-- first):
CREATE TEMP TABLE t_rev AS SELECT pg_temp.mk_order('FAILED') AS id;
SELECT pg_temp.throws(format($$ SET LOCAL session_replication_role = replica;
                                INSERT INTO order_reversals (order_id, status, amount_cents, currency)
                                VALUES (%L, 'lost', 5000, 'EUR') $$, id),
    '23514', '%"order_reversals_status_valid"%', 'unknown reversal status is refused') FROM t_rev;
SELECT pg_temp.throws(format($$ SET LOCAL session_replication_role = replica;
                                INSERT INTO order_reversals (order_id, amount_cents, currency)
                                VALUES (%L, 0, 'EUR') $$, id),
    '23514', '%"order_reversals_amount_positive"%', 'reversal amount 0 is refused') FROM t_rev;
SELECT pg_temp.throws(format($$ SET LOCAL session_replication_role = replica;
                                INSERT INTO order_reversals (order_id, amount_cents, currency)
                                VALUES (%L, 5000, 'eur') $$, id),
    '23514', '%"order_reversals_currency_format"%', 'lower-case reversal currency is refused') FROM t_rev;
SELECT pg_temp.throws(format($$ INSERT INTO order_reversals (order_id, amount_cents, currency)
                                VALUES (%1$L, 5000, 'EUR'), (%1$L, 5000, 'EUR') $$, id),
    '23505', '%"order_reversals_pkey"%', 'one reversal per order') FROM t_rev;
SELECT pg_temp.throws($$ INSERT INTO order_reversals (order_id, amount_cents, currency)
                         VALUES (gen_random_uuid(), 5000, 'EUR') $$,
    '23514', '%must be opened pending, for a FAILED order%', 'a reversal for no order is refused');
SELECT results_eq(format($$ INSERT INTO order_reversals (order_id, amount_cents, currency) VALUES (%L, 5000, 'EUR')
                            RETURNING status, attempts, last_attempt_at, created_at = now(), updated_at = now() $$, id),
                  $$ VALUES ('pending', 0, NULL::timestamptz, true, true) $$,
                  'a reversal is born pending, never tried, stamped now') FROM t_rev;

SELECT * FROM finish();
ROLLBACK;
