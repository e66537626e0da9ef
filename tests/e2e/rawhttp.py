"""HTTP/1.1 over a raw socket, for tests that send what no client library
would: malformed or oversized requests, pipelines, half-closed and reset
connections.  Every call is bounded in time."""

import json
import socket
import struct
import time


class RawResponse:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers      # dict, lower-case names (last one wins)
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "RawResponse(%d, %r, %r)" % (self.status, self.headers, self.body[:200])


def read_until_close(s, timeout=5.0):
    """Read from the connected socket s until the server closes it, an
    error, or timeout seconds (each read also waits at most s's own
    timeout).  Returns (bytes read, error): error is the OSError that ended
    the reading, a timeout included, else None."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            b = s.recv(65536)
        except OSError as e:
            return out, e
        if not b:
            break
        out += b
    return out, None


def exchange(port, data, shut=False, timeout=5.0, linger_rst=False):
    """Send data on a new connection (then half-close it when shut), read
    until the server closes or timeout.  Returns (bytes read, error): error
    is the first OSError met while sending or reading, else None.  With
    linger_rst the connection ends with a reset instead of a FIN."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    err = None
    try:
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except OSError as e:
            err = e
        out, read_err = read_until_close(s, timeout)
    finally:
        if linger_rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    return out, err or read_err


def parse(data, head_requests=0):
    """The responses in data, in order: a list of RawResponse.  The first
    head_requests responses answer HEAD requests (no body follows their
    Content-Length).  Raises ValueError on anything that is not HTTP/1.x
    with a Content-Length or a body that ends at close."""
    out = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            raise ValueError("incomplete head: %r" % data[:200])
        lines = data[:end].decode("latin1").split("\r\n")
        data = data[end + 4:]
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ValueError("bad status line: %r" % lines[0])
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError("bad header line: %r" % line)
            headers[name.strip().lower()] = value.strip()
        status = int(parts[1])
        if len(out) < head_requests or status in (100, 204, 304):
            body = b""
        elif "content-length" in headers:
            n = int(headers["content-length"])
            if len(data) < n:
                raise ValueError("short body: %d of %d bytes" % (len(data), n))
            body, data = data[:n], data[n:]
        else:
            body, data = data, b""
        if status != 100:
            out.append(RawResponse(status, headers, body))
    return out


def json_error(r):
    """The error code of a SPEC.md error answer, or None when r is not one:
    Content-Type application/json, an X-Request-Id, a body
    {"error": {"code": ..., "message": ...}}."""
    if not r.headers.get("content-type", "").startswith("application/json"):
        return None
    if not r.headers.get("x-request-id"):
        return None
    try:
        err = r.json()["error"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(err, dict) or not isinstance(err.get("message"), str):
        return None
    return err.get("code")
