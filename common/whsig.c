/*
 * whsig: Standard Webhooks signing and verification.
 *
 * Verification is written for hostile input: every header is bounded before
 * it is read (strnlen against its cap), at most WHSIG_SIGNATURES_MAX list
 * entries are examined, and candidates live in a fixed array on the stack,
 * so the work per call is bounded by the caps and the body length, and our
 * code allocates nothing.  Each key's MAC is computed once and compared with
 * every candidate using CRYPTO_memcmp.
 *
 * No state is kept between calls: safe from any thread, any process.
 */
#include "config.h"

#include "common/whsig.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#include <openssl/core_names.h>
#include <openssl/params.h>
#else
#include <openssl/hmac.h>
#endif

#define MAC_LEN 32                  /* HMAC-SHA256 */
#define B64_MAC_LEN 44              /* base64 of MAC_LEN bytes, padded */
#define SECRET_PREFIX "whsec_"
#define SECRET_PREFIX_LEN 6
/* base64 of WHSIG_KEY_MAX bytes: longer secrets are refused unread */
#define B64_KEY_MAX (((WHSIG_KEY_MAX + 2) / 3) * 4)

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* One piece of the signed content, which is fed to the MAC in parts so that
 * it never has to be copied into one buffer. */
typedef struct {
    const void *p;
    size_t n;
} span_t;

static int
b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/*
 * Strict decoder of padded standard base64: length a multiple of four, '='
 * only at the very end, no white space, unused bits zero (so each byte string
 * has exactly one spelling).  Writes at most cap bytes to out but returns the
 * full decoded length, so a caller can tell a wrong-length value from a
 * malformed one; -1 when malformed.
 */
static long
b64_decode(const char *s, size_t n, unsigned char *out, size_t cap)
{
    size_t o = 0;

    if (n == 0 || n % 4 != 0)
        return -1;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        uint32_t w;

        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)s[i + k];

            if (c == '=') {
                if (i + 4 != n || k < 2)
                    return -1;
                v[k] = 0;
                pad++;
            } else {
                if (pad > 0 || (v[k] = b64_value(c)) < 0)
                    return -1;
            }
        }
        if ((pad == 2 && (v[1] & 0x0f) != 0) || (pad == 1 && (v[2] & 0x03) != 0))
            return -1;
        w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        for (int b = 0; b < 3 - pad; b++, o++) {
            if (o < cap)
                out[o] = (unsigned char)(w >> (16 - 8 * b));
        }
    }
    return (long)o;
}

/* Padded standard base64 of in[0..n) into out (4 * ceil(n / 3) + 1 bytes). */
static void
b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i += 3) {
        size_t left = n - i;
        uint32_t w = (uint32_t)in[i] << 16;

        if (left > 1)
            w |= (uint32_t)in[i + 1] << 8;
        if (left > 2)
            w |= in[i + 2];
        out[o++] = b64_alphabet[(w >> 18) & 63];
        out[o++] = b64_alphabet[(w >> 12) & 63];
        out[o++] = left > 1 ? b64_alphabet[(w >> 6) & 63] : '=';
        out[o++] = left > 2 ? b64_alphabet[w & 63] : '=';
    }
    out[o] = '\0';
}

/*
 * The MAC, behind a tiny interface so that one context serves every key of a
 * call.  OpenSSL 3 deprecates HMAC_CTX in favour of EVP_MAC; 1.1 (which
 * configure still accepts) has only the former.
 */
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
typedef struct {
    EVP_MAC *mac;
    EVP_MAC_CTX *ctx;
} mac_t;

static int
mac_open(mac_t *m)
{
    m->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    m->ctx = m->mac != NULL ? EVP_MAC_CTX_new(m->mac) : NULL;
    return m->ctx != NULL ? 0 : -1;
}

static int
mac_run(mac_t *m, const whsig_key_t *key, const span_t *spans, size_t nspans,
        unsigned char out[MAC_LEN])
{
    OSSL_PARAM params[2];
    size_t outlen = 0;

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_init(m->ctx, key->bytes, key->len, params) != 1)
        return -1;
    for (size_t i = 0; i < nspans; i++) {
        if (spans[i].n > 0 && EVP_MAC_update(m->ctx, spans[i].p, spans[i].n) != 1)
            return -1;
    }
    if (EVP_MAC_final(m->ctx, out, &outlen, MAC_LEN) != 1 || outlen != MAC_LEN)
        return -1;
    return 0;
}

static void
mac_close(mac_t *m)
{
    EVP_MAC_CTX_free(m->ctx);
    EVP_MAC_free(m->mac);
}
#else
typedef struct {
    HMAC_CTX *ctx;
} mac_t;

static int
mac_open(mac_t *m)
{
    m->ctx = HMAC_CTX_new();
    return m->ctx != NULL ? 0 : -1;
}

static int
mac_run(mac_t *m, const whsig_key_t *key, const span_t *spans, size_t nspans,
        unsigned char out[MAC_LEN])
{
    unsigned int outlen = 0;

    if (HMAC_Init_ex(m->ctx, key->bytes, (int)key->len, EVP_sha256(), NULL) != 1)
        return -1;
    for (size_t i = 0; i < nspans; i++) {
        if (spans[i].n > 0 && HMAC_Update(m->ctx, spans[i].p, spans[i].n) != 1)
            return -1;
    }
    if (HMAC_Final(m->ctx, out, &outlen) != 1 || outlen != MAC_LEN)
        return -1;
    return 0;
}

static void
mac_close(mac_t *m)
{
    HMAC_CTX_free(m->ctx);
}
#endif

int
whsig_key_parse(const char *secret, whsig_key_t *key, char *err, size_t errlen)
{
    const char *b64;
    size_t n;
    long len;

    memset(key, 0, sizeof(*key));
    if (secret == NULL || strncmp(secret, SECRET_PREFIX, SECRET_PREFIX_LEN) != 0) {
        snprintf(err, errlen, "webhook secret must start with \"" SECRET_PREFIX "\"");
        return -1;
    }
    b64 = secret + SECRET_PREFIX_LEN;
    n = strnlen(b64, B64_KEY_MAX + 1);
    if (n > B64_KEY_MAX) {
        snprintf(err, errlen, "webhook secret is longer than %d bytes", WHSIG_KEY_MAX);
        return -1;
    }
    if (n == 0) {
        snprintf(err, errlen, "webhook secret has an empty key");
        return -1;
    }
    len = b64_decode(b64, n, key->bytes, sizeof(key->bytes));
    if (len <= 0 || len > WHSIG_KEY_MAX) {
        OPENSSL_cleanse(key, sizeof(*key));
        if (len > WHSIG_KEY_MAX)
            snprintf(err, errlen, "webhook secret is longer than %d bytes", WHSIG_KEY_MAX);
        else
            snprintf(err, errlen, "webhook secret is not \"" SECRET_PREFIX "\" + padded base64");
        return -1;
    }
    key->len = (size_t)len;
    return 0;
}

/* 1..WHSIG_ID_MAX bytes, none of them a control character; sets *len. */
static int
id_valid(const char *id, size_t *len)
{
    size_t n;

    if (id == NULL)
        return 0;
    n = strnlen(id, WHSIG_ID_MAX + 1);
    if (n == 0 || n > WHSIG_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    *len = n;
    return 1;
}

/* 1..WHSIG_TIMESTAMP_MAX decimal digits, nothing else (so no sign, no
 * space); 18 digits cannot overflow an int64_t. */
static int
timestamp_parse(const char *s, int64_t *ts, size_t *len)
{
    int64_t v = 0;
    size_t n;

    if (s == NULL)
        return -1;
    n = strnlen(s, WHSIG_TIMESTAMP_MAX + 1);
    if (n == 0 || n > WHSIG_TIMESTAMP_MAX)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *ts = v;
    *len = n;
    return 0;
}

int
whsig_sign(const whsig_key_t *key, const char *id, int64_t timestamp,
           const void *body, size_t len, char out[WHSIG_SIGNATURE_SIZE])
{
    char ts[24];
    unsigned char mac[MAC_LEN];
    span_t spans[5];
    size_t idlen;
    mac_t m;
    int rc;

    out[0] = '\0';
    if (key->len == 0 || key->len > WHSIG_KEY_MAX || !id_valid(id, &idlen) || timestamp < 0)
        return -1;
    snprintf(ts, sizeof(ts), "%" PRId64, timestamp);
    spans[0] = (span_t){ id, idlen };
    spans[1] = (span_t){ ".", 1 };
    spans[2] = (span_t){ ts, strlen(ts) };
    spans[3] = (span_t){ ".", 1 };
    spans[4] = (span_t){ body, len };
    rc = mac_open(&m);
    if (rc == 0)
        rc = mac_run(&m, key, spans, 5, mac);
    mac_close(&m);
    if (rc < 0)
        return -1;
    memcpy(out, "v1,", 3);
    b64_encode(mac, MAC_LEN, out + 3);
    return 0;
}

/*
 * Collect the v1 candidates of a webhook-signature header.  Returns the
 * number of well-formed v1 entries (of any decoded length), or -1 when the
 * header is missing, empty or too long; the ones of the MAC's length are
 * copied to cand[0..*ncand).
 */
static int
signatures_parse(const char *header, unsigned char cand[][MAC_LEN], size_t *ncand)
{
    const char *p = header;
    int nv1 = 0;

    *ncand = 0;
    if (header == NULL)
        return -1;
    {
        size_t n = strnlen(header, WHSIG_HEADER_MAX + 1);
        if (n == 0 || n > WHSIG_HEADER_MAX)
            return -1;
    }
    for (int examined = 0; examined < WHSIG_SIGNATURES_MAX; examined++) {
        const char *entry, *comma;
        size_t elen;
        unsigned char buf[MAC_LEN];
        long dlen;

        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        entry = p;
        elen = strcspn(p, " ");
        p += elen;
        comma = memchr(entry, ',', elen);
        /* Other versions (v1a, v2...) are for other verifiers: skip them. */
        if (comma == NULL || comma - entry != 2 || memcmp(entry, "v1", 2) != 0)
            continue;
        dlen = b64_decode(comma + 1, elen - 3, buf, sizeof(buf));
        if (dlen < 0)
            continue;
        nv1++;
        /* A wrong-length candidate can never match: counted, not compared. */
        if (dlen == MAC_LEN)
            memcpy(cand[(*ncand)++], buf, MAC_LEN);
    }
    return nv1;
}

whsig_result_t
whsig_verify(const whsig_key_t *keys, size_t nkeys,
             const char *id, const char *timestamp,
             const char *signatures, const void *body, size_t len,
             int64_t now, int64_t tolerance)
{
    unsigned char cand[WHSIG_SIGNATURES_MAX][MAC_LEN], mac[MAC_LEN];
    size_t idlen, tslen, ncand;
    int64_t ts;
    uint64_t distance;
    span_t spans[5];
    mac_t m;
    int match = 0;

    if (!id_valid(id, &idlen) || timestamp_parse(timestamp, &ts, &tslen) < 0
        || signatures_parse(signatures, cand, &ncand) <= 0)
        return WHSIG_MALFORMED;

    /* Unsigned arithmetic: the true distance always fits, whatever now is. */
    distance = ts >= now ? (uint64_t)ts - (uint64_t)now : (uint64_t)now - (uint64_t)ts;
    if (tolerance < 0 || distance > (uint64_t)tolerance)
        return WHSIG_EXPIRED;

    if (ncand == 0 || nkeys == 0)
        return WHSIG_MISMATCH;
    spans[0] = (span_t){ id, idlen };
    spans[1] = (span_t){ ".", 1 };
    spans[2] = (span_t){ timestamp, tslen };
    spans[3] = (span_t){ ".", 1 };
    spans[4] = (span_t){ body, len };
    if (mac_open(&m) < 0) {
        mac_close(&m);
        return WHSIG_MISMATCH;
    }
    for (size_t k = 0; k < nkeys; k++) {
        if (keys[k].len == 0 || keys[k].len > WHSIG_KEY_MAX)
            continue;
        if (mac_run(&m, &keys[k], spans, 5, mac) < 0)
            break;
        /* No early exit: the time taken does not depend on which matched. */
        for (size_t c = 0; c < ncand; c++)
            match |= CRYPTO_memcmp(mac, cand[c], MAC_LEN) == 0;
    }
    mac_close(&m);
    OPENSSL_cleanse(mac, sizeof(mac));
    return match ? WHSIG_OK : WHSIG_MISMATCH;
}

const char *
whsig_result_name(whsig_result_t r)
{
    switch (r) {
    case WHSIG_OK: return "ok";
    case WHSIG_MALFORMED: return "malformed";
    case WHSIG_EXPIRED: return "expired";
    case WHSIG_MISMATCH: return "mismatch";
    }
    return "unknown";
}
