#!/usr/bin/env python3
"""Many hosts behind HAProxy, on a PostgreSQL that survives losing its primary.

scripts/cluster.sh brings up, under a name of its own (pdct) and in network
namespaces that it creates: three paymentsd hosts, HAProxy (on 127.0.0.1),
provider-sim, and a pg_auto_failover monitor with a primary and a
synchronous standby.  Then, through HAProxy:

  1. one key hammered onto all three hosts at once: one order, one charge,
     every answer that order or 409 idempotency_key_in_use;
  4. a replay answered by another host than the first (its cache is cold)
     is byte-identical;
  -  the throughput of 3 hosts against 1 (measured and printed, not judged:
     on 2 cores it cannot scale);
  2. a host killed (kill -9 of its master and workers) under load: HAProxy
     marks it down within 3 s, no client waits on it after that, and every
     acknowledged order is in the database;
  3. the PostgreSQL primary killed (every process of the node, kill -9)
     under load: the standby is promoted, the time without a primary is
     measured, /readyz fails meanwhile and 503s are retry-safe; afterwards
     no acknowledged order is missing, no key has two orders, no charge
     lacks its order, nothing stays PROCESSING once the housekeepers ran,
     and the hosts serve again with the same masters (no restart).

Needs root (network namespaces), haproxy and pg_autoctl; skips without them.
Loads are small (4 client threads) and every wait is bounded; only the
processes that cluster.sh started are stopped, by pid, and `cluster.sh down`
removes the namespaces.  Prints TAP and a closing "cluster: N passed, N failed".
"""

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, "tests", "e2e"))
import harness as H  # noqa: E402

NAME = "pdct"
DIR = "/tmp/paymentsd-cluster-" + NAME
PORT, ADMIN_PORT, STATS_PORT = H.free_port(), H.free_port(), H.free_port()
ENV = dict(os.environ, CLUSTER_NAME=NAME, CLUSTER_NET="10.79.0", CLUSTER_DIR=DIR,
           CLUSTER_PORT=str(PORT), CLUSTER_ADMIN_PORT=str(ADMIN_PORT),
           CLUSTER_STATS_PORT=str(STATS_PORT), PAYMENTSD=H.PAYMENTSD,
           PROVIDER_SIM=H.PROVIDER_SIM)
DB = ("host=%s/run,%s/run port=5432,5433 dbname=payments user=postgres "
      "target_session_attrs=read-write connect_timeout=3" % (DIR, DIR))
MONITOR = "host=%s/run port=5431 dbname=pg_auto_failover user=postgres" % DIR
CLIENTS = 4
T = H.TAP()


def cluster(cmd, timeout=300):
    return subprocess.run([os.path.join(TOP, "scripts", "cluster.sh"), cmd], env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def sql(query, conninfo=DB):
    out = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-F", "\t",
                          "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", query],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def haproxy(command):
    """One command on HAProxy's admin socket; its answer as text."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(DIR + "/haproxy.sock")
        s.sendall(command.encode() + b"\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data.decode()
            data += chunk


def server_states():
    """{"h1": "UP", ...} from HAProxy's statistics."""
    lines = haproxy("show stat").splitlines()
    head = lines[0].lstrip("# ").split(",")
    out = {}
    for line in lines[1:]:
        row = dict(zip(head, line.split(",")))
        if row.get("pxname") == "paymentsd" and row.get("svname") not in ("FRONTEND", "BACKEND"):
            out[row["svname"]] = row["status"]
    return out


def pid_of(name):
    with open("%s/pids/%s.pid" % (DIR, name)) as f:
        return int(f.read())


def charges():
    return {c["order_id"]: c for c in H.request(ADMIN_PORT, "GET", "/admin/charges").json()["charges"]}


def post(key, body, timeout=5):
    return H.request(PORT, "POST", "/checkout", body=body, timeout=timeout,
                     headers={"Content-Type": "application/json", "Idempotency-Key": key})


def body_for(buyer, amount):
    return {"buyer_id": buyer, "seller_id": "s1", "amount_cents": amount, "currency": "EUR"}


class Clients:
    """Client threads through HAProxy, each sending fresh keys one after the
    other and retrying a key, as a real client does, after a 503, a 409
    in_use or a connection error, until it has an answer.  Each key's buyer
    is unique, so the database shows how many orders a key made."""

    def __init__(self, tag, threads=CLIENTS, seconds=60):
        self.tag = tag
        self.keys = {}              # key -> {"buyer", "acked", "orders", "other"}
        self.events = []            # (sent, received, status or None, key)
        self.lock = threading.Lock()
        self.stop_new = threading.Event()
        self.hard_deadline = time.monotonic() + seconds
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(threads)]

    def run(self, i):
        n = 0
        rng = random.Random(i)
        while not self.stop_new.is_set() and time.monotonic() < self.hard_deadline:
            n += 1
            key = "%s-%d-%d-%s" % (self.tag, i, n, os.urandom(4).hex())
            k = {"buyer": "%s.%d.%d" % (self.tag, i, n), "acked": None, "orders": set(), "other": []}
            with self.lock:
                self.keys[key] = k
            body = body_for(k["buyer"], rng.randint(100, 5000))
            while time.monotonic() < self.hard_deadline:
                sent = time.monotonic()
                try:
                    r = post(key, body)
                except OSError:
                    r = None
                with self.lock:
                    self.events.append((sent, time.monotonic(), r.status if r else None, key))
                if r is not None and r.status in (200, 201):
                    k["acked"] = r.json()["order_id"]
                    k["orders"].add(k["acked"])
                    break
                if r is not None and r.status == 409 and b"in_use" not in r.body:
                    k["other"].append(r.status)
                    break
                if r is not None and r.status not in (409, 502, 503, 504):
                    k["other"].append(r.status)
                    break
                time.sleep(0.2)

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_new.set()
        for t in self.threads:
            t.join(max(1, self.hard_deadline - time.monotonic() + 5))
        return self


def settle(timeout=90):
    """Wait until the housekeepers have finished every order: none PROCESSING."""
    def done():
        try:
            return sql("select count(*) from orders where status = 'PROCESSING'")[0][0] == "0"
        except subprocess.SubprocessError:
            return False
    return H.wait_until(done, timeout, 0.5)


def audit(c, what):
    """Every acknowledged order is in the database, one order per key, every
    charge belongs to an order, and the money matches."""
    rows = sql("select buyer_id, id, status, amount_cents from orders where buyer_id like '%s.%%'" % c.tag)
    by_buyer = {}
    for buyer, oid, status, amount in rows:
        by_buyer.setdefault(buyer, []).append((oid, status, int(amount)))
    acked = [k for k in c.keys.values() if k["acked"]]
    missing = [k for k in acked if k["acked"] not in [o[0] for o in by_buyer.get(k["buyer"], [])]]
    dups = {b: o for b, o in by_buyer.items() if len(o) > 1}
    T.ok(acked, "%s: clients got acknowledged orders (%d keys, %d acked)" % (what, len(c.keys), len(acked)))
    T.ok(not missing, "%s: every acknowledged order is in the database" % what,
         "missing: %r" % missing[:5])
    T.ok(not dups, "%s: one order per key" % what, "keys with two orders: %r" % list(dups.items())[:5])
    unanswered = [k for k in c.keys.values() if not k["acked"] and not k["other"]]
    weird = [k for k in c.keys.values() if k["other"]]
    T.ok(not weird, "%s: no answer other than the order, 409 in_use or a retry-safe 503" % what,
         repr(weird[:5]))
    if unanswered:
        T.diag("%s: %d keys still unanswered when the clients stopped" % (what, len(unanswered)))
    ch = charges()
    orders = {oid: (status, amount) for o in by_buyer.values() for oid, status, amount in o}
    all_ids = {r[0] for r in sql("select id from orders")}
    orphans = [oid for oid in ch if oid not in all_ids]
    T.ok(not orphans, "%s: no provider charge without its order (no lost or duplicate charge)" % what,
         repr(orphans[:5]))
    wrong = [(oid, s, a, ch.get(oid, {}).get("held_cents")) for oid, (s, a) in orders.items()
             if (s == "PAID" and (ch.get(oid) or {}).get("held_cents") != a)
             or (s == "FAILED" and (ch.get(oid) or {}).get("held_cents", 0) != 0)]
    T.ok(not wrong, "%s: the provider holds the amount of every PAID order and nothing for FAILED"
         % what, repr(wrong[:5]))


def test_one_key_everywhere():
    key = H.new_key("hammer")
    buyer = "hammer." + key[-8:]
    body = body_for(buyer, 1234)
    answers, lock = [], threading.Lock()
    barrier = threading.Barrier(9)

    def send():
        barrier.wait(10)
        for _ in range(4):
            try:
                r = post(key, body)
            except OSError as e:
                r = e
            with lock:
                answers.append(r)

    threads = [threading.Thread(target=send) for _ in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    good, bad, order_ids, hosts, firsts = 0, [], set(), set(), 0
    for r in answers:
        if isinstance(r, H.Response) and r.status in (200, 201):
            good += 1
            order_ids.add(r.json()["order_id"])
            hosts.add(r.headers.get("x-served-by"))
            firsts += r.headers.get("idempotent-replayed") is None
        elif isinstance(r, H.Response) and r.status == 409 and r.json()["error"]["code"] == "idempotency_key_in_use":
            hosts.add(r.headers.get("x-served-by"))
        else:
            bad.append(r)
    T.ok(not bad and good > 0, "one key x 36 requests: every answer the order or 409 in_use",
         repr(bad[:5]))
    T.eq(len(order_ids), 1, "one key on all hosts at once: one order id in every answer")
    T.eq(firsts, 1, "one first answer, every other one a replay")
    T.eq(hosts, {"h1", "h2", "h3"}, "the requests reached all three hosts")
    T.eq(len(sql("select id from orders where buyer_id = '%s'" % buyer)), 1, "one order in the database")
    oid = order_ids.pop() if order_ids else None
    c = charges().get(oid) or {}
    T.eq(c.get("attempts"), 1, "one charge at the provider, asked once")


def test_replay_on_another_host():
    key = H.new_key("replay")
    body = body_for("replay." + key[-8:], 4321)
    first = post(key, body)
    T.eq(first.status, 201, "a new checkout through HAProxy")
    other = None
    for _ in range(6):
        r = post(key, body)
        if r.headers.get("x-served-by") != first.headers.get("x-served-by"):
            other = r
            break
    T.ok(other is not None, "a replay answered by another host (%s, then %s)"
         % (first.headers.get("x-served-by"), other and other.headers.get("x-served-by")))
    if other is not None:
        T.ok(other.status == first.status and other.body == first.body
             and other.headers.get("idempotent-replayed") == "true",
             "the other host's replay is byte-identical to the first answer",
             "%r\n%r" % (first, other))


def throughput(seconds=5):
    c = Clients("tput", seconds=seconds + 30)
    c.start()
    time.sleep(seconds)
    c.stop()
    return sum(1 for k in c.keys.values() if k["acked"]) / seconds


def test_throughput():
    lsn = sql("select pg_current_wal_lsn()")[0][0]
    orders = int(sql("select count(*) from orders")[0][0])
    three = throughput()
    wal = sql("select pg_wal_lsn_diff(pg_current_wal_lsn(), '%s'), (select count(*) from orders)"
              % lsn)[0]
    T.diag("WAL per checkout: %.0f bytes (%d checkouts), each sent to the standby before "
           "the commit returns" % (float(wal[0]) / max(1, int(wal[1]) - orders), int(wal[1]) - orders))
    for h in ("h2", "h3"):
        haproxy("disable server paymentsd/" + h)
    one = throughput()
    for h in ("h2", "h3"):
        haproxy("enable server paymentsd/" + h)
    H.wait_until(lambda: set(server_states().values()) == {"UP"}, 10)
    T.diag("throughput, %d client threads, 5 s each: 3 hosts %.0f checkouts/s, 1 host %.0f/s "
           "(2 shared cores: one PostgreSQL, provider-sim, HAProxy and the client "
           "share them, so more hosts cannot add throughput here)" % (CLIENTS, three, one))
    T.ok(three > 0 and one > 0, "throughput measured: 3 hosts %.0f/s, 1 host %.0f/s" % (three, one))


def test_host_killed():
    c = Clients("hostkill").start()
    time.sleep(2)
    master = pid_of("h1")
    victims = [master] + H.children_of(master)
    t_kill = time.monotonic()
    for pid in victims:
        os.kill(pid, 9)
    down = H.wait_until(lambda: server_states().get("h1") == "DOWN", 10, 0.05)
    t_down = time.monotonic() - t_kill
    time.sleep(3)
    c.stop()
    T.ok(down and t_down <= 3.0, "HAProxy marks the killed host down within 3 s (%.2f s)" % t_down)
    # A key whose request was in flight on the killed host stays in progress
    # (409 in_use, retry-safe) until idempotency_lock_timeout; nothing else
    # may fail once HAProxy has routed around the host.
    before = {e[3] for e in c.events if e[0] < t_kill}
    late = [e for e in c.events if e[0] > t_kill + 3.0 and e[2] not in (200, 201)
            and not (e[2] == 409 and e[3] in before)]
    T.ok(not late, "no request sent 3 s after the kill fails, but for keys caught in flight "
         "(409 in_use until their lock timeout; %d answers in all)" % len(c.events), repr(late[:5]))
    audit(c, "host killed")
    r = cluster("up")
    T.ok(r.returncode == 0 and H.wait_until(lambda: server_states().get("h1") == "UP", 15),
         "cluster.sh up starts the killed host again and HAProxy takes it back", r.stderr[-2000:])


def primary():
    rows = sql("select nodename from pgautofailover.node where reportedstate in "
               "('primary', 'wait_primary', 'single') and goalstate = reportedstate", MONITOR)
    return rows[0][0] if len(rows) == 1 else None


def test_primary_killed():
    masters = {h: pid_of(h) for h in ("h1", "h2", "h3")}
    old = primary()
    T.ok(old in ("db1", "db2"), "a primary before the kill: %s" % old)
    if old not in ("db1", "db2"):
        return
    sync = sql("select application_name, sync_state from pg_stat_replication")
    T.ok(sync and all(r[1] in ("sync", "quorum") for r in sync),
         "the standby is synchronous: an acknowledged commit is on both nodes", repr(sync))
    readyz, drained, stop = [], [], threading.Event()

    def watch():
        while not stop.is_set():
            try:
                r = H.request(PORT, "GET", "/readyz", timeout=2)
                readyz.append((time.monotonic(), r.status, r.headers.get("retry-after"), r.body))
                if "DOWN" in server_states().values():
                    drained.append(time.monotonic())
            except OSError:
                pass
            time.sleep(0.1)

    c = Clients("pgkill", seconds=90).start()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(2)
    node = pid_of(old)
    t_kill = time.monotonic()
    os.killpg(node, 9)          # pg_autoctl, its children and the postmaster: the node is gone
    with open("%s/%s/postmaster.pid" % (DIR, old)) as f:
        postmaster = int(f.readline())
    try:
        os.kill(postmaster, 9)
    except ProcessLookupError:
        pass
    promoted = H.wait_until(lambda: primary() not in (None, old), 60, 0.2)
    t_promoted = time.monotonic() - t_kill
    served = H.wait_until(lambda: any(e[0] > t_kill and e[2] in (200, 201) for e in list(c.events)),
                          60, 0.1)
    first_ok = min((e[1] for e in c.events if e[0] > t_kill and e[2] in (200, 201)), default=None)
    time.sleep(2)
    c.stop()
    stop.set()
    watcher.join(5)
    t_app = first_ok - t_kill if first_ok else float("nan")
    T.ok(promoted, "the standby is promoted (%s, %.1f s after the kill)" % (primary(), t_promoted))
    T.ok(served, "checkouts succeed again: %.1f s without a primary as clients saw it" % t_app)
    T.diag("failover: node killed -> standby promoted %.1f s; -> first acknowledged checkout %.1f s"
           % (t_promoted, t_app))
    fails = [r for r in readyz if r[0] > t_kill and r[1] != 200]
    T.ok(fails, "/readyz fails while there is no primary (%d failures seen)" % len(fails))
    unsafe = [r for r in fails if r[1] != 503 or r[2] is None
              or json.loads(r[3])["error"]["code"] != "service_unavailable"]
    T.ok(not unsafe, "those are 503 service_unavailable with Retry-After", repr(unsafe[:3]))
    T.diag("HAProxy saw a host DOWN during the failover: %s" % bool(drained))
    T.ok(settle(), "nothing left PROCESSING once the housekeepers ran")
    audit(c, "primary killed")
    T.eq({h: pid_of(h) for h in masters}, masters, "the hosts kept their masters (no restart)")
    T.ok(all(H.alive(p) for p in masters.values()), "and those masters are alive")
    T.ok(H.wait_until(lambda: set(server_states().values()) == {"UP"}, 15),
         "every host is ready again behind HAProxy", repr(server_states()))
    served_by = set()
    for i in range(6):
        r = post(H.new_key("after"), body_for("after.%d.%s" % (i, os.urandom(3).hex()), 100 + i))
        if r.status == 201:
            served_by.add(r.headers.get("x-served-by"))
    T.eq(served_by, {"h1", "h2", "h3"}, "each host serves checkouts on the new primary")
    r = cluster("up")
    rejoined = r.returncode == 0 and H.wait_until(
        lambda: sql("select count(*) from pgautofailover.node where reportedstate = 'secondary'",
                    MONITOR)[0][0] == "1", 120, 1)
    T.ok(rejoined, "the old primary rejoins as a standby (cluster.sh up)", r.stderr[-2000:])


def main():
    missing = [t for t in ("haproxy", "pg_autoctl", "ip", "runuser") if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        print("1..0 # SKIP needs root and %s (WITH_CLUSTER=1 scripts/deps.sh)"
              % (", ".join(missing) or "network namespaces"))
        return 0
    cluster("down", 120)
    r = cluster("up", 400)
    H._stderr_logs.extend("%s/h%d/var/stderr.log" % (DIR, i) for i in (1, 2, 3))
    if not T.ok(r.returncode == 0, "scripts/cluster.sh up", r.stdout + r.stderr[-3000:]):
        cluster("down", 120)
        return finish()
    try:
        for test in (test_one_key_everywhere, test_replay_on_another_host, test_throughput,
                     test_host_killed, test_primary_killed):
            try:
                test()
            except Exception as e:  # noqa: BLE001 - one broken step must not hide the rest
                T.ok(False, "%s raised" % test.__name__, repr(e))
    finally:
        if os.environ.get("CLUSTER_KEEP") != "1":
            d = cluster("down", 180)
            T.ok(d.returncode == 0 and not any(n.startswith(NAME + "-") for n in
                 subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()),
                 "cluster.sh down stops everything and removes its namespaces", d.stderr[-2000:])
    return finish()


def finish():
    H._cleanup()
    reports = H.sanitizer_reports()
    T.ok(not reports, "no sanitizer report from any host", "\n".join(reports))
    print("# cluster: %d passed, %d failed" % (T.n - T.failed, T.failed), flush=True)
    print("1..%d" % T.n, flush=True)
    return 1 if T.failed else 0


if __name__ == "__main__":
    sys.exit(main())
