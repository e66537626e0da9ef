/*
 * shm_cache: the idempotency cache in memory shared by a host's workers.
 *
 * Layout.  One MAP_SHARED|MAP_ANONYMOUS mapping made by the master before
 * fork, so every worker sees it at the same address; even so nothing in it is
 * a pointer: sets and slots are found by index arithmetic from the base kept
 * in each process's handle (struct shm_cache), and the geometry and hash key
 * are read from the handle, never from the mapping, so a stray write into the
 * mapping cannot send a process out of bounds.  The mapping holds
 *
 *   header      magic, geometry, counters striped over cache lines
 *   directory   per set, one cache line: the set lock and a tag per way
 *   slots       per set, WAYS slots of SLOT_SIZE bytes
 *
 * The directory is apart from the slots so that stats and release_pid read a
 * compact array and leave unused slot pages untouched (shared anonymous pages
 * are allocated on first touch, even by a read).
 *
 * Reads are lock-free.  Each slot has a sequence number, odd while a writer
 * is changing it.  A reader copies the slot out between two reads of the
 * sequence and keeps the copy only if the sequence was even and unchanged and
 * the copy's checksum matches; else it retries a few times and then reports
 * UNKNOWN.  The checksum also catches what no sequence can, a stray write into
 * the mapping by a buggy process: a damaged body must never be replayed to a
 * client.  The tags in the directory only steer readers to candidate slots;
 * the full key is compared in the copy.
 *
 * Writers take the set's lock word: 0 when free, else the holder's pid.  A
 * writer holds it for about a microsecond (checksums are computed before it
 * is taken).  In a worker nothing may wait longer than that for it: claim
 * and store, which run on a worker's event loop, spin for at most
 * LOCK_SPIN_NS (a few microseconds, no yield, no sleep) and then give up
 * (NOT_CACHED): the request goes to PostgreSQL as for a miss, which never
 * changes an answer.  Only the master (release_pid, wipe), alone in its
 * loop, goes on to yield for up to BUDGET_MASTER_NS.  A lock whose holder is
 * dead (kill(pid, 0) fails with ESRCH) or that carries our own pid (a dead
 * predecessor's, reused) is taken over, and the taker repairs the set: slots
 * left odd or failing their checksum are emptied and the tags rebuilt.  A
 * dead worker stays a zombie, hence "alive", until the master reaps it; the
 * master then calls shm_cache_release_pid, which takes over its locks and
 * drops its IN_PROGRESS markers.
 *
 * Giving up must not leave a marker behind: a marker that outlived its
 * request would answer 409 in_use, wrongly, until its expiry
 * (idempotency_lock_timeout).  claim gives up before storing anything.  A
 * store that gives up leaves the request's marker, and so does a request
 * that ends without an answer to store; either way the request then calls
 * release, which needs no lock at all: it withdraws the marker in place.
 * Each slot has a `withdrawn` word besides its sequence; release reads the
 * slot as a reader does, checks that it holds this pid's marker for the key
 * at (even) version v, and stores v into `withdrawn`.  A version whose
 * `withdrawn` equals its sequence is gone: lookups miss it, claim and
 * store overwrite it, a new key may take its way.  A writer resets the
 * word to an odd value, which no stable sequence equals, whenever it
 * rewrites the slot, and the sequence only grows, so a late store of an old
 * version never matches a new one.  So a marker never outlives its request,
 * contention or not (before, a store and a release that both met a busy
 * lock left it until its expiry); only a worker's death leaves markers
 * behind, and the master's release on reap drops them.  Retrying the
 * removal later was the alternative; it needs a timer in every worker and
 * leaves a window of wrong 409s that this does not.
 *
 * Counters are relaxed atomics in the mapping, striped by set so that workers
 * busy on different keys rarely write the same cache line.
 */
#include "config.h"

#include "shm/cache.h"

#include <assert.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "shm/hash.h"

#define WAYS            8
#define SLOT_SIZE       2048
#define NSTRIPES        16
#define CACHE_MAGIC     UINT64_C(0x7061796d73686d31)    /* "paymshm1" */

/* A reader gives up on a slot that stays odd or changes under it this often:
 * a writer holds a slot for about a microsecond, unless it was preempted or
 * killed, and then UNKNOWN is the right answer anyway. */
#define READ_TRIES      8

/* Lock waits.  Every writer spins (cpu_relax, reading the clock every
 * LOCK_SPIN_CHECK turns) for LOCK_SPIN_NS; that is all a worker's claim and
 * store may spend: giving up costs them a database round trip, waiting
 * would stall every request of the worker.  The master (release_pid, wipe)
 * then yields until BUDGET_MASTER_NS: it is alone in its loop. */
#define LOCK_SPIN_NS        (5 * 1000)
#define LOCK_SPIN_CHECK     16
#define BUDGET_MASTER_NS    (20 * 1000 * 1000)

/* Processes share these atomics through the mapping, which is only sound
 * when they are lock-free (address-free). */
static_assert(ATOMIC_INT_LOCK_FREE == 2, "int atomics must be lock-free");
static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");

enum { ST_EMPTY = 0, ST_IN_PROGRESS = 1, ST_COMPLETED = 2 };

enum { C_HITS, C_MISSES, C_INSERTS, C_EVICTIONS, C_TOO_BIG, C_CONTENDED,
       C_REPAIRS, C_CORRUPT, NCOUNTERS };

/* What a slot says about its entry; copied out by readers in one piece.
 * Padding is explicit and zeroed, because the checksum covers it. */
struct slot_meta {
    uint64_t hash;
    int64_t expiry_ms;
    int64_t start_ms;           /* stored at: eviction age, IN_PROGRESS start */
    int32_t owner_pid;          /* IN_PROGRESS only */
    uint16_t status;
    uint16_t body_len;
    uint16_t req_len; /* COMPLETED only */
    uint8_t state;
    uint8_t keylen;
    uint8_t pad[4];
};

struct slot {
    _Atomic uint32_t seq;       /* odd while a writer is changing the slot */
    _Atomic uint32_t withdrawn; /* == seq: this version was withdrawn (release) */
    uint64_t csum;              /* over meta, key, fingerprint, req and body */
    struct slot_meta m;
    char fp[SHM_CACHE_FP_LEN];
    char key[SHM_CACHE_KEY_MAX + 1];
    unsigned char req[SHM_CACHE_REQ_MAX];
    unsigned char body[SLOT_SIZE - 2 * sizeof(uint32_t) - sizeof(uint64_t)
                       - sizeof(struct slot_meta) - SHM_CACHE_FP_LEN - (SHM_CACHE_KEY_MAX + 1)
                       - SHM_CACHE_REQ_MAX];
};

static_assert(sizeof(struct slot) == SLOT_SIZE, "a slot is SLOT_SIZE bytes");
static_assert(sizeof(((struct slot *)0)->body) == SHM_CACHE_BODY_MAX,
              "SHM_CACHE_BODY_MAX matches the slot layout");

/* A set's directory entry: its lock and a hint per way (0 = empty). */
struct set_dir {
    alignas(64) _Atomic uint32_t lock;
    _Atomic uint32_t tag[WAYS];
};

struct stripe {
    alignas(64) _Atomic uint64_t c[NCOUNTERS];
};

struct cache_hdr {
    uint64_t magic;
    uint64_t nsets;             /* for a debugger: the handle's copy is used */
    struct stripe stripe[NSTRIPES];
};

/* Per-process handle: copied into each worker by fork. */
struct shm_cache {
    unsigned char *base;
    size_t map_len;
    size_t nsets;
    struct cache_hdr *hdr;
    struct set_dir *dir;
    unsigned char *slots;
    uint64_t k0, k1;            /* SipHash key, random per mapping */
};

#ifdef SHM_CACHE_TESTING
void (*shm_cache_test_hook)(shm_cache_test_point_t point);
int shm_cache_test_constant_hash;
#define TEST_POINT(p) do { if (shm_cache_test_hook != NULL) shm_cache_test_hook(p); } while (0)
#else
#define TEST_POINT(p) ((void)0)
#endif

/* ---- helpers ---------------------------------------------------------- */

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

/* Only ESRCH proves death: EPERM means it exists under another uid.  A pid
 * <= 0 is garbage (and kill(0, 0) would address our process group). */
static bool
pid_alive(pid_t pid)
{
    return pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH);
}

/* Keyed by the mapping's random key, so clients cannot aim keys at a set. */
static uint64_t
key_hash(const shm_cache_t *c, const void *key, size_t keylen)
{
#ifdef SHM_CACHE_TESTING
    if (shm_cache_test_constant_hash)
        return UINT64_C(0x5eed5eed5eed5eed);
#endif
    return shm_hash_siphash24(c->k0, c->k1, key, keylen);
}

static uint64_t
slot_csum(const shm_cache_t *c, const struct slot_meta *m, const void *key, const char *fp,
          const void *req, const void *body)
{
    uint64_t h = c->k1 ^ UINT64_C(0x2545f4914f6cdd1d);

    h = shm_hash_csum(h, m, sizeof(*m));
    h = shm_hash_csum(h, key, m->keylen);
    h = shm_hash_csum(h, fp, SHM_CACHE_FP_LEN);
    if (m->state == ST_COMPLETED) {
        h = shm_hash_csum(h, req, m->req_len);
        h = shm_hash_csum(h, body, m->body_len);
    }
    return h;
}

static bool
meta_sane(const struct slot_meta *m)
{
    return (m->state == ST_IN_PROGRESS || m->state == ST_COMPLETED) && m->keylen >= 1
           && m->body_len <= SHM_CACHE_BODY_MAX && m->req_len <= SHM_CACHE_REQ_MAX
           && (m->state == ST_COMPLETED || (m->body_len == 0 && m->req_len == 0));
}

/* Whether a used slot's entry is whole: sane, and matching its checksum. */
static bool
slot_intact_locked(const shm_cache_t *c, const struct slot *sl)
{
    return meta_sane(&sl->m)
           && slot_csum(c, &sl->m, sl->key, sl->fp, sl->req, sl->body) == sl->csum;
}

static uint32_t
tag_of(uint64_t hash)
{
    uint32_t t = (uint32_t)(hash >> 32);

    return t != 0 ? t : 1;
}

static struct slot *
slot_at(const shm_cache_t *c, size_t si, unsigned w)
{
    return (struct slot *)(c->slots + (si * WAYS + w) * SLOT_SIZE);
}

/* Whether the slot's current version was withdrawn by its owner's release.
 * Exact under the set lock; a reader checks it against the version it read. */
static bool
slot_withdrawn(struct slot *sl)
{
    return atomic_load_explicit(&sl->withdrawn, memory_order_relaxed) ==
           atomic_load_explicit(&sl->seq, memory_order_relaxed);
}

static void
count(const shm_cache_t *c, size_t si, int which)
{
    atomic_fetch_add_explicit(&c->hdr->stripe[si % NSTRIPES].c[which], 1, memory_order_relaxed);
}

static bool
key_ok(const void *key, size_t keylen)
{
    return key != NULL && keylen >= 1 && keylen <= SHM_CACHE_KEY_MAX;
}

/* ---- slot writes: caller holds the set lock --------------------------- */

/* Make the sequence odd (and different from any value a reader saw) before
 * changing the slot; a dead writer's odd value is moved on, not flipped.
 * The new version is not withdrawn: `withdrawn` becomes odd, which no stable
 * (even) sequence equals, and a late release of the old version stores that
 * version's number, which the new sequence has moved past. */
static uint32_t
slot_write_begin_locked(struct slot *sl)
{
    uint32_t v = atomic_load_explicit(&sl->seq, memory_order_relaxed);
    uint32_t odd = (v & 1) ? v + 2 : v + 1;

    atomic_store_explicit(&sl->seq, odd, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&sl->withdrawn, 1, memory_order_relaxed);
    return odd;
}

static void
slot_write_end_locked(struct slot *sl, uint32_t odd)
{
    atomic_store_explicit(&sl->seq, odd + 1, memory_order_release);
}

static void
slot_clear_locked(shm_cache_t *c, size_t si, unsigned w)
{
    struct slot *sl = slot_at(c, si, w);
    uint32_t odd;

    atomic_store_explicit(&c->dir[si].tag[w], 0, memory_order_relaxed);
    odd = slot_write_begin_locked(sl);
    memset(&sl->m, 0, sizeof(sl->m));
    sl->csum = 0;
    slot_write_end_locked(sl, odd);
}

/* sum is slot_csum() of the same entry, computed before taking the lock. */
static void
slot_store_locked(shm_cache_t *c, size_t si, unsigned w, const struct slot_meta *m, const void *key,
                  const char *fp, const void *req, const void *body, uint64_t sum)
{
    struct slot *sl = slot_at(c, si, w);
    size_t half = m->body_len / 2;
    uint32_t odd = slot_write_begin_locked(sl);

    sl->m = *m;
    memcpy(sl->key, key, m->keylen);
    memcpy(sl->fp, fp, SHM_CACHE_FP_LEN);
    if (m->req_len > 0)
        memcpy(sl->req, req, m->req_len);
    /* Two halves, so that a test can stop a writer with the body torn. */
    if (half > 0)
        memcpy(sl->body, body, half);
    TEST_POINT(SHM_CACHE_TP_MID_WRITE);
    if (m->body_len > half)
        memcpy(sl->body + half, (const unsigned char *)body + half, m->body_len - half);
    sl->csum = sum;
    slot_write_end_locked(sl, odd);
    atomic_store_explicit(&c->dir[si].tag[w], tag_of(m->hash), memory_order_relaxed);
}

/* The set lock was taken over from a dead holder: whatever it was writing is
 * half done.  Empty every slot that is odd or fails its checksum, rebuild the
 * tags from what remains. */
static void
set_repair_locked(shm_cache_t *c, size_t si, pid_t dead)
{
    int dropped = 0;

    for (unsigned w = 0; w < WAYS; w++) {
        struct slot *sl = slot_at(c, si, w);
        uint32_t v = atomic_load_explicit(&sl->seq, memory_order_relaxed);
        bool used = sl->m.state != ST_EMPTY;

        if ((v & 1) || (used && !slot_intact_locked(c, sl))) {
            slot_clear_locked(c, si, w);
            dropped++;
            continue;
        }
        atomic_store_explicit(&c->dir[si].tag[w], used ? tag_of(sl->m.hash) : 0,
                              memory_order_relaxed);
    }
    count(c, si, C_REPAIRS);
    log_warn("shm cache: took over set %zu from dead pid %d, dropped %d half-written entries",
             si, (int)dead, dropped);
}

/* ---- set lock --------------------------------------------------------- */

/* Take set si's lock: spin for LOCK_SPIN_NS, then take it over if its
 * holder is dead, then yield until budget_ns (from the start) is spent; a
 * budget of LOCK_SPIN_NS or less never yields (workers).  Returns 0 (held),
 * or -1 when a live process kept it: the caller reports NOT_CACHED. */
static int
set_lock(shm_cache_t *c, size_t si, int64_t budget_ns)
{
    _Atomic uint32_t *lock = &c->dir[si].lock;
    uint32_t me = (uint32_t)getpid();
    int64_t start = 0, waited;

    for (unsigned i = 1; ; i++) {
        uint32_t holder = 0;

        if (atomic_compare_exchange_weak_explicit(lock, &holder, me, memory_order_acquire,
                                                  memory_order_relaxed)) {
            TEST_POINT(SHM_CACHE_TP_LOCKED);
            return 0;
        }
        if (i % LOCK_SPIN_CHECK != 0) {
            cpu_relax();
            continue;
        }
        if (start == 0)
            start = clock_mono_ns();
        waited = clock_mono_ns() - start;
        if (waited < LOCK_SPIN_NS) {
            cpu_relax();
            continue;
        }
        if (holder == 0)
            continue;           /* freed meanwhile: try again */
        /* We never nest, so our own pid here is a dead predecessor's. */
        if (holder == me || !pid_alive((pid_t)holder)) {
            if (atomic_compare_exchange_strong_explicit(lock, &holder, me, memory_order_acquire,
                                                        memory_order_relaxed)) {
                set_repair_locked(c, si, (pid_t)holder);
                TEST_POINT(SHM_CACHE_TP_LOCKED);
                return 0;
            }
            continue;
        }
        if (waited >= budget_ns) {
            count(c, si, C_CONTENDED);
            return -1;
        }
        sched_yield();
    }
}

static void
set_unlock(shm_cache_t *c, size_t si)
{
    atomic_store_explicit(&c->dir[si].lock, 0, memory_order_release);
}

/* Whether way w holds an entry.  Under the set lock the tags are exact
 * (writers keep them so, and a takeover rebuilds them), which spares reading
 * slot pages that were never used. */
static bool
way_used_locked(const shm_cache_t *c, size_t si, unsigned w)
{
    return atomic_load_explicit(&c->dir[si].tag[w], memory_order_relaxed) != 0;
}

/* The way holding key, or -1. */
static int
set_find_locked(shm_cache_t *c, size_t si, uint64_t hash, const void *key, size_t keylen)
{
    uint32_t tag = tag_of(hash);

    for (unsigned w = 0; w < WAYS; w++) {
        const struct slot *sl = slot_at(c, si, w);

        if (atomic_load_explicit(&c->dir[si].tag[w], memory_order_relaxed) == tag &&
            sl->m.hash == hash && sl->m.keylen == keylen && memcmp(sl->key, key, keylen) == 0)
            return (int)w;
    }
    return -1;
}

/* A way to write a new key into: empty or withdrawn, else expired (oldest),
 * else the oldest COMPLETED, else an IN_PROGRESS whose owner died.  A live
 * marker of a live owner is never taken: -1 then.  *evicted tells whether a
 * live entry goes. */
static int
set_victim_locked(shm_cache_t *c, size_t si, int64_t now_ms, bool *evicted)
{
    int expired = -1, oldest = -1;
    int64_t expired_at = 0, oldest_at = 0;

    *evicted = false;
    for (unsigned w = 0; w < WAYS; w++) {
        const struct slot_meta *m = &slot_at(c, si, w)->m;

        if (!way_used_locked(c, si, w) || slot_withdrawn(slot_at(c, si, w)))
            return (int)w;
        if (now_ms >= m->expiry_ms) {
            if (expired < 0 || m->start_ms < expired_at) {
                expired = (int)w;
                expired_at = m->start_ms;
            }
        } else if (m->state == ST_COMPLETED && (oldest < 0 || m->start_ms < oldest_at)) {
            oldest = (int)w;
            oldest_at = m->start_ms;
        }
    }
    if (expired >= 0)
        return expired;
    *evicted = true;
    if (oldest >= 0)
        return oldest;
    for (unsigned w = 0; w < WAYS; w++) {
        const struct slot_meta *m = &slot_at(c, si, w)->m;

        if (m->state == ST_IN_PROGRESS && !pid_alive(m->owner_pid))
            return (int)w;
    }
    *evicted = false;
    return -1;
}

/* Fill *out from a valid meta; fingerprint bytes and body are copied by the
 * caller, which knows where from. */
static void
entry_fill(shm_cache_entry_t *out, const struct slot_meta *m)
{
    out->state = m->state == ST_COMPLETED ? SHM_CACHE_COMPLETED : SHM_CACHE_IN_PROGRESS;
    out->fingerprint[SHM_CACHE_FP_LEN] = '\0';
    out->expiry_ms = m->expiry_ms;
    out->start_ms = m->start_ms;
    out->owner_pid = m->state == ST_IN_PROGRESS ? m->owner_pid : 0;
    out->status = m->state == ST_COMPLETED ? m->status : 0;
    out->body_len = m->state == ST_COMPLETED ? m->body_len : 0;
    out->req_len = m->state == ST_COMPLETED ? m->req_len : 0;
}

/* ---- public API ------------------------------------------------------- */

shm_cache_t *
shm_cache_create(size_t bytes)
{
    const size_t per_set = sizeof(struct set_dir) + WAYS * SLOT_SIZE;
    const size_t hdr_len = (sizeof(struct cache_hdr) + 63) & ~(size_t)63;
    shm_cache_t *c = NULL;
    const char *what;
    uint64_t key[2];
    int saved;

    what = "size check";
    if (bytes < hdr_len + per_set) {
        errno = EINVAL;
        goto fail;
    }
    what = "malloc";
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        goto fail;
    what = "getrandom";
    if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key))
        goto fail;
    c->k0 = key[0];
    c->k1 = key[1];
    c->nsets = (bytes - hdr_len) / per_set;
    c->map_len = hdr_len + c->nsets * per_set;
    what = "mmap";
    c->base = mmap(NULL, c->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (c->base == MAP_FAILED)
        goto fail;
    /* A fresh anonymous mapping is zeroed: every lock free, every slot empty
     * with an even sequence. */
    c->hdr = (struct cache_hdr *)c->base;
    c->dir = (struct set_dir *)(c->base + hdr_len);
    c->slots = c->base + hdr_len + c->nsets * sizeof(struct set_dir);
    c->hdr->magic = CACHE_MAGIC;
    c->hdr->nsets = c->nsets;
    return c;

fail:
    saved = errno;
    log_error("shm cache of %zu bytes: %s failed: %s", bytes, what, strerror(saved));
    free(c);
    errno = saved;
    return NULL;
}

void
shm_cache_destroy(shm_cache_t *c)
{
    if (c == NULL)
        return;
    munmap(c->base, c->map_len);
    free(c);
}

/* Copy way w of set si into *out if it holds key.  Returns 1 (copied, valid;
 * its version in *version), 0 (another key, empty or withdrawn), -1 (kept
 * changing or odd: report UNKNOWN) or -2 (stable but failing its checksum). */
static int
slot_read(shm_cache_t *c, size_t si, unsigned w, uint64_t hash, const void *key,
          size_t keylen, shm_cache_entry_t *out, uint32_t *version)
{
    struct slot *sl = slot_at(c, si, w);

    for (int attempt = 0; attempt < READ_TRIES; attempt++) {
        struct slot_meta m;
        uint64_t sum;
        bool same_key, withdrawn;
        uint32_t v1 = atomic_load_explicit(&sl->seq, memory_order_acquire);

        if (v1 & 1) {
            cpu_relax();
            continue;
        }
        /* These copies may race with a writer; they are trusted only when
         * the sequence is unchanged afterwards. */
        memcpy(&m, &sl->m, sizeof(m));
        same_key = m.state != ST_EMPTY && m.hash == hash && m.keylen == keylen &&
                   memcmp(sl->key, key, keylen) == 0;
        if (same_key) {
            memcpy(out->fingerprint, sl->fp, SHM_CACHE_FP_LEN);
            if (m.state == ST_COMPLETED) {
                memcpy(out->req, sl->req,
                       m.req_len <= SHM_CACHE_REQ_MAX ? m.req_len : SHM_CACHE_REQ_MAX);
                memcpy(out->body, sl->body, m.body_len <= SHM_CACHE_BODY_MAX
                                            ? m.body_len : SHM_CACHE_BODY_MAX);
            }
        }
        sum = sl->csum;
        withdrawn = atomic_load_explicit(&sl->withdrawn, memory_order_relaxed) == v1;
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&sl->seq, memory_order_relaxed) != v1)
            continue;
        if (!same_key || withdrawn)
            return 0;
        if (!meta_sane(&m) || slot_csum(c, &m, key, out->fingerprint, out->req, out->body) != sum)
            return -2;
        entry_fill(out, &m);
        *version = v1;
        return 1;
    }
    return -1;
}

/* Write an entry (m, key, fp, req, body; sum its slot_csum) into way w of the
 * locked set si, or when w < 0 into the way set_victim_locked picks, then
 * unlock the set and count the insert.  Returns 0, or -1 (unlocked too) when
 * every way holds a live marker of a live owner. */
static int
set_write_unlock(shm_cache_t *c, size_t si, int w, int64_t now_ms, const struct slot_meta *m,
                 const void *key, const char *fp, const void *req, const void *body, uint64_t sum)
{
    bool evicted = false;

    if (w < 0)
        w = set_victim_locked(c, si, now_ms, &evicted);
    if (w < 0) {
        set_unlock(c, si);
        return -1;
    }
    slot_store_locked(c, si, (unsigned)w, m, key, fp, req, body, sum);
    set_unlock(c, si);
    count(c, si, C_INSERTS);
    if (evicted)
        count(c, si, C_EVICTIONS);
    return 0;
}

/* Find key's way in set si by its tag and read it without the lock: returns
 * slot_read's answer for the first way that holds the key (*w and *version
 * set), or 0 when none does.  A key lives in one way only. */
static int
set_read(shm_cache_t *c, size_t si, uint64_t hash, const void *key, size_t keylen,
         shm_cache_entry_t *out, unsigned *w, uint32_t *version)
{
    uint32_t tag = tag_of(hash);

    for (unsigned i = 0; i < WAYS; i++) {
        int r;

        if (atomic_load_explicit(&c->dir[si].tag[i], memory_order_relaxed) != tag)
            continue;
        r = slot_read(c, si, i, hash, key, keylen, out, version);
        if (r != 0) {
            *w = i;
            return r;
        }
    }
    return 0;
}

shm_cache_state_t
shm_cache_lookup(shm_cache_t *c, const void *key, size_t keylen, int64_t now_ms,
                 shm_cache_entry_t *out)
{
    uint64_t hash;
    size_t si;
    uint32_t version;
    unsigned w;
    int r;

    if (!key_ok(key, keylen))
        return SHM_CACHE_UNKNOWN;
    hash = key_hash(c, key, keylen);
    si = hash % c->nsets;
    r = set_read(c, si, hash, key, keylen, out, &w, &version);
    if (r == -2)
        count(c, si, C_CORRUPT);
    if (r == 1 && now_ms < out->expiry_ms) {
        count(c, si, C_HITS);
        return out->state;
    }
    count(c, si, C_MISSES);
    return SHM_CACHE_UNKNOWN;
}

shm_cache_result_t
shm_cache_claim(shm_cache_t *c, const void *key, size_t keylen, const char *fingerprint,
                pid_t pid, int64_t now_ms, int64_t expiry_ms, shm_cache_entry_t *out)
{
    struct slot_meta m;
    uint64_t hash, sum;
    size_t si;
    int w;

    if (!key_ok(key, keylen) || fingerprint == NULL || pid <= 0)
        return SHM_CACHE_NOT_CACHED;
    hash = key_hash(c, key, keylen);
    si = hash % c->nsets;
    memset(&m, 0, sizeof(m));
    m.hash = hash;
    m.expiry_ms = expiry_ms;
    m.start_ms = now_ms;
    m.owner_pid = pid;
    m.state = ST_IN_PROGRESS;
    m.keylen = (uint8_t)keylen;
    sum = slot_csum(c, &m, key, fingerprint, NULL, NULL);
    if (set_lock(c, si, LOCK_SPIN_NS) < 0)
        return SHM_CACHE_NOT_CACHED;
    w = set_find_locked(c, si, hash, key, keylen);
    if (w >= 0) {
        struct slot *sl = slot_at(c, si, (unsigned)w);
        bool live = !slot_withdrawn(sl) && now_ms < sl->m.expiry_ms && slot_intact_locked(c, sl)
                    && (sl->m.state == ST_COMPLETED || pid_alive(sl->m.owner_pid));

        if (live) {
            entry_fill(out, &sl->m);
            memcpy(out->fingerprint, sl->fp, SHM_CACHE_FP_LEN);
            memcpy(out->req, sl->req, out->req_len);
            memcpy(out->body, sl->body, out->body_len);
            set_unlock(c, si);
            return SHM_CACHE_EXISTS;
        }
    }
    if (set_write_unlock(c, si, w, now_ms, &m, key, fingerprint, NULL, NULL, sum) < 0)
        return SHM_CACHE_NOT_CACHED;
    return SHM_CACHE_CLAIMED;
}

shm_cache_result_t
shm_cache_store(shm_cache_t *c, const void *key, size_t keylen, const char *fingerprint, int status,
                const void *body, size_t body_len, const void *req, size_t req_len, int64_t now_ms,
                int64_t expiry_ms)
{
    struct slot_meta m;
    uint64_t hash, sum = 0;
    size_t si;
    int w;

    if (!key_ok(key, keylen) || fingerprint == NULL || status < 100 || status > 999
        || (body == NULL && body_len > 0) || (req == NULL && req_len > 0))
        return SHM_CACHE_NOT_CACHED;
    if (req_len > SHM_CACHE_REQ_MAX)
        req_len = 0; /* the answer is kept, the note is not */
    hash = key_hash(c, key, keylen);
    si = hash % c->nsets;
    memset(&m, 0, sizeof(m));
    if (body_len <= SHM_CACHE_BODY_MAX) {
        m.hash = hash;
        m.expiry_ms = expiry_ms;
        m.start_ms = now_ms;
        m.status = (uint16_t)status;
        m.body_len = (uint16_t)body_len;
        m.req_len = (uint16_t)req_len;
        m.state = ST_COMPLETED;
        m.keylen = (uint8_t)keylen;
        sum = slot_csum(c, &m, key, fingerprint, req, body);
    }
    if (set_lock(c, si, LOCK_SPIN_NS) < 0)
        return SHM_CACHE_NOT_CACHED;
    w = set_find_locked(c, si, hash, key, keylen);
    if (body_len > SHM_CACHE_BODY_MAX) {
        /* Whatever the key has here is now superseded: drop it. */
        if (w >= 0)
            slot_clear_locked(c, si, (unsigned)w);
        set_unlock(c, si);
        count(c, si, C_TOO_BIG);
        return SHM_CACHE_NOT_CACHED;
    }
    if (set_write_unlock(c, si, w, now_ms, &m, key, fingerprint, req, body, sum) < 0)
        return SHM_CACHE_NOT_CACHED;
    return SHM_CACHE_STORED;
}

int
shm_cache_release(shm_cache_t *c, const void *key, size_t keylen, pid_t pid)
{
    shm_cache_entry_t e;
    uint64_t hash;
    size_t si;
    uint32_t version;
    unsigned w;

    if (!key_ok(key, keylen))
        return 0;
    hash = key_hash(c, key, keylen);
    si = hash % c->nsets;
    /* Only our own marker, as we read it; a slot that kept changing or fails
     * its checksum is being rewritten or is dead already. */
    if (set_read(c, si, hash, key, keylen, &e, &w, &version) != 1 ||
        e.state != SHM_CACHE_IN_PROGRESS || e.owner_pid != pid)
        return 0;
    atomic_store_explicit(&slot_at(c, si, w)->withdrawn, version, memory_order_release);
    return 1;
}

int
shm_cache_release_pid(shm_cache_t *c, pid_t pid)
{
    uint32_t me = (uint32_t)getpid();
    int dropped = 0, skipped = 0;

    if (pid <= 0)
        return 0;
    for (size_t si = 0; si < c->nsets; si++) {
        uint32_t holder = (uint32_t)pid;

        /* The caller vouches that pid is dead: take its lock without asking. */
        if (atomic_compare_exchange_strong_explicit(&c->dir[si].lock, &holder, me,
                                                    memory_order_acquire, memory_order_relaxed)) {
            set_repair_locked(c, si, pid);
        } else if (set_lock(c, si, BUDGET_MASTER_NS) < 0) {
            skipped++;
            continue;
        }
        for (unsigned w = 0; w < WAYS; w++) {
            const struct slot_meta *m = &slot_at(c, si, w)->m;

            if (way_used_locked(c, si, w) && m->state == ST_IN_PROGRESS && m->owner_pid == pid) {
                slot_clear_locked(c, si, w);
                dropped++;
            }
        }
        set_unlock(c, si);
    }
    if (skipped > 0)
        log_warn("shm cache: %d sets stayed locked while releasing pid %d; "
                 "its markers there expire on their own", skipped, (int)pid);
    return dropped;
}

int
shm_cache_wipe(shm_cache_t *c)
{
    int skipped = 0;

    for (size_t si = 0; si < c->nsets; si++) {
        if (set_lock(c, si, BUDGET_MASTER_NS) < 0) {
            skipped++;
            continue;
        }
        for (unsigned w = 0; w < WAYS; w++) {
            if (way_used_locked(c, si, w))
                slot_clear_locked(c, si, w);
        }
        set_unlock(c, si);
    }
    return skipped;
}

void
shm_cache_stats(shm_cache_t *c, shm_cache_stats_t *st)
{
    uint64_t sum[NCOUNTERS] = { 0 };
    uint64_t entries = 0;

    for (int s = 0; s < NSTRIPES; s++) {
        for (int i = 0; i < NCOUNTERS; i++)
            sum[i] += atomic_load_explicit(&c->hdr->stripe[s].c[i], memory_order_relaxed);
    }
    for (size_t si = 0; si < c->nsets; si++) {
        for (unsigned w = 0; w < WAYS; w++)
            entries += atomic_load_explicit(&c->dir[si].tag[w], memory_order_relaxed) != 0;
    }
    st->hits = sum[C_HITS];
    st->misses = sum[C_MISSES];
    st->inserts = sum[C_INSERTS];
    st->evictions = sum[C_EVICTIONS];
    st->too_big = sum[C_TOO_BIG];
    st->contended = sum[C_CONTENDED];
    st->repairs = sum[C_REPAIRS];
    st->corrupt = sum[C_CORRUPT];
    st->entries = entries;
    st->capacity = (uint64_t)c->nsets * WAYS;
}

#ifdef SHM_CACHE_TESTING
size_t
shm_cache_test_set_of(shm_cache_t *c, const void *key, size_t keylen)
{
    return key_hash(c, key, keylen) % c->nsets;
}

int
shm_cache_test_corrupt(shm_cache_t *c, const void *key, size_t keylen)
{
    uint64_t hash = key_hash(c, key, keylen);
    size_t si = hash % c->nsets;
    int w = set_find_locked(c, si, hash, key, keylen);

    if (w < 0)
        return -1;
    slot_at(c, si, (unsigned)w)->body[0] ^= 0x20;
    return 0;
}

int
shm_cache_test_corrupt_req(shm_cache_t *c, const void *key, size_t keylen)
{
    uint64_t hash = key_hash(c, key, keylen);
    size_t si = hash % c->nsets;
    int w = set_find_locked(c, si, hash, key, keylen);
    struct slot *sl;

    if (w < 0)
        return -1;
    sl = slot_at(c, si, (unsigned)w);
    sl->req[sl->m.req_len > 0 ? sl->m.req_len - 1 : 0] ^= 0x20;
    return 0;
}

#endif
