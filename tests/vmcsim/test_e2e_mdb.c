/* test_e2e_mdb.c — vend sessions end to end: kp-vmcsim (the VMC, its own
 * process) on a pty, the real kioskpayd as the cashless reader, kp-hostsim
 * as the payment host, the customer paying through the simulator's control
 * port. Approved and vended; denied; the VMC's cancel; vend failure refunded;
 * our patience; a repeated VEND SUCCESS; power failing in the middle (GPIO
 * sim); power lost after VEND APPROVED (kill -9, the power-cut policy at
 * boot); the watchdog and systemd notify fed by the loop and not while it is
 * stopped; the GPIO vend outcome of a kiosk without MDB. Each asserts what the
 * VMC saw and the journal and ledger behind it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define FAST                                                                          \
	"order_ttl = 30s\npay_margin = 5s\nquery_every = 300ms\npay_window = 20s\n"   \
	"query_backoff_min = 500ms\nquery_backoff_max = 2s\nrefund_retry = 300ms\n"   \
	"refund_retry_max = 2s\n"

#define PATIENCE_S 3

struct mdb_world {
	kp_world w;
	pid_t vmcsim;
	char pty[200];
	char control[200];
	char gpio[200];
	char watchdog[200];
	char vmcsim_log[200];
	char sections[2048];
	cJSON *base; /* the VMC's counters when the test began */
};

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

/* ---- kp-vmcsim ---- */

/* One control command; its answer line in out. 0 on success. */
static int vmc(struct mdb_world *m, const char *cmd, char *out, size_t cap)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%.100s", m->control);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	char line[256];
	int len = snprintf(line, sizeof(line), "%s\n", cmd);
	size_t n = 0;
	if (write(fd, line, (size_t)len) == len) {
		while (n + 1 < cap) {
			ssize_t r = read(fd, out + n, cap - 1 - n);
			if (r <= 0)
				break;
			n += (size_t)r;
			if (memchr(out + n - (size_t)r, '\n', (size_t)r))
				break;
		}
	}
	out[n] = '\0';
	close(fd);
	return n > 0 ? 0 : -1;
}

static void vmc_ok(struct mdb_world *m, const char *cmd)
{
	char out[256];
	assert_int_equal(vmc(m, cmd, out, sizeof(out)), 0);
	if (strncmp(out, "ok", 2) != 0)
		fail_msg("kp-vmcsim %s: %s", cmd, out);
}

static cJSON *vstats(struct mdb_world *m)
{
	char out[2048];
	if (vmc(m, "stats", out, sizeof(out)) != 0)
		return NULL;
	return cJSON_Parse(out);
}

static int64_t jnum(const cJSON *j, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
	return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

/* A counter of the VMC since the test began (last_approved as it is); -1
 * if it did not answer. The MDB tests share one world. */
static int64_t vstat(struct mdb_world *m, const char *key)
{
	cJSON *j = vstats(m);
	if (!j)
		return -1;
	int64_t r = jnum(j, key);
	if (strcmp(key, "last_approved") != 0)
		r -= jnum(m->base, key);
	cJSON_Delete(j);
	return r;
}

/* Wait until the VMC's counter key reaches want. */
static bool wait_vstat(struct mdb_world *m, const char *key, int64_t want, int timeout_ms)
{
	int64_t end = mono_ms() + timeout_ms;
	do {
		if (vstat(m, key) >= want)
			return true;
		msleep(50);
	} while (mono_ms() < end);
	return false;
}

static void assert_vstat(struct mdb_world *m, const char *key, int64_t want)
{
	int64_t got = vstat(m, key);
	if (got != want)
		fail_msg("VMC %s = %lld, want %lld (log %s)", key, (long long)got, (long long)want, m->vmcsim_log);
}

static int start_vmcsim(struct mdb_world *m)
{
	m->vmcsim = fork();
	if (m->vmcsim == 0) {
		int fd = open(m->vmcsim_log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execl(KP_BIN_VMCSIM, KP_BIN_VMCSIM, "--pty", m->pty, "--control", m->control, "--framing", "pair",
		      "--non-response-ms", "1000", "--verbose", (char *)NULL);
		_exit(127);
	}
	char out[64];
	for (int i = 0; i < 200; i++) {
		if (vmc(m, "state", out, sizeof(out)) == 0)
			return 0;
		msleep(25);
	}
	return -1;
}

static void stop_vmcsim(struct mdb_world *m)
{
	if (m->vmcsim > 0) {
		kill(m->vmcsim, SIGTERM);
		waitpid(m->vmcsim, NULL, 0);
		m->vmcsim = 0;
	}
}

/* ---- the world ---- */

static int start_mdb_world(void **state, const char *name, bool mdb)
{
	struct mdb_world *m = calloc(1, sizeof(*m));
	*state = m;
	if (w_setup(&m->w, name) != 0 || w_start_hostsim(&m->w, NULL) != 0)
		return -1;
	snprintf(m->pty, sizeof(m->pty), "%s/mdb", m->w.dir);
	snprintf(m->control, sizeof(m->control), "%s/vmc.sock", m->w.dir);
	snprintf(m->gpio, sizeof(m->gpio), "%s/gpio", m->w.dir);
	snprintf(m->watchdog, sizeof(m->watchdog), "%s/watchdog", m->w.dir);
	snprintf(m->vmcsim_log, sizeof(m->vmcsim_log), "%s/vmcsim.log", m->w.dir);
	if (mdb) {
		if (start_vmcsim(m) != 0) {
			fprintf(stderr, "kp-vmcsim did not start (log %s)\n", m->vmcsim_log);
			return -1;
		}
		snprintf(m->sections, sizeof(m->sections),
			 "[mdb]\ndevice = %s\nframing = pair\npatience = %ds\n\n"
			 "[gpio]\nchip = sim:%s\npower_fail = 4 active_low\n\n"
			 "[watchdog]\ndevice = sim:%s\ntimeout = 3s\n",
			 m->pty, PATIENCE_S, m->gpio, m->watchdog);
	} else {
		snprintf(m->sections, sizeof(m->sections),
			 "[gpio]\nchip = sim:%s\npower_fail = 4\nvend_ok = 5\nvend_fail = 6\n", m->gpio);
	}
	if (w_start_daemon_ex(&m->w, FAST, m->sections) != 0) {
		fprintf(stderr, "kioskpayd did not start (logs in %s)\n", m->w.dir);
		return -1;
	}
	/* the VMC has set the reader up and a session is on offer */
	if (mdb && !wait_vstat(m, "sessions", 1, 5000)) {
		fprintf(stderr, "no session offered (logs in %s)\n", m->w.dir);
		return -1;
	}
	return 0;
}

static int mdb_group_setup(void **state)
{
	return start_mdb_world(state, "mdb", true);
}

static int plain_setup(void **state)
{
	return start_mdb_world(state, "gpio", false);
}

static int world_teardown(void **state)
{
	struct mdb_world *m = *state;
	int rc = 0;
	if (m->w.daemon > 0 && w_stop_daemon(&m->w, SIGTERM) != 0)
		rc = -1;
	stop_vmcsim(m);
	if (m->w.dir[0] && w_journal_check(&m->w) != 0)
		rc = -1;
	cJSON_Delete(m->base);
	w_teardown(&m->w);
	free(m);
	return rc;
}

/* Each MDB test starts with the VMC idle in an offered session, and counts
 * from there. */
static int mdb_test_setup(void **state)
{
	struct mdb_world *m = *state;
	char out[64];
	for (int i = 0; i < 200; i++) {
		if (vmc(m, "state", out, sizeof(out)) == 0 && strcmp(out, "state session\n") == 0) {
			cJSON_Delete(m->base);
			m->base = vstats(m);
			if (m->base && jnum(m->base, "queued") == 0)
				return 0;
		}
		msleep(25);
	}
	fprintf(stderr, "VMC not idle in a session (logs in %s)\n", m->w.dir);
	return -1;
}

/* ---- helpers on the journal and the host ---- */

static int64_t sqlf(struct mdb_world *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int64_t sqlf(struct mdb_world *m, const char *fmt, ...)
{
	char sql[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	return w_sql_int(&m->w, sql);
}

static bool wait_sql(struct mdb_world *m, int64_t want, int timeout_ms, const char *sql)
{
	for (int waited = 0; waited <= timeout_ms; waited += 50) {
		if (w_sql_int(&m->w, sql) == want)
			return true;
		msleep(50);
	}
	fprintf(stderr, "%s: %lld, want %lld\n", sql, (long long)w_sql_int(&m->w, sql), (long long)want);
	return false;
}

/* The newest pending attempt at the host on channel mdb: its ids. */
static bool host_pending(struct mdb_world *m, char *attempt_id, char *order_id, int timeout_ms)
{
	int64_t end = mono_ms() + timeout_ms;
	do {
		char out[16384];
		if (w_sim(&m->w, "{\"cmd\":\"list\"}", out, sizeof(out)) == 0) {
			cJSON *j = cJSON_Parse(out);
			const cJSON *p;
			bool found = false;
			cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(j, "pending")) {
				const cJSON *ch = cJSON_GetObjectItemCaseSensitive(p, "channel");
				const cJSON *a = cJSON_GetObjectItemCaseSensitive(p, "attempt_id");
				const cJSON *o = cJSON_GetObjectItemCaseSensitive(p, "order_id");
				if (cJSON_IsString(ch) && strcmp(ch->valuestring, "mdb") == 0 && cJSON_IsString(a) &&
				    cJSON_IsString(o)) {
					snprintf(attempt_id, 65, "%s", a->valuestring);
					snprintf(order_id, 65, "%s", o->valuestring);
					found = true;
				}
			}
			cJSON_Delete(j);
			if (found)
				return true;
		}
		msleep(50);
	} while (mono_ms() < end);
	return false;
}

static void host_cmd(struct mdb_world *m, const char *cmd, const char *attempt_id)
{
	char line[256], out[4096];
	snprintf(line, sizeof(line), "{\"cmd\":\"%s\",\"attempt_id\":\"%s\"}", cmd, attempt_id);
	assert_int_equal(w_sim(&m->w, line, out, sizeof(out)), 0);
	if (!strstr(out, "\"ok\":true"))
		fail_msg("hostsim %s: %s", line, out);
}

/* The host's view of one order: captures and net (captured - refunded). */
static void ledger_order(struct mdb_world *m, const char *order_id, int64_t *captures, int64_t *net)
{
	cJSON *l = w_ledger(&m->w);
	assert_non_null(l);
	*captures = *net = 0;
	const cJSON *o;
	cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(l, "orders")) {
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "order_id");
		if (cJSON_IsString(id) && strcmp(id->valuestring, order_id) == 0) {
			*captures = (int64_t)cJSON_GetObjectItemCaseSensitive(o, "captures")->valuedouble;
			*net = (int64_t)cJSON_GetObjectItemCaseSensitive(o, "net")->valuedouble;
		}
	}
	cJSON_Delete(l);
}

static const char *order_state_sql(const char *order_id, const char *state, char *buf, size_t cap)
{
	snprintf(buf, cap, "SELECT count(*) FROM orders WHERE order_id='%s' AND state='%s'", order_id, state);
	return buf;
}

static void gpio(struct mdb_world *m, const char *line)
{
	int fd = open(m->gpio, O_WRONLY | O_NONBLOCK);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	close(fd);
}

/* ---- scenarios ---- */

static void test_approved_and_vended(void **state)
{
	struct mdb_world *m = *state;
	char att[65], oid[65], sql[256];
	vmc_ok(m, "select 150 7 ok");
	assert_true(host_pending(m, att, oid, 5000));
	assert_int_equal(sqlf(m, "SELECT count(*) FROM orders WHERE order_id='%s' AND dedup_key LIKE 'mdb-%%' "
			      "AND amount=150 AND items='[{\"mdb_item\":7,\"qty\":1}]'", oid), 1);
	msleep(300);
	assert_vstat(m, "approved", 0); /* nothing before the money */
	host_cmd(m, "pay", att);
	assert_true(wait_vstat(m, "selections_done", 1, 5000));
	assert_vstat(m, "approved", 1);
	assert_vstat(m, "last_approved", 150);
	assert_vstat(m, "dispensed", 1);
	assert_vstat(m, "dispensed_value", 150);
	assert_vstat(m, "out_of_sequence", 0);
	assert_true(wait_sql(m, 1, 2000, order_state_sql(oid, "fulfilled", sql, sizeof(sql))));
	int64_t captures, net;
	ledger_order(m, oid, &captures, &net);
	assert_int_equal(captures, 1);
	assert_int_equal(net, 150);
	/* the session ends and the next is offered */
	assert_true(wait_vstat(m, "sessions_ended", 1, 3000));
	assert_true(wait_vstat(m, "sessions", 1, 3000)); /* counted from the one on offer at the start */
}

static void test_payment_failed_denied(void **state)
{
	struct mdb_world *m = *state;
	char att[65], oid[65], sql[256];
	vmc_ok(m, "select 200 2 ok");
	assert_true(host_pending(m, att, oid, 5000));
	host_cmd(m, "fail", att);
	assert_true(wait_vstat(m, "selections_done", 1, 5000));
	assert_vstat(m, "denied", 1);
	assert_vstat(m, "approved", 0);
	assert_true(wait_sql(m, 1, 2000, order_state_sql(oid, "canceled", sql, sizeof(sql))));
	assert_int_equal(sqlf(m, "SELECT count(*) FROM attempts WHERE attempt_id='%s' AND state='failed'", att), 1);
}

static void test_vmc_cancel(void **state)
{
	struct mdb_world *m = *state;
	char att[65], oid[65], sql[256];
	vmc_ok(m, "select 120 3 ok");
	assert_true(host_pending(m, att, oid, 5000));
	vmc_ok(m, "cancel");
	assert_true(wait_vstat(m, "selections_done", 1, 5000));
	assert_vstat(m, "vend_cancels", 1);
	assert_vstat(m, "denied", 1);
	assert_true(wait_sql(m, 1, 2000, order_state_sql(oid, "canceled", sql, sizeof(sql))));
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM attempts WHERE attempt_id='%s' AND state='canceled'", att);
	assert_true(wait_sql(m, 1, 3000, sql));
	int64_t captures, net;
	ledger_order(m, oid, &captures, &net);
	assert_int_equal(captures, 0);
}

static void test_vend_failure_refunded(void **state)
{
	struct mdb_world *m = *state;
	char att[65], oid[65], sql[256];
	vmc_ok(m, "select 90 4 fail");
	assert_true(host_pending(m, att, oid, 5000));
	host_cmd(m, "pay", att);
	assert_true(wait_vstat(m, "selections_done", 1, 5000));
	assert_vstat(m, "approved", 1);
	assert_vstat(m, "dispense_failed", 1);
	assert_true(wait_sql(m, 1, 2000, order_state_sql(oid, "fulfill_failed", sql, sizeof(sql))));
	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM refunds WHERE order_id='%s' AND reason='vend_failed' AND state='refunded'", oid);
	assert_true(wait_sql(m, 1, 5000, sql));
	int64_t captures, net;
	ledger_order(m, oid, &captures, &net);
	assert_int_equal(captures, 1);
	assert_int_equal(net, 0);
}

static void test_patience_runs_out(void **state)
{
	struct mdb_world *m = *state;
	char att[65], oid[65], sql[256];
	vmc_ok(m, "select 300 5 ok");
	assert_true(host_pending(m, att, oid, 5000));
	int64_t t0 = mono_ms();
	assert_true(wait_vstat(m, "selections_done", 1, (PATIENCE_S + 3) * 1000));
	int64_t took = mono_ms() - t0;
	assert_true(took >= (PATIENCE_S - 1) * 1000);
	assert_vstat(m, "denied", 1);
	assert_vstat(m, "vend_cancels", 0); /* denied before the VMC's own Z7 */
	assert_true(wait_sql(m, 1, 2000, order_state_sql(oid, "canceled", sql, sizeof(sql))));
	/* the customer pays after all: refunded as late */
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM attempts WHERE attempt_id='%s' AND state='canceled'", att);
	assert_true(wait_sql(m, 1, 3000, sql));
	int64_t captures, net;
	ledger_order(m, oid, &captures, &net);
	assert_int_equal(captures, 0);
}

static void test_repeated_vend_success(void **state)
{
	struct mdb_world *m = *state;
	char att[65], oid[65], sql[256];
	vmc_ok(m, "select 150 1 ok dup");
	assert_true(host_pending(m, att, oid, 5000));
	host_cmd(m, "pay", att);
	assert_true(wait_vstat(m, "selections_done", 1, 5000));
	assert_vstat(m, "outcomes_repeated", 1);
	assert_vstat(m, "dispensed", 1);
	assert_vstat(m, "out_of_sequence", 0);
	assert_true(wait_sql(m, 1, 2000, order_state_sql(oid, "fulfilled", sql, sizeof(sql))));
	assert_int_equal(sqlf(m, "SELECT count(*) FROM events WHERE record_id='%s' AND to_state='fulfilled'", oid), 1);
	assert_int_equal(sqlf(m, "SELECT count(*) FROM refunds WHERE order_id='%s'", oid), 0);
	int64_t captures, net;
	ledger_order(m, oid, &captures, &net);
	assert_int_equal(net, 150);
}

static void test_power_fails_mid_vend(void **state)
{
	struct mdb_world *m = *state;
	char att[65], oid[65], sql[256], out[4096];
	vmc_ok(m, "select 150 1 hold");
	assert_true(host_pending(m, att, oid, 5000));
	/* the supply's power-fail output goes low (active) */
	gpio(m, "power_fail 1\n");
	msleep(300);
	int code = w_coap(&m->w, "post", "orders", "{\"dedup_key\":\"ui-1\",\"amount\":100}", out, sizeof(out));
	assert_int_equal(code, 503);
	assert_non_null(strstr(out, "power failing"));
	/* the vend in flight finishes */
	host_cmd(m, "pay", att);
	assert_true(wait_vstat(m, "approved", 1, 5000));
	vmc_ok(m, "dispense ok");
	assert_true(wait_vstat(m, "selections_done", 1, 5000));
	assert_vstat(m, "dispensed", 1);
	assert_true(wait_sql(m, 1, 2000, order_state_sql(oid, "fulfilled", sql, sizeof(sql))));
	/* but no new session while the power fails */
	assert_true(wait_vstat(m, "sessions_ended", 1, 3000));
	int64_t sessions = vstat(m, "sessions");
	msleep(1500);
	assert_vstat(m, "sessions", sessions);
	/* power back: sales again */
	gpio(m, "power_fail 0\n");
	assert_true(wait_vstat(m, "sessions", sessions + 1, 3000));
	code = w_coap(&m->w, "post", "orders", "{\"dedup_key\":\"ui-2\",\"amount\":100}", out, sizeof(out));
	assert_int_equal(code, 200);
	assert_int_equal(sqlf(m, "SELECT count(*) FROM orders WHERE dedup_key='ui-1'"), 0);
}

static void test_power_lost_after_approval(void **state)
{
	struct mdb_world *m = *state;
	char att[65], oid[65], sql[256];
	vmc_ok(m, "select 250 9 hold");
	assert_true(host_pending(m, att, oid, 5000));
	host_cmd(m, "pay", att);
	assert_true(wait_vstat(m, "approved", 1, 5000));
	assert_true(wait_sql(m, 1, 2000, order_state_sql(oid, "paid", sql, sizeof(sql))));
	/* the power goes between VEND APPROVED and the outcome */
	assert_int_equal(w_stop_daemon(&m->w, SIGKILL), -SIGKILL);
	assert_int_equal(w_start_daemon_ex(&m->w, FAST, m->sections), 0);
	/* the power-cut policy (refund) applies at boot */
	assert_true(wait_sql(m, 1, 3000, order_state_sql(oid, "fulfill_failed", sql, sizeof(sql))));
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM refunds WHERE order_id='%s' AND reason='power_cut'", oid);
	assert_true(wait_sql(m, 1, 3000, sql));
	/* the VMC heard silence, reset the reader, dropped the vend, sells again */
	assert_true(wait_vstat(m, "aborted", 1, 5000));
	assert_true(wait_vstat(m, "setups", 1, 5000));
	vmc_ok(m, "select 100 1 ok");
	assert_true(host_pending(m, att, oid, 5000));
	host_cmd(m, "pay", att);
	assert_true(wait_vstat(m, "dispensed", 1, 5000));
	int64_t captures, net;
	ledger_order(m, oid, &captures, &net);
	assert_int_equal(net, 100);
}

static void test_restart_mid_request(void **state)
{
	struct mdb_world *m = *state;
	char att[65], oid[65], sql[256];
	vmc_ok(m, "select 180 3 ok");
	assert_true(host_pending(m, att, oid, 5000));
	/* the power goes while the customer is paying */
	assert_int_equal(w_stop_daemon(&m->w, SIGKILL), -SIGKILL);
	assert_int_equal(w_start_daemon_ex(&m->w, FAST, m->sections), 0);
	/* the new run cancels the dead session's order, at the host too */
	assert_true(wait_sql(m, 1, 3000, order_state_sql(oid, "canceled", sql, sizeof(sql))));
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM attempts WHERE attempt_id='%s' AND state='canceled'", att);
	assert_true(wait_sql(m, 1, 5000, sql));
	assert_true(wait_vstat(m, "aborted", 1, 5000));
	assert_vstat(m, "approved", 0);
	int64_t captures, net;
	ledger_order(m, oid, &captures, &net);
	assert_int_equal(captures, 0);
}

/* Keepalive lines in the watchdog's sim file. */
static int keepalives(struct mdb_world *m)
{
	FILE *f = fopen(m->watchdog, "r");
	if (!f)
		return 0;
	char line[64];
	int n = 0;
	while (fgets(line, sizeof(line), f))
		n += strncmp(line, "keepalive", 9) == 0;
	fclose(f);
	return n;
}

static void test_watchdog_follows_the_loop(void **state)
{
	struct mdb_world *m = *state;
	/* systemd's side: a notify socket, WatchdogSec=2 */
	char sock[200];
	snprintf(sock, sizeof(sock), "%s/notify", m->w.dir);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%.100s", sock);
	int s = socket(AF_UNIX, SOCK_DGRAM, 0);
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(w_stop_daemon(&m->w, SIGTERM), 0);
	setenv("NOTIFY_SOCKET", sock, 1);
	setenv("WATCHDOG_USEC", "2000000", 1);
	int rc = w_start_daemon_ex(&m->w, FAST, m->sections);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	assert_int_equal(rc, 0);
	char buf[64];
	ssize_t r = recv(s, buf, sizeof(buf) - 1, 0);
	assert_true(r > 0);
	buf[r] = '\0';
	assert_string_equal(buf, "READY=1");
	msleep(2200);
	int fed = keepalives(m);
	assert_true(fed >= 2); /* every second (the shorter of 3s/3 and 2s/2) */
	r = recv(s, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	assert_true(r > 0);
	buf[r] = '\0';
	assert_string_equal(buf, "WATCHDOG=1");
	/* the loop stops turning: nothing is fed */
	kill(m->w.daemon, SIGSTOP);
	msleep(200);
	fed = keepalives(m);
	while (recv(s, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
	}
	msleep(2500);
	assert_int_equal(keepalives(m), fed);
	assert_true(recv(s, buf, sizeof(buf), MSG_DONTWAIT) < 0);
	kill(m->w.daemon, SIGCONT);
	msleep(1500);
	assert_true(keepalives(m) > fed);
	close(s);
}

/* A kiosk without MDB: the dispenser's outcome lines. */
static void test_gpio_vend_outcome(void **state)
{
	struct mdb_world *m = *state;
	char out[4096], sql[256];
	const char *ids[2] = {"gpio-1", "gpio-2"};
	char oid[2][65];
	for (int i = 0; i < 2; i++) {
		char body[128], path[128], att[65] = "";
		snprintf(body, sizeof(body), "{\"dedup_key\":\"%s\",\"amount\":%d}", ids[i], 100 + i);
		assert_int_equal(w_coap(&m->w, "post", "orders", body, out, sizeof(out)), 200);
		cJSON *o = cJSON_Parse(out);
		snprintf(oid[i], 65, "%s", cJSON_GetObjectItemCaseSensitive(o, "order_id")->valuestring);
		cJSON_Delete(o);
		snprintf(path, sizeof(path), "orders/%s/pay", oid[i]);
		assert_int_equal(w_coap(&m->w, "post", path, "{\"channel\":\"card\"}", out, sizeof(out)), 200);
		o = cJSON_Parse(out);
		snprintf(att, sizeof(att), "%s", cJSON_GetObjectItemCaseSensitive(o, "attempt_id")->valuestring);
		cJSON_Delete(o);
		host_cmd(m, "pay", att);
		assert_true(wait_sql(m, 1, 3000, order_state_sql(oid[i], "paid", sql, sizeof(sql))));
	}
	/* the oldest paid order gets the first outcome */
	gpio(m, "vend_ok 1\nvend_ok 0\n");
	assert_true(wait_sql(m, 1, 2000, order_state_sql(oid[0], "fulfilled", sql, sizeof(sql))));
	assert_int_equal(sqlf(m, "SELECT count(*) FROM orders WHERE order_id='%s' AND state='paid'", oid[1]), 1);
	gpio(m, "vend_fail 1\nvend_fail 0\n");
	assert_true(wait_sql(m, 1, 2000, order_state_sql(oid[1], "fulfill_failed", sql, sizeof(sql))));
	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM refunds WHERE order_id='%s' AND reason='vend_failed' AND state='refunded'", oid[1]);
	assert_true(wait_sql(m, 1, 5000, sql));
	/* an edge with nothing waiting changes nothing */
	gpio(m, "vend_ok 1\nvend_ok 0\n");
	msleep(300);
	assert_int_equal(sqlf(m, "SELECT count(*) FROM orders WHERE state='fulfilled'"), 1);
	/* power failing without MDB: the API refuses new orders */
	gpio(m, "power_fail 1\n");
	msleep(300);
	assert_int_equal(w_coap(&m->w, "post", "orders", "{\"dedup_key\":\"gpio-3\",\"amount\":5}", out, sizeof(out)),
			 503);
	assert_non_null(strstr(out, "power failing"));
}

#define MDB(f) cmocka_unit_test_setup(f, mdb_test_setup)

int main(void)
{
	/* one VMC, daemon and host for the MDB scenarios, in this order */
	const struct CMUnitTest mdb[] = {
		MDB(test_approved_and_vended),
		MDB(test_payment_failed_denied),
		MDB(test_vmc_cancel),
		MDB(test_vend_failure_refunded),
		MDB(test_patience_runs_out),
		MDB(test_repeated_vend_success),
		MDB(test_power_fails_mid_vend),
		MDB(test_power_lost_after_approval),
		MDB(test_restart_mid_request),
		MDB(test_watchdog_follows_the_loop),
	};
	const struct CMUnitTest plain[] = {
		cmocka_unit_test_setup_teardown(test_gpio_vend_outcome, plain_setup, world_teardown),
	};
	int failed = cmocka_run_group_tests_name("mdb", mdb, mdb_group_setup, world_teardown);
	failed += cmocka_run_group_tests_name("gpio", plain, NULL, NULL);
	return failed;
}
