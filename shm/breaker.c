/*
 * shm_breaker: circuit breaker in shared memory, lock-free.
 *
 * The state and its one timestamp share a 64-bit word, (ms << 2) | state, so
 * each transition is a single compare-and-swap: two callers can never both
 * claim the probe, and nobody sees HALF_OPEN with the previous cycle's time.
 * The timestamp means: OPEN, when the cooldown ends; HALF_OPEN, when the probe
 * was claimed; CLOSED, when it closed (which also makes each closed word
 * different from the last, so a caller holding an old CLOSED word cannot
 * open the breaker on a stale failure count).
 *
 * The consecutive-failure count is a separate counter: a success stores 0, a
 * failure adds 1, and the failure that reaches the threshold tries the CAS.
 * Across processes "consecutive" is approximate, which is fine for a breaker.
 *
 * The mapping holds no per-process state, so the handle is the mapping.
 */
#include "config.h"

#include "shm/breaker.h"

#include <assert.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/mman.h>

/* Shared between processes: the atomics must be lock-free (address-free). */
static_assert(ATOMIC_INT_LOCK_FREE == 2, "int atomics must be lock-free");
static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");

struct shm_breaker {
    alignas(64) _Atomic uint64_t word;  /* (ms << 2) | shm_breaker_state_t */
    _Atomic uint32_t failures;          /* unavailable results in a row */
    _Atomic uint64_t transitions;
};

static uint64_t
pack(int64_t ms, shm_breaker_state_t st)
{
    return ((uint64_t)(ms > 0 ? ms : 0) << 2) | (uint64_t)st;
}

static shm_breaker_state_t
state_of(uint64_t word)
{
    return (shm_breaker_state_t)(word & 3);
}

static int64_t
time_of(uint64_t word)
{
    return (int64_t)(word >> 2);
}

/* Move from old to new word; on success count it and start a fresh failure
 * count.  Returns non-zero when this caller made the transition. */
static int
transition(shm_breaker_t *b, uint64_t *old, uint64_t new)
{
    if (!atomic_compare_exchange_strong_explicit(&b->word, old, new, memory_order_acq_rel,
                                                 memory_order_acquire))
        return 0;
    atomic_store_explicit(&b->failures, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->transitions, 1, memory_order_relaxed);
    return 1;
}

shm_breaker_t *
shm_breaker_create(void)
{
    /* A fresh anonymous mapping is zeroed: CLOSED, no failures. */
    void *p = mmap(NULL, sizeof(shm_breaker_t), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    return p == MAP_FAILED ? NULL : p;
}

void
shm_breaker_destroy(shm_breaker_t *b)
{
    if (b != NULL)
        munmap(b, sizeof(*b));
}

shm_breaker_verdict_t
shm_breaker_allow(shm_breaker_t *b, int64_t now_ms, int64_t probe_timeout_ms)
{
    uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);

    /* Each failed CAS means another caller changed the word: look again.
     * Lock-free, and with now_ms fixed a loser soon sees a fresh claim. */
    for (;;) {
        uint64_t claim = pack(now_ms, SHM_BREAKER_HALF_OPEN);

        switch (state_of(w)) {
        case SHM_BREAKER_OPEN:
            if (now_ms < time_of(w))
                return SHM_BREAKER_DENY;
            if (transition(b, &w, claim))
                return SHM_BREAKER_ALLOW_PROBE;
            break;
        case SHM_BREAKER_HALF_OPEN:
            if (now_ms - time_of(w) < probe_timeout_ms)
                return SHM_BREAKER_DENY;
            /* The probe's owner died or hung: take the claim over.  Not a
             * state change, so not counted. */
            if (atomic_compare_exchange_strong_explicit(&b->word, &w, claim,
                                                        memory_order_acq_rel,
                                                        memory_order_acquire))
                return SHM_BREAKER_ALLOW_PROBE;
            break;
        default:
            return SHM_BREAKER_ALLOW;
        }
    }
}

void
shm_breaker_record(shm_breaker_t *b, int ok, int64_t now_ms, int64_t threshold,
                   int64_t cooldown_ms)
{
    uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
    uint32_t n;

    switch (state_of(w)) {
    case SHM_BREAKER_CLOSED:
        if (ok) {
            /* Read first: most calls succeed, and a store would bounce the
             * cache line between workers for nothing. */
            if (atomic_load_explicit(&b->failures, memory_order_relaxed) != 0)
                atomic_store_explicit(&b->failures, 0, memory_order_relaxed);
            return;
        }
        n = atomic_fetch_add_explicit(&b->failures, 1, memory_order_relaxed) + 1;
        if ((int64_t)n >= (threshold > 0 ? threshold : 1))
            (void)transition(b, &w, pack(now_ms + cooldown_ms, SHM_BREAKER_OPEN));
        return;
    case SHM_BREAKER_HALF_OPEN:
        /* Calls that started before it opened ended within the provider
         * timeout, long before the cooldown did: this is the probe's result. */
        (void)transition(b, &w, ok ? pack(now_ms, SHM_BREAKER_CLOSED)
                                   : pack(now_ms + cooldown_ms, SHM_BREAKER_OPEN));
        return;
    default:
        return;     /* OPEN: late results of calls from before it opened */
    }
}

shm_breaker_state_t
shm_breaker_state(shm_breaker_t *b)
{
    return state_of(atomic_load_explicit(&b->word, memory_order_relaxed));
}

uint64_t
shm_breaker_transitions(shm_breaker_t *b)
{
    return atomic_load_explicit(&b->transitions, memory_order_relaxed);
}
