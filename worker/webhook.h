/*
 * webhook: POST /webhooks/provider, the provider's signed event about a
 * charge (Standard Webhooks), applied exactly once.
 */
#ifndef PD_WEBHOOK_H
#define PD_WEBHOOK_H

#include "common/conf.h"
#include "worker/http.h"

typedef struct webhook_keys webhook_keys_t;

/* Decode conf's webhook_secret lines once per worker.  NULL on failure (the
 * conf check makes that impossible for a conf that passed -t). */
webhook_keys_t *webhook_keys_new(const conf_t *conf) __attribute__((warn_unused_result));
void webhook_keys_free(webhook_keys_t *keys);

/* POST /webhooks/provider. */
void webhook_handle(http_req_t *r);

#endif
