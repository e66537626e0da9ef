#!/usr/bin/env python3
"""Regression: a 100 Continue went out ahead of an earlier pipelined answer.

For a chunked request with Expect: 100-continue, worker/front.c wrote the
100 straight to the socket while the answer to a request pipelined before
it was still queued, so the client read "100 Continue" first, as an interim
answer to the wrong request.  Now the 100 is sent only once every earlier
answer is out; a client that gets none sends its body anyway."""

import socket
import time

from harness import TAP, Paymentsd
from rawhttp import exchange, parse

t = TAP()
d = Paymentsd(workers=1).start()

CHUNKED = (b"POST /checkout HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
           b"Expect: 100-continue\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
for i in range(10):
    out, err = exchange(d.port, b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n" + CHUNKED, shut=True)
    t.ok(out.startswith(b"HTTP/1.1 200 "), "regression: pipelined GET then an Expect: 100-continue POST: "
         "the GET's answer comes first (%d)" % i, out[:40])
    try:
        statuses = [r.status for r in parse(out)]
    except ValueError as e:
        statuses = [repr(e)]
    t.eq(statuses, [200, 400], "then the POST's own answer (%d)" % i)

# Alone on its connection, the client still gets its 100 before sending the body.
s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
s.sendall(CHUNKED[:CHUNKED.index(b"\r\n\r\n") + 4])
first = s.recv(64)
t.ok(first.startswith(b"HTTP/1.1 100 Continue"), "alone, an Expect: 100-continue gets its 100 Continue", first)
s.sendall(b"2\r\n{}\r\n0\r\n\r\n")
time.sleep(0.2)
rest = s.recv(4096)
s.close()
t.ok(rest.startswith(b"HTTP/1.1 400 "), "then its answer", rest[:40])
t.ok(d.stop(), "stopped")
t.done()
