#!/usr/bin/env python3
"""The fault campaign: the whole system under load and combined faults, then
an audit of every key, order, ledger entry and provider charge.

It starts a PostgreSQL cluster of its own (under /tmp, on a free loopback
port), provider-sim (declines, timeouts, latency, a journal so that a
restart remembers its charges) behind a proxy that can slow or cut the
provider path, and paymentsd with 2 workers and a short housekeeper
interval.  For --seconds, ~16 client threads run checkouts as real clients
do: fresh keys with realistic bodies, retries of the same key and body with
back-off after a timeout, a connection error, a 5xx or 409 in_use, some keys
sent by two clients at once, some requests abandoned mid-flight with a
reset.  Meanwhile faults are injected on a schedule, each several times in
a long run: kill -9 of a worker and of the housekeeper, SIGHUP reloads (one
kind changes timeouts), PostgreSQL crash-restarted and stopped for seconds,
provider outage, a provider slower than provider_timeout, the provider path
cut, provider-sim killed with kill -9 and restarted.  One more thread sends
garbage: malformed, oversized, slow and abandoned requests.

Then the system settles and is audited:
  (a) one order per key, and every answer a client got for a key names it;
  (b) no order left PROCESSING and every key has a final answer;
  (c) an answer PAID is never downgraded, FAILED never becomes PAID,
      PENDING_PAYMENT ends PAID or FAILED;
  (d) every PAID order has exactly one balanced payment transaction, no
      other order has one, and debits equal credits overall;
  (e) for every order, what the provider holds (net of cancels and refunds)
      equals what the ledger says, and the provider holds nothing else;
  (f) 200 finished keys replayed give the stored answer and the same order;
  (g) the service is healthy at the end, stops cleanly and leaves no
      process behind, and no sanitizer reported anything.

It prints each check with its count of violations, the counts of keys,
answers and faults, and a closing line "chaos: N passed, N failed"; the
exit status is 0 only when every check passed.  Run it from a build folder
(make chaos) or with PAYMENTSD and PROVIDER_SIM set.

usage: chaos.py [--seconds N] [--clients N] [--seed N] [--keep]
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, "tests", "e2e"))
import harness as H  # noqa: E402

PG_BIN = "/usr/lib/postgresql/15/bin"
CAP = 10000                     # outage_pending_cap_cents
PROVIDER_TIMEOUT = 1.0          # seconds; the "slow" fault answers later than this
CLIENT_TIMEOUT = 6.0            # a client gives up on one attempt after this


def log(msg):
    print("# %7.1fs %s" % (time.monotonic() - T0, msg), flush=True)


T0 = time.monotonic()


# ---- the parts of the system ----

def stable_port():
    """A free loopback port below the kernel's ephemeral range.  The parts
    that are restarted (PostgreSQL, provider-sim, the proxy) bind the same
    port again; one from the ephemeral range could meanwhile be taken as the
    local port of some outgoing connection, and the restart would fail."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(10000, max(10001, low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return _ephemeral_port()


# Every port of the campaign, the harness's included, is a stable one.
_ephemeral_port = H.free_port
H.free_port = stable_port


class Postgres:
    """A cluster of the campaign's own, made with scripts/pg.sh, restarted
    and stopped with pg_ctl."""

    def __init__(self):
        self.dir = "/tmp/paymentsd-chaos-pg-%d" % os.getpid()
        self.port = H.free_port()
        self.env = dict(os.environ, PG_DIR=self.dir, PG_PORT=str(self.port))
        self.url = "postgresql://app:app@127.0.0.1:%d/payments" % self.port

    def _as_pg(self, args):
        if os.getuid() == 0:
            args = ["runuser", "-u", "postgres", "--"] + args
        return subprocess.run(args, capture_output=True, text=True, timeout=90)

    def setup(self):
        r = subprocess.run([os.path.join(TOP, "scripts", "pg.sh"), "start"], env=self.env,
                           capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise RuntimeError("pg.sh start failed:\n" + r.stdout + r.stderr)

    def ctl(self, *args):
        r = self._as_pg([PG_BIN + "/pg_ctl", "-D", self.dir + "/data"] + list(args))
        if r.returncode != 0 and args[0] != "status":
            log("pg_ctl %s: %s" % (" ".join(args), (r.stdout + r.stderr).strip()[-300:]))
        return r.returncode == 0

    def start(self):
        return self.ctl("start", "-w", "-t", "60", "-l", self.dir + "/server.log", "-o", "-p %d" % self.port)

    def stop(self, mode="fast"):
        return self.ctl("stop", "-w", "-m", mode)

    def running(self):
        return self.ctl("status")

    def destroy(self):
        if os.path.isdir(self.dir + "/data"):
            self.stop("immediate")
        real = os.path.realpath(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        if os.path.islink(self.dir):
            os.unlink(self.dir)
        if real != self.dir:
            shutil.rmtree(real, ignore_errors=True)


class Sim(H.ProviderSim):
    """provider-sim that can be killed and restarted on the same port with
    the same journal."""

    def restart(self):
        H._stderr_logs.append(self.log_path)
        with open(self.log_path, "a") as out:
            self.proc = subprocess.Popen([H.PROVIDER_SIM, "-c", self.conf_path],
                                         stdout=out, stderr=subprocess.STDOUT)
        H._started.append(self.proc)
        return H.wait_until(lambda: self.admin("GET", "/admin/stats") is not None, 15)

    def admin(self, method, path, body=None):
        try:
            r = H.request(self.port, method, path, body=body, timeout=10)
            return r if r.status == 200 else None
        except OSError:
            return None


# ---- the clients ----

class Book:
    """Everything the clients saw, per key."""

    def __init__(self):
        self.lock = threading.Lock()
        self.bodies = {}
        self.answers = defaultdict(list)    # key -> [(http status, order id, order status, replayed)]
        self.final = set()
        self.unexpected = []                # (key, status, body) answers no retry can explain
        self.counts = Counter()

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] += n


def make_body(rng, i):
    trusted = rng.random() < 0.6
    # under and over the outage cap, both sides of it for both kinds of buyer
    amount = rng.choice([rng.randint(100, CAP - 1), rng.randint(CAP, 3 * CAP)]) if rng.random() < 0.7 \
        else rng.randint(1, 200000)
    return {"buyer_id": "buyer-%d" % rng.randint(1, 500), "seller_id": "seller-%d" % (i % 7),
            "amount_cents": amount, "currency": rng.choice(["EUR", "USD", "GBP"]),
            "buyer_trust": "trusted" if trusted else "untrusted"}


def abandon(port, key, body, rng):
    """Send a checkout and reset the connection before (or while) it is
    answered, as a client that crashed or a balancer that gave up."""
    data = json.dumps(body).encode()
    req = ("POST /checkout HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           "Idempotency-Key: %s\r\nContent-Length: %d\r\n\r\n" % (key, len(data))).encode() + data
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(req)
        time.sleep(rng.random() * 0.2)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        s.close()
    except OSError:
        pass


def drive(d, book, key, body, rng, hard_deadline):
    """One key to a final answer: retries as a careful client does."""
    attempt = 0
    while time.monotonic() < hard_deadline:
        attempt += 1
        book.count("attempts")
        if attempt <= 3 and rng.random() < 0.04:
            abandon(d.port, key, body, rng)
            book.count("abandoned")
        else:
            try:
                r = H.checkout(d, key, body, timeout=CLIENT_TIMEOUT)
            except (OSError, H.http.client.HTTPException) as e:
                book.count("errors:" + type(e).__name__)
                r = None
            if r is not None:
                book.count("http:%d" % r.status)
                try:
                    doc = r.json()
                except ValueError:
                    doc = {}
                if r.status in (200, 201) and isinstance(doc, dict) and "order_id" in doc:
                    with book.lock:
                        book.answers[key].append((r.status, doc["order_id"], doc.get("status"),
                                                  r.headers.get("idempotent-replayed") == "true"))
                        book.final.add(key)
                    return
                code = doc.get("error", {}).get("code") if isinstance(doc, dict) else None
                retryable = r.status >= 500 or (r.status == 409 and code == "idempotency_key_in_use")
                if not retryable:
                    with book.lock:
                        book.unexpected.append((key, r.status, r.body[:200]))
                    return
        time.sleep(min(2.0, 0.05 * 2 ** min(attempt, 6)) * (0.5 + rng.random() / 2))
    book.count("gave_up")


def client(d, book, i, seed, stop_new, hard_deadline):
    rng = random.Random(seed * 1000 + i)
    n = 0
    while not stop_new.is_set():
        n += 1
        key = "chaos-%d-%d-%d-%s" % (seed, i, n, "%08x" % rng.getrandbits(32))
        body = make_body(rng, i)
        with book.lock:
            book.bodies[key] = body
        if rng.random() < 0.1:
            # the same key from two clients at once
            twin = threading.Thread(target=drive, args=(d, book, key, body, random.Random(rng.random()),
                                                        hard_deadline), daemon=True)
            twin.start()
            drive(d, book, key, body, rng, hard_deadline)
            twin.join(max(0.0, hard_deadline - time.monotonic()) + 5)
            book.count("twin_keys")
        else:
            drive(d, book, key, body, rng, hard_deadline)
        time.sleep(rng.random() * 0.05)


GARBAGE = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),      # a TLS hello
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n",
    b"POST /checkout HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n{",
    b"POST /checkout HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /checkout HTTP/1.1\r\nContent-Type: application/json\r\nIdempotency-Key: \x00\x01\r\n"
    b"Content-Length: 5\r\n\r\n{\"a\":",
    b"POST /webhooks/provider HTTP/1.1\r\nwebhook-id: x\r\nwebhook-timestamp: 1\r\n"
    b"webhook-signature: v1,AAAA\r\nContent-Length: 2\r\n\r\n{}",
    b"GET /orders/../../etc/passwd HTTP/1.1\r\n\r\n",
    b"\r\n\r\n\r\nGET /healthz HTTP/9.9\r\n\r\n",
    b"POST /checkout HTTP/1.1\r\nContent-Length: 10\r\n\r\n",                      # a slow sender
]


def garbage(port, stop, book, rng):
    """Hostile bytes beside the real clients: malformed, oversized, slow,
    abandoned requests.  Any answer or a closed connection is fine; what
    matters is that the real clients keep being served correctly."""
    while not stop.is_set():
        data = rng.choice(GARBAGE)
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.sendall(data[:rng.randint(1, len(data))] if rng.random() < 0.3 else data)
            if rng.random() < 0.5:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            else:
                s.recv(4096)
            s.close()
        except OSError:
            pass
        book.count("garbage")
        stop.wait(0.05)


# ---- the faults ----

class Faults:
    def __init__(self, d, sim, proxy, pg, rng):
        self.d, self.sim, self.proxy, self.pg, self.rng = d, sim, proxy, pg, rng
        self.done = Counter()
        self.slow_timeouts = False

    def kill_worker(self):
        pids = self.d.workers()
        if pids:
            os.kill(self.rng.choice(pids), signal.SIGKILL)
            return True
        return False

    def kill_housekeeper(self):
        pids = self.d.housekeepers()
        for p in pids:
            os.kill(p, signal.SIGKILL)
        return bool(pids)

    def reload(self):
        self.d.signal(signal.SIGHUP)
        return True

    def reload_timeouts(self):
        # provider_timeout and db_timeout move; the lock timeout (4 s) stays
        # above provider_timeout + 2 x db_timeout of either generation.
        self.slow_timeouts = not self.slow_timeouts
        self.d.settings.update({"provider_timeout": "1500ms" if self.slow_timeouts else "1s",
                                "db_timeout": "1s" if self.slow_timeouts else "1200ms"})
        self.d.write_conf()
        self.d.signal(signal.SIGHUP)
        return True

    def pg_crash_restart(self):
        self.pg.stop("immediate")
        time.sleep(self.rng.uniform(0.2, 1.0))
        return self.pg.start()

    def pg_stop(self):
        self.pg.stop("fast")
        time.sleep(self.rng.uniform(2.0, 4.0))
        return self.pg.start()

    def provider_outage(self):
        if self.sim.admin("POST", "/admin/outage", {"enabled": True}) is None:
            return False
        time.sleep(self.rng.uniform(2.0, 4.0))
        return self.sim.admin("POST", "/admin/outage", {"enabled": False}) is not None

    def provider_slow(self):
        self.proxy.delay = PROVIDER_TIMEOUT * 2
        time.sleep(self.rng.uniform(2.0, 4.0))
        self.proxy.delay = 0.0
        return True

    def provider_cut(self):
        self.proxy.refuse(True)
        time.sleep(self.rng.uniform(0.5, 2.0))
        self.proxy.refuse(False)
        return True

    def kill_provider(self):
        self.sim.proc.kill()
        self.sim.proc.wait(5)
        time.sleep(self.rng.uniform(0.2, 1.5))
        return self.sim.restart()

    KINDS = ["kill_worker", "kill_housekeeper", "reload", "reload_timeouts", "pg_crash_restart",
             "pg_stop", "provider_outage", "provider_slow", "provider_cut", "kill_provider"]

    def run(self, until):
        """Every kind once per round, in a shuffled order, spread evenly."""
        rounds = 0
        while time.monotonic() < until:
            kinds = list(self.KINDS)
            self.rng.shuffle(kinds)
            for kind in kinds:
                gap = (until - time.monotonic()) / max(1, len(kinds))
                start = time.monotonic()
                if start >= until:
                    return
                try:
                    ok = getattr(self, kind)()
                except Exception as e:  # noqa: BLE001 - a fault that could not be injected is counted
                    log("fault %s raised %r" % (kind, e))
                    ok = False
                self.done[kind if ok else kind + " (failed)"] += 1
                log("fault %s%s" % (kind, "" if ok else " FAILED"))
                time.sleep(max(0.0, min(gap, 8.0) - (time.monotonic() - start)))
            rounds += 1

    def restore(self):
        """Everything up again, whatever was happening."""
        self.proxy.delay = 0.0
        self.proxy.refuse(False)
        if not self.pg.running():
            self.pg.start()
        if self.sim.proc.poll() is not None:
            self.sim.restart()
        self.sim.admin("POST", "/admin/outage", {"enabled": False})


# ---- the audit ----

def audit(d, sim, pg, book, stats):
    q = lambda sql: H.psql(sql, database=pg.url)  # noqa: E731
    checks = []

    def check(name, violations, detail=""):
        checks.append((name, violations))
        print("%s - %s: %d violation%s%s" % ("ok" if not violations else "not ok", name, violations,
                                            "" if violations == 1 else "s", (" (" + detail + ")") if detail else ""),
              flush=True)

    keys = {k: (oid, state, rs, rb) for k, oid, state, rs, rb in
            q("SELECT key, order_id, state, coalesce(response_status::text, ''), coalesce(response_body, '') "
              "FROM idempotency_keys")}
    orders = {oid: (status, int(amount)) for oid, status, amount in
              q("SELECT id, status, amount_cents FROM orders")}

    # (a) one order per key; every answer names it
    bad = []
    for key, answers in book.answers.items():
        row = keys.get(key)
        oids = {a[1] for a in answers}
        if row is None or oids != {row[0]}:
            bad.append((key, oids, row and row[0]))
    orphans = int(q("SELECT count(*) FROM orders o WHERE NOT EXISTS "
                    "(SELECT 1 FROM idempotency_keys k WHERE k.order_id = o.id)")[0][0])
    shared = int(q("SELECT count(*) FROM (SELECT order_id FROM idempotency_keys GROUP BY order_id "
                   "HAVING count(*) > 1) s")[0][0])
    check("(a) one order per key, every answer names it", len(bad) + orphans + shared + len(book.unexpected),
          "%d keys in the database, %d orders; answers naming another order %d, orders without a key %d, "
          "orders of two keys %d, answers no client should get %d%s"
          % (len(keys), len(orders), len(bad), orphans, shared, len(book.unexpected),
             (": " + repr((bad + book.unexpected)[:3])) if bad or book.unexpected else ""))

    # (b) nothing left PROCESSING, every key finished
    processing = [o for o, (s, _) in orders.items() if s == "PROCESSING"]
    unfinished = [k for k in book.bodies if k not in book.final]
    in_progress = [k for k, r in keys.items() if r[1] != "completed"]
    check("(b) no order PROCESSING, every key answered", len(processing) + len(unfinished) + len(in_progress),
          "PROCESSING %d, keys a client never got a final answer for %d, keys still in progress %d%s"
          % (len(processing), len(unfinished), len(in_progress),
             (": " + repr((processing + unfinished + in_progress)[:3])) if processing or unfinished or in_progress
             else ""))

    # (c) no downgrade: answers against the order's final status
    bad = []
    for key, answers in book.answers.items():
        row = keys.get(key)
        final = orders.get(row[0], ("?",))[0] if row else "?"
        said = {a[2] for a in answers}
        if ("PAID" in said and final != "PAID") or ("FAILED" in said and final != "FAILED") \
                or ("PENDING_PAYMENT" in said and final not in ("PAID", "FAILED")) \
                or ("PAID" in said and "FAILED" in said):
            bad.append((key, sorted(s for s in said if s), final))
    pending = [o for o, (s, _) in orders.items() if s == "PENDING_PAYMENT"]
    answered = Counter(a[2] for answers in book.answers.values() for a in answers if not a[3])
    check("(c) PAID stays PAID, FAILED stays FAILED, PENDING_PAYMENT settles", len(bad) + len(pending),
          "first answers %s; downgrades %d, still PENDING_PAYMENT %d%s"
          % (dict(answered), len(bad), len(pending), (": " + repr((bad + pending)[:3])) if bad or pending else ""))

    # (d) the ledger
    payments = Counter({o: int(n) for o, n in q("SELECT order_id, count(*) FROM ledger_transactions "
                                                 "WHERE kind = 'payment' GROUP BY order_id")})
    unbalanced = int(q("SELECT count(*) FROM (SELECT t.id FROM ledger_transactions t "
                       "JOIN ledger_entries e ON e.txn_id = t.id GROUP BY t.id HAVING "
                       "sum(CASE e.direction WHEN 'DEBIT' THEN e.amount_cents ELSE -e.amount_cents END) <> 0) u"
                       )[0][0])
    totals = q("SELECT coalesce(sum(amount_cents) FILTER (WHERE direction = 'DEBIT'), 0), "
               "coalesce(sum(amount_cents) FILTER (WHERE direction = 'CREDIT'), 0) FROM ledger_entries")[0]
    wrong_pay = [o for o, (s, _) in orders.items() if payments.get(o, 0) != (1 if s == "PAID" else 0)]
    check("(d) one balanced payment per PAID order, debits = credits",
          len(wrong_pay) + unbalanced + (totals[0] != totals[1]),
          "PAID orders %d, orders with a wrong number of payments %d, unbalanced transactions %d, "
          "debits %s, credits %s%s" % (sum(1 for s, _ in orders.values() if s == "PAID"), len(wrong_pay),
                                       unbalanced, totals[0], totals[1],
                                       (": " + repr(wrong_pay[:3])) if wrong_pay else ""))

    # (e) the provider's money against the ledger's
    r = sim.admin("GET", "/admin/charges")
    charges = {c["order_id"]: c for c in r.json()["charges"]} if r is not None else None
    if charges is None:
        check("(e) the provider holds what the ledger says", 1, "GET /admin/charges failed")
    else:
        cash = {o: int(c) for o, c in q(
            "SELECT t.order_id, sum(CASE e.direction WHEN 'DEBIT' THEN e.amount_cents ELSE -e.amount_cents END) "
            "FROM ledger_transactions t JOIN ledger_entries e ON e.txn_id = t.id "
            "WHERE e.account = 'cash' GROUP BY t.order_id")}
        bad = []
        for oid, (status, amount) in orders.items():
            held = charges.get(oid, {}).get("held_cents", 0)
            want = amount if status == "PAID" else 0
            if held != want or cash.get(oid, 0) != want:
                bad.append((oid, status, want, held, cash.get(oid, 0)))
        strays = [o for o, c in charges.items() if o not in orders and c.get("held_cents", 0) != 0]
        reversals = Counter(s for (s,) in q("SELECT status FROM order_reversals"))
        check("(e) the provider holds what the ledger says", len(bad) + len(strays),
              "provider charges %d, held total %d; reversals %s; orders differing %d, money held for no order %d%s"
              % (len(charges), sum(c.get("held_cents", 0) for c in charges.values()), dict(reversals), len(bad),
                 len(strays), (": " + repr((bad + strays)[:3])) if bad or strays else ""))

    # (f) replays
    done = sorted(k for k in book.final if keys.get(k, (None, ""))[1] == "completed")
    sample = random.Random(len(done)).sample(done, min(200, len(done)))
    bad = []
    for key in sample:
        oid, _, rs, rb = keys[key]
        try:
            r = H.checkout(d, key, book.bodies[key], timeout=CLIENT_TIMEOUT)
        except OSError as e:
            bad.append((key, repr(e)))
            continue
        ok = (r.status == int(rs) and r.body.decode(errors="replace") == rb
              and r.headers.get("idempotent-replayed") == "true" and ('"%s"' % oid) in rb)
        if not ok:
            bad.append((key, r.status, rs, r.body[:120]))
    check("(f) replays give the stored answer and the same order", len(bad),
          "%d keys replayed%s" % (len(sample), (": " + repr(bad[:3])) if bad else ""))

    # (g) healthy, clean stop, nothing left behind, no sanitizer report
    problems = []
    for path in ("/healthz", "/readyz"):
        try:
            r = d.get(path, timeout=5)
            if r.status != 200:
                problems.append("%s %d" % (path, r.status))
        except OSError as e:
            problems.append("%s %r" % (path, e))
    d.children()
    pids = set(d.seen_pids)
    d.signal(signal.SIGQUIT)
    if d.wait_exit(30) is None:
        problems.append("paymentsd did not stop within 30 s of SIGQUIT")
    if not H.wait_until(lambda: not any(H.alive(p) for p in pids), 10):
        problems.append("left behind: %r" % [p for p in pids if H.alive(p)])
    sim.stop()
    reports = H.sanitizer_reports()
    problems += ["sanitizer: " + r[:2000] for r in reports]
    check("(g) healthy at the end, clean stop, no process left, no sanitizer report", len(problems),
          "; ".join(problems))
    return checks


def settled(pg):
    try:
        rows = H.psql("SELECT (SELECT count(*) FROM orders WHERE status IN ('PROCESSING', 'PENDING_PAYMENT')), "
                      "(SELECT count(*) FROM order_reversals WHERE status = 'pending'), "
                      "(SELECT count(*) FROM idempotency_keys WHERE state <> 'completed')", database=pg.url)
    except subprocess.SubprocessError:
        return False
    return rows == [["0", "0", "0"]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the logs and the database folder")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1 << 30)
    rng = random.Random(seed)
    print("# seed %d, %g s, %d clients (rerun with --seed %d)" % (seed, args.seconds, args.clients, seed), flush=True)

    pg = Postgres()
    sim = d = None
    try:
        pg.setup()
        d_port = H.free_port()
        sim = Sim({"webhook_url": "http://127.0.0.1:%d/webhooks/provider" % d_port,
                   "decline_rate": "0.1", "timeout_rate": "0.05", "latency": "5ms", "hold": "3s",
                   "seed": str(seed), "webhook_delay": "500ms", "webhook_max_attempts": "1000",
                   "webhook_backoff": "200ms", "webhook_backoff_max": "2s"})
        with open(sim.conf_path, "a") as f:
            f.write("state_file = %s\n" % os.path.join(sim.dir, "charges.journal"))
        sim.start()
        proxy = H.DelayProxy("127.0.0.1", sim.port, port=stable_port())
        d = H.Paymentsd(workers=2, port=d_port, database=pg.url, extra={
            "provider_url": "http://127.0.0.1:%d" % proxy.port, "provider_timeout": "1s",
            "db_timeout": "1200ms", "idempotency_lock_timeout": "4s", "housekeeper_interval": "500ms",
            "pending_reconcile_age": "2s", "webhook_secret": H.DEV_SECRET,
            "outage_pending_cap_cents": str(CAP), "breaker_threshold": "5", "breaker_cooldown": "1s",
            "worker_shutdown_timeout": "5s", "log_level": "warn"}).start()
        log("paymentsd on %d (log %s), provider-sim on %d behind proxy %d, PostgreSQL on %d"
            % (d.port, d.log_path, sim.port, proxy.port, pg.port))

        book = Book()
        stop_new = threading.Event()
        end = time.monotonic() + args.seconds
        hard_deadline = end + 90
        clients = [threading.Thread(target=client, args=(d, book, i, seed, stop_new, hard_deadline), daemon=True)
                   for i in range(args.clients)]
        for c in clients:
            c.start()
        hostile = threading.Thread(target=garbage, args=(d.port, stop_new, book, random.Random(seed + 1)),
                                   daemon=True)
        hostile.start()
        faults = Faults(d, sim, proxy, pg, rng)
        time.sleep(min(2.0, args.seconds / 10))
        faults.run(end - 2)
        faults.restore()
        while time.monotonic() < end:
            time.sleep(0.2)
        stop_new.set()
        log("faults over, restored; clients finish their keys")
        for c in clients:
            c.join(max(0.0, hard_deadline - time.monotonic()) + 1)
        log("clients done: %d keys; settling" % len(book.bodies))
        if not H.wait_until(lambda: settled(pg), 120, 0.5):
            log("not settled after 120 s")
        # webhooks still queued at the sim may arrive for final orders: let them land
        time.sleep(1)

        counts = book.counts
        answers = sum(len(a) for a in book.answers.values())
        print("# keys %d (%d sent by two clients at once), final answers %d, attempts %d, abandoned %d, gave up %d, "
              "garbage requests %d" % (len(book.bodies), counts["twin_keys"], answers, counts["attempts"],
                                       counts["abandoned"], counts["gave_up"], counts["garbage"]))
        print("# answers by status: %s" % ", ".join("%s %d" % (k, v) for k, v in sorted(counts.items())
                                                   if k.startswith(("http:", "errors:"))))
        print("# faults injected (%d): %s" % (sum(faults.done.values()),
                                              ", ".join("%s %d" % kv for kv in sorted(faults.done.items()))))
        checks = audit(d, sim, pg, book, None)
        failed_faults = sum(n for k, n in faults.done.items() if k.endswith("(failed)"))
        checks.append(("every fault injected", failed_faults))
        print("%s - every scheduled fault was injected: %d failed" % ("ok" if not failed_faults else "not ok",
                                                                      failed_faults))
    except Exception as e:  # noqa: BLE001 - a broken campaign is a failed one
        import traceback
        traceback.print_exc()
        checks = [("campaign ran", 1)]
        print("not ok - the campaign itself failed: %r" % e)
    finally:
        for p in (d, sim):
            if p is not None:
                try:
                    p.stop()
                except Exception:  # noqa: BLE001
                    pass
        if args.keep:
            print("# kept: database %s, paymentsd %s, provider-sim %s"
                  % (pg.dir, d and d.dir, sim and sim.dir))
        else:
            pg.destroy()
            for p in (d, sim):
                if p is not None:
                    shutil.rmtree(p.dir, ignore_errors=True)
    failed = sum(1 for _, v in checks if v)
    print("chaos: %d passed, %d failed" % (len(checks) - failed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
