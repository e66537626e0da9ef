/*
 * journal: an append-only file of JSON lines that a restarted sim replays.
 *
 * Each record is one JSON object on one line, written with a single
 * write() on an O_APPEND descriptor before the caller answers anybody, so
 * a kill -9 loses nothing that was answered (there is no fsync: a power
 * cut may).  On open the file is read back record by record; a last line
 * without its newline was torn by a crash mid-write and is dropped (logged,
 * and cut off the file so the next record starts on a line of its own).
 * Any other unreadable line stops the open: a provider must not start
 * having quietly forgotten charges.  An exclusive flock keeps a second sim
 * off the same file.  Single-threaded.
 */
#ifndef PD_SIM_JOURNAL_H
#define PD_SIM_JOURNAL_H

#include <stddef.h>

#include <json-c/json.h>

typedef struct sim_journal sim_journal_t;

/* Replay one record (borrowed: do not keep it).  Returns 0, or -1 with a
 * message in err, which makes sim_journal_open fail naming the line. */
typedef int (*sim_journal_replay_fn)(void *arg, json_object *record, char *err, size_t errlen);

/*
 * Open (creating it if need be) the journal at path, call fn for every
 * record in file order, and keep the file open for appends.  Returns the
 * journal, which the caller frees, or NULL with "path:line: message" or
 * "state_file path: reason" in err.
 */
sim_journal_t *sim_journal_open(const char *path, sim_journal_replay_fn fn, void *arg,
                                char *err, size_t errlen) __attribute__((warn_unused_result));

/* How many records the open replayed. */
size_t sim_journal_replayed(const sim_journal_t *j);

/*
 * Append record (borrowed) as one line.  Returns 0 once the line is in the
 * file, or -1 (logged) after cutting off whatever part of it was written.
 */
int sim_journal_append(sim_journal_t *j, json_object *record) __attribute__((warn_unused_result));

/* Close and free (NULL is fine). */
void sim_journal_close(sim_journal_t *j);

#endif
