/*
 * cfparse: the "key = value" configuration format shared by paymentsd and
 * provider-sim.
 *
 * A caller describes its keys in a table (name, type, offset into its struct,
 * default, limits, flags) and cfparse fills the struct: defaults first, then
 * the file, then environment overrides.  Errors come back as one line,
 * "file:line: message" or "environment NAME: message".
 *
 * Format: one "key = value" per line; '#' at the start of a line or after
 * white space begins a comment; a value may be double-quoted to keep spaces.
 * Durations take ms, s, m, h, d (a bare number is seconds); sizes take k, m,
 * g, binary (a bare number is bytes).
 */
#ifndef PD_CFPARSE_H
#define PD_CFPARSE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    CF_STR,         /* char *, owned by the struct */
    CF_INT,         /* int64_t */
    CF_DURATION,    /* int64_t milliseconds */
    CF_SIZE,        /* int64_t bytes */
    CF_BOOL,        /* int, 0 or 1: on/off, yes/no, true/false, 1/0 */
    CF_FRACTION,    /* double in 0..1 */
    CF_LIST         /* cf_list_t: repeatable key, or a value of several words */
} cf_type_t;

/* A list value: each occurrence of a repeatable key adds its words. */
typedef struct {
    char **items;
    size_t n;
} cf_list_t;

enum {
    CF_NO_RELOAD = 1 << 0,  /* a reload cannot change it: a restart is needed */
    CF_REPEAT = 1 << 1,     /* CF_LIST key that may appear on several lines */
    CF_AUTO = 1 << 2,       /* CF_INT that also takes "auto", stored as -1 */
    CF_PATH = 1 << 3        /* CF_STR naming a file: the daemon resolves a relative one */
};

/* Custom check of a parsed value: 0 when fine, else -1 with a message. */
typedef int (*cf_check_fn)(const void *field, char *err, size_t errlen);

typedef struct {
    const char *name;
    cf_type_t type;
    size_t offset;
    const char *def;        /* default in the file's syntax; NULL = empty */
    int64_t min, max;       /* CF_INT, CF_DURATION, CF_SIZE; 0,0 = no limit */
    unsigned flags;
    cf_check_fn check;
} cf_key_t;

/* An environment variable that overrides a key under another name. */
typedef struct {
    const char *env;
    const char *key;
} cf_alias_t;

typedef struct {
    const cf_key_t *keys;
    size_t nkeys;
    const char *env_prefix;     /* "PAYMENTSD_": PAYMENTSD_<KEY> overrides */
    const cf_alias_t *aliases;  /* applied before the prefixed names */
    size_t naliases;
} cf_schema_t;

/*
 * Fill conf from defaults, the file at path (NULL: defaults and environment
 * only) and the environment.  On error returns -1 with the message in err;
 * conf then holds what was parsed so far and must still be released with
 * cf_free().
 */
int cf_load(const cf_schema_t *schema, void *conf, const char *path,
            char *err, size_t errlen) __attribute__((warn_unused_result));

/* Free the strings and lists that cf_load stored in conf. */
void cf_free(const cf_schema_t *schema, void *conf);

/* Parse one value of a type; used for defaults, the file and the environment.
 * Returns 0, or -1 with a message. */
int cf_parse_duration(const char *s, int64_t *ms, char *err, size_t errlen);
int cf_parse_size(const char *s, int64_t *bytes, char *err, size_t errlen);

/* How many values key k holds in conf: the items of a CF_REPEAT list, 0 for
 * an unset CF_STR, else 1. */
size_t cf_count(const cf_key_t *k, const void *conf);

/* Value i (< cf_count) of key k in conf, in the file's syntax ("800ms",
 * "16k", "EUR USD", "on"), into buf.  Returns what snprintf returns. */
int cf_format(const cf_key_t *k, const void *conf, size_t i, char *buf, size_t len);

/* Non-zero when the two structs hold different values for key k. */
int cf_differs(const cf_key_t *k, const void *a, const void *b);

/* Copy key k's value from src into dst (releasing dst's old value). */
void cf_copy(const cf_key_t *k, void *dst, const void *src);

#endif
