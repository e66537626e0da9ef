/*
 * Unit tests of the resolver (common/resolve.c) against a DNS server of
 * its own: a UDP socket on 127.0.0.1 served by the same event loop, which
 * answers A queries for NAME with the address a case sets (AAAA: none),
 * NXDOMAIN, or nothing at all.  The resolver reads a resolv.conf written
 * for the case, naming that server.
 *
 * Regression (issue 9, item 10): host names were resolved once, with a
 * blocking getaddrinfo(), when a worker started; a DNS change needed a
 * reload.  Here a name is followed: its first answer comes through the
 * loop, a changed address is picked up by the next resolution, a failure
 * keeps the last good address and warns once, and a server that never
 * answers blocks nothing.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <event2/event.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/resolve.h"

#define NAME "svc.resolve-test"

typedef enum { ANSWER, NXDOMAIN, SILENT } dns_mode_t;

/* The DNS server: what it answers and how many queries it saw. */
static struct {
    int fd;
    int port;
    struct event *ev;
    dns_mode_t mode;
    char addr[16];              /* A record for NAME */
    int queries;                /* A queries for NAME */
} dns;

static struct event_base *base;
static char conf_path[64], log_path[64];
static int notified;

/* Answer one query: echo the header and question, add an A record when
 * asked for NAME's A in ANSWER mode. */
static void
on_query(evutil_socket_t fd, short what, void *arg)
{
    unsigned char q[512], a[600];
    struct sockaddr_in from;
    socklen_t fromlen = sizeof(from);
    ssize_t n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fromlen);
    char name[256] = "";
    size_t off = 12, len = 0, qend;
    int type, found;

    (void)what;
    (void)arg;
    if (n < 17)
        return;
    while (off < (size_t)n && q[off] != 0) {     /* labels, as a dotted name */
        size_t l = q[off++];
        if (off + l > (size_t)n || len + l + 1 >= sizeof(name))
            return;
        if (len > 0)
            name[len++] = '.';
        memcpy(name + len, q + off, l);
        len += l;
        off += l;
    }
    name[len] = '\0';
    qend = off + 5;                             /* the root label, type, class */
    if (qend > (size_t)n)
        return;
    type = q[off + 1] << 8 | q[off + 2];
    found = strcasecmp(name, NAME) == 0;
    if (found && type == 1)
        dns.queries++;
    if (dns.mode == SILENT)
        return;
    memcpy(a, q, qend);
    a[2] = 0x81;                                /* QR, RD */
    a[3] = 0x80;                                /* RA, rcode 0 */
    a[4] = 0, a[5] = 1;                         /* one question */
    memset(a + 6, 0, 6);                        /* no records yet */
    if (!found || dns.mode == NXDOMAIN) {
        a[3] |= 3;                              /* NXDOMAIN */
    } else if (type == 1) {
        static const unsigned char rr[] = { 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4 };
        a[7] = 1;
        memcpy(a + qend, rr, sizeof(rr));
        inet_pton(AF_INET, dns.addr, a + qend + sizeof(rr));
        qend += sizeof(rr) + 4;
    }
    sendto(fd, a, qend, 0, (struct sockaddr *)&from, fromlen);
}

/* A resolv.conf naming our server, with short timeouts for SILENT. */
static void
write_resolv_conf(const char *text)
{
    FILE *f = fopen(conf_path, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int
setup(void **state)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    char text[256];
    int fd;

    (void)state;
    memset(&dns, 0, sizeof(dns));
    dns.mode = ANSWER;
    snprintf(dns.addr, sizeof(dns.addr), "127.0.0.2");
    notified = 0;
    event_set_log_callback(log_libevent);   /* evdns's own lines go to the log too */
    base = event_base_new();
    dns.fd = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (base == NULL || dns.fd < 0 || bind(dns.fd, (struct sockaddr *)&sin, sizeof(sin)) < 0
        || getsockname(dns.fd, (struct sockaddr *)&sin, &len) < 0)
        return -1;
    dns.port = ntohs(sin.sin_port);
    dns.ev = event_new(base, dns.fd, EV_READ | EV_PERSIST, on_query, NULL);
    if (dns.ev == NULL || event_add(dns.ev, NULL) < 0)
        return -1;
    snprintf(conf_path, sizeof(conf_path), "/tmp/test_resolve.conf.XXXXXX");
    snprintf(log_path, sizeof(log_path), "/tmp/test_resolve.log.XXXXXX");
    if ((fd = mkstemp(conf_path)) < 0)
        return -1;
    close(fd);
    if ((fd = mkstemp(log_path)) < 0)
        return -1;
    close(fd);
    snprintf(text, sizeof(text), "nameserver 127.0.0.1:%d\noptions timeout:0.3 attempts:1\n",
             dns.port);
    write_resolv_conf(text);
    return log_open(log_path, NULL, LOG_LEVEL_INFO) < 0 ? -1 : 0;
}

static int
teardown(void **state)
{
    (void)state;
    /* Anything the resolver left on the loop (an orphan's answer) runs. */
    for (int i = 0; i < 5; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    event_free(dns.ev);
    close(dns.fd);
    event_base_free(base);
    unlink(conf_path);
    unlink(log_path);
    return log_open(NULL, NULL, LOG_LEVEL_ERROR) < 0 ? -1 : 0;
}

static void
on_change(void *arg)
{
    (void)arg;
    notified++;
}

/* Run the loop until notified reaches want or ms pass; the time taken. */
static int64_t
run_until(int want, int64_t ms)
{
    int64_t t0 = clock_mono_ms();

    while (notified < want && clock_mono_ms() - t0 < ms) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(1000);
    }
    return clock_mono_ms() - t0;
}

static void
run_for(int64_t ms)
{
    int64_t t0 = clock_mono_ms();

    while (clock_mono_ms() - t0 < ms) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(1000);
    }
}

/* How many lines of the log hold s. */
static int
log_count(const char *s)
{
    char line[1024];
    int n = 0;
    FILE *f = fopen(log_path, "r");

    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, s) != NULL;
    fclose(f);
    return n;
}

static void
test_address_literals(void **state)
{
    (void)state;
    assert_true(resolve_is_address("127.0.0.1"));
    assert_true(resolve_is_address("::1"));
    assert_true(resolve_is_address("2001:db8::5"));
    assert_false(resolve_is_address("localhost"));
    assert_false(resolve_is_address(NAME));
    assert_false(resolve_is_address("[::1]"));
    assert_false(resolve_is_address(""));
}

/* The first answer arrives through the loop, never inside a call. */
static void
test_first_answer(void **state)
{
    resolve_t *r = resolve_new(base, conf_path, 60000);
    resolve_name_t *n;

    (void)state;
    assert_non_null(r);
    n = resolve_name_new(r, NAME, "test", on_change, NULL);
    assert_non_null(n);
    assert_true(resolve_name_pending(n));
    assert_null(resolve_name_addr(n));
    assert_int_equal(notified, 0);
    run_until(1, 3000);
    assert_int_equal(notified, 1);
    assert_false(resolve_name_pending(n));
    assert_string_equal(resolve_name_addr(n), "127.0.0.2");
    assert_int_equal(dns.queries, 1);
    assert_int_equal(log_count("test host " NAME " resolves to 127.0.0.2"), 1);
    resolve_name_free(n);
    resolve_free(r);
}

/* Regression: a DNS change is picked up by the next resolution, without
 * a restart. */
static void
test_follows_a_change(void **state)
{
    resolve_t *r = resolve_new(base, conf_path, 200);
    resolve_name_t *n = resolve_name_new(r, NAME, "test", on_change, NULL);

    (void)state;
    run_until(1, 3000);
    assert_string_equal(resolve_name_addr(n), "127.0.0.2");
    run_for(500);
    assert_int_equal(notified, 1);      /* the same answer is no change */
    assert_true(dns.queries >= 2);
    snprintf(dns.addr, sizeof(dns.addr), "127.0.0.3");
    run_until(2, 3000);
    assert_int_equal(notified, 2);
    assert_string_equal(resolve_name_addr(n), "127.0.0.3");
    assert_int_equal(log_count("now resolves to 127.0.0.3 (was 127.0.0.2)"), 1);
    resolve_name_free(n);
    resolve_free(r);
}

/* A failing name keeps its last good address, and warns once per change
 * of state, not per attempt. */
static void
test_failure_keeps_last_address(void **state)
{
    resolve_t *r = resolve_new(base, conf_path, 100);
    resolve_name_t *n = resolve_name_new(r, NAME, "test", on_change, NULL);
    int before;

    (void)state;
    run_until(1, 3000);
    dns.mode = NXDOMAIN;
    before = dns.queries;
    run_for(800);
    assert_true(dns.queries >= before + 3);
    assert_string_equal(resolve_name_addr(n), "127.0.0.2");
    assert_int_equal(notified, 1);
    assert_int_equal(log_count("does not resolve now"), 1);
    dns.mode = SILENT;                  /* a timeout is a failure too */
    run_for(800);
    assert_string_equal(resolve_name_addr(n), "127.0.0.2");
    assert_int_equal(log_count("does not resolve"), 1);
    dns.mode = ANSWER;
    run_for(800);
    assert_int_equal(log_count("resolves again, to 127.0.0.2"), 1);
    assert_int_equal(notified, 1);
    resolve_name_free(n);
    resolve_free(r);
}

/* A server that never answers: nothing waits for it; the first resolution
 * ends (no address) after evdns's own timeout, through the loop. */
static void
test_silent_server(void **state)
{
    resolve_t *r = resolve_new(base, conf_path, 60000);
    resolve_name_t *n;
    int64_t t0 = clock_mono_ms();

    (void)state;
    dns.mode = SILENT;
    n = resolve_name_new(r, NAME, "test", on_change, NULL);
    assert_true(clock_mono_ms() - t0 < 100);
    assert_true(resolve_name_pending(n));
    run_until(1, 5000);
    assert_int_equal(notified, 1);
    assert_false(resolve_name_pending(n));
    assert_null(resolve_name_addr(n));
    assert_int_equal(log_count("no address to connect to yet"), 1);
    /* Without an address it tries again every second, not every minute. */
    dns.mode = ANSWER;
    run_until(2, 3000);
    assert_int_equal(notified, 2);
    assert_string_equal(resolve_name_addr(n), "127.0.0.2");
    resolve_name_free(n);
    resolve_free(r);
}

/* A name freed while its query is out, and the resolver after it: the
 * query's answer frees the name (ASan checks the rest). */
static void
test_free_while_in_flight(void **state)
{
    resolve_t *r = resolve_new(base, conf_path, 60000);
    resolve_name_t *n;

    (void)state;
    dns.mode = SILENT;
    n = resolve_name_new(r, NAME, "test", on_change, NULL);
    run_for(50);
    resolve_name_free(n);
    resolve_free(r);
    run_for(50);
    assert_int_equal(notified, 0);
}

/* A connection failure asks for a new resolution soon (a second after the
 * last one), not at the next interval; twice asks only once. */
static void
test_retry_after_failure(void **state)
{
    resolve_t *r = resolve_new(base, conf_path, 60000);
    resolve_name_t *n = resolve_name_new(r, NAME, "test", on_change, NULL);
    int64_t took;

    (void)state;
    run_until(1, 3000);
    snprintf(dns.addr, sizeof(dns.addr), "127.0.0.3");
    resolve_name_retry(n);
    resolve_name_retry(n);
    took = run_until(2, 3000);
    assert_int_equal(notified, 2);
    assert_true(took < 2000);
    assert_string_equal(resolve_name_addr(n), "127.0.0.3");
    run_for(300);
    assert_int_equal(dns.queries, 2);
    resolve_name_free(n);
    resolve_free(r);
}

/* Names in /etc/hosts (or evdns's own localhost) never ask the server. */
static void
test_hosts_file(void **state)
{
    resolve_t *r = resolve_new(base, conf_path, 60000);
    resolve_name_t *n = resolve_name_new(r, "localhost", "test", on_change, NULL);

    (void)state;
    assert_int_equal(notified, 0);      /* answered at once, told from the loop */
    run_until(1, 3000);
    assert_int_equal(notified, 1);
    assert_string_equal(resolve_name_addr(n), "127.0.0.1");
    assert_int_equal(dns.queries, 0);
    resolve_name_free(n);
    resolve_free(r);
}

/* No resolv.conf, or one without a nameserver: 127.0.0.1, with a warning. */
static void
test_no_nameserver(void **state)
{
    resolve_t *r;

    (void)state;
    r = resolve_new(base, "/nonexistent/resolv.conf", 60000);
    assert_non_null(r);
    resolve_free(r);
    assert_int_equal(log_count("/nonexistent/resolv.conf: no such file: asking 127.0.0.1"), 1);
    write_resolv_conf("# nothing here\noptions timeout:1\n");
    r = resolve_new(base, conf_path, 60000);
    assert_non_null(r);
    resolve_free(r);
    assert_int_equal(log_count("lists no nameserver: asking 127.0.0.1"), 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_address_literals),
        cmocka_unit_test_setup_teardown(test_first_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follows_a_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_keeps_last_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_while_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hosts_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_nameserver, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
