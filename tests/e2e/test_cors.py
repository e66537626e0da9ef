#!/usr/bin/env python3
"""CORS end to end (issue 12, item 8): cors_allow_origins lets a browser
page on another origin (a Swagger UI, a shop's front end) call the API.

- a preflight from a listed origin: 204 with the route's methods, the
  headers a client sends (Idempotency-Key, Content-Type, X-Request-Id,
  webhook-*), a max age, Vary: Origin;
- the actual answers to a listed origin carry Access-Control-Allow-Origin
  and Access-Control-Expose-Headers (errors and unknown routes too);
- an origin not listed, or a look-alike, gets no grant (preflight 405);
- with the list empty (the default) nothing is added at all;
- the key is checked by paymentsd -t and changed by a reload (SIGHUP).
"""

import signal
import subprocess

from harness import PAYMENTSD, TAP, Paymentsd, ProviderSim, checkout, new_key, request, wait_until

t = TAP()
UI = "http://localhost:3000"
BODY = {"buyer_id": "buyer-cors", "seller_id": "seller-cors", "amount_cents": 1700, "currency": "EUR"}


def preflight(d, path, origin, method="POST", headers="content-type, idempotency-key"):
    return request(d.port, "OPTIONS", path, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers})


def cors_headers(r):
    return {k: v for k, v in r.headers.items() if k.startswith("access-control-")}


def words(value):
    return {w.strip().lower() for w in (value or "").split(",") if w.strip()}


sim = ProviderSim().start()
d = Paymentsd(workers=1, extra={"provider_url": sim.url,
                                "cors_allow_origins": "https://ui.example, " + UI}).start()

# --- preflight from a listed origin
r = preflight(d, "/checkout", UI)
t.eq(r.status, 204, "preflight of POST /checkout from a listed origin: 204")
t.eq(r.headers.get("access-control-allow-origin"), UI, "it echoes the origin")
t.eq(words(r.headers.get("access-control-allow-methods")), {"post"}, "the route's methods")
t.ok({"idempotency-key", "content-type", "x-request-id", "webhook-id", "webhook-timestamp",
      "webhook-signature"} <= words(r.headers.get("access-control-allow-headers")),
     "the headers a client sends are allowed", r.headers)
t.eq(r.headers.get("access-control-max-age"), "600", "a max age")
t.ok("origin" in words(r.headers.get("vary")), "Vary: Origin", r.headers)
t.ok(r.body == b"" and r.headers.get("x-request-id"), "no body, and a request id", r)
r = preflight(d, "/orders/00000000-0000-0000-0000-000000000000", "https://ui.example", "GET", "x-request-id")
t.eq((r.status, words(r.headers.get("access-control-allow-methods"))), (204, {"get", "head"}),
     "a preflight of GET /orders/{id} lists GET, HEAD")

# --- actual answers to a listed origin
r = checkout(d, new_key("cors"), BODY, headers={"Origin": UI})
t.eq((r.status, r.headers.get("access-control-allow-origin")), (201, UI),
     "POST /checkout from a listed origin: Access-Control-Allow-Origin")
t.ok({"x-request-id", "location", "idempotent-replayed", "retry-after"}
     <= words(r.headers.get("access-control-expose-headers")), "the API's headers are exposed", r.headers)
t.ok("origin" in words(r.headers.get("vary")), "and Vary: Origin")
oid = r.json()["order_id"]
r = request(d.port, "GET", "/orders/" + oid, headers={"Origin": "https://ui.example"})
t.eq((r.status, r.headers.get("access-control-allow-origin")), (200, "https://ui.example"),
     "GET /orders/{id}: granted to the other listed origin")
r = checkout(d, None, BODY, headers={"Origin": UI})
t.eq((r.status, r.headers.get("access-control-allow-origin")), (400, UI),
     "an error answer is readable by the page too")
r = request(d.port, "GET", "/nope", headers={"Origin": UI})
t.eq((r.status, r.headers.get("access-control-allow-origin")), (404, UI), "so is an unknown route's 404")
r = request(d.port, "OPTIONS", "/checkout", headers={"Origin": UI})
t.eq(r.status, 405, "OPTIONS without Access-Control-Request-Method is no preflight: 405")

# --- origins not listed get nothing but Vary
for origin in ("https://evil.example", "https://ui.example.evil.example", "https://ui.example:8443",
               "http://ui.example", "null"):
    r = preflight(d, "/checkout", origin)
    t.eq((r.status, cors_headers(r)), (405, {}), "preflight from %s: 405, no grant" % origin)
r = request(d.port, "GET", "/healthz", headers={"Origin": "https://evil.example"})
t.eq((r.status, cors_headers(r)), (200, {}), "an answer to an origin not listed: no grant")
t.ok("origin" in words(r.headers.get("vary")), "but Vary: Origin (the answer depends on it)")
r = request(d.port, "GET", "/healthz")
t.eq((cors_headers(r), r.headers.get("vary")), ({}, None), "no Origin: nothing added")

# --- the metrics see preflights as OPTIONS 2xx on their route
m = request(d.port, "GET", "/metrics").body.decode()
t.ok('paymentsd_http_requests_total{route="checkout",status="204"} 1\n' in m
     and 'paymentsd_http_request_duration_seconds_count{route="checkout",method="OPTIONS",status_class="2xx"} 1\n'
     in m, "a preflight is counted as OPTIONS 2xx (204) on its route")

# --- the default: an empty list adds nothing
e = Paymentsd(workers=1, extra={"provider_url": sim.url}).start()
r = preflight(e, "/checkout", UI)
t.eq((r.status, cors_headers(r)), (405, {}), "empty list: a preflight is not answered (405)")
r = checkout(e, new_key("cors-e"), BODY, headers={"Origin": UI})
t.eq((r.status, cors_headers(r), r.headers.get("vary")), (201, {}, None),
     "empty list: no CORS header and no Vary on an answer")

# --- paymentsd -t checks the key; a reload changes it
bad = e.conf_path + ".bad"
with open(e.conf_path) as f:
    good = f.read()
with open(bad, "w") as f:
    f.write(good + "cors_allow_origins = https://ui.example/\n")
p = subprocess.run([PAYMENTSD, "-t", "-c", bad], capture_output=True, text=True, timeout=10)
t.ok(p.returncode != 0 and "%s:%d: cors_allow_origins:" % (bad, good.count("\n") + 1) in p.stdout + p.stderr,
     "paymentsd -t refuses an origin with a path, with file:line", p.stdout + p.stderr)
old = e.workers()
e.write_conf(good + "cors_allow_origins = *\n")
e.signal(signal.SIGHUP)
t.ok(wait_until(lambda: e.workers() and not set(e.workers()) & set(old), 10), "reloaded")
r = preflight(e, "/webhooks/provider", "https://anything.example")
t.eq((r.status, r.headers.get("access-control-allow-origin")), (204, "*"),
     "after a reload to \"*\": any origin's preflight is answered, Allow-Origin *")

for s in (d, e):
    t.ok(s.stop(), "no process left behind")
sim.stop()
t.done()
