/* kp_campaign.c — kp-campaign, the power-cut campaign over real processes
 * (`./run campaign N [seed]`). Each cut: kioskpayd-crash (the daemon over the
 * crash VFS) or the normal kioskpayd boots on the surviving journal, a seeded
 * workload drives it over CoAP and the host simulator's control port (orders,
 * pays, channel switches, customer pays and fails, double payments, orphans,
 * host faults, vends, cancels) until it dies at its cut point — after the Nth
 * write, at or after the Nth sync, at an armed failpoint of the journal, the
 * engine or the host link, or by a real kill -9 — then the normal kioskpayd
 * restarts on the surviving files, is driven to quiescence, stops, and the
 * journal and the simulator's ledger (which lives on across the run) are
 * checked: every answer the API gave is backed by a commit, and kp-check
 * --quiet-expected finds every invariant of design.md holding.
 * Runs of --run-len cuts share one journal and one ledger; --jobs runs go in
 * parallel. Run r of seed S is run 0 of seed S+r: replay with
 * `kp-campaign --cuts i+1 --seed S+r --run-len R`. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <coap3/coap.h>

#define BODY_MAX 16384
#define ORDERS_MAX 4096
#define TOLD_MAX 8192
#define ID_SIZE 65

enum kind { K_AFTER_WRITE, K_BEFORE_SYNC, K_AFTER_SYNC, K_FAILPOINT, K_KILL9, K__COUNT };
static const char *const kind_names[] = {"after_write", "before_sync", "after_sync", "failpoint", "kill -9"};
static const char *const mode_names[] = {"drop", "tear", "garbage"};
/* Failpoints that can crash the daemon: journal, engine, host link (docs/failpoints.md). */
static const unsigned fp_points[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 60, 40, 41, 42, 43, 44, 45, 46, 47, 48};

struct opts {
	unsigned cuts;
	uint64_t seed;
	unsigned run_len;
	unsigned jobs;
	unsigned kill_pct;   /* share of kill -9 cuts */
	bool verbose;
	bool keep;
	char dir[128];
};

/* Totals a worker sends back. */
struct totals {
	unsigned cuts, violations, died_at_point, not_reached, by_mode[3], by_kind[K__COUNT];
	unsigned told_checked;
	int64_t ms_cut, ms_quiet, ms_restart;
};

struct told {
	char kind;          /* o a */
	char id[ID_SIZE];
	char state[24];
};

struct run {
	const struct opts *o;
	unsigned index;
	uint64_t seed;      /* o->seed + index */
	char dir[192];
	char pki[224];
	char journal[224];
	char ledger[224];
	char config[224];
	char log[224];
	char simlog[224];
	char portfile[224];
	pid_t sim;
	int host_port, control_port, api_port;
	int ctl_fd;
	pid_t daemon;
	int daemon_status;  /* once reaped */
	bool daemon_reaped;
	uint64_t rng;
	struct {
		char id[ID_SIZE];
		char key[ID_SIZE];
		int64_t amount;
	} orders[ORDERS_MAX];
	int norders;
	struct told told[TOLD_MAX];
	int ntold;
	struct totals t;
};

/* ---------- small things ---------- */

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void msleep(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static uint64_t rnd(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static unsigned pct(struct run *r)
{
	return (unsigned)(rnd(&r->rng) % 100);
}

static struct run *cur_run;
static unsigned cur_cut;
static char cur_plan[320];

static void violation(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(struct run *r, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	r->t.violations++;
	printf("VIOLATION seed %llu cut %u (%s): %s\n  replay: kp-campaign --cuts %u --seed %llu --run-len %u --jobs 1 --keep\n",
	       (unsigned long long)r->seed, cur_cut, cur_plan, line, cur_cut + 1,
	       (unsigned long long)r->seed, r->o->run_len);
	fflush(stdout);
}

static int free_udp_port(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int port = -1;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* fork + exec argv with env additions (NAME=VALUE, NULL-terminated), output to log. */
static pid_t spawn(char *const argv[], char *const extra_env[], const char *log)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	int fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
	}
	int nul = open("/dev/null", O_RDONLY);
	if (nul >= 0)
		dup2(nul, 0);
	unsetenv("KP_CRASHVFS");
	unsetenv("KP_FAILPOINTS");
	for (size_t i = 0; extra_env && extra_env[i]; i++)
		putenv(extra_env[i]);
	execv(argv[0], argv);
	fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* Reap within timeout_ms; true if it ended (status in *st). */
static bool reap(pid_t pid, int timeout_ms, int *st)
{
	int64_t end = mono_ms() + timeout_ms;
	for (;;) {
		pid_t w = waitpid(pid, st, WNOHANG);
		if (w == pid)
			return true;
		if (w < 0)
			return true;
		if (mono_ms() >= end)
			return false;
		msleep(5);
	}
}

static bool daemon_alive(struct run *r)
{
	if (r->daemon <= 0 || r->daemon_reaped)
		return false;
	int st = 0;
	if (waitpid(r->daemon, &st, WNOHANG) == r->daemon) {
		r->daemon_reaped = true;
		r->daemon_status = st;
		return false;
	}
	return true;
}

static void daemon_kill(struct run *r)
{
	if (daemon_alive(r)) {
		kill(r->daemon, SIGKILL);
		int st = 0;
		waitpid(r->daemon, &st, 0);
		r->daemon_reaped = true;
		r->daemon_status = st;
	}
}

/* ---------- CoAP client (libcoap) ---------- */

struct coapc {
	coap_context_t *ctx;
	coap_session_t *session;
	bool done;
	int code;
	char body[BODY_MAX];
	uint8_t token[8];
	size_t token_len;
};
static struct coapc cc;

static coap_response_t on_response(coap_session_t *session, const coap_pdu_t *sent,
				   const coap_pdu_t *received, const coap_mid_t mid)
{
	(void)session;
	(void)sent;
	(void)mid;
	coap_bin_const_t tok = coap_pdu_get_token(received);
	if (tok.length != cc.token_len || memcmp(tok.s, cc.token, tok.length) != 0)
		return COAP_RESPONSE_OK;
	coap_pdu_code_t code = coap_pdu_get_code(received);
	cc.code = (int)(code >> 5) * 100 + (int)(code & 0x1f);
	size_t len = 0, offset = 0, total = 0;
	const uint8_t *data = NULL;
	if (coap_get_data_large(received, &len, &data, &offset, &total) && offset + len < BODY_MAX) {
		memcpy(cc.body + offset, data, len);
		cc.body[offset + len] = '\0';
		if (offset + len < total)
			return COAP_RESPONSE_OK;
	} else {
		cc.body[0] = '\0';
	}
	cc.done = true;
	return COAP_RESPONSE_OK;
}

static void coapc_close(void)
{
	if (cc.session)
		coap_session_release(cc.session);
	cc.session = NULL;
	if (cc.ctx)
		coap_free_context(cc.ctx);
	cc.ctx = NULL;
}

static int coapc_open(int port)
{
	coapc_close();
	cc.ctx = coap_new_context(NULL);
	if (!cc.ctx)
		return -1;
	coap_context_set_block_mode(cc.ctx, COAP_BLOCK_USE_LIBCOAP | COAP_BLOCK_SINGLE_BODY);
	coap_register_response_handler(cc.ctx, on_response);
	coap_address_t dst;
	coap_address_init(&dst);
	dst.addr.sin.sin_family = AF_INET;
	dst.addr.sin.sin_port = htons((uint16_t)port);
	dst.addr.sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	dst.size = sizeof(dst.addr.sin);
	cc.session = coap_new_client_session(cc.ctx, NULL, &dst, COAP_PROTO_UDP);
	return cc.session ? 0 : -1;
}

/* One request; the code (201, 404, ...) or -1 (no answer in time, or the
 * daemon died meanwhile). */
static int coapc_req(struct run *r, coap_pdu_code_t method, const char *path, const char *json,
		     int timeout_ms)
{
	if (!cc.session)
		return -1;
	coap_pdu_t *pdu = coap_pdu_init(COAP_MESSAGE_CON, method, coap_new_message_id(cc.session),
					coap_session_max_pdu_size(cc.session));
	if (!pdu)
		return -1;
	coap_session_new_token(cc.session, &cc.token_len, cc.token);
	coap_add_token(pdu, cc.token_len, cc.token);
	char seg[256];
	snprintf(seg, sizeof(seg), "%s", path);
	char *q = strchr(seg, '?');
	if (q)
		*q++ = '\0';
	for (char *save = NULL, *p = strtok_r(seg, "/", &save); p; p = strtok_r(NULL, "/", &save))
		coap_add_option(pdu, COAP_OPTION_URI_PATH, strlen(p), (const uint8_t *)p);
	if (json) {
		uint8_t cf[4];
		coap_add_option(pdu, COAP_OPTION_CONTENT_FORMAT,
				coap_encode_var_safe(cf, sizeof(cf), COAP_MEDIATYPE_APPLICATION_JSON), cf);
		coap_add_data(pdu, strlen(json), (const uint8_t *)json);
	}
	cc.done = false;
	cc.code = -1;
	if (coap_send(cc.session, pdu) == COAP_INVALID_MID)
		return -1;
	int64_t end = mono_ms() + timeout_ms;
	while (!cc.done && mono_ms() < end) {
		coap_io_process(cc.ctx, 20);
		if (!cc.done && !daemon_alive(r))
			return -1;
	}
	return cc.done ? cc.code : -1;
}

static bool json_str(const char *body, const char *key, char *out, size_t cap)
{
	cJSON *o = cJSON_Parse(body);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	bool ok = cJSON_IsString(v);
	snprintf(out, cap, "%s", ok ? v->valuestring : "");
	cJSON_Delete(o);
	return ok;
}

/* ---------- the simulator's control port ---------- */

static int ctl_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* One command, its reply line in out (parsed by the caller). 0 or -1. */
static int sim(struct run *r, const char *line, char *out, size_t cap)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		if (r->ctl_fd < 0)
			r->ctl_fd = ctl_connect(r->control_port);
		if (r->ctl_fd < 0)
			return -1;
		char buf[1024];
		int len = snprintf(buf, sizeof(buf), "%s\n", line);
		if (len > 0 && (size_t)len < sizeof(buf) && write(r->ctl_fd, buf, (size_t)len) == len) {
			size_t n = 0;
			bool nl = false;
			while (!nl) {
				struct pollfd p = {.fd = r->ctl_fd, .events = POLLIN};
				if (poll(&p, 1, 5000) <= 0)
					break;
				char tmp[4096];
				ssize_t got = read(r->ctl_fd, tmp, sizeof(tmp));
				if (got <= 0)
					break;
				for (ssize_t i = 0; i < got; i++) {
					if (tmp[i] == '\n') {
						nl = true;
						break;
					}
					if (out && n + 1 < cap)
						out[n++] = tmp[i];
				}
			}
			if (out && cap)
				out[n < cap ? n : cap - 1] = '\0';
			if (nl)
				return 0;
		}
		close(r->ctl_fd);
		r->ctl_fd = -1;
	}
	return -1;
}

/* Pending attempts at the host: attempt ids and order ids (up to cap). */
static int sim_pending(struct run *r, char (*att)[ID_SIZE], char (*ord)[ID_SIZE], int cap)
{
	static char out[1 << 17];
	if (sim(r, "{\"cmd\":\"list\"}", out, sizeof(out)) != 0)
		return 0;
	cJSON *o = cJSON_Parse(out);
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "pending");
	int n = 0;
	const cJSON *it;
	cJSON_ArrayForEach(it, arr)
	{
		const cJSON *a = cJSON_GetObjectItemCaseSensitive(it, "attempt_id");
		const cJSON *b = cJSON_GetObjectItemCaseSensitive(it, "order_id");
		if (n < cap && cJSON_IsString(a) && cJSON_IsString(b)) {
			snprintf(att[n], ID_SIZE, "%s", a->valuestring);
			snprintf(ord[n], ID_SIZE, "%s", b->valuestring);
			n++;
		}
	}
	cJSON_Delete(o);
	return n;
}

/* ---------- SQL views (read-only) ---------- */

static int64_t sql_int(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	int64_t v = -1;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
		sqlite3_busy_timeout(db, 2000);
		sqlite3_stmt *st = NULL;
		if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
			v = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	return v;
}

static int sql_ids(const char *path, const char *sql, char (*out)[ID_SIZE], int cap)
{
	sqlite3 *db = NULL;
	int n = 0;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
		sqlite3_busy_timeout(db, 2000);
		sqlite3_stmt *st = NULL;
		if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK)
			while (n < cap && sqlite3_step(st) == SQLITE_ROW)
				snprintf(out[n++], ID_SIZE, "%s", (const char *)sqlite3_column_text(st, 0));
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	return n;
}

/* ---------- processes of a run ---------- */

static int start_sim(struct run *r)
{
	char seed[32];
	snprintf(seed, sizeof(seed), "%llu", (unsigned long long)(r->seed & 0x7fffffffffffULL));
	char ca[256], cert[256], key[256];
	snprintf(ca, sizeof(ca), "%s/ca.crt", r->pki);
	snprintf(cert, sizeof(cert), "%s/host.crt", r->pki);
	snprintf(key, sizeof(key), "%s/host.key", r->pki);
	unlink(r->portfile);
	char *argv[] = {KP_BIN_HOSTSIM, "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0",
			"--ledger", r->ledger, "--ca", ca, "--cert", cert, "--key", key,
			"--seed", seed, "--confirm-interval-ms", "300", "--port-file", r->portfile, NULL};
	r->sim = spawn(argv, NULL, r->simlog);
	for (int i = 0; i < 400; i++) {
		FILE *f = fopen(r->portfile, "r");
		if (f) {
			int a = 0, b = 0;
			int n = fscanf(f, "%d %d", &a, &b);
			fclose(f);
			if (n == 2) {
				r->host_port = a;
				r->control_port = b;
				return 0;
			}
		}
		msleep(10);
	}
	return -1;
}

static void stop_sim(struct run *r)
{
	if (r->ctl_fd >= 0)
		close(r->ctl_fd);
	r->ctl_fd = -1;
	if (r->sim > 0) {
		kill(r->sim, SIGTERM);
		int st;
		if (!reap(r->sim, 5000, &st)) {
			kill(r->sim, SIGKILL);
			waitpid(r->sim, &st, 0);
		}
	}
	r->sim = 0;
}

static int write_config(struct run *r)
{
	FILE *f = fopen(r->config, "w");
	if (!f)
		return -1;
	fprintf(f,
		"[journal]\npath = %s\n\n[api]\nlisten = 127.0.0.1:%d\n\n"
		"[host]\naddress = 127.0.0.1:%d\nserver_name = localhost\nca = %s/ca.crt\n"
		"cert = %s/device.crt\nkey = %s/device.key\nrequest_timeout = 1s\n"
		"reconnect_min = 50ms\nreconnect_max = 300ms\n\n"
		"[device]\nid = kiosk-dev-1\n\n"
		"[payment]\ncurrency = EUR\nmax_amount = 100000\norder_ttl = 30s\npay_margin = 2s\n"
		"query_every = 300ms\npay_window = 1500ms\ngive_up_after = 1h\n"
		"query_backoff_min = 300ms\nquery_backoff_max = 1s\nrefund_retry = 300ms\n"
		"refund_retry_max = 1s\npower_cut_policy = refund\n\n[log]\nlevel = info\n",
		r->journal, r->api_port, r->host_port, r->pki, r->pki, r->pki);
	return fclose(f) == 0 ? 0 : -1;
}

static bool health_up(struct run *r)
{
	int code = coapc_req(r, COAP_REQUEST_CODE_GET, "health", NULL, 100);
	return code == 205 && strstr(cc.body, "\"host\":\"up\"") != NULL;
}

/* Did the last start fail to bind its API port (taken by someone else since
 * free_udp_port)? Looks for the API's own line at the end of the log. */
static bool port_was_taken(struct run *r)
{
	FILE *f = fopen(r->log, "r");
	if (!f)
		return false;
	char needle[64], line[512];
	snprintf(needle, sizeof(needle), "cannot bind UDP 127.0.0.1:%d", r->api_port);
	bool taken = false;
	if (fseek(f, -4096, SEEK_END) != 0)
		rewind(f);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, needle))
			taken = true;
	fclose(f);
	return taken;
}

/* Start a daemon (crash build if vfs_spec). Returns after /health says the
 * host is up (0), when it died (1), or on timeout (-1). */
static int start_daemon(struct run *r, const char *vfs_spec, const char *fp_spec, int64_t kill_at)
{
	static char env_vfs[256], env_fp[128];
	char *env[3] = {NULL, NULL, NULL};
	int ne = 0;
	if (vfs_spec) {
		snprintf(env_vfs, sizeof(env_vfs), "KP_CRASHVFS=%s", vfs_spec);
		env[ne++] = env_vfs;
	}
	if (fp_spec) {
		snprintf(env_fp, sizeof(env_fp), "KP_FAILPOINTS=%s", fp_spec);
		env[ne++] = env_fp;
	}
	for (int tries = 0; tries < 3; tries++) {
		r->api_port = free_udp_port();
		if (write_config(r) != 0)
			return -1;
		char *argv[] = {vfs_spec ? KP_BIN_KIOSKPAYD_CRASH : KP_BIN_KIOSKPAYD, "-c", r->config, NULL};
		FILE *lf = fopen(r->log, "a");
		if (lf) {
			fprintf(lf, "==== cut %u: %s%s%s%s%s\n", cur_cut, vfs_spec ? "kioskpayd-crash " : "kioskpayd",
				vfs_spec ? vfs_spec : "", fp_spec ? " KP_FAILPOINTS=" : "", fp_spec ? fp_spec : "",
				kill_at ? " (kill -9 planned)" : "");
			fclose(lf);
		}
		r->daemon = spawn(argv, env, r->log);
		r->daemon_reaped = false;
		if (coapc_open(r->api_port) != 0)
			return -1;
		int64_t end = mono_ms() + 10000;
		while (mono_ms() < end) {
			if (kill_at && mono_ms() >= kill_at) {
				daemon_kill(r);
				return 1;
			}
			if (!daemon_alive(r))
				break;
			if (health_up(r))
				return 0;
			msleep(10);
		}
		if (daemon_alive(r))
			return -1;
		/* Died: a crash point in boot, or the API port was taken meanwhile. */
		if (WIFEXITED(r->daemon_status) && WEXITSTATUS(r->daemon_status) == 1 && port_was_taken(r))
			continue;
		return 1;
	}
	return 1;
}

static int stop_daemon(struct run *r)
{
	if (!daemon_alive(r))
		return r->daemon_reaped ? r->daemon_status : -1;
	kill(r->daemon, SIGTERM);
	int st = 0;
	if (!reap(r->daemon, 10000, &st)) {
		kill(r->daemon, SIGKILL);
		waitpid(r->daemon, &st, 0);
	}
	r->daemon_reaped = true;
	r->daemon_status = st;
	return st;
}

/* ---------- the workload ---------- */

static void tell(struct run *r, char kind, const char *id, const char *state)
{
	if (r->ntold >= TOLD_MAX || !id[0] || !state[0])
		return;
	struct told *t = &r->told[r->ntold++];
	t->kind = kind;
	snprintf(t->id, sizeof(t->id), "%s", id);
	snprintf(t->state, sizeof(t->state), "%s", state);
}

static int pick_order(struct run *r)
{
	if (r->norders == 0)
		return -1;
	int recent = r->norders < 8 ? r->norders : 8;
	return r->norders - 1 - (int)(rnd(&r->rng) % (uint64_t)recent);
}

static void step_order(struct run *r)
{
	bool retry = r->norders > 0 && pct(r) < 12;
	int i = retry ? pick_order(r) : r->norders;
	if (!retry && r->norders >= ORDERS_MAX)
		return;
	if (!retry) {
		snprintf(r->orders[i].key, ID_SIZE, "c%llu-%016llx", (unsigned long long)r->seed,
			 (unsigned long long)rnd(&r->rng));
		r->orders[i].amount = 1 + (int64_t)(rnd(&r->rng) % 5000);
	}
	char body[256];
	snprintf(body, sizeof(body), "{\"dedup_key\":\"%s\",\"amount\":%lld,\"currency\":\"EUR\"}",
		 r->orders[i].key, (long long)r->orders[i].amount);
	int code = coapc_req(r, COAP_REQUEST_CODE_POST, "orders", body, 2000);
	char id[ID_SIZE];
	if (code == 201 && json_str(cc.body, "order_id", id, sizeof(id))) {
		tell(r, 'o', id, "pending");
		if (!retry) {
			snprintf(r->orders[i].id, ID_SIZE, "%s", id);
			r->norders++;
		} else if (strcmp(id, r->orders[i].id) != 0 && r->orders[i].id[0]) {
			violation(r, "dedup_key %s gave order %s, earlier %s", r->orders[i].key, id, r->orders[i].id);
		}
	}
}

static void step_pay(struct run *r)
{
	int i = pick_order(r);
	if (i < 0 || !r->orders[i].id[0])
		return;
	char path[128], body[64];
	snprintf(path, sizeof(path), "orders/%s/pay", r->orders[i].id);
	snprintf(body, sizeof(body), "{\"channel\":\"%s\"}", pct(r) < 50 ? "card" : "qr");
	int code = coapc_req(r, COAP_REQUEST_CODE_POST, path, body, 3000);
	char id[ID_SIZE], st[24];
	if (code == 201 && json_str(cc.body, "attempt_id", id, sizeof(id)) &&
	    json_str(cc.body, "status", st, sizeof(st)))
		tell(r, 'a', id, st);
}

static void step_customer(struct run *r)
{
	char att[64][ID_SIZE], ord[64][ID_SIZE];
	int n = sim_pending(r, att, ord, 64);
	if (n == 0)
		return;
	int k = (int)(rnd(&r->rng) % (uint64_t)n);
	unsigned what = pct(r);
	char line[256];
	if (what < 60)
		snprintf(line, sizeof(line), "{\"cmd\":\"pay\",\"attempt_id\":\"%s\"}", att[k]);
	else if (what < 75)
		snprintf(line, sizeof(line), "{\"cmd\":\"fail\",\"attempt_id\":\"%s\"}", att[k]);
	else if (what < 92)
		snprintf(line, sizeof(line), "{\"cmd\":\"pay_order_twice\",\"order_id\":\"%s\"}", ord[k]);
	else
		snprintf(line, sizeof(line), "{\"cmd\":\"orphan\",\"order_id\":\"%s\",\"amount\":%llu}", ord[k],
			 (unsigned long long)(1 + rnd(&r->rng) % 5000));
	(void)sim(r, line, NULL, 0);
}

static void step_vend_or_cancel(struct run *r, bool vend)
{
	int i = pick_order(r);
	if (i < 0 || !r->orders[i].id[0])
		return;
	char path[128];
	snprintf(path, sizeof(path), "orders/%s/%s", r->orders[i].id, vend ? "vend" : "cancel");
	const char *body = !vend ? NULL : pct(r) < 75 ? "{\"result\":\"success\"}" : "{\"result\":\"failure\"}";
	int code = coapc_req(r, COAP_REQUEST_CODE_POST, path, body, 2000);
	char st[24];
	if (code == 204 && json_str(cc.body, "status", st, sizeof(st)))
		tell(r, 'o', r->orders[i].id, st);
}

static void step_fault(struct run *r)
{
	static const char *const closes[] = {"close_before_handling", "close_after_handling",
					     "close_before_reply", "close_after_reply"};
	static const char *const ops[] = {"create_payment", "query_payment", "cancel_payment", "refund", "ack"};
	char line[256];
	unsigned what = pct(r);
	if (what < 50)
		snprintf(line, sizeof(line), "{\"cmd\":\"fault\",\"fault\":\"%s\",\"op\":\"%s\"}",
			 closes[rnd(&r->rng) % 4], ops[rnd(&r->rng) % 5]);
	else if (what < 65)
		snprintf(line, sizeof(line), "{\"cmd\":\"fault\",\"fault\":\"drop_confirms\",\"count\":2}");
	else if (what < 80)
		snprintf(line, sizeof(line), "{\"cmd\":\"fault\",\"fault\":\"duplicate_confirms\",\"count\":2}");
	else if (what < 92)
		snprintf(line, sizeof(line), "{\"cmd\":\"fault\",\"fault\":\"refund_late\",\"ms\":400,\"count\":1}");
	else
		snprintf(line, sizeof(line), "{\"cmd\":\"kick\"}");
	(void)sim(r, line, NULL, 0);
}

/* Drive the daemon until it dies or the steps or the time run out. */
static void workload(struct run *r, unsigned steps, int64_t until, int64_t kill_at)
{
	for (unsigned s = 0; s < steps && mono_ms() < until; s++) {
		if (kill_at && mono_ms() >= kill_at) {
			daemon_kill(r);
			return;
		}
		if (!daemon_alive(r))
			return;
		unsigned p = pct(r);
		if (p < 22)
			step_order(r);
		else if (p < 45)
			step_pay(r);
		else if (p < 65)
			step_customer(r);
		else if (p < 74)
			step_vend_or_cancel(r, true);
		else if (p < 78)
			step_vend_or_cancel(r, false);
		else if (p < 82)
			step_fault(r);
		else if (p < 88 && r->norders) {
			char path[128];
			snprintf(path, sizeof(path), "orders/%s", r->orders[pick_order(r)].id);
			(void)coapc_req(r, COAP_REQUEST_CODE_GET, path, NULL, 1000);
		} else {
			msleep(5 + (int)(rnd(&r->rng) % 30)); /* confirms, replies and timers meanwhile */
		}
	}
}

/* ---------- after the cut ---------- */

static bool quiet(struct run *r, char *why, size_t cap)
{
	int64_t live = sql_int(r->journal, "SELECT count(*) FROM attempts WHERE state IN "
					   "('created','paying','canceling','refunding')");
	int64_t open = sql_int(r->journal, "SELECT count(*) FROM refunds WHERE state IN ('pending','sent')");
	int64_t orders = sql_int(r->journal, "SELECT count(*) FROM orders WHERE state IN ('pending','paid')");
	int64_t hp = sql_int(r->ledger, "SELECT count(*) FROM payments WHERE status='pending'");
	int64_t hr = sql_int(r->ledger, "SELECT count(*) FROM refunds WHERE status='pending'");
	int64_t hc = sql_int(r->ledger, "SELECT count(*) FROM confirms WHERE acked=0");
	snprintf(why, cap,
		 "journal: %lld live attempts, %lld open refunds, %lld pending/paid orders; host: %lld "
		 "pending payments, %lld pending refunds, %lld unacked confirms",
		 (long long)live, (long long)open, (long long)orders, (long long)hp, (long long)hr,
		 (long long)hc);
	return live == 0 && open == 0 && orders == 0 && hp == 0 && hr == 0 && hc == 0;
}

/* Play customer and machine until nothing is in flight anywhere. */
static bool quiesce(struct run *r)
{
	(void)sim(r, "{\"cmd\":\"fault\",\"fault\":\"clear\"}", NULL, 0);
	(void)sim(r, "{\"cmd\":\"fault\",\"fault\":\"delay_confirms\",\"ms\":0}", NULL, 0);
	int64_t end = mono_ms() + 20000, next_reconcile = 0;
	char why[400] = "";
	static char ids[256][ID_SIZE];
	while (mono_ms() < end) {
		if (!daemon_alive(r)) {
			violation(r, "kioskpayd died while quiescing (status %d)", r->daemon_status);
			return false;
		}
		if (quiet(r, why, sizeof(why)))
			return true;
		char att[64][ID_SIZE], ord[64][ID_SIZE];
		int n = sim_pending(r, att, ord, 64);
		for (int i = 0; i < n; i++) {
			unsigned p = pct(r);
			char line[160];
			if (p < 50)
				snprintf(line, sizeof(line), "{\"cmd\":\"pay\",\"attempt_id\":\"%s\"}", att[i]);
			else if (p < 70)
				snprintf(line, sizeof(line), "{\"cmd\":\"fail\",\"attempt_id\":\"%s\"}", att[i]);
			else
				continue; /* left to the pay window */
			(void)sim(r, line, NULL, 0);
		}
		n = sql_ids(r->journal, "SELECT order_id FROM orders WHERE state='paid'", ids, 256);
		for (int i = 0; i < n; i++) {
			char path[128];
			snprintf(path, sizeof(path), "orders/%s/vend", ids[i]);
			(void)coapc_req(r, COAP_REQUEST_CODE_POST, path,
					pct(r) < 70 ? "{\"result\":\"success\"}" : "{\"result\":\"failure\"}", 2000);
		}
		n = sql_ids(r->journal, "SELECT order_id FROM orders WHERE state='pending'", ids, 256);
		for (int i = 0; i < n; i++) {
			char path[128];
			snprintf(path, sizeof(path), "orders/%s/cancel", ids[i]);
			(void)coapc_req(r, COAP_REQUEST_CODE_POST, path, NULL, 2000);
		}
		if (mono_ms() >= next_reconcile) {
			(void)coapc_req(r, COAP_REQUEST_CODE_POST, "reconcile", NULL, 1000);
			(void)sim(r, "{\"cmd\":\"redeliver\"}", NULL, 0);
			next_reconcile = mono_ms() + 400;
		}
		msleep(40);
	}
	violation(r, "not quiet after 20 s: %s", why);
	return false;
}

/* Every answer the API gave is backed by a commit: the event is there. */
static void check_told(struct run *r)
{
	sqlite3 *db = NULL;
	if (sqlite3_open_v2(r->journal, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		violation(r, "journal: cannot open for the told check: %s", sqlite3_errmsg(db));
		sqlite3_close(db);
		return;
	}
	sqlite3_busy_timeout(db, 2000);
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, "SELECT 1 FROM events WHERE kind=?1 AND record_id=?2 AND to_state=?3",
			       -1, &st, NULL) != SQLITE_OK) {
		violation(r, "told check: %s", sqlite3_errmsg(db));
		sqlite3_close(db);
		return;
	}
	for (int i = 0; i < r->ntold; i++) {
		const struct told *t = &r->told[i];
		sqlite3_reset(st);
		sqlite3_bind_text(st, 1, t->kind == 'o' ? "order" : "attempt", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, t->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, t->state, -1, SQLITE_STATIC);
		r->t.told_checked++;
		if (sqlite3_step(st) != SQLITE_ROW)
			violation(r, "lost commit: the API answered %s %s is %s; the journal has no such event",
				  t->kind == 'o' ? "order" : "attempt", t->id, t->state);
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	r->ntold = 0;
}

static void run_check(struct run *r)
{
	char out[256];
	snprintf(out, sizeof(out), "%s/check-%u.txt", r->dir, cur_cut);
	char *argv[] = {KP_BIN_CHECK, "--journal", r->journal, "--ledger", r->ledger, "--quiet-expected", NULL};
	unlink(out);
	pid_t pid = spawn(argv, NULL, out);
	int st = 0;
	if (!reap(pid, 30000, &st)) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		violation(r, "kp-check exit %d; its report:", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		FILE *f = fopen(out, "r");
		char line[512];
		while (f && fgets(line, sizeof(line), f))
			if (strncmp(line, "PASS", 4) != 0)
				printf("    %s", line);
		if (f)
			fclose(f);
	} else if (!r->o->keep) {
		unlink(out);
	}
}

/* ---------- one cut ---------- */

static void cut(struct run *r, unsigned i)
{
	cur_cut = i;
	int64_t t0 = mono_ms();
	uint64_t cseed = rnd(&r->rng);
	unsigned mode = (unsigned)((r->index * 5 + i) % 3);
	enum kind kind;
	unsigned k = pct(r);
	if (k < r->o->kill_pct)
		kind = K_KILL9;
	else if (k < r->o->kill_pct + (100 - r->o->kill_pct) * 3 / 10)
		kind = K_AFTER_WRITE;
	else if (k < r->o->kill_pct + (100 - r->o->kill_pct) * 6 / 10)
		kind = K_BEFORE_SYNC;
	else if (k < r->o->kill_pct + (100 - r->o->kill_pct) * 7 / 10)
		kind = K_AFTER_SYNC;
	else
		kind = K_FAILPOINT;
	char vfs[200] = "", fp[64] = "";
	unsigned sector = pct(r) < 50 ? 512 : 4096, psow = pct(r) < 50;
	uint64_t n = 0;
	switch (kind) {
	case K_AFTER_WRITE: n = 1 + rnd(&r->rng) % 120; break;
	case K_BEFORE_SYNC:
	case K_AFTER_SYNC: n = 1 + rnd(&r->rng) % 40; break;
	default: break;
	}
	if (kind != K_KILL9) {
		snprintf(vfs, sizeof(vfs), "mode=%s,sector=%u,psow=%u,seed=%llu", mode_names[mode], sector, psow,
			 (unsigned long long)cseed);
		size_t len = strlen(vfs);
		if (kind == K_AFTER_WRITE)
			snprintf(vfs + len, sizeof(vfs) - len, ",after_write=%llu", (unsigned long long)n);
		else if (kind == K_BEFORE_SYNC)
			snprintf(vfs + len, sizeof(vfs) - len, ",before_sync=%llu", (unsigned long long)n);
		else if (kind == K_AFTER_SYNC)
			snprintf(vfs + len, sizeof(vfs) - len, ",after_sync=%llu", (unsigned long long)n);
	}
	if (kind == K_FAILPOINT)
		snprintf(fp, sizeof(fp), "%u:%u:crash",
			 fp_points[rnd(&r->rng) % (sizeof(fp_points) / sizeof(fp_points[0]))],
			 1 + (unsigned)(rnd(&r->rng) % 4));
	int64_t kill_at = kind == K_KILL9 ? t0 + 20 + (int64_t)(rnd(&r->rng) % 1200) : 0;
	snprintf(cur_plan, sizeof(cur_plan), "%s%s%s%s", kind == K_KILL9 ? "kill -9" : vfs,
		 fp[0] ? " KP_FAILPOINTS=" : "", fp, kind == K_KILL9 ? " of kioskpayd" : "");
	r->t.cuts++;
	r->t.by_kind[kind]++;
	if (kind != K_KILL9)
		r->t.by_mode[mode]++;

	/* 1. the daemon that will be cut, and its workload */
	int s = start_daemon(r, kind == K_KILL9 ? NULL : vfs, fp[0] ? fp : NULL, kill_at);
	if (s == 0)
		workload(r, 80, mono_ms() + 2500, kill_at);
	bool died = !daemon_alive(r);
	if (!died)
		daemon_kill(r); /* the point was not reached in the workload */
	bool at_point = died && WIFSIGNALED(r->daemon_status) && WTERMSIG(r->daemon_status) == SIGKILL;
	if (died && !at_point)
		violation(r, "the daemon ended other than by the cut: status 0x%x (see %s)", r->daemon_status, r->log);
	if (kind == K_KILL9 || at_point)
		r->t.died_at_point++;
	else
		r->t.not_reached++;
	int64_t t1 = mono_ms();

	/* 2. restart the real daemon on the surviving files, run to quiescence */
	s = start_daemon(r, NULL, NULL, 0);
	int64_t t2 = mono_ms();
	if (s != 0) {
		violation(r, "kioskpayd does not come up on the surviving journal (see %s)", r->log);
		daemon_kill(r);
		return;
	}
	bool ok = quiesce(r);
	int64_t t3 = mono_ms();
	int st = stop_daemon(r);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		violation(r, "kioskpayd did not stop cleanly: status 0x%x", st);
	coapc_close();

	/* 3. check */
	check_told(r);
	if (ok)
		run_check(r);
	r->t.ms_cut += mono_ms() - t0;
	r->t.ms_restart += t2 - t1;
	r->t.ms_quiet += t3 - t2;
	if (r->o->verbose)
		printf("seed %llu cut %u [%s] %s: %s; restart %lld ms, quiet %lld ms, cut %lld ms\n",
		       (unsigned long long)r->seed, i, kind_names[kind], cur_plan,
		       kind == K_KILL9 ? "killed" : at_point ? "died at the point" : "point not reached",
		       (long long)(t2 - t1), (long long)(t3 - t2), (long long)(mono_ms() - t0));
}

static void run_one(const struct opts *o, unsigned index, unsigned ncuts, struct totals *out)
{
	struct run *r = calloc(1, sizeof(*r));
	if (!r) {
		perror("calloc");
		exit(2);
	}
	cur_run = r;
	r->o = o;
	r->index = index;
	r->seed = o->seed + index;
	r->rng = r->seed * 0x9E3779B97F4A7C15ULL + 0x51ULL;
	r->ctl_fd = -1;
	snprintf(r->dir, sizeof(r->dir), "%s/run-%u", o->dir, index);
	mkdir(r->dir, 0700);
	snprintf(r->pki, sizeof(r->pki), "%s/pki", o->dir);
	snprintf(r->journal, sizeof(r->journal), "%s/state/journal.db", r->dir);
	snprintf(r->ledger, sizeof(r->ledger), "%s/ledger.db", r->dir);
	snprintf(r->config, sizeof(r->config), "%s/kioskpayd.ini", r->dir);
	snprintf(r->log, sizeof(r->log), "%s/kioskpayd.log", r->dir);
	snprintf(r->simlog, sizeof(r->simlog), "%s/hostsim.log", r->dir);
	snprintf(r->portfile, sizeof(r->portfile), "%s/sim.ports", r->dir);
	cur_cut = 0;
	snprintf(cur_plan, sizeof(cur_plan), "setup");
	if (start_sim(r) != 0) {
		violation(r, "kp-hostsim does not start (see %s)", r->simlog);
	} else {
		for (unsigned i = 0; i < ncuts; i++)
			cut(r, i);
	}
	daemon_kill(r);
	coapc_close();
	stop_sim(r);
	*out = r->t;
	if (!o->keep && r->t.violations == 0) {
		char cmd[300];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", r->dir);
	}
	free(r);
	cur_run = NULL;
}

static void add(struct totals *a, const struct totals *b)
{
	a->cuts += b->cuts;
	a->violations += b->violations;
	a->died_at_point += b->died_at_point;
	a->not_reached += b->not_reached;
	a->told_checked += b->told_checked;
	for (int i = 0; i < 3; i++)
		a->by_mode[i] += b->by_mode[i];
	for (int i = 0; i < K__COUNT; i++)
		a->by_kind[i] += b->by_kind[i];
	a->ms_cut += b->ms_cut;
	a->ms_quiet += b->ms_quiet;
	a->ms_restart += b->ms_restart;
}

static bool parse_num(const char *s, uint64_t max, uint64_t *out)
{
	char *end = NULL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || !end || *end || end == s || v > max)
		return false;
	*out = v;
	return true;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kp-campaign [--cuts N] [--seed S] [--run-len R] [--jobs J] [--kill-pct P]\n"
		"                   [--dir DIR] [--keep] [--verbose]\n"
		"  N cuts (default 100) in runs of R (default 10) sharing a journal and a ledger;\n"
		"  J runs at once (default 2); P%% of cuts are kill -9 of the normal daemon (default 20).\n"
		"  Run r uses seed S+r. exit 0: no violation; 1: violations; 2: usage or setup.\n");
}

int main(int argc, char **argv)
{
	struct opts o = {.cuts = 100, .seed = 1, .run_len = 10, .jobs = 2, .kill_pct = 20};
	const char *base = NULL;
	static const struct option lo[] = {
		{"cuts", required_argument, NULL, 'n'},    {"seed", required_argument, NULL, 's'},
		{"run-len", required_argument, NULL, 'r'}, {"jobs", required_argument, NULL, 'j'},
		{"kill-pct", required_argument, NULL, 'k'}, {"dir", required_argument, NULL, 'd'},
		{"keep", no_argument, NULL, 'K'},          {"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
	};
	int ch;
	uint64_t v;
	while ((ch = getopt_long(argc, argv, "n:s:r:j:k:d:Kvh", lo, NULL)) != -1) {
		switch (ch) {
		case 'n': if (!parse_num(optarg, 10000000, &v) || !v) goto bad; o.cuts = (unsigned)v; break;
		case 's': if (!parse_num(optarg, UINT64_MAX, &v)) goto bad; o.seed = v; break;
		case 'r': if (!parse_num(optarg, 100000, &v) || !v) goto bad; o.run_len = (unsigned)v; break;
		case 'j': if (!parse_num(optarg, 64, &v) || !v) goto bad; o.jobs = (unsigned)v; break;
		case 'k': if (!parse_num(optarg, 100, &v)) goto bad; o.kill_pct = (unsigned)v; break;
		case 'd': base = optarg; break;
		case 'K': o.keep = true; break;
		case 'v': o.verbose = true; break;
		case 'h': usage(stdout); return 0;
		default: goto bad;
		}
	}
	if (optind != argc)
		goto bad;
	snprintf(o.dir, sizeof(o.dir), "%s/kp-campaign-XXXXXX", base ? base : "/tmp");
	if (!mkdtemp(o.dir)) {
		perror("mkdtemp");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "%s '%s/pki' >/dev/null 2>&1", KP_BIN_PKI, o.dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "kp-campaign: kp-pki failed\n");
		return 2;
	}
	unsigned runs = (o.cuts + o.run_len - 1) / o.run_len;
	printf("kp-campaign: %u cuts, seed %llu, %u runs of up to %u cuts, %u at once, in %s\n", o.cuts,
	       (unsigned long long)o.seed, runs, o.run_len, o.jobs, o.dir);
	int64_t t0 = mono_ms();
	struct totals all = {0};
	int fds[64][2];
	pid_t pids[64];
	unsigned jobs = o.jobs < runs ? o.jobs : runs;
	for (unsigned w = 0; w < jobs; w++) {
		if (pipe(fds[w]) != 0) {
			perror("pipe");
			return 2;
		}
		fflush(NULL);
		pids[w] = fork();
		if (pids[w] == 0) {
			close(fds[w][0]);
			coap_startup();
			coap_set_log_level(LOG_EMERG);
			struct totals mine = {0};
			for (unsigned r = w; r < runs; r += jobs) {
				struct totals t;
				unsigned n = r + 1 == runs ? o.cuts - r * o.run_len : o.run_len;
				run_one(&o, r, n, &t);
				add(&mine, &t);
			}
			if (write(fds[w][1], &mine, sizeof(mine)) != (ssize_t)sizeof(mine))
				_exit(3);
			_exit(0);
		}
		close(fds[w][1]);
	}
	bool broken = false;
	for (unsigned w = 0; w < jobs; w++) {
		struct totals t;
		if (read(fds[w][0], &t, sizeof(t)) == (ssize_t)sizeof(t))
			add(&all, &t);
		else
			broken = true;
		close(fds[w][0]);
		int st;
		waitpid(pids[w], &st, 0);
	}
	double secs = (double)(mono_ms() - t0) / 1000.0;
	printf("kp-campaign seed %llu: %u cuts in %.0f s (%.2f s per cut, %.2f s wall per cut with %u jobs; "
	       "restart %.0f ms, quiescence %.0f ms on average)\n",
	       (unsigned long long)o.seed, all.cuts, secs, all.cuts ? (double)all.ms_cut / 1000.0 / all.cuts : 0,
	       all.cuts ? secs / all.cuts : 0, jobs, all.cuts ? (double)all.ms_restart / all.cuts : 0,
	       all.cuts ? (double)all.ms_quiet / all.cuts : 0);
	printf("  by mode: %u drop, %u tear, %u garbage; by point: %u after_write, %u before_sync, "
	       "%u after_sync, %u failpoint, %u kill -9\n",
	       all.by_mode[0], all.by_mode[1], all.by_mode[2], all.by_kind[K_AFTER_WRITE],
	       all.by_kind[K_BEFORE_SYNC], all.by_kind[K_AFTER_SYNC], all.by_kind[K_FAILPOINT], all.by_kind[K_KILL9]);
	printf("  %u died at their cut point, %u points not reached in the workload (killed at its end); "
	       "%u API answers checked against the journal\n",
	       all.died_at_point, all.not_reached, all.told_checked);
	printf("  violations: %u%s\n", all.violations, broken ? " (a worker failed)" : "");
	if (!o.keep && all.violations == 0 && !broken) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", o.dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", o.dir);
	} else {
		printf("  files kept in %s\n", o.dir);
	}
	return all.violations || broken ? 1 : 0;
bad:
	usage(stderr);
	return 2;
}
