/*
 * front: a strict HTTP/1.1 request reader in front of evhttp, so that every
 * answer is the SPEC's JSON, even for requests that libevent 2.1 would
 * refuse itself with an HTML page.
 *
 * Every connection's bytes pass through a filtering bufferevent
 * (front_bevcb, given to evhttp_set_bevcb).  Requests that evhttp would
 * accept pass on unchanged (a chunked body is collected and passed on with
 * a Content-Length); any other is replaced by a stand-in request, which
 * front_rejected() names, and the connection closes after its answer.  An
 * answerer (front_limits_t.answer) may answer a whole request itself while
 * evhttp has nothing unanswered on the connection; evhttp never sees it.
 */
#ifndef PD_FRONT_H
#define PD_FRONT_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>

#include "worker/http1.h"

/* A whole request the front has read and checked, with its body
 * (Content-Length framing; no Expect), while evhttp holds no unanswered
 * request on its connection. */
typedef struct front_request {
    const http1_head_t *h;
    const char *head;           /* request line and fields, up to the empty line */
    size_t head_len;
    const char *body;
    size_t body_len;
    struct evhttp_connection *evcon;    /* for the peer's address */
} front_request_t;

/* Answer rq without evhttp: put the whole response into out and return 1,
 * or return 0 (out untouched) and evhttp gets rq as usual. */
typedef int (*front_answer_fn)(void *arg, const front_request_t *rq, struct evbuffer *out);

typedef struct {
    size_t max_header;          /* request line and header fields, in bytes */
    int64_t max_body;           /* max_body_size: with Expect: 100-continue
                                 * a larger Content-Length is refused unread */
    int64_t body_backstop;      /* larger bodies are refused before any handler
                                 * runs; smaller ones reach it (SPEC.md's order) */
    front_answer_fn answer;     /* NULL: evhttp answers every request */
    void *answer_arg;
} front_limits_t;

/* Why a stand-in request was made: the answer it must get. */
typedef struct {
    int status;                 /* 400, 413, 417, 431, 501 or 505 */
    const char *code;           /* error.code */
    char message[96];           /* error.message */
} front_reject_t;

/* The evhttp_set_bevcb callback; arg is a front_limits_t that outlives the
 * evhttp.  Returns NULL (evhttp then makes a plain bufferevent) only when
 * out of memory. */
struct bufferevent *front_bevcb(struct event_base *base, void *arg);

/* How many connections of this process hold an answer made by the front
 * reader that waits for the client to read (evhttp's requests count as in
 * flight until their answers are written; these are not evhttp's). */
unsigned front_answers_waiting(void);

/* Call once for every request the gencb receives, in order.  Returns NULL
 * for a client's request, or the error that this stand-in request stands
 * for; the pointer is valid until the gencb returns. */
const front_reject_t *front_rejected(struct evhttp_request *req);

#endif
