/*
 * acl: an array of (family, address, prefix length), matched linearly: an
 * admin ACL has a handful of entries and admin requests are rare.
 */
#include "config.h"

#include "provider-sim/acl.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int family;                     /* AF_INET or AF_INET6 */
    unsigned char addr[16];         /* network byte order; 4 used for AF_INET */
    int prefix;                     /* bits */
} net_t;

struct sim_acl {
    size_t n;
    net_t nets[];
};

/* Parse "addr" or "addr/len"; 0, or -1 with a message. */
static int
parse(const char *entry, net_t *out, char *err, size_t errlen)
{
    char buf[INET6_ADDRSTRLEN + 8];
    const char *slash = strchr(entry, '/');
    size_t alen = slash ? (size_t)(slash - entry) : strlen(entry);
    int max;

    memset(out, 0, sizeof(*out));
    if (alen == 0 || alen >= INET6_ADDRSTRLEN) {
        snprintf(err, errlen, "admin_allow: \"%.64s\" is not an IP address or CIDR block", entry);
        return -1;
    }
    memcpy(buf, entry, alen);
    buf[alen] = '\0';
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        snprintf(err, errlen, "admin_allow: \"%.64s\" is not an IP address or CIDR block", entry);
        return -1;
    }
    out->prefix = max;
    if (slash != NULL) {
        const char *p = slash + 1;
        size_t digits = strspn(p, "0123456789");

        if (digits == 0 || digits > 3 || p[digits] != '\0' || atoi(p) > max) {
            snprintf(err, errlen, "admin_allow: \"%.64s\": the prefix length must be 0..%d",
                     entry, max);
            return -1;
        }
        out->prefix = atoi(p);
    }
    return 0;
}

int
sim_acl_check(const char *entry, char *err, size_t errlen)
{
    net_t net;

    return parse(entry, &net, err, errlen);
}

sim_acl_t *
sim_acl_new(char *const *entries, size_t n, char *err, size_t errlen)
{
    sim_acl_t *acl = calloc(1, sizeof(*acl) + n * sizeof(net_t));

    if (acl == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (parse(entries[i], &acl->nets[i], err, errlen) < 0) {
            free(acl);
            return NULL;
        }
    }
    acl->n = n;
    return acl;
}

void
sim_acl_free(sim_acl_t *acl)
{
    free(acl);
}

/* Whether the first bits of a and b agree. */
static int
prefix_equal(const unsigned char *a, const unsigned char *b, int bits)
{
    int whole = bits / 8, rest = bits % 8;

    if (memcmp(a, b, (size_t)whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    return ((a[whole] ^ b[whole]) & (0xff << (8 - rest)) & 0xff) == 0;
}

int
sim_acl_allows(const sim_acl_t *acl, const char *addr)
{
    unsigned char a[16];
    int family;

    if (addr == NULL)
        return 0;
    if (inet_pton(AF_INET, addr, a) == 1) {
        family = AF_INET;
    } else if (inet_pton(AF_INET6, addr, a) == 1) {
        static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

        family = AF_INET6;
        if (memcmp(a, mapped, sizeof(mapped)) == 0) {
            memmove(a, a + 12, 4);
            family = AF_INET;
        }
    } else {
        return 0;
    }
    for (size_t i = 0; i < acl->n; i++) {
        const net_t *net = &acl->nets[i];

        if (net->family == family && prefix_equal(a, net->addr, net->prefix))
            return 1;
    }
    return 0;
}
