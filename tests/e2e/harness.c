/* harness.c — starts and stops the real processes of an end-to-end test and
 * gives the test outside views of them (CoAP, kioskctl, ledger, journal). */
#include "harness.h"
#include "kp_free_port.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

/* Split a command line on spaces (no quoting needed by our callers). */
static int split_words(char *line, char **argv, int max)
{
	int n = 0;
	for (char *tok = strtok(line, " "); tok && n < max - 1; tok = strtok(NULL, " "))
		argv[n++] = tok;
	argv[n] = NULL;
	return n;
}

/* fork + exec argv with stdout/stderr to log (or /dev/null). */
static pid_t spawn(char **argv, const char *log)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	int fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	execv(argv[0], argv);
	fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* Run a command, capture stdout (+stderr if both) into out; exit code. */
static int run_capture(const char *cmd, char *out, size_t cap)
{
	FILE *p = popen(cmd, "r");
	if (!p)
		return -1;
	size_t n = 0;
	if (cap > 0) {
		n = fread(out, 1, cap - 1, p);
		out[n] = '\0';
	}
	char sink[512];
	while (fread(sink, 1, sizeof(sink), p) > 0) {
	}
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int w_setup(kp_world *w, const char *name)
{
	memset(w, 0, sizeof(*w));
	snprintf(w->dir, sizeof(w->dir), "/tmp/kp-e2e-%s-XXXXXX", name);
	if (!mkdtemp(w->dir))
		return -1;
	snprintf(w->pki, sizeof(w->pki), "%s/pki", w->dir);
	snprintf(w->journal, sizeof(w->journal), "%s/state/journal.db", w->dir);
	snprintf(w->ledger, sizeof(w->ledger), "%s/ledger.db", w->dir);
	snprintf(w->config, sizeof(w->config), "%s/kioskpayd.ini", w->dir);
	snprintf(w->daemon_log, sizeof(w->daemon_log), "%s/kioskpayd.log", w->dir);
	snprintf(w->hostsim_log, sizeof(w->hostsim_log), "%s/hostsim.log", w->dir);
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "%s %s >/dev/null 2>&1", KP_BIN_PKI, w->pki);
	if (system(cmd) != 0)
		return -1;
	return 0;
}

static bool tcp_open(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

int w_start_hostsim(kp_world *w, const char *extra)
{
	if (!w->host_port) {
		w->host_port = kp_free_port(false);
		w->control_port = kp_free_port(false);
	}
	char line[2048];
	snprintf(line, sizeof(line),
		 "%s --listen 127.0.0.1:%d --control 127.0.0.1:%d --ledger %s --ca %s/ca.crt "
		 "--cert %s/host.crt --key %s/host.key %s",
		 KP_BIN_HOSTSIM, w->host_port, w->control_port, w->ledger, w->pki, w->pki, w->pki,
		 extra ? extra : "");
	char *argv[64];
	split_words(line, argv, 64);
	w->hostsim = spawn(argv, w->hostsim_log);
	for (int i = 0; i < 200; i++) {
		if (tcp_open(w->control_port))
			return 0;
		msleep(25);
	}
	return -1;
}

void w_stop_hostsim(kp_world *w)
{
	if (w->hostsim > 0) {
		kill(w->hostsim, SIGTERM);
		waitpid(w->hostsim, NULL, 0);
		w->hostsim = 0;
	}
}

static bool health_up(kp_world *w, void *arg)
{
	(void)arg;
	char out[2048];
	int code = w_coap(w, "get", "health", NULL, out, sizeof(out));
	return code == 200 && strstr(out, "\"host\":\"up\"") != NULL;
}

int w_start_daemon(kp_world *w, const char *extra_payment_ini)
{
	return w_start_daemon_ex(w, extra_payment_ini, NULL);
}

int w_start_daemon_ex(kp_world *w, const char *extra_payment_ini, const char *extra_sections)
{
	if (!w->api_port)
		w->api_port = kp_free_port(true);
	FILE *f = fopen(w->config, "w");
	if (!f)
		return -1;
	fprintf(f,
		"[journal]\npath = %s\n\n[api]\nlisten = 127.0.0.1:%d\n\n"
		"[host]\naddress = 127.0.0.1:%d\nserver_name = localhost\nca = %s/ca.crt\n"
		"cert = %s/device.crt\nkey = %s/device.key\nrequest_timeout = 2s\n"
		"reconnect_min = 100ms\nreconnect_max = 1s\n\n"
		"[device]\nid = kiosk-dev-1\n\n[payment]\ncurrency = EUR\nmax_amount = 100000\n%s\n"
		"[log]\nlevel = debug\n\n%s",
		w->journal, w->api_port, w->host_port, w->pki, w->pki, w->pki,
		extra_payment_ini ? extra_payment_ini : "", extra_sections ? extra_sections : "");
	fclose(f);
	char *argv[] = {KP_BIN_KIOSKPAYD, "-c", w->config, NULL};
	w->daemon = spawn(argv, w->daemon_log);
	if (!w_wait(health_up, w, NULL, 10000))
		return -1;
	return 0;
}

int w_stop_daemon(kp_world *w, int sig)
{
	if (w->daemon <= 0)
		return -1;
	kill(w->daemon, sig);
	int st = 0;
	waitpid(w->daemon, &st, 0);
	w->daemon = 0;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

void w_teardown(kp_world *w)
{
	w_stop_daemon(w, SIGTERM);
	w_stop_hostsim(w);
	const char *keep = getenv("KP_KEEP");
	if (keep && strcmp(keep, "1") == 0) {
		fprintf(stderr, "kept %s\n", w->dir);
		return;
	}
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", w->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", w->dir);
}

int w_coap(kp_world *w, const char *method, const char *path, const char *payload, char *out,
	   size_t cap)
{
	char cmd[4096];
	char pl[2600] = "";
	if (payload)
		snprintf(pl, sizeof(pl), "-t json -e '%s'", payload);
	snprintf(cmd, sizeof(cmd), "%s -B 5 -m %s %s 'coap://127.0.0.1:%d/%s' 2>&1", KP_COAP_CLIENT,
		 method, pl, w->api_port, path);
	char buf[8192];
	int rc = run_capture(cmd, buf, sizeof(buf));
	if (rc < 0)
		return -1;
	/* coap-client prints an error as "4.09 {body}" (or "4.04 Not Found"
	 * without one); a success is the body alone, its code not shown. */
	int code = 200;
	const char *body = buf;
	if (buf[0] >= '1' && buf[0] <= '5' && buf[1] == '.' && buf[2] >= '0' && buf[2] <= '9' &&
	    buf[3] >= '0' && buf[3] <= '9') {
		code = (buf[0] - '0') * 100 + (buf[2] - '0') * 10 + (buf[3] - '0');
		body = buf + 4;
		while (*body == ' ')
			body++;
		if (*body != '{') {
			const char *nl = strchr(body, '\n');
			body = nl ? nl + 1 : body + strlen(body);
		}
	}
	snprintf(out, cap, "%s", body);
	return code;
}

int w_ctl(kp_world *w, const char *args, char *out, size_t cap)
{
	char cmd[4096];
	snprintf(cmd, sizeof(cmd), "%s --json --api 127.0.0.1:%d %s", KP_BIN_KIOSKCTL, w->api_port, args);
	return run_capture(cmd, out, cap);
}

int w_sim(kp_world *w, const char *json_line, char *out, size_t cap)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)w->control_port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return -1;
	}
	/* One write: a line split over two writes waits on Nagle and delayed ACK. */
	char line[4096];
	int len = snprintf(line, sizeof(line), "%s\n", json_line);
	if (len < 0 || (size_t)len >= sizeof(line) || write(fd, line, (size_t)len) != len) {
		close(fd);
		return -1;
	}
	size_t n = 0;
	while (n + 1 < cap) {
		ssize_t r = read(fd, out + n, cap - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		if (memchr(out + n - (size_t)r, '\n', (size_t)r))
			break;
	}
	out[n] = '\0';
	close(fd);
	return n > 0 ? 0 : -1;
}

cJSON *w_ledger(kp_world *w)
{
	static char buf[1 << 20];
	if (w_sim(w, "{\"cmd\":\"dump\"}", buf, sizeof(buf)) != 0)
		return NULL;
	return cJSON_Parse(buf);
}

cJSON *w_wait_order(kp_world *w, const char *order_id, const char *want, int timeout_ms)
{
	int64_t end = mono_ms() + timeout_ms;
	char path[160], out[16384];
	snprintf(path, sizeof(path), "orders/%s", order_id);
	cJSON *o = NULL;
	do {
		cJSON_Delete(o);
		o = NULL;
		if (w_coap(w, "get", path, NULL, out, sizeof(out)) == 200)
			o = cJSON_Parse(out);
		const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "status");
		if (cJSON_IsString(st) && strcmp(st->valuestring, want) == 0)
			return o;
		msleep(50);
	} while (mono_ms() < end);
	return o;
}

bool w_wait(bool (*fn)(kp_world *w, void *arg), kp_world *w, void *arg, int timeout_ms)
{
	int64_t end = mono_ms() + timeout_ms;
	do {
		if (fn(w, arg))
			return true;
		msleep(50);
	} while (mono_ms() < end);
	return false;
}

static int64_t sql_int_at(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	int64_t v = -1;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
		sqlite3_busy_timeout(db, 2000);
		sqlite3_stmt *st = NULL;
		if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
			v = sqlite3_column_int64(st, 0);
		else
			fprintf(stderr, "sql: %s: %s\n", sql, sqlite3_errmsg(db));
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	return v;
}

int64_t w_sql_int(kp_world *w, const char *sql)
{
	return sql_int_at(w->journal, sql);
}

int64_t w_ledger_int(kp_world *w, const char *sql)
{
	return sql_int_at(w->ledger, sql);
}

int w_journal_check(kp_world *w)
{
	char cmd[512], out[4096];
	snprintf(cmd, sizeof(cmd), "%s journal check %s 2>&1", KP_BIN_KIOSKCTL, w->journal);
	int rc = run_capture(cmd, out, sizeof(out));
	if (rc != 0)
		fprintf(stderr, "journal check: %s", out);
	return rc;
}
