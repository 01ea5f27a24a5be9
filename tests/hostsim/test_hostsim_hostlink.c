/* test_hostsim_hostlink.c — the kiosk's real TLS client (kp_hostlink) against the
 * real kp-hostsim process: the two halves of host-protocol.md meet. Confirms
 * reach the link and stop after its ack, a reconnect resumes the TLS session,
 * the link refuses every wrong host certificate and TLS 1.1, and it recovers
 * from the simulator's connection faults and malformed frames. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hostlink.h"
#include "simtest.h"

#ifndef KP_HOSTSIM_EXE
#error "KP_HOSTSIM_EXE must name the kp-hostsim executable"
#endif
#ifndef KP_PKI_EXE
#error "KP_PKI_EXE must name the kp-pki executable"
#endif

static char g_dir[256], g_pki[300];
static int g_n;

struct h {
	st_sim sim;
	char ledger[320];
	kp_env env;
	kp_hostlink *link;
	int ups, downs, replies, confirms;
	kp_err last_err;
	kp_host_msg last_reply, last_confirm;
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
	h->replies++;
	h->last_err = err;
	if (reply)
		h->last_reply = *reply;
	else
		memset(&h->last_reply, 0, sizeof(h->last_reply));
}

static void sim_start(struct h *h, const char *cert, const char *extra)
{
	char ca[400], crt[400], key[400];
	snprintf(ca, sizeof(ca), "%s/ca.crt", g_pki);
	snprintf(crt, sizeof(crt), "%s/%s.crt", g_pki, cert);
	snprintf(key, sizeof(key), "%s/%s.key", g_pki, cert);
	const char *args[] = {"--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--ledger", h->ledger,
			      "--ca", ca, "--cert", crt, "--key", key, "--confirm-interval-ms", "60000",
			      extra, NULL};
	assert_int_equal(st_sim_start(&h->sim, KP_HOSTSIM_EXE, args), KP_OK);
}

static void link_open(struct h *h)
{
	char addr[64], ca[400], crt[400], key[400];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", h->sim.port);
	snprintf(ca, sizeof(ca), "%s/ca.crt", g_pki);
	snprintf(crt, sizeof(crt), "%s/device.crt", g_pki);
	snprintf(key, sizeof(key), "%s/device.key", g_pki);
	kp_env_init_system(&h->env);
	h->env.log = quiet_log;
	kp_hostlink_config cfg = {
		.address = addr,
		.server_name = "localhost",
		.ca_file = ca,
		.cert_file = crt,
		.key_file = key,
		.device_id = "kiosk-dev-1",
		.fw_version = "hostsim-test",
		.request_timeout_ms = 2000,
		.ping_idle_ms = 15000,
		.backoff_min_ms = 50,
		.backoff_max_ms = 200,
		.connect_timeout_ms = 3000,
	};
	assert_int_equal(kp_hostlink_new(&h->link, &cfg, &h->env, on_confirm, on_state, h), KP_OK);
}

static struct h *start(const char *cert, const char *extra)
{
	struct h *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	snprintf(h->ledger, sizeof(h->ledger), "%s/ledger-%d.db", g_dir, ++g_n);
	sim_start(h, cert, extra);
	link_open(h);
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

static bool is_up(struct h *h) { return kp_hostlink_up(h->link); }
static bool has_reply(struct h *h) { return h->replies > 0; }
static bool has_confirm(struct h *h) { return h->confirms > 0; }
static bool went_down(struct h *h) { return h->downs > 0; }

static void request(struct h *h, const kp_host_msg *m)
{
	h->replies = 0;
	assert_int_equal(kp_hostlink_request(h->link, m, on_reply, h), KP_OK);
	assert_true(run_until(h, has_reply, 5000));
}

static double sim_stat(struct h *h, const char *name)
{
	cJSON *r = st_ctl(&h->sim, "{\"cmd\":\"status\"}");
	assert_non_null(r);
	const cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "stats"), name);
	assert_true(cJSON_IsNumber(v));
	double d = v->valuedouble;
	cJSON_Delete(r);
	return d;
}

static int group_setup(void **state)
{
	signal(SIGPIPE, SIG_IGN);
	if (!st_tmpdir("kp-test-hostsim-link", g_dir, sizeof(g_dir)))
		return -1;
	snprintf(g_pki, sizeof(g_pki), "%s/pki", g_dir);
	const char *argv[] = {KP_PKI_EXE, g_pki, NULL};
	return st_run(argv) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
	if (!getenv("KP_KEEP_TMP"))
		st_rmtree(g_dir);
	return 0;
}

static void test_sale_confirm_ack_and_resume(void **state)
{
	struct h *h = start("host", NULL);
	assert_true(run_until(h, is_up, 5000));
	kp_host_msg m;
	st_msg_create(&m, "att-link-1", "ord-link", 450, "qr");
	request(h, &m);
	assert_int_equal(h->last_err, KP_OK);
	assert_int_equal(h->last_reply.op, KP_OP_PAYMENT);
	assert_string_equal(h->last_reply.status, "pending");

	assert_true(st_ctl_ok(&h->sim, "{\"cmd\":\"pay\",\"attempt_id\":\"att-link-1\"}"));
	assert_true(run_until(h, has_confirm, 5000));
	assert_string_equal(h->last_confirm.attempt_id, "att-link-1");
	assert_int_equal(h->last_confirm.amount, 450);
	assert_int_equal(kp_hostlink_ack(h->link, h->last_confirm.seq), KP_OK);
	(void)run_until(h, NULL, 200);
	cJSON *d = st_ctl(&h->sim, "{\"cmd\":\"dump\"}");
	const cJSON *k = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "confirms"), 0);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(k, "acked")));
	cJSON_Delete(d);

	/* Cut by the host: the link comes back on a resumed session, and the
	 * acked confirm is not delivered again. */
	h->confirms = 0;
	assert_true(st_ctl_ok(&h->sim, "{\"cmd\":\"kick\"}"));
	assert_true(run_until(h, went_down, 5000));
	assert_true(run_until(h, is_up, 5000));
	(void)run_until(h, NULL, 300);
	assert_true(h->ups >= 2);
	assert_int_equal(h->confirms, 0);
	kp_hostlink_stats st;
	kp_hostlink_stats_get(h->link, &st);
	assert_true(st.resumed_handshakes >= 1);
	assert_true(sim_stat(h, "handshakes_resumed") >= 1);
	finish(h);
}

static void test_link_refuses_bad_hosts(void **state)
{
	static const struct {
		const char *cert, *extra;
	} cases[] = {
		{"host-expired", NULL},
		{"host-wrong-name", NULL},
		{"host-other-ca", NULL},
		{"host", "--tls11-only"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct h *h = start(cases[i].cert, cases[i].extra);
		assert_false(run_until(h, is_up, 1500));
		kp_hostlink_stats st;
		kp_hostlink_stats_get(h->link, &st);
		if (st.connects_failed < 1)
			fail_msg("%s %s: no failed connect counted", cases[i].cert, cases[i].extra ? cases[i].extra : "");
		assert_int_equal(sim_stat(h, "requests"), 0); /* nothing was sent */
		finish(h);
	}
}

static void test_link_recovers_from_faults(void **state)
{
	struct h *h = start("host", NULL);
	assert_true(run_until(h, is_up, 5000));
	kp_host_msg m;
	/* The reply is lost with the connection: the request fails, the retry
	 * on the new connection gets the same payment. */
	assert_true(st_ctl_ok(&h->sim, "{\"cmd\":\"fault\",\"fault\":\"close_after_handling\","
				       "\"op\":\"create_payment\"}"));
	st_msg_create(&m, "att-link-2", "ord-link2", 300, "qr");
	request(h, &m);
	assert_int_not_equal(h->last_err, KP_OK);
	assert_true(run_until(h, is_up, 5000));
	request(h, &m);
	assert_int_equal(h->last_err, KP_OK);
	assert_string_equal(h->last_reply.status, "pending");

	/* A malformed frame from the host: the link drops it and reconnects. */
	int downs = h->downs;
	cJSON *r = st_ctl(&h->sim, "{\"cmd\":\"fault\",\"fault\":\"malformed_frame\",\"kind\":\"bad_field\"}");
	assert_non_null(r);
	cJSON_Delete(r);
	(void)run_until(h, NULL, 300);
	assert_true(h->downs > downs);
	assert_true(run_until(h, is_up, 5000));
	kp_hostlink_stats st;
	kp_hostlink_stats_get(h->link, &st);
	assert_true(st.protocol_errors >= 1);

	/* Confirms dropped then redelivered, and duplicated: delivered at least once. */
	assert_true(st_ctl_ok(&h->sim, "{\"cmd\":\"fault\",\"fault\":\"drop_confirms\",\"count\":1}"));
	assert_true(st_ctl_ok(&h->sim, "{\"cmd\":\"pay\",\"attempt_id\":\"att-link-2\"}"));
	(void)run_until(h, NULL, 300);
	assert_int_equal(h->confirms, 0);
	assert_true(st_ctl_ok(&h->sim, "{\"cmd\":\"fault\",\"fault\":\"duplicate_confirms\",\"count\":1}"));
	assert_true(st_ctl_ok(&h->sim, "{\"cmd\":\"redeliver\"}"));
	assert_true(run_until(h, has_confirm, 5000));
	(void)run_until(h, NULL, 300);
	assert_int_equal(h->confirms, 2);
	assert_string_equal(h->last_confirm.attempt_id, "att-link-2");
	finish(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sale_confirm_ack_and_resume),
		cmocka_unit_test(test_link_refuses_bad_hosts),
		cmocka_unit_test(test_link_recovers_from_faults),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
