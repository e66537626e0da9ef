/*
 * server: provider-sim's HTTP API, admin endpoints and process lifetime.
 *
 *   POST /v1/charges                    charge, idempotent by Idempotency-Key
 *   GET  /v1/charges/{order_id}         the newest charge of an order
 *   POST /v1/charges/{order_id}/cancel  cancel-or-refund, idempotent
 *   GET  /admin/outage                  {"outage": bool}         (admin_allow only)
 *   POST /admin/outage                  {"enabled": bool} -> {"outage": bool}
 *   GET  /admin/stats                   counters                 (admin_allow only)
 *   GET  /admin/charges                 every charge, held money (admin_allow only)
 *
 * One process, one libevent loop, nothing blocking after start-up but the
 * journal's appends to a local file.  HTTPS instead of HTTP with tls_cert.
 */
#ifndef PD_SIM_SERVER_H
#define PD_SIM_SERVER_H

#include "provider-sim/conf.h"

/*
 * Serve conf until SIGTERM, SIGINT or SIGQUIT.  Returns the exit status: 0
 * after a stop, 1 when start-up failed (the reason is logged).
 */
int sim_server_run(const sim_conf_t *conf) __attribute__((warn_unused_result));

#endif
