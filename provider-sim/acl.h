/*
 * acl: which peers may use the sim's /admin endpoints (admin_allow).
 *
 * A list of IPv4 or IPv6 addresses and CIDR blocks ("127.0.0.0/8", "::1",
 * "172.16.0.0/12", "fd00::/8").  An IPv4 peer that reaches an IPv6 socket
 * as ::ffff:a.b.c.d is matched as a.b.c.d.  Immutable once built.
 */
#ifndef PD_SIM_ACL_H
#define PD_SIM_ACL_H

#include <stddef.h>

typedef struct sim_acl sim_acl_t;

/* Check one entry; 0, or -1 with a message in err. */
int sim_acl_check(const char *entry, char *err, size_t errlen) __attribute__((warn_unused_result));

/* An ACL of n entries (each passes sim_acl_check; n may be 0: nobody).
 * Returns it (free with sim_acl_free), or NULL with a message in err. */
sim_acl_t *sim_acl_new(char *const *entries, size_t n, char *err, size_t errlen)
    __attribute__((warn_unused_result));

void sim_acl_free(sim_acl_t *acl);

/* Whether the numeric address addr (as evhttp reports a peer) is allowed. */
int sim_acl_allows(const sim_acl_t *acl, const char *addr);

#endif
