/*
 * journal: JSON lines on an O_APPEND descriptor.
 *
 * The file is read whole at open (a sim's journal is a few hundred bytes
 * per charge), split at newlines and each line parsed on its own.  Appends
 * go through one write() per record; should one fail half-way (disk full),
 * the file is cut back to its size before it, so the journal never holds a
 * torn line anywhere but possibly at its end after a crash.  Nothing here
 * blocks for long: a write to a local file, no fsync.  Single-threaded; the
 * flock keeps other processes out.
 */
#include "config.h"

#include "provider-sim/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

struct sim_journal {
    char *path;
    int fd;
    size_t replayed;
};

/* Read all of fd into a new buffer (NUL-terminated); NULL with errno set. */
static char *
read_all(int fd, size_t *len)
{
    struct stat st;
    size_t cap, n = 0;
    char *buf;

    if (fstat(fd, &st) < 0)
        return NULL;
    cap = (size_t)st.st_size + 1;
    buf = malloc(cap);
    while (buf != NULL) {
        ssize_t got = read(fd, buf + n, cap - 1 - n);

        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            free(buf);
            return NULL;
        }
        if (got == 0)
            break;
        n += (size_t)got;
        if (n == cap - 1) {         /* it grew meanwhile: make room */
            char *bigger = realloc(buf, cap * 2);

            if (bigger == NULL)
                free(buf);
            buf = bigger;
            cap *= 2;
        }
    }
    if (buf != NULL) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

/* Parse and replay the complete lines of buf[0..len).  Returns the length
 * of the complete lines (where a torn tail starts), or -1 with err set. */
static ssize_t
replay(sim_journal_t *j, const char *buf, size_t len, sim_journal_replay_fn fn, void *arg,
       char *err, size_t errlen)
{
    json_tokener *tok = json_tokener_new();
    size_t start = 0, line = 0;
    char msg[256];

    if (tok == NULL) {
        snprintf(err, errlen, "state_file %s: out of memory", j->path);
        return -1;
    }
    while (start < len) {
        const char *nl = memchr(buf + start, '\n', len - start);
        size_t n;
        json_object *rec;

        if (nl == NULL)
            break;                  /* torn tail: the caller deals with it */
        n = (size_t)(nl - (buf + start));
        line++;
        if (n > 0) {
            json_tokener_reset(tok);
            rec = memchr(buf + start, '\0', n) == NULL
                ? json_tokener_parse_ex(tok, buf + start, (int)n) : NULL;
            if (rec == NULL || json_tokener_get_error(tok) != json_tokener_success
                || json_tokener_get_parse_end(tok) != n
                || !json_object_is_type(rec, json_type_object)) {
                json_object_put(rec);
                snprintf(err, errlen, "%s:%zu: not a journal record (a JSON object on one line)",
                         j->path, line);
                json_tokener_free(tok);
                return -1;
            }
            msg[0] = '\0';
            if (fn(arg, rec, msg, sizeof(msg)) < 0) {
                json_object_put(rec);
                snprintf(err, errlen, "%s:%zu: %s", j->path, line, msg);
                json_tokener_free(tok);
                return -1;
            }
            json_object_put(rec);
            j->replayed++;
        }
        start += n + 1;
    }
    json_tokener_free(tok);
    return (ssize_t)start;
}

sim_journal_t *
sim_journal_open(const char *path, sim_journal_replay_fn fn, void *arg, char *err, size_t errlen)
{
    sim_journal_t *j = calloc(1, sizeof(*j));
    char *buf = NULL;
    size_t len = 0;
    ssize_t good;
    const char *what;

    if (j == NULL || (j->path = strdup(path)) == NULL) {
        snprintf(err, errlen, "state_file %s: out of memory", path);
        sim_journal_close(j);
        return NULL;
    }
    j->fd = -1;
    what = "open";
    j->fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (j->fd < 0)
        goto fail_errno;
    if (flock(j->fd, LOCK_EX | LOCK_NB) < 0) {
        snprintf(err, errlen, "state_file %s is in use by another process (flock: %s)",
                 path, strerror(errno));
        goto fail;
    }
    what = "read";
    buf = read_all(j->fd, &len);
    if (buf == NULL)
        goto fail_errno;
    good = replay(j, buf, len, fn, arg, err, errlen);
    if (good < 0)
        goto fail;
    if ((size_t)good < len) {
        log_warn("state_file %s: ignoring its torn last line (%zu bytes without a newline, "
                 "from a crash mid-write)", path, len - (size_t)good);
        what = "ftruncate";
        if (ftruncate(j->fd, (off_t)good) < 0)
            goto fail_errno;
    }
    free(buf);
    return j;

fail_errno:
    snprintf(err, errlen, "state_file %s: %s failed: %s", path, what, strerror(errno));
fail:
    free(buf);
    sim_journal_close(j);
    return NULL;
}

size_t
sim_journal_replayed(const sim_journal_t *j)
{
    return j->replayed;
}

int
sim_journal_append(sim_journal_t *j, json_object *record)
{
    size_t len, done = 0;
    const char *s = json_object_to_json_string_length(record, JSON_C_TO_STRING_PLAIN, &len);
    struct stat st;
    char *line;

    if (s == NULL || (line = malloc(len + 1)) == NULL) {
        log_error("state_file %s: out of memory writing a record", j->path);
        return -1;
    }
    memcpy(line, s, len);
    line[len++] = '\n';
    /* The size before, to cut a half-written line off again. */
    if (fstat(j->fd, &st) < 0)
        st.st_size = -1;
    while (done < len) {
        ssize_t n = write(j->fd, line + done, len - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            log_error("state_file %s: write failed: %s", j->path,
                      n < 0 ? strerror(errno) : "no progress");
            if (done > 0 && (st.st_size < 0 || ftruncate(j->fd, st.st_size) < 0))
                log_error("state_file %s: cannot cut off the torn record: the next start "
                          "will stop at it", j->path);
            free(line);
            return -1;
        }
        done += (size_t)n;
    }
    free(line);
    return 0;
}

void
sim_journal_close(sim_journal_t *j)
{
    if (j == NULL)
        return;
    if (j->fd >= 0)
        close(j->fd);
    free(j->path);
    free(j);
}
