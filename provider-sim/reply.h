/*
 * reply: JSON replies of the sim, sent at once or after a delay.
 *
 * A delay is how the sim plays a slow provider (latency) and a provider
 * that never answers in time (a held charge): the reply is computed when
 * the request arrives and sent when its timer fires.  If the client gives
 * up meanwhile, libevent detaches the request from its connection and the
 * late send just frees it.  Single-threaded: one event loop.
 *
 * Every answer carries X-Request-Id: the client's own when it is 1..128
 * visible ASCII characters other than '"' and '\' (as paymentsd takes
 * them), else one made here; and every answer is logged with it, when it
 * is decided (info; debug for the admin endpoints' 2xx, which tests poll).
 */
#ifndef PD_SIM_REPLY_H
#define PD_SIM_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/http.h>
#include <json-c/json.h>

typedef struct sim_replies sim_replies_t;

/* The set of deferred replies of one event loop; NULL when out of memory. */
sim_replies_t *sim_reply_new(struct event_base *base) __attribute__((warn_unused_result));

/* Answer whatever is still deferred (see sim_reply_flush), then free. */
void sim_reply_free(sim_replies_t *q);

/*
 * Answer req with status and obj as JSON, now when delay_ms is 0, else after
 * delay_ms.  Takes over the reference to obj.  Out of memory, it answers at
 * once rather than never.
 */
void sim_reply_json(sim_replies_t *q, struct evhttp_request *req, int status,
                    json_object *obj, int64_t delay_ms);

/* Same with {"error": {"code", "message"[, "field"]}}; field may be NULL. */
void sim_reply_error(sim_replies_t *q, struct evhttp_request *req, int status,
                     const char *code, const char *message, const char *field,
                     int64_t delay_ms);

/* req's request id as described above, set on its answer's headers at the
 * first call; valid while req is. */
const char *sim_reply_request_id(sim_replies_t *q, struct evhttp_request *req);

/* Send every deferred reply now (at shutdown: nobody is left hanging). */
void sim_reply_flush(sim_replies_t *q);

/* How many replies are waiting for their timer. */
size_t sim_reply_pending(const sim_replies_t *q);

#endif
