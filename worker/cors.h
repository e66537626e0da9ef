/*
 * cors: Cross-Origin Resource Sharing, so that a browser page on another
 * origin (a Swagger UI, a web shop's front end) may call the API.
 *
 * Only origins listed in cors_allow_origins get anything: a preflight
 * (OPTIONS with Access-Control-Request-Method) is answered 204 with what
 * the route allows, and every other answer carries
 * Access-Control-Allow-Origin and Access-Control-Expose-Headers.  With the
 * list empty (the default) nothing changes; with it set, answers to
 * requests that carry Origin also carry "Vary: Origin", since they differ
 * by origin and a cache must not hand one origin's answer to another.
 * No credentials: the API uses none (no cookies, no HTTP auth).
 */
#ifndef PD_CORS_H
#define PD_CORS_H

#include "common/cfparse.h"
#include "worker/http.h"

/*
 * Add the CORS headers of r's answer for the allowed origins; allow is the
 * route's methods ("GET, HEAD"), NULL when no route matched.  Returns 1 when
 * r was a preflight of an allowed origin on a route and has been answered
 * (r is then gone), else 0: serve r as usual.
 */
int cors_handle(http_req_t *r, const cf_list_t *origins, const char *allow);

#endif
