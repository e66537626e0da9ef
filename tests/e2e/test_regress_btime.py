#!/usr/bin/env python3
"""Regression: process_start_time_seconds came out as seconds since boot (a
date in 1970) on hosts with many interrupts.

worker/procstat.c read /proc/stat into 8 KiB and looked for its btime line,
which comes after the intr line: one number per interrupt, longer than
8 KiB on a host with thousands of IRQs.  Here paymentsd runs in a mount
namespace of its own where /proc/stat is such a file (a bind mount), and
its start time must still be today's.  Needs root and unshare(1)."""

import os
import re
import shutil
import subprocess
import tempfile
import time

import harness
from harness import TAP, Paymentsd, request

t = TAP()
if os.getuid() != 0 or shutil.which("unshare") is None or \
        subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
    print("1..0 # SKIP needs root and unshare -m to give paymentsd a /proc/stat of its own")
    raise SystemExit(0)

tmp = tempfile.mkdtemp(prefix="btime-")
with open("/proc/stat") as f:
    real = f.read()
# the real file with an intr line of 6,000 interrupts: btime lies past 8 KiB
big = re.sub(r"^intr .*$", "intr " + " ".join(["0"] * 6000), real, count=1, flags=re.M)
fake = os.path.join(tmp, "stat")
with open(fake, "w") as f:
    f.write(big)
t.ok(big.index("\nbtime ") > 8192, "(the fake /proc/stat has btime at byte %d)" % big.index("\nbtime "))

wrapper = os.path.join(tmp, "paymentsd")
with open(wrapper, "w") as f:
    f.write('#!/bin/sh\nexec unshare -m sh -c \'mount --bind "$0" /proc/stat && exec "$@"\' %s %s "$@"\n'
            % (fake, harness.PAYMENTSD))
os.chmod(wrapper, 0o755)
harness.PAYMENTSD = wrapper

started = time.time()
d = Paymentsd(workers=1).start()
m = re.search(r"^process_start_time_seconds (\S+)$", request(d.port, "GET", "/metrics").body.decode(), re.M)
value = float(m.group(1)) if m else 0.0
t.ok(abs(value - started) < 30,
     "regression: process_start_time_seconds is the master's start with a long intr line "
     "(%.1f, test started %.1f)" % (value, started))
t.ok(d.stop(), "stopped")
shutil.rmtree(tmp, ignore_errors=True)
t.done()
