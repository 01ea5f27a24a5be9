/* fw_test_util.h — what the firmware tests share: temp directories, running
 * the real kioskfw with its output captured, and byte-exact snapshots of a
 * directory tree to prove that a refused command changed nothing. */
#ifndef FW_TEST_UTIL_H
#define FW_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define FWT_OUT_MAX (64 * 1024)

/* What a run of the tool left behind. */
typedef struct fwt_run {
	int status;              /* exit code; 128+N if killed by signal N */
	char out[FWT_OUT_MAX];   /* stdout */
	char err[FWT_OUT_MAX];   /* stderr */
} fwt_run;

/* A fresh directory under $TMPDIR (or /tmp); aborts the test on failure. */
void fwt_mkdtemp(char *out, size_t cap, const char *tag);
/* rm -rf path. */
void fwt_rmtree(const char *path);
/* Write len bytes to path (mode 0644). */
void fwt_write_file(const char *path, const void *data, size_t len);
/* Read a file (NUL-terminated, caller frees); NULL if missing. */
char *fwt_read_file(const char *path, size_t *len);

/* Run exe with the NULL-terminated args (args[0] is the first argument, not
 * the program), with KP_FAILPOINTS=failpoints if not NULL. Captures output. */
void fwt_run_tool(fwt_run *r, const char *exe, const char *failpoints, const char *const *args);
/* Start the same in the background, output to /dev/null; returns its pid. */
pid_t fwt_spawn_tool(const char *exe, const char *failpoints, const char *const *args);
/* Wait for pid; exit code, or 128+signal. */
int fwt_wait(pid_t pid);

/* Number of lines in s (a last line without '\n' counts). */
int fwt_lines(const char *s);

/* A listing of every file and directory under root with each file's bytes'
 * SHA-256 and its mode, sorted: equal snapshots mean byte-identical trees.
 * Caller frees. */
char *fwt_snapshot(const char *root);

#endif
