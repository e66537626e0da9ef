/*
 * Unit tests of Standard Webhooks signing and verification (common/whsig.c):
 * the specification's published vector, tampering, key rotation, signature
 * lists, malformed headers, the tolerance window in both directions, and
 * seeded garbage in every header, which must never crash nor verify.
 *
 * Documented choices the tests pin down:
 *   - a list holding only other versions ("v1a,...") is MALFORMED: there is
 *     no v1 entry to check, the same as an unreadable header;
 *   - a v1 entry that is valid base64 of the wrong length is a MISMATCH;
 *   - only the first WHSIG_SIGNATURES_MAX entries are examined.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/whsig.h"

/* The vector published with the Standard Webhooks specification. */
#define V_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define V_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define V_TS "1614265330"
#define V_NOW 1614265330
#define V_BODY "{\"test\": 2432232314}"
#define V_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
/* Another key, and a well-formed signature that matches nothing. */
#define OTHER_SECRET "whsec_c2ltdWxhdG9yLXNlY3JldC1mb3ItZGV2ZWxvcG1lbnQ="
#define WRONG_SIG "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
#define TOL 300

static whsig_key_t vkey, okey;

static void
parse_key(const char *secret, whsig_key_t *key)
{
    char err[256] = "";

    if (whsig_key_parse(secret, key, err, sizeof(err)) < 0)
        fail_msg("cannot parse %s: %s", secret, err);
}

static int
setup_keys(void **state)
{
    (void)state;
    parse_key(V_SECRET, &vkey);
    parse_key(OTHER_SECRET, &okey);
    return 0;
}

/* ---- keys ---- */

typedef struct {
    const char *secret;
    long len;               /* decoded length, or -1: must be refused */
} key_case_t;

static char *
secret_of_len(size_t n)
{
    /* n bytes of 0xff: base64 "////..." with the right padding */
    size_t b64 = (n + 2) / 3 * 4;
    char *s = malloc(6 + b64 + 1);

    assert_non_null(s);
    memcpy(s, "whsec_", 6);
    for (size_t i = 0; i < b64; i++)
        s[6 + i] = '/';
    if (n % 3 == 1)
        memcpy(s + 6 + b64 - 3, "w==", 3);
    else if (n % 3 == 2)
        memcpy(s + 6 + b64 - 2, "8=", 2);
    s[6 + b64] = '\0';
    return s;
}

static void
test_key_parse(void **state)
{
    static const key_case_t cases[] = {
        { V_SECRET, 24 },
        { OTHER_SECRET, 32 },
        { "whsec_AA==", 1 },
        { "whsec_AAA=", 2 },
        { "whsec_", -1 },                                   /* empty key */
        { "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", -1 },          /* no prefix */
        { "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", -1 },
        { "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", -1 },     /* length not 4k */
        { "whsec_MfKQ9r8GKYqrTwjU PD8ILPZIo2LaLaSw", -1 },   /* space */
        { "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa-w", -1 },    /* url alphabet */
        { "whsec_AB==", -1 },                               /* unused bits set */
        { "whsec_AAB=", -1 },
        { "whsec_A===", -1 },
        { "whsec_====", -1 },
        { "whsec_=AAA", -1 },
        { "whsec_AA=A", -1 },
        { "whsec_AA==AAAA", -1 },                           /* padding inside */
        { "whsec_AA", -1 },                                 /* unpadded */
    };
    whsig_key_t key;
    char err[256];
    char *max = secret_of_len(WHSIG_KEY_MAX), *over = secret_of_len(WHSIG_KEY_MAX + 1);

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = whsig_key_parse(cases[i].secret, &key, err, sizeof(err));

        if (cases[i].len < 0 && rc == 0)
            fail_msg("key %s: accepted, should be refused", cases[i].secret);
        if (cases[i].len >= 0 && (rc < 0 || key.len != (size_t)cases[i].len))
            fail_msg("key %s: rc %d len %zu, want len %ld", cases[i].secret, rc, key.len,
                     cases[i].len);
        if (rc < 0)
            assert_int_equal(key.len, 0);
    }
    assert_int_equal(whsig_key_parse(max, &key, err, sizeof(err)), 0);
    assert_int_equal(key.len, WHSIG_KEY_MAX);
    assert_int_equal(key.bytes[WHSIG_KEY_MAX - 1], 0xff);
    assert_int_equal(whsig_key_parse(over, &key, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "longer than"));
    assert_int_equal(whsig_key_parse(NULL, &key, err, sizeof(err)), -1);
    free(max);
    free(over);
}

/* ---- signing ---- */

static void
test_sign_vector(void **state)
{
    char sig[WHSIG_SIGNATURE_SIZE];

    (void)state;
    assert_int_equal(whsig_sign(&vkey, V_ID, V_NOW, V_BODY, strlen(V_BODY), sig), 0);
    assert_string_equal(sig, V_SIG);
}

static void
test_sign_refuses(void **state)
{
    char sig[WHSIG_SIGNATURE_SIZE], id[WHSIG_ID_MAX + 2];
    whsig_key_t empty;

    (void)state;
    memset(&empty, 0, sizeof(empty));
    memset(id, 'a', sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0';                   /* 256 characters */
    assert_int_equal(whsig_sign(&vkey, id, V_NOW, "", 0, sig), -1);
    assert_string_equal(sig, "");
    assert_int_equal(whsig_sign(&vkey, "", V_NOW, "", 0, sig), -1);
    assert_int_equal(whsig_sign(&vkey, "a\nb", V_NOW, "", 0, sig), -1);
    assert_int_equal(whsig_sign(&vkey, V_ID, -1, "", 0, sig), -1);
    assert_int_equal(whsig_sign(&empty, V_ID, V_NOW, "", 0, sig), -1);
    id[WHSIG_ID_MAX] = '\0';                     /* 255 is fine */
    assert_int_equal(whsig_sign(&vkey, id, V_NOW, "", 0, sig), 0);
}

/* Whatever is signed verifies, for bodies of every length up to 200 and
 * keys of 1 and WHSIG_KEY_MAX bytes. */
static void
test_sign_verify_roundtrip(void **state)
{
    char body[200], sig[WHSIG_SIGNATURE_SIZE], ts[24];
    whsig_key_t keys[2];
    char *big = secret_of_len(WHSIG_KEY_MAX);

    (void)state;
    parse_key("whsec_AA==", &keys[0]);
    parse_key(big, &keys[1]);
    free(big);
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (char)(i * 7 + 1);
    snprintf(ts, sizeof(ts), "%d", V_NOW);
    for (size_t k = 0; k < 2; k++) {
        for (size_t n = 0; n <= sizeof(body); n++) {
            assert_int_equal(whsig_sign(&keys[k], "evt-1", V_NOW, body, n, sig), 0);
            assert_int_equal(whsig_verify(&keys[k], 1, "evt-1", ts, sig, body, n, V_NOW, TOL),
                             WHSIG_OK);
            assert_int_equal(whsig_verify(&keys[1 - k], 1, "evt-1", ts, sig, body, n, V_NOW, TOL),
                             WHSIG_MISMATCH);
        }
    }
}

/* ---- verification, table-driven ---- */

typedef struct {
    const char *name;
    int keyset;             /* 0: vector key, 1: other key, 2: other then vector, 3: none */
    const char *id, *ts, *sig, *body;
    int64_t now;
    whsig_result_t want;
} verify_case_t;

static const verify_case_t verify_cases[] = {
    { "published vector", 0, V_ID, V_TS, V_SIG, V_BODY, V_NOW, WHSIG_OK },
    { "tampered body", 0, V_ID, V_TS, V_SIG, "{\"test\": 2432232315}", V_NOW, WHSIG_MISMATCH },
    { "body with a trailing newline", 0, V_ID, V_TS, V_SIG, V_BODY "\n", V_NOW, WHSIG_MISMATCH },
    { "tampered id", 0, "msg_p5jXN8AQM9LWM0D4loKWxJel", V_TS, V_SIG, V_BODY, V_NOW,
      WHSIG_MISMATCH },
    { "tampered timestamp", 0, V_ID, "1614265331", V_SIG, V_BODY, V_NOW, WHSIG_MISMATCH },
    { "timestamp with a leading zero", 0, V_ID, "01614265330", V_SIG, V_BODY, V_NOW,
      WHSIG_MISMATCH },
    { "wrong secret", 1, V_ID, V_TS, V_SIG, V_BODY, V_NOW, WHSIG_MISMATCH },
    { "rotation: second key matches", 2, V_ID, V_TS, V_SIG, V_BODY, V_NOW, WHSIG_OK },
    { "no keys", 3, V_ID, V_TS, V_SIG, V_BODY, V_NOW, WHSIG_MISMATCH },
    { "later signature matches", 0, V_ID, V_TS, WRONG_SIG " v1,AAAA " V_SIG, V_BODY, V_NOW,
      WHSIG_OK },
    { "first of several matches", 0, V_ID, V_TS, V_SIG " " WRONG_SIG, V_BODY, V_NOW, WHSIG_OK },
    { "other versions skipped", 0, V_ID, V_TS, "v1a,abc v2,xyz " V_SIG, V_BODY, V_NOW, WHSIG_OK },
    { "runs of spaces", 0, V_ID, V_TS, "  " WRONG_SIG "    " V_SIG "  ", V_BODY, V_NOW, WHSIG_OK },
    { "bad base64 entry skipped", 0, V_ID, V_TS, "v1,!!!! " V_SIG, V_BODY, V_NOW, WHSIG_OK },
    { "none match", 0, V_ID, V_TS, WRONG_SIG " " WRONG_SIG, V_BODY, V_NOW, WHSIG_MISMATCH },
    { "wrong-length candidate", 0, V_ID, V_TS, "v1,AAAA", V_BODY, V_NOW, WHSIG_MISMATCH },
    /* a prefix of the right MAC, or the MAC with a byte more, is no match */
    { "truncated MAC, 30 bytes", 0, V_ID, V_TS, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ",
      V_BODY, V_NOW, WHSIG_MISMATCH },
    { "truncated MAC, 16 bytes", 0, V_ID, V_TS, "v1,g0hM9SsE+OTPJTGt/tmIKg==", V_BODY, V_NOW,
      WHSIG_MISMATCH },
    { "MAC with a byte more", 0, V_ID, V_TS, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OEA",
      V_BODY, V_NOW, WHSIG_MISMATCH },
    { "full MAC, then a truncated one", 0, V_ID, V_TS,
      V_SIG " v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ", V_BODY, V_NOW, WHSIG_OK },
    { "v1a only", 0, V_ID, V_TS, "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", V_BODY, V_NOW,
      WHSIG_MALFORMED },
    { "V1 upper case is another version", 0, V_ID, V_TS,
      "V1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", V_BODY, V_NOW, WHSIG_MALFORMED },
    { "empty signature header", 0, V_ID, V_TS, "", V_BODY, V_NOW, WHSIG_MALFORMED },
    { "spaces only", 0, V_ID, V_TS, "   ", V_BODY, V_NOW, WHSIG_MALFORMED },
    { "missing signature header", 0, V_ID, V_TS, NULL, V_BODY, V_NOW, WHSIG_MALFORMED },
    { "no comma", 0, V_ID, V_TS, "v1g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", V_BODY, V_NOW,
      WHSIG_MALFORMED },
    { "empty v1 value", 0, V_ID, V_TS, "v1,", V_BODY, V_NOW, WHSIG_MALFORMED },
    { "bad base64", 0, V_ID, V_TS, "v1,g0hM9SsE!OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", V_BODY, V_NOW,
      WHSIG_MALFORMED },
    { "unpadded base64", 0, V_ID, V_TS, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE", V_BODY,
      V_NOW, WHSIG_MALFORMED },
    { "non-canonical base64", 0, V_ID, V_TS,
      "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF=", V_BODY, V_NOW, WHSIG_MALFORMED },
    { "missing id", 0, NULL, V_TS, V_SIG, V_BODY, V_NOW, WHSIG_MALFORMED },
    { "empty id", 0, "", V_TS, V_SIG, V_BODY, V_NOW, WHSIG_MALFORMED },
    { "id with a newline", 0, "msg\n1", V_TS, V_SIG, V_BODY, V_NOW, WHSIG_MALFORMED },
    { "id with a tab", 0, "msg\t1", V_TS, V_SIG, V_BODY, V_NOW, WHSIG_MALFORMED },
    { "id with DEL", 0, "msg\x7f", V_TS, V_SIG, V_BODY, V_NOW, WHSIG_MALFORMED },
    { "missing timestamp", 0, V_ID, NULL, V_SIG, V_BODY, V_NOW, WHSIG_MALFORMED },
    { "empty timestamp", 0, V_ID, "", V_SIG, V_BODY, V_NOW, WHSIG_MALFORMED },
    { "non-digit timestamp", 0, V_ID, "16142653a0", V_SIG, V_BODY, V_NOW, WHSIG_MALFORMED },
    { "negative timestamp", 0, V_ID, "-1614265330", V_SIG, V_BODY, V_NOW, WHSIG_MALFORMED },
    { "signed timestamp", 0, V_ID, "+1614265330", V_SIG, V_BODY, V_NOW, WHSIG_MALFORMED },
    { "timestamp with space", 0, V_ID, " 1614265330", V_SIG, V_BODY, V_NOW, WHSIG_MALFORMED },
    { "fractional timestamp", 0, V_ID, "1614265330.5", V_SIG, V_BODY, V_NOW, WHSIG_MALFORMED },
    { "huge timestamp", 0, V_ID, "99999999999999999999999", V_SIG, V_BODY, V_NOW, WHSIG_MALFORMED },
    { "19-digit timestamp", 0, V_ID, "1000000000000000000", V_SIG, V_BODY, V_NOW, WHSIG_MALFORMED },
    /* 18 digits parse, and are then simply far in the future */
    { "18-digit timestamp", 0, V_ID, "999999999999999999", V_SIG, V_BODY, V_NOW, WHSIG_EXPIRED },
    { "at the tolerance, past", 0, V_ID, V_TS, V_SIG, V_BODY, V_NOW + TOL, WHSIG_OK },
    { "at the tolerance, future", 0, V_ID, V_TS, V_SIG, V_BODY, V_NOW - TOL, WHSIG_OK },
    { "too old", 0, V_ID, V_TS, V_SIG, V_BODY, V_NOW + TOL + 1, WHSIG_EXPIRED },
    { "too far in the future", 0, V_ID, V_TS, V_SIG, V_BODY, V_NOW - TOL - 1, WHSIG_EXPIRED },
    { "expired beats a bad signature", 0, V_ID, V_TS, WRONG_SIG, V_BODY, V_NOW + 3600,
      WHSIG_EXPIRED },
    { "expired beats a wrong key", 1, V_ID, V_TS, V_SIG, V_BODY, V_NOW - 3600, WHSIG_EXPIRED },
    { "expired beats no keys", 3, V_ID, V_TS, V_SIG, V_BODY, V_NOW + 3600, WHSIG_EXPIRED },
    { "malformed beats expired", 0, V_ID, V_TS, "v1,!", V_BODY, V_NOW + 3600, WHSIG_MALFORMED },
    { "now far from zero", 0, V_ID, V_TS, V_SIG, V_BODY, INT64_MIN, WHSIG_EXPIRED },
};

static whsig_result_t
verify_with(int keyset, const char *id, const char *ts, const char *sig,
            const char *body, int64_t now)
{
    whsig_key_t keys[2];
    size_t n = 0;

    switch (keyset) {
    case 0: keys[n++] = vkey; break;
    case 1: keys[n++] = okey; break;
    case 2: keys[n++] = okey; keys[n++] = vkey; break;
    default: break;
    }
    return whsig_verify(keys, n, id, ts, sig, body, body ? strlen(body) : 0, now, TOL);
}

static void
test_verify_table(void **state)
{
    int failures = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(verify_cases) / sizeof(verify_cases[0]); i++) {
        const verify_case_t *c = &verify_cases[i];
        whsig_result_t got = verify_with(c->keyset, c->id, c->ts, c->sig, c->body, c->now);

        if (got != c->want) {
            print_error("case \"%s\": got %s, want %s\n", c->name,
                        whsig_result_name(got), whsig_result_name(c->want));
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

/* Build a header of n entries, the last one being the good signature. */
static char *
list_with_match_at(int n)
{
    size_t each = strlen(WRONG_SIG) + 1;
    char *s = malloc((size_t)n * each + 1);

    assert_non_null(s);
    s[0] = '\0';
    for (int i = 0; i < n - 1; i++)
        strcat(strcat(s, WRONG_SIG), " ");
    strcat(s, V_SIG);
    return s;
}

static void
test_verify_caps(void **state)
{
    char *at_cap = list_with_match_at(WHSIG_SIGNATURES_MAX);
    char *past_cap = list_with_match_at(WHSIG_SIGNATURES_MAX + 1);
    char id[WHSIG_ID_MAX + 2], sig[WHSIG_SIGNATURE_SIZE], *longhdr;

    (void)state;
    assert_int_equal(verify_with(0, V_ID, V_TS, at_cap, V_BODY, V_NOW), WHSIG_OK);
    assert_int_equal(verify_with(0, V_ID, V_TS, past_cap, V_BODY, V_NOW), WHSIG_MISMATCH);
    free(at_cap);
    free(past_cap);

    /* a header longer than the cap is not read at all */
    longhdr = malloc(WHSIG_HEADER_MAX + 2);
    assert_non_null(longhdr);
    memset(longhdr, ' ', WHSIG_HEADER_MAX + 1);
    memcpy(longhdr, V_SIG, strlen(V_SIG));
    longhdr[WHSIG_HEADER_MAX + 1] = '\0';
    assert_int_equal(verify_with(0, V_ID, V_TS, longhdr, V_BODY, V_NOW), WHSIG_MALFORMED);
    longhdr[WHSIG_HEADER_MAX] = '\0';
    assert_int_equal(verify_with(0, V_ID, V_TS, longhdr, V_BODY, V_NOW), WHSIG_OK);
    free(longhdr);

    /* ids of 255 characters are fine, 256 are not */
    memset(id, 'i', sizeof(id) - 1);
    id[WHSIG_ID_MAX] = '\0';
    assert_int_equal(whsig_sign(&vkey, id, V_NOW, V_BODY, strlen(V_BODY), sig), 0);
    assert_int_equal(verify_with(0, id, V_TS, sig, V_BODY, V_NOW), WHSIG_OK);
    id[WHSIG_ID_MAX] = 'i';
    id[WHSIG_ID_MAX + 1] = '\0';
    assert_int_equal(verify_with(0, id, V_TS, sig, V_BODY, V_NOW), WHSIG_MALFORMED);
}

/* ---- garbage ---- */

static uint64_t rng = 0x5eed5eed5eed5eedULL;

static uint64_t
rng_next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* n random bytes, none NUL (a header value cannot hold one), NUL-ended. */
static void
garbage(char *buf, size_t n, const char *alphabet)
{
    size_t alen = alphabet ? strlen(alphabet) : 0;

    for (size_t i = 0; i < n; i++)
        buf[i] = alphabet ? alphabet[rng_next() % alen] : (char)(1 + rng_next() % 255);
    buf[n] = '\0';
}

/*
 * Every length 0..300 of random bytes in each header in turn (the other two
 * valid), then of random base64 after "v1,", then random bodies: never OK.
 * Run under ASan this also proves no header is read past its end.
 */
static void
test_garbage(void **state)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= ,";
    char buf[302], sig[310];

    (void)state;
    for (size_t n = 0; n <= 300; n++) {
        for (int round = 0; round < 4; round++) {
            garbage(buf, n, NULL);
            assert_int_not_equal(verify_with(2, buf, V_TS, V_SIG, V_BODY, V_NOW), WHSIG_OK);
            garbage(buf, n, NULL);
            assert_int_not_equal(verify_with(2, V_ID, buf, V_SIG, V_BODY, V_NOW), WHSIG_OK);
            garbage(buf, n, NULL);
            assert_int_not_equal(verify_with(2, V_ID, V_TS, buf, V_BODY, V_NOW), WHSIG_OK);
            garbage(buf, n, b64);
            snprintf(sig, sizeof(sig), "v1,%s", buf);
            assert_int_not_equal(verify_with(2, V_ID, V_TS, sig, V_BODY, V_NOW), WHSIG_OK);
            garbage(buf, n, NULL);
            assert_int_not_equal(verify_with(2, buf, buf, buf, buf, V_NOW), WHSIG_OK);
            garbage(buf, n, NULL);
            assert_int_equal(verify_with(2, V_ID, V_TS, V_SIG, buf, V_NOW),
                             strcmp(buf, V_BODY) == 0 ? WHSIG_OK : WHSIG_MISMATCH);
        }
    }
}

static void
test_result_names(void **state)
{
    (void)state;
    assert_string_equal(whsig_result_name(WHSIG_OK), "ok");
    assert_string_equal(whsig_result_name(WHSIG_MALFORMED), "malformed");
    assert_string_equal(whsig_result_name(WHSIG_EXPIRED), "expired");
    assert_string_equal(whsig_result_name(WHSIG_MISMATCH), "mismatch");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_parse),
        cmocka_unit_test(test_sign_vector),
        cmocka_unit_test(test_sign_refuses),
        cmocka_unit_test(test_sign_verify_roundtrip),
        cmocka_unit_test(test_verify_table),
        cmocka_unit_test(test_verify_caps),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_result_names),
    };

    return cmocka_run_group_tests_name("whsig", tests, setup_keys, NULL);
}
