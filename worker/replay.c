/*
 * replay: cached replays of POST /checkout, answered by the front reader.
 *
 * A client that retries a checkout gets the first answer again, mostly from
 * the shared cache (checkout.c).  Through evhttp that costs a request
 * object, a header list, a reply assembled header by header and a pair of
 * epoll changes, for an answer that is a copy.  So front.c offers each whole
 * request to replay_answer first, when evhttp has nothing unanswered on the
 * connection (an answer made here cannot overtake another).  It answers
 * only what the handler would answer as a cached replay, with the same
 * bytes: a POST /checkout over HTTP/1.1 whose Idempotency-Key, Content-Type
 * and body pass the handler's own checks (validate.c), whose key the cache
 * holds COMPLETED, unexpired under today's TTL, for the same fingerprint.
 *
 * Parsing the body and hashing its fingerprint cost more than the rest of
 * a replay, and a retry mostly sends the very bytes it sent first.  So the
 * handler keeps a note of the request with the answer (replay_note: the
 * body's bytes, and the amount and currency that a reload may stop
 * accepting), and a body whose bytes are exactly the note's is taken as
 * validated, with the entry's fingerprint.  That is exact: those bytes
 * passed validate_checkout_body and made that fingerprint, and nothing in
 * them but length, amount and currency depends on the conf, which
 * validate_checkout_accepted asks again.  Any other body (same meaning,
 * other bytes; longer than a note holds) is parsed as before.
 * The header values are read as evhttp reads them (leading spaces and
 * trailing whitespace dropped; the first of a repeated field).  Whatever
 * would make the handler's answer differ goes to evhttp instead: a
 * Connection field, an Origin while CORS is configured, a graceful stop
 * (Connection: close), and any failed check or cache miss (the handler
 * then answers, counts and logs it as usual).
 *
 * The answer carries the handler's headers in evhttp's order (Location,
 * Idempotent-Replayed, Content-Type, X-Request-Id, Date, Content-Length),
 * writes the same access-log line and counts the same metrics.
 *
 * Runs on the worker's event loop only; the cache lookup takes no lock.
 */
#include "config.h"

#include "worker/replay.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/util.h>

#include "common/clock.h"
#include "common/log.h"
#include "worker/front.h"
#include "worker/http.h"
#include "worker/validate.h"

#define CACHE_SKEW_MARGIN_MS 60000  /* cached answers expire this much early */
#define LOGGED_MAX 511              /* of a header value in the access log:
                                     * more than http_access_log keeps */

/* A header field's value as evhttp keeps it; p is NULL when not sent. */
typedef struct {
    const char *p;
    size_t n;
} value_t;

/* The fields of a checkout that the handler reads, first occurrences. */
typedef struct {
    value_t key, content_type, request_id, user_agent, xff;
    unsigned keys;              /* Idempotency-Key fields sent */
    int connection, origin;     /* sent at all */
} fields_t;

static void
keep_first(value_t *v, const char *p, size_t n)
{
    if (v->p == NULL) {
        v->p = p;
        v->n = n;
    }
}

static int
is_name(const char *s, size_t n, const char *name)
{
    return strlen(name) == n && strncasecmp(s, name, n) == 0;
}

/* The fields of a head that front.c has checked (RFC 9112: every line a
 * field, no obs-fold). */
static void
read_fields(const char *head, size_t n, fields_t *fl)
{
    size_t off = 0;
    const char *line;
    ssize_t len;

    (void)http1_next_line(head, n, &off, &line);        /* the request line */
    while ((len = http1_next_line(head, n, &off, &line)) > 0) {
        const char *colon = memchr(line, ':', (size_t)len), *v;
        size_t name_len, vn;

        if (colon == NULL)
            continue;
        name_len = (size_t)(colon - line);
        v = colon + 1;
        vn = (size_t)(line + len - v);
        /* evhttp drops leading spaces (not tabs) and trailing whitespace. */
        while (vn > 0 && *v == ' ') {
            v++;
            vn--;
        }
        while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
            vn--;
        if (is_name(line, name_len, "Idempotency-Key")) {
            fl->keys++;
            keep_first(&fl->key, v, vn);
        } else if (is_name(line, name_len, "Content-Type")) {
            keep_first(&fl->content_type, v, vn);
        } else if (is_name(line, name_len, "X-Request-Id")) {
            keep_first(&fl->request_id, v, vn);
        } else if (is_name(line, name_len, "User-Agent")) {
            keep_first(&fl->user_agent, v, vn);
        } else if (is_name(line, name_len, "X-Forwarded-For")) {
            keep_first(&fl->xff, v, vn);
        } else if (is_name(line, name_len, "Connection")) {
            fl->connection = 1;
        } else if (is_name(line, name_len, "Origin")) {
            fl->origin = 1;
        }
    }
}

/* v as a C string in buf (size bytes): NULL when not sent; cut to fit. */
static const char *
value_str(const value_t *v, char *buf, size_t size)
{
    size_t n;

    if (v->p == NULL)
        return NULL;
    n = v->n < size - 1 ? v->n : size - 1;
    memcpy(buf, v->p, n);
    buf[n] = '\0';
    return buf;
}

/* An answer's head, appended piece by piece: snprintf's format parsing
 * cost more than the rest of a replay once the body was no longer parsed.
 * A piece that does not fit marks the head overflowed (never cut). */
typedef struct {
    char buf[768];
    size_t len;
    int overflowed;
} head_t;

static void
head_put(head_t *h, const char *s, size_t n)
{
    if (n > sizeof(h->buf) - h->len) {
        h->overflowed = 1;
        return;
    }
    memcpy(h->buf + h->len, s, n);
    h->len += n;
}

static void
head_put_str(head_t *h, const char *s)
{
    head_put(h, s, strlen(s));
}

static void
head_put_uint(head_t *h, size_t v)
{
    char digits[20];
    size_t i = sizeof(digits);

    do {
        digits[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    head_put(h, digits + i, sizeof(digits) - i);
}

/* The Date field's value at now_ms (Unix ms) as evhttp writes it, made
 * once a second. */
static const char *
http_date(int64_t now_ms)
{
    static char date[64];
    static time_t made = -1;
    time_t now = (time_t)(now_ms / 1000);
    struct tm tm;

    if (now != made && gmtime_r(&now, &tm) != NULL) {
        evutil_date_rfc1123(date, sizeof(date), &tm);
        made = now;
    }
    return date;
}

int64_t
replay_expiry(const conf_t *conf, int64_t completed_ms)
{
    return completed_ms + conf->idempotency_ttl_ms - CACHE_SKEW_MARGIN_MS;
}

int
replay_lookup(worker_t *w, const char *key, size_t keylen, int64_t now_ms, shm_cache_entry_t *e)
{
    return shm_cache_lookup(worker_shared(w)->cache, key, keylen, now_ms, e) == SHM_CACHE_COMPLETED
           && replay_expiry(worker_conf(w), e->start_ms) > now_ms;
}

int
replay_location(const char *order_id, const char *body, size_t len, char out[REPLAY_LOCATION_SIZE])
{
    static const char tag[] = "\"order_id\":\"";
    const char *p;
    char id[37];

    if (order_id != NULL && order_id[0] != '\0') {
        snprintf(id, sizeof(id), "%s", order_id);
    } else {
        /* From a cached body the order id is only in the body itself. */
        p = memmem(body, len, tag, sizeof(tag) - 1);
        if (p == NULL || (size_t)(p - body) + sizeof(tag) - 1 + 36 > len)
            return 0;
        memcpy(id, p + sizeof(tag) - 1, 36);
        id[36] = '\0';
        if (!validate_uuid(id))
            return 0;
    }
    memcpy(out, "/orders/", 8);
    memcpy(out + 8, id, strlen(id) + 1);       /* 8 + 36 + 1 < REPLAY_LOCATION_SIZE */
    return 1;
}

/* The access-log line of a replay answered here, as http.c writes it. */
static void
log_replay(const front_request_t *rq, const fields_t *fl, const char *request_id, int status,
           size_t bytes, int64_t dur_us)
{
    char agent[LOGGED_MAX + 1], xff[LOGGED_MAX + 1];
    char *peer = NULL;
    ev_uint16_t port = 0;
    http_access_t a = {
        .request_id = request_id, .method = "POST", .path = "/checkout",
        .route = SHM_METRICS_ROUTE_CHECKOUT, .status = status, .bytes = bytes, .dur_us = dur_us,
        .user_agent = value_str(&fl->user_agent, agent, sizeof(agent)),
        .xff = value_str(&fl->xff, xff, sizeof(xff)),
    };

    if (rq->evcon != NULL)
        evhttp_connection_get_peer(rq->evcon, &peer, &port);
    a.client = peer != NULL ? peer : "";
    a.client_port = port;
    http_access_log(&a);
}

/* The start of a note: what today's conf must still accept of its body. */
typedef struct {
    int64_t amount_cents;
    char currency[4];
    char pad[4]; /* zeroed: notes compare as bytes */
} note_head_t;

size_t
replay_note(const validate_checkout_t *order, const char *body, size_t len,
            unsigned char out[SHM_CACHE_REQ_MAX])
{
    note_head_t h;

    if (len > SHM_CACHE_REQ_MAX - sizeof(h))
        return 0;
    memset(&h, 0, sizeof(h));
    h.amount_cents = order->amount_cents;
    memcpy(h.currency, order->currency, sizeof(h.currency));
    memcpy(out, &h, sizeof(h));
    memcpy(out + sizeof(h), body, len);
    return sizeof(h) + len;
}

/* Whether body (len bytes) is, byte for byte, the one e's note was made of,
 * and today's conf still accepts it: then it is valid, with e's fingerprint. */
static int
same_request(const conf_t *conf, const shm_cache_entry_t *e, const char *body, size_t len)
{
    note_head_t h;

    if (e->req_len != sizeof(h) + len || memcmp(e->req + sizeof(h), body, len) != 0)
        return 0;
    memcpy(&h, e->req, sizeof(h));
    h.currency[sizeof(h.currency) - 1] = '\0';
    return validate_checkout_accepted(conf, len, h.amount_cents, h.currency);
}

int
replay_answer(void *arg, const front_request_t *rq, struct evbuffer *out)
{
    worker_t *w = arg;
    const conf_t *conf = worker_conf(w);
    fields_t fl = { .keys = 0 };
    char key_value[VALIDATE_KEY_MAX + 3], ctype[128], id_value[HTTP_ID_SIZE + 1];
    char key[VALIDATE_KEY_MAX + 1], request_id[HTTP_ID_SIZE], location[REPLAY_LOCATION_SIZE];
    head_t head = { .len = 0 };
    const char *keys[1];
    shm_cache_entry_t e;        /* ~1.8 KiB: the stack, not malloc */
    validate_error_t err;
    validate_checkout_t req;
    int64_t start_us, now_ms, dur_us;
    int same;

    if (rq->h->minor != 1 || strcmp(rq->h->method, "POST") != 0
        || rq->h->target_len != strlen("/checkout")
        || memcmp(rq->h->target, "/checkout", rq->h->target_len) != 0 || worker_draining(w))
        return 0;
    start_us = clock_mono_us();
    read_fields(rq->head, rq->head_len, &fl);
    if (fl.keys != 1 || fl.key.n >= sizeof(key_value) || fl.connection
        || (fl.origin && conf->cors_allow_origins.n > 0)
        || (fl.content_type.p != NULL && fl.content_type.n >= sizeof(ctype)))
        return 0;
    keys[0] = value_str(&fl.key, key_value, sizeof(key_value));
    if (validate_idempotency_key(keys, 1, key, &err) < 0
        || validate_content_type(value_str(&fl.content_type, ctype, sizeof(ctype)), &err) < 0)
        return 0;
    now_ms = clock_real_ms();
    /* An answer without a body (1xx, 204, 304) is never an order's. */
    if (!replay_lookup(w, key, strlen(key), now_ms, &e) || e.status < 200 || e.status == 204
        || e.status == 304)
        return 0;
    same = same_request(conf, &e, rq->body, rq->body_len);
    if (!same
        && (validate_checkout_body(rq->body, rq->body_len, conf, &req, &err) < 0
            || strcmp(e.fingerprint, req.fingerprint) != 0))
        return 0;

    /* The first X-Request-Id, as evhttp_find_header finds it (one longer
     * than a valid one is not cut to fit). */
    http_request_id(fl.request_id.p != NULL && fl.request_id.n >= HTTP_ID_SIZE ? ""
                    : value_str(&fl.request_id, id_value, sizeof(id_value)), request_id);
    head_put_str(&head, "HTTP/1.1 ");
    head_put_uint(&head, (size_t)e.status); /* 200..999: checked above, and by the cache */
    head_put_str(&head, " ");
    head_put_str(&head, http_reason(e.status));
    head_put_str(&head, "\r\n");
    if (e.status == 201 && replay_location(NULL, (const char *)e.body, e.body_len, location)) {
        head_put_str(&head, "Location: ");
        head_put_str(&head, location);
        head_put_str(&head, "\r\n");
    }
    head_put_str(&head, "Idempotent-Replayed: true\r\nContent-Type: application/json\r\n"
                        "X-Request-Id: ");
    head_put_str(&head, request_id);
    head_put_str(&head, "\r\nDate: ");
    head_put_str(&head, http_date(now_ms));
    head_put_str(&head, "\r\nContent-Length: ");
    head_put_uint(&head, e.body_len);
    head_put_str(&head, "\r\n\r\n");
    /* Room for both first, so that out stays untouched when there is none
     * (the handler answers then). */
    if (head.overflowed || evbuffer_expand(out, head.len + e.body_len) < 0
        || evbuffer_add(out, head.buf, head.len) < 0 || evbuffer_add(out, e.body, e.body_len) < 0)
        return 0;
    worker_count(w, SHM_METRICS_CACHE_HIT);
    worker_count(w, SHM_METRICS_CHECKOUT_REPLAYED);
    worker_count(w, SHM_METRICS_REPLAY_CACHE);
    dur_us = clock_mono_us() - start_us;
    if (log_access_enabled())
        log_replay(rq, &fl, request_id, e.status, e.body_len, dur_us);
    worker_answered(w, SHM_METRICS_ROUTE_CHECKOUT, "POST", e.status, dur_us);
    log_debug("%s: a cached replay, answered by the front reader (%s)", request_id,
              same ? "the same bytes, not parsed" : "parsed");
    return 1;
}
