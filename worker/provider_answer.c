/*
 * provider_answer: reading the provider's answers.
 *
 * An answer is believed only when it is about the charge asked about: a
 * body naming another order or amount, a charge_id that is not 1..255
 * visible ASCII characters, or a status the call does not know is a
 * protocol error (PROVIDER_UNAVAILABLE).  Never a guess, never a truncated
 * id.  Bodies are parsed with their length, never as C strings: a NUL or
 * trailing bytes after the JSON value make the body not one to believe.
 *
 * Pure functions of their arguments: no state, no I/O.
 */
#include "config.h"

#include "worker/provider_answer.h"

#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#define CODE_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"

const char *
provider_outcome_name(provider_outcome_t o)
{
    switch (o) {
    case PROVIDER_SUCCEEDED: return "succeeded";
    case PROVIDER_DECLINED: return "declined";
    case PROVIDER_UNAVAILABLE: return "unavailable";
    case PROVIDER_PENDING: return "pending";
    case PROVIDER_NOT_FOUND: return "not_found";
    case PROVIDER_CANCELED: return "canceled";
    case PROVIDER_REFUNDED: return "refunded";
    }
    return "unknown";
}

/* The body as a JSON object, or NULL (empty, too long, not one JSON object
 * followed by nothing but white space).  The caller owns the result. */
static json_object *
body_object(const char *body, size_t len)
{
    json_tokener *tok;
    json_object *obj;

    if (len == 0 || len > PROVIDER_ANSWER_MAX || (tok = json_tokener_new()) == NULL)
        return NULL;
    obj = json_tokener_parse_ex(tok, body, (int)len);
    if (obj != NULL && json_tokener_get_error(tok) == json_tokener_success
        && json_object_is_type(obj, json_type_object)) {
        for (size_t end = json_tokener_get_parse_end(tok); end < len; end++) {
            if (strchr(" \t\r\n", body[end]) == NULL || body[end] == '\0') {
                json_object_put(obj);
                obj = NULL;
                break;
            }
        }
    } else {
        json_object_put(obj);
        obj = NULL;
    }
    json_tokener_free(tok);
    return obj;
}

/* A string member, or NULL when absent or not a string. */
static const char *
member_string(json_object *obj, const char *name)
{
    json_object *v;

    if (obj == NULL || !json_object_object_get_ex(obj, name, &v)
        || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* s, if it looks like a code, for our log: the provider's words go into
 * the log only then. */
static const char *
printable_code(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 32 || s[strspn(s, CODE_CHARS)] != '\0')
        return "(not a code)";
    return s;
}

/* The statuses each call believes. */
static const struct {
    const char *name;
    provider_outcome_t out;
    unsigned kinds;     /* 1 << provider_call_t */
} statuses[] = {
    { "succeeded", PROVIDER_SUCCEEDED, 1 << PROVIDER_CALL_CHARGE | 1 << PROVIDER_CALL_GET },
    { "declined", PROVIDER_DECLINED,
      1 << PROVIDER_CALL_CHARGE | 1 << PROVIDER_CALL_GET | 1 << PROVIDER_CALL_CANCEL },
    { "pending", PROVIDER_PENDING, 1 << PROVIDER_CALL_GET },
    { "canceled", PROVIDER_CANCELED, 1 << PROVIDER_CALL_GET | 1 << PROVIDER_CALL_CANCEL },
    { "refunded", PROVIDER_REFUNDED, 1 << PROVIDER_CALL_GET | 1 << PROVIDER_CALL_CANCEL },
    { "not_found", PROVIDER_NOT_FOUND, 1 << PROVIDER_CALL_CANCEL },
};

/* The outcome a status names for this kind of call, or UNAVAILABLE. */
static provider_outcome_t
status_outcome(provider_call_t kind, const char *status)
{
    for (size_t i = 0; status != NULL && i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        if (strcmp(status, statuses[i].name) == 0 && (statuses[i].kinds & (1u << kind)))
            return statuses[i].out;
    }
    return PROVIDER_UNAVAILABLE;
}

/* Whether v is the integer want: json-c clamps integers beyond int64 to
 * INT64_MAX (keeping a larger one as a uint64), which must not pass for an
 * amount of INT64_MAX. */
static int
int_is(json_object *v, int64_t want)
{
    return json_object_is_type(v, json_type_int) && json_object_get_int64(v) == want
        && json_object_get_uint64(v) <= (uint64_t)INT64_MAX;
}

/*
 * Whether an answer is about the call's charge: 0, or -1 with the reason.
 * A charge's answer must name the order and the amount (need_ids); other
 * answers are compared wherever they name them.  The currency is compared
 * when named.  refunded_cents, when named, must be the whole amount for a
 * refund and nothing otherwise: a partial refund is not one to record.
 */
static int
answer_about(const provider_ask_t *ask, json_object *obj, provider_outcome_t out, int need_ids,
             char *why, size_t len)
{
    json_object *v;
    const char *s;

    if (!json_object_object_get_ex(obj, "order_id", &v) || v == NULL) {
        if (need_ids) {
            snprintf(why, len, "no order_id");
            return -1;
        }
    } else if ((s = member_string(obj, "order_id")) == NULL || strcmp(s, ask->order_id) != 0) {
        snprintf(why, len, "the answer is about another order_id");
        return -1;
    }
    if (!json_object_object_get_ex(obj, "amount_cents", &v) || v == NULL) {
        if (need_ids) {
            snprintf(why, len, "no amount_cents");
            return -1;
        }
    } else if (!int_is(v, ask->amount_cents)) {
        snprintf(why, len, "amount_cents is not the order's %lld", (long long)ask->amount_cents);
        return -1;
    }
    if (json_object_object_get_ex(obj, "currency", &v) && v != NULL
        && ((s = member_string(obj, "currency")) == NULL || strcmp(s, ask->currency) != 0)) {
        snprintf(why, len, "currency is not the order's %s", ask->currency);
        return -1;
    }
    if (json_object_object_get_ex(obj, "refunded_cents", &v) && v != NULL
        && !int_is(v, out == PROVIDER_REFUNDED ? ask->amount_cents : 0)) {
        snprintf(why, len, "refunded_cents is not %lld for a %s charge",
                 (long long)(out == PROVIDER_REFUNDED ? ask->amount_cents : 0),
                 provider_outcome_name(out));
        return -1;
    }
    return 0;
}

/*
 * Take the answer's charge_id into charge_id: 0, or -1 with the reason.  A
 * charge_id is 1..PROVIDER_CHARGE_ID_MAX characters 0x21-0x7E, whole:
 * anything else (a longer id, UTF-8, control characters) is refused rather
 * than cut, since a cut id names no charge and may not even be valid text
 * for the database.  required: a succeeded charge must name its id.
 */
static int
take_charge_id(json_object *obj, int required, char *charge_id, char *why, size_t len)
{
    json_object *v;
    const char *s;
    int n;

    if (!json_object_object_get_ex(obj, "charge_id", &v) || v == NULL) {
        if (required)
            snprintf(why, len, "no charge_id for a succeeded charge");
        return required ? -1 : 0;
    }
    if (!json_object_is_type(v, json_type_string)) {
        snprintf(why, len, "charge_id is not a string");
        return -1;
    }
    s = json_object_get_string(v);
    n = json_object_get_string_len(v);
    if (n < 1 || n > PROVIDER_CHARGE_ID_MAX) {
        snprintf(why, len, "charge_id is %d bytes long, not 1..%d", n, PROVIDER_CHARGE_ID_MAX);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x21 || ch > 0x7e) {
            snprintf(why, len, "charge_id has byte 0x%02x at offset %d (only 0x21-0x7E)", ch, i);
            return -1;
        }
    }
    memcpy(charge_id, s, (size_t)n);
    charge_id[n] = '\0';
    return 0;
}

provider_outcome_t
provider_answer_parse(const provider_ask_t *ask, const char *body, size_t len,
                      char *charge_id, char *why, size_t whylen)
{
    json_object *obj = body_object(body, len);
    provider_outcome_t out;
    const char *status;

    charge_id[0] = '\0';
    if (obj == NULL) {
        snprintf(why, whylen, "the body is not a JSON object");
        return PROVIDER_UNAVAILABLE;
    }
    status = member_string(obj, "status");
    out = status_outcome(ask->kind, status);
    if (out == PROVIDER_UNAVAILABLE && status == NULL)
        snprintf(why, whylen, "no status");
    else if (out == PROVIDER_UNAVAILABLE)
        snprintf(why, whylen, "unknown status %s", printable_code(status));
    if (out != PROVIDER_UNAVAILABLE
        && (answer_about(ask, obj, out, ask->kind == PROVIDER_CALL_CHARGE, why, whylen) < 0
            || take_charge_id(obj, out == PROVIDER_SUCCEEDED, charge_id, why, whylen) < 0)) {
        charge_id[0] = '\0';
        out = PROVIDER_UNAVAILABLE;
    }
    json_object_put(obj);
    return out;
}

void
provider_answer_error_code(const char *body, size_t len, char *code, size_t size)
{
    json_object *obj = body_object(body, len), *err;
    const char *s = NULL;

    code[0] = '\0';
    if (obj != NULL && json_object_object_get_ex(obj, "error", &err))
        s = member_string(err, "code");
    if (s != NULL && s[0] != '\0' && s[strspn(s, CODE_CHARS)] == '\0' && strlen(s) < size)
        memcpy(code, s, strlen(s) + 1);
    json_object_put(obj);
}
