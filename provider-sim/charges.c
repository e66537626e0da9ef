/*
 * charges: a chained hash table of charges with two indexes, by idempotency
 * key and by order id, over the same entries.
 *
 * Entries are never removed (a sim's run is short), so pointers to charges
 * stay valid until sim_charges_free().  The table doubles when it holds as
 * many entries as buckets.  FNV-1a is not flood-resistant; that is fine for
 * a test tool listening on loopback.  Single-threaded, no locking.
 */
#include "config.h"

#include "provider-sim/charges.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define INITIAL_BUCKETS 1024

typedef struct entry {
    sim_charge_t c;
    struct entry *next_key;         /* chain in by_key */
    struct entry *next_order;       /* chain in by_order */
    uint64_t hkey, horder;
} entry_t;

struct sim_charges {
    int64_t seed;
    double decline_rate, timeout_rate;
    entry_t **by_key, **by_order;
    size_t nbuckets;                /* a power of two */
    sim_charges_stats_t stats;
};

static uint64_t
fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* SHA-256 of "<seed>:<purpose>:<key>", streamed so that keys of any length
 * need no buffer.  Returns 0, or -1 (out of memory) with out zeroed. */
static int
digest(int64_t seed, const char *purpose, const char *key, unsigned char out[32])
{
    char prefix[96];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int len = 0;
    int n = snprintf(prefix, sizeof(prefix), "%" PRId64 ":%s:", seed, purpose);
    int ok = ctx != NULL && n > 0 && (size_t)n < sizeof(prefix)
        && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1
        && EVP_DigestUpdate(ctx, prefix, (size_t)n) == 1
        && EVP_DigestUpdate(ctx, key, strlen(key)) == 1
        && EVP_DigestFinal_ex(ctx, out, &len) == 1 && len == 32;

    EVP_MD_CTX_free(ctx);
    if (!ok)
        memset(out, 0, 32);
    return ok ? 0 : -1;
}

double
sim_charges_uniform(int64_t seed, const char *purpose, const char *key)
{
    unsigned char d[32];
    uint64_t v = 0;

    /* Out of memory: answer "no" to every rate below 1 rather than guess. */
    if (digest(seed, purpose, key, d) < 0)
        return 0x1.fffffffffffffp-1;
    for (int i = 0; i < 8; i++)
        v = v << 8 | d[i];
    return (double)(v >> 11) * 0x1p-53;
}

sim_charges_t *
sim_charges_new(int64_t seed, double decline_rate, double timeout_rate)
{
    sim_charges_t *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->seed = seed;
    s->decline_rate = decline_rate;
    s->timeout_rate = timeout_rate;
    s->nbuckets = INITIAL_BUCKETS;
    s->by_key = calloc(s->nbuckets, sizeof(*s->by_key));
    s->by_order = calloc(s->nbuckets, sizeof(*s->by_order));
    if (s->by_key == NULL || s->by_order == NULL) {
        sim_charges_free(s);
        return NULL;
    }
    return s;
}

void
sim_charges_free(sim_charges_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; s->by_key != NULL && i < s->nbuckets; i++) {
        entry_t *e = s->by_key[i];
        while (e != NULL) {
            entry_t *next = e->next_key;
            free((char *)e->c.key);
            free((char *)e->c.order_id);
            free((char *)e->c.currency);
            free(e);
            e = next;
        }
    }
    free(s->by_key);
    free(s->by_order);
    free(s);
}

sim_charge_t *
sim_charges_find(const sim_charges_t *s, const char *key)
{
    uint64_t h = fnv1a(key);

    for (entry_t *e = s->by_key[h & (s->nbuckets - 1)]; e != NULL; e = e->next_key) {
        if (e->hkey == h && strcmp(e->c.key, key) == 0)
            return &e->c;
    }
    return NULL;
}

sim_charge_t *
sim_charges_find_order(const sim_charges_t *s, const char *order_id)
{
    uint64_t h = fnv1a(order_id);

    /* New entries go to the head of their chain: the first hit is the newest. */
    for (entry_t *e = s->by_order[h & (s->nbuckets - 1)]; e != NULL; e = e->next_order) {
        if (e->horder == h && strcmp(e->c.order_id, order_id) == 0)
            return &e->c;
    }
    return NULL;
}

/*
 * Double the buckets.  find_order relies on each by_order chain being newest
 * first; doubling splits each old chain in two without mixing chains, so
 * reinserting every old chain oldest first (at the heads) keeps that order.
 */
static int
grow(sim_charges_t *s)
{
    size_t n = s->nbuckets * 2, count = 0, total = (size_t)s->stats.charges;
    entry_t **by_key = calloc(n, sizeof(*by_key));
    entry_t **by_order = calloc(n, sizeof(*by_order));
    entry_t **all = calloc(total, sizeof(*all));

    if (by_key == NULL || by_order == NULL || all == NULL) {
        free(by_key);
        free(by_order);
        free(all);
        return -1;
    }
    /* Collect each by_order chain reversed, i.e. oldest first. */
    for (size_t i = 0; i < s->nbuckets; i++) {
        size_t start = count;
        for (entry_t *e = s->by_order[i]; e != NULL; e = e->next_order)
            all[count++] = e;
        for (size_t a = start, b = count; a + 1 < b; a++, b--) {
            entry_t *t = all[a];
            all[a] = all[b - 1];
            all[b - 1] = t;
        }
    }
    for (size_t i = 0; i < count; i++) {
        entry_t *e = all[i];
        size_t bk = e->hkey & (n - 1), bo = e->horder & (n - 1);

        e->next_key = by_key[bk];
        by_key[bk] = e;
        e->next_order = by_order[bo];
        by_order[bo] = e;
    }
    free(all);
    free(s->by_key);
    free(s->by_order);
    s->by_key = by_key;
    s->by_order = by_order;
    s->nbuckets = n;
    return 0;
}

sim_charge_t *
sim_charges_add(sim_charges_t *s, const char *key, const char *order_id,
                int64_t amount_cents, const char *currency)
{
    entry_t *e;
    unsigned char d[32];
    size_t bk, bo;

    /* A failed growth only lengthens the chains: carry on. */
    if ((size_t)s->stats.charges >= s->nbuckets)
        (void)grow(s);
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->c.key = strdup(key);
    e->c.order_id = strdup(order_id);
    e->c.currency = strdup(currency);
    if (e->c.key == NULL || e->c.order_id == NULL || e->c.currency == NULL) {
        free((char *)e->c.key);
        free((char *)e->c.order_id);
        free((char *)e->c.currency);
        free(e);
        return NULL;
    }
    e->c.amount_cents = amount_cents;
    e->c.declined = sim_charges_uniform(s->seed, "decline", key) < s->decline_rate;
    e->c.timeout = sim_charges_uniform(s->seed, "timeout", key) < s->timeout_rate;
    (void)digest(s->seed, "charge", key, d);
    memcpy(e->c.charge_id, "ch_", 3);
    memcpy(e->c.event_id, "evt_", 4);
    for (int i = 0; i < 12; i++) {
        snprintf(e->c.charge_id + 3 + 2 * i, 3, "%02x", d[i]);
        snprintf(e->c.event_id + 4 + 2 * i, 3, "%02x", d[i]);
    }
    e->hkey = fnv1a(key);
    e->horder = fnv1a(order_id);
    bk = e->hkey & (s->nbuckets - 1);
    bo = e->horder & (s->nbuckets - 1);
    e->next_key = s->by_key[bk];
    s->by_key[bk] = e;
    e->next_order = s->by_order[bo];
    s->by_order[bo] = e;
    s->stats.charges++;
    s->stats.pending++;
    return &e->c;
}

void
sim_charges_attempt(sim_charges_t *s, sim_charge_t *c)
{
    c->attempts++;
    s->stats.charge_requests++;
}

void
sim_charges_settle(sim_charges_t *s, sim_charge_t *c)
{
    if (c->settled)
        return;
    c->settled = 1;
    s->stats.pending--;
    if (c->declined)
        s->stats.declined++;
    else
        s->stats.succeeded++;
}

const char *
sim_charges_status(const sim_charge_t *c)
{
    if (!c->settled)
        return "pending";
    return c->declined ? "declined" : "succeeded";
}

void
sim_charges_stats(const sim_charges_t *s, sim_charges_stats_t *out)
{
    *out = s->stats;
}
