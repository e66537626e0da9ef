#!/usr/bin/env python3
"""Regression: a client that half-closed after pipelined requests got only
the first answer.

evhttp (2.1) fails the connection at the client's EOF even while it holds
pipelined requests it has read but not answered.  Here a client sends
several requests in one write and shuts down its sending side at once;
it must read every answer, in order, each with its own request id."""

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

t.eq(d.get("/healthz").status, 200, "still answers")
t.ok(d.stop(), "stopped")
t.done()
