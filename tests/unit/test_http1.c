/*
 * Unit tests of worker/http1.c: which request heads front.c passes to
 * evhttp and with which status it refuses the others.  A table of heads
 * (C escapes: one string each) and what they must give.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <event2/http.h>

#include "worker/http1.h"

typedef struct {
    const char *head;
    int status;
} head_case_t;

static const head_case_t cases[] = {
    { "GET / HTTP/1.1\r\n\r\n", 0 },
    { "GET /healthz HTTP/1.0\n\n", 0 },                         /* bare LF lines */
    { "POST /checkout?x=1 HTTP/1.1\r\nContent-Length: 12\r\nX-A:\r\n\r\n", 0 },
    { "POST /c HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n", 0 },
    { "GET / HTTP/1.1\r\nX-Utf: caf\xc3\xa9\r\n\r\n", 0 },       /* obs-text */
    { "GET / HTTP/1.0\r\nExpect: whatever\r\n\r\n", 0 },        /* HTTP/1.0 ignores Expect */
    { "GARBAGE\r\n\r\n", 400 },
    { "GET /\r\n\r\n", 400 },
    { "GET  / HTTP/1.1\r\n\r\n", 400 },                         /* two spaces */
    { "GET / HTTP/1.1 \r\n\r\n", 400 },
    { "GET * HTTP/1.1\r\n\r\n", 400 },                          /* not origin-form */
    { "GET http://h/ HTTP/1.1\r\n\r\n", 400 },
    { "GET /a\x01 HTTP/1.1\r\n\r\n", 400 },
    { "G(T / HTTP/1.1\r\n\r\n", 400 },
    { "GET / HTTP/1.1x\r\n\r\n", 400 },
    { "GET / HTTP/3.0\r\n\r\n", 505 },
    { "GET / HTTP/0.9\r\n\r\n", 505 },
    { "PRI * HTTP/2.0\r\n\r\n", 505 },
    { "BREW / HTTP/1.1\r\n\r\n", 501 },
    { "TRACE / HTTP/1.1\r\n\r\n", 501 },
    { "get / HTTP/1.1\r\n\r\n", 501 },                          /* methods are case-sensitive */
    { "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400 },
    { "GET / HTTP/1.1\r\n: x\r\n\r\n", 400 },
    { "GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400 },
    { "GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400 },
    { "GET / HTTP/1.1\r\nX-A: 1\r2\r\n\r\n", 400 },             /* a bare CR */
    { "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400 },
    { "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400 },
    { "POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", 400 },
    { "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400 },
    { "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 413 },
    { "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400 },
    { "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501 },
    { "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501 },
    { "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", 0 },
    { "POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", 417 },
    /* regression: evhttp skips spaces, not tabs, before a value (an HTML 417) */
    { "POST / HTTP/1.1\r\nExpect:\t100-continue\r\nContent-Length: 2\r\n\r\n", 400 },
    { "GET / HTTP/1.1\r\nConnection: \tclose\r\n\r\n", 400 },
    { "GET / HTTP/1.1\r\nX-A: a\tb\t\r\n\r\n", 0 },           /* tabs inside and after: fine */
    { "HEAD / HTTP/1.1\r\nContent-Length: 1\r\n\r\n", 400 },
    { "HEAD / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 0 },
    { "HEAD / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400 },
};

static void
test_heads(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        http1_head_t h = { .minor = 1, .content_length = -1 };
        const char *why = NULL;
        int status = http1_head(cases[i].head, strlen(cases[i].head), &h, &why);

        if (status != cases[i].status)
            fail_msg("case %zu %s: got %d (%s), want %d", i, cases[i].head, status,
                     why ? why : "", cases[i].status);
        if (status != 0)
            assert_non_null(why);
    }
}

static void
test_framing(void **state)
{
    static const char chunked[] = "PUT /x%20y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                                  "Expect: 100-continue\r\n\r\n";
    static const char plain[] = "POST /c HTTP/1.0\r\nContent-Length: 0042\r\n\r\n";
    http1_head_t h = { .minor = 1, .content_length = -1 };
    const char *why;

    (void)state;
    assert_int_equal(http1_head(chunked, strlen(chunked), &h, &why), 0);
    assert_string_equal(h.method, "PUT");
    assert_int_equal(h.target_len, 6);
    assert_memory_equal(h.target, "/x%20y", 6);
    assert_true(h.chunked && h.expect_continue);
    assert_int_equal(h.content_length, -1);
    memset(&h, 0, sizeof(h));
    h.content_length = -1;
    assert_int_equal(http1_head(plain, strlen(plain), &h, &why), 0);
    assert_int_equal(h.minor, 0);
    assert_int_equal(h.content_length, 42);
    assert_false(h.chunked);
}

static void
test_request_id(void **state)
{
    static const char head[] = "GET / HTTP/1.1\r\nx-request-id:  lb:1-abc \r\n"
                               "X-Request-Id: has space\r\nX-Request-Id"; /* last line incomplete */
    char id[HTTP1_ID_MAX + 1] = "";
    char big[300];

    (void)state;
    http1_request_id(head, strlen(head), id);
    assert_string_equal(id, "lb:1-abc");    /* the invalid one after it is not kept */
    /* regression: the first X-Request-Id only, valid or not, as http.c
     * reads it: a refused request got the last valid one instead */
    id[0] = '\0';
    http1_request_id("X-Request-Id: a b\r\nX-Request-Id: second\r\n", 41, id);
    assert_string_equal(id, "");
    http1_request_id("X-Request-Id: first\r\nX-Request-Id: second\r\n", 43, id);
    assert_string_equal(id, "first");
    snprintf(big, sizeof(big), "X-Request-Id: %0129d\r\n", 0);
    id[0] = '\0';
    http1_request_id(big, strlen(big), id);
    assert_string_equal(id, "");            /* over 128 characters */
}

/* http1_request_line asks evhttp's parser only about targets that start
 * with "//": every other origin-form target of visible bytes must be one
 * evhttp parses too.  Both answers, over targets built from the bytes the
 * parser treats specially. */
static void
test_target_parse(void **state)
{
    static const char *const parts[] = {
        "/", "//", "a", ":", "@", "?", "#", "[", "]", "%", "%zz", "%41", "1", "::", "[::1]",
        "x:80", "x:y", "u@x", "!", "~", "\"", "{",
    };
    const size_t np = sizeof(parts) / sizeof(parts[0]);
    size_t tried = 0;

    (void)state;
    for (size_t a = 0; a < np; a++) {
        for (size_t b = 0; b < np; b++) {
            for (size_t c = 0; c < np; c++) {
                char target[64], line[128];
                http1_head_t h = { .minor = 1, .content_length = -1 };
                const char *why;
                struct evhttp_uri *uri;
                int ours, theirs;

                snprintf(target, sizeof(target), "/%s%s%s", parts[a], parts[b], parts[c]);
                snprintf(line, sizeof(line), "GET %s HTTP/1.1", target);
                ours = http1_request_line(line, strlen(line), &h, &why) == 0;
                uri = evhttp_uri_parse_with_flags(target, EVHTTP_URI_NONCONFORMANT);
                theirs = uri != NULL;
                if (uri != NULL)
                    evhttp_uri_free(uri);
                if (ours != theirs)
                    fail_msg("%s: http1 %d, evhttp %d", target, ours, theirs);
                tried++;
            }
        }
    }
    assert_int_equal(tried, np * np * np);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heads),
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_request_id),
        cmocka_unit_test(test_target_parse),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
