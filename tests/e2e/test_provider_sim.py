#!/usr/bin/env python3
"""End-to-end test of provider-sim, printing TAP.

Starts the built provider-sim (env PROVIDER_SIM, default
./provider-sim/provider-sim relative to the build directory, the current
directory) on free 127.0.0.1 ports with temporary confs, and a small
http.server on another loopback port as the webhook receiver, which checks
every signature with its own HMAC (not with the sim's code).

Python 3 standard library only.  Every wait is bounded; only the processes
started here are stopped.  Point PROVIDER_SIM at a --enable-sanitizers build
to run it under ASan/UBSan: the last test fails on any sanitizer report.
"""
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

SIM = os.environ.get("PROVIDER_SIM", "./provider-sim/provider-sim")
SRCDIR = os.environ.get("PAYMENTSD_SRCDIR") or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SECRET = "whsec_dGVzdC1zZWNyZXQtb2YtdGhlLWUyZS10ZXN0"  # "test-secret-of-the-e2e-test"
VECTOR = {
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "timestamp": "1614265330",
    "body": b'{"test": 2432232314}',
    "signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
TMP = tempfile.mkdtemp(prefix="test_provider_sim.")
STARTED = []        # the processes this script started, and only those
# PROVIDER_SIM_<KEY> variables override a conf file: keep the caller's out.
SIM_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PROVIDER_SIM_")}


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def wait_for(pred, timeout, what):
    """Poll pred until it returns something true; Fail after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Fail("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(0.02)


# ---- Standard Webhooks, independently of the C code ----

def sign(secret, msg_id, ts, body):
    key = base64.b64decode(secret[len("whsec_"):], validate=True)
    mac = hmac.new(key, msg_id.encode() + b"." + ts.encode() + b"." + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def verify(secret, msg_id, ts, header, body, tolerance=300):
    if not msg_id or not ts or not ts.isdigit() or not header:
        return False
    if abs(time.time() - int(ts)) > tolerance:
        return False
    want = sign(secret, msg_id, ts, body)
    return any(hmac.compare_digest(s, want) for s in header.split(" ") if s)


# ---- the documented seeded decisions (provider-sim/charges.h) ----

def uniform(seed, purpose, key):
    d = hashlib.sha256(("%d:%s:%s" % (seed, purpose, key)).encode()).digest()
    return (int.from_bytes(d[:8], "big") >> 11) * 2.0 ** -53


def predicted_charge_id(seed, key):
    return "ch_" + hashlib.sha256(("%d:charge:%s" % (seed, key)).encode()).hexdigest()[:24]


# ---- processes and servers ----

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Receiver:
    """A webhook receiver answering scripted statuses (then `default`)."""

    def __init__(self, script=(), default=200):
        self.lock = threading.Lock()
        self.script = list(script)
        self.default = default
        self.deliveries = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                h = self.headers
                with receiver.lock:
                    status = receiver.script.pop(0) if receiver.script else receiver.default
                    receiver.deliveries.append({
                        "t": time.monotonic(), "path": self.path, "body": body,
                        "id": h.get("webhook-id"), "ts": h.get("webhook-timestamp"),
                        "sig": h.get("webhook-signature"),
                        "content_type": h.get("Content-Type"), "status": status,
                        "valid": verify(SECRET, h.get("webhook-id"), h.get("webhook-timestamp"),
                                        h.get("webhook-signature"), body),
                    })
                reply = b'{"ok": true}' if status < 300 else b'{"error": {"code": "scripted"}}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d/webhooks/provider" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def for_order(self, order_id):
        with self.lock:
            return [d for d in self.deliveries if json.loads(d["body"]).get("order_id") == order_id]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Sim:
    """One provider-sim process with its own conf, on a free port."""

    BASE = {
        "decline_rate": "0", "timeout_rate": "0", "seed": "1", "latency": "0",
        "hold": "3s", "webhook_delay": "300ms", "webhook_max_attempts": "4",
        "webhook_backoff": "100ms", "webhook_backoff_max": "1s", "webhook_timeout": "2s",
        "log_level": "info",
    }

    def __init__(self, name, receiver=None, ssl_context=None, **keys):
        self.name = name
        self.ssl_context = ssl_context      # set: the sim serves HTTPS (tls_cert, tls_key)
        self.log = os.path.join(TMP, name + ".log")
        self.stderr = os.path.join(TMP, name + ".stderr")     # sanitizer reports land here
        for _ in range(3):          # another process may take the port meanwhile
            self.port = free_port()
            conf = dict(self.BASE, listen="127.0.0.1:%d" % self.port, webhook_secret=SECRET,
                        webhook_url=receiver.url if receiver else "http://127.0.0.1:9/none",
                        error_log=self.log)
            conf.update({k: str(v) for k, v in keys.items()})
            self.conf = os.path.join(TMP, name + ".conf")
            with open(self.conf, "w") as f:
                f.write("# written by test_provider_sim.py\n")
                for k, v in conf.items():
                    f.write("%s = %s\n" % (k, v))
            with open(self.stderr, "wb") as err:
                self.proc = subprocess.Popen([SIM, "-c", self.conf], stdin=subprocess.DEVNULL,
                                             stdout=err, stderr=err, env=SIM_ENV)
            STARTED.append(self.proc)
            if wait_for(lambda: self.proc.poll() is not None or port_open(self.port), 5,
                        "%s to listen" % name) and self.proc.poll() is None:
                return
        raise Fail("%s did not start: %s" % (name, self.log_text()[-500:]))

    def log_text(self, path=None):
        try:
            with open(path or self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def request(self, method, path, body=None, headers=None, timeout=5.0):
        """(status, decoded JSON or None, headers); raises TimeoutError."""
        if self.ssl_context is not None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=headers or {})
            r = conn.getresponse()
            raw = r.read()
            try:
                doc = json.loads(raw) if raw else None
            except ValueError:
                doc = None
            return r.status, doc, r
        except socket.timeout as e:
            raise TimeoutError(str(e))
        finally:
            conn.close()

    def charge(self, key, order_id, amount=1000, currency="EUR", timeout=5.0):
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        body = {"order_id": order_id, "amount_cents": amount, "currency": currency}
        return self.request("POST", "/v1/charges", body, headers, timeout)

    def charge_briefly(self, key, order_id, amount=1000, timeout=0.3):
        """A charge waited for timeout seconds only: its answer, or None when none came."""
        try:
            return self.charge(key, order_id, amount, timeout=timeout)
        except TimeoutError:
            return None

    def charge_unanswered(self, key, order_id, amount=1000, timeout=0.3, why="answered"):
        """A charge that must stay unanswered (a timeout drawn, an outage); Fail(why) when answered."""
        if self.charge_briefly(key, order_id, amount, timeout) is not None:
            raise Fail(why)

    def stats(self):
        status, doc, _ = self.request("GET", "/admin/stats")
        check(status == 200, "GET /admin/stats: %s" % status)
        return doc

    def cancel(self, order_id, headers=None, body=None):
        """POST /v1/charges/{order_id}/cancel: (status, doc)."""
        path = "/v1/charges/%s/cancel" % urllib.parse.quote(order_id, safe="")
        status, doc, _ = self.request("POST", path, body, headers)
        return status, doc

    def get(self, order_id):
        status, doc, _ = self.request("GET", "/v1/charges/" + urllib.parse.quote(order_id, safe=""))
        return status, doc

    def admin_charges(self):
        """GET /admin/charges as {order_id: row} (and the raw list)."""
        status, doc, _ = self.request("GET", "/admin/charges")
        check(status == 200 and isinstance(doc.get("charges"), list), "GET /admin/charges: %s %r"
              % (status, doc))
        return {c["order_id"]: c for c in doc["charges"]}, doc["charges"]

    def kill9(self):
        """SIGKILL, as a crash: nothing gets a chance to flush."""
        self.proc.kill()
        self.proc.wait(5)

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise Fail("%s did not stop within %.0fs of %s" % (self.name, timeout, sig.name))
        check(rc == 0, "%s exited %s; its stderr ends with:\n%s"
              % (self.name, rc, self.log_text(self.stderr)[-3000:]))
        return rc


def run_sign(args, body, timeout=5):
    return subprocess.run([SIM, "sign"] + args, input=body, capture_output=True, timeout=timeout)


# ---- shared fixtures, started on first use ----

_fixtures = {}


def fixture(name, make):
    if name not in _fixtures:
        _fixtures[name] = make()
    return _fixtures[name]


def main_sim():
    """decline 0, timeout 0: every charge succeeds at once unless in outage."""
    rx = fixture("rx_main", Receiver)
    return fixture("sim_main", lambda: Sim("main", rx)), rx


# ---- the tests: each is one TAP line ----

def test_sign_vector():
    """sign: the Standard Webhooks published vector, exactly three lines"""
    v = VECTOR
    r = run_sign(["--secret", v["secret"], "--id", v["id"], "--timestamp", v["timestamp"]], v["body"])
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    want = "webhook-id: %s\nwebhook-timestamp: %s\nwebhook-signature: %s\n" % (
        v["id"], v["timestamp"], v["signature"])
    check(r.stdout.decode() == want, "got %r" % r.stdout)
    check(sign(v["secret"], v["id"], v["timestamp"], v["body"]) == v["signature"],
          "the Python HMAC disagrees with the vector")


def test_sign_now_verifies():
    """sign: default timestamp is now and the headers verify in Python"""
    body = b'{"event_id": "evt-1", "outcome": "PAID"}\n\xc3\xa9'
    before = int(time.time())
    r = run_sign(["--secret", SECRET, "--id", "evt-1"], body)
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    lines = r.stdout.decode().splitlines()
    check(len(lines) == 3, "got %r" % lines)
    hdr = dict(line.split(": ", 1) for line in lines)
    check(set(hdr) == {"webhook-id", "webhook-timestamp", "webhook-signature"}, "names %r" % list(hdr))
    check(hdr["webhook-id"] == "evt-1", "id %r" % hdr["webhook-id"])
    check(before <= int(hdr["webhook-timestamp"]) <= int(time.time()), "timestamp %r" % hdr)
    check(verify(SECRET, "evt-1", hdr["webhook-timestamp"], hdr["webhook-signature"], body),
          "signature does not verify")
    check(not verify(SECRET, "evt-1", hdr["webhook-timestamp"], hdr["webhook-signature"], body[:-1]),
          "signature verifies a changed body")


def test_sign_refuses():
    """sign: bad secret, missing --id, bad timestamp are refused with no output"""
    for args in (["--secret", "whsec_AB==", "--id", "x"], ["--secret", "nope", "--id", "x"],
                 ["--secret", SECRET], ["--secret", SECRET, "--id", "x", "--timestamp", "-5"],
                 ["--secret", SECRET, "--id", "x", "--timestamp", "12a"]):
        r = run_sign(args, b"{}")
        check(r.returncode != 0 and r.stdout == b"", "%r: exit %d, stdout %r" % (args, r.returncode, r.stdout))


def test_conf_check():
    """-t accepts conf/provider-sim.conf and rejects a bad file with file:line"""
    shipped = os.path.join(SRCDIR, "conf", "provider-sim.conf")
    r = subprocess.run([SIM, "-t", "-c", shipped], capture_output=True, timeout=5, env=SIM_ENV)
    check(r.returncode == 0, "%s: %s" % (shipped, r.stderr))
    bad = os.path.join(TMP, "bad.conf")
    with open(bad, "w") as f:
        f.write("seed = 3\ntimeout_rate = 1.5\n")
    r = subprocess.run([SIM, "-t", "-c", bad], capture_output=True, timeout=5, env=SIM_ENV)
    check(r.returncode != 0 and (bad + ":2:").encode() in r.stderr, "got %d %r" % (r.returncode, r.stderr))


def test_charge_key_missing():
    """POST /v1/charges without Idempotency-Key: 400 idempotency_key_missing"""
    sim, _ = main_sim()
    status, doc, _ = sim.charge(None, "order-nokey")
    check(status == 400 and doc["error"]["code"] == "idempotency_key_missing", "%s %r" % (status, doc))
    status, doc, _ = sim.charge("has space", "order-nokey")
    check(status == 400 and doc["error"]["code"] == "idempotency_key_invalid", "%s %r" % (status, doc))


def test_charge_validation():
    """POST /v1/charges: bad JSON 400, bad fields 422 naming the field"""
    sim, _ = main_sim()
    hdr = {"Idempotency-Key": "k-validate", "Content-Type": "application/json"}
    for raw in (b"", b"{", b"[1]", b'"x"', b'{"order_id": "o"} trailing'):
        status, doc, _ = sim.request("POST", "/v1/charges", raw, hdr)
        check(status == 400 and doc["error"]["code"] == "invalid_json", "%r: %s %r" % (raw, status, doc))
    cases = [
        ({"amount_cents": 5, "currency": "EUR"}, "order_id"),
        ({"order_id": "", "amount_cents": 5, "currency": "EUR"}, "order_id"),
        ({"order_id": 7, "amount_cents": 5, "currency": "EUR"}, "order_id"),
        ({"order_id": "o", "amount_cents": 5.0, "currency": "EUR"}, "amount_cents"),
        ({"order_id": "o", "amount_cents": "5", "currency": "EUR"}, "amount_cents"),
        ({"order_id": "o", "amount_cents": 0, "currency": "EUR"}, "amount_cents"),
        ({"order_id": "o", "amount_cents": 2 ** 63, "currency": "EUR"}, "amount_cents"),
        ({"order_id": "o", "amount_cents": 5, "currency": "eur"}, "currency"),
        ({"order_id": "o", "amount_cents": 5}, "currency"),
    ]
    for body, field in cases:
        status, doc, _ = sim.request("POST", "/v1/charges", body, hdr)
        check(status == 422 and doc["error"]["code"] == "validation_failed"
              and doc["error"].get("field") == field, "%r: %s %r" % (body, status, doc))
    status, _, _ = sim.request("GET", "/v1/charges/o")
    check(status == 404, "a refused request created a charge")


def test_same_key_same_answer():
    """same Idempotency-Key: same answer every time, one charge, attempts counted"""
    sim, _ = main_sim()
    before = sim.stats()
    answers = [sim.charge("k-same", "order-same", 4200) for _ in range(3)]
    check(all(a[0] == 200 for a in answers), "statuses %r" % [a[0] for a in answers])
    check(answers[0][1] == answers[1][1] == answers[2][1], "answers differ: %r" % [a[1] for a in answers])
    check(answers[0][1] == {"charge_id": answers[0][1]["charge_id"], "order_id": "order-same",
                            "status": "succeeded", "amount_cents": 4200, "currency": "EUR"},
          "answer %r" % answers[0][1])
    after = sim.stats()
    check(after["charges"] - before["charges"] == 1, "charges %r -> %r" % (before, after))
    check(after["charge_requests"] - before["charge_requests"] == 3, "charge_requests %r" % after)
    status, doc, _ = sim.request("GET", "/v1/charges/order-same")
    check(status == 200 and doc["attempts"] == 3, "%s %r" % (status, doc))


def test_key_reuse_409():
    """same key with another order_id, amount or currency: 409, nothing created"""
    sim, _ = main_sim()
    status, first, _ = sim.charge("k-reuse", "order-reuse", 100, "EUR")
    check(status == 200, "first: %s %r" % (status, first))
    before = sim.stats()
    for order, amount, cur in (("order-reuse", 101, "EUR"), ("order-other", 100, "EUR"),
                               ("order-reuse", 100, "USD")):
        status, doc, _ = sim.charge("k-reuse", order, amount, cur)
        check(status == 409 and doc["error"]["code"] == "idempotency_key_reused",
              "%s/%s/%s: %s %r" % (order, amount, cur, status, doc))
    after = sim.stats()
    check(after["charges"] == before["charges"], "a reuse created a charge")
    check(sim.charge("k-reuse", "order-reuse", 100, "EUR")[1] == first, "the first answer changed")
    status, _, _ = sim.request("GET", "/v1/charges/order-other")
    check(status == 404, "a 409 recorded order-other")


def test_get_charge():
    """GET /v1/charges/{order_id}: 404 charge_not_found, 200 with every field"""
    sim, _ = main_sim()
    status, doc, _ = sim.request("GET", "/v1/charges/never-seen")
    check(status == 404 and doc["error"]["code"] == "charge_not_found", "%s %r" % (status, doc))
    _, answer, _ = sim.charge("k-get", "order/get 1", 777, "GBP")
    status, doc, _ = sim.request("GET", "/v1/charges/order%2Fget%201")
    check(status == 200, "%s %r" % (status, doc))
    want = {"charge_id": answer["charge_id"], "order_id": "order/get 1", "status": "succeeded",
            "amount_cents": 777, "currency": "GBP", "attempts": 1, "refunded_cents": 0}
    check(doc == want, "got %r, want %r" % (doc, want))


def test_decline_rate_0():
    """decline_rate 0: every charge succeeds"""
    sim, _ = main_sim()
    got = [sim.charge("k-d0-%d" % i, "order-d0-%d" % i)[1]["status"] for i in range(20)]
    check(got == ["succeeded"] * 20, "got %r" % got)


def test_decline_rate_1_and_latency():
    """decline_rate 1: every charge declined, each answer after `latency`"""
    sim = Sim("declined", decline_rate=1, latency="100ms")
    try:
        for i in range(8):
            t0 = time.monotonic()
            status, doc, _ = sim.charge("k-d1-%d" % i, "order-d1-%d" % i)
            took = time.monotonic() - t0
            check(status == 200 and doc["status"] == "declined", "%s %r" % (status, doc))
            check(took >= 0.095, "answered in %.3fs, before the 100ms latency" % took)
        s = sim.stats()
        check(s["declined"] == 8 and s["succeeded"] == 0, "stats %r" % s)
        check(s["webhook_attempts"] == 0 and s["webhooks_pending"] == 0,
              "charges answered in time must get no webhook: %r" % s)
    finally:
        check(sim.stop() == 0, "exit status")


def test_seed_repeatable():
    """same seed: same outcomes and charge ids in another run and order; as documented"""
    keys = ["k-seed-%d" % i for i in range(40)]

    def run(name, seed, order):
        sim = Sim(name, decline_rate=0.5, seed=seed)
        try:
            return {k: sim.charge(k, "order-" + k)[1] for k in order}
        finally:
            check(sim.stop() == 0, "%s exit status" % name)

    a = run("seed-a", 42, keys)
    b = run("seed-b", 42, list(reversed(keys)))
    c = run("seed-c", 43, keys)
    check(a == b, "two runs with seed 42 differ")
    check(any(a[k]["status"] != c[k]["status"] for k in keys), "seed 43 gave the same outcomes as 42")
    declined = sum(a[k]["status"] == "declined" for k in keys)
    check(5 <= declined <= 35, "decline_rate 0.5 declined %d of 40" % declined)
    for k in keys:
        want = "declined" if uniform(42, "decline", k) < 0.5 else "succeeded"
        check(a[k]["status"] == want, "%s: %s, the documented formula says %s" % (k, a[k]["status"], want))
        check(a[k]["charge_id"] == predicted_charge_id(42, k), "%s: charge id %s" % (k, a[k]["charge_id"]))


def test_many_charges():
    """2500 charges: the store grows, each is found by key and order (newest per order)"""
    sim = Sim("many", decline_rate=0.3, seed=9)
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)   # one keep-alive connection

    def call(method, path, body=None, key=None):
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        conn.request(method, path, body=json.dumps(body).encode() if body else None, headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read())

    try:
        # Two keys for one order before the growth: the newer must win after it.
        call("POST", "/v1/charges", {"order_id": "order-shared", "amount_cents": 1, "currency": "EUR"}, "k-old")
        _, newer = call("POST", "/v1/charges",
                        {"order_id": "order-shared", "amount_cents": 2, "currency": "EUR"}, "k-new")
        n = 2500
        for i in range(n):
            status, doc = call("POST", "/v1/charges",
                               {"order_id": "order-many-%d" % i, "amount_cents": i + 1, "currency": "EUR"},
                               "k-many-%d" % i)
            check(status == 200, "charge %d: %s %r" % (i, status, doc))
            if i in (1100, n - 1):  # after one growth (1024 entries), then two (2048)
                _, doc = call("GET", "/v1/charges/order-shared")
                check(doc["charge_id"] == newer["charge_id"] and doc["amount_cents"] == 2,
                      "shared order after %d charges: %r" % (i + 3, doc))
        for i in range(0, n, 7):
            status, doc = call("GET", "/v1/charges/order-many-%d" % i)
            want = "declined" if uniform(9, "decline", "k-many-%d" % i) < 0.3 else "succeeded"
            check(status == 200 and doc["amount_cents"] == i + 1 and doc["status"] == want
                  and doc["charge_id"] == predicted_charge_id(9, "k-many-%d" % i), "order %d: %r" % (i, doc))
        status, doc = call("POST", "/v1/charges",
                           {"order_id": "order-many-5", "amount_cents": 6, "currency": "EUR"}, "k-many-5")
        check(doc["charge_id"] == predicted_charge_id(9, "k-many-5"), "key lookup after growth: %r" % doc)
        s = sim.stats()
        check(s["charges"] == n + 2 and s["charge_requests"] == n + 3, "stats %r" % s)
    finally:
        conn.close()
        sim.stop()


def test_timeout_then_webhook():
    """timeout_rate 1: client times out, signed webhook after webhook_delay, retry gets 200"""
    rx = Receiver()
    sim = Sim("timeout", rx, timeout_rate=1, webhook_delay="500ms", hold="1s")
    try:
        t0 = time.monotonic()
        sim.charge_unanswered("k-timeout", "order-timeout", 2500, timeout=0.4,
                              why="the sim answered a charge drawn to time out")
        d = wait_for(lambda: rx.for_order("order-timeout"), 5, "the webhook")[0]
        check(d["t"] - t0 >= 0.45, "webhook after %.3fs, before webhook_delay" % (d["t"] - t0))
        check(d["valid"], "signature does not verify: %r" % d)
        check(d["path"] == "/webhooks/provider", "path %r" % d["path"])
        check(d["content_type"] == "application/json", "content type %r" % d["content_type"])
        body = json.loads(d["body"])
        check(body["outcome"] == "PAID" and body["order_id"] == "order-timeout"
              and body["event_id"] == d["id"] and body["event_id"].startswith("evt_"), "body %r" % body)
        status, doc, _ = sim.charge("k-timeout", "order-timeout", 2500)
        check(status == 200 and doc["status"] == "succeeded", "retry: %s %r" % (status, doc))
        check(doc["charge_id"][3:] == body["event_id"][4:], "event %s is not charge %s"
              % (body["event_id"], doc["charge_id"]))
        s = sim.stats()
        check(s["charges"] == 1 and s["charge_requests"] == 2 and s["timed_out"] == 1
              and s["webhooks_delivered"] == 1 and s["webhook_attempts"] == 1, "stats %r" % s)
        time.sleep(0.3)
        check(len(rx.for_order("order-timeout")) == 1, "a delivered webhook was sent again")
        # The hold ends after the client left: the late 503 goes nowhere.
        wait_for(lambda: sim.stats()["held_requests"] == 0, 3, "the hold to end")
        check(sim.proc.poll() is None, "the sim died answering a client that had gone")
    finally:
        check(sim.stop() == 0, "exit status")
        rx.close()


def test_webhook_retries():
    """receiver answers 500, then 404, then 200: retried with back-off and delivered"""
    rx = Receiver(script=[500, 404])
    sim = Sim("retry", rx, timeout_rate=1, decline_rate=1, webhook_backoff="100ms")
    try:
        sim.charge_briefly("k-retry", "order-retry")
        ds = wait_for(lambda: len(rx.for_order("order-retry")) >= 3 and rx.for_order("order-retry"), 5,
                      "three attempts")
        check([d["status"] for d in ds] == [500, 404, 200], "answers %r" % [d["status"] for d in ds])
        check(all(d["valid"] for d in ds), "an attempt was not signed right")
        check(len({d["id"] for d in ds}) == 1, "the event id changed between attempts")
        check(all(json.loads(d["body"])["outcome"] == "FAILED" for d in ds), "declined must be FAILED")
        gaps = [ds[i + 1]["t"] - ds[i]["t"] for i in range(2)]
        check(0.045 <= gaps[0] and 0.095 <= gaps[1], "back-off gaps %r" % gaps)
        s = wait_for(lambda: (lambda s: s if s["webhooks_delivered"] == 1 else None)(sim.stats()), 2,
                     "the delivery to be counted")
        check(s["webhook_attempts"] == 3 and s["webhooks_failed"] == 0 and s["webhooks_pending"] == 0,
              "stats %r" % s)
        check("attempt 1/4, HTTP 500" in sim.log_text() and "attempt 3/4, HTTP 200" in sim.log_text(),
              "attempts not logged")
    finally:
        check(sim.stop() == 0, "exit status")
        rx.close()


def test_webhook_gives_up():
    """receiver always 503: gives up after webhook_max_attempts, counted as failed"""
    rx = Receiver(default=503)
    sim = Sim("giveup", rx, timeout_rate=1, webhook_max_attempts=3, webhook_backoff="50ms")
    try:
        sim.charge_briefly("k-giveup", "order-giveup")
        s = wait_for(lambda: (lambda s: s if s["webhooks_failed"] == 1 else None)(sim.stats()), 5,
                     "the webhook to fail")
        check(s["webhook_attempts"] == 3 and s["webhooks_delivered"] == 0 and s["webhooks_pending"] == 0,
              "stats %r" % s)
        time.sleep(0.3)
        check(len(rx.for_order("order-giveup")) == 3, "%d attempts" % len(rx.for_order("order-giveup")))
    finally:
        check(sim.stop() == 0, "exit status")
        rx.close()


def test_webhook_receiver_down():
    """receiver refusing or silent: attempts fail (refused, timeout), then given up"""
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)               # accepted by the kernel, never answered
    closed = free_port()            # nothing listens there
    sims = []
    try:
        for name, port in (("refused", closed), ("silent", silent.getsockname()[1])):
            sim = Sim("down-" + name, None, timeout_rate=1, webhook_delay="50ms",
                      webhook_url="http://127.0.0.1:%d/webhooks/provider" % port,
                      webhook_max_attempts=2, webhook_backoff="50ms", webhook_timeout="300ms")
            sims.append(sim)
            sim.charge_briefly("k-down", "order-down", timeout=0.2)
        for sim in sims:
            s = wait_for(lambda: (lambda s: s if s["webhooks_failed"] == 1 else None)(sim.stats()), 5,
                         "%s: the webhook to fail" % sim.name)
            check(s["webhook_attempts"] == 2 and s["webhooks_pending"] == 0, "%s: %r" % (sim.name, s))
        check("giving up" in sims[0].log_text(), "refused: not logged")
        check("timeout" in sims[1].log_text(), "silent: the timeout is not logged")
    finally:
        for sim in sims:
            check(sim.stop() == 0, "%s: exit status" % sim.name)
        silent.close()


def test_outage_switch():
    """outage via /admin/outage: charges held then settled by webhook; off: normal again"""
    sim, rx = main_sim()
    admin = {"Content-Type": "application/json"}
    check(sim.charge("k-before", "order-before", timeout=2)[0] == 200, "charge before the outage")
    status, doc, _ = sim.request("GET", "/admin/outage")
    check(status == 200 and doc == {"outage": False}, "%s %r" % (status, doc))
    status, doc, _ = sim.request("POST", "/admin/outage", {"enabled": True}, admin)
    check(status == 200 and doc == {"outage": True}, "%s %r" % (status, doc))
    check(sim.request("GET", "/admin/outage")[1] == {"outage": True}, "GET does not show it")
    try:
        t0 = time.monotonic()
        sim.charge_unanswered("k-outage", "order-outage", timeout=0.4, why="answered during an outage")
        # a charge answered before the outage is held too
        sim.charge_unanswered("k-before", "order-before", timeout=0.3,
                              why="a known charge was answered during an outage")
        status, doc, _ = sim.request("GET", "/v1/charges/order-outage")
        check(status == 503, "GET during an outage: %s %r" % (status, doc))
        d = wait_for(lambda: rx.for_order("order-outage"), 5, "the outage charge's webhook")[0]
        check(d["valid"] and json.loads(d["body"])["outcome"] == "PAID", "delivery %r" % d)
        check(d["t"] - t0 >= 0.25, "webhook before webhook_delay")
    finally:
        status, doc, _ = sim.request("POST", "/admin/outage", {"enabled": False}, admin)
    check(status == 200 and doc == {"outage": False}, "%s %r" % (status, doc))
    status, doc, _ = sim.charge("k-outage", "order-outage", timeout=2)
    check(status == 200 and doc["status"] == "succeeded", "after the outage: %s %r" % (status, doc))
    status, doc, _ = sim.request("GET", "/v1/charges/order-outage")
    check(status == 200 and doc["attempts"] == 2 and doc["status"] == "succeeded", "%s %r" % (status, doc))
    check(rx.for_order("order-before") == [], "a charge answered before the outage got a webhook")
    for body, want in ((b"{", 400), ({"enabled": "yes"}, 422), ({}, 422)):
        status, doc, _ = sim.request("POST", "/admin/outage", body, admin)
        check(status == want, "%r: %s %r" % (body, status, doc))
    check(sim.request("GET", "/admin/outage")[1] == {"outage": False}, "a bad request changed the switch")


def test_routes():
    """unknown route 404, wrong method 405 with Allow"""
    sim, _ = main_sim()
    status, doc, _ = sim.request("GET", "/nope")
    check(status == 404 and doc["error"]["code"] == "not_found", "%s %r" % (status, doc))
    status, doc, r = sim.request("PUT", "/admin/outage", b"{}")
    check(status == 405 and r.getheader("Allow") == "GET, POST", "%s %r" % (status, doc))
    status, doc, r = sim.request("GET", "/v1/charges")
    check(status == 405 and r.getheader("Allow") == "POST", "%s %r" % (status, doc))


def test_sigterm_answers_held():
    """SIGTERM: held requests get their 503 at once, exit 0, pid file removed"""
    pid_file = os.path.join(TMP, "sim.pid")
    sim = Sim("sigterm", timeout_rate=1, hold="30s", pid_file=pid_file)
    result = {}

    def client():
        try:
            result["status"] = sim.charge("k-term", "order-term", timeout=10)[0]
        except Exception as e:      # reported below
            result["error"] = repr(e)

    with open(pid_file) as f:
        check(int(f.read()) == sim.proc.pid, "pid file")
    t = threading.Thread(target=client, daemon=True)
    t.start()
    wait_for(lambda: sim.stats()["held_requests"] == 1, 3, "the request to be held")
    t0 = time.monotonic()
    rc = sim.stop(signal.SIGTERM)
    t.join(5)
    check(rc == 0, "exit status %s" % rc)
    check(time.monotonic() - t0 < 2, "took %.1fs to stop" % (time.monotonic() - t0))
    check(result.get("status") == 503, "held client got %r" % result)
    check(not os.path.exists(pid_file), "pid file left behind")
    check("provider-sim (pid %d)" % sim.proc.pid in sim.log_text(), "log lines not tagged provider-sim")


def test_sigquit_and_sigint_stop():
    """SIGQUIT and SIGINT stop the sim too, exit 0"""
    for sig in (signal.SIGQUIT, signal.SIGINT):
        sim = Sim("stop-%s" % sig.name)
        check(sim.stop(sig) == 0, "%s: exit status %s" % (sig.name, sim.proc.returncode))


def test_admin_allow():
    """admin_allow: peers outside it get 403 on /admin/*, the charges API still answers"""
    sim = Sim("admin-deny", admin_allow="10.1.2.3 192.168.0.0/16 ::1")
    try:
        for method, path in (("GET", "/admin/stats"), ("GET", "/admin/charges"), ("GET", "/admin/outage"),
                             ("POST", "/admin/outage")):
            status, doc, _ = sim.request(method, path, {"enabled": True} if method == "POST" else None)
            check(status == 403 and doc["error"]["code"] == "forbidden", "%s %s: %s %r" % (method, path, status, doc))
        check(sim.charge("k-deny", "order-deny")[0] == 200, "the charges API refused a non-admin")
    finally:
        check(sim.stop() == 0, "exit status")
    sim = Sim("admin-cidr", admin_allow="10.0.0.0/8, 127.0.0.1/32")
    try:
        check(sim.request("GET", "/admin/charges")[0] == 200, "127.0.0.1 inside 127.0.0.1/32 was refused")
    finally:
        check(sim.stop() == 0, "exit status")
    for bad in ("127.0.0.0/33", "::1/129", "localhost", "10.0.0.1/"):
        path = os.path.join(TMP, "acl.conf")
        with open(path, "w") as f:
            f.write("admin_allow = %s\n" % bad)
        r = subprocess.run([SIM, "-t", "-c", path], capture_output=True, timeout=5, env=SIM_ENV)
        check(r.returncode != 0 and (path + ":1:").encode() in r.stderr, "%r accepted: %r" % (bad, r.stderr))


# ---- cancel-or-refund, the admin view, request ids, the journal, TLS ----

CHARGE_ROW = {"order_id", "key", "charge_id", "amount_cents", "currency", "status", "tombstone",
              "attempts", "refunded_cents", "held_cents"}


def held(sim, order_id):
    return sim.admin_charges()[0][order_id]["held_cents"]


def test_cancel_pending():
    """cancel of a pending charge (timeout drawn, outage): canceled, never captured, no webhook"""
    rx = Receiver()
    sim = Sim("cancel-pending", rx, timeout_rate=1, webhook_delay="500ms", hold="1s")
    admin = {"Content-Type": "application/json"}
    try:
        t0 = time.monotonic()
        sim.charge_unanswered("k-cp-1", "order-cp-1", 1500, timeout=0.3,
                              why="a charge drawn to time out was answered")
        first = {}
        status, first["order-cp-1"] = sim.cancel("order-cp-1")
        want = {"order_id": "order-cp-1", "status": "canceled", "charge_id": predicted_charge_id(1, "k-cp-1"),
                "amount_cents": 1500, "currency": "EUR", "refunded_cents": 0}
        check(status == 200 and first["order-cp-1"] == want, "cancel: %s %r, want %r"
              % (status, first["order-cp-1"], want))
        # In an outage the cancel is still answered: it is how the outcome gets settled.
        check(sim.request("POST", "/admin/outage", {"enabled": True}, admin)[0] == 200, "outage on")
        sim.charge_unanswered("k-cp-2", "order-cp-2", 2500, why="answered during an outage")
        status, first["order-cp-2"] = sim.cancel("order-cp-2")
        check(status == 200 and first["order-cp-2"]["status"] == "canceled"
              and first["order-cp-2"]["amount_cents"] == 2500,
              "cancel during the outage: %s %r" % (status, first["order-cp-2"]))
        check(sim.request("POST", "/admin/outage", {"enabled": False}, admin)[0] == 200, "outage off")
        # Past both settlement times (webhook_delay 500ms after each charge), with room.
        wait_for(lambda: sim.stats()["webhooks_dropped"] == 2, 3, "both settlements to pass")
        time.sleep(max(0, t0 + 1.5 - time.monotonic()))
        check(rx.for_order("order-cp-1") == [] and rx.for_order("order-cp-2") == [],
              "a canceled charge got a webhook: %r" % rx.deliveries)
        for order in ("order-cp-1", "order-cp-2"):
            status, doc = sim.get(order)
            check(status == 200 and doc["status"] == "canceled" and doc["refunded_cents"] == 0,
                  "GET %s: %s %r" % (order, status, doc))
            check(held(sim, order) == 0, "%s: held_cents is not 0" % order)
            again = sim.cancel(order)
            check(again == (200, first[order]), "%s: the cancel after settlement time answered %r, "
                  "the first %r" % (order, again, first[order]))
        # The client's retry learns that no money was taken.
        status, doc, _ = sim.charge("k-cp-1", "order-cp-1", 1500)
        check(status == 200 and doc["status"] == "declined" and doc["order_id"] == "order-cp-1"
              and doc["amount_cents"] == 1500, "retry after the cancel: %s %r" % (status, doc))
        s = sim.stats()
        check(s["canceled"] == 2 and s["succeeded"] == 0 and s["pending"] == 0
              and s["webhook_attempts"] == 0, "stats %r" % s)
        check("not sent: the charge was canceled" in sim.log_text(), "the dropped webhook is not logged")
    finally:
        check(sim.stop() == 0, "exit status")
        rx.close()


def test_cancel_succeeded_refunds():
    """cancel of a succeeded charge: refunded in full, held_cents 0, same answer again"""
    sim, rx = main_sim()
    status, doc, _ = sim.charge("k-cs", "order-cs", 3100, "GBP")
    check(status == 200 and doc["status"] == "succeeded", "charge: %s %r" % (status, doc))
    charge_id = doc["charge_id"]
    check(held(sim, "order-cs") == 3100, "held before the cancel: %r" % sim.admin_charges()[0]["order-cs"])
    status, first = sim.cancel("order-cs", headers={"Idempotency-Key": "ignored-1"}, body=b"ignored")
    want = {"order_id": "order-cs", "status": "refunded", "charge_id": charge_id,
            "amount_cents": 3100, "currency": "GBP", "refunded_cents": 3100}
    check(status == 200 and first == want, "cancel: %s %r, want %r" % (status, first, want))
    for i in range(2):
        again = sim.cancel("order-cs", headers={"Idempotency-Key": "ignored-%d" % (i + 2)})
        check(again == (200, first), "repeat %d: %r" % (i + 1, again))
    status, doc = sim.get("order-cs")
    check(status == 200 and doc["status"] == "refunded" and doc["refunded_cents"] == 3100
          and doc["amount_cents"] == 3100 and doc["charge_id"] == charge_id, "GET: %s %r" % (status, doc))
    row = sim.admin_charges()[0]["order-cs"]
    check(row["held_cents"] == 0 and row["refunded_cents"] == 3100 and row["status"] == "refunded",
          "admin row %r" % row)
    status, doc, _ = sim.charge("k-cs", "order-cs", 3100, "GBP")
    check(status == 200 and doc["status"] == "declined", "a retry of the refunded charge: %s %r" % (status, doc))
    check(held(sim, "order-cs") == 0, "the retry took money again")
    check(rx.for_order("order-cs") == [], "a charge answered in time got a webhook")


def test_cancel_declined():
    """cancel of a declined charge: declined, nothing refunded, same answer again"""
    sim = Sim("cancel-declined", decline_rate=1)
    try:
        status, doc, _ = sim.charge("k-cd", "order-cd", 990)
        check(status == 200 and doc["status"] == "declined", "charge: %s %r" % (status, doc))
        want = {"order_id": "order-cd", "status": "declined", "charge_id": doc["charge_id"],
                "amount_cents": 990, "currency": "EUR", "refunded_cents": 0}
        for i in range(3):
            status, got = sim.cancel("order-cd")
            check(status == 200 and got == want, "cancel %d: %s %r, want %r" % (i + 1, status, got, want))
        status, doc = sim.get("order-cd")
        check(status == 200 and doc["status"] == "declined" and doc["refunded_cents"] == 0, "GET %r" % doc)
        check(held(sim, "order-cd") == 0, "held_cents of a declined charge")
        s = sim.stats()
        check(s["declined"] == 1 and s["refunded"] == 0 and s["canceled"] == 0, "stats %r" % s)
    finally:
        check(sim.stop() == 0, "exit status")


def test_cancel_before_charge():
    """cancel before the charge: not_found, tombstone; the charge when it comes is declined, held 0"""
    sim, rx = main_sim()
    status, doc = sim.cancel("order-tomb")
    want = {"order_id": "order-tomb", "status": "not_found", "refunded_cents": 0}
    check(status == 200 and doc == want, "cancel: %s %r, want %r" % (status, doc, want))
    status, doc = sim.get("order-tomb")
    check(status == 200 and doc["status"] == "canceled" and doc["refunded_cents"] == 0
          and doc["order_id"] == "order-tomb" and "amount_cents" not in doc, "GET: %s %r" % (status, doc))
    for attempt in (1, 2):
        status, doc, _ = sim.charge("order-tomb", "order-tomb", 4400)
        check(status == 200 and doc["status"] == "declined" and doc["order_id"] == "order-tomb"
              and doc["amount_cents"] == 4400 and doc["currency"] == "EUR"
              and doc["charge_id"] == predicted_charge_id(1, "order-tomb"),
              "charge %d after the cancel: %s %r" % (attempt, status, doc))
    # Another key for the same order is refused too.
    status, doc, _ = sim.charge("k-tomb-other", "order-tomb", 4400)
    check(status == 200 and doc["status"] == "declined", "another key: %s %r" % (status, doc))
    check(sim.cancel("order-tomb") == (200, want), "a repeated cancel changed its answer")
    row = sim.admin_charges()[0]["order-tomb"]
    check(row["held_cents"] == 0 and row["attempts"] == 3 and row["status"] == "canceled"
          and row["tombstone"] is True and row["refunded_cents"] == 0, "admin row %r" % row)
    check(sim.request("GET", "/admin/charges")[1]["charges"].count(row) == 1, "more than one row for the order")
    time.sleep(0.4)                 # past webhook_delay: nothing may be told
    check(rx.for_order("order-tomb") == [], "a refused charge got a webhook")


def test_cancel_route():
    """cancel route: percent-encoded ids, GET on it 405 Allow POST, bad id 404"""
    sim, _ = main_sim()
    sim.charge("k-cr", "order/cr 1", 100)
    status, doc = sim.cancel("order/cr 1")
    check(status == 200 and doc["status"] == "refunded" and doc["order_id"] == "order/cr 1",
          "%s %r" % (status, doc))
    status, doc, r = sim.request("GET", "/v1/charges/order-x/cancel")
    check(status == 405 and r.getheader("Allow") == "POST", "GET on cancel: %s %r" % (status, doc))
    status, doc, _ = sim.request("POST", "/v1/charges/%01/cancel")
    check(status == 404, "control character in the id: %s %r" % (status, doc))
    status, doc, _ = sim.request("POST", "/v1/charges//cancel")
    check(status == 404, "empty id: %s %r" % (status, doc))


def test_admin_charges():
    """GET /admin/charges: every charge in order, its fields, attempts counted, held_cents"""
    sim = Sim("admin-charges", decline_rate=0.5, seed=5)
    try:
        keys = ["k-ac-%d" % i for i in range(6)]
        for i, k in enumerate(keys):
            for _ in range(i % 3 + 1):          # 1, 2 or 3 attempts
                check(sim.charge(k, "order-" + k, 100 + i)[0] == 200, "charge %s" % k)
        sim.charge("k-ac-0", "order-k-ac-0", 999)   # a 409 is not an attempt
        sim.cancel("order-k-ac-5")
        sim.cancel("order-never")
        by_order, rows = sim.admin_charges()
        check([r["order_id"] for r in rows] == ["order-" + k for k in keys] + ["order-never"],
              "order %r" % [r["order_id"] for r in rows])
        for row in rows:
            check(set(row) == CHARGE_ROW, "fields %r" % sorted(row))
        for i, k in enumerate(keys):
            row = by_order["order-" + k]
            declined = uniform(5, "decline", k) < 0.5
            status = "declined" if declined else ("refunded" if i == 5 else "succeeded")
            want = {"order_id": "order-" + k, "key": k, "charge_id": predicted_charge_id(5, k),
                    "amount_cents": 100 + i, "currency": "EUR", "status": status, "tombstone": False,
                    "attempts": i % 3 + 1, "refunded_cents": 105 if status == "refunded" else 0,
                    "held_cents": 100 + i if status == "succeeded" else 0}
            check(row == want, "%s: %r, want %r" % (k, row, want))
        check(by_order["order-never"] == {
            "order_id": "order-never", "key": "order-never", "charge_id": predicted_charge_id(5, "order-never"),
            "amount_cents": 0, "currency": None, "status": "canceled", "tombstone": True, "attempts": 0,
            "refunded_cents": 0, "held_cents": 0}, "tombstone row %r" % by_order["order-never"])
        s = sim.stats()
        check(s["charge_requests"] == sum(i % 3 + 1 for i in range(6)) and s["tombstones"] == 1,
              "stats %r" % s)
    finally:
        check(sim.stop() == 0, "exit status")


def test_request_id():
    """X-Request-Id: echoed on 2xx and 4xx, made when missing or invalid, logged"""
    sim, _ = main_sim()
    hdr = {"Content-Type": "application/json", "Idempotency-Key": "k-rid", "X-Request-Id": "rid-abc.123"}
    body = {"order_id": "order-rid", "amount_cents": 10, "currency": "EUR"}
    for what, method, path, b, h in (
            ("charge 200", "POST", "/v1/charges", body, hdr),
            ("GET 200", "GET", "/v1/charges/order-rid", None, {"X-Request-Id": "rid-get"}),
            ("GET 404", "GET", "/v1/charges/nope", None, {"X-Request-Id": "rid-404"}),
            ("cancel 200", "POST", "/v1/charges/order-rid/cancel", None, {"X-Request-Id": "rid-cancel"}),
            ("409", "POST", "/v1/charges", dict(body, amount_cents=11), hdr),
            ("422", "POST", "/v1/charges", {"order_id": "o"}, hdr),
            ("admin 200", "GET", "/admin/charges", None, {"X-Request-Id": "rid-admin"})):
        status, doc, r = sim.request(method, path, b, h)
        check(r.getheader("X-Request-Id") == h["X-Request-Id"],
              "%s (%s): X-Request-Id %r" % (what, status, r.getheader("X-Request-Id")))
    for sent in (None, "has space", "x" * 129, 'quo"te'):
        _, _, r = sim.request("GET", "/v1/charges/nope", None, {"X-Request-Id": sent} if sent else {})
        got = r.getheader("X-Request-Id")
        check(got and got != sent and 1 <= len(got) <= 128, "sent %r, got %r" % (sent, got))
    log = sim.log_text()
    check("(request rid-abc.123)" in log and "-> 404 (request rid-404)" in log
          and "cancel of order order-rid: refunded" in log and "(request rid-cancel)" in log,
          "request ids not logged")


def test_state_file_restart():
    """state_file: kill -9, restart: every charge known, /admin/charges the same, pending ones settle"""
    rx = Receiver()
    state = os.path.join(TMP, "journal.jsonl")
    keys = dict(state_file=state, decline_rate=0.5, seed=11, webhook_delay="1500ms", hold="1s")
    admin = {"Content-Type": "application/json"}
    ok_key = next(k for k in ("k-sf-%d" % i for i in range(50)) if uniform(11, "decline", k) >= 0.5)
    no_key = next(k for k in ("k-sf-%d" % i for i in range(50)) if uniform(11, "decline", k) < 0.5)
    ref_key = next(k for k in ("k-sfr-%d" % i for i in range(50)) if uniform(11, "decline", k) >= 0.5)
    pend_key = next(k for k in ("k-sfp-%d" % i for i in range(50)) if uniform(11, "decline", k) >= 0.5)
    sim = Sim("state-1", rx, **keys)
    sims = [sim]
    try:
        for _ in range(2):
            check(sim.charge(ok_key, "order-sf-ok", 1000)[1]["status"] == "succeeded", "ok charge")
        check(sim.charge(no_key, "order-sf-no", 2000)[1]["status"] == "declined", "declined charge")
        check(sim.charge(ref_key, "order-sf-ref", 3000)[1]["status"] == "succeeded", "charge to refund")
        check(sim.cancel("order-sf-ref")[1]["status"] == "refunded", "refund")
        check(sim.cancel("order-sf-tomb")[1]["status"] == "not_found", "tombstone")
        sim.request("POST", "/admin/outage", {"enabled": True}, admin)
        t_pend = time.monotonic()
        sim.charge_unanswered(pend_key, "order-sf-pend", 4000, timeout=0.2, why="answered in an outage")
        before, _ = sim.admin_charges()
        check(before["order-sf-pend"]["status"] == "pending", "pending row %r" % before["order-sf-pend"])
        sim.kill9()
        # A crash mid-write leaves a torn last line: the restart must skip it.
        with open(state, "a") as f:
            f.write('{"seq": 99, "key": "torn')
        sim = Sim("state-2", rx, **keys)
        sims.append(sim)
        after, _ = sim.admin_charges()
        check(after == before, "after the restart:\n%r\nbefore:\n%r" % (after, before))
        check("torn last line" in sim.log_text(), "the torn line is not logged")
        status, doc = sim.get("order-sf-ok")
        check(status == 200 and doc["status"] == "succeeded" and doc["attempts"] == 2
              and doc["amount_cents"] == 1000, "GET ok: %s %r" % (status, doc))
        check(sim.get("order-sf-ref")[1]["status"] == "refunded", "the refund was forgotten")
        check(sim.get("order-sf-tomb")[1]["status"] == "canceled", "the tombstone was forgotten")
        status, doc, _ = sim.charge("order-sf-tomb", "order-sf-tomb", 500)
        check(doc["status"] == "declined", "the tombstone no longer refuses: %r" % doc)
        status, doc, _ = sim.charge(ok_key, "order-sf-ok", 1000)
        check(doc["status"] == "succeeded" and doc["charge_id"] == predicted_charge_id(11, ok_key),
              "same key, same answer after the restart: %r" % doc)
        # The pending charge settles on its schedule (1.5s after it arrived) and is told.
        d = wait_for(lambda: rx.for_order("order-sf-pend"), 5, "the pending charge's webhook")[0]
        check(d["t"] - t_pend >= 1.4, "settled %.2fs after the charge, before webhook_delay" % (d["t"] - t_pend))
        check(d["valid"] and json.loads(d["body"])["outcome"] == "PAID", "webhook %r" % d)
        status, doc = sim.get("order-sf-pend")
        check(status == 200 and doc["status"] == "succeeded", "GET pending after settling: %r" % doc)
        check(held(sim, "order-sf-pend") == 4000, "held_cents of the settled charge")
        wait_for(lambda: sim.stats()["webhooks_delivered"] == 1, 3, "the delivery to be counted")
        # Once more, cleanly this time: everything still there, the webhook not sent again.
        final, _ = sim.admin_charges()
        check(sim.stop() == 0, "exit status")
        sim = Sim("state-3", rx, **keys)
        sims.append(sim)
        check(sim.admin_charges()[0] == final, "third run differs")
        time.sleep(0.3)
        check(len(rx.for_order("order-sf-pend")) == 1, "a delivered webhook was sent again after a restart")
        with open(state) as f:
            lines = f.read().splitlines()
        check(all(json.loads(line)["seq"] >= 0 for line in lines), "the journal holds a bad line")
    finally:
        for s in sims:
            if s.proc.poll() is None:
                check(s.stop() == 0, "%s: exit status" % s.name)
        rx.close()


def test_state_file_refuses_bad():
    """state_file: a corrupt middle line stops the start (file:line); a second sim on it is refused"""
    state = os.path.join(TMP, "corrupt.jsonl")
    good = Sim("corrupt-0", state_file=state)
    good.charge("k-c1", "order-c1")
    good.charge("k-c2", "order-c2")
    # A second sim on the same journal must not start.
    conf = good.conf.replace("corrupt-0", "corrupt-x")
    with open(good.conf) as f, open(conf, "w") as g:
        g.write(f.read().replace("127.0.0.1:%d" % good.port, "127.0.0.1:%d" % free_port()))
    r = subprocess.run([SIM, "-c", conf], capture_output=True, timeout=5, env=SIM_ENV)
    check(r.returncode == 1 and "is in use by another process" in good.log_text(),
          "a second sim on the journal: exit %d %r" % (r.returncode, r.stderr[-300:]))
    check(good.stop() == 0, "exit status")
    with open(state) as f:
        lines = f.read().splitlines()
    check(len(lines) == 2, "two charges, two lines: %r" % lines)
    with open(state, "w") as f:
        f.write(lines[0] + "\n" + "garbage\n" + lines[1] + "\n")
    r = subprocess.run([SIM, "-c", good.conf], capture_output=True, timeout=5, env=SIM_ENV)
    check(r.returncode == 1 and (state + ":2:") in good.log_text(),
          "exit %d; log %r" % (r.returncode, good.log_text()[-300:]))


def make_ca(dirname):
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    def run(*args):
        r = subprocess.run(["openssl"] + list(args), capture_output=True, timeout=30, cwd=dirname)
        check(r.returncode == 0, "openssl %s: %s" % (" ".join(args), r.stderr.decode()[-500:]))

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=sim test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(dirname, "ext.cnf"), "w") as f:
        f.write("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    run("req", "-x509", *ec, "-keyout", "other.key", "-out", "other.pem", "-days", "2", "-subj", "/CN=other")
    return {n: os.path.join(dirname, n) for n in ("ca.pem", "server.pem", "server.key", "other.key")}


def test_tls():
    """tls_cert/tls_key: HTTPS verified against a throwaway CA; plain HTTP gets nothing"""
    import ssl
    d = tempfile.mkdtemp(prefix="tls.", dir=TMP)
    files = make_ca(d)
    ctx = ssl.create_default_context(cafile=files["ca.pem"])
    sim = Sim("tls", ssl_context=ctx, tls_cert=files["server.pem"], tls_key=files["server.key"])
    try:
        status, doc, r = sim.charge("k-tls", "order-tls", 1234)
        check(status == 200 and doc["status"] == "succeeded" and doc["order_id"] == "order-tls"
              and doc["amount_cents"] == 1234, "over https: %s %r" % (status, doc))
        status, doc = sim.cancel("order-tls")
        check(status == 200 and doc["status"] == "refunded", "cancel over https: %s %r" % (status, doc))
        check(sim.stats()["charges"] == 1, "admin over https")
        plain = Sim.__new__(Sim)
        plain.port, plain.ssl_context = sim.port, None
        try:
            status = plain.request("GET", "/admin/stats", timeout=2)[0]
            raise Fail("plain HTTP on the HTTPS port answered %s" % status)
        except (http.client.HTTPException, ConnectionError, TimeoutError, OSError):
            pass
        # Verification really happens: another CA's context refuses the server.
        other = ssl.create_default_context(cafile=files["server.pem"])
        other.check_hostname = True
        sim.ssl_context = other
        try:
            sim.request("GET", "/admin/stats", timeout=2)
            raise Fail("a client trusting another CA accepted the server")
        except ssl.SSLError:
            pass
        finally:
            sim.ssl_context = ctx
        check(sim.request("GET", "/admin/stats")[0] == 200, "the sim survived the failed handshakes")
    finally:
        check(sim.stop() == 0, "exit status")
    bad = os.path.join(TMP, "tls-bad.conf")
    for extra in ("tls_cert = %s\n" % files["server.pem"],
                  "tls_cert = %s\ntls_key = %s\n" % (files["server.pem"], files["other.key"]),
                  "tls_cert = %s/nope.pem\ntls_key = %s\n" % (d, files["server.key"])):
        with open(bad, "w") as f:
            f.write(extra)
        r = subprocess.run([SIM, "-t", "-c", bad], capture_output=True, timeout=5, env=SIM_ENV)
        check(r.returncode != 0 and b"tls_" in r.stderr, "%r: exit %d %r" % (extra, r.returncode, r.stderr))


def test_main_sim_exits_clean():
    """the long-running sim stops cleanly and logged no sanitizer report"""
    sim, rx = main_sim()
    check(sim.stop() == 0, "exit status %s" % sim.proc.returncode)
    rx.close()
    for name in os.listdir(TMP):
        if name.endswith((".log", ".stderr")):
            with open(os.path.join(TMP, name), errors="replace") as f:
                text = f.read()
            for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                check(marker not in text, "%s in %s:\n%s" % (marker, name, text[-2000:]))


TESTS = [
    test_sign_vector, test_sign_now_verifies, test_sign_refuses, test_conf_check,
    test_charge_key_missing, test_charge_validation, test_same_key_same_answer, test_key_reuse_409,
    test_get_charge, test_decline_rate_0, test_decline_rate_1_and_latency, test_seed_repeatable,
    test_many_charges,
    test_timeout_then_webhook, test_webhook_retries, test_webhook_gives_up,
    test_webhook_receiver_down, test_outage_switch, test_routes, test_sigterm_answers_held, test_sigquit_and_sigint_stop,
    test_admin_allow,
    test_cancel_pending,
    test_cancel_succeeded_refunds,
    test_cancel_declined,
    test_cancel_before_charge,
    test_cancel_route,
    test_admin_charges,
    test_request_id,
    test_state_file_restart,
    test_state_file_refuses_bad,
    test_tls,
    test_main_sim_exits_clean,
]


def main():
    print("1..%d" % len(TESTS), flush=True)
    failed = 0
    try:
        for n, t in enumerate(TESTS, 1):
            name = t.__doc__.strip()
            t0 = time.monotonic()
            try:
                t()
                print("ok %d - %s (%.2fs)" % (n, name, time.monotonic() - t0), flush=True)
            except Exception as e:
                failed += 1
                print("not ok %d - %s" % (n, name), flush=True)
                detail = str(e) if isinstance(e, Fail) else traceback.format_exc()
                for line in detail.splitlines():
                    print("# " + line, flush=True)
    finally:
        for p in STARTED:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        if failed == 0:
            shutil.rmtree(TMP, ignore_errors=True)
        else:
            print("# logs and confs kept in %s" % TMP, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
