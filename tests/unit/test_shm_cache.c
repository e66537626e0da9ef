/*
 * Unit tests of the shared idempotency cache (shm/cache.c), built with its
 * test hooks (-DSHM_CACHE_TESTING): lookups and writes in one process,
 * eviction and expiry, dead owners, a writer stopped or killed while holding
 * a set lock or half way through a write, and processes hammering it at once.
 *
 * Most cases use a cache of exactly one set, so every key collides.  Times
 * are passed explicitly (T0 + n) except in the multi-process cases.  Children
 * report through exit codes or a shared page, never through cmocka.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock.h"
#include "common/log.h"
#include "shm/cache.h"
#include "tests/unit/child.h"

#define ONE_SET_BYTES   20000           /* header and one set of 8 slots */
#define T0              INT64_C(1700000000000)
#define TTL             60000

#define KEY(s) (s), strlen(s)

/* A fingerprint that is a function of the key, so a copy can be checked. */
static void
fp_of(const char *key, size_t keylen, char fp[SHM_CACHE_FP_LEN + 1])
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);

    for (size_t i = 0; i < keylen; i++)
        h = (h ^ (unsigned char)key[i]) * UINT64_C(0x100000001b3);
    for (int i = 0; i < SHM_CACHE_FP_LEN; i++) {
        if (i % 16 == 0)
            h = (h ^ (uint64_t)i) * UINT64_C(0x100000001b3);
        fp[i] = "0123456789abcdef"[(h >> (4 * (i % 16))) & 15];
    }
    fp[SHM_CACHE_FP_LEN] = '\0';
}

/* A body that names its key and version n and is otherwise derived from
 * them, with a length and status that vary with n: any mix of two writes is
 * detectable. */
static size_t
body_make(const char *key, unsigned n, unsigned char *buf, int *status)
{
    int prefix = snprintf((char *)buf, SHM_CACHE_BODY_MAX, "%s|%u|", key, n);
    size_t fill = n % (SHM_CACHE_BODY_MAX - (size_t)prefix + 1);

    for (size_t i = 0; i < fill; i++)
        buf[(size_t)prefix + i] = (unsigned char)(n * 7 + i * 13 + (unsigned char)key[0]);
    *status = 200 + (int)(n % 300);
    return (size_t)prefix + fill;
}

/* The request note of version n of key: its length (0 to SHM_CACHE_REQ_MAX)
 * and bytes vary with both, so that a note torn between two writes, or
 * left from another version, does not match the body. */
static size_t
req_make(const char *key, unsigned n, unsigned char *buf)
{
    size_t len = (n * 31 + (unsigned char)key[0]) % (SHM_CACHE_REQ_MAX + 1);

    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(n * 5 + i * 11 + (unsigned char)key[0]);
    return len;
}

/* Does e (as found for key) hold what some writer of key wrote? */
static int
entry_valid(const char *key, const shm_cache_entry_t *e)
{
    unsigned char want[SHM_CACHE_BODY_MAX];
    char fp[SHM_CACHE_FP_LEN + 1], head[SHM_CACHE_KEY_MAX + 2];
    size_t keylen = strlen(key), len;
    unsigned n = 0;
    int status, k;

    fp_of(key, keylen, fp);
    if (strcmp(e->fingerprint, fp) != 0)
        return 0;
    if (e->state == SHM_CACHE_IN_PROGRESS)
        return e->owner_pid > 0 && e->body_len == 0;
    if (e->state != SHM_CACHE_COMPLETED || e->body_len <= keylen + 1 ||
        e->body_len > SHM_CACHE_BODY_MAX)
        return 0;
    snprintf(head, sizeof(head), "%s|", key);
    if (memcmp(e->body, head, keylen + 1) != 0)
        return 0;
    for (k = (int)keylen + 1; k < (int)e->body_len && e->body[k] != '|'; k++) {
        if (e->body[k] < '0' || e->body[k] > '9')
            return 0;
        n = n * 10 + (unsigned)(e->body[k] - '0');
    }
    len = body_make(key, n, want, &status);
    if (len != e->body_len || status != e->status || memcmp(want, e->body, len) != 0)
        return 0;
    len = req_make(key, n, want);
    return len == e->req_len && memcmp(want, e->req, len) == 0;
}

static shm_cache_result_t
store(shm_cache_t *c, const char *key, unsigned n, int64_t now, int64_t expiry)
{
    unsigned char body[SHM_CACHE_BODY_MAX], req[SHM_CACHE_REQ_MAX];
    char fp[SHM_CACHE_FP_LEN + 1];
    int status;
    size_t len = body_make(key, n, body, &status), req_len = req_make(key, n, req);

    fp_of(key, strlen(key), fp);
    return shm_cache_store(c, KEY(key), fp, status, body, len, req, req_len, now, expiry);
}

static shm_cache_result_t
claim(shm_cache_t *c, const char *key, pid_t pid, int64_t now, int64_t expiry,
      shm_cache_entry_t *e)
{
    char fp[SHM_CACHE_FP_LEN + 1];

    fp_of(key, strlen(key), fp);
    return shm_cache_claim(c, KEY(key), fp, pid, now, expiry, e);
}

/* Lookup that must find a valid COMPLETED entry of version n. */
static void
assert_completed(shm_cache_t *c, const char *key, unsigned n, int64_t now)
{
    shm_cache_entry_t e;
    unsigned char want[SHM_CACHE_BODY_MAX];
    int status;
    size_t len = body_make(key, n, want, &status);

    assert_int_equal(shm_cache_lookup(c, KEY(key), now, &e), SHM_CACHE_COMPLETED);
    assert_true(entry_valid(key, &e));
    assert_int_equal(e.status, status);
    assert_int_equal(e.body_len, len);
    assert_memory_equal(e.body, want, len);
    len = req_make(key, n, want);
    assert_int_equal(e.req_len, len);
    assert_memory_equal(e.req, want, len);
}

static void
assert_miss(shm_cache_t *c, const char *key, int64_t now)
{
    shm_cache_entry_t e;

    assert_int_equal(shm_cache_lookup(c, KEY(key), now, &e), SHM_CACHE_UNKNOWN);
}

/* The cache's counters now. */
static shm_cache_stats_t
stats(shm_cache_t *c)
{
    shm_cache_stats_t st;

    shm_cache_stats(c, &st);
    return st;
}

/* A child left stopped by child_stopped_at, killed by teardown if a failed
 * assertion skipped the case's own kill_and_reap. */
static pid_t stopped_child;

static void
kill_and_reap(pid_t pid)
{
    if (pid == stopped_child)
        stopped_child = 0;
    child_kill(pid);
}

static int
setup_one_set(void **state)
{
    shm_cache_stats_t st;
    shm_cache_t *c = shm_cache_create(ONE_SET_BYTES);

    if (c == NULL)
        return -1;
    st = stats(c);
    if (st.capacity != 8) {
        shm_cache_destroy(c);
        return -1;
    }
    *state = c;
    return 0;
}

static int
teardown(void **state)
{
    if (stopped_child > 0) {
        kill(stopped_child, SIGKILL);
        waitpid(stopped_child, NULL, 0);
        stopped_child = 0;
    }
    shm_cache_destroy(*state);
    shm_cache_test_hook = NULL;
    shm_cache_test_constant_hash = 0;
    return 0;
}

/* ---- single process --------------------------------------------------- */

static void
test_create_too_small(void **state)
{
    (void)state;
    assert_null(shm_cache_create(4096));
    shm_cache_destroy(NULL);
}

static void
test_claim_store_lookup(void **state)
{
    shm_cache_t *c = *state;
    shm_cache_entry_t e;
    shm_cache_stats_t st;
    char fp[SHM_CACHE_FP_LEN + 1];

    assert_miss(c, "order-1", T0);
    assert_int_equal(claim(c, "order-1", getpid(), T0, T0 + 5000, &e), SHM_CACHE_CLAIMED);

    assert_int_equal(shm_cache_lookup(c, KEY("order-1"), T0 + 1, &e), SHM_CACHE_IN_PROGRESS);
    fp_of(KEY("order-1"), fp);
    assert_string_equal(e.fingerprint, fp);
    assert_int_equal(e.owner_pid, getpid());
    assert_int_equal(e.start_ms, T0);
    assert_int_equal(e.body_len, 0);

    /* A second request with the key finds the first one running. */
    assert_int_equal(claim(c, "order-1", getpid(), T0 + 2, T0 + 5000, &e), SHM_CACHE_EXISTS);
    assert_int_equal(e.state, SHM_CACHE_IN_PROGRESS);

    assert_int_equal(store(c, "order-1", 77, T0 + 3, T0 + TTL), SHM_CACHE_STORED);
    assert_completed(c, "order-1", 77, T0 + 4);

    /* ... and once it is done, the stored answer. */
    assert_int_equal(claim(c, "order-1", getpid(), T0 + 5, T0 + 5000, &e), SHM_CACHE_EXISTS);
    assert_int_equal(e.state, SHM_CACHE_COMPLETED);
    assert_true(entry_valid("order-1", &e));

    st = stats(c);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.inserts, 2);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.evictions, 0);
}

static void
test_full_key_compare(void **state)
{
    static const char *const keys[] = { "abc", "abd", "abcd", "ab", "x",
                                        "abc\x01", "ABC", "abc " };
    shm_cache_t *c = *state;

    /* Same hash, same set, same tag for every key: only the bytes differ. */
    shm_cache_test_constant_hash = 1;
    for (unsigned i = 0; i < 8; i++)
        assert_int_equal(store(c, keys[i], 100 + i, T0 + i, T0 + TTL), SHM_CACHE_STORED);
    for (unsigned i = 0; i < 8; i++)
        assert_completed(c, keys[i], 100 + i, T0 + 10);
    assert_miss(c, "abe", T0 + 10);
    assert_miss(c, "abcde", T0 + 10);
    assert_miss(c, "a", T0 + 10);
}

static void
test_same_set_different_keys(void **state)
{
    shm_cache_t *c = *state;
    char key[32];

    /* Real hashes, one set: all eight keys share it and keep their own. */
    for (unsigned i = 0; i < 8; i++) {
        snprintf(key, sizeof(key), "key-%u", i);
        assert_int_equal(shm_cache_test_set_of(c, KEY(key)), 0);
        assert_int_equal(store(c, key, 1000 + i, T0 + i, T0 + TTL), SHM_CACHE_STORED);
    }
    for (unsigned i = 0; i < 8; i++) {
        snprintf(key, sizeof(key), "key-%u", i);
        assert_completed(c, key, 1000 + i, T0 + 10);
    }
}

static void
test_release(void **state)
{
    shm_cache_t *c = *state;
    shm_cache_entry_t e;

    assert_int_equal(claim(c, "k", getpid(), T0, T0 + 5000, &e), SHM_CACHE_CLAIMED);
    /* Another pid's release leaves our marker alone. */
    assert_int_equal(shm_cache_release(c, KEY("k"), getpid() + 1), 0);
    assert_int_equal(shm_cache_lookup(c, KEY("k"), T0, &e), SHM_CACHE_IN_PROGRESS);
    assert_int_equal(shm_cache_release(c, KEY("k"), getpid()), 1);
    assert_miss(c, "k", T0);
    /* Nothing to drop is fine, and release never drops a stored answer. */
    assert_int_equal(shm_cache_release(c, KEY("k"), getpid()), 0);
    assert_int_equal(store(c, "k", 5, T0, T0 + TTL), SHM_CACHE_STORED);
    assert_int_equal(shm_cache_release(c, KEY("k"), getpid()), 0);
    assert_completed(c, "k", 5, T0);
}

static void
test_expiry(void **state)
{
    shm_cache_t *c = *state;
    shm_cache_entry_t e;

    assert_int_equal(store(c, "done", 9, T0, T0 + 100), SHM_CACHE_STORED);
    assert_completed(c, "done", 9, T0 + 99);
    assert_miss(c, "done", T0 + 100);
    /* An expired answer is no obstacle to a new request. */
    assert_int_equal(claim(c, "done", getpid(), T0 + 100, T0 + 200, &e), SHM_CACHE_CLAIMED);

    assert_int_equal(claim(c, "running", getpid(), T0, T0 + 50, &e), SHM_CACHE_CLAIMED);
    assert_int_equal(shm_cache_lookup(c, KEY("running"), T0 + 49, &e), SHM_CACHE_IN_PROGRESS);
    assert_miss(c, "running", T0 + 50);
    assert_int_equal(claim(c, "running", getppid(), T0 + 50, T0 + 100, &e), SHM_CACHE_CLAIMED);
    assert_int_equal(shm_cache_lookup(c, KEY("running"), T0 + 51, &e), SHM_CACHE_IN_PROGRESS);
    assert_int_equal(e.owner_pid, getppid());
}

static void
test_eviction_by_age(void **state)
{
    shm_cache_t *c = *state;
    shm_cache_stats_t st;
    char key[16];

    for (unsigned i = 0; i < 8; i++) {
        snprintf(key, sizeof(key), "k%u", i);
        assert_int_equal(store(c, key, i, T0 + i, T0 + TTL), SHM_CACHE_STORED);
    }
    /* Full: the oldest goes. */
    assert_int_equal(store(c, "k8", 8, T0 + 10, T0 + TTL), SHM_CACHE_STORED);
    assert_miss(c, "k0", T0 + 11);
    for (unsigned i = 1; i <= 8; i++) {
        snprintf(key, sizeof(key), "k%u", i);
        assert_completed(c, key, i, T0 + 11);
    }
    st = stats(c);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.entries, 8);

    /* An expired entry goes before an older live one, and is no eviction. */
    assert_int_equal(store(c, "k5", 55, T0 + 12, T0 + 20), SHM_CACHE_STORED);
    assert_int_equal(store(c, "k9", 9, T0 + 30, T0 + TTL), SHM_CACHE_STORED);
    assert_miss(c, "k5", T0 + 31);
    assert_completed(c, "k1", 1, T0 + 31);
    assert_int_equal(stats(c).evictions, 1);
}

static void
test_live_markers_not_evicted(void **state)
{
    shm_cache_t *c = *state;
    shm_cache_entry_t e;
    pid_t dead = child_dead_pid();
    char key[16];

    for (unsigned i = 0; i < 8; i++) {
        snprintf(key, sizeof(key), "m%u", i);
        assert_int_equal(claim(c, key, getpid(), T0 + i, T0 + TTL, &e), SHM_CACHE_CLAIMED);
    }
    /* Eight live markers of a live owner: nothing may go. */
    assert_int_equal(claim(c, "new", getpid(), T0 + 10, T0 + TTL, &e), SHM_CACHE_NOT_CACHED);
    assert_int_equal(store(c, "new", 1, T0 + 10, T0 + TTL), SHM_CACHE_NOT_CACHED);
    for (unsigned i = 0; i < 8; i++) {
        snprintf(key, sizeof(key), "m%u", i);
        assert_int_equal(shm_cache_lookup(c, KEY(key), T0 + 11, &e), SHM_CACHE_IN_PROGRESS);
    }

    /* A marker whose owner died is fair game, even the youngest. */
    assert_int_equal(shm_cache_release(c, KEY("m7"), getpid()), 1);
    assert_int_equal(claim(c, "orphan", dead, T0 + 20, T0 + TTL, &e), SHM_CACHE_CLAIMED);
    assert_int_equal(claim(c, "new", getpid(), T0 + 21, T0 + TTL, &e), SHM_CACHE_CLAIMED);
    assert_miss(c, "orphan", T0 + 22);
    assert_int_equal(stats(c).evictions, 1);

    /* And a dead owner's marker for the same key does not block a retry. */
    assert_int_equal(shm_cache_release(c, KEY("new"), getpid()), 1);
    assert_int_equal(claim(c, "again", dead, T0 + 30, T0 + TTL, &e), SHM_CACHE_CLAIMED);
    assert_int_equal(claim(c, "again", getpid(), T0 + 31, T0 + TTL, &e), SHM_CACHE_CLAIMED);
}

static void
test_too_big(void **state)
{
    static unsigned char body[SHM_CACHE_BODY_MAX + 1];
    shm_cache_t *c = *state;
    shm_cache_entry_t e;
    char fp[SHM_CACHE_FP_LEN + 1];

    fp_of(KEY("big"), fp);
    memset(body, 'b', sizeof(body));
    assert_int_equal(claim(c, "big", getpid(), T0, T0 + TTL, &e), SHM_CACHE_CLAIMED);
    assert_int_equal(
        shm_cache_store(c, KEY("big"), fp, 201, body, sizeof(body), NULL, 0, T0, T0 + TTL),
        SHM_CACHE_NOT_CACHED);
    assert_miss(c, "big", T0);      /* the marker went too */

    assert_int_equal(
        shm_cache_store(c, KEY("big"), fp, 201, body, SHM_CACHE_BODY_MAX, NULL, 0, T0, T0 + TTL),
        SHM_CACHE_STORED);
    assert_int_equal(shm_cache_lookup(c, KEY("big"), T0, &e), SHM_CACHE_COMPLETED);
    assert_int_equal(e.body_len, SHM_CACHE_BODY_MAX);
    assert_memory_equal(e.body, body, SHM_CACHE_BODY_MAX);

    /* A bigger answer for a cached key must not leave the old one behind. */
    assert_int_equal(
        shm_cache_store(c, KEY("big"), fp, 201, body, sizeof(body), NULL, 0, T0, T0 + TTL),
        SHM_CACHE_NOT_CACHED);
    assert_miss(c, "big", T0);
    assert_int_equal(stats(c).too_big, 2);
}

static void
test_bad_arguments(void **state)
{
    static char long_key[SHM_CACHE_KEY_MAX + 1];
    shm_cache_t *c = *state;
    shm_cache_entry_t e;
    char fp[SHM_CACHE_FP_LEN + 1];

    fp_of(KEY("k"), fp);
    memset(long_key, 'k', sizeof(long_key));
    assert_int_equal(shm_cache_lookup(c, "", 0, T0, &e), SHM_CACHE_UNKNOWN);
    assert_int_equal(shm_cache_lookup(c, long_key, sizeof(long_key), T0, &e), SHM_CACHE_UNKNOWN);
    assert_int_equal(shm_cache_claim(c, long_key, sizeof(long_key), fp, getpid(), T0, T0 + 1, &e),
                     SHM_CACHE_NOT_CACHED);
    assert_int_equal(shm_cache_claim(c, KEY("k"), fp, 0, T0, T0 + 1, &e), SHM_CACHE_NOT_CACHED);
    assert_int_equal(shm_cache_store(c, KEY("k"), fp, 42, "x", 1, NULL, 0, T0, T0 + 1),
                     SHM_CACHE_NOT_CACHED);
    assert_int_equal(shm_cache_store(c, KEY("k"), fp, 200, "x", 1, NULL, 1, T0, T0 + 1),
                     SHM_CACHE_NOT_CACHED);
    /* The longest key works. */
    assert_int_equal(
        shm_cache_store(c, long_key, SHM_CACHE_KEY_MAX, fp, 200, "x", 1, NULL, 0, T0, T0 + TTL),
        SHM_CACHE_STORED);
    assert_int_equal(shm_cache_lookup(c, long_key, SHM_CACHE_KEY_MAX, T0, &e),
                     SHM_CACHE_COMPLETED);
    /* An empty body is a body. */
    assert_int_equal(shm_cache_store(c, KEY("k"), fp, 204, NULL, 0, NULL, 0, T0, T0 + TTL),
                     SHM_CACHE_STORED);
    assert_int_equal(shm_cache_lookup(c, KEY("k"), T0, &e), SHM_CACHE_COMPLETED);
    assert_int_equal(e.status, 204);
    assert_int_equal(e.body_len, 0);
}

/* A stray write (corrupt: a byte flipped, the version untouched) into an
 * entry: lookups miss it and count it, a writer does not take it for live. */
static void
assert_stray_write_caught(shm_cache_t *c, int (*corrupt)(shm_cache_t *, const void *, size_t))
{
    shm_cache_entry_t e;

    assert_int_equal(store(c, "victim", 500, T0, T0 + TTL), SHM_CACHE_STORED);
    assert_int_equal(shm_cache_lookup(c, KEY("victim"), T0, &e), SHM_CACHE_COMPLETED);
    assert_true(e.req_len > 0 && e.body_len > 0);
    assert_int_equal(corrupt(c, KEY("victim")), 0);
    assert_miss(c, "victim", T0);
    assert_int_equal(stats(c).corrupt, 1);
    assert_int_equal(claim(c, "victim", getpid(), T0, T0 + TTL, &e), SHM_CACHE_CLAIMED);
}

static void
test_checksum_catches_stray_write(void **state)
{
    assert_stray_write_caught(*state, shm_cache_test_corrupt);
}

/* The same in the request note: a replay compares it instead of parsing
 * the request, so a damaged one must not be served. */
static void
test_checksum_catches_stray_write_in_req(void **state)
{
    assert_stray_write_caught(*state, shm_cache_test_corrupt_req);
}

/* The request note: kept with the answer up to SHM_CACHE_REQ_MAX bytes and
 * copied out by lookup and claim; a longer one is dropped, not the answer;
 * a later answer for the key replaces the note with its own, or with none. */
static void
test_req_note(void **state)
{
    static unsigned char req[SHM_CACHE_REQ_MAX + 1];
    shm_cache_t *c = *state;
    shm_cache_entry_t e;
    char fp[SHM_CACHE_FP_LEN + 1];

    fp_of(KEY("k"), fp);
    for (size_t i = 0; i < sizeof(req); i++)
        req[i] = (unsigned char)(i * 7 + 1);
    assert_int_equal(
        shm_cache_store(c, KEY("k"), fp, 201, "{}", 2, req, SHM_CACHE_REQ_MAX, T0, T0 + TTL),
        SHM_CACHE_STORED);
    assert_int_equal(shm_cache_lookup(c, KEY("k"), T0, &e), SHM_CACHE_COMPLETED);
    assert_int_equal(e.req_len, SHM_CACHE_REQ_MAX);
    assert_memory_equal(e.req, req, SHM_CACHE_REQ_MAX);
    assert_int_equal(e.body_len, 2);
    assert_memory_equal(e.body, "{}", 2);
    assert_int_equal(claim(c, "k", getpid(), T0, T0 + TTL, &e), SHM_CACHE_EXISTS);
    assert_int_equal(e.req_len, SHM_CACHE_REQ_MAX);
    assert_memory_equal(e.req, req, SHM_CACHE_REQ_MAX);

    /* One byte too long: the answer is stored, without a note (not the old one). */
    assert_int_equal(
        shm_cache_store(c, KEY("k"), fp, 201, "{1}", 3, req, sizeof(req), T0 + 1, T0 + TTL),
        SHM_CACHE_STORED);
    assert_int_equal(shm_cache_lookup(c, KEY("k"), T0 + 1, &e), SHM_CACHE_COMPLETED);
    assert_int_equal(e.req_len, 0);
    assert_int_equal(e.body_len, 3);

    /* A marker has no note. */
    assert_int_equal(claim(c, "m", getpid(), T0, T0 + TTL, &e), SHM_CACHE_CLAIMED);
    assert_int_equal(shm_cache_lookup(c, KEY("m"), T0, &e), SHM_CACHE_IN_PROGRESS);
    assert_int_equal(e.req_len, 0);
}

static void
test_release_pid_drops_markers(void **state)
{
    shm_cache_t *c = *state;
    shm_cache_entry_t e;
    pid_t pid;

    assert_int_equal(claim(c, "mine", getpid(), T0, T0 + TTL, &e), SHM_CACHE_CLAIMED);
    pid = child_fork();
    if (pid == 0) {
        int ok = claim(c, "w1", getpid(), T0, T0 + TTL, &e) == SHM_CACHE_CLAIMED &&
                 claim(c, "w2", getpid(), T0, T0 + TTL, &e) == SHM_CACHE_CLAIMED &&
                 claim(c, "w3", getpid(), T0, T0 + TTL, &e) == SHM_CACHE_CLAIMED;
        _exit(ok ? 0 : 1);
    }
    child_reap_ok(pid);

    assert_int_equal(shm_cache_lookup(c, KEY("w2"), T0, &e), SHM_CACHE_IN_PROGRESS);
    assert_int_equal(e.owner_pid, pid);
    assert_int_equal(shm_cache_release_pid(c, pid), 3);
    assert_miss(c, "w1", T0);
    assert_miss(c, "w2", T0);
    assert_miss(c, "w3", T0);
    assert_int_equal(shm_cache_lookup(c, KEY("mine"), T0, &e), SHM_CACHE_IN_PROGRESS);
    assert_int_equal(shm_cache_release_pid(c, pid), 0);
}

static void
test_wipe(void **state)
{
    shm_cache_t *c = *state;

    assert_int_equal(store(c, "a", 1, T0, T0 + TTL), SHM_CACHE_STORED);
    assert_int_equal(store(c, "b", 2, T0, T0 + TTL), SHM_CACHE_STORED);
    assert_int_equal(shm_cache_wipe(c), 0);
    assert_miss(c, "a", T0);
    assert_miss(c, "b", T0);
    assert_int_equal(stats(c).entries, 0);
}

/* ---- a writer stopped or killed inside the lock ----------------------- */

static shm_cache_test_point_t stop_point;

static void
stop_here(shm_cache_test_point_t point)
{
    if (point == stop_point)
        raise(SIGSTOP);
}

/* Fork a child that stores key (version n, a body long enough to tear) and
 * stops itself at point; return once it is stopped. */
static pid_t
child_stopped_at(shm_cache_t *c, shm_cache_test_point_t point, const char *key, unsigned n)
{
    pid_t pid = child_fork();
    int st;

    if (pid == 0) {
        stop_point = point;
        shm_cache_test_hook = stop_here;
        (void)store(c, key, n, T0 + 5, T0 + TTL);
        _exit(0);
    }
    stopped_child = pid;
    assert_int_equal(waitpid(pid, &st, WUNTRACED), pid);
    assert_true(WIFSTOPPED(st));
    return pid;
}

/* While a live process holds the set lock, writers give up quickly and
 * readers carry on; once it is dead and reaped, the next writer takes the
 * lock over. */
static void
test_holder_stopped_then_killed(void **state)
{
    shm_cache_t *c = *state;
    shm_cache_entry_t e;
    int64_t t;
    pid_t pid;

    assert_int_equal(store(c, "other", 3, T0, T0 + TTL), SHM_CACHE_STORED);
    pid = child_stopped_at(c, SHM_CACHE_TP_LOCKED, "held", 1000);

    t = clock_mono_ms();
    assert_completed(c, "other", 3, T0 + 6);
    assert_int_equal(claim(c, "new", getpid(), T0 + 6, T0 + TTL, &e), SHM_CACHE_NOT_CACHED);
    assert_int_equal(store(c, "new", 1, T0 + 6, T0 + TTL), SHM_CACHE_NOT_CACHED);
    assert_int_equal(shm_cache_release(c, KEY("other"), getpid()), 0);
    assert_true(clock_mono_ms() - t < 500);
    assert_int_equal(stats(c).contended, 2);

    /* Killed: a zombie still "exists" until reaped, as under the master. */
    kill_and_reap(pid);
    t = clock_mono_ms();
    assert_int_equal(claim(c, "new", getpid(), T0 + 7, T0 + TTL, &e), SHM_CACHE_CLAIMED);
    assert_true(clock_mono_ms() - t < 500);
    assert_completed(c, "other", 3, T0 + 8);
    assert_int_equal(stats(c).repairs, 1);
    assert_int_equal(store(c, "new", 2, T0 + 8, T0 + TTL), SHM_CACHE_STORED);
    assert_completed(c, "new", 2, T0 + 9);
}

/* Regression: a worker's writers waited for a busy set lock, spinning and
 * then yielding, for up to 200 us (claim) and 5 ms (store, release), all on
 * the worker's event loop.  With a live process holding the lock, claim and
 * store must give up (NOT_CACHED) within microseconds, and release must
 * still withdraw the marker that store could not replace: a marker left
 * behind would answer 409 in_use until its expiry. */
#define GIVE_UP_CALLS   25
#define GIVE_UP_MEDIAN_NS  (50 * 1000)
#define GIVE_UP_P90_NS     (1000 * 1000)

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Sort took[] and check its median and 90th percentile. */
static void
assert_quick(const char *what, int64_t took[GIVE_UP_CALLS])
{
    int64_t median, p90;

    qsort(took, GIVE_UP_CALLS, sizeof(took[0]), cmp_i64);
    median = took[GIVE_UP_CALLS / 2];
    p90 = took[GIVE_UP_CALLS * 9 / 10];
    print_message("    %s with the set lock held: median %.1f us, p90 %.1f us, max %.1f us\n",
                  what, median / 1000.0, p90 / 1000.0, took[GIVE_UP_CALLS - 1] / 1000.0);
    assert_true(median < GIVE_UP_MEDIAN_NS);
    assert_true(p90 < GIVE_UP_P90_NS);
}

static void
test_busy_lock_worker_gives_up_in_microseconds(void **state)
{
    shm_cache_t *c = *state;
    int64_t took_claim[GIVE_UP_CALLS], took_store[GIVE_UP_CALLS], took_release[GIVE_UP_CALLS];
    shm_cache_entry_t e;
    char key[32];
    pid_t pid;

    /* A request of ours is running: its marker is in. */
    assert_int_equal(claim(c, "mine", getpid(), T0, T0 + TTL, &e), SHM_CACHE_CLAIMED);
    pid = child_stopped_at(c, SHM_CACHE_TP_LOCKED, "held", 1000);

    for (int i = 0; i < GIVE_UP_CALLS; i++) {
        int64_t t = clock_mono_ns();

        snprintf(key, sizeof(key), "new-%d", i);
        assert_int_equal(claim(c, key, getpid(), T0 + 1, T0 + TTL, &e), SHM_CACHE_NOT_CACHED);
        took_claim[i] = clock_mono_ns() - t;
        t = clock_mono_ns();
        assert_int_equal(store(c, "mine", (unsigned)i, T0 + 1, T0 + TTL), SHM_CACHE_NOT_CACHED);
        took_store[i] = clock_mono_ns() - t;
    }
    assert_quick("claim", took_claim);
    assert_quick("store", took_store);
    /* store gave up: the marker is still there, until the request's
     * release, which needs no lock. */
    assert_int_equal(shm_cache_lookup(c, KEY("mine"), T0 + 2, &e), SHM_CACHE_IN_PROGRESS);
    for (int i = 0; i < GIVE_UP_CALLS; i++) {
        int64_t t = clock_mono_ns();

        assert_int_equal(shm_cache_release(c, KEY("mine"), getpid()), i == 0 ? 1 : 0);
        took_release[i] = clock_mono_ns() - t;
    }
    assert_miss(c, "mine", T0 + 2);
    assert_quick("release", took_release);
    assert_int_equal(stats(c).contended, 2 * GIVE_UP_CALLS);

    /* The holder dies and is reaped: the next writer takes the set over and
     * reuses the withdrawn marker's way. */
    kill_and_reap(pid);
    assert_int_equal(claim(c, "mine", getpid(), T0 + 3, T0 + TTL, &e), SHM_CACHE_CLAIMED);
    assert_int_equal(store(c, "mine", 7, T0 + 4, T0 + TTL), SHM_CACHE_STORED);
    assert_completed(c, "mine", 7, T0 + 5);
    assert_int_equal(stats(c).entries, 1);
}

/* A writer stopped half way through rewriting an entry: readers must get a
 * UNKNOWN rather than the torn entry, before and after it dies; the writer that
 * takes the lock over empties the slot. */
static void
test_torn_write_then_takeover(void **state)
{
    shm_cache_t *c = *state;
    shm_cache_entry_t e;
    shm_cache_stats_t st;
    int64_t t;
    pid_t pid;

    assert_int_equal(store(c, "torn", 1, T0, T0 + TTL), SHM_CACHE_STORED);
    assert_int_equal(store(c, "intact", 2, T0, T0 + TTL), SHM_CACHE_STORED);
    pid = child_stopped_at(c, SHM_CACHE_TP_MID_WRITE, "torn", 1500);

    t = clock_mono_ms();
    assert_miss(c, "torn", T0 + 6);
    assert_completed(c, "intact", 2, T0 + 6);
    assert_true(clock_mono_ms() - t < 500);

    kill_and_reap(pid);
    assert_miss(c, "torn", T0 + 7);
    assert_int_equal(claim(c, "next", getpid(), T0 + 7, T0 + TTL, &e), SHM_CACHE_CLAIMED);
    st = stats(c);
    assert_int_equal(st.repairs, 1);
    assert_int_equal(st.entries, 2);    /* intact and next: torn was emptied */
    assert_miss(c, "torn", T0 + 8);
    assert_int_equal(claim(c, "torn", getpid(), T0 + 8, T0 + TTL, &e), SHM_CACHE_CLAIMED);
    assert_completed(c, "intact", 2, T0 + 8);
}

/* The same, repaired by the master's release_pid after reaping. */
static void
test_torn_write_then_release_pid(void **state)
{
    shm_cache_t *c = *state;
    shm_cache_entry_t e;
    shm_cache_stats_t st;
    pid_t pid;

    assert_int_equal(store(c, "intact", 2, T0, T0 + TTL), SHM_CACHE_STORED);
    pid = child_stopped_at(c, SHM_CACHE_TP_MID_WRITE, "torn", 900);
    kill_and_reap(pid);
    assert_int_equal(shm_cache_release_pid(c, pid), 0);
    st = stats(c);
    assert_int_equal(st.repairs, 1);
    assert_int_equal(st.entries, 1);
    assert_miss(c, "torn", T0 + 6);
    assert_completed(c, "intact", 2, T0 + 6);
    assert_int_equal(claim(c, "torn", getpid(), T0 + 7, T0 + TTL, &e), SHM_CACHE_CLAIMED);
}

/* ---- many processes --------------------------------------------------- */

#define STRESS_PROCS    8
#define STRESS_KEYS     40
#define STRESS_MS       1200
#define STRESS_MAX_OPS  300000
#define STRESS_KILL_MS  300
#define STRESS_WAIT_MS  15000

struct stress {
    _Atomic int go;
    _Atomic uint64_t ops, hits, stored, claimed, exists, not_cached, violations;
};

static uint64_t
xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void
stress_key(unsigned i, char *key, size_t len)
{
    /* Lengths vary, so a key torn between two would not compare equal. */
    snprintf(key, len, "stress-%u-%.*s", i, (int)(i % 23), "xxxxxxxxxxxxxxxxxxxxxxx");
}

static void
stress_child(shm_cache_t *c, struct stress *sh, unsigned id)
{
    uint64_t rnd = UINT64_C(0x9e3779b97f4a7c15) * (id + 1);
    uint64_t ops = 0, hits = 0, stored = 0, claimed = 0, exists = 0, not_cached = 0, bad = 0;
    int64_t deadline;
    pid_t me = getpid();
    shm_cache_entry_t e;
    char key[64];

    while (atomic_load(&sh->go) == 0)
        sched_yield();
    deadline = clock_mono_ms() + STRESS_MS;
    while (ops < STRESS_MAX_OPS && (ops % 64 != 0 || clock_mono_ms() < deadline)) {
        uint64_t r = xorshift(&rnd);
        int64_t now = clock_real_ms();
        shm_cache_result_t res;

        stress_key((unsigned)(r % STRESS_KEYS), key, sizeof(key));
        switch ((r >> 16) % 8) {
        case 0: case 1: case 2: case 3:
            if (shm_cache_lookup(c, KEY(key), now, &e) != SHM_CACHE_UNKNOWN) {
                hits++;
                bad += !entry_valid(key, &e);
            }
            break;
        case 4: case 5: case 6:
            res = claim(c, key, me, now, now + 5000, &e);
            if (res == SHM_CACHE_EXISTS) {
                exists++;
                bad += !entry_valid(key, &e);
            } else if (res == SHM_CACHE_CLAIMED) {
                claimed++;
                if ((r >> 32) % 4 == 0) {
                    (void)shm_cache_release(c, KEY(key), me);
                } else if (store(c, key, (unsigned)(r >> 40), now, now + TTL) == SHM_CACHE_STORED) {
                    stored++;
                } else {
                    /* As a worker does: a marker it could not replace
                     * goes with its request. */
                    not_cached++;
                    (void)shm_cache_release(c, KEY(key), me);
                }
            } else {
                not_cached++;
            }
            break;
        default:
            if (store(c, key, (unsigned)(r >> 40), now, now + TTL) == SHM_CACHE_STORED)
                stored++;
            break;
        }
        ops++;
    }
    atomic_fetch_add(&sh->ops, ops);
    atomic_fetch_add(&sh->hits, hits);
    atomic_fetch_add(&sh->stored, stored);
    atomic_fetch_add(&sh->claimed, claimed);
    atomic_fetch_add(&sh->exists, exists);
    atomic_fetch_add(&sh->not_cached, not_cached);
    atomic_fetch_add(&sh->violations, bad);
}

/* Wait for pid until deadline (monotonic ms); 0 when it exited with 0. */
static int
reap_by(pid_t pid, int64_t deadline)
{
    int st;

    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);

        if (r == pid)
            return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
        if (r < 0 || clock_mono_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        usleep(2000);
    }
}

static void
run_stress(size_t bytes, int kill_one)
{
    shm_cache_t *c = shm_cache_create(bytes);
    struct stress *sh = child_shared_new(sizeof(*sh));
    pid_t pids[STRESS_PROCS];
    shm_cache_stats_t st;
    shm_cache_entry_t e;
    int failed = 0;
    int64_t deadline;
    char key[64];

    assert_non_null(c);
    for (unsigned i = 0; i < STRESS_PROCS; i++) {
        pids[i] = child_fork();
        if (pids[i] == 0) {
            stress_child(c, sh, i);
            _exit(0);
        }
    }
    atomic_store(&sh->go, 1);
    deadline = clock_mono_ms() + STRESS_WAIT_MS;
    if (kill_one) {
        /* A worker dies mid-run, wherever it is; the master reaps it and
         * releases it, and the others carry on. */
        usleep(STRESS_KILL_MS * 1000);
        kill_and_reap(pids[0]);
        shm_cache_release_pid(c, pids[0]);
    }
    for (unsigned i = kill_one ? 1 : 0; i < STRESS_PROCS; i++)
        failed += reap_by(pids[i], deadline) != 0;
    for (unsigned i = 0; i < STRESS_PROCS; i++)
        shm_cache_release_pid(c, pids[i]);

    st = stats(c);
    print_message("    %d procs: %lu ops, %lu hits, %lu stored, %lu claimed, %lu exists, "
                  "%lu not cached; cache: %lu evictions, %lu contended, %lu repairs, "
                  "%lu entries\n", STRESS_PROCS,
                  (unsigned long)sh->ops, (unsigned long)sh->hits, (unsigned long)sh->stored,
                  (unsigned long)sh->claimed, (unsigned long)sh->exists,
                  (unsigned long)sh->not_cached, (unsigned long)st.evictions,
                  (unsigned long)st.contended, (unsigned long)st.repairs,
                  (unsigned long)st.entries);
    assert_int_equal(failed, 0);
    assert_int_equal(sh->violations, 0);
    assert_true(sh->hits > 0);
    assert_true(sh->stored > 0);
    assert_int_equal(st.corrupt, 0);
    /* Every worker is gone and released: no marker may remain. */
    for (unsigned i = 0; i < STRESS_KEYS; i++) {
        stress_key(i, key, sizeof(key));
        assert_int_not_equal(shm_cache_lookup(c, KEY(key), clock_real_ms(), &e),
                             SHM_CACHE_IN_PROGRESS);
    }
    munmap(sh, sizeof(*sh));
    shm_cache_destroy(c);
}

static void
test_processes_one_set(void **state)
{
    (void)state;
    run_stress(ONE_SET_BYTES, 0);
}

static void
test_processes_many_sets_one_killed(void **state)
{
    (void)state;
    run_stress(6 * 16448 + 2048, 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_too_small),
        cmocka_unit_test_setup_teardown(test_claim_store_lookup, setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_full_key_compare, setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_same_set_different_keys, setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_release, setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_expiry, setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_eviction_by_age, setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_live_markers_not_evicted, setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_too_big, setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_checksum_catches_stray_write, setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_checksum_catches_stray_write_in_req, setup_one_set,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_req_note, setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_release_pid_drops_markers, setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_wipe, setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_holder_stopped_then_killed, setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_busy_lock_worker_gives_up_in_microseconds,
                                        setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_torn_write_then_takeover, setup_one_set, teardown),
        cmocka_unit_test_setup_teardown(test_torn_write_then_release_pid, setup_one_set, teardown),
        cmocka_unit_test(test_processes_one_set),
        cmocka_unit_test(test_processes_many_sets_one_killed),
    };

    /* Takeovers log a warning each; the cases check them through stats. */
    log_threshold = LOG_LEVEL_ERROR;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
