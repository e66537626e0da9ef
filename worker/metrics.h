/*
 * metrics: GET /metrics, the Prometheus text exposition of every process's
 * counters (shm/metrics) summed at scrape time.
 */
#ifndef PD_METRICS_H
#define PD_METRICS_H

#include "worker/http.h"

/* GET /metrics. */
void metrics_handle(http_req_t *r);

#endif
