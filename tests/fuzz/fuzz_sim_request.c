/*
 * fuzz_sim_request: what provider-sim reads from a client
 * (provider-sim/request.c).  Input lines: an Idempotency-Key value, a
 * request path under /v1/charges/, then the body (the rest, an exact-size
 * copy).
 *
 * Properties: an accepted key is 1..255 visible ASCII characters; an id
 * taken from the path is 1..255 bytes, none a control character; a body
 * accepted as JSON holds no NUL byte and parses again to the same value (as
 * written back by json-c: a NaN is not equal to itself); a charge request
 * accepted from it (sim_request_charge) names a whole order id of
 * 1..255 bytes without control characters, a positive amount and three
 * upper-case letters.
 */
#include "config.h"

#include "provider-sim/request.h"
#include "tests/fuzz/fuzz.h"

#define PREFIX "/v1/charges/"
#define SUFFIX "/cancel"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_charge(json_object *body)
{
    sim_charge_req_t c;
    const char *field = NULL, *message = NULL;
    json_object *v;
    size_t n;

    if (sim_request_charge(body, &c, &field, &message) < 0) {
        FUZZ_ASSERT(field != NULL && message != NULL);
        return;
    }
    n = strlen(c.order_id);
    FUZZ_ASSERT(n >= 1 && n <= SIM_REQUEST_ID_MAX);
    FUZZ_ASSERT(json_object_object_get_ex(body, "order_id", &v)
                && (size_t)json_object_get_string_len(v) == n);
    for (size_t i = 0; i < n; i++)
        FUZZ_ASSERT((unsigned char)c.order_id[i] >= 0x20 && c.order_id[i] != 0x7f);
    FUZZ_ASSERT(c.amount_cents >= 1);
    FUZZ_ASSERT(strlen(c.currency) == 3 && strspn(c.currency, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == 3);
}

static void
check_path(const char *path, size_t suffix_len)
{
    char *id = sim_request_path_id(path, strlen(PREFIX), suffix_len, SIM_REQUEST_ID_MAX);
    size_t n;

    if (id == NULL)
        return;
    n = strlen(id);
    FUZZ_ASSERT(n >= 1 && n <= SIM_REQUEST_ID_MAX);
    for (size_t i = 0; i < n; i++)
        FUZZ_ASSERT((unsigned char)id[i] >= 0x20 && id[i] != 0x7f);
    free(id);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *key = fuzz_line(&data, &size);
    char *path = fuzz_line(&data, &size);
    char *body = fuzz_bytes(data, size);
    json_object *a, *b;
    size_t n;

    if (sim_request_key_valid(key)) {
        n = strlen(key);
        FUZZ_ASSERT(n >= 1 && n <= SIM_REQUEST_KEY_MAX);
        for (size_t i = 0; i < n; i++)
            FUZZ_ASSERT(key[i] >= 0x21 && key[i] <= 0x7e);
    }
    check_path(path, 0);
    if (strlen(path) >= strlen(SUFFIX)
        && strcmp(path + strlen(path) - strlen(SUFFIX), SUFFIX) == 0)
        check_path(path, strlen(SUFFIX));

    a = sim_request_json(body, size);
    if (a != NULL) {
        FUZZ_ASSERT(memchr(body, '\0', size) == NULL);
        b = sim_request_json(body, size);
        FUZZ_ASSERT(b != NULL);
        FUZZ_ASSERT(strcmp(json_object_to_json_string(a), json_object_to_json_string(b)) == 0);
        json_object_put(b);
        if (json_object_is_type(a, json_type_object))
            check_charge(a);
    }
    json_object_put(a);
    free(body);
    free(path);
    free(key);
    return 0;
}
