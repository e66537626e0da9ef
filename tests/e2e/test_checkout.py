#!/usr/bin/env python3
"""POST /checkout end to end: real paymentsd, provider-sim and PostgreSQL.

The seed demo, every row of SPEC.md's validation table (each followed by the
same key being accepted as new: nothing was stored), the outage policy,
concurrency on one key, many keys at once, a worker killed mid-checkout,
and the database stopped mid-run."""

import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from harness import (DEV_SECRET, TAP, Paymentsd, ProviderSim, checkout, new_key, psql,
                     wait_until)

t = TAP()
SRCDIR = os.environ.get("PAYMENTSD_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))

BODY = {"buyer_id": "buyer-1", "seller_id": "seller-1", "amount_cents": 5000, "currency": "EUR"}

sim = ProviderSim({"latency": "20ms"}).start()
d = Paymentsd(workers=2, extra={
    "provider_url": sim.url, "provider_timeout": "500ms", "max_body_size": "1k",
    "outage_pending_cap_cents": "10000", "idempotency_lock_timeout": "3s", "db_timeout": "1s",
    "webhook_secret": DEV_SECRET, "breaker_threshold": "1000000",
}).start()

# --- the seed demo
key = new_key("demo")
r1 = checkout(d, key, BODY)
o = r1.json()
t.eq((r1.status, o["status"], o["ready_to_ship"]), (201, "PAID", True), "a checkout is PAID")
t.eq(r1.headers.get("location"), "/orders/" + o["order_id"], "Location is /orders/{id}")
t.ok(all(k in o for k in ("order_id", "amount_cents", "currency", "buyer_id", "seller_id")),
     "the order object has its fields", o)
t.ok("failure_reason" not in o, "no failure_reason unless FAILED")
r2 = checkout(d, key, {"currency": "EUR", "amount_cents": 5000, "seller_id": "seller-1",
                       "buyer_id": "buyer-1", "buyer_trust": "untrusted"})
t.eq((r2.status, r2.body), (r1.status, r1.body), "the same key and body: the same status, byte-identical body")
t.eq(r2.headers.get("idempotent-replayed"), "true", "with Idempotent-Replayed: true")
r3 = checkout(d, '"%s"' % key, BODY)
t.eq((r3.status, r3.body), (201, r1.body), "the RFC 8941 quoted key names the same key")
r = checkout(d, key, dict(BODY, amount_cents=5001))
t.eq((r.status, r.json()["error"]["code"]), (409, "idempotency_key_reused"),
     "the same key with another body: 409 idempotency_key_reused")
t.eq(sim.charge(o["order_id"]).json().get("attempts"), 1, "the provider was charged once")

r = d.get("/orders/" + o["order_id"])
g = r.json()
t.ok(r.status == 200 and g["status"] == "PAID" and g["buyer_trust"] == "untrusted"
     and "created_at" in g and "updated_at" in g, "GET /orders/{id}", g)
r = d.get("/orders/%s/ledger" % o["order_id"])
led = r.json()
entries = sorted((e["account"], e["direction"], e["amount_cents"], e["currency"])
                 for tx in led["transactions"] for e in tx["entries"])
t.eq((r.status, len(led["transactions"]), entries),
     (200, 1, [("cash", "DEBIT", 5000, "EUR"), ("seller_payable", "CREDIT", 5000, "EUR")]),
     "GET /orders/{id}/ledger: DEBIT cash, CREDIT seller_payable")
rows = psql("SELECT e.account, e.direction, e.amount_cents FROM ledger_entries e JOIN "
            "ledger_transactions t ON t.id = e.txn_id WHERE t.order_id = '%s' ORDER BY e.direction DESC"
            % o["order_id"])
t.eq(rows, [["cash", "DEBIT", "5000"], ["seller_payable", "CREDIT", "5000"]],
     "the README's inspection query shows the ledger")
t.eq(d.get("/orders/00000000-0000-4000-8000-000000000000").status, 404, "unknown order: 404")
t.eq(d.get("/orders/not-a-uuid").json()["error"]["code"], "order_not_found", "malformed id: 404 order_not_found")
t.eq(d.get("/orders/%s/nope" % o["order_id"]).status, 404, "unknown sub-resource: 404")

# --- SPEC.md's validation table; after each, the same key is still new
CT = {"Content-Type": "application/json"}
cases = [
    ("key missing", None, json.dumps(BODY), CT, 400, "idempotency_key_missing", None),
    ("key empty", "", json.dumps(BODY), CT, 400, "idempotency_key_invalid", None),
    ("key too long", "k" * 256, json.dumps(BODY), CT, 400, "idempotency_key_invalid", None),
    ("key with a space", "a b", json.dumps(BODY), CT, 400, "idempotency_key_invalid", None),
    ("wrong content type", "ok", json.dumps(BODY), {"Content-Type": "text/plain"}, 415,
     "unsupported_media_type", None),
    ("no content type", "ok", json.dumps(BODY), {}, 415, "unsupported_media_type", None),
    ("body too large", "ok", json.dumps(dict(BODY, pad="x" * 2000)), CT, 413, "payload_too_large", None),
    ("not JSON", "ok", "{nope", CT, 400, "invalid_json", None),
    ("not an object", "ok", "[1,2]", CT, 400, "invalid_json", None),
    ("a member twice", "ok", json.dumps(BODY)[:-1] + ', "amount_cents": 1}', CT, 400, "invalid_json", None),
    ("unknown field", "ok", json.dumps(dict(BODY, tip=5)), CT, 422, "validation_failed", "tip"),
    ("float amount", "ok", json.dumps(BODY).replace("5000", "5000.0"), CT, 422, "validation_failed", "amount_cents"),
    ("exponent amount", "ok", json.dumps(BODY).replace("5000", "5e3"), CT, 422, "validation_failed", "amount_cents"),
    ("string amount", "ok", json.dumps(dict(BODY, amount_cents="5000")), CT, 422, "validation_failed", "amount_cents"),
    ("zero amount", "ok", json.dumps(dict(BODY, amount_cents=0)), CT, 422, "validation_failed", "amount_cents"),
    ("null buyer", "ok", json.dumps(dict(BODY, buyer_id=None)), CT, 422, "validation_failed", "buyer_id"),
    ("bad currency", "ok", json.dumps(dict(BODY, currency="XXX")), CT, 422, "validation_failed", "currency"),
    ("bad trust", "ok", json.dumps(dict(BODY, buyer_trust="yes")), CT, 422, "validation_failed", "buyer_trust"),
]
for name, k, body, headers, status, code, field in cases:
    fresh = new_key("v")
    h = dict(headers)
    if k is not None:
        h["Idempotency-Key"] = fresh if k == "ok" else k
    r = d.post("/checkout", body=body, headers=h)
    err = r.json().get("error", {}) if r.headers.get("content-type") == "application/json" else {}
    t.eq((r.status, err.get("code"), err.get("field")), (status, code, field), "%s: %d %s" % (name, status, code))
    if k == "ok":
        r = checkout(d, fresh, BODY)
        t.ok(r.status == 201 and "idempotent-replayed" not in r.headers,
             "%s: then the same key is accepted as new" % name, r)
# http.client repeats a header only through putheader()
conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
conn.putrequest("POST", "/checkout")
conn.putheader("Content-Type", "application/json")
conn.putheader("Idempotency-Key", "dup-a")
conn.putheader("Idempotency-Key", "dup-a")
payload = json.dumps(BODY).encode()
conn.putheader("Content-Length", str(len(payload)))
conn.endheaders(payload)
resp = conn.getresponse()
t.eq((resp.status, json.loads(resp.read())["error"]["code"]), (400, "idempotency_key_invalid"),
     "the key header sent twice: idempotency_key_invalid")
conn.close()

# --- outage policy
sim.outage(True)
try:
    t0 = time.monotonic()
    r = checkout(d, new_key("o"), dict(BODY, buyer_trust="trusted", amount_cents=9999))
    t.eq((r.status, r.json()["status"]), (201, "PENDING_PAYMENT"), "outage: trusted under the cap -> PENDING_PAYMENT")
    t.ok(time.monotonic() - t0 < 2, "after about provider_timeout (%.2fs)" % (time.monotonic() - t0))
    r = checkout(d, new_key("o"), dict(BODY, buyer_trust="trusted", amount_cents=10000)).json()
    t.eq((r["status"], r.get("failure_reason")), ("FAILED", "provider_unavailable"),
         "outage: trusted at the cap -> FAILED provider_unavailable")
    r = checkout(d, new_key("o"), dict(BODY, amount_cents=100)).json()
    t.eq((r["status"], r.get("failure_reason"), r["ready_to_ship"]), ("FAILED", "provider_unavailable", False),
         "outage: untrusted -> FAILED provider_unavailable")
finally:
    sim.outage(False)

# --- 50 concurrent requests with one key
slow_sim = ProviderSim({"latency": "300ms"}).start()
d2 = Paymentsd(workers=2, extra={"provider_url": slow_sim.url, "provider_timeout": "2s",
                                 "idempotency_lock_timeout": "5s", "db_timeout": "1s"}).start()
key = new_key("race")
with ThreadPoolExecutor(50) as pool:
    answers = list(pool.map(lambda _: checkout(d2, key, BODY), range(50)))
orders = {a.json()["order_id"] for a in answers if a.status == 201}
others = {(a.status, a.json()["error"]["code"]) for a in answers if a.status != 201}
t.eq(len(orders), 1, "50 racing requests, one key: one order")
t.ok(others <= {(409, "idempotency_key_in_use")}, "every other answer is 409 idempotency_key_in_use", others)
t.ok(all(a.headers.get("retry-after") == "1" for a in answers if a.status == 409), "with Retry-After: 1")
oid = orders.pop() if orders else "00000000-0000-4000-8000-000000000000"
t.eq(slow_sim.charge(oid).json().get("attempts"), 1, "and one provider charge")
t.eq(psql("SELECT count(*) FROM idempotency_keys WHERE key = '%s'" % key), [["1"]], "one key row")

# --- a worker killed between checkout_begin and checkout_finish
def _try(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the connection dies with the worker
        return e


key = new_key("crash")
result = {}
th = threading.Thread(target=lambda: result.update(r=_try(lambda: checkout(d2, key, BODY))))
th.start()
time.sleep(0.15)
for w in d2.workers():
    os.kill(w, signal.SIGKILL)
th.join(10)
t.ok(isinstance(result.get("r"), Exception), "the client loses its connection with the worker", result)
t.ok(wait_until(lambda: d2.healthy(), 3), "new workers serve")
r = checkout(d2, key, BODY)
t.eq((r.status, r.json().get("error", {}).get("code")), (409, "idempotency_key_in_use"),
     "a retry before idempotency_lock_timeout: still in use")
rows = psql("SELECT order_id, o.status FROM idempotency_keys k JOIN orders o ON o.id = k.order_id WHERE k.key = '%s'" % key)
t.eq(rows[0][1] if rows else None, "PROCESSING", "the order waits in PROCESSING")
time.sleep(5.2)
r = checkout(d2, key, BODY)
t.ok(r.status == 201 and r.json()["order_id"] == rows[0][0] and r.json()["status"] == "PAID",
     "after the lock timeout a retry finishes the same order", r)
t.eq(slow_sim.charge(rows[0][0]).json().get("status"), "succeeded", "the provider knows one charge for it")
t.eq(checkout(d2, key, BODY).body, r.body, "and later retries replay it")

# --- a few thousand distinct keys at high concurrency
prefix = new_key("bulk")
n = 2000
t0 = time.monotonic()
with ThreadPoolExecutor(32) as pool:
    answers = list(pool.map(lambda i: checkout(d, "%s-%d" % (prefix, i), dict(BODY, amount_cents=100 + i)),
                            range(n)))
took = time.monotonic() - t0
t.eq(sorted({a.status for a in answers}), [201], "%d distinct keys, 32 at a time: all 201 (%.0f/s)" % (n, n / took))
rows = psql("SELECT count(DISTINCT k.order_id), count(*) FILTER (WHERE o.status = 'PROCESSING'), "
            "count(*) FILTER (WHERE o.status = 'PAID') FROM idempotency_keys k JOIN orders o ON o.id = k.order_id "
            "WHERE k.key LIKE '%s-%%'" % prefix)
t.eq(rows, [[str(n), "0", str(n)]], "one order per key, none left PROCESSING, all PAID")
rows = psql("SELECT count(*) FROM (SELECT t.id FROM ledger_transactions t JOIN ledger_entries e ON e.txn_id = t.id "
            "GROUP BY t.id HAVING sum(CASE WHEN e.direction = 'DEBIT' THEN e.amount_cents ELSE 0 END) <> "
            "sum(CASE WHEN e.direction = 'CREDIT' THEN e.amount_cents ELSE 0 END)) x")
t.eq(rows, [["0"]], "the ledger is balanced")

# --- the database stopped mid-run: 503 quickly; started again: checkouts succeed
pg = os.path.join(SRCDIR, "scripts", "pg.sh")
try:
    subprocess.run([pg, "stop"], check=True, timeout=60, capture_output=True)
    t0 = time.monotonic()
    r = checkout(d, new_key("db"), BODY, timeout=10)
    took = time.monotonic() - t0
    t.eq((r.status, r.json()["error"]["code"]), (503, "service_unavailable"), "database down: 503 service_unavailable")
    t.ok(took < 2, "quickly, not a hang (%.2fs)" % took)
    t.ok(r.headers.get("retry-after") is not None, "with Retry-After")
    t.eq(d.get("/readyz").status, 503, "/readyz says 503")
finally:
    subprocess.run([pg, "start"], check=True, timeout=120, capture_output=True)
key = new_key("db")
t.ok(wait_until(lambda: checkout(d, key, BODY).status == 201, 15),
     "database back: checkouts succeed without restarting paymentsd")

# --- /metrics: Prometheus text that parses, and counters that moved
r = d.get("/metrics")
t.ok(r.status == 200 and r.headers.get("content-type", "").startswith("text/plain; version=0.0.4"),
     "/metrics is Prometheus text", r.headers)
series = {}
bad = []
for line in r.body.decode().splitlines():
    if line.startswith("# HELP ") or line.startswith("# TYPE "):
        continue
    m = re.fullmatch(r'((?:paymentsd|process)_[a-z_]+)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (-?[0-9.e+]+)', line)
    if m is None:
        bad.append(line)
    else:
        series[m.group(1) + (m.group(2) or "")] = float(m.group(4))
t.eq(bad, [], "every /metrics line parses")
t.ok(series.get('paymentsd_http_requests_total{route="checkout",status="201"}', 0) >= 2000,
     "requests by route and status count the checkouts")
t.ok(series.get('paymentsd_checkouts_total{outcome="paid"}', 0) >= 2000, "checkouts by outcome")
t.ok(series.get('paymentsd_checkouts_total{outcome="pending_payment"}', 0) >= 1, "pending outcomes counted")
t.ok(series.get('paymentsd_idempotent_replays_total{source="cache"}', 0) >= 1, "replays counted")
t.ok(series.get('paymentsd_provider_calls_total{result="unavailable"}', 0) >= 3, "provider calls by result")
t.ok(series.get('paymentsd_http_request_duration_seconds_count{route="checkout",method="POST",'
                'status_class="2xx"}', 0) >= 2000
     and 'paymentsd_http_request_duration_seconds_bucket{route="checkout",method="POST",status_class="2xx",'
         'le="+Inf"}' in series,
     "a latency histogram per route, method and status class")
t.ok("paymentsd_db_pool_connections" in series, "database pool gauges")
before = series.get('paymentsd_http_requests_total{route="healthz",status="200"}', 0)
for _ in range(5):
    d.get("/healthz")


def healthz_count():
    for line in d.get("/metrics").body.decode().splitlines():
        if line.startswith('paymentsd_http_requests_total{route="healthz",status="200"}'):
            return float(line.split()[-1])
    return None


# A request is counted when its answer is written out (on_complete), which
# the client may see first; /metrics may come from the other worker.
wait_until(lambda: healthz_count() == before + 5, 2)
t.eq(healthz_count(), before + 5, "counters move as requests are made")

for s in (d, d2):
    t.ok(s.stop(), "no process left behind")
sim.stop()
slow_sim.stop()
t.done()
