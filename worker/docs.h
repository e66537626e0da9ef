/*
 * docs: GET /openapi.json and /docs, Swagger UI on that document.
 *
 * The document, the page that hosts Swagger UI and its initializer are
 * compiled in (worker/docs_embed.c); Swagger UI's own files (swagger-ui-dist,
 * installed by scripts/deps.sh) are read from docs_root when a worker starts,
 * so requests never touch the disk.  Without them /docs answers 503 with a
 * page that says how to install them.
 */
#ifndef PD_DOCS_H
#define PD_DOCS_H

#include "worker/http.h"

typedef struct docs docs_t;

/* Read the files of root (a folder; missing or partial is no error, it is
 * logged).  Returns NULL only when out of memory.  Blocking: call before the
 * worker's loop runs. */
docs_t *docs_new(const char *root) __attribute__((warn_unused_result));
void docs_free(docs_t *d);

/* 1 when root holds what the page loads. */
int docs_installed(const docs_t *d);

/* Route handlers: GET/HEAD /openapi.json, and /docs and /docs/<file> with d
 * the worker's docs. */
void docs_openapi_handle(http_req_t *r);
void docs_handle(const docs_t *d, http_req_t *r);

#endif
