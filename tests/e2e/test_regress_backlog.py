#!/usr/bin/env python3
"""Regression: a PENDING_PAYMENT backlog drained at ~17 orders/s (issue 9,
item 11).

The housekeeper asked the provider about 20 due orders per round, once per
housekeeper_interval, so a 5 s outage under load (1,100-2,400 pending
orders) took one to two minutes to settle.  Now each round works through a
large batch with bounded concurrency, and rounds follow each other at once
while the provider is settling them.  Here 1,200 PENDING_PAYMENT orders that
the provider never received (as after an outage) must all be settled within
15 s of the provider answering, each with one charge."""

import time

from harness import TAP, Paymentsd, ProviderSim, new_key, psql, request, wait_until

t = TAP()
N = 1200
prefix = new_key("backlog")

sim = ProviderSim().start()
# Made through the app's own SQL API, as checkouts during an outage would.
psql("""DO $$
DECLARE r record;
BEGIN
    FOR i IN 1..%d LOOP
        SELECT * INTO r FROM checkout_begin('%s-' || i, repeat('0', 64), 'buyer-bl', 'seller-bl',
                                            1000 + i, 'EUR', 'trusted', '1 hour', '1 day');
        PERFORM checkout_finish(r.order_id, '%s-' || i, r.lock_token, 'unavailable', NULL, 1000000);
    END LOOP;
END $$""" % (N, prefix, prefix))
count_sql = ("SELECT count(*) FILTER (WHERE o.status = 'PENDING_PAYMENT'), count(*) FILTER (WHERE o.status = 'PAID') "
             "FROM idempotency_keys k JOIN orders o ON o.id = k.order_id WHERE k.key LIKE '%s-%%'" % prefix)
t.eq(psql(count_sql), [[str(N), "0"]], "%d PENDING_PAYMENT orders the provider never saw" % N)
time.sleep(1.1)                 # older than pending_reconcile_age

t0 = time.monotonic()
d = Paymentsd(workers=1, extra={"provider_url": sim.url, "provider_timeout": "1s",
                                "db_timeout": "1s", "idempotency_lock_timeout": "5s",
                                "housekeeper_interval": "1s", "pending_reconcile_age": "1s"}).start()
done = wait_until(lambda: psql(count_sql)[0][0] == "0", 30, 0.25)
took = time.monotonic() - t0
t.ok(done and took < 15, "regression: the backlog settles within 15 s of the provider answering "
     "(took %.1f s, %.0f orders/s)" % (took, N / took))
t.eq(psql(count_sql), [["0", str(N)]], "every one of them PAID")
rows = psql("SELECT count(*) FROM idempotency_keys k JOIN ledger_transactions l ON l.order_id = k.order_id "
            "WHERE k.key LIKE '%s-%%'" % prefix)
t.eq(rows, [[str(N)]], "with one payment each in the ledger")
# Other tests' pending orders share the database (and this housekeeper): count ours.
ours = {oid for (oid,) in psql("SELECT order_id FROM idempotency_keys WHERE key LIKE '%s-%%'" % prefix)}
charges = request(sim.port, "GET", "/admin/charges").json()["charges"]
t.eq(sorted((c["attempts"], c["status"]) for c in charges if c["order_id"] in ours).count((1, "succeeded")), N,
     "and one charge each at the provider")
t.done()
