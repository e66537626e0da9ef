#!/usr/bin/env python3
"""Regression: HEAD answers carried the GET body and no Content-Length.

evhttp writes whatever body it is given, also for HEAD, and adds
Content-Length only to answers that have a body.  SPEC.md: HEAD is
answered like GET without the body, Content-Length included.  Over a raw
socket so that a body that should not be there shows: a HEAD, then a GET
on the same connection must parse as exactly two answers."""

from harness import TAP, Paymentsd
from rawhttp import exchange, parse

t = TAP()
d = Paymentsd(workers=1).start()

for path in ("/healthz", "/openapi.json", "/orders/00000000-0000-0000-0000-000000000000"):
    get = d.get(path)
    out, err = exchange(d.port, b"HEAD %s HTTP/1.1\r\nHost: t\r\n\r\nGET %s HTTP/1.1\r\nHost: t\r\n"
                        b"Connection: close\r\n\r\n" % (path.encode(), path.encode()))
    try:
        rs = parse(out, head_requests=1)
    except ValueError as e:
        rs = []
        err = e
    t.ok(len(rs) == 2, "HEAD %s then GET on one connection: two answers" % path, "%r %r" % (err, out[:400]))
    if len(rs) == 2:
        head, again = rs
        t.eq((head.status, head.headers.get("content-length")), (get.status, str(len(get.body))),
             "HEAD %s: the GET's status and Content-Length" % path)
        t.eq(head.headers.get("content-type"), get.headers.get("content-type"),
             "HEAD %s: the GET's Content-Type" % path)
        t.ok(head.headers.get("x-request-id"), "HEAD %s: an X-Request-Id" % path)
        t.eq(again.body, get.body, "and the GET after it is whole")

t.ok(d.stop(), "stopped")
t.done()
