-- Roles: app (what it is granted, what it is refused -- tried for real as
-- app -- and that the API works for it) and paymentsd_owner (NOLOGIN, owns
-- every function, holds only the table rights the functions need -- tried
-- for real by borrowing the role).
BEGIN;
\ir helpers.psql
SELECT plan(149);

-- Our functions: those in public that no extension (pgTAP) brought.
CREATE TEMP TABLE our_functions AS
    SELECT p.oid, p.oid::regprocedure::text AS sig, p.proname::text AS name, p.proowner, p.proacl
      FROM pg_proc p
     WHERE p.pronamespace = 'public'::regnamespace
       AND NOT EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e');

-- The role app and its grants ---------------------------------------------------
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
  FROM unnest(ARRAY['orders', 'idempotency_keys', 'webhook_events', 'ledger_transactions', 'ledger_entries',
                    'order_reversals']) AS t;
SELECT sequence_privs_are('ledger_entries_id_seq', 'app', ARRAY[]::text[], 'app has no privilege on the entry id sequence');
SELECT function_privs_are(f, args, 'app', ARRAY['EXECUTE'], 'app may call ' || f)
  FROM (VALUES ('checkout_begin', ARRAY['text', 'text', 'text', 'text', 'bigint', 'text', 'text', 'interval', 'interval']),
               ('checkout_finish', ARRAY['uuid', 'text', 'uuid', 'text', 'text', 'bigint']),
               ('webhook_apply', ARRAY['text', 'uuid', 'text', 'text']),
               ('reversal_settle', ARRAY['uuid', 'text']),
               ('reversals_due', ARRAY['interval', 'integer']),
               ('order_json', ARRAY['orders']),
               ('order_json', ARRAY['orders', 'order_reversals']),
               ('order_get', ARRAY['uuid']),
               ('order_ledger', ARRAY['uuid']),
               ('purge_expired_idempotency_keys', ARRAY['interval', 'integer']),
               ('checkout_claim_stale', ARRAY['interval', 'integer']),
               ('pending_orders_due', ARRAY['interval', 'integer'])) AS v(f, args);
SELECT function_privs_are(f, args, 'app', ARRAY[]::text[], 'app may not call ' || f)
  FROM (VALUES ('ledger_write_payment', ARRAY['uuid', 'bigint', 'character']),
               ('ledger_write_reversal', ARRAY['uuid', 'bigint', 'character']),
               ('reversal_open', ARRAY['orders']),
               ('housekeeping_arg_error', ARRAY['interval', 'integer', 'text']),
               ('is_visible_ascii', ARRAY['text']),
               ('durations_arg_error', ARRAY['interval', 'interval']),
               ('checkout_begin_arg_error', ARRAY['text', 'text', 'text', 'text', 'bigint', 'text',
                                                  'text', 'interval', 'interval']),
               ('checkout_finish_arg_error', ARRAY['uuid', 'text', 'uuid', 'text', 'bigint']),
               ('finish_status', ARRAY['text', 'text', 'bigint', 'bigint']),
               ('finish_failure_reason', ARRAY['text', 'text', 'bigint', 'bigint']),
               ('orders_check_insert', ARRAY[]::text[]),
               ('orders_check_update', ARRAY[]::text[]),
               ('orders_check_paid', ARRAY[]::text[]),
               ('forbid_change', ARRAY[]::text[]),
               ('ledger_check_txn', ARRAY[]::text[]),
               ('order_reversals_check', ARRAY[]::text[]),
               ('order_reversals_check_refunded', ARRAY[]::text[])) AS v(f, args);
SELECT is(ARRAY(SELECT name FROM our_functions
                 WHERE proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(proacl) a WHERE a.grantee = 0)
                 ORDER BY 1),
          ARRAY[]::text[], 'none of our functions is executable by PUBLIC');
SELECT is(ARRAY(SELECT name FROM our_functions WHERE has_function_privilege('app', oid, 'EXECUTE') ORDER BY 1),
          ARRAY['checkout_begin', 'checkout_begin_many', 'checkout_claim_stale', 'checkout_finish',
                'checkout_finish_many', 'order_get', 'order_get_many', 'order_json', 'order_json',
                'order_ledger', 'pending_orders_due', 'purge_expired_idempotency_keys', 'reversal_settle',
                'reversals_due', 'webhook_apply', 'webhook_apply_many'],
          'app may call exactly the API');
SELECT ok(NOT pg_has_role('app', 'paymentsd_owner', 'MEMBER'),
          'app is not a member of paymentsd_owner (SET ROLE from a real app session: concurrency.sh)');

-- Refused, tried as app -------------------------------------------------------
CREATE TEMP TABLE t AS SELECT pg_temp.mk_order('PAID') AS paid,
                              pg_temp.mk_reversal(pg_temp.mk_order('FAILED')) AS failed;
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
    ($$ INSERT INTO order_reversals (order_id, amount_cents, currency) SELECT paid, 5000, 'EUR' FROM t $$,
     'permission denied for table order_reversals', 'app cannot INSERT into order_reversals'),
    ($$ UPDATE order_reversals SET status = 'canceled' $$,              'permission denied for table order_reversals', 'app cannot UPDATE order_reversals'),
    ($$ DELETE FROM order_reversals $$,                                 'permission denied for table order_reversals', 'app cannot DELETE from order_reversals'),
    ($$ TRUNCATE order_reversals $$,                                    'permission denied for table order_reversals', 'app cannot TRUNCATE order_reversals'),
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
    ($$ ALTER FUNCTION housekeeping_arg_error(interval, int, text) OWNER TO app $$,
     'must be owner of function housekeeping_arg_error',               'app cannot take a function over'),
    ($$ SELECT ledger_write_payment(paid, 1, 'EUR') FROM t $$,          'permission denied for function ledger_write_payment', 'app cannot call the internal ledger writer'),
    ($$ SELECT ledger_write_reversal(failed, 5000, 'EUR') FROM t $$,    'permission denied for function ledger_write_reversal', 'app cannot call the internal helper ledger_write_reversal'),
    ($$ SELECT reversal_open(o) FROM orders o, t WHERE o.id = t.paid $$, 'permission denied for function reversal_open', 'app cannot call the internal helper reversal_open'),
    ($$ SELECT durations_arg_error('1 day', '1 day') $$,                'permission denied for function durations_arg_error', 'app cannot call the internal helper durations_arg_error'),
    ($$ SELECT nextval('ledger_entries_id_seq') $$,                     'permission denied for sequence ledger_entries_id_seq', 'app cannot use the entry id sequence'))
    AS q(sql, pat, why);
SELECT is(current_user::text, session_user::text, 'the tests are back to their own role');

-- The role paymentsd_owner ------------------------------------------------------
SELECT has_role('paymentsd_owner');
SELECT isnt_superuser('paymentsd_owner');
SELECT is((SELECT (rolcanlogin, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolinherit)::text
             FROM pg_roles WHERE rolname = 'paymentsd_owner'),
          '(f,f,f,f,f,t)', 'paymentsd_owner is NOLOGIN and has no other role attribute');
SELECT is((SELECT count(*) FROM pg_auth_members m
            WHERE m.member = 'paymentsd_owner'::regrole OR m.roleid = 'paymentsd_owner'::regrole), 0::bigint,
          'paymentsd_owner is a member of no role, and no role is a member of it');
SELECT is(ARRAY(SELECT sig FROM our_functions WHERE proowner <> 'paymentsd_owner'::regrole ORDER BY 1),
          ARRAY[]::text[], 'paymentsd_owner owns every function of ours');
SELECT is(ARRAY(SELECT sig FROM our_functions ORDER BY 1),
          ARRAY['batch_len(anyarray)', 'batch_size(text,integer[])',
                'checkout_begin(text,text,text,text,bigint,text,text,interval,interval)',
                'checkout_begin_arg_error(text,text,text,text,bigint,text,text,interval,interval)',
                'checkout_begin_many(text[],text[],text[],text[],bigint[],text[],text[],interval[],interval[])',
                'checkout_claim_stale(interval,integer)',
                'checkout_finish(uuid,text,uuid,text,text,bigint)',
                'checkout_finish_arg_error(uuid,text,uuid,text,bigint)',
                'checkout_finish_many(uuid[],text[],uuid[],text[],text[],bigint[])',
                'durations_arg_error(interval,interval)',
                'finish_failure_reason(text,text,bigint,bigint)',
                'finish_status(text,text,bigint,bigint)',
                'forbid_change()', 'housekeeping_arg_error(interval,integer,text)',
                'is_visible_ascii(text)', 'ledger_check_txn()',
                'ledger_write_payment(uuid,bigint,character)', 'ledger_write_reversal(uuid,bigint,character)',
                'order_get(uuid)', 'order_get_many(uuid[])', 'order_json(orders)',
                'order_json(orders,order_reversals)', 'order_ledger(uuid)',
                'order_reversals_check()', 'order_reversals_check_refunded()',
                'orders_check_insert()', 'orders_check_paid()', 'orders_check_update()',
                'pending_orders_due(interval,integer)', 'purge_expired_idempotency_keys(interval,integer)',
                'reversal_open(orders)', 'reversal_settle(uuid,text)', 'reversals_due(interval,integer)',
                'webhook_apply(text,uuid,text,text)', 'webhook_apply_many(text[],uuid[],text[],text[])'],
          'and these are all of them (no leftover of an older signature)');
SELECT is((SELECT count(*) FROM pg_class WHERE relowner = 'paymentsd_owner'::regrole), 0::bigint,
          'paymentsd_owner owns no table, index or sequence (so it cannot disable a trigger)');
SELECT is((SELECT count(*) FROM pg_namespace WHERE nspowner = 'paymentsd_owner'::regrole)
        + (SELECT count(*) FROM pg_database WHERE datdba = 'paymentsd_owner'::regrole), 0::bigint,
          'paymentsd_owner owns no schema and no database');
SELECT database_privs_are(current_database(), 'paymentsd_owner', ARRAY[]::text[],
                          'paymentsd_owner has no privilege on the database (not even CONNECT)');
SELECT schema_privs_are('public', 'paymentsd_owner', ARRAY['USAGE'], 'paymentsd_owner has USAGE on schema public, not CREATE');
SELECT table_privs_are(v.t, 'paymentsd_owner', v.privs, 'paymentsd_owner may only ' || array_to_string(v.privs, ', ') || ' on ' || v.t)
  FROM (VALUES ('orders',              ARRAY['SELECT', 'INSERT', 'UPDATE']),
               ('order_reversals',     ARRAY['SELECT', 'INSERT', 'UPDATE']),
               ('idempotency_keys',    ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
               ('webhook_events',      ARRAY['SELECT', 'INSERT']),
               ('ledger_transactions', ARRAY['SELECT', 'INSERT']),
               ('ledger_entries',      ARRAY['SELECT', 'INSERT'])) AS v(t, privs);
SELECT sequence_privs_are('ledger_entries_id_seq', 'paymentsd_owner', ARRAY['USAGE'],
                          'paymentsd_owner may only use the entry id sequence');
SELECT is((SELECT array_agg(DISTINCT p.prosecdef ORDER BY p.prosecdef) FROM our_functions f JOIN pg_proc p ON p.oid = f.oid
            WHERE f.name IN ('checkout_begin', 'checkout_finish', 'webhook_apply', 'reversal_settle', 'reversals_due',
                             'order_get', 'order_ledger', 'purge_expired_idempotency_keys', 'checkout_claim_stale',
                             'pending_orders_due', 'checkout_begin_many', 'checkout_finish_many',
                             'webhook_apply_many', 'order_get_many')),
          ARRAY[true], 'the API runs as paymentsd_owner (SECURITY DEFINER)');

-- Refused, tried as paymentsd_owner: even a subverted function could not do these.
SELECT pg_temp.throws(format('SELECT pg_temp.as_owner(%L)', q.sql), '42501', q.pat, q.why)
  FROM (VALUES
    ($$ DELETE FROM ledger_entries $$,                      'permission denied for table ledger_entries', 'paymentsd_owner cannot DELETE ledger rows (entries)'),
    ($$ DELETE FROM ledger_transactions $$,                 'permission denied for table ledger_transactions', 'paymentsd_owner cannot DELETE ledger rows (transactions)'),
    ($$ UPDATE ledger_entries SET amount_cents = 1 $$,      'permission denied for table ledger_entries', 'paymentsd_owner cannot UPDATE ledger entries'),
    ($$ UPDATE ledger_transactions SET kind = 'payment' $$, 'permission denied for table ledger_transactions', 'paymentsd_owner cannot UPDATE ledger transactions'),
    ($$ TRUNCATE ledger_entries $$,                         'permission denied for table ledger_entries', 'paymentsd_owner cannot TRUNCATE the ledger'),
    ($$ DELETE FROM webhook_events $$,                      'permission denied for table webhook_events', 'paymentsd_owner cannot DELETE webhook events'),
    ($$ UPDATE webhook_events SET applied = true $$,        'permission denied for table webhook_events', 'paymentsd_owner cannot UPDATE webhook events'),
    ($$ DELETE FROM orders $$,                              'permission denied for table orders', 'paymentsd_owner cannot DELETE orders'),
    ($$ DELETE FROM order_reversals $$,                     'permission denied for table order_reversals', 'paymentsd_owner cannot DELETE reversals'),
    ($$ TRUNCATE idempotency_keys $$,                       'permission denied for table idempotency_keys', 'paymentsd_owner cannot TRUNCATE idempotency_keys'),
    ($$ CREATE TABLE public.evil (a int) $$,                'permission denied for schema public', 'paymentsd_owner cannot CREATE TABLE'),
    ($$ CREATE SCHEMA evil $$,                              'permission denied for database%', 'paymentsd_owner cannot CREATE SCHEMA'),
    ($$ ALTER TABLE ledger_entries DISABLE TRIGGER USER $$, 'must be owner of table ledger_entries', 'paymentsd_owner cannot disable the ledger triggers'),
    ($$ DROP TABLE order_reversals $$,                      'must be owner of table order_reversals', 'paymentsd_owner cannot DROP a table'),
    ($$ SET session_replication_role = replica $$,          'permission denied to set parameter%', 'paymentsd_owner cannot switch triggers off'))
    AS q(sql, pat, why);
SELECT pg_temp.passes($$ SELECT pg_temp.as_owner('DELETE FROM idempotency_keys WHERE false');
                         SELECT pg_temp.as_owner('UPDATE orders SET provider_charge_id = provider_charge_id WHERE false');
                         SELECT pg_temp.as_owner('UPDATE order_reversals SET attempts = attempts WHERE false');
                         SELECT pg_temp.as_owner('SELECT count(*) FROM ledger_entries') $$,
    'paymentsd_owner may do what the functions do (delete keys, update orders and reversals, read)');
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
CREATE FUNCTION pg_temp.v(p_label text, p_field int DEFAULT 1) RETURNS text LANGUAGE sql AS $$
    SELECT split_part(v, ' ', p_field) FROM r WHERE label = p_label
$$;
SELECT pg_temp.app_keep('checkout_begin', format($$ SELECT result || ' ' || order_id || ' ' || lock_token
    FROM checkout_begin('app-key', %L, 'b', 's', 1234, 'EUR', 'trusted', '30 s', '1 d') $$, pg_temp.fp('app')));
SELECT is(pg_temp.v('checkout_begin'), 'new', 'app: checkout_begin creates the order');
SELECT pg_temp.app_keep('checkout_finish', format($$ SELECT result || ' ' || status FROM checkout_finish(%L, 'app-key', %L, 'succeeded', 'ch_app', 10000) $$,
                                                 pg_temp.v('checkout_begin', 2), pg_temp.v('checkout_begin', 3)));
SELECT is((SELECT v FROM r WHERE label = 'checkout_finish'), 'finished PAID', 'app: checkout_finish pays it');
SELECT pg_temp.app_keep('replay', format($$ SELECT result FROM checkout_begin('app-key', %L, 'b', 's', 1234, 'EUR', 'trusted', '30 s', '1 d') $$,
                                        pg_temp.fp('app')));
SELECT is(pg_temp.v('replay'), 'replay', 'app: a retry replays');
SELECT pg_temp.app_keep('webhook_apply', $$ SELECT result || ' ' || reversal FROM webhook_apply('app-evt', (SELECT paid FROM t), 'PAID', '{}') $$);
SELECT is((SELECT v FROM r WHERE label = 'webhook_apply'), 'not_applied false', 'app: webhook_apply records the event');
SELECT pg_temp.app_keep('webhook_reversal', $$ SELECT result || ' ' || reversal FROM webhook_apply('app-evt-2', (SELECT failed FROM t), 'PAID', '{}') $$);
SELECT is((SELECT v FROM r WHERE label = 'webhook_reversal'), 'not_applied true',
          'app: webhook_apply of a PAID event for a FAILED order reports the reversal');
SELECT pg_temp.age_reversal(failed, interval '1 hour') FROM t;
SELECT pg_temp.app_keep('reversals_due', $$ SELECT order_id || ' ' || amount_cents || ' ' || currency FROM reversals_due('10 min', 100) $$);
SELECT is((SELECT v FROM r WHERE label = 'reversals_due'), (SELECT failed || ' 5000 EUR' FROM t),
          'app: the housekeeper may list the reversals due');
SELECT pg_temp.app_keep('reversal_settle', $$ SELECT reversal_settle((SELECT failed FROM t), 'refunded') $$);
SELECT is((SELECT v FROM r WHERE label = 'reversal_settle'), 'refunded', 'app: reversal_settle records the provider''s answer');
SELECT pg_temp.app_keep('order_reversals', $$ SELECT status FROM order_reversals WHERE order_id = (SELECT failed FROM t) $$);
SELECT is((SELECT v FROM r WHERE label = 'order_reversals'), 'refunded', 'app: may read order_reversals');
SELECT pg_temp.app_keep('order_get', $$ SELECT order_get((SELECT paid FROM t))::json ->> 'status' $$);
SELECT is((SELECT v FROM r WHERE label = 'order_get'), 'PAID', 'app: order_get reads the order');
SELECT pg_temp.app_keep('order_json', $$ SELECT order_json(o)::json -> 'reversal' ->> 'status' FROM orders o WHERE o.id = (SELECT failed FROM t) $$);
SELECT is((SELECT v FROM r WHERE label = 'order_json'), 'refunded', 'app: order_json renders a row it reads, with its reversal');
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
