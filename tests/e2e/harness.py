"""End-to-end test harness: real processes on loopback ports, TAP output.

Every test script imports this module, starts what it needs (paymentsd,
provider-sim, helper servers) on free 127.0.0.1 ports, and prints TAP that
automake's tap-driver reads.  Every wait is bounded; every process started
here is stopped by its pid when the test ends, and only those.

Environment:
  PAYMENTSD            path of the paymentsd binary   (default ./paymentsd)
  PROVIDER_SIM         path of provider-sim           (default ./provider-sim/provider-sim)
  PAYMENTSD_TEST_DATABASE  libpq URI of the test database
"""

import atexit
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BUILD_DIR = os.getcwd()
PAYMENTSD = os.environ.get("PAYMENTSD", os.path.join(BUILD_DIR, "paymentsd"))
PROVIDER_SIM = os.environ.get("PROVIDER_SIM", os.path.join(BUILD_DIR, "provider-sim", "provider-sim"))
DATABASE = os.environ.get("PAYMENTSD_TEST_DATABASE",
                          "postgresql://app:app@127.0.0.1:54320/payments")

_started = []       # every process we started, stopped at exit
_stderr_logs = []   # where their stderr went: sanitizer reports land there
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def sanitizer_reports():
    """Sanitizer reports found in the stderr of every process started here."""
    found = []
    for path in _stderr_logs:
        text = read_text(path)
        if any(m in text for m in SANITIZER_MARKS):
            found.append("%s:\n%s" % (path, text[-3000:]))
    return found


def read_text(path):
    """The text of the file at path; "" when it cannot be read."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def stop_process(proc, timeout):
    """SIGTERM proc, wait up to timeout seconds, then SIGKILL it if it is still there."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _cleanup():
    for p in _started:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass


atexit.register(_cleanup)


class TAP:
    """Minimal TAP producer: ok() per check, done() prints the plan."""

    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, name, diag=None):
        self.n += 1
        if cond:
            print("ok %d - %s" % (self.n, name), flush=True)
        else:
            self.failed += 1
            print("not ok %d - %s" % (self.n, name), flush=True)
            if diag is not None:
                for line in str(diag).splitlines()[:40]:
                    print("# " + line, flush=True)
        return cond

    def eq(self, got, want, name):
        return self.ok(got == want, name, "got:  %r\nwant: %r" % (got, want))

    def diag(self, msg):
        for line in str(msg).splitlines():
            print("# " + line, flush=True)

    def done(self):
        _cleanup()
        reports = sanitizer_reports()
        self.ok(not reports, "no sanitizer report from any process", "\n".join(reports))
        print("1..%d" % self.n, flush=True)
        sys.exit(1 if self.failed else 0)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers      # dict, lower-case names
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Response(%d, %r, %r)" % (self.status, self.headers, self.body[:300])


def request(port, method, path, body=None, headers=None, timeout=10.0):
    """One request on a fresh connection; returns a Response."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def wait_until(pred, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except OSError:
            pass
        time.sleep(step)
    return False


def children_of(pid):
    """Direct children of pid, from /proc."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def status_kb(pid, field="VmRSS"):
    """A "kB" line of /proc/PID/status: VmRSS, RssAnon, ..."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def sanitized(pid):
    """Whether pid runs with AddressSanitizer (its runtime is mapped)."""
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


class Paymentsd:
    """A paymentsd master started from a generated conf file."""

    def __init__(self, workers=2, database=None, extra=None, port=None, env=None):
        self.dir = tempfile.mkdtemp(prefix="paymentsd-e2e-")
        self.port = port or free_port()
        self.conf_path = os.path.join(self.dir, "paymentsd.conf")
        self.log_path = os.path.join(self.dir, "error.log")
        self.access_path = os.path.join(self.dir, "access.log")
        self.pid_file = os.path.join(self.dir, "paymentsd.pid")
        self.settings = {
            "listen": "127.0.0.1:%d" % self.port,
            "workers": str(workers),
            "database": database or DATABASE,
            "db_timeout": "3s",
            "pid_file": self.pid_file,
            "error_log": self.log_path,
            "access_log": self.access_path,
            "worker_shutdown_timeout": "10s",
            # The housekeeper finishes stale checkouts and settles pending
            # orders with *its* provider; every test shares one database,
            # and several run their own sims.  Quiet unless a test asks
            # (test_housekeeper.py sets its own).
            "housekeeper_interval": "1h",
        }
        self.settings.update(extra or {})
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.write_conf()
        self.proc = None
        self.seen_pids = set()

    def write_conf(self, text=None):
        if text is None:
            text = "".join("%s = %s\n" % (k, v) for k, v in self.settings.items())
        with open(self.conf_path, "w") as f:
            f.write(text)

    def start(self, wait=True, cwd=None):
        stderr_path = os.path.join(self.dir, "stderr.log")
        _stderr_logs.append(stderr_path)
        with open(stderr_path, "a") as err:
            self.proc = subprocess.Popen([PAYMENTSD, "-c", self.conf_path], env=self.env,
                                         stdout=err, stderr=subprocess.STDOUT, cwd=cwd)
        _started.append(self.proc)
        self.seen_pids.add(self.proc.pid)
        if wait and not wait_until(self.healthy, timeout=10):
            raise RuntimeError("paymentsd did not become healthy:\n" + self.log())
        return self

    @property
    def pid(self):
        return self.proc.pid

    def healthy(self):
        return request(self.port, "GET", "/healthz", timeout=2).status == 200

    def children(self):
        kids = children_of(self.pid)
        self.seen_pids.update(kids)
        return kids

    def workers(self):
        return sorted(p for p in self.children() if "worker process" in cmdline(p))

    def housekeepers(self):
        return [p for p in self.children() if "housekeeper process" in cmdline(p)]

    def signal(self, sig):
        os.kill(self.pid, sig)

    def get(self, path, **kw):
        return request(self.port, "GET", path, **kw)

    def post(self, path, body=None, **kw):
        return request(self.port, "POST", path, body=body, **kw)

    def log(self):
        return read_text(self.log_path)

    def wait_exit(self, timeout=15):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        """Fast stop; returns True when the master and every child seen are gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.children()
            self.signal(signal.SIGTERM)
            if self.wait_exit(10) is None:
                self.proc.kill()
                self.proc.wait(5)
        return wait_until(lambda: not any(alive(p) for p in self.seen_pids), timeout=5)


class Load:
    """Background client threads sending requests until stopped; counts
    answers by status and connection errors, and keeps the slowest answer's
    time in seconds.  Each thread waits pause seconds between requests.
    Bounded by max_seconds."""

    def __init__(self, port, path="/healthz", threads=2, max_seconds=30, pause=0.0):
        self.port = port
        self.path = path
        self.pause = pause
        self.ok = 0
        self.bad = []
        self.errors = []
        self.slowest = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + max_seconds
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            t0 = time.monotonic()
            try:
                r = request(self.port, "GET", self.path, timeout=5)
                with self._lock:
                    self.slowest = max(self.slowest, time.monotonic() - t0)
                    if r.status == 200:
                        self.ok += 1
                    else:
                        self.bad.append(r.status)
            except Exception as e:  # noqa: BLE001 - every failure counts
                with self._lock:
                    self.errors.append(repr(e))
            self._stop.wait(self.pause)

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(10)
        return self


class DelayProxy:
    """A TCP proxy in front of a real dependency (PostgreSQL): it can hold
    back the server's bytes (delay), or be cut (every connection reset, the
    port closed: connection refused) and restored on the same port.
    accepted counts the connections it passed on."""

    def __init__(self, target_host, target_port, port=0):
        self.target = (target_host, target_port)
        self.delay = 0.0
        self.refusing = False
        self.port = port
        self.conns = []
        self.accepted = 0
        self.lock = threading.Lock()
        self.up()

    def up(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.sock,), daemon=True).start()

    def down(self):
        self.sock.close()
        self._reset_all()

    def refuse(self, on):
        """While on, the port stays bound (so that no other socket can take
        it, as one may between down() and up()) but every connection is
        reset as soon as it is accepted, and those open now are reset."""
        self.refusing = on
        if on:
            self._reset_all()

    def _reset_all(self):
        with self.lock:
            for c in self.conns:
                try:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                    c.close()
                except OSError:
                    pass
            self.conns = []

    def _accept(self, sock):
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            if self.refusing:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
                self.accepted += 1
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src, dst, delayed):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if delayed and self.delay > 0:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


DEV_SECRET = "whsec_c2ltdWxhdG9yLXNlY3JldC1mb3ItZGV2ZWxvcG1lbnQ="


class FakeDNS:
    """A DNS server on a free UDP port of 127.0.0.1: A records from
    `records` (AAAA: none), NXDOMAIN for other names, nothing at all while
    `silent`."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.records = {}
        self.silent = False
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def resolv_conf(self):
        """A resolv.conf naming this server (for resolv_conf in a conf)."""
        path = os.path.join(tempfile.mkdtemp(prefix="fake-dns-"), "resolv.conf")
        with open(path, "w") as f:
            # evdns takes a port after the address; short timeouts keep waits bounded.
            f.write("nameserver 127.0.0.1:%d\noptions timeout:1 attempts:1\n" % self.port)
        return path

    def set(self, name, addr):
        with self.lock:
            self.records[name] = addr

    def _serve(self):
        while True:
            try:
                q, peer = self.sock.recvfrom(512)
            except OSError:
                return
            off, labels = 12, []
            while off < len(q) and q[off] != 0:
                n = q[off]
                labels.append(q[off + 1:off + 1 + n].decode("ascii", "replace"))
                off += 1 + n
            qend = off + 5                  # the root label, type, class
            if len(q) < 17 or qend > len(q):
                continue
            qtype = int.from_bytes(q[off + 1:off + 3], "big")
            with self.lock:
                silent = self.silent
                addr = self.records.get(".".join(labels).lower())
            if silent:
                continue
            answer = b""
            if addr is not None and qtype == 1:
                answer = (b"\xc0\x0c\x00\x01\x00\x01" + (1).to_bytes(4, "big") + b"\x00\x04"
                          + socket.inet_aton(addr))
            flags = 0x8180 | (3 if addr is None else 0)
            reply = (q[:2] + flags.to_bytes(2, "big") + b"\x00\x01"
                     + (1 if answer else 0).to_bytes(2, "big") + b"\x00\x00\x00\x00"
                     + q[12:qend] + answer)
            try:
                self.sock.sendto(reply, peer)
            except OSError:
                pass


class ProviderSim:
    """A provider-sim started from a generated conf file."""

    def __init__(self, extra=None):
        self.dir = tempfile.mkdtemp(prefix="provider-sim-e2e-")
        self.port = free_port()
        self.conf_path = os.path.join(self.dir, "provider-sim.conf")
        self.log_path = os.path.join(self.dir, "provider-sim.log")
        settings = {
            "listen": "127.0.0.1:%d" % self.port,
            "webhook_url": "http://127.0.0.1:9/webhooks/provider",
            "webhook_secret": DEV_SECRET,
            "decline_rate": "0",
            "timeout_rate": "0",
            "latency": "0ms",
            "seed": "42",
            "webhook_delay": "1s",
            "webhook_max_attempts": "3",
            "outage": "off",
        }
        settings.update(extra or {})
        with open(self.conf_path, "w") as f:
            f.write("".join("%s = %s\n" % kv for kv in settings.items()))
        self.proc = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        _stderr_logs.append(self.log_path)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([PROVIDER_SIM, "-c", self.conf_path],
                                         stdout=log, stderr=subprocess.STDOUT)
        _started.append(self.proc)
        if not wait_until(lambda: request(self.port, "GET", "/admin/stats", timeout=2).status == 200, 10):
            raise RuntimeError("provider-sim did not start:\n" + self.log())
        return self

    def log(self):
        return read_text(self.log_path)

    def stats(self):
        return request(self.port, "GET", "/admin/stats").json()

    def charge(self, order_id):
        return request(self.port, "GET", "/v1/charges/" + order_id)

    def outage(self, enabled):
        r = request(self.port, "POST", "/admin/outage", body={"enabled": enabled})
        assert r.status == 200, r
        return r

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, 5)


def psql(sql, database=None):
    """Run one query with psql against the test database; rows as lists."""
    out = subprocess.run(["psql", "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                          "-d", database or DATABASE, "-c", sql],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def checkout(d, key, body, headers=None, timeout=10):
    h = {"Content-Type": "application/json"}
    if key is not None:
        h["Idempotency-Key"] = key
    h.update(headers or {})
    return d.post("/checkout", body=body, headers=h, timeout=timeout)


def new_key(prefix="k"):
    return "%s-%d-%s" % (prefix, os.getpid(), os.urandom(8).hex())


# --- webhooks: Standard Webhooks signing, as a provider would do it

def webhook_signature(secret, msg_id, ts, body):
    """"v1,<base64 HMAC-SHA256>" of "{msg_id}.{ts}.{body}" under a whsec_ secret."""
    import base64
    import hashlib
    import hmac
    key = base64.b64decode(secret[len("whsec_"):])
    if isinstance(body, str):
        body = body.encode()
    mac = hmac.new(key, b"%s.%s.%s" % (msg_id.encode(), str(ts).encode(), body), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def webhook_headers(body, secret=DEV_SECRET, msg_id=None, ts=None):
    """The three webhook-* headers (and Content-Type) for body."""
    msg_id = msg_id or "msg_" + os.urandom(8).hex()
    ts = int(time.time()) if ts is None else ts
    return {"Content-Type": "application/json", "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": webhook_signature(secret, msg_id, ts, body)}


def send_webhook(d, body, secret=DEV_SECRET, headers=None, **kw):
    """POST body (dict or str) to d's /webhooks/provider, signed with secret
    unless headers are given; returns a Response."""
    if isinstance(body, dict):
        body = json.dumps(body)
    h = headers if headers is not None else webhook_headers(body, secret)
    return d.post("/webhooks/provider", body=body, headers=h, **kw)


# --- provider-sim's seeded decisions (provider-sim/charges.h), to predict a run

def sim_uniform(seed, purpose, key):
    import hashlib
    d = hashlib.sha256(("%d:%s:%s" % (seed, purpose, key)).encode()).digest()
    return (int.from_bytes(d[:8], "big") >> 11) * 2.0 ** -53


def sim_declines(seed, rate, key):
    """Whether provider-sim with this seed and decline_rate declines key."""
    return sim_uniform(seed, "decline", key) < rate


# --- orders made straight in the database, through the app's SQL API

def body_fingerprint(b):
    """The fingerprint paymentsd gives a checkout body (worker/validate.c)."""
    text = "v1\nbuyer_id:%d:%s\nseller_id:%d:%s\namount_cents:%d\ncurrency:%s\nbuyer_trust:%s\n" % (
        len(b["buyer_id"]), b["buyer_id"], len(b["seller_id"]), b["seller_id"], b["amount_cents"],
        b["currency"], b.get("buyer_trust", "untrusted"))
    return hashlib.sha256(text.encode()).hexdigest()


def db_begin_checkout(key, amount_cents=2500, trust="trusted", currency="EUR",
                      buyer="buyer-db", seller="seller-db", fingerprint="0" * 64):
    """checkout_begin as a worker would call it: a PROCESSING order whose key
    is in progress and which no provider has seen.  Returns the order id;
    the key's lock token is kept in DB_TOKENS[key]."""
    rows = psql("SELECT order_id, lock_token FROM checkout_begin('%s', '%s', '%s', '%s', %d, '%s', "
                "'%s', interval '1 hour', interval '1 day')"
                % (key, fingerprint, buyer, seller, amount_cents, currency, trust))
    DB_TOKENS[key] = rows[0][1]
    return rows[0][0]


DB_TOKENS = {}


def db_pending_order(key, amount_cents=2500, cap=10000):
    """A PENDING_PAYMENT order the provider never saw (as after a refused
    charge call): checkout_begin, then checkout_finish 'unavailable'."""
    oid = db_begin_checkout(key, amount_cents)
    rows = psql("SELECT status FROM checkout_finish('%s', '%s', '%s', 'unavailable', NULL, %d)"
                % (oid, key, DB_TOKENS[key], cap))
    assert rows == [["PENDING_PAYMENT"]], rows
    return oid


def order_status(oid):
    rows = psql("SELECT status, coalesce(failure_reason, '') FROM orders WHERE id = '%s'" % oid)
    return tuple(rows[0]) if rows else None


def ledger_count(oid):
    return int(psql("SELECT count(*) FROM ledger_transactions WHERE order_id = '%s'" % oid)[0][0])
