#!/usr/bin/env python3
"""PostgreSQL CPU per checkout of a pgbench script, whatever else the machine runs.

    bench/pg_cpu.py DB SCRIPT T PER_TXN     (on the machine of the server, as root)

Runs pgbench -n -M prepared -c 8 -j 2 -t T -f SCRIPT against DB on
127.0.0.1:54320 as app, and sums utime+stime of the backends serving DB
(`postgres: app DB ...` in /proc), read every 10 ms while it runs: a
backend's last reading counts, as its process is gone once pgbench
disconnects.  PER_TXN is the checkouts per pgbench transaction (32 for
checkout_batch.pgbench, 1 for checkout.pgbench).  Background processes
(walwriter, checkpointer) are not counted; other databases' backends are not
either, so a shared cluster does not skew the figure.  Run it on a fresh copy
of the database each time (CREATE DATABASE ... TEMPLATE): the figure grows
with the tables."""
import os
import subprocess
import sys
import time

db, script, t, per = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tck = os.sysconf('SC_CLK_TCK')
prefix = ('postgres: app %s ' % db).encode()


def scan(seen):
    """Record the CPU ticks of each backend of db now running."""
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % p, 'rb') as f:
                if not f.read().startswith(prefix):
                    continue
            with open('/proc/%s/stat' % p) as f:
                st = f.read().rsplit(')', 1)[1].split()
            # past the ')' of the name: field 3 on; utime is field 14, stime 15
            seen[p] = int(st[11]) + int(st[12])
        except OSError:
            pass


url = 'postgresql://app:app@127.0.0.1:54320/%s' % db
pre = {}
scan(pre)
if pre:
    print('warning: backends already connected', pre, file=sys.stderr)
seen = {}
pb = subprocess.Popen(['pgbench', '-n', '-M', 'prepared', '-c', '8', '-j', '2', '-t', str(t),
                       '-f', script, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
while pb.poll() is None:
    scan(seen)
    time.sleep(0.01)
out = pb.stdout.read().decode()
if pb.returncode != 0:
    sys.exit('pgbench failed:\n' + out)
for p in pre:
    seen.pop(p, None)
cpu = sum(seen.values()) / tck
n = 8 * t * per
print('%s %s: %d checkouts, backends %d, cpu %.2f s, %.1f us/checkout' % (
    db, os.path.basename(script), n, len(seen), cpu, cpu / n * 1e6))
