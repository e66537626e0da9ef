/*
 * validate: request checks for POST /checkout and, once its signature is
 * verified, for the body of POST /webhooks/provider.  Pure functions of
 * their arguments, so that unit tests and fuzzers (tests/fuzz) call them
 * without a server; what they keep between calls (a json-c tokener, the
 * SHA-256 method) is made once per process and reused, so callers stay on
 * one thread, as the worker's loop does.
 *
 * json-c parses strictly (RFC 8259, UTF-8 checked) but keeps the last of two
 * members with the same name; a payments API must not guess which amount was
 * meant, so the top level is counted separately and a duplicate is
 * invalid_json.  The fingerprint hashes the normalised fields with their
 * names and lengths, so no two different requests can collide by
 * concatenation.
 */
#include "config.h"

#include "worker/validate.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

static int
fail(validate_error_t *err, int status, const char *code, const char *field,
     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int
fail(validate_error_t *err, int status, const char *code, const char *field,
     const char *fmt, ...)
{
    va_list ap;

    err->status = status;
    err->code = code;
    snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return -1;
}

static int
visible_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return 0;
    }
    return 1;
}

int
validate_idempotency_key(const char *const *values, size_t n, char *key, validate_error_t *err)
{
    const char *v;
    size_t len, out = 0;

    if (n == 0)
        return fail(err, 400, "idempotency_key_missing", NULL,
                    "the Idempotency-Key header is required");
    if (n > 1)
        return fail(err, 400, "idempotency_key_invalid", NULL,
                    "send the Idempotency-Key header once");
    v = values[0];
    len = strlen(v);
    if (v[0] == '"') {
        if (len < 2 || v[len - 1] != '"')
            goto invalid;
        /* RFC 8941 sf-string: \" and \\ are the only escapes. */
        for (size_t i = 1; i < len - 1; i++) {
            char c = v[i];
            if (c == '\\') {
                if (i + 1 >= len - 1 || (v[i + 1] != '"' && v[i + 1] != '\\'))
                    goto invalid;
                c = v[++i];
            } else if (c == '"') {
                goto invalid;
            }
            if (out >= VALIDATE_KEY_MAX)
                goto invalid;
            key[out++] = c;
        }
    } else {
        if (len > VALIDATE_KEY_MAX)
            goto invalid;
        memcpy(key, v, len);
        out = len;
    }
    key[out] = '\0';
    if (out == 0 || !visible_ascii(key, out))
        goto invalid;
    return 0;
invalid:
    return fail(err, 400, "idempotency_key_invalid", NULL,
                "the Idempotency-Key must be 1..255 visible ASCII characters");
}

int
validate_content_type(const char *value, validate_error_t *err)
{
    const char *p = value;
    static const char media[] = "application/json";

    if (p == NULL || strncasecmp(p, media, sizeof(media) - 1) != 0)
        goto bad;
    p += sizeof(media) - 1;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0')
        return 0;
    if (*p++ != ';')
        goto bad;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncasecmp(p, "charset=", 8) != 0)
        goto bad;
    p += 8;
    if (strcasecmp(p, "utf-8") == 0 || strcasecmp(p, "\"utf-8\"") == 0
        || strcasecmp(p, "utf8") == 0)
        return 0;
bad:
    return fail(err, 415, "unsupported_media_type", NULL,
                "send the body as Content-Type: application/json");
}

/* Count the members of the top-level object in text that json-c has already
 * accepted as valid JSON: only strings and nesting need tracking.  Also tell
 * whether a member name holds \u0000, which json-c would cut the name at
 * (so "buyer_id\u0000x" would pass as buyer_id). */
static size_t
count_top_members(const char *s, size_t len, int *nul_in_name)
{
    size_t members = 0, depth = 0;
    int in_string = 0, in_name = 0, expect_name = 0, saw_value = 0;

    *nul_in_name = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\') {
                if (in_name && len - i > 5 && memcmp(s + i + 1, "u0000", 5) == 0)
                    *nul_in_name = 1;
                i++;
            } else if (c == '"') {
                in_string = in_name = 0;
            }
            continue;
        }
        switch (c) {
        case '"':
            in_string = 1;
            in_name = expect_name;
            expect_name = 0;
            if (depth == 1)
                saw_value = 1;
            break;
        case '{': case '[':
            depth++;
            expect_name = (c == '{' && depth == 1);
            break;
        case '}': case ']':
            depth--;
            break;
        case ',':
            if (depth == 1) {
                members++;
                expect_name = 1;
            }
            break;
        default:
            break;
        }
    }
    return saw_value ? members + 1 : 0;
}

/* json-c accepts NaN and Infinity even in strict mode; RFC 8259 does not.
 * A double keeps its source text, which tells the two apart from a real
 * number such as 1e999. */
static int
has_non_json_number(struct json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_double: {
        const char *s = json_object_get_string(v);
        if (*s == '-')
            s++;
        return !(*s >= '0' && *s <= '9');
    }
    case json_type_object: {
        json_object_object_foreach(v, name, member) {
            (void)name;
            if (has_non_json_number(member))
                return 1;
        }
        return 0;
    }
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            if (has_non_json_number(json_object_array_get_idx(v, i)))
                return 1;
        }
        return 0;
    default:
        return 0;
    }
}

struct json_object *
validate_json_object(const char *body, size_t len, validate_error_t *err)
{
    /* One tokener per process, reset for each body: making one (its
     * 64-level stack zeroed) cost about a tenth of a cached replay.  Only
     * after a body it parsed whole: json_tokener_reset leaves state behind
     * (a pending UTF-16 high surrogate, which would join a later body's lone
     * low surrogate), so after any other it is made anew. */
    static struct json_tokener *tok;
    struct json_object *obj = NULL;
    size_t members;
    int nul_in_name;

    if (tok == NULL && (tok = json_tokener_new_ex(64)) == NULL) {
        fail(err, 503, "service_unavailable", NULL, "out of memory");
        return NULL;
    }
    json_tokener_reset(tok);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    if (len > 0 && len <= INT32_MAX)
        obj = json_tokener_parse_ex(tok, body, (int)len);
    /* Everything must be consumed: no trailing bytes, no unfinished value. */
    if (obj == NULL || json_tokener_get_error(tok) != json_tokener_success
        || json_tokener_get_parse_end(tok) != len || has_non_json_number(obj)) {
        json_object_put(obj);
        json_tokener_free(tok);
        tok = NULL;
        fail(err, 400, "invalid_json", NULL, "the body is not valid JSON");
        return NULL;
    }
    if (!json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        fail(err, 400, "invalid_json", NULL, "the body must be a JSON object");
        return NULL;
    }
    members = count_top_members(body, len, &nul_in_name);
    if (nul_in_name) {
        json_object_put(obj);
        fail(err, 422, "validation_failed", NULL, "a member name contains \\u0000");
        return NULL;
    }
    if (members != (size_t)json_object_object_length(obj)) {
        json_object_put(obj);
        fail(err, 400, "invalid_json", NULL, "the body names a member more than once");
        return NULL;
    }
    return obj;
}

int
validate_uuid(const char *s)
{
    static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

    if (strlen(s) != sizeof(shape) - 1)
        return 0;
    for (size_t i = 0; shape[i] != '\0'; i++) {
        if (shape[i] == '-' ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

/* A string member: exact type, length 1..max, characters from allowed. */
static int
get_id(struct json_object *v, const char *name, const char *allowed, const char *shown,
       size_t min, size_t max, char *out, validate_error_t *err)
{
    const char *s;
    size_t n;

    if (!json_object_is_type(v, json_type_string))
        return fail(err, 422, "validation_failed", name, "%s must be a string", name);
    s = json_object_get_string(v);
    n = (size_t)json_object_get_string_len(v);
    if (n < min || n > max || strspn(s, allowed) != n) {
        if (min == max)
            return fail(err, 422, "validation_failed", name,
                        "%s must be %zu characters of [%s]", name, max, shown);
        return fail(err, 422, "validation_failed", name,
                    "%s must be %zu..%zu characters of [%s]", name, min, max, shown);
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

static const char ID_CHARS[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-";

/* SHA-256, fetched once per process: SHA256() fetches it from the default
 * provider on every call (OpenSSL 3), which cost more than the hash. */
static const EVP_MD *
sha256(void)
{
    static EVP_MD *md;

    if (md == NULL)
        md = EVP_MD_fetch(NULL, "SHA256", NULL);
    return md != NULL ? md : EVP_sha256();
}

static void
fingerprint(validate_checkout_t *c)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char buf[512];
    int n;

    /* Names and lengths make the encoding unambiguous. */
    n = snprintf(
        buf, sizeof(buf),
        "v1\nbuyer_id:%zu:%s\nseller_id:%zu:%s\namount_cents:%lld\ncurrency:%s\nbuyer_trust:%s\n",
        strlen(c->buyer_id), c->buyer_id, strlen(c->seller_id), c->seller_id,
        (long long)c->amount_cents, c->currency, c->buyer_trust);
    if (!EVP_Digest(buf, (size_t)n, md, &mdlen, sha256(), NULL) || mdlen != 32) {
        /* EVP_Digest fails only out of memory: the one-shot way again. */
        SHA256((const unsigned char *)buf, (size_t)n, md);
        mdlen = 32;
    }
    for (unsigned int i = 0; i < mdlen; i++) {
        c->fingerprint[2 * i] = hex[md[i] >> 4];
        c->fingerprint[2 * i + 1] = hex[md[i] & 15];
    }
    c->fingerprint[2 * mdlen] = '\0';
}

static int
amount_accepted(const conf_t *conf, int64_t amount_cents)
{
    return amount_cents >= 1 && amount_cents <= conf->max_amount_cents;
}

static int
currency_accepted(const conf_t *conf, const char *currency)
{
    for (size_t i = 0; i < conf->currencies.n; i++) {
        if (strcmp(currency, conf->currencies.items[i]) == 0)
            return 1;
    }
    return 0;
}

int
validate_checkout_accepted(const conf_t *conf, size_t len, int64_t amount_cents,
                           const char *currency)
{
    return (int64_t)len <= conf->max_body_size && amount_accepted(conf, amount_cents)
           && currency_accepted(conf, currency);
}

int
validate_checkout_body(const char *body, size_t len, const conf_t *conf,
                       validate_checkout_t *out, validate_error_t *err)
{
    static const char *const fields[] = {
        "buyer_id", "seller_id", "amount_cents", "currency", "buyer_trust"
    };
    struct json_object *obj, *v;
    int rc = -1;

    if ((int64_t)len > conf->max_body_size)
        return fail(err, 413, "payload_too_large", NULL,
                    "the body is larger than %lld bytes", (long long)conf->max_body_size);
    obj = validate_json_object(body, len, err);
    if (obj == NULL)
        return -1;
    memset(out, 0, sizeof(*out));

    json_object_object_foreach(obj, name, value) {
        size_t i;
        (void)value;
        for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
            if (strcmp(name, fields[i]) == 0)
                break;
        }
        if (i == sizeof(fields) / sizeof(fields[0])) {
            fail(err, 422, "validation_failed", name, "unknown field %.64s", name);
            goto done;
        }
    }
    /* In the order of SPEC.md's table, so the first fault is reported. */
    for (size_t i = 0; i < 4; i++) {
        if (!json_object_object_get_ex(obj, fields[i], &v)) {
            fail(err, 422, "validation_failed", fields[i], "%s is required", fields[i]);
            goto done;
        }
    }
    json_object_object_get_ex(obj, "buyer_id", &v);
    if (get_id(v, "buyer_id", ID_CHARS, "A-Za-z0-9_.:-", 1, VALIDATE_ID_MAX, out->buyer_id,
               err) < 0)
        goto done;
    json_object_object_get_ex(obj, "seller_id", &v);
    if (get_id(v, "seller_id", ID_CHARS, "A-Za-z0-9_.:-", 1, VALIDATE_ID_MAX, out->seller_id,
               err) < 0)
        goto done;

    json_object_object_get_ex(obj, "amount_cents", &v);
    if (!json_object_is_type(v, json_type_int)) {
        fail(err, 422, "validation_failed", "amount_cents", "amount_cents must be an integer");
        goto done;
    }
    out->amount_cents = json_object_get_int64(v);
    /* json-c clamps integers beyond int64 to its limits, so INT64_MAX may
     * stand for a larger number (kept as a uint64): out of range even when
     * max_amount_cents is INT64_MAX, never taken as another amount. */
    if (!amount_accepted(conf, out->amount_cents)
        || json_object_get_uint64(v) > (uint64_t)INT64_MAX) {
        fail(err, 422, "validation_failed", "amount_cents",
             "amount_cents must be from 1 to %lld", (long long)conf->max_amount_cents);
        goto done;
    }

    json_object_object_get_ex(obj, "currency", &v);
    if (get_id(v, "currency", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "A-Z", 3, 3, out->currency, err) < 0)
        goto done;
    if (!currency_accepted(conf, out->currency)) {
        fail(err, 422, "validation_failed", "currency", "currency %s is not accepted",
             out->currency);
        goto done;
    }

    snprintf(out->buyer_trust, sizeof(out->buyer_trust), "untrusted");
    if (json_object_object_get_ex(obj, "buyer_trust", &v)) {
        const char *s = json_object_get_string(v);
        if (!json_object_is_type(v, json_type_string)
            || (strcmp(s, "trusted") != 0 && strcmp(s, "untrusted") != 0)
            || (size_t)json_object_get_string_len(v) != strlen(s)) {
            fail(err, 422, "validation_failed", "buyer_trust",
                 "buyer_trust must be \"trusted\" or \"untrusted\"");
            goto done;
        }
        snprintf(out->buyer_trust, sizeof(out->buyer_trust), "%s", s);
    }
    fingerprint(out);
    rc = 0;
done:
    json_object_put(obj);
    return rc;
}

/* A string member of a webhook event: present, a string, 1..max bytes
 * without a NUL; copied into out (max + 1 bytes). */
static int
event_string(struct json_object *obj, const char *name, size_t max, char *out,
             validate_error_t *err)
{
    struct json_object *v;
    size_t n;

    if (!json_object_object_get_ex(obj, name, &v) || !json_object_is_type(v, json_type_string))
        return fail(err, 422, "validation_failed", name, "%s must be a string", name);
    n = (size_t)json_object_get_string_len(v);
    if (n < 1 || n > max || strlen(json_object_get_string(v)) != n)
        return fail(err, 422, "validation_failed", name, "%s must be 1..%zu characters", name, max);
    memcpy(out, json_object_get_string(v), n + 1);
    return 0;
}

int
validate_webhook_event(const char *body, size_t len, validate_webhook_event_t *out,
                       validate_error_t *err)
{
    struct json_object *obj = validate_json_object(body, len, err);
    char outcome[7];
    int rc = -1;

    if (obj == NULL)
        return -1;
    memset(out, 0, sizeof(*out));
    if (event_string(obj, "event_id", VALIDATE_EVENT_ID_MAX, out->event_id, err) < 0
        || event_string(obj, "order_id", sizeof(out->order_id) - 1, out->order_id, err) < 0)
        goto done;
    if (!validate_uuid(out->order_id)) {
        fail(err, 422, "validation_failed", "order_id", "order_id must be a UUID");
        goto done;
    }
    if (event_string(obj, "outcome", sizeof(outcome) - 1, outcome, err) < 0)
        goto done;
    if (strcmp(outcome, "PAID") != 0 && strcmp(outcome, "FAILED") != 0) {
        fail(err, 422, "validation_failed", "outcome", "outcome must be PAID or FAILED");
        goto done;
    }
    out->paid = strcmp(outcome, "PAID") == 0;
    rc = 0;
done:
    json_object_put(obj);
    return rc;
}
