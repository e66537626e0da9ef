#!/usr/bin/env python3
"""paymentsd as an nginx-like server: -t, routes every response goes
through, process titles, reload under load, worker crash, graceful and fast
stop, and no process left behind."""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

from harness import (DATABASE, PAYMENTSD, TAP, DelayProxy, Load, Paymentsd, alive,
                     cmdline, free_port, request, wait_until)

t = TAP()


def conf_test(text):
    d = Paymentsd()
    d.write_conf(text)
    p = subprocess.run([PAYMENTSD, "-t", "-c", d.conf_path], capture_output=True,
                       text=True, timeout=10)
    return p.returncode, p.stderr, d.conf_path


# -t on a good and on a broken file
rc, err, path = conf_test("listen = 127.0.0.1:%d\nworkers = 2\n" % free_port())
t.eq(rc, 0, "-t accepts a good file")
t.ok("test is successful" in err, "-t says the test is successful", err)
rc, err, path = conf_test("workers = 2\n\nprovider_timeout = soon\n")
t.ok(rc != 0, "-t rejects a broken file")
t.ok(err.startswith("%s:3: invalid duration" % path), "-t names file:line: message", err)
rc, err, path = conf_test("workers = 2\nidempotency_ttl = 30s\n")
t.ok(rc != 0 and err.startswith('%s:2: "30s" is out of range for idempotency_ttl' % path),
     "-t rejects an idempotency_ttl under a minute", err)
rc, err, path = conf_test("idempotency_lock_timeout = 500ms\nprovider_timeout = 10ms\ndb_timeout = 10ms\n")
t.ok(rc != 0 and err.startswith('%s:1: "500ms" is out of range for idempotency_lock_timeout' % path),
     "-t rejects an idempotency_lock_timeout under a second", err)

# a running server
d = Paymentsd(workers=2, extra={"client_timeout": "1s", "max_header_size": "4k"}).start()
r = d.get("/healthz")
t.eq((r.status, r.json()), (200, {"ok": True}), "/healthz answers 200 {ok: true}")
t.eq(r.headers.get("content-type"), "application/json", "/healthz is JSON")
t.ok(re.fullmatch(r"[0-9a-f]{32}", r.headers.get("x-request-id", "")),
     "a new X-Request-Id when the client sends none", r.headers)
r = d.get("/healthz", headers={"X-Request-Id": "abc.DEF_1-2"})
t.eq(r.headers.get("x-request-id"), "abc.DEF_1-2", "a valid client X-Request-Id is echoed")
r = d.get("/healthz", headers={"X-Request-Id": "bad id!"})
t.ok(r.headers.get("x-request-id") not in (None, "bad id!"), "an invalid X-Request-Id is replaced")
r = d.get("/readyz")
t.eq((r.status, r.json()), (200, {"ok": True}), "/readyz is 200 while the database answers")
r = d.get("/no/such/path")
t.eq((r.status, r.json()["error"]["code"]), (404, "not_found"), "unknown path: JSON 404")
r = d.post("/healthz", body="{}")
t.eq((r.status, r.json()["error"]["code"], r.headers.get("allow")),
     (405, "method_not_allowed", "GET, HEAD"), "wrong method: JSON 405 with Allow")

r = d.get("/openapi.json")
doc = r.json() if r.status == 200 else {}
t.eq((r.status, doc.get("openapi")), (200, "3.1.0"), "/openapi.json is an OpenAPI 3.1 document")
t.ok({"/checkout", "/orders/{order_id}", "/orders/{order_id}/ledger", "/webhooks/provider",
      "/healthz", "/readyz", "/metrics", "/docs"} <= set(doc.get("paths", {})),
     "it describes the API's paths", list(doc.get("paths", {})))
r = d.get("/docs")
t.ok(r.status in (200, 503) and r.headers.get("content-type", "").startswith("text/html"),
     "/docs is a page (Swagger UI, or how to install it: test_docs.py)", r)

titles = sorted(cmdline(p) for p in [d.pid] + d.children())
t.eq(titles, ["paymentsd: housekeeper process", "paymentsd: master process",
              "paymentsd: worker process", "paymentsd: worker process"],
     "ps shows each process's role")
r = d.post("/healthz", body="{}", headers={"X-Request-Id": "access-log-check"})
time.sleep(0.2)
with open(d.access_path) as f:
    lines = [json.loads(x) for x in f.read().splitlines() if "access-log-check" in x]
t.ok(len(lines) == 1 and lines[0]["status"] == 405 and lines[0]["method"] == "POST"
     and lines[0]["path"] == "/healthz" and "worker_pid" in lines[0] and "duration_ms" in lines[0],
     "one JSON access-log line per request", lines)

# SIGHUP under continuous load: no failed request, new worker pids
before = d.workers()
load = Load(d.port, threads=2).start()
time.sleep(1.0)
d.signal(signal.SIGHUP)
time.sleep(1.0)
rc = subprocess.run([PAYMENTSD, "-s", "reload", "-c", d.conf_path], timeout=10).returncode
time.sleep(1.5)
load.stop()
t.eq(rc, 0, "paymentsd -s reload finds the master through the pid file")
t.ok(load.ok > 100, "the load ran (%d requests)" % load.ok)
t.eq((load.bad, load.errors[:3]), ([], []), "SIGHUP under load: zero failed requests and errors")
t.ok(wait_until(lambda: len(d.workers()) == 2 and not set(d.workers()) & set(before), 5),
     "SIGHUP replaced the worker pids", (before, d.workers()))
t.ok(wait_until(lambda: not any(alive(p) for p in before), 5), "the old workers exited")

# signals sent while new children start up wait for their handlers
for _ in range(10):
    d.signal(signal.SIGHUP)
    d.signal(signal.SIGUSR1)
    time.sleep(0.05)
time.sleep(1.5)
t.ok("killed by signal" not in d.log(), "SIGUSR1 right after SIGHUP never kills a starting child",
     [l for l in d.log().splitlines() if "killed by signal" in l][:3])
t.ok(wait_until(lambda: len(d.workers()) == 2, 5), "two workers after ten quick reloads")

# SIGHUP with a broken conf keeps the old workers serving
before = d.workers()
good = open(d.conf_path).read()
d.write_conf(good + "workers = lots\n")
d.signal(signal.SIGHUP)
t.ok(wait_until(lambda: "reload failed" in d.log(), 5), "a broken reload is logged", d.log()[-500:])
t.eq(d.workers(), before, "a broken reload keeps the old workers")
t.eq(d.get("/healthz").status, 200, "and they keep serving")
d.write_conf(good)

# kill -9 of a worker: replaced within a second, the others keep serving
victim = before[0]
t0 = time.monotonic()
os.kill(victim, signal.SIGKILL)
ok_during = sum(d.get("/healthz").status == 200 for _ in range(20))
t.eq(ok_during, 20, "service continues while a worker is dead")
t.ok(wait_until(lambda: len(d.workers()) == 2 and victim not in d.workers(), 1.0),
     "a new worker within a second (%.2fs)" % (time.monotonic() - t0), d.workers())
t.ok("killed by signal 9" in d.log(), "the master logs the death")

# a worker that keeps dying is respawned with a back-off
for _ in range(4):
    wait_until(lambda: len(d.workers()) == 2, 3)
    os.kill(d.workers()[0], signal.SIGKILL)
    time.sleep(0.05)
t.ok(wait_until(lambda: "keeps dying: respawning in" in d.log(), 3),
     "a worker dying repeatedly is respawned with back-off")
t.ok(wait_until(lambda: len(d.workers()) == 2, 5), "and comes back")

# limits: idle clients are dropped after client_timeout, huge headers refused
s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
t0 = time.monotonic()
try:
    closed = s.recv(1) == b""
except OSError:
    closed = True
s.close()
t.ok(closed and 0.8 < time.monotonic() - t0 < 4, "an idle connection is closed after client_timeout (%.1fs)"
     % (time.monotonic() - t0))
r = d.get("/healthz", headers={"X-Big": "x" * 20000})
t.ok(400 <= r.status < 500, "headers larger than max_header_size are refused (%d)" % r.status)
t.eq(d.get("/healthz").status, 200, "and the worker carries on")

# SIGUSR1 reopens the logs
os.rename(d.access_path, d.access_path + ".1")
d.signal(signal.SIGUSR1)
time.sleep(0.3)
d.get("/healthz")
t.ok(wait_until(lambda: os.path.exists(d.access_path), 2), "SIGUSR1 reopens the access log")

# SIGTERM: fast stop, nothing left behind
d.children()
t0 = time.monotonic()
t.eq(subprocess.run([PAYMENTSD, "-s", "stop", "-c", d.conf_path], timeout=10).returncode, 0,
     "paymentsd -s stop sends SIGTERM")
rc = d.wait_exit(5)
t.eq(rc, 0, "SIGTERM stops the master with status 0")
t.ok(time.monotonic() - t0 < 2.0, "SIGTERM is fast (%.2fs)" % (time.monotonic() - t0))
t.ok(wait_until(lambda: not any(alive(p) for p in d.seen_pids), 3), "no process left after SIGTERM")
t.ok(not os.path.exists(d.pid_file), "the pid file is removed")

# /readyz is 503, quickly, when the database is unreachable
down = Paymentsd(workers=1, database="postgresql://app:app@127.0.0.1:%d/payments" % free_port()).start()
time.sleep(0.5)
t0 = time.monotonic()
r = down.get("/readyz")
t.eq((r.status, r.json()["error"]["code"]), (503, "service_unavailable"),
     "/readyz is 503 when the database is down")
t.ok(time.monotonic() - t0 < 1.0, "and answers quickly (%.2fs)" % (time.monotonic() - t0))
t.ok(r.headers.get("retry-after") == "1", "with Retry-After")
t.eq(down.get("/healthz").status, 200, "/healthz stays 200: the loop runs")
t.ok(down.stop(), "no process left after stop")

# SIGQUIT lets a slow in-flight request finish: PostgreSQL made slow by a proxy
u = urllib.parse.urlsplit(DATABASE)
proxy = DelayProxy(u.hostname, u.port or 5432)
slow_db = u._replace(netloc="%s@127.0.0.1:%d" % (u.netloc.rsplit("@", 1)[0], proxy.port)).geturl()
q = Paymentsd(workers=1, database=slow_db).start()
t.ok(wait_until(lambda: q.get("/readyz").status == 200, 10), "readyz through the proxy")
q.children()
proxy.delay = 1.5
result = {}


def slow():
    t0 = time.monotonic()
    result["r"] = q.get("/readyz", timeout=10)
    result["took"] = time.monotonic() - t0


th = threading.Thread(target=slow)
th.start()
time.sleep(0.4)
q.signal(signal.SIGQUIT)
th.join(15)
r = result.get("r")
t.ok(r is not None and r.status == 200, "SIGQUIT: the in-flight request finishes with 200", result)
t.ok(result.get("took", 0) >= 1.4, "it really was in flight during SIGQUIT (%.2fs)" % result.get("took", 0))
t.eq(q.wait_exit(10), 0, "then the master exits 0")
t.ok(wait_until(lambda: not any(alive(p) for p in q.seen_pids), 3), "no process left after SIGQUIT")
proxy.close()

t.done()
