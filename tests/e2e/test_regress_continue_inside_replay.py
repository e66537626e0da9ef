#!/usr/bin/env python3
"""Regression: a 100 Continue went out inside a replay answered by the front
reader.

An answer made in front of evhttp (worker/replay.c) that the socket does
not take whole waits in front.c's own queue.  The check that lets a
chunked request's 100 Continue go straight to the socket looked only at
evhttp's queue, so while such an answer waited and the socket had some room
again (a TCP socket says "writable" only once a third of its buffer is
free, but takes a small write before that), the 100 landed after the
answer's first bytes and before the rest: the client read it as part of
that answer's body.  Now the 100 waits for every earlier answer, that queue
included (a client that gets none sends its body anyway)."""

import json
import re
import socket
import time

from harness import TAP, Paymentsd, checkout, new_key
from rawhttp import read_until_close
from slowreader import Log, fill, walk

t = TAP()
d = Paymentsd(workers=1, extra={"log_level": "debug"}).start()
BODY = {"buyer_id": "cont-buyer", "seller_id": "cont-seller", "amount_cents": 1999, "currency": "EUR"}
BODY_BYTES = json.dumps(BODY).encode()
key = new_key("cont")
t.eq(checkout(d, key, BODY).status, 201, "a new checkout: 201")
HEAD = (b"POST /checkout HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Idempotency-Key: " + key.encode() + b"\r\n")
REPLAY = HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY_BYTES) + BODY_BYTES
CHUNKED = (HEAD + b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
           + b"%x\r\n" % len(BODY_BYTES) + BODY_BYTES + b"\r\n0\r\n\r\n")

for attempt in range(3):
    log = Log(d.log_path)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", d.port))
    sent = fill(s, log, REPLAY)
    if sent is None:
        s.close()
        continue
    # Give the server's socket some room back, less than a third of it: the
    # client reads a tenth of the answers, the server's kernel sends and
    # frees as much.
    got = bytearray()
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    head = bytes(got[:got.index(b"\r\n\r\n") + 4])
    room = sent * (len(head) + int(re.search(rb"\r\nContent-Length: (\d+)\r\n", head).group(1))) // 10
    while len(got) < room:
        got += s.recv(room - len(got))
    time.sleep(0.2)
    s.sendall(CHUNKED)
    time.sleep(0.3)
    s.shutdown(socket.SHUT_WR)
    got += read_until_close(s, timeout=20)[0]
    s.close()
    statuses, err = walk(bytes(got))
    break
else:
    statuses, err = [], "no answer made by the front reader waited for the socket"

t.ok(err is None, "regression: a chunked Expect: 100-continue behind a replay waiting for the socket: "
     "no 100 Continue inside that replay's answer", err)
answers = [x for x in statuses if x != 100]
t.ok(sent is not None and answers == [201] * (sent + 1), "every replay answered, then the chunked request's",
     "%s replays sent; %d answers, not 201: %r" % (sent, len(answers), [x for x in answers if x != 201][:5]))
t.ok(d.stop(), "stopped")
t.done()
