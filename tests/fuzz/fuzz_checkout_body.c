/*
 * fuzz_checkout_body: the body of POST /checkout through
 * validate_checkout_body() (worker/validate.c), as checkout_handle() hands
 * it over: the buffer's bytes and their length, no terminating NUL.
 *
 * Each body is validated under the default conf and under a wide one
 * (max_amount_cents = INT64_MAX, the most its table allows).
 *
 * Properties: a verdict is one SPEC.md names; an accepted body gives fields
 * that keep the rules, validates again to the same request, and its
 * fields written back as canonical JSON (another order, no white space,
 * the default spelled out) give the same fingerprint.  What the default
 * conf accepts, the wide one accepts as the same request; the wide one
 * takes an amount of INT64_MAX only when the body says so (json-c clamps
 * larger integers to it).  And what replay.c relies on to take a body's
 * bytes again without parsing them: of a body that one conf accepted,
 * another judges only its length, amount and currency
 * (validate_checkout_accepted).
 */
#include "config.h"

#include <string.h>

#include "common/conf.h"
#include "tests/fuzz/fuzz.h"
#include "worker/validate.h"

static conf_t *conf, *wide;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];

    (void)argc;
    (void)argv;
    conf = conf_load(NULL, err, sizeof(err));       /* the defaults */
    setenv("PAYMENTSD_MAX_AMOUNT_CENTS", "9223372036854775807", 1);
    wide = conf != NULL ? conf_load(NULL, err, sizeof(err)) : NULL;
    unsetenv("PAYMENTSD_MAX_AMOUNT_CENTS");
    if (conf == NULL || wide == NULL) {
        fprintf(stderr, "fuzz_checkout_body: %s\n", err);
        exit(1);
    }
    return 0;
}

static int
id_ok(const char *s)
{
    size_t n = strlen(s);

    return n >= 1 && n <= VALIDATE_ID_MAX
        && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-") == n;
}

static void
check_accepted(const conf_t *cf, const char *body, size_t size, const validate_checkout_t *a)
{
    validate_checkout_t b;
    validate_error_t e;
    char canon[512];
    int n, known = 0;

    FUZZ_ASSERT(id_ok(a->buyer_id) && id_ok(a->seller_id));
    FUZZ_ASSERT(a->amount_cents >= 1 && a->amount_cents <= cf->max_amount_cents);
    for (size_t i = 0; i < cf->currencies.n; i++)
        known |= strcmp(a->currency, cf->currencies.items[i]) == 0;
    FUZZ_ASSERT(known);
    FUZZ_ASSERT(strcmp(a->buyer_trust, "trusted") == 0 || strcmp(a->buyer_trust, "untrusted") == 0);
    FUZZ_ASSERT(strlen(a->fingerprint) == 64
                && strspn(a->fingerprint, "0123456789abcdef") == 64);
    /* JSON text holds no NUL byte: the body is stored and logged as text. */
    FUZZ_ASSERT(memchr(body, '\0', size) == NULL);

    memset(&b, 0, sizeof(b));
    FUZZ_ASSERT(validate_checkout_body(body, size, cf, &b, &e) == 0);
    FUZZ_ASSERT(memcmp(a, &b, sizeof(b)) == 0);
    FUZZ_ASSERT(validate_checkout_accepted(cf, size, a->amount_cents, a->currency));

    n = snprintf(canon, sizeof(canon),
                 "{\"buyer_trust\":\"%s\",\"currency\":\"%s\",\"amount_cents\":%lld,"
                 "\"seller_id\":\"%s\",\"buyer_id\":\"%s\"}",
                 a->buyer_trust, a->currency, (long long)a->amount_cents, a->seller_id,
                 a->buyer_id);
    FUZZ_ASSERT(n > 0 && (size_t)n < sizeof(canon));
    memset(&b, 0, sizeof(b));
    FUZZ_ASSERT(validate_checkout_body(canon, (size_t)n, cf, &b, &e) == 0);
    FUZZ_ASSERT(strcmp(a->fingerprint, b.fingerprint) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = fuzz_bytes(data, size);
    validate_checkout_t req, req_wide;
    validate_error_t e;
    int wide_ok, conf_ok;

    memset(&e, 0, sizeof(e));
    memset(&req_wide, 0, sizeof(req_wide));
    wide_ok = validate_checkout_body(body, size, wide, &req_wide, &e) == 0;
    if (wide_ok) {
        check_accepted(wide, body, size, &req_wide);
        FUZZ_ASSERT(req_wide.amount_cents != INT64_MAX
                    || memmem(body, size, "9223372036854775807", 19) != NULL);
    }
    memset(&e, 0, sizeof(e));
    memset(&req, 0, sizeof(req));
    conf_ok = validate_checkout_body(body, size, conf, &req, &e) == 0;
    if (wide_ok)
        FUZZ_ASSERT(validate_checkout_accepted(conf, size, req_wide.amount_cents, req_wide.currency)
                    == conf_ok);
    if (conf_ok) {
        check_accepted(conf, body, size, &req);
        FUZZ_ASSERT(memcmp(&req, &req_wide, sizeof(req)) == 0);
    } else {
        FUZZ_ASSERT(e.code != NULL && memchr(e.message, '\0', sizeof(e.message)) != NULL);
        FUZZ_ASSERT((e.status == 400 && strcmp(e.code, "invalid_json") == 0)
                    || (e.status == 413 && strcmp(e.code, "payload_too_large") == 0)
                    || (e.status == 422 && strcmp(e.code, "validation_failed") == 0));
    }
    free(body);
    return 0;
}
