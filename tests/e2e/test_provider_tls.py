#!/usr/bin/env python3
"""paymentsd's provider client over https:// (worker/provider.c).

A throwaway CA and two server certificates are made with the openssl CLI
in a temporary folder: one for localhost / 127.0.0.1, one for another host
name.  A python fake provider (http.server over ssl) serves them.  Checked:

- a certificate from provider_ca_file naming the host: PAID, by name (SNI
  sent) and by IP address (IP SAN); a relative provider_ca_file is read
  from the conf file's folder;
- keep-alive over TLS: one handshake for several calls; a provider that
  closes after each answer gets a new handshake each time (same SNI);
- refused, for an untrusted buyer FAILED provider_unavailable with the
  reason in the log: a certificate for another host, a private CA when
  provider_ca_file is not set (the system's CAs), a TLS 1.1 provider, a
  plain-HTTP provider on an https:// URL;
- a handshake the provider never answers ends at provider_timeout and
  does not block the worker meanwhile;
- paymentsd -t: https:// is accepted, another scheme is not, and an
  unreadable or non-PEM provider_ca_file is reported as file:line."""

import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import warnings

from harness import (DEV_SECRET, PAYMENTSD, TAP, Paymentsd, checkout, new_key, request, wait_until)

t = TAP()
T0 = time.monotonic()
BODY = {"buyer_id": "buyer-tls", "seller_id": "seller-tls", "amount_cents": 2500, "currency": "EUR"}
TRUSTED = dict(BODY, buyer_trust="trusted")
TIMEOUT = 2.0           # provider_timeout below: a handshake under ASan on a busy machine fits


# --- certificates

PKI = tempfile.mkdtemp(prefix="provider-tls-e2e-")


def openssl(*args):
    subprocess.run(["openssl"] + list(args), cwd=PKI, check=True, timeout=30,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_cert(name, cn, san):
    """A key and a certificate signed by the test CA, for the given SAN."""
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn)
    with open(os.path.join(PKI, name + ".ext"), "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n" % san)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-set_serial", "0x" + os.urandom(8).hex(), "-days", "2", "-out", name + ".pem",
            "-extfile", name + ".ext")
    return os.path.join(PKI, name + ".pem"), os.path.join(PKI, name + ".key")


openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=paymentsd e2e test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
CA = os.path.join(PKI, "ca.pem")
GOOD = make_cert("good", "localhost", "DNS:localhost,IP:127.0.0.1")
OTHER = make_cert("other", "other.example", "DNS:other.example")


# --- the fake provider

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10

    def log_message(self, *args):
        pass

    def do_POST(self):
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with owner.lock:
            owner.requests.append((self.command, self.path, self.headers.get("Host")))
        if self.path == "/v1/charges":
            req = json.loads(body)
            code, answer = 200, {"order_id": req["order_id"], "amount_cents": req["amount_cents"],
                                 "currency": req["currency"], "status": "succeeded",
                                 "charge_id": "ch_tls_" + req["order_id"][:8]}
        else:
            code, answer = 503, {"error": {"code": "unavailable", "message": "not in this test"}}
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if owner.close_after:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def finish_request(self, request, client_address):
        """The handshake happens here, in the connection's own thread."""
        owner = self.owner
        with owner.lock:
            owner.connections += 1
        try:
            conn = owner.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with owner.lock:
                owner.handshake_errors.append(str(e))
            return
        with owner.lock:
            owner.handshakes += 1
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            conn.close()


class TLSProvider:
    """An https provider on a free loopback port with the given certificate."""

    def __init__(self, cert, tls_max=None):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*cert)
        if tls_max is not None:
            self.ctx.set_ciphers("ALL:@SECLEVEL=0")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)   # old versions, on purpose
                self.ctx.minimum_version = ssl.TLSVersion.TLSv1
                self.ctx.maximum_version = tls_max
        self.ctx.sni_callback = self._sni
        self.lock = threading.Lock()
        self.requests = []
        self.sni = []
        self.connections = 0
        self.handshakes = 0
        self.handshake_errors = []
        self.close_after = False
        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.owner = self
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()

    def _sni(self, sock, name, ctx):
        with self.lock:
            self.sni.append(name)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def start(url, ca=None, extra=None):
    conf = {"provider_url": url, "provider_timeout": "%dms" % (TIMEOUT * 1000),
            "idempotency_lock_timeout": "10s", "db_timeout": "2s", "outage_pending_cap_cents": "10000",
            "breaker_threshold": "1000000", "webhook_secret": DEV_SECRET}
    if ca is not None:
        conf["provider_ca_file"] = ca
    conf.update(extra or {})
    return Paymentsd(workers=1, extra=conf).start()


def outcome(r):
    o = r.json()
    return (r.status, o.get("status"), o.get("failure_reason"))


def refused(name, d, why):
    """The provider counts as unavailable: untrusted FAILED, trusted
    PENDING_PAYMENT, and the log says why."""
    got = (outcome(checkout(d, new_key("tls-no"), BODY)), outcome(checkout(d, new_key("tls-no"), TRUSTED)))
    t.eq(got, ((201, "FAILED", "provider_unavailable"), (201, "PENDING_PAYMENT", None)),
         name + ": unavailable (untrusted FAILED provider_unavailable, trusted PENDING_PAYMENT)")
    t.ok(wait_until(lambda: why in d.log(), 3), name + ": the log says why (%s)" % why, d.log()[-1500:])


# --- a certificate from provider_ca_file that names the host
good = TLSProvider(GOOD)
d = start("https://localhost:%d" % good.port, CA)
r = checkout(d, new_key("tls-ok"), BODY)
t.eq(outcome(r), (201, "PAID", None), "https://localhost with provider_ca_file: PAID")
t.eq(good.sni[:1], ["localhost"], "the host name is sent as SNI")
t.eq(good.requests[:1], [("POST", "/v1/charges", "localhost:%d" % good.port)],
     "POST /v1/charges with Host localhost:port")

before = good.handshakes
answers = [outcome(checkout(d, new_key("tls-ka"), BODY)) for _ in range(5)]
t.eq(answers, [(201, "PAID", None)] * 5, "five more checkouts: PAID")
t.eq(good.handshakes - before, 0, "over the same TLS connection: keep-alive, no new handshake")

good.close_after = True
before = good.handshakes
answers = [outcome(checkout(d, new_key("tls-close"), BODY)) for _ in range(3)]
t.eq(answers, [(201, "PAID", None)] * 3, "a provider that closes after each answer: PAID")
# the first went over the open connection (unless it had idled out);
# evhttp reconnects the pooled connection for the next ones, the same SSL
# object cleared for a new session
n = good.handshakes - before
t.ok(n in (2, 3) and good.sni[-n:] == ["localhost"] * n,
     "a new handshake for each next one, with SNI again", (n, good.sni[-3:]))
good.close_after = False
t.ok(d.stop(), "no process left behind")

# by IP address: the certificate's IP SAN is checked, no SNI is sent
sni_before = len(good.sni)
d = start("https://127.0.0.1:%d" % good.port, CA)
t.eq(outcome(checkout(d, new_key("tls-ip"), BODY)), (201, "PAID", None),
     "https://127.0.0.1 with an IP SAN: PAID")
t.eq(good.sni[sni_before:], [None], "no SNI for an IP address")
t.ok(d.stop(), "no process left behind")

# a relative provider_ca_file is read beside the conf file, whatever the cwd
d = Paymentsd(workers=1, extra={"provider_url": "https://localhost:%d" % good.port,
                                "provider_ca_file": "provider-ca.pem", "webhook_secret": DEV_SECRET,
                                "provider_timeout": "%dms" % (TIMEOUT * 1000)})
shutil.copy(CA, os.path.join(d.dir, "provider-ca.pem"))
d.start()
t.ok(os.getcwd() != d.dir, "paymentsd runs from another folder than its conf")
t.eq(outcome(checkout(d, new_key("tls-rel"), BODY)), (201, "PAID", None),
     "a relative provider_ca_file, beside the conf file: PAID")
t.ok(d.stop(), "no process left behind")

# --- refused certificates and protocols
other = TLSProvider(OTHER)
d = start("https://localhost:%d" % other.port, CA)
refused("a certificate for another host name", d, "hostname mismatch")
t.eq(other.requests, [], "no request was sent to it")
t.ok(d.stop(), "no process left behind")

d = start("https://localhost:%d" % good.port)
refused("no provider_ca_file: the system's CAs refuse the private CA", d,
        "unable to get local issuer certificate")
t.ok(d.stop(), "no process left behind")

old = TLSProvider(GOOD, tls_max=ssl.TLSVersion.TLSv1_1)
d = start("https://localhost:%d" % old.port, CA)
refused("a provider that speaks TLS 1.1 at most", d, "protocol version")
t.eq(old.requests, [], "no request was sent to it")
t.ok(d.stop(), "no process left behind")


def plain_http(sock):
    """Answers anything with a plain-HTTP 400, as an http server would."""
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        try:
            conn.settimeout(5)
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass
        conn.close()


plain = socket.socket()
plain.bind(("127.0.0.1", 0))
plain.listen(16)
threading.Thread(target=plain_http, args=(plain,), daemon=True).start()
d = start("https://localhost:%d" % plain.getsockname()[1], CA)
refused("a plain-HTTP provider on an https:// URL", d, "wrong version number")
t.ok(d.stop(), "no process left behind")
plain.close()

# --- a handshake that never comes: bounded, and the worker serves meanwhile
silent = socket.socket()
silent.bind(("127.0.0.1", 0))
silent.listen(16)       # the kernel completes the TCP connect; nobody ever answers
d = start("https://localhost:%d" % silent.getsockname()[1], CA)
result = {}


def slow_checkout():
    t0 = time.monotonic()
    result["r"] = checkout(d, new_key("tls-silent"), BODY, timeout=15)
    result["took"] = time.monotonic() - t0


th = threading.Thread(target=slow_checkout)
th.start()
time.sleep(0.3)
t0 = time.monotonic()
h = request(d.port, "GET", "/healthz", timeout=5)
health_took = time.monotonic() - t0
th.join(15)
t.ok(h.status == 200 and health_took < TIMEOUT / 2,
     "during a stalled handshake the worker still answers (/healthz in %.2fs)" % health_took)
t.ok("r" in result and outcome(result["r"]) == (201, "FAILED", "provider_unavailable")
     and TIMEOUT - 0.2 <= result["took"] < TIMEOUT + 1.5,
     "the stalled handshake ends at provider_timeout: FAILED provider_unavailable (%.2fs)"
     % result.get("took", -1), result)
t.ok(d.stop(), "no process left behind")
silent.close()

# --- paymentsd -t
def conf_test(extra):
    p = Paymentsd(workers=1, extra=extra)
    r = subprocess.run([PAYMENTSD, "-t", "-c", p.conf_path], capture_output=True, text=True, timeout=10)
    with open(p.conf_path) as f:
        lines = f.read().splitlines()
    line = next((i + 1 for i, x in enumerate(lines) if x.startswith("provider_ca_file")), None)
    return r, p.conf_path, line


r, _, _ = conf_test({"provider_url": "https://provider.example:8443", "provider_ca_file": CA})
t.eq(r.returncode, 0, "paymentsd -t: an https:// provider_url and a PEM provider_ca_file are fine")
r, _, _ = conf_test({"provider_url": "ftp://provider.example"})
t.ok(r.returncode != 0 and "provider_url must be an http:// or https:// URL" in r.stderr,
     "paymentsd -t: another scheme is refused", r.stderr)
missing = os.path.join(PKI, "missing.pem")
r, path, line = conf_test({"provider_url": "https://localhost:1", "provider_ca_file": missing})
t.ok(r.returncode != 0 and "%s:%d: provider_ca_file %s: No such file or directory" % (path, line, missing)
     in r.stderr, "paymentsd -t: an unreadable provider_ca_file, reported as file:line", r.stderr)
r, path, line = conf_test({"provider_url": "https://localhost:1", "provider_ca_file": GOOD[1]})
t.ok(r.returncode != 0 and "%s:%d: provider_ca_file" % (path, line) in r.stderr
     and "no PEM certificate" in r.stderr, "paymentsd -t: a provider_ca_file without a certificate", r.stderr)
r, _, _ = conf_test({"provider_url": "http://localhost:1", "provider_ca_file": CA})
t.ok(r.returncode == 0 and "provider_ca_file is set but provider_url is not https://" in r.stderr,
     "paymentsd -t: warns of a provider_ca_file that an http:// URL does not use", r.stderr)

good.close()
other.close()
old.close()
shutil.rmtree(PKI, ignore_errors=True)
t.diag("took %.1fs" % (time.monotonic() - T0))
t.done()
