/*
 * fuzz_checkout_headers: the request headers of POST /checkout that
 * worker/validate.c reads.  The input's first line is a Content-Type value
 * (validate_content_type); each further line, up to eight, one
 * Idempotency-Key header (validate_idempotency_key sees them all, as
 * checkout_handle() collects them).  Each value is its own heap string.
 *
 * Properties: only one header is ever accepted, and then the key is
 * 1..255 visible ASCII characters; the key names itself (sent again bare,
 * unless it begins with a quote) and its RFC 8941 quoted form names the
 * same key; an accepted Content-Type is application/json.
 */
#include "config.h"

#include <strings.h>

#include "tests/fuzz/fuzz.h"
#include "worker/validate.h"

#define KEYS_MAX 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_key(const char *value, const char *key)
{
    char again[VALIDATE_KEY_MAX + 1], quoted[2 * VALIDATE_KEY_MAX + 3];
    const char *one[1];
    validate_error_t e;
    size_t n = strlen(key), q = 0;

    FUZZ_ASSERT(n >= 1 && n <= VALIDATE_KEY_MAX);
    for (size_t i = 0; i < n; i++)
        FUZZ_ASSERT(key[i] >= 0x21 && key[i] <= 0x7e);
    if (value[0] != '"') {
        FUZZ_ASSERT(strcmp(value, key) == 0);
    } else {
        one[0] = key;
        if (key[0] != '"') {
            FUZZ_ASSERT(validate_idempotency_key(one, 1, again, &e) == 0);
            FUZZ_ASSERT(strcmp(again, key) == 0);
        }
    }
    quoted[q++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (key[i] == '"' || key[i] == '\\')
            quoted[q++] = '\\';
        quoted[q++] = key[i];
    }
    quoted[q++] = '"';
    quoted[q] = '\0';
    one[0] = quoted;
    FUZZ_ASSERT(validate_idempotency_key(one, 1, again, &e) == 0);
    FUZZ_ASSERT(strcmp(again, key) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *content_type = fuzz_line(&data, &size);
    char *values[KEYS_MAX], key[VALIDATE_KEY_MAX + 1];
    validate_error_t e;
    size_t n = 0;

    while (size > 0 && n < KEYS_MAX)
        values[n++] = fuzz_line(&data, &size);

    if (validate_content_type(content_type, &e) == 0)
        FUZZ_ASSERT(strncasecmp(content_type, "application/json", 16) == 0);
    else
        FUZZ_ASSERT(e.status == 415 && strcmp(e.code, "unsupported_media_type") == 0);

    memset(key, 0, sizeof(key));
    if (validate_idempotency_key((const char *const *)values, n, key, &e) == 0) {
        FUZZ_ASSERT(n == 1);
        check_key(values[0], key);
    } else {
        FUZZ_ASSERT(e.status == 400);
        FUZZ_ASSERT(strcmp(e.code, n == 0 ? "idempotency_key_missing"
                                          : "idempotency_key_invalid") == 0);
    }
    for (size_t i = 0; i < n; i++)
        free(values[i]);
    free(content_type);
    return 0;
}
