/* test_hostsim.c — the real kp-hostsim process over loopback TLS: who it lets in,
 * the host's promises (idempotency, tombstones, cancel races, refunds, at-least-
 * once confirms, a ledger that survives restarts), the control port, each fault
 * mode, and the dump the invariant checker reads. Every test starts its own
 * simulator on a fresh ledger and checks that SIGTERM stops it cleanly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "simtest.h"

#ifndef KP_HOSTSIM_EXE
#error "KP_HOSTSIM_EXE must name the kp-hostsim executable"
#endif
#ifndef KP_PKI_EXE
#error "KP_PKI_EXE must name the kp-pki executable"
#endif

#define DEV1 "kiosk-dev-1"
#define DEV2 "kiosk-dev-2"
#define T 5000 /* ms: a reply that takes longer is a failure */

struct fx {
	char dir[256];
	char pki[300];
	char ledger[320];
	int ledger_n;
	st_sim sim;
	bool running;
};

static struct fx g_fx;

static void pki_path(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", g_fx.pki, name);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Start the simulator on the current ledger with host cert `cert` (base name)
 * and extra arguments. */
static void sim_start_with(const char *cert, const char *const *extra)
{
	char ca[400], crt[400], key[400], name[64];
	pki_path(ca, sizeof(ca), "ca.crt");
	snprintf(name, sizeof(name), "%s.crt", cert);
	pki_path(crt, sizeof(crt), name);
	snprintf(name, sizeof(name), "%s.key", cert);
	pki_path(key, sizeof(key), name);
	const char *args[40] = {"--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--ledger", g_fx.ledger,
				"--ca", ca, "--cert", crt, "--key", key, "--seed", "42"};
	size_t n = 14;
	bool has_interval = false;
	for (size_t i = 0; extra && extra[i] && n < 38; i++) {
		has_interval = has_interval || strcmp(extra[i], "--confirm-interval-ms") == 0;
		args[n++] = extra[i];
	}
	if (!has_interval) {
		args[n++] = "--confirm-interval-ms";
		args[n++] = "60000";
	}
	args[n] = NULL;
	assert_int_equal(st_sim_start(&g_fx.sim, KP_HOSTSIM_EXE, args), KP_OK);
	g_fx.running = true;
}

static void sim_stop_clean(void)
{
	assert_true(g_fx.running);
	g_fx.running = false;
	assert_int_equal(st_sim_stop(&g_fx.sim), 0);
}

static int group_setup(void **state)
{
	signal(SIGPIPE, SIG_IGN);
	if (!st_tmpdir("kp-test-hostsim", g_fx.dir, sizeof(g_fx.dir)))
		return -1;
	snprintf(g_fx.pki, sizeof(g_fx.pki), "%s/pki", g_fx.dir);
	const char *argv[] = {KP_PKI_EXE, g_fx.pki, NULL};
	return st_run(argv) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
	if (!getenv("KP_KEEP_TMP"))
		st_rmtree(g_fx.dir);
	return 0;
}

/* Each test: a fresh ledger and a running simulator with the good host cert. */
static int test_setup(void **state)
{
	snprintf(g_fx.ledger, sizeof(g_fx.ledger), "%s/ledger-%d.db", g_fx.dir, ++g_fx.ledger_n);
	sim_start_with("host", NULL);
	return 0;
}

static int test_teardown(void **state)
{
	if (g_fx.running) {
		g_fx.running = false;
		if (st_sim_stop(&g_fx.sim) != 0)
			return -1; /* SIGTERM must end it cleanly */
	}
	return 0;
}

static int connect_as(st_client *c, const char *cert, mbedtls_ssl_session *session)
{
	char ca[400], crt[400], key[400], name[64];
	pki_path(ca, sizeof(ca), "ca.crt");
	st_client_opts o = {.ca = ca, .session = session};
	if (cert) {
		snprintf(name, sizeof(name), "%s.crt", cert);
		pki_path(crt, sizeof(crt), name);
		snprintf(name, sizeof(name), "%s.key", cert);
		pki_path(key, sizeof(key), name);
		o.cert = crt;
		o.key = key;
	}
	return st_client_connect(c, g_fx.sim.port, &o);
}

/* Connect with a device certificate and say hello. */
static void open_device(st_client *c, const char *cert, const char *device)
{
	assert_int_equal(connect_as(c, cert, NULL), 0);
	assert_int_equal(st_client_hello(c, device), KP_OK);
}

static void call(st_client *c, kp_host_msg *req, kp_host_msg *rep)
{
	assert_int_equal(st_client_call(c, req, rep, T), KP_OK);
}

static void create(st_client *c, const char *attempt, const char *order, int64_t amount, kp_host_msg *rep)
{
	kp_host_msg m;
	st_msg_create(&m, attempt, order, amount, "qr");
	call(c, &m, rep);
}

static void expect_payment(const kp_host_msg *rep, const char *attempt, const char *status)
{
	assert_int_equal(rep->op, KP_OP_PAYMENT);
	assert_string_equal(rep->attempt_id, attempt);
	assert_string_equal(rep->status, status);
}

static void expect_error(const kp_host_msg *rep, const char *code)
{
	assert_int_equal(rep->op, KP_OP_ERROR);
	assert_string_equal(rep->code, code);
}

/* Control "pay" now; returns host_txn in txn. */
static void ctl_pay(const char *attempt, char *txn, size_t cap)
{
	cJSON *r = st_ctl(&g_fx.sim, "{\"cmd\":\"pay\",\"attempt_id\":\"%s\"}", attempt);
	assert_non_null(r);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(r, "ok")));
	const cJSON *t = cJSON_GetObjectItem(r, "host_txn");
	assert_true(cJSON_IsString(t));
	if (txn)
		snprintf(txn, cap, "%s", t->valuestring);
	cJSON_Delete(r);
}

static cJSON *dump(void)
{
	cJSON *d = st_ctl(&g_fx.sim, "{\"cmd\":\"dump\"}");
	assert_non_null(d);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(d, "ok")));
	return d;
}

/* The element of d[part] whose key field equals value, or NULL. */
static const cJSON *find(const cJSON *d, const char *part, const char *key, const char *value)
{
	const cJSON *e;
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(d, part))
	{
		const cJSON *v = cJSON_GetObjectItem(e, key);
		if (cJSON_IsString(v) && strcmp(v->valuestring, value) == 0)
			return e;
	}
	return NULL;
}

static const char *str_of(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItem(o, k);
	assert_true(cJSON_IsString(v));
	return v->valuestring;
}

static double num_of(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItem(o, k);
	assert_true(cJSON_IsNumber(v));
	return v->valuedouble;
}

static double stat_of(const char *name)
{
	cJSON *r = st_ctl(&g_fx.sim, "{\"cmd\":\"status\"}");
	assert_non_null(r);
	double v = num_of(cJSON_GetObjectItem(r, "stats"), name);
	cJSON_Delete(r);
	return v;
}

/* ---- who gets in -------------------------------------------------------------- */

static void test_refuses_clients_without_valid_cert(void **state)
{
	static const struct {
		const char *cert; /* NULL: none */
	} cases[] = {{NULL}, {"device-other-ca"}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		st_client c;
		double before = stat_of("handshake_failures");
		int ret = connect_as(&c, cases[i].cert, NULL);
		if (ret == 0) {
			/* TLS 1.2 client: the refusal may only show on the first read. */
			assert_int_not_equal(st_client_hello(&c, DEV1), KP_OK);
		}
		st_client_close(&c);
		assert_true(stat_of("handshake_failures") >= before + 1);
	}
	/* Nothing was recorded for them. */
	cJSON *d = dump();
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(d, "payments")), 0);
	cJSON_Delete(d);
}

static void test_wrong_host_certificates(void **state)
{
	static const struct {
		const char *cert;
		uint32_t flag;
	} cases[] = {
		{"host-expired", MBEDTLS_X509_BADCERT_EXPIRED},
		{"host-wrong-name", MBEDTLS_X509_BADCERT_CN_MISMATCH},
		{"host-other-ca", MBEDTLS_X509_BADCERT_NOT_TRUSTED},
	};
	sim_stop_clean();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sim_start_with(cases[i].cert, NULL);
		st_client c;
		int ret = connect_as(&c, "device", NULL);
		assert_int_equal(ret, MBEDTLS_ERR_X509_CERT_VERIFY_FAILED);
		assert_true(c.verify_flags & cases[i].flag);
		st_client_close(&c);
		sim_stop_clean();
	}
	sim_start_with("host", NULL);
}

static void test_tls11_only(void **state)
{
	sim_stop_clean();
	const char *extra[] = {"--tls11-only", NULL};
	sim_start_with("host", extra);
	st_client c;
	char ca[400], crt[400], key[400];
	pki_path(ca, sizeof(ca), "ca.crt");
	pki_path(crt, sizeof(crt), "device.crt");
	pki_path(key, sizeof(key), "device.key");
	/* A TLS 1.2-only client (like the kiosk) is refused... */
	st_client_opts o = {.ca = ca, .cert = crt, .key = key};
	assert_int_not_equal(st_client_connect(&c, g_fx.sim.port, &o), 0);
	st_client_close(&c);
	/* ...one that still allows 1.1 gets exactly 1.1. */
	o.allow_tls11 = true;
	assert_int_equal(st_client_connect(&c, g_fx.sim.port, &o), 0);
	assert_string_equal(mbedtls_ssl_get_version(&c.ssl), "TLSv1.1");
	assert_int_equal(st_client_hello(&c, DEV1), KP_OK);
	st_client_close(&c);
}

static void test_session_resumption(void **state)
{
	mbedtls_ssl_session sess;
	mbedtls_ssl_session_init(&sess);
	st_client c;
	assert_int_equal(connect_as(&c, "device", &sess), 0);
	assert_false(c.resumed);
	assert_int_equal(st_client_hello(&c, DEV1), KP_OK);
	st_client_close(&c);
	assert_int_equal(connect_as(&c, "device", &sess), 0);
	assert_true(c.resumed);
	/* The resumed session still carries the device identity. */
	assert_int_equal(st_client_hello(&c, DEV1), KP_OK);
	st_client_close(&c);
	assert_int_equal(stat_of("handshakes_full"), 1);
	assert_int_equal(stat_of("handshakes_resumed"), 1);
	mbedtls_ssl_session_free(&sess);
}

static void test_hello_rules(void **state)
{
	st_client c;
	kp_host_msg m, rep;
	assert_int_equal(connect_as(&c, "device", NULL), 0);
	/* Nothing before hello. */
	st_msg_attempt(&m, KP_OP_QUERY_PAYMENT, "a-1");
	call(&c, &m, &rep);
	expect_error(&rep, "bad_request");
	/* hello must name the certificate's device. */
	memset(&m, 0, sizeof(m));
	m.op = KP_OP_HELLO;
	snprintf(m.device_id, sizeof(m.device_id), DEV2);
	m.proto = 1;
	snprintf(m.fw, sizeof(m.fw), "t");
	call(&c, &m, &rep);
	expect_error(&rep, "bad_request");
	assert_int_equal(st_client_recv(&c, &rep, T), KP_ERR_DISCONNECTED);
	st_client_close(&c);
	/* The right one works; host_time is a wall clock. */
	open_device(&c, "device", DEV1);
	m.op = KP_OP_PING;
	call(&c, &m, &rep);
	assert_int_equal(rep.op, KP_OP_PONG);
	st_client_close(&c);
}

/* ---- the host's promises -------------------------------------------------------- */

static void test_create_idempotent(void **state)
{
	st_client c;
	kp_host_msg m, rep;
	open_device(&c, "device", DEV1);
	create(&c, "att-1", "ord-1", 250, &rep);
	expect_payment(&rep, "att-1", "pending");
	assert_true(rep.qr[0] != '\0');
	create(&c, "att-1", "ord-1", 250, &rep);
	expect_payment(&rep, "att-1", "pending");
	assert_int_equal(rep.amount, 250);
	/* Same key, other parameters: refused, nothing changes. */
	static const struct {
		int64_t amount;
		const char *order, *channel;
	} other[] = {{300, "ord-1", "qr"}, {250, "ord-2", "qr"}, {250, "ord-1", "card"}};
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
		st_msg_create(&m, "att-1", other[i].order, other[i].amount, other[i].channel);
		call(&c, &m, &rep);
		expect_error(&rep, "idempotency_mismatch");
	}
	st_msg_create(&m, "att-1", "ord-1", 250, "qr");
	m.expires_at += 1;
	call(&c, &m, &rep);
	expect_error(&rep, "idempotency_mismatch");
	st_client_close(&c);

	cJSON *d = dump();
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(d, "payments")), 1);
	const cJSON *p = find(d, "payments", "attempt_id", "att-1");
	assert_non_null(p);
	assert_int_equal(num_of(p, "amount"), 250);
	assert_string_equal(str_of(p, "order_id"), "ord-1");
	assert_string_equal(str_of(p, "channel"), "qr");
	assert_string_equal(str_of(p, "status"), "pending");
	assert_string_equal(str_of(p, "device_id"), DEV1);
	cJSON_Delete(d);
}

static void test_over_limit(void **state)
{
	sim_stop_clean();
	const char *extra[] = {"--max-amount", "1000", NULL};
	sim_start_with("host", extra);
	st_client c;
	kp_host_msg rep;
	open_device(&c, "device", DEV1);
	create(&c, "att-big", "ord-big", 1001, &rep);
	expect_error(&rep, "over_limit");
	create(&c, "att-ok", "ord-big", 1000, &rep);
	expect_payment(&rep, "att-ok", "pending");
	st_client_close(&c);
}

static void test_tombstone(void **state)
{
	st_client c;
	kp_host_msg m, rep;
	open_device(&c, "device", DEV1);
	st_msg_attempt(&m, KP_OP_QUERY_PAYMENT, "never");
	call(&c, &m, &rep);
	expect_payment(&rep, "never", "unknown");
	st_msg_attempt(&m, KP_OP_CANCEL_PAYMENT, "ghost");
	call(&c, &m, &rep);
	expect_payment(&rep, "ghost", "canceled");
	create(&c, "ghost", "ord-g", 100, &rep);
	expect_error(&rep, "attempt_canceled");
	st_msg_attempt(&m, KP_OP_QUERY_PAYMENT, "ghost");
	call(&c, &m, &rep);
	expect_payment(&rep, "ghost", "canceled");
	/* Cancelling again is harmless. */
	st_msg_attempt(&m, KP_OP_CANCEL_PAYMENT, "ghost");
	call(&c, &m, &rep);
	expect_payment(&rep, "ghost", "canceled");
	st_client_close(&c);
	cJSON *d = dump();
	assert_non_null(find(d, "tombstones", "attempt_id", "ghost"));
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(d, "tombstones")), 1);
	assert_null(find(d, "payments", "attempt_id", "ghost"));
	cJSON_Delete(d);
}

static void test_cancel_races(void **state)
{
	st_client c;
	kp_host_msg m, rep;
	char txn[80];
	open_device(&c, "device", DEV1);
	/* Captured before the cancel arrived: the cancel answers succeeded. */
	create(&c, "att-paid", "ord-c", 500, &rep);
	ctl_pay("att-paid", txn, sizeof(txn));
	st_msg_attempt(&m, KP_OP_CANCEL_PAYMENT, "att-paid");
	call(&c, &m, &rep);
	expect_payment(&rep, "att-paid", "succeeded");
	assert_string_equal(rep.host_txn, txn);
	assert_int_equal(rep.amount, 500);
	/* Cancelled first: the customer can no longer pay it. */
	create(&c, "att-late", "ord-c", 500, &rep);
	st_msg_attempt(&m, KP_OP_CANCEL_PAYMENT, "att-late");
	call(&c, &m, &rep);
	expect_payment(&rep, "att-late", "canceled");
	cJSON *r = st_ctl(&g_fx.sim, "{\"cmd\":\"pay\",\"attempt_id\":\"att-late\"}");
	assert_false(cJSON_IsTrue(cJSON_GetObjectItem(r, "ok")));
	assert_string_equal(str_of(r, "error"), "state");
	cJSON_Delete(r);
	/* Create of an existing id answers its current state. */
	create(&c, "att-paid", "ord-c", 500, &rep);
	expect_payment(&rep, "att-paid", "succeeded");
	assert_string_equal(rep.host_txn, txn);
	st_client_close(&c);
}

static void test_refunds(void **state)
{
	st_client c;
	kp_host_msg m, rep;
	char txn[80];
	open_device(&c, "device", DEV1);
	create(&c, "att-r", "ord-r", 700, &rep);
	/* Not captured yet: nothing to refund. */
	st_msg_refund(&m, "ref-0", "att-r", "txn-nope", 700, "late");
	call(&c, &m, &rep);
	expect_error(&rep, "not_found");
	ctl_pay("att-r", txn, sizeof(txn));

	st_msg_refund(&m, "ref-1", "att-r", txn, 699, "late");
	call(&c, &m, &rep);
	expect_error(&rep, "bad_request"); /* not the full amount */
	st_msg_refund(&m, "ref-1", "att-r", txn, 700, "late");
	call(&c, &m, &rep);
	assert_int_equal(rep.op, KP_OP_REFUND_REPLY);
	assert_string_equal(rep.refund_id, "ref-1");
	assert_string_equal(rep.status, "refunded");
	/* Replay: same answer. Other parameters: refused. */
	call(&c, &m, &rep);
	assert_string_equal(rep.status, "refunded");
	st_msg_refund(&m, "ref-1", "att-r", txn, 700, "duplicate");
	call(&c, &m, &rep);
	expect_error(&rep, "idempotency_mismatch");
	/* At most one refund per host_txn. */
	st_msg_refund(&m, "ref-2", "att-r", txn, 700, "late");
	call(&c, &m, &rep);
	expect_error(&rep, "idempotency_mismatch");
	/* attempt_id and host_txn must belong together. */
	st_msg_refund(&m, "ref-3", "att-other", txn, 700, "late");
	call(&c, &m, &rep);
	expect_error(&rep, "not_found");

	memset(&m, 0, sizeof(m));
	m.op = KP_OP_QUERY_REFUND;
	snprintf(m.refund_id, sizeof(m.refund_id), "ref-1");
	call(&c, &m, &rep);
	assert_string_equal(rep.status, "refunded");
	assert_string_equal(rep.reason, "late");
	snprintf(m.refund_id, sizeof(m.refund_id), "ref-2");
	call(&c, &m, &rep);
	assert_string_equal(rep.status, "unknown");
	st_client_close(&c);

	cJSON *d = dump();
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(d, "refunds")), 1);
	const cJSON *cap = find(d, "captures", "host_txn", txn);
	assert_string_equal(str_of(cap, "refund_id"), "ref-1");
	const cJSON *o = find(d, "orders", "order_id", "ord-r");
	assert_int_equal(num_of(o, "captured"), 700);
	assert_int_equal(num_of(o, "refunded"), 700);
	assert_int_equal(num_of(o, "net"), 0);
	cJSON_Delete(d);
}

static void test_confirms_until_acked(void **state)
{
	st_client c;
	kp_host_msg rep, conf;
	char txn[80];
	open_device(&c, "device", DEV1);
	create(&c, "att-f", "ord-f", 300, &rep);
	ctl_pay("att-f", txn, sizeof(txn));
	assert_int_equal(st_client_confirm(&c, &conf, T), KP_OK);
	assert_int_equal(conf.seq, 1);
	assert_string_equal(conf.attempt_id, "att-f");
	assert_string_equal(conf.host_txn, txn);
	assert_string_equal(conf.status, "succeeded");
	assert_int_equal(conf.amount, 300);
	assert_string_equal(conf.currency, "EUR");
	assert_true(conf.at > 0);
	st_client_close(&c); /* no ack */

	/* Redelivered after each hello until acked. */
	for (int round = 0; round < 2; round++) {
		open_device(&c, "device", DEV1);
		assert_int_equal(st_client_confirm(&c, &conf, T), KP_OK);
		assert_int_equal(conf.seq, 1);
		assert_string_equal(conf.host_txn, txn);
		if (round == 1) {
			assert_int_equal(st_client_ack(&c, conf.seq), KP_OK);
			kp_host_msg m;
			memset(&m, 0, sizeof(m));
			m.op = KP_OP_PING;
			call(&c, &m, &rep); /* the ack was handled before the ping */
		}
		st_client_close(&c);
	}
	open_device(&c, "device", DEV1);
	assert_int_equal(st_client_confirm(&c, &conf, 300), KP_ERR_TIMEOUT);
	st_client_close(&c);
	cJSON *d = dump();
	const cJSON *k = find(d, "confirms", "host_txn", txn);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(k, "acked")));
	assert_int_equal(num_of(k, "seq"), 1);
	cJSON_Delete(d);
}

static void test_confirm_interval_and_devices(void **state)
{
	sim_stop_clean();
	const char *extra[] = {"--confirm-interval-ms", "200", NULL};
	sim_start_with("host", extra);
	st_client a, b;
	kp_host_msg rep, conf;
	open_device(&a, "device", DEV1);
	open_device(&b, "device-2", DEV2);
	create(&a, "att-i", "ord-i", 100, &rep);
	cJSON *r = st_ctl(&g_fx.sim, "{\"cmd\":\"fail\",\"order_id\":\"ord-i\"}");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(r, "ok")));
	cJSON_Delete(r);
	/* The device that created it gets it, at once and again every interval. */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(st_client_confirm(&a, &conf, 2000), KP_OK);
		assert_string_equal(conf.attempt_id, "att-i");
		assert_string_equal(conf.status, "failed");
		assert_int_equal(conf.seq, 1);
	}
	assert_int_equal(st_client_ack(&a, 1), KP_OK);
	kp_host_msg ping;
	memset(&ping, 0, sizeof(ping));
	ping.op = KP_OP_PING;
	call(&a, &ping, &rep); /* the ack is handled; redeliveries sent before it are queued... */
	a.queued = 0;          /* ...and dropped here */
	assert_int_equal(st_client_confirm(&b, &conf, 500), KP_ERR_TIMEOUT);
	/* Seq is per device: dev-2's first confirm is seq 1 as well. */
	create(&b, "att-j", "ord-j", 100, &rep);
	ctl_pay("att-j", NULL, 0);
	assert_int_equal(st_client_confirm(&b, &conf, T), KP_OK);
	assert_int_equal(conf.seq, 1);
	assert_string_equal(conf.attempt_id, "att-j");
	assert_int_equal(st_client_ack(&b, 1), KP_OK);
	/* Acked ones stop coming. */
	while (st_client_confirm(&a, &conf, 400) == KP_OK)
		assert_int_not_equal(conf.seq, 1);
	/* A second connection of a device replaces the first. */
	st_client a2;
	open_device(&a2, "device", DEV1);
	assert_int_equal(st_client_recv(&a, &rep, T), KP_ERR_DISCONNECTED);
	st_client_close(&a);
	st_client_close(&a2);
	st_client_close(&b);
}

static void test_ledger_survives_restart(void **state)
{
	st_client c;
	kp_host_msg m, rep, conf;
	char txn[80];
	open_device(&c, "device", DEV1);
	create(&c, "att-s", "ord-s", 900, &rep);
	ctl_pay("att-s", txn, sizeof(txn));
	st_msg_refund(&m, "ref-s", "att-s", txn, 900, "vend_failed");
	call(&c, &m, &rep);
	assert_string_equal(rep.status, "refunded");
	st_msg_attempt(&m, KP_OP_CANCEL_PAYMENT, "ghost-s");
	call(&c, &m, &rep);
	st_client_close(&c);
	cJSON *before = dump();

	sim_stop_clean();
	sim_start_with("host", NULL);

	open_device(&c, "device", DEV1);
	assert_int_equal(st_client_confirm(&c, &conf, T), KP_OK); /* still unacked */
	assert_string_equal(conf.host_txn, txn);
	create(&c, "att-s", "ord-s", 900, &rep);
	expect_payment(&rep, "att-s", "succeeded");
	assert_string_equal(rep.host_txn, txn);
	call(&c, &m, &rep); /* cancel ghost-s again */
	expect_payment(&rep, "ghost-s", "canceled");
	create(&c, "ghost-s", "ord-s", 1, &rep);
	expect_error(&rep, "attempt_canceled");
	st_msg_refund(&m, "ref-s", "att-s", txn, 900, "vend_failed");
	call(&c, &m, &rep);
	assert_string_equal(rep.status, "refunded");
	st_client_close(&c);

	cJSON *after = dump();
	static const char *const parts[] = {"payments", "captures", "refunds", "tombstones", "confirms", "orders"};
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		assert_true(cJSON_Compare(cJSON_GetObjectItem(before, parts[i]),
					  cJSON_GetObjectItem(after, parts[i]), 1));
	cJSON_Delete(before);
	cJSON_Delete(after);
}

/* ---- control port ------------------------------------------------------------------ */

static void test_control_commands(void **state)
{
	st_client c;
	kp_host_msg rep, conf;
	open_device(&c, "device", DEV1);
	create(&c, "att-l1", "ord-l", 400, &rep);
	create(&c, "att-l2", "ord-m", 500, &rep);

	cJSON *r = st_ctl(&g_fx.sim, "{\"cmd\":\"list\"}");
	const cJSON *pend = cJSON_GetObjectItem(r, "pending");
	assert_int_equal(cJSON_GetArraySize(pend), 2);
	assert_string_equal(str_of(cJSON_GetArrayItem(pend, 0), "attempt_id"), "att-l1");
	assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "devices"), 0)->valuestring, DEV1);
	cJSON_Delete(r);

	/* pay with a delay: nothing at once, the confirm after the delay. */
	int64_t t0 = now_ms();
	assert_true(st_ctl_ok(&g_fx.sim, "{\"cmd\":\"pay\",\"order_id\":\"ord-l\",\"delay_ms\":300}"));
	assert_int_equal(st_client_confirm(&c, &conf, T), KP_OK);
	assert_true(now_ms() - t0 >= 250);
	assert_string_equal(conf.attempt_id, "att-l1");
	assert_int_equal(st_client_ack(&c, conf.seq), KP_OK);

	/* orphan: a capture with an id the kiosk never sent, confirmed to it. */
	r = st_ctl(&g_fx.sim, "{\"cmd\":\"orphan\",\"order_id\":\"ord-m\",\"amount\":500,\"currency\":\"EUR\"}");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(r, "ok")));
	char orphan_id[80];
	snprintf(orphan_id, sizeof(orphan_id), "%s", str_of(r, "attempt_id"));
	cJSON_Delete(r);
	assert_int_equal(st_client_confirm(&c, &conf, T), KP_OK);
	assert_string_equal(conf.attempt_id, orphan_id);
	assert_string_equal(conf.status, "succeeded");

	/* pay_order_twice: att-l2 plus a second capture on another channel. */
	r = st_ctl(&g_fx.sim, "{\"cmd\":\"pay_order_twice\",\"order_id\":\"ord-m\"}");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(r, "ok")));
	assert_int_equal(num_of(r, "captured"), 2);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r, "host_txns")), 2);
	cJSON_Delete(r);
	cJSON *d = dump();
	const cJSON *o = find(d, "orders", "order_id", "ord-m");
	assert_int_equal(num_of(o, "captures"), 3); /* orphan + att-l2 + the twin */
	assert_int_equal(num_of(o, "captured"), 1500);
	const cJSON *p = find(d, "payments", "attempt_id", orphan_id);
	assert_string_equal(str_of(p, "origin"), "orphan");
	cJSON_Delete(d);

	/* Bad commands answer ok:false with a code, and the port stays usable. */
	static const struct {
		const char *line, *code;
	} bad[] = {
		{"{\"cmd\":\"nope\"}", "unknown_cmd"},
		{"not json", "bad_request"},
		{"{\"cmd\":\"pay\"}", "bad_request"},
		{"{\"cmd\":\"pay\",\"attempt_id\":\"nobody\"}", "not_found"},
		{"{\"cmd\":\"pay\",\"attempt_id\":\"bad id!\"}", "bad_request"},
		{"{\"cmd\":\"fault\",\"fault\":\"gremlins\"}", "bad_request"},
		{"{\"cmd\":\"fault\",\"fault\":\"close_after_reply\",\"op\":\"payment\"}", "bad_request"},
		{"{\"cmd\":\"chaos\",\"seed\":1,\"rate\":2}", "bad_request"},
		{"{\"cmd\":\"orphan\",\"order_id\":\"x\"}", "bad_request"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = st_ctl(&g_fx.sim, "%s", bad[i].line);
		assert_non_null(r);
		assert_false(cJSON_IsTrue(cJSON_GetObjectItem(r, "ok")));
		assert_string_equal(str_of(r, "error"), bad[i].code);
		cJSON_Delete(r);
	}
	assert_true(st_ctl_ok(&g_fx.sim, "{\"cmd\":\"ping\"}"));
	st_client_close(&c);
}

/* ---- faults -------------------------------------------------------------------------- */

static void test_close_faults(void **state)
{
	static const struct {
		const char *fault;
		bool reply_first;  /* the whole reply arrives before the close */
		bool recorded;     /* the ledger has the payment afterwards */
	} cases[] = {
		{"close_before_handling", false, false},
		{"close_after_handling", false, true},
		{"close_before_reply", false, true},
		{"close_after_reply", true, true},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char attempt[32];
		snprintf(attempt, sizeof(attempt), "att-cf%zu", i);
		st_client c;
		kp_host_msg m, rep;
		open_device(&c, "device", DEV1);
		/* Armed for create_payment only: a ping passes untouched. */
		assert_true(st_ctl_ok(&g_fx.sim, "{\"cmd\":\"fault\",\"fault\":\"%s\",\"count\":1,"
						  "\"op\":\"create_payment\"}", cases[i].fault));
		memset(&m, 0, sizeof(m));
		m.op = KP_OP_PING;
		call(&c, &m, &rep);
		assert_int_equal(rep.op, KP_OP_PONG);
		st_msg_create(&m, attempt, "ord-cf", 100, "qr");
		kp_err err = st_client_call(&c, &m, &rep, T);
		if (cases[i].reply_first) {
			assert_int_equal(err, KP_OK);
			expect_payment(&rep, attempt, "pending");
			err = st_client_recv(&c, &rep, T);
		}
		assert_int_equal(err, KP_ERR_DISCONNECTED);
		st_client_close(&c);

		cJSON *d = dump();
		assert_true((find(d, "payments", "attempt_id", attempt) != NULL) == cases[i].recorded);
		cJSON_Delete(d);
		/* The kiosk's retry after reconnecting is answered normally. */
		open_device(&c, "device", DEV1);
		create(&c, attempt, "ord-cf", 100, &rep);
		expect_payment(&rep, attempt, "pending");
		st_client_close(&c);
	}
	cJSON *r = st_ctl(&g_fx.sim, "{\"cmd\":\"status\"}");
	const cJSON *fired = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "faults"), "fired");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(num_of(fired, cases[i].fault), 1);
	cJSON_Delete(r);
}

static void test_confirm_faults(void **state)
{
	st_client c;
	kp_host_msg rep, conf, conf2;
	open_device(&c, "device", DEV1);
	for (int i = 1; i <= 5; i++) {
		char a[16];
		snprintf(a, sizeof(a), "att-k%d", i);
		create(&c, a, "ord-k", 100 * i, &rep);
	}
	/* drop: not sent now, redelivered later. */
	assert_true(st_ctl_ok(&g_fx.sim, "{\"cmd\":\"fault\",\"fault\":\"drop_confirms\",\"count\":1}"));
	ctl_pay("att-k1", NULL, 0);
	assert_int_equal(st_client_confirm(&c, &conf, 300), KP_ERR_TIMEOUT);
	assert_true(st_ctl_ok(&g_fx.sim, "{\"cmd\":\"redeliver\"}"));
	assert_int_equal(st_client_confirm(&c, &conf, T), KP_OK);
	assert_int_equal(conf.seq, 1);
	assert_int_equal(st_client_ack(&c, 1), KP_OK);

	/* duplicate: the same confirm twice. */
	assert_true(st_ctl_ok(&g_fx.sim, "{\"cmd\":\"fault\",\"fault\":\"duplicate_confirms\",\"count\":1}"));
	ctl_pay("att-k2", NULL, 0);
	assert_int_equal(st_client_confirm(&c, &conf, T), KP_OK);
	assert_int_equal(st_client_confirm(&c, &conf2, T), KP_OK);
	assert_int_equal(conf.seq, 2);
	assert_int_equal(conf2.seq, 2);
	assert_string_equal(conf.host_txn, conf2.host_txn);
	assert_int_equal(st_client_ack(&c, 2), KP_OK);

	/* delay: held for the given time. */
	assert_true(st_ctl_ok(&g_fx.sim, "{\"cmd\":\"fault\",\"fault\":\"delay_confirms\",\"ms\":400}"));
	int64_t t0 = now_ms();
	ctl_pay("att-k3", NULL, 0);
	assert_int_equal(st_client_confirm(&c, &conf, 200), KP_ERR_TIMEOUT);
	assert_int_equal(st_client_confirm(&c, &conf, T), KP_OK);
	assert_true(now_ms() - t0 >= 350);
	assert_int_equal(conf.seq, 3);
	assert_int_equal(st_client_ack(&c, 3), KP_OK);
	assert_true(st_ctl_ok(&g_fx.sim, "{\"cmd\":\"fault\",\"fault\":\"delay_confirms\",\"ms\":0}"));

	/* reorder: held, then the next delivery goes newest first. */
	assert_true(st_ctl_ok(&g_fx.sim, "{\"cmd\":\"fault\",\"fault\":\"reorder_confirms\",\"count\":1}"));
	ctl_pay("att-k4", NULL, 0);
	ctl_pay("att-k5", NULL, 0);
	assert_int_equal(st_client_confirm(&c, &conf, 300), KP_ERR_TIMEOUT);
	assert_true(st_ctl_ok(&g_fx.sim, "{\"cmd\":\"redeliver\"}"));
	assert_int_equal(st_client_confirm(&c, &conf, T), KP_OK);
	assert_int_equal(st_client_confirm(&c, &conf2, T), KP_OK);
	assert_int_equal(conf.seq, 5);
	assert_int_equal(conf2.seq, 4);
	st_client_close(&c);
}

static void test_refund_faults(void **state)
{
	st_client c;
	kp_host_msg m, rep;
	char txn1[80], txn2[80];
	open_device(&c, "device", DEV1);
	create(&c, "att-rf1", "ord-rf", 100, &rep);
	create(&c, "att-rf2", "ord-rf2", 100, &rep);
	ctl_pay("att-rf1", txn1, sizeof(txn1));
	ctl_pay("att-rf2", txn2, sizeof(txn2));

	assert_true(st_ctl_ok(&g_fx.sim, "{\"cmd\":\"fault\",\"fault\":\"refund_late\",\"ms\":400}"));
	st_msg_refund(&m, "ref-late", "att-rf1", txn1, 100, "late");
	call(&c, &m, &rep);
	assert_string_equal(rep.status, "pending");
	call(&c, &m, &rep); /* replay while pending */
	assert_string_equal(rep.status, "pending");
	usleep(600 * 1000);
	memset(&m, 0, sizeof(m));
	m.op = KP_OP_QUERY_REFUND;
	snprintf(m.refund_id, sizeof(m.refund_id), "ref-late");
	call(&c, &m, &rep);
	assert_string_equal(rep.status, "refunded");

	assert_true(st_ctl_ok(&g_fx.sim, "{\"cmd\":\"fault\",\"fault\":\"refund_reject\",\"count\":1}"));
	st_msg_refund(&m, "ref-rej", "att-rf2", txn2, 100, "duplicate");
	call(&c, &m, &rep);
	assert_string_equal(rep.status, "rejected");
	call(&c, &m, &rep);
	assert_string_equal(rep.status, "rejected");
	st_client_close(&c);
	cJSON *d = dump();
	assert_string_equal(str_of(find(d, "refunds", "refund_id", "ref-rej"), "status"), "rejected");
	assert_int_equal(num_of(find(d, "orders", "order_id", "ord-rf2"), "net"), 100);
	assert_int_equal(num_of(find(d, "orders", "order_id", "ord-rf"), "net"), 0);
	cJSON_Delete(d);
}

static void test_malformed_frames(void **state)
{
	static const char *const kinds[] = {"not_json", "not_object", "bad_field", "unknown_op",
					    "zero_length", "too_long"};
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		st_client c;
		kp_host_msg rep;
		open_device(&c, "device", DEV1);
		cJSON *r = st_ctl(&g_fx.sim, "{\"cmd\":\"fault\",\"fault\":\"malformed_frame\",\"kind\":\"%s\"}",
				  kinds[i]);
		assert_int_equal(num_of(r, "sent"), 1);
		cJSON_Delete(r);
		kp_err err = st_client_recv(&c, &rep, T);
		if (err != KP_ERR_PROTOCOL)
			fail_msg("kind %s: got %d, want a protocol error", kinds[i], err);
		st_client_close(&c);
	}
}

static void test_client_malformed_frames_close(void **state)
{
	static const struct {
		const char *body;    /* framed with its length; NULL: hdr alone */
		const char *hdr;
		const char *code;    /* error (without re) before the close; NULL: none */
	} cases[] = {
		{"not json", NULL, "bad_request"},
		{"[]", NULL, "bad_request"},
		{"{\"op\":\"explode\",\"id\":1234}", NULL, "unknown_op"},
		{"{\"op\":\"payment\",\"re\":1}", NULL, "unknown_op"},
		{"{\"op\":\"ping\",\"id\":\"x\"}", NULL, "bad_request"},
		{"{\"op\":\"create_payment\",\"id\":2,\"attempt_id\":\"a\"}", NULL, "bad_request"},
		{NULL, "\x00\x00\x00\x00", NULL},
		{NULL, "\x00\x01\x00\x01", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		st_client c;
		kp_host_msg rep;
		open_device(&c, "device", DEV1);
		uint8_t frame[256];
		size_t len = 4;
		if (cases[i].body) {
			size_t n = strlen(cases[i].body);
			frame[0] = frame[1] = frame[2] = 0;
			frame[3] = (uint8_t)n;
			memcpy(frame + 4, cases[i].body, n);
			len += n;
		} else {
			memcpy(frame, cases[i].hdr, 4);
		}
		assert_int_equal(st_client_send_raw(&c, frame, len), KP_OK);
		if (cases[i].code) {
			assert_int_equal(st_client_recv(&c, &rep, T), KP_OK);
			expect_error(&rep, cases[i].code);
			assert_false(rep.has_re);
		}
		assert_int_equal(st_client_recv(&c, &rep, T), KP_ERR_DISCONNECTED);
		st_client_close(&c);
	}
	assert_int_equal(stat_of("protocol_errors"), sizeof(cases) / sizeof(cases[0]));
}

static void test_chaos(void **state)
{
	/* rate 1: every request meets one of the four close faults. */
	assert_true(st_ctl_ok(&g_fx.sim, "{\"cmd\":\"chaos\",\"seed\":7,\"rate\":1}"));
	for (int i = 0; i < 6; i++) {
		st_client c;
		kp_host_msg m, rep;
		assert_int_equal(connect_as(&c, "device", NULL), 0);
		memset(&m, 0, sizeof(m));
		m.op = KP_OP_PING;
		kp_err err = st_client_call(&c, &m, &rep, T);
		if (err == KP_OK)
			err = st_client_recv(&c, &rep, T);
		assert_int_equal(err, KP_ERR_DISCONNECTED);
		st_client_close(&c);
	}
	cJSON *r = st_ctl(&g_fx.sim, "{\"cmd\":\"status\"}");
	const cJSON *fired = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "faults"), "fired");
	double total = num_of(fired, "close_before_handling") + num_of(fired, "close_after_handling") +
		       num_of(fired, "close_before_reply") + num_of(fired, "close_after_reply");
	assert_int_equal(total, 6);
	cJSON_Delete(r);
	/* rate 0: off again. */
	assert_true(st_ctl_ok(&g_fx.sim, "{\"cmd\":\"chaos\",\"seed\":7,\"rate\":0}"));
	st_client c;
	kp_host_msg rep;
	open_device(&c, "device", DEV1);
	create(&c, "att-ch", "ord-ch", 100, &rep);
	expect_payment(&rep, "att-ch", "pending");
	st_client_close(&c);
}

static void test_script(void **state)
{
	char script[400];
	snprintf(script, sizeof(script), "%s/script-%d.jsonl", g_fx.dir, g_fx.ledger_n);
	FILE *f = fopen(script, "w");
	assert_non_null(f);
	fprintf(f, "# armed at start, then a customer pays after 1.5 s\n"
		   "{\"cmd\":\"fault\",\"fault\":\"refund_reject\",\"count\":2}\n"
		   "\n"
		   "{\"cmd\":\"pay\",\"attempt_id\":\"att-sc\",\"at_ms\":1500}\n");
	fclose(f);
	sim_stop_clean();
	const char *extra[] = {"--script", script, NULL};
	sim_start_with("host", extra);
	st_client c;
	kp_host_msg rep, conf;
	open_device(&c, "device", DEV1);
	create(&c, "att-sc", "ord-sc", 100, &rep);
	assert_int_equal(st_client_confirm(&c, &conf, T), KP_OK);
	assert_string_equal(conf.attempt_id, "att-sc");
	st_client_close(&c);
	cJSON *r = st_ctl(&g_fx.sim, "{\"cmd\":\"status\"}");
	assert_int_equal(num_of(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "faults"), "armed"), "refund_reject"), 2);
	cJSON_Delete(r);
}

static void test_many_connections(void **state)
{
	enum { N = 24 };
	static st_client cs[N];
	kp_host_msg m, rep;
	for (int i = 0; i < N; i++)
		assert_int_equal(connect_as(&cs[i], i % 2 ? "device-2" : "device", NULL), 0);
	/* Pipelined: every connection sends before any reads. */
	for (int i = 0; i < N; i++) {
		memset(&m, 0, sizeof(m));
		m.op = KP_OP_PING;
		assert_int_equal(st_client_send(&cs[i], &m), KP_OK);
	}
	for (int i = 0; i < N; i++) {
		assert_int_equal(st_client_recv(&cs[i], &rep, T), KP_OK);
		expect_error(&rep, "bad_request"); /* no hello yet */
		assert_int_equal(rep.re, 1);
	}
	cJSON *r = st_ctl(&g_fx.sim, "{\"cmd\":\"status\"}");
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r, "connections")), N);
	cJSON_Delete(r);
	for (int i = 0; i < N; i++)
		st_client_close(&cs[i]);
}

static void test_dump_offline_matches(void **state)
{
	st_client c;
	kp_host_msg m, rep;
	char txn[80];
	open_device(&c, "device", DEV1);
	create(&c, "att-d1", "ord-d", 100, &rep);
	create(&c, "att-d2", "ord-d2", 200, &rep);
	ctl_pay("att-d1", txn, sizeof(txn));
	st_msg_refund(&m, "ref-d", "att-d1", txn, 100, "vend_failed");
	call(&c, &m, &rep);
	st_msg_attempt(&m, KP_OP_CANCEL_PAYMENT, "att-d2");
	call(&c, &m, &rep);
	st_msg_attempt(&m, KP_OP_CANCEL_PAYMENT, "att-d3");
	call(&c, &m, &rep);
	st_client_close(&c);
	cJSON *live = dump();

	char out[400];
	snprintf(out, sizeof(out), "%s/dump-%d.json", g_fx.dir, g_fx.ledger_n);
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "'%s' --dump --ledger '%s' > '%s'", KP_HOSTSIM_EXE, g_fx.ledger, out);
	assert_int_equal(system(cmd), 0);
	FILE *f = fopen(out, "r");
	assert_non_null(f);
	static char text[1 << 16];
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	cJSON *off = cJSON_Parse(text);
	assert_non_null(off);
	assert_string_equal(str_of(off, "format"), "kp-hostsim-ledger/1");
	static const char *const parts[] = {"payments", "captures", "refunds", "tombstones", "confirms", "orders"};
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		assert_true(cJSON_Compare(cJSON_GetObjectItem(live, parts[i]), cJSON_GetObjectItem(off, parts[i]), 1));
	/* And it says what was done. */
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(live, "payments")), 2);
	assert_string_equal(str_of(find(live, "payments", "attempt_id", "att-d1"), "status"), "succeeded");
	assert_string_equal(str_of(find(live, "payments", "attempt_id", "att-d2"), "status"), "canceled");
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(find(live, "payments", "attempt_id", "att-d2"), "host_txn")));
	assert_non_null(find(live, "tombstones", "attempt_id", "att-d3"));
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(live, "captures")), 1);
	assert_string_equal(str_of(find(live, "refunds", "refund_id", "ref-d"), "host_txn"), txn);
	const cJSON *k = find(live, "confirms", "host_txn", txn);
	assert_false(cJSON_IsTrue(cJSON_GetObjectItem(k, "acked")));
	cJSON_Delete(live);
	cJSON_Delete(off);
}

static void test_command_line(void **state)
{
	static const char *const bad[][6] = {
		{"--listen", NULL},
		{"--bogus", NULL},
		{"--dump", NULL},
		{"--confirm-interval-ms", "-5", NULL},
		{"--listen", "127.0.0.1:0", NULL}, /* the rest missing */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *argv[8] = {KP_HOSTSIM_EXE};
		for (size_t j = 0; bad[i][j]; j++)
			argv[j + 1] = bad[i][j];
		assert_int_equal(st_run(argv), 2);
	}
	/* A key that is not the certificate's: refused at start. */
	char ca[400], crt[400], key[400];
	pki_path(ca, sizeof(ca), "ca.crt");
	pki_path(crt, sizeof(crt), "host.crt");
	pki_path(key, sizeof(key), "device.key");
	const char *argv[] = {KP_HOSTSIM_EXE, "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0",
			      "--ledger", g_fx.ledger, "--ca", ca, "--cert", crt, "--key", key, NULL};
	assert_int_equal(st_run(argv), 1);
	/* The control port has no authentication: loopback only. */
	pki_path(key, sizeof(key), "host.key");
	const char *open_ctl[] = {KP_HOSTSIM_EXE, "--listen", "127.0.0.1:0", "--control", "0.0.0.0:0",
				  "--ledger", g_fx.ledger, "--ca", ca, "--cert", crt, "--key", key, NULL};
	assert_int_equal(st_run(open_ctl), 1);
}

#define T_(fn) cmocka_unit_test_setup_teardown(fn, test_setup, test_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T_(test_refuses_clients_without_valid_cert),
		T_(test_wrong_host_certificates),
		T_(test_tls11_only),
		T_(test_session_resumption),
		T_(test_hello_rules),
		T_(test_create_idempotent),
		T_(test_over_limit),
		T_(test_tombstone),
		T_(test_cancel_races),
		T_(test_refunds),
		T_(test_confirms_until_acked),
		T_(test_confirm_interval_and_devices),
		T_(test_ledger_survives_restart),
		T_(test_control_commands),
		T_(test_close_faults),
		T_(test_confirm_faults),
		T_(test_refund_faults),
		T_(test_malformed_frames),
		T_(test_client_malformed_frames_close),
		T_(test_chaos),
		T_(test_script),
		T_(test_many_connections),
		T_(test_dump_offline_matches),
		T_(test_command_line),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
