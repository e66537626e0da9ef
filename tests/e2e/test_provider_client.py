#!/usr/bin/env python3
"""paymentsd's provider client (worker/provider.c) against a fake provider.

Regression tests of what a review found:

- provider_timeout is a deadline for the whole call: a provider that sends
  its headers and then trickles the body one byte at a time does not keep a
  checkout (POST) or the housekeeper (GET) waiting past it, and the
  connection is dropped, not reused;
- a 402 answer to a charge is a refusal: FAILED declined; any other 4xx,
  408, 429 and 5xx are "unavailable" (4xx logged as an error);
- a refused provider port: every call ends at once as unavailable, and
  nothing leaks (the sanitizer build checks the processes' stderr);
- any 2xx with a valid body is an answer (201, 202), and a valid body is
  one about this order: its order_id and amount_cents (and currency when
  named), a charge_id of 1..255 visible ASCII characters, whole.  Anything
  else is unavailable, logged as a protocol error.  A charge_id used to be
  cut to 127 bytes, mid-character for UTF-8, which PostgreSQL refused: the
  order stayed PROCESSING (wedged) and its key in progress.

The fake provider is a small socket server in this process: it answers
what the test says, and any GET of an order it was not told about with 503,
so that a housekeeper running here never settles another test's order."""

import http.client
import json
import select
import socket
import threading
import time

from harness import (DEV_SECRET, TAP, Paymentsd, checkout, db_pending_order, free_port, new_key,
                     order_status, psql, wait_until)

t = TAP()
T0 = time.monotonic()
TIMEOUT = 0.8           # provider_timeout below
TRICKLE_EVERY = 0.3     # one body byte this often
TRICKLE_MAX = 6.0       # then the fake gives up and closes: every test is bounded
BODY = {"buyer_id": "buyer-pc", "seller_id": "seller-pc", "amount_cents": 2500, "currency": "EUR"}
TRUSTED = dict(BODY, buyer_trust="trusted")


DROP = object()     # in a charge answer: leave this member out


class FakeProvider:
    """A provider on a free loopback port.  `charge` says how POST
    /v1/charges is answered: (status, object) or "trickle"; the object's
    members go over an echo of the request's order_id, amount_cents and
    currency (a member set to DROP is left out), or it is a function of the
    request's JSON body returning the raw bytes to send.  `get_order` and
    `get` say the same for the GET of one order id.  Every request is
    recorded in `seen` with the time it arrived and, for a trickled answer,
    when the client closed the connection ("closed", seconds after the
    request) or that the fake gave up first ("gave_up")."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.charge = (200, {"charge_id": "ch_1", "status": "succeeded"})
        self.get_order = None
        self.get = "trickle"
        self.seen = []
        self.connections = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def requests(self, method, path_end=""):
        with self.lock:
            return [r for r in self.seen if r["method"] == method and r["path"].endswith(path_end)]

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _answer(self, method, path, body):
        if method == "POST" and path == "/v1/charges":
            if not isinstance(self.charge, tuple):
                return self.charge
            status, obj = self.charge
            try:
                req = json.loads(body)
            except ValueError:
                req = {}
            if callable(obj):
                return status, obj(req)
            echo = {k: req.get(k) for k in ("order_id", "amount_cents", "currency")}
            echo.update(obj)
            return status, {k: v for k, v in echo.items() if v is not DROP}
        if method == "GET" and self.get_order is not None and path == "/v1/charges/" + self.get_order:
            return self.get
        return (503, {"error": {"code": "unavailable", "message": "not this test's order"}})

    def _serve(self, conn):
        conn.settimeout(10)
        buf = b""
        try:
            while True:     # keep-alive: one request after another
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {k.strip().lower(): v.strip()
                           for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)}
                n = int(headers.get("content-length", "0"))
                while len(buf) < n:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:n], buf[n:]
                rec = {"method": method, "path": path, "at": time.monotonic()}
                with self.lock:
                    self.seen.append(rec)
                answer = self._answer(method, path, body)
                if answer == "trickle":
                    self._trickle(conn, rec)
                    return
                status, obj = answer
                payload = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
                conn.sendall(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s"
                             % (status, http.client.responses.get(status, "X").encode(), len(payload), payload))
        except OSError:
            pass
        finally:
            conn.close()

    def _trickle(self, conn, rec):
        """Headers at once, then the body a byte every TRICKLE_EVERY: never
        idle for long, never done in time."""
        payload = json.dumps({"charge_id": "ch_trickle", "status": "succeeded", "pad": "x" * 100}).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                     % len(payload))
        end = rec["at"] + TRICKLE_MAX
        for byte in payload:
            if time.monotonic() > end:
                break
            readable, _, _ = select.select([conn], [], [], TRICKLE_EVERY)
            if readable:
                try:
                    data = conn.recv(1)
                except OSError:
                    data = b""
                if not data:
                    rec["closed"] = time.monotonic() - rec["at"]
                    return
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                rec["closed"] = time.monotonic() - rec["at"]
                return
        rec["gave_up"] = time.monotonic() - rec["at"]

    def close(self):
        self.sock.close()


def timed_checkout(d, key, body):
    t0 = time.monotonic()
    r = checkout(d, key, body, timeout=15)
    return r, time.monotonic() - t0


def ended(rec):
    return "closed" in rec or "gave_up" in rec


fake = FakeProvider()
conf = {"provider_url": fake.url, "provider_timeout": "800ms", "idempotency_lock_timeout": "5s",
        "db_timeout": "1s", "outage_pending_cap_cents": "10000", "breaker_threshold": "1000000",
        "webhook_secret": DEV_SECRET}
d = Paymentsd(workers=1, extra=conf).start()

# --- a provider that trickles its answer: the deadline is for the whole call
fake.charge = "trickle"
r, took = timed_checkout(d, new_key("pc-trickle"), TRUSTED)
t.eq((r.status, r.json().get("status")), (201, "PENDING_PAYMENT"),
     "a trickled charge answer: trusted under the cap -> PENDING_PAYMENT")
t.ok(TIMEOUT - 0.1 <= took < 2 * TIMEOUT,
     "after about provider_timeout (%.2fs), not after the trickle" % took)
posts = fake.requests("POST")
rec = posts[-1] if posts else {}
t.ok(wait_until(lambda: ended(rec), TRICKLE_MAX + 2) and rec.get("closed", 99) < 2 * TIMEOUT,
     "paymentsd drops the connection at the deadline", rec)
t.ok("no complete answer within 800 ms" in d.log(), "the log says why", d.log()[-1500:])
r, took = timed_checkout(d, new_key("pc-trickle"), BODY)
t.eq((r.status, r.json().get("status"), r.json().get("failure_reason")),
     (201, "FAILED", "provider_unavailable"), "untrusted: FAILED provider_unavailable (%.2fs)" % took)

fake.charge = (200, {"charge_id": "ch_2", "status": "succeeded"})
before = fake.connections
r = checkout(d, new_key("pc-after"), BODY)
t.eq((r.status, r.json().get("status")), (201, "PAID"), "the provider answers again: PAID")
t.ok(fake.connections > before, "on a new connection: the abandoned one was not reused")

# --- a 4xx answer to a charge: only 402 refuses the payment itself
fake.charge = (402, {"error": {"code": "card_declined", "message": "refused"}})
r = checkout(d, new_key("pc-402"), TRUSTED)
o = r.json()
t.eq((r.status, o.get("status"), o.get("failure_reason")), (201, "FAILED", "declined"),
     "HTTP 402 to a charge: FAILED declined, even trusted under the cap")
# any other 4xx says nothing about the charge (409: the key is being
# processed by another request): never a final FAILED on its word
for code in (400, 401, 404, 409, 422):
    fake.charge = (code, {"error": {"code": "invalid_request", "message": "refused"}})
    r = checkout(d, new_key("pc-4xx"), TRUSTED)
    o = r.json()
    t.eq((r.status, o.get("status")), (201, "PENDING_PAYMENT"),
         "HTTP %d to a charge: unavailable -> PENDING_PAYMENT, not declined" % code)
t.ok(wait_until(lambda: "[error]" in d.log() and "HTTP 422" in d.log(), 2)
     and any("[error]" in line and "HTTP 400" in line and "invalid_request" in line
             for line in d.log().splitlines()),
     "logged as an error, with the provider's error code", d.log()[-1500:])
for code in (408, 429, 500, 503):
    fake.charge = (code, {"error": {"code": "try_later", "message": "busy"}})
    r = checkout(d, new_key("pc-5xx"), TRUSTED)
    t.eq((r.status, r.json().get("status")), (201, "PENDING_PAYMENT"),
         "HTTP %d to a charge: unavailable -> PENDING_PAYMENT" % code)

# --- any 2xx with a valid body is an answer
for code in (200, 201, 202):
    fake.charge = (code, {"charge_id": "ch_%d" % code, "status": "succeeded"})
    r = checkout(d, new_key("pc-2xx"), BODY)
    t.eq((r.status, r.json().get("status")), (201, "PAID"), "HTTP %d with a valid body: PAID" % code)
fake.charge = (201, {"status": "declined", "charge_id": DROP})
r = checkout(d, new_key("pc-2xx"), TRUSTED)
t.eq((r.status, r.json().get("status"), r.json().get("failure_reason")), (201, "FAILED", "declined"),
     "HTTP 201 declined, without a charge_id: FAILED declined")

# the longest charge_id is kept whole
long_id = "ch_" + "x" * 252
fake.charge = (200, {"charge_id": long_id, "status": "succeeded"})
r = checkout(d, new_key("pc-id255"), BODY)
oid = r.json().get("order_id")
t.eq((r.status, r.json().get("status")), (201, "PAID"), "a charge_id of 255 characters: PAID")
t.eq(psql("SELECT provider_charge_id FROM orders WHERE id = '%s'" % oid) if oid else None,
     [[long_id]], "and stored whole")


def not_believed(name, answer, why):
    """A charge answer not to believe: unavailable for both kinds of buyer
    (a final answer, the order not left PROCESSING), the same answer on a
    retry, and a protocol error naming `why` in the log."""
    fake.charge = answer
    key = new_key("pc-bad")
    r1 = checkout(d, key, BODY)
    r2 = checkout(d, new_key("pc-bad"), TRUSTED)
    got = ((r1.status, r1.json().get("status"), r1.json().get("failure_reason")),
           (r2.status, r2.json().get("status")))
    t.eq(got, ((201, "FAILED", "provider_unavailable"), (201, "PENDING_PAYMENT")),
         name + " (untrusted FAILED provider_unavailable, trusted PENDING_PAYMENT)")
    oid = r1.json().get("order_id")
    again = checkout(d, key, BODY)
    t.ok(oid and order_status(oid) == ("FAILED", "provider_unavailable")
         and again.status == 201 and again.body == r1.body
         and again.headers.get("idempotent-replayed") == "true",
         name + ": the order is final, not wedged; a retry replays it", (oid and order_status(oid), again))
    t.ok(wait_until(lambda: any("protocol error" in line and why in line and oid in line
                                for line in d.log().splitlines()), 2),
         name + ": logged as a protocol error (%s)" % why, d.log()[-1500:])


def raw_answer(charge_id):
    """A succeeded answer about the request's order whose charge_id is the
    raw bytes given (not JSON-escaped)."""
    return lambda req: (b'{"order_id": "%s", "amount_cents": %d, "currency": "%s", "status": "succeeded", '
                        b'"charge_id": "%s"}' % (req["order_id"].encode(), req["amount_cents"],
                                                 req["currency"].encode(), charge_id))


not_believed("regression: charge_id invalid UTF-8 is unavailable, not truncated",
             (200, raw_answer(b"ch_\xff\xfe\xc3")), "charge_id has byte 0xff")
not_believed("regression: a 300-byte UTF-8 charge_id is unavailable, not cut mid-character",
             (200, {"charge_id": "\u00e9" * 150, "status": "succeeded"}), "charge_id is 300 bytes")
not_believed("a 300-byte charge_id is unavailable, not truncated",
             (200, {"charge_id": "c" * 300, "status": "succeeded"}), "charge_id is 300 bytes")
not_believed("a succeeded charge without a charge_id",
             (200, {"charge_id": DROP, "status": "succeeded"}), "no charge_id")
not_believed("an empty charge_id", (200, {"charge_id": "", "status": "succeeded"}), "charge_id is 0 bytes")
not_believed("a charge_id with a control character",
             (200, {"charge_id": "ch\u0001x", "status": "succeeded"}), "charge_id has byte 0x01")
not_believed("a charge_id with a space", (200, {"charge_id": "ch 1", "status": "succeeded"}),
             "charge_id has byte 0x20")
not_believed("a charge_id that is not a string", (200, {"charge_id": 12, "status": "succeeded"}),
             "charge_id is not a string")
not_believed("an answer naming another order_id",
             (200, {"order_id": "00000000-0000-0000-0000-000000000000", "charge_id": "ch_o",
                    "status": "succeeded"}), "another order_id")
not_believed("an answer naming another amount", (200, {"amount_cents": 2499, "charge_id": "ch_a",
                                                       "status": "succeeded"}), "amount_cents is not")
not_believed("an answer naming another currency", (200, {"currency": "USD", "charge_id": "ch_c",
                                                         "status": "succeeded"}), "currency is not")
not_believed("an answer without order_id", (200, {"order_id": DROP, "charge_id": "ch_n",
                                                  "status": "succeeded"}), "no order_id")
not_believed("an answer without amount_cents", (200, {"amount_cents": DROP, "charge_id": "ch_n",
                                                      "status": "succeeded"}), "no amount_cents")
not_believed("an amount_cents that is a string", (200, {"amount_cents": "2500", "charge_id": "ch_s",
                                                        "status": "succeeded"}), "amount_cents is not")
not_believed("an unknown status", (200, {"charge_id": "ch_u", "status": "pending"}), "unknown status pending")
not_believed("a 2xx body that is not JSON", (202, lambda req: b"accepted"), "not a JSON object")
t.ok(d.stop(), "no process left behind")

# --- the housekeeper's GET has the same deadline
oid = db_pending_order(new_key("pc-get"))
fake.get_order = oid
fake.get = "trickle"
h = Paymentsd(workers=1, extra=dict(conf, housekeeper_interval="200ms", pending_reconcile_age="1s")).start()
gets = lambda: fake.requests("GET", "/" + oid)  # noqa: E731
t.ok(wait_until(lambda: gets() and ended(gets()[0]), 5 + TRICKLE_MAX),
     "the housekeeper asks the provider about a pending order", h.log()[-1500:])
rec = gets()[0] if gets() else {}
t.ok(rec.get("closed", 99) < 2 * TIMEOUT, "a trickled GET answer: dropped at the deadline", rec)
t.eq(order_status(oid), ("PENDING_PAYMENT", ""), "and nothing is decided")
fake.get = (404, {"error": {"code": "charge_not_found", "message": "never received"}})
fake.charge = (200, {"charge_id": "ch_3", "status": "succeeded"})
t.ok(wait_until(lambda: order_status(oid) == ("PAID", ""), 8),
     "the next round: not found, charged again under the same key, PAID")
t.ok(h.stop(), "no process left behind")

# --- a refused provider port: at once unavailable, nothing leaks
refused = "http://127.0.0.1:%d" % free_port()
oid = db_pending_order(new_key("pc-refused"))
fake.get_order = None
rd = Paymentsd(workers=1, extra=dict(conf, provider_url=refused, housekeeper_interval="200ms",
                                     pending_reconcile_age="1s", log_level="debug")).start()
answers = []
worst = 0.0
for i in range(10):
    r, took = timed_checkout(rd, new_key("pc-refused"), TRUSTED if i % 2 == 0 else BODY)
    worst = max(worst, took)
    answers.append((r.status, r.json().get("status"), r.json().get("failure_reason")))
t.eq(sorted(set(answers)), [(201, "FAILED", "provider_unavailable"), (201, "PENDING_PAYMENT", None)],
     "refused: trusted PENDING_PAYMENT, untrusted FAILED provider_unavailable")
t.ok(worst < TIMEOUT, "answered without waiting for the deadline (slowest %.2fs)" % worst)
t.ok(wait_until(lambda: "pending order %s: the provider says unavailable" % oid in rd.log(), 5),
     "the housekeeper's GET is refused too", rd.log()[-1500:])
t.eq(order_status(oid), ("PENDING_PAYMENT", ""), "and decide nothing")
t.ok(rd.stop(), "no process left behind")

fake.close()
t.diag("took %.1fs" % (time.monotonic() - T0))
t.done()
