-- Role app: what it is granted, what it is refused (tried for real as app),
-- and that the API works for it.
BEGIN;
\ir helpers.psql
SELECT plan(81);

-- The role and its grants -----------------------------------------------------
SELECT has_role('app');
SELECT isnt_superuser('app');
SELECT is((SELECT (rolcanlogin, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls)::text
             FROM pg_roles WHERE rolname = 'app'),
          '(t,f,f,f,f)', 'app can log in and has no other role attribute');
SELECT database_privs_are(current_database(), 'app', ARRAY['CONNECT'],
                          'app may connect to the database, nothing more');
SELECT is((SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a
            WHERE d.datname = current_database() AND a.grantee = 0), 0::bigint,
          'PUBLIC has no privilege on the database (no CONNECT, no TEMP)');
SELECT schema_privs_are('public', 'app', ARRAY['USAGE'], 'app has USAGE on schema public, not CREATE');
SELECT is((SELECT count(*) FROM pg_namespace n, aclexplode(n.nspacl) a
            WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE'), 0::bigint,
          'PUBLIC cannot CREATE in schema public');
SELECT table_privs_are(t, 'app', ARRAY['SELECT'], 'app may only SELECT from ' || t)
  FROM unnest(ARRAY['orders', 'idempotency_keys', 'webhook_events', 'ledger_transactions', 'ledger_entries']) AS t;
SELECT sequence_privs_are('ledger_entries_id_seq', 'app', ARRAY[]::text[], 'app has no privilege on the entry id sequence');
SELECT function_privs_are(f, args, 'app', ARRAY['EXECUTE'], 'app may call ' || f)
  FROM (VALUES ('checkout_begin', ARRAY['text', 'text', 'text', 'text', 'bigint', 'text', 'text', 'interval', 'interval']),
               ('checkout_finish', ARRAY['uuid', 'text', 'text', 'text', 'bigint']),
               ('webhook_apply', ARRAY['text', 'uuid', 'text', 'text']),
               ('order_json', ARRAY['orders']),
               ('order_get', ARRAY['uuid']),
               ('order_ledger', ARRAY['uuid']),
               ('purge_expired_idempotency_keys', ARRAY['interval', 'integer']),
               ('checkout_claim_stale', ARRAY['interval', 'integer']),
               ('pending_orders_due', ARRAY['interval', 'integer'])) AS v(f, args);
SELECT function_privs_are(f, args, 'app', ARRAY[]::text[], 'app may not call ' || f)
  FROM (VALUES ('ledger_write_payment', ARRAY['uuid', 'bigint', 'character']),
               ('orders_check_insert', ARRAY[]::text[]),
               ('orders_check_update', ARRAY[]::text[]),
               ('orders_check_paid', ARRAY[]::text[]),
               ('forbid_change', ARRAY[]::text[]),
               ('ledger_check_txn', ARRAY[]::text[])) AS v(f, args);
SELECT is(ARRAY(SELECT p.proname::text FROM pg_proc p
                 WHERE p.pronamespace = 'public'::regnamespace
                   AND p.proname IN ('checkout_begin', 'checkout_finish', 'webhook_apply', 'order_json', 'order_get',
                                     'order_ledger', 'purge_expired_idempotency_keys', 'checkout_claim_stale',
                                     'pending_orders_due', 'ledger_write_payment', 'orders_check_insert',
                                     'orders_check_update', 'orders_check_paid', 'forbid_change', 'ledger_check_txn')
                   AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))),
          ARRAY[]::text[], 'none of our functions is executable by PUBLIC');

-- Refused, tried as app -------------------------------------------------------
CREATE TEMP TABLE t AS SELECT pg_temp.mk_order('PAID') AS paid;
GRANT SELECT ON t TO app;   -- (the fixture table, so that statements can name the order)
SELECT pg_temp.throws(format('SELECT pg_temp.as_app(%L)', q.sql), '42501', q.pat, q.why)
  FROM (VALUES
    ($$ INSERT INTO orders (buyer_id, seller_id, amount_cents, currency, buyer_trust) VALUES ('b', 's', 1, 'EUR', 'trusted') $$,
     'permission denied for table orders', 'app cannot INSERT into orders'),
    ($$ UPDATE orders SET provider_charge_id = 'x' $$,                  'permission denied for table orders', 'app cannot UPDATE orders'),
    ($$ DELETE FROM orders $$,                                          'permission denied for table orders', 'app cannot DELETE from orders'),
    ($$ INSERT INTO idempotency_keys (key, fingerprint, state, order_id) SELECT 'k', repeat('a', 64), 'in_progress', paid FROM t $$,
     'permission denied for table idempotency_keys', 'app cannot INSERT into idempotency_keys'),
    ($$ UPDATE idempotency_keys SET locked_at = now() $$,               'permission denied for table idempotency_keys', 'app cannot UPDATE idempotency_keys'),
    ($$ DELETE FROM idempotency_keys $$,                                'permission denied for table idempotency_keys', 'app cannot DELETE from idempotency_keys'),
    ($$ INSERT INTO webhook_events (event_id, order_id, outcome, payload, applied) SELECT 'e', paid, 'PAID', '', true FROM t $$,
     'permission denied for table webhook_events', 'app cannot INSERT into webhook_events'),
    ($$ DELETE FROM webhook_events $$,                                  'permission denied for table webhook_events', 'app cannot DELETE from webhook_events'),
    ($$ INSERT INTO ledger_transactions (order_id, kind) SELECT paid, 'payment' FROM t $$,
     'permission denied for table ledger_transactions', 'app cannot INSERT into ledger_transactions'),
    ($$ DELETE FROM ledger_transactions $$,                             'permission denied for table ledger_transactions', 'app cannot DELETE from ledger_transactions'),
    ($$ TRUNCATE ledger_transactions CASCADE $$,                        'permission denied for table ledger_transactions', 'app cannot TRUNCATE ledger_transactions'),
    ($$ INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency) SELECT id, 'x', 'DEBIT', 1, 'EUR' FROM ledger_transactions $$,
     'permission denied for table ledger_entries', 'app cannot INSERT into ledger_entries'),
    ($$ UPDATE ledger_entries SET amount_cents = 1 $$,                  'permission denied for table ledger_entries', 'app cannot UPDATE ledger_entries'),
    ($$ DELETE FROM ledger_entries $$,                                  'permission denied for table ledger_entries', 'app cannot DELETE from ledger_entries'),
    ($$ TRUNCATE ledger_entries $$,                                     'permission denied for table ledger_entries', 'app cannot TRUNCATE ledger_entries'),
    ($$ TRUNCATE webhook_events $$,                                     'permission denied for table webhook_events', 'app cannot TRUNCATE webhook_events'),
    ($$ TRUNCATE orders CASCADE $$,                                     'permission denied for table orders', 'app cannot TRUNCATE orders'),
    ($$ CREATE TABLE public.evil (a int) $$,                            'permission denied for schema public', 'app cannot CREATE TABLE'),
    ($$ CREATE FUNCTION public.evil() RETURNS int LANGUAGE sql AS 'SELECT 1' $$,
     'permission denied for schema public', 'app cannot CREATE FUNCTION'),
    ($$ CREATE TEMP TABLE evil (a int) $$,                              'permission denied%', 'app cannot create temporary tables (here: not in this session''s temp schema; a fresh session: concurrency.sh)'),
    ($$ CREATE SCHEMA evil $$,                                          'permission denied for database%', 'app cannot CREATE SCHEMA'),
    ($$ DROP TABLE ledger_entries $$,                                   'must be owner of table ledger_entries', 'app cannot DROP a table'),
    ($$ ALTER TABLE orders ADD COLUMN evil int $$,                      'must be owner of table orders', 'app cannot ALTER a table'),
    ($$ ALTER TABLE ledger_entries DISABLE TRIGGER USER $$,             'must be owner of table ledger_entries', 'app cannot disable the ledger triggers'),
    ($$ CREATE INDEX ON orders (buyer_id) $$,                           'must be owner of table orders', 'app cannot CREATE INDEX'),
    ($$ SET session_replication_role = replica $$,                      'permission denied to set parameter%', 'app cannot switch triggers off'),
    ($$ SELECT ledger_write_payment(paid, 1, 'EUR') FROM t $$,          'permission denied for function ledger_write_payment', 'app cannot call the internal ledger writer'),
    ($$ SELECT nextval('ledger_entries_id_seq') $$,                     'permission denied for sequence ledger_entries_id_seq', 'app cannot use the entry id sequence'))
    AS q(sql, pat, why);
SELECT is(current_user::text, session_user::text, 'the tests are back to their own role');

-- Allowed for app: the API and reading ------------------------------------------
CREATE TEMP TABLE r (label text PRIMARY KEY, v text);
GRANT SELECT, INSERT ON r TO app;
CREATE FUNCTION pg_temp.app_keep(p_label text, q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO r VALUES (p_label, pg_temp.as_app(q));
    RETURN ok(true, 'app: ' || p_label);
EXCEPTION WHEN OTHERS THEN
    RETURN ok(false, 'app: ' || p_label) || E'\n' || diag(SQLSTATE || ' ' || SQLERRM);
END
$$;
SELECT pg_temp.app_keep('checkout_begin', format($$ SELECT result || ' ' || order_id
    FROM checkout_begin('app-key', %L, 'b', 's', 1234, 'EUR', 'trusted', '30 s', '1 d') $$, pg_temp.fp('app')));
SELECT is(split_part((SELECT v FROM r WHERE label = 'checkout_begin'), ' ', 1), 'new', 'app: checkout_begin creates the order');
SELECT pg_temp.app_keep('checkout_finish', format($$ SELECT status FROM checkout_finish(%L, 'app-key', 'succeeded', 'ch_app', 10000) $$,
                                                 split_part((SELECT v FROM r WHERE label = 'checkout_begin'), ' ', 2)));
SELECT is((SELECT v FROM r WHERE label = 'checkout_finish'), 'PAID', 'app: checkout_finish pays it');
SELECT pg_temp.app_keep('replay', format($$ SELECT result FROM checkout_begin('app-key', %L, 'b', 's', 1234, 'EUR', 'trusted', '30 s', '1 d') $$,
                                        pg_temp.fp('app')));
SELECT is((SELECT v FROM r WHERE label = 'replay'), 'replay', 'app: a retry replays');
SELECT pg_temp.app_keep('webhook_apply', $$ SELECT result FROM webhook_apply('app-evt', (SELECT paid FROM t), 'PAID', '{}') $$);
SELECT is((SELECT v FROM r WHERE label = 'webhook_apply'), 'not_applied', 'app: webhook_apply records the event');
SELECT pg_temp.app_keep('order_get', $$ SELECT order_get((SELECT paid FROM t))::json ->> 'status' $$);
SELECT is((SELECT v FROM r WHERE label = 'order_get'), 'PAID', 'app: order_get reads the order');
SELECT pg_temp.app_keep('order_json', $$ SELECT order_json(o)::json ->> 'status' FROM orders o WHERE o.id = (SELECT paid FROM t) $$);
SELECT is((SELECT v FROM r WHERE label = 'order_json'), 'PAID', 'app: order_json renders a row it reads');
SELECT pg_temp.app_keep('order_ledger', $$ SELECT json_array_length(order_ledger((SELECT paid FROM t))::json -> 'transactions') $$);
SELECT is((SELECT v FROM r WHERE label = 'order_ledger'), '1', 'app: order_ledger reads the ledger');
SELECT pg_temp.app_keep('readme_query', $$ SELECT string_agg(e.account || '/' || e.direction, ',' ORDER BY e.direction DESC)
                                             FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.txn_id
                                            WHERE t.order_id = (SELECT paid FROM t) $$);
SELECT is((SELECT v FROM r WHERE label = 'readme_query'), 'cash/DEBIT,seller_payable/CREDIT',
          'app: the README inspection query works');
SELECT pg_temp.app_keep('purge', $$ SELECT purge_expired_idempotency_keys('1 day', 100) $$);
SELECT is((SELECT v FROM r WHERE label = 'purge'), '0', 'app: the housekeeper may purge');
SELECT pg_temp.app_keep('claim_stale', $$ SELECT count(*) FROM checkout_claim_stale('30 s', 100) $$);
SELECT is((SELECT v FROM r WHERE label = 'claim_stale'), '0', 'app: the housekeeper may claim stale keys');
SELECT pg_temp.app_keep('pending_orders_due', $$ SELECT count(*) FROM pending_orders_due('1 min', 100) $$);
SELECT is((SELECT v FROM r WHERE label = 'pending_orders_due'), '0', 'app: the housekeeper may list pending orders');

SELECT pg_temp.passes('SET CONSTRAINTS ALL IMMEDIATE', 'what app did passes the commit-time checks');

SELECT * FROM finish();
ROLLBACK;
