/*
 * validate: the checks of POST /checkout that need no I/O, in SPEC.md's
 * order, and of a webhook's body, as pure functions (unit-tested and
 * fuzzed without a server).
 *
 * Every failure is described by a validate_error_t: the HTTP status, the
 * error code, a message, and the field at fault (or NULL).
 */
#ifndef PD_VALIDATE_H
#define PD_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "common/conf.h"

#define VALIDATE_KEY_MAX 255
#define VALIDATE_ID_MAX 64

typedef struct {
    int status;
    const char *code;
    char message[160];
    char field[64];             /* "" when no single field is at fault */
} validate_error_t;

/* A validated, normalised checkout request. */
typedef struct {
    char buyer_id[VALIDATE_ID_MAX + 1];
    char seller_id[VALIDATE_ID_MAX + 1];
    int64_t amount_cents;
    char currency[4];
    char buyer_trust[10];       /* "trusted" or "untrusted" */
    char fingerprint[65];       /* lower-case hex SHA-256 of the fields */
} validate_checkout_t;

/*
 * The Idempotency-Key header: values holds every occurrence (count n).  On
 * success writes the key (the inner value when it was an RFC 8941 string)
 * into key (VALIDATE_KEY_MAX + 1 bytes) and returns 0; else -1 with err.
 */
int validate_idempotency_key(const char *const *values, size_t n, char *key,
                             validate_error_t *err) __attribute__((warn_unused_result));

/* Content-Type must be application/json, optionally with charset=utf-8. */
int validate_content_type(const char *value, validate_error_t *err)
    __attribute__((warn_unused_result));

/*
 * Parse and check the body (len bytes, not NUL-terminated): size against
 * conf->max_body_size, strict JSON object without duplicate members, the
 * field rules, and the fingerprint.  0, or -1 with err.
 */
int validate_checkout_body(const char *body, size_t len, const conf_t *conf,
                           validate_checkout_t *out, validate_error_t *err)
    __attribute__((warn_unused_result));

/*
 * Whether conf still accepts a body that passed validate_checkout_body under
 * another conf (a reload since): its length (len bytes), amount and currency
 * are all that the conf judges.  Non-zero when it does.
 */
int validate_checkout_accepted(const conf_t *conf, size_t len, int64_t amount_cents,
                               const char *currency);

/* A provider webhook's event, checked. */
#define VALIDATE_EVENT_ID_MAX 255

typedef struct {
    char event_id[VALIDATE_EVENT_ID_MAX + 1];
    char order_id[37];          /* a UUID */
    int paid;                   /* outcome: 1 PAID, 0 FAILED */
} validate_webhook_event_t;

/*
 * Parse and check a webhook body (len bytes, not NUL-terminated), once its
 * signature is known good: a strict JSON object (validate_json_object) with
 * event_id (1..255 characters), order_id (a UUID) and outcome ("PAID" or
 * "FAILED"); other members are ignored.  0, or -1 with err: 400
 * invalid_json, or 422 validation_failed naming the field.
 */
int validate_webhook_event(const char *body, size_t len, validate_webhook_event_t *out,
                           validate_error_t *err) __attribute__((warn_unused_result));

/* Non-zero when s is a UUID in its canonical 8-4-4-4-12 hex form. */
int validate_uuid(const char *s);

/*
 * Parse body as one strict JSON value that must be an object naming no
 * member twice.  Returns the object (caller puts it), or NULL with err set
 * to 400 invalid_json.  Shared with the webhook endpoint.
 */
struct json_object *validate_json_object(const char *body, size_t len, validate_error_t *err);

#endif
