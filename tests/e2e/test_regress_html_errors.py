#!/usr/bin/env python3
"""Regression: errors that libevent answered itself were HTML.

libevent 2.1 answers a body over its limit (a 1 MiB body), headers over
its limit, a malformed request line or an HTTP version it does not know
with its own HTML page, without X-Request-Id; SPEC.md wants JSON 400 /
413 / 431 / 505 with X-Request-Id.  Each case here goes over a raw socket
and checks the status, the content type, the error body and the request
id (the client's own where it sent one).  Also: an Expect: 100-continue
over the limit is refused before the body is sent, a client still sending
a 1 MiB body reads its 413 (no reset), bodies under the backstop still get
SPEC.md's order, and what the front reader passes on still works (chunked
bodies, HTTP/1.0, the whole of a large answer before the close)."""

import json
import socket
import threading
import time

from harness import TAP, Paymentsd
from rawhttp import exchange, json_error, parse, read_until_close

t = TAP()
d = Paymentsd(workers=1, extra={"max_body_size": "16k", "max_header_size": "8k",
                                "client_timeout": "5s"}).start()
workers = d.workers()
CT = "Content-Type: application/json\r\n"


def one(data, shut=False, timeout=5.0, head=False):
    out, err = exchange(d.port, data, shut=shut, timeout=timeout)
    try:
        rs = parse(out, head_requests=1 if head else 0)
    except ValueError as e:
        return None, "%s (%r)" % (e, err)
    return (rs[0] if len(rs) == 1 else None), "%d answers, %r: %r" % (len(rs), err, out[:300])


def check_error(name, data, status, code, rid=None, head=False, **kw):
    r, diag = one(data, head=head, **kw)
    t.ok(r is not None and r.status == status
         and (json_error(r) == code if not head else
              r.headers.get("content-type") == "application/json" and r.headers.get("x-request-id"))
         and r.headers.get("connection") == "close"
         and (rid is None or r.headers.get("x-request-id") == rid),
         "%s: JSON %d %s with X-Request-Id and Connection: close" % (name, status, code),
         diag if r is None else repr(r))


# What libevent answered in HTML.
big = b"x" * (1 << 20)
check_error("1 MiB body", b"POST /checkout HTTP/1.1\r\nHost: t\r\n" + CT.encode()
            + b"Idempotency-Key: k-big\r\nX-Request-Id: rid-big-1\r\nContent-Length: %d\r\n\r\n"
            % len(big) + big, 413, "payload_too_large", rid="rid-big-1", timeout=10)
check_error("64 KiB header", b"GET /healthz HTTP/1.1\r\nX-Request-Id: rid-hdr-1\r\nX-Big: "
            + b"a" * 65536 + b"\r\n\r\n", 431, "headers_too_large", rid="rid-hdr-1")
check_error("many headers over max_header_size", b"GET /healthz HTTP/1.1\r\n"
            + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 60) for i in range(200)) + b"\r\n",
            431, "headers_too_large")
check_error("malformed request line", b"GARBAGE\r\n\r\n", 400, "bad_request")
check_error("request line without version", b"GET /healthz\r\n\r\n", 400, "bad_request")
check_error("binary junk", bytes(range(256)) + b"\r\n\r\n", 400, "bad_request")
check_error("HTTP/3.0", b"GET /healthz HTTP/3.0\r\nX-Request-Id: rid-v3\r\n\r\n", 505,
            "http_version_not_supported", rid="rid-v3")
check_error("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "http_version_not_supported")
check_error("HTTP/0.9 version", b"GET /healthz HTTP/0.9\r\n\r\n", 505, "http_version_not_supported")
check_error("unknown method", b"BREW /healthz HTTP/1.1\r\n\r\n", 501, "not_implemented")
check_error("TRACE", b"TRACE /healthz HTTP/1.1\r\n\r\n", 501, "not_implemented")
check_error("Expect other than 100-continue", b"POST /checkout HTTP/1.1\r\nExpect: teapot\r\n"
            b"Content-Length: 2\r\n\r\n{}", 417, "expectation_failed")
check_error("Content-Length and Transfer-Encoding", b"POST /checkout HTTP/1.1\r\n" + CT.encode()
            + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request")
check_error("Transfer-Encoding gzip", b"POST /checkout HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            501, "not_implemented")
check_error("two Content-Lengths", b"POST /checkout HTTP/1.1\r\nContent-Length: 2\r\n"
            b"Content-Length: 3\r\n\r\n{}x", 400, "bad_request")
check_error("negative Content-Length", b"POST /checkout HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            400, "bad_request")
check_error("space before the colon", b"GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n", 400, "bad_request")
check_error("obs-fold", b"GET /healthz HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400, "bad_request")
check_error("bare CR in a field", b"GET /healthz HTTP/1.1\r\nX-A: 1\r2\r\n\r\n", 400, "bad_request")
check_error("HEAD with a body", b"HEAD /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 400,
            "bad_request", head=True)

chunk = b"%x\r\n%s\r\n" % (65536, b"y" * 65536)
check_error("1 MiB chunked body", b"POST /checkout HTTP/1.1\r\n" + CT.encode()
            + b"Idempotency-Key: k-chunk\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 16
            + b"0\r\n\r\n", 413, "payload_too_large", timeout=10)
check_error("one huge chunk size", b"POST /checkout HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"fffffffffffff\r\n", 413, "payload_too_large")
check_error("chunk size not hex", b"POST /checkout HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nab\r\n0\r\n\r\n", 400, "bad_request")
check_error("chunk without its CRLF", b"POST /checkout HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nabXY0\r\n\r\n", 400, "bad_request")

# Expect: 100-continue over the limit: refused before the body is sent.
s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
t0 = time.monotonic()
s.sendall(b"POST /checkout HTTP/1.1\r\n" + CT.encode() + b"Idempotency-Key: k-exp\r\n"
          b"Expect: 100-continue\r\nContent-Length: 10000000\r\n\r\n")
got, _ = read_until_close(s)
s.close()
rs = parse(got) if got.startswith(b"HTTP/1.1 4") else []
t.ok(len(rs) == 1 and rs[0].status == 413 and json_error(rs[0]) == "payload_too_large"
     and time.monotonic() - t0 < 3, "Expect: 100-continue with 10 MB: 413 without 100 Continue, "
     "the body never sent (%.2fs)" % (time.monotonic() - t0), got[:300])

# A client that sends its whole 1 MiB body before it reads gets the 413,
# not a reset: the server lingers.
s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
send_err = []


def send_all():
    try:
        s.sendall(b"POST /checkout HTTP/1.1\r\n" + CT.encode() + b"Idempotency-Key: k-slow\r\n"
                  b"Content-Length: %d\r\n\r\n" % (4 << 20))
        for _ in range(64):
            s.sendall(b"z" * 65536)
    except OSError as e:
        send_err.append(e)


th = threading.Thread(target=send_all)
th.start()
th.join(15)
got, err = read_until_close(s, timeout=15)
if err is not None:
    send_err.append(err)
s.close()
rs = parse(got) if got.startswith(b"HTTP/1.1") else []
t.ok(not send_err and len(rs) == 1 and rs[0].status == 413,
     "4 MiB body sent whole before reading: no reset, and the 413 is there",
     "%r %r" % (send_err, got[:200]))

# Under the backstop SPEC.md's order still holds: a missing key comes first.
r, diag = one(b"POST /checkout HTTP/1.1\r\n" + CT.encode() + b"Content-Length: 20000\r\n\r\n"
              + b"{" * 20000 + b"", shut=True)
t.ok(r is not None and r.status == 400 and json_error(r) == "idempotency_key_missing",
     "17-20 KB body without a key: 400 idempotency_key_missing (SPEC.md's order)", diag)

# What passes the front reader still works.
body = json.dumps({"buyer_id": "b"}).encode()
r, diag = one(b"POST /checkout HTTP/1.1\r\n" + CT.encode() + b"Idempotency-Key: k-chunked\r\n"
              b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
              + b"".join(b"%x;ext=1\r\n%s\r\n" % (1, body[i:i + 1]) for i in range(len(body)))
              + b"0\r\nX-Trailer: yes\r\n\r\n")
t.ok(r is not None and r.status == 422 and r.json()["error"]["field"] in ("seller_id", "amount_cents",
                                                                          "currency"),
     "a chunked body (1-byte chunks, extensions, a trailer) reaches the handler whole", diag)
r, diag = one(b"\r\nGET /openapi.json HTTP/1.0\r\n\r\n")
whole = d.get("/openapi.json").body
t.ok(r is not None and r.status == 200 and r.body == whole,
     "HTTP/1.0 (after an empty line): the whole %d-byte answer arrives before the close" % len(whole),
     diag)

# A refused request in a pipeline gets its error in its place, after the
# answers before it, and nothing after it is read.
out, err = exchange(d.port, b"GET /healthz HTTP/1.1\r\nX-Request-Id: p1\r\n\r\n"
                    b"GET /nope HTTP/1.1\r\nX-Request-Id: p2\r\n\r\n"
                    b"GET /healthz HTTP/3.0\r\nX-Request-Id: p3\r\n\r\n"
                    b"GET /healthz HTTP/1.1\r\nX-Request-Id: p4\r\n\r\n")
try:
    got = [(r.status, r.headers.get("x-request-id")) for r in parse(out)]
except ValueError as e:
    got = [str(e)]
t.eq(got, [(200, "p1"), (404, "p2"), (505, "p3")], "pipeline with HTTP/3.0 third: 200, 404, then its 505, "
     "then the close")

# Expect: 100-continue within the limit: the client waits for 100 Continue
# before it sends the body, with Content-Length and with chunked.
for name, head, body in (
        ("Content-Length", b"Content-Length: 2\r\n", b"{}"),
        ("chunked", b"Transfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n")):
    s = socket.create_connection(("127.0.0.1", d.port), timeout=3)
    s.sendall(b"POST /checkout HTTP/1.1\r\nExpect: 100-continue\r\nConnection: close\r\n" + CT.encode()
              + head + b"\r\n")
    try:
        first = s.recv(100)
        s.sendall(body)
        rest, err = read_until_close(s, timeout=3)
    except OSError as e:
        first, rest, err = b"", b"", e
    s.close()
    rs = parse(rest) if rest.startswith(b"HTTP/1.1") else []
    t.ok(err is None and first == b"HTTP/1.1 100 Continue\r\n\r\n" and len(rs) == 1
         and rs[0].status == 400 and json_error(rs[0]) == "idempotency_key_missing",
         "Expect: 100-continue with %s: 100 Continue, then the body is read and answered" % name,
         "%r %r %r" % (err, first, rest[:200]))

t.eq(d.workers(), workers, "the same worker, never restarted")
t.eq(d.get("/healthz").status, 200, "and it answers /healthz")
t.ok(d.stop(), "stopped, nothing left behind")
t.done()
