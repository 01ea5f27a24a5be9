/* fw_test_util.c — temp dirs, running kioskfw, tree snapshots for the firmware
 * tests. Failures here abort the test: they are the harness's, not the code's. */
#include "fw_test_util.h"
#include "kp_rmtree.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mbedtls/sha256.h>

static void die(const char *what, const char *on)
{
	fprintf(stderr, "fw test harness: %s %s: %s\n", what, on, strerror(errno));
	abort();
}

void fwt_mkdtemp(char *out, size_t cap, const char *tag)
{
	const char *base = getenv("TMPDIR");
	snprintf(out, cap, "%s/kpfw-%s-XXXXXX", base && *base ? base : "/tmp", tag);
	if (!mkdtemp(out))
		die("mkdtemp", out);
}

void fwt_rmtree(const char *path)
{
	kp_rmtree(path);
}

void fwt_write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0)
		die("write", path);
}

char *fwt_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (n + 1 >= cap) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
		size_t got = fread(buf + n, 1, cap - n - 1, f);
		if (got == 0)
			break;
		n += got;
	}
	fclose(f);
	buf[n] = 0;
	if (len)
		*len = n;
	return buf;
}

static pid_t spawn(const char *exe, const char *failpoints, const char *const *args, int out_fd, int err_fd)
{
	const char *argv[64];
	size_t n = 0;
	argv[n++] = exe;
	for (size_t i = 0; args[i] && n < 63; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	pid_t pid = fork();
	if (pid < 0)
		die("fork", exe);
	if (pid == 0) {
		if (failpoints)
			setenv("KP_FAILPOINTS", failpoints, 1);
		else
			unsetenv("KP_FAILPOINTS");
		dup2(out_fd, 1);
		dup2(err_fd, 2);
		execv(exe, (char *const *)argv);
		_exit(126);
	}
	return pid;
}

int fwt_wait(pid_t pid)
{
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			die("waitpid", "child");
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void slurp(FILE *f, char *buf, size_t cap)
{
	rewind(f);
	size_t n = fread(buf, 1, cap - 1, f);
	buf[n] = 0;
	fclose(f);
}

void fwt_run_tool(fwt_run *r, const char *exe, const char *failpoints, const char *const *args)
{
	FILE *o = tmpfile(), *e = tmpfile();
	if (!o || !e)
		die("tmpfile", "output");
	fflush(stdout);
	fflush(stderr);
	pid_t pid = spawn(exe, failpoints, args, fileno(o), fileno(e));
	r->status = fwt_wait(pid);
	slurp(o, r->out, sizeof(r->out));
	slurp(e, r->err, sizeof(r->err));
}

pid_t fwt_spawn_tool(const char *exe, const char *failpoints, const char *const *args)
{
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (null < 0)
		die("open", "/dev/null");
	fflush(stdout);
	fflush(stderr);
	pid_t pid = spawn(exe, failpoints, args, null, null);
	close(null);
	return pid;
}

int fwt_lines(const char *s)
{
	int n = 0;
	for (const char *p = s; *p; p++)
		if (*p == '\n' || p[1] == 0)
			n++;
	return n;
}

/* ---- snapshots ---- */

struct snap {
	char **lines;
	size_t n, cap;
	size_t root_len;
};

static struct snap *cur; /* nftw has no user pointer */

static int snap_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)ftw;
	char line[8192], hex[65] = "-";
	if (flag == FTW_F) {
		size_t len = 0;
		char *data = fwt_read_file(path, &len);
		unsigned char h[32];
		if (!data)
			die("read", path);
		mbedtls_sha256_ret((const unsigned char *)data, len, h, 0);
		for (int i = 0; i < 32; i++)
			snprintf(hex + 2 * i, 3, "%02x", h[i]);
		free(data);
	}
	snprintf(line, sizeof(line), "%s %c %o %s", path + cur->root_len, flag == FTW_D ? 'd' : 'f',
		 (unsigned)(st->st_mode & 07777), hex);
	if (cur->n == cur->cap) {
		cur->cap = cur->cap ? 2 * cur->cap : 64;
		cur->lines = realloc(cur->lines, cur->cap * sizeof(char *));
	}
	cur->lines[cur->n++] = strdup(line);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char *fwt_snapshot(const char *root)
{
	struct snap s = {.root_len = strlen(root)};
	cur = &s;
	if (nftw(root, snap_one, 16, FTW_PHYS) != 0)
		die("nftw", root);
	cur = NULL;
	qsort(s.lines, s.n, sizeof(char *), cmp_str);
	size_t total = 1;
	for (size_t i = 0; i < s.n; i++)
		total += strlen(s.lines[i]) + 1;
	char *out = malloc(total), *p = out;
	for (size_t i = 0; i < s.n; i++) {
		size_t l = strlen(s.lines[i]);
		memcpy(p, s.lines[i], l);
		p[l] = '\n';
		p += l + 1;
		free(s.lines[i]);
	}
	*p = 0;
	free(s.lines);
	return out;
}
