/*
 * Unit tests of worker/validate.c: the checks of POST /checkout in SPEC.md's
 * order, the Idempotency-Key forms, and the fingerprint's normalisation.
 * Body cases are data: tests/unit/validate_cases.txt.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/conf.h"
#include "worker/validate.h"

static conf_t *conf;

static int
setup(void **state)
{
    char err[256];

    (void)state;
    conf = conf_load(NULL, err, sizeof(err));
    return conf == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    (void)state;
    conf_free(conf);
    return 0;
}

static int
key(const char *value, char *out, validate_error_t *e)
{
    const char *values[1] = { value };
    return validate_idempotency_key(values, 1, out, e);
}

static void
test_idempotency_key(void **state)
{
    char k[VALIDATE_KEY_MAX + 1], big[300];
    validate_error_t e;
    const char *two[2] = { "a", "b" };

    (void)state;
    assert_int_equal(validate_idempotency_key(NULL, 0, k, &e), -1);
    assert_string_equal(e.code, "idempotency_key_missing");
    assert_int_equal(e.status, 400);
    assert_int_equal(validate_idempotency_key(two, 2, k, &e), -1);
    assert_string_equal(e.code, "idempotency_key_invalid");

    assert_int_equal(key("8e03978e-40d5", k, &e), 0);
    assert_string_equal(k, "8e03978e-40d5");
    assert_int_equal(key("\"8e03978e-40d5\"", k, &e), 0);
    assert_string_equal(k, "8e03978e-40d5");          /* the same key */
    assert_int_equal(key("\"a\\\"b\\\\c\"", k, &e), 0);
    assert_string_equal(k, "a\"b\\c");
    assert_int_equal(key("!~", k, &e), 0);

    static const char *const bad[] = {
        "", "\"\"", "a b", "tab\there", "caf\xc3\xa9", "\"unterminated", "\"a\"b\"",
        "\"bad\\escape\"", "\"a b\"", "\x7f",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(key(bad[i], k, &e), -1);
        assert_string_equal(e.code, "idempotency_key_invalid");
    }
    memset(big, 'k', 255);
    big[255] = '\0';
    assert_int_equal(key(big, k, &e), 0);
    big[255] = 'k';
    big[256] = '\0';
    assert_int_equal(key(big, k, &e), -1);
}

static void
test_content_type(void **state)
{
    validate_error_t e;

    (void)state;
    assert_int_equal(validate_content_type("application/json", &e), 0);
    assert_int_equal(validate_content_type("Application/JSON", &e), 0);
    assert_int_equal(validate_content_type("application/json; charset=utf-8", &e), 0);
    assert_int_equal(validate_content_type("application/json;charset=\"UTF-8\"", &e), 0);
    assert_int_equal(validate_content_type(NULL, &e), -1);
    assert_int_equal(e.status, 415);
    assert_string_equal(e.code, "unsupported_media_type");
    assert_int_equal(validate_content_type("text/plain", &e), -1);
    assert_int_equal(validate_content_type("application/jsonx", &e), -1);
    assert_int_equal(validate_content_type("application/json; charset=latin1", &e), -1);
    assert_int_equal(validate_content_type("application/json; boundary=x", &e), -1);
}

/* tests/unit/validate_cases.txt: "status code field|-  body" per line. */
static void
test_body_cases(void **state)
{
    char path[512], line[2048];
    const char *srcdir = getenv("srcdir");
    FILE *f;
    int n = 0;

    (void)state;
    snprintf(path, sizeof(path), "%s/tests/unit/validate_cases.txt", srcdir ? srcdir : ".");
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        int status, off = 0;
        char code[64], field[64];
        validate_checkout_t out;
        validate_error_t e;
        const char *body;
        int rc;

        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0')
            continue;
        assert_int_equal(sscanf(line, "%d %63s %63s %n", &status, code, field, &off), 3);
        body = line + off;
        rc = validate_checkout_body(body, strlen(body), conf, &out, &e);
        n++;
        if (status == 0) {
            if (rc != 0)
                fail_msg("line %d: %s: want ok, got %d %s %s (%s)", n, body, e.status, e.code,
                         e.field, e.message);
            continue;
        }
        if (rc == 0)
            fail_msg("line %d: %s: want %d %s, got ok", n, body, status, code);
        if (e.status != status || strcmp(e.code, code) != 0
            || strcmp(e.field, strcmp(field, "-") == 0 ? "" : field) != 0)
            fail_msg("line %d: %s: want %d %s %s, got %d %s %s", n, body, status, code, field,
                     e.status, e.code, e.field);
    }
    fclose(f);
    assert_true(n > 30);
}

static void
test_body_too_large(void **state)
{
    size_t len = (size_t)conf->max_body_size + 1;
    char *body = malloc(len);
    validate_checkout_t out;
    validate_error_t e;

    (void)state;
    memset(body, ' ', len);
    assert_int_equal(validate_checkout_body(body, len, conf, &out, &e), -1);
    assert_int_equal(e.status, 413);
    assert_string_equal(e.code, "payload_too_large");
    free(body);
}

/* Found by tests/fuzz/fuzz_checkout_body: json-c clamps an integer beyond
 * int64 to INT64_MAX, which a conf with max_amount_cents = INT64_MAX (its
 * table allows it) accepted: 18446744073709551615 became an order of
 * 9223372036854775807 cents. */
static void
test_regress_amount_beyond_int64_not_clamped(void **state)
{
    static const char *const beyond[] = {
        "9223372036854775808", "18446744073709551615", "99999999999999999999999",
    };
    conf_t *wide;
    validate_checkout_t out;
    validate_error_t e;
    char body[256], err[256];
    int n;

    (void)state;
    setenv("PAYMENTSD_MAX_AMOUNT_CENTS", "9223372036854775807", 1);
    wide = conf_load(NULL, err, sizeof(err));
    unsetenv("PAYMENTSD_MAX_AMOUNT_CENTS");
    assert_non_null(wide);
    for (size_t i = 0; i < sizeof(beyond) / sizeof(beyond[0]); i++) {
        n = snprintf(body, sizeof(body), "{\"buyer_id\":\"b\",\"seller_id\":\"s\","
                     "\"amount_cents\":%s,\"currency\":\"EUR\"}", beyond[i]);
        assert_int_equal(validate_checkout_body(body, (size_t)n, wide, &out, &e), -1);
        assert_int_equal(e.status, 422);
        assert_string_equal(e.field, "amount_cents");
    }
    n = snprintf(body, sizeof(body), "{\"buyer_id\":\"b\",\"seller_id\":\"s\","
                 "\"amount_cents\":9223372036854775807,\"currency\":\"EUR\"}");
    assert_int_equal(validate_checkout_body(body, (size_t)n, wide, &out, &e), 0);
    assert_true(out.amount_cents == INT64_MAX);
    conf_free(wide);
}

static void
test_nul_byte_is_invalid_json(void **state)
{
    static const char body[] = "{\"buyer_id\":\"b\"}\0garbage";
    validate_checkout_t out;
    validate_error_t e;

    (void)state;
    assert_int_equal(validate_checkout_body(body, sizeof(body) - 1, conf, &out, &e), -1);
    assert_string_equal(e.code, "invalid_json");
}

static const char *
fp(const char *body)
{
    static validate_checkout_t out;
    validate_error_t e;

    if (validate_checkout_body(body, strlen(body), conf, &out, &e) != 0)
        fail_msg("%s: %s", body, e.message);
    return out.fingerprint;
}

static void
test_fingerprint_normalised(void **state)
{
    char a[65];

    (void)state;
    snprintf(a, sizeof(a), "%s",
             fp("{\"buyer_id\":\"b1\",\"seller_id\":\"s1\",\"amount_cents\":5000,\"currency\":"
                "\"EUR\"}"));
    assert_int_equal(strlen(a), 64);
    /* order, whitespace and an explicit default do not change it */
    assert_string_equal(a, fp(" { \"currency\" : \"EUR\", \"amount_cents\":5000,\n"
                              "\"seller_id\":\"s1\", \"buyer_id\":\"b1\" } "));
    assert_string_equal(a, fp("{\"buyer_id\":\"b1\",\"seller_id\":\"s1\",\"amount_cents\":5000,"
                              "\"currency\":\"EUR\",\"buyer_trust\":\"untrusted\"}"));
    /* every field does */
    assert_string_not_equal(a, fp("{\"buyer_id\":\"b1\",\"seller_id\":\"s1\",\"amount_cents\":5001,"
                                  "\"currency\":\"EUR\"}"));
    assert_string_not_equal(a, fp("{\"buyer_id\":\"b2\",\"seller_id\":\"s1\",\"amount_cents\":5000,"
                                  "\"currency\":\"EUR\"}"));
    assert_string_not_equal(a, fp("{\"buyer_id\":\"b1\",\"seller_id\":\"s2\",\"amount_cents\":5000,"
                                  "\"currency\":\"EUR\"}"));
    assert_string_not_equal(a, fp("{\"buyer_id\":\"b1\",\"seller_id\":\"s1\",\"amount_cents\":5000,"
                                  "\"currency\":\"USD\"}"));
    assert_string_not_equal(a, fp("{\"buyer_id\":\"b1\",\"seller_id\":\"s1\",\"amount_cents\":5000,"
                                  "\"currency\":\"EUR\",\"buyer_trust\":\"trusted\"}"));
    /* no ambiguity by concatenation */
    snprintf(
        a, sizeof(a), "%s",
        fp("{\"buyer_id\":\"ab\",\"seller_id\":\"c\",\"amount_cents\":1,\"currency\":\"EUR\"}"));
    assert_string_not_equal(
        a, fp("{\"buyer_id\":\"a\",\"seller_id\":\"bc\",\"amount_cents\":1,\"currency\":\"EUR\"}"));
}

static void
test_uuid(void **state)
{
    (void)state;
    assert_true(validate_uuid("9237c6f5-c980-4f3a-ad9d-1560172de162"));
    assert_true(validate_uuid("9237C6F5-C980-4F3A-AD9D-1560172DE162"));
    assert_false(validate_uuid("9237c6f5c9804f3aad9d1560172de162"));
    assert_false(validate_uuid("9237c6f5-c980-4f3a-ad9d-1560172de16"));
    assert_false(validate_uuid("9237c6f5-c980-4f3a-ad9d-1560172de16g"));
    assert_false(validate_uuid(""));
}

#define EV_ORDER "\"order_id\":\"9237c6f5-c980-4f3a-ad9d-1560172de162\""

/* The body of POST /webhooks/provider, once its signature is good. */
static void
test_webhook_event(void **state)
{
    static const struct {
        const char *body;
        int status;             /* 0: accepted */
        const char *field;
    } cases[] = {
        { "{\"event_id\":\"evt-1\"," EV_ORDER ",\"outcome\":\"PAID\"}", 0, "" },
        { "{\"outcome\":\"FAILED\",\"extra\":[1]," EV_ORDER ",\"event_id\":\"e\"}", 0, "" },
        { "{\"event_id\":\"evt-1\"," EV_ORDER ",\"outcome\":\"PAID\"", 400, "" },
        { "[]", 400, "" },
        { "{\"event_id\":\"e\",\"event_id\":\"f\"," EV_ORDER ",\"outcome\":\"PAID\"}", 400, "" },
        { "{" EV_ORDER ",\"outcome\":\"PAID\"}", 422, "event_id" },
        { "{\"event_id\":\"\"," EV_ORDER ",\"outcome\":\"PAID\"}", 422, "event_id" },
        { "{\"event_id\":\"a\\u0000b\"," EV_ORDER ",\"outcome\":\"PAID\"}", 422, "event_id" },
        { "{\"event_id\":1," EV_ORDER ",\"outcome\":\"PAID\"}", 422, "event_id" },
        { "{\"event_id\":\"e\",\"order_id\":\"o-1\",\"outcome\":\"PAID\"}", 422, "order_id" },
        { "{\"event_id\":\"e\"," EV_ORDER ",\"outcome\":\"paid\"}", 422, "outcome" },
        { "{\"event_id\":\"e\"," EV_ORDER ",\"outcome\":\"PAIDX\"}", 422, "outcome" },
        { "{\"event_id\":\"e\"," EV_ORDER "}", 422, "outcome" },
    };
    validate_webhook_event_t ev;
    validate_error_t e;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = validate_webhook_event(cases[i].body, strlen(cases[i].body), &ev, &e);

        if (cases[i].status == 0 ? rc != 0
            : rc != -1 || e.status != cases[i].status || strcmp(e.field, cases[i].field) != 0)
            fail_msg("case %zu %s: rc %d, status %d, field \"%s\"", i, cases[i].body, rc,
                     rc == 0 ? 0 : e.status, rc == 0 ? "" : e.field);
    }
    {
        static const char body[] = "{\"event_id\":\"evt-9\"," EV_ORDER ",\"outcome\":\"FAILED\"}";
        assert_int_equal(validate_webhook_event(body, sizeof(body) - 1, &ev, &e), 0);
    }
    assert_string_equal(ev.event_id, "evt-9");
    assert_string_equal(ev.order_id, "9237c6f5-c980-4f3a-ad9d-1560172de162");
    assert_int_equal(ev.paid, 0);
}

/* The tokener is kept between bodies (one per process), but what a body
 * means must not depend on the bodies before it: json_tokener_reset leaves
 * a pending UTF-16 high surrogate behind, so after a body cut off right
 * after "\uD83D" a lone low surrogate read as the pair's second half
 * (U+1F600 instead of U+FFFD), also after a good body in between. */
static void
test_regress_tokener_state_between_bodies(void **state)
{
    static const char lone_low[] = "{\"event_id\":\"\\uDE00\"," EV_ORDER ",\"outcome\":\"PAID\"}";
    static const char cut[] = "{\"event_id\":\"\\uD83D";
    static const char good[] = "{\"event_id\":\"x\"," EV_ORDER ",\"outcome\":\"PAID\"}";
    validate_webhook_event_t ev;
    validate_error_t e;

    (void)state;
    assert_int_equal(validate_webhook_event(lone_low, sizeof(lone_low) - 1, &ev, &e), 0);
    assert_string_equal(ev.event_id, "\xef\xbf\xbd");        /* U+FFFD */
    assert_int_equal(validate_webhook_event(cut, sizeof(cut) - 1, &ev, &e), -1);
    assert_int_equal(e.status, 400);
    assert_int_equal(validate_webhook_event(good, sizeof(good) - 1, &ev, &e), 0);
    assert_int_equal(validate_webhook_event(lone_low, sizeof(lone_low) - 1, &ev, &e), 0);
    assert_string_equal(ev.event_id, "\xef\xbf\xbd");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idempotency_key),
        cmocka_unit_test(test_content_type),
        cmocka_unit_test(test_body_cases),
        cmocka_unit_test(test_body_too_large),
        cmocka_unit_test(test_regress_amount_beyond_int64_not_clamped),
        cmocka_unit_test(test_nul_byte_is_invalid_json),
        cmocka_unit_test(test_fingerprint_normalised),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_webhook_event),
        cmocka_unit_test(test_regress_tokener_state_between_bodies),
    };

    return cmocka_run_group_tests_name("validate", tests, setup, teardown);
}
