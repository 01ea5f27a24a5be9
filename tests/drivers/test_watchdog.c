/* test_watchdog.c — the watchdog is fed on schedule while the loop turns and
 * is healthy, and not otherwise: a stalled loop or an unwritable journal
 * leaves a gap longer than the timeout between keepalives (the sim sink
 * records each one with its time, as the hardware would see them). systemd's
 * WATCHDOG=1, READY=1 and STOPPING=1 arrive on a real notify socket, path and
 * abstract. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "kp_env.h"
#include "watchdog.h"

#define TIMEOUT_MS 3000

struct fixture {
	char dir[64];
	char sim[128];
	char spec[140];
	kp_env env;
	kp_fake_world world;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/kp-wd-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->sim, sizeof(f->sim), "%s/keepalives", f->dir);
	snprintf(f->spec, sizeof(f->spec), "sim:%s", f->sim);
	kp_env_init_fake(&f->env, &f->world, 3, 1700000000000);
	f->world.quiet = true;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	int rc = system(cmd);
	free(f);
	return rc == 0 ? 0 : -1;
}

/* The keepalive times the sim sink recorded; returns how many. */
static int keepalives(const struct fixture *f, int64_t *at, int cap, bool *closed)
{
	FILE *fp = fopen(f->sim, "r");
	assert_non_null(fp);
	char line[64];
	int n = 0;
	*closed = false;
	while (fgets(line, sizeof(line), fp)) {
		long long t;
		if (sscanf(line, "keepalive %lld", &t) == 1 && n < cap)
			at[n++] = t;
		else if (strcmp(line, "close\n") == 0)
			*closed = true;
	}
	fclose(fp);
	return n;
}

/* The longest time the watchdog went without a keepalive between from and to. */
static int64_t longest_gap(const int64_t *at, int n, int64_t from, int64_t to)
{
	int64_t prev = from, worst = 0;
	for (int i = 0; i < n; i++) {
		if (at[i] - prev > worst)
			worst = at[i] - prev;
		prev = at[i];
	}
	return to - prev > worst ? to - prev : worst;
}

/* The daemon's loop: turns every step_ms for ms, each turn calls service. */
static void loop(struct fixture *f, kp_watchdog *w, int64_t ms, int64_t step_ms, bool healthy)
{
	for (int64_t t = 0; t < ms; t += step_ms) {
		kp_fake_advance(&f->world, step_ms);
		(void)kp_watchdog_service(w, kp_now_mono(&f->env), healthy, "journal not writable");
	}
}

static void test_fed_while_turning_and_healthy(void **state)
{
	struct fixture *f = *state;
	kp_watchdog *w = NULL;
	kp_watchdog_config c = {.device = f->spec, .timeout_ms = TIMEOUT_MS};
	assert_int_equal(kp_watchdog_open(&w, &c, &f->env), KP_OK);
	int64_t t0 = kp_now_mono(&f->env);
	/* first turn feeds at once, then every timeout/3 */
	int64_t next = kp_watchdog_service(w, t0, true, NULL);
	assert_int_equal(next, t0 + TIMEOUT_MS / 3);
	assert_int_equal(kp_watchdog_service(w, t0 + 10, true, NULL), t0 + TIMEOUT_MS / 3); /* not due */
	loop(f, w, 10000, 100, true);
	kp_watchdog_stats st;
	kp_watchdog_stats_get(w, &st);
	assert_int_equal(st.interval_ms, TIMEOUT_MS / 3);
	assert_int_equal(st.keepalives, 11);
	assert_int_equal(st.withheld, 0);
	kp_watchdog_close(w, true);
	int64_t at[64];
	bool closed;
	int n = keepalives(f, at, 64, &closed);
	assert_int_equal(n, 11);
	assert_true(closed);
	assert_true(longest_gap(at, n, t0, t0 + 10000) <= TIMEOUT_MS / 3 + 100);
}

static void test_stalled_loop_is_not_fed(void **state)
{
	struct fixture *f = *state;
	kp_watchdog *w = NULL;
	kp_watchdog_config c = {.device = f->spec, .timeout_ms = TIMEOUT_MS};
	assert_int_equal(kp_watchdog_open(&w, &c, &f->env), KP_OK);
	int64_t t0 = kp_now_mono(&f->env);
	loop(f, w, 3000, 50, true);
	/* the loop stalls: a commit hangs for 8 s, nothing turns */
	int64_t stall_from = kp_now_mono(&f->env);
	kp_fake_advance(&f->world, 8000);
	int64_t stall_to = kp_now_mono(&f->env);
	loop(f, w, 2000, 50, true);
	kp_watchdog_close(w, false);
	int64_t at[64];
	bool closed;
	int n = keepalives(f, at, 64, &closed);
	assert_false(closed); /* an unclean stop leaves it armed */
	int in_stall = 0, before = 0;
	for (int i = 0; i < n; i++) {
		in_stall += at[i] > stall_from && at[i] < stall_to;
		before += at[i] <= stall_from;
	}
	assert_int_equal(in_stall, 0);
	/* a real watchdog would have reset the board: the gap outlasted it */
	assert_true(longest_gap(at, n, t0, kp_now_mono(&f->env)) > TIMEOUT_MS);
	/* the turns before were fed on time, and the first turn after feeds */
	assert_true(longest_gap(at, before, t0, stall_from) <= TIMEOUT_MS / 3 + 50);
	assert_int_equal(at[before], stall_to + 50);
}

static void test_unhealthy_loop_is_not_fed(void **state)
{
	struct fixture *f = *state;
	kp_watchdog *w = NULL;
	kp_watchdog_config c = {.device = f->spec, .timeout_ms = TIMEOUT_MS};
	assert_int_equal(kp_watchdog_open(&w, &c, &f->env), KP_OK);
	loop(f, w, 2000, 100, true);
	kp_watchdog_stats st;
	kp_watchdog_stats_get(w, &st);
	uint64_t fed = st.keepalives;
	/* the loop turns, but the journal cannot be written */
	int64_t bad_from = kp_now_mono(&f->env);
	loop(f, w, 5000, 100, false);
	kp_watchdog_stats_get(w, &st);
	assert_int_equal(st.keepalives, fed);
	assert_true(st.withheld >= 4);
	assert_true(strstr(f->world.last_log, "not fed: journal not writable") != NULL);
	/* healthy again: fed at the next turn */
	kp_fake_advance(&f->world, 100);
	(void)kp_watchdog_service(w, kp_now_mono(&f->env), true, NULL);
	kp_watchdog_stats_get(w, &st);
	assert_int_equal(st.keepalives, fed + 1);
	kp_watchdog_close(w, true);
	int64_t at[64];
	bool closed;
	int n = keepalives(f, at, 64, &closed);
	assert_true(longest_gap(at, n, bad_from, bad_from + 5000) >= 5000 - TIMEOUT_MS / 3);
}

static int bind_dgram(struct sockaddr_un *a, socklen_t len)
{
	int s = socket(AF_UNIX, SOCK_DGRAM, 0);
	assert_true(s >= 0);
	assert_int_equal(bind(s, (struct sockaddr *)a, len), 0);
	return s;
}

/* Every datagram waiting on s, joined by '|'. */
static void drain(int s, char *out, size_t cap)
{
	size_t used = 0;
	out[0] = '\0';
	char buf[128];
	ssize_t r;
	while ((r = recv(s, buf, sizeof(buf) - 1, MSG_DONTWAIT)) > 0) {
		buf[r] = '\0';
		used += (size_t)snprintf(out + used, cap - used, "%s%s", used ? "|" : "", buf);
	}
}

static void test_systemd_notify(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s/notify", f->dir);
	int s = bind_dgram(&a, sizeof(a));
	kp_watchdog *w = NULL;
	/* systemd only (no device): WatchdogSec=2 → fed every second */
	kp_watchdog_config c = {.device = "none", .notify_socket = a.sun_path, .notify_usec = 2000000};
	assert_int_equal(kp_watchdog_open(&w, &c, &f->env), KP_OK);
	assert_int_equal(kp_watchdog_notify(w, "READY=1"), KP_OK);
	loop(f, w, 3000, 100, true);
	kp_watchdog_stats st;
	kp_watchdog_stats_get(w, &st);
	assert_int_equal(st.interval_ms, 1000);
	assert_int_equal(st.keepalives, 0);
	assert_int_equal(st.notifies, 3);
	loop(f, w, 3000, 100, false); /* unhealthy: nothing for systemd either */
	kp_watchdog_close(w, true);
	char got[512];
	drain(s, got, sizeof(got));
	assert_string_equal(got, "READY=1|WATCHDOG=1|WATCHDOG=1|WATCHDOG=1|STOPPING=1");
	close(s);

	/* abstract namespace, "@name" */
	struct sockaddr_un ab = {.sun_family = AF_UNIX};
	char name[64];
	snprintf(name, sizeof(name), "@kp-wd-test-%d", (int)getpid());
	memcpy(ab.sun_path, name, strlen(name));
	ab.sun_path[0] = '\0';
	s = bind_dgram(&ab, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name)));
	kp_watchdog_config c2 = {.device = f->spec, .timeout_ms = 30000, .notify_socket = name, .notify_usec = 4000000};
	assert_int_equal(kp_watchdog_open(&w, &c2, &f->env), KP_OK);
	(void)kp_watchdog_service(w, kp_now_mono(&f->env), true, NULL);
	kp_watchdog_stats_get(w, &st);
	assert_int_equal(st.interval_ms, 2000); /* the shorter of the two */
	assert_int_equal(st.keepalives, 1);
	kp_watchdog_close(w, false);
	drain(s, got, sizeof(got));
	assert_string_equal(got, "WATCHDOG=1");
	close(s);
}

static void test_open_and_probe(void **state)
{
	struct fixture *f = *state;
	kp_watchdog *w = NULL;
	kp_watchdog_config none = {.device = ""};
	assert_int_equal(kp_watchdog_open(&w, &none, &f->env), KP_OK);
	assert_int_equal(kp_watchdog_service(w, 1, true, NULL), 0); /* nothing to feed */
	assert_int_equal(kp_watchdog_notify(w, "READY=1"), KP_OK); /* not under systemd: fine */
	kp_watchdog_close(w, true);
	kp_watchdog_config missing = {.device = "/nonexistent/watchdog"};
	assert_int_equal(kp_watchdog_open(&w, &missing, &f->env), KP_ERR_IO);
	assert_null(w);
	kp_watchdog_config bad_sock = {.device = "none", .notify_socket = "relative/path"};
	assert_int_equal(kp_watchdog_open(&w, &bad_sock, &f->env), KP_ERR_INVALID);
	kp_watchdog_close(NULL, true);

	char why[160];
	assert_true(kp_watchdog_path_writable(f->dir, 0, why, sizeof(why)));
	char gone[128];
	snprintf(gone, sizeof(gone), "%s/gone/journal.db", f->dir);
	assert_false(kp_watchdog_path_writable(gone, 0, why, sizeof(why)));
	assert_true(strstr(why, "not writable") != NULL);
	assert_false(kp_watchdog_path_writable(f->dir, UINT64_MAX, why, sizeof(why)));
	assert_true(strstr(why, "free") != NULL);
	assert_false(kp_watchdog_path_writable("", 0, NULL, 0));
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_fed_while_turning_and_healthy),
		T(test_stalled_loop_is_not_fed),
		T(test_unhealthy_loop_is_not_fed),
		T(test_systemd_notify),
		T(test_open_and_probe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
