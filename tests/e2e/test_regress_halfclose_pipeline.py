#!/usr/bin/env python3
"""Regression: a client that half-closed after pipelined requests got only
the first answer.

evhttp (2.1) fails the connection at the client's EOF even while it holds
pipelined requests it has read but not answered.  Here a client sends
several requests in one write and shuts down its sending side at once;
it must read every answer, in order, each with its own request id, also
when the answers are more than the socket takes at once."""

import socket
import time

from harness import TAP, Paymentsd
from rawhttp import exchange, parse

t = TAP()
d = Paymentsd(workers=1).start()

for n in (2, 5, 20):
    reqs = b"".join(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: pipe-%d-%d\r\n\r\n" % (n, i)
                    for i in range(n))
    out, err = exchange(d.port, reqs, shut=True)
    try:
        rs = parse(out)
    except ValueError as e:
        rs, err = [], e
    t.eq([(r.status, r.headers.get("x-request-id")) for r in rs],
         [(200, "pipe-%d-%d" % (n, i)) for i in range(n)],
         "%d pipelined requests, then half-close: every answer, in order" % n)

# The same with a POST in the middle, whose body is read before the next.
reqs = (b"GET /healthz HTTP/1.1\r\n\r\n"
        b"POST /checkout HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        b"GET /healthz HTTP/1.1\r\n\r\n")
out, err = exchange(d.port, reqs, shut=True)
try:
    rs = parse(out)
except ValueError as e:
    rs, err = [], e
t.eq([r.status for r in rs], [200, 400, 200], "GET, POST with a body, GET, then half-close: all three")

# Answers larger than the socket takes, to a client that reads late: the
# front reader writes at once, and waits for the socket only when it is
# full (worker/front.c).  300 answers of /openapi.json (5.7 MB) overflow
# the client's receive buffer (fixed before connecting) and the worker's
# send buffer (4 MB at most, tcp_wmem); every answer must still come,
# whole and in order.
n = 300
reqs = b"".join(b"GET /openapi.json HTTP/1.1\r\nX-Request-Id: big-%d\r\n\r\n" % i for i in range(n))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.settimeout(10)
out, deadline = b"", time.monotonic() + 30
try:
    s.connect(("127.0.0.1", d.port))
    s.sendall(reqs + b"GET /healthz HTTP/1.1\r\nX-Request-Id: big-last\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    time.sleep(1)
    while time.monotonic() < deadline:
        b = s.recv(65536)
        if not b:
            break
        out += b
except OSError as e:
    t.diag("exchange: %s" % e)
s.close()
try:
    rs = parse(out)
except ValueError as e:
    rs = []
    t.diag(e)
t.eq([(r.status, r.headers.get("x-request-id")) for r in rs],
     [(200, "big-%d" % i) for i in range(n)] + [(200, "big-last")],
     "%d pipelined answers, %d bytes, to a client that reads late: all, in order"
     % (n, len(out)))

t.eq(d.get("/healthz").status, 200, "still answers")
t.ok(d.stop(), "stopped")
t.done()
