#!/usr/bin/env python3
"""Regression: a refused request followed at once by the client's FIN got no
answer at all, and took the answers to the valid requests before it with it.

worker/front.c held the client's EOF back while evhttp still owed answers,
but only while reading a request head; a refused request (a malformed
header, say) put it in its refusing state, the EOF went straight to evhttp,
and evhttp failed the connection with the JSON error still queued.  Also:
a tab before a header's value (Expect:<TAB>100-continue) passed the front
reader, which trimmed it, and evhttp, which does not, answered its own HTML
417."""

from harness import TAP, Paymentsd
from rawhttp import exchange, json_error, parse

t = TAP()
d = Paymentsd(workers=1).start()


def answers(data):
    out, err = exchange(d.port, data, shut=True)
    try:
        return parse(out)
    except ValueError:
        return []


for i in range(5):
    rs = answers(b"GET /healthz HTTP/1.1\r\nX-Request-Id: bad-%d\r\nBad Header: 1\r\n\r\n" % i)
    t.eq([(r.status, json_error(r), r.headers.get("x-request-id")) for r in rs],
         [(400, "bad_request", "bad-%d" % i)],
         "regression: a refused request, then FIN at once: its JSON 400 arrives (%d)" % i)

rs = answers(b"GET /healthz HTTP/1.1\r\nX-Request-Id: good\r\n\r\n"
             b"GET /x HTTP/1.1\r\nX-Request-Id: bad\r\nBad Header: 1\r\n\r\n")
t.eq([(r.status, r.headers.get("x-request-id")) for r in rs], [(200, "good"), (400, "bad")],
     "regression: a valid request, a refused one, FIN: both answers, in order")

rs = answers(b"POST /checkout HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
             b"Expect:\t100-continue\r\n\r\n{}")
t.eq([(r.status, json_error(r)) for r in rs], [(400, "bad_request")],
     "regression: a tab before Expect's value is a JSON 400, not evhttp's HTML 417")

t.eq(d.get("/healthz").status, 200, "still answers")
t.ok(d.stop(), "stopped")
t.done()
