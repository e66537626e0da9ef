#!/usr/bin/env python3
"""Operator control of paymentsd (issue 12, items 4 and 5; SPEC.md: process
control, relative paths): -V, -T, -p, -t on a duplicate listen, "paymentsd
-s" from another directory, a real logrotate run from "/", and stray
signals (SIGUSR2, SIGWINCH, ...) that must never stop the master or a
child.

Regressions: test_regress_reopen_cwd (a relative pid_file was taken from the
current directory, so logrotate's "paymentsd -s reopen", run from "/", never
reached the master and it kept writing to the rotated file) and
test_regress_stray_signal (SIGUSR2 killed the master and left its pid
file)."""

import os
import re
import shutil
import signal
import subprocess
import tempfile

from harness import PAYMENTSD, TAP, Paymentsd, alive, free_port, read_text, wait_until

t = TAP()
SRCDIR = os.environ.get("PAYMENTSD_SRCDIR",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def run(args, cwd="/"):
    return subprocess.run([PAYMENTSD] + args, cwd=cwd, capture_output=True, text=True,
                          timeout=15)


def skip(reason):
    t.n += 1
    print("ok %d # SKIP %s" % (t.n, reason), flush=True)


def state(pid):
    """The one-letter state of pid (R, S, T for stopped, Z), or '' if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


# -V and -v
p = run(["-V"])
t.ok(p.returncode == 0 and re.match(r"paymentsd version: paymentsd/\d+\.\d+\.\d+\n", p.stdout),
     "-V prints the version", p.stdout + p.stderr)
t.ok(all(s in p.stdout for s in ("built by ", "built with libevent ", "built with json-c ",
                                  "built with OpenSSL ", "running with libpq ", "sanitizers: ",
                                  "configure arguments:")),
     "-V prints the compiler, the libraries and the configure arguments", p.stdout)
p = run(["-v"])
t.ok(p.returncode == 0 and re.fullmatch(r"paymentsd \d+\.\d+\.\d+\n", p.stdout), "-v prints the version only",
     p.stdout)

# -t refuses a duplicate listen, with file:line
port = free_port()
d = Paymentsd()
d.write_conf("listen = 127.0.0.1:%d\nworkers = 1\nlisten = 127.0.0.1:%d\n" % (port, port))
p = run(["-t", "-c", d.conf_path])
t.ok(p.returncode != 0 and p.stderr.startswith(
    '%s:3: listen "127.0.0.1:%d" duplicates "127.0.0.1:%d": the port cannot be bound twice'
    % (d.conf_path, port, port)), "-t refuses a duplicate listen, naming file:line", p.stderr)
t.ok("test failed" in p.stderr, "and says the test failed", p.stderr)
d.write_conf("listen = 0.0.0.0:%d\nlisten = 127.0.0.1:%d\n" % (port, port))
p = run(["-t", "-c", d.conf_path])
t.ok(p.returncode != 0 and 'listen "127.0.0.1:%d" overlaps "0.0.0.0:%d"' % (port, port) in p.stderr,
     "-t refuses a listen that a wildcard on the same port covers", p.stderr)

# -T: the effective conf, relative paths resolved, no secret shown
d = Paymentsd(extra={"pid_file": "run/paymentsd.pid", "error_log": "logs/error.log",
                     "access_log": "off", "max_body_size": "32768",
                     "database": "postgresql://app:Sup3rSecret@127.0.0.1:%d/x" % free_port(),
                     "webhook_secret": "whsec_c2ltdWxhdG9yLXNlY3JldC1mb3ItZGV2ZWxvcG1lbnQ="})
p = run(["-T", "-c", d.conf_path])
out = p.stdout
t.ok(p.returncode == 0 and "test is successful" in p.stderr, "-T tests the conf", p.stderr)
t.ok("\npid_file = %s/run/paymentsd.pid\n" % d.dir in out
     and "\nerror_log = %s/logs/error.log\n" % d.dir in out and "\naccess_log = off\n" in out,
     "-T shows relative paths resolved against the conf file's directory, run from /", out)
t.ok("\nlisten = 127.0.0.1:%d\n" % d.port in out and "\nmax_body_size = 32k\n" in out
     and "\nidempotency_ttl = 1d\n" in out and "\nclient_timeout = 30s\n" in out,
     "-T shows every key with its effective value, defaults included", out)
t.ok("Sup3rSecret" not in out and "whsec_" not in out and "password='********'" in out
     and "# webhook_secret: 1 set, not shown" in out, "-T shows no secret", out)
dumped = os.path.join(d.dir, "dumped.conf")
with open(dumped, "w") as f:
    f.write(out)
p = run(["-t", "-c", dumped])
t.ok(p.returncode == 0, "what -T prints is a valid conf file", p.stderr)

# -p PREFIX: relative paths and a relative -c from the prefix
os.makedirs(os.path.join(d.dir, "conf"))
shutil.copy(d.conf_path, os.path.join(d.dir, "conf", "paymentsd.conf"))
for args in (["-c", "conf/paymentsd.conf"], []):
    p = run(["-p", d.dir, "-T"] + args)
    t.ok(p.returncode == 0 and "\npid_file = %s/run/paymentsd.pid\n" % d.dir in p.stdout
         and "# relative paths taken from %s\n" % d.dir in p.stdout,
         "-p PREFIX %s: paths from the prefix" % " ".join(args or ["(default conf)"]),
         p.stdout + p.stderr)

# test_regress_reopen_cwd: a server with relative paths, started elsewhere,
# controlled from "/"
elsewhere = tempfile.mkdtemp(prefix="paymentsd-cwd-")
d = Paymentsd(workers=2, extra={"pid_file": "run/paymentsd.pid", "error_log": "logs/error.log",
                                "access_log": "logs/access.log"})
os.makedirs(os.path.join(d.dir, "logs"))
d.pid_file = os.path.join(d.dir, "run", "paymentsd.pid")
d.log_path = os.path.join(d.dir, "logs", "error.log")
d.access_path = os.path.join(d.dir, "logs", "access.log")
d.start(cwd=elsewhere)
t.ok(os.path.exists(d.pid_file) and read_text(d.pid_file).strip() == str(d.pid),
     "regress_reopen_cwd: the relative pid_file is beside the conf file")
t.eq(os.listdir(elsewhere), [], "nothing is written in the directory paymentsd was started from")
p = run(["-c", d.conf_path, "-s", "reopen"])
t.ok(p.returncode == 0 and wait_until(lambda: d.log().count("logs reopened") == 4, 5),
     "regress_reopen_cwd: paymentsd -s reopen works from /: the master and 3 children reopen",
     p.stderr + d.log()[-1000:])

# a real logrotate run from "/", with conf/logrotate.example
logrotate = shutil.which("logrotate", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
example = read_text(os.path.join(SRCDIR, "conf", "logrotate.example"))
t.ok("postrotate" in example, "conf/logrotate.example exists")
if logrotate is None:
    skip("logrotate is not installed (scripts/deps.sh installs it): no real rotation tested")
else:
    d.get("/healthz", headers={"X-Request-Id": "before-rotate"})
    t.ok(wait_until(lambda: "before-rotate" in read_text(d.access_path), 3), "the access log is written")
    conf = example
    for old, new in (("/var/log/paymentsd", os.path.join(d.dir, "logs")),
                     ("/usr/local/bin/paymentsd", PAYMENTSD),
                     ("/etc/paymentsd/paymentsd.conf", d.conf_path)):
        t.ok(old in conf, "logrotate.example names %s (replaced for the test)" % old)
        conf = conf.replace(old, new)
    lr_conf = os.path.join(d.dir, "logrotate.conf")
    with open(lr_conf, "w") as f:
        f.write(conf)
    os.chmod(lr_conf, 0o644)
    p = subprocess.run([logrotate, "-f", "-s", os.path.join(d.dir, "logrotate.state"), lr_conf],
                       cwd="/", capture_output=True, text=True, timeout=30)
    t.ok(p.returncode == 0, "logrotate -f runs from / without an error", p.stdout + p.stderr)
    old_error, old_access = d.log_path + ".1", d.access_path + ".1"
    t.ok(os.path.exists(old_error) and os.path.exists(old_access), "it rotated both logs",
         os.listdir(os.path.join(d.dir, "logs")))
    # the master and its three children each say so, in the new file
    t.ok(wait_until(lambda: d.log().count("logs reopened") == 4, 5),
         "regress_reopen_cwd: the master and every child reopened, logged in the new error log",
         d.log())
    t.ok("reopening the logs" in read_text(old_error), "the rotated error log says where the logs went")
    sizes = (os.path.getsize(old_error), os.path.getsize(old_access))
    for _ in range(5):
        d.get("/healthz", headers={"X-Request-Id": "after-rotate"})
    d.signal(signal.SIGUSR2)
    t.ok(wait_until(lambda: read_text(d.access_path).count("after-rotate") == 5, 3),
         "new access-log lines go to the new file", read_text(d.access_path))
    t.ok(wait_until(lambda: "SIGUSR2" in d.log(), 3), "new error-log lines go to the new file")
    t.eq((os.path.getsize(old_error), os.path.getsize(old_access)), sizes,
         "regress_reopen_cwd: the rotated files stop growing")
    t.ok("after-rotate" not in read_text(old_access), "no new line in the rotated access log")

# test_regress_stray_signal: signals without a meaning, to the master and to
# every child
STRAY = [signal.SIGUSR2, signal.SIGWINCH, signal.SIGALRM, signal.SIGPIPE, signal.SIGTTIN,
         signal.SIGTTOU, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO, signal.SIGPWR,
         signal.SIGXFSZ, signal.SIGURG, signal.SIGRTMIN + 1]


def name(sig):
    return "SIGRTMIN+1" if sig == signal.SIGRTMIN + 1 else signal.Signals(sig).name


pid_text = read_text(d.pid_file)
workers, housekeepers = d.workers(), d.housekeepers()
t.ok(len(workers) == 2 and len(housekeepers) == 1, "two workers and a housekeeper", (workers, housekeepers))
for sig in STRAY:
    d.signal(sig)
    for child in workers + housekeepers:
        os.kill(child, sig)
for child in workers + housekeepers:
    os.kill(child, signal.SIGHUP)      # the master's reload; a child has none


def logged(pid, sig):
    return "(pid %d): %s from pid %d ignored" % (pid, name(sig), os.getpid()) in d.log()


t.ok(wait_until(lambda: all(logged(p, s) for p in [d.pid] + workers + housekeepers for s in STRAY), 5),
     "regress_stray_signal: each stray signal is logged by the master and by each child",
     [(p, name(s)) for p in [d.pid] + workers + housekeepers for s in STRAY if not logged(p, s)][:10])
t.ok(wait_until(lambda: all(logged(p, signal.SIGHUP) for p in workers + housekeepers), 5),
     "SIGHUP to a child is logged too")
t.ok(all(state(p) in ("R", "S") for p in [d.pid] + workers + housekeepers),
     "regress_stray_signal: no process died or stopped (SIGTTIN, SIGTTOU)",
     [(p, state(p)) for p in [d.pid] + workers + housekeepers])
t.eq((d.workers(), d.housekeepers()), (workers, housekeepers), "the same children serve on")
t.ok("killed by signal" not in d.log(), "the master saw no child killed")
t.eq(read_text(d.pid_file), pid_text, "regress_stray_signal: the pid file is intact")
t.eq([d.get("/healthz").status for _ in range(5)], [200] * 5, "the server keeps serving")

# a reload takes relative paths from the same place, not from the master's
# current directory
d.settings["access_log"] = "logs/access-reloaded.log"
d.write_conf()
p = run(["-c", d.conf_path, "-s", "reload"])
t.eq(p.returncode, 0, "paymentsd -s reload works from /")
reloaded = os.path.join(d.dir, "logs", "access-reloaded.log")
t.ok(wait_until(lambda: d.get("/healthz", headers={"X-Request-Id": "after-reload"}).status == 200
                and "after-reload" in read_text(reloaded), 10),
     "after a reload a relative access_log is beside the conf file", os.listdir(os.path.join(d.dir, "logs")))
t.eq(os.listdir(elsewhere), [], "and still nothing in the master's current directory")

# -s stop from "/", with the relative pid_file
seen = [d.pid] + d.children()
p = run(["-c", d.conf_path, "-s", "stop"])
t.eq(p.returncode, 0, "paymentsd -s stop works from /")
t.eq(d.wait_exit(10), 0, "the master stops with status 0")
t.ok(wait_until(lambda: not any(alive(x) for x in seen), 5), "no process left")
t.ok(not os.path.exists(d.pid_file), "the pid file is removed")
p = run(["-c", d.conf_path, "-s", "reopen"])
t.ok(p.returncode != 0 and "is paymentsd running?" in p.stderr,
     "-s without a running master says so", p.stderr)
with open("/proc/sys/kernel/pid_max") as f:
    no_such_pid = int(f.read()) + 1     # never a process: signalling it is safe
with open(d.pid_file, "w") as f:
    f.write("%d\n" % no_such_pid)      # a stale pid file
p = run(["-c", d.conf_path, "-s", "reopen"])
t.ok(p.returncode != 0 and "a stale pid file: is paymentsd running?" in p.stderr,
     "-s with a stale pid file says so", p.stderr)

t.done()
