/* test_api.c — the CoAP API in-process over a real journal file, the real
 * engine and a fake host, driven from outside by libcoap's own coap-client
 * (and kioskctl when it is built). The test process runs the server loop
 * while the client runs as a child process; each case asserts the answer the
 * client printed and the journal behind it (a rejected request leaves the
 * journal exactly as it was). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <coap3/coap.h>

#include "api.h"
#include "api_json.h"
#include "engine.h"
#include "journal.h"

#ifndef COAP_CLIENT
#define COAP_CLIENT "/usr/bin/coap-client-notls"
#endif

#define T0 1800000000000LL
#define MAXREQ 256

/* ---------- the fake host ---------- */

struct fake_req {
	kp_host_msg msg;
	kp_engine_reply_fn fn;
	void *arg;
	bool answered;
};

struct fake_host {
	bool up;
	bool hold;                /* true: leave requests unanswered */
	struct fake_req reqs[MAXREQ];
	int nreq;
	int64_t confirm_seq;
};

static bool fh_up(void *h)
{
	return ((struct fake_host *)h)->up;
}

static kp_err fh_request(void *h, const kp_host_msg *req, kp_engine_reply_fn fn, void *arg)
{
	struct fake_host *fh = h;
	if (!fh->up)
		return KP_ERR_DISCONNECTED;
	if (fh->nreq == MAXREQ)
		return KP_ERR_BUSY;
	struct fake_req *r = &fh->reqs[fh->nreq++];
	r->msg = *req;
	r->fn = fn;
	r->arg = arg;
	r->answered = false;
	return KP_OK;
}

static kp_err fh_ack(void *h, int64_t seq)
{
	(void)h;
	(void)seq;
	return KP_OK;
}

static const kp_host_ops fake_ops = {.up = fh_up, .request = fh_request, .ack = fh_ack};

static bool api_host_up(void *h)
{
	return ((struct fake_host *)h)->up;
}

static size_t api_host_stats(void *h, kp_api_stat *out, size_t cap)
{
	struct fake_host *fh = h;
	if (cap < 1)
		return 0;
	out[0] = (kp_api_stat){"requests_sent", fh->nreq};
	return 1;
}

static const kp_api_host_ops api_host_ops = {.up = api_host_up, .stats = api_host_stats};

/* Answer every request not answered yet: payments stay pending with a QR,
 * cancels cancel. */
static void fh_answer(struct fake_host *fh)
{
	for (int i = 0; i < fh->nreq && !fh->hold; i++) {
		struct fake_req *r = &fh->reqs[i];
		if (r->answered)
			continue;
		r->answered = true;
		kp_host_msg m;
		memset(&m, 0, sizeof(m));
		m.op = KP_OP_PAYMENT;
		m.re = r->msg.id;
		m.has_re = true;
		snprintf(m.attempt_id, sizeof(m.attempt_id), "%s", r->msg.attempt_id);
		m.amount = r->msg.amount;
		m.has_amount = true;
		if (r->msg.op == KP_OP_CANCEL_PAYMENT) {
			snprintf(m.status, sizeof(m.status), "canceled");
		} else {
			snprintf(m.status, sizeof(m.status), "pending");
			snprintf(m.qr, sizeof(m.qr), "QR:%s", r->msg.attempt_id);
		}
		r->fn(r->arg, KP_OK, &m);
	}
}

/* The link closes: every request still open fails, as hostlink.c does. */
static void fh_close(struct fake_host *fh)
{
	for (int i = 0; i < fh->nreq; i++) {
		struct fake_req *r = &fh->reqs[i];
		if (!r->answered) {
			r->answered = true;
			r->fn(r->arg, KP_ERR_DISCONNECTED, NULL);
		}
	}
	fh->up = false;
}

/* ---------- the fixture ---------- */

struct fx {
	char dir[64];
	char path[128];
	kp_env env;
	kp_fake_world world;
	kp_journal *j;
	struct fake_host host;
	kp_engine *e;
	kp_api *api;
	char url[64];       /* coap://127.0.0.1:PORT */
	char addr[32];      /* 127.0.0.1:PORT */
};

static void on_change(void *arg, const char *order_id)
{
	struct fx *f = arg;
	if (f->api)
		kp_api_order_changed(f->api, order_id);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/kp-test-api-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/journal.db", f->dir);
	kp_env_init_fake(&f->env, &f->world, 7, T0);
	f->world.quiet = true;
	f->env.log_level = KP_LOG_DEBUG;
	assert_int_equal(kp_journal_open(&f->j, f->path, 0, &f->env), KP_OK);
	f->host.up = true;

	kp_api_config ac = {.listen = "127.0.0.1:0", .max_payload = 2048};
	kp_api_deps ad = {.env = &f->env, .host_ops = &api_host_ops, .host = &f->host};
	assert_int_equal(kp_api_new(&f->api, &ac, &ad), KP_OK);
	assert_true(kp_api_port(f->api) > 0);

	kp_engine_config ec;
	kp_engine_config_defaults(&ec);
	ec.max_amount = 100000;
	kp_engine_deps ed = {.env = &f->env, .journal = f->j, .host_ops = &fake_ops, .host = &f->host,
			     .on_change = on_change, .on_change_arg = f};
	assert_int_equal(kp_engine_new(&f->e, &ec, &ed), KP_OK);
	kp_api_set_backend(f->api, f->e, f->j);
	snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%u", (unsigned)kp_api_port(f->api));
	snprintf(f->url, sizeof(f->url), "coap://%s", f->addr);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	fh_close(&f->host);
	if (f->api)
		kp_api_set_backend(f->api, NULL, NULL);
	kp_engine_free(f->e);
	kp_api_free(f->api);
	kp_journal_close(f->j);
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* One turn of the daemon's loop: API, fake host, engine timers. */
static void pump(struct fx *f, int wait_ms)
{
	struct pollfd pfd;
	kp_api_pollfd(f->api, &pfd);
	int n = poll(&pfd, 1, wait_ms);
	if (n > 0)
		kp_api_process(f->api, pfd.revents);
	fh_answer(&f->host);
	(void)kp_engine_tick(f->e);
}

/* ---------- running a client as a child process ---------- */

struct run {
	int status;              /* exit status, or -1 if killed */
	char out[32768];
	size_t nout;
	char err[8192];
	size_t nerr;
};

typedef void (*tick_fn)(struct fx *f, int64_t elapsed_ms);

static void drain(int fd, char *buf, size_t cap, size_t *n, bool *open)
{
	for (;;) {
		if (*n + 1 >= cap) {
			char sink[256];
			ssize_t r = read(fd, sink, sizeof(sink));
			if (r <= 0) {
				if (r == 0)
					*open = false;
				return;
			}
			continue;
		}
		ssize_t r = read(fd, buf + *n, cap - 1 - *n);
		if (r > 0) {
			*n += (size_t)r;
			buf[*n] = '\0';
			continue;
		}
		if (r == 0)
			*open = false;
		return;
	}
}

static int64_t mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run argv while the server loop turns; tick (if any) is called each turn. */
static void run_with(struct fx *f, char *const argv[], struct run *r, tick_fn tick)
{
	int po[2], pe[2];
	memset(r, 0, sizeof(*r));
	assert_int_equal(pipe(po), 0);
	assert_int_equal(pipe(pe), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(po[1], 1);
		dup2(pe[1], 2);
		close(po[0]);
		close(pe[0]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	fcntl(po[0], F_SETFL, O_NONBLOCK);
	fcntl(pe[0], F_SETFL, O_NONBLOCK);
	bool out_open = true, err_open = true, exited = false;
	int64_t start = mono_now();
	while (!exited || out_open || err_open) {
		pump(f, 5);
		if (tick)
			tick(f, mono_now() - start);
		if (out_open)
			drain(po[0], r->out, sizeof(r->out), &r->nout, &out_open);
		if (err_open)
			drain(pe[0], r->err, sizeof(r->err), &r->nerr, &err_open);
		if (!exited) {
			int st;
			pid_t w = waitpid(pid, &st, WNOHANG);
			if (w == pid) {
				exited = true;
				r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
			}
		}
		if (mono_now() - start > 60000) {
			kill(pid, SIGKILL);
			fail_msg("%s did not finish in 60 s", argv[0]);
		}
	}
	close(po[0]);
	close(pe[0]);
}

static void run(struct fx *f, char *const argv[], struct run *r)
{
	run_with(f, argv, r, NULL);
}

/* coap-client: -v 6 makes it show the answer PDU ("c:4.09"), which is how
 * the test reads the code of a 2.xx answer (those print only the payload). */
static void coap_v(struct fx *f, struct run *r, const char *method, const char *path, const char *body,
		   bool verbose)
{
	char url[256];
	snprintf(url, sizeof(url), "%s/%s", f->url, path);
	char *argv[16];
	int n = 0;
	argv[n++] = (char *)COAP_CLIENT;
	argv[n++] = (char *)"-v";
	argv[n++] = (char *)(verbose ? "6" : "3");
	argv[n++] = (char *)"-B";
	argv[n++] = (char *)"30";
	argv[n++] = (char *)"-m";
	argv[n++] = (char *)method;
	if (body) {
		argv[n++] = (char *)"-e";
		argv[n++] = (char *)body;
	}
	argv[n++] = url;
	argv[n] = NULL;
	run(f, argv, r);
}

static void coap(struct fx *f, struct run *r, const char *method, const char *path, const char *body)
{
	coap_v(f, r, method, path, body, true);
}

static bool has_code(const struct run *r, const char *code)
{
	char pat[32];
	snprintf(pat, sizeof(pat), "c:%s ", code);
	return strstr(r->out, pat) || strstr(r->err, pat);
}

#define assert_code(r, code)                                                                                   \
	do {                                                                                                   \
		if (!has_code((r), (code)))                                                                    \
			fail_msg("want %s; stdout:\n%s\nstderr:\n%s", (code), (r)->out, (r)->err);             \
	} while (0)

/* The JSON body in coap-client's output: the last line that starts with '{'
 * (stdout for a 2.xx; for an error, the text after the code on stderr). */
static cJSON *body_of(const struct run *r)
{
	const char *best = NULL;
	for (const char *p = r->out; (p = strchr(p, '{')); p++) {
		if (p == r->out || p[-1] == '\n' || p[-1] == ' ')
			best = p;
	}
	for (const char *p = r->err; (p = strchr(p, '{')); p++)
		if (p > r->err && p[-1] == ' ' && p[-2] >= '0' && p[-2] <= '9')
			best = p;
	if (!best)
		return NULL;
	const char *end = strchr(best, '\n');
	char buf[16384];
	size_t n = end ? (size_t)(end - best) : strlen(best);
	if (n >= sizeof(buf))
		return NULL;
	memcpy(buf, best, n);
	buf[n] = '\0';
	/* coap-client's PDU dump prints the payload quoted ('...'); skip those. */
	return cJSON_Parse(buf);
}

static const char *jstr(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	return cJSON_IsString(v) ? v->valuestring : "";
}

/* What the journal holds: everything a rejected request must leave alone. */
struct snap {
	kp_journal_stats st;
};

static void snap_take(struct fx *f, struct snap *s)
{
	assert_int_equal(kp_journal_stats_get(f->j, &s->st), KP_OK);
}

static void snap_same(struct fx *f, const struct snap *before)
{
	struct snap now;
	snap_take(f, &now);
	assert_memory_equal(now.st.orders, before->st.orders, sizeof(now.st.orders));
	assert_memory_equal(now.st.attempts, before->st.attempts, sizeof(now.st.attempts));
	assert_memory_equal(now.st.refunds, before->st.refunds, sizeof(now.st.refunds));
	assert_int_equal(now.st.events, before->st.events);
}

/* Create an order through coap-client; returns its id in id. */
static void create_order(struct fx *f, const char *key, int64_t amount, char *id, size_t cap)
{
	char body[128];
	struct run r;
	snprintf(body, sizeof(body), "{\"dedup_key\":\"%s\",\"amount\":%lld}", key, (long long)amount);
	coap(f, &r, "post", "orders", body);
	assert_code(&r, "2.01");
	cJSON *j = body_of(&r);
	assert_non_null(j);
	snprintf(id, cap, "%s", jstr(j, "order_id"));
	cJSON_Delete(j);
	assert_true(id[0]);
}

/* ---------- cases ---------- */

static void test_create_and_dedup(void **state)
{
	struct fx *f = *state;
	struct run r;
	kp_order o;

	coap(f, &r, "post", "orders", "{\"dedup_key\":\"cart-1\",\"amount\":250,\"items\":[{\"sku\":\"A1\"}]}");
	assert_int_equal(r.status, 0);
	assert_code(&r, "2.01");
	cJSON *j = body_of(&r);
	assert_non_null(j);
	char id[KP_ID_SIZE];
	snprintf(id, sizeof(id), "%s", jstr(j, "order_id"));
	assert_string_equal(jstr(j, "status"), "pending");
	assert_string_equal(jstr(j, "currency"), "EUR");
	assert_int_equal((int64_t)cJSON_GetObjectItem(j, "amount")->valuedouble, 250);
	assert_int_equal((int64_t)cJSON_GetObjectItem(j, "expires_at")->valuedouble, T0 + 300000);
	assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "duplicated")));
	cJSON_Delete(j);
	/* The answer reports what the journal committed. */
	assert_int_equal(kp_journal_order_get(f->j, id, &o), KP_OK);
	assert_string_equal(o.dedup_key, "cart-1");
	assert_int_equal(o.amount, 250);
	assert_int_equal(o.state, KP_ORDER_PENDING);

	/* The same cart again (a double tap): the same order, duplicated. */
	struct snap s;
	snap_take(f, &s);
	coap(f, &r, "post", "orders", "{\"dedup_key\":\"cart-1\",\"amount\":250,\"items\":[{\"sku\":\"A1\"}]}");
	assert_code(&r, "2.01");
	j = body_of(&r);
	assert_non_null(j);
	assert_string_equal(jstr(j, "order_id"), id);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "duplicated")));
	cJSON_Delete(j);
	snap_same(f, &s);

	/* Same key, different amount: conflict, nothing written. */
	coap(f, &r, "post", "orders", "{\"dedup_key\":\"cart-1\",\"amount\":251,\"items\":[{\"sku\":\"A1\"}]}");
	assert_code(&r, "4.09");
	j = body_of(&r);
	assert_non_null(j);
	assert_string_equal(jstr(j, "error"), "conflict");
	assert_non_null(strstr(jstr(j, "message"), "cart-1"));
	cJSON_Delete(j);
	snap_same(f, &s);

	/* GET shows the whole order. */
	char path[96];
	snprintf(path, sizeof(path), "orders/%s", id);
	coap(f, &r, "get", path, NULL);
	assert_code(&r, "2.05");
	j = body_of(&r);
	assert_non_null(j);
	assert_string_equal(jstr(j, "dedup_key"), "cart-1");
	assert_true(cJSON_IsArray(cJSON_GetObjectItem(j, "items")));
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "attempts")), 0);
	cJSON_Delete(j);
}

/* POST /orders with "channel": one request, one answer with the order and
 * its attempt (paying, with the host's QR); a repeat is the same order and
 * starts nothing; refusals change nothing. */
static void test_one_request_sale(void **state)
{
	struct fx *f = *state;
	struct run r;
	struct snap s;
	static const char body[] = "{\"dedup_key\":\"cart-one\",\"amount\":300,\"channel\":\"qr\"}";

	snap_take(f, &s);
	coap(f, &r, "post", "orders", "{\"dedup_key\":\"cart-one\",\"amount\":300,\"channel\":\"Q R\"}");
	assert_code(&r, "4.00");
	cJSON *j = body_of(&r);
	assert_non_null(j);
	assert_non_null(strstr(jstr(j, "message"), "channel"));
	cJSON_Delete(j);
	coap(f, &r, "post", "orders", "{\"dedup_key\":\"cart-one\",\"amount\":300,\"channel\":7}");
	assert_code(&r, "4.00");
	f->host.up = false;
	coap(f, &r, "post", "orders", body);
	assert_code(&r, "5.03");
	j = body_of(&r);
	assert_string_equal(jstr(j, "error"), "disconnected");
	cJSON_Delete(j);
	f->host.up = true;
	snap_same(f, &s);

	coap(f, &r, "post", "orders", body);
	assert_code(&r, "2.01");
	j = body_of(&r);
	assert_non_null(j);
	char id[KP_ID_SIZE], aid[KP_ID_SIZE], qr[128];
	snprintf(id, sizeof(id), "%s", jstr(j, "order_id"));
	assert_string_equal(jstr(j, "status"), "pending");
	assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "duplicated")));
	assert_null(cJSON_GetObjectItem(j, "pay_error"));
	cJSON *a = cJSON_GetObjectItem(j, "attempt");
	assert_non_null(a);
	snprintf(aid, sizeof(aid), "%s", jstr(a, "attempt_id"));
	assert_string_equal(jstr(a, "order_id"), id);
	assert_string_equal(jstr(a, "status"), "paying");
	assert_string_equal(jstr(a, "channel"), "qr");
	snprintf(qr, sizeof(qr), "QR:%s", aid);
	assert_string_equal(jstr(a, "qr"), qr);
	cJSON_Delete(j);
	/* Behind the answer: the order and its attempt, as committed. */
	kp_order o;
	kp_attempt at;
	assert_int_equal(kp_journal_order_get(f->j, id, &o), KP_OK);
	assert_string_equal(o.dedup_key, "cart-one");
	assert_int_equal(o.amount, 300);
	assert_int_equal(o.state, KP_ORDER_PENDING);
	assert_int_equal(kp_journal_attempt_get(f->j, aid, &at), KP_OK);
	assert_int_equal(at.state, KP_ATTEMPT_PAYING);
	assert_string_equal(at.order_id, id);
	kp_api_stats st;
	kp_api_stats_get(f->api, &st);
	assert_int_equal(st.pays_waiting, 0);

	/* The same request again (its answer was lost): the same order, nothing new. */
	int nreq = f->host.nreq;
	snap_take(f, &s);
	coap(f, &r, "post", "orders", body);
	assert_code(&r, "2.01");
	j = body_of(&r);
	assert_string_equal(jstr(j, "order_id"), id);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "duplicated")));
	assert_null(cJSON_GetObjectItem(j, "attempt"));
	cJSON_Delete(j);
	snap_same(f, &s);
	assert_int_equal(f->host.nreq, nreq);
}

/* Every bad request gets its code and a JSON error, and changes nothing. */
static void test_rejections_change_nothing(void **state)
{
	struct fx *f = *state;
	struct run r;
	char big[3001];
	memset(big, ' ', sizeof(big) - 1);
	big[0] = '{';
	static const char head[] = "\"dedup_key\":\"big\",\"amount\":5,\"pad\":\"";
	memcpy(big + 1, head, strlen(head));
	big[sizeof(big) - 3] = '"';
	big[sizeof(big) - 2] = '}';
	big[sizeof(big) - 1] = '\0';

	static const struct {
		const char *method, *path, *body, *code, *error;
	} cases[] = {
		{"post", "orders", "{\"dedup_key\":\"x1\",\"amount\":", "4.00", "invalid"},
		{"post", "orders", "not json at all", "4.00", "invalid"},
		{"post", "orders", "{\"dedup_key\":\"x1\",\"amount\":0}", "4.00", "invalid"},
		{"post", "orders", "{\"dedup_key\":\"x1\",\"amount\":1.5}", "4.00", "invalid"},
		{"post", "orders", "{\"dedup_key\":\"x1\",\"amount\":\"100\"}", "4.00", "invalid"},
		{"post", "orders", "{\"dedup_key\":\"x1\",\"amount\":-3}", "4.00", "invalid"},
		{"post", "orders", "{\"amount\":3}", "4.00", "invalid"},
		{"post", "orders", "{\"dedup_key\":\"bad key!\",\"amount\":3}", "4.00", "invalid"},
		{"post", "orders", "{\"dedup_key\":\"x1\",\"amount\":100001}", "4.00", "invalid"},
		{"post", "orders", "{\"dedup_key\":\"x1\",\"amount\":3,\"currency\":\"USD\"}", "4.00", "invalid"},
		{"post", "orders", NULL, "4.13", "too_big"}, /* the 3000-byte body, block-wise */
		{"get", "orders/no-such-order", NULL, "4.04", "not_found"},
		{"get", "orders/bad.id", NULL, "4.00", "invalid"},
		{"post", "orders/no-such-order/cancel", NULL, "4.04", "not_found"},
		{"post", "orders/no-such-order/pay", "{\"channel\":\"card\"}", "4.04", "not_found"},
		{"post", "orders/no-such-order/vend", "{\"result\":\"success\"}", "4.04", "not_found"},
		{"post", "orders/no-such-order/vend", "{\"result\":\"maybe\"}", "4.00", "invalid"},
		{"get", "nothing-here", NULL, "4.04", "not_found"},
		{"get", "orders/x/y/z", NULL, "4.04", "not_found"},
		{"get", "orders", NULL, "4.05", "invalid"},
		{"post", "health", NULL, "4.05", "invalid"},
		{"get", "events?since=-1", NULL, "4.00", "invalid"},
		{"get", "events?sinc=3", NULL, "4.00", "invalid"},
		{"get", "events?since=0&limit=101", NULL, "4.00", "invalid"},
	};
	struct snap s;
	snap_take(f, &s);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *body = cases[i].body;
		if (!body && strcmp(cases[i].code, "4.13") == 0)
			body = big;
		coap(f, &r, cases[i].method, cases[i].path, body);
		if (!has_code(&r, cases[i].code))
			fail_msg("case %zu %s %s: want %s\nstdout:\n%s\nstderr:\n%s", i, cases[i].method, cases[i].path,
				 cases[i].code, r.out, r.err);
		cJSON *j = body_of(&r);
		if (!j || strcmp(jstr(j, "error"), cases[i].error) != 0 || !jstr(j, "message")[0])
			fail_msg("case %zu %s %s: want error %s\nstdout:\n%s\nstderr:\n%s", i, cases[i].method,
				 cases[i].path, cases[i].error, r.out, r.err);
		cJSON_Delete(j);
		snap_same(f, &s);
	}
}

/* Pay is a separate answer: committed paying, the host asked, then 2.01. */
static void test_pay_cancel_expired(void **state)
{
	struct fx *f = *state;
	struct run r;
	char id[KP_ID_SIZE], path[128];
	create_order(f, "cart-pay", 400, id, sizeof(id));

	snprintf(path, sizeof(path), "orders/%s/pay", id);
	coap(f, &r, "post", path, "{\"channel\":\"card\"}");
	assert_code(&r, "2.01");
	cJSON *j = body_of(&r);
	assert_non_null(j);
	assert_string_equal(jstr(j, "status"), "paying");
	assert_string_equal(jstr(j, "channel"), "card");
	char qr[128];
	snprintf(qr, sizeof(qr), "QR:%s", jstr(j, "attempt_id"));
	assert_string_equal(jstr(j, "qr"), qr);
	kp_attempt a;
	assert_int_equal(kp_journal_attempt_get(f->j, jstr(j, "attempt_id"), &a), KP_OK);
	assert_int_equal(a.state, KP_ATTEMPT_PAYING);
	assert_string_equal(a.order_id, id);
	cJSON_Delete(j);
	kp_api_stats st;
	kp_api_stats_get(f->api, &st);
	assert_int_equal(st.pays_waiting, 0);

	/* Bad channel: 4.00, no new attempt. */
	struct snap s;
	snap_take(f, &s);
	coap(f, &r, "post", path, "{\"channel\":\"Card Reader\"}");
	assert_code(&r, "4.00");
	snap_same(f, &s);

	/* Cancel: 2.04 with the order, canceled. */
	snprintf(path, sizeof(path), "orders/%s/cancel", id);
	coap(f, &r, "post", path, NULL);
	assert_code(&r, "2.04");
	j = body_of(&r);
	assert_non_null(j);
	assert_string_equal(jstr(j, "status"), "canceled");
	cJSON_Delete(j);

	/* Paying a canceled order: 4.09 state. */
	snap_take(f, &s);
	snprintf(path, sizeof(path), "orders/%s/pay", id);
	coap(f, &r, "post", path, "{\"channel\":\"card\"}");
	assert_code(&r, "4.09");
	j = body_of(&r);
	assert_string_equal(jstr(j, "error"), "state");
	cJSON_Delete(j);
	snap_same(f, &s);

	/* Inside the pay margin: 4.09 expired, no attempt. */
	create_order(f, "cart-late", 100, id, sizeof(id));
	kp_fake_advance(&f->world, 300000 - 60000 + 1);
	snap_take(f, &s);
	snprintf(path, sizeof(path), "orders/%s/pay", id);
	coap(f, &r, "post", path, "{\"channel\":\"card\"}");
	assert_code(&r, "4.09");
	j = body_of(&r);
	assert_string_equal(jstr(j, "error"), "expired");
	cJSON_Delete(j);
	snap_same(f, &s);
}

static void test_host_down_and_journal_closed(void **state)
{
	struct fx *f = *state;
	struct run r;
	char id[KP_ID_SIZE], path[128];
	create_order(f, "cart-down", 100, id, sizeof(id));

	f->host.up = false;
	struct snap s;
	snap_take(f, &s);
	snprintf(path, sizeof(path), "orders/%s/pay", id);
	coap(f, &r, "post", path, "{\"channel\":\"card\"}");
	assert_code(&r, "5.03");
	cJSON *j = body_of(&r);
	assert_string_equal(jstr(j, "error"), "disconnected");
	cJSON_Delete(j);
	snap_same(f, &s);
	kp_attempt live;
	assert_int_equal(kp_journal_attempt_live(f->j, id, &live), KP_ERR_NOT_FOUND);

	coap(f, &r, "get", "health", NULL);
	assert_code(&r, "2.05");
	j = body_of(&r);
	assert_string_equal(jstr(j, "status"), "degraded");
	assert_string_equal(jstr(j, "host"), "down");
	assert_string_equal(jstr(j, "journal"), "ok");
	cJSON_Delete(j);
	f->host.up = true;

	/* Journal not open: 5.03 for orders; health still answers. */
	kp_api_set_backend(f->api, NULL, NULL);
	coap(f, &r, "post", "orders", "{\"dedup_key\":\"cart-closed\",\"amount\":5}");
	assert_code(&r, "5.03");
	j = body_of(&r);
	assert_string_equal(jstr(j, "error"), "unavailable");
	cJSON_Delete(j);
	coap(f, &r, "get", "health", NULL);
	assert_code(&r, "2.05");
	j = body_of(&r);
	assert_string_equal(jstr(j, "journal"), "closed");
	cJSON_Delete(j);
	kp_api_set_backend(f->api, f->e, f->j);
	snap_same(f, &s);
}

/* ---------- Observe ---------- */

static char observe_attempt[KP_ID_SIZE];
static bool observe_confirmed;

/* Two seconds into the observation, the host confirms the payment. */
static void confirm_later(struct fx *f, int64_t elapsed_ms)
{
	if (observe_confirmed || elapsed_ms < 2000)
		return;
	observe_confirmed = true;
	kp_host_msg c;
	memset(&c, 0, sizeof(c));
	c.op = KP_OP_CONFIRM;
	c.seq = ++f->host.confirm_seq;
	snprintf(c.host_txn, sizeof(c.host_txn), "txn-obs-1");
	snprintf(c.attempt_id, sizeof(c.attempt_id), "%s", observe_attempt);
	snprintf(c.status, sizeof(c.status), "succeeded");
	snprintf(c.currency, sizeof(c.currency), "EUR");
	c.amount = 700;
	c.has_amount = true;
	c.at = T0;
	kp_engine_on_confirm(f->e, &c);
}

static void test_observe_notifies_paid(void **state)
{
	struct fx *f = *state;
	struct run r;
	char id[KP_ID_SIZE], path[128], url[256];
	create_order(f, "cart-obs", 700, id, sizeof(id));
	snprintf(path, sizeof(path), "orders/%s/pay", id);
	coap(f, &r, "post", path, "{\"channel\":\"wallet\"}");
	assert_code(&r, "2.01");
	cJSON *j = body_of(&r);
	snprintf(observe_attempt, sizeof(observe_attempt), "%s", jstr(j, "attempt_id"));
	cJSON_Delete(j);

	/* Observe for 4 s; the confirm lands at 2 s. */
	snprintf(url, sizeof(url), "%s/orders/%s", f->url, id);
	char *argv[] = {(char *)COAP_CLIENT, (char *)"-s", (char *)"4", (char *)"-B", (char *)"10", url, NULL};
	observe_confirmed = false;
	run_with(f, argv, &r, confirm_later);
	assert_true(observe_confirmed);
	assert_int_equal(r.status, 0);
	/* First the order as it was, then the notification after the commit. */
	const char *pending = strstr(r.out, "\"status\":\"pending\"");
	const char *paid = strstr(r.out, "\"status\":\"paid\"");
	if (!pending || !paid || paid < pending)
		fail_msg("want pending then paid in:\n%s\nstderr:\n%s", r.out, r.err);
	assert_non_null(strstr(paid, "txn-obs-1"));
	kp_order o;
	assert_int_equal(kp_journal_order_get(f->j, id, &o), KP_OK);
	assert_int_equal(o.state, KP_ORDER_PAID);
	kp_api_stats st;
	kp_api_stats_get(f->api, &st);
	assert_true(st.notifications >= 1);
	assert_int_equal(st.observed_orders, 1);

	/* Vend success: 2.04 fulfilled. */
	snprintf(path, sizeof(path), "orders/%s/vend", id);
	coap(f, &r, "post", path, "{\"result\":\"success\"}");
	assert_code(&r, "2.04");
	j = body_of(&r);
	assert_string_equal(jstr(j, "status"), "fulfilled");
	cJSON_Delete(j);
}

/* ---------- health, metrics, events ---------- */

static void test_health_metrics_events(void **state)
{
	struct fx *f = *state;
	struct run r;
	char id[KP_ID_SIZE];
	create_order(f, "cart-m1", 10, id, sizeof(id));
	create_order(f, "cart-m2", 20, id, sizeof(id));

	coap(f, &r, "get", "health", NULL);
	assert_code(&r, "2.05");
	cJSON *j = body_of(&r);
	assert_string_equal(jstr(j, "status"), "ok");
	assert_string_equal(jstr(j, "host"), "up");
	cJSON_Delete(j);

	coap(f, &r, "get", "metrics", NULL);
	assert_code(&r, "2.05");
	j = body_of(&r);
	assert_non_null(j);
	assert_int_equal((int)cJSON_GetObjectItem(cJSON_GetObjectItem(j, "orders"), "pending")->valuedouble, 2);
	assert_int_equal((int)cJSON_GetObjectItem(j, "alarms")->valuedouble, 0);
	assert_true(cJSON_GetObjectItem(j, "journal_bytes")->valuedouble > 0);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "host"), "up")));
	assert_non_null(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "host"), "requests_sent"));
	assert_non_null(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "engine"), "confirms"));
	cJSON_Delete(j);

	/* Events page by page: limit 1, then on from "next". */
	coap(f, &r, "get", "events?since=0&limit=1", NULL);
	assert_code(&r, "2.05");
	j = body_of(&r);
	assert_non_null(j);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "events")), 1);
	int64_t next = (int64_t)cJSON_GetObjectItem(j, "next")->valuedouble;
	assert_true(next > 0);
	cJSON_Delete(j);
	char q[64];
	snprintf(q, sizeof(q), "events?since=%lld", (long long)next);
	coap(f, &r, "get", q, NULL);
	j = body_of(&r);
	assert_non_null(j);
	cJSON *evs = cJSON_GetObjectItem(j, "events");
	assert_true(cJSON_GetArraySize(evs) >= 1);
	assert_true(cJSON_GetObjectItem(cJSON_GetArrayItem(evs, 0), "seq")->valuedouble > (double)next);
	cJSON_Delete(j);

	/* Reconcile: 2.04. */
	coap(f, &r, "post", "reconcile", NULL);
	assert_code(&r, "2.04");
}

/* A body large enough to need block-wise transfer both ways. */
static void test_large_order_blockwise(void **state)
{
	struct fx *f = *state;
	struct run r;
	char body[1400];
	char items[1100];
	items[0] = '[';
	size_t n = 1;
	for (int i = 0; n < 1000; i++)
		n += (size_t)snprintf(items + n, sizeof(items) - n, "%s{\"sku\":\"S%03d\"}", i ? "," : "", i);
	items[n++] = ']';
	items[n] = '\0';
	snprintf(body, sizeof(body), "{\"dedup_key\":\"cart-big\",\"amount\":99,\"items\":%s}", items);
	coap(f, &r, "post", "orders", body);
	assert_code(&r, "2.01");
	cJSON *j = body_of(&r);
	char id[KP_ID_SIZE], path[96];
	snprintf(id, sizeof(id), "%s", jstr(j, "order_id"));
	cJSON_Delete(j);
	/* Quiet: stdout is then exactly the reassembled body. */
	snprintf(path, sizeof(path), "orders/%s", id);
	coap_v(f, &r, "get", path, NULL, false);
	assert_int_equal(r.status, 0);
	assert_true(r.nout > 1024);
	j = cJSON_Parse(r.out);
	if (!j)
		fail_msg("not one JSON body:\n%s", r.out);
	cJSON *it = cJSON_GetObjectItem(j, "items");
	char *back = cJSON_PrintUnformatted(it);
	assert_string_equal(back, items);
	cJSON_free(back);
	cJSON_Delete(j);
#ifdef KIOSKCTL
	/* kioskctl reassembles the block-wise answer too. */
	char *argv[] = {(char *)KIOSKCTL, (char *)"--api", f->addr, (char *)"--json", (char *)"order",
			(char *)"show", id, NULL};
	run(f, argv, &r);
	assert_int_equal(r.status, 0);
	j = cJSON_Parse(r.out);
	assert_non_null(j);
	back = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "items"));
	assert_string_equal(back, items);
	cJSON_free(back);
	cJSON_Delete(j);
#endif

	/* The same size as a one-request sale: a block-wise request (Block1)
	 * whose answer is a separate one, once the host answered. */
	snprintf(body, sizeof(body), "{\"dedup_key\":\"cart-big-pay\",\"amount\":98,\"items\":%s,\"channel\":\"qr\"}",
		 items);
	coap(f, &r, "post", "orders", body);
	assert_code(&r, "2.01");
	j = body_of(&r);
	assert_non_null(j);
	cJSON *a = cJSON_GetObjectItem(j, "attempt");
	assert_non_null(a);
	assert_string_equal(jstr(a, "status"), "paying");
	kp_order o;
	kp_attempt at;
	assert_int_equal(kp_journal_order_get(f->j, jstr(j, "order_id"), &o), KP_OK);
	assert_int_equal(o.amount, 98);
	assert_string_equal(o.items, items);
	assert_int_equal(kp_journal_attempt_get(f->j, jstr(a, "attempt_id"), &at), KP_OK);
	assert_string_equal(at.order_id, o.order_id);
	cJSON_Delete(j);
}

/* Content-format: absent or application/json; anything else is 4.15. */
static void test_content_format(void **state)
{
	struct fx *f = *state;
	struct run r;
	char url[128];
	snprintf(url, sizeof(url), "%s/orders", f->url);
	char *json[] = {(char *)COAP_CLIENT, (char *)"-v", (char *)"6", (char *)"-m", (char *)"post", (char *)"-t",
			(char *)"json", (char *)"-e", (char *)"{\"dedup_key\":\"cf1\",\"amount\":5}", url, NULL};
	run(f, json, &r);
	assert_code(&r, "2.01");
	struct snap s;
	snap_take(f, &s);
	char *text[] = {(char *)COAP_CLIENT, (char *)"-v", (char *)"6", (char *)"-m", (char *)"post", (char *)"-t",
			(char *)"text", (char *)"-e", (char *)"{\"dedup_key\":\"cf2\",\"amount\":5}", url, NULL};
	run(f, text, &r);
	assert_code(&r, "4.15");
	snap_same(f, &s);
}

/* Listen addresses: numeric or localhost only; non-loopback is served with
 * a warning in the log. */
static bool saw_loopback_warning;

static void capture_log(void *ctx, kp_log_level level, const char *msg)
{
	(void)ctx;
	if (level == KP_LOG_WARN && strstr(msg, "non-loopback"))
		saw_loopback_warning = true;
}

static void test_listen_addresses(void **state)
{
	struct fx *f = *state;
	static const struct {
		const char *listen;
		kp_err err;
		bool warns;
	} cases[] = {
		{"127.0.0.1:0", KP_OK, false},
		{"localhost:0", KP_OK, false},
		{"[::1]:0", KP_OK, false},
		{"0.0.0.0:0", KP_OK, true},
		{"127.0.0.1", KP_ERR_CONFIG, false},
		{"127.0.0.1:70000", KP_ERR_CONFIG, false},
		{"127.0.0.1:x", KP_ERR_CONFIG, false},
		{"kiosk.example:5683", KP_ERR_CONFIG, false},
		{"[::1:5683", KP_ERR_CONFIG, false},
		{":5683", KP_ERR_CONFIG, false},
	};
	kp_env env = f->env;
	env.log = capture_log;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kp_api *api = NULL;
		kp_api_config ac = {.listen = cases[i].listen};
		kp_api_deps ad = {.env = &env};
		saw_loopback_warning = false;
		kp_err err = kp_api_new(&api, &ac, &ad);
		if (err != cases[i].err)
			fail_msg("%s: got %s", cases[i].listen, kp_errname(err));
		if (err == KP_OK) {
			assert_true(kp_api_port(api) > 0);
			struct pollfd pfd;
			kp_api_pollfd(api, &pfd);
			assert_true(pfd.fd >= 0);
			assert_int_equal(kp_api_deadline(api), 0);
		} else {
			assert_null(api);
		}
		assert_int_equal(saw_loopback_warning, cases[i].warns);
		kp_api_free(api);
	}
}

/* The host never answers: the client gives up, the request stays waiting in
 * the API; freeing the API first detaches it, and the engine's callback (run
 * when the engine is freed) frees it. ASan checks both ends. */
static void test_pay_waiting_then_api_freed(void **state)
{
	struct fx *f = *state;
	struct run r;
	char id[KP_ID_SIZE], path[128], url[256];
	create_order(f, "cart-hold", 100, id, sizeof(id));
	f->host.hold = true;
	snprintf(path, sizeof(path), "orders/%s/pay", id);
	snprintf(url, sizeof(url), "%s/%s", f->url, path);
	char *argv[] = {(char *)COAP_CLIENT, (char *)"-m", (char *)"post", (char *)"-e",
			(char *)"{\"channel\":\"card\"}", (char *)"-B", (char *)"2", url, NULL};
	run(f, argv, &r);
	assert_null(strstr(r.out, "attempt_id"));
	kp_api_stats st;
	kp_api_stats_get(f->api, &st);
	assert_int_equal(st.pays_waiting, 1);
	/* Write-ahead: the attempt is committed paying although nobody answered. */
	kp_attempt live;
	assert_int_equal(kp_journal_attempt_live(f->j, id, &live), KP_OK);
	assert_int_equal(live.state, KP_ATTEMPT_PAYING);
	kp_api_free(f->api);
	f->api = NULL;
}

/* ---------- many observers, in-process client ---------- */

#define NOBS ((int)KP_API_OBSERVED_MAX + 1)

struct obs_client {
	uint8_t tok[NOBS][8];
	size_t toklen[NOBS];
	int first_code[NOBS];    /* code of the registration answer */
	bool observing[NOBS];    /* that answer carried Observe */
	int last_code[NOBS];     /* code of the latest message for this token */
	char last_status[NOBS][24];
	int messages[NOBS];
};

static coap_response_t obs_on_response(coap_session_t *session, const coap_pdu_t *sent, const coap_pdu_t *rcv,
				       const coap_mid_t mid)
{
	(void)sent;
	(void)mid;
	struct obs_client *c = coap_get_app_data(coap_session_get_context(session));
	coap_bin_const_t t = coap_pdu_get_token(rcv);
	coap_pdu_code_t code = coap_pdu_get_code(rcv);
	if (COAP_RESPONSE_CLASS(code) == 0)
		return COAP_RESPONSE_OK;
	for (int i = 0; i < NOBS; i++) {
		if (t.length != c->toklen[i] || memcmp(t.s, c->tok[i], t.length) != 0)
			continue;
		int k = COAP_RESPONSE_CLASS(code) * 100 + (code & 0x1f);
		coap_opt_iterator_t it;
		if (c->messages[i]++ == 0) {
			c->first_code[i] = k;
			c->observing[i] = coap_check_option(rcv, COAP_OPTION_OBSERVE, &it) != NULL;
		}
		c->last_code[i] = k;
		size_t len, off, total;
		const uint8_t *data;
		c->last_status[i][0] = '\0';
		if (coap_get_data_large(rcv, &len, &data, &off, &total)) {
			char buf[4096];
			if (len < sizeof(buf)) {
				memcpy(buf, data, len);
				buf[len] = '\0';
				cJSON *j = cJSON_Parse(buf);
				snprintf(c->last_status[i], sizeof(c->last_status[i]), "%s", jstr(j, "status"));
				cJSON_Delete(j);
			}
		}
		break;
	}
	return COAP_RESPONSE_OK;
}

/* Turn both loops until done() or 10 s. */
static bool pump_both(struct fx *f, coap_context_t *cctx, bool (*done)(const struct obs_client *),
		      const struct obs_client *c)
{
	int64_t start = mono_now();
	while (mono_now() - start < 10000) {
		pump(f, 1);
		coap_io_process(cctx, COAP_IO_NO_WAIT);
		if (done(c))
			return true;
	}
	return false;
}

static bool all_answered(const struct obs_client *c)
{
	for (int i = 0; i < NOBS; i++)
		if (c->messages[i] == 0)
			return false;
	return true;
}

static int obs_watch = -1;
static bool watched_canceled(const struct obs_client *c)
{
	return strcmp(c->last_status[obs_watch], "canceled") == 0;
}

/* One more observed order than the API keeps resources for: the least
 * recently used is dropped (its subscriber told 4.04), the others keep
 * getting notifications. */
static void test_observe_many_evicts_oldest(void **state)
{
	struct fx *f = *state;
	static char ids[NOBS][KP_ID_SIZE];
	struct obs_client *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	for (int i = 0; i < NOBS; i++) {
		char key[32], why[128];
		snprintf(key, sizeof(key), "obs-%d", i);
		kp_order_req req = {.dedup_key = key, .amount = 10 + i};
		kp_order o;
		bool dup;
		assert_int_equal(kp_engine_order_create(f->e, &req, &o, &dup, why, sizeof(why)), KP_OK);
		snprintf(ids[i], sizeof(ids[i]), "%s", o.order_id);
	}
	coap_context_t *cctx = coap_new_context(NULL);
	assert_non_null(cctx);
	coap_context_set_block_mode(cctx, COAP_BLOCK_USE_LIBCOAP | COAP_BLOCK_SINGLE_BODY);
	coap_set_app_data(cctx, c);
	coap_register_response_handler(cctx, obs_on_response);
	coap_address_t dst;
	coap_address_init(&dst);
	dst.addr.sin.sin_family = AF_INET;
	dst.addr.sin.sin_port = htons(kp_api_port(f->api));
	dst.addr.sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	dst.size = sizeof(dst.addr.sin);
	coap_session_t *session = coap_new_client_session(cctx, NULL, &dst, COAP_PROTO_UDP);
	assert_non_null(session);
	for (int i = 0; i < NOBS; i++) {
		coap_pdu_t *pdu = coap_new_pdu(COAP_MESSAGE_CON, COAP_REQUEST_CODE_GET, session);
		assert_non_null(pdu);
		coap_session_new_token(session, &c->toklen[i], c->tok[i]);
		uint8_t ob[4];
		assert_true(coap_add_token(pdu, c->toklen[i], c->tok[i]));
		assert_true(coap_add_option(pdu, COAP_OPTION_OBSERVE, coap_encode_var_safe(ob, sizeof(ob), 0), ob));
		assert_true(coap_add_option(pdu, COAP_OPTION_URI_PATH, 6, (const uint8_t *)"orders"));
		assert_true(coap_add_option(pdu, COAP_OPTION_URI_PATH, strlen(ids[i]), (const uint8_t *)ids[i]));
		assert_true(coap_send(session, pdu) != COAP_INVALID_MID);
		/* One at a time: the eviction order is the registration order. */
		while (c->messages[i] == 0) {
			pump(f, 1);
			coap_io_process(cctx, COAP_IO_NO_WAIT);
		}
	}
	assert_true(pump_both(f, cctx, all_answered, c));
	for (int i = 0; i < NOBS; i++) {
		assert_int_equal(c->first_code[i], 205);
		assert_true(c->observing[i]);
		if (i > 0)
			assert_string_equal(c->last_status[i], "pending");
	}
	kp_api_stats st;
	kp_api_stats_get(f->api, &st);
	assert_int_equal(st.observed_orders, KP_API_OBSERVED_MAX);
	/* The first one was dropped: its subscriber got 4.04. */
	int64_t start = mono_now();
	while (c->last_code[0] != 404 && mono_now() - start < 5000) {
		pump(f, 1);
		coap_io_process(cctx, COAP_IO_NO_WAIT);
	}
	assert_int_equal(c->last_code[0], 404);

	/* A change to a kept one is notified. */
	obs_watch = 1;
	kp_order o;
	assert_int_equal(kp_engine_cancel(f->e, ids[1], &o), KP_OK);
	assert_true(pump_both(f, cctx, watched_canceled, c));
	assert_int_equal(c->last_code[1], 205);
	/* The dropped subscriber heard nothing more after its 4.04. */
	assert_int_equal(c->messages[0], 2);

	coap_session_release(session);
	coap_free_context(cctx);
	free(c);
}

#ifdef KIOSKCTL
/* ---------- kioskctl over the same API ---------- */

/* Run kioskctl --api <server> args... */
/* kioskctl --api ADDR and up to 8 arguments, NULL-terminated. */
static void ctl(struct fx *f, struct run *r, ...)
{
	char *argv[14];
	int n = 0;
	argv[n++] = (char *)KIOSKCTL;
	argv[n++] = (char *)"--api";
	argv[n++] = f->addr;
	va_list ap;
	va_start(ap, r);
	for (const char *a = va_arg(ap, const char *); a && n < 11; a = va_arg(ap, const char *))
		argv[n++] = (char *)a;
	va_end(ap);
	argv[n] = NULL;
	run(f, argv, r);
}

#define expect_exit(r, code)                                                                                   \
	do {                                                                                                   \
		if ((r)->status != (code))                                                                     \
			fail_msg("exit %d, want %d; stdout:\n%s\nstderr:\n%s", (r)->status, (code), (r)->out,    \
				 (r)->err);                                                                    \
	} while (0)

static void test_kioskctl(void **state)
{
	struct fx *f = *state;
	struct run r;
	char id[KP_ID_SIZE];

	ctl(f, &r, "order", "create", "--dedup-key", "ctl-1", "--amount", "300", NULL);
	expect_exit(&r, 0);
	assert_true(sscanf(r.out, "order %64s pending 300 EUR", id) == 1);
	kp_order o;
	assert_int_equal(kp_journal_order_get(f->j, id, &o), KP_OK);
	assert_string_equal(o.dedup_key, "ctl-1");

	ctl(f, &r, "order", "create", "--dedup-key", "ctl-1", "--amount", "300", NULL);
	expect_exit(&r, 0);
	assert_non_null(strstr(r.out, "duplicated"));

	/* --channel: a one-request sale, the order and its attempt. */
	char id2[KP_ID_SIZE], aid[KP_ID_SIZE];
	ctl(f, &r, "order", "create", "--dedup-key", "ctl-one", "--amount", "120", "--channel", "qr", NULL);
	expect_exit(&r, 0);
	assert_true(sscanf(r.out, "order %64s pending 120 EUR", id2) == 1);
	const char *line = strstr(r.out, "\nattempt ");
	assert_non_null(line);
	assert_true(sscanf(line, "\nattempt %64s paying on qr", aid) == 1);
	assert_non_null(strstr(r.out, "qr QR:"));
	kp_attempt a;
	assert_int_equal(kp_journal_attempt_get(f->j, aid, &a), KP_OK);
	assert_string_equal(a.order_id, id2);
	assert_int_equal(a.state, KP_ATTEMPT_PAYING);

	/* --json: the raw answer. */
	ctl(f, &r, "--json", "order", "show", id, NULL, NULL, NULL);
	expect_exit(&r, 0);
	cJSON *j = cJSON_Parse(r.out);
	assert_non_null(j);
	assert_string_equal(jstr(j, "order_id"), id);
	assert_string_equal(jstr(j, "status"), "pending");
	cJSON_Delete(j);

	ctl(f, &r, "order", "pay", id, "--channel", "card", NULL, NULL);
	expect_exit(&r, 0);
	assert_non_null(strstr(r.out, "paying on card"));
	assert_non_null(strstr(r.out, "qr QR:"));

	ctl(f, &r, "order", "show", id, NULL, NULL, NULL, NULL);
	expect_exit(&r, 0);
	assert_non_null(strstr(r.out, "attempt"));
	assert_non_null(strstr(r.out, "paying"));

	/* The service answers an error: exit 1, one line on stderr. */
	struct snap s;
	snap_take(f, &s);
	ctl(f, &r, "order", "vend", id, "success", NULL, NULL, NULL);
	expect_exit(&r, 1);
	assert_non_null(strstr(r.err, "4.09 state"));
	ctl(f, &r, "order", "create", "--dedup-key", "ctl-1", "--amount", "301", NULL);
	expect_exit(&r, 1);
	assert_non_null(strstr(r.err, "4.09 conflict"));
	snap_same(f, &s);

	ctl(f, &r, "order", "cancel", id, NULL, NULL, NULL, NULL);
	expect_exit(&r, 0);
	assert_non_null(strstr(r.out, "canceled"));

	ctl(f, &r, "events", "--since", "0", "--limit", "2", NULL, NULL);
	expect_exit(&r, 0);
	assert_non_null(strstr(r.out, "next "));
	ctl(f, &r, "health", NULL, NULL, NULL, NULL, NULL, NULL);
	expect_exit(&r, 0);
	assert_non_null(strstr(r.out, "status ok"));
	ctl(f, &r, "metrics", NULL, NULL, NULL, NULL, NULL, NULL);
	expect_exit(&r, 0);
	assert_non_null(strstr(r.out, "orders.canceled 1"));
	ctl(f, &r, "reconcile", NULL, NULL, NULL, NULL, NULL, NULL);
	expect_exit(&r, 0);
	assert_non_null(strstr(r.out, "reconcile scheduled"));

	/* Usage errors: exit 2, nothing sent. */
	snap_take(f, &s);
	ctl(f, &r, "order", "create", "--dedup-key", "ctl-2", "--amount", "1.5", NULL);
	expect_exit(&r, 2);
	ctl(f, &r, "order", "create", "--dedup-key", "ctl-2", "--amount", "5", "--items", NULL);
	expect_exit(&r, 2);
	ctl(f, &r, "order", "vend", id, "maybe", NULL, NULL, NULL);
	expect_exit(&r, 2);
	ctl(f, &r, "order", "show", "bad id", NULL, NULL, NULL, NULL);
	expect_exit(&r, 2);
	ctl(f, &r, "events", "--since", "x", NULL, NULL, NULL, NULL);
	expect_exit(&r, 2);
	snap_same(f, &s);

	/* Nobody listening: exit 3. */
	char *argv[] = {(char *)KIOSKCTL, (char *)"--api", (char *)"127.0.0.1:1", (char *)"health", NULL};
	run(f, argv, &r);
	expect_exit(&r, 3);
}
#endif

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (access(COAP_CLIENT, X_OK) != 0) {
		fprintf(stderr, "test_api: %s not found (install libcoap3-bin)\n", COAP_CLIENT);
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_and_dedup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_request_sale, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rejections_change_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pay_cancel_expired, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_down_and_journal_closed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_observe_notifies_paid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_health_metrics_events, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_order_blockwise, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pay_waiting_then_api_freed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_content_format, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listen_addresses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_observe_many_evicts_oldest, setup, teardown),
#ifdef KIOSKCTL
		cmocka_unit_test_setup_teardown(test_kioskctl, setup, teardown),
#endif
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
