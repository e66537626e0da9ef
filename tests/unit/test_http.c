/*
 * Unit tests of a request's lifetime in worker/http.c, against a real
 * evhttp server on a loopback port and a plain socket client in the same
 * process: the reply written; the connection reset while the reply is being
 * written; the connection freed before the reply (a worker shutting down)
 * while the handler still holds its http_req_t; and a keep-alive connection
 * whose next request must not be ended by the previous one's callbacks.
 * And what a handler reads of its request through the accessors, before
 * and after its client has gone, and a body that cannot be made contiguous
 * (out of memory).
 *
 * libevent's allocations are counted (event_set_mem_functions): after each
 * case, with the server and its event base freed, every one of them must
 * have been freed, so a lost evhttp_request fails here even without ASan.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/event.h>
#include <event2/http.h>

#include "worker/http.h"

/* ---- counting allocator for libevent ----------------------------------- */

static long live_allocs;
static size_t fail_from;        /* when non-zero: allocations this large fail */

static void *
count_malloc(size_t n)
{
    void *p = fail_from != 0 && n >= fail_from ? NULL : malloc(n);

    if (p != NULL)
        live_allocs++;
    return p;
}

static void *
count_realloc(void *p, size_t n)
{
    void *q = realloc(p, n);

    if (p == NULL && q != NULL)
        live_allocs++;
    return q;
}

static void
count_free(void *p)
{
    if (p != NULL)
        live_allocs--;
    free(p);
}

/* ---- a server and a client --------------------------------------------- */

typedef struct {
    struct event_base *base;
    struct evhttp *http;
    int client;                 /* the client's socket */
    http_req_t *r;              /* the request the handler holds */
    int begun;
    int done;                   /* done callbacks so far */
    int done_status;
    long allocs_before;
} fixture_t;

static void
on_done(worker_t *w, const http_req_t *r, int status, int64_t dur_us)
{
    fixture_t *f = (fixture_t *)http_req_worker(r);

    (void)w;
    (void)dur_us;
    f->done++;
    f->done_status = status;
}

static void
on_request(struct evhttp_request *req, void *arg)
{
    fixture_t *f = arg;

    /* The fixture rides in the worker pointer: http.c never looks in it. */
    f->r = http_req_new(req, (worker_t *)f, on_done);
    assert_non_null(f->r);
    f->begun++;
}

/* Run the loop until *flag reaches want, for at most about 2 s. */
static void
run_until(fixture_t *f, const int *flag, int want)
{
    for (int i = 0; i < 2000 && *flag < want; i++) {
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        if (*flag < want)
            usleep(1000);
    }
    assert_int_equal(*flag, want);
}

/* A little more loop, for events that must not come. */
static void
run_a_while(fixture_t *f)
{
    for (int i = 0; i < 50; i++) {
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        usleep(1000);
    }
}

/* Send all of buf, running the server's loop while the socket is full (the
 * server reads in this same process). */
static void
send_all(fixture_t *f, const char *buf, size_t len)
{
    size_t off = 0;

    for (int i = 0; i < 2000 && off < len; i++) {
        ssize_t n = send(f->client, buf + off, len - off, MSG_DONTWAIT);

        if (n > 0)
            off += (size_t)n;
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        if (n <= 0)
            usleep(1000);
    }
    assert_int_equal(off, len);
}

static void
send_request(fixture_t *f)
{
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";

    assert_int_equal(send(f->client, req, sizeof(req) - 1, 0), (ssize_t)(sizeof(req) - 1));
}

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    struct evhttp_bound_socket *bound;
    struct sockaddr_in sa;
    socklen_t salen = sizeof(sa);

    assert_non_null(f);
    f->allocs_before = live_allocs;
    f->base = event_base_new();
    assert_non_null(f->base);
    f->http = evhttp_new(f->base);
    assert_non_null(f->http);
    evhttp_set_gencb(f->http, on_request, f);
    bound = evhttp_bind_socket_with_handle(f->http, "127.0.0.1", 0);
    assert_non_null(bound);
    assert_int_equal(getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&sa, &salen),
                     0);
    f->client = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(f->client >= 0);
    assert_int_equal(connect(f->client, (struct sockaddr *)&sa, salen), 0);
    *state = f;
    return 0;
}

/* Free the server (if the case has not) and check that libevent got back
 * every byte it allocated. */
static int
teardown(void **state)
{
    fixture_t *f = *state;

    if (f->client >= 0)
        close(f->client);
    if (f->http != NULL)
        evhttp_free(f->http);
    event_base_free(f->base);
    assert_int_equal(live_allocs, f->allocs_before);
    free(f);
    return 0;
}

static void
reset_client(fixture_t *f)
{
    struct linger lg = { 1, 0 };

    assert_int_equal(setsockopt(f->client, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(f->client);
    f->client = -1;
}

/* ---- cases -------------------------------------------------------------- */

static void
test_reply_written(void **state)
{
    fixture_t *f = *state;
    char buf[512];
    ssize_t n;

    send_request(f);
    run_until(f, &f->begun, 1);
    assert_false(http_req_cancelled(f->r));
    http_add_header(f->r, "X-Test", "1");
    http_reply(f->r, 200, "application/json", "{}", 2);
    run_until(f, &f->done, 1);
    assert_int_equal(f->done_status, 200);
    n = recv(f->client, buf, sizeof(buf) - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    assert_non_null(strstr(buf, "X-Test: 1"));
    /* The connection lives on; its end must not end the request again. */
    close(f->client);
    f->client = -1;
    run_a_while(f);
    assert_int_equal(f->done, 1);
}

/* The regression: the client resets before the reply; the reply's write
 * fails and libevent frees the connection.  An owned request leaked here. */
static void
test_reset_while_replying(void **state)
{
    fixture_t *f = *state;

    send_request(f);
    run_until(f, &f->begun, 1);
    reset_client(f);
    run_a_while(f);             /* evhttp does not read while we work */
    assert_int_equal(f->done, 0);
    http_reply(f->r, 201, "application/json", "{\"ok\":true}", 11);
    run_until(f, &f->done, 1);
    assert_int_equal(f->done_status, 201);
}

/* The server goes away (a worker's evhttp_free) while the handler still
 * waits on its database call: the request is cancelled, the http_req_t
 * stays valid for the handler, and its reply only ends it. */
static void
test_freed_before_reply(void **state)
{
    fixture_t *f = *state;

    send_request(f);
    run_until(f, &f->begun, 1);
    evhttp_free(f->http);
    f->http = NULL;
    assert_true(http_req_cancelled(f->r));
    assert_int_equal(f->done, 0);
    http_add_header(f->r, "Retry-After", "1");
    http_reply_error(f->r, 503, "service_unavailable", "the database is unavailable", NULL);
    assert_int_equal(f->done, 1);
    assert_int_equal(f->done_status, 503);
}

/* Two requests on one keep-alive connection: the first one's close
 * callback must not outlive its reply and end the second. */
static void
test_keepalive_next_request(void **state)
{
    fixture_t *f = *state;
    http_req_t *first;
    char buf[512];

    send_request(f);
    run_until(f, &f->begun, 1);
    first = f->r;
    http_reply(first, 200, "application/json", "{}", 2);
    run_until(f, &f->done, 1);
    assert_true(recv(f->client, buf, sizeof(buf), 0) > 0);
    send_request(f);
    run_until(f, &f->begun, 2);
    assert_ptr_not_equal(f->r, NULL);
    reset_client(f);
    run_a_while(f);
    assert_int_equal(f->done, 1);
    http_reply(f->r, 200, "application/json", "{}", 2);
    run_until(f, &f->done, 2);
}

/* What a handler reads: method, path, id, headers (every value of a
 * repeated one, any case), the body; and, once the client has gone, only
 * the id, with no header, path or body left to read. */
static void
test_accessors(void **state)
{
    static const char req[] =
        "POST /checkout?x=1 HTTP/1.1\r\nHost: test\r\nX-Request-Id: rid-42\r\n"
        "Idempotency-Key: a\r\nidempotency-key: b\r\nIDEMPOTENCY-KEY: c\r\n"
        "Content-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"a\": 1}";
    fixture_t *f = *state;
    const char *values[2];
    const char *body;
    size_t len;

    assert_int_equal(send(f->client, req, sizeof(req) - 1, 0), (ssize_t)(sizeof(req) - 1));
    run_until(f, &f->begun, 1);
    assert_ptr_equal(http_req_worker(f->r), (worker_t *)f);
    assert_string_equal(http_req_method(f->r), "POST");
    assert_string_equal(http_req_path(f->r), "/checkout");
    assert_string_equal(http_req_id(f->r), "rid-42");
    assert_string_equal(http_req_header(f->r, "content-type"), "application/json");
    assert_null(http_req_header(f->r, "Origin"));
    assert_int_equal(http_req_header_all(f->r, "Idempotency-Key", values, 2), 2);
    assert_string_equal(values[0], "a");
    assert_string_equal(values[1], "b");
    assert_int_equal(http_req_header_all(f->r, "Origin", values, 2), 0);
    assert_int_equal(http_req_body_length(f->r), 8);
    body = http_req_body(f->r, &len);
    assert_int_equal(len, 8);
    assert_memory_equal(body, "{\"a\": 1}", 8);
    assert_int_equal(http_req_route(f->r), SHM_METRICS_ROUTE_UNKNOWN);
    http_req_set_route(f->r, SHM_METRICS_ROUTE_CHECKOUT);
    assert_int_equal(http_req_route(f->r), SHM_METRICS_ROUTE_CHECKOUT);

    evhttp_free(f->http);       /* the client is gone */
    f->http = NULL;
    assert_true(http_req_cancelled(f->r));
    assert_string_equal(http_req_id(f->r), "rid-42");
    assert_string_equal(http_req_method(f->r), "POST");
    assert_null(http_req_header(f->r, "Content-Type"));
    assert_int_equal(http_req_header_all(f->r, "Idempotency-Key", values, 2), 0);
    assert_string_equal(http_req_path(f->r), "");
    assert_int_equal(http_req_body_length(f->r), 0);
    body = http_req_body(f->r, &len);
    assert_int_equal(len, 0);
    assert_string_equal(body, "");
    http_reply(f->r, 200, "application/json", "{}", 2);
    assert_int_equal(f->done, 1);
}

/* The regression: out of memory making a large body contiguous,
 * http_req_body answered "" with length 0, as for an empty body, so a valid
 * checkout was refused 400 (a client does not retry that) and a signed
 * webhook 401 signature_invalid.  It must say NULL: out of memory. */
static void
test_body_out_of_memory(void **state)
{
    enum { BODY = 64 * 1024 };
    fixture_t *f = *state;
    char *req = malloc(BODY + 128);
    const char *body;
    size_t len, head;

    assert_non_null(req);
    head = (size_t)snprintf(req, 128, "POST /webhooks/provider HTTP/1.1\r\nHost: test\r\n"
                            "Content-Length: %d\r\n\r\n", BODY);
    memset(req + head, 'x', BODY);
    send_all(f, req, head + BODY);
    run_until(f, &f->begun, 1);
    assert_int_equal(http_req_body_length(f->r), BODY);

    fail_from = BODY;           /* the contiguous copy cannot be made */
    len = 1;
    body = http_req_body(f->r, &len);
    fail_from = 0;
    assert_null(body);
    assert_int_equal(len, 0);

    body = http_req_body(f->r, &len);     /* memory again: the whole body */
    assert_non_null(body);
    assert_int_equal(len, BODY);
    assert_memory_equal(body, req + head, BODY);
    free(req);
    http_reply(f->r, 200, "application/json", "{}", 2);
    run_until(f, &f->done, 1);
}

/* A request id: the client's when valid (1..128 visible characters but '"'
 * and '\\'), else a new one of 32 lower-case hex digits, never the same. */
static void
test_request_id(void **state)
{
    char id[HTTP_ID_SIZE], other[HTTP_ID_SIZE], longest[129], toolong[130];

    (void)state;
    http_request_id("client-id.1", id);
    assert_string_equal(id, "client-id.1");
    memset(longest, 'x', 128);
    longest[128] = '\0';
    http_request_id(longest, id);
    assert_string_equal(id, longest);
    for (int i = 0; i < 4; i++) {
        const char *bad[] = { NULL, "", "a b", "a\"b" };

        http_request_id(bad[i], id);
        assert_int_equal(strlen(id), 32);
        assert_int_equal(strspn(id, "0123456789abcdef"), 32);
        http_request_id(bad[i], other);
        assert_string_not_equal(id, other);
    }
    /* One longer than 128 is not cut to fit: a new one. */
    memset(toolong, 'y', sizeof(toolong) - 1);
    toolong[sizeof(toolong) - 1] = '\0';
    http_request_id(toolong, id);
    assert_int_equal(strlen(id), 32);
    assert_int_equal(strspn(id, "0123456789abcdef"), 32);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reply_written, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_while_replying, setup, teardown),
        cmocka_unit_test_setup_teardown(test_freed_before_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_next_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_accessors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_out_of_memory, setup, teardown),
        cmocka_unit_test(test_request_id),
    };

    /* Before libevent allocates anything. */
    event_set_mem_functions(count_malloc, count_realloc, count_free);
    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
