/*
 * metrics: GET /metrics, the Prometheus text exposition of every process's
 * counters (shm/metrics) summed at scrape time.
 */
#ifndef PD_METRICS_H
#define PD_METRICS_H

#include "shm/metrics.h"
#include "worker/db.h"
#include "worker/http.h"
#include "worker/provider.h"

/* GET /metrics. */
void metrics_handle(http_req_t *r);

/* Observe db's statements and calls and prov's calls into slot's
 * histograms (a worker's or the housekeeper's); slot must outlive both. */
void metrics_observe(shm_metrics_slot_t *slot, db_pool_t *db, provider_t *prov);

#endif
