/*
 * Unit tests of the provider client (worker/provider.c) against an
 * in-process evhttp server on a loopback port: each case sets the
 * server's answer, runs one call to its callback on the loop, and checks
 * the outcome, the charge_id handed over and the request that was sent.
 *
 * The answers table covers what the e2e tests cannot reach from outside
 * (nothing calls provider_cancel yet): the cancel call and the GET
 * statuses canceled and refunded, besides the charge answers' checks.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "common/log.h"
#include "worker/provider.h"
#include "worker/provider_answer.h"

#define ORDER "3f1e5c1a-0000-4000-8000-000000000001"
#define AMOUNT 2500

enum { CHARGE, GET, CANCEL };

/* The last request the server saw, and what it answers. */
static struct {
    int status;
    const char *body;
    int requests;
    char method[8];
    char path[160];
    char body_seen[256];
    char key[128];              /* Idempotency-Key, "" when absent */
} srv;

static struct event_base *base;
static struct evhttp *http;
static provider_t *prov;
static int port;

static void
on_request(struct evhttp_request *req, void *arg)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req), *out = evbuffer_new();
    const char *key = evhttp_find_header(evhttp_request_get_input_headers(req), "Idempotency-Key");
    size_t n = evbuffer_get_length(in);

    (void)arg;
    srv.requests++;
    snprintf(srv.method, sizeof(srv.method), "%s",
             evhttp_request_get_command(req) == EVHTTP_REQ_POST ? "POST"
             : evhttp_request_get_command(req) == EVHTTP_REQ_GET ? "GET" : "?");
    snprintf(srv.path, sizeof(srv.path), "%s", evhttp_request_get_uri(req));
    if (n >= sizeof(srv.body_seen))
        n = sizeof(srv.body_seen) - 1;
    evbuffer_copyout(in, srv.body_seen, n);
    srv.body_seen[n] = '\0';
    snprintf(srv.key, sizeof(srv.key), "%s", key != NULL ? key : "");
    evbuffer_add(out, srv.body, strlen(srv.body));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, srv.status, "Answer", out);
    evbuffer_free(out);
}

/* Bind the test server to a free port of host ("127.0.0.1", "::1"): the
 * port, with the socket in *b and "http://host:port" (host in brackets
 * when IPv6) in url; -1 when host cannot be bound. */
static int
bind_url(const char *host, struct evhttp_bound_socket **b, char *url, size_t urllen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int p;

    *b = evhttp_bind_socket_with_handle(http, host, 0);
    if (*b == NULL || getsockname(evhttp_bound_socket_get_fd(*b), (struct sockaddr *)&ss, &len) < 0)
        return -1;
    p = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                        : ((struct sockaddr_in *)&ss)->sin_port);
    snprintf(url, urllen, ss.ss_family == AF_INET6 ? "http://[%s]:%d" : "http://%s:%d", host, p);
    return p;
}

static int
setup(void **state)
{
    struct evhttp_bound_socket *bound;
    char url[64];

    (void)state;
    log_threshold = LOG_LEVEL_ERROR;
    base = event_base_new();
    http = evhttp_new(base);
    if (base == NULL || http == NULL ||
        (port = bind_url("127.0.0.1", &bound, url, sizeof(url))) < 0)
        return -1;
    evhttp_set_gencb(http, on_request, NULL);
    prov = provider_new(base, NULL, url, NULL, 2000);
    return prov == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    (void)state;
    provider_free(prov);
    evhttp_free(http);
    event_base_free(base);
    return 0;
}

typedef struct {
    int done;
    provider_outcome_t out;
    int has_id;
    char charge_id[PROVIDER_CHARGE_ID_MAX + 1];
} result_t;

static void
on_result(void *arg, provider_outcome_t out, const char *charge_id)
{
    result_t *r = arg;

    r->done = 1;
    r->out = out;
    r->has_id = charge_id != NULL;
    snprintf(r->charge_id, sizeof(r->charge_id), "%s", charge_id != NULL ? charge_id : "");
}

/* One call of the given kind, run to its callback (bounded by the
 * provider's own 2 s deadline). */
static result_t
call(provider_t *p, int kind, int status, const char *body)
{
    result_t r;

    memset(&r, 0, sizeof(r));
    memset(&srv, 0, sizeof(srv));
    srv.status = status;
    srv.body = body;
    if (kind == CHARGE)
        provider_charge(p, ORDER, AMOUNT, "EUR", NULL, on_result, &r);
    else if (kind == GET)
        provider_get_charge(p, ORDER, AMOUNT, "EUR", NULL, on_result, &r);
    else
        provider_cancel(p, ORDER, AMOUNT, "EUR", NULL, on_result, &r);
    assert_false(r.done);       /* never from inside the call */
    while (!r.done)
        event_base_loop(base, EVLOOP_ONCE);
    return r;
}

#define O "\"order_id\": \"" ORDER "\""
#define A "\"amount_cents\": 2500"

static const struct {
    const char *name;
    int kind;
    int status;
    const char *body;
    provider_outcome_t want;
    const char *charge_id;      /* handed to the callback, NULL: none */
} answers[] = {
    /* cancel: canceled, refunded, declined, not_found; anything else is unknown */
    { "cancel canceled", CANCEL, 200, "{" O ", \"status\": \"canceled\", \"refunded_cents\": 0}",
      PROVIDER_CANCELED, NULL },
    { "cancel refunded in full", CANCEL, 200,
      "{" O ", \"status\": \"refunded\", \"refunded_cents\": 2500, "
      "\"charge_id\": \"ch_1\"}",
      PROVIDER_REFUNDED, "ch_1" },
    { "cancel refunded in part", CANCEL, 200,
      "{" O ", \"status\": \"refunded\", \"refunded_cents\": 1000}", PROVIDER_UNAVAILABLE, NULL },
    { "cancel refunded, refunded_cents not a number", CANCEL, 200,
      "{" O ", \"status\": \"refunded\", \"refunded_cents\": \"2500\"}", PROVIDER_UNAVAILABLE,
      NULL },
    { "cancel canceled with money refunded", CANCEL, 200,
      "{" O ", \"status\": \"canceled\", \"refunded_cents\": 2500}", PROVIDER_UNAVAILABLE, NULL },
    { "cancel declined", CANCEL, 200, "{" O ", \"status\": \"declined\", \"refunded_cents\": 0}",
      PROVIDER_DECLINED, NULL },
    { "cancel not_found", CANCEL, 200, "{" O ", \"status\": \"not_found\", \"refunded_cents\": 0}",
      PROVIDER_NOT_FOUND, NULL },
    { "cancel canceled, HTTP 201", CANCEL, 201, "{" O ", \"status\": \"canceled\"}",
      PROVIDER_CANCELED, NULL },
    { "cancel canceled, HTTP 202", CANCEL, 202, "{" O ", \"status\": \"canceled\"}",
      PROVIDER_CANCELED, NULL },
    { "cancel about another order", CANCEL, 200,
      "{\"order_id\": \"3f1e5c1a-0000-4000-8000-000000000002\", \"status\": \"canceled\"}",
      PROVIDER_UNAVAILABLE, NULL },
    { "cancel about another amount", CANCEL, 200,
      "{" O ", \"amount_cents\": 1, \"status\": \"canceled\"}", PROVIDER_UNAVAILABLE, NULL },
    { "cancel succeeded: not a cancel's status", CANCEL, 200, "{" O ", \"status\": \"succeeded\"}",
      PROVIDER_UNAVAILABLE, NULL },
    { "cancel pending: not a cancel's status", CANCEL, 200, "{" O ", \"status\": \"pending\"}",
      PROVIDER_UNAVAILABLE, NULL },
    { "cancel without status", CANCEL, 200, "{" O "}", PROVIDER_UNAVAILABLE, NULL },
    { "cancel with a bad charge_id", CANCEL, 200,
      "{" O ", \"status\": \"canceled\", \"charge_id\": \"a b\"}", PROVIDER_UNAVAILABLE, NULL },
    { "cancel, not JSON", CANCEL, 200, "canceled", PROVIDER_UNAVAILABLE, NULL },
    { "cancel, HTTP 404", CANCEL, 404, "{\"error\": {\"code\": \"charge_not_found\"}}",
      PROVIDER_UNAVAILABLE, NULL },
    { "cancel, HTTP 409", CANCEL, 409, "{\"error\": {\"code\": \"conflict\"}}",
      PROVIDER_UNAVAILABLE, NULL },
    { "cancel, HTTP 500", CANCEL, 500, "{}", PROVIDER_UNAVAILABLE, NULL },

    /* GET: the statuses a reconciliation can meet */
    { "GET succeeded", GET, 200,
      "{" O ", " A ", \"status\": \"succeeded\", \"charge_id\": \"ch_g\"}", PROVIDER_SUCCEEDED,
      "ch_g" },
    { "GET canceled", GET, 200, "{" O ", " A ", \"status\": \"canceled\", \"refunded_cents\": 0}",
      PROVIDER_CANCELED, NULL },
    { "GET refunded", GET, 200,
      "{" O ", " A ", \"status\": \"refunded\", \"refunded_cents\": 2500, "
      "\"charge_id\": \"ch_r\"}",
      PROVIDER_REFUNDED, "ch_r" },
    { "GET refunded in part", GET, 200,
      "{" O ", " A ", \"status\": \"refunded\", \"refunded_cents\": 5}", PROVIDER_UNAVAILABLE,
      NULL },
    { "GET pending", GET, 200, "{" O ", " A ", \"status\": \"pending\"}", PROVIDER_PENDING, NULL },
    { "GET declined", GET, 200, "{" O ", " A ", \"status\": \"declined\"}", PROVIDER_DECLINED,
      NULL },
    { "GET not_found: not a GET status", GET, 200, "{" O ", \"status\": \"not_found\"}",
      PROVIDER_UNAVAILABLE, NULL },
    { "GET 404 charge_not_found", GET, 404, "{\"error\": {\"code\": \"charge_not_found\"}}",
      PROVIDER_NOT_FOUND, NULL },
    { "GET 404 from something else", GET, 404, "{\"error\": {\"code\": \"not_found\"}}",
      PROVIDER_UNAVAILABLE, NULL },
    { "GET succeeded without charge_id", GET, 200, "{" O ", " A ", \"status\": \"succeeded\"}",
      PROVIDER_UNAVAILABLE, NULL },
    { "GET succeeded, charge_id with UTF-8", GET, 200,
      "{" O ", " A ", \"status\": \"succeeded\", \"charge_id\": \"ch_\\u00e9\"}",
      PROVIDER_UNAVAILABLE, NULL },
    { "GET about another currency", GET, 200,
      "{" O ", " A ", \"currency\": \"USD\", \"status\": \"succeeded\", \"charge_id\": \"ch_c\"}",
      PROVIDER_UNAVAILABLE, NULL },

    /* POST /v1/charges */
    { "charge succeeded", CHARGE, 200,
      "{" O ", " A ", \"currency\": \"EUR\", \"status\": \"succeeded\", "
      "\"charge_id\": \"ch_c\"}",
      PROVIDER_SUCCEEDED, "ch_c" },
    { "charge succeeded, HTTP 202", CHARGE, 202,
      "{" O ", " A ", \"status\": \"succeeded\", "
      "\"charge_id\": \"ch_c\"}",
      PROVIDER_SUCCEEDED, "ch_c" },
    { "charge declined without charge_id", CHARGE, 200, "{" O ", " A ", \"status\": \"declined\"}",
      PROVIDER_DECLINED, NULL },
    { "charge declined, null charge_id", CHARGE, 200,
      "{" O ", " A ", \"status\": \"declined\", \"charge_id\": null}", PROVIDER_DECLINED, NULL },
    { "charge without order_id", CHARGE, 200,
      "{" A ", \"status\": \"succeeded\", \"charge_id\": \"c\"}", PROVIDER_UNAVAILABLE, NULL },
    { "charge without amount_cents", CHARGE, 200,
      "{" O ", \"status\": \"succeeded\", \"charge_id\": \"c\"}", PROVIDER_UNAVAILABLE, NULL },
    { "charge amount as a float", CHARGE, 200,
      "{" O ", \"amount_cents\": 2500.0, \"status\": \"succeeded\", \"charge_id\": \"c\"}",
      PROVIDER_UNAVAILABLE, NULL },
    { "charge id with NUL", CHARGE, 200,
      "{" O ", " A ", \"status\": \"succeeded\", \"charge_id\": \"ch\\u0000x\"}",
      PROVIDER_UNAVAILABLE, NULL },
    { "charge canceled: not a charge's status", CHARGE, 200,
      "{" O ", " A ", \"status\": \"canceled\"}", PROVIDER_UNAVAILABLE, NULL },
    { "charge, HTTP 402", CHARGE, 402, "{\"error\": {\"code\": \"card_declined\"}}",
      PROVIDER_DECLINED, NULL },
    { "charge, HTTP 204", CHARGE, 204, "", PROVIDER_UNAVAILABLE, NULL },
    /* One JSON object and nothing after it but white space: a body with
     * more (a second object, an error page) is not one to believe. */
    { "charge succeeded, white space after", CHARGE, 200,
      "{" O ", " A ", \"status\": \"succeeded\", "
      "\"charge_id\": \"ch_w\"}\r\n",
      PROVIDER_SUCCEEDED, "ch_w" },
    { "regress: charge succeeded, bytes after the object", CHARGE, 200,
      "{" O ", " A ", \"status\": \"succeeded\", \"charge_id\": \"ch_t\"}<html>",
      PROVIDER_UNAVAILABLE, NULL },
    { "regress: GET succeeded, a second object after it", GET, 200,
      "{" O ", " A
      ", \"status\": \"succeeded\", \"charge_id\": \"ch_t\"}{\"status\": \"declined\"}",
      PROVIDER_UNAVAILABLE, NULL },
};

static void
test_answers(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++) {
        result_t r = call(prov, answers[i].kind, answers[i].status, answers[i].body);

        if (r.out != answers[i].want || r.has_id != (answers[i].charge_id != NULL)
            || (r.has_id && strcmp(r.charge_id, answers[i].charge_id) != 0))
            fail_msg("%s: got %s, charge_id %s; want %s, %s", answers[i].name,
                     provider_outcome_name(r.out), r.has_id ? r.charge_id : "(none)",
                     provider_outcome_name(answers[i].want),
                     answers[i].charge_id ? answers[i].charge_id : "(none)");
    }
}

/* The longest charge_id is handed over whole; one more character is refused. */
static void
test_charge_id_lengths(void **state)
{
    char body[600], id[PROVIDER_CHARGE_ID_MAX + 2];
    result_t r;

    (void)state;
    memset(id, 'x', PROVIDER_CHARGE_ID_MAX);
    id[PROVIDER_CHARGE_ID_MAX] = '\0';
    snprintf(body, sizeof(body), "{" O ", " A ", \"status\": \"succeeded\", \"charge_id\": \"%s\"}",
             id);
    r = call(prov, CHARGE, 200, body);
    assert_int_equal(r.out, PROVIDER_SUCCEEDED);
    assert_string_equal(r.charge_id, id);
    strcat(id, "x");
    snprintf(body, sizeof(body), "{" O ", " A ", \"status\": \"succeeded\", \"charge_id\": \"%s\"}",
             id);
    r = call(prov, CHARGE, 200, body);
    assert_int_equal(r.out, PROVIDER_UNAVAILABLE);
    assert_false(r.has_id);
}

/* Found by tests/fuzz/fuzz_provider_answer: json-c clamps an integer beyond
 * int64 to INT64_MAX, so for an order of INT64_MAX cents (a conf's
 * max_amount_cents may allow it) an answer naming 18446744073709551615
 * was believed as being about that amount. */
static void
test_regress_amount_beyond_int64(void **state)
{
    static const char *const bodies[] = {
        "{" O
        ", \"amount_cents\": 9223372036854775808, \"status\": \"succeeded\", \"charge_id\": \"c\"}",
        "{" O ", \"amount_cents\": 18446744073709551615, \"status\": \"declined\"}",
        "{" O ", \"status\": \"refunded\", \"refunded_cents\": 99999999999999999999999}",
    };
    provider_ask_t ask = { PROVIDER_CALL_CHARGE, ORDER, INT64_MAX, "EUR" };
    char id[PROVIDER_CHARGE_ID_MAX + 1], why[128], body[256];

    (void)state;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        ask.kind = i < 2 ? PROVIDER_CALL_CHARGE : PROVIDER_CALL_CANCEL;
        assert_int_equal(provider_answer_parse(&ask, bodies[i], strlen(bodies[i]), id, why,
                                               sizeof(why)), PROVIDER_UNAVAILABLE);
        assert_string_equal(id, "");
    }
    ask.kind = PROVIDER_CALL_CHARGE;
    snprintf(body, sizeof(body), "{" O ", \"amount_cents\": 9223372036854775807, "
             "\"status\": \"succeeded\", \"charge_id\": \"c\"}");
    assert_int_equal(provider_answer_parse(&ask, body, strlen(body), id, why, sizeof(why)),
                     PROVIDER_SUCCEEDED);
    assert_string_equal(id, "c");
}

/* What each call sends. */
static void
test_requests(void **state)
{
    (void)state;
    call(prov, CHARGE, 200, "{}");
    assert_string_equal(srv.method, "POST");
    assert_string_equal(srv.path, "/v1/charges");
    assert_string_equal(srv.key, ORDER);
    assert_string_equal(srv.body_seen,
                        "{"
                        "\"order_id\":\"" ORDER "\",\"amount_cents\":2500,\"currency\":\"EUR\"}");

    call(prov, GET, 200, "{}");
    assert_string_equal(srv.method, "GET");
    assert_string_equal(srv.path, "/v1/charges/" ORDER);
    assert_string_equal(srv.key, "");

    /* The charge's key stays on the charge: under it a provider could
     * answer the cancel with the charge's stored answer. */
    call(prov, CANCEL, 200, "{}");
    assert_string_equal(srv.method, "POST");
    assert_string_equal(srv.path, "/v1/charges/" ORDER "/cancel");
    assert_string_equal(srv.body_seen, "{}");
    assert_string_equal(srv.key, "");
}

/* A port nobody listens on: every kind of call ends UNAVAILABLE. */
static void
test_refused(void **state)
{
    struct evhttp_bound_socket *b;
    char url[64];
    provider_t *p;

    (void)state;
    assert_true(bind_url("127.0.0.1", &b, url, sizeof(url)) > 0);
    evhttp_del_accept_socket(http, b);     /* closes it: the port is now refused */
    p = provider_new(base, NULL, url, NULL, 2000);
    assert_non_null(p);
    assert_int_equal(call(p, CHARGE, 200, "{}").out, PROVIDER_UNAVAILABLE);
    assert_int_equal(call(p, GET, 200, "{}").out, PROVIDER_UNAVAILABLE);
    assert_int_equal(call(p, CANCEL, 200, "{}").out, PROVIDER_UNAVAILABLE);
    assert_int_equal(srv.requests, 0);
    provider_free(p);
}

/* An IPv6 literal URL ("http://[::1]:port") reaches the address inside
 * the brackets.  Skipped where the host has no IPv6 loopback. */
static void
test_ipv6_literal(void **state)
{
    struct evhttp_bound_socket *b;
    char url[64];
    provider_t *p;

    (void)state;
    if (bind_url("::1", &b, url, sizeof(url)) < 0)
        skip();
    p = provider_new(base, NULL, url, NULL, 2000);
    assert_non_null(p);
    assert_int_equal(call(p, CANCEL, 200, "{" O ", \"status\": \"canceled\"}").out,
                     PROVIDER_CANCELED);
    assert_int_equal(srv.requests, 1);
    provider_free(p);
    evhttp_del_accept_socket(http, b);
}

static void
test_bad_urls(void **state)
{
    (void)state;
    assert_null(provider_new(base, NULL, "ftp://127.0.0.1:1", NULL, 1000));
    assert_null(provider_new(base, NULL, "http://", NULL, 1000));
    assert_null(provider_new(base, NULL, "not a url", NULL, 1000));
    assert_null(provider_new(base, NULL, "https://127.0.0.1:1", "/nonexistent/ca.pem", 1000));
}

static void
test_outcome_names(void **state)
{
    (void)state;
    assert_string_equal(provider_outcome_name(PROVIDER_SUCCEEDED), "succeeded");
    assert_string_equal(provider_outcome_name(PROVIDER_DECLINED), "declined");
    assert_string_equal(provider_outcome_name(PROVIDER_UNAVAILABLE), "unavailable");
    assert_string_equal(provider_outcome_name(PROVIDER_PENDING), "pending");
    assert_string_equal(provider_outcome_name(PROVIDER_NOT_FOUND), "not_found");
    assert_string_equal(provider_outcome_name(PROVIDER_CANCELED), "canceled");
    assert_string_equal(provider_outcome_name(PROVIDER_REFUNDED), "refunded");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answers),
        cmocka_unit_test(test_charge_id_lengths),
        cmocka_unit_test(test_regress_amount_beyond_int64),
        cmocka_unit_test(test_requests),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_ipv6_literal),
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_outcome_names),
    };

    return cmocka_run_group_tests_name("provider", tests, setup, teardown);
}
