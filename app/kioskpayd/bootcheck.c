/* bootcheck.c — kp_journal_quick_check_file() in a thread; the verdict is
 * written to a pipe the main loop polls, so the loop never blocks on it. The
 * thread touches nothing but its own read-only connection and this struct. */
#include "bootcheck.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal.h"

#define WHY_SIZE 512

struct kp_bootcheck {
	pthread_t thread;
	bool running;        /* thread not joined yet */
	int rfd, wfd;        /* the pipe: one byte when done */
	char *path;
	kp_err result;       /* written by the thread before its byte */
	char why[WHY_SIZE];
};

static void *run(void *arg)
{
	kp_bootcheck *b = arg;
	b->result = kp_journal_quick_check_file(b->path, b->why, sizeof(b->why));
	/* The reader joins the thread before it reads result and why. */
	char one = 1;
	ssize_t n;
	do
		n = write(b->wfd, &one, 1);
	while (n < 0);
	return NULL;
}

kp_err kp_bootcheck_start(kp_bootcheck **out, const char *path)
{
	if (!out || !path)
		return KP_ERR_INVALID;
	*out = NULL;
	kp_bootcheck *b = calloc(1, sizeof(*b));
	if (!b)
		return KP_ERR_NOMEM;
	b->rfd = b->wfd = -1;
	kp_err err = KP_ERR_NOMEM;
	b->path = strdup(path);
	if (!b->path)
		goto out;
	int fds[2];
	err = KP_ERR_IO;
	if (pipe2(fds, O_CLOEXEC) != 0)
		goto out;
	b->rfd = fds[0];
	b->wfd = fds[1];
	if (pthread_create(&b->thread, NULL, run, b) != 0)
		goto out;
	b->running = true;
	*out = b;
	return KP_OK;
out:
	kp_bootcheck_free(b);
	return err;
}

int kp_bootcheck_fd(const kp_bootcheck *b)
{
	return b && b->running ? b->rfd : -1;
}

kp_err kp_bootcheck_collect(kp_bootcheck *b, char *why, size_t why_size)
{
	if (!b || !b->running)
		return KP_ERR_STATE;
	pthread_join(b->thread, NULL);
	b->running = false;
	if (why && why_size)
		snprintf(why, why_size, "%s", b->why);
	return b->result;
}

void kp_bootcheck_free(kp_bootcheck *b)
{
	if (!b)
		return;
	if (b->running)
		pthread_join(b->thread, NULL);
	if (b->rfd >= 0)
		close(b->rfd);
	if (b->wfd >= 0)
		close(b->wfd);
	free(b->path);
	free(b);
}
