#!/usr/bin/env python3
"""Regression: logs that could not be matched or read (issue 12, item 6).

- The access log lacked the client's address, X-Forwarded-For, the user
  agent and the bytes sent; its line is one JSON object whose members come
  in a fixed order (README, "Logs"), and a hostile header (quotes,
  backslashes, tabs, bytes over 0x7E, a forged member) can
  neither break the line nor add a member.
- Error-log lines about a request did not say which request: a provider
  call that fails and a database call that fails now carry the request's id
  (request_id=...), the one the access log, the client and the provider see.
- libpq's error messages span several lines (LINE, HINT, DETAIL, CONTEXT)
  and were written as they came, so one error became several log lines, the
  later ones without time, level or pid.  Every log line is now one line,
  its newlines escaped as \\n."""

import json
import re
import socket
import urllib.parse

from harness import DATABASE, TAP, Paymentsd, checkout, free_port, new_key, wait_until
from rawhttp import parse, read_until_close

t = TAP()
ORDER = "6f1c2d3e-4a5b-4c6d-8e7f-8091a2b3c4d5"

# The provider is down: nothing listens on its port.
d = Paymentsd(workers=1, extra={"provider_url": "http://127.0.0.1:%d" % free_port(),
                                "provider_timeout": "500ms", "breaker_threshold": "1000000"}).start()


def raw_request(port, head):
    """Send head (bytes, a whole request without body) on a fresh
    connection; return (client port, status, body bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        local_port = s.getsockname()[1]
        s.sendall(head)
        r = parse(read_until_close(s)[0])[0]
    finally:
        s.close()
    return local_port, r.status, r.body


def access_lines(rid):
    with open(d.access_path, "rb") as f:
        return [x for x in f.read().split(b"\n") if rid.encode() in x]


# ---- the access log ----
# Control bytes are not allowed in a header (RFC 9110 5.5): such a request
# gets a JSON 400 (below); every other byte must come back exactly.
HOSTILE_UA = b'evil"agent\\x \xc3\xa9\xff\t "},"status":200,"forged":"'
HOSTILE_XFF = b'203.0.113.7, "198.51.100.2"\\'
rid = "lb:" + new_key("access")
port, status, body = raw_request(d.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                 b"X-Request-Id: " + rid.encode() + b"\r\nUser-Agent: " + HOSTILE_UA
                                 + b"\r\nX-Forwarded-For: " + HOSTILE_XFF + b"\r\n\r\n")
t.eq(status, 200, "a request with a hostile User-Agent and X-Forwarded-For is served")
t.ok(wait_until(lambda: len(access_lines(rid)) == 1, 3), "it makes exactly one access-log line",
     access_lines(rid))
raw = access_lines(rid)[0] if access_lines(rid) else b"{}"
t.ok(all(0x20 <= c < 0x7f for c in raw), "the line is printable ASCII: tabs and high bytes are escaped", raw)
try:
    pairs = json.loads(raw, object_pairs_hook=lambda kv: kv)
except ValueError as e:
    pairs = [("error", str(e))]
line = dict(pairs)
t.eq([k for k, _ in pairs],
     ["time", "request_id", "client", "client_port", "method", "path", "route", "status", "bytes",
      "duration_ms", "user_agent", "x_forwarded_for", "worker_pid"],
     "regression: the line's members, in the documented order (no forged member)")
t.eq((line.get("request_id"), line.get("client"), line.get("client_port"), line.get("method"),
      line.get("path"), line.get("status"), line.get("bytes")),
     (rid, "127.0.0.1", port, "GET", "/healthz", 200, len(body)),
     "request id, client address and port, method, path, status and body bytes as sent")
t.eq(line.get("user_agent"), HOSTILE_UA.decode("latin-1"),
     "the user agent comes back exactly (each byte over 0x7E as \\u00XX)")
t.eq(line.get("x_forwarded_for"), HOSTILE_XFF.decode("latin-1"), "so does X-Forwarded-For")
t.ok(isinstance(line.get("duration_ms"), float) and 0 <= line["duration_ms"] < 5000,
     "duration_ms is the time to the reply", line.get("duration_ms"))

ridc = "ctl-" + new_key("access")
port, status, body = raw_request(d.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: " + ridc.encode()
                                 + b"\r\nUser-Agent: a\x01\x1f\x7fb\r\n\r\n")
t.eq((status, json.loads(body or b"{}").get("error", {}).get("code")), (400, "bad_request"),
     "control bytes in a header: a JSON 400")
t.ok(wait_until(lambda: len(access_lines(ridc)) == 1, 3)
     and all(0x20 <= c < 0x7f for c in access_lines(ridc)[0]) and json.loads(access_lines(ridc)[0]),
     "and one printable access-log line for it", access_lines(ridc))

rid2 = "plain-" + new_key("access")
r = d.get("/healthz", headers={"X-Request-Id": rid2, "User-Agent": "e2e-test/1.0"})
t.ok(wait_until(lambda: len(access_lines(rid2)) == 1, 3), "a plain request is logged too")
plain = json.loads(access_lines(rid2)[0]) if access_lines(rid2) else {}
t.eq((plain.get("x_forwarded_for"), plain.get("user_agent"), plain.get("bytes")),
     (None, "e2e-test/1.0", len(r.body)), "no X-Forwarded-For is null; the user agent is logged")

# ---- a failed provider call: the request id in the error log ----
rid = "lb:" + new_key("provider-down")
body = {"buyer_id": "buyer-l", "seller_id": "seller-l", "amount_cents": 900, "currency": "EUR"}
r = checkout(d, new_key("log"), body, headers={"X-Request-Id": rid})
t.eq((r.status, r.json().get("failure_reason")), (201, "provider_unavailable"),
     "the provider is down: the order is FAILED provider_unavailable")


def lines_with(log, rid):
    return [x for x in log.splitlines() if "request_id=%s:" % rid in x]


t.ok(wait_until(lambda: any("provider: charge of order" in x for x in lines_with(d.log(), rid)), 3),
     "regression: the failed charge's error-log line carries the request id",
     d.log()[-1500:])
t.ok(any("provider: cancel of order" in x for x in lines_with(d.log(), rid)) or
     wait_until(lambda: any("provider: cancel of order" in x for x in lines_with(d.log(), rid)), 3),
     "so does the failed cancel that the request started", d.log()[-1500:])
d.stop()

# ---- a failed database call: one line, with the request id ----
# The "postgres" database has none of our SQL functions: every call fails
# with libpq's three-line "function ... does not exist" error (LINE, HINT).
nodb = urllib.parse.urlparse(DATABASE)._replace(path="/postgres").geturl()
d = Paymentsd(workers=1, database=nodb).start()
rid = "lb:" + new_key("db-error")
r = d.get("/orders/%s/ledger" % ORDER, headers={"X-Request-Id": rid})
t.eq((r.status, r.json().get("error", {}).get("code")), (500, "internal_error"),
     "a database call that fails for good: 500 internal_error")
t.ok(wait_until(lambda: lines_with(d.log(), rid), 3), "its error-log line carries the request id",
     d.log()[-1500:])
found = lines_with(d.log(), rid)
msg = found[0] if found else ""
t.ok("database call failed: ERROR:  function order_ledger(uuid) does not exist\\nLINE 1:" in msg
     and "\\nHINT:  No function matches" in msg,
     "regression: libpq's whole message is on that one line, newlines escaped", msg)
t.ok(not re.search(r"^(LINE \d+:|HINT:|DETAIL:|CONTEXT:|\s+\^)", d.log(), re.M),
     "no log line is a continuation of libpq's message", d.log()[-1500:])
t.ok(all(re.match(r"\d{4}-\d\d-\d\dT[0-9:.]+Z \[\w+\] ", x) for x in d.log().splitlines() if x),
     "every error-log line starts with its time and level",
     [x for x in d.log().splitlines() if x and not re.match(r"\d{4}-", x)][:5])
d.stop()
t.done()
