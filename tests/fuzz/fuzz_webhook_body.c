/*
 * fuzz_webhook_body: the body of POST /webhooks/provider through
 * validate_webhook_event() (worker/validate.c), as webhook_handle() hands
 * it over once the signature is good: the bytes and their length.
 *
 * Properties: an accepted event has an event_id of 1..255 bytes, a UUID
 * order_id, and comes from a body without a NUL byte (webhook_handle
 * stores the body as text); it parses again to the same event.  A refused
 * one is 400 invalid_json or 422 validation_failed.
 */
#include "config.h"

#include "tests/fuzz/fuzz.h"
#include "worker/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = fuzz_bytes(data, size);
    validate_webhook_event_t a, b;
    validate_error_t e;
    size_t n;

    memset(&e, 0, sizeof(e));
    if (validate_webhook_event(body, size, &a, &e) == 0) {
        n = strlen(a.event_id);
        FUZZ_ASSERT(n >= 1 && n <= VALIDATE_EVENT_ID_MAX);
        FUZZ_ASSERT(validate_uuid(a.order_id));
        FUZZ_ASSERT(a.paid == 0 || a.paid == 1);
        FUZZ_ASSERT(memchr(body, '\0', size) == NULL);
        FUZZ_ASSERT(validate_webhook_event(body, size, &b, &e) == 0);
        FUZZ_ASSERT(memcmp(&a, &b, sizeof(a)) == 0);
    } else {
        FUZZ_ASSERT(e.code != NULL);
        FUZZ_ASSERT((e.status == 400 && strcmp(e.code, "invalid_json") == 0)
                    || (e.status == 422 && strcmp(e.code, "validation_failed") == 0));
    }
    free(body);
    return 0;
}
