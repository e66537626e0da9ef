#!/usr/bin/env python3
"""Group commit end to end: calls of one kind that wait in a worker's queue go
to PostgreSQL as one statement and one commit (issue 10).

One worker with one database connection and a burst of concurrent requests,
so that batches form.  Every request is answered as if it had run alone:
- distinct new keys: all 201, in fewer statements than calls;
- one batch holding the same key twice, a key reused with another body, a
  replay and a key in progress: each gets its own right answer;
- a batch whose COMMIT fails (a deferred trigger raising for one marker
  amount): no item of it is answered 201, none reaches the provider, and
  their retries succeed once the fault is gone."""

import os
import re
import subprocess
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from harness import (DATABASE, TAP, body_fingerprint, Paymentsd, ProviderSim, checkout, db_begin_checkout, new_key,
                     psql, request)

t = TAP()
DBNAME = urllib.parse.urlparse(DATABASE).path.lstrip("/")
BODY = {"buyer_id": "buyer-g", "seller_id": "seller-g", "amount_cents": 1200, "currency": "EUR"}


def psql_su(sql):
    env = dict(os.environ, PGUSER=os.environ.get("PGUSER", "postgres"))
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", DBNAME, "-c", sql],
                   env=env, check=True, capture_output=True)


def counters(d):
    m = request(d.port, "GET", "/metrics").body.decode()
    get = lambda name: int(re.search(r"^%s (\d+)" % name, m, re.M).group(1))  # noqa: E731
    return get("paymentsd_db_statements_total"), get("paymentsd_db_calls_total")


def burst(d, reqs):
    """Send every (key, body) at once; answers in order."""
    gate = threading.Barrier(len(reqs))

    def one(kb):
        gate.wait(5)
        return checkout(d, kb[0], kb[1], timeout=20)
    with ThreadPoolExecutor(len(reqs)) as pool:
        return list(pool.map(one, reqs))


sim = ProviderSim({"latency": "20ms"}).start()
d = Paymentsd(workers=1, extra={"provider_url": sim.url, "provider_timeout": "2s", "db_timeout": "2s",
                                "idempotency_lock_timeout": "10s", "db_pool_size": "1",
                                "db_batch_max": "64"}).start()

# --- distinct new keys
s0, c0 = counters(d)
answers = burst(d, [(new_key("gc"), dict(BODY, amount_cents=1000 + i)) for i in range(48)])
s1, c1 = counters(d)
t.eq(sorted({a.status for a in answers}), [201], "48 concurrent new keys: all 201")
t.ok(len({a.json()["order_id"] for a in answers}) == 48, "48 orders")
t.ok(c1 - c0 >= 96 and (s1 - s0) < (c1 - c0),
     "group commit: %d calls in %d statements" % (c1 - c0, s1 - s0))

# --- one batch: same key twice, a reused key, a replay, a key in progress
same, reused, replayed, busy = new_key("gc-same"), new_key("gc-reused"), new_key("gc-replay"), new_key("gc-busy")
first = checkout(d, replayed, BODY)
db_begin_checkout(busy, BODY["amount_cents"], "untrusted", "EUR", "buyer-g", "seller-g",
                  body_fingerprint(BODY))
fill = [(new_key("gc-fill"), BODY) for _ in range(20)]
reqs = [(same, BODY), (same, BODY), (reused, BODY), (reused, dict(BODY, amount_cents=999)),
        (replayed, BODY), (busy, BODY)] + fill
answers = burst(d, reqs)
a_same = answers[0:2]
ok_same = sorted(a.status for a in a_same)
orders_same = {a.json().get("order_id") for a in a_same if a.status == 201}
t.ok(len(orders_same) == 1 and (ok_same == [201, 201] or
     (ok_same == [201, 409] and any(a.json().get("error", {}).get("code") == "idempotency_key_in_use"
                                    for a in a_same))),
     "the same key twice in a burst: one order (the other in use or a replay of it)", a_same)
codes = sorted((a.status, a.json().get("error", {}).get("code")) for a in answers[2:4])
t.ok(codes in ([(201, None), (409, "idempotency_key_reused")],),
     "a key reused with another body in the same burst: 201 and 409 reused", codes)
r = answers[4]
t.ok(r.status == 201 and r.body == first.body and r.headers.get("idempotent-replayed") == "true",
     "a replay in the burst: the byte-identical answer", r)
r = answers[5]
t.eq((r.status, r.json().get("error", {}).get("code")), (409, "idempotency_key_in_use"),
     "a key in progress in the burst: 409 in use")
t.eq(sorted({a.status for a in answers[6:]}), [201], "and the new keys around them: 201")

# --- a batch whose COMMIT fails
psql_su("""
CREATE OR REPLACE FUNCTION regress_fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'regression test: this transaction fails at COMMIT' USING ERRCODE = 'serialization_failure'; END $$;
CREATE OR REPLACE FUNCTION regress_slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$;
DROP TRIGGER IF EXISTS regress_fail_batch ON orders;
DROP TRIGGER IF EXISTS regress_slow_batch ON orders;
CREATE CONSTRAINT TRIGGER regress_fail_batch AFTER INSERT ON orders
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.amount_cents = 4242)
    EXECUTE FUNCTION regress_fail_at_commit();
CREATE TRIGGER regress_slow_batch BEFORE INSERT ON orders
    FOR EACH ROW WHEN (NEW.amount_cents = 4343) EXECUTE FUNCTION regress_slow();
""")
try:
    # A slow call holds the one connection; the burst queues behind it and
    # goes as one batch, with the marker item in it.
    slow = {}
    th = threading.Thread(target=lambda: slow.update(r=checkout(d, new_key("gc-slow"),
                                                                 dict(BODY, amount_cents=4343))))
    th.start()
    time.sleep(0.15)
    before = sim.stats()["charge_requests"]
    reqs = [(new_key("gc-bad"), dict(BODY, amount_cents=4242))] + \
           [(new_key("gc-nb"), dict(BODY, amount_cents=1300 + i)) for i in range(30)]
    answers = burst(d, reqs)
    th.join(10)
    t.eq(slow.get("r") and slow["r"].status, 201, "(the slow call before the batch succeeds)")
    t.ok(answers[0].status == 503, "the marker item of a failed batch: 503", answers[0])
    failed = [(kb, a) for kb, a in zip(reqs[1:], answers[1:]) if a.status != 201]
    t.ok(all(a.status == 503 for _, a in failed),
         "its neighbours in that batch are 503 too, never 201 (%d of 30)" % len(failed),
         [a for _, a in failed][:3])
    t.eq(len(failed), 30, "(the marker shared one batch with all of them)")
    charged = sim.stats()["charge_requests"] - before - 1     # the slow one
    t.eq(charged, 30 - len(failed), "no item of a failed batch reached the provider")
    keys = ",".join("'%s'" % kb[0] for kb, _ in failed)
    if failed:
        t.eq(psql("SELECT count(*) FROM idempotency_keys WHERE key IN (%s)" % keys), [["0"]],
             "and nothing of them was stored")
    retried = [checkout(d, kb[0], kb[1]) for kb, _ in failed]
    t.ok(all(a.status == 201 for a in retried), "their retries succeed", retried[:3])
finally:
    psql_su("DROP TRIGGER IF EXISTS regress_fail_batch ON orders; "
            "DROP TRIGGER IF EXISTS regress_slow_batch ON orders; "
            "DROP FUNCTION IF EXISTS regress_fail_at_commit(); DROP FUNCTION IF EXISTS regress_slow()")
t.done()
