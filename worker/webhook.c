/*
 * webhook: verify, validate, apply.
 *
 * The signature is checked over the raw body before anything parses it, with
 * every configured secret (rotation) and in constant time (common/whsig.c);
 * a timestamp outside webhook_tolerance is refused before the signature is
 * even looked at.  Only then is the body parsed, and one webhook_apply() call
 * records the event, moves the order and writes the ledger in a single
 * transaction.  An event id seen before is a duplicate whatever it says, so
 * a replayed webhook can never apply twice.  A call that did not commit is
 * answered 503, never 200, so the provider delivers the event again.  A PAID
 * event for a FAILED order is never dropped: PostgreSQL opens a reversal and
 * the worker asks the provider to cancel-or-refund (worker/reversal).
 * Like checkout.c, the file reads in the order a request runs: the handler,
 * then the step that answers.
 */
#include "config.h"

#include "worker/webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>
#include <openssl/crypto.h>

#include "common/log.h"
#include "common/whsig.h"
#include "worker/store.h"
#include "worker/validate.h"
#include "worker/worker.h"

struct webhook_keys {
    size_t n;
    whsig_key_t keys[];
};

/* An event on its way through webhook_apply. */
typedef struct {
    http_req_t *r;
    char order_id[37];
} apply_t;

static void apply_done(void *arg, const store_apply_t *a, const store_err_t *err);

webhook_keys_t *
webhook_keys_new(const conf_t *conf)
{
    size_t n = conf->webhook_secrets.n;
    webhook_keys_t *k = calloc(1, sizeof(*k) + n * sizeof(whsig_key_t));
    char err[256];

    if (k == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (whsig_key_parse(conf->webhook_secrets.items[i], &k->keys[i], err, sizeof(err)) < 0) {
            log_error("webhook_secret %zu: %s", i + 1, err);
            webhook_keys_free(k);
            return NULL;
        }
    }
    k->n = n;
    return k;
}

void
webhook_keys_free(webhook_keys_t *k)
{
    if (k == NULL)
        return;
    /* Secrets do not linger in freed memory. */
    OPENSSL_cleanse(k->keys, k->n * sizeof(k->keys[0]));
    free(k);
}

void
webhook_handle(http_req_t *r)
{
    worker_t *w = http_req_worker(r);
    const conf_t *conf = worker_conf(w);
    const webhook_keys_t *keys = worker_webhook_keys(w);
    size_t len = http_req_body_length(r);
    const char *body;
    validate_webhook_event_t ev;
    whsig_result_t v;
    validate_error_t e;

    if (keys == NULL || keys->n == 0) {
        worker_count(w, SHM_METRICS_WEBHOOK_SIGNATURE_INVALID);
        http_reply_error(r, 401, "signature_invalid", "no webhook secret is configured", NULL);
        return;
    }
    if ((int64_t)len > conf->max_body_size) {
        http_reply_error(r, 413, "payload_too_large", "the body is too large", NULL);
        return;
    }
    if ((body = http_req_body(r, &len)) == NULL) {
        worker_count(w, SHM_METRICS_WEBHOOK_UNAVAILABLE);
        http_reply_unavailable(r, "out of memory");
        return;
    }
    v = whsig_verify(keys->keys, keys->n, http_req_header(r, "webhook-id"),
                     http_req_header(r, "webhook-timestamp"),
                     http_req_header(r, "webhook-signature"), body, len,
                     (int64_t)time(NULL), conf->webhook_tolerance_ms / 1000);
    if (v != WHSIG_OK) {
        req_log_warn(r, "webhook refused: signature %s", whsig_result_name(v));
        worker_count(w, v == WHSIG_EXPIRED ? SHM_METRICS_WEBHOOK_SIGNATURE_EXPIRED
                           : SHM_METRICS_WEBHOOK_SIGNATURE_INVALID);
        if (v == WHSIG_EXPIRED)
            http_reply_error(r, 401, "signature_expired",
                             "webhook-timestamp is outside the tolerance", NULL);
        else
            http_reply_error(r, 401, "signature_invalid", "the webhook signature is not valid",
                             NULL);
        return;
    }

    if (validate_webhook_event(body, len, &ev, &e) < 0) {
        worker_count(w, SHM_METRICS_WEBHOOK_INVALID);
        http_reply_error(r, e.status, e.code, e.message, e.field[0] != '\0' ? e.field : NULL);
        return;
    }
    {
        /* The raw body is stored as received: it is what was signed. */
        char *payload = strndup(body, len);
        apply_t *ap = calloc(1, sizeof(*ap));
        store_apply_req_t q = {
            .event_id = ev.event_id, .order_id = ev.order_id, .payload = payload,
            .paid = ev.paid,
        };

        if (ap != NULL) {
            ap->r = r;
            snprintf(ap->order_id, sizeof(ap->order_id), "%s", ev.order_id);
        }
        if (payload == NULL || ap == NULL
            || store_webhook_apply(worker_db(w), &q, apply_done, ap) < 0) {
            free(ap);
            worker_count(w, SHM_METRICS_WEBHOOK_UNAVAILABLE);
            http_reply_unavailable(r, "the database is unavailable");
        }
        free(payload);
    }
}

static void
apply_done(void *arg, const store_apply_t *a, const store_err_t *err)
{
    apply_t *ap = arg;
    http_req_t *r = ap->r;
    worker_t *w = http_req_worker(r);
    json_object *body;

    if (err != NULL) {
        /* Not committed: nothing was recorded, and the provider delivers a
         * non-2xx event again later.  A cause that retrying cannot fix is
         * an error for the operator, still not a success. */
        worker_count(w, SHM_METRICS_WEBHOOK_UNAVAILABLE);
        if (err->transient)
            req_log_warn(r, "webhook_apply did not commit: %s", err->message);
        else
            req_log_error(r, "webhook_apply did not commit: %s", err->message);
        http_reply_unavailable(r, "the database is unavailable");
        free(ap);
        return;
    }
    if (a->result == STORE_APPLY_NOT_FOUND) {
        worker_count(w, SHM_METRICS_WEBHOOK_NOT_FOUND);
        http_reply_error(r, 404, "order_not_found", "no such order", "order_id");
        free(ap);
        return;
    }
    body = json_object_new_object();
    json_object_object_add(body, "ok", json_object_new_boolean(1));
    if (a->result == STORE_APPLY_DUPLICATE) {
        worker_count(w, SHM_METRICS_WEBHOOK_DUPLICATE);
        json_object_object_add(body, "duplicate", json_object_new_boolean(1));
    } else {
        int applied = a->result == STORE_APPLY_APPLIED;

        worker_count(w, applied       ? SHM_METRICS_WEBHOOK_APPLIED
                        : a->conflict ? SHM_METRICS_WEBHOOK_CONFLICT
                                      : SHM_METRICS_WEBHOOK_NOT_APPLIED);
        json_object_object_add(body, "duplicate", json_object_new_boolean(0));
        json_object_object_add(body, "applied", json_object_new_boolean(applied));
        if (a->conflict)
            req_log_warn(r, "webhook conflict: order %s is already %s, the event was not applied%s",
                         ap->order_id, store_order_status_name(a->order_status),
                         a->reversal ? "; reversing the provider's charge" : "");
        if (a->reversal)
            worker_start_reversal(w, ap->order_id, a->amount_cents, a->currency, http_req_id(r));
    }
    http_reply_json(r, 200, body);
    free(ap);
}
