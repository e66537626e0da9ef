/*
 * provider_answer: the outcomes of a call to the payment provider, and what
 * its answers say, read from their bodies by pure functions (no I/O, no
 * state), so that the unit tests and the fuzzers (tests/fuzz) reach them
 * without a server.  worker/provider.c hands them each body it receives.
 */
#ifndef PD_PROVIDER_ANSWER_H
#define PD_PROVIDER_ANSWER_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    PROVIDER_SUCCEEDED,
    PROVIDER_DECLINED,
    PROVIDER_UNAVAILABLE,       /* no answer, or none to believe: the outcome is unknown */
    PROVIDER_PENDING,           /* provider_get_charge only: received, not settled yet */
    PROVIDER_NOT_FOUND,         /* get_charge, cancel: no charge was ever received */
    PROVIDER_CANCELED,          /* get_charge, cancel: never captured, and never will be */
    PROVIDER_REFUNDED           /* get_charge, cancel: captured, and the money given back */
} provider_outcome_t;

/* Longest charge_id the provider may send: a buffer of
 * PROVIDER_CHARGE_ID_MAX + 1 bytes holds any id a callback is given. */
#define PROVIDER_CHARGE_ID_MAX 255

/* Longest body read: a provider's answer is small. */
#define PROVIDER_ANSWER_MAX 4096

/* The calls: what an answer is for, and what an observer is told of. */
typedef enum { PROVIDER_CALL_CHARGE, PROVIDER_CALL_GET, PROVIDER_CALL_CANCEL } provider_call_t;

/* The call an answer is for: what the answer must be about. */
typedef struct {
    provider_call_t kind;
    const char *order_id;
    int64_t amount_cents;
    const char *currency;
} provider_ask_t;

/*
 * A 2xx answer's body (len bytes, not NUL-terminated) to the call ask: one
 * JSON object (white space may follow it) whose status is one this kind of
 * call knows, about ask's order, amount and currency, and with a whole
 * charge_id when it names one (a succeeded charge must).  Returns the
 * status's outcome with the charge_id copied into charge_id
 * (PROVIDER_CHARGE_ID_MAX + 1 bytes; "" when none), or PROVIDER_UNAVAILABLE
 * with the reason in why: an answer not to believe.
 */
provider_outcome_t provider_answer_parse(const provider_ask_t *ask, const char *body, size_t len,
                                         char *charge_id, char *why, size_t whylen);

/*
 * The error code of an error answer's body ({"error": {"code": "..."}}, len
 * bytes) into code (size bytes), when it is 1..size-1 characters of
 * [A-Za-z0-9_.-] (the provider's words go into our logs only then); else "".
 */
void provider_answer_error_code(const char *body, size_t len, char *code, size_t size);

/* Name of an outcome for logs and metrics: succeeded, declined, unavailable,
 * pending, not_found, canceled, refunded. */
const char *provider_outcome_name(provider_outcome_t o);

#endif
