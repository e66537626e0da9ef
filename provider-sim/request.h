/*
 * request: reading and checking what a client sent the sim: JSON bodies,
 * Idempotency-Keys, free-text fields and ids taken from the path.
 * Pure functions of their arguments; no state.
 */
#ifndef PD_SIM_REQUEST_H
#define PD_SIM_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include <event2/http.h>
#include <json-c/json.h>

/* An Idempotency-Key's longest length, as paymentsd takes it. */
#define SIM_REQUEST_KEY_MAX 255
/* An order id's longest length. */
#define SIM_REQUEST_ID_MAX 255

/* Whether v is 1..max bytes, none of them a control character. */
int sim_request_text_valid(const char *v, size_t max);

/* Whether k is an Idempotency-Key: 1..255 visible ASCII characters. */
int sim_request_key_valid(const char *k);

/*
 * data (len bytes, not NUL-terminated) parsed as one JSON value (white
 * space may follow it; a NUL byte anywhere makes it none), or NULL when it
 * is not one; the caller checks the type and owns the result.
 */
json_object *sim_request_json(const char *data, size_t len);

/* req's body parsed by sim_request_json. */
json_object *sim_request_body_json(struct evhttp_request *req);

/* A charge request's fields (POST /v1/charges), checked.  The strings point
 * into the body they came from. */
typedef struct {
    const char *order_id;       /* 1..SIM_REQUEST_ID_MAX bytes, no NUL or control character */
    int64_t amount_cents;       /* 1..INT64_MAX */
    const char *currency;       /* three upper-case letters */
} sim_charge_req_t;

/*
 * Check a charge request's body (a JSON object): 0 with *out filled, or -1
 * with the field at fault and a message (static strings) for a 422.
 */
int sim_request_charge(json_object *body, sim_charge_req_t *out, const char **field,
                       const char **message);

/*
 * The percent-decoded id between the first prefix_len and the last
 * suffix_len bytes of path ("/v1/charges/{id}/cancel").  Returns it (the
 * caller frees it), or NULL when it is empty, holds a NUL or a control
 * character, or is longer than max bytes.
 */
char *sim_request_path_id(const char *path, size_t prefix_len, size_t suffix_len, size_t max);

#endif
