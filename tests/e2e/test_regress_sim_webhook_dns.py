#!/usr/bin/env python3
"""Regression: provider-sim exited when webhook_url's host did not resolve
yet (issue 12, item 9).

`docker compose up` starts provider-sim before paymentsd, whose name the
compose network's DNS only knows once its container runs: the sim resolved
the name once, at start, with getaddrinfo(), and exited.  Now the name is
followed with evdns (resolv_conf, resolve_interval): the sim starts and
serves, a webhook attempt made while the name has no address fails and is
retried with back-off, and once the name resolves the webhook is delivered.

A DNS server in this process (harness.FakeDNS, named by the sim's
resolv_conf) answers NXDOMAIN for the receiver's name, then its address."""

import json
import os
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import TAP, FakeDNS, ProviderSim, new_key, request, wait_until

t = TAP()
NAME = "paymentsd.sim-dns-test"


class Hooks(ThreadingHTTPServer):
    """The webhook receiver: answers 200 and keeps each body."""
    daemon_threads = True

    def __init__(self):
        self.bodies = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), HookHandler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def orders(self):
        with self.lock:
            return [json.loads(b).get("order_id") for b in self.bodies]


class HookHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            self.server.bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


dns = FakeDNS()             # no record yet: NXDOMAIN for NAME
hooks = Hooks()
sim = ProviderSim(extra={
    "webhook_url": "http://%s:%d/webhooks/provider" % (NAME, hooks.server_address[1]),
    "resolv_conf": dns.resolv_conf(), "resolve_interval": "200ms",
    # Every charge is held and settled by webhook; retries come fast.
    "timeout_rate": "1", "hold": "1s", "webhook_delay": "100ms", "webhook_backoff": "100ms",
    "webhook_backoff_max": "300ms", "webhook_max_attempts": "100"})
try:
    sim.start()
except RuntimeError as e:
    t.ok(False, "regression: provider-sim starts while webhook_url's host does not resolve", e)
    t.done()
t.ok(sim.proc.poll() is None, "regression: provider-sim starts while webhook_url's host does not resolve")

order = "a1b2c3d4-0000-4000-8000-" + new_key("o")[-12:].rjust(12, "0")
try:
    request(sim.port, "POST", "/v1/charges", timeout=0.3,
            body={"order_id": order, "amount_cents": 1500, "currency": "EUR"},
            headers={"Idempotency-Key": order})
except OSError:
    pass                    # held: the outcome goes by webhook
t.ok(wait_until(lambda: sim.stats()["webhook_attempts"] >= 3, 5),
     "its webhook is attempted, and attempted again", sim.stats())
t.eq(hooks.orders(), [], "nothing is delivered while the name does not resolve")
t.ok("the webhook_url host does not resolve: retrying in" in sim.log(),
     "each attempt logs why it failed and when it retries", sim.log()[-1500:])
t.ok(sim.proc.poll() is None and request(sim.port, "GET", "/v1/charges/" + order).status == 200,
     "the sim keeps serving meanwhile")

dns.set(NAME, "127.0.0.1")
t.ok(wait_until(lambda: order in hooks.orders(), 5), "once the name resolves, the webhook is delivered",
     sim.log()[-1500:])
t.ok(wait_until(lambda: sim.stats()["webhooks_delivered"] == 1, 2) and hooks.orders() == [order],
     "once", (sim.stats(), hooks.orders()))
t.ok("webhook_url host %s resolves to 127.0.0.1" % NAME in sim.log(), "the sim logs the address")
sim.stop()
t.eq(sim.proc.returncode, 0, "and stops cleanly")

# Stopped while a query is out (a nameserver that never answers): the
# failed query's name and libevent's request are freed before the event
# base, not leaked (LeakSanitizer reported them under the ASan build).
silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
silent.bind(("127.0.0.1", 0))
with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
    f.write("nameserver 127.0.0.1:%d\noptions timeout:30 attempts:1\n" % silent.getsockname()[1])
stuck = ProviderSim(extra={"webhook_url": "http://%s:%d/webhooks/provider" % (NAME, hooks.server_address[1]),
                           "resolv_conf": f.name}).start()
time.sleep(0.3)
stuck.stop()
t.eq(stuck.proc.returncode, 0, "regression: stopped while its webhook host's query is out: a clean stop")
silent.close()
os.unlink(f.name)
t.done()
