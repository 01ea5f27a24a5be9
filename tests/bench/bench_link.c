/* bench_link.c — what the host link costs: TLS handshakes per 1000 payments
 * when nothing happens, when the host cuts the connection and when it restarts
 * (new ticket keys: a full handshake), and the round trip of a request over
 * loopback against a plain TCP echo of the same sizes measured in the same run.
 * Drives kp_hostlink against a real kp-hostsim process. Prints figures;
 * asserts nothing (exit 1 only if the run itself breaks). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
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
#include "hostproto.h"
#include "simtest.h"
#include "kp_rmtree.h"

#ifndef KP_BIN_HOSTSIM
#define KP_BIN_HOSTSIM "kp-hostsim"
#endif
#ifndef KP_BIN_PKI
#define KP_BIN_PKI "kp-pki"
#endif

#define PATH_CAP 512
#define WAIT_MS 20000 /* longest wait for one step before the run is declared broken */

enum cut { CUT_NONE, CUT_KICK, CUT_RESTART };
static const char *const cut_names[] = {"none", "kick", "restart"};

struct bench {
	const char *sim_exe;
	char dir[PATH_CAP];        /* temp dir: pki, logs */
	char ledger_dir[PATH_CAP]; /* where the simulator's ledgers go */
	char pki[PATH_CAP];
	char ledger[PATH_CAP];
	char sim_log[PATH_CAP];
	int port;
	st_sim sim;
	kp_env env;
	kp_hostlink *link;
	/* the request waited for */
	bool replied;
	kp_err reply_err;
	kp_host_msg reply;
	/* confirms (acked as they come) */
	char confirmed[KP_PROTO_ID_SIZE];
	uint64_t confirms;
};

struct scenario {
	enum cut cut;
	int payments, cuts;
	double seconds;
	double reconnect_ms_sum; /* from the cut until the link is up again */
	int reconnects;
	int retries;              /* requests that met a cut and were sent again */
	kp_hostlink_stats st;
};

static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void fail(const char *what)
{
	fprintf(stderr, "kp-bench-link: %s\n", what);
	exit(1);
}

/* dst = a + b; a path that does not fit ends the run. */
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
		fprintf(stderr, "hostlink: %s\n", msg);
}

static void on_reply(void *arg, kp_err err, const kp_host_msg *reply)
{
	struct bench *b = arg;
	b->replied = true;
	b->reply_err = err;
	if (err == KP_OK && reply)
		b->reply = *reply;
}

static void on_confirm(void *arg, const kp_host_msg *c)
{
	struct bench *b = arg;
	b->confirms++;
	snprintf(b->confirmed, sizeof(b->confirmed), "%s", c->attempt_id);
	kp_err err = kp_hostlink_ack(b->link, c->seq);
	(void)err; /* dropped if down: the host redelivers */
}

typedef bool (*pred_fn)(const struct bench *b, const void *arg);

/* Drive the link as the daemon's loop does until pred holds or ms pass. */
static bool run_until(struct bench *b, pred_fn pred, const void *arg, int64_t ms)
{
	int64_t until = mono_us() + ms * 1000;
	for (;;) {
		kp_hostlink_tick(b->link);
		if (pred(b, arg))
			return true;
		int64_t now = mono_us();
		if (now >= until)
			return false;
		struct pollfd pfd;
		kp_hostlink_pollfd(b->link, &pfd);
		int64_t wait = (until - now) / 1000, dl = kp_hostlink_deadline(b->link);
		int64_t now_ms = kp_now_mono(&b->env);
		if (dl > 0 && dl - now_ms < wait)
			wait = dl > now_ms ? dl - now_ms : 0;
		if (wait > 20)
			wait = 20;
		if (poll(&pfd, pfd.fd >= 0 ? 1 : 0, (int)wait) > 0 && pfd.revents)
			kp_hostlink_process(b->link, pfd.revents);
	}
}

static bool is_up(const struct bench *b, const void *arg)
{
	(void)arg;
	return kp_hostlink_up(b->link);
}

static bool has_reply(const struct bench *b, const void *arg)
{
	(void)arg;
	return b->replied;
}

static bool confirmed(const struct bench *b, const void *arg)
{
	return strcmp(b->confirmed, (const char *)arg) == 0;
}

/* ---------- the simulator ---------- */

static void sim_start(struct bench *b)
{
	char listen[32], ca[PATH_CAP + 16], crt[PATH_CAP + 16], key[PATH_CAP + 16];
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", b->port);
	snprintf(ca, sizeof(ca), "%s/ca.crt", b->pki);
	snprintf(crt, sizeof(crt), "%s/host.crt", b->pki);
	snprintf(key, sizeof(key), "%s/host.key", b->pki);
	const char *args[] = {"--listen", listen, "--control", "127.0.0.1:0", "--ledger", b->ledger,
			      "--ca", ca, "--cert", crt, "--key", key, NULL};
	/* Its log lines go to a file, not between our figures. */
	int saved = dup(2), fd = open(b->sim_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (saved < 0 || fd < 0)
		fail("cannot open the simulator's log");
	dup2(fd, 2);
	kp_err err = st_sim_start(&b->sim, b->sim_exe, args);
	dup2(saved, 2);
	close(saved);
	close(fd);
	if (err != KP_OK)
		fail("kp-hostsim did not start (see its log in the temp dir, KP_BENCH_KEEP=1)");
}

static void sim_stop(struct bench *b)
{
	if (st_sim_stop(&b->sim) != 0)
		fprintf(stderr, "kp-bench-link: kp-hostsim did not stop cleanly\n");
}

static void link_new(struct bench *b)
{
	char addr[32], ca[PATH_CAP + 16], crt[PATH_CAP + 16], key[PATH_CAP + 16];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", b->port);
	snprintf(ca, sizeof(ca), "%s/ca.crt", b->pki);
	snprintf(crt, sizeof(crt), "%s/device.crt", b->pki);
	snprintf(key, sizeof(key), "%s/device.key", b->pki);
	kp_hostlink_config cfg = {
		.address = addr, .server_name = "localhost", .ca_file = ca, .cert_file = crt,
		.key_file = key, .device_id = "kiosk-dev-1", .fw_version = "bench",
		.request_timeout_ms = 10000, .ping_idle_ms = 60000,
		.backoff_min_ms = 50, .backoff_max_ms = 400, .connect_timeout_ms = 5000,
	};
	if (kp_hostlink_new(&b->link, &cfg, &b->env, on_confirm, NULL, b) != KP_OK)
		fail("kp_hostlink_new");
	if (!run_until(b, is_up, NULL, WAIT_MS))
		fail("the link did not come up");
}

/* One request, waited for. KP_OK with b->reply, or the link's error. */
static kp_err call(struct bench *b, const kp_host_msg *m)
{
	b->replied = false;
	kp_err err = kp_hostlink_request(b->link, m, on_reply, b);
	if (err != KP_OK)
		return err;
	if (!run_until(b, has_reply, NULL, WAIT_MS))
		fail("no answer to a request");
	return b->reply_err;
}

/* ---------- (a) handshakes per 1000 payments ---------- */

static void make_create(const struct bench *b, kp_host_msg *m, const char *attempt, const char *order)
{
	memset(m, 0, sizeof(*m));
	m->op = KP_OP_CREATE_PAYMENT;
	snprintf(m->attempt_id, sizeof(m->attempt_id), "%s", attempt);
	snprintf(m->order_id, sizeof(m->order_id), "%s", order);
	snprintf(m->currency, sizeof(m->currency), "EUR");
	snprintf(m->channel, sizeof(m->channel), "card");
	m->amount = 250;
	m->has_amount = true;
	m->expires_at = kp_now_wall(&b->env) + 300000;
}

static bool ctl_ok(struct bench *b, const char *line)
{
	cJSON *r = st_ctl(&b->sim, "%s", line);
	bool ok = r && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok"));
	cJSON_Delete(r);
	return ok;
}

/* One payment as the engine makes it: create_payment, the customer pays at
 * the host, the confirm comes and is acked. A request that meets a cut is
 * sent again once the link is back (the host's idempotency makes that safe). */
static void pay_one(struct bench *b, struct scenario *sc, int i)
{
	char attempt[KP_PROTO_ID_SIZE], order[KP_PROTO_ID_SIZE], line[256];
	snprintf(attempt, sizeof(attempt), "att-%s-%d", cut_names[sc->cut], i);
	snprintf(order, sizeof(order), "ord-%s-%d", cut_names[sc->cut], i);
	kp_host_msg m;
	make_create(b, &m, attempt, order);
	for (int tries = 0;; tries++) {
		kp_err err = call(b, &m);
		if (err == KP_OK && b->reply.op == KP_OP_PAYMENT)
			break;
		if (err == KP_OK || tries > 5)
			fail("create_payment was refused");
		sc->retries++;
		if (!run_until(b, is_up, NULL, WAIT_MS))
			fail("the link did not come back");
	}
	snprintf(line, sizeof(line), "{\"cmd\":\"pay\",\"attempt_id\":\"%s\"}", attempt);
	if (!ctl_ok(b, line))
		fail("control pay failed");
	if (!run_until(b, confirmed, attempt, WAIT_MS))
		fail("no confirm for a paid attempt");
}

static bool is_down(const struct bench *b, const void *arg)
{
	(void)arg;
	return !kp_hostlink_up(b->link);
}

/* Cut the connection (kick) or restart the host, then wait for the link. */
static void cut(struct bench *b, struct scenario *sc)
{
	if (sc->cut == CUT_KICK) {
		if (!ctl_ok(b, "{\"cmd\":\"kick\"}"))
			fail("control kick failed");
	} else {
		sim_stop(b);
		sim_start(b);
	}
	int64_t t0 = mono_us();
	if (!run_until(b, is_down, NULL, WAIT_MS) || !run_until(b, is_up, NULL, WAIT_MS))
		fail("the link did not reconnect");
	sc->reconnect_ms_sum += (double)(mono_us() - t0) / 1000.0;
	sc->reconnects++;
}

static void run_scenario(struct bench *b, struct scenario *sc)
{
	char name[64];
	snprintf(name, sizeof(name), "/ledger-%s.db", cut_names[sc->cut]);
	path_cat(b->ledger, sizeof(b->ledger), b->ledger_dir, name);
	sim_start(b);
	link_new(b);
	int64_t t0 = mono_us();
	int next = 1;
	for (int i = 0; i < sc->payments; i++) {
		if (sc->cut != CUT_NONE && next <= sc->cuts &&
		    i == (int)((int64_t)sc->payments * next / (sc->cuts + 1))) {
			cut(b, sc);
			next++;
		}
		pay_one(b, sc, i);
	}
	sc->seconds = (double)(mono_us() - t0) / 1e6;
	kp_hostlink_stats_get(b->link, &sc->st);
	kp_hostlink_free(b->link);
	b->link = NULL;
	sim_stop(b);
}

/* ---------- (b) round trips ---------- */

struct rtt {
	double p50_us, p99_us, mean_us;
	size_t req_bytes, rep_bytes; /* whole frames */
};

static int cmp_i64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, c = *(const int64_t *)y;
	return (a > c) - (a < c);
}

static void summarize(int64_t *us, int n, struct rtt *out)
{
	double sum = 0;
	for (int i = 0; i < n; i++)
		sum += (double)us[i];
	qsort(us, (size_t)n, sizeof(*us), cmp_i64);
	out->p50_us = (double)us[n / 2];
	out->p99_us = (double)us[(n * 99) / 100];
	out->mean_us = sum / n;
}

static size_t frame_size(const kp_host_msg *m)
{
	static uint8_t buf[KP_FRAME_MAX + KP_FRAME_HDR];
	size_t n = 0;
	if (kp_hostproto_encode(m, buf, sizeof(buf), &n) != KP_OK)
		fail("cannot encode a message to size it");
	return n;
}

/* n sequential requests req through the link; each waits for its reply. */
static void rtt_link(struct bench *b, kp_host_msg *req, int n, int64_t *us, struct rtt *out)
{
	for (int i = 0; i < n / 10 + 10; i++) /* warm up */
		if (call(b, req) != KP_OK)
			fail("warm-up request failed");
	for (int i = 0; i < n; i++) {
		int64_t t = mono_us();
		if (call(b, req) != KP_OK)
			fail("request failed");
		us[i] = mono_us() - t;
	}
	req->id = (int64_t)n; /* a typical id for the size */
	out->req_bytes = frame_size(req);
	out->rep_bytes = frame_size(&b->reply);
	summarize(us, n, out);
}

static bool io_full(int fd, void *buf, size_t len, bool wr)
{
	uint8_t *p = buf;
	while (len > 0) {
		ssize_t r = wr ? write(fd, p, len) : read(fd, p, len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		p += r;
		len -= (size_t)r;
	}
	return true;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The baseline: a forked process that answers each frame with a frame of the
 * length its first 4 payload bytes ask for. Plain TCP, TCP_NODELAY both ways. */
/* The round trips' peer (the simulator, then the echo server) on another
 * CPU than this process, both pinned: where a forked or spawned process runs
 * decides a round trip's cost on a VM (the same CPU: a direct switch, ~5 us
 * for the echo; another: a wake-up through the hypervisor, ~60 us), and left
 * to the scheduler the two baselines ended up placed differently (a small
 * run measured the echo at 5 us against the link's 74). Returns the two
 * CPUs, or -1 for both with fewer than two CPUs (then nothing is pinned). */
static void place(pid_t peer, int *mine, int *theirs)
{
	static int cpus[2] = {-1, -1}; /* from the mask this process started with */
	cpu_set_t all, one;
	*mine = *theirs = -1;
	if (cpus[0] < 0) {
		if (sched_getaffinity(0, sizeof(all), &all) != 0 || CPU_COUNT(&all) < 2)
			return;
		for (int c = 0, n = 0; c < CPU_SETSIZE && n < 2; c++)
			if (CPU_ISSET(c, &all))
				cpus[n++] = c;
	}
	CPU_ZERO(&one);
	CPU_SET(cpus[0], &one);
	if (sched_setaffinity(0, sizeof(one), &one) != 0)
		return;
	CPU_ZERO(&one);
	CPU_SET(cpus[1], &one);
	if (sched_setaffinity(peer, sizeof(one), &one) != 0)
		return;
	*mine = cpus[0];
	*theirs = cpus[1];
}

static pid_t echo_start(int *port)
{
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 1) != 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &len) != 0)
		fail("echo server: cannot listen");
	*port = ntohs(a.sin_port);
	pid_t pid = fork();
	if (pid < 0)
		fail("fork");
	if (pid > 0) {
		close(lfd);
		return pid;
	}
	int c = accept(lfd, NULL, NULL);
	int one = 1;
	(void)setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	static uint8_t buf[KP_FRAME_MAX + KP_FRAME_HDR];
	for (;;) {
		if (!io_full(c, buf, KP_FRAME_HDR, false))
			_exit(0);
		uint32_t n = get_be32(buf);
		if (n < 4 || n > KP_FRAME_MAX || !io_full(c, buf, n, false))
			_exit(1);
		uint32_t rep = get_be32(buf);
		if (rep > KP_FRAME_MAX)
			_exit(1);
		put_be32(buf, rep);
		if (!io_full(c, buf, rep + KP_FRAME_HDR, true))
			_exit(1);
	}
}

static void rtt_echo(int fd, const struct rtt *shape, int n, int64_t *us, struct rtt *out)
{
	static uint8_t req[KP_FRAME_MAX + KP_FRAME_HDR], rep[KP_FRAME_MAX + KP_FRAME_HDR];
	size_t qlen = shape->req_bytes, plen = shape->rep_bytes;
	if (qlen < KP_FRAME_HDR + 4 || plen < KP_FRAME_HDR)
		fail("message sizes out of range");
	memset(req, '{', qlen);
	put_be32(req, (uint32_t)(qlen - KP_FRAME_HDR));
	put_be32(req + KP_FRAME_HDR, (uint32_t)(plen - KP_FRAME_HDR));
	for (int i = -(n / 10 + 10); i < n; i++) {
		int64_t t = mono_us();
		if (!io_full(fd, req, qlen, true) || !io_full(fd, rep, plen, false))
			fail("echo round trip failed");
		if (i >= 0)
			us[i] = mono_us() - t;
	}
	out->req_bytes = qlen;
	out->rep_bytes = plen;
	summarize(us, n, out);
}

/* ---------- main ---------- */

static void usage(void)
{
	fprintf(stderr,
		"usage: kp-bench-link [--payments K] [--cuts R] [--round-trips N] [--dir DIR]\n"
		"                     [--ledger-dir DIR] [--hostsim EXE] [--pki EXE] [--json FILE]\n"
		"  K payments (default 1000) three times: no cut, R host-side cuts (default 5), R host\n"
		"  restarts; then N sequential ping and query_payment round trips (default 2000)\n"
		"  against a plain TCP echo of the same sizes. Temp files under DIR (default /tmp);\n"
		"  the simulator's ledger under --ledger-dir (default /dev/shm if present, else DIR).\n");
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

static void json_rtt(FILE *f, const char *name, const struct rtt *r)
{
	fprintf(f, ",\"%s_p50_us\":%.1f,\"%s_p99_us\":%.1f,\"%s_mean_us\":%.1f,\"%s_req_bytes\":%zu,"
		   "\"%s_rep_bytes\":%zu",
		name, r->p50_us, name, r->p99_us, name, r->mean_us, name, r->req_bytes, name, r->rep_bytes);
}

int main(int argc, char **argv)
{
	int payments = 1000, cuts = 5, trips = 2000;
	const char *dir = "/tmp", *ledger_dir = NULL, *json = NULL, *pki_exe = KP_BIN_PKI;
	struct bench b;
	memset(&b, 0, sizeof(b));
	b.sim_exe = KP_BIN_HOSTSIM;
	static const struct option opts[] = {
		{"payments", required_argument, NULL, 'k'}, {"cuts", required_argument, NULL, 'r'},
		{"round-trips", required_argument, NULL, 'n'}, {"dir", required_argument, NULL, 'd'},
		{"ledger-dir", required_argument, NULL, 'l'}, {"hostsim", required_argument, NULL, 's'},
		{"pki", required_argument, NULL, 'p'}, {"json", required_argument, NULL, 'j'},
		{NULL, 0, NULL, 0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'k': payments = int_arg(optarg, 10, 1000000); break;
		case 'r': cuts = int_arg(optarg, 1, 1000); break;
		case 'n': trips = int_arg(optarg, 100, 10000000); break;
		case 'd': dir = optarg; break;
		case 'l': ledger_dir = optarg; break;
		case 's': b.sim_exe = optarg; break;
		case 'p': pki_exe = optarg; break;
		case 'j': json = optarg; break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	signal(SIGPIPE, SIG_IGN);
	path_cat(b.dir, sizeof(b.dir), dir, "/kp-bench-link-XXXXXX");
	if (!mkdtemp(b.dir))
		fail("mkdtemp");
	struct stat sb;
	if (!ledger_dir)
		ledger_dir = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : b.dir;
	path_cat(b.ledger_dir, sizeof(b.ledger_dir), ledger_dir, "/kp-bench-link-ledger-XXXXXX");
	if (!mkdtemp(b.ledger_dir))
		fail("mkdtemp (ledger dir)");
	path_cat(b.pki, sizeof(b.pki), b.dir, "/pki");
	path_cat(b.sim_log, sizeof(b.sim_log), b.dir, "/hostsim.log");
	char cmd[3 * PATH_CAP];
	snprintf(cmd, sizeof(cmd), "'%s' '%s' >/dev/null", pki_exe, b.pki);
	if (system(cmd) != 0)
		fail("kp-pki failed");
	kp_env_init_system(&b.env);
	b.env.log = quiet_log;
	b.env.log_level = KP_LOG_WARN;
	b.port = kp_free_port(false);
	if (b.port <= 0)
		fail("no free port");

	printf("kp-bench-link: kp_hostlink (mbedtls %s) against kp-hostsim over loopback\n", "2.28, TLS 1.2");
	printf("  a payment: create_payment -> the customer pays (control port) -> confirm -> ack\n");
	printf("  simulator ledger in %s\n", ledger_dir);
	struct scenario sc[3];
	for (int k = 0; k < 3; k++) {
		memset(&sc[k], 0, sizeof(sc[k]));
		sc[k].cut = (enum cut)k;
		sc[k].payments = payments;
		sc[k].cuts = k == CUT_NONE ? 0 : cuts;
		run_scenario(&b, &sc[k]);
		const struct scenario *s = &sc[k];
		printf("(a) %-7s %6d payments, %3d cuts in %6.2f s: full handshakes %llu (%.2f per 1000 payments), "
		       "resumed %llu (%.2f per 1000)",
		       cut_names[k], s->payments, s->cuts, s->seconds, (unsigned long long)s->st.full_handshakes,
		       1000.0 * (double)s->st.full_handshakes / s->payments,
		       (unsigned long long)s->st.resumed_handshakes,
		       1000.0 * (double)s->st.resumed_handshakes / s->payments);
		if (s->reconnects)
			printf(", back up %.0f ms after a cut (backoff 25-50 ms included)",
			       s->reconnect_ms_sum / s->reconnects);
		printf("\n");
	}
	printf("    target: <= 1 full handshake per 1000 payments when nothing restarts; a cut resumes\n"
	       "    (ticket), a restarted host has new ticket keys and costs one full handshake\n");

	/* (b) round trips: a fresh host with one payment to query. */
	path_cat(b.ledger, sizeof(b.ledger), b.ledger_dir, "/ledger-rtt.db");
	sim_start(&b);
	int cpu_me, cpu_sim, cpu_echo;
	place(b.sim.pid, &cpu_me, &cpu_sim);
	link_new(&b);
	kp_host_msg req;
	make_create(&b, &req, "att-rtt", "ord-rtt");
	if (call(&b, &req) != KP_OK)
		fail("create for the query");
	int64_t *us = calloc((size_t)trips, sizeof(*us));
	if (!us)
		fail("out of memory");
	struct rtt ping, query, eping, equery;
	memset(&req, 0, sizeof(req));
	req.op = KP_OP_PING;
	rtt_link(&b, &req, trips, us, &ping);
	memset(&req, 0, sizeof(req));
	req.op = KP_OP_QUERY_PAYMENT;
	snprintf(req.attempt_id, sizeof(req.attempt_id), "att-rtt");
	rtt_link(&b, &req, trips, us, &query);
	kp_hostlink_free(b.link);
	b.link = NULL;
	sim_stop(&b);
	int eport = 0;
	pid_t echo = echo_start(&eport);
	place(echo, &cpu_me, &cpu_echo);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in ea = {.sin_family = AF_INET, .sin_port = htons((uint16_t)eport),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int one = 1;
	if (fd < 0 || connect(fd, (struct sockaddr *)&ea, sizeof(ea)) != 0)
		fail("cannot reach the echo server");
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	rtt_echo(fd, &ping, trips, us, &eping);
	rtt_echo(fd, &query, trips, us, &equery);
	close(fd);
	waitpid(echo, NULL, 0);
	free(us);
	printf("(b) %d sequential round trips each, loopback", trips);
	if (cpu_sim >= 0 && cpu_echo == cpu_sim)
		printf(", this process on CPU %d, the simulator and the echo server on CPU %d", cpu_me, cpu_sim);
	else
		printf(", not pinned (one CPU)");
	printf(":\n");
	printf("    ping          (%3zu B -> %3zu B): p50 %7.1f us, p99 %7.1f us | TCP echo p50 %5.1f us, p99 %5.1f us"
	       " | ratio p50 %.1fx, p99 %.1fx\n",
	       ping.req_bytes, ping.rep_bytes, ping.p50_us, ping.p99_us, eping.p50_us, eping.p99_us,
	       ping.p50_us / eping.p50_us, ping.p99_us / eping.p99_us);
	printf("    query_payment (%3zu B -> %3zu B): p50 %7.1f us, p99 %7.1f us | TCP echo p50 %5.1f us, p99 %5.1f us"
	       " | ratio p50 %.1fx, p99 %.1fx\n",
	       query.req_bytes, query.rep_bytes, query.p50_us, query.p99_us, equery.p50_us, equery.p99_us,
	       query.p50_us / equery.p50_us, query.p99_us / equery.p99_us);
	printf("    (the link: TLS record + JSON codec + poll loop on both sides, and the simulator's\n"
	       "    SQLite read for query_payment; the echo: two plain TCP writes and reads)\n");

	if (json) {
		FILE *f = fopen(json, "w");
		if (!f)
			fail("cannot write the JSON file");
		fprintf(f, "{\"bench\":\"link\",\"payments\":%d,\"cuts\":%d,\"round_trips\":%d", payments, cuts,
			trips);
		for (int k = 0; k < 3; k++) {
			const struct scenario *s = &sc[k];
			const char *n = cut_names[k];
			fprintf(f, ",\"%s_seconds\":%.3f,\"%s_full\":%llu,\"%s_resumed\":%llu,"
				   "\"%s_full_per_1000\":%.3f,\"%s_resumed_per_1000\":%.3f,\"%s_retries\":%d,"
				   "\"%s_reconnect_ms\":%.1f",
				n, s->seconds, n, (unsigned long long)s->st.full_handshakes, n,
				(unsigned long long)s->st.resumed_handshakes, n,
				1000.0 * (double)s->st.full_handshakes / s->payments, n,
				1000.0 * (double)s->st.resumed_handshakes / s->payments, n, s->retries, n,
				s->reconnects ? s->reconnect_ms_sum / s->reconnects : 0.0);
		}
		json_rtt(f, "ping", &ping);
		json_rtt(f, "query", &query);
		json_rtt(f, "echo_ping", &eping);
		json_rtt(f, "echo_query", &equery);
		fprintf(f, ",\"ping_ratio_p50\":%.3f,\"ping_ratio_p99\":%.3f,\"query_ratio_p50\":%.3f,"
			   "\"query_ratio_p99\":%.3f}\n",
			ping.p50_us / eping.p50_us, ping.p99_us / eping.p99_us, query.p50_us / equery.p50_us,
			query.p99_us / equery.p99_us);
		fclose(f);
	}
	if (!getenv("KP_BENCH_KEEP")) {
		kp_rmtree(b.ledger_dir);
		kp_rmtree(b.dir);
	}
	return 0;
}
