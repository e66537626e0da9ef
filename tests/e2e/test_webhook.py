#!/usr/bin/env python3
"""POST /webhooks/provider end to end: real paymentsd, provider-sim and
PostgreSQL.

The sim's own signed webhook settles a PENDING_PAYMENT order after an
outage; replays, a concurrent burst of one event, every way a signature can
be wrong (nothing recorded), bodies that are bad after a good signature, an
unknown order (the sim retries it), a conflicting event, an event for an
order still PROCESSING, secret rotation, no secret at all, and the
`provider-sim sign` command line."""

import base64
import json
import os
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from harness import (DEV_SECRET, PAYMENTSD, PROVIDER_SIM, TAP, Paymentsd, ProviderSim, checkout,
                     db_pending_order, free_port, ledger_count, new_key, order_status, psql,
                     request, send_webhook, wait_until, webhook_headers, webhook_signature)

t = TAP()
T0 = time.monotonic()
SECOND_SECRET = "whsec_" + base64.b64encode(b"the-next-secret-during-a-rotation").decode()
TRUSTED = {"buyer_id": "buyer-w", "seller_id": "seller-w", "amount_cents": 2500, "currency": "EUR",
           "buyer_trust": "trusted"}


def event(order_id, outcome="PAID", event_id=None):
    return {"event_id": event_id or "evt_test_" + os.urandom(8).hex(), "order_id": order_id,
            "outcome": outcome}


def recorded(event_ids):
    """How many of these event ids webhook_events holds."""
    ids = ",".join("'%s'" % e.replace("'", "''") for e in event_ids)
    return int(psql("SELECT count(*) FROM webhook_events WHERE event_id IN (%s)" % ids)[0][0])


def error_code(r):
    try:
        return r.status, r.json()["error"]["code"]
    except (ValueError, KeyError):
        return r.status, None


# The sim delivers its webhooks to this paymentsd; paymentsd knows two
# secrets (the sim's and the next one of a rotation).  provider_timeout is
# long enough to send a webhook while a checkout still waits on the provider.
port = free_port()
sim = ProviderSim({"webhook_url": "http://127.0.0.1:%d/webhooks/provider" % port,
                   "webhook_delay": "2s", "webhook_backoff": "100ms", "webhook_backoff_max": "200ms",
                   "webhook_max_attempts": "4", "hold": "3s"}).start()
d = Paymentsd(workers=2, port=port, extra={
    "provider_url": sim.url, "provider_timeout": "1500ms", "idempotency_lock_timeout": "10s",
    "outage_pending_cap_cents": "10000", "breaker_threshold": "1000000",
    "webhook_secret": DEV_SECRET, "webhook_tolerance": "5m",
})
d.write_conf("".join("%s = %s\n" % kv for kv in d.settings.items())
             + "webhook_secret = %s\n" % SECOND_SECRET)
d.start()

# --- outage: a PENDING_PAYMENT order, an order still PROCESSING when its
# webhook comes, and a charge for an order paymentsd does not know
sim.outage(True)
res = {}
pending_key, processing_key = new_key("wh-pending"), new_key("wh-processing")
threads = [threading.Thread(target=lambda k=k: res.update({k: checkout(d, k, TRUSTED)}))
           for k in (pending_key, processing_key)]
for th in threads:
    th.start()
unknown = str(uuid.uuid4())
try:
    request(sim.port, "POST", "/v1/charges", timeout=0.3,
            body={"order_id": unknown, "amount_cents": 700, "currency": "EUR"},
            headers={"Content-Type": "application/json", "Idempotency-Key": unknown})
except OSError:
    pass                                    # held by the outage: expected
rows = []
wait_until(lambda: rows.extend(psql("SELECT order_id FROM idempotency_keys WHERE key = '%s'"
                                    % processing_key)) or rows, 2)
t.ok(rows and order_status(rows[0][0]) == ("PROCESSING", ""), "an order is PROCESSING while the provider is held", rows)
proc_oid = rows[0][0] if rows else str(uuid.uuid4())
r = send_webhook(d, event(proc_oid))
t.eq((r.status, r.json()), (200, {"ok": True, "duplicate": False, "applied": True}),
     "a webhook for a PROCESSING order is applied")
t.eq(order_status(proc_oid), ("PAID", ""), "the order is PAID at once")
for th in threads:
    th.join(10)
sim.outage(False)
r = res.get(processing_key)
t.ok(r is not None and r.status == 201 and r.json()["status"] == "PAID",
     "the checkout then finishes (provider unavailable) and keeps PAID", r)
t.eq(ledger_count(proc_oid), 1, "one ledger transaction for it")

r = res.get(pending_key)
t.ok(r is not None and r.status == 201 and r.json()["status"] == "PENDING_PAYMENT",
     "outage: a trusted checkout is PENDING_PAYMENT", r)
oid = r.json()["order_id"] if r is not None and r.status == 201 else str(uuid.uuid4())
t.ok(wait_until(lambda: order_status(oid) == ("PAID", ""), 10),
     "outage over: the sim's own signed webhook makes it PAID", order_status(oid))
led = d.get("/orders/%s/ledger" % oid).json()
t.eq(len(led.get("transactions", [])), 1, "with exactly one ledger transaction")
rows = psql("SELECT event_id, payload, applied FROM webhook_events WHERE order_id = '%s'" % oid)
t.ok(len(rows) == 1 and rows[0][0].startswith("evt_") and rows[0][2] == "t",
     "the event is recorded once, applied", rows)
sim_event, sim_body = (rows[0][0], rows[0][1]) if rows else ("evt_none", "{}")
t.ok(wait_until(lambda: psql("SELECT count(*) FROM webhook_events WHERE order_id = '%s'" % proc_oid)
                == [["2"]], 10), "the PROCESSING order's own sim webhook arrives later")
t.eq(psql("SELECT applied FROM webhook_events WHERE order_id = '%s' AND event_id NOT LIKE 'evt\\_test\\_%%'"
          % proc_oid), [["f"]], "and is recorded, not applied (the order was already PAID)")

# --- replays
r = send_webhook(d, sim_body, headers=webhook_headers(sim_body, msg_id=sim_event))
t.eq((r.status, r.json()), (200, {"ok": True, "duplicate": True}),
     "a second delivery of the sim's event: duplicate true")
t.eq(ledger_count(oid), 1, "the ledger is unchanged")

burst_oid = db_pending_order(new_key("wh-burst"))
body = json.dumps(event(burst_oid))
hdrs = webhook_headers(body)
with ThreadPoolExecutor(20) as pool:
    answers = list(pool.map(lambda _: send_webhook(d, body, headers=hdrs), range(20)))
kinds = sorted(json.dumps(a.json(), sort_keys=True) for a in answers)
t.ok(all(a.status == 200 for a in answers), "one event sent 20 times at once: all 200", kinds)
t.eq((kinds.count('{"applied": true, "duplicate": false, "ok": true}'),
      kinds.count('{"duplicate": true, "ok": true}')), (1, 19), "applied once, 19 duplicates")
t.eq((order_status(burst_oid), ledger_count(burst_oid)), (("PAID", ""), 1), "one ledger transaction")

# --- signatures: refused with 401, nothing recorded, the order untouched
target = db_pending_order(new_key("wh-sig"))
now = int(time.time())
bad = []


def refused(name, body, headers, code):
    r = send_webhook(d, body, headers=headers)
    t.eq(error_code(r), (401, code), "%s: 401 %s" % (name, code))
    bad.append(json.loads(body)["event_id"] if body.startswith("{") else "none")


def signed(body, secret=DEV_SECRET, msg_id="msg_1", ts=None):
    ts = now if ts is None else ts
    return {"Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": webhook_signature(secret, msg_id, ts, body)}


b = json.dumps(event(target))
refused("unsigned", b, {"Content-Type": "application/json"}, "signature_invalid")
h = signed(b)
del h["webhook-signature"]
refused("no webhook-signature", b, h, "signature_invalid")
h = signed(b)
del h["webhook-id"]
refused("no webhook-id", b, h, "signature_invalid")
refused("signed with an unknown secret", b,
        signed(b, secret="whsec_" + base64.b64encode(b"not-our-secret").decode()), "signature_invalid")
refused("a signature that is not base64", b, dict(signed(b), **{"webhook-signature": "v1,!!!"}),
        "signature_invalid")
refused("only a v2 signature", b,
        dict(signed(b), **{"webhook-signature": signed(b)["webhook-signature"].replace("v1,", "v2,")}),
        "signature_invalid")
refused("a timestamp that is not a number", b, dict(signed(b), **{"webhook-timestamp": "soon"}),
        "signature_invalid")
b = json.dumps(event(target))
refused("stale: 10 minutes old, correctly signed", b, signed(b, ts=now - 600), "signature_expired")
b = json.dumps(event(target))
refused("from the future: 10 minutes ahead, correctly signed", b, signed(b, ts=now + 600), "signature_expired")
b = json.dumps(event(target))
refused("tampered body (FAILED -> PAID)", b, signed(b.replace('"PAID"', '"FAILED"')), "signature_invalid")
b = json.dumps(event(target))
refused("tampered webhook-id", b, dict(signed(b, msg_id="msg_1"), **{"webhook-id": "msg_2"}),
        "signature_invalid")
b = json.dumps(event(target))
refused("tampered webhook-timestamp", b, dict(signed(b), **{"webhook-timestamp": str(now - 1)}),
        "signature_invalid")
t.eq(recorded(bad), 0, "none of them was recorded")
t.eq((order_status(target), ledger_count(target)), (("PENDING_PAYMENT", ""), 0), "the order is untouched")

# --- bodies that are bad after a good signature: nothing recorded
for name, body, status, code, field in [
        ("not JSON", "{nope", 400, "invalid_json", None),
        ("not an object", "[1, 2]", 400, "invalid_json", None),
        ("event_id missing", json.dumps({"order_id": target, "outcome": "PAID"}), 422, "validation_failed", "event_id"),
        ("event_id too long", json.dumps(event(target, event_id="e" * 256)), 422, "validation_failed", "event_id"),
        ("order_id not a UUID", json.dumps({"event_id": "evt_bad_1", "order_id": "123", "outcome": "PAID"}),
         422, "validation_failed", "order_id"),
        ("outcome not PAID or FAILED", json.dumps({"event_id": "evt_bad_2", "order_id": target, "outcome": "REFUNDED"}),
         422, "validation_failed", "outcome")]:
    r = send_webhook(d, body)
    err = r.json().get("error", {})
    t.eq((r.status, err.get("code"), err.get("field")), (status, code, field),
         "good signature, %s: %d %s" % (name, status, code))
t.eq(recorded(["evt_bad_1", "evt_bad_2"]), 0, "nothing recorded")

# --- within the tolerance (200 s old) it is accepted; FAILED is applied
b = json.dumps(event(target, "FAILED"))
r = send_webhook(d, b, headers=signed(b, ts=now - 200))
t.eq((r.status, r.json()), (200, {"ok": True, "duplicate": False, "applied": True}),
     "200 s old, inside webhook_tolerance: accepted")
t.eq((order_status(target), ledger_count(target)), (("FAILED", "declined"), 0),
     "a FAILED event: FAILED declined, no ledger")

# --- unknown order: 404, not recorded, and the sim retries its own
e = event(str(uuid.uuid4()))
r = send_webhook(d, e)
t.eq(error_code(r), (404, "order_not_found"), "an unknown order: 404 order_not_found")
t.eq(recorded([e["event_id"]]), 0, "not recorded (the provider will retry)")
t.ok(wait_until(lambda: sim.stats()["webhooks_failed"] >= 1, 10),
     "the sim's webhook for an order paymentsd does not know ends failed", sim.stats())
st = sim.stats()
t.ok(st["webhook_attempts"] - st["webhooks_delivered"] >= 4,
     "after 4 attempts, each answered 404 (%d attempts, %d delivered)"
     % (st["webhook_attempts"], st["webhooks_delivered"]), sim.log()[-2000:])
t.ok("for order %s: attempt 2/4, HTTP 404" % unknown in sim.log(), "the sim's log shows the retries")
t.eq(psql("SELECT count(*) FROM webhook_events WHERE order_id = '%s'" % unknown), [["0"]], "none recorded")

# --- a conflicting event: FAILED after PAID
e = event(oid, "FAILED")
r = send_webhook(d, e)
t.eq((r.status, r.json()), (200, {"ok": True, "duplicate": False, "applied": False}),
     "FAILED after PAID: 200, applied false")
t.eq((order_status(oid), ledger_count(oid)), (("PAID", ""), 1), "the order stays PAID, the ledger unchanged")
t.eq(psql("SELECT applied FROM webhook_events WHERE event_id = '%s'" % e["event_id"]), [["f"]],
     "the event is recorded as not applied")
t.ok(wait_until(lambda: "webhook conflict" in d.log(), 3), "and the conflict is logged")

# --- rotation: either secret verifies; a list with one good signature too
rot = db_pending_order(new_key("wh-rot"))
b = json.dumps(event(rot))
r = send_webhook(d, b, headers=webhook_headers(b, secret=SECOND_SECRET))
t.eq((r.status, r.json().get("applied")), (200, True), "signed with the second webhook_secret: applied")
h = webhook_headers(b, secret=DEV_SECRET)
h["webhook-signature"] = "v1,%s %s" % (base64.b64encode(b"x" * 32).decode(), h["webhook-signature"])
r = send_webhook(d, b, headers=h)
t.eq((r.status, r.json().get("duplicate")), (200, True),
     "signed with the first secret, after a wrong signature in the list: verified (a duplicate)")

# --- provider-sim sign, as a person would use it with curl
cli = db_pending_order(new_key("wh-cli"))
b = json.dumps(event(cli, event_id="evt-cli-" + os.urandom(6).hex()))
out = subprocess.run([PROVIDER_SIM, "sign", "--secret", DEV_SECRET, "--id", "msg-cli-1"],
                     input=b.encode(), capture_output=True, timeout=10)
h = {"Content-Type": "application/json"}
for line in out.stdout.decode().splitlines():
    name, _, value = line.partition(": ")
    h[name] = value
t.eq(sorted(k for k in h if k.startswith("webhook-")), ["webhook-id", "webhook-signature", "webhook-timestamp"],
     "provider-sim sign prints the three headers")
r = send_webhook(d, b, headers=h)
t.eq((r.status, r.json().get("applied"), order_status(cli)), (200, True, ("PAID", "")),
     "paymentsd accepts a webhook signed by provider-sim sign")

# --- no secret configured: every webhook refused
nosec = Paymentsd(workers=1, extra={"provider_url": sim.url}).start()
b = json.dumps(event(rot))
t.eq(error_code(send_webhook(nosec, b)), (401, "signature_invalid"),
     "no webhook_secret: a correctly signed webhook is refused 401")
t.eq(error_code(send_webhook(nosec, b, headers={"Content-Type": "application/json"})),
     (401, "signature_invalid"), "no webhook_secret: an unsigned one too")
out = subprocess.run([PAYMENTSD, "-t", "-c", nosec.conf_path], capture_output=True, text=True, timeout=10)
t.ok("no webhook_secret is set" in out.stderr, "and paymentsd -t warns about it", out.stderr)

for s in (d, nosec):
    t.ok(s.stop(), "no process left behind")
sim.stop()
t.diag("took %.1fs" % (time.monotonic() - T0))
t.done()
