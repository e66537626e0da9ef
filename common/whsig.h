/*
 * whsig: Standard Webhooks signatures (HMAC-SHA256), shared by paymentsd,
 * which verifies them on POST /webhooks/provider, and provider-sim, which
 * signs its deliveries.
 *
 *   secret      "whsec_" + standard base64 (padded) of the key bytes
 *   signed      "{webhook-id}.{webhook-timestamp}.{raw body}"
 *   signature   "v1," + standard base64 (padded) of the HMAC-SHA256
 *   header      webhook-signature: a space-separated list of signatures
 *
 * No function keeps state between calls and none allocates memory itself
 * (OpenSSL allocates its MAC context per call); safe from any thread.
 */
#ifndef PD_WHSIG_H
#define PD_WHSIG_H

#include <stddef.h>
#include <stdint.h>

#define WHSIG_KEY_MAX 1024          /* longest accepted key, in bytes */
#define WHSIG_ID_MAX 255            /* longest accepted webhook-id */
#define WHSIG_TIMESTAMP_MAX 18      /* most digits in webhook-timestamp */
#define WHSIG_HEADER_MAX 4096       /* longest webhook-signature examined */
#define WHSIG_SIGNATURES_MAX 16     /* most list entries examined */
#define WHSIG_SIGNATURE_SIZE 48     /* "v1," + 44 base64 + NUL */

/*
 * A decoded key.  A plain value rather than an opaque handle so that callers
 * can keep an array of them (one per webhook_secret line) and verify without
 * allocating.
 */
typedef struct whsig_key {
    size_t len;
    unsigned char bytes[WHSIG_KEY_MAX];
} whsig_key_t;

typedef enum {
    WHSIG_OK = 0,
    WHSIG_MALFORMED,    /* a header is missing, empty or not in its syntax */
    WHSIG_EXPIRED,      /* timestamp further than the tolerance from now */
    WHSIG_MISMATCH      /* well formed, but no v1 signature matches a key */
} whsig_result_t;

/*
 * Decode secret ("whsec_" + padded standard base64 of 1..WHSIG_KEY_MAX bytes)
 * into *key.  Returns 0, or -1 with a message in err (which never repeats the
 * secret) and *key zeroed.
 */
int whsig_key_parse(const char *secret, whsig_key_t *key, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * Sign body (len bytes) sent as webhook id at timestamp (Unix seconds) and
 * write "v1,<base64>" with its NUL into out.  id must pass the same checks as
 * in whsig_verify.  Returns 0, or -1 for a bad id or timestamp or an OpenSSL
 * failure.
 */
int whsig_sign(const whsig_key_t *key, const char *id, int64_t timestamp,
               const void *body, size_t len, char out[WHSIG_SIGNATURE_SIZE])
    __attribute__((warn_unused_result));

/*
 * Verify a webhook from its three header values (NULL when absent) and raw
 * body against every key in keys[0..nkeys) (rotation: any key may match).
 * Checks, in order: header syntax (MALFORMED), |now - timestamp| <= tolerance
 * seconds (EXPIRED), then the signatures (OK or MISMATCH).  Entries of other
 * versions than v1 are ignored; a list with no well-formed v1 entry is
 * MALFORMED.  At most WHSIG_SIGNATURES_MAX entries are examined.  Signatures
 * are compared in constant time.  An OpenSSL failure fails closed (MISMATCH).
 */
whsig_result_t whsig_verify(const whsig_key_t *keys, size_t nkeys,
                            const char *id, const char *timestamp,
                            const char *signatures, const void *body, size_t len,
                            int64_t now, int64_t tolerance)
    __attribute__((warn_unused_result));

/* A static lower-case name of a result, for logs: "ok", "malformed", ... */
const char *whsig_result_name(whsig_result_t r);

#endif
