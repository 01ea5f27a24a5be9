/* bench_replay.c — boot after a power cut: a journal with N attempts still
 * paying (the kiosk went dark 10 minutes ago, past every pay window), a host
 * that knows most of them (some pending, some paid meanwhile) and never heard
 * of the rest. Starts the real kioskpayd on it and measures, from exec:
 *   ready to sell  — POST /orders answered 2.01 (after the first answer at all)
 *   replay         — nothing in flight any more (no live attempt, no open refund)
 * beside two baselines from the same run: ready-to-sell on an empty journal,
 * and the same N cancel_payment requests pipelined straight through kp_hostlink
 * to the same simulator (what the host and the link allow). Test tool: it
 * writes the journal and the simulator's ledger through their libraries. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "kp_free_port.h"
#include "hostlink.h"
#include "journal.h"
#include "ledger.h"
#include "schema.h"
#include "simtest.h"
#include "kp_rmtree.h"

#ifndef KP_BIN_HOSTSIM
#define KP_BIN_HOSTSIM "kp-hostsim"
#endif
#ifndef KP_BIN_PKI
#define KP_BIN_PKI "kp-pki"
#endif
#ifndef KP_BIN_KIOSKPAYD
#define KP_BIN_KIOSKPAYD "kioskpayd"
#endif

#define PATH_CAP 512
#define DEVICE "kiosk-dev-1"
#define AGO_MS (10 * 60 * 1000) /* the power went off this long ago */
#define MAX_SAMPLES 4096

struct opts {
	int count;
	int paid_pct, unknown_pct;
	int timeout_s;
	const char *dir, *sim_dir, *json, *samples;
	const char *kioskpayd, *hostsim, *pki;
	bool baselines;
	bool prepare; /* fill, write the config, print how to run, keep everything */
	bool host_only; /* only the host-limit baseline */
};

struct world {
	struct opts o;
	char dir[PATH_CAP];      /* temp dir: pki, journals, configs, logs */
	char sim_dir[PATH_CAP];  /* temp dir for the ledgers */
	char pki[PATH_CAP];
	int host_port;
	st_sim sim;
	kp_env env;
	int64_t t_cut;           /* wall ms of the power cut */
};

/* What one start of kioskpayd showed. */
struct boot {
	double first_answer_ms;  /* exec -> first CoAP answer (GET /health) */
	double ready_ms;         /* exec -> POST /orders 2.01 */
	double host_up_ms;       /* exec -> /health says host up */
	double replay_ms;        /* exec -> nothing in flight (0 if not reached) */
	bool done;
	double stop_ms;          /* SIGTERM -> exit */
	int64_t left;            /* in flight when it stopped looking */
	int64_t replayed;        /* "N records to replay" from the daemon's log */
	int nsamples;
	double sample_ms[MAX_SAMPLES];
	int64_t sample_left[MAX_SAMPLES];
};

static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static pid_t g_daemon = -1; /* stopped by fail() too */
static pid_t g_sim = -1;

static void fail(const char *what)
{
	fprintf(stderr, "kp-bench-replay: %s\n", what);
	if (g_daemon > 0)
		kill(g_daemon, SIGKILL);
	if (g_sim > 0)
		kill(g_sim, SIGTERM);
	exit(1);
}

static void path_cat(char *dst, size_t cap, const char *a, const char *b)
{
	int n = snprintf(dst, cap, "%s%s", a, b);
	if (n < 0 || (size_t)n >= cap)
		fail("path too long");
}

static void quiet_log(void *ctx, kp_log_level level, const char *msg)
{
	(void)ctx;
	if (level <= KP_LOG_WARN && getenv("KP_BENCH_VERBOSE"))
		fprintf(stderr, "bench: %s\n", msg);
}

/* Record i's ids, the same on every run: UUID-shaped so that keys land all
 * over the B-trees as the daemon's random UUIDs do. */
static void rec_id(char *buf, size_t cap, const char *kind, int i)
{
	uint64_t z = (uint64_t)i * 0x9E3779B97F4A7C15ULL + (uint64_t)(unsigned char)kind[0];
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	z ^= z >> 31;
	snprintf(buf, cap, "%s-%08x-%04x-%04x-%08d", kind, (unsigned)(z >> 32), (unsigned)(z >> 16) & 0xFFFF,
		 (unsigned)z & 0xFFFF, i);
}

/* What the host knows of record i: 0 never heard of it, 1 pending, 2 paid. */
static int host_view(const struct opts *o, int i)
{
	int p = (int)(((unsigned)i * 37u) % 100u);
	if (p < o->unknown_pct)
		return 0;
	if (p < o->unknown_pct + o->paid_pct)
		return 2;
	return 1;
}

/* ---------- filling the journal and the ledger ---------- */

static void fill_journal(struct world *w, const char *path, int n)
{
	kp_journal *j = NULL;
	if (kp_journal_open(&j, path, 0, &w->env) != KP_OK)
		fail("cannot create the journal");
	if (kp_journal_begin(j) != KP_OK)
		fail("journal begin");
	for (int i = 0; i < n; i++) {
		char oid[KP_ID_SIZE], key[KP_ID_SIZE], aid[KP_ID_SIZE];
		rec_id(oid, sizeof(oid), "o", i);
		rec_id(key, sizeof(key), "k", i);
		rec_id(aid, sizeof(aid), "a", i);
		int64_t t = w->t_cut - 60000 + (int64_t)(i % 1000); /* the last minute before the cut */
		kp_order_new on = {.order_id = oid, .dedup_key = key, .amount = 250, .currency = "EUR",
				   .items = "[{\"sku\":\"cola-33cl\",\"qty\":1}]", .now = t,
				   .expires_at = t + 300000};
		kp_order ord;
		bool dup = false;
		kp_attempt_new an = {.attempt_id = aid, .order_id = oid, .channel = i % 2 ? "card" : "qr",
				     .amount = 250, .now = t + 1, .next_check_at = t + 5001};
		kp_attempt a;
		if (kp_journal_order_create(j, &on, &ord, &dup) != KP_OK ||
		    kp_journal_attempt_begin(j, &an, &a) != KP_OK)
			fail("cannot write an order and its attempt");
	}
	if (kp_journal_commit(j) != KP_OK)
		fail("journal commit");
	kp_journal_close(j);
}

static void fill_ledger(struct world *w, const char *path, int n)
{
	kp_ledger *l = NULL;
	if (kp_ledger_open(&l, path, false) != KP_OK)
		fail("cannot create the ledger");
	for (int i = 0; i < n; i++) {
		int view = host_view(&w->o, i);
		if (view == 0)
			continue;
		int64_t t = w->t_cut - 60000 + (int64_t)(i % 1000) + 2;
		kp_ledger_payment p, cur;
		memset(&p, 0, sizeof(p));
		rec_id(p.attempt_id, sizeof(p.attempt_id), "a", i);
		rec_id(p.order_id, sizeof(p.order_id), "o", i);
		snprintf(p.device_id, sizeof(p.device_id), DEVICE);
		snprintf(p.currency, sizeof(p.currency), "EUR");
		snprintf(p.channel, sizeof(p.channel), "%s", i % 2 ? "card" : "qr");
		snprintf(p.origin, sizeof(p.origin), "kiosk");
		p.amount = 250;
		p.expires_at = t + 300000 - 2;
		kp_ledger_verdict v;
		if (kp_ledger_payment_create(l, &p, t, &cur, &v) != KP_OK || v != KP_LEDGER_CREATED)
			fail("cannot create a payment in the ledger");
		if (view == 2) {
			char txn[KP_PROTO_ID_SIZE];
			kp_ledger_confirm c;
			snprintf(txn, sizeof(txn), "txn-%016x", (unsigned)i * 2654435761u);
			if (kp_ledger_payment_settle(l, p.attempt_id, true, txn, t + 1000, &cur, &c) != KP_OK)
				fail("cannot settle a payment in the ledger");
		}
	}
	kp_ledger_close(l);
}

static void copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
	if (!in || !out)
		fail("cannot copy the ledger");
	static char buf[1 << 16];
	size_t r;
	while ((r = fread(buf, 1, sizeof(buf), in)) > 0)
		if (fwrite(buf, 1, r, out) != r)
			fail("cannot copy the ledger");
	fclose(in);
	if (fclose(out) != 0)
		fail("cannot copy the ledger");
}

/* ---------- the simulator ---------- */

static void sim_start(struct world *w, const char *ledger)
{
	char listen[32], ca[PATH_CAP + 16], crt[PATH_CAP + 16], key[PATH_CAP + 16], log[PATH_CAP + 16];
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", w->host_port);
	path_cat(ca, sizeof(ca), w->pki, "/ca.crt");
	path_cat(crt, sizeof(crt), w->pki, "/host.crt");
	path_cat(key, sizeof(key), w->pki, "/host.key");
	path_cat(log, sizeof(log), w->dir, "/hostsim.log");
	const char *args[] = {"--listen", listen, "--control", "127.0.0.1:0", "--ledger", ledger, "--ca", ca,
			      "--cert", crt, "--key", key, NULL};
	int saved = dup(2), fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (saved < 0 || fd < 0)
		fail("cannot open the simulator's log");
	dup2(fd, 2);
	kp_err err = st_sim_start(&w->sim, w->o.hostsim, args);
	g_sim = err == KP_OK ? w->sim.pid : -1;
	dup2(saved, 2);
	close(saved);
	close(fd);
	if (err != KP_OK)
		fail("kp-hostsim did not start");
}

static void sim_stop(struct world *w)
{
	if (st_sim_stop(&w->sim) != 0)
		fprintf(stderr, "kp-bench-replay: kp-hostsim did not stop cleanly\n");
	g_sim = -1;
}

/* ---------- a bare CoAP client: one datagram out, one back ---------- */

struct probe {
	int fd;
	struct sockaddr_in to;
	uint16_t mid;
};

/* One request (path: one segment) on the connected socket: the same datagram
 * (same message id) again after resend_ms, doubling each time (a CoAP client's
 * ACK_TIMEOUT and backoff), or 1 ms after the port answered "unreachable"
 * (nothing bound yet: nothing queued either), until its answer or wait_ms.
 * Returns the code as class*100+detail, or -1; the payload (NUL-terminated)
 * in body. */
static int coap_call(struct probe *p, uint8_t code, const char *path, const char *json, int resend_ms,
		     int wait_ms, char *body, size_t cap)
{
	uint8_t out[512], in[2048];
	size_t n = 0, plen = strlen(path), jlen = json ? strlen(json) : 0;
	if (plen == 0 || plen > 12 || jlen + plen + 16 > sizeof(out))
		fail("coap request too big");
	uint16_t mid = ++p->mid;
	uint8_t tok[4] = {(uint8_t)(mid >> 8), (uint8_t)mid, 0x6b, 0x70};
	out[n++] = 0x40 | 4;                   /* version 1, CON, token length 4 */
	out[n++] = code;
	out[n++] = (uint8_t)(mid >> 8);
	out[n++] = (uint8_t)mid;
	memcpy(out + n, tok, 4);
	n += 4;
	out[n++] = (uint8_t)(11 << 4 | plen);  /* Uri-Path */
	memcpy(out + n, path, plen);
	n += plen;
	if (json) {
		out[n++] = 1 << 4 | 1;         /* Content-Format (12): application/json */
		out[n++] = 50;
		out[n++] = 0xFF;
		memcpy(out + n, json, jlen);
		n += jlen;
	}
	int64_t end = mono_us() + (int64_t)wait_ms * 1000, resend = 0;
	for (;;) {
		int64_t now = mono_us();
		if (now >= end)
			return -1;
		if (now >= resend) {
			(void)send(p->fd, out, n, 0);
			resend = now + (int64_t)resend_ms * 1000;
			if (resend_ms < 16000)
				resend_ms *= 2;
		}
		int64_t left = ((resend < end ? resend : end) - now + 999) / 1000;
		struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
		if (poll(&pfd, 1, (int)left) <= 0)
			continue;
		ssize_t r = recv(p->fd, in, sizeof(in) - 1, 0);
		if (r < 0 && errno == ECONNREFUSED) {
			resend = mono_us() + 1000;
			continue;
		}
		if (r < 4 + 4 || (in[0] & 0x0F) != 4 || memcmp(in + 4, tok, 4) != 0)
			continue; /* an answer to an earlier request, or not ours */
		if ((in[0] >> 4 & 3) == 0) { /* a separate CON answer: acknowledge it */
			uint8_t ack[4] = {0x60, 0, in[2], in[3]};
			(void)send(p->fd, ack, sizeof(ack), 0);
		}
		size_t i = 8;
		while (i < (size_t)r && in[i] != 0xFF) { /* skip the options */
			unsigned d = in[i] >> 4, l = in[i] & 0x0F;
			i++;
			i += d == 13 ? 1 : d == 14 ? 2 : 0;
			if (l == 13 && i < (size_t)r)
				l = 13u + in[i++];
			else if (l == 14 && i + 1 < (size_t)r) {
				l = 269u + ((unsigned)in[i] << 8 | in[i + 1]);
				i += 2;
			}
			i += l;
		}
		size_t b = 0;
		if (i < (size_t)r && in[i] == 0xFF)
			for (i++; i < (size_t)r && b + 1 < cap; i++)
				body[b++] = (char)in[i];
		if (cap > 0)
			body[b] = '\0';
		return (in[1] >> 5) * 100 + (in[1] & 0x1F);
	}
}

/* ---------- one boot of kioskpayd ---------- */

static void write_config(struct world *w, const char *path, const char *journal, int api_port)
{
	FILE *f = fopen(path, "w");
	if (!f)
		fail("cannot write the config");
	fprintf(f,
		"[journal]\npath = %s\n[api]\nlisten = 127.0.0.1:%d\n"
		"[host]\naddress = 127.0.0.1:%d\nserver_name = localhost\nca = %s/ca.crt\n"
		"cert = %s/device.crt\nkey = %s/device.key\nreconnect_min = 100ms\n"
		"[device]\nid = " DEVICE "\n[payment]\nmax_amount = 100000\n[log]\nlevel = info\n",
		journal, api_port, w->host_port, w->pki, w->pki, w->pki);
	if (fclose(f) != 0)
		fail("cannot write the config");
}

static pid_t spawn(const char *exe, const char *config, const char *log)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	execl(exe, exe, "-c", config, (char *)NULL);
	_exit(127);
}

/* Live attempts + open refunds, read from the journal file the daemon writes. */
static int64_t in_flight(sqlite3 *db, sqlite3_stmt *st)
{
	int64_t n = -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	(void)db;
	return n;
}

static int64_t parse_replayed(const char *log)
{
	FILE *f = fopen(log, "r");
	char line[1024];
	int64_t n = -1;
	while (f && fgets(line, sizeof(line), f)) {
		const char *p = strstr(line, " records to replay");
		if (!p)
			continue;
		while (p > line && p[-1] >= '0' && p[-1] <= '9')
			p--;
		n = strtoll(p, NULL, 10);
	}
	if (f)
		fclose(f);
	return n;
}

/* Start kioskpayd on journal and measure; with replay, wait (up to the
 * timeout) until nothing is in flight. */
static void boot(struct world *w, const char *name, const char *journal, bool replay, struct boot *out)
{
	char config[PATH_CAP + 64], log[PATH_CAP + 64], sfx[64];
	snprintf(sfx, sizeof(sfx), "/%s.ini", name);
	path_cat(config, sizeof(config), w->dir, sfx);
	snprintf(sfx, sizeof(sfx), "/%s.log", name);
	path_cat(log, sizeof(log), w->dir, sfx);
	int api_port = kp_free_port(true);
	write_config(w, config, journal, api_port);
	memset(out, 0, sizeof(*out));
	struct probe p = {.fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0),
			  .to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)api_port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)},
			  .mid = (uint16_t)(mono_us() & 0xFFFF)};
	if (p.fd < 0 || connect(p.fd, (struct sockaddr *)&p.to, sizeof(p.to)) != 0)
		fail("socket");
	char body[1024];
	int64_t t0 = mono_us(), limit = t0 + (int64_t)w->o.timeout_s * 1000000;
	pid_t pid = spawn(w->o.kioskpayd, config, log);
	if (pid < 0)
		fail("fork");
	g_daemon = pid;
	/* Each step is one request, resent as a CoAP client would (a request a
	 * busy daemon has not read yet waits in its socket: sending new ones
	 * would only queue more). -1 ms: not within the time limit. */
	out->first_answer_ms = out->ready_ms = out->host_up_ms = -1;
	int left_ms = (int)((limit - mono_us()) / 1000);
	if (coap_call(&p, 0x01, "health", NULL, 2000, left_ms, body, sizeof(body)) > 0) {
		/* The first answer of any kind: the loop runs. */
		out->first_answer_ms = (double)(mono_us() - t0) / 1000.0;
		/* A customer's order. */
		char order[128];
		snprintf(order, sizeof(order), "{\"dedup_key\":\"ready-%s\",\"amount\":100}", name);
		left_ms = (int)((limit - mono_us()) / 1000);
		int code = coap_call(&p, 0x02, "orders", order, 2000, left_ms, body, sizeof(body));
		if (code == 201)
			out->ready_ms = (double)(mono_us() - t0) / 1000.0;
		else if (code > 0)
			fprintf(stderr, "kp-bench-replay: POST /orders answered %d %s\n", code, body);
		while (code == 201 && (left_ms = (int)((limit - mono_us()) / 1000)) > 0) {
			int hc = coap_call(&p, 0x01, "health", NULL, 2000, left_ms, body, sizeof(body));
			if (hc == 205 && strstr(body, "\"host\":\"up\"")) {
				out->host_up_ms = (double)(mono_us() - t0) / 1000.0;
				break;
			}
			struct timespec ts = {0, 20 * 1000000L};
			nanosleep(&ts, NULL);
		}
	}
	int wst;
	if (waitpid(pid, &wst, WNOHANG) == pid)
		fail("kioskpayd exited at start (see its log, KP_BENCH_KEEP=1)");

	if (replay) {
		sqlite3 *db = NULL;
		sqlite3_stmt *st = NULL;
		if (sqlite3_open_v2(journal, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
		    sqlite3_prepare_v2(db,
				       /* The daemon's own count: an index-only read. Any other
					* text of the condition misses the partial indexes and
					* scans the tables, holding a snapshot long enough to stop
					* the daemon's checkpoints. */
				       KP_SCHEMA_COUNT_OPEN,
				       -1, &st, NULL) != SQLITE_OK)
			fail("cannot read the journal");
		sqlite3_busy_timeout(db, 1000);
		int64_t last_sample = 0;
		for (;;) {
			int64_t left = in_flight(db, st), now = mono_us();
			if (now - last_sample >= 50000 && out->nsamples < MAX_SAMPLES) {
				out->sample_ms[out->nsamples] = (double)(now - t0) / 1000.0;
				out->sample_left[out->nsamples++] = left;
				last_sample = now;
			}
			out->left = left;
			if (left == 0) {
				out->done = true;
				out->replay_ms = (double)(now - t0) / 1000.0;
				break;
			}
			if (now > limit)
				break;
			/* The count reads the live-attempt index: look less often when it is big. */
			long ms = w->o.count / 500;
			ms = ms < 10 ? 10 : ms > 200 ? 200 : ms;
			struct timespec ts = {0, ms * 1000000L};
			nanosleep(&ts, NULL);
		}
		sqlite3_finalize(st);
		sqlite3_close(db);
	}
	close(p.fd);
	int64_t t_term = mono_us();
	kill(pid, SIGTERM);
	int status = 0;
	pid_t r;
	while ((r = waitpid(pid, &status, WNOHANG)) == 0 && mono_us() - t_term < 30000000) {
		struct timespec ts = {0, 5 * 1000000L};
		nanosleep(&ts, NULL);
	}
	out->stop_ms = (double)(mono_us() - t_term) / 1000.0;
	g_daemon = -1;
	if (r == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		fprintf(stderr, "kp-bench-replay: kioskpayd (%s) ignored SIGTERM for 30 s: killed\n", name);
	} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "kp-bench-replay: kioskpayd (%s) did not stop cleanly\n", name);
	}
	out->replayed = parse_replayed(log);
}

/* What kp_journal_open's PRAGMA quick_check costs on this file (page cache as
 * the fill left it): the part of ready-to-sell that grows with the file. */
static double quick_check_ms(const char *path)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int64_t t = mono_us();
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL) != SQLITE_OK)
		fail("cannot run quick_check");
	while (sqlite3_step(st) == SQLITE_ROW) {
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	return (double)(mono_us() - t) / 1000.0;
}

/* ---------- the host's limit: the same cancels straight through the link ---------- */

struct pipe_state {
	kp_hostlink *link;
	int answered, errors;
};

static void on_reply(void *arg, kp_err err, const kp_host_msg *reply)
{
	struct pipe_state *s = arg;
	s->answered++;
	if (err != KP_OK || reply->op != KP_OP_PAYMENT)
		s->errors++;
}

static void on_confirm(void *arg, const kp_host_msg *c)
{
	struct pipe_state *s = arg;
	kp_err err = kp_hostlink_ack(s->link, c->seq);
	(void)err;
}

static void pump(kp_hostlink *link, const kp_env *env)
{
	kp_hostlink_tick(link);
	struct pollfd pfd;
	kp_hostlink_pollfd(link, &pfd);
	int64_t wait = 20, dl = kp_hostlink_deadline(link), now = kp_now_mono(env);
	if (dl > 0 && dl - now < wait)
		wait = dl > now ? dl - now : 0;
	if (poll(&pfd, pfd.fd >= 0 ? 1 : 0, (int)wait) > 0 && pfd.revents)
		kp_hostlink_process(link, pfd.revents);
}

/* Seconds for n cancel_payment requests, at most 1024 in flight. */
static double host_limit(struct world *w, int n, int *errors)
{
	char addr[32], ca[PATH_CAP + 16], crt[PATH_CAP + 16], key[PATH_CAP + 16];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", w->host_port);
	path_cat(ca, sizeof(ca), w->pki, "/ca.crt");
	path_cat(crt, sizeof(crt), w->pki, "/device.crt");
	path_cat(key, sizeof(key), w->pki, "/device.key");
	kp_hostlink_config cfg = {.address = addr, .server_name = "localhost", .ca_file = ca,
				  .cert_file = crt, .key_file = key, .device_id = DEVICE,
				  .fw_version = "bench", .request_timeout_ms = 60000,
				  .ping_idle_ms = 60000, .backoff_min_ms = 50, .backoff_max_ms = 400};
	struct pipe_state s = {0};
	if (kp_hostlink_new(&s.link, &cfg, &w->env, on_confirm, NULL, &s) != KP_OK)
		fail("kp_hostlink_new");
	int64_t limit = mono_us() + 20000000;
	while (!kp_hostlink_up(s.link) && mono_us() < limit)
		pump(s.link, &w->env);
	if (!kp_hostlink_up(s.link))
		fail("the link did not come up");
	int64_t t0 = mono_us(), stop = t0 + (int64_t)w->o.timeout_s * 1000000;
	int sent = 0;
	while (s.answered < n && mono_us() < stop) {
		while (sent < n && sent - s.answered < 1024) {
			kp_host_msg m;
			memset(&m, 0, sizeof(m));
			m.op = KP_OP_CANCEL_PAYMENT;
			rec_id(m.attempt_id, sizeof(m.attempt_id), "a", sent);
			if (kp_hostlink_request(s.link, &m, on_reply, &s) != KP_OK)
				break;
			sent++;
		}
		pump(s.link, &w->env);
	}
	double secs = (double)(mono_us() - t0) / 1e6;
	*errors = s.errors + (n - s.answered);
	kp_hostlink_free(s.link);
	return secs;
}

/* ---------- main ---------- */

static void usage(void)
{
	fprintf(stderr,
		"usage: kp-bench-replay [--count N] [--paid-pct P] [--unknown-pct U] [--timeout S]\n"
		"                       [--dir DIR] [--sim-dir DIR] [--no-baselines] [--json FILE]\n"
		"                       [--samples FILE] [--kioskpayd EXE] [--hostsim EXE] [--pki EXE]\n"
		"                       [--prepare] [--host-only]\n"
		"  N in-flight attempts (default 10000) left by a power cut 10 min ago; the host knows\n"
		"  all but U%% (default 10) and P%% (default 10) were paid meanwhile. The journal goes\n"
		"  under DIR (default /tmp: the real disk), the simulator's ledger under --sim-dir\n"
		"  (default /dev/shm: the host's disk is not the kiosk's). Gives up after S seconds\n"
		"  (default 60) and reports how far the replay got. --samples: 'ms left' lines.\n"
		"  --prepare: only fill and write the config, print the commands to run the simulator\n"
		"  and kioskpayd by hand (under perf, strace, valgrind), keep the files.\n");
	exit(2);
}

static int int_arg(const char *s, int lo, int hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		usage();
	return (int)v;
}

int main(int argc, char **argv)
{
	struct world w;
	memset(&w, 0, sizeof(w));
	struct opts *o = &w.o;
	*o = (struct opts){.count = 10000, .paid_pct = 10, .unknown_pct = 10, .timeout_s = 60,
			   .dir = "/tmp", .kioskpayd = KP_BIN_KIOSKPAYD, .hostsim = KP_BIN_HOSTSIM,
			   .pki = KP_BIN_PKI, .baselines = true};
	static const struct option opts[] = {
		{"count", required_argument, NULL, 'n'}, {"paid-pct", required_argument, NULL, 'p'},
		{"unknown-pct", required_argument, NULL, 'u'}, {"timeout", required_argument, NULL, 't'},
		{"dir", required_argument, NULL, 'd'}, {"sim-dir", required_argument, NULL, 's'},
		{"json", required_argument, NULL, 'j'}, {"samples", required_argument, NULL, 'S'},
		{"no-baselines", no_argument, NULL, 'B'}, {"kioskpayd", required_argument, NULL, 'K'},
		{"hostsim", required_argument, NULL, 'H'}, {"pki", required_argument, NULL, 'P'},
		{"prepare", no_argument, NULL, 'R'}, {"host-only", no_argument, NULL, 'O'},
		{NULL, 0, NULL, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'n': o->count = int_arg(optarg, 0, 10000000); break;
		case 'p': o->paid_pct = int_arg(optarg, 0, 100); break;
		case 'u': o->unknown_pct = int_arg(optarg, 0, 100); break;
		case 't': o->timeout_s = int_arg(optarg, 1, 86400); break;
		case 'd': o->dir = optarg; break;
		case 's': o->sim_dir = optarg; break;
		case 'j': o->json = optarg; break;
		case 'S': o->samples = optarg; break;
		case 'B': o->baselines = false; break;
		case 'K': o->kioskpayd = optarg; break;
		case 'H': o->hostsim = optarg; break;
		case 'P': o->pki = optarg; break;
		case 'R': o->prepare = true; break;
		case 'O': o->host_only = true; break;
		default: usage();
		}
	}
	if (optind != argc || o->paid_pct + o->unknown_pct > 100)
		usage();
	signal(SIGPIPE, SIG_IGN);
	struct stat sb;
	if (!o->sim_dir)
		o->sim_dir = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : o->dir;
	path_cat(w.dir, sizeof(w.dir), o->dir, "/kp-bench-replay-XXXXXX");
	path_cat(w.sim_dir, sizeof(w.sim_dir), o->sim_dir, "/kp-bench-replay-ledger-XXXXXX");
	if (!mkdtemp(w.dir) || !mkdtemp(w.sim_dir))
		fail("mkdtemp");
	path_cat(w.pki, sizeof(w.pki), w.dir, "/pki");
	char cmd[3 * PATH_CAP];
	snprintf(cmd, sizeof(cmd), "'%s' '%s' >/dev/null", o->pki, w.pki);
	if (system(cmd) != 0)
		fail("kp-pki failed");
	kp_env_init_system(&w.env);
	w.env.log = quiet_log;
	w.env.log_level = KP_LOG_WARN;
	w.host_port = kp_free_port(false);
	w.t_cut = kp_now_wall(&w.env) - AGO_MS;

	char journal[PATH_CAP + 64], empty[PATH_CAP + 64], ledger0[PATH_CAP + 64], ledger[PATH_CAP + 64],
		ledger_b[PATH_CAP + 64];
	path_cat(journal, sizeof(journal), w.dir, "/state/journal.db");
	path_cat(empty, sizeof(empty), w.dir, "/empty/journal.db");
	path_cat(ledger0, sizeof(ledger0), w.sim_dir, "/ledger-filled.db");
	path_cat(ledger, sizeof(ledger), w.sim_dir, "/ledger.db");
	path_cat(ledger_b, sizeof(ledger_b), w.sim_dir, "/ledger-baseline.db");

	int n = o->count;
	printf("kp-bench-replay: %d attempts in flight after a power cut %d min ago (%d%% unknown to the host,\n"
	       "  %d%% paid meanwhile, the rest pending there); journal in %s, ledger in %s\n",
	       n, AGO_MS / 60000, o->unknown_pct, o->paid_pct, o->dir, o->sim_dir);
	int64_t t = mono_us();
	fill_journal(&w, journal, n);
	double fill_j = (double)(mono_us() - t) / 1e6;
	t = mono_us();
	fill_ledger(&w, ledger0, n);
	double fill_l = (double)(mono_us() - t) / 1e6;
	copy_file(ledger0, ledger);
	copy_file(ledger0, ledger_b);
	if (stat(journal, &sb) != 0)
		fail("no journal");
	int64_t jbytes = (int64_t)sb.st_size;
	printf("  filled in %.2f s (journal, one transaction, %.1f MiB) + %.2f s (ledger)\n", fill_j,
	       (double)sb.st_size / 1048576.0, fill_l);
	double qc_ms = quick_check_ms(journal);

	if (o->prepare) {
		char config[PATH_CAP + 64];
		path_cat(config, sizeof(config), w.dir, "/replay.ini");
		write_config(&w, config, journal, kp_free_port(true));
		printf("  prepared; run:\n    %s --listen 127.0.0.1:%d --control 127.0.0.1:0 --ledger %s "
		       "--ca %s/ca.crt --cert %s/host.crt --key %s/host.key &\n    %s -c %s\n",
		       o->hostsim, w.host_port, ledger, w.pki, w.pki, w.pki, o->kioskpayd, config);
		return 0;
	}
	struct boot base, run;
	memset(&base, 0, sizeof(base));
	memset(&run, 0, sizeof(run));
	if (!o->host_only) {
		sim_start(&w, ledger);
		if (o->baselines)
			boot(&w, "empty", empty, false, &base);
		boot(&w, "replay", journal, true, &run);
		sim_stop(&w);
	}
	double host_s = 0;
	int host_err = 0;
	if (o->baselines && n > 0) {
		sim_start(&w, ledger_b);
		if (getenv("KP_BENCH_VERBOSE"))
			fprintf(stderr, "kp-hostsim pid %d\n", (int)w.sim.pid);
		host_s = host_limit(&w, n, &host_err);
		sim_stop(&w);
	}

	double replay_s = run.replay_ms / 1000.0;
	double reached = run.done ? (double)n : (double)(n - run.left);
	double elapsed = run.done ? replay_s : (double)o->timeout_s;
	double rate = reached / (elapsed > 0 ? elapsed : 1);
	/* Unfinished: what the whole would take at the rate reached (a lower bound). */
	double projected = run.done ? replay_s : (rate > 0 ? n / rate : 0);
	if (!o->host_only) {
		printf("  kioskpayd found %lld records to replay; quick_check of the file alone %.1f ms\n",
		       (long long)run.replayed, qc_ms);
		if (run.ready_ms < 0)
			printf("  ready to sell (exec -> POST /orders 2.01): NOT within %d s (first answer %.1f ms; "
			       "-1: none)", o->timeout_s, run.first_answer_ms);
		else
			printf("  ready to sell (exec -> POST /orders 2.01): %7.1f ms (first answer %.1f ms, host link "
			       "up %.1f ms)", run.ready_ms, run.first_answer_ms, run.host_up_ms);
		if (o->baselines && run.ready_ms >= 0)
			printf(" | empty journal %.1f ms | ratio %.2f", base.ready_ms, run.ready_ms / base.ready_ms);
		printf("  (target < 200 ms)\n");
		if (run.done)
			printf("  replay (exec -> nothing in flight):       %7.2f s = %.0f records/s", replay_s, rate);
		else
			printf("  replay NOT finished in %d s: %.0f of %d records done = %.0f records/s "
			       "(whole >= %.0f s)", o->timeout_s, reached, n, rate, projected);
		printf("  (target < 2 s for 10k)\n");
		printf("  SIGTERM -> exit: %.0f ms\n", run.stop_ms);
	}
	if (o->baselines && n > 0)
		printf("  host limit: %d cancel_payment pipelined through kp_hostlink to the same simulator: %.2f s "
		       "= %.0f/s%s%s\n", n, host_s, n / host_s, host_err ? " (with errors)" : "",
		       o->host_only ? "" : "");
	if (o->baselines && n > 0 && !o->host_only)
		printf("  ratio replay / host limit = %.1f\n", projected / host_s);

	if (o->samples) {
		FILE *f = fopen(o->samples, "w");
		if (!f)
			fail("cannot write the samples");
		fprintf(f, "# ms_since_exec in_flight (count %d)\n", n);
		for (int i = 0; i < run.nsamples; i++)
			fprintf(f, "%.1f %lld\n", run.sample_ms[i], (long long)run.sample_left[i]);
		fclose(f);
	}
	if (o->json) {
		FILE *f = fopen(o->json, "w");
		if (!f)
			fail("cannot write the JSON file");
		fprintf(f, "{\"bench\":\"replay\",\"count\":%d,\"paid_pct\":%d,\"unknown_pct\":%d,\"timeout_s\":%d,"
			   "\"fill_journal_s\":%.3f,\"fill_ledger_s\":%.3f,\"journal_bytes\":%lld,\"replayed\":%lld,"
			   "\"quick_check_ms\":%.1f,\"first_answer_ms\":%.1f,\"ready_ms\":%.1f,\"host_up_ms\":%.1f,"
			   "\"ready_empty_ms\":%.1f,\"done\":%s,\"replay_s\":%.3f,\"reached\":%.0f,"
			   "\"records_per_s\":%.1f,\"projected_s\":%.3f,\"stop_ms\":%.1f,\"host_limit_s\":%.3f,"
			   "\"host_limit_errors\":%d}\n",
			n, o->paid_pct, o->unknown_pct, o->timeout_s, fill_j, fill_l, (long long)jbytes,
			(long long)run.replayed, qc_ms, run.first_answer_ms, run.ready_ms, run.host_up_ms, base.ready_ms,
			run.done ? "true" : "false", run.done ? replay_s : 0.0, reached, rate, projected, run.stop_ms,
			host_s, host_err);
		fclose(f);
	}
	if (!getenv("KP_BENCH_KEEP")) {
		kp_rmtree(w.sim_dir);
		kp_rmtree(w.dir);
	} else {
		printf("  kept %s and %s\n", w.dir, w.sim_dir);
	}
	return 0;
}
