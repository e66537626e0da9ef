/*
 * shm_hash: the two hashes of the shared cache.  SipHash-2-4 places a
 * client's key in a set: keys are chosen by clients, so without the random
 * key nobody can aim many keys at one set.  The checksum tells a torn or
 * scribbled copy of an entry from a good one, fast enough to run on every hit.
 * Pure functions: no state, no locking.
 */
#ifndef PD_SHM_HASH_H
#define PD_SHM_HASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 of len bytes at data under the 128-bit key (k0, k1), k0 being
 * the key's first 8 bytes read little-endian.  data may be NULL if len is 0. */
uint64_t shm_hash_siphash24(uint64_t k0, uint64_t k1, const void *data, size_t len);

/* Fold len bytes at data into the running checksum h and return it.  Not
 * cryptographic; any two inputs of the same length that differ in a single
 * aligned 8-byte word give different results. */
uint64_t shm_hash_csum(uint64_t h, const void *data, size_t len);

#endif
