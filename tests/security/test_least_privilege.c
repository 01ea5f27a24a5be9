/* test_least_privilege.c — least privilege and limits on the real kioskpayd
 * (with kp-hostsim): started under umask 000, it still makes its journal
 * directory 0700 and the journal, -wal and -shm 0600; and a bounded flood of
 * 2000 API datagrams from 4 processes at once (valid and invalid orders, pay
 * requests, unknown ids, Observe registrations, oversize and garbage) leaves
 * it answering /health with the host up, its memory bounded, and the journal
 * passing `kioskctl journal check`. (That the API binds loopback by default
 * and warns loudly otherwise is test_config's default and test_api's
 * test_listen_addresses; key files 0600 in 0700 directories: test_pki and
 * test_fw_provision.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define FLOOD_PROCS 4
#define FLOOD_EACH 500          /* datagrams per process: 2000 in all */
#define FLOOD_WINDOW 32         /* unanswered datagrams per process */
#define RSS_GROWTH_MAX_KIB 16384

static void msleep(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int setup(void **state)
{
	kp_world *w = calloc(1, sizeof(*w));
	*state = w;
	if (w_setup(w, "privilege") != 0 || w_start_hostsim(w, NULL) != 0)
		return -1;
	/* the daemon inherits the most permissive umask there is */
	mode_t old = umask(0);
	int rc = w_start_daemon(w, NULL);
	umask(old);
	if (rc != 0)
		fprintf(stderr, "kioskpayd did not start (logs in %s)\n", w->dir);
	return rc;
}

static int teardown(void **state)
{
	kp_world *w = *state;
	w_teardown(w);
	free(w);
	return 0;
}

static unsigned mode_of(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0)
		fail_msg("%s: %s", path, strerror(errno));
	return (unsigned)(st.st_mode & 07777);
}

static void test_file_modes(void **state)
{
	kp_world *w = *state;
	char out[4096], path[256];
	/* a sale, so that -wal and -shm exist and have been written */
	assert_int_equal(w_coap(w, "post", "orders", "{\"dedup_key\":\"m-1\",\"amount\":5}", out, sizeof(out)), 200);

	snprintf(path, sizeof(path), "%s", w->journal);
	char *slash = strrchr(path, '/');
	assert_non_null(slash);
	*slash = '\0';
	assert_int_equal(mode_of(path), 0700);
	assert_int_equal(mode_of(w->journal), 0600);
	const char *suffix[] = {"-wal", "-shm"};
	for (size_t i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s%s", w->journal, suffix[i]);
		if (mode_of(path) != 0600)
			fail_msg("%s is %o, want 600", path, mode_of(path));
	}
}

/* ---------- the flood ---------- */

/* CoAP option header for a delta/length both < 13. */
static size_t put_opt(uint8_t *p, unsigned *last, unsigned num, const void *val, size_t len)
{
	size_t n = 0;
	unsigned delta = num - *last;
	*last = num;
	uint8_t d = delta < 13 ? (uint8_t)delta : 13;
	p[n++] = (uint8_t)(d << 4 | (len < 13 ? len : 13));
	if (delta >= 13)
		p[n++] = (uint8_t)(delta - 13);
	if (len >= 13)
		p[n++] = (uint8_t)(len - 13);
	memcpy(p + n, val, len);
	return n + len;
}

/* Request i of process k: one of eight kinds, CON or NON. */
static size_t make_request(uint8_t *b, size_t cap, int k, int i, const char *order_id)
{
	unsigned last = 0;
	size_t n = 0;
	uint16_t mid = (uint16_t)(k << 12 | (i & 0xfff));
	uint8_t token[4] = {(uint8_t)k, (uint8_t)(i >> 8), (uint8_t)i, 0x5a};
	char body[256];
	int kind = i % 8;
	bool post = kind == 1 || kind == 2 || kind == 3 || kind == 6;
	b[n++] = (uint8_t)(0x40 | (i % 3 == 0 ? 0x10 : 0) | sizeof(token)); /* ver 1, CON or NON */
	b[n++] = post ? 0x02 : 0x01;
	b[n++] = (uint8_t)(mid >> 8);
	b[n++] = (uint8_t)mid;
	memcpy(b + n, token, sizeof(token));
	n += sizeof(token);
	switch (kind) {
	case 0: /* GET /health */
		n += put_opt(b + n, &last, 11, "health", 6);
		break;
	case 1: /* POST /orders, a new cart each time */
	case 2: /* ... and the same cart again (dedup) */
		n += put_opt(b + n, &last, 11, "orders", 6);
		snprintf(body, sizeof(body), "{\"dedup_key\":\"flood-%d-%d\",\"amount\":%d}", k,
			 kind == 1 ? i : i - 1, 100 + (kind == 1 ? i : i - 1));
		b[n++] = 0xff;
		memcpy(b + n, body, strlen(body));
		n += strlen(body);
		break;
	case 3: /* POST /orders/{id}/pay */
		n += put_opt(b + n, &last, 11, "orders", 6);
		n += put_opt(b + n, &last, 11, order_id, strlen(order_id));
		n += put_opt(b + n, &last, 11, "pay", 3);
		b[n++] = 0xff;
		memcpy(b + n, "{\"channel\":\"qr\"}", 16);
		n += 16;
		break;
	case 4: /* GET /orders/{unknown} with Observe */
		n += put_opt(b + n, &last, 6, "", 0);
		n += put_opt(b + n, &last, 11, "orders", 6);
		snprintf(body, sizeof(body), "nope-%d-%d", k, i);
		n += put_opt(b + n, &last, 11, body, strlen(body));
		break;
	case 5: /* GET /orders/{id} with Observe */
		n += put_opt(b + n, &last, 6, "", 0);
		n += put_opt(b + n, &last, 11, "orders", 6);
		n += put_opt(b + n, &last, 11, order_id, strlen(order_id));
		break;
	case 6: /* POST /orders, a bad body */
		n += put_opt(b + n, &last, 11, "orders", 6);
		b[n++] = 0xff;
		memcpy(b + n, "{\"dedup_key\":", 13);
		n += 13;
		break;
	default: /* garbage */
		for (size_t g = 0; g < 24 && n < cap; g++)
			b[n++] = (uint8_t)(i * 31 + g * 7);
		break;
	}
	return n;
}

/* One flooding process: send its share as fast as it can, read what comes
 * back, report "sent answered" on fd. */
static void flood_child(int k, int port, const char *order_id, int fd)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	unsigned sent = 0, answered = 0;
	uint8_t b[512];
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) != 0)
		_exit(1);
	for (int i = 0; i < FLOOD_EACH; i++) {
		size_t n = make_request(b, sizeof(b), k, i, order_id);
		while (send(s, b, n, 0) < 0 && errno == EAGAIN)
			msleep(1);
		sent++;
		/* at most FLOOD_WINDOW unanswered (garbage and lost ones are given
		 * up on after a while): a flood the kernel does not drop */
		for (int64_t end = mono_ms() + 100; mono_ms() < end;) {
			if (recv(s, b, sizeof(b), 0) > 0)
				answered++;
			else if (sent - answered <= FLOOD_WINDOW)
				break;
			else
				msleep(1);
		}
	}
	for (int64_t end = mono_ms() + 2000; mono_ms() < end;) {
		if (recv(s, b, sizeof(b), 0) > 0)
			answered++;
		else
			msleep(5);
	}
	char line[64];
	int len = snprintf(line, sizeof(line), "%u %u\n", sent, answered);
	_exit(write(fd, line, (size_t)len) == len ? 0 : 1);
}

static long rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static void test_api_flood(void **state)
{
	kp_world *w = *state;
	char out[16384];
	assert_int_equal(w_coap(w, "post", "orders", "{\"dedup_key\":\"flood-target\",\"amount\":7}", out, sizeof(out)),
			 200);
	cJSON *o = cJSON_Parse(out);
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "order_id");
	assert_true(cJSON_IsString(id));
	long rss0 = rss_kib(w->daemon);

	int p[2];
	assert_int_equal(pipe(p), 0);
	int64_t t0 = mono_ms();
	for (int k = 0; k < FLOOD_PROCS; k++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			flood_child(k, w->api_port, id->valuestring, p[1]);
		}
	}
	close(p[1]);
	unsigned sent = 0, answered = 0;
	for (int k = 0; k < FLOOD_PROCS; k++) {
		int st;
		assert_true(wait(&st) > 0);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	FILE *r = fdopen(p[0], "r");
	unsigned s1, a1;
	while (fscanf(r, "%u %u", &s1, &a1) == 2) {
		sent += s1;
		answered += a1;
	}
	fclose(r);
	int64_t ms = mono_ms() - t0;

	/* still serving: /health with the host up, within a second */
	int64_t h0 = mono_ms();
	assert_int_equal(w_coap(w, "get", "health", NULL, out, sizeof(out)), 200);
	int64_t health_ms = mono_ms() - h0;
	assert_non_null(strstr(out, "\"status\":\"ok\""));
	long rss1 = rss_kib(w->daemon);
	assert_int_equal(w_coap(w, "get", "metrics", NULL, out, sizeof(out)), 200);
	cJSON *m = cJSON_Parse(out);
	const cJSON *api = cJSON_GetObjectItemCaseSensitive(m, "api");
	double requests = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(api, "requests"));
	double observed = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(api, "observed_orders"));
	const cJSON *orders = cJSON_GetObjectItemCaseSensitive(m, "orders");
	double pending = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(orders, "pending"));
	cJSON_Delete(m);
	cJSON_Delete(o);

	fprintf(stderr,
		"flood: %u datagrams from %d processes in %lld ms, %u answers read, %.0f handled by the API, "
		"%.0f orders pending, %.0f observed; /health after it in %lld ms; RSS %ld -> %ld KiB\n",
		sent, FLOOD_PROCS, (long long)ms, answered, requests, pending, observed, (long long)health_ms, rss0,
		rss1);
	assert_int_equal(sent, FLOOD_PROCS * FLOOD_EACH);
	/* the window keeps the kernel from dropping most: the API saw them */
	assert_true(answered > 0 && requests >= FLOOD_PROCS * FLOOD_EACH / 2);
	assert_true(observed <= 64); /* KP_API_OBSERVED_MAX */
	/* one order per new cart (kind 1: i % 8 == 1), the rest refused or deduplicated */
	assert_true(pending <= 1 + FLOOD_PROCS * ((FLOOD_EACH + 6) / 8));
	assert_true(health_ms < 1000);
#ifndef __SANITIZE_ADDRESS__ /* ASan keeps freed memory in quarantine */
	if (rss0 > 0 && rss1 > 0 && rss1 - rss0 > RSS_GROWTH_MAX_KIB)
		fail_msg("kioskpayd grew by %ld KiB during the flood", rss1 - rss0);
#endif

	/* the journal is consistent, while running and after a clean stop */
	assert_int_equal(w_journal_check(w), 0);
	assert_int_equal(w_stop_daemon(w, SIGTERM), 0);
	assert_int_equal(w_journal_check(w), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_file_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_api_flood, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
