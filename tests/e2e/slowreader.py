"""A client that reads late, for tests of answers that wait for the socket:
fill a connection until an answer made by the front reader (worker/front.c)
waits, then walk what finally comes."""

import re
import time


class Log:
    """A log file, read on from where the last look ended."""

    def __init__(self, path):
        self.f = open(path)
        self.f.read()

    def new(self):
        return self.f.read()


def fill(s, log, request, max_requests=20000):
    """Send request on socket s, one at a time, reading nothing, until the
    answer made by the front reader to the last one waits for the socket
    (the worker's debug log says so); how many were sent, or None."""
    for n in range(1, max_requests + 1):
        s.sendall(request)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            text = log.new()
            if "waits for the socket" in text:
                return n
            if "answered by the front reader" in text:
                break
            time.sleep(0.001)
    return None


def walk(data):
    """The statuses of the answers in data (100 for each 100 Continue),
    and what ended the walk early (an answer cut short, or a status line
    where none can be) or None."""
    out, pos = [], 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return out, "an unfinished head at byte %d" % pos
        head = data[pos:end]
        status = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
        if status is None:
            return out, "not a status line at byte %d: %r" % (pos, head[:60])
        out.append(int(status.group(1)))
        if out[-1] == 100:
            pos = end + 4
            continue
        n = int(re.search(rb"\r\nContent-Length: (\d+)\r\n", head + b"\r\n").group(1))
        body = data[end + 4:end + 4 + n]
        if len(body) < n:
            return out, "an answer cut short: %d of its %d bytes" % (len(body), n)
        if b"HTTP/1.1" in body:
            return out, "an answer's body holds %r" % body[:80]
        pos = end + 4 + n
    return out, None
