/*
 * fuzz_provider_answer: the provider's answers as worker/provider.c reads
 * them (worker/provider_answer.c).  The input's first byte picks the call
 * (charge, GET, cancel; the charge and GET answers are the ones a checkout
 * and a reconciliation believe), the rest is the body, an exact-size copy.
 * The call is about a fixed order, amount and currency.
 *
 * Properties: an outcome is one that kind of call can have; a believed
 * succeeded charge names a whole charge_id (1..255 visible ASCII), and
 * any charge_id handed over is whole; an answer not believed hands over
 * none and says why; a believed answer's amounts are exactly the order's
 * (json-c, which clamps larger integers to INT64_MAX, reads them for the
 * check); the same body gives the same reading.  An error
 * body's code is "" or a code.
 */
#include "config.h"

#include <json-c/json.h>

#include "tests/fuzz/fuzz.h"
#include "worker/provider_answer.h"

#define ORDER "3f1e5c1a-0000-4000-8000-000000000001"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
allowed(provider_call_t kind, provider_outcome_t out)
{
    switch (out) {
    case PROVIDER_UNAVAILABLE: case PROVIDER_DECLINED:
        return 1;
    case PROVIDER_SUCCEEDED:
        return kind != PROVIDER_CALL_CANCEL;
    case PROVIDER_PENDING:
        return kind == PROVIDER_CALL_GET;
    case PROVIDER_CANCELED: case PROVIDER_REFUNDED:
        return kind != PROVIDER_CALL_CHARGE;
    case PROVIDER_NOT_FOUND:
        return kind == PROVIDER_CALL_CANCEL;
    }
    return 0;
}

/* A member the answer names, if it does, is exactly want. */
static void
check_amount(json_object *obj, const char *name, int64_t want)
{
    json_object *v;

    if (json_object_object_get_ex(obj, name, &v) && v != NULL)
        FUZZ_ASSERT(json_object_get_int64(v) == want
                    && json_object_get_uint64(v) == (uint64_t)want);
}

static void
check_believed(const char *body, size_t len, const provider_ask_t *ask, provider_outcome_t out)
{
    json_tokener *tok = json_tokener_new();
    json_object *obj;

    FUZZ_ASSERT(tok != NULL);
    obj = json_tokener_parse_ex(tok, body, (int)len);
    FUZZ_ASSERT(json_object_is_type(obj, json_type_object));
    check_amount(obj, "amount_cents", ask->amount_cents);
    check_amount(obj, "refunded_cents", out == PROVIDER_REFUNDED ? ask->amount_cents : 0);
    json_object_put(obj);
    json_tokener_free(tok);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    provider_ask_t ask = { PROVIDER_CALL_CHARGE, ORDER, 2500, "EUR" };
    char id[PROVIDER_CHARGE_ID_MAX + 1], id2[PROVIDER_CHARGE_ID_MAX + 1], why[128], code[65];
    provider_outcome_t out;
    char *body;
    size_t n;

    if (size == 0)
        return 0;
    ask.kind = (provider_call_t)((data[0] & 0x7f) % 3);
    if (data[0] & 0x80)
        ask.amount_cents = INT64_MAX;
    body = fuzz_bytes(data + 1, size - 1);
    size--;

    why[0] = '\0';
    out = provider_answer_parse(&ask, body, size, id, why, sizeof(why));
    FUZZ_ASSERT(allowed(ask.kind, out));
    n = strlen(id);
    if (out == PROVIDER_UNAVAILABLE)
        FUZZ_ASSERT(n == 0 && why[0] != '\0');
    else
        check_believed(body, size, &ask, out);
    if (out == PROVIDER_SUCCEEDED)
        FUZZ_ASSERT(n >= 1);
    FUZZ_ASSERT(n <= PROVIDER_CHARGE_ID_MAX);
    for (size_t i = 0; i < n; i++)
        FUZZ_ASSERT(id[i] >= 0x21 && id[i] <= 0x7e);
    FUZZ_ASSERT(provider_answer_parse(&ask, body, size, id2, why, sizeof(why)) == out);
    FUZZ_ASSERT(strcmp(id, id2) == 0);

    provider_answer_error_code(body, size, code, sizeof(code));
    n = strlen(code);
    FUZZ_ASSERT(n < sizeof(code));
    FUZZ_ASSERT(strspn(code, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
                == n);
    free(body);
    return 0;
}
