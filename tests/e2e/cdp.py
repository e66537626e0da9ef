"""Drive Debian's headless chromium over the DevTools protocol, stdlib only.

    with Chromium() as b:          # raises Unavailable when there is no chromium
        b.call("Page.navigate", url=...)
        b.evaluate("document.title")

Chromium runs with a throw-away profile, reaches nothing but what a page
asks for (no updates, sync or background requests), and is stopped by its
pid.  The websocket client below is the small part of RFC 6455 that the
DevTools endpoint needs: one connection, text frames, client masking.
"""

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.parse

from harness import _started, read_text, stop_process, wait_until

BROWSERS = ("chromium", "chromium-browser")


class Unavailable(Exception):
    """No chromium on this machine (the caller skips)."""


class WebSocket:
    def __init__(self, url, timeout=30.0):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n"
                           % (u.path, u.hostname, u.port, key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise OSError("websocket handshake: connection closed")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise OSError("websocket handshake refused: %r" % head[:200])

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("websocket closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, text):
        data = text.encode()
        n = len(data)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self):
        """The next text message (fragments joined); pings are answered."""
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(n)
            op = b0 & 0x0F
            if op == 0x8:
                raise OSError("websocket closed by the browser")
            if op == 0x9:
                self.sock.sendall(struct.pack("!BB", 0x8A, 0x80 | len(payload)) + b"\0" * 4
                                  + payload)
                continue
            if op in (0x1, 0x0):
                message += payload
                if b0 & 0x80:
                    return message.decode()

    def close(self):
        self.sock.close()


class Chromium:
    def __init__(self, width=1280, height=2400, timeout=60.0):
        exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
        if exe is None:
            raise Unavailable("chromium is not installed (scripts/deps.sh installs it)")
        self.dir = tempfile.mkdtemp(prefix="chromium-e2e-")
        self.log_path = os.path.join(self.dir, "chromium.log")
        self.timeout = timeout
        self.events = []            # every event seen, in order
        self.next_id = 0
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--no-default-browser-check",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
                 "--user-data-dir=" + os.path.join(self.dir, "profile"),
                 "--window-size=%d,%d" % (width, height),
                 "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                 "about:blank"],
                stdout=log, stderr=subprocess.STDOUT)
        _started.append(self.proc)
        # Chromium writes the port it chose into the profile.
        port_file = os.path.join(self.dir, "profile", "DevToolsActivePort")
        if not wait_until(lambda: os.path.exists(port_file) and open(port_file).read().count("\n") >= 1,
                          timeout=timeout):
            self.close()
            raise OSError("chromium did not open its DevTools port:\n" + self.log())
        port = int(open(port_file).read().split("\n")[0])
        targets = json.loads(self._http(port, "/json/list"))
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = WebSocket(page["webSocketDebuggerUrl"], timeout=timeout)

    @staticmethod
    def _http(port, path):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", path)
            return conn.getresponse().read()
        finally:
            conn.close()

    def log(self):
        return read_text(self.log_path)[-3000:]

    def call(self, method, **params):
        """Send one command and return its result (events meanwhile are kept)."""
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(method)

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError("%s: %s" % (expression[:80], r["exceptionDetails"]))
        return r["result"].get("value")

    def wait_for(self, expression, timeout=30.0):
        """Poll a JavaScript expression until it is truthy; returns its value or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.evaluate(expression)
            if v:
                return v
            time.sleep(0.2)
        return None

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self):
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        stop_process(self.proc, 10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
