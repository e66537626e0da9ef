/*
 * Unit tests of the shared cache's hashes (shm/hash.c): SipHash-2-4 against
 * the reference implementation's vectors, and the checksum's promise that
 * changing any one word changes it.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "shm/hash.h"

/* The reference key 00 01 .. 0f. */
#define K0 UINT64_C(0x0706050403020100)
#define K1 UINT64_C(0x0f0e0d0c0b0a0908)

static void
test_siphash_reference_vectors(void **state)
{
    unsigned char msg[15];

    (void)state;
    for (int i = 0; i < 15; i++)
        msg[i] = (unsigned char)i;
    /* vectors.h of the reference: messages 00 .. n-1 for n = 0 and 15. */
    assert_true(shm_hash_siphash24(K0, K1, NULL, 0) == UINT64_C(0x726fdb47dd0e0e31));
    assert_true(shm_hash_siphash24(K0, K1, msg, 15) == UINT64_C(0xa129ca6149be45e5));
}

static void
test_siphash_depends_on_key(void **state)
{
    (void)state;
    assert_true(shm_hash_siphash24(K0, K1, "order-1", 7) !=
                shm_hash_siphash24(K0 ^ 1, K1, "order-1", 7));
    assert_true(shm_hash_siphash24(K0, K1, "order-1", 7) !=
                shm_hash_siphash24(K0, K1, "order-2", 7));
}

static void
test_csum_catches_any_one_word(void **state)
{
    unsigned char buf[1672], copy[sizeof(buf)];
    uint64_t good;

    (void)state;
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (unsigned char)(i * 31 + 7);
    good = shm_hash_csum(42, buf, sizeof(buf));
    assert_true(shm_hash_csum(42, buf, sizeof(buf)) == good);
    /* Each single-byte change, and a whole word zeroed, anywhere. */
    for (size_t i = 0; i < sizeof(buf); i++) {
        memcpy(copy, buf, sizeof(buf));
        copy[i] ^= 0x01;
        assert_true(shm_hash_csum(42, copy, sizeof(copy)) != good);
        if (i % 8 == 0 && i + 8 <= sizeof(buf)) {
            memset(copy + i, 0, 8);
            assert_true(shm_hash_csum(42, copy, sizeof(copy)) != good);
        }
    }
    /* Tails of different lengths differ, even when the bytes are zero. */
    memset(copy, 0, 16);
    assert_true(shm_hash_csum(42, copy, 3) != shm_hash_csum(42, copy, 4));
    assert_true(shm_hash_csum(42, copy, 0) != shm_hash_csum(42, copy, 8));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_reference_vectors),
        cmocka_unit_test(test_siphash_depends_on_key),
        cmocka_unit_test(test_csum_catches_any_one_word),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
