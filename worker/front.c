/*
 * front: a strict HTTP/1.1 request reader in front of evhttp.
 *
 * libevent 2.1 answers some requests itself with an HTML page, without
 * X-Request-Id and without a hook to change it (evhttp_set_errorcb came in
 * 2.2): a malformed request line, headers or a body over its limits, an
 * HTTP version or an Expect it does not know, a method it does not allow.
 * So each connection's bytes go through a filtering bufferevent that reads
 * them first.  It passes on only requests that evhttp takes as they are: a
 * request line and header fields checked to RFC 9112, a Content-Length body
 * within the limit (streamed), a chunked body within the limit (collected,
 * then passed on with a Content-Length).  Any other request is replaced by a
 * stand-in ("GET / HTTP/1.1", Connection: close, the client's X-Request-Id)
 * that the worker answers with the SPEC's JSON error (front_rejected), and
 * nothing after it is read: the connection closes after that answer.
 *
 * Writes.  A filter tells evhttp "written" once bytes reach the socket's
 * bufferevent, not the kernel, and evhttp then closes a Connection: close
 * connection with the reply still in user space.  So the output side writes
 * to the socket itself and reports "written" only when the kernel has it.
 * It writes at once, without waiting to hear that the socket is writable
 * (a socket with room takes the bytes; a full one says EAGAIN, and only
 * then is a write event armed), but from the loop: evhttp adds a reply in
 * pieces and only then asks for writing, and must hear "written" from the
 * loop, never from inside its own call.  So the first byte added activates
 * an event, which the loop runs in the same pass, after the callback that
 * answered: one write and no epoll change per reply.
 *
 * Cost.  The common request costs one scan of its head for its end, one
 * check of its lines, and no allocation: the head and the body bytes that
 * came with it move on as one evbuffer_remove_buffer (whole chains move
 * without a copy).  What a refused request's stand-in needs (its request
 * line, the client's X-Request-Id) is read from the head when refusing.
 *
 * Answers made here.  A whole request (Content-Length body, no Expect) is
 * first offered to front_limits_t.answer (replay.c: cached replays), but
 * only while evhttp holds no request of the connection that it has not
 * answered in full, so that an answer made here never overtakes another:
 * evhttp has been given every request passed on and waits for the next,
 * with nothing of an answer queued.  The answer goes to the socket at once
 * (one write, no epoll change; evhttp never sees the request); what the
 * socket does not take waits in f->out, which is written before anything
 * evhttp adds later, and holds back the client's EOF like evhttp's output.
 *
 * End of input.  evhttp drops a connection at the client's EOF even when it
 * still holds pipelined requests it has read but not answered, so the EOF
 * is held back until evhttp waits for a request with nothing left to read.
 *
 * Lingering close.  After an error answer the client may still be sending
 * (a 1 MiB body); closing then resets the connection, and the client may
 * never read the answer.  The socket is kept (a dup) after evhttp has shut
 * its write side and closed it, and read and discarded until the client
 * closes, for a few seconds at most (linger.c).
 *
 * Runs on the worker's event loop only.
 */
#include "config.h"

#include "worker/front.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/log.h"
#include "worker/http1.h"
#include "worker/linger.h"

#define CHUNK_LINE_MAX 1024     /* a chunk-size line with its extensions */
#define EOF_WAITS_MAX 10000

enum state {
    S_HEAD,                     /* reading a request line and header fields */
    S_BODY,                     /* passing `left` bytes of a Content-Length body */
    S_CHUNK_SIZE, S_CHUNK_DATA, S_CHUNK_END, S_TRAILER,
    S_DONE                      /* refused: discard everything */
};

typedef struct front {
    const front_limits_t *lim;
    struct event_base *base;
    struct bufferevent *bev, *under;
    /* The filter's callbacks on the underlying bufferevent, wrapped. */
    bufferevent_data_cb under_read;
    bufferevent_event_cb under_event;
    void *under_arg;
    enum state state;
    size_t scanned;             /* S_HEAD: where the first line not yet whole starts */
    int line_checked;           /* S_HEAD: the request line is known good */
    int64_t left;               /* S_BODY, S_CHUNK_DATA: bytes still to come */
    int64_t body_len;           /* chunked: bytes collected */
    size_t trailer_len;
    struct evbuffer *head;      /* chunked: the head to pass on */
    struct evbuffer *body;      /* chunked: the body collected */
    unsigned released;          /* requests passed to evhttp */
    unsigned dispatched;        /* requests evhttp gave the worker */
    unsigned reject_at;         /* the stand-in's number, 0 if none */
    front_reject_t reject;
    struct evbuffer *out;       /* answers made here (front_answer_fn), not yet written */
    int out_waits;              /* out waits for the socket: counted in `waiting` */
    int answered;               /* front_in: an answer was made here */
    struct event *wev;          /* write now (activated), or once writable */
    int write_armed;            /* wev is active or pending */
    struct evbuffer_cb_entry *outcb;
    struct event *errev;        /* tell evhttp the client is gone */
    int linger_fd;
    unsigned eof_waits;
    int eof_after_write;        /* the client's EOF came while writing */
    int flushing;               /* front_out called from writable_cb */
} front_t;

/* Connections whose f->out waits for the socket (front_answers_waiting). */
static unsigned waiting;

/* Count f among them, or no longer. */
static void
set_out_waits(front_t *f, int waits)
{
    if (waits && !f->out_waits)
        waiting++;
    else if (!waits && f->out_waits)
        waiting--;
    f->out_waits = waits;
}

unsigned
front_answers_waiting(void)
{
    return waiting;
}

static void
set_reject(front_t *f, int status, const char *message)
{
    static const struct { int status; const char *code; } codes[] = {
        { 400, "bad_request" }, { 413, "payload_too_large" }, { 417, "expectation_failed" },
        { 431, "headers_too_large" }, { 501, "not_implemented" },
        { 505, "http_version_not_supported" },
    };

    f->reject.status = status;
    f->reject.code = "bad_request";
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        if (codes[i].status == status)
            f->reject.code = codes[i].code;
    }
    if (message != f->reject.message)
        snprintf(f->reject.message, sizeof(f->reject.message), "%s", message);
}

/* The head without its Transfer-Encoding and Expect fields and without the
 * empty line: a chunked request's, passed on with its Content-Length. */
static void
keep_head(front_t *f, const char *p, size_t n)
{
    size_t off = 0, start;
    const char *line;
    ssize_t len;

    for (;;) {
        start = off;
        len = http1_next_line(p, n, &off, &line);
        if (len <= 0)
            break;
        if ((len >= 18 && strncasecmp(line, "transfer-encoding:", 18) == 0)
            || (len >= 7 && strncasecmp(line, "expect:", 7) == 0))
            continue;
        evbuffer_add(f->head, p + start, off - start);
    }
}

/* Refuse the request being read: pass on the stand-in, drop the rest.
 * [head, head + head_n) is what was read of its head (NULL: take the kept
 * head of a chunked request): the stand-in repeats its request line, if
 * that is good, and its valid X-Request-Id. */
static void
refuse(front_t *f, struct evbuffer *src, struct evbuffer *dst, int status, const char *why,
       const char *head, size_t head_n)
{
    evutil_socket_t fd = bufferevent_getfd(f->under);
    http1_head_t h = { .minor = 1, .content_length = -1 };
    char id[HTTP1_ID_MAX + 1] = "";
    const char *line = NULL, *ignored;
    size_t off = 0;
    ssize_t len;

    set_reject(f, status, why);
    log_debug("refused a request with %d: %s", status, why);
    if (head == NULL) {
        head_n = evbuffer_get_length(f->head);
        head = (const char *)evbuffer_pullup(f->head, -1);
    }
    len = head != NULL ? http1_next_line(head, head_n, &off, &line) : -1;
    if (len < 0 || http1_request_line(line, (size_t)len, &h, &ignored) != 0) {
        h.method = "GET";
        h.target = "/";
        h.target_len = 1;
    }
    evbuffer_add_printf(dst, "%s %.*s HTTP/1.1\r\nConnection: close\r\n",
                        h.method, (int)h.target_len, h.target);
    if (head != NULL)
        http1_request_id(head, head_n, id);
    if (id[0] != '\0')
        evbuffer_add_printf(dst, "X-Request-Id: %s\r\n", id);
    evbuffer_add(dst, "\r\n", 2);
    evbuffer_drain(src, evbuffer_get_length(src));
    evbuffer_drain(f->head, evbuffer_get_length(f->head));
    evbuffer_drain(f->body, evbuffer_get_length(f->body));
    f->reject_at = ++f->released;
    f->state = S_DONE;
    if (fd >= 0 && f->linger_fd < 0)        /* see linger.c */
        f->linger_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

/* A new request: fresh per-request state. */
static void
next_request(front_t *f)
{
    f->state = S_HEAD;
    f->scanned = 0;
    f->line_checked = 0;
}

enum step { STEP_MORE, STEP_GO };

/* Whether every request before this one has had its whole answer handed to
 * the kernel: evhttp has been given all of them and waits to read the next
 * (it stops reading while it handles one), and nothing of an answer is
 * queued, neither evhttp's nor one made here (f->out).  A 100 Continue sent
 * straight to the socket before that would arrive ahead of an earlier
 * pipelined request's answer, or inside it, and read as its interim answer
 * or as part of its body. */
static int
answers_all_sent(front_t *f)
{
    return f->dispatched == f->released && (bufferevent_get_enabled(f->bev) & EV_READ)
           && evbuffer_get_length(bufferevent_get_output(f->bev)) == 0
           && evbuffer_get_length(f->out) == 0;
}

static int write_socket(front_t *f, struct evbuffer *src);

/* Offer the request whose head [head, head + end) starts src to the
 * answerer (front_limits_t.answer), when its body is all in src and an
 * answer made now cannot overtake another: evhttp holds no unanswered
 * request, and no answer is queued.  Returns 1 when it was answered: its
 * bytes are gone from src and its answer is written, or waits for the
 * socket in f->out. */
static int
try_answer(front_t *f, struct evbuffer *src, const http1_head_t *h, const char *head, size_t end)
{
    size_t len = end + (size_t)(h->content_length > 0 ? h->content_length : 0);
    ptrdiff_t target_off = h->target - head;
    http1_head_t at = *h;
    front_request_t rq = { .h = &at, .head_len = end, .body_len = len - end };
    void *evcon = NULL;

    if (f->lim->answer == NULL || h->expect_continue || evbuffer_get_length(src) < len
        || !answers_all_sent(f))
        return 0;
    /* Making the body whole may move the head. */
    if ((rq.head = (const char *)evbuffer_pullup(src, (ev_ssize_t)len)) == NULL)
        return 0;
    at.target = rq.head + target_off;
    rq.body = rq.head + end;
    bufferevent_getcb(f->bev, NULL, NULL, NULL, &evcon);
    rq.evcon = evcon;
    if (!f->lim->answer(f->lim->answer_arg, &rq, f->out))
        return 0;
    evbuffer_drain(src, len);
    f->answered = 1;
    next_request(f);
    if (write_socket(f, f->out) == 0) {
        log_debug("an answer made by the front reader waits for the socket");
        set_out_waits(f, 1);
    }
    return 1;
}

static enum step
read_head(front_t *f, struct evbuffer *src, struct evbuffer *dst)
{
    size_t avail = evbuffer_get_length(src), n, end = 0, off, k = 0, take;
    const char *p, *why, *line;
    http1_head_t h = { .minor = 1, .content_length = -1 };
    ssize_t len;
    int status;

    if (avail == 0)
        return STEP_MORE;
    n = avail < f->lim->max_header + 1 ? avail : f->lim->max_header + 1;
    p = (const char *)evbuffer_pullup(src, (ev_ssize_t)n);
    if (p == NULL) {
        /* Out of memory making at most max_header + 1 bytes whole. */
        refuse(f, src, dst, 431, "the request headers are too large", NULL, 0);
        return STEP_GO;
    }
    /* Empty lines before a request line are ignored (RFC 9112, 2.2). */
    while (k < n && (p[k] == '\n' || (p[k] == '\r' && k + 1 < n && p[k + 1] == '\n')))
        k += p[k] == '\n' ? 1 : 2;
    if (k > 0) {
        evbuffer_drain(src, k);
        f->scanned = 0;
        return avail > k ? STEP_GO : STEP_MORE;
    }
    /* The head ends with an empty line; lines already searched are not
     * searched again. */
    off = f->scanned;
    while ((len = http1_next_line(p, n, &off, &line)) >= 0) {
        if (len == 0 && line != p) {
            end = off;
            break;
        }
    }
    f->scanned = off;
    if (end == 0 || end > f->lim->max_header) {
        const char *lf = f->line_checked ? NULL : memchr(p, '\n', n);

        /* A bad request line is refused as soon as it is whole. */
        if (lf != NULL) {
            size_t line_len = (size_t)(lf - p) - (lf > p && lf[-1] == '\r');

            status = http1_request_line(p, line_len, &h, &why);
            if (status != 0) {
                refuse(f, src, dst, status, why, p, end ? end : n);
                return STEP_GO;
            }
            f->line_checked = 1;
        }
        if (n <= f->lim->max_header)
            return STEP_MORE;
        refuse(f, src, dst, 431, "the request headers are too large", p, n);
        return STEP_GO;
    }
    status = http1_head(p, end, &h, &why);
    if (status == 0 && (h.content_length > f->lim->body_backstop
                        || (h.expect_continue && h.content_length > f->lim->max_body))) {
        snprintf(f->reject.message, sizeof(f->reject.message), "the body is larger than %lld bytes",
                 (long long)f->lim->max_body);
        why = f->reject.message;
        status = 413;
    }
    if (status != 0) {
        refuse(f, src, dst, status, why, p, end);
        return STEP_GO;
    }
    if (h.chunked) {
        keep_head(f, p, end);
        evbuffer_drain(src, end);
        if (h.expect_continue && answers_all_sent(f)) {
            /* The client waits for this before it sends the body (for a
             * while: a client that gets none sends it anyway). */
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (send(bufferevent_getfd(f->under), cont, sizeof(cont) - 1,
                     MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                log_debug("100 Continue not sent: %m");
        }
        f->body_len = 0;
        f->state = S_CHUNK_SIZE;
        return STEP_GO;
    }
    if (try_answer(f, src, &h, p, end))
        return STEP_GO;
    /* The head and what came of its body move on together: when that is
     * all of src, as for most requests, its chains move without a copy. */
    f->left = h.content_length > 0 ? h.content_length : 0;
    take = (int64_t)(avail - end) < f->left ? avail - end : (size_t)f->left;
    evbuffer_remove_buffer(src, dst, end + take);
    f->left -= (int64_t)take;
    f->released++;
    if (f->left > 0)
        f->state = S_BODY;
    else
        next_request(f);
    return STEP_GO;
}

/* A line of src (chunk size or trailer field), or NULL when none is whole
 * yet; *len without its CRLF, *taken with it. */
static const char *
read_line(struct evbuffer *src, size_t *len, size_t *taken)
{
    size_t eol_len = 0;
    struct evbuffer_ptr eol = evbuffer_search_eol(src, NULL, &eol_len, EVBUFFER_EOL_LF);
    const char *p;

    if (eol.pos < 0)
        return NULL;
    *taken = (size_t)eol.pos + eol_len;
    p = (const char *)evbuffer_pullup(src, (ev_ssize_t)*taken);
    *len = (size_t)eol.pos;
    if (*len > 0 && p[*len - 1] == '\r')
        (*len)--;
    return p;
}

static enum step
read_chunk_size(front_t *f, struct evbuffer *src, struct evbuffer *dst)
{
    size_t len, taken, i;
    const char *p = read_line(src, &len, &taken);
    int64_t size = 0;

    if (p == NULL) {
        if (evbuffer_get_length(src) <= CHUNK_LINE_MAX)
            return STEP_MORE;
        refuse(f, src, dst, 400, "malformed chunked body", NULL, 0);
        return STEP_GO;
    }
    for (i = 0; i < len && i < 15; i++) {
        int d = p[i] >= '0' && p[i] <= '9' ? p[i] - '0'
              : p[i] >= 'a' && p[i] <= 'f' ? p[i] - 'a' + 10
              : p[i] >= 'A' && p[i] <= 'F' ? p[i] - 'A' + 10 : -1;
        if (d < 0)
            break;
        size = size * 16 + d;
    }
    if (i == 0 || taken > CHUNK_LINE_MAX ||
        (i < len && p[i] != ';' && p[i] != ' ' && p[i] != '\t')) {
        refuse(f, src, dst, 400, "malformed chunked body", NULL, 0);
        return STEP_GO;
    }
    for (; i < len; i++) {
        if (((unsigned char)p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f) {
            refuse(f, src, dst, 400, "malformed chunked body", NULL, 0);
            return STEP_GO;
        }
    }
    if (size > f->lim->body_backstop - f->body_len) {
        char why[96];

        snprintf(why, sizeof(why), "the body is larger than %lld bytes",
                 (long long)f->lim->max_body);
        refuse(f, src, dst, 413, why, NULL, 0);
        return STEP_GO;
    }
    evbuffer_drain(src, taken);
    f->left = size;
    f->trailer_len = 0;
    f->state = size > 0 ? S_CHUNK_DATA : S_TRAILER;
    return STEP_GO;
}

static enum step
read_trailer(front_t *f, struct evbuffer *src, struct evbuffer *dst)
{
    size_t len, taken;
    const char *p = read_line(src, &len, &taken), *why;

    if (p == NULL || f->trailer_len + taken > f->lim->max_header) {
        if (p == NULL && f->trailer_len + evbuffer_get_length(src) <= f->lim->max_header)
            return STEP_MORE;
        refuse(f, src, dst, 431, "the request trailer fields are too large", NULL, 0);
        return STEP_GO;
    }
    if (len > 0 && http1_field(p, len, NULL, &why) != 0) {
        refuse(f, src, dst, 400, "malformed trailer field", NULL, 0);
        return STEP_GO;
    }
    evbuffer_drain(src, taken);
    f->trailer_len += taken;
    if (len > 0)
        return STEP_GO;
    /* The whole chunked request: on to evhttp with a Content-Length. */
    evbuffer_add_buffer(dst, f->head);
    evbuffer_add_printf(dst, "Content-Length: %lld\r\n\r\n", (long long)f->body_len);
    evbuffer_add_buffer(dst, f->body);
    f->released++;
    next_request(f);
    return STEP_GO;
}

static enum step
read_chunk_end(front_t *f, struct evbuffer *src, struct evbuffer *dst)
{
    size_t avail = evbuffer_get_length(src);
    const unsigned char *p;

    if (avail == 0)
        return STEP_MORE;
    p = evbuffer_pullup(src, avail > 1 ? 2 : 1);
    if (p[0] == '\r' && avail < 2)
        return STEP_MORE;
    if (p[0] == '\n' || (p[0] == '\r' && p[1] == '\n')) {
        evbuffer_drain(src, p[0] == '\n' ? 1 : 2);
        f->state = S_CHUNK_SIZE;
        return STEP_GO;
    }
    refuse(f, src, dst, 400, "malformed chunked body", NULL, 0);
    return STEP_GO;
}

/* Move up to f->left bytes of src to dst; STEP_MORE when none came. */
static enum step
pass_bytes(front_t *f, struct evbuffer *src, struct evbuffer *dst)
{
    size_t avail = evbuffer_get_length(src);
    size_t n = (int64_t)avail < f->left ? avail : (size_t)f->left;

    if (n == 0)
        return STEP_MORE;
    evbuffer_remove_buffer(src, dst, n);
    f->left -= (int64_t)n;
    return STEP_GO;
}

static enum bufferevent_filter_result
front_in(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t limit,
         enum bufferevent_flush_mode mode, void *arg)
{
    front_t *f = arg;
    size_t before = evbuffer_get_length(dst);
    enum step step = STEP_GO;

    (void)limit;                /* no read high-water mark is set */
    (void)mode;
    f->answered = 0;
    while (step == STEP_GO && evbuffer_get_length(src) > 0) {
        switch (f->state) {
        case S_HEAD:
            step = read_head(f, src, dst);
            break;
        case S_BODY:
            step = pass_bytes(f, src, dst);
            if (f->left == 0)
                next_request(f);
            break;
        case S_CHUNK_SIZE:
            step = read_chunk_size(f, src, dst);
            break;
        case S_CHUNK_DATA: {
            size_t had = evbuffer_get_length(f->body);

            step = pass_bytes(f, src, f->body);
            f->body_len += (int64_t)(evbuffer_get_length(f->body) - had);
            if (f->left == 0)
                f->state = S_CHUNK_END;
            break;
        }
        case S_CHUNK_END:
            step = read_chunk_end(f, src, dst);
            break;
        case S_TRAILER:
            step = read_trailer(f, src, dst);
            break;
        case S_DONE:
            evbuffer_drain(src, evbuffer_get_length(src));
            step = STEP_MORE;
            break;
        }
    }
    /* BEV_OK also for an answer made here: the filter then restarts the
     * connection's idle timeout, as for a request passed on. */
    return evbuffer_get_length(dst) > before || f->answered ? BEV_OK : BEV_NEED_MORE;
}

static void
writable_cb(evutil_socket_t fd, short what, void *arg)
{
    front_t *f = arg;
    bufferevent_event_cb cb = NULL;

    (void)fd;
    (void)what;
    f->write_armed = 0;
    /* evhttp may have freed the connection earlier in this pass (a reset
     * read first): bufferevent_free clears its callbacks and frees f later,
     * from the loop.  Flushing it then would take and drop a reference it
     * no longer holds (libevent logs "too few references") and write to a
     * shut socket. */
    bufferevent_getcb(f->bev, NULL, NULL, &cb, NULL);
    if (cb == NULL)
        return;
    /* Answers made here come before anything evhttp added since. */
    if (evbuffer_get_length(f->out) > 0) {
        int res = write_socket(f, f->out);

        set_out_waits(f, res == 0);
        if (res <= 0)
            return;
    }
    f->flushing = 1;
    bufferevent_flush(f->bev, EV_WRITE, BEV_FLUSH);
    f->flushing = 0;
}

/* The write event, made on first use: the socket is not set before. */
static struct event *
write_event(front_t *f)
{
    if (f->wev == NULL)
        f->wev = event_new(f->base, bufferevent_getfd(f->under), EV_WRITE, writable_cb, f);
    return f->wev;
}

/* Write when the socket can take it.  0, or -1 when out of memory. */
static int
want_write(front_t *f)
{
    if (write_event(f) == NULL || event_add(f->wev, NULL) < 0)
        return -1;
    f->write_armed = 1;
    return 0;
}

/* evhttp added to the output.  The filter would pass it on only when
 * evhttp enables writing after adding, which it does, but a filter does
 * not look at its output then.  So the first piece of a reply activates
 * the write event: writable_cb then runs in this pass of the loop, after
 * evhttp has added the rest and asked for writing, and writes it all at
 * once; the socket is waited for only if it is full. */
static void
output_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    front_t *f = arg;

    (void)buf;
    if (info->n_added == 0 || f->write_armed)
        return;
    if (write_event(f) == NULL) {
        log_warn("event_new failed: a reply waits for the client's next read");
        return;
    }
    event_active(f->wev, EV_WRITE, 1);
    f->write_armed = 1;
}

/* Tell evhttp, from the loop, that the client is gone. */
static void
gone_cb(evutil_socket_t fd, short what, void *arg)
{
    front_t *f = arg;
    bufferevent_event_cb cb = NULL;
    void *cbarg = NULL;

    (void)fd;
    (void)what;
    bufferevent_getcb(f->bev, NULL, NULL, &cb, &cbarg);
    if (cb != NULL)
        cb(f->bev, BEV_EVENT_WRITING | BEV_EVENT_ERROR, cbarg);   /* may free f */
}

/* Write src to the socket until it is empty (1), the socket is full (0:
 * the write event is armed) or the client is gone (-1: src is emptied and
 * evhttp hears it from the loop). */
static int
write_socket(front_t *f, struct evbuffer *src)
{
    evutil_socket_t fd = bufferevent_getfd(f->under);

    while (evbuffer_get_length(src) > 0) {
        int n = fd >= 0 ? evbuffer_write(src, fd) : -1;
        int err = fd >= 0 ? errno : EBADF;

        if (n > 0)
            continue;
        if (n < 0 && err == EINTR)
            continue;
        if ((n == 0 || err == EAGAIN || err == EWOULDBLOCK) && want_write(f) == 0)
            return 0;
        /* The client is gone: nothing more can be written. */
        evbuffer_drain(src, evbuffer_get_length(src));
        if (f->errev == NULL)
            f->errev = event_new(f->base, -1, 0, gone_cb, f);
        if (f->errev != NULL)
            event_active(f->errev, EV_TIMEOUT, 1);
        return -1;
    }
    return 1;
}

/* Output: straight to the socket (see the top of this file). */
static enum bufferevent_filter_result
front_out(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t limit,
          enum bufferevent_flush_mode mode, void *arg)
{
    front_t *f = arg;
    size_t had = evbuffer_get_length(src);
    int res;

    (void)dst;
    (void)limit;
    (void)mode;
    if (!f->flushing) {
        /* evhttp must hear "written" from the loop, as from a socket
         * bufferevent, never from inside the call that wrote: it may then
         * free the connection under its caller.  output_added has armed
         * the write event. */
        return BEV_NEED_MORE;
    }
    res = write_socket(f, src);
    if (res < 0)
        return BEV_ERROR;
    if (res > 0 && f->eof_after_write) {
        /* Written: now the EOF that under_event held back may come. */
        f->eof_after_write = 0;
        bufferevent_enable(f->under, EV_READ);
    }
    return evbuffer_get_length(src) < had ? BEV_OK : BEV_NEED_MORE;
}

static void
under_read(struct bufferevent *u, void *arg)
{
    front_t *f = arg;

    f->under_read(u, f->under_arg);
}

/* The client's EOF waits while evhttp has whole requests of it to answer
 * (S_HEAD: nothing half read; S_DONE: a refused request's stand-in, whose
 * JSON error is owed), or an answer to write (evhttp reads while
 * it writes, to notice a close, and fails the connection at an EOF).  The
 * underlying bufferevent then reads again, and finds the EOF again: once
 * evhttp reads for the next request, or once the answer is written
 * (front_out).  EOF_WAITS_MAX bounds the waits should evhttp never read. */
static void
under_event(struct bufferevent *u, short what, void *arg)
{
    front_t *f = arg;

    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)
        && (f->state == S_HEAD || f->state == S_DONE)
        && f->eof_waits < EOF_WAITS_MAX) {
        if (evbuffer_get_length(bufferevent_get_output(f->bev)) > 0
            || evbuffer_get_length(f->out) > 0) {
            f->eof_waits++;
            f->eof_after_write = 1;
            return;
        }
        if (!(bufferevent_get_enabled(f->bev) & EV_READ)
            || evbuffer_get_length(bufferevent_get_input(f->bev)) > 0) {
            f->eof_waits++;
            bufferevent_enable(u, EV_READ);
            return;
        }
    }
    f->under_event(u, what, f->under_arg);
}

static void
front_free(void *arg)
{
    front_t *f = arg;

    set_out_waits(f, 0);
    if (f->outcb != NULL)
        evbuffer_remove_cb_entry(bufferevent_get_output(f->bev), f->outcb);
    if (f->linger_fd >= 0)
        linger_start(f->base, f->linger_fd);
    if (f->wev != NULL)
        event_free(f->wev);
    if (f->errev != NULL)
        event_free(f->errev);
    evbuffer_free(f->head);
    evbuffer_free(f->body);
    evbuffer_free(f->out);
    free(f);
}

struct bufferevent *
front_bevcb(struct event_base *base, void *arg)
{
    front_t *f = calloc(1, sizeof(*f));
    struct bufferevent *under = NULL;

    if (f == NULL)
        goto fail;
    f->lim = arg;
    f->base = base;
    f->linger_fd = -1;
    f->head = evbuffer_new();
    f->body = evbuffer_new();
    f->out = evbuffer_new();
    under = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (f->head == NULL || f->body == NULL || f->out == NULL || under == NULL)
        goto fail;
    f->bev = bufferevent_filter_new(under, front_in, front_out, BEV_OPT_CLOSE_ON_FREE,
                                    front_free, f);
    if (f->bev == NULL)
        goto fail;
    f->under = under;
    f->outcb = evbuffer_add_cb(bufferevent_get_output(f->bev), output_added, f);
    bufferevent_getcb(under, &f->under_read, NULL, &f->under_event, &f->under_arg);
    /* Nothing is ever written through the socket's bufferevent (front_out
     * writes to the socket itself), so it has no write event: without this
     * it would wait for the socket to be writable once, for nothing, on
     * every connection. */
    bufferevent_setcb(under, under_read, NULL, under_event, f);
    bufferevent_disable(under, EV_WRITE);
    next_request(f);
    return f->bev;

fail:
    log_warn("out of memory: a connection without its front reader");
    if (under != NULL)
        bufferevent_free(under);
    if (f != NULL) {
        if (f->head != NULL)
            evbuffer_free(f->head);
        if (f->body != NULL)
            evbuffer_free(f->body);
        if (f->out != NULL)
            evbuffer_free(f->out);
        free(f);
    }
    return NULL;
}

/* The front_t of req's connection, or NULL (a plain bufferevent). */
static front_t *
front_of(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon != NULL ? evhttp_connection_get_bufferevent(evcon) : NULL;
    struct bufferevent *under = bev != NULL ? bufferevent_get_underlying(bev) : NULL;
    bufferevent_event_cb cb = NULL;
    void *cbarg = NULL;

    if (under == NULL)
        return NULL;
    bufferevent_getcb(under, NULL, NULL, &cb, &cbarg);
    return cb == under_event ? cbarg : NULL;
}

const front_reject_t *
front_rejected(struct evhttp_request *req)
{
    front_t *f = front_of(req);

    if (f == NULL)
        return NULL;
    f->dispatched++;
    return f->reject_at != 0 && f->dispatched == f->reject_at ? &f->reject : NULL;
}
