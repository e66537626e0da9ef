/*
 * cors: the CORS headers of an answer, and preflight answers.
 *
 * An Origin header is matched against the configured origins as a whole
 * string, ignoring case (browsers send scheme and host in lower case; the
 * conf may not), so the value echoed back is one the conf validated.  The
 * list is short: a linear scan per request is fine.
 */
#include "config.h"

#include "worker/cors.h"

#include <string.h>
#include <strings.h>

/* What a page may send (besides the CORS-safelisted headers), and read. */
#define CORS_ALLOW_HEADERS \
    "Content-Type, Idempotency-Key, X-Request-Id, webhook-id, webhook-timestamp, webhook-signature"
#define CORS_EXPOSE_HEADERS "X-Request-Id, Location, Retry-After, Idempotent-Replayed"
/* How long a browser may reuse a preflight answer (browsers cap it: 2 h). */
#define CORS_MAX_AGE "600"

/* The value for Access-Control-Allow-Origin, or NULL when origin is not
 * allowed. */
static const char *
allowed(const cf_list_t *origins, const char *origin)
{
    for (size_t i = 0; i < origins->n; i++) {
        if (strcmp(origins->items[i], "*") == 0)
            return "*";
        if (strcasecmp(origins->items[i], origin) == 0)
            return origin;
    }
    return NULL;
}

int
cors_handle(http_req_t *r, const cf_list_t *origins, const char *allow)
{
    const char *origin, *grant;

    if (origins->n == 0 || (origin = http_req_header(r, "Origin")) == NULL)
        return 0;
    http_add_header(r, "Vary", "Origin");
    if ((grant = allowed(origins, origin)) == NULL)
        return 0;
    http_add_header(r, "Access-Control-Allow-Origin", grant);
    if (strcmp(http_req_method(r), "OPTIONS") == 0 && allow != NULL
        && http_req_header(r, "Access-Control-Request-Method") != NULL) {
        http_add_header(r, "Access-Control-Allow-Methods", allow);
        http_add_header(r, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
        http_add_header(r, "Access-Control-Max-Age", CORS_MAX_AGE);
        http_reply(r, 204, NULL, NULL, 0);
        return 1;
    }
    http_add_header(r, "Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS);
    return 0;
}
