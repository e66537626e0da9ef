#!/usr/bin/env python3
"""The housekeeper end to end: real paymentsd, provider-sim and PostgreSQL.

- PENDING_PAYMENT orders whose webhooks are all lost (the sim delivers to a
  dead port, one attempt) are settled by reconciliation, as the provider
  says (paid or declined), recorded as a "reconcile:<order_id>" event;
- PENDING_PAYMENT orders the provider never received get their charge sent
  again under the same key, once, and settled by its answer;
- a stale checkout the provider never saw is FAILED provider_unavailable,
  without a charge;
- while the provider is down nothing is decided, only retried, and more
  due orders than a round's batch are all asked about in turn;
- two paymentsd (two hosts) housekeeping the same database at once;
- a checkout whose worker was killed while the provider was answering is
  finished by the housekeeper with the one charge, and the client's retry
  replays it; SIGQUIT lets the housekeeper finish that step, then exit, and
  the master starts a new one."""

import json
import os
import signal
import threading
import time

from harness import (DEV_SECRET, TAP, Paymentsd, ProviderSim, alive, checkout, db_begin_checkout,
                     db_pending_order, ledger_count, new_key, order_status, psql, sim_declines,
                     wait_until)

t = TAP()
T0 = time.monotonic()
SEED, RATE = 42, 0.5
TRUSTED = {"buyer_id": "buyer-h", "seller_id": "seller-h", "amount_cents": 2500, "currency": "EUR",
           "buyer_trust": "trusted"}


def predicted(oid):
    return ("FAILED", "declined") if sim_declines(SEED, RATE, oid) else ("PAID", "")


def reconcile_event(oid):
    rows = psql("SELECT payload, applied FROM webhook_events WHERE event_id = 'reconcile:%s'" % oid)
    return (json.loads(rows[0][0]), rows[0][1]) if rows else (None, None)


# Webhooks go to port 9 (nothing listens), one attempt each: all lost.
sim = ProviderSim({"webhook_url": "http://127.0.0.1:9/webhooks/provider", "webhook_max_attempts": "1",
                   "webhook_delay": "500ms", "decline_rate": str(RATE), "seed": str(SEED),
                   "hold": "2s"}).start()
fast = {"provider_url": sim.url, "provider_timeout": "500ms", "idempotency_lock_timeout": "2s",
        "db_timeout": "500ms",
        "outage_pending_cap_cents": "10000", "breaker_threshold": "1000000",
        "webhook_secret": DEV_SECRET, "housekeeper_interval": "300ms", "pending_reconcile_age": "1s"}
# Two hosts: both housekeepers work on the same database at once.
hosts = [Paymentsd(workers=1, extra=fast).start(), Paymentsd(workers=1, extra=fast).start()]
d = hosts[0]


def logs():
    return "".join(h.log() for h in hosts)


# --- during an outage: PENDING orders (charges held by the sim, and charges
# that never reached it) and a stale checkout nobody charged.  Older
# PENDING orders than a round's batch (20) come first: while the provider
# cannot settle them they must not hide the newer ones.
sim.outage(True)
blockers = [db_pending_order(new_key("hk-old")) for _ in range(25)]
lost = []           # the sim has their charge; its webhooks go nowhere
for _ in range(3):  # until both outcomes are covered (each try: 50 %)
    keys = [new_key("hk-lost") for _ in range(2)]
    threads = [threading.Thread(target=lambda k=k: lost.append(checkout(d, k, TRUSTED))) for k in keys]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    if len({predicted(r.json()["order_id"]) for r in lost if r.status == 201}) == 2:
        break
t.ok(all(r.status == 201 and r.json()["status"] == "PENDING_PAYMENT" for r in lost),
     "outage: %d trusted checkouts are PENDING_PAYMENT" % len(lost), lost)
lost = [r.json()["order_id"] for r in lost if r.status == 201]
unsent = []         # PENDING, but the provider never received the charge
while len(unsent) < 2 or len({predicted(o) for o in unsent}) < 2:
    unsent.append(db_pending_order(new_key("hk-unsent")))
    if len(unsent) == 6:
        break
stale_key = new_key("hk-stale")
stale = db_begin_checkout(stale_key)
t.diag("orders: lost webhooks %s, never sent %s, stale %s" % (lost, unsent, stale))

t.ok(wait_until(lambda: all("GET charge of order %s answered HTTP 503" % o in logs()
                            for o in lost + unsent + [stale]), 8),
     "the housekeepers ask the provider about each of them (it answers 503), "
     "though %d older PENDING orders come first" % len(blockers))
t.ok(all(order_status(o) == ("PENDING_PAYMENT", "") for o in lost + unsent),
     "provider unavailable: the PENDING orders are left as they are",
     [order_status(o) for o in lost + unsent])
t.eq(order_status(stale), ("PROCESSING", ""), "and the stale checkout too")
t.eq(psql("SELECT state FROM idempotency_keys WHERE key = '%s'" % stale_key), [["in_progress"]],
     "its key is still in progress")

# --- outage over: everything is settled as the provider says
sim.outage(False)
t.ok(wait_until(lambda: all(order_status(o)[0] != "PENDING_PAYMENT" for o in lost + unsent + blockers), 15),
     "outage over: every PENDING order is settled by reconciliation",
     [order_status(o) for o in lost + unsent])
for o in lost:
    t.eq(order_status(o), predicted(o), "lost webhooks: order %s... is %s as the provider says"
         % (o[:8], "/".join(predicted(o)).rstrip("/")))
t.eq(sim.stats()["webhooks_delivered"], 0, "(not one sim webhook was delivered)")
for o in unsent:
    t.eq(order_status(o), predicted(o), "never sent: order %s... is %s after its charge was sent again"
         % (o[:8], "/".join(predicted(o)).rstrip("/")))
for o in lost + unsent:
    payload, applied = reconcile_event(o)
    want_resent = o in unsent
    # charge_resent says whether the host that recorded the event sent the
    # charge again; with two hosts, one may resend it and the other, asking
    # just after, record the answer: so for an unsent order either is right
    # (the resend itself is counted from the logs below).
    t.ok(payload is not None and applied == "t" and payload.get("source") == "reconciliation"
         and payload.get("outcome") == predicted(o)[0]
         and payload.get("charge_resent") in ((True, False) if want_resent else (False,))
         and payload.get("charge_id", "").startswith("ch_"),
         "order %s...: one event reconcile:<id>, applied, saying it came from reconciliation" % o[:8], payload)
    charge = sim.charge(o).json()
    if want_resent:
        # Both hosts may have sent it (same key): still one charge.
        t.ok(charge.get("status") in ("succeeded", "declined") and 1 <= charge.get("attempts", 0) <= 2,
             "order %s...: the provider holds one charge for it" % o[:8], charge)
    else:
        t.eq(charge.get("attempts"), 1, "order %s...: the provider was asked to charge once" % o[:8])
    t.eq(ledger_count(o), 1 if predicted(o)[0] == "PAID" else 0,
         "order %s...: %s ledger transaction" % (o[:8], "one" if predicted(o)[0] == "PAID" else "no"))
t.eq(psql("SELECT count(*) FROM webhook_events WHERE order_id IN (%s)"
          % ",".join("'%s'" % o for o in lost + unsent)), [[str(len(lost + unsent))]],
     "one event per order, though two housekeepers worked on them")
resent_lines = sum(logs().count("order %s is PENDING_PAYMENT but the provider never received its charge" % o)
                   for o in unsent)
t.ok(len(unsent) <= resent_lines <= 2 * len(unsent),
     "each unsent charge was sent again once per host at most (%d for %d orders)" % (resent_lines, len(unsent)))

t.ok(wait_until(lambda: order_status(stale)[0] != "PROCESSING", 8), "the stale checkout is finished")
t.eq(order_status(stale), ("FAILED", "provider_unavailable"),
     "the provider never saw it: FAILED provider_unavailable")
rows = psql("SELECT state, response_status, response_body FROM idempotency_keys WHERE key = '%s'" % stale_key)
t.ok(rows and rows[0][:2] == ["completed", "201"] and json.loads(rows[0][2])["status"] == "FAILED",
     "its key is completed with the order as it is now", rows)
r = sim.charge(stale)
t.ok(r.status == 404 or (r.json().get("status") == "canceled" and r.json().get("attempts", 0) == 0),
     "and no charge was made for it: the housekeeper never POSTs one (the provider holds at most "
     "the tombstone of the cancel that follows a FAILED provider_unavailable)", r)
t.eq(logs().count("stale checkout of order %s finished" % stale), 1, "one host finished it (SKIP LOCKED)")
t.ok("pending orders: " in logs() and "stale checkouts: " in logs(), "the housekeepers log what they did")

for h in hosts:
    t.ok(h.stop(), "no process left behind")

# --- a worker killed while the provider was answering its checkout
slow = ProviderSim({"latency": "1500ms", "decline_rate": "0", "seed": str(SEED)}).start()
d = Paymentsd(workers=1, extra={"provider_url": slow.url, "provider_timeout": "2s", "db_timeout": "400ms",
                                "idempotency_lock_timeout": "3s", "housekeeper_interval": "200ms",
                                "webhook_secret": DEV_SECRET}).start()
key = new_key("hk-crash")
result = {}


def first_try():
    try:
        result["r"] = checkout(d, key, TRUSTED)
    except OSError as e:
        result["r"] = e


th = threading.Thread(target=first_try)
th.start()
t.ok(wait_until(lambda: slow.stats()["charges"] == 1, 5), "the provider received the charge")
for w in d.workers():
    os.kill(w, signal.SIGKILL)
th.join(10)
t.ok(isinstance(result.get("r"), OSError), "the worker is killed before it could answer", result)
rows = psql("SELECT order_id FROM idempotency_keys WHERE key = '%s'" % key)
oid = rows[0][0] if rows else "00000000-0000-4000-8000-000000000000"
t.eq(order_status(oid), ("PROCESSING", ""), "the order is left PROCESSING")
keepers = d.housekeepers()
t.ok(wait_until(lambda: "checkout of order %s was left unfinished: asking the provider" % oid in d.log(), 8),
     "after idempotency_lock_timeout the housekeeper asks the provider", d.log()[-2000:])
# The provider takes 1.5 s to answer: the housekeeper is in the middle of it.
for pid in keepers:
    os.kill(pid, signal.SIGQUIT)
t.ok(wait_until(lambda: not any(alive(p) for p in keepers), 6), "SIGQUIT: the housekeeper exits")
t.eq(order_status(oid), ("PAID", ""), "after finishing the order it was working on: PAID")
t.ok("finishing the current step before exiting" in d.log(), "it said it would finish first")
t.eq(slow.charge(oid).json().get("attempts"), 1, "with the one charge the worker made (attempts == 1)")
t.eq(ledger_count(oid), 1, "one ledger transaction")
t.ok(wait_until(lambda: [p for p in d.housekeepers() if p not in keepers], 5),
     "the master starts a new housekeeper")
r = checkout(d, key, TRUSTED)
t.ok(r.status == 201 and r.headers.get("idempotent-replayed") == "true"
     and r.json()["order_id"] == oid and r.json()["status"] == "PAID",
     "the client's retry replays it: 201, Idempotent-Replayed, PAID, the same order", r)
t.eq(slow.charge(oid).json().get("attempts"), 1, "and still one charge")

keepers = d.housekeepers()
for pid in keepers:
    os.kill(pid, signal.SIGTERM)
t.ok(wait_until(lambda: not any(alive(p) for p in keepers), 3), "SIGTERM: the housekeeper exits at once")
t.ok(d.stop(), "no process left behind")
slow.stop()
sim.stop()
t.diag("took %.1fs" % (time.monotonic() - T0))
t.done()
