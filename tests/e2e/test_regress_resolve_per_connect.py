#!/usr/bin/env python3
"""Regression: a blocking resolve on every connect (cf3e207 for the
database, e285e41 for the provider, both without a test; b1ae1fd has
replaced them with evdns).

Given a host name, libpq resolves it with a blocking getaddrinfo() in every
PQconnectStart, and evhttp without a DNS base does the same for every new
connection: each reconnect to the database and each new connection to the
provider stalled the whole worker for as long as the system resolver took.
Now the names are followed by the process's own resolver (evdns, on the
loop) and connections are made to the numeric address.

Here paymentsd runs with slow_getaddrinfo.so preloaded: a getaddrinfo() of
the test's names takes a second and is logged.  The names resolve through
a DNS server in this process (resolv_conf).  Checkouts go to a slow
provider all at once, so that each opens a connection of its own, and the
database sits behind a proxy, whose connections the test has PostgreSQL
end, so that the pools reconnect; both proxies count the connections.  Over those connects no
process may call getaddrinfo() for the names, and /healthz, asked all
along, must never wait."""

import os
import tempfile
import threading
import urllib.parse

from harness import (BUILD_DIR, DATABASE, TAP, DelayProxy, FakeDNS, Load, Paymentsd, ProviderSim,
                     checkout, new_key, psql, wait_until)

SHIM = os.path.join(BUILD_DIR, "tests", "e2e", "slow_getaddrinfo.so")
if not os.path.exists(SHIM):
    print("1..0 # SKIP %s is not built (make check builds it)" % SHIM)
    raise SystemExit(0)

t = TAP()
SUFFIX = ".slow-resolve-test"
DB_NAME, PROVIDER_NAME = "db" + SUFFIX, "provider" + SUFFIX
CHECKOUTS, DB_RESETS = 5, 3
BODY = {"buyer_id": "buyer-gai", "seller_id": "seller-gai", "amount_cents": 1300, "currency": "EUR"}

dns = FakeDNS()
dns.set(DB_NAME, "127.0.0.1")
dns.set(PROVIDER_NAME, "127.0.0.1")
u = urllib.parse.urlparse(DATABASE)
db_proxy = DelayProxy(u.hostname, u.port or 5432)
sim = ProviderSim({"latency": "500ms"}).start()
sim_proxy = DelayProxy("127.0.0.1", sim.port)     # to count the connections
gai_log = os.path.join(tempfile.mkdtemp(prefix="slow-gai-"), "getaddrinfo.log")
env = {"LD_PRELOAD": SHIM, "SLOW_GETADDRINFO_SUFFIX": SUFFIX, "SLOW_GETADDRINFO_LOG": gai_log,
       # The ASan build: the shim is loaded before ASan's runtime.
       "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
db_by_name = u._replace(netloc="%s@%s:%d" % (u.netloc.rsplit("@", 1)[0], DB_NAME,
                                              db_proxy.port)).geturl()
d = Paymentsd(workers=1, database=db_by_name, env=env,
              extra={"provider_url": "http://%s:%d" % (PROVIDER_NAME, sim_proxy.port),
                     "resolv_conf": dns.resolv_conf(), "db_pool_size": "2",
                     "provider_timeout": "3s", "db_timeout": "3s"}).start()


def getaddrinfo_calls():
    try:
        with open(gai_log) as f:
            return f.read().splitlines()
    except OSError:
        return []


def terminate_db_connections():
    """End the server side of every connection that came through db_proxy
    (and of no other client's): PostgreSQL knows them by client port."""
    with db_proxy.lock:
        upstream = db_proxy.conns[1::2]
    ports = [str(s.getsockname()[1]) for s in upstream if s.fileno() >= 0]
    psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
         "WHERE client_addr = '127.0.0.1' AND client_port IN (%s)" % ",".join(ports or ["0"]))


t.ok(wait_until(lambda: d.get("/readyz").status == 200, timeout=10),
     "the database, by a name only our DNS server knows, is reached", d.log()[-2000:])
load = Load(d.port, threads=1, max_seconds=60, pause=0.02).start()
answers = []
threads = [threading.Thread(target=lambda: answers.append(checkout(d, new_key("gai"), BODY)))
           for _ in range(CHECKOUTS)]
for th in threads:          # at once: each waits on the provider on a connection of its own
    th.start()
for th in threads:
    th.join(15)
paid = [r for r in answers if r.status == 201 and r.json().get("status") == "PAID"]
ready = 0
for _ in range(DB_RESETS):
    before = db_proxy.accepted
    terminate_db_connections()  # the pools reconnect
    ready += (wait_until(lambda: db_proxy.accepted > before, timeout=10)
              and wait_until(lambda: d.get("/readyz").status == 200, timeout=10))
load.stop()

t.ok(len(paid) == CHECKOUTS, "%d checkouts at once, paid by the provider by name" % CHECKOUTS,
     answers)
t.ok(sim_proxy.accepted >= CHECKOUTS, "on %d connections to the provider" % sim_proxy.accepted)
t.ok(ready == DB_RESETS,
     "the database connections were ended %d times and came back (%d connections in all)"
     % (DB_RESETS, db_proxy.accepted))
calls = getaddrinfo_calls()
t.eq(calls, [], "regression: no getaddrinfo() for the provider's or the database's name "
     "over %d provider and %d database connections" % (sim_proxy.accepted, db_proxy.accepted))
t.ok(load.ok > 0 and not load.errors and not load.bad and load.slowest < 0.5,
     "regression: /healthz never waited on a resolve (%d answers, slowest %.3f s)"
     % (load.ok, load.slowest), "%r %r" % (load.errors[:3], load.bad[:3]))
t.ok(d.stop(), "stopped, nothing left behind")
sim.stop()
t.done()
