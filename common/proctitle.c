/*
 * proctitle: overwrite the argv area so that ps shows a process's role.
 *
 * argv strings and the environment strings are contiguous in memory; we copy
 * the environment to the heap and then may use the whole span for the title.
 */
#include "config.h"

#include "common/proctitle.h"

#include <stdlib.h>
#include <string.h>

extern char **environ;

static char *title_start;
static size_t title_len;

void
proctitle_init(int argc, char **argv)
{
    char *end;
    size_t n = 0;

    if (argc < 1 || argv[0] == NULL)
        return;
    end = argv[0] + strlen(argv[0]) + 1;
    for (int i = 1; i < argc; i++) {
        if (argv[i] == end)
            end = argv[i] + strlen(argv[i]) + 1;
    }
    while (environ[n] != NULL)
        n++;
    {
        char **copy = malloc((n + 1) * sizeof(*copy));
        if (copy == NULL)
            return;
        for (size_t i = 0; i < n; i++) {
            if (environ[i] == end)
                end = environ[i] + strlen(environ[i]) + 1;
            copy[i] = strdup(environ[i]);
            if (copy[i] == NULL)
                return;         /* keep the old environ; titles get short */
        }
        copy[n] = NULL;
        environ = copy;
    }
    title_start = argv[0];
    title_len = (size_t)(end - argv[0]);
    /* argv[1..] now overlap the title area: the caller copies any option it
     * keeps before the first proctitle_set(). */
}

void
proctitle_set(const char *title)
{
    if (title_start == NULL || title_len < 2)
        return;
    memset(title_start, 0, title_len);
    strncpy(title_start, title, title_len - 1);
}
