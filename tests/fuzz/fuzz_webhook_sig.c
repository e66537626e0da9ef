/*
 * fuzz_webhook_sig: the Standard Webhooks headers and their verification
 * (common/whsig.c), as webhook_handle() calls it.  Input lines: webhook-id,
 * webhook-timestamp, webhook-signature, then the raw body (the rest, an
 * exact-size copy).  The keys are the specification's test vector and the
 * development secret; "now" is the vector's time, so its seed verifies.
 * The first line is also tried as a secret (whsig_key_parse).
 *
 * Properties: a verdict of OK means a listed v1 signature is the HMAC of
 * one key; what whsig_sign makes for these headers and body verifies, also
 * among other entries, and stops verifying when a byte of the body
 * changes or the time is outside the tolerance; a secret that parses is
 * the one canonical base64 spelling of its key, and signs what it
 * verifies.
 */
#include "config.h"

#include <inttypes.h>

#include <openssl/evp.h>

#include "common/whsig.h"
#include "tests/fuzz/fuzz.h"

#define NOW 1614265330
#define TOLERANCE 300

static whsig_key_t keys[2];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[128];

    (void)argc;
    (void)argv;
    if (whsig_key_parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &keys[0], err, sizeof(err)) < 0
        || whsig_key_parse("whsec_c2ltdWxhdG9yLXNlY3JldC1mb3ItZGV2ZWxvcG1lbnQ=", &keys[1], err,
                           sizeof(err)) < 0) {
        fprintf(stderr, "fuzz_webhook_sig: %s\n", err);
        exit(1);
    }
    return 0;
}

/* Whether the space-separated list holds the entry sig. */
static int
listed(const char *list, const char *sig)
{
    size_t n = strlen(sig);

    for (const char *p = list; (p = strstr(p, sig)) != NULL; p++) {
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return 1;
    }
    return 0;
}

/* What whsig_sign makes verifies, and only for these bytes and times. */
static void
check_signed(const whsig_key_t *key, size_t nkeys, const char *id, const char *body, size_t len)
{
    char sig[WHSIG_SIGNATURE_SIZE], ts[24], late[24], list[3 * WHSIG_SIGNATURE_SIZE];
    char *flipped;

    if (whsig_sign(key, id, NOW, body, len, sig) < 0)
        return;     /* an id that whsig_verify refuses too */
    FUZZ_ASSERT(strncmp(sig, "v1,", 3) == 0 && strlen(sig) == WHSIG_SIGNATURE_SIZE - 1);
    snprintf(ts, sizeof(ts), "%d", NOW);
    snprintf(late, sizeof(late), "%d", NOW + TOLERANCE + 1);
    FUZZ_ASSERT(whsig_verify(key, nkeys, id, ts, sig, body, len, NOW, TOLERANCE) == WHSIG_OK);
    snprintf(list, sizeof(list), "v2,abc v1,AAAA %s v1a,x", sig);
    FUZZ_ASSERT(whsig_verify(key, nkeys, id, ts, list, body, len, NOW, TOLERANCE) == WHSIG_OK);
    FUZZ_ASSERT(whsig_verify(key, nkeys, id, late, sig, body, len, NOW, TOLERANCE)
                == WHSIG_EXPIRED);
    if (len > 0) {
        flipped = fuzz_bytes((const uint8_t *)body, len);
        flipped[len / 2] ^= 0x01;
        FUZZ_ASSERT(whsig_verify(key, nkeys, id, ts, sig, flipped, len, NOW, TOLERANCE)
                    == WHSIG_MISMATCH);
        free(flipped);
    }
}

static void
check_secret(const char *secret, const char *body, size_t len)
{
    whsig_key_t key;
    char err[128];
    unsigned char *b64;

    if (whsig_key_parse(secret, &key, err, sizeof(err)) < 0)
        return;
    FUZZ_ASSERT(key.len >= 1 && key.len <= WHSIG_KEY_MAX);
    b64 = malloc(4 * ((key.len + 2) / 3) + 1);
    FUZZ_ASSERT(b64 != NULL);
    EVP_EncodeBlock(b64, key.bytes, (int)key.len);
    FUZZ_ASSERT(strncmp(secret, "whsec_", 6) == 0 && strcmp(secret + 6, (char *)b64) == 0);
    free(b64);
    check_signed(&key, 1, "msg_1", body, len);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *id = fuzz_line(&data, &size);
    char *ts = fuzz_line(&data, &size);
    char *sigs = fuzz_line(&data, &size);
    char *body = fuzz_bytes(data, size);
    char mac[WHSIG_SIGNATURE_SIZE];
    int64_t t;
    whsig_result_t r;

    r = whsig_verify(keys, 2, id, ts, sigs, body, size, NOW, TOLERANCE);
    FUZZ_ASSERT(r == WHSIG_OK || r == WHSIG_MALFORMED || r == WHSIG_EXPIRED
                || r == WHSIG_MISMATCH);
    if (r == WHSIG_OK) {
        t = strtoll(ts, NULL, 10);
        FUZZ_ASSERT(t >= NOW - TOLERANCE && t <= NOW + TOLERANCE);
        FUZZ_ASSERT((whsig_sign(&keys[0], id, t, body, size, mac) == 0 && listed(sigs, mac))
                    || (whsig_sign(&keys[1], id, t, body, size, mac) == 0 && listed(sigs, mac)));
    }
    check_signed(keys, 2, id, body, size);
    check_secret(id, body, size);

    free(body);
    free(sigs);
    free(ts);
    free(id);
    return 0;
}
