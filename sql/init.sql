-- paymentsd: PostgreSQL schema, integrity rules and the API functions.
--
-- PostgreSQL is the only source of truth, so the money rules live here, where
-- no client (a buggy worker, a person with psql) can get around them:
--
--   * orders follow the state machine, and their identity never changes;
--   * every ledger transaction balances per currency at COMMIT, and ledger
--     rows are append-only (no UPDATE, DELETE or TRUNCATE, even by the owner);
--   * one payment transaction per order, only for a PAID order, for exactly
--     the order's amount and currency -- and a PAID order has it by COMMIT;
--   * webhook events are recorded once and never changed.
--
-- The workers never touch a table directly: each step of a request is ONE call
-- of a SECURITY DEFINER function below = one round trip = one transaction
-- (DESIGN.md: the database is the bottleneck, so no step costs two).
--
-- Loading: run as a superuser in the target database, e.g.
--     psql -v ON_ERROR_STOP=1 -d payments -f sql/init.sql
-- (scripts/pg.sh start does this, and so does the postgres:15 image when the
-- file is in /docker-entrypoint-initdb.d/).  The script is idempotent: it can
-- be run again at any time and leaves the same schema, functions and grants.
-- It runs as one transaction, so a failed load changes nothing.
--
-- The API (all SECURITY DEFINER, EXECUTE granted to role app; call them under
-- READ COMMITTED, the default -- the race handling relies on it):
--   checkout_begin(key, fingerprint, buyer_id, seller_id, amount_cents,
--                  currency, buyer_trust, lock_timeout, ttl)
--       -> (result, order_id, response_status, response_body, lock_token,
--           completed_at_ms)
--   checkout_finish(order_id, key, lock_token, outcome, charge_id, outage_cap_cents)
--       -> (result, status, response_status, response_body, completed_at_ms,
--           reversal)
--   webhook_apply(event_id, order_id, outcome, payload)
--       -> (result, order_status, conflict, reversal, amount_cents, currency)
--   reversal_settle(order_id, answer) -> text
--   reversals_due(retry_after, limit) -> (order_id, amount_cents, currency)
--   order_get(order_id) -> text, order_ledger(order_id) -> text,
--   order_json(orders) -> text, order_json(orders, order_reversals) -> text
--   purge_expired_idempotency_keys(ttl, limit) -> int
--   checkout_claim_stale(lock_timeout, limit)
--       -> (key, order_id, amount_cents, currency, lock_token)
--   pending_orders_due(age, limit) -> (order_id, amount_cents, currency)
-- and, for group commit, the same calls for a batch of items, one array per
-- argument, one row per item: (ord, then the single call's columns):
--   checkout_begin_many(keys[], fingerprints[], buyer_ids[], seller_ids[],
--                       amounts[], currencies[], buyer_trusts[],
--                       lock_timeouts[], ttls[])
--   checkout_finish_many(order_ids[], keys[], lock_tokens[], outcomes[],
--                        charge_ids[], caps[])
--   webhook_apply_many(event_ids[], order_ids[], outcomes[], payloads[])
--   order_get_many(order_ids[]) -> (ord, body)
--
-- The functions belong to paymentsd_owner, a NOLOGIN role with only the table
-- rights they need; app may only call them.  They do not trust their caller's
-- durations either: a TTL under 1 minute or a lock timeout under 1 second is
-- refused (22023), so that no holder of app's password can expire a key early
-- and charge twice.
--
-- Errors raised here (SQLSTATE; a batch fails whole with the first error of
-- any of its items):
--   22004 null_value_not_allowed   an API function got NULL for a required argument
--   22023 invalid_parameter_value  an API function got a malformed argument
--                                  (a batch: arrays of different lengths, or
--                                  not 1..1000 items)
--   P0002 no_data_found            checkout_finish: no such idempotency key;
--                                  reversal_settle: no reversal for the order
--   55000 object_not_in_prerequisite_state
--                                  checkout_finish: the key belongs to another order
--   23514 check_violation          an integrity rule (CHECK, order state machine,
--                                  immutable column, unbalanced ledger, ...)
--   23505 unique_violation         e.g. a second payment transaction for an order
--   42501 insufficient_privilege   UPDATE/DELETE/TRUNCATE of an append-only table
--   40001 serialization_failure    checkout_begin could not settle a key after
--                                  several attempts (never seen in practice; retry)
--   40P01 deadlock_detected        not expected between these functions: they
--                                  lock keys, then orders, each sorted (see
--                                  "API: batches"); retryable if ever seen

\set ON_ERROR_STOP 1

BEGIN;

SET LOCAL client_min_messages = warning;   -- "already exists, skipping" is not news
SET LOCAL search_path = public;

-- ---------------------------------------------------------------------------
-- Roles and database-level privileges
-- ---------------------------------------------------------------------------

-- The application role.  Created only when missing, so a changed password is
-- not reset by a re-run.  Roles are cluster-wide: the scratch test database
-- and the dev database share it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app') THEN
        CREATE ROLE app LOGIN PASSWORD 'app';
    END IF;
END
$$;

-- The owner of the API functions (SECURITY DEFINER runs as it).  NOLOGIN:
-- nobody connects as it; it holds only the table rights the functions need,
-- so a function cannot do more than its SQL says even if it were subverted.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'paymentsd_owner') THEN
        CREATE ROLE paymentsd_owner NOLOGIN;
    END IF;
END
$$;

-- Nobody but the owner creates objects in public (PostgreSQL 15 already
-- defaults to this; say it anyway for clusters upgraded from older versions).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO app, paymentsd_owner;

-- The database is not open to every role of the cluster: app may connect, and
-- may not create schemas or temporary objects (it needs neither).
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM app', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO app', current_database());
END
$$;

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

-- One row per checkout.  id doubles as the provider's Idempotency-Key, so a
-- recovered checkout can never charge twice.
CREATE TABLE IF NOT EXISTS orders (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    buyer_id           text        NOT NULL,
    seller_id          text        NOT NULL,
    amount_cents       bigint      NOT NULL,
    currency           char(3)     NOT NULL,
    buyer_trust        text        NOT NULL,
    status             text        NOT NULL DEFAULT 'PROCESSING',
    failure_reason     text,
    provider_charge_id text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- The same rules the API validates (SPEC.md), so that no other writer can
    -- store what the API would have refused.
    -- (A length test rather than a bounded repetition such as {1,64}, which
    -- costs PostgreSQL's regex engine ten times as much; same rule.)
    CONSTRAINT orders_buyer_id_format
        CHECK (buyer_id ~ '^[A-Za-z0-9_.:-]+$' AND char_length(buyer_id) <= 64),
    CONSTRAINT orders_seller_id_format
        CHECK (seller_id ~ '^[A-Za-z0-9_.:-]+$' AND char_length(seller_id) <= 64),
    CONSTRAINT orders_amount_positive  CHECK (amount_cents > 0),
    CONSTRAINT orders_currency_format  CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT orders_buyer_trust_valid CHECK (buyer_trust IN ('trusted', 'untrusted')),
    CONSTRAINT orders_status_valid
        CHECK (status IN ('PROCESSING', 'PAID', 'FAILED', 'PENDING_PAYMENT')),
    -- A failure always says why, and only a failure has a reason.
    CONSTRAINT orders_failure_reason_iff_failed
        CHECK ((status = 'FAILED') = (failure_reason IS NOT NULL)),
    CONSTRAINT orders_failure_reason_valid
        CHECK (failure_reason IN ('declined', 'provider_unavailable')),
    CONSTRAINT orders_provider_charge_id_length
        CHECK (char_length(provider_charge_id) BETWEEN 1 AND 255)
);

-- The housekeeper reconciles PENDING_PAYMENT orders oldest first; the partial
-- index holds only those few rows.
CREATE INDEX IF NOT EXISTS orders_pending_updated_at_idx
    ON orders (updated_at) WHERE status = 'PENDING_PAYMENT';

-- The Idempotency-Key of each checkout, with the response that was sent, so
-- that a retry gets the byte-identical answer.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key             text        PRIMARY KEY,
    fingerprint     text        NOT NULL,
    state           text        NOT NULL,
    locked_at       timestamptz NOT NULL DEFAULT now(),
    -- DEFERRABLE: checkout_begin claims the key (INSERT ... ON CONFLICT) before
    -- it inserts the order, so that a lost race costs no order row; both rows
    -- exist by COMMIT.
    order_id        uuid        NOT NULL
        REFERENCES orders (id) DEFERRABLE INITIALLY DEFERRED,
    response_status int,
    response_body   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- The holder of an in-progress key: checkout_begin (new, recover) and
    -- checkout_claim_stale hand out a fresh token, and checkout_finish
    -- changes nothing unless it presents the current one, so a worker that
    -- lost its lock (a takeover after the lock timeout) cannot finish the
    -- order under the new holder's feet.
    lock_token      uuid,
    -- When the answer was stored: the TTL counts from here, not from
    -- created_at, so a key completed late (after an outage) lives its full
    -- TTL and a retry is never taken for a new request.
    completed_at    timestamptz,
    CONSTRAINT idempotency_keys_key_format
        CHECK (char_length(key) BETWEEN 1 AND 255 AND key ~ '^[!-~]+$'),
    CONSTRAINT idempotency_keys_fingerprint_format
        CHECK (fingerprint ~ '^[0-9a-f]+$' AND char_length(fingerprint) = 64),
    CONSTRAINT idempotency_keys_state_valid
        CHECK (state IN ('in_progress', 'completed')),
    -- The stored response exists exactly when the first request finished.
    CONSTRAINT idempotency_keys_response_iff_completed
        CHECK (CASE state
                   WHEN 'completed' THEN response_status IS NOT NULL AND response_body IS NOT NULL
                   ELSE response_status IS NULL AND response_body IS NULL
               END),
    CONSTRAINT idempotency_keys_response_status_valid
        CHECK (response_status BETWEEN 100 AND 599)
);

-- Databases made by an older version of this script get the new columns.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS lock_token uuid;
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS completed_at timestamptz;
UPDATE idempotency_keys SET completed_at = created_at
 WHERE state = 'completed' AND completed_at IS NULL;
UPDATE idempotency_keys SET lock_token = gen_random_uuid()
 WHERE state = 'in_progress' AND lock_token IS NULL;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conrelid = 'idempotency_keys'::regclass
                      AND conname = 'idempotency_keys_completed_at_iff_completed') THEN
        ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_completed_at_iff_completed
            CHECK ((state = 'completed') = (completed_at IS NOT NULL));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conrelid = 'idempotency_keys'::regclass
                      AND conname = 'idempotency_keys_in_progress_has_token') THEN
        ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_in_progress_has_token
            CHECK (state <> 'in_progress' OR lock_token IS NOT NULL);
    END IF;
END
$$;

-- purge_expired_idempotency_keys: completed keys, oldest answer first.
DROP INDEX IF EXISTS idempotency_keys_completed_created_at_idx;
CREATE INDEX IF NOT EXISTS idempotency_keys_completed_at_idx
    ON idempotency_keys (completed_at) WHERE state = 'completed';
-- checkout_claim_stale: in-progress keys by lock age (a handful of rows).
CREATE INDEX IF NOT EXISTS idempotency_keys_in_progress_locked_at_idx
    ON idempotency_keys (locked_at) WHERE state = 'in_progress';

-- Every webhook event received for a known order, applied or not: the unique
-- event_id is what makes a replayed delivery harmless.
CREATE TABLE IF NOT EXISTS webhook_events (
    event_id    text        PRIMARY KEY,
    order_id    uuid        NOT NULL REFERENCES orders (id),
    outcome     text        NOT NULL,
    payload     text        NOT NULL,      -- the raw body, as signed
    received_at timestamptz NOT NULL DEFAULT now(),
    applied     boolean     NOT NULL,      -- false: the order was already final
    CONSTRAINT webhook_events_event_id_length
        CHECK (char_length(event_id) BETWEEN 1 AND 255),
    CONSTRAINT webhook_events_outcome_valid
        CHECK (outcome IN ('PAID', 'FAILED'))
);

-- Double-entry ledger: a transaction groups entries that must balance.
CREATE TABLE IF NOT EXISTS ledger_transactions (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id   uuid        NOT NULL REFERENCES orders (id),
    kind       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- payment: the order's money (DEBIT cash, CREDIT seller_payable);
    -- late_capture and refund: money the provider captured for a FAILED
    -- order (DEBIT cash, CREDIT refunds_payable) and gave back (DEBIT
    -- refunds_payable, CREDIT cash).
    CONSTRAINT ledger_transactions_kind_valid
        CHECK (kind IN ('payment', 'late_capture', 'refund'))
);
DO $$
BEGIN
    -- An older database has the payment-only CHECK: widen it.
    IF EXISTS (SELECT 1 FROM pg_constraint
                WHERE conrelid = 'ledger_transactions'::regclass
                  AND conname = 'ledger_transactions_kind_valid'
                  AND pg_get_constraintdef(oid) NOT LIKE '%late_capture%') THEN
        ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_kind_valid;
        ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_kind_valid
            CHECK (kind IN ('payment', 'late_capture', 'refund'));
    END IF;
END
$$;

-- One payment per order, whoever tries to write a second one (webhook and
-- checkout_finish racing, a replayed event, a bug).
CREATE UNIQUE INDEX IF NOT EXISTS ledger_transactions_one_payment_per_order
    ON ledger_transactions (order_id) WHERE kind = 'payment';
-- At most one late capture and one refund per order: a reversal is settled
-- once, whoever reports it.
CREATE UNIQUE INDEX IF NOT EXISTS ledger_transactions_one_reversal_per_order
    ON ledger_transactions (order_id, kind) WHERE kind IN ('late_capture', 'refund');
-- order_ledger lists every kind of transaction of an order.
CREATE INDEX IF NOT EXISTS ledger_transactions_order_id_idx
    ON ledger_transactions (order_id);

CREATE TABLE IF NOT EXISTS ledger_entries (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txn_id       uuid        NOT NULL REFERENCES ledger_transactions (id),
    account      text        NOT NULL,
    direction    text        NOT NULL,
    amount_cents bigint      NOT NULL,
    currency     char(3)     NOT NULL,
    CONSTRAINT ledger_entries_account_format
        CHECK (account ~ '^[a-z][a-z0-9_]*$' AND char_length(account) <= 63),
    CONSTRAINT ledger_entries_direction_valid CHECK (direction IN ('DEBIT', 'CREDIT')),
    -- The sign lives in direction; a negative amount would be a second way to
    -- say the same thing, and a zero amount says nothing.
    CONSTRAINT ledger_entries_amount_positive CHECK (amount_cents > 0),
    CONSTRAINT ledger_entries_currency_format CHECK (currency ~ '^[A-Z]{3}$')
);

-- An account appears once per side and currency in a transaction (amounts are
-- summed, not split), which also pins a payment to exactly two entries.  The
-- index serves every lookup of a transaction's entries.
CREATE UNIQUE INDEX IF NOT EXISTS ledger_entries_txn_account_direction_currency
    ON ledger_entries (txn_id, account, direction, currency);

-- Databases made by an older version of this script get the format CHECKs
-- without bounded repetitions (the same rules, checked faster).
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT * FROM (VALUES
        ('orders', 'orders_buyer_id_format',
         $c$buyer_id ~ '^[A-Za-z0-9_.:-]+$' AND char_length(buyer_id) <= 64$c$),
        ('orders', 'orders_seller_id_format',
         $c$seller_id ~ '^[A-Za-z0-9_.:-]+$' AND char_length(seller_id) <= 64$c$),
        ('idempotency_keys', 'idempotency_keys_fingerprint_format',
         $c$fingerprint ~ '^[0-9a-f]+$' AND char_length(fingerprint) = 64$c$),
        ('ledger_entries', 'ledger_entries_account_format',
         $c$account ~ '^[a-z][a-z0-9_]*$' AND char_length(account) <= 63$c$))
        AS v(tbl, con, def)
    LOOP
        IF EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conrelid = c.tbl::regclass AND conname = c.con
                      AND pg_get_constraintdef(oid) LIKE '%{%') THEN
            EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I, ADD CONSTRAINT %I CHECK (%s)',
                           c.tbl, c.con, c.con, c.def);
        END IF;
    END LOOP;
END
$$;

-- Money the provider may hold for a FAILED order, and what became of it.
-- A FAILED provider_unavailable answer (the provider may have taken the money
-- after all), or a PAID event for a FAILED order, opens a reversal:
-- paymentsd asks the provider to cancel-or-refund the charge until it
-- answers.  The provider's answer settles it:
--     pending  -> canceled   nothing was captured, and nothing ever will be
--     pending  -> refunded   it had been captured and was given back: the
--                            ledger holds the late capture and the refund
--     canceled -> refunded   a capture the provider reported after all
--     canceled -> pending    a PAID event (a capture) arrived after the
--                            cancel: ask the provider again
-- refunded is final.
CREATE TABLE IF NOT EXISTS order_reversals (
    order_id        uuid        PRIMARY KEY REFERENCES orders (id),
    status          text        NOT NULL DEFAULT 'pending',
    amount_cents    bigint      NOT NULL,
    currency        char(3)     NOT NULL,
    attempts        int         NOT NULL DEFAULT 0,   -- cancels the housekeeper sent
    last_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT order_reversals_status_valid
        CHECK (status IN ('pending', 'canceled', 'refunded')),
    CONSTRAINT order_reversals_amount_positive CHECK (amount_cents > 0),
    CONSTRAINT order_reversals_currency_format CHECK (currency ~ '^[A-Z]{3}$')
);

-- The housekeeper retries pending reversals, least recently tried first.
CREATE INDEX IF NOT EXISTS order_reversals_pending_idx
    ON order_reversals (last_attempt_at NULLS FIRST) WHERE status = 'pending';

-- ---------------------------------------------------------------------------
-- Integrity triggers
-- ---------------------------------------------------------------------------

-- Orders are born PROCESSING (the WHEN clause keeps the normal path free of a
-- function call).
CREATE OR REPLACE FUNCTION orders_check_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'order % must be inserted as PROCESSING, not %', NEW.id, NEW.status
        USING ERRCODE = 'check_violation', CONSTRAINT = 'orders_state_machine';
END
$$;

CREATE OR REPLACE TRIGGER orders_insert_processing
    BEFORE INSERT ON orders
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM 'PROCESSING')
    EXECUTE FUNCTION orders_check_insert();

-- The state machine of SPEC.md, the immutable columns, and updated_at:
--     PROCESSING      -> PAID | FAILED | PENDING_PAYMENT
--     PENDING_PAYMENT -> PAID | FAILED
--     PAID, FAILED    final: no UPDATE at all
-- A non-final order may be updated without a transition only to record the
-- provider's charge id, which is set once.
CREATE OR REPLACE FUNCTION orders_check_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.id, NEW.buyer_id, NEW.seller_id, NEW.amount_cents, NEW.currency,
        NEW.buyer_trust, NEW.created_at)
       IS DISTINCT FROM
       (OLD.id, OLD.buyer_id, OLD.seller_id, OLD.amount_cents, OLD.currency,
        OLD.buyer_trust, OLD.created_at) THEN
        RAISE EXCEPTION 'order %: id, buyer_id, seller_id, amount_cents, currency, buyer_trust and created_at never change', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'orders_immutable_columns';
    END IF;
    IF OLD.status IN ('PAID', 'FAILED') THEN
        RAISE EXCEPTION 'order % is % (final) and cannot change', OLD.id, OLD.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'orders_state_machine';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
           (OLD.status = 'PROCESSING' AND NEW.status IN ('PAID', 'FAILED', 'PENDING_PAYMENT'))
        OR (OLD.status = 'PENDING_PAYMENT' AND NEW.status IN ('PAID', 'FAILED'))) THEN
        RAISE EXCEPTION 'order %: illegal transition % -> %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'orders_state_machine';
    END IF;
    IF OLD.provider_charge_id IS NOT NULL
       AND NEW.provider_charge_id IS DISTINCT FROM OLD.provider_charge_id THEN
        RAISE EXCEPTION 'order %: provider_charge_id is already set', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'orders_charge_id_set_once';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER orders_state_machine
    BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_check_update();

-- Append-only tables: money records and received events are facts; a
-- correction is a new row, never an edit.  Row triggers stop UPDATE and
-- DELETE, a statement trigger stops TRUNCATE (which fires no row trigger).
-- Triggers bind the table owner and superusers too (only
-- session_replication_role = replica, a superuser setting, skips them).
CREATE OR REPLACE FUNCTION forbid_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE OR REPLACE TRIGGER ledger_transactions_append_only
    BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
CREATE OR REPLACE TRIGGER ledger_transactions_no_truncate
    BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_change();
CREATE OR REPLACE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
CREATE OR REPLACE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_change();
CREATE OR REPLACE TRIGGER webhook_events_append_only
    BEFORE UPDATE OR DELETE ON webhook_events
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
CREATE OR REPLACE TRIGGER webhook_events_no_truncate
    BEFORE TRUNCATE ON webhook_events
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_change();

-- A reversal is opened only for a FAILED order, for the order's own amount
-- and currency, and then follows its state machine (see order_reversals).
CREATE OR REPLACE FUNCTION order_reversals_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    o orders;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT * INTO o FROM orders WHERE id = NEW.order_id;
        IF o.status IS DISTINCT FROM 'FAILED' OR NEW.status <> 'pending'
           OR NEW.amount_cents <> o.amount_cents OR NEW.currency <> o.currency THEN
            RAISE EXCEPTION 'reversal of order % must be opened pending, for a FAILED order, with its amount and currency', NEW.order_id
                USING ERRCODE = 'check_violation', CONSTRAINT = 'order_reversals_state_machine';
        END IF;
        RETURN NEW;
    END IF;
    IF (NEW.order_id, NEW.amount_cents, NEW.currency, NEW.created_at)
       IS DISTINCT FROM (OLD.order_id, OLD.amount_cents, OLD.currency, OLD.created_at) THEN
        RAISE EXCEPTION 'reversal of order %: order_id, amount_cents, currency and created_at never change', OLD.order_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'order_reversals_immutable_columns';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
           (OLD.status = 'pending' AND NEW.status IN ('canceled', 'refunded'))
        OR (OLD.status = 'canceled' AND NEW.status IN ('pending', 'refunded'))) THEN
        RAISE EXCEPTION 'reversal of order %: illegal transition % -> %', OLD.order_id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'order_reversals_state_machine';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER order_reversals_state_machine
    BEFORE INSERT OR UPDATE ON order_reversals
    FOR EACH ROW EXECUTE FUNCTION order_reversals_check();
CREATE OR REPLACE TRIGGER order_reversals_no_delete
    BEFORE DELETE ON order_reversals
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
CREATE OR REPLACE TRIGGER order_reversals_no_truncate
    BEFORE TRUNCATE ON order_reversals
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_change();

-- A refunded reversal has its late capture and its refund in the ledger by
-- COMMIT.
CREATE OR REPLACE FUNCTION order_reversals_check_refunded() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(DISTINCT t.kind) FROM ledger_transactions t
         WHERE t.order_id = NEW.order_id AND t.kind IN ('late_capture', 'refund')) <> 2 THEN
        RAISE EXCEPTION 'reversal of order % is refunded without its late_capture and refund ledger transactions', NEW.order_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'order_reversals_refunded_in_ledger';
    END IF;
    RETURN NULL;
END
$$;

-- The other half of "one payment transaction per paid order": an order that
-- becomes PAID has its payment transaction by COMMIT (ready_to_ship is never
-- true for money the ledger does not show).
CREATE OR REPLACE FUNCTION orders_check_paid() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ledger_transactions t
                    WHERE t.order_id = NEW.id AND t.kind = 'payment') THEN
        RAISE EXCEPTION 'order % is PAID without a payment ledger transaction', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'orders_paid_has_payment';
    END IF;
    RETURN NULL;
END
$$;

-- The ledger check, run at COMMIT (deferred) for each new transaction and for
-- each new entry, so it sees the transaction complete:
--   * at least two entries;
--   * per currency, sum of DEBIT = sum of CREDIT;
--   * a payment is for a PAID order, and its entries are (cash, DEBIT) and
--     (seller_payable, CREDIT) for the order's amount and currency (with the
--     unique index and the balance this means exactly those two entries).
-- One query per check.  The check on ledger_transactions catches a
-- transaction without entries; the one on ledger_entries catches entries
-- added to a transaction checked earlier (in an earlier transaction, or in
-- this one under SET CONSTRAINTS ... IMMEDIATE).
--
-- One check per ledger transaction, not one per row: a check that passes
-- notes the ids of the entries it saw (a transaction-local setting,
-- paymentsd.ledger_checked), and the firing for an entry it saw returns at
-- once.  That is sound because what the check read cannot change later:
-- entries and ledger transactions are append-only, and the order statuses
-- it accepts (PAID, FAILED) are final, with amount and currency immutable.
-- An entry the check did not see (inserted after it ran, e.g. a later
-- statement under IMMEDIATE, or a later database transaction) has an id that
-- is not noted, so its firing checks the whole transaction again.  A check
-- rolled back with a savepoint takes its note with it.  At COMMIT the
-- transaction's row fires before its entries (it was inserted first), so a
-- payment costs one check.  The note is a cache of passed checks, bounded in
-- length; it only spares a repeat.  Any role may SET the setting, for its
-- session too, so the note starts with the (top-level) transaction id of
-- the checks that wrote it, and any other value counts as no note: a value
-- set by hand, or left in the session by an earlier transaction, spares
-- nothing.  (Forging the current id on purpose needs a writer of
-- ledger_entries, i.e. a superuser, who could as well disable the trigger;
-- app writes entries only through the API functions, which write each
-- ledger transaction whole, and whose own rows are checked at COMMIT.)
CREATE OR REPLACE FUNCTION ledger_check_txn() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_txn        uuid;
    v_kind       text;
    v_status     text;
    v_entries    bigint;
    v_unbalanced bigint;
    v_off_shape  bigint;
    v_ids        text;
    v_noted      text;
    v_xact       text := pg_current_xact_id()::text || ':';
BEGIN
    v_noted := current_setting('paymentsd.ledger_checked', true);
    IF NOT starts_with(v_noted, v_xact) THEN
        v_noted := NULL;           -- not written by this transaction's checks
    END IF;
    IF TG_TABLE_NAME = 'ledger_entries' THEN
        IF strpos(v_noted, ' ' || NEW.id || ' ') > 0 THEN
            RETURN NULL;           -- a passed check of its transaction saw it
        END IF;
        v_txn := NEW.txn_id;
    ELSE
        v_txn := NEW.id;
    END IF;

    SELECT t.kind, o.status, a.entries, a.unbalanced, a.off_shape, a.ids
      INTO v_kind, v_status, v_entries, v_unbalanced, v_off_shape, v_ids
      FROM ledger_transactions t
      JOIN orders o ON o.id = t.order_id
     CROSS JOIN LATERAL (
            SELECT coalesce(sum(c.n), 0)              AS entries,
                   count(*) FILTER (WHERE c.bal <> 0) AS unbalanced,
                   coalesce(sum(c.off_shape), 0)      AS off_shape,
                   string_agg(c.ids, ' ')             AS ids
              FROM (SELECT count(*) AS n,
                           sum(CASE e.direction WHEN 'DEBIT' THEN e.amount_cents
                                                ELSE -e.amount_cents END) AS bal,
                           count(*) FILTER (WHERE NOT (
                                   e.amount_cents = o.amount_cents
                               AND e.currency = o.currency
                               AND (t.kind, e.account, e.direction) IN (
                                       ('payment', 'cash', 'DEBIT'),
                                       ('payment', 'seller_payable', 'CREDIT'),
                                       ('late_capture', 'cash', 'DEBIT'),
                                       ('late_capture', 'refunds_payable', 'CREDIT'),
                                       ('refund', 'refunds_payable', 'DEBIT'),
                                       ('refund', 'cash', 'CREDIT'))))
                               AS off_shape,
                           string_agg(e.id::text, ' ') AS ids
                      FROM ledger_entries e
                     WHERE e.txn_id = t.id
                     GROUP BY e.currency) c
          ) a
     WHERE t.id = v_txn;

    IF NOT FOUND THEN   -- the row that queued this check is gone: nothing to check
        RETURN NULL;
    END IF;
    IF v_entries < 2 THEN
        RAISE EXCEPTION 'ledger transaction % has % entries, needs at least 2', v_txn, v_entries
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    IF v_unbalanced > 0 THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: debits <> credits', v_txn
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    IF v_kind = 'payment' THEN
        IF v_status <> 'PAID' THEN
            RAISE EXCEPTION 'payment transaction % is for an order that is %, not PAID', v_txn, v_status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_payment_shape';
        END IF;
        IF v_off_shape > 0 THEN
            RAISE EXCEPTION 'payment transaction % must be (cash, DEBIT) and (seller_payable, CREDIT) for the order''s amount and currency', v_txn
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_payment_shape';
        END IF;
    ELSE
        -- late_capture and refund: money that moved for a FAILED order and
        -- came back, each of its own fixed shape.
        IF v_status <> 'FAILED' THEN
            RAISE EXCEPTION '% transaction % is for an order that is %, not FAILED', v_kind, v_txn, v_status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_reversal_shape';
        END IF;
        IF v_off_shape > 0 THEN
            RAISE EXCEPTION '% transaction % has the wrong accounts, amount or currency (late_capture: DEBIT cash, CREDIT refunds_payable; refund: DEBIT refunds_payable, CREDIT cash)', v_kind, v_txn
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_reversal_shape';
        END IF;
    END IF;

    -- Passed: note the entries it saw ('xid: id id ... ', each id between
    -- spaces; started afresh past 16,000 characters, some hundreds of
    -- transactions' worth, so the search stays short).
    IF v_noted IS NULL OR length(v_noted) > 16000 THEN
        v_noted := v_xact || ' ';
    END IF;
    PERFORM set_config('paymentsd.ledger_checked', v_noted || v_ids || ' ', true);
    RETURN NULL;
END
$$;

-- Constraint triggers have no CREATE OR REPLACE: create them when missing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgrelid = 'ledger_transactions'::regclass
                      AND tgname = 'ledger_transactions_balanced') THEN
        CREATE CONSTRAINT TRIGGER ledger_transactions_balanced
            AFTER INSERT ON ledger_transactions
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION ledger_check_txn();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgrelid = 'orders'::regclass
                      AND tgname = 'orders_paid_has_payment') THEN
        CREATE CONSTRAINT TRIGGER orders_paid_has_payment
            AFTER UPDATE ON orders
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW WHEN (NEW.status = 'PAID')
            EXECUTE FUNCTION orders_check_paid();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgrelid = 'order_reversals'::regclass
                      AND tgname = 'order_reversals_refunded_in_ledger') THEN
        CREATE CONSTRAINT TRIGGER order_reversals_refunded_in_ledger
            AFTER INSERT OR UPDATE ON order_reversals
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW WHEN (NEW.status = 'refunded')
            EXECUTE FUNCTION order_reversals_check_refunded();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgrelid = 'ledger_entries'::regclass
                      AND tgname = 'ledger_entries_balanced') THEN
        CREATE CONSTRAINT TRIGGER ledger_entries_balanced
            AFTER INSERT ON ledger_entries
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION ledger_check_txn();
    END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- JSON rendering (the one rendering of an order, used by finish and by GET)
-- ---------------------------------------------------------------------------

-- Built by concatenation rather than json_build_object, whose text form has
-- spaces (`{"a" : 1}`): compact output and a fixed member order, so a stored
-- response and a fresh rendering of the same row are byte-identical.
-- Free-text values go through to_json() for escaping.  Timestamps are ISO 8601
-- in UTC with microseconds: "2026-11-24T10:00:00.123456Z".
--
-- The layout lives once, in order_json(o, r): the order and its reversal
-- row, NULL (or all NULL) when it has none.  It has no sub-select, so
-- PostgreSQL inlines it into the calling query (a plain SQL expression, not
-- a function call per row through the SQL-function executor; inline_function
-- refuses a body with a sub-select, a SECURITY DEFINER or SET function, and
-- a parameter used more than once unless its argument is cheap -- a column,
-- a whole row, a parameter).  The API functions LEFT JOIN order_reversals and
-- call it with both rows.  order_json(o) looks the reversal up itself: one
-- call for a row at hand (tests, psql), not inlined.
CREATE OR REPLACE FUNCTION order_json(o orders, r order_reversals) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT '{"order_id":"' || (o).id::text
        || '","status":' || to_json((o).status)::text
        || ',"ready_to_ship":' || ((o).status = 'PAID')::text
        || ',"amount_cents":' || (o).amount_cents::text
        || ',"currency":' || to_json((o).currency::text)::text
        || ',"buyer_id":' || to_json((o).buyer_id)::text
        || ',"seller_id":' || to_json((o).seller_id)::text
        || ',"buyer_trust":' || to_json((o).buyer_trust)::text
        || CASE WHEN (o).status = 'FAILED'
                THEN ',"failure_reason":' || to_json((o).failure_reason)::text
                ELSE '' END
        || coalesce(',"reversal":{"status":"' || (r).status
                    || '","amount_cents":' || (r).amount_cents::text || '}', '')
        || ',"created_at":"'
        || to_char((o).created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        || '","updated_at":"'
        || to_char((o).updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        || '"}'
$$;

CREATE OR REPLACE FUNCTION order_json(o orders) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT order_json(o, (SELECT r FROM order_reversals r WHERE r.order_id = (o).id))
$$;

-- GET /orders/{id}: the order's JSON, NULL when there is no such order.
CREATE OR REPLACE FUNCTION order_get(p_order_id uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT order_json(o, r)
      FROM orders o LEFT JOIN order_reversals r ON r.order_id = o.id
     WHERE o.id = p_order_id
$$;

-- GET /orders/{id}/ledger: the order's ledger transactions (oldest first)
-- with their entries (DEBIT first); NULL when there is no such order.
CREATE OR REPLACE FUNCTION order_ledger(p_order_id uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT '{"order_id":"' || o.id::text || '","transactions":['
        || coalesce((
               SELECT string_agg(
                          '{"txn_id":"' || t.id::text
                       || '","kind":' || to_json(t.kind)::text
                       || ',"created_at":"'
                       || to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                       || '","entries":['
                       || coalesce((
                              SELECT string_agg(
                                         '{"account":' || to_json(e.account)::text
                                      || ',"direction":"' || e.direction
                                      || '","amount_cents":' || e.amount_cents::text
                                      || ',"currency":"' || e.currency::text || '"}',
                                         ',' ORDER BY e.direction = 'CREDIT', e.account, e.currency)
                                FROM ledger_entries e
                               WHERE e.txn_id = t.id), '')
                       || ']}',
                          ',' ORDER BY t.created_at, t.id)
                 FROM ledger_transactions t
                WHERE t.order_id = o.id), '')
        || ']}'
      FROM orders o
     WHERE o.id = p_order_id
$$;

-- ---------------------------------------------------------------------------
-- Internal helpers (not callable by app)
-- ---------------------------------------------------------------------------

-- A reversal that came back refunded: the late capture (DEBIT cash, CREDIT
-- refunds_payable) and the refund (DEBIT refunds_payable, CREDIT cash), two
-- transactions of their own, for the order's amount and currency.
CREATE OR REPLACE FUNCTION ledger_write_reversal(p_order_id uuid, p_amount_cents bigint,
                                                 p_currency char(3)) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_capture uuid := gen_random_uuid();
    v_refund  uuid := gen_random_uuid();
BEGIN
    INSERT INTO ledger_transactions (id, order_id, kind, created_at)
    VALUES (v_capture, p_order_id, 'late_capture', clock_timestamp()),
           (v_refund, p_order_id, 'refund', clock_timestamp() + interval '1 microsecond');
    INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
    VALUES (v_capture, 'cash',            'DEBIT',  p_amount_cents, p_currency),
           (v_capture, 'refunds_payable', 'CREDIT', p_amount_cents, p_currency),
           (v_refund,  'refunds_payable', 'DEBIT',  p_amount_cents, p_currency),
           (v_refund,  'cash',            'CREDIT', p_amount_cents, p_currency);
END
$$;

-- Open the reversal of a FAILED order (pending), or reopen one the provider
-- said was canceled: evidence of a capture (a PAID event) outranks that
-- answer, so the provider is asked again.  A refunded reversal is final.
-- Returns true when a reversal is pending afterwards: the caller asks the
-- provider to cancel-or-refund.
CREATE OR REPLACE FUNCTION reversal_open(o orders) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO order_reversals AS r (order_id, amount_cents, currency)
    VALUES (o.id, o.amount_cents, o.currency)
    ON CONFLICT (order_id) DO UPDATE SET status = 'pending', last_attempt_at = NULL
        WHERE r.status = 'canceled';
    RETURN EXISTS (SELECT 1 FROM order_reversals r
                    WHERE r.order_id = o.id AND r.status = 'pending');
END
$$;

-- Argument rules.  Each *_arg_error function states the rules of some
-- arguments once, for the single-item function that raises the error and
-- for the batch function that checks all its items in one query: NULL when
-- the arguments are fine, else the SQLSTATE, a space and the message (which
-- the caller prefixes with its name).  They are IMMUTABLE SQL expressions,
-- which the planner inlines: a call costs what the expression costs.

-- 1..255 visible ASCII characters: an Idempotency-Key, a provider charge id.
CREATE OR REPLACE FUNCTION is_visible_ascii(p text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT char_length(p) BETWEEN 1 AND 255 AND p ~ '^[!-~]+$'
$$;

-- Durations the caller passes are floored here too: a key must live at least
-- a minute and a lock at least a second, whatever the caller says.
CREATE OR REPLACE FUNCTION durations_arg_error(p_lock_timeout interval, p_ttl interval)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_lock_timeout < interval '1 second'
            THEN '22023 the lock timeout must be at least 1 second'
        WHEN p_ttl < interval '1 minute'
            THEN '22023 the idempotency TTL must be at least 1 minute'
    END
$$;

DROP FUNCTION IF EXISTS check_durations(text, interval, interval);

-- The arguments of a housekeeper's call: an interval and a positive limit,
-- neither NULL; p_interval_error is the caller's rule of the interval
-- (checked last).
CREATE OR REPLACE FUNCTION housekeeping_arg_error(p_interval interval, p_limit int,
                                                  p_interval_error text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_interval IS NULL OR p_limit IS NULL THEN '22004 no argument may be NULL'
        WHEN p_limit <= 0 THEN '22023 p_limit must be positive'
        ELSE p_interval_error
    END
$$;

-- checkout_begin's arguments (see there).
CREATE OR REPLACE FUNCTION checkout_begin_arg_error(
    p_key text, p_fingerprint text, p_buyer_id text, p_seller_id text,
    p_amount_cents bigint, p_currency text, p_buyer_trust text,
    p_lock_timeout interval, p_ttl interval)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_key IS NULL OR p_fingerprint IS NULL OR p_buyer_id IS NULL OR p_seller_id IS NULL
             OR p_amount_cents IS NULL OR p_currency IS NULL OR p_buyer_trust IS NULL
             OR p_lock_timeout IS NULL OR p_ttl IS NULL
            THEN '22004 no argument may be NULL'
        WHEN NOT is_visible_ascii(p_key)
            THEN '22023 p_key must be 1..255 visible ASCII characters'
        WHEN p_fingerprint !~ '^[0-9a-f]+$' OR char_length(p_fingerprint) <> 64
            THEN '22023 p_fingerprint must be 64 lower-case hex digits'
        WHEN p_buyer_id !~ '^[A-Za-z0-9_.:-]+$' OR char_length(p_buyer_id) > 64
            THEN '22023 p_buyer_id must be 1..64 characters of [A-Za-z0-9_.:-]'
        WHEN p_seller_id !~ '^[A-Za-z0-9_.:-]+$' OR char_length(p_seller_id) > 64
            THEN '22023 p_seller_id must be 1..64 characters of [A-Za-z0-9_.:-]'
        WHEN p_amount_cents <= 0
            THEN '22023 p_amount_cents must be positive'
        WHEN p_currency !~ '^[A-Z]{3}$'
            THEN '22023 p_currency must be three upper-case letters'
        WHEN p_buyer_trust NOT IN ('trusted', 'untrusted')
            THEN '22023 p_buyer_trust must be trusted or untrusted'
        ELSE durations_arg_error(p_lock_timeout, p_ttl)
    END
$$;

-- checkout_finish's arguments but the charge id, which is dropped rather
-- than refused (see there).
CREATE OR REPLACE FUNCTION checkout_finish_arg_error(
    p_order_id uuid, p_key text, p_lock_token uuid, p_outcome text, p_outage_cap_cents bigint)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_order_id IS NULL OR p_key IS NULL OR p_lock_token IS NULL OR p_outcome IS NULL
            THEN '22004 p_order_id, p_key, p_lock_token and p_outcome must not be NULL'
        WHEN p_outcome NOT IN ('succeeded', 'declined', 'unavailable', 'not_charged')
            THEN '22023 p_outcome must be succeeded, declined, unavailable or not_charged, not '
                 || p_outcome
        WHEN p_outcome = 'unavailable' AND p_outage_cap_cents IS NULL
            THEN '22004 p_outage_cap_cents is needed for outcome unavailable'
        WHEN p_outage_cap_cents < 0
            THEN '22023 p_outage_cap_cents must not be negative'
    END
$$;

-- What checkout_finish makes of a PROCESSING order (see there): its status,
-- and its failure_reason.
CREATE OR REPLACE FUNCTION finish_status(p_outcome text, p_buyer_trust text,
                                         p_amount_cents bigint, p_outage_cap_cents bigint)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_outcome = 'succeeded' THEN 'PAID'
        WHEN p_outcome = 'unavailable' AND p_buyer_trust = 'trusted'
             AND p_amount_cents < p_outage_cap_cents THEN 'PENDING_PAYMENT'
        ELSE 'FAILED'
    END
$$;

CREATE OR REPLACE FUNCTION finish_failure_reason(p_outcome text, p_buyer_trust text,
                                                 p_amount_cents bigint, p_outage_cap_cents bigint)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN finish_status(p_outcome, p_buyer_trust, p_amount_cents, p_outage_cap_cents) <> 'FAILED'
            THEN NULL
        WHEN p_outcome = 'declined' THEN 'declined'
        ELSE 'provider_unavailable'
    END
$$;

-- The payment's ledger transaction: DEBIT cash, CREDIT seller_payable, for the
-- order's amount and currency.  Called in the same transaction that makes the
-- order PAID; balance and shape are checked again at COMMIT.
CREATE OR REPLACE FUNCTION ledger_write_payment(p_order_id uuid, p_amount_cents bigint,
                                                p_currency char(3)) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_txn uuid := gen_random_uuid();
BEGIN
    INSERT INTO ledger_transactions (id, order_id, kind)
    VALUES (v_txn, p_order_id, 'payment');
    INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
    VALUES (v_txn, 'cash',           'DEBIT',  p_amount_cents, p_currency),
           (v_txn, 'seller_payable', 'CREDIT', p_amount_cents, p_currency);
END
$$;

-- ---------------------------------------------------------------------------
-- API: checkout
-- ---------------------------------------------------------------------------

-- Step 1 of POST /checkout.  Claims the Idempotency-Key or reports what it
-- holds:
--   new          no live key: order created (PROCESSING), key in_progress,
--                locked by this caller (lock_token); order_id is the new order.
--   replay       key completed, same fingerprint: the stored response, and
--                when it was stored (completed_at_ms, Unix ms: the key
--                expires p_ttl after it).
--   reused       key exists, different fingerprint: nothing changes (no
--                order_id is given away).
--   in_progress  key in_progress, same fingerprint, lock fresh (order_id set).
--   recover      key in_progress, same fingerprint, lock older than
--                p_lock_timeout: the lock is now this caller's (a new
--                lock_token); order_id is the existing order.  Ask the
--                provider what became of its charge before charging again.
-- A completed key whose answer is older than p_ttl counts as absent and is replaced
-- (`new`, new order).  An in_progress key is never replaced, however old: its
-- order may have been charged; it follows the lock rules.
--
-- Concurrency (READ COMMITTED): INSERT ... ON CONFLICT DO NOTHING lets exactly
-- one of several simultaneous callers create the key (the others wait for it
-- to commit, then see it).  Reads that change nothing take no row lock (a
-- lock is a write); taking a stale lock over or replacing an expired key is
-- done under SELECT ... FOR UPDATE and re-decided on the locked row, so only
-- one caller gets `recover` / `new`.  A key that disappears meanwhile (purged)
-- sends the caller back to the INSERT.
DROP FUNCTION IF EXISTS checkout_begin(text, text, text, text, bigint, text, text, interval, interval);
CREATE FUNCTION checkout_begin(
    p_key text, p_fingerprint text, p_buyer_id text, p_seller_id text,
    p_amount_cents bigint, p_currency text, p_buyer_trust text,
    p_lock_timeout interval, p_ttl interval)
RETURNS TABLE (result text, order_id uuid, response_status int, response_body text,
               lock_token uuid, completed_at_ms bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    k           record;
    v_order     uuid;
    v_token     uuid;
    v_try_insert boolean := true;
    v_lock      boolean := false;
    v_err       text;
BEGIN
    v_err := checkout_begin_arg_error(p_key, p_fingerprint, p_buyer_id, p_seller_id,
                                      p_amount_cents, p_currency, p_buyer_trust,
                                      p_lock_timeout, p_ttl);
    IF v_err IS NOT NULL THEN
        RAISE EXCEPTION 'checkout_begin: %', substr(v_err, 7) USING ERRCODE = left(v_err, 5);
    END IF;

    FOR attempt IN 1..10 LOOP
        IF v_try_insert THEN
            v_order := gen_random_uuid();
            v_token := gen_random_uuid();
            INSERT INTO idempotency_keys (key, fingerprint, state, locked_at, order_id, lock_token)
            VALUES (p_key, p_fingerprint, 'in_progress', now(), v_order, v_token)
            ON CONFLICT (key) DO NOTHING;
            IF FOUND THEN
                INSERT INTO orders (id, buyer_id, seller_id, amount_cents, currency, buyer_trust)
                VALUES (v_order, p_buyer_id, p_seller_id, p_amount_cents, p_currency, p_buyer_trust);
                result := 'new'; order_id := v_order; lock_token := v_token;
                RETURN NEXT;
                RETURN;
            END IF;
            v_try_insert := false;
        END IF;

        IF v_lock THEN
            SELECT ik.state, ik.fingerprint, ik.order_id, ik.locked_at, ik.completed_at,
                   ik.response_status, ik.response_body
              INTO k FROM idempotency_keys ik WHERE ik.key = p_key FOR UPDATE;
        ELSE
            SELECT ik.state, ik.fingerprint, ik.order_id, ik.locked_at, ik.completed_at,
                   ik.response_status, ik.response_body
              INTO k FROM idempotency_keys ik WHERE ik.key = p_key;
        END IF;
        IF NOT FOUND THEN          -- purged since the INSERT saw it: claim it again
            v_try_insert := true;
            v_lock := false;
            CONTINUE;
        END IF;

        IF k.state = 'completed' AND k.completed_at < now() - p_ttl THEN
            -- Expired: the key is free again.  Replace it in place, under lock.
            IF NOT v_lock THEN v_lock := true; CONTINUE; END IF;
            v_order := gen_random_uuid();
            v_token := gen_random_uuid();
            UPDATE idempotency_keys ik
               SET fingerprint = p_fingerprint, state = 'in_progress', locked_at = now(),
                   order_id = v_order, response_status = NULL, response_body = NULL,
                   created_at = now(), completed_at = NULL, lock_token = v_token
             WHERE ik.key = p_key;
            INSERT INTO orders (id, buyer_id, seller_id, amount_cents, currency, buyer_trust)
            VALUES (v_order, p_buyer_id, p_seller_id, p_amount_cents, p_currency, p_buyer_trust);
            result := 'new'; order_id := v_order; lock_token := v_token;
        ELSIF k.fingerprint <> p_fingerprint THEN
            result := 'reused';
        ELSIF k.state = 'completed' THEN
            result := 'replay'; order_id := k.order_id;
            response_status := k.response_status; response_body := k.response_body;
            completed_at_ms := (extract(epoch FROM k.completed_at) * 1000)::bigint;
        ELSIF k.locked_at >= now() - p_lock_timeout THEN
            result := 'in_progress'; order_id := k.order_id;
        ELSE
            -- Stale lock: its holder died.  Take it over, under lock.
            IF NOT v_lock THEN v_lock := true; CONTINUE; END IF;
            v_token := gen_random_uuid();
            UPDATE idempotency_keys ik SET locked_at = now(), lock_token = v_token
             WHERE ik.key = p_key;
            result := 'recover'; order_id := k.order_id; lock_token := v_token;
        END IF;
        RETURN NEXT;
        RETURN;
    END LOOP;
    RAISE EXCEPTION 'checkout_begin: key % kept changing, retry', p_key
        USING ERRCODE = 'serialization_failure';
END
$$;

-- Step 2 of POST /checkout, after the provider answered (p_outcome):
--   succeeded    -> PAID, with the payment's ledger transaction
--   declined     -> FAILED, failure_reason declined
--   unavailable  -> PENDING_PAYMENT when buyer_trust = trusted and
--                   amount_cents < p_outage_cap_cents, else FAILED
--                   provider_unavailable
--   not_charged  -> FAILED provider_unavailable (the provider never saw the
--                   charge, or canceled it)
-- Unavailable means unknown, not declined: the provider may still capture the
-- charge.  So an order that ends FAILED provider_unavailable gets a pending
-- reversal, and the result says so (reversal = true): the caller asks the
-- provider to cancel-or-refund (reversal_settle records the answer).
--
-- result:
--   finished  the order moved (or a webhook had moved it: it is reported as
--             it is); the key is completed with 201 and the order's JSON,
--             which are returned with completed_at_ms.
--   replay    the key was already completed for this order (a duplicate
--             finish): the stored response is returned unchanged.
--   stale     the key is still in progress under another lock token: the
--             caller lost its lock to a recovery and changes nothing; the
--             new holder finishes the order.
-- p_charge_id (may be NULL) is stored when the order moves; one that is not
-- 1..255 visible ASCII characters is dropped with a warning rather than fail
-- the finish (the money decision matters more than the provider's label).
-- Locks: key, then order (checkout_begin locks only keys, webhook_apply only
-- orders, so no deadlock cycle exists).
DROP FUNCTION IF EXISTS checkout_finish(uuid, text, text, text, bigint);
DROP FUNCTION IF EXISTS checkout_finish(uuid, text, uuid, text, text, bigint);
CREATE FUNCTION checkout_finish(
    p_order_id uuid, p_key text, p_lock_token uuid, p_outcome text, p_charge_id text,
    p_outage_cap_cents bigint)
RETURNS TABLE (result text, status text, response_status int, response_body text,
               completed_at_ms bigint, reversal boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    k           record;
    o           orders;
    r           order_reversals;
    v_body      text;
    v_charge_id text := p_charge_id;
    v_reversal  boolean := false;
    v_err       text;
BEGIN
    v_err := checkout_finish_arg_error(p_order_id, p_key, p_lock_token, p_outcome,
                                       p_outage_cap_cents);
    IF v_err IS NOT NULL THEN
        RAISE EXCEPTION 'checkout_finish: %', substr(v_err, 7) USING ERRCODE = left(v_err, 5);
    END IF;
    IF is_visible_ascii(v_charge_id) IS FALSE THEN
        RAISE WARNING 'checkout_finish: order %: dropping a charge id that is not 1..255 visible ASCII characters', p_order_id;
        v_charge_id := NULL;
    END IF;

    SELECT ik.state, ik.order_id, ik.response_status, ik.response_body, ik.lock_token,
           ik.completed_at
      INTO k FROM idempotency_keys ik WHERE ik.key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'checkout_finish: no idempotency key %', p_key
            USING ERRCODE = 'no_data_found';
    END IF;
    IF k.order_id <> p_order_id THEN
        RAISE EXCEPTION 'checkout_finish: idempotency key % belongs to order %, not %', p_key, k.order_id, p_order_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF k.state = 'completed' THEN
        result := 'replay';
        status := k.response_body::json ->> 'status';
        response_status := k.response_status; response_body := k.response_body;
        completed_at_ms := (extract(epoch FROM k.completed_at) * 1000)::bigint;
        reversal := false;
        RETURN NEXT;
        RETURN;
    END IF;
    IF k.lock_token IS DISTINCT FROM p_lock_token THEN
        result := 'stale'; reversal := false;
        RETURN NEXT;
        RETURN;
    END IF;

    -- One statement decides and moves; under READ COMMITTED a concurrent
    -- webhook that moved the order first makes the WHERE fail on the new row.
    UPDATE orders od
       SET status = finish_status(p_outcome, od.buyer_trust, od.amount_cents,
                                  p_outage_cap_cents),
           failure_reason = finish_failure_reason(p_outcome, od.buyer_trust, od.amount_cents,
                                                  p_outage_cap_cents),
           provider_charge_id = coalesce(v_charge_id, od.provider_charge_id)
     WHERE od.id = p_order_id AND od.status = 'PROCESSING'
    RETURNING od.* INTO o;
    IF FOUND THEN
        IF o.status = 'PAID' THEN
            PERFORM ledger_write_payment(o.id, o.amount_cents, o.currency);
        ELSIF o.failure_reason = 'provider_unavailable' THEN
            v_reversal := reversal_open(o);
        END IF;
    ELSE
        -- A webhook moved it first.  A charge that succeeded for an order
        -- that is FAILED is money to give back.
        SELECT * INTO o FROM orders od WHERE od.id = p_order_id;
        IF o.status = 'FAILED' AND p_outcome = 'succeeded' THEN
            v_reversal := reversal_open(o);
        END IF;
    END IF;

    SELECT * INTO r FROM order_reversals rv WHERE rv.order_id = o.id;   -- all NULL: none
    v_body := order_json(o, r);
    UPDATE idempotency_keys ik
       SET state = 'completed', response_status = 201, response_body = v_body,
           completed_at = now()
     WHERE ik.key = p_key;
    result := 'finished'; status := o.status; response_status := 201; response_body := v_body;
    completed_at_ms := (extract(epoch FROM now()) * 1000)::bigint;
    reversal := v_reversal;
    RETURN NEXT;
END
$$;

-- ---------------------------------------------------------------------------
-- API: webhooks
-- ---------------------------------------------------------------------------

-- POST /webhooks/provider, after the signature was verified:
--   not_found    no such order: nothing recorded (the provider retries)
--   duplicate    event_id seen before: nothing changes
--   applied      order PROCESSING or PENDING_PAYMENT moved to PAID (with the
--                ledger) or FAILED (failure_reason declined); event recorded
--                with applied = true
--   not_applied  order already final; conflict = it is final in the other
--                state; event recorded with applied = false
-- order_status is the order's status after the call (NULL for not_found).
-- A PAID event for a FAILED order means the provider holds money we refused:
-- it opens a reversal (never silently dropped), and reversal = true tells the
-- caller to ask the provider to cancel-or-refund (amount_cents and currency
-- are the order's, for that call).
-- The order row is locked first, so two deliveries of one event (or two
-- events of one order) serialize on it; the loser's INSERT then conflicts on
-- event_id (duplicate) or finds the order final (not_applied).
DROP FUNCTION IF EXISTS webhook_apply(text, uuid, text, text);
CREATE FUNCTION webhook_apply(
    p_event_id text, p_order_id uuid, p_outcome text, p_payload text)
RETURNS TABLE (result text, order_status text, conflict boolean, reversal boolean,
               amount_cents bigint, currency text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    o          orders;
    v_status   text;
    v_amount   bigint;
    v_currency char(3);
    v_applied  boolean;
BEGIN
    reversal := false;
    IF p_event_id IS NULL OR p_order_id IS NULL OR p_outcome IS NULL OR p_payload IS NULL THEN
        RAISE EXCEPTION 'webhook_apply: no argument may be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF char_length(p_event_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'webhook_apply: p_event_id must be 1..255 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_outcome NOT IN ('PAID', 'FAILED') THEN
        RAISE EXCEPTION 'webhook_apply: p_outcome must be PAID or FAILED, not %', p_outcome
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT * INTO o FROM orders od WHERE od.id = p_order_id
       FOR NO KEY UPDATE;      -- does not block the FK checks of inserts
    v_status := o.status; v_amount := o.amount_cents; v_currency := o.currency;
    amount_cents := v_amount; currency := v_currency;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM webhook_events w WHERE w.event_id = p_event_id) THEN
            result := 'duplicate';     -- a replay carrying a bad order id
        ELSE
            result := 'not_found';
        END IF;
        conflict := false;
        RETURN NEXT;
        RETURN;
    END IF;

    v_applied := v_status IN ('PROCESSING', 'PENDING_PAYMENT');
    INSERT INTO webhook_events (event_id, order_id, outcome, payload, applied)
    VALUES (p_event_id, p_order_id, p_outcome, p_payload, v_applied)
    ON CONFLICT (event_id) DO NOTHING;
    IF NOT FOUND THEN
        result := 'duplicate'; order_status := v_status; conflict := false;
        RETURN NEXT;
        RETURN;
    END IF;

    IF v_applied THEN
        UPDATE orders od
           SET status = p_outcome,
               failure_reason = CASE WHEN p_outcome = 'FAILED' THEN 'declined' END
         WHERE od.id = p_order_id;
        IF p_outcome = 'PAID' THEN
            PERFORM ledger_write_payment(p_order_id, v_amount, v_currency);
        END IF;
        result := 'applied'; order_status := p_outcome; conflict := false;
    ELSE
        result := 'not_applied'; order_status := v_status; conflict := v_status <> p_outcome;
        IF v_status = 'FAILED' AND p_outcome = 'PAID' THEN
            reversal := reversal_open(o);
        END IF;
    END IF;
    RETURN NEXT;
END
$$;

-- ---------------------------------------------------------------------------
-- API: batches (group commit)
-- ---------------------------------------------------------------------------

-- The worker sends the calls of one kind that wait in its queue as ONE call
-- of an array function below = one round trip = one transaction = one
-- commit (DESIGN.md, group commit).  Item i of a batch is element i of every
-- array argument (one-dimensional arrays of the same length, 1..1000 items,
-- else 22023; a NULL array: 22004).  One row comes back per item, in ordinal
-- order: its 1-based ordinal `ord`, then exactly the columns of the
-- single-item function.
--
-- Each item answers exactly as one call of the single-item function would,
-- and items that share a key or an order as the same calls made one after
-- the other in ordinal order (a key twice: new, then in_progress or reused;
-- a key finished twice: finished, then replay; an event twice: applied, then
-- duplicate).  checkout_begin_many and checkout_finish_many do their common
-- case set-based -- new keys, and finishes of distinct keys -- in a few
-- statements for the whole batch (see each function); every other item runs
-- the single-item function, so its rules and race handling are exactly
-- theirs.  One item's conflict never fails its neighbours: conflicts are
-- answered with a result, not an error.
--
-- The three write functions run with plan_cache_mode = force_generic_plan.
-- Their statements take arrays, and PostgreSQL's plan cache found a custom
-- plan no worse than the generic one for them, so it planned every
-- statement again on every call: about a tenth of PostgreSQL's CPU per
-- checkout under load went to the planner.  The generic plans are the same
-- index lookups on keys and order ids, whatever the batch holds.
--
-- All or nothing: an item that raises (bad input -- the worker validates a
-- call before it queues it, so this is a bug) fails the whole batch, and so
-- does a failed COMMIT (the deferred checks -- ledger balance, PAID has its
-- payment, refunded has its ledger -- run at COMMIT for all the items at
-- once).  The worker then gives every item of the batch the error.  There is
-- deliberately no EXCEPTION block per item: a subtransaction per item would
-- cost more than the batch saves.
--
-- Locks.  The global order is: idempotency keys by key (COLLATE "C"), then
-- orders by id (checkout_finish and webhook_apply write an order's event,
-- ledger and reversal only while holding the order's lock).  A single-item
-- call locks at most one key and then one order, so single calls cannot
-- deadlock each other.  A batch that ran its items in ordinal order could:
-- two batches holding the same two keys in opposite orders, or a finish
-- batch and a webhook batch holding the same two orders in opposite orders,
-- each wait for the other (40P01: retryable, but it fails two whole batches;
-- with the items run in ordinal order, the batch races of
-- tests/sql/concurrency.sh hit it in most runs).  So each batch takes its
-- locks in the global order, whatever the order of its items:
--   checkout_begin_many   claims its new keys in one INSERT, in key order
--                         (a key that does not exist yet cannot be locked
--                         ahead of its item; the INSERT waits only for keys
--                         other transactions are inserting, and holds no
--                         lock on an existing key meanwhile), then runs its
--                         other items sorted by key, items of one key in
--                         ordinal order; items of different keys touch
--                         nothing in common, so the order in which they run
--                         cannot show; the rows are returned in ordinal
--                         order;
--   checkout_finish_many  first locks the keys, then the orders, of all its
--                         items, each sorted, then finishes the items (each
--                         statement or call finds its locks already held;
--                         the orders of stale or replayed items are locked
--                         too, which a single call would not do: at worst a
--                         short wait);
--   webhook_apply_many    first locks the orders of all its items, sorted,
--                         then runs the items in ordinal order.
-- Sorting here rather than in the worker protects every caller, and costs a
-- sort of at most 1000 items and one index scan per batch.  (A batch still
-- waits for the holder of a lock it needs, like a single call; it just never
-- waits while holding a lock that comes later in the order.)

-- The length of an array argument of a batch: its number of elements, 0 for
-- an empty or a multi-dimensional array (both refused by batch_size), NULL
-- for NULL.
-- (Not STRICT, so that the planner inlines it: a call costs nothing.)
CREATE OR REPLACE FUNCTION batch_len(p_array anyarray) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_array IS NULL THEN NULL
                WHEN array_ndims(p_array) = 1 THEN cardinality(p_array)
                ELSE 0 END
$$;

-- The number of items of a batch whose array arguments have the lengths
-- p_lengths (batch_len of each): 22004 when an array is NULL, 22023 unless
-- they all have the same length, 1..1000.
CREATE OR REPLACE FUNCTION batch_size(p_fn text, p_lengths int[]) RETURNS int
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n int := p_lengths[1];
BEGIN
    IF array_position(p_lengths, NULL) IS NOT NULL THEN
        RAISE EXCEPTION '%: no array may be NULL', p_fn
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF n NOT BETWEEN 1 AND 1000 OR n <> ANY (p_lengths) THEN
        RAISE EXCEPTION '%: the arrays must be one-dimensional, of one length, 1..1000 (lengths %)',
                        p_fn, array_to_string(p_lengths, ', ')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN n;
END
$$;

-- checkout_begin for each item, items of one key in ordinal order (locks:
-- see above).  A batch with a malformed item fails before it writes
-- anything, with the error of the first such item in ordinal order (the
-- error the calls one after the other would raise).  The common case is
-- set-based: ONE statement claims the first item of each key of the batch,
-- in key order, with one INSERT ... ON CONFLICT DO NOTHING for the keys and
-- one INSERT for the orders of the keys it claimed (`new`), as
-- checkout_begin's own first step does for one item.  The other items -- a
-- key that exists (replay, reused, in_progress, recover, expired), or the
-- second item of a key -- then run checkout_begin one by one, sorted by key,
-- items of one key in ordinal order.
-- Locks: the claiming INSERT takes the new keys in key order, and waits
-- only for keys another transaction is inserting; the one-by-one items lock
-- keys that exist, sorted, and an existing key is never locked by someone
-- waiting for a key being inserted, so no cycle forms.  (The exception: a
-- key purged between the two steps is claimed again by its one-by-one item,
-- out of key order; a deadlock there needs another batch inserting that
-- very key at that moment, and would be the retryable 40P01.)
CREATE OR REPLACE FUNCTION checkout_begin_many(
    p_keys text[], p_fingerprints text[], p_buyer_ids text[], p_seller_ids text[],
    p_amounts bigint[], p_currencies text[], p_buyer_trusts text[],
    p_lock_timeouts interval[], p_ttls interval[])
RETURNS TABLE (ord int, result text, order_id uuid, response_status int, response_body text,
               lock_token uuid, completed_at_ms bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    n         int;
    it        record;
    b         record;
    v_new     int[] := '{}';
    v_result  text[];
    v_order   uuid[];
    v_status  int[];
    v_body    text[];
    v_token   uuid[];
    v_done_ms bigint[];
    v_err     text;
BEGIN
    n := batch_size('checkout_begin_many', ARRAY[
             batch_len(p_keys), batch_len(p_fingerprints), batch_len(p_buyer_ids),
             batch_len(p_seller_ids), batch_len(p_amounts), batch_len(p_currencies),
             batch_len(p_buyer_trusts), batch_len(p_lock_timeouts), batch_len(p_ttls)]);
    v_result := array_fill(NULL::text, ARRAY[n]);
    v_status := array_fill(NULL::int, ARRAY[n]);
    v_body := array_fill(NULL::text, ARRAY[n]);
    v_done_ms := array_fill(NULL::bigint, ARRAY[n]);

    -- checkout_begin's argument rules, all items at once: the error of the
    -- first malformed item in ordinal order, as the calls one after the other.
    SELECT e.err INTO v_err
      FROM unnest(p_keys, p_fingerprints, p_buyer_ids, p_seller_ids, p_amounts,
                  p_currencies, p_buyer_trusts, p_lock_timeouts, p_ttls)
           WITH ORDINALITY AS u(key, fingerprint, buyer_id, seller_id, amount_cents,
                                currency, buyer_trust, lock_timeout, ttl, i)
     CROSS JOIN LATERAL (SELECT checkout_begin_arg_error(u.key, u.fingerprint, u.buyer_id,
                                                         u.seller_id, u.amount_cents, u.currency,
                                                         u.buyer_trust, u.lock_timeout, u.ttl)
                                AS err) e
     WHERE e.err IS NOT NULL
     ORDER BY u.i
     LIMIT 1;
    IF v_err IS NOT NULL THEN
        RAISE EXCEPTION 'checkout_begin: %', substr(v_err, 7) USING ERRCODE = left(v_err, 5);
    END IF;

    WITH u AS (
        SELECT DISTINCT ON (u.key COLLATE "C") u.*
          FROM unnest(p_keys, p_fingerprints, p_buyer_ids, p_seller_ids, p_amounts,
                      p_currencies, p_buyer_trusts)
               WITH ORDINALITY AS u(key, fingerprint, buyer_id, seller_id, amount_cents,
                                    currency, buyer_trust, i)
         ORDER BY u.key COLLATE "C", u.i),
    ins AS (
        INSERT INTO idempotency_keys (key, fingerprint, state, locked_at, order_id, lock_token)
        SELECT u.key, u.fingerprint, 'in_progress', now(), gen_random_uuid(), gen_random_uuid()
          FROM u
         ORDER BY u.key COLLATE "C"
        ON CONFLICT (key) DO NOTHING
        RETURNING key, order_id, lock_token),
    od AS (
        INSERT INTO orders (id, buyer_id, seller_id, amount_cents, currency, buyer_trust)
        SELECT ins.order_id, u.buyer_id, u.seller_id, u.amount_cents, u.currency, u.buyer_trust
          FROM ins JOIN u ON u.key = ins.key)
    SELECT coalesce(array_agg(u.i::int), '{}'), array_agg(ins.order_id), array_agg(ins.lock_token)
      INTO v_new, v_order, v_token
      FROM ins JOIN u ON u.key = ins.key;
    -- Back to one element per item (NULL for the items not claimed).
    SELECT array_agg(x.o ORDER BY g.i), array_agg(x.t ORDER BY g.i)
      INTO v_order, v_token
      FROM generate_series(1, n) AS g(i)
      LEFT JOIN unnest(v_new, v_order, v_token) AS x(i, o, t) ON x.i = g.i;

    FOR it IN
        SELECT u.*
          FROM unnest(p_keys, p_fingerprints, p_buyer_ids, p_seller_ids, p_amounts,
                      p_currencies, p_buyer_trusts, p_lock_timeouts, p_ttls)
               WITH ORDINALITY AS u(key, fingerprint, buyer_id, seller_id, amount_cents,
                                    currency, buyer_trust, lock_timeout, ttl, i)
         WHERE u.i <> ALL (v_new)
         ORDER BY u.key COLLATE "C", u.i
    LOOP
        SELECT * INTO b
          FROM checkout_begin(it.key, it.fingerprint, it.buyer_id, it.seller_id,
                              it.amount_cents, it.currency, it.buyer_trust,
                              it.lock_timeout, it.ttl);
        v_result[it.i] := b.result;
        v_order[it.i] := b.order_id;
        v_status[it.i] := b.response_status;
        v_body[it.i] := b.response_body;
        v_token[it.i] := b.lock_token;
        v_done_ms[it.i] := b.completed_at_ms;
    END LOOP;

    RETURN QUERY
    SELECT u.i::int, CASE WHEN u.i = ANY (v_new) THEN 'new' ELSE u.r END, u.o, u.s, u.b, u.t, u.c
      FROM unnest(v_result, v_order, v_status, v_body, v_token, v_done_ms)
           WITH ORDINALITY AS u(r, o, s, b, t, c, i)
     ORDER BY u.i;
END
$$;

-- checkout_finish for each item, after locking every item's key and then
-- every item's order (each sorted; see above).  The common case is
-- set-based: when every item is well-formed (its charge id too), names a key
-- that exists and belongs to its order, and no two items share a key or an
-- order, the items are independent, and three statements do checkout_finish's
-- work for all of them (one UPDATE of the orders with the payments' ledger
-- rows, one INSERT of the reversals to open, one UPDATE of the keys that
-- returns the answers).  Any other batch runs checkout_finish item by item,
-- in ordinal order, as before: it raises the item's error, warns about the
-- charge id it drops, or finishes a key twice (finished, then replay).
CREATE OR REPLACE FUNCTION checkout_finish_many(
    p_order_ids uuid[], p_keys text[], p_lock_tokens uuid[], p_outcomes text[],
    p_charge_ids text[], p_caps bigint[])
RETURNS TABLE (ord int, result text, status text, response_status int, response_body text,
               completed_at_ms bigint, reversal boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    it        record;
    v_reverse uuid[];
BEGIN
    PERFORM batch_size('checkout_finish_many', ARRAY[
                batch_len(p_order_ids), batch_len(p_keys), batch_len(p_lock_tokens),
                batch_len(p_outcomes), batch_len(p_charge_ids), batch_len(p_caps)]);

    PERFORM 1 FROM idempotency_keys ik WHERE ik.key = ANY (p_keys)
     ORDER BY ik.key COLLATE "C" FOR UPDATE;
    PERFORM 1 FROM orders od WHERE od.id = ANY (p_order_ids)
     ORDER BY od.id FOR NO KEY UPDATE;

    IF (SELECT count(DISTINCT u.key) < count(*) OR count(DISTINCT u.order_id) < count(*)
               OR bool_or(checkout_finish_arg_error(u.order_id, u.key, u.lock_token, u.outcome,
                                                    u.cap) IS NOT NULL
                          OR is_visible_ascii(u.charge_id) IS FALSE
                          OR ik.order_id IS DISTINCT FROM u.order_id)
          FROM unnest(p_order_ids, p_keys, p_lock_tokens, p_outcomes, p_charge_ids, p_caps)
               AS u(order_id, key, lock_token, outcome, charge_id, cap)
          LEFT JOIN idempotency_keys ik ON ik.key = u.key) THEN
        FOR it IN
            SELECT u.*
              FROM unnest(p_order_ids, p_keys, p_lock_tokens, p_outcomes, p_charge_ids, p_caps)
                   WITH ORDINALITY AS u(order_id, key, lock_token, outcome, charge_id, cap, i)
             ORDER BY u.i
        LOOP
            RETURN QUERY
            SELECT it.i::int, f.*
              FROM checkout_finish(it.order_id, it.key, it.lock_token, it.outcome, it.charge_id,
                                   it.cap) f;
        END LOOP;
        RETURN;
    END IF;

    -- The items whose key is still in progress under their lock token move
    -- their order, as checkout_finish does (finish_status and
    -- finish_failure_reason); a payment gets its ledger transaction in the
    -- same statement.  The orders a webhook moved
    -- first are read as they are.  Collected: the orders that need a
    -- reversal (FAILED provider_unavailable now, or FAILED already while the
    -- provider says succeeded).
    WITH u AS (
        SELECT u.*
          FROM unnest(p_order_ids, p_keys, p_lock_tokens, p_outcomes, p_charge_ids, p_caps)
               AS u(order_id, key, lock_token, outcome, charge_id, cap)
          JOIN idempotency_keys ik ON ik.key = u.key
         WHERE ik.state = 'in_progress' AND ik.lock_token = u.lock_token),
    mv AS (
        UPDATE orders od
           SET status = finish_status(u.outcome, od.buyer_trust, od.amount_cents, u.cap),
               failure_reason = finish_failure_reason(u.outcome, od.buyer_trust, od.amount_cents,
                                                      u.cap),
               provider_charge_id = coalesce(u.charge_id, od.provider_charge_id)
          FROM u
         WHERE od.id = u.order_id AND od.status = 'PROCESSING'
        RETURNING od.id, od.status, od.failure_reason, od.amount_cents, od.currency),
    lt AS (
        INSERT INTO ledger_transactions (order_id, kind)
        SELECT mv.id, 'payment' FROM mv WHERE mv.status = 'PAID'
        RETURNING id, order_id),
    le AS (
        INSERT INTO ledger_entries (txn_id, account, direction, amount_cents, currency)
        SELECT lt.id, e.account, e.direction, mv.amount_cents, mv.currency
          FROM lt JOIN mv ON mv.id = lt.order_id,
               (VALUES (1, 'cash', 'DEBIT'), (2, 'seller_payable', 'CREDIT'))
               AS e(n, account, direction)
         ORDER BY lt.id, e.n)
    SELECT ARRAY(SELECT mv.id FROM mv WHERE mv.failure_reason = 'provider_unavailable'
                 UNION ALL
                 SELECT u.order_id FROM u JOIN orders od ON od.id = u.order_id
                  WHERE od.status = 'FAILED' AND u.outcome = 'succeeded')
      INTO v_reverse;

    IF cardinality(v_reverse) > 0 THEN   -- rare: reversal_open for each
        PERFORM reversal_open(od) FROM orders od WHERE od.id = ANY (v_reverse) ORDER BY od.id;
    END IF;

    -- Complete the keys with the orders' JSON; a key completed before is a
    -- replay, one under another lock token is stale.
    RETURN QUERY
    WITH u AS (
        SELECT u.*
          FROM unnest(p_order_ids, p_keys, p_lock_tokens)
               WITH ORDINALITY AS u(order_id, key, lock_token, i)),
    fin AS (
        UPDATE idempotency_keys ik
           SET state = 'completed', response_status = 201, response_body = order_json(od, rv),
               completed_at = now()
          FROM u JOIN orders od ON od.id = u.order_id
                 LEFT JOIN order_reversals rv ON rv.order_id = od.id
         WHERE ik.key = u.key AND ik.state = 'in_progress' AND ik.lock_token = u.lock_token
        RETURNING ik.key, ik.response_body, od.status)
    SELECT u.i::int,
           CASE WHEN fin.key IS NOT NULL THEN 'finished'
                WHEN ik.state = 'completed' THEN 'replay'
                ELSE 'stale' END,
           CASE WHEN fin.key IS NOT NULL THEN fin.status
                WHEN ik.state = 'completed' THEN ik.response_body::json ->> 'status' END,
           CASE WHEN fin.key IS NOT NULL THEN 201
                WHEN ik.state = 'completed' THEN ik.response_status END,
           CASE WHEN fin.key IS NOT NULL THEN fin.response_body
                WHEN ik.state = 'completed' THEN ik.response_body END,
           CASE WHEN fin.key IS NOT NULL THEN (extract(epoch FROM now()) * 1000)::bigint
                WHEN ik.state = 'completed' THEN (extract(epoch FROM ik.completed_at) * 1000)::bigint END,
           coalesce(fin.key IS NOT NULL AND u.order_id = ANY (v_reverse)
                    AND EXISTS (SELECT 1 FROM order_reversals r
                                 WHERE r.order_id = u.order_id AND r.status = 'pending'), false)
      FROM u
      JOIN idempotency_keys ik ON ik.key = u.key
      LEFT JOIN fin ON fin.key = u.key
     ORDER BY u.i;
END
$$;

-- webhook_apply for each item, in ordinal order, after locking every item's
-- order (sorted; see above).
CREATE OR REPLACE FUNCTION webhook_apply_many(
    p_event_ids text[], p_order_ids uuid[], p_outcomes text[], p_payloads text[])
RETURNS TABLE (ord int, result text, order_status text, conflict boolean, reversal boolean,
               amount_cents bigint, currency text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    it record;
BEGIN
    PERFORM batch_size('webhook_apply_many', ARRAY[
                batch_len(p_event_ids), batch_len(p_order_ids), batch_len(p_outcomes),
                batch_len(p_payloads)]);

    PERFORM 1 FROM orders od WHERE od.id = ANY (p_order_ids)
     ORDER BY od.id FOR NO KEY UPDATE;

    FOR it IN
        SELECT u.*
          FROM unnest(p_event_ids, p_order_ids, p_outcomes, p_payloads)
               WITH ORDINALITY AS u(event_id, order_id, outcome, payload, i)
         ORDER BY u.i
    LOOP
        RETURN QUERY
        SELECT it.i::int, w.*
          FROM webhook_apply(it.event_id, it.order_id, it.outcome, it.payload) w;
    END LOOP;
END
$$;

-- order_get for each item: the order's JSON, NULL for an unknown order (or a
-- NULL id).  Reads only, so one set-based query.
CREATE OR REPLACE FUNCTION order_get_many(p_order_ids uuid[])
RETURNS TABLE (ord int, body text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM batch_size('order_get_many', ARRAY[batch_len(p_order_ids)]);
    RETURN QUERY
    SELECT u.i::int, CASE WHEN o.id IS NOT NULL THEN order_json(o, r) END
      FROM unnest(p_order_ids) WITH ORDINALITY AS u(id, i)
      LEFT JOIN orders o ON o.id = u.id
      LEFT JOIN order_reversals r ON r.order_id = o.id
     ORDER BY u.i;
END
$$;

-- ---------------------------------------------------------------------------
-- API: reversals (cancel-or-refund of money held for a FAILED order)
-- ---------------------------------------------------------------------------

-- Record the provider's answer to POST /v1/charges/{order_id}/cancel:
--   canceled, declined, not_found  -> canceled: no money moved, and the
--                                     provider will never capture it
--   refunded                       -> refunded: the late capture and the
--                                     refund are written to the ledger
-- Returns the reversal's status afterwards.  Idempotent: a settled reversal
-- keeps its state (only canceled -> refunded can still happen, when the
-- provider reports a capture after all).  P0002 when the order has no
-- reversal.
CREATE OR REPLACE FUNCTION reversal_settle(p_order_id uuid, p_answer text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    r order_reversals;
BEGIN
    IF p_order_id IS NULL OR p_answer IS NULL THEN
        RAISE EXCEPTION 'reversal_settle: no argument may be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF p_answer NOT IN ('canceled', 'refunded', 'declined', 'not_found') THEN
        RAISE EXCEPTION 'reversal_settle: p_answer must be canceled, refunded, declined or not_found, not %', p_answer
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM order_reversals rv WHERE rv.order_id = p_order_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reversal_settle: order % has no reversal', p_order_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF p_answer = 'refunded' AND r.status <> 'refunded' THEN
        PERFORM ledger_write_reversal(r.order_id, r.amount_cents, r.currency);
        UPDATE order_reversals rv SET status = 'refunded' WHERE rv.order_id = p_order_id;
        RETURN 'refunded';
    END IF;
    IF p_answer <> 'refunded' AND r.status = 'pending' THEN
        UPDATE order_reversals rv SET status = 'canceled' WHERE rv.order_id = p_order_id;
        RETURN 'canceled';
    END IF;
    RETURN r.status;
END
$$;

-- Pending reversals whose last cancel was sent more than p_retry_after ago
-- (or never by the housekeeper), least recently tried first; each is marked
-- tried now (attempts + 1), so several housekeepers never send the same
-- cancel at once (SKIP LOCKED).
CREATE OR REPLACE FUNCTION reversals_due(p_retry_after interval, p_limit int)
RETURNS TABLE (order_id uuid, amount_cents bigint, currency text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_err text;
BEGIN
    v_err := housekeeping_arg_error(p_retry_after, p_limit,
                                    CASE WHEN p_retry_after < interval '0'
                                         THEN '22023 p_retry_after must not be negative' END);
    IF v_err IS NOT NULL THEN
        RAISE EXCEPTION 'reversals_due: %', substr(v_err, 7) USING ERRCODE = left(v_err, 5);
    END IF;
    RETURN QUERY
    UPDATE order_reversals rv
       SET attempts = rv.attempts + 1, last_attempt_at = now()
     WHERE rv.order_id IN (SELECT x.order_id FROM order_reversals x
                            WHERE x.status = 'pending'
                              AND x.created_at < now() - p_retry_after
                              AND (x.last_attempt_at IS NULL
                                   OR x.last_attempt_at < now() - p_retry_after)
                            ORDER BY x.last_attempt_at NULLS FIRST, x.created_at
                            LIMIT p_limit
                              FOR UPDATE SKIP LOCKED)
    RETURNING rv.order_id, rv.amount_cents, rv.currency::text;
END
$$;

-- ---------------------------------------------------------------------------
-- API: housekeeper
-- ---------------------------------------------------------------------------

-- Deletes up to p_limit completed keys answered more than p_ttl ago (small
-- batches keep locks and WAL bursts short; call again while it returns
-- p_limit).  In-progress keys are never purged: their order may be charged.
-- Rows locked by a concurrent checkout_begin are skipped, not waited for.
CREATE OR REPLACE FUNCTION purge_expired_idempotency_keys(p_ttl interval, p_limit int)
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    n     int;
    v_err text;
BEGIN
    v_err := housekeeping_arg_error(p_ttl, p_limit,
                                    durations_arg_error(interval '1 second', p_ttl));
    IF v_err IS NOT NULL THEN
        RAISE EXCEPTION 'purge_expired_idempotency_keys: %', substr(v_err, 7)
            USING ERRCODE = left(v_err, 5);
    END IF;
    DELETE FROM idempotency_keys ik
     WHERE ik.key IN (SELECT x.key FROM idempotency_keys x
                       WHERE x.state = 'completed' AND x.completed_at < now() - p_ttl
                       ORDER BY x.completed_at
                       LIMIT p_limit
                         FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Checkouts whose worker died mid-way: in-progress keys whose lock is older
-- than p_lock_timeout and whose order is still PROCESSING.  Their lock is
-- taken over (locked_at = now(), a new lock_token, returned: finish with it);
-- the caller asks the provider about each
-- charge (GET, never a new charge) and calls checkout_finish with its answer
-- (outcome not_charged when the provider never saw the charge).  SKIP LOCKED: several
-- housekeepers, or a checkout_begin holding the row, never hand out one key
-- twice.  Stale keys whose order a webhook already made final need no
-- provider call: they are completed here with the order as it is.
DROP FUNCTION IF EXISTS checkout_claim_stale(interval, int);
CREATE FUNCTION checkout_claim_stale(p_lock_timeout interval, p_limit int)
RETURNS TABLE (key text, order_id uuid, amount_cents bigint, currency text, lock_token uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_err text;
BEGIN
    v_err := housekeeping_arg_error(p_lock_timeout, p_limit,
                                    durations_arg_error(p_lock_timeout, interval '1 minute'));
    IF v_err IS NOT NULL THEN
        RAISE EXCEPTION 'checkout_claim_stale: %', substr(v_err, 7) USING ERRCODE = left(v_err, 5);
    END IF;

    UPDATE idempotency_keys ik
       SET state = 'completed', response_status = 201, response_body = order_json(od, rv),
           completed_at = now()
      FROM orders od LEFT JOIN order_reversals rv ON rv.order_id = od.id
     WHERE od.id = ik.order_id
       AND ik.key IN (SELECT x.key
                        FROM idempotency_keys x JOIN orders xo ON xo.id = x.order_id
                       WHERE x.state = 'in_progress'
                         AND x.locked_at < now() - p_lock_timeout
                         AND xo.status <> 'PROCESSING'
                       ORDER BY x.locked_at
                       LIMIT p_limit
                         FOR UPDATE OF x SKIP LOCKED);

    RETURN QUERY
    UPDATE idempotency_keys ik
       SET locked_at = now(), lock_token = gen_random_uuid()
      FROM orders od
     WHERE od.id = ik.order_id
       AND ik.key IN (SELECT x.key
                        FROM idempotency_keys x JOIN orders xo ON xo.id = x.order_id
                       WHERE x.state = 'in_progress'
                         AND x.locked_at < now() - p_lock_timeout
                         AND xo.status = 'PROCESSING'
                       ORDER BY x.locked_at
                       LIMIT p_limit
                         FOR UPDATE OF x SKIP LOCKED)
    RETURNING ik.key, ik.order_id, od.amount_cents, od.currency::text, ik.lock_token;
END
$$;

-- PENDING_PAYMENT orders last changed more than p_age ago, oldest first, for
-- the housekeeper to reconcile with the provider (GET /v1/charges/{id}).
CREATE OR REPLACE FUNCTION pending_orders_due(p_age interval, p_limit int)
RETURNS TABLE (order_id uuid, amount_cents bigint, currency text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_err text;
BEGIN
    v_err := housekeeping_arg_error(p_age, p_limit,
                                    CASE WHEN p_age < interval '0'
                                         THEN '22023 p_age must not be negative' END);
    IF v_err IS NOT NULL THEN
        RAISE EXCEPTION 'pending_orders_due: %', substr(v_err, 7) USING ERRCODE = left(v_err, 5);
    END IF;
    RETURN QUERY
    SELECT od.id, od.amount_cents, od.currency::text
      FROM orders od
     WHERE od.status = 'PENDING_PAYMENT' AND od.updated_at < now() - p_age
     ORDER BY od.updated_at
     LIMIT p_limit;
END
$$;

-- ---------------------------------------------------------------------------
-- Privileges of app
-- ---------------------------------------------------------------------------

-- app changes data only through the SECURITY DEFINER functions above; it may
-- read the tables for inspection (psql, README demos).  The functions run as
-- paymentsd_owner, which may do exactly what they do and no more (no DELETE
-- but of idempotency keys, no UPDATE of append-only tables, no DDL).
-- Re-running resets anything granted by hand in between.
REVOKE ALL ON TABLE orders, idempotency_keys, webhook_events, order_reversals,
                    ledger_transactions, ledger_entries FROM PUBLIC, app, paymentsd_owner;
GRANT SELECT ON TABLE orders, idempotency_keys, webhook_events, order_reversals,
                      ledger_transactions, ledger_entries TO app;
REVOKE ALL ON SEQUENCE ledger_entries_id_seq FROM PUBLIC, app, paymentsd_owner;
GRANT SELECT, INSERT, UPDATE ON TABLE orders, order_reversals TO paymentsd_owner;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE idempotency_keys TO paymentsd_owner;
GRANT SELECT, INSERT ON TABLE webhook_events, ledger_transactions, ledger_entries
    TO paymentsd_owner;
GRANT USAGE ON SEQUENCE ledger_entries_id_seq TO paymentsd_owner;

-- Functions are executable by PUBLIC by default: revoke that everywhere, then
-- grant the API to app.  (Only our own functions: other extensions in public,
-- e.g. pgTAP in the test database, keep their grants.)  Every one of them
-- belongs to paymentsd_owner.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'orders_check_insert()', 'orders_check_update()', 'orders_check_paid()',
        'forbid_change()', 'ledger_check_txn()',
        'order_reversals_check()', 'order_reversals_check_refunded()',
        'ledger_write_payment(uuid, bigint, char)', 'ledger_write_reversal(uuid, bigint, char)',
        'reversal_open(orders)', 'housekeeping_arg_error(interval, int, text)',
        'is_visible_ascii(text)', 'durations_arg_error(interval, interval)',
        'checkout_begin_arg_error(text, text, text, text, bigint, text, text, interval, interval)',
        'checkout_finish_arg_error(uuid, text, uuid, text, bigint)',
        'finish_status(text, text, bigint, bigint)',
        'finish_failure_reason(text, text, bigint, bigint)',
        'order_json(orders, order_reversals)', 'order_json(orders)',
        'order_get(uuid)', 'order_ledger(uuid)',
        'checkout_begin(text, text, text, text, bigint, text, text, interval, interval)',
        'checkout_finish(uuid, text, uuid, text, text, bigint)',
        'webhook_apply(text, uuid, text, text)',
        'reversal_settle(uuid, text)', 'reversals_due(interval, int)',
        'purge_expired_idempotency_keys(interval, int)',
        'checkout_claim_stale(interval, int)',
        'pending_orders_due(interval, int)',
        'batch_len(anyarray)', 'batch_size(text, int[])',
        'checkout_begin_many(text[], text[], text[], text[], bigint[], text[], text[], interval[], interval[])',
        'checkout_finish_many(uuid[], text[], uuid[], text[], text[], bigint[])',
        'webhook_apply_many(text[], uuid[], text[], text[])',
        'order_get_many(uuid[])']::regprocedure[]
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO paymentsd_owner', f);
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, app', f);
    END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION
    order_json(orders, order_reversals), order_json(orders), order_get(uuid), order_ledger(uuid),
    checkout_begin(text, text, text, text, bigint, text, text, interval, interval),
    checkout_finish(uuid, text, uuid, text, text, bigint),
    webhook_apply(text, uuid, text, text),
    reversal_settle(uuid, text), reversals_due(interval, int),
    purge_expired_idempotency_keys(interval, int),
    checkout_claim_stale(interval, int),
    pending_orders_due(interval, int),
    checkout_begin_many(text[], text[], text[], text[], bigint[], text[], text[], interval[], interval[]),
    checkout_finish_many(uuid[], text[], uuid[], text[], text[], bigint[]),
    webhook_apply_many(text[], uuid[], text[], text[]),
    order_get_many(uuid[])
TO app;

COMMIT;
