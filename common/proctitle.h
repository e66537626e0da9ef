/*
 * proctitle: set the title that ps(1) shows, as nginx does
 * ("paymentsd: worker process").
 */
#ifndef PD_PROCTITLE_H
#define PD_PROCTITLE_H

/* Call once from main() before anything reads environ: moves the environment
 * out of the way so that the argv area can hold a longer title. */
void proctitle_init(int argc, char **argv);

/* Set the title.  The command name (comm) stays "paymentsd" for pgrep. */
void proctitle_set(const char *title);

#endif
