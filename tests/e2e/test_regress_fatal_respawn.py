#!/usr/bin/env python3
"""Regression: no child ever exited with the fatal code, so the master's
stop-respawning branch was dead and a child that could never start was
forked again and again, every 10 s at most, for ever.

The fatal condition is real: paymentsd starts with an https:// provider and
a good provider_ca_file (the master's conf check reads it), then the file is
overwritten with something that holds no certificate.  A child started from
then on cannot set up its provider client, exits with the fatal code
(common/exitcode.h), and the master logs why and stops respawning that slot
until a reload.  A child killed with kill -9 is still respawned, and when
every slot has exited fatal the master exits fatal itself, as it does for a
conf it cannot run with."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from harness import PAYMENTSD, TAP, Paymentsd, alive, free_port, wait_until

if shutil.which("openssl") is None:
    print("1..0 # SKIP openssl is not installed (scripts/deps.sh installs it)")
    sys.exit(0)

t = TAP()
PKI = tempfile.mkdtemp(prefix="fatal-respawn-e2e-")
CA = os.path.join(PKI, "ca.pem")
subprocess.run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", os.path.join(PKI, "ca.key"),
                "-out", CA, "-days", "2", "-subj", "/CN=paymentsd fatal respawn test CA"],
               check=True, timeout=30, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
GOOD_CA = open(CA).read()
NOT_RESPAWNED = "cannot start and a restart will not help: not respawning it"


def break_ca():
    with open(CA, "w") as f:
        f.write("this file holds no certificate any more\n")


def mend_ca():
    with open(CA, "w") as f:
        f.write(GOOD_CA)


def started(d, who):
    """The pids the master has started for who ("worker 0", "housekeeper")."""
    return [int(p) for p in re.findall(r"started %s process (\d+)" % who, d.log())]


def ready(d, who):
    """Whether the latest process started for who has logged that it runs
    (past its init: it has read the CA file)."""
    pids = started(d, who)
    return bool(pids) and "%s (pid %d): started" % (who, pids[-1]) in d.log()


def https_paymentsd(workers):
    # Nothing listens on the provider's port: a child connects only when a
    # checkout needs it, and this test sends none.
    return Paymentsd(workers=workers, extra={"provider_url": "https://127.0.0.1:%d" % free_port(),
                                             "provider_ca_file": CA}).start()


# --- a fatal slot is not respawned; kill -9 still is

d = https_paymentsd(2)
t.ok(wait_until(lambda: all(ready(d, w) for w in ("worker 0", "worker 1", "housekeeper")), 10),
     "two workers and a housekeeper start with a good provider_ca_file", d.log()[-2000:])

# kill -9 of a healthy worker: respawned, as before
victim = started(d, "worker 1")[-1]
os.kill(victim, signal.SIGKILL)
t.ok(wait_until(lambda: len(started(d, "worker 1")) == 2 and ready(d, "worker 1"), 10),
     "a worker killed with kill -9 is respawned", d.log()[-2000:])

# The CA file breaks after the master checked it; worker 0 dies and its
# replacement cannot start.
break_ca()
before = len(started(d, "worker 0"))
os.kill(started(d, "worker 0")[-1], signal.SIGKILL)
t.ok(wait_until(lambda: "worker 0 " + NOT_RESPAWNED in d.log(), 15),
     "the master stops respawning a worker that exits fatal, and says so", d.log()[-3000:])
replacement = started(d, "worker 0")[-1]
t.ok(re.search(r"worker 0 \(pid %d\) exited with status 2" % replacement, d.log()),
     "the worker that could not start exited with the fatal code 2", d.log()[-3000:])
t.ok("provider: TLS setup failed: %s" % CA in d.log()
     and "cannot start: provider_new failed, and a restart will not help" in d.log(),
     "the worker's own lines say why: the CA file and the step that failed", d.log()[-3000:])

# Where the back-off would have forked it again every 0.1, 0.2, 0.4, ... s,
# worker 0 is left alone; the other children and the service go on.
time.sleep(3)
spawns = len(started(d, "worker 0"))
t.eq(spawns, before + 1, "worker 0 was started once after kill -9, and not again within 3 s")
t.ok(alive(d.pid) and len(d.workers()) == 1 and len(d.housekeepers()) == 1,
     "the master, worker 1 and the housekeeper still run", (d.workers(), d.housekeepers()))
t.eq(d.get("/healthz").status, 200, "worker 1 still serves")

# The file is mended: kill -9 is still respawned, the fatal slot waits for
# a reload, which starts it again.
mend_ca()
keeper = d.housekeepers()[0]
os.kill(keeper, signal.SIGKILL)
t.ok(wait_until(lambda: started(d, "housekeeper")[-1] != keeper and ready(d, "housekeeper"), 10),
     "a housekeeper killed with kill -9 is still respawned next to a fatal slot", d.log()[-2000:])
t.eq(len(started(d, "worker 0")), spawns, "the fatal slot is not respawned by other deaths")
d.signal(signal.SIGHUP)
t.ok(wait_until(lambda: len(started(d, "worker 0")) == spawns + 1 and len(d.workers()) >= 2, 15),
     "a reload starts worker 0 again", d.log()[-2000:])
t.ok(d.stop(), "paymentsd stops")

# --- every slot fatal: the master exits fatal too

d = https_paymentsd(1)
t.ok(wait_until(lambda: ready(d, "worker 0") and ready(d, "housekeeper"), 10),
     "one worker and a housekeeper start", d.log()[-2000:])
break_ca()
for pid in d.workers() + d.housekeepers():
    os.kill(pid, signal.SIGKILL)
rc = d.wait_exit(20)
t.eq(rc, 2, "the master exits with the fatal code once no child can run")
t.ok("housekeeper " + NOT_RESPAWNED in d.log() and "worker 0 " + NOT_RESPAWNED in d.log()
     and "no worker can run: exiting" in d.log(), "and logs why", d.log()[-3000:])
t.ok(not os.path.exists(d.pid_file), "its pid file is removed")
t.ok(d.stop(), "no process is left")

# --- the master's own codes for a conf it cannot run with

bad = Paymentsd(workers=1, extra={"provider_timeout": "soon"})
run = subprocess.run([PAYMENTSD, "-c", bad.conf_path], capture_output=True, text=True, timeout=10)
t.eq(run.returncode, 2, "running with an invalid conf exits with the fatal code 2")
test = subprocess.run([PAYMENTSD, "-t", "-c", bad.conf_path], capture_output=True, text=True,
                      timeout=10)
t.eq(test.returncode, 1, "testing it with -t exits 1, as nginx -t does")

shutil.rmtree(PKI, ignore_errors=True)
t.done()
