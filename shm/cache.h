/*
 * shm_cache: the idempotency fast path, shared by the workers of one host.
 *
 * A fixed-size, set-associative table in one shared anonymous mapping that
 * the master creates before forking and keeps across reloads and worker
 * crashes.  It remembers, per Idempotency-Key, either "a request with this
 * fingerprint is executing on this host" (IN_PROGRESS, with the owner's pid)
 * or the first response as sent (COMPLETED: status and body, and the
 * caller's note of the request it answered, so that a replay of the same
 * bytes can be told without parsing it again).
 *
 * PostgreSQL stays the source of truth.  The cache may forget anything at any
 * time (eviction, a full set, contention, a half-written entry, a restart),
 * so every "UNKNOWN" or "NOT_CACHED" below means "ask the database", never
 * "there is no such key".  What the cache does answer is never torn or stale
 * past its expiry: lookups verify a version counter and a checksum.
 *
 * Times are absolute milliseconds on one clock that every process shares;
 * use CLOCK_REALTIME, since expiries mirror the database's wall-clock ones.
 * The cache never reads the clock for expiry itself, which keeps tests
 * deterministic.
 *
 * A request claims its key (an IN_PROGRESS marker), then either stores its
 * response over the marker (COMPLETED) or releases the marker.
 *
 * Locking: lookups and release take no lock; writers serialise per set on a
 * lock word holding the writer's pid, which survives a writer killed at any
 * instruction (see shm_cache_release_pid).  The calls a worker makes (lookup,
 * claim, store, release) never wait more than a few microseconds, and never
 * yield or sleep: when in doubt they report UNKNOWN or NOT_CACHED.
 */
#ifndef PD_SHM_CACHE_H
#define PD_SHM_CACHE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct shm_cache shm_cache_t;

#define SHM_CACHE_KEY_MAX   255     /* Idempotency-Key bytes, 1..255 */
#define SHM_CACHE_FP_LEN    64      /* fingerprint: 64 hex characters */
#define SHM_CACHE_REQ_MAX   320     /* largest request note a slot holds */
#define SHM_CACHE_BODY_MAX  1352    /* largest response body a slot holds */

/* What the cache holds for a key: the state of a copied entry, and what
 * lookup reports (UNKNOWN: nothing it can vouch for). */
typedef enum {
    SHM_CACHE_UNKNOWN = 0,      /* ask the database */
    SHM_CACHE_IN_PROGRESS,      /* claimed: a request with this key runs on this host */
    SHM_CACHE_COMPLETED         /* stored: the first response, status and body */
} shm_cache_state_t;

/* What a claim or a store did. */
typedef enum {
    SHM_CACHE_CLAIMED,          /* claim: our IN_PROGRESS marker is in */
    SHM_CACHE_EXISTS,           /* claim: a live entry exists, see out->state */
    SHM_CACHE_STORED,           /* store: the response is cached */
    SHM_CACHE_NOT_CACHED        /* either: nothing stored (full set, contention, too big) */
} shm_cache_result_t;

/* A copy of one entry, filled by lookup and by claim's EXISTS.  Owned by the
 * caller (about 1.8 KiB: fine on a stack). */
typedef struct shm_cache_entry {
    shm_cache_state_t state;    /* SHM_CACHE_IN_PROGRESS or SHM_CACHE_COMPLETED */
    char fingerprint[SHM_CACHE_FP_LEN + 1];     /* NUL-terminated */
    int64_t expiry_ms;
    pid_t owner_pid;            /* IN_PROGRESS: the worker running it */
    int64_t start_ms;           /* when it was stored (IN_PROGRESS: started) */
    int status;                 /* COMPLETED: HTTP status */
    size_t body_len;            /* COMPLETED: bytes of body */
    size_t req_len;             /* COMPLETED: bytes of req, 0 when none was kept */
    unsigned char req[SHM_CACHE_REQ_MAX]; /* the caller's note of the request */
    unsigned char body[SHM_CACHE_BODY_MAX];
} shm_cache_entry_t;

/* Counters, summed over the mapping's stripes.  They are relaxed atomics
 * updated by every process, so a snapshot is approximate but never torn. */
typedef struct shm_cache_stats {
    uint64_t hits;              /* lookups answered IN_PROGRESS or COMPLETED */
    uint64_t misses;            /* lookups answered UNKNOWN */
    uint64_t inserts;           /* keys claimed and responses stored */
    uint64_t evictions;         /* live entries pushed out of a full set */
    uint64_t too_big;           /* responses larger than a slot */
    uint64_t contended;         /* writes given up on a busy set lock */
    uint64_t repairs;           /* set locks taken over from a dead writer */
    uint64_t corrupt;           /* entries that failed their checksum */
    uint64_t entries;           /* slots in use now (expired, withdrawn included) */
    uint64_t capacity;          /* slots in all */
} shm_cache_stats_t;

/*
 * Map a cache of at most bytes bytes (header plus whole sets of 8 slots of
 * 2 KiB).  Call in the master before forking: the children inherit the
 * mapping and this handle.  Returns NULL with errno set (EINVAL when bytes is
 * too small for one set).
 */
shm_cache_t *shm_cache_create(size_t bytes) __attribute__((warn_unused_result));

/* Unmap this process's view and free the handle.  NULL is ignored.  Other
 * processes keep their mappings. */
void shm_cache_destroy(shm_cache_t *cache);

/*
 * Find key (keylen bytes, compared in full).  Returns COMPLETED or
 * IN_PROGRESS with a copy in *out, or UNKNOWN when absent, expired at
 * now_ms, being rewritten, or failing its checksum.  Reads only: lock-free,
 * never waits.  A marker is reported until its expiry, its owner's release
 * or store, or the master's shm_cache_release_pid of its owner (lookups
 * make no syscalls).
 */
shm_cache_state_t shm_cache_lookup(shm_cache_t *cache, const void *key, size_t keylen,
                                   int64_t now_ms, shm_cache_entry_t *out)
    __attribute__((warn_unused_result));

/*
 * Claim key for a request with this fingerprint (SHM_CACHE_FP_LEN bytes) run
 * by pid: insert an IN_PROGRESS marker expiring at expiry_ms unless a live
 * entry exists.  Returns CLAIMED; EXISTS with a copy in *out (an IN_PROGRESS
 * of a dead owner is not live); or NOT_CACHED (set full of live markers, set
 * lock busy for a few microseconds, bad arguments): then go to the database as
 * for a miss.  After CLAIMED the request must end with store or release.
 */
shm_cache_result_t shm_cache_claim(shm_cache_t *cache, const void *key, size_t keylen,
                                   const char *fingerprint, pid_t pid,
                                   int64_t now_ms, int64_t expiry_ms,
                                   shm_cache_entry_t *out)
    __attribute__((warn_unused_result));

/*
 * Store the response the database now holds for key: overwrites the key's
 * marker or older entry, or takes a slot by age.  Returns STORED, or
 * NOT_CACHED when body_len > SHM_CACHE_BODY_MAX (the key's entry is dropped
 * so nothing stale remains), the set is full of live markers, or its lock
 * stayed busy for a few microseconds, or status is not 100..999: then the
 * caller's marker is still there, and the caller must release it.  req
 * (req_len bytes, may be NULL when 0) is the caller's note of the request
 * that got this answer, for lookups to compare; one longer than
 * SHM_CACHE_REQ_MAX is not kept (req_len 0 in the entry), the answer is.
 * body and req are copied, and covered by the entry's checksum.
 */
shm_cache_result_t shm_cache_store(shm_cache_t *cache, const void *key, size_t keylen,
                                   const char *fingerprint, int status, const void *body,
                                   size_t body_len, const void *req, size_t req_len, int64_t now_ms,
                                   int64_t expiry_ms);

/*
 * Drop pid's IN_PROGRESS marker for key (the request ended without a stored
 * answer, e.g. 503, or store could not store it).  Lock-free: the marker
 * is withdrawn in place, whoever holds the set lock, so it never outlives
 * its request.  Anything else under key is left alone.  Returns 1 when it
 * withdrew a marker, 0 when pid had none for key (it cannot fail).
 */
int shm_cache_release(shm_cache_t *cache, const void *key, size_t keylen, pid_t pid);

/*
 * The master, after reaping worker pid: release any set lock it held
 * (repairing what it was writing) and drop its IN_PROGRESS markers.  pid must
 * be dead and reaped, since its locks are taken without asking.  Returns the
 * number of markers dropped.  Takes each set's lock in turn, briefly.
 */
int shm_cache_release_pid(shm_cache_t *cache, pid_t pid);

/* Empty every set (tests; or a restart that must not replay old answers).
 * Sets whose lock stays busy are skipped; returns how many were. */
int shm_cache_wipe(shm_cache_t *cache);

/* Snapshot the counters into *stats.  Lock-free; reads every set's tags, so
 * call it for /metrics, not per request. */
void shm_cache_stats(shm_cache_t *cache, shm_cache_stats_t *stats);

#ifdef SHM_CACHE_TESTING
/* Test builds only (cache.c compiled with -DSHM_CACHE_TESTING). */
typedef enum {
    SHM_CACHE_TP_LOCKED,        /* a writer just took a set lock */
    SHM_CACHE_TP_MID_WRITE      /* a slot is half written, its version odd */
} shm_cache_test_point_t;

/* Called at each point when set; a test stops or kills the process there. */
extern void (*shm_cache_test_hook)(shm_cache_test_point_t point);

/* When non-zero every key hashes alike (same set, same tag), so that only the
 * full key comparison tells keys apart. */
extern int shm_cache_test_constant_hash;

/* The set index of key, to build colliding keys. */
size_t shm_cache_test_set_of(shm_cache_t *cache, const void *key, size_t keylen);

/* Flip one body byte of key's entry without touching its version, as a stray
 * write would.  Returns 0, or -1 when key has no entry. */
int shm_cache_test_corrupt(shm_cache_t *cache, const void *key, size_t keylen);

/* The same for the last byte of the entry's req (its note of the request). */
int shm_cache_test_corrupt_req(shm_cache_t *cache, const void *key, size_t keylen);
#endif

#endif
