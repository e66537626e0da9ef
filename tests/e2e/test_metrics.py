#!/usr/bin/env python3
"""/metrics end to end (issue 12, item 7): the families SPEC.md lists are
there and move with the work done, and `promtool check metrics` finds
nothing to fix in a live scrape.

- paymentsd_build_info{version} 1, the version `paymentsd -v` prints;
- the request histogram by route, method and status class;
- provider call latency: one observation per charge, answered or not;
- database call latency and group commit's batch sizes;
- process_* for the whole instance: CPU seconds that never go down when a
  reload retires workers (their time moves to the master's reaped
  children), memory, descriptors, the master's start time.
"""

import http.client
import re
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from harness import (PAYMENTSD, TAP, Paymentsd, ProviderSim, checkout, free_port, new_key, request,
                     wait_until)

t = TAP()
BODY = {"buyer_id": "buyer-m", "seller_id": "seller-m", "amount_cents": 1500, "currency": "EUR"}
LINE = re.compile(r'([a-z_]+)(\{.*\})? (\S+)')


def scrape(d):
    """(text, {series: value}, {family: type}) of one /metrics scrape."""
    text = request(d.port, "GET", "/metrics").body.decode()
    series, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            m = LINE.fullmatch(line)
            series[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return text, series, types


def skip(name, reason):
    t.n += 1
    print("ok %d - %s # SKIP %s" % (t.n, name, reason), flush=True)


def burst(d, n):
    gate = threading.Barrier(n)

    def one(i):
        gate.wait(5)
        return checkout(d, new_key("mb"), dict(BODY, amount_cents=2000 + i), timeout=20).status
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


sim = ProviderSim({"latency": "5ms"}).start()
started = time.time()
d = Paymentsd(workers=1, extra={"provider_url": sim.url, "provider_timeout": "300ms",
                                "db_pool_size": "1", "db_batch_max": "64",
                                "breaker_threshold": "1000"}).start()

# --- build_info and the process_* series
_, s0, types = scrape(d)
version = subprocess.run([PAYMENTSD, "-v"], capture_output=True, text=True, timeout=10).stdout.split()[-1]
t.eq(s0.get('paymentsd_build_info{version="%s"}' % version), 1.0,
     "paymentsd_build_info{version=\"%s\"} 1" % version)
t.eq(types.get("paymentsd_build_info"), "gauge", "build_info is a gauge")
t.eq({k: types.get(k) for k in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                                "process_virtual_memory_bytes", "process_start_time_seconds",
                                "process_open_fds", "process_max_fds")},
     {"process_cpu_seconds_total": "counter", "process_resident_memory_bytes": "gauge",
      "process_virtual_memory_bytes": "gauge", "process_start_time_seconds": "gauge",
      "process_open_fds": "gauge", "process_max_fds": "gauge"},
     "the standard process_* families")
t.ok(abs(s0.get("process_start_time_seconds", 0) - started) < 30,
     "process_start_time_seconds is the master's start (%.1f, test started %.1f)"
     % (s0.get("process_start_time_seconds", 0), started))
t.ok(0 < s0.get("process_resident_memory_bytes", 0) < s0.get("process_virtual_memory_bytes", 0),
     "resident memory > 0 and below virtual", s0)
t.ok(0 < s0.get("process_open_fds", 0) <= s0.get("process_max_fds", 0),
     "open fds > 0 and within the limit", s0)

# --- provider and database calls: one charge each, two database calls each
N = 5
for i in range(N):
    checkout(d, new_key("m"), dict(BODY, amount_cents=1000 + i))
_, s1, _ = scrape(d)
charge = 'paymentsd_provider_call_duration_seconds_count{call="charge",answered="true"}'
t.eq(s1.get(charge, 0) - s0.get(charge, 0), N, "%d checkouts: %d answered charge observations" % (N, N))
t.ok(s1.get('paymentsd_provider_call_duration_seconds_sum{call="charge",answered="true"}', 0) >= N * 0.005,
     "the charge latency sum counts the provider's 5 ms each")
t.eq(s1.get('paymentsd_provider_call_duration_seconds_bucket{call="charge",answered="true",le="+Inf"}'),
     s1.get(charge), "the +Inf bucket is the count")
db = 'paymentsd_db_call_duration_seconds_count{result="committed"}'
t.eq(s1.get(db, 0) - s0.get(db, 0), 2 * N, "%d checkouts: %d committed database calls observed" % (N, 2 * N))

# a provider that answers nothing in time: answered="false"
sim.outage(True)
r = checkout(d, new_key("m-out"), BODY)
sim.outage(False)
_, s2, _ = scrape(d)
t.eq(r.status, 201, "a checkout during the outage is answered")
t.eq(s2.get('paymentsd_provider_call_duration_seconds_count{call="charge",answered="false"}', 0), 1,
     "an unanswered charge is observed with answered=\"false\"")
# libevent counts the timeout from its loop's cached time, which may lag the
# call's own start by a fraction of a millisecond: hence 0.29, not 0.3.
t.ok(s2.get('paymentsd_provider_call_duration_seconds_sum{call="charge",answered="false"}', 0) >= 0.29,
     "after the 300 ms provider_timeout",
     s2.get('paymentsd_provider_call_duration_seconds_sum{call="charge",answered="false"}'))

# --- group commit: one worker, one connection, a burst: batches form
statuses = burst(d, 40)
_, s3, _ = scrape(d)
count = s3.get("paymentsd_db_batch_calls_count", 0) - s2.get("paymentsd_db_batch_calls_count", 0)
singles = s3.get('paymentsd_db_batch_calls_bucket{le="1"}', 0) - s2.get('paymentsd_db_batch_calls_bucket{le="1"}', 0)
calls = s3.get("paymentsd_db_batch_calls_sum", 0) - s2.get("paymentsd_db_batch_calls_sum", 0)
t.eq(sorted(set(statuses)), [201], "40 concurrent checkouts: all 201")
# (80 for the burst, and maybe the outage's reversal being recorded)
t.ok(calls >= 80 and count < calls and count - singles > 0,
     "a batch is observed: %d calls in %d statements, %d of them carrying more than one"
     % (calls, count, count - singles))
t.eq(s3.get("paymentsd_db_calls_total", 0) - s2.get("paymentsd_db_calls_total", 0), calls,
     "the batch histogram's sum agrees with paymentsd_db_calls_total")

# --- method and status class on the request histogram
before = s3
request(d.port, "GET", "/nope")
request(d.port, "POST", "/healthz")
request(d.port, "HEAD", "/healthz")
request(d.port, "OPTIONS", "/checkout")
down = Paymentsd(workers=1, extra={"database": "postgresql://app:app@127.0.0.1:%d/x" % free_port(),
                                   "provider_url": sim.url}).start()
t.eq(request(down.port, "GET", "/readyz").status, 503, "no database: /readyz 503")
_, sd, _ = scrape(down)
down.stop()
text, s4, _ = scrape(d)


def moved(labels):
    key = "paymentsd_http_request_duration_seconds_count{%s}" % labels
    return s4.get(key, 0) - before.get(key, 0)


t.eq([moved('route="unknown",method="GET",status_class="4xx"'),
      moved('route="healthz",method="POST",status_class="4xx"'),
      moved('route="healthz",method="HEAD",status_class="2xx"'),
      moved('route="checkout",method="OPTIONS",status_class="4xx"')], [1, 1, 1, 1],
     "404, 405, HEAD and OPTIONS each land on their route, method and status class")
t.ok(moved('route="checkout",method="POST",status_class="2xx"') == 0 and
     s4.get('paymentsd_http_request_duration_seconds_count{route="checkout",method="POST",status_class="2xx"}')
     == N + 41, "the checkouts are POST 2xx")
t.eq(sd.get('paymentsd_http_request_duration_seconds_count{route="readyz",method="GET",status_class="5xx"}'),
     1.0, "a 503 is status_class 5xx")

# --- promtool on the live scrape, every kind of series present
promtool = shutil.which("promtool")
if promtool is None:
    skip("promtool check metrics", "promtool not installed (Debian package prometheus)")
else:
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    t.ok(p.returncode == 0 and p.stdout.strip() == "" and p.stderr.strip() == "",
         "promtool check metrics finds nothing to fix", p.stdout + p.stderr)

# --- CPU seconds survive a reload: the old workers' time is not lost.
# Give the worker some CPU time of its own first: requests on one
# keep-alive connection, bounded.
conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
for _ in range(5000):
    conn.request("GET", "/openapi.json")
    conn.getresponse().read()
conn.close()
_, s4, _ = scrape(d)
cpu_before = s4.get("process_cpu_seconds_total", 0)
old = d.workers()
d.signal(signal.SIGHUP)
t.ok(wait_until(lambda: d.workers() and not set(d.workers()) & set(old), 10)
     and wait_until(lambda: not any(p in d.children() for p in old), 15),
     "a reload replaced the worker and the old one was reaped")
_, s5, _ = scrape(d)
t.ok(cpu_before >= 0.05 and s5.get("process_cpu_seconds_total", 0) >= cpu_before,
     "process_cpu_seconds_total does not go down when workers exit (%.2f -> %.2f)"
     % (cpu_before, s5.get("process_cpu_seconds_total", 0)))
t.eq(s5.get(charge), s4.get(charge), "shared-memory counters survive the reload")

t.ok(d.stop(), "no process left behind")
sim.stop()
t.done()
