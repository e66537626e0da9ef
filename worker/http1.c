/*
 * http1: the syntax of an HTTP/1.1 request head (RFC 9112), as pure
 * functions over bytes, so that front.c can refuse what evhttp would answer
 * with its own HTML page, and tests can check it without a server.
 *
 * Strict where the RFC allows a server to be: one SP between the parts of
 * the request line, an origin-form target, no obs-fold, no whitespace
 * before a field's colon, no CR or NUL inside a line.  A line ends with
 * CRLF or a bare LF.
 */
#include "config.h"

#include "worker/http1.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/http.h>

/* The methods the worker's evhttp allows (worker.c). */
static const char *const methods[] = { "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH" };

static int
is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* A field value's byte: visible, SP, HTAB or obs-text; never CR, LF, NUL. */
static int
is_vchar(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int
ieq(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

/* Trim spaces and tabs at both ends of [*s, *s + *n). */
static void
trim(const char **s, size_t *n)
{
    while (*n > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

ssize_t
http1_next_line(const char *p, size_t n, size_t *off, const char **line)
{
    const char *lf = memchr(p + *off, '\n', n - *off);
    size_t len;

    if (lf == NULL)
        return -1;
    *line = p + *off;
    len = (size_t)(lf - *line);
    *off += len + 1;
    if (len > 0 && (*line)[len - 1] == '\r')
        len--;
    return (ssize_t)len;
}

void
http1_request_id(const char *p, size_t n, char out[HTTP1_ID_MAX + 1])
{
    size_t off = 0;
    const char *line;
    ssize_t len;

    while ((len = http1_next_line(p, n, &off, &line)) >= 0) {
        const char *v = line + 13;
        size_t vlen = (size_t)len - 13, i;

        if (len < 13 || strncasecmp(line, "x-request-id:", 13) != 0)
            continue;
        trim(&v, &vlen);
        for (i = 0; i < vlen; i++) {
            if (v[i] < 0x21 || v[i] > 0x7e || v[i] == '"' || v[i] == '\\')
                break;
        }
        if (vlen >= 1 && vlen <= HTTP1_ID_MAX && i == vlen) {
            memcpy(out, v, vlen);
            out[vlen] = '\0';
        }
        return;                 /* the first one only, as http.c reads it */
    }
}

int
http1_request_line(const char *s, size_t n, http1_head_t *h, const char **why)
{
    const char *sp1 = memchr(s, ' ', n), *sp2 = NULL, *v;
    size_t mlen, tlen, vlen, i, m;
    struct evhttp_uri *uri;
    char *target;

    for (i = n; i > 0; i--) {
        if (s[i - 1] == ' ') {
            sp2 = s + i - 1;
            break;
        }
    }
    *why = "malformed request line";
    if (sp1 == NULL || sp2 == sp1)
        return 400;
    v = sp2 + 1;
    vlen = (size_t)(s + n - v);
    if (vlen != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.'
        || v[7] < '0' || v[7] > '9')
        return 400;
    if (v[5] != '1' || v[7] > '1') {
        *why = "only HTTP/1.0 and HTTP/1.1 are supported";
        return 505;
    }
    h->minor = v[7] - '0';
    mlen = (size_t)(sp1 - s);
    if (mlen == 0)
        return 400;
    for (i = 0; i < mlen; i++) {
        if (!is_tchar((unsigned char)s[i]))
            return 400;
    }
    tlen = (size_t)(sp2 - sp1 - 1);
    if (tlen == 0 || sp1[1] != '/')
        return 400;
    for (i = 1; i <= tlen; i++) {
        if (sp1[i] < 0x21 || sp1[i] > 0x7e)
            return 400;
    }
    /* Whatever evhttp would not parse is malformed here already.  evhttp
     * parses the target with EVHTTP_URI_NONCONFORMANT, which takes any
     * "/..." of visible bytes (no scheme, no authority, and path, query and
     * fragment are anything up to '?', '#' or the end) and fails only on an
     * authority: a target starting with "//".  So only those are parsed
     * here, sparing every other request two allocations and a parse
     * (test_http1's test_target_parse checks the two agree). */
    if (sp1[2] == '/') {
        target = strndup(sp1 + 1, tlen);
        if (target == NULL)
            return 400;
        uri = evhttp_uri_parse_with_flags(target, EVHTTP_URI_NONCONFORMANT);
        free(target);
        if (uri == NULL)
            return 400;
        evhttp_uri_free(uri);
    }
    h->target = sp1 + 1;
    h->target_len = tlen;
    for (m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
        if (strlen(methods[m]) == mlen && memcmp(s, methods[m], mlen) == 0)
            break;
    }
    if (m == sizeof(methods) / sizeof(methods[0])) {
        *why = "this method is not implemented";
        return 501;
    }
    h->method = methods[m];
    h->head = strcmp(methods[m], "HEAD") == 0;
    return 0;
}

int
http1_field(const char *s, size_t n, http1_head_t *h, const char **why)
{
    const char *colon = memchr(s, ':', n), *v;
    size_t name_len, vlen, i;

    *why = "malformed header field";
    if (colon == NULL || colon == s)
        return 400;             /* also obs-fold: a line that starts with a space */
    name_len = (size_t)(colon - s);
    for (i = 0; i < name_len; i++) {
        if (!is_tchar((unsigned char)s[i]))
            return 400;
    }
    v = colon + 1;
    vlen = n - name_len - 1;
    for (i = 0; i < vlen; i++) {
        if (!is_vchar((unsigned char)v[i]))
            return 400;
    }
    /* evhttp skips only the spaces before a value: "Expect:<TAB>100-continue"
     * would pass here and get evhttp's own (HTML) 417, and "Connection:<TAB>
     * close" would not close.  Tab before a value is legal (OWS) but no
     * client sends it: refuse it rather than read it unlike evhttp. */
    *why = "a tab before a header field's value";
    for (i = 0; i < vlen && (v[i] == ' ' || v[i] == '\t'); i++) {
        if (v[i] == '\t')
            return 400;
    }
    *why = "malformed header field";
    if (h == NULL)
        return 0;               /* a trailer field: checked, then dropped */
    trim(&v, &vlen);
    if (ieq(s, name_len, "Content-Length")) {
        int64_t len = 0;

        *why = "malformed Content-Length";
        if (h->content_length >= 0 || vlen == 0)
            return 400;
        for (i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9')
                return 400;
            if (len > (INT64_MAX - 9) / 10) {
                *why = "the body is too large";
                return 413;
            }
            len = len * 10 + (v[i] - '0');
        }
        h->content_length = len;
    } else if (ieq(s, name_len, "Transfer-Encoding")) {
        *why = "only the chunked transfer coding is implemented";
        if (h->chunked || !ieq(v, vlen, "chunked"))
            return 501;
        h->chunked = 1;
    } else if (ieq(s, name_len, "Expect") && h->minor >= 1) {
        *why = "only Expect: 100-continue is supported";
        if (!ieq(v, vlen, "100-continue"))
            return 417;
        h->expect_continue = 1;
    }
    return 0;
}

int
http1_head(const char *p, size_t n, http1_head_t *h, const char **why)
{
    size_t off = 0;
    const char *line = p;
    ssize_t len = http1_next_line(p, n, &off, &line);
    int status = http1_request_line(line, (size_t)len, h, why);

    if (status != 0)
        return status;
    while ((len = http1_next_line(p, n, &off, &line)) > 0) {
        status = http1_field(line, (size_t)len, h, why);
        if (status != 0)
            return status;
    }
    if (h->chunked && h->content_length >= 0) {
        *why = "Content-Length and Transfer-Encoding together";
        return 400;
    }
    if (h->head && (h->chunked || h->content_length > 0)) {
        *why = "a HEAD request has no body";
        return 400;
    }
    return 0;
}
