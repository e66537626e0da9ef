#!/usr/bin/env python3
"""The shared-memory fast path (issue 5): replays and in-progress keys
answered without PostgreSQL, answers unchanged after the cache is wiped,
the cache kept warm across a reload, and the shared circuit breaker."""

import os
import signal
import subprocess
import threading
import time

from harness import TAP, Paymentsd, ProviderSim, checkout, new_key, wait_until

t = TAP()
SRCDIR = os.environ.get("PAYMENTSD_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))
PG = os.path.join(SRCDIR, "scripts", "pg.sh")
BODY = {"buyer_id": "buyer-c", "seller_id": "seller-c", "amount_cents": 4200, "currency": "EUR"}


def metric(d, name):
    for line in d.get("/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


sim = ProviderSim({"latency": "0ms"}).start()
d = Paymentsd(workers=2, extra={"provider_url": sim.url, "provider_timeout": "1s",
                                "idempotency_lock_timeout": "5s", "db_timeout": "1s", "shm_cache_size": "1m",
                                "breaker_threshold": "3", "breaker_cooldown": "2s"}).start()

# completed responses, then PostgreSQL stopped: replays still answered
keys = [new_key("c%d" % i) for i in range(5)]
first = {k: checkout(d, k, dict(BODY, amount_cents=4200 + i)) for i, k in enumerate(keys)}
t.ok(all(r.status == 201 for r in first.values()), "five checkouts")
hits = metric(d, 'paymentsd_shm_cache_lookups_total{result="hit"}')
try:
    subprocess.run([PG, "stop"], check=True, timeout=60, capture_output=True)
    t.eq(d.get("/readyz").status, 503, "PostgreSQL is down")
    again = {k: checkout(d, k, dict(BODY, amount_cents=4200 + i)) for i, k in enumerate(keys)}
    t.ok(all(again[k].status == 201 and again[k].body == first[k].body for k in keys),
         "replays are answered, byte-identical, while PostgreSQL is down")
    t.ok(all(again[k].headers.get("idempotent-replayed") == "true" for k in keys),
         "with Idempotent-Replayed: true")
    t.ok(all(again[k].headers.get("location") == first[k].headers.get("location") for k in keys),
         "and the same Location")
    r = checkout(d, keys[0], dict(BODY, amount_cents=1))
    t.eq((r.status, r.json()["error"]["code"]), (409, "idempotency_key_reused"),
         "another body on a cached key: 409 reused without PostgreSQL")
    t.eq(metric(d, 'paymentsd_shm_cache_lookups_total{result="hit"}'), hits + 6, "six cache hits counted")

    # a reload keeps the cache (it belongs to the master)
    old = d.workers()
    d.signal(signal.SIGHUP)
    t.ok(wait_until(lambda: len(d.workers()) == 2 and not set(d.workers()) & set(old), 10),
         "reload replaced the workers")
    r = checkout(d, keys[1], dict(BODY, amount_cents=4201))
    t.eq((r.status, r.body), (201, first[keys[1]].body), "after a reload the cache is still warm")
finally:
    subprocess.run([PG, "start"], check=True, timeout=120, capture_output=True)
t.ok(wait_until(lambda: d.get("/readyz").status == 200, 15), "PostgreSQL is back")

# a restart wipes the cache: every answer is the same, from PostgreSQL
d.stop()
d.start()
t.ok(all(checkout(d, k, dict(BODY, amount_cents=4200 + i)).body == first[k].body
         for i, k in enumerate(keys)), "after a restart (cache wiped) every answer is the same")
t.ok(metric(d, 'paymentsd_idempotent_replays_total{source="db"}') == 5,
     "those came from PostgreSQL")
t.ok(metric(d, 'paymentsd_idempotent_replays_total{source="cache"}') == 0, "not from the new cache")
r = checkout(d, keys[2], dict(BODY, amount_cents=4202))
t.eq(r.body, first[keys[2]].body, "and the next replay is cached again")
t.eq(metric(d, 'paymentsd_idempotent_replays_total{source="cache"}'), 1, "from the cache")

# a reload that shortens idempotency_ttl: cached answers expire with their
# keys.  The TTL cannot go under a minute, and cached answers expire a
# minute early (clock skew): at 1m the cache must no longer answer, and the
# replay comes from PostgreSQL, where the key is still alive.
key = new_key("ttl")
first_ttl = checkout(d, key, BODY)
t.eq(checkout(d, key, BODY).headers.get("idempotent-replayed"), "true", "a cached key")
d.settings["idempotency_ttl"] = "1m"
d.write_conf()
old = d.workers()
d.signal(signal.SIGHUP)
t.ok(wait_until(lambda: len(d.workers()) == 2 and not set(d.workers()) & set(old), 10), "reloaded with a 1m TTL")
from_db = metric(d, 'paymentsd_idempotent_replays_total{source="db"}')
from_cache = metric(d, 'paymentsd_idempotent_replays_total{source="cache"}')
r = checkout(d, key, BODY)
t.eq((r.status, r.body, r.headers.get("idempotent-replayed")), (201, first_ttl.body, "true"),
     "the same answer, replayed")
t.ok(metric(d, 'paymentsd_idempotent_replays_total{source="db"}') == from_db + 1
     and metric(d, 'paymentsd_idempotent_replays_total{source="cache"}') == from_cache,
     "by PostgreSQL: under the shorter TTL the cache does not answer for the key")
d.settings["idempotency_ttl"] = "24h"
d.write_conf()
old = d.workers()
d.signal(signal.SIGHUP)
t.ok(wait_until(lambda: len(d.workers()) == 2 and not set(d.workers()) & set(old), 10), "TTL back to 24h")

# a key running on this host: 409 in use from the marker
slow = ProviderSim({"latency": "1500ms"}).start()
s = Paymentsd(workers=2, extra={"provider_url": slow.url, "provider_timeout": "3s",
                                "idempotency_lock_timeout": "5s", "db_timeout": "800ms"}).start()
key = new_key("busy")
res = {}
th = threading.Thread(target=lambda: res.update(r=checkout(s, key, BODY)))
th.start()
time.sleep(0.4)
r = checkout(s, key, BODY)
t.eq((r.status, r.json()["error"]["code"], r.headers.get("retry-after")), (409, "idempotency_key_in_use", "1"),
     "a key in progress here: 409 idempotency_key_in_use")
t.eq(metric(s, 'paymentsd_shm_cache_lookups_total{result="hit"}'), 1, "answered by the cache")
th.join(10)
t.eq(res["r"].status, 201, "the first request finishes")
t.eq(checkout(s, key, BODY).body, res["r"].body, "then its response is replayed")
s.stop()
slow.stop()

# the shared circuit breaker: open after breaker_threshold failures
sim.outage(True)
try:
    took = []
    for i in range(3):
        t0 = time.monotonic()
        checkout(d, new_key("brk"), dict(BODY, buyer_trust="trusted"))
        took.append(time.monotonic() - t0)
    t.ok(all(x >= 0.9 for x in took), "the first failures wait for provider_timeout %s" % took)
    t.eq(metric(d, "paymentsd_provider_circuit_breaker_state"), 1, "then the breaker is open")
    t0 = time.monotonic()
    answers = [checkout(d, new_key("brk"), dict(BODY, buyer_trust="trusted")).json() for _ in range(5)]
    fast = time.monotonic() - t0
    t.ok(fast < 0.5, "while open, checkouts stop waiting for the timeout (5 in %.3fs)" % fast)
    t.ok(all(a["status"] == "PENDING_PAYMENT" for a in answers), "and take the outage path")
    t.ok(metric(d, 'paymentsd_provider_calls_total{result="breaker_open"}') >= 5, "skips are counted")
    t.ok("provider circuit breaker: closed -> open" in d.log(), "the log says it opened")
finally:
    sim.outage(False)
time.sleep(2.2)
r = checkout(d, new_key("brk"), BODY).json()
t.eq(r["status"], "PAID", "after the cool-down a probe reaches the provider")
t.eq(metric(d, "paymentsd_provider_circuit_breaker_state"), 0, "and closes the breaker")

t.ok(d.stop(), "no process left behind")
sim.stop()
t.done()
