/* test_hostlink_tls.c — the host link against a real foreign TLS peer
 * (`openssl s_server`) over loopback, with a PKI made by make_test_pki.sh at
 * test time: what it accepts, what it refuses, and how it behaves once up
 * (replies, protocol errors, timeouts, ping, resumption, output limit). The
 * server's stdin carries our hand-made host frames, its stdout shows what the
 * link sent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mbedtls/ssl.h>
#include <mbedtls/x509.h>

#include "kp_free_port.h"
#include "hostlink.h"
#include "kp_failpoint.h"

static char pki[256]; /* the temp dir with the certificates */

/* ---- an openssl s_server child ------------------------------------------------ */

struct server {
	pid_t pid;
	int in_fd;   /* its stdin */
	int out_fd;  /* its stdout + stderr */
	int port;
	char *out;   /* everything it printed */
	size_t out_len, out_cap;
	uint8_t *in;  /* frames not yet written to its stdin */
	size_t in_off, in_len, in_cap;
};

static void server_drain(struct server *s)
{
	while (s->in_off < s->in_len) {
		ssize_t n = write(s->in_fd, s->in + s->in_off, s->in_len - s->in_off);
		if (n <= 0)
			break;
		s->in_off += (size_t)n;
	}
	for (;;) {
		if (s->out_cap - s->out_len < 4096) {
			s->out_cap = s->out_cap ? s->out_cap * 2 : 65536;
			s->out = realloc(s->out, s->out_cap + 1);
			assert_non_null(s->out);
		}
		ssize_t n = read(s->out_fd, s->out + s->out_len, s->out_cap - s->out_len);
		if (n <= 0)
			break;
		s->out_len += (size_t)n;
		s->out[s->out_len] = '\0';
	}
}

/* Count occurrences of needle in what the server printed (which may hold NULs). */
static int server_saw(struct server *s, const char *needle)
{
	server_drain(s);
	int count = 0;
	size_t nl = strlen(needle);
	for (size_t i = 0; s->out && i + nl <= s->out_len; i++)
		if (memcmp(s->out + i, needle, nl) == 0)
			count++;
	return count;
}

static int64_t mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Start `openssl s_server` with the host cert `cert` (basename in pki) and
 * extra arguments; waits until it listens. */
static void server_start(struct server *s, const char *cert, const char *const *extra)
{
	memset(s, 0, sizeof(*s));
	s->port = kp_free_port(false);
	assert_true(s->port > 0);
	int in[2], out[2];
	assert_int_equal(pipe(in), 0);
	assert_int_equal(pipe(out), 0);
	char accept_arg[32], cert_path[300], key_path[300], ca_path[300];
	snprintf(accept_arg, sizeof(accept_arg), "127.0.0.1:%d", s->port);
	snprintf(cert_path, sizeof(cert_path), "%s/%s.crt", pki, cert);
	snprintf(key_path, sizeof(key_path), "%s/%s.key", pki, cert);
	snprintf(ca_path, sizeof(ca_path), "%s/ca.crt", pki);
	const char *argv[32] = {"openssl", "s_server", "-accept", accept_arg, "-cert", cert_path,
				"-key", key_path, "-CAfile", ca_path, "-Verify", "1"};
	size_t n = 12;
	for (size_t i = 0; extra && extra[i]; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	s->pid = fork();
	assert_true(s->pid >= 0);
	if (s->pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(out[1], 2);
		close(in[1]);
		close(out[0]);
		execvp("openssl", (char *const *)argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	s->in_fd = in[1];
	s->out_fd = out[0];
	fcntl(s->out_fd, F_SETFL, O_NONBLOCK);
	fcntl(s->in_fd, F_SETFL, O_NONBLOCK);
	int64_t until = mono_now() + 10000;
	while (server_saw(s, "ACCEPT") == 0) {
		if (mono_now() > until)
			fail_msg("s_server did not start: %s", s->out ? s->out : "");
		usleep(20000);
	}
}

static void server_stop(struct server *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		waitpid(s->pid, NULL, 0);
	}
	close(s->in_fd);
	close(s->out_fd);
	free(s->out);
	free(s->in);
	memset(s, 0, sizeof(*s));
}

/* Queue a host frame (JSON text) for the link; it goes through the server's
 * stdin as the drive loop lets it (the pipe is non-blocking). */
static void server_send(struct server *s, const char *json)
{
	size_t n = strlen(json);
	assert_true(n < 65536);
	if (s->in_cap - s->in_len < n + 4) {
		s->in_cap = (s->in_cap + n + 4) * 2;
		s->in = realloc(s->in, s->in_cap);
		assert_non_null(s->in);
	}
	uint8_t *p = s->in + s->in_len;
	p[0] = 0;
	p[1] = 0;
	p[2] = (uint8_t)(n >> 8);
	p[3] = (uint8_t)n;
	memcpy(p + 4, json, n);
	s->in_len += n + 4;
	server_drain(s);
}

/* The id of the last request with this op the server received, or -1. */
static long long server_last_id(struct server *s, const char *op)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "{\"op\":\"%s\",\"id\":", op);
	server_drain(s);
	long long id = -1;
	size_t pl = strlen(pat);
	for (size_t i = 0; s->out && i + pl <= s->out_len; i++)
		if (memcmp(s->out + i, pat, pl) == 0)
			id = strtoll(s->out + i + pl, NULL, 10);
	return id;
}

static void quiet_log(void *ctx, kp_log_level level, const char *msg)
{
	(void)ctx;
	(void)level;
	(void)msg;
}

/* ---- the link under test ---------------------------------------------------------- */

struct harness {
	kp_env env;
	kp_hostlink *link;
	struct server srv;
	int ups, downs;
	int replies;
	kp_err last_err;
	kp_host_msg last_reply;
	int confirms;
	int64_t last_seq;
};

static void on_state(void *arg, bool up)
{
	struct harness *h = arg;
	if (up)
		h->ups++;
	else
		h->downs++;
}

static void on_confirm(void *arg, const kp_host_msg *m)
{
	struct harness *h = arg;
	h->confirms++;
	h->last_seq = m->seq;
}

static void on_reply(void *arg, kp_err err, const kp_host_msg *reply)
{
	struct harness *h = arg;
	h->replies++;
	h->last_err = err;
	if (reply)
		h->last_reply = *reply;
	else
		memset(&h->last_reply, 0, sizeof(h->last_reply));
}

static void link_open(struct harness *h, const char *server_name, int64_t request_timeout,
		      int64_t ping_idle)
{
	char addr[64], ca[300], crt[300], key[300];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", h->srv.port);
	snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
	snprintf(crt, sizeof(crt), "%s/device.crt", pki);
	snprintf(key, sizeof(key), "%s/device.key", pki);
	kp_env_init_system(&h->env);
	if (getenv("KP_TEST_VERBOSE"))
		h->env.log_level = KP_LOG_DEBUG;
	else
		h->env.log = quiet_log;
	kp_hostlink_config cfg = {
		.address = addr,
		.server_name = server_name,
		.ca_file = ca,
		.cert_file = crt,
		.key_file = key,
		.device_id = "kiosk-test-1",
		.fw_version = "test-1.0",
		.request_timeout_ms = request_timeout,
		.ping_idle_ms = ping_idle,
		.backoff_min_ms = 50,
		.backoff_max_ms = 200,
		.connect_timeout_ms = 5000,
	};
	assert_int_equal(kp_hostlink_new(&h->link, &cfg, &h->env, on_confirm, on_state, h), KP_OK);
}

typedef bool (*pred_fn)(struct harness *h);

/* Drive the link the way the daemon does until pred holds or ms pass. */
static bool run_until(struct harness *h, pred_fn pred, int64_t ms)
{
	int64_t until = mono_now() + ms;
	for (;;) {
		kp_hostlink_tick(h->link);
		server_drain(&h->srv);
		if (pred(h))
			return true;
		int64_t now = mono_now();
		if (now >= until)
			return false;
		struct pollfd pfd[3];
		kp_hostlink_pollfd(h->link, &pfd[0]);
		pfd[1].fd = h->srv.out_fd;
		pfd[1].events = POLLIN;
		pfd[1].revents = 0;
		pfd[2].fd = h->srv.in_off < h->srv.in_len ? h->srv.in_fd : -1;
		pfd[2].events = POLLOUT;
		pfd[2].revents = 0;
		int64_t wait = until - now;
		int64_t d = kp_hostlink_deadline(h->link);
		if (d > 0 && d - now < wait)
			wait = d - now < 0 ? 0 : d - now;
		if (wait > 50)
			wait = 50;
		int n = poll(pfd, 3, (int)wait);
		if (n > 0 && pfd[0].fd >= 0 && pfd[0].revents)
			kp_hostlink_process(h->link, pfd[0].revents);
	}
}

static bool never(struct harness *h)
{
	(void)h;
	return false;
}

/* Drive the link until the server printed needle `count` times. */
static bool run_until_text(struct harness *h, const char *needle, int count, int64_t ms)
{
	int64_t until = mono_now() + ms;
	while (server_saw(&h->srv, needle) < count) {
		if (mono_now() >= until)
			return false;
		(void)run_until(h, never, 20);
	}
	return true;
}

static kp_hostlink_stats stats(struct harness *h)
{
	kp_hostlink_stats st;
	kp_hostlink_stats_get(h->link, &st);
	return st;
}

static bool hello_seen(struct harness *h)
{
	return server_saw(&h->srv, "\"op\":\"hello\"") > 0;
}

static bool is_up(struct harness *h)
{
	return kp_hostlink_up(h->link);
}

static bool is_down(struct harness *h)
{
	return !kp_hostlink_up(h->link);
}

static bool got_reply(struct harness *h)
{
	return h->replies > 0;
}

static bool tls_failed(struct harness *h)
{
	return stats(h).tls_failures > 0;
}

static bool two_hellos(struct harness *h)
{
	return server_saw(&h->srv, "\"op\":\"hello\"") >= 2;
}

static bool ping_seen(struct harness *h)
{
	return server_saw(&h->srv, "\"op\":\"ping\"") > 0;
}

static void harness_close(struct harness *h)
{
	kp_hostlink_free(h->link);
	h->link = NULL;
	server_stop(&h->srv);
}

/* Bring a link up against a good s_server: handshake, hello, hello_ok. */
static void bring_up(struct harness *h, int64_t request_timeout, int64_t ping_idle)
{
	static const char *const extra[] = {NULL};
	server_start(&h->srv, "host", extra);
	link_open(h, "localhost", request_timeout, ping_idle);
	assert_false(kp_hostlink_up(h->link));
	assert_true(run_until(h, hello_seen, 10000));
	long long id = server_last_id(&h->srv, "hello");
	assert_true(id > 0);
	char json[128];
	snprintf(json, sizeof(json), "{\"op\":\"hello_ok\",\"re\":%lld,\"host_time\":1}", id);
	server_send(&h->srv, json);
	assert_true(run_until(h, is_up, 5000));
	assert_int_equal(h->ups, 1);
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_good_handshake_then_hello(void **state)
{
	(void)state;
	struct harness h;
	memset(&h, 0, sizeof(h));
	static const char *const extra[] = {NULL};
	server_start(&h.srv, "host", extra);
	link_open(&h, "localhost", 5000, 60000);
	assert_string_equal(kp_hostlink_state_str(h.link), "idle");

	assert_true(run_until(&h, hello_seen, 10000));
	kp_hostlink_stats st = stats(&h);
	assert_int_equal(st.full_handshakes, 1);
	assert_int_equal(st.resumed_handshakes, 0);
	assert_int_equal(st.tls_failures, 0);
	/* the server saw our device certificate and a TLS 1.2 AEAD suite */
	assert_true(server_saw(&h.srv, "kiosk-test-1") > 0);
	assert_true(server_saw(&h.srv, "\"device_id\":\"kiosk-test-1\",\"proto\":1,\"fw\":\"test-1.0\"") ==
		    1);
	/* hello is not answered by s_server: the link is not up */
	assert_false(kp_hostlink_up(h.link));
	assert_string_equal(kp_hostlink_state_str(h.link), "hello");
	assert_int_equal(h.ups, 0);
	kp_host_msg q;
	memset(&q, 0, sizeof(q));
	q.op = KP_OP_QUERY_PAYMENT;
	snprintf(q.attempt_id, sizeof(q.attempt_id), "a1");
	assert_int_equal(kp_hostlink_request(h.link, &q, on_reply, &h), KP_ERR_DISCONNECTED);
	assert_int_equal(kp_hostlink_ack(h.link, 1), KP_ERR_DISCONNECTED);
	harness_close(&h);
	assert_int_equal(h.replies, 0);
}

struct refusal {
	const char *name;
	const char *cert;                /* host certificate the server presents */
	const char *server_name;         /* name the link expects */
	const char *extra[6];            /* more s_server arguments */
	uint32_t want_flags;             /* verify flag expected, 0 = not a verify failure */
};

static const struct refusal refusals[] = {
	{"host cert from another CA", "host_ca2", "localhost", {NULL}, MBEDTLS_X509_BADCERT_NOT_TRUSTED},
	{"expired host cert", "host_expired", "localhost", {NULL}, MBEDTLS_X509_BADCERT_EXPIRED},
	{"host cert naming another host", "host_other", "localhost", {NULL},
	 MBEDTLS_X509_BADCERT_CN_MISMATCH},
	{"good cert, link expects another name", "host", "payhost.example", {NULL},
	 MBEDTLS_X509_BADCERT_CN_MISMATCH},
	{"server offering only TLS 1.1", "host", "localhost",
	 {"-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", NULL}, 0},
	{"server offering only TLS 1.3", "host", "localhost", {"-tls1_3", NULL}, 0},
};

static void test_refusals(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
		const struct refusal *r = &refusals[i];
		struct harness h;
		memset(&h, 0, sizeof(h));
		server_start(&h.srv, r->cert, r->extra);
		link_open(&h, r->server_name, 5000, 60000);
		if (!run_until(&h, tls_failed, 10000))
			fail_msg("%s: no TLS failure; server said: %s", r->name, h.srv.out);
		kp_hostlink_stats st = stats(&h);
		assert_int_equal(st.full_handshakes, 0);
		assert_int_equal(st.resumed_handshakes, 0);
		assert_true(st.connects_failed >= 1);
		assert_true(st.last_tls_error != 0);
		if (r->want_flags) {
			assert_int_equal(st.last_tls_error, MBEDTLS_ERR_X509_CERT_VERIFY_FAILED);
			if (!(st.last_verify_flags & r->want_flags))
				fail_msg("%s: verify flags 0x%x, want 0x%x", r->name,
					 st.last_verify_flags, r->want_flags);
		} else {
			assert_int_not_equal(st.last_tls_error, MBEDTLS_ERR_X509_CERT_VERIFY_FAILED);
		}
		/* nothing was sent in the clear or otherwise, and the link never came up */
		assert_int_equal(server_saw(&h.srv, "\"op\""), 0);
		assert_false(kp_hostlink_up(h.link));
		assert_int_equal(h.ups, 0);
		assert_string_equal(kp_hostlink_state_str(h.link), "idle");
		harness_close(&h);
	}
}

static void test_requests_replies_and_protocol_errors(void **state)
{
	(void)state;
	struct harness h;
	memset(&h, 0, sizeof(h));
	bring_up(&h, 5000, 60000);

	/* a request and its reply */
	kp_host_msg q;
	memset(&q, 0, sizeof(q));
	q.op = KP_OP_QUERY_PAYMENT;
	snprintf(q.attempt_id, sizeof(q.attempt_id), "a1");
	assert_int_equal(kp_hostlink_request(h.link, &q, on_reply, &h), KP_OK);
	/* a request the engine never sends is refused */
	kp_host_msg bad = q;
	bad.op = KP_OP_PONG;
	assert_int_equal(kp_hostlink_request(h.link, &bad, on_reply, &h), KP_ERR_INVALID);
	bad = q;
	bad.attempt_id[0] = '\0';
	assert_int_equal(kp_hostlink_request(h.link, &bad, on_reply, &h), KP_ERR_INVALID);
	assert_int_equal(h.replies, 0); /* never inside request() */

	int64_t until = mono_now() + 5000;
	long long id;
	while ((id = server_last_id(&h.srv, "query_payment")) < 0 && mono_now() < until)
		(void)run_until(&h, never, 20);
	assert_true(id > 0);
	char json[256];
	snprintf(json, sizeof(json),
		 "{\"op\":\"payment\",\"re\":%lld,\"attempt_id\":\"a1\",\"status\":\"succeeded\","
		 "\"host_txn\":\"t1\",\"amount\":250}",
		 id);
	server_send(&h.srv, json);
	assert_true(run_until(&h, got_reply, 5000));
	assert_int_equal(h.replies, 1);
	assert_int_equal(h.last_err, KP_OK);
	assert_int_equal(h.last_reply.op, KP_OP_PAYMENT);
	assert_string_equal(h.last_reply.host_txn, "t1");
	assert_int_equal(h.last_reply.amount, 250);

	/* a confirm is delivered; the ack goes out */
	server_send(&h.srv, "{\"op\":\"confirm\",\"seq\":7,\"attempt_id\":\"a1\",\"host_txn\":\"t1\","
			    "\"status\":\"succeeded\",\"amount\":250,\"currency\":\"EUR\",\"at\":5}");
	until = mono_now() + 5000;
	while (h.confirms == 0 && mono_now() < until)
		(void)run_until(&h, never, 20);
	assert_int_equal(h.confirms, 1);
	assert_int_equal(h.last_seq, 7);
	assert_int_equal(kp_hostlink_ack(h.link, 7), KP_OK);
	assert_true(run_until_text(&h, "{\"op\":\"ack\",\"seq\":7}", 1, 5000));

	/* a reply naming another attempt, with a request in flight: protocol error,
	 * the request fails DISCONNECTED, the link goes down and comes back resumed */
	h.replies = 0;
	assert_int_equal(kp_hostlink_request(h.link, &q, on_reply, &h), KP_OK);
	until = mono_now() + 5000;
	long long id2;
	while ((id2 = server_last_id(&h.srv, "query_payment")) == id && mono_now() < until)
		(void)run_until(&h, never, 20);
	assert_true(id2 > id);
	snprintf(json, sizeof(json),
		 "{\"op\":\"payment\",\"re\":%lld,\"attempt_id\":\"zz\",\"status\":\"pending\"}", id2);
	server_send(&h.srv, json);
	assert_true(run_until(&h, is_down, 5000));
	assert_int_equal(h.replies, 1);
	assert_int_equal(h.last_err, KP_ERR_DISCONNECTED);
	assert_int_equal(h.downs, 1);
	kp_hostlink_stats st = stats(&h);
	assert_int_equal(st.protocol_errors, 1);
	assert_int_equal(st.disconnects, 1);

	/* reconnect: a resumed handshake (session ticket), no second full one */
	assert_true(run_until(&h, two_hellos, 10000));
	st = stats(&h);
	assert_int_equal(st.full_handshakes, 1);
	assert_int_equal(st.resumed_handshakes, 1);
	id = server_last_id(&h.srv, "hello");
	snprintf(json, sizeof(json), "{\"op\":\"hello_ok\",\"re\":%lld,\"host_time\":1}", id);
	server_send(&h.srv, json);
	assert_true(run_until(&h, is_up, 5000));
	assert_int_equal(h.ups, 2);

	/* frames that end the connection, each a protocol error */
	static const char *const breakers[] = {
		"{\"op\":\"pong\",\"re\":999999}",                /* unknown re */
		"not json at all",                                  /* malformed */
		"{\"op\":\"hello\",\"id\":1,\"device_id\":\"x\",\"proto\":1,\"fw\":\"1\"}", /* wrong direction */
		"[]",
	};
	for (size_t i = 0; i < sizeof(breakers) / sizeof(breakers[0]); i++) {
		uint64_t before = stats(&h).protocol_errors;
		server_send(&h.srv, breakers[i]);
		assert_true(run_until(&h, is_down, 5000));
		assert_int_equal(stats(&h).protocol_errors, before + 1);
		/* back up for the next one */
		int hellos = server_saw(&h.srv, "\"op\":\"hello\"");
		assert_true(run_until_text(&h, "\"op\":\"hello\"", hellos + 1, 10000));
		id = server_last_id(&h.srv, "hello");
		snprintf(json, sizeof(json), "{\"op\":\"hello_ok\",\"re\":%lld,\"host_time\":1}", id);
		server_send(&h.srv, json);
		assert_true(run_until(&h, is_up, 5000));
	}
	st = stats(&h);
	assert_int_equal(st.full_handshakes, 1);
	assert_true(st.resumed_handshakes >= 5);
	harness_close(&h);
}

struct pipelined {
	int answered;
	int wrong;
	int64_t order[1000]; /* re of each reply, in arrival order */
};

static void on_pipelined(void *arg, kp_err err, const kp_host_msg *reply)
{
	struct pipelined *p = arg;
	if (err != KP_OK || !reply || reply->op != KP_OP_PAYMENT)
		p->wrong++;
	else if (p->answered < 1000)
		p->order[p->answered] = reply->re;
	p->answered++;
}

static struct pipelined *pipe_state;

static bool all_answered(struct harness *h)
{
	(void)h;
	return pipe_state->answered + pipe_state->wrong >= 1000;
}

/* 1000 requests in flight at once, answered in reverse order. */
static void test_pipelined_1000(void **state)
{
	(void)state;
	struct harness h;
	memset(&h, 0, sizeof(h));
	bring_up(&h, 30000, 600000);
	struct pipelined *p = calloc(1, sizeof(*p));
	assert_non_null(p);
	pipe_state = p;
	int64_t t0 = mono_now();
	for (int i = 0; i < 1000; i++) {
		kp_host_msg q;
		memset(&q, 0, sizeof(q));
		q.op = KP_OP_QUERY_PAYMENT;
		snprintf(q.attempt_id, sizeof(q.attempt_id), "att-%04d", i);
		assert_int_equal(kp_hostlink_request(h.link, &q, on_pipelined, p), KP_OK);
	}
	/* hello was id 1: the requests are 2..1001 */
	assert_true(run_until_text(&h, "\"id\":1001,\"attempt_id\":\"att-0999\"", 1, 20000));
	int64_t t1 = mono_now();
	char json[160];
	for (int i = 999; i >= 0; i--) {
		snprintf(json, sizeof(json),
			 "{\"op\":\"payment\",\"re\":%d,\"attempt_id\":\"att-%04d\",\"status\":"
			 "\"pending\"}",
			 i + 2, i);
		server_send(&h.srv, json);
	}
	assert_true(run_until(&h, all_answered, 30000));
	int64_t t2 = mono_now();
	assert_int_equal(p->wrong, 0);
	assert_int_equal(p->answered, 1000);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(p->order[i], 1001 - i);
	kp_hostlink_stats st = stats(&h);
	assert_int_equal(st.requests_sent, 1000);
	assert_int_equal(st.replies, 1000);
	assert_int_equal(st.protocol_errors, 0);
	assert_true(kp_hostlink_up(h.link));
	fprintf(stderr, "pipelined: 1000 requests out in %lld ms, 1000 replies in %lld ms\n",
		(long long)(t1 - t0), (long long)(t2 - t1));
	free(p);
	harness_close(&h);
}

static void test_timeout_and_ping(void **state)
{
	(void)state;
	struct harness h;
	memset(&h, 0, sizeof(h));
	bring_up(&h, 300, 600);

	kp_host_msg q;
	memset(&q, 0, sizeof(q));
	q.op = KP_OP_QUERY_REFUND;
	snprintf(q.refund_id, sizeof(q.refund_id), "r1");
	int64_t t0 = mono_now();
	assert_int_equal(kp_hostlink_request(h.link, &q, on_reply, &h), KP_OK);
	assert_true(run_until(&h, got_reply, 5000));
	int64_t took = mono_now() - t0;
	assert_int_equal(h.last_err, KP_ERR_TIMEOUT);
	assert_true(took >= 300);
	assert_int_equal(stats(&h).timeouts, 1);
	/* still up: a timeout is the request's, not the connection's */
	assert_true(kp_hostlink_up(h.link));
	/* a late reply to it is dropped without breaking the connection */
	long long id = server_last_id(&h.srv, "query_refund");
	char json[160];
	snprintf(json, sizeof(json),
		 "{\"op\":\"refund\",\"re\":%lld,\"refund_id\":\"r1\",\"status\":\"refunded\"}", id);
	server_send(&h.srv, json);
	int64_t until = mono_now() + 5000;
	while (stats(&h).late_replies == 0 && mono_now() < until)
		(void)run_until(&h, never, 20);
	assert_int_equal(stats(&h).late_replies, 1);
	assert_true(kp_hostlink_up(h.link));
	assert_int_equal(h.replies, 1);

	/* silence: a ping goes out; s_server does not pong: the link drops */
	assert_true(run_until(&h, ping_seen, 5000));
	assert_true(run_until(&h, is_down, 5000));
	assert_int_equal(h.downs, 1);
	assert_int_equal(stats(&h).protocol_errors, 0);
	harness_close(&h);
}

static void test_output_limit(void **state)
{
	(void)state;
	struct harness h;
	memset(&h, 0, sizeof(h));
	bring_up(&h, 60000, 600000);
	/* queue acks without letting the link write: the queue stops at its bound */
	kp_err err = KP_OK;
	int64_t seq = 1;
	while (err == KP_OK && seq < 1000000)
		err = kp_hostlink_ack(h.link, seq++);
	assert_int_equal(err, KP_ERR_TOO_BIG);
	int64_t frame = (int64_t)strlen("{\"op\":\"ack\",\"seq\":100000}") + 4;
	assert_true(seq * frame > (int64_t)KP_HOSTLINK_OUT_MAX * 9 / 10);
	kp_host_msg q;
	memset(&q, 0, sizeof(q));
	q.op = KP_OP_QUERY_PAYMENT;
	snprintf(q.attempt_id, sizeof(q.attempt_id), "a1");
	assert_int_equal(kp_hostlink_request(h.link, &q, on_reply, &h), KP_ERR_TOO_BIG);
	assert_int_equal(stats(&h).requests_sent, 0);
	/* once written out, requests are accepted again */
	assert_true(run_until_text(&h, "{\"op\":\"ack\",\"seq\":30000}", 1, 10000));
	assert_true(kp_hostlink_up(h.link));
	assert_int_equal(kp_hostlink_request(h.link, &q, on_reply, &h), KP_OK);
	harness_close(&h);
	assert_int_equal(h.replies, 1);
	assert_int_equal(h.last_err, KP_ERR_DISCONNECTED); /* freed with it in flight */
}

static void test_failpoint_drop_after_send(void **state)
{
	(void)state;
	struct harness h;
	memset(&h, 0, sizeof(h));
	bring_up(&h, 5000, 60000);
	assert_int_equal(kp_failpoint_arm(43, 1, 1, KP_FP_ERROR), KP_OK);
	kp_host_msg q;
	memset(&q, 0, sizeof(q));
	q.op = KP_OP_CANCEL_PAYMENT;
	snprintf(q.attempt_id, sizeof(q.attempt_id), "a9");
	assert_int_equal(kp_hostlink_request(h.link, &q, on_reply, &h), KP_OK);
	assert_true(run_until(&h, got_reply, 5000));
	assert_int_equal(h.last_err, KP_ERR_DISCONNECTED);
	assert_false(kp_hostlink_up(h.link));
	/* it was sent before the drop */
	assert_true(run_until_text(&h, "\"op\":\"cancel_payment\"", 1, 3000));
	assert_int_equal(server_saw(&h.srv, "\"op\":\"cancel_payment\""), 1);
	kp_failpoint_disarm_all();
	harness_close(&h);
}

static void test_config_errors(void **state)
{
	(void)state;
	kp_env env;
	kp_env_init_system(&env);
	env.log = quiet_log;
	char ca[300], crt[300], key[300], other_key[300];
	snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
	snprintf(crt, sizeof(crt), "%s/device.crt", pki);
	snprintf(key, sizeof(key), "%s/device.key", pki);
	snprintf(other_key, sizeof(other_key), "%s/host.key", pki);
	struct {
		const char *address, *ca, *crt, *key, *device;
		kp_err want;
	} cases[] = {
		{"127.0.0.1:1", ca, crt, key, "kiosk-test-1", KP_OK},
		{"[::1]:443", ca, crt, key, "kiosk-test-1", KP_OK},
		{"localhost:443", ca, crt, key, "kiosk-test-1", KP_OK},
		{"127.0.0.1", ca, crt, key, "kiosk-test-1", KP_ERR_CONFIG},
		{"127.0.0.1:0", ca, crt, key, "kiosk-test-1", KP_ERR_CONFIG},
		{"127.0.0.1:70000", ca, crt, key, "kiosk-test-1", KP_ERR_CONFIG},
		{":443", ca, crt, key, "kiosk-test-1", KP_ERR_CONFIG},
		{"127.0.0.1:1", "/nonexistent.pem", crt, key, "kiosk-test-1", KP_ERR_CONFIG},
		{"127.0.0.1:1", ca, "/nonexistent.pem", key, "kiosk-test-1", KP_ERR_CONFIG},
		{"127.0.0.1:1", ca, crt, other_key, "kiosk-test-1", KP_ERR_CONFIG}, /* key mismatch */
		{"127.0.0.1:1", ca, crt, key, "kiosk test", KP_ERR_CONFIG},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kp_hostlink_config cfg = {.address = cases[i].address,
					  .server_name = "localhost",
					  .ca_file = cases[i].ca,
					  .cert_file = cases[i].crt,
					  .key_file = cases[i].key,
					  .device_id = cases[i].device};
		kp_hostlink *l = (kp_hostlink *)&cfg; /* must be reset to NULL on failure */
		kp_err err = kp_hostlink_new(&l, &cfg, &env, NULL, NULL, NULL);
		if (err != cases[i].want)
			fail_msg("case %zu (%s): got %s", i, cases[i].address, kp_errname(err));
		assert_true((err == KP_OK) == (l != NULL));
		kp_hostlink_free(l);
	}
}

static void test_connect_refused_backs_off(void **state)
{
	(void)state;
	struct harness h;
	memset(&h, 0, sizeof(h));
	h.srv.port = kp_free_port(false); /* nobody listens there */
	assert_true(h.srv.port > 0);
	h.srv.in_fd = h.srv.out_fd = -1;
	link_open(&h, "localhost", 5000, 60000);
	int64_t t0 = mono_now();
	(void)run_until(&h, is_up, 1000);
	kp_hostlink_stats st = stats(&h);
	/* backoff 50 ms doubling to 200 ms with jitter in [d/2, d]: about 25+50+100+100..  */
	assert_true(st.connects_failed >= 4);
	assert_true(st.connects_failed <= 1000 / 25 + 1);
	assert_int_equal(st.tls_failures, 0);
	assert_true(mono_now() - t0 >= 1000);
	kp_hostlink_free(h.link);
	free(h.srv.out);
}

static int group_setup(void **state)
{
	(void)state;
	snprintf(pki, sizeof(pki), "/tmp/kp-test-pki-XXXXXX");
	if (!mkdtemp(pki))
		return -1;
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "sh '%s/make_test_pki.sh' '%s'", KP_TEST_SOURCE_DIR, pki);
	return system(cmd) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", pki);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_good_handshake_then_hello),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_requests_replies_and_protocol_errors),
		cmocka_unit_test(test_pipelined_1000),
		cmocka_unit_test(test_timeout_and_ping),
		cmocka_unit_test(test_output_limit),
		cmocka_unit_test(test_failpoint_drop_after_send),
		cmocka_unit_test(test_connect_refused_backs_off),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
