#!/usr/bin/env python3
"""Regression: a database host list with names is followed by the resolver
(issue 14).

`database` may list several hosts with target_session_attrs=read-write, for
a failover pair.  Only a single host name was followed with evdns; the
names of a list were left to libpq, which looks each one up with a blocking
getaddrinfo() on every reconnect, in the worker's loop, through the
system's resolver rather than the resolv_conf given to paymentsd.  Now every
name of the list is followed and libpq gets numeric addresses.

Here a DNS server in this process (see harness.FakeDNS) answers for two
names; the list names both, the first pointing where nothing listens:

- the pool connects through the second name (resolved by our DNS, which the
  system's resolver does not know: without the fix /readyz never passes);
- the names swap addresses and the connections are cut: the pool follows;
- the first name stops resolving (NXDOMAIN): it is skipped, the other used.
"""

import urllib.parse

from harness import DATABASE, TAP, FakeDNS, Paymentsd, psql, wait_until

t = TAP()
A = "db-a.paymentsd-hostlist-test"
B = "db-b.paymentsd-hostlist-test"

dns = FakeDNS()
dns.set(A, "127.0.0.3")                 # nothing listens there
dns.set(B, "127.0.0.1")
u = urllib.parse.urlparse(DATABASE)
port = u.port or 5432
dbname = u.path.lstrip("/")
listed = u._replace(netloc="%s@%s:%d,%s:%d" % (u.netloc.rsplit("@", 1)[0], A, port, B, port),
                    query="target_session_attrs=read-write").geturl()
d = Paymentsd(workers=1, database=listed, extra={
    "resolv_conf": dns.resolv_conf(),
    "resolve_interval": "500ms", "db_timeout": "1s"}).start()
workers = d.workers()


def ready(timeout=8):
    return wait_until(lambda: d.get("/readyz", timeout=3).status == 200, timeout, 0.1)


def cut():
    """End the test database's connections from the app (ours only)."""
    psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' "
         "AND usename = 'app' AND pid <> pg_backend_pid()" % dbname)


t.ok(ready(), "regression: a host list of names connects through the name our DNS resolves",
     d.log()[-2000:])

dns.set(A, "127.0.0.1")
dns.set(B, "127.0.0.3")
t.ok(wait_until(lambda: "db-b.paymentsd-hostlist-test now resolves to 127.0.0.3" in d.log(), 5),
     "the names' new addresses are picked up", d.log()[-2000:])
cut()
t.ok(ready(), "after the cut the pool reconnects through the other name", d.log()[-2000:])

dns.records.pop(A)                      # NXDOMAIN from now on
dns.set(B, "127.0.0.1")
wait_until(lambda: "db-b.paymentsd-hostlist-test now resolves to 127.0.0.1" in d.log(), 5)
cut()
t.ok(ready(), "a name that no longer resolves keeps its last address or is skipped",
     d.log()[-2000:])
t.eq(d.workers(), workers, "the same worker did it all: no reload, no restart")
d.stop()
t.done()
