/*
 * Unit tests of common/pidfile.c, the one pid-file writer of paymentsd's
 * master and provider-sim: the file's directory is made, a reader refuses
 * what is not a pid, and removal leaves a file that names another process.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/pidfile.h"

static char dir[64], path[128];

static int
setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/test_pidfile.XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    /* A folder that does not exist yet: the writer makes it. */
    snprintf(path, sizeof(path), "%s/run/x.pid", dir);
    return 0;
}

static int
teardown(void **state)
{
    char sub[96];

    (void)state;
    unlink(path);
    snprintf(sub, sizeof(sub), "%s/run", dir);
    rmdir(sub);
    rmdir(dir);
    return 0;
}

static void
write_text(const char *text)
{
    char sub[96];
    FILE *f;

    snprintf(sub, sizeof(sub), "%s/run", dir);
    mkdir(sub, 0755);
    f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void
test_write_read_remove(void **state)
{
    char err[256];

    (void)state;
    assert_int_equal(pidfile_write(path, 4242, err, sizeof(err)), 0);
    assert_int_equal(pidfile_read(path), 4242);
    pidfile_remove(path, 4243);                 /* another process's: kept */
    assert_int_equal(access(path, F_OK), 0);
    pidfile_remove(path, 4242);
    assert_int_equal(access(path, F_OK), -1);
    errno = 0;
    assert_int_equal(pidfile_read(path), -1);
    assert_int_equal(errno, ENOENT);
}

static void
test_read_refuses_what_is_no_pid(void **state)
{
    static const char *bad[] = { "", "abc\n", "0\n", "1\n", "-5\n", "2147483648\n" };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_text(bad[i]);
        errno = 0;
        assert_int_equal(pidfile_read(path), -1);
        assert_int_equal(errno, EINVAL);
    }
    write_text("  123 trailing\n");
    assert_int_equal(pidfile_read(path), 123);
    pidfile_remove(path, 123);
}

static void
test_write_failure_names_the_step(void **state)
{
    char err[256], blocked[160];

    (void)state;
    /* The directory's place is taken by a file: mkdir fails. */
    snprintf(blocked, sizeof(blocked), "%s/file", dir);
    write_text("");
    rename(path, blocked);
    snprintf(path, sizeof(path), "%s/file/x.pid", dir);
    assert_int_equal(pidfile_write(path, 4242, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "failed: "));
    assert_true(strncmp(err, "mkdir(", 6) == 0 || strncmp(err, "open(", 5) == 0);
    unlink(blocked);
    snprintf(path, sizeof(path), "%s/run/x.pid", dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_read_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_refuses_what_is_no_pid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failure_names_the_step, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
