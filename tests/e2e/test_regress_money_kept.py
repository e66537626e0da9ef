#!/usr/bin/env python3
"""Regression: money kept for FAILED orders, and recoveries that gave up on a
charged order (issue 9, items 3 and 11).

Unavailable means unknown, not declined: when paymentsd answers FAILED
provider_unavailable, the provider may still capture the charge.  Before, the
late capture's webhook was logged as a conflict and nobody gave the money
back; and a client's retry that recovered a key while the provider could not
be reached charged blindly and finished the order FAILED, though the first
attempt had been charged.  Now:
- a recovered checkout asks the provider first (GET): unknown keeps the key
  in progress, a charge it holds is taken as the answer (no second charge),
  one it never saw is charged now;
- every FAILED provider_unavailable order, and every PAID event for a FAILED
  order, gets a cancel-or-refund at the provider, recorded in the ledger
  (late_capture + refund) when money moved and came back, and shown as
  "reversal" in the order;
- at rest, for every order, what the provider holds equals what the ledger
  says (the amount for PAID, nothing for FAILED), also under load with
  timeouts and declines."""

import re
import time
from concurrent.futures import ThreadPoolExecutor

from harness import (DB_TOKENS, DEV_SECRET, TAP, Paymentsd, ProviderSim, body_fingerprint, checkout,
                     db_begin_checkout,
                     free_port, new_key, psql, request, send_webhook, wait_until)

t = TAP()
UNTRUSTED = {"buyer_id": "buyer-m", "seller_id": "seller-m", "amount_cents": 2000, "currency": "EUR",
             "buyer_trust": "untrusted"}


def stale_key(prefix, body):
    """A checkout whose first request died after checkout_begin: the key is
    in progress, the order PROCESSING.  Returns (key, order id)."""
    key = new_key(prefix)
    oid = db_begin_checkout(key, body["amount_cents"], body["buyer_trust"], body["currency"],
                            body["buyer_id"], body["seller_id"], body_fingerprint(body))
    return key, oid


def charges(sim):
    r = request(sim.port, "GET", "/admin/charges")
    return {c["order_id"]: c for c in r.json()["charges"]} if r.status == 200 else {}


def reversal(oid):
    rows = psql("SELECT status FROM order_reversals WHERE order_id = '%s'" % oid)
    return rows[0][0] if rows else None


def ledger_cash(oid):
    rows = psql("SELECT coalesce(sum(CASE e.direction WHEN 'DEBIT' THEN e.amount_cents ELSE -e.amount_cents END), 0) "
                "FROM ledger_transactions t JOIN ledger_entries e ON e.txn_id = t.id "
                "WHERE t.order_id = '%s' AND e.account = 'cash'" % oid)
    return int(rows[0][0])


d_port = free_port()
sim = ProviderSim({"webhook_url": "http://127.0.0.1:%d/webhooks/provider" % d_port,
                   "webhook_delay": "300ms", "webhook_max_attempts": "20"}).start()
common = {"provider_timeout": "500ms", "idempotency_lock_timeout": "2s", "db_timeout": "500ms",
          "webhook_secret": DEV_SECRET, "outage_pending_cap_cents": "10000",
          "breaker_threshold": "1000000"}
# "down": its provider is a port where nothing listens.
down = Paymentsd(workers=1, extra=dict(common, provider_url="http://127.0.0.1:%d" % free_port())).start()
d = Paymentsd(workers=1, port=d_port, extra=dict(common, provider_url=sim.url)).start()

# --- a recovered checkout whose provider cannot be reached stays in progress
key, oid = stale_key("rec-down", UNTRUSTED)
time.sleep(2.2)
r = checkout(down, key, UNTRUSTED)
t.eq((r.status, r.json().get("error", {}).get("code")), (409, "idempotency_key_in_use"),
     "regression: a recovery that cannot reach the provider answers 409 in_use, not FAILED")
t.eq(psql("SELECT status FROM orders WHERE id = '%s'" % oid), [["PROCESSING"]],
     "regression: and the order stays PROCESSING (its first attempt may have been charged)")

# The first attempt had in fact been charged: the provider holds it.
r = request(sim.port, "POST", "/v1/charges", {"order_id": oid, "amount_cents": 2000, "currency": "EUR"},
            headers={"Idempotency-Key": oid, "Content-Type": "application/json"})
t.eq((r.status, r.json().get("status")), (200, "succeeded"), "(the first attempt's charge, captured)")
time.sleep(2.2)
r = checkout(d, key, UNTRUSTED)
t.ok(r.status == 201 and r.json().get("order_id") == oid and r.json().get("status") == "PAID",
     "regression: a recovery asks the provider first: the charge it holds makes the order PAID", r)
t.eq(charges(sim).get(oid, {}).get("attempts"), 1, "regression: no second charge was sent")

# A first attempt that never reached the provider: charged now, once.
key, oid = stale_key("rec-none", UNTRUSTED)
time.sleep(2.2)
r = checkout(d, key, UNTRUSTED)
t.ok(r.status == 201 and r.json().get("order_id") == oid and r.json().get("status") == "PAID",
     "a recovery whose charge the provider never saw charges it now", r)
t.eq(charges(sim).get(oid, {}).get("attempts"), 1, "with one charge")

# --- FAILED provider_unavailable while the provider holds the money: refunded
# (a second host whose housekeeper works every 300 ms)
hk = Paymentsd(workers=1, extra=dict(common, provider_url=sim.url, housekeeper_interval="300ms",
                                     pending_reconcile_age="1s")).start()
key, oid = stale_key("late", UNTRUSTED)
rows = psql("SELECT status, reversal FROM checkout_finish('%s', '%s', '%s', 'unavailable', NULL, 10000)"
            % (oid, key, DB_TOKENS[key]))
t.eq(rows, [["FAILED", "t"]], "FAILED provider_unavailable opens a reversal")
r = request(sim.port, "POST", "/v1/charges", {"order_id": oid, "amount_cents": 2000, "currency": "EUR"},
            headers={"Idempotency-Key": oid, "Content-Type": "application/json"})
t.eq(r.json().get("status"), "succeeded", "(the provider captures it late)")
t.ok(wait_until(lambda: reversal(oid) == "refunded", 10),
     "regression: the housekeeper has the late capture refunded", reversal(oid))
t.eq(charges(sim).get(oid, {}).get("held_cents"), 0, "the provider holds nothing for it")
kinds = psql("SELECT kind FROM ledger_transactions WHERE order_id = '%s' ORDER BY created_at" % oid)
t.eq(kinds, [["late_capture"], ["refund"]], "the ledger shows the late capture and the refund")
t.eq(ledger_cash(oid), 0, "cash nets to zero for the FAILED order")
o = request(d.port, "GET", "/orders/" + oid).json()
t.eq((o.get("status"), o.get("reversal")), ("FAILED", {"status": "refunded", "amount_cents": 2000}),
     "GET /orders shows the reversal")

# --- a PAID event for a FAILED order opens a reversal at once (not dropped)
key, oid = stale_key("evt", UNTRUSTED)
psql("SELECT * FROM checkout_finish('%s', '%s', '%s', 'declined', NULL, 10000)" % (oid, key, DB_TOKENS[key]))
r = send_webhook(d, {"event_id": new_key("evt"), "order_id": oid, "outcome": "PAID"})
t.ok(r.status == 200 and r.json().get("applied") is False, "a PAID event for a FAILED order: 200, not applied", r)
t.ok(wait_until(lambda: reversal(oid) == "canceled", 5),
     "regression: it opens a reversal, which the worker settles at once (the provider never saw it)",
     reversal(oid))

# --- under load: timeouts, declines, late captures and their webhooks
l_port = free_port()
sim2 = ProviderSim({"webhook_url": "http://127.0.0.1:%d/webhooks/provider" % l_port,
                    "webhook_delay": "1s", "hold": "1s", "webhook_max_attempts": "20", "timeout_rate": "0.4",
                    "decline_rate": "0.2", "seed": "7"}).start()
load = Paymentsd(workers=2, port=l_port,
                 extra=dict(common, provider_url=sim2.url, housekeeper_interval="300ms",
                            pending_reconcile_age="1s")).start()
prefix = new_key("load")
bodies = [dict(UNTRUSTED, amount_cents=100 + i, buyer_trust="trusted" if i % 3 == 0 else "untrusted")
          for i in range(60)]
with ThreadPoolExecutor(8) as pool:
    answers = list(pool.map(lambda i: checkout(load, "%s-%d" % (prefix, i), bodies[i], timeout=15),
                            range(len(bodies))))
t.eq(sorted({a.status for a in answers}), [201], "60 checkouts with 40 % provider timeouts: all answered 201")
oids = [a.json()["order_id"] for a in answers if a.status == 201]


def settled():
    rows = psql("SELECT count(*) FILTER (WHERE o.status IN ('PROCESSING', 'PENDING_PAYMENT')), "
                "count(*) FILTER (WHERE r.status = 'pending') FROM orders o "
                "LEFT JOIN order_reversals r ON r.order_id = o.id WHERE o.id IN (%s)"
                % ",".join("'%s'" % o for o in oids))
    return rows == [["0", "0"]]


t.ok(wait_until(settled, 30, 0.2), "every order settles: none PROCESSING or PENDING, no reversal pending")
held = charges(sim2)
rows = psql("SELECT o.id, o.status, o.amount_cents, coalesce(r.status, '') FROM orders o "
            "LEFT JOIN order_reversals r ON r.order_id = o.id WHERE o.id IN (%s)"
            % ",".join("'%s'" % o for o in oids))
wrong = []
for oid, status, amount, rev in rows:
    want = int(amount) if status == "PAID" else 0
    got = held.get(oid, {}).get("held_cents", 0)
    if got != want or ledger_cash(oid) != want:
        wrong.append((oid, status, rev, want, got, ledger_cash(oid)))
t.eq(wrong, [], "regression: at rest, for every order, the provider holds what the ledger says")
t.ok(any(r[3] for r in rows), "(some FAILED provider_unavailable orders went through a reversal: %d)"
     % sum(1 for r in rows if r[3]))
m = request(load.port, "GET", "/metrics").body.decode()
counted = sum(int(v) for v in re.findall(r'paymentsd_reversals_total\{result="(?:canceled|refunded)"\} (\d+)', m))
t.ok(counted > 0, "reversals are counted in /metrics by result (%d settled)" % counted)
t.done()
