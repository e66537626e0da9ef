#!/usr/bin/env python3
"""Regression: `docker compose up` did not do what the README says (issue
12, item 9).

No Docker engine runs in the tests, so this reads the compose file as
docker-compose does (`docker-compose config`; the test is skipped without
it), checks what the issue found wrong, and then runs each service's
command by hand with that service's environment, against the others:

- one image for both services; `docker stop` drains paymentsd (SIGQUIT, and
  a stop_grace_period longer than worker_shutdown_timeout); the build
  context leaves out .pg/, build trees and .git (.dockerignore);
- provider-sim's admin_allow takes the compose network's gateway, where
  the host's requests to the published port come from;
- provider-sim started before paymentsd, while the name "paymentsd" does
  not resolve, keeps running (it exited); paymentsd finds "db" and
  "provider-sim" by name; the README's outage demo then works end to end:
  a trusted checkout during the outage is PENDING_PAYMENT, and the sim's
  webhook to http://paymentsd:8000 makes it PAID.

Compose's DNS is played by harness.FakeDNS (every service name is
127.0.0.1), and each published port becomes a free loopback port."""

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

import harness
from harness import (DATABASE, PAYMENTSD, PROVIDER_SIM, TAP, FakeDNS, free_port, new_key,
                     order_status, request, wait_until)

SRCDIR = os.path.abspath(os.environ.get("PAYMENTSD_SRCDIR",
                                        os.path.join(os.path.dirname(__file__), "..", "..")))
if shutil.which("docker-compose") is None:
    print("1..0 # SKIP docker-compose is not installed (apt-get install docker-compose)")
    sys.exit(0)
import yaml     # noqa: E402  (docker-compose depends on it)

t = TAP()
out = subprocess.run(["docker-compose", "-f", os.path.join(SRCDIR, "docker-compose.yml"), "config"],
                     capture_output=True, text=True, timeout=60)
t.eq(out.returncode, 0, "docker-compose config accepts the file")
services = (yaml.safe_load(out.stdout) or {}).get("services", {})
sim_svc, pay_svc = services.get("provider-sim", {}), services.get("paymentsd", {})


def seconds(text, default=None):
    """A compose or conf duration ("40s", "1m30s", "800ms") in seconds."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?", str(text or ""))
    if not text or not m:
        return default
    h, mi, s, ms = (int(x or 0) for x in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


def conf_value(name, key):
    """key's value in conf/<name> (the file the image copies to /etc/paymentsd)."""
    with open(os.path.join(SRCDIR, "conf", name)) as f:
        for line in f:
            m = re.match(r"\s*%s\s*=\s*(\S+)" % re.escape(key), line)
            if m:
                return m.group(1)
    return None


# ---- the file itself ----
t.ok(sim_svc.get("image") and sim_svc.get("image") == pay_svc.get("image")
     and sim_svc.get("build") == pay_svc.get("build"),
     "regression: one image, one build, for provider-sim and paymentsd",
     (sim_svc.get("image"), pay_svc.get("image")))
with open(os.path.join(SRCDIR, "Dockerfile")) as f:
    dockerfile = f.read()
t.ok(re.search(r"^STOPSIGNAL SIGQUIT$", dockerfile, re.M) and pay_svc.get("stop_signal") == "SIGQUIT",
     "regression: docker stop sends SIGQUIT, paymentsd's graceful stop")
pay_env = pay_svc.get("environment", {})
drain = seconds(pay_env.get("PAYMENTSD_WORKER_SHUTDOWN_TIMEOUT")
                or conf_value("paymentsd.conf", "worker_shutdown_timeout"))
grace = seconds(pay_svc.get("stop_grace_period"), 10)   # compose's default: 10 s
t.ok(drain is not None and grace > drain,
     "regression: stop_grace_period (%ss) outlasts worker_shutdown_timeout (%ss)" % (grace, drain))
try:
    with open(os.path.join(SRCDIR, ".dockerignore")) as f:
        ignored = {x.strip().strip("/") for x in f if x.strip() and not x.startswith("#")}
except OSError:
    ignored = set()
t.ok({".git", ".pg", "build", "build-*"} <= ignored,
     "regression: the build context leaves out .git, .pg/ and build trees", sorted(ignored))
sim_env = sim_svc.get("environment", {})
allow = [ipaddress.ip_network(x) for x in str(sim_env.get("PROVIDER_SIM_ADMIN_ALLOW", "")).split()]
# Compose networks take their subnets from Docker's default pools
# (172.17.0.0/12 and 192.168.0.0/16 in /20s); requests to a published port
# arrive from the network's gateway, .1.
gateways = [ipaddress.ip_address(a) for a in ("172.18.0.1", "172.30.0.1", "192.168.16.1")]
t.ok(all(any(g in n for n in allow) for g in gateways + [ipaddress.ip_address("127.0.0.1")]),
     "regression: admin_allow takes the compose network's gateway (the README's outage demo)",
     sim_env.get("PROVIDER_SIM_ADMIN_ALLOW"))

# ---- each service's command, by hand, against the others ----
work = tempfile.mkdtemp(prefix="compose-e2e-")
dns = FakeDNS()
for name in ("db", "provider-sim"):
    dns.set(name, "127.0.0.1")          # "paymentsd" only once it runs
resolv = dns.resolv_conf()
sim_port, pay_port = free_port(), free_port()
db = urllib.parse.urlparse(DATABASE)


def command(svc, program):
    """The service's command with the image's paths mapped to the build."""
    cmd = list(svc.get("command") or [])
    return [program] + [a.replace("/etc/paymentsd/", os.path.join(SRCDIR, "conf") + "/")
                        for a in cmd[1:]]


def start(name, svc, program, env):
    path = os.path.join(work, name + ".log")
    with open(path, "w") as out:
        p = subprocess.Popen(command(svc, program), cwd=work, env=env, stdout=out,
                             stderr=subprocess.STDOUT)
    harness._started.append(p)          # stopped at exit, checked for sanitizer reports
    harness._stderr_logs.append(path)
    return p


def log(name):
    with open(os.path.join(work, name + ".log"), errors="replace") as f:
        return f.read()


# The image's ENV (the Dockerfile's ENV lines), then the service's.
image_env = dict(re.findall(r"(\w+)=(\S+)", " ".join(
    re.findall(r"^ENV\s+((?:.*\\\n)*.*)$", dockerfile, re.M)).replace("\\\n", " ")))
env = dict(os.environ, **image_env)
env.update({k: str(v) for k, v in sim_env.items()})
env.update(PROVIDER_SIM_LISTEN="127.0.0.1:%d" % sim_port,
           PROVIDER_SIM_WEBHOOK_URL=env["PROVIDER_SIM_WEBHOOK_URL"].replace(":8000/", ":%d/" % pay_port),
           PROVIDER_SIM_RESOLV_CONF=resolv, PROVIDER_SIM_RESOLVE_INTERVAL="200ms",
           # settled after paymentsd gave up on the charge (provider_timeout 800ms)
           PROVIDER_SIM_WEBHOOK_DELAY="1500ms", PROVIDER_SIM_WEBHOOK_BACKOFF="100ms",
           # the charge must succeed: at the default 0.1 one run in ten
           # declined it (FAILED, not PAID)
           PROVIDER_SIM_DECLINE_RATE="0")
sim = start("provider-sim", sim_svc, PROVIDER_SIM, env)
t.ok(wait_until(lambda: request(sim_port, "GET", "/admin/stats", timeout=1).status == 200, 5)
     and sim.poll() is None,
     "regression: provider-sim starts, and stays up, before the name paymentsd resolves",
     log("provider-sim")[-1500:])

env = dict(os.environ, **image_env)
env.update({k: str(v) for k, v in pay_env.items()})
env.update(PAYMENTSD_LISTEN="127.0.0.1:%d" % pay_port,
           PAYMENTSD_PROVIDER_URL=env["PAYMENTSD_PROVIDER_URL"].replace(":8001", ":%d" % sim_port),
           DATABASE_URL=urllib.parse.urlparse(env["DATABASE_URL"])._replace(
               netloc="%s@db:%d" % (db.netloc.rsplit("@", 1)[0], db.port or 5432),
               path=db.path).geturl(),
           PAYMENTSD_PID_FILE=os.path.join(work, "paymentsd.pid"), PAYMENTSD_RESOLV_CONF=resolv,
           # this test's database is shared with the other tests: no housekeeping
           PAYMENTSD_HOUSEKEEPER_INTERVAL="1h")
pay = start("paymentsd", pay_svc, PAYMENTSD, env)
dns.set("paymentsd", "127.0.0.1")       # its container is up
t.ok(wait_until(lambda: request(pay_port, "GET", "/readyz", timeout=1).status == 200, 10),
     "paymentsd reaches the database as db: its healthcheck passes", log("paymentsd")[-1500:])

if sim.poll() is not None or pay.poll() is not None:
    t.done()                            # nothing to run the demo against
r = request(sim_port, "POST", "/admin/outage", body={"enabled": True})
t.eq(r.status, 200, "the README's outage demo: the outage switch")
body = {"buyer_id": "b1", "seller_id": "s1", "amount_cents": 2500, "currency": "EUR",
        "buyer_trust": "trusted"}
r = request(pay_port, "POST", "/checkout", body=body, timeout=15,
            headers={"Content-Type": "application/json", "Idempotency-Key": new_key("compose")})
order = r.json().get("order_id") if r.status == 201 else None
t.eq((r.status, r.json().get("status")), (201, "PENDING_PAYMENT"),
     "a trusted checkout during the outage: PENDING_PAYMENT (paymentsd found provider-sim by name)")
request(sim_port, "POST", "/admin/outage", body={"enabled": False})
t.ok(order and wait_until(lambda: order_status(order) == ("PAID", ""), 10),
     "regression: the sim's webhook reaches http://paymentsd: the order is PAID",
     log("provider-sim")[-1500:])

# docker stop: SIGQUIT, both programs exit 0 well within the grace period.
for p in (pay, sim):
    p.send_signal(signal.SIGQUIT)
t0 = time.monotonic()
codes = []
for p in (pay, sim):
    try:
        codes.append(p.wait(timeout=max(1, grace - (time.monotonic() - t0))))
    except subprocess.TimeoutExpired:
        p.kill()
        codes.append(p.wait())
t.eq(codes, [0, 0], "docker stop's SIGQUIT: paymentsd and provider-sim exit 0 in the grace period")
t.done()
