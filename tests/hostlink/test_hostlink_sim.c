/* test_hostlink_sim.c — the host link against the project's host simulator
 * (kp-hostsim, a real process): 1000 pipelined requests, resumption counted
 * exactly across reconnects, and a host restart in the middle of traffic with
 * the unacked confirm redelivered after the reconnect. Complements
 * tests/hostsim/test_hostsim_hostlink.c (faults, refusals) and
 * test_hostlink_tls.c (against openssl s_server). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kp_free_port.h"
#include "hostlink.h"
#include "simtest.h"

static char g_dir[256], g_pki[300];

struct h {
	st_sim sim;
	int port;
	char ledger[320];
	kp_env env;
	kp_hostlink *link;
	int ups, downs, confirms;
	kp_host_msg last_confirm;
	/* pipelined requests */
	int answered, ok, disconnected, other;
};

static int64_t mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void quiet_log(void *ctx, kp_log_level level, const char *msg)
{
	(void)ctx;
	if (getenv("KP_TEST_VERBOSE"))
		fprintf(stderr, "hostlink %d: %s\n", (int)level, msg);
}

static void on_state(void *arg, bool up)
{
	struct h *h = arg;
	if (up)
		h->ups++;
	else
		h->downs++;
}

static void on_confirm(void *arg, const kp_host_msg *m)
{
	struct h *h = arg;
	h->confirms++;
	h->last_confirm = *m;
}

static void on_reply(void *arg, kp_err err, const kp_host_msg *reply)
{
	struct h *h = arg;
	h->answered++;
	if (err == KP_OK && reply && reply->op == KP_OP_PAYMENT)
		h->ok++;
	else if (err == KP_ERR_DISCONNECTED)
		h->disconnected++;
	else
		h->other++;
}

/* Start the simulator on h->port (fixed, so that a restart is the same host). */
static void sim_start(struct h *h)
{
	char listen[32], ca[400], crt[400], key[400];
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", h->port);
	snprintf(ca, sizeof(ca), "%s/ca.crt", g_pki);
	snprintf(crt, sizeof(crt), "%s/host.crt", g_pki);
	snprintf(key, sizeof(key), "%s/host.key", g_pki);
	const char *args[] = {"--listen", listen, "--control", "127.0.0.1:0", "--ledger", h->ledger,
			      "--ca", ca, "--cert", crt, "--key", key, "--confirm-interval-ms", "0",
			      NULL};
	assert_int_equal(st_sim_start(&h->sim, KP_HOSTSIM_EXE, args), KP_OK);
	assert_int_equal(h->sim.port, h->port);
}

static struct h *start(const char *name)
{
	struct h *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	h->port = kp_free_port(false);
	assert_true(h->port > 0);
	snprintf(h->ledger, sizeof(h->ledger), "%s/%s.db", g_dir, name);
	sim_start(h);
	char addr[64], ca[400], crt[400], key[400];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", h->port);
	snprintf(ca, sizeof(ca), "%s/ca.crt", g_pki);
	snprintf(crt, sizeof(crt), "%s/device.crt", g_pki);
	snprintf(key, sizeof(key), "%s/device.key", g_pki);
	kp_env_init_system(&h->env);
	h->env.log = quiet_log;
	h->env.log_level = KP_LOG_DEBUG;
	kp_hostlink_config cfg = {
		.address = addr,
		.server_name = "localhost",
		.ca_file = ca,
		.cert_file = crt,
		.key_file = key,
		.device_id = "kiosk-dev-1",
		.fw_version = "hostlink-sim-test",
		.request_timeout_ms = 20000,
		.ping_idle_ms = 60000,
		.backoff_min_ms = 50,
		.backoff_max_ms = 200,
		.connect_timeout_ms = 5000,
	};
	assert_int_equal(kp_hostlink_new(&h->link, &cfg, &h->env, on_confirm, on_state, h), KP_OK);
	return h;
}

static void finish(struct h *h)
{
	kp_hostlink_free(h->link);
	assert_int_equal(st_sim_stop(&h->sim), 0);
	free(h);
}

typedef bool (*pred_fn)(struct h *h);

/* Drive the link as the daemon does until pred holds or ms pass. */
static bool run_until(struct h *h, pred_fn pred, int64_t ms)
{
	int64_t until = mono() + ms;
	for (;;) {
		kp_hostlink_tick(h->link);
		if (pred && pred(h))
			return true;
		int64_t now = mono();
		if (now >= until)
			return false;
		struct pollfd pfd;
		kp_hostlink_pollfd(h->link, &pfd);
		int64_t wait = until - now, d = kp_hostlink_deadline(h->link);
		if (d > 0 && d - now < wait)
			wait = d > now ? d - now : 0;
		if (wait > 20)
			wait = 20;
		int n = poll(&pfd, pfd.fd >= 0 ? 1 : 0, (int)wait);
		if (n > 0 && pfd.revents)
			kp_hostlink_process(h->link, pfd.revents);
	}
}

static int g_want;
static bool is_up(struct h *h) { return kp_hostlink_up(h->link); }
static bool is_down(struct h *h) { return !kp_hostlink_up(h->link); }
static bool answered_all(struct h *h) { return h->answered >= g_want; }
static bool confirms_reach(struct h *h) { return h->confirms >= g_want; }

static kp_hostlink_stats stats(struct h *h)
{
	kp_hostlink_stats st;
	kp_hostlink_stats_get(h->link, &st);
	return st;
}

static void create(struct h *h, const char *attempt, const char *order)
{
	kp_host_msg m;
	st_msg_create(&m, attempt, order, 450, "qr");
	assert_int_equal(kp_hostlink_request(h->link, &m, on_reply, h), KP_OK);
}

static void test_pipelined_1000(void **state)
{
	(void)state;
	struct h *h = start("pipelined");
	assert_true(run_until(h, is_up, 5000));
	int64_t t0 = mono();
	char attempt[40], order[40];
	for (int i = 0; i < 1000; i++) {
		snprintf(attempt, sizeof(attempt), "pipe-att-%04d", i);
		snprintf(order, sizeof(order), "pipe-ord-%04d", i);
		create(h, attempt, order);
	}
	g_want = 1000;
	assert_true(run_until(h, answered_all, 30000));
	int64_t took = mono() - t0;
	assert_int_equal(h->ok, 1000);
	assert_int_equal(h->other + h->disconnected, 0);
	kp_hostlink_stats st = stats(h);
	assert_int_equal(st.requests_sent, 1000);
	assert_int_equal(st.replies, 1000);
	assert_int_equal(st.protocol_errors, 0);
	assert_int_equal(st.timeouts, 0);
	assert_int_equal(h->downs, 0);
	/* the host has them all, as pending payments of this device */
	cJSON *r = st_ctl(&h->sim, "{\"cmd\":\"status\"}");
	assert_non_null(r);
	const cJSON *req = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "stats"), "requests");
	assert_true(cJSON_IsNumber(req) && req->valuedouble >= 1001); /* hello + 1000 */
	cJSON_Delete(r);
	fprintf(stderr, "pipelined: 1000 create_payment round trips in %lld ms through kp-hostsim\n",
		(long long)took);
	finish(h);
}

static void test_reconnects_resume(void **state)
{
	(void)state;
	struct h *h = start("resume");
	assert_true(run_until(h, is_up, 5000));
	kp_hostlink_stats st = stats(h);
	assert_int_equal(st.full_handshakes, 1);
	assert_int_equal(st.resumed_handshakes, 0);
	for (int i = 1; i <= 3; i++) {
		assert_true(st_ctl_ok(&h->sim, "{\"cmd\":\"kick\"}"));
		assert_true(run_until(h, is_down, 5000));
		assert_true(run_until(h, is_up, 5000));
		st = stats(h);
		assert_int_equal(st.full_handshakes, 1);
		assert_int_equal(st.resumed_handshakes, (uint64_t)i);
		assert_int_equal(st.disconnects, (uint64_t)i);
	}
	assert_int_equal(h->ups, 4);
	/* the host agrees */
	cJSON *r = st_ctl(&h->sim, "{\"cmd\":\"status\"}");
	assert_non_null(r);
	const cJSON *s = cJSON_GetObjectItem(r, "stats");
	assert_int_equal((int)cJSON_GetObjectItem(s, "handshakes_full")->valuedouble, 1);
	assert_int_equal((int)cJSON_GetObjectItem(s, "handshakes_resumed")->valuedouble, 3);
	cJSON_Delete(r);
	finish(h);
}

static void test_host_restart_mid_stream(void **state)
{
	(void)state;
	struct h *h = start("restart");
	assert_true(run_until(h, is_up, 5000));
	create(h, "rs-att-1", "rs-ord-1");
	g_want = 1;
	assert_true(run_until(h, answered_all, 5000));
	assert_int_equal(h->ok, 1);
	/* paid: the confirm arrives; the kiosk does not ack it (its commit did
	 * not happen yet) */
	assert_true(st_ctl_ok(&h->sim, "{\"cmd\":\"pay\",\"attempt_id\":\"rs-att-1\"}"));
	assert_true(run_until(h, confirms_reach, 5000));
	int64_t seq = h->last_confirm.seq;
	assert_string_equal(h->last_confirm.attempt_id, "rs-att-1");

	/* 50 requests in flight, then the host process goes away */
	h->answered = h->ok = 0;
	char attempt[40];
	for (int i = 0; i < 50; i++) {
		kp_host_msg m;
		snprintf(attempt, sizeof(attempt), "rs-att-%d", 100 + i);
		st_msg_attempt(&m, KP_OP_QUERY_PAYMENT, attempt);
		assert_int_equal(kp_hostlink_request(h->link, &m, on_reply, h), KP_OK);
	}
	(void)run_until(h, NULL, 5); /* some go out, some stay queued */
	assert_int_equal(st_sim_stop(&h->sim), 0);
	assert_true(run_until(h, is_down, 5000));
	/* every request got exactly one answer: a reply or "disconnected" */
	assert_int_equal(h->answered, 50);
	assert_int_equal(h->other, 0);
	assert_int_equal(h->ok + h->disconnected, 50);
	assert_int_equal(kp_hostlink_ack(h->link, seq), KP_ERR_DISCONNECTED);
	/* the link keeps trying while the host is away */
	(void)run_until(h, NULL, 500);
	assert_true(stats(h).connects_failed >= 2);
	assert_false(kp_hostlink_up(h->link));

	/* the host comes back with its ledger: the unacked confirm is redelivered */
	sim_start(h);
	g_want = 2;
	assert_true(run_until(h, confirms_reach, 10000));
	assert_true(kp_hostlink_up(h->link));
	assert_int_equal(h->last_confirm.seq, seq);
	assert_string_equal(h->last_confirm.attempt_id, "rs-att-1");
	assert_int_equal(kp_hostlink_ack(h->link, seq), KP_OK);
	(void)run_until(h, NULL, 300);
	cJSON *d = st_ctl(&h->sim, "{\"cmd\":\"dump\"}");
	assert_non_null(d);
	const cJSON *k = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "confirms"), 0);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(k, "acked")));
	cJSON_Delete(d);

	/* acked: after another restart nothing comes back */
	assert_int_equal(st_sim_stop(&h->sim), 0);
	assert_true(run_until(h, is_down, 5000));
	sim_start(h);
	assert_true(run_until(h, is_up, 10000));
	(void)run_until(h, NULL, 300);
	assert_int_equal(h->confirms, 2);
	/* a new host process has new ticket keys: each restart costs a full
	 * handshake, a plain reconnect does not (test_reconnects_resume) */
	kp_hostlink_stats st = stats(h);
	assert_int_equal(st.full_handshakes + st.resumed_handshakes, 3);
	assert_int_equal(st.protocol_errors, 0);
	finish(h);
}

static int group_setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	if (!st_tmpdir("kp-test-hostlink-sim", g_dir, sizeof(g_dir)))
		return -1;
	snprintf(g_pki, sizeof(g_pki), "%s/pki", g_dir);
	const char *argv[] = {KP_PKI_EXE, g_pki, NULL};
	return st_run(argv) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	if (!getenv("KP_KEEP_TMP"))
		st_rmtree(g_dir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pipelined_1000),
		cmocka_unit_test(test_reconnects_resume),
		cmocka_unit_test(test_host_restart_mid_stream),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
