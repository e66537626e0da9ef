-- Ledger: balance at COMMIT (deferred constraint triggers), payment shape,
-- one payment per order, the late_capture and refund shapes (one each per
-- order, FAILED orders only), append-only tables, the inspection query, and
-- order_ledger.
--
-- "At COMMIT" inside one test transaction: SET CONSTRAINTS ALL IMMEDIATE
-- fires the deferred checks exactly as COMMIT would (run.sh's
-- concurrency.sh also checks a real COMMIT).  Each case runs inside
-- pg_temp.throws / lives_ok, i.e. in a subtransaction, so its rows vanish
-- with it.
BEGIN;
\ir helpers.psql
SELECT plan(60);

-- SQL for: make order o PAID, give it payment transaction ...aa with the
-- given entries (VALUES rows of account, direction, amount, currency), then
-- run the commit-time checks.
CREATE FUNCTION pg_temp.payment_sql(o uuid, entries text, make_paid boolean DEFAULT true,
                                    run_checks boolean DEFAULT true)
RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN make_paid THEN format($f$ UPDATE orders SET status = 'PAID' WHERE id = %L; $f$, o) ELSE '' END
        || format($f$ INSERT INTO ledger_transactions (id, order_id, kind)
                      VALUES ('00000000-0000-0000-0000-0000000000aa', %L, 'payment'); $f$, o)
        || CASE WHEN entries = '' THEN '' ELSE
               'INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
                SELECT ''00000000-0000-0000-0000-0000000000aa'', a, d, n, c
                  FROM (VALUES ' || entries || ') AS v(a, d, n, c); ' END
        || CASE WHEN run_checks THEN 'SET CONSTRAINTS ALL IMMEDIATE' ELSE '' END
$$;

CREATE TEMP TABLE t AS SELECT pg_temp.mk_order() AS p1;   -- PROCESSING, 5000 EUR

-- The good payment, and when the check runs ---------------------------------
SELECT pg_temp.passes(pg_temp.payment_sql(p1, $$('cash','DEBIT',5000,'EUR'), ('seller_payable','CREDIT',5000,'EUR')$$),
    'a balanced payment passes the commit-time checks') FROM t;
SELECT pg_temp.passes(pg_temp.payment_sql(p1, $$('cash','DEBIT',5000,'EUR'), ('seller_payable','CREDIT',1,'EUR')$$, true, false),
    'an unbalanced transaction passes its statements (the check is deferred)') FROM t;

-- Balance -------------------------------------------------------------------
SELECT pg_temp.throws(pg_temp.payment_sql(p1, $$('cash','DEBIT',5000,'EUR'), ('seller_payable','CREDIT',4000,'EUR')$$),
    '23514', '%does not balance%', 'debits <> credits fails at commit') FROM t;
SELECT pg_temp.throws(pg_temp.payment_sql(p1, $$('cash','DEBIT',5000,'EUR'), ('seller_payable','CREDIT',5000,'USD')$$),
    '23514', '%does not balance%', 'balance is per currency: 5000 EUR against 5000 USD fails at commit') FROM t;
SELECT pg_temp.throws(pg_temp.payment_sql(p1, ''),
    '23514', '%has 0 entries, needs at least 2', 'a transaction without entries fails at commit') FROM t;
SELECT pg_temp.throws(pg_temp.payment_sql(p1, $$('cash','DEBIT',5000,'EUR')$$),
    '23514', '%has 1 entries, needs at least 2', 'a transaction with one entry fails at commit') FROM t;

-- Payment rules -----------------------------------------------------------
SELECT pg_temp.throws(pg_temp.payment_sql(p1, $$('cash','DEBIT',5000,'EUR'), ('seller_payable','CREDIT',5000,'EUR')$$, false),
    '23514', '%is for an order that is PROCESSING, not PAID', 'no payment for a PROCESSING order') FROM t;
SELECT pg_temp.throws(pg_temp.payment_sql(pg_temp.mk_order('PENDING_PAYMENT'),
                                          $$('cash','DEBIT',5000,'EUR'), ('seller_payable','CREDIT',5000,'EUR')$$, false),
    '23514', '%is for an order that is PENDING_PAYMENT, not PAID', 'no payment for a PENDING_PAYMENT order');
SELECT pg_temp.throws(pg_temp.payment_sql(pg_temp.mk_order('FAILED'),
                                          $$('cash','DEBIT',5000,'EUR'), ('seller_payable','CREDIT',5000,'EUR')$$, false),
    '23514', '%is for an order that is FAILED, not PAID', 'no payment for a FAILED order');
SELECT pg_temp.throws(pg_temp.payment_sql(p1, $$('cash','DEBIT',4000,'EUR'), ('seller_payable','CREDIT',4000,'EUR')$$),
    '23514', '%must be (cash, DEBIT) and (seller_payable, CREDIT) for the order''s amount and currency',
    'a payment is for the order''s amount') FROM t;
SELECT pg_temp.throws(pg_temp.payment_sql(p1, $$('cash','DEBIT',5000,'USD'), ('seller_payable','CREDIT',5000,'USD')$$),
    '23514', '%must be (cash, DEBIT) and (seller_payable, CREDIT)%', 'a payment is in the order''s currency') FROM t;
SELECT pg_temp.throws(pg_temp.payment_sql(p1, $$('cash','DEBIT',5000,'EUR'), ('revenue','CREDIT',5000,'EUR')$$),
    '23514', '%must be (cash, DEBIT) and (seller_payable, CREDIT)%', 'a payment credits seller_payable') FROM t;
SELECT pg_temp.throws(pg_temp.payment_sql(p1, $$('cash','CREDIT',5000,'EUR'), ('seller_payable','DEBIT',5000,'EUR')$$),
    '23514', '%must be (cash, DEBIT) and (seller_payable, CREDIT)%', 'a payment debits cash, not the reverse') FROM t;
SELECT pg_temp.throws(pg_temp.payment_sql(p1, $$('cash','DEBIT',5000,'EUR'), ('seller_payable','CREDIT',5000,'EUR'),
                                                ('fees','DEBIT',100,'EUR'), ('fee_income','CREDIT',100,'EUR')$$),
    '23514', '%must be (cash, DEBIT) and (seller_payable, CREDIT)%', 'a payment holds only its two entries') FROM t;

-- late_capture and refund ----------------------------------------------------
-- SQL for: give order o a transaction ...bb of the given kind with the given
-- entries, then run the commit-time checks.
CREATE FUNCTION pg_temp.reversal_sql(o uuid, kind text, entries text, run_checks boolean DEFAULT true)
RETURNS text LANGUAGE sql AS $$
    SELECT format($f$ INSERT INTO ledger_transactions (id, order_id, kind)
                      VALUES ('00000000-0000-0000-0000-0000000000bb', %L, %L); $f$, o, kind)
        || 'INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
            SELECT ''00000000-0000-0000-0000-0000000000bb'', a, d, n, c
              FROM (VALUES ' || entries || ') AS v(a, d, n, c); '
        || CASE WHEN run_checks THEN 'SET CONSTRAINTS ALL IMMEDIATE' ELSE '' END
$$;
CREATE TEMP TABLE tf AS SELECT pg_temp.mk_order('FAILED', p_reason => 'provider_unavailable') AS f1;   -- 5000 EUR

SELECT pg_temp.passes(pg_temp.reversal_sql(f1, 'late_capture', $$('cash','DEBIT',5000,'EUR'), ('refunds_payable','CREDIT',5000,'EUR')$$),
    'a late_capture (DEBIT cash, CREDIT refunds_payable) of a FAILED order passes the commit-time checks') FROM tf;
SELECT pg_temp.passes(pg_temp.reversal_sql(f1, 'refund', $$('refunds_payable','DEBIT',5000,'EUR'), ('cash','CREDIT',5000,'EUR')$$),
    'a refund (DEBIT refunds_payable, CREDIT cash) of a FAILED order passes the commit-time checks') FROM tf;
SELECT pg_temp.passes(format($$ SELECT ledger_write_reversal(%L, 5000, 'EUR'); SET CONSTRAINTS ALL IMMEDIATE $$, f1),
    'ledger_write_reversal writes both and they pass the commit-time checks') FROM tf;
SELECT pg_temp.throws(pg_temp.reversal_sql(o.id, o.kind, o.entries), '23514',
                      '%' || o.kind || ' transaction % is for an order that is ' || o.st || ', not FAILED',
                      'no ' || o.kind || ' for a ' || o.st || ' order')
  FROM (VALUES ('late_capture', 'PAID', $$('cash','DEBIT',5000,'EUR'), ('refunds_payable','CREDIT',5000,'EUR')$$),
               ('refund', 'PAID', $$('refunds_payable','DEBIT',5000,'EUR'), ('cash','CREDIT',5000,'EUR')$$),
               ('late_capture', 'PROCESSING', $$('cash','DEBIT',5000,'EUR'), ('refunds_payable','CREDIT',5000,'EUR')$$),
               ('refund', 'PENDING_PAYMENT', $$('refunds_payable','DEBIT',5000,'EUR'), ('cash','CREDIT',5000,'EUR')$$))
       AS v(kind, st, entries),
       LATERAL (SELECT pg_temp.mk_order(v.st) AS id, v.kind, v.st, v.entries) o;
SELECT pg_temp.throws(pg_temp.reversal_sql(f1, v.kind, v.entries), '23514',
                      '%' || v.kind || ' transaction % has the wrong accounts, amount or currency (late_capture: DEBIT cash, CREDIT refunds_payable; refund: DEBIT refunds_payable, CREDIT cash)',
                      v.why)
  FROM tf, (VALUES
    ('late_capture', $$('refunds_payable','DEBIT',5000,'EUR'), ('cash','CREDIT',5000,'EUR')$$, 'a late_capture is not shaped like a refund'),
    ('refund',       $$('cash','DEBIT',5000,'EUR'), ('refunds_payable','CREDIT',5000,'EUR')$$, 'a refund is not shaped like a late_capture'),
    ('late_capture', $$('cash','DEBIT',5000,'EUR'), ('seller_payable','CREDIT',5000,'EUR')$$,  'a late_capture credits refunds_payable, not seller_payable'),
    ('refund',       $$('seller_payable','DEBIT',5000,'EUR'), ('cash','CREDIT',5000,'EUR')$$,  'a refund debits refunds_payable, not seller_payable'),
    ('late_capture', $$('cash','DEBIT',4000,'EUR'), ('refunds_payable','CREDIT',4000,'EUR')$$, 'a late_capture is for the order''s amount'),
    ('refund',       $$('refunds_payable','DEBIT',5000,'USD'), ('cash','CREDIT',5000,'USD')$$, 'a refund is in the order''s currency'),
    ('late_capture', $$('cash','DEBIT',5000,'EUR'), ('refunds_payable','CREDIT',5000,'EUR'),
                       ('fees','DEBIT',100,'EUR'), ('fee_income','CREDIT',100,'EUR')$$,       'a late_capture holds only its two entries'))
    AS v(kind, entries, why);
SELECT pg_temp.throws(pg_temp.reversal_sql(f1, 'refund', $$('refunds_payable','DEBIT',5000,'EUR'), ('cash','CREDIT',4999,'EUR')$$),
    '23514', '%does not balance%', 'an unbalanced refund fails at commit') FROM tf;
SELECT pg_temp.throws(pg_temp.reversal_sql(f1, 'late_capture', $$('cash','DEBIT',5000,'EUR')$$),
    '23514', '%has 1 entries, needs at least 2', 'a late_capture with one entry fails at commit') FROM tf;
SELECT pg_temp.throws(format($$ SELECT ledger_write_reversal(%1$L, 5000, 'EUR');
                                INSERT INTO ledger_transactions (order_id, kind) VALUES (%1$L, 'late_capture') $$, f1),
    '23505', '%"ledger_transactions_one_reversal_per_order"%', 'a second late_capture for an order is refused at once') FROM tf;
SELECT pg_temp.throws(format($$ SELECT ledger_write_reversal(%1$L, 5000, 'EUR');
                                INSERT INTO ledger_transactions (order_id, kind) VALUES (%1$L, 'refund') $$, f1),
    '23505', '%"ledger_transactions_one_reversal_per_order"%', 'a second refund for an order is refused at once') FROM tf;

-- A transaction already checked cannot be unbalanced later -------------------
CREATE TEMP TABLE t_paid AS SELECT pg_temp.mk_order('PAID') AS id;
SET CONSTRAINTS ALL IMMEDIATE;   -- "commit" the paid order and its payment
SET CONSTRAINTS ALL DEFERRED;
SELECT pg_temp.throws(format($$ INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
                                SELECT id, 'cash', 'DEBIT', 1, 'USD' FROM ledger_transactions WHERE order_id = %L;
                                SET CONSTRAINTS ALL IMMEDIATE $$, id),
    '23514', '%does not balance%', 'an entry added to a committed transaction is checked at commit') FROM t_paid;
-- The note of passed checks (paymentsd.ledger_checked) is a setting every
-- role may SET, for the whole session too; a note this transaction's checks
-- did not write (one set by hand, or left from an earlier transaction)
-- spares no check.
SELECT pg_temp.throws(format($$ SELECT set_config('paymentsd.ledger_checked', %L, %L);
                                INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
                                SELECT id, 'refunds_payable', 'DEBIT', 1, 'GBP' FROM ledger_transactions WHERE order_id = %L;
                                SET CONSTRAINTS ALL IMMEDIATE $$,
                             ' ' || s.ids || ' ', v.session, id),
    '23514', '%does not balance%',
    'regression: a note of entry ids SET by hand (' || v.how || ') spares no check of those entries')
  FROM t_paid,
       (SELECT (SELECT string_agg(g::text, ' ')
                  FROM generate_series(last_value - 5, last_value + 5) g) AS ids
          FROM ledger_entries_id_seq) s,
       (VALUES (false, 'for the session'), (true, 'in this transaction')) AS v(session, how);

-- One check per ledger transaction: a passed check spares the firings of the
-- entries it saw, never those of an entry it did not see.  Under SET
-- CONSTRAINTS ALL IMMEDIATE inside one transaction, a payment written in
-- one statement is checked at once; an entry added to it by a later
-- statement of the same transaction is checked again.
CREATE FUNCTION pg_temp.immediate_sql(o uuid, extra text) RETURNS text LANGUAGE sql AS $$
    SELECT format($f$ SET CONSTRAINTS ALL IMMEDIATE;
                      WITH p AS (UPDATE orders SET status = 'PAID' WHERE id = %1$L),
                           t AS (INSERT INTO ledger_transactions (id, order_id, kind)
                                 VALUES ('00000000-0000-0000-0000-0000000000cc', %1$L, 'payment') RETURNING id)
                      INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
                      SELECT t.id, v.a, v.d, 5000, 'EUR'
                        FROM t, (VALUES ('cash', 'DEBIT'), ('seller_payable', 'CREDIT')) AS v(a, d); $f$, o)
        || CASE WHEN extra = '' THEN '' ELSE
               'INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
                SELECT ''00000000-0000-0000-0000-0000000000cc'', a, d, n, c
                  FROM (VALUES ' || extra || ') AS v(a, d, n, c)' END
$$;
SELECT pg_temp.passes(pg_temp.immediate_sql(pg_temp.mk_order(), ''),
    'under IMMEDIATE, a payment written in one statement passes its check at once');
SELECT pg_temp.throws(pg_temp.immediate_sql(pg_temp.mk_order(), $$('cash','DEBIT',1,'USD')$$),
    '23514', '%does not balance%',
    'regression: under IMMEDIATE, an unbalanced entry added to a payment checked earlier in the same transaction is refused');
SELECT pg_temp.throws(pg_temp.immediate_sql(pg_temp.mk_order(), $$('fees','DEBIT',100,'EUR'), ('fee_income','CREDIT',100,'EUR')$$),
    '23514', '%must be (cash, DEBIT) and (seller_payable, CREDIT)%',
    'under IMMEDIATE, balanced entries of the wrong shape added to a payment checked earlier are refused');
SELECT pg_temp.throws($$ CREATE TEMP TABLE imm AS
                             SELECT * FROM checkout_begin('imm-key', repeat('a', 64), 'b', 's', 5000, 'EUR', 'trusted',
                                                          '30 s', '1 d');
                         SET CONSTRAINTS ALL IMMEDIATE;
                         SELECT f.* FROM imm, checkout_finish_many(ARRAY[imm.order_id], ARRAY['imm-key'], ARRAY[imm.lock_token],
                                              ARRAY['succeeded'], ARRAY[NULL]::text[], ARRAY[1]::bigint[]) f;
                         INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
                         SELECT t.id, 'cash', 'DEBIT', 1, 'USD' FROM ledger_transactions t JOIN imm ON imm.order_id = t.order_id $$,
    '23514', '%does not balance%',
    'under IMMEDIATE, an unbalanced entry added to a payment checkout_finish_many wrote is refused');

-- One payment per order -------------------------------------------------------
SELECT pg_temp.throws(format($$ SELECT ledger_write_payment(%L, 5000, 'EUR') $$, id),
    '23505', '%"ledger_transactions_one_payment_per_order"%', 'a second payment for an order is refused at once')
  FROM t_paid;

-- Append-only, even for the owner (these tests run as the superuser) --------
SELECT pg_temp.throws(format(q.sql, (SELECT id FROM t_paid)), '42501', q.msg, q.msg)
  FROM (VALUES
    ($$ UPDATE ledger_entries SET amount_cents = 1 WHERE txn_id IN (SELECT id FROM ledger_transactions WHERE order_id = %L) $$,
     'ledger_entries is append-only: UPDATE is not allowed'),
    ($$ DELETE FROM ledger_entries WHERE txn_id IN (SELECT id FROM ledger_transactions WHERE order_id = %L) $$,
     'ledger_entries is append-only: DELETE is not allowed'),
    ($$ TRUNCATE ledger_entries $$,
     'ledger_entries is append-only: TRUNCATE is not allowed'),
    ($$ UPDATE ledger_transactions SET created_at = now() WHERE order_id = %L $$,
     'ledger_transactions is append-only: UPDATE is not allowed'),
    ($$ DELETE FROM ledger_transactions WHERE order_id = %L $$,
     'ledger_transactions is append-only: DELETE is not allowed'),
    ($$ TRUNCATE ledger_transactions CASCADE $$,
     'ledger_transactions is append-only: TRUNCATE is not allowed')) AS q(sql, msg);
SELECT pg_temp.throws($$ TRUNCATE orders CASCADE $$, '42501', '%is append-only: TRUNCATE is not allowed',
    'TRUNCATE orders CASCADE cannot wipe the ledger');
SELECT pg_temp.throws(format($$ DELETE FROM orders WHERE id = %L $$, id), '23503', '%ledger_transactions_order_id_fkey%',
    'a paid order cannot be deleted from under its ledger') FROM t_paid;
SELECT is((SELECT count(*) FROM ledger_entries e JOIN ledger_transactions x ON x.id = e.txn_id
            WHERE x.order_id = (SELECT id FROM t_paid)), 2::bigint, 'the paid order still has its two entries');

-- The README's inspection query ---------------------------------------------
SELECT results_eq(
    format($$ SELECT e.account, e.direction, e.amount_cents, e.currency::text
                FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.txn_id
               WHERE t.order_id = %L ORDER BY e.direction DESC $$, (SELECT id FROM t_paid)),
    $$ VALUES ('cash', 'DEBIT', 5000::bigint, 'EUR'), ('seller_payable', 'CREDIT', 5000::bigint, 'EUR') $$,
    'README query: cash DEBIT and seller_payable CREDIT for the order amount');
SELECT is((SELECT kind FROM ledger_transactions WHERE order_id = (SELECT id FROM t_paid)), 'payment',
          'the payment transaction is of kind payment');

-- order_ledger ----------------------------------------------------------------
SELECT is(order_ledger(id),
          '{"order_id":"' || id || '","transactions":[{"txn_id":"'
          || (SELECT x.id FROM ledger_transactions x WHERE x.order_id = t_paid.id)
          || '","kind":"payment","created_at":"'
          || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
          || '","entries":[{"account":"cash","direction":"DEBIT","amount_cents":5000,"currency":"EUR"},'
          || '{"account":"seller_payable","direction":"CREDIT","amount_cents":5000,"currency":"EUR"}]}]}',
          'order_ledger of a paid order: one payment, DEBIT first, compact')
  FROM t_paid;
SELECT is(order_ledger(p1)::json -> 'transactions' ->> 0, NULL, 'order_ledger of an unpaid order has no transactions') FROM t;
SELECT is(order_ledger(p1), '{"order_id":"' || p1 || '","transactions":[]}', 'order_ledger of an unpaid order, exactly') FROM t;
SELECT is(order_ledger(gen_random_uuid()), NULL, 'order_ledger of an unknown order is NULL');
SELECT is(order_ledger(NULL), NULL, 'order_ledger(NULL) is NULL');
SELECT is(json_array_length(order_ledger(id)::json -> 'transactions'), 1, 'order_ledger lists the transaction once')
  FROM t_paid;
CREATE TEMP TABLE t_refunded AS
    SELECT pg_temp.mk_reversal(pg_temp.mk_order('FAILED', 1234, 'GBP', p_reason => 'provider_unavailable'), 'refunded') AS id;
SELECT is(ARRAY(SELECT x ->> 'kind' || ': ' || (SELECT string_agg(e ->> 'account' || '/' || (e ->> 'direction') || '/'
                                                                  || (e ->> 'amount_cents') || '/' || (e ->> 'currency'), ', ')
                                                   FROM json_array_elements(x -> 'entries') e)
                  FROM json_array_elements(order_ledger(id)::json -> 'transactions') x),
          ARRAY['late_capture: cash/DEBIT/1234/GBP, refunds_payable/CREDIT/1234/GBP',
                'refund: refunds_payable/DEBIT/1234/GBP, cash/CREDIT/1234/GBP'],
          'order_ledger of a refunded order: the late capture, then the refund, DEBIT first')
  FROM t_refunded;
SELECT is((SELECT sum(CASE e.direction WHEN 'DEBIT' THEN e.amount_cents ELSE -e.amount_cents END)
             FROM ledger_entries e JOIN ledger_transactions x ON x.id = e.txn_id
            WHERE x.order_id = t_refunded.id AND e.account = a), 0::numeric,
          'after a refund the order leaves ' || a || ' as it found it')
  FROM t_refunded, unnest(ARRAY['cash', 'refunds_payable']) AS a;

SELECT * FROM finish();
ROLLBACK;
