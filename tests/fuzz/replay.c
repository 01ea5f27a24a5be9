/* replay.c — the corpus replay: runs a fuzz target's body over files, without
 * libFuzzer, so that the committed corpus and every regression input run in
 * each ctest run (gcc, and ASan+UBSan in the host-asan build).
 *   replay_X [FILE|DIR]...   default: the target's committed corpus dir
 * Exit 0 when every input ran, 1 when none was found or one could not be read;
 * a broken invariant aborts (the input's name is on stderr just before). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

#ifndef KP_FUZZ_CORPUS
#error "KP_FUZZ_CORPUS must name the target's corpus directory"
#endif

#define REPLAY_FILE_MAX (1u << 20) /* libFuzzer's default -max_len is far below */

static unsigned n_run;

/* Run one file through the target; 0 if it cannot be read, else 1. */
static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	int ok = 0;

	if (!f) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return 0;
	}
	buf = malloc(REPLAY_FILE_MAX);
	if (!buf)
		goto out;
	size_t n = fread(buf, 1, REPLAY_FILE_MAX, f);
	if (ferror(f) || n == REPLAY_FILE_MAX) {
		fprintf(stderr, "replay: %s: unreadable or over %u bytes\n", path, REPLAY_FILE_MAX);
		goto out;
	}
	/* An exact-size copy, so that ASan sees a read past the input's end. */
	uint8_t *exact = malloc(n ? n : 1);
	if (!exact)
		goto out;
	memcpy(exact, buf, n);
	fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
	LLVMFuzzerTestOneInput(exact, n);
	free(exact);
	n_run++;
	ok = 1;
out:
	free(buf);
	fclose(f);
	return ok;
}

static int skip_dots(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/* Every regular file of dir, in name order (the same order on every run:
 * targets with state between inputs replay the same way each time). */
static int run_dir(const char *dir)
{
	struct dirent **names = NULL;
	int n = scandir(dir, &names, skip_dots, alphasort);
	int ok = 1;
	if (n < 0) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return 0;
	}
	for (int i = 0; i < n; i++) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
		if (ok && stat(path, &st) == 0 && S_ISREG(st.st_mode))
			ok = run_file(path);
		free(names[i]);
	}
	free(names);
	return ok;
}

int main(int argc, char **argv)
{
	static char *defaults[] = {(char *)KP_FUZZ_CORPUS, NULL};
	char **paths = argc > 1 ? argv + 1 : defaults;
	int ok = 1;

	LLVMFuzzerInitialize(&argc, &argv);
	for (; *paths && ok; paths++) {
		struct stat st;
		if (stat(*paths, &st) != 0) {
			fprintf(stderr, "replay: %s: %s\n", *paths, strerror(errno));
			ok = 0;
		} else {
			ok = S_ISDIR(st.st_mode) ? run_dir(*paths) : run_file(*paths);
		}
	}
	kp_fuzz_cleanup();
	if (ok && n_run == 0) {
		fprintf(stderr, "replay: no inputs found\n");
		ok = 0;
	}
	if (ok)
		fprintf(stderr, "replay: %u inputs, no crash\n", n_run);
	return ok ? 0 : 1;
}
