#!/usr/bin/env python3
"""Regression: a graceful stop cut a replay answered by the front reader
while it waited for a slow client.

A worker on SIGQUIT waits for its requests in flight, evhttp's, whose
answers count until the kernel has them.  A replay answered in front of
evhttp (worker/replay.c) that the socket did not take whole waits in
front.c's own queue, counted nowhere: the worker exited after its quiet
second and the client read that answer cut short.  Now the drain also
waits for those, up to worker_shutdown_timeout."""

import json
import signal
import socket
import time

from harness import TAP, Paymentsd, checkout, new_key
from rawhttp import read_until_close
from slowreader import Log, fill, walk

t = TAP()
d = Paymentsd(workers=1, extra={"log_level": "debug", "worker_shutdown_timeout": "20s"}).start()
BODY = {"buyer_id": "drain-buyer", "seller_id": "drain-seller", "amount_cents": 1999, "currency": "EUR"}
BODY_BYTES = json.dumps(BODY).encode()
key = new_key("drain")
t.eq(checkout(d, key, BODY).status, 201, "a new checkout: 201")
REPLAY = (b"POST /checkout HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
          b"Idempotency-Key: " + key.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(BODY_BYTES)
          + BODY_BYTES)

s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.settimeout(10)
s.connect(("127.0.0.1", d.port))
sent = fill(s, Log(d.log_path), REPLAY)
t.ok(sent is not None, "replays sent until the front reader's answer waits for the socket (%s)" % sent)
d.signal(signal.SIGQUIT)
time.sleep(2.5)                 # the quiet period (1 s) is over
got, err = read_until_close(s, timeout=20)
s.close()
statuses, cut = walk(got)
t.ok(cut is None and err is None, "regression: SIGQUIT while a replay answered by the front reader waits "
     "for the client: the client still reads it whole", cut or err)
t.eq(len(statuses) if sent else None, sent, "every replay answered")
t.eq(d.wait_exit(15), 0, "then the server stops")
t.ok(d.stop(), "stopped")
t.done()
