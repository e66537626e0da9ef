#!/usr/bin/env python3
"""Regression: request ids of load balancers were replaced, and never reached
the provider (issue 12, item 6; SPEC.md: X-Request-Id).

An id is kept when it is 1..128 visible ASCII characters other than '"' and
'\\': HAProxy's documented unique-id format has ':' in it and was replaced, so
the proxy's logs and paymentsd's no longer matched.  And the id goes with the
request to the provider: the charge, and the cancel of a FAILED
provider_unavailable order, carry it as X-Request-Id (provider-sim logs it)."""

from harness import TAP, Paymentsd, ProviderSim, checkout, new_key, wait_until

t = TAP()
HAPROXY_ID = "7F000001:C7C2_7F000001:1F90_65F1A2B3_0001:1A2B"

sim = ProviderSim().start()
d = Paymentsd(workers=1, extra={"provider_url": sim.url, "provider_timeout": "500ms",
                                "idempotency_lock_timeout": "3s", "db_timeout": "1s",
                                "breaker_threshold": "1000000"}).start()

for rid in (HAPROXY_ID, "req-1", "a" * 128, "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"):
    r = d.get("/healthz", headers={"X-Request-Id": rid})
    t.eq(r.headers.get("x-request-id"), rid, "regression: the id %r... is kept" % rid[:20])
for rid in ('has"quote', "back\\slash", "a" * 129, "sp ace"):
    r = d.get("/healthz", headers={"X-Request-Id": rid})
    t.ok(r.headers.get("x-request-id") not in (None, rid), "the id %r... is replaced" % rid[:20])

body = {"buyer_id": "buyer-q", "seller_id": "seller-q", "amount_cents": 700, "currency": "EUR"}
rid = "lb:" + new_key("charge")
r = checkout(d, new_key("rid"), body, headers={"X-Request-Id": rid})
t.eq((r.status, r.headers.get("x-request-id")), (201, rid), "a checkout answers with the client's id")
t.ok(wait_until(lambda: "(request %s)" % rid in sim.log(), 3),
     "regression: the provider's charge carries the request's X-Request-Id")

sim.outage(True)
rid = "lb:" + new_key("cancel")
r = checkout(d, new_key("rid"), body, headers={"X-Request-Id": rid}, timeout=15)
sim.outage(False)
t.eq(r.json().get("failure_reason"), "provider_unavailable", "an outage: FAILED provider_unavailable")
t.ok(wait_until(lambda: any("cancel" in line and "(request %s)" % rid in line for line in sim.log().splitlines()), 5),
     "and its cancel carries the same X-Request-Id", sim.log()[-2000:])
t.done()
