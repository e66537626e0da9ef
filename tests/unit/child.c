/*
 * child: fork, reap and kill the children of the multi-process unit tests.
 */
#include "config.h"

#include "tests/unit/child.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

pid_t
child_fork(void)
{
    pid_t pid = fork();

    assert_true(pid >= 0);
    return pid;
}

void
child_reap_ok(pid_t pid)
{
    int st;

    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

void
child_kill(pid_t pid)
{
    int st;

    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
}

void *
child_shared_new(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    assert_true(p != MAP_FAILED);
    return p;
}

pid_t
child_dead_pid(void)
{
    pid_t pid = child_fork();

    if (pid == 0)
        _exit(0);
    child_reap_ok(pid);
    return pid;
}
