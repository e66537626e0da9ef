/*
 * docs: /openapi.json, and Swagger UI at /docs.
 *
 *   /docs                   the page (compiled in), or 503 and how to install
 *                           Swagger UI when docs_root lacks its files
 *   /docs/docs-init.js      its initializer (compiled in): our /openapi.json
 *   /docs/<name>            a file of docs_root: swagger-ui-bundle.js, ...
 *
 * The page refers to its files relatively (docs/...), and the initializer to
 * the document (openapi.json), so it works behind any host or path prefix.
 *
 * docs_root is read once, when the worker starts (a reload starts new
 * workers), into memory: a request never waits for the disk.  Only what can
 * be served safely is read: regular files directly in the folder, with a
 * plain name and a known type (so a conf file or a key that happens to sit
 * there is never served), up to fixed limits.  A symbolic link is followed
 * only when its target lies inside the folder.  A request names a file of
 * that table or gets 404: no path from a client ever reaches the file
 * system, so "..", "%2e%2e" and the like have nothing to traverse.
 *
 * Caching: each file has a strong ETag (a hash of its bytes) and may be
 * kept an hour; If-None-Match answers 304.  The page and its initializer are
 * "no-cache" so a new version shows at once.
 */
#include "config.h"

#include "worker/docs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

#define DOCS_MAX_FILES 64
#define DOCS_MAX_NAME 128
#define DOCS_MAX_TOTAL (32 << 20)       /* bytes of all files together */
#define DOCS_CSP "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; " \
    "frame-ancestors 'none'; form-action 'none'; base-uri 'none'"

/* docs/openapi.json, docs/docs.html and docs/docs-init.js, compiled in. */
extern const char docs_openapi_json[], docs_html[], docs_init_js[];
extern const size_t docs_openapi_json_len, docs_html_len, docs_init_js_len;

typedef struct {
    char name[DOCS_MAX_NAME + 1];
    const char *type;
    char *data;
    size_t len;
    char etag[20];              /* "16 hex digits" */
} docs_file_t;

struct docs {
    docs_file_t files[DOCS_MAX_FILES];
    size_t n;
    size_t total;
};

/* What the page loads: without these, /docs explains how to install them. */
static const char *const required[] = { "swagger-ui-bundle.js", "swagger-ui.css" };

static const struct {
    const char *ext;
    const char *type;
} types[] = {
    { ".html", "text/html; charset=utf-8" },
    { ".js", "text/javascript; charset=utf-8" },
    { ".css", "text/css; charset=utf-8" },
    { ".map", "application/json" },
    { ".json", "application/json" },
    { ".png", "image/png" },
    { ".svg", "image/svg+xml" },
    { ".ico", "image/x-icon" },
    { ".txt", "text/plain; charset=utf-8" },
};

static const char missing_page[] =
    "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">"
    "<title>paymentsd API: Swagger UI is not installed</title></head>\n<body>\n"
    "<h1>Swagger UI is not installed</h1>\n"
    "<p>paymentsd serves Swagger UI from the folder that <code>docs_root</code> names in its "
    "configuration, and that folder does not hold <code>swagger-ui-bundle.js</code> and "
    "<code>swagger-ui.css</code>.</p>\n"
    "<p>To install them, run <code>scripts/deps.sh</code> in the source tree (it puts the "
    "pinned <code>swagger-ui-dist</code> into <code>vendor/swagger-ui</code>; "
    "<code>scripts/swagger-ui.sh DIR</code> installs it anywhere), then <code>make install</code> "
    "for an installed paymentsd, or point <code>docs_root</code> at that folder; then "
    "<code>paymentsd -s reload</code>.</p>\n"
    "<p>The API document itself is at <a href=\"openapi.json\">/openapi.json</a>.</p>\n"
    "</body>\n</html>\n";

/* The type of a file we are willing to serve, or NULL. */
static const char *
type_of(const char *name)
{
    const char *dot = strrchr(name, '.');

    if (dot == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    }
    return NULL;
}

/* Letters, digits, '.', '_', '-'; not hidden; not too long. */
static int
name_plain(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > DOCS_MAX_NAME || name[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
              || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* FNV-1a, 64 bits: an ETag needs to change with the bytes, not resist
 * an attacker (the files are the operator's). */
static void
etag_of(const char *data, size_t len, char *out, size_t outlen)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)data[i];
        h *= 0x100000001b3ULL;
    }
    snprintf(out, outlen, "\"%016llx\"", (unsigned long long)h);
}

/* Open name in the folder dfd (whose real path is real): a regular file, or
 * a symbolic link whose target is one inside real.  Returns an fd or -1
 * with why set. */
static int
open_inside(int dfd, const char *real, const char *name, const char **why)
{
    char link[PATH_MAX], target[PATH_MAX];
    size_t n = strlen(real);
    struct stat st;
    int fd;

    /* O_NONBLOCK: a FIFO must not hang the worker's start. */
    fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0 && errno == ELOOP) {
        snprintf(link, sizeof(link), "%s/%s", real, name);
        if (realpath(link, target) == NULL) {
            *why = strerror(errno);
            return -1;
        }
        if (strncmp(target, real, n) != 0 || target[n] != '/') {
            *why = "a symbolic link out of docs_root";
            return -1;
        }
        fd = open(target, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    }
    if (fd < 0) {
        *why = strerror(errno);
        return -1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        *why = "not a regular file";
        close(fd);
        return -1;
    }
    return fd;
}

/* Read all of fd (a regular file of at most max bytes) into f. */
static int
read_file(int fd, size_t max, docs_file_t *f, const char **why)
{
    struct stat st;
    size_t got = 0;

    if (fstat(fd, &st) < 0 || st.st_size < 0 || (uint64_t)st.st_size > max) {
        *why = "too large";
        return -1;
    }
    f->data = malloc((size_t)st.st_size + 1);
    if (f->data == NULL) {
        *why = "out of memory";
        return -1;
    }
    while (got < (size_t)st.st_size) {
        ssize_t k = read(fd, f->data + got, (size_t)st.st_size - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            *why = k < 0 ? strerror(errno) : "it shrank while being read";
            free(f->data);
            f->data = NULL;
            return -1;
        }
        got += (size_t)k;
    }
    f->len = got;
    etag_of(f->data, f->len, f->etag, sizeof(f->etag));
    return 0;
}

static void
load(docs_t *d, const char *root)
{
    char real[PATH_MAX];
    struct dirent *e;
    DIR *dir;
    int dfd;

    if (realpath(root, real) == NULL || (dir = opendir(real)) == NULL) {
        log_warn("docs_root %s: %s: /docs will say how to install Swagger UI",
                 root, strerror(errno));
        return;
    }
    dfd = dirfd(dir);
    while ((e = readdir(dir)) != NULL) {
        docs_file_t *f = &d->files[d->n];
        const char *why = NULL;
        int fd;

        if (!name_plain(e->d_name) || type_of(e->d_name) == NULL)
            continue;           /* not ours to serve */
        if (d->n == DOCS_MAX_FILES) {
            log_warn("docs_root %s: more than %d files: %s and later ones are not served",
                     root, DOCS_MAX_FILES, e->d_name);
            break;
        }
        if ((fd = open_inside(dfd, real, e->d_name, &why)) >= 0) {
            if (read_file(fd, DOCS_MAX_TOTAL - d->total, f, &why) == 0) {
                snprintf(f->name, sizeof(f->name), "%s", e->d_name);
                f->type = type_of(e->d_name);
                d->total += f->len;
                d->n++;
            }
            close(fd);
        }
        if (why != NULL)
            log_warn("docs_root %s: %s is not served: %s", root, e->d_name, why);
    }
    closedir(dir);
    if (!docs_installed(d))
        log_warn("docs_root %s does not hold Swagger UI's files: "
                 "/docs will say how to install them", root);
    else
        log_debug("docs_root %s: %zu files, %zu bytes", root, d->n, d->total);
}

docs_t *
docs_new(const char *root)
{
    docs_t *d = calloc(1, sizeof(*d));

    if (d != NULL)
        load(d, root);
    return d;
}

void
docs_free(docs_t *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->n; i++)
        free(d->files[i].data);
    free(d);
}

static const docs_file_t *
find(const docs_t *d, const char *name)
{
    for (size_t i = 0; i < d->n; i++) {
        if (strcmp(d->files[i].name, name) == 0)
            return &d->files[i];
    }
    return NULL;
}

int
docs_installed(const docs_t *d)
{
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (find(d, required[i]) == NULL)
            return 0;
    }
    return 1;
}

/* Does an If-None-Match value (a list of tags, or "*") name etag?  Weak
 * tags compare equal to strong ones here (RFC 9110's weak comparison). */
static int
etag_matches(const char *inm, const char *etag)
{
    size_t n = strlen(etag);

    while (inm != NULL && *inm != '\0') {
        while (*inm == ' ' || *inm == '\t' || *inm == ',')
            inm++;
        if (*inm == '*')
            return 1;
        if (strncmp(inm, "W/", 2) == 0)
            inm += 2;
        if (strncmp(inm, etag, n) == 0 && (inm[n] == '\0' || inm[n] == ',' || inm[n] == ' '
                                           || inm[n] == '\t'))
            return 1;
        inm = strchr(inm, ',');
    }
    return 0;
}

static void
reply_file(http_req_t *r, const docs_file_t *f)
{
    const char *inm = http_req_header(r, "If-None-Match");

    http_add_header(r, "ETag", f->etag);
    http_add_header(r, "Cache-Control", "public, max-age=3600");
    if (etag_matches(inm, f->etag)) {
        http_reply(r, 304, NULL, NULL, 0);
        return;
    }
    http_reply(r, 200, f->type, f->data, f->len);
}

void
docs_openapi_handle(http_req_t *r)
{
    http_reply(r, 200, "application/json", docs_openapi_json, docs_openapi_json_len);
}

void
docs_handle(const docs_t *d, http_req_t *r)
{
    const char *path = http_req_path(r);
    const docs_file_t *f;

    http_add_header(r, "X-Content-Type-Options", "nosniff");
    if (strcmp(path, "/docs") == 0) {
        http_add_header(r, "Cache-Control", "no-cache");
        /* "Try it out" makes real checkouts: only this page may do it, on
         * this server, and no other site may frame it (clickjacking). */
        http_add_header(r, "Content-Security-Policy", DOCS_CSP);
        if (docs_installed(d))
            http_reply(r, 200, "text/html; charset=utf-8", docs_html, docs_html_len);
        else
            http_reply(r, 503, "text/html; charset=utf-8", missing_page,
                       sizeof(missing_page) - 1);
        return;
    }
    /* The router sends "/docs/..." here. */
    path += strlen("/docs/");
    if (path[0] == '\0') {
        /* The page's relative references need "/docs" itself. */
        static const char moved[] = "<a href=\"/docs\">/docs</a>\n";

        http_add_header(r, "Location", "/docs");
        http_reply(r, 301, "text/html; charset=utf-8", moved, sizeof(moved) - 1);
    } else if (strcmp(path, "docs-init.js") == 0) {
        http_add_header(r, "Cache-Control", "no-cache");
        http_reply(r, 200, "text/javascript; charset=utf-8", docs_init_js, docs_init_js_len);
    } else if ((f = find(d, path)) != NULL) {
        reply_file(r, f);
    } else {
        http_reply_error(r, 404, "not_found", "no such file", NULL);
    }
}
