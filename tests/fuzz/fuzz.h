/*
 * fuzz.h: what the libFuzzer harnesses of tests/fuzz share.
 *
 * Inputs reach the code under test the way a server receives them: a body
 * as an exact-size heap copy that is not NUL-terminated (AddressSanitizer
 * then reports any read past its length), a header value as its own
 * NUL-terminated heap string.  A property that does not hold aborts with
 * its text, which libFuzzer reports as a crash and keeps the input.
 */
#ifndef PD_FUZZ_H
#define PD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_ASSERT(cond)                                                           \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: property does not hold: %s\n", __FILE__,        \
                    __LINE__, #cond);                                               \
            abort();                                                                \
        }                                                                           \
    } while (0)

/* data[0..size) in a heap block of exactly size bytes (one when size is 0,
 * never read then).  Aborts on allocation failure. */
static inline char *
fuzz_bytes(const uint8_t *data, size_t size)
{
    char *p = malloc(size > 0 ? size : 1);

    FUZZ_ASSERT(p != NULL);
    if (size > 0)
        memcpy(p, data, size);
    return p;
}

/* The next line of *data (up to '\n', which is consumed) as a new
 * NUL-terminated string; *data and *size move past it.  A NUL inside the
 * line ends the string early, as it would in a header value. */
static inline char *
fuzz_line(const uint8_t **data, size_t *size)
{
    const uint8_t *nl = memchr(*data, '\n', *size);
    size_t n = nl != NULL ? (size_t)(nl - *data) : *size;
    char *s = malloc(n + 1);

    FUZZ_ASSERT(s != NULL);
    memcpy(s, *data, n);
    s[n] = '\0';
    *data += n + (nl != NULL);
    *size -= n + (nl != NULL);
    return s;
}

#endif
