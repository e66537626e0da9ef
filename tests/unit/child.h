/*
 * child: the child processes of the multi-process unit tests (shm cache,
 * breaker, metrics).  Each call asserts with cmocka, so call them in the
 * test process only; children report through exit codes.
 */
#ifndef PD_TEST_CHILD_H
#define PD_TEST_CHILD_H

#include <stddef.h>
#include <sys/types.h>

/* fork(), asserting that it worked: the child's 0, or its pid. */
pid_t child_fork(void);

/* Wait for pid and assert that it exited with status 0. */
void child_reap_ok(pid_t pid);

/* SIGKILL pid, wait for it and assert that the signal ended it. */
void child_kill(pid_t pid);

/* size bytes of zeroed memory shared with the children forked after it
 * (asserted); munmap it. */
void *child_shared_new(size_t size);

/* A pid that is certainly dead: a child that exited and was reaped. */
pid_t child_dead_pid(void);

#endif
