/*
 * orders: GET /orders/{id} and GET /orders/{id}/ledger, read as PostgreSQL
 * has them (one SQL function call each, no cache).
 */
#ifndef PD_ORDERS_H
#define PD_ORDERS_H

#include "worker/http.h"

/* GET /orders/{id} and GET /orders/{id}/ledger (the router sends every path
 * under /orders/ here; anything else there is 404 order_not_found). */
void orders_handle(http_req_t *r);

#endif
