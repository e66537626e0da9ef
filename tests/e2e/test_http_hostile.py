#!/usr/bin/env python3
"""An HTTP-level fuzzer: malformed and hostile requests over raw sockets.

Broken request lines, huge and repeated headers, bad chunked encodings,
pipelined requests, half-closed and reset connections, slow senders and
byte-flipped copies of good requests, from a seeded generator: the seed is
printed, and HOSTILE_SEED=N repeats a run.  For every connection the
bytes that come back must be whole HTTP/1.1 answers, each JSON with an
X-Request-Id (a JSON error when it is one), or nothing (a closed
connection).  At the end: the worker never died, no sanitizer report, its
RSS did not grow past a slack, and it still answers /healthz.

Bounded: HOSTILE_CASES cases (default 600) or HOSTILE_SECONDS (45)."""

import os
import random
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor

from harness import TAP, Paymentsd, sanitized, status_kb
from rawhttp import exchange, json_error, parse

t = TAP()
SEED = int(os.environ.get("HOSTILE_SEED", random.SystemRandom().randrange(1 << 32)))
CASES = int(os.environ.get("HOSTILE_CASES", "600"))
SECONDS = float(os.environ.get("HOSTILE_SECONDS", "45"))
STATUSES = {200, 400, 401, 404, 405, 413, 415, 417, 422, 431, 501, 503, 505}
t.diag("seed %d (HOSTILE_SEED=%d repeats this run)" % (SEED, SEED))

# Under ASan a small quarantine, so that freed memory is reused and RSS
# says something (the default keeps 256 MB of it); other builds ignore it.
d = Paymentsd(workers=1, extra={"max_body_size": "16k", "max_header_size": "8k",
                                "client_timeout": "2s"},
              env={"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4"}).start()
worker = d.workers()[0]

GOOD = [
    b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /orders/00000000-0000-0000-0000-000000000000 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /nowhere?x=%00 HTTP/1.0\r\n\r\n",
    b"DELETE /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    # Checkouts that stop at a check: never a provider call.
    b"POST /checkout HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /checkout HTTP/1.1\r\nContent-Type: application/json\r\nIdempotency-Key: fz\r\n"
    b"Content-Length: 9\r\n\r\n[1,2,3,4]",
    b"POST /checkout HTTP/1.1\r\nContent-Type: text/plain\r\nIdempotency-Key: fz\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /webhooks/provider HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
]
TOKENS = [b"GET", b"POST", b"HEAD", b"PUT", b"get", b"G ET", b"", b"\x00", b"CONNECT", b"OPTIONS",
          b"/", b"/healthz", b"*", b"http://x/", b"//", b"/%zz", b"HTTP/1.1", b"HTTP/1.0",
          b"HTTP/1.2", b"HTTP/9.9", b"HTTP/1", b"HTTP/", b"HTTP/1.1 ", b"\t", b" ", b"\r", b"\n",
          b"\xff\xfe", b"A" * 300]


def broken_line(r):
    line = b" ".join(r.choice(TOKENS) for _ in range(r.randint(0, 5)))
    if r.random() < 0.1:
        line = b"GET /" + b"a" * r.randint(8000, 20000) + b" HTTP/1.1"
    return line + r.choice([b"\r\n\r\n", b"\n\n", b"\r\nHost: t\r\n\r\n", b"\r\r\n\r\n"])


def header_storm(r):
    kind = r.randrange(5)
    if kind == 0:       # one huge header
        hs = b"X-Big: " + b"h" * r.randint(4000, 70000) + b"\r\n"
    elif kind == 1:     # many small ones
        hs = b"".join(b"X-%d: v\r\n" % i for i in range(r.randint(100, 3000)))
    elif kind == 2:     # repeated framing headers
        hs = b"".join(r.choice([b"Content-Length: 3\r\n", b"Content-Length: 4\r\n",
                                b"Transfer-Encoding: chunked\r\n", b"X-Request-Id: a\r\n",
                                b"Idempotency-Key: k\r\n", b"Expect: 100-continue\r\n"])
                      for _ in range(r.randint(2, 8)))
    elif kind == 3:     # bad names and values
        hs = b"".join(r.choice([b": empty\r\n", b"No-Colon\r\n", b"Sp ace: x\r\n", b" fold\r\n",
                                b"X-Nul: a\x00b\r\n", b"X-Del: \x7f\r\n", b"X-Utf: \xc3\xa9\r\n",
                                b"X-Request-Id: " + b"r" * r.randint(100, 200) + b"\r\n",
                                b"Content-Length: 99999999999999999999999\r\n",
                                b"Content-Length: 0x10\r\n", b"Content-Length:\r\n"])
                      for _ in range(r.randint(1, 4)))
    else:               # no end of head at all, then half-close
        hs = b"X-Never: " + b"e" * r.randint(1, 9000)
        return b"GET /healthz HTTP/1.1\r\n" + hs
    return b"POST /checkout HTTP/1.1\r\nContent-Type: application/json\r\n" + hs + b"\r\n{}"


def bad_chunked(r):
    parts = []
    for _ in range(r.randint(1, 6)):
        n = r.choice([0, 1, 5, 16, 4096, 70000, r.randint(0, 1 << 20)])
        size = r.choice([b"%x" % n, b"%X" % n, b"-1", b"0x10", b"", b"ffffffffffffffffff",
                         b"%x;ext=1" % n, b"%x ;\x01" % n, b"%x" % n + b"0" * 20])
        data = b"c" * min(n, 70000)
        end = r.choice([b"\r\n", b"\n", b"", b"XX", b"\r"])
        parts.append(size + b"\r\n" + data + end)
    tail = r.choice([b"0\r\n\r\n", b"0\r\nX-T: 1\r\n\r\n", b"0\r\n" + b"T: t\r\n" * 2000 + b"\r\n",
                     b"", b"0\r\n"])
    return (b"POST /checkout HTTP/1.1\r\nContent-Type: application/json\r\nIdempotency-Key: fz\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(parts) + tail)


def pipeline(r):
    reqs = [r.choice(GOOD) for _ in range(r.randint(2, 12))]
    if r.random() < 0.5:
        reqs.insert(r.randrange(len(reqs)), generate(r, depth=1)[0])
    return b"".join(reqs)


def flipped(r):
    b = bytearray(r.choice(GOOD))
    for _ in range(r.randint(1, 6)):
        i = r.randrange(len(b))
        op = r.randrange(3)
        if op == 0:
            b[i] = r.randrange(256)
        elif op == 1:
            del b[i]
        else:
            b[i:i] = bytes([r.randrange(256)]) * r.randint(1, 40)
    return bytes(b)


def length_lies(r):
    n = r.randint(0, 20000)
    body = b"{" * r.randint(0, 20000)
    return (b"POST /checkout HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % n + body)


GENERATORS = [broken_line, header_storm, bad_chunked, pipeline, flipped, length_lies]


def generate(r, depth=0):
    g = r.choice(GENERATORS if depth == 0 else GENERATORS[:3] + GENERATORS[4:])
    return g(r), g.__name__


def slow_exchange(data, r):
    """Dribble data in small pieces, then half-close and read."""
    s = socket.create_connection(("127.0.0.1", d.port), timeout=4)
    out = b""
    try:
        for i in range(0, min(len(data), 4000), 97):
            s.sendall(data[i:i + 97])
            time.sleep(0.005)
        s.sendall(data[4000:])
        s.shutdown(socket.SHUT_WR)
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except OSError:
        pass            # the server may close on us: what came must still parse
    finally:
        s.close()
    return out


def reset_mid_way(data, r):
    """Send part of data, then reset the connection."""
    s = socket.create_connection(("127.0.0.1", d.port), timeout=4)
    try:
        s.sendall(data[:r.randint(0, len(data))])
        if r.random() < 0.5:
            time.sleep(0.01)
    except OSError:
        pass
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    return None


def run_case(i):
    """One connection of case i; returns None, or why it failed."""
    r = random.Random("%d-%d" % (SEED, i))
    data, kind = generate(r)
    how = r.choices(["half-close", "plain", "slow", "reset"], [6, 2, 1, 1])[0]
    if how == "reset":
        reset_mid_way(data, r)
        return None
    if how == "slow":
        out = slow_exchange(data, r)
    else:
        out, _ = exchange(d.port, data, shut=how == "half-close", timeout=4)
    try:
        rs = parse(out, head_requests=int(data.startswith(b"HEAD /")))
    except ValueError as e:
        # A request line too broken to be known as HEAD is answered as GET.
        try:
            rs = parse(out)
        except ValueError:
            return "case %d (%s, %s): %s: %r" % (i, kind, how, e, out[:300])
    for resp in rs:
        if resp.status not in STATUSES:
            return "case %d (%s, %s): status %d" % (i, kind, how, resp.status)
        if not resp.headers.get("x-request-id") or \
                not resp.headers.get("content-type", "").startswith("application/json"):
            return "case %d (%s, %s): not JSON with X-Request-Id: %r" % (i, kind, how, resp)
        if resp.status >= 400 and resp.body and json_error(resp) is None:
            return "case %d (%s, %s): not a JSON error: %r" % (i, kind, how, resp)
    return None


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def run(first, count, deadline):
    failures, done = [], 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        for res in pool.map(run_case, range(first, first + count)):
            done += 1
            if res is not None:
                failures.append(res)
            if time.monotonic() > deadline:
                break
    return done, failures


start = time.monotonic()
warm = max(50, CASES // 6)
done, failures = run(0, warm, start + SECONDS / 3)
t.ok(not failures, "warm-up: %d hostile connections, every answer whole JSON" % done,
     "\n".join(failures[:10]))
time.sleep(2.5)             # client_timeout and lingering closes run out
before, fds_before = status_kb(worker), open_fds(worker)
done, failures = run(warm, CASES - warm, start + SECONDS)
t.ok(not failures, "%d hostile connections in %.0fs, every answer whole JSON or a close"
     % (done, time.monotonic() - start), "\n".join(failures[:10]))
time.sleep(6)               # the longest lingering close (5 s) ends
after, fds_after = status_kb(worker), open_fds(worker)
t.diag("worker VmRSS %d kB -> %d kB over %d connections" % (before, after, done))
slack = 16384 if sanitized(worker) else 2048
t.ok(after - before < slack, "worker RSS flat: grew %d kB (slack %d kB)" % (after - before, slack))
t.ok(fds_after <= fds_before, "no socket left open: %d fds, then %d" % (fds_before, fds_after))
t.eq(d.workers(), [worker], "the same worker, never restarted")
t.ok("killed by signal" not in d.log(), "no worker killed by a signal")
h = d.get("/healthz")
t.ok(h.status == 200 and h.json() == {"ok": True} and h.headers.get("x-request-id"),
     "/healthz still answers {\"ok\": true}")
t.ok(d.stop(), "stopped, nothing left behind")
t.done()                    # which also looks for sanitizer reports
