/*
 * cfparse: table-driven parser of the "key = value" configuration format.
 *
 * The parser knows types, not keys: each daemon owns its key table.  A parse
 * never changes a struct in use: reload parses a fresh struct and swaps it in
 * whole, so there is no state shared between calls and no locking.
 */
#include "config.h"

#include "common/cfparse.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CF_LINE_MAX 4096

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Parse a non-negative decimal integer prefix; returns the rest or NULL. */
static const char *
parse_uint(const char *s, int64_t *out)
{
    int64_t v = 0;

    if (!isdigit((unsigned char)*s))
        return NULL;
    while (isdigit((unsigned char)*s)) {
        int d = *s++ - '0';
        if (v > (INT64_MAX - d) / 10)
            return NULL;
        v = v * 10 + d;
    }
    *out = v;
    return s;
}

static int
scaled(int64_t v, int64_t unit, int64_t *out)
{
    if (v > INT64_MAX / unit)
        return -1;
    *out = v * unit;
    return 0;
}

int
cf_parse_duration(const char *s, int64_t *ms, char *err, size_t errlen)
{
    static const struct { const char *suffix; int64_t ms; } units[] = {
        { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
        { "d", 86400000 }, { "", 1000 }
    };
    int64_t v;
    const char *rest = parse_uint(s, &v);

    if (rest != NULL) {
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            if (strcmp(rest, units[i].suffix) == 0) {
                if (scaled(v, units[i].ms, ms) == 0)
                    return 0;
                break;
            }
        }
    }
    set_err(err, errlen, "invalid duration \"%s\" (use e.g. 800ms, 5s, 5m, 24h)", s);
    return -1;
}

int
cf_parse_size(const char *s, int64_t *bytes, char *err, size_t errlen)
{
    int64_t v, unit = 1;
    const char *rest = parse_uint(s, &v);

    if (rest != NULL) {
        switch (rest[0]) {
        case '\0': unit = 1; break;
        case 'k': case 'K': unit = 1024; rest++; break;
        case 'm': case 'M': unit = 1024 * 1024; rest++; break;
        case 'g': case 'G': unit = 1024 * 1024 * 1024; rest++; break;
        default: rest = NULL; break;
        }
    }
    if (rest != NULL && *rest == '\0' && scaled(v, unit, bytes) == 0)
        return 0;
    set_err(err, errlen, "invalid size \"%s\" (use e.g. 16k, 64m)", s);
    return -1;
}

static int
parse_int(const char *s, int64_t *out, char *err, size_t errlen)
{
    int neg = (*s == '-');
    const char *rest = parse_uint(s + neg, out);

    if (rest == NULL || *rest != '\0') {
        set_err(err, errlen, "invalid number \"%s\"", s);
        return -1;
    }
    if (neg)
        *out = -*out;
    return 0;
}

static int
parse_bool(const char *s, int *out, char *err, size_t errlen)
{
    static const char *const yes[] = { "on", "yes", "true", "1" };
    static const char *const no[] = { "off", "no", "false", "0" };

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) { *out = 1; return 0; }
        if (strcasecmp(s, no[i]) == 0) { *out = 0; return 0; }
    }
    set_err(err, errlen, "invalid boolean \"%s\" (use on or off)", s);
    return -1;
}

static int
parse_fraction(const char *s, double *out, char *err, size_t errlen)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= 0.0 && v <= 1.0)) {
        set_err(err, errlen, "invalid fraction \"%s\" (use a number from 0 to 1)", s);
        return -1;
    }
    *out = v;
    return 0;
}

static void
list_clear(cf_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* Add the words of s (separated by white space or commas) to the list. */
static int
list_add_words(cf_list_t *l, const char *s, char *err, size_t errlen)
{
    while (*s != '\0') {
        size_t len;
        char **items;

        while (*s == ',' || isspace((unsigned char)*s))
            s++;
        len = strcspn(s, ", \t");
        if (len == 0)
            break;
        items = realloc(l->items, (l->n + 1) * sizeof(*items));
        if (items == NULL || (items[l->n] = strndup(s, len)) == NULL) {
            if (items != NULL)
                l->items = items;
            set_err(err, errlen, "out of memory");
            return -1;
        }
        l->items = items;
        l->n++;
        s += len;
    }
    return 0;
}

static const cf_key_t *
find_key(const cf_schema_t *schema, const char *name)
{
    for (size_t i = 0; i < schema->nkeys; i++) {
        if (strcmp(schema->keys[i].name, name) == 0)
            return &schema->keys[i];
    }
    return NULL;
}

/* Store value into the key's field.  append: add to a list rather than
 * replacing it (a repeated key in the file). */
static int
set_value(const cf_key_t *k, void *conf, const char *value, int append,
          char *err, size_t errlen)
{
    void *field = (char *)conf + k->offset;
    int64_t v;

    switch (k->type) {
    case CF_STR: {
        char *copy = strdup(value);
        if (copy == NULL) {
            set_err(err, errlen, "out of memory");
            return -1;
        }
        free(*(char **)field);
        *(char **)field = copy;
        break;
    }
    case CF_INT:
    case CF_DURATION:
    case CF_SIZE:
        if ((k->flags & CF_AUTO) && strcmp(value, "auto") == 0) {
            *(int64_t *)field = -1;
            break;
        }
        if (k->type == CF_INT && parse_int(value, &v, err, errlen) < 0)
            return -1;
        if (k->type == CF_DURATION && cf_parse_duration(value, &v, err, errlen) < 0)
            return -1;
        if (k->type == CF_SIZE && cf_parse_size(value, &v, err, errlen) < 0)
            return -1;
        if ((k->min != 0 || k->max != 0) && (v < k->min || v > k->max)) {
            set_err(err, errlen, "\"%s\" is out of range for %s (%" PRId64 "..%" PRId64 "%s)",
                    value, k->name, k->min, k->max,
                    k->type == CF_DURATION ? " ms" : k->type == CF_SIZE ? " bytes" : "");
            return -1;
        }
        *(int64_t *)field = v;
        break;
    case CF_BOOL:
        if (parse_bool(value, (int *)field, err, errlen) < 0)
            return -1;
        break;
    case CF_FRACTION:
        if (parse_fraction(value, (double *)field, err, errlen) < 0)
            return -1;
        break;
    case CF_LIST:
        if (!append)
            list_clear((cf_list_t *)field);
        if (list_add_words((cf_list_t *)field, value, err, errlen) < 0)
            return -1;
        break;
    }
    if (k->check != NULL && k->check(field, err, errlen) < 0)
        return -1;
    return 0;
}

/* Split a line into key and value in place.  Returns 1 for a setting, 0 for a
 * blank or comment line, -1 for a syntax error. */
static int
split_line(char *line, char **key, char **value, char *err, size_t errlen)
{
    char *p = line, *eq, *end;

    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0' || *p == '#')
        return 0;
    eq = strchr(p, '=');
    if (eq == NULL) {
        set_err(err, errlen, "expected \"key = value\"");
        return -1;
    }
    *key = p;
    for (end = eq; end > p && isspace((unsigned char)end[-1]); end--)
        ;
    *end = '\0';
    if (**key == '\0') {
        set_err(err, errlen, "missing key before \"=\"");
        return -1;
    }
    for (p = eq + 1; isspace((unsigned char)*p); p++)
        ;
    if (*p == '"') {
        end = strchr(p + 1, '"');
        if (end == NULL) {
            set_err(err, errlen, "unterminated quoted value");
            return -1;
        }
        *end++ = '\0';
        *value = p + 1;
        while (isspace((unsigned char)*end))
            end++;
        if (*end != '\0' && *end != '#') {
            set_err(err, errlen, "unexpected text after quoted value");
            return -1;
        }
        return 1;
    }
    *value = p;
    /* a comment starts at '#' preceded by white space */
    for (end = p; *end != '\0'; end++) {
        if (*end == '#' && end > p && isspace((unsigned char)end[-1]))
            break;
    }
    while (end > p && isspace((unsigned char)end[-1]))
        end--;
    *end = '\0';
    return 1;
}

static int
load_file(const cf_schema_t *schema, void *conf, const char *path,
          char *err, size_t errlen)
{
    char line[CF_LINE_MAX], msg[512];
    unsigned char *seen;
    FILE *f;
    int lineno = 0, rc = 0;

    f = fopen(path, "r");
    if (f == NULL) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    seen = calloc(schema->nkeys, 1);
    if (seen == NULL) {
        fclose(f);
        set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char *key, *value;
        const cf_key_t *k;
        int r;

        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            snprintf(msg, sizeof(msg), "line longer than %d bytes", CF_LINE_MAX - 2);
            goto fail;
        }
        r = split_line(line, &key, &value, msg, sizeof(msg));
        if (r < 0)
            goto fail;
        if (r == 0)
            continue;
        k = find_key(schema, key);
        if (k == NULL) {
            snprintf(msg, sizeof(msg), "unknown key \"%.64s\"", key);
            goto fail;
        }
        if (seen[k - schema->keys] && !(k->flags & CF_REPEAT)) {
            snprintf(msg, sizeof(msg), "duplicate key \"%s\"", k->name);
            goto fail;
        }
        if (*value == '\0') {
            snprintf(msg, sizeof(msg), "missing value for \"%s\"", k->name);
            goto fail;
        }
        if (set_value(k, conf, value, seen[k - schema->keys], msg, sizeof(msg)) < 0)
            goto fail;
        seen[k - schema->keys] = 1;
    }
    if (ferror(f)) {
        set_err(err, errlen, "%s: read error", path);
        rc = -1;
    }
    goto done;
fail:
    set_err(err, errlen, "%s:%d: %s", path, lineno, msg);
    rc = -1;
done:
    free(seen);
    fclose(f);
    return rc;
}

static int
apply_env(const cf_key_t *k, void *conf, const char *env, char *err, size_t errlen)
{
    const char *value = getenv(env);
    char msg[512];

    if (value == NULL)
        return 0;
    if (set_value(k, conf, value, 0, msg, sizeof(msg)) < 0) {
        set_err(err, errlen, "environment %s: %s", env, msg);
        return -1;
    }
    return 0;
}

int
cf_load(const cf_schema_t *schema, void *conf, const char *path,
        char *err, size_t errlen)
{
    char msg[512];

    for (size_t i = 0; i < schema->nkeys; i++) {
        const cf_key_t *k = &schema->keys[i];

        if (k->def != NULL && set_value(k, conf, k->def, 0, msg, sizeof(msg)) < 0) {
            set_err(err, errlen, "default of %s: %s", k->name, msg);
            return -1;
        }
    }
    if (path != NULL && load_file(schema, conf, path, err, errlen) < 0)
        return -1;
    for (size_t i = 0; i < schema->naliases; i++) {
        const cf_key_t *k = find_key(schema, schema->aliases[i].key);

        if (k != NULL && apply_env(k, conf, schema->aliases[i].env, err, errlen) < 0)
            return -1;
    }
    if (schema->env_prefix != NULL) {
        for (size_t i = 0; i < schema->nkeys; i++) {
            const cf_key_t *k = &schema->keys[i];
            char env[128];
            size_t n = (size_t)snprintf(env, sizeof(env), "%s", schema->env_prefix);

            for (const char *c = k->name; *c != '\0' && n < sizeof(env) - 1; c++)
                env[n++] = (char)toupper((unsigned char)*c);
            env[n] = '\0';
            if (apply_env(k, conf, env, err, errlen) < 0)
                return -1;
        }
    }
    return 0;
}

void
cf_free(const cf_schema_t *schema, void *conf)
{
    for (size_t i = 0; i < schema->nkeys; i++) {
        const cf_key_t *k = &schema->keys[i];
        void *field = (char *)conf + k->offset;

        if (k->type == CF_STR) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (k->type == CF_LIST) {
            list_clear((cf_list_t *)field);
        }
    }
}

size_t
cf_count(const cf_key_t *k, const void *conf)
{
    const void *field = (const char *)conf + k->offset;

    if (k->type == CF_LIST && (k->flags & CF_REPEAT))
        return ((const cf_list_t *)field)->n;
    if (k->type == CF_STR)
        return *(char *const *)field != NULL;
    return 1;
}

/* v in its largest unit that divides it exactly. */
static int
format_unit(int64_t v, const char *const *names, const int64_t *units, size_t n,
            char *buf, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (v != 0 && v % units[i] == 0)
            return snprintf(buf, len, "%" PRId64 "%s", v / units[i], names[i]);
    }
    return snprintf(buf, len, "%" PRId64 "%s", v, names[n]);
}

int
cf_format(const cf_key_t *k, const void *conf, size_t i, char *buf, size_t len)
{
    static const char *const dnames[] = { "d", "h", "m", "s", "ms" };
    static const int64_t dunits[] = { 86400000, 3600000, 60000, 1000 };
    static const char *const snames[] = { "g", "m", "k", "" };
    static const int64_t sunits[] = { 1 << 30, 1 << 20, 1 << 10 };
    const void *field = (const char *)conf + k->offset;
    const cf_list_t *l = field;
    int n = 0;

    switch (k->type) {
    case CF_STR:
        return snprintf(buf, len, "%s", *(char *const *)field);
    case CF_INT:
        return snprintf(buf, len, "%" PRId64, *(const int64_t *)field);
    case CF_DURATION:
        return format_unit(*(const int64_t *)field, dnames, dunits, 4, buf, len);
    case CF_SIZE:
        return format_unit(*(const int64_t *)field, snames, sunits, 3, buf, len);
    case CF_BOOL:
        return snprintf(buf, len, "%s", *(const int *)field ? "on" : "off");
    case CF_FRACTION:
        return snprintf(buf, len, "%g", *(const double *)field);
    case CF_LIST:
        if (k->flags & CF_REPEAT)
            return snprintf(buf, len, "%s", l->items[i]);
        buf[0] = '\0';
        for (size_t j = 0; j < l->n; j++) {
            size_t off = (size_t)n < len ? (size_t)n : len;
            n += snprintf(buf + off, len - off, "%s%s", j > 0 ? " " : "", l->items[j]);
        }
        return n;
    }
    return snprintf(buf, len, "?");
}

static int
str_differs(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a != b;
    return strcmp(a, b) != 0;
}

int
cf_differs(const cf_key_t *k, const void *a, const void *b)
{
    const void *fa = (const char *)a + k->offset;
    const void *fb = (const char *)b + k->offset;

    switch (k->type) {
    case CF_STR:
        return str_differs(*(char *const *)fa, *(char *const *)fb);
    case CF_INT: case CF_DURATION: case CF_SIZE:
        return *(const int64_t *)fa != *(const int64_t *)fb;
    case CF_BOOL:
        return *(const int *)fa != *(const int *)fb;
    case CF_FRACTION:
        return *(const double *)fa != *(const double *)fb;
    case CF_LIST: {
        const cf_list_t *la = fa, *lb = fb;
        if (la->n != lb->n)
            return 1;
        for (size_t i = 0; i < la->n; i++) {
            if (strcmp(la->items[i], lb->items[i]) != 0)
                return 1;
        }
        return 0;
    }
    }
    return 1;
}

void
cf_copy(const cf_key_t *k, void *dst, const void *src)
{
    void *fd = (char *)dst + k->offset;
    const void *fs = (const char *)src + k->offset;

    switch (k->type) {
    case CF_STR: {
        const char *s = *(char *const *)fs;
        free(*(char **)fd);
        *(char **)fd = s ? strdup(s) : NULL;
        break;
    }
    case CF_INT: case CF_DURATION: case CF_SIZE:
        *(int64_t *)fd = *(const int64_t *)fs;
        break;
    case CF_BOOL:
        *(int *)fd = *(const int *)fs;
        break;
    case CF_FRACTION:
        *(double *)fd = *(const double *)fs;
        break;
    case CF_LIST: {
        const cf_list_t *ls = fs;
        cf_list_t *ld = fd;
        char err[64];
        list_clear(ld);
        for (size_t i = 0; i < ls->n; i++)
            if (list_add_words(ld, ls->items[i], err, sizeof(err)) < 0)
                break;
        break;
    }
    }
}
