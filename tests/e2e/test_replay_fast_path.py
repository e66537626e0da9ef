#!/usr/bin/env python3
"""Cached replays answered by the front reader (worker/replay.c, issue 10).

A replay of POST /checkout whose key the shared cache holds is answered in
front of evhttp when evhttp has nothing unanswered on the connection, and by
the handler otherwise (here: pipelined behind a GET).  Both answers must be
the same bytes (but Date, and X-Request-Id when the client sends none), the
same access-log line and the same metrics.  Anything the handler answers
otherwise (a reused key, a key in progress, a bad body) must still get its
own answer, and pipelined answers keep their order.  Which path answered is
read from the worker's debug log ("answered by the front reader")."""

import json
import re
import signal
import socket
import threading
import time

from harness import TAP, Paymentsd, ProviderSim, checkout, new_key, request, wait_until
from rawhttp import exchange as raw_exchange, parse, read_until_close
from slowreader import Log, fill, walk

t = TAP()
# Each charge takes a second: long enough to be behind, or in progress.
sim = ProviderSim({"latency": "1s"}).start()
d = Paymentsd(workers=1, extra={"provider_url": sim.url, "provider_timeout": "3s",
                                "log_level": "debug"}).start()

BODY = {"buyer_id": "fast-buyer", "seller_id": "fast-seller", "amount_cents": 1999, "currency": "EUR"}
BODY_BYTES = json.dumps(BODY).encode()


def post(key, body=BODY_BYTES, extra=b"", version=b"HTTP/1.1"):
    return (b"POST /checkout " + version + b"\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Idempotency-Key: " + key.encode() + b"\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


def exchange(data, expect):
    """Send data on a new connection and half-close it; returns (raw bytes,
    the answers: expect of them, or a ValueError)."""
    out, _ = raw_exchange(d.port, data, shut=True, timeout=10.0)
    answers = parse(out)
    if len(answers) != expect:
        raise ValueError("%d answers, not %d: %r" % (len(answers), expect, out[:300]))
    return out, answers


def log_count(text):
    with open(d.log_path) as f:
        return f.read().count(text)


def fronted():
    """How many replays the front reader has answered so far."""
    return log_count("answered by the front reader")


def raw_answers(data):
    """The answers' bytes, one per answer, Date lines taken out."""
    out, pos = [], 0
    while pos < len(data):
        end = data.index(b"\r\n\r\n", pos) + 4
        n = int(re.search(rb"\r\nContent-Length: (\d+)\r\n", data[pos:end]).group(1))
        out.append(re.sub(rb"\r\nDate: [^\r]*", b"", data[pos:end + n]))
        pos = end + n
    return out


def scrape():
    """The /metrics series that count requests and replays."""
    text = request(d.port, "GET", "/metrics").body.decode()
    series = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name, _, value = line.rpartition(" ")
        if re.match(r"paymentsd_(http_requests_total|checkouts_total|idempotent_replays_total"
                    r"|shm_cache_lookups_total|http_request_duration_seconds_count)", name):
            series[name] = float(value)
    return series


def delta(before, after):
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def access_lines():
    with open(d.access_path) as f:
        return [json.loads(line) for line in f if line.strip()]


# The first answer: a new order, from PostgreSQL.
key = new_key("fast")
r = checkout(d, key, BODY)
t.eq(r.status, 201, "a new checkout: 201")

# The same replay, answered by the handler (pipelined behind a GET), then
# by the front reader (alone): the same bytes, with the client's request id.
ident = b"X-Request-Id: fast-path-id\r\nUser-Agent: replay-test/1\r\nX-Forwarded-For: 192.0.2.7\r\n"
n0 = fronted()
out_h, ans_h = exchange(HEALTHZ + post(key, extra=ident), 2)
n1 = fronted()
out_f, ans_f = exchange(post(key, extra=ident), 1)
n2 = fronted()
t.eq((n1 - n0, n2 - n1), (0, 1), "behind a GET the handler answers the replay; alone, the front reader")
t.eq([a.status for a in ans_h + ans_f], [200, 201, 201], "both replays: 201")
handler, front = raw_answers(out_h)[1], raw_answers(out_f)[0]
t.eq(front, handler, "the front reader's answer is byte for byte the handler's (but Date)")
t.ok(b"\r\nIdempotent-Replayed: true\r\n" in front and b"\r\nLocation: /orders/" in front
     and b"\r\nX-Request-Id: fast-path-id\r\n" in front, "with Idempotent-Replayed, Location and the client's id",
     front[:300])
t.ok(re.search(rb"\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n", out_f) is not None,
     "and a Date as evhttp writes it", out_f[:300])

# Without an id from the client, or with an invalid one, both make one.
out_h, _ = exchange(HEALTHZ + post(key, extra=b"X-Request-Id: bad id\r\n"), 2)
out_f, _ = exchange(post(key, extra=b"X-Request-Id: bad id\r\n"), 1)
strip = lambda b: re.sub(rb"\r\nX-Request-Id: [0-9a-f]{32}\r\n", b"\r\nX-Request-Id: *\r\n", b)
t.eq(strip(raw_answers(out_f)[0]), strip(raw_answers(out_h)[1]),
     "an invalid X-Request-Id: a new one on both paths, the rest the same")

# Requests that say the same thing in other bytes: the same answer both ways
# (header values as evhttp reads them: leading spaces, not tabs, dropped).
VARIANTS = [
    ("no Host field", lambda r: r.replace(b"Host: t\r\n", b"")),
    ("field names in lower case", lambda r: r.replace(b"Idempotency-Key:", b"idempotency-key:").replace(
        b"Content-Type:", b"content-type:")),
    ("a key with a tab before it", lambda r: r.replace(b"Idempotency-Key: ", b"Idempotency-Key:\t")),
    ("a key with spaces and a tab after it", lambda r: r.replace(key.encode() + b"\r\n", key.encode() + b"  \t\r\n")),
    ("the key as an RFC 8941 string", lambda r: r.replace(key.encode(), b'"' + key.encode() + b'"')),
    ("a charset", lambda r: r.replace(b"application/json", b"application/json; charset=utf-8")),
    ("a Content-Type with a tab before it", lambda r: r.replace(b"Content-Type: ", b"Content-Type:\t")),
    ("an X-Request-Id with a tab before it", lambda r: r.replace(b"Host: t", b"Host: t\r\nX-Request-Id:\tid-1")),
    ("an invalid X-Request-Id, then a valid one",
     lambda r: r.replace(b"Host: t", b"Host: t\r\nX-Request-Id: a b\r\nX-Request-Id: id-2")),
    ("a valid X-Request-Id, then another",
     lambda r: r.replace(b"Host: t", b"Host: t\r\nX-Request-Id: id-3\r\nX-Request-Id: id-4")),
    ("an X-Request-Id of 129 characters", lambda r: r.replace(b"Host: t", b"Host: t\r\nX-Request-Id: " + b"i" * 129)),
    ("an empty Idempotency-Key and the key", lambda r: r.replace(b"Host: t", b"Host: t\r\nIdempotency-Key:")),
    ("Connection: keep-alive", lambda r: r.replace(b"Host: t", b"Host: t\r\nConnection: keep-alive")),
    ("an Origin (no CORS configured)", lambda r: r.replace(b"Host: t", b"Host: t\r\nOrigin: http://x.test")),
    ("a body with spaces", lambda r: r.replace(b"Content-Length: %d\r\n\r\n" % len(BODY_BYTES) + BODY_BYTES,
                                              b"Content-Length: %d\r\n\r\n " % (len(BODY_BYTES) + 2)
                                              + BODY_BYTES + b" ")),
    ("a query string", lambda r: r.replace(b"POST /checkout ", b"POST /checkout?x=1 ")),
]
for name, change in VARIANTS:
    req = change(post(key))
    out_h, _ = exchange(HEALTHZ + req, 2)
    before = fronted()
    out_f, _ = exchange(req, 1)
    h, f = (strip(raw_answers(o)[-1]) for o in (out_h, out_f))
    t.eq(f, h, "%s: the same answer both ways (%s, %s)" % (
        name, h.split(b"\r\n", 1)[0].decode(), "front reader" if fronted() > before else "handler"))

# Access log and metrics: 3 replays each way, the same lines and counts.
# Phase one: each behind a GET (the handler); phase two: each before it.
logged = len(access_lines())
before = scrape()
for _ in range(3):
    exchange(HEALTHZ + post(key, extra=ident), 2)
mid = scrape()
n3 = fronted()
for _ in range(3):
    exchange(post(key, extra=ident) + HEALTHZ, 2)
after = scrape()
t.eq(fronted() - n3, 3, "the second phase's replays were answered by the front reader")
by_handler, by_front = delta(before, mid), delta(mid, after)
t.eq(by_front, by_handler, "the metrics count front-reader replays as the handler's")
for series in ['paymentsd_http_requests_total{route="checkout",status="201"}',
               'paymentsd_idempotent_replays_total{source="cache"}',
               'paymentsd_checkouts_total{outcome="replayed"}',
               'paymentsd_shm_cache_lookups_total{result="hit"}']:
    t.eq(by_front.get(series), 3, "3 more %s" % series)
lines = access_lines()[logged:]
replays = [l for l in lines if l.get("route") == "checkout"]
keep = lambda l: {k: v for k, v in l.items() if k not in ("time", "client_port", "duration_ms")}
t.eq(len(replays), 6, "six access-log lines for six replays")
t.ok(len(replays) == 6 and all(keep(l) == keep(replays[0]) for l in replays),
     "the same line from both paths (but time, client port and duration)", replays)
t.eq(replays[0].get("user_agent") if replays else None, "replay-test/1", "with the client's user agent")
t.eq(replays[0].get("x_forwarded_for") if replays else None, "192.0.2.7", "and its X-Forwarded-For")

# Pipelined: a new checkout (the database, the provider), then replays and a
# GET: every answer in order, each with its own request id.
n4 = fronted()
other = new_key("fast-new")
ids = [b"p%d" % i for i in range(5)]
reqs = [post(other), post(key), HEALTHZ, post(key), post(key)]
data = b"".join(r.replace(b"\r\n\r\n", b"\r\nX-Request-Id: " + i + b"\r\n\r\n", 1) for r, i in zip(reqs, ids))
_, ans = exchange(data, 5)
t.eq([(a.status, a.headers.get("x-request-id"), a.headers.get("idempotent-replayed")) for a in ans],
     [(201, "p0", None), (201, "p1", "true"), (200, "p2", None), (201, "p3", "true"), (201, "p4", "true")],
     "pipelined behind a new checkout: every answer in order")
t.eq(fronted() - n4, 0, "none overtook: the handler answered them all")
n5 = fronted()
_, ans = exchange(post(key) * 4 + HEALTHZ + post(key), 6)
t.eq([a.status for a in ans], [201, 201, 201, 201, 200, 201], "4 pipelined replays, a GET, a replay: in order")
t.eq(fronted() - n5, 4, "the 4 before the GET answered by the front reader, the one after it not")

# What the handler answers otherwise: it still does.
for name, body, status, code in [
        ("another body", json.dumps(dict(BODY, amount_cents=2000)).encode(), 409, "idempotency_key_reused"),
        ("not JSON", b"{", 400, "invalid_json"),
        ("a member twice", b'{"buyer_id":"a","buyer_id":"b"}', 400, "invalid_json"),
        ("an unknown member", json.dumps(dict(BODY, x=1)).encode(), 422, "validation_failed"),
        ("an amount out of range", json.dumps(dict(BODY, amount_cents=0)).encode(), 422, "validation_failed")]:
    _, ans = exchange(post(key, body=body), 1)
    t.eq((ans[0].status, ans[0].json()["error"]["code"]) if ans else None, (status, code),
         "the key with %s: %d %s" % (name, status, code))
_, ans = exchange(post(key, extra=b"Content-Type: text/plain\r\n").replace(
    b"Content-Type: application/json\r\n", b"", 1), 1)
t.eq(ans[0].status if ans else None, 415, "the key with another Content-Type: 415")
_, ans = exchange(post(key, extra=b"Idempotency-Key: second\r\n"), 1)
t.eq(ans[0].status if ans else None, 400, "the key sent twice: 400")
n6 = fronted()
_, ans = exchange(post(key, extra=b"Connection: close\r\n"), 1)
t.ok(ans and ans[0].status == 201 and ans[0].headers.get("connection") == "close",
     "Connection: close: the replay, and Connection: close", ans)
_, ans = exchange(post(key, version=b"HTTP/1.0"), 1)
t.ok(ans and ans[0].status == 201, "HTTP/1.0: the replay", ans)
t.eq(fronted() - n6, 0, "both answered by the handler")
t.eq(fronted() - n5, 4, "no failed check was answered by the front reader")

# The cached answer keeps a note of its request's body: the same bytes are
# taken without parsing them ("not parsed" in the debug line); other bytes
# are parsed, and replayed only when they say the same.  The body ends with
# its amount and a newline, so that a compare that skipped the last byte,
# or compared only a prefix or the lengths, would show below.
def unparsed():
    return log_count("answered by the front reader (the same bytes, not parsed)")


def parsed():
    return log_count("answered by the front reader (parsed)")


def paths_since(before):
    return (unparsed() - before[0], parsed() - before[1])


def error_of(ans):
    """(status, error code, field) of the only answer, or what came instead."""
    if len(ans) != 1:
        return ans
    err = ans[0].json().get("error", {}) if ans[0].body[:1] == b"{" else {}
    return ans[0].status, err.get("code"), err.get("field")


key3 = new_key("fast-bytes")
B3 = b'{"buyer_id":"fast-buyer","seller_id":"fast-seller","currency":"EUR","amount_cents":1999}\n'
_, ans = exchange(post(key3, body=B3), 1)
t.eq(ans[0].status if ans else None, 201, "a new checkout whose body ends with its amount: 201")
out_h, _ = exchange(HEALTHZ + post(key3, body=B3, extra=ident), 2)
c0 = (unparsed(), parsed())
out_f, _ = exchange(post(key3, body=B3, extra=ident), 1)
t.eq(paths_since(c0), (1, 0), "the same bytes again: answered by the front reader, not parsed")
t.eq(raw_answers(out_f)[0], raw_answers(out_h)[1], "the same answer as the handler's (but Date)")
for name, body in [("its members in another order", json.dumps(json.loads(B3)).encode()),
                   ("a space after it", B3 + b" "),
                   ("its last byte (a newline) cut", B3[:-1]),
                   ("its last byte a space", B3[:-1] + b" "),
                   ("a space before it", b" " + B3),
                   ("a space before the amount", B3.replace(b":1999", b": 1999"))]:
    c0 = (unparsed(), parsed())
    out, _ = exchange(post(key3, body=body, extra=ident), 1)
    t.eq(paths_since(c0), (0, 1), "the same body with %s: parsed by the front reader" % name)
    t.eq(raw_answers(out)[0] if out else None, raw_answers(out_h)[1], "and the same answer")
for name, body, want in [
        ("its amount's last digit changed", B3.replace(b"1999", b"1998"),
         (409, "idempotency_key_reused", None)),
        ("a byte in the middle changed", B3.replace(b"fast-buyer", b"fast-buyeR"),
         (409, "idempotency_key_reused", None)),
        ("its closing brace cut", B3[:-2] + b"\n", (400, "invalid_json", None))]:
    n7 = fronted()
    _, ans = exchange(post(key3, body=body), 1)
    t.eq(error_of(ans), want, "the key with %s: %d %s" % (name, want[0], want[1]))
    t.eq(fronted() - n7, 0, "not answered by the front reader")

# A reload may stop accepting what the noted body says (its amount, its
# currency): the same bytes then get the handler's 422, not the replay.
for setting, value, field in [("max_amount_cents", "1000", "amount_cents"),
                              ("currencies", "USD GBP", "currency")]:
    kept = d.settings.get(setting)
    d.settings[setting] = value
    d.write_conf()
    old = d.workers()
    d.signal(signal.SIGHUP)
    t.ok(wait_until(lambda: len(d.workers()) == 1 and not set(d.workers()) & set(old), 15),
         "reloaded with %s = %s" % (setting, value))
    n7 = fronted()
    _, ans = exchange(post(key3, body=B3), 1)
    t.eq(error_of(ans), (422, "validation_failed", field),
         "the same bytes, now out of %s: 422 on %s" % (setting, field))
    t.eq(fronted() - n7, 0, "from the handler")
    if kept is None:
        del d.settings[setting]
    else:
        d.settings[setting] = kept
    d.write_conf()
    old = d.workers()
    d.signal(signal.SIGHUP)
    t.ok(wait_until(lambda: len(d.workers()) == 1 and not set(d.workers()) & set(old), 15),
         "%s back" % setting)
c0 = (unparsed(), parsed())
out_f, _ = exchange(post(key3, body=B3, extra=ident), 1)
t.eq(paths_since(c0), (1, 0), "after the reloads, the same bytes: the replay, not parsed")
t.eq(raw_answers(out_f)[0] if out_f else None, raw_answers(out_h)[1], "the same answer")

# A client that reads late: neither the answers made here nor evhttp's
# later ones overtake each other, and its EOF right after its requests
# still gets every answer.  Which side is answering when the socket fills
# is chance here (a request split across two reads goes to evhttp, and
# those after it wait their turn); the case where answers made here wait
# is made certain below.
N = 10000
parts, want = [], []
for i in range(N):
    rid = b"late-%d" % i
    req = HEALTHZ if i % 500 == 499 else post(key)
    parts.append(req.replace(b"\r\n\r\n", b"\r\nX-Request-Id: " + rid + b"\r\n\r\n", 1))
    want.append(rid.decode())
data = b"".join(parts)
waited = log_count("waits for the socket")
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.settimeout(20)
s.connect(("127.0.0.1", d.port))
sender = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
sender.start()
# Read once the socket is full (about 4.8 MB of answers against at most
# 4 MiB of send buffer and 64 KiB of receive buffer), or after 3 s.
wait_until(lambda: log_count("waits for the socket") > waited, timeout=3)
out = bytearray()
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    b = s.recv(65536)
    if not b:
        break
    out += b
sender.join(20)
s.close()
try:
    got = [re.search(rb"\r\nX-Request-Id: ([^\r]*)\r\n", a).group(1).decode() for a in raw_answers(bytes(out))]
except (ValueError, AttributeError) as e:
    got = [repr(e)]
first_diff = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
t.ok(got == want, "%d pipelined requests to a client that reads late: every answer, in order" % N,
     "%d answers; from #%d: got %r, want %r" % (len(got), first_diff, got[first_diff:first_diff + 3],
                                                 want[first_diff:first_diff + 3]))

# Replays sent one at a time (each arrives whole, so the front reader
# answers it) to a client that reads nothing, until an answer made here
# waits for the socket; then a GET (evhttp's) and one more replay, and EOF:
# every answer comes whole and in order.
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.settimeout(20)
s.connect(("127.0.0.1", d.port))
sent = fill(s, Log(d.log_path), post(key))
t.ok(sent is not None, "some answers made here waited for the socket (after %s replays)" % sent)
s.sendall(HEALTHZ + post(key))
s.shutdown(socket.SHUT_WR)
got, err = read_until_close(s, timeout=20)
s.close()
statuses, cut = walk(got)
t.ok(cut is None and err is None and statuses == [201] * (sent or 0) + [200, 201],
     "then a GET and a replay: every answer whole, in order",
     (cut or err, statuses[-3:], len(statuses)))

# A key in progress (its charge waits at the provider): 409 in use.
busy = new_key("fast-busy")
first = {}
th = threading.Thread(target=lambda: first.update(r=checkout(d, busy, BODY, timeout=15)))
th.start()
time.sleep(0.4)
n7 = fronted()
_, ans = exchange(post(busy), 1)
t.eq((ans[0].status, ans[0].json()["error"]["code"]) if ans else None, (409, "idempotency_key_in_use"),
     "a key in progress: 409 in use")
th.join(20)
t.eq(first["r"].status if "r" in first else None, 201, "and its first request: 201")
_, ans = exchange(post(busy), 1)
t.ok(ans and ans[0].status == 201 and ans[0].headers.get("idempotent-replayed") == "true",
     "once it completed: a replay", ans)
t.eq(fronted() - n7, 1, "only that one answered by the front reader")

t.ok(d.stop(), "stopped")

# A connection that only sends replays answered here is not idle: it
# outlives client_timeout (evhttp's timer restarts as for its own requests).
e = Paymentsd(workers=1, extra={"provider_url": sim.url, "client_timeout": "1s",
                                "log_level": "debug"}).start()
key2 = new_key("fast-timeout")
t.eq(checkout(e, key2, BODY).status, 201, "another server, client_timeout 1s: a new checkout")
def replay_on(sock, key):
    """Send a replay of key on sock; the status and headers of its answer."""
    sock.sendall(post(key))
    buf = b""
    while b"\r\n\r\n" not in buf or len(buf) < buf.index(b"\r\n\r\n") + 4 + int(
            re.search(rb"Content-Length: (\d+)", buf).group(1)):
        b = sock.recv(65536)
        if not b:
            raise OSError("closed after %r" % buf[:100])
        buf += b
    a = parse(buf)[0]
    return a.status, a.headers


s = socket.create_connection(("127.0.0.1", e.port), timeout=5)
statuses = []
try:
    for _ in range(8):
        statuses.append(replay_on(s, key2)[0])
        time.sleep(0.4)
except (OSError, ValueError, AttributeError) as exc:
    statuses.append(repr(exc))
with open(e.log_path) as f:
    fronted_e = f.read().count("answered by the front reader")
t.eq(statuses, [201] * 8, "8 replays 0.4 s apart on one connection: all answered, none cut by the timeout")
t.eq(fronted_e, 8, "all by the front reader")

# A graceful stop waits a quiet period after the last request; replays
# answered here count as requests (the worker saw none for 3 s before).
e.signal(signal.SIGQUIT)
time.sleep(0.2)
try:
    status, headers = replay_on(s, key2)
    last = (status, headers.get("connection"))
except (OSError, ValueError, AttributeError) as exc:
    last = repr(exc)
s.close()
t.eq(last, (201, "close"), "SIGQUIT 0.4 s after the last replay: the next one is answered, with Connection: close")
t.ok(e.wait_exit(15) == 0, "and the server stops")
t.ok(e.stop(), "stopped")
sim.stop()
t.done()
