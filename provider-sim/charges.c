/*
 * charges: a chained hash table of charges with two indexes, by idempotency
 * key and by order id, over the same entries, plus an array of the entries
 * in creation order (a charge's "seq", its index there).
 *
 * Entries are never removed (a provider never forgets a charge), so
 * pointers to charges stay valid until sim_charges_free().  The table
 * doubles when it holds as many entries as buckets.  FNV-1a is not
 * flood-resistant; that is fine for a test tool.
 *
 * Journal: each line is a whole charge, {"seq": n, "key": ..., "state": ...},
 * so replaying is "the last line of each seq wins"; a new charge's first
 * line comes after those of every older charge (sync writes the dirty list
 * in the order the charges were first touched), so replay recreates the
 * entries in their order.  A tombstone whose order id is already some
 * charge's key is kept out of the key index (that key answers as before);
 * replay makes the same choice as the live run did.  Counters are kept by
 * subtracting a charge's contribution before a change and adding it back
 * after (account()), whether the change comes from a request or a replay.
 * Single-threaded, no locking.
 */
#include "config.h"

#include "provider-sim/charges.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "provider-sim/journal.h"

#define INITIAL_BUCKETS 1024

typedef struct entry {
    sim_charge_t c;                 /* first: a sim_charge_t * is an entry_t * */
    struct entry *next_key;         /* chain in by_key */
    struct entry *next_order;       /* chain in by_order */
    struct entry *next_dirty;       /* in the dirty list */
    uint64_t hkey, horder;
    size_t seq;                     /* index in all[] */
    int keyed;                      /* in by_key */
    int dirty;                      /* changed since the last sync */
} entry_t;

struct sim_charges {
    int64_t seed;
    double decline_rate, timeout_rate;
    entry_t **by_key, **by_order;
    size_t nbuckets;                /* a power of two */
    entry_t **all;                  /* creation order */
    size_t nall, capall;
    entry_t *dirty_head, **dirty_tail;
    sim_journal_t *journal;
    sim_charges_stats_t stats;
};

static const char *const state_names[] = {
    [SIM_CHARGE_PENDING] = "pending", [SIM_CHARGE_SUCCEEDED] = "succeeded",
    [SIM_CHARGE_DECLINED] = "declined", [SIM_CHARGE_CANCELED] = "canceled",
    [SIM_CHARGE_REFUNDED] = "refunded", [SIM_CHARGE_TOMBSTONE] = "tombstone",
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

/* Set charge_id and event_id from a 24-hex-digit tail. */
static void
set_ids(sim_charge_t *c, const char *hex24)
{
    snprintf(c->charge_id, sizeof(c->charge_id), "ch_%.24s", hex24);
    snprintf(c->event_id, sizeof(c->event_id), "evt_%.24s", hex24);
}

/* The documented charge id of key. */
static void
decide_ids(const sim_charges_t *s, sim_charge_t *c)
{
    unsigned char d[32];
    char hex[25];

    (void)digest(s->seed, "charge", c->key, d);
    for (int i = 0; i < 12; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    set_ids(c, hex);
}

/* Add (sign 1) or take away (sign -1) c's share of the counters. */
static void
account(sim_charges_t *s, const sim_charge_t *c, int sign)
{
    sim_charges_stats_t *st = &s->stats;

    if (c->state == SIM_CHARGE_TOMBSTONE)
        st->tombstones += sign;
    else
        st->charges += sign;
    st->charge_requests += sign * c->attempts;
    switch (c->state) {
    case SIM_CHARGE_PENDING: st->pending += sign; break;
    case SIM_CHARGE_SUCCEEDED: st->succeeded += sign; break;
    case SIM_CHARGE_DECLINED: st->declined += sign; break;
    case SIM_CHARGE_CANCELED: st->canceled += sign; break;
    case SIM_CHARGE_REFUNDED: st->refunded += sign; break;
    case SIM_CHARGE_TOMBSTONE: break;
    }
}

/* Queue e for the next sync (once). */
static void
touch(sim_charges_t *s, sim_charge_t *c)
{
    entry_t *e = (entry_t *)c;

    if (e->dirty)
        return;
    e->dirty = 1;
    e->next_dirty = NULL;
    *s->dirty_tail = e;
    s->dirty_tail = &e->next_dirty;
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
    s->dirty_tail = &s->dirty_head;
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
    if (s->dirty_head != NULL)
        log_warn("stopping with charges not written to the state_file (see the errors above)");
    for (size_t i = 0; i < s->nall; i++) {
        entry_t *e = s->all[i];

        free((char *)e->c.key);
        free((char *)e->c.order_id);
        free((char *)e->c.currency);
        free(e);
    }
    sim_journal_close(s->journal);
    free(s->all);
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

static void
link_entry(sim_charges_t *s, entry_t *e)
{
    size_t bo = e->horder & (s->nbuckets - 1);

    if (e->keyed) {
        size_t bk = e->hkey & (s->nbuckets - 1);

        e->next_key = s->by_key[bk];
        s->by_key[bk] = e;
    }
    e->next_order = s->by_order[bo];
    s->by_order[bo] = e;
}

/* Double the buckets; relinking oldest first (at the chain heads) keeps
 * each by_order chain newest first, as find_order relies on. */
static int
grow(sim_charges_t *s)
{
    size_t n = s->nbuckets * 2;
    entry_t **by_key = calloc(n, sizeof(*by_key));
    entry_t **by_order = calloc(n, sizeof(*by_order));

    if (by_key == NULL || by_order == NULL) {
        free(by_key);
        free(by_order);
        return -1;
    }
    free(s->by_key);
    free(s->by_order);
    s->by_key = by_key;
    s->by_order = by_order;
    s->nbuckets = n;
    for (size_t i = 0; i < s->nall; i++)
        link_entry(s, s->all[i]);
    return 0;
}

/* A new entry at the end of the creation order, linked into the indexes
 * (the key index only when keyed); all else zero.  NULL when out of memory. */
static entry_t *
insert(sim_charges_t *s, const char *key, const char *order_id, const char *currency, int keyed)
{
    entry_t *e;

    /* A failed growth only lengthens the chains: carry on. */
    if (s->nall >= s->nbuckets)
        (void)grow(s);
    if (s->nall == s->capall) {
        size_t cap = s->capall ? s->capall * 2 : 256;
        entry_t **all = realloc(s->all, cap * sizeof(*all));

        if (all == NULL)
            return NULL;
        s->all = all;
        s->capall = cap;
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->c.key = strdup(key);
    e->c.order_id = strdup(order_id);
    e->c.currency = currency != NULL ? strdup(currency) : NULL;
    if (e->c.key == NULL || e->c.order_id == NULL || (currency != NULL && e->c.currency == NULL)) {
        free((char *)e->c.key);
        free((char *)e->c.order_id);
        free((char *)e->c.currency);
        free(e);
        return NULL;
    }
    e->hkey = fnv1a(key);
    e->horder = fnv1a(order_id);
    e->keyed = keyed;
    e->seq = s->nall;
    s->all[s->nall++] = e;
    link_entry(s, e);
    return e;
}

sim_charge_t *
sim_charges_add(sim_charges_t *s, const char *key, const char *order_id,
                int64_t amount_cents, const char *currency, int hold, int64_t now_ms)
{
    entry_t *e = insert(s, key, order_id, currency, 1);
    sim_charge_t *c;

    if (e == NULL)
        return NULL;
    c = &e->c;
    c->amount_cents = amount_cents;
    c->declined = sim_charges_uniform(s->seed, "decline", key) < s->decline_rate;
    c->timeout = sim_charges_uniform(s->seed, "timeout", key) < s->timeout_rate;
    c->notify = hold || c->timeout;
    c->state = c->notify ? SIM_CHARGE_PENDING
             : c->declined ? SIM_CHARGE_DECLINED : SIM_CHARGE_SUCCEEDED;
    c->attempts = 1;
    c->created_ms = now_ms;
    decide_ids(s, c);
    account(s, c, 1);
    touch(s, c);
    return c;
}

void
sim_charges_attempt(sim_charges_t *s, sim_charge_t *c)
{
    c->attempts++;
    s->stats.charge_requests++;
    touch(s, c);
}

void
sim_charges_settle(sim_charges_t *s, sim_charge_t *c)
{
    if (c->state != SIM_CHARGE_PENDING)
        return;
    account(s, c, -1);
    c->state = c->declined ? SIM_CHARGE_DECLINED : SIM_CHARGE_SUCCEEDED;
    account(s, c, 1);
    touch(s, c);
}

void
sim_charges_notified(sim_charges_t *s, sim_charge_t *c)
{
    if (c->notified)
        return;
    c->notified = 1;
    touch(s, c);
}

sim_charge_t *
sim_charges_cancel(sim_charges_t *s, const char *order_id, int64_t now_ms)
{
    sim_charge_t *newest = sim_charges_find_order(s, order_id);
    uint64_t h = fnv1a(order_id);
    entry_t *e;

    if (newest == NULL) {
        /* The order id is the tombstone's key, unless some charge has it. */
        e = insert(s, order_id, order_id, NULL, sim_charges_find(s, order_id) == NULL);
        if (e == NULL)
            return NULL;
        e->c.state = SIM_CHARGE_TOMBSTONE;
        e->c.created_ms = now_ms;
        decide_ids(s, &e->c);
        account(s, &e->c, 1);
        touch(s, &e->c);
        return &e->c;
    }
    for (e = s->by_order[h & (s->nbuckets - 1)]; e != NULL; e = e->next_order) {
        sim_charge_t *c = &e->c;

        if (e->horder != h || strcmp(c->order_id, order_id) != 0)
            continue;
        if (c->state != SIM_CHARGE_PENDING && c->state != SIM_CHARGE_SUCCEEDED)
            continue;
        account(s, c, -1);
        if (c->state == SIM_CHARGE_PENDING) {
            c->state = SIM_CHARGE_CANCELED;
        } else {
            c->state = SIM_CHARGE_REFUNDED;
            c->refunded_cents = c->amount_cents;
        }
        account(s, c, 1);
        touch(s, c);
    }
    return newest;
}

/* ---- the journal ---- */

static json_object *
row(const entry_t *e)
{
    const sim_charge_t *c = &e->c;
    json_object *o = json_object_new_object();

    if (o == NULL)
        return NULL;
    json_object_object_add(o, "seq", json_object_new_int64((int64_t)e->seq));
    json_object_object_add(o, "key", json_object_new_string(c->key));
    json_object_object_add(o, "order_id", json_object_new_string(c->order_id));
    json_object_object_add(o, "state", json_object_new_string(state_names[c->state]));
    json_object_object_add(o, "amount_cents", json_object_new_int64(c->amount_cents));
    json_object_object_add(o, "currency", c->currency ? json_object_new_string(c->currency) : NULL);
    json_object_object_add(o, "charge_id", json_object_new_string(c->charge_id));
    json_object_object_add(o, "declined", json_object_new_boolean(c->declined));
    json_object_object_add(o, "timeout", json_object_new_boolean(c->timeout));
    json_object_object_add(o, "notify", json_object_new_boolean(c->notify));
    json_object_object_add(o, "notified", json_object_new_boolean(c->notified));
    json_object_object_add(o, "attempts", json_object_new_int64(c->attempts));
    json_object_object_add(o, "refunded_cents", json_object_new_int64(c->refunded_cents));
    json_object_object_add(o, "created_ms", json_object_new_int64(c->created_ms));
    return o;
}

int
sim_charges_sync(sim_charges_t *s)
{
    while (s->dirty_head != NULL) {
        entry_t *e = s->dirty_head;

        if (s->journal != NULL) {
            json_object *o = row(e);
            int rc = o != NULL ? sim_journal_append(s->journal, o) : -1;

            json_object_put(o);
            if (rc < 0) {
                log_error("charge %s of order %s: not written to the state_file: a restart "
                          "would forget its latest change", e->c.charge_id, e->c.order_id);
                return -1;
            }
        }
        s->dirty_head = e->next_dirty;
        if (s->dirty_head == NULL)
            s->dirty_tail = &s->dirty_head;
        e->dirty = 0;
        e->next_dirty = NULL;
    }
    return 0;
}

static const char *
get_string(json_object *o, const char *name)
{
    json_object *v;

    return json_object_object_get_ex(o, name, &v) && json_object_is_type(v, json_type_string)
        ? json_object_get_string(v) : NULL;
}

/* An integer member >= 0 into *out; -1 when missing or not one. */
static int
get_int(json_object *o, const char *name, int64_t *out)
{
    json_object *v;

    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_int)
        || json_object_get_int64(v) < 0)
        return -1;
    *out = json_object_get_int64(v);
    return 0;
}

static int
get_bool(json_object *o, const char *name, int *out)
{
    json_object *v;

    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_boolean))
        return -1;
    *out = json_object_get_boolean(v);
    return 0;
}

/* One journal line: the whole charge with sequence number seq.  The
 * store's own format; anything else stops the start (see journal.h). */
static int
replay_row(void *arg, json_object *o, char *err, size_t errlen)
{
    sim_charges_t *s = arg;
    const char *key = get_string(o, "key"), *order_id = get_string(o, "order_id");
    const char *state = get_string(o, "state"), *currency = get_string(o, "currency");
    const char *charge_id = get_string(o, "charge_id");
    sim_charge_t v;
    int64_t seq;
    entry_t *e;
    size_t st;

    memset(&v, 0, sizeof(v));
    if (get_int(o, "seq", &seq) < 0 || key == NULL || order_id == NULL || state == NULL
        || get_int(o, "amount_cents", &v.amount_cents) < 0 || charge_id == NULL
        || strlen(charge_id) != 27 || strncmp(charge_id, "ch_", 3) != 0
        || get_bool(o, "declined", &v.declined) < 0 || get_bool(o, "timeout", &v.timeout) < 0
        || get_bool(o, "notify", &v.notify) < 0 || get_bool(o, "notified", &v.notified) < 0
        || get_int(o, "attempts", &v.attempts) < 0
        || get_int(o, "refunded_cents", &v.refunded_cents) < 0
        || get_int(o, "created_ms", &v.created_ms) < 0) {
        snprintf(err, errlen, "a charge record with a field missing or of the wrong type");
        return -1;
    }
    for (st = 0; st < sizeof(state_names) / sizeof(state_names[0]); st++) {
        if (strcmp(state, state_names[st]) == 0)
            break;
    }
    if (st == sizeof(state_names) / sizeof(state_names[0])) {
        snprintf(err, errlen, "unknown charge state \"%.32s\"", state);
        return -1;
    }
    if (st != SIM_CHARGE_TOMBSTONE && currency == NULL) {
        snprintf(err, errlen, "a charge without a currency");
        return -1;
    }
    if ((uint64_t)seq > s->nall) {
        snprintf(err, errlen, "charge %" PRId64 " before charge %zu", seq, s->nall);
        return -1;
    }
    if ((size_t)seq == s->nall) {
        int keyed = st != SIM_CHARGE_TOMBSTONE || sim_charges_find(s, key) == NULL;

        e = insert(s, key, order_id, currency, keyed);
        if (e == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    } else {
        e = s->all[seq];
        if (strcmp(e->c.key, key) != 0 || strcmp(e->c.order_id, order_id) != 0) {
            snprintf(err, errlen, "charge %" PRId64 " changed its key or order id", seq);
            return -1;
        }
        account(s, &e->c, -1);
    }
    e->c.amount_cents = v.amount_cents;
    e->c.declined = v.declined;
    e->c.timeout = v.timeout;
    e->c.notify = v.notify;
    e->c.notified = v.notified;
    e->c.attempts = v.attempts;
    e->c.refunded_cents = v.refunded_cents;
    e->c.created_ms = v.created_ms;
    e->c.state = (sim_charge_state_t)st;
    set_ids(&e->c, charge_id + 3);
    account(s, &e->c, 1);
    return 0;
}

int
sim_charges_journal(sim_charges_t *s, const char *path, char *err, size_t errlen)
{
    s->journal = sim_journal_open(path, replay_row, s, err, errlen);
    if (s->journal == NULL)
        return -1;
    log_info("state_file %s: %zu records replayed: %lld charges (%lld pending), %lld tombstones",
             path, sim_journal_replayed(s->journal), (long long)s->stats.charges,
             (long long)s->stats.pending, (long long)s->stats.tombstones);
    return 0;
}

/* ---- reading ---- */

void
sim_charges_each(const sim_charges_t *s, void (*fn)(void *arg, sim_charge_t *c), void *arg)
{
    for (size_t i = 0; i < s->nall; i++)
        fn(arg, &s->all[i]->c);
}

const char *
sim_charges_status(const sim_charge_t *c)
{
    return c->state == SIM_CHARGE_TOMBSTONE ? "canceled" : state_names[c->state];
}

int
sim_charges_refuses(const sim_charge_t *c)
{
    return c->state == SIM_CHARGE_CANCELED || c->state == SIM_CHARGE_REFUNDED
        || c->state == SIM_CHARGE_TOMBSTONE;
}

int64_t
sim_charges_held_cents(const sim_charge_t *c)
{
    if (c->state == SIM_CHARGE_SUCCEEDED || c->state == SIM_CHARGE_REFUNDED)
        return c->amount_cents - c->refunded_cents;
    return 0;
}

void
sim_charges_stats(const sim_charges_t *s, sim_charges_stats_t *out)
{
    *out = s->stats;
}
