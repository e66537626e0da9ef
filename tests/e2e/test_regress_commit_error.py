#!/usr/bin/env python3
"""Regression: an error at COMMIT was reported as success (issue 9, item 1).

Each database call runs in an implicit transaction: the SQL function's row
arrives before the COMMIT, and the COMMIT can still fail after it (a deferred
constraint trigger, a cancel, a serialization failure).  The pool kept the
first result and dropped the error that followed, so a checkout_begin that
never committed charged the buyer (three retries: three charges and no
order), and a checkout_finish that never committed answered 201.

Here deferred triggers, installed in the test database by the superuser,
raise at COMMIT for marker amounts:
- 4242: the order's INSERT (checkout_begin) never commits;
- 4343: the order's move out of PROCESSING (checkout_finish) never commits;
- a webhook event with a marker id never commits.
Required: no provider call for a begin that did not commit; 503, never
201/200 and never cached, for a finish or webhook that did not commit; once
the fault is gone, the key is recovered with the one charge."""

import os
import subprocess
import time
import urllib.parse

from harness import (DEV_SECRET, DATABASE, TAP, Paymentsd, ProviderSim, checkout, new_key, psql,
                     send_webhook, wait_until)

t = TAP()
DBNAME = urllib.parse.urlparse(DATABASE).path.lstrip("/")
BODY = {"buyer_id": "buyer-c", "seller_id": "seller-c", "currency": "EUR"}


def psql_su(sql):
    """Run sql as the superuser (PGUSER/PGHOST from the test environment)."""
    env = dict(os.environ, PGUSER=os.environ.get("PGUSER", "postgres"))
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", DBNAME, "-c", sql],
                   env=env, check=True, capture_output=True)


psql_su("""
CREATE OR REPLACE FUNCTION regress_fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'regression test: this transaction fails at COMMIT'
        USING ERRCODE = 'check_violation';
END $$;
DROP TRIGGER IF EXISTS regress_fail_begin ON orders;
DROP TRIGGER IF EXISTS regress_fail_finish ON orders;
DROP TRIGGER IF EXISTS regress_fail_webhook ON webhook_events;
CREATE CONSTRAINT TRIGGER regress_fail_begin AFTER INSERT ON orders
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.amount_cents = 4242)
    EXECUTE FUNCTION regress_fail_at_commit();
CREATE CONSTRAINT TRIGGER regress_fail_finish AFTER UPDATE ON orders
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.amount_cents = 4343 AND NEW.status <> 'PROCESSING')
    EXECUTE FUNCTION regress_fail_at_commit();
CREATE CONSTRAINT TRIGGER regress_fail_webhook AFTER INSERT ON webhook_events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.event_id LIKE 'regress-commit-%')
    EXECUTE FUNCTION regress_fail_at_commit();
""")

sim = ProviderSim().start()
d = Paymentsd(workers=1, extra={"provider_url": sim.url, "provider_timeout": "1s",
                                "idempotency_lock_timeout": "3s", "db_timeout": "500ms",
                                "webhook_secret": DEV_SECRET,
                                "outage_pending_cap_cents": "10000"}).start()

try:
    # --- checkout_begin fails at COMMIT: the provider is never called
    before = sim.stats()["charge_requests"]
    key = new_key("commit-begin")
    answers = [checkout(d, key, dict(BODY, amount_cents=4242)) for _ in range(3)]
    t.ok(all(a.status in (500, 503) for a in answers),
         "regression: a checkout_begin that failed at COMMIT is not a success", answers)
    t.eq(sim.stats()["charge_requests"], before,
         "regression: a checkout_begin that did not commit never reaches the provider")
    t.eq(psql("SELECT count(*) FROM idempotency_keys WHERE key = '%s'" % key), [["0"]],
         "nothing was stored for the key")

    # --- checkout_finish fails at COMMIT: 503, never 201, never cached
    key = new_key("commit-finish")
    r = checkout(d, key, dict(BODY, amount_cents=4343))
    t.eq((r.status, r.json().get("error", {}).get("code")), (503, "service_unavailable"),
         "regression: a checkout_finish that failed at COMMIT answers 503")
    t.eq(r.headers.get("retry-after"), "1", "with Retry-After")
    rows = psql("SELECT k.state, o.id, o.status FROM idempotency_keys k JOIN orders o ON o.id = k.order_id "
                "WHERE k.key = '%s'" % key)
    t.eq([(x[0], x[2]) for x in rows], [("in_progress", "PROCESSING")],
         "the key stays in progress, the order PROCESSING")
    oid = rows[0][1] if rows else "00000000-0000-4000-8000-000000000000"
    r = checkout(d, key, dict(BODY, amount_cents=4343))
    t.eq((r.status, r.json().get("error", {}).get("code")), (409, "idempotency_key_in_use"),
         "a retry is not answered from a cache: the key is in use")
    t.eq(sim.charge(oid).json().get("attempts"), 1, "the provider got one charge")

    # The fault goes away; after the lock timeout a retry recovers the key:
    # it asks the provider, which has the charge, and does not charge again.
    psql_su("DROP TRIGGER regress_fail_finish ON orders")
    time.sleep(3.2)
    r = checkout(d, key, dict(BODY, amount_cents=4343))
    t.ok(r.status == 201 and r.json()["order_id"] == oid and r.json()["status"] == "PAID",
         "after the lock timeout the retry finishes the same order PAID", r)
    t.eq(sim.charge(oid).json().get("attempts"), 1, "still one charge at the provider")
    t.eq(psql("SELECT count(*) FROM ledger_transactions WHERE order_id = '%s'" % oid), [["1"]],
         "one payment in the ledger")

    # --- webhook_apply fails at COMMIT: 503, never 200; a redelivery applies it
    key = new_key("commit-wh")
    sim.outage(True)
    pending = checkout(d, key, dict(BODY, amount_cents=2500, buyer_trust="trusted"), timeout=15).json()
    sim.outage(False)
    t.eq(pending.get("status"), "PENDING_PAYMENT", "an order left PENDING_PAYMENT by an outage")
    event_id = new_key("regress-commit")       # the trigger fails every regress-commit-* event
    event = {"event_id": event_id, "order_id": pending.get("order_id"), "outcome": "PAID"}
    r = send_webhook(d, event)
    t.eq(r.status, 503, "regression: a webhook_apply that failed at COMMIT answers 503, not 200")
    t.eq(psql("SELECT count(*) FROM webhook_events WHERE event_id = '%s'" % event_id), [["0"]],
         "and nothing of the event was recorded")
    psql_su("DROP TRIGGER regress_fail_webhook ON webhook_events")
    r = send_webhook(d, event)
    t.ok(r.status == 200 and r.json().get("applied") is True, "a redelivery applies it", r)
    t.eq(psql("SELECT status FROM orders WHERE id = '%s'" % pending.get("order_id")), [["PAID"]],
         "the order is PAID")
finally:
    psql_su("DROP TRIGGER IF EXISTS regress_fail_begin ON orders; "
            "DROP TRIGGER IF EXISTS regress_fail_finish ON orders; "
            "DROP TRIGGER IF EXISTS regress_fail_webhook ON webhook_events; "
            "DROP FUNCTION IF EXISTS regress_fail_at_commit()")

t.ok("did not commit" in d.log(), "the log says the call did not commit")
t.done()
