#!/usr/bin/env python3
"""Regression: no blocking resolve in a worker; a DNS change is picked up
without a reload (issue 9, item 10).

Workers and the housekeeper resolved the database's and the provider's host
names once, at start, with a blocking getaddrinfo(), and connected to that
address until a reload.  Now the names are followed with evdns: resolved
again every resolve_interval, the latest address used by the next
connection, the last good one kept while DNS fails.

Here a DNS server in this process (UDP on 127.0.0.1, named by a
resolv.conf given to paymentsd with resolv_conf) answers for the test's
two names, with addresses the test switches:

- the database name first points where nothing listens (127.0.0.3), then
  at PostgreSQL (127.0.0.1): the pool connects without a reload;
- the provider moves from 127.0.0.2 to 127.0.0.1 (two fake providers on the
  same port, both still up): checkouts reach the new one without a reload,
  idle keep-alive connections to the old one included, and the Host header
  still names the host;
- DNS stops answering: checkouts go on with the last good addresses, the
  warning is logged once, and /healthz never waits;
- a paymentsd started while DNS does not answer serves /healthz at once,
  and serves checkouts once DNS answers, without a reload."""

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import DATABASE, TAP, FakeDNS, Paymentsd, checkout, free_port, new_key, wait_until

t = TAP()
BODY = {"buyer_id": "buyer-dns", "seller_id": "seller-dns", "amount_cents": 1200, "currency": "EUR"}
DB_NAME = "db.paymentsd-dns-test"
PROVIDER_NAME = "provider.paymentsd-dns-test"


class ProviderHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # keep-alive, as paymentsd uses it

    def log_message(self, *args):
        pass

    def _send(self, status, obj):
        payload = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/charges":
            self._send(503, {"error": {"code": "unavailable", "message": "not here"}})
            return
        req = json.loads(body)
        with self.server.lock:
            self.server.charges.append(req["order_id"])
            self.server.hosts.add(self.headers.get("Host"))
        self._send(200, {"charge_id": "ch_" + req["order_id"][:8], "status": "succeeded",
                         "order_id": req["order_id"], "amount_cents": req["amount_cents"],
                         "currency": req["currency"]})

    def do_GET(self):
        # The housekeeper asks about no order of this test.
        self._send(503, {"error": {"code": "unavailable", "message": "not here"}})


class FakeProvider(ThreadingHTTPServer):
    """A provider on addr:port that accepts every charge and records it."""
    daemon_threads = True

    def __init__(self, addr, port):
        self.charges = []
        self.hosts = set()
        self.lock = threading.Lock()
        super().__init__((addr, port), ProviderHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def saw(self, order_id):
        with self.lock:
            return order_id in self.charges


def pay(d):
    """One checkout: (its order id when it was PAID, else None; the answer)."""
    r = checkout(d, new_key("dns"), BODY)
    if r.status == 201 and r.json()["status"] == "PAID":
        return r.json()["order_id"], r
    return None, r


def paid(d):
    return pay(d)[0]


def healthz_time(d):
    """Seconds /healthz took to answer 200 (None when it did not)."""
    t0 = time.monotonic()
    try:
        ok = d.get("/healthz", timeout=5).status == 200
    except OSError:
        ok = False
    return time.monotonic() - t0 if ok else None


def watch_healthz(d, seconds):
    """The slowest /healthz over `seconds` (None if one failed)."""
    worst, end = 0.0, time.monotonic() + seconds
    while time.monotonic() < end:
        took = healthz_time(d)
        if took is None:
            return None
        worst = max(worst, took)
        time.sleep(0.05)
    return worst


dns = FakeDNS()
dns.set(DB_NAME, "127.0.0.3")           # nothing listens there
dns.set(PROVIDER_NAME, "127.0.0.2")
resolv_conf = dns.resolv_conf()

port = free_port()
old = FakeProvider("127.0.0.2", port)
new = FakeProvider("127.0.0.1", port)
u = urllib.parse.urlparse(DATABASE)
db_by_name = u._replace(netloc="%s@%s:%d" % (u.netloc.rsplit("@", 1)[0], DB_NAME,
                                              u.port or 5432)).geturl()
settings = {"provider_url": "http://%s:%d" % (PROVIDER_NAME, port), "resolv_conf": resolv_conf,
            "resolve_interval": "500ms", "provider_timeout": "1s", "db_timeout": "1s",
            "idempotency_lock_timeout": "5s"}

d = Paymentsd(workers=1, database=db_by_name, extra=settings).start()
workers = d.workers()

# The database's name points nowhere, then at PostgreSQL.
r = d.get("/readyz")
t.eq(r.status, 503, "the database's name points where nothing listens: /readyz 503")
dns.set(DB_NAME, "127.0.0.1")
t.ok(wait_until(lambda: d.get("/readyz").status == 200, timeout=5),
     "regression: the database name's new address is used without a reload", d.log()[-2000:])

# The provider, by name, at its first address.
oid = paid(d)
t.ok(oid is not None and old.saw(oid) and not new.saw(oid),
     "a checkout reaches the provider at the address its name resolves to (127.0.0.2)")
t.eq(old.hosts, {"%s:%d" % (PROVIDER_NAME, port)}, "the Host header names the host, not the address")

# The provider moves; the old one stays up, with idle connections from us.
dns.set(PROVIDER_NAME, "127.0.0.1")
t0 = time.monotonic()
moved, failed = None, []
while time.monotonic() - t0 < 5:
    oid, r = pay(d)
    if oid is None:
        failed.append(r)
    elif new.saw(oid):
        moved = time.monotonic() - t0
        break
    time.sleep(0.05)
t.ok(moved is not None and moved < 2.5,
     "regression: after a DNS change, checkouts reach the provider's new address without a "
     "reload (took %s s)" % (None if moved is None else "%.2f" % moved), d.log()[-2000:])
t.eq(failed, [], "no checkout failed while the provider moved")
after = [paid(d) for _ in range(5)]
t.ok(all(o is not None and new.saw(o) and not old.saw(o) for o in after),
     "every later checkout goes to the new address (no idle connection to the old one is reused)")
t.eq(d.workers(), workers, "the same worker did it all: no reload, no restart")
t.ok("now resolves to 127.0.0.1 (was 127.0.0.2)" in d.log(), "the change is logged")

# DNS stops answering: the last good addresses stay in use.
dns.silent = True
worst = watch_healthz(d, 3.0)
t.ok(worst is not None and worst < 0.5,
     "regression: a DNS server that does not answer never stalls /healthz (slowest %s s)"
     % (None if worst is None else "%.3f" % worst))
after = [paid(d) for _ in range(3)]
t.ok(all(o is not None and new.saw(o) for o in after),
     "while DNS does not answer, checkouts use the last good addresses")
warned = [line for line in d.log().splitlines()
          if "worker" in line and "provider host %s does not resolve now" % PROVIDER_NAME in line]
t.eq(len(warned), 1, "the failure is logged once, not once per attempt")

# A paymentsd that starts while DNS does not answer.
d.stop()
d2 = Paymentsd(workers=1, database=db_by_name, extra=settings)
t0 = time.monotonic()
d2.start(wait=False)
t.ok(wait_until(d2.healthy, timeout=5) and time.monotonic() - t0 < 2,
     "started while DNS does not answer: /healthz answers at once (%.2f s)" % (time.monotonic() - t0))
t0 = time.monotonic()
r = checkout(d2, new_key("dns"), BODY)
took = time.monotonic() - t0
t.ok(r.status == 503 and took < 2.5,
     "a checkout with no database address yet: 503 within db_timeout (%.2f s)" % took, r)
worst = watch_healthz(d2, 1.5)
t.ok(worst is not None and worst < 0.5, "... and /healthz still never waits")
dns.silent = False
t.ok(wait_until(lambda: paid(d2) is not None, timeout=5, step=0.1),
     "once DNS answers, checkouts are served without a reload", d2.log()[-2000:])
d2.stop()
t.done()
