/* test_e2e_sale.c — the sale scenarios of the engine issue, end to end: the
 * real kioskpayd and kp-hostsim as separate processes over TLS on loopback,
 * coap-client and kioskctl as the outside clients. Each test asserts what the
 * client sees and the journal and host ledger behind it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* Short timings so that the window, the margin and the retries happen within
 * a test's run; the logic is the same as with the defaults. */
#define FAST                                                                          \
	"order_ttl = 30s\npay_margin = 5s\nquery_every = 300ms\npay_window = 20s\n"   \
	"query_backoff_min = 500ms\nquery_backoff_max = 2s\nrefund_retry = 300ms\n"   \
	"refund_retry_max = 2s\n"

static int start_world(void **state, const char *name, const char *payment_ini)
{
	kp_world *w = calloc(1, sizeof(*w));
	*state = w;
	if (w_setup(w, name) != 0 || w_start_hostsim(w, NULL) != 0 ||
	    w_start_daemon(w, payment_ini) != 0) {
		fprintf(stderr, "world %s did not start (logs in %s)\n", name, w->dir);
		return -1;
	}
	return 0;
}

static int stop_world(void **state)
{
	kp_world *w = *state;
	w_teardown(w);
	free(w);
	return 0;
}

static const char *jstr(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : "";
}

static int64_t jint(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

static void create_order(kp_world *w, const char *key, int64_t amount, char *order_id)
{
	char body[256], out[4096];
	snprintf(body, sizeof(body), "{\"dedup_key\":\"%s\",\"amount\":%lld}", key, (long long)amount);
	assert_int_equal(w_coap(w, "post", "orders", body, out, sizeof(out)), 200);
	cJSON *o = cJSON_Parse(out);
	assert_non_null(o);
	assert_string_equal(jstr(o, "status"), "pending");
	snprintf(order_id, 65, "%s", jstr(o, "order_id"));
	assert_true(order_id[0] != '\0');
	cJSON_Delete(o);
}

/* POST /orders/{id}/pay; returns the CoAP code and the attempt id. */
static int pay(kp_world *w, const char *order_id, const char *channel, char *attempt_id, char *out,
	       size_t cap)
{
	char path[128], body[64];
	snprintf(path, sizeof(path), "orders/%s/pay", order_id);
	snprintf(body, sizeof(body), "{\"channel\":\"%s\"}", channel);
	int code = w_coap(w, "post", path, body, out, cap);
	attempt_id[0] = '\0';
	cJSON *o = cJSON_Parse(out);
	if (o)
		snprintf(attempt_id, 65, "%s", jstr(o, "attempt_id"));
	cJSON_Delete(o);
	return code;
}

static void sim(kp_world *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sim(kp_world *w, const char *fmt, ...)
{
	char line[512], out[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	assert_int_equal(w_sim(w, line, out, sizeof(out)), 0);
	if (!strstr(out, "\"ok\":true"))
		fail_msg("sim %s: %s", line, out);
}

/* The host ledger's view of one order: captured and refunded amounts. */
static void ledger_order(kp_world *w, const char *order_id, int64_t *captures, int64_t *net)
{
	cJSON *l = w_ledger(w);
	assert_non_null(l);
	*captures = 0;
	*net = 0;
	const cJSON *o;
	cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(l, "orders")) {
		if (strcmp(jstr(o, "order_id"), order_id) == 0) {
			*captures = jint(o, "captures");
			*net = jint(o, "net");
		}
	}
	cJSON_Delete(l);
}

static int64_t sqlf(kp_world *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int64_t sqlf(kp_world *w, const char *fmt, ...)
{
	char sql[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	return w_sql_int(w, sql);
}

/* Wait until a journal count reaches want; true if it did in time. */
static bool wait_sql(kp_world *w, int64_t want, int timeout_ms, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static bool wait_sql(kp_world *w, int64_t want, int timeout_ms, const char *fmt, ...)
{
	char sql[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	for (int waited = 0; waited <= timeout_ms; waited += 50) {
		if (w_sql_int(w, sql) == want)
			return true;
		usleep(50000);
	}
	return false;
}

static void sell_and_pay(kp_world *w, const char *key, int64_t amount, char *order_id, char *attempt_id)
{
	char out[4096];
	create_order(w, key, amount, order_id);
	assert_int_equal(pay(w, order_id, "card", attempt_id, out, sizeof(out)), 200);
	assert_true(attempt_id[0] != '\0');
	sim(w, "{\"cmd\":\"pay\",\"attempt_id\":\"%s\"}", attempt_id);
	cJSON *o = w_wait_order(w, order_id, "paid", 5000);
	assert_non_null(o);
	assert_string_equal(jstr(o, "status"), "paid");
	cJSON_Delete(o);
}

/* ---- scenarios ---- */

static void test_sale_end_to_end(void **state)
{
	kp_world *w = *state;
	char order_id[65], attempt_id[65], out[8192];
	sell_and_pay(w, "e2e-sale-1", 250, order_id, attempt_id);
	char args[256];
	snprintf(args, sizeof(args), "order vend %s success", order_id);
	assert_int_equal(w_ctl(w, args, out, sizeof(out)), 0);
	cJSON *o = w_wait_order(w, order_id, "fulfilled", 2000);
	assert_string_equal(jstr(o, "status"), "fulfilled");
	cJSON_Delete(o);
	assert_int_equal(sqlf(w, "SELECT count(*) FROM confirmations WHERE attempt_id='%s'", attempt_id), 1);
	assert_int_equal(sqlf(w, "SELECT count(*) FROM attempts WHERE attempt_id='%s' AND state='succeeded'",
			      attempt_id), 1);
	int64_t captures, net;
	ledger_order(w, order_id, &captures, &net);
	assert_int_equal(captures, 1);
	assert_int_equal(net, 250);
	assert_int_equal(w_journal_check(w), 0);
}

static void test_double_tap_one_order(void **state)
{
	kp_world *w = *state;
	const char *body = "{\"dedup_key\":\"tap-1\",\"amount\":120}";
	char out1[2048], out2[2048];
	assert_int_equal(w_coap(w, "post", "orders", body, out1, sizeof(out1)), 200);
	assert_int_equal(w_coap(w, "post", "orders", body, out2, sizeof(out2)), 200);
	cJSON *a = cJSON_Parse(out1), *b = cJSON_Parse(out2);
	assert_string_equal(jstr(a, "order_id"), jstr(b, "order_id"));
	assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "duplicated")));
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "duplicated")));
	cJSON_Delete(a);
	cJSON_Delete(b);
	assert_int_equal(w_sql_int(w, "SELECT count(*) FROM orders WHERE dedup_key='tap-1'"), 1);
}

static void test_same_key_other_amount_conflict(void **state)
{
	kp_world *w = *state;
	char out[2048];
	assert_int_equal(w_coap(w, "post", "orders", "{\"dedup_key\":\"cx-1\",\"amount\":100}", out, sizeof(out)), 200);
	int64_t events = w_sql_int(w, "SELECT count(*) FROM events");
	assert_int_equal(w_coap(w, "post", "orders", "{\"dedup_key\":\"cx-1\",\"amount\":999}", out, sizeof(out)), 409);
	assert_non_null(strstr(out, "\"error\":\"conflict\""));
	assert_int_equal(w_sql_int(w, "SELECT amount FROM orders WHERE dedup_key='cx-1'"), 100);
	assert_int_equal(w_sql_int(w, "SELECT count(*) FROM events"), events);
}

static void test_repay_after_failed_attempt(void **state)
{
	kp_world *w = *state;
	char order_id[65], a1[65], a2[65], out[4096];
	create_order(w, "repay-1", 330, order_id);
	assert_int_equal(pay(w, order_id, "card", a1, out, sizeof(out)), 200);
	sim(w, "{\"cmd\":\"fail\",\"attempt_id\":\"%s\"}", a1);
	assert_true(wait_sql(w, 1, 5000, "SELECT count(*) FROM attempts WHERE attempt_id='%s' AND state='failed'", a1));
	assert_int_equal(pay(w, order_id, "qr", a2, out, sizeof(out)), 200);
	assert_string_not_equal(a1, a2);
	sim(w, "{\"cmd\":\"pay\",\"attempt_id\":\"%s\"}", a2);
	cJSON *o = w_wait_order(w, order_id, "paid", 5000);
	assert_string_equal(jstr(o, "status"), "paid");
	cJSON_Delete(o);
	int64_t captures, net;
	ledger_order(w, order_id, &captures, &net);
	assert_int_equal(captures, 1);
	assert_int_equal(net, 330);
}

static void test_pay_inside_margin_is_expired(void **state)
{
	kp_world *w = *state;
	char order_id[65], a[65], out[4096];
	create_order(w, "late-1", 150, order_id);
	sleep(3); /* order_ttl 5s, pay_margin 3s: the pay deadline has passed */
	assert_int_equal(pay(w, order_id, "card", a, out, sizeof(out)), 409);
	assert_non_null(strstr(out, "\"error\":\"expired\""));
	assert_int_equal(sqlf(w, "SELECT count(*) FROM attempts WHERE order_id='%s'", order_id), 0);
	/* And the order itself expires; it is never silently replaced. */
	cJSON *o = w_wait_order(w, order_id, "expired", 5000);
	assert_string_equal(jstr(o, "status"), "expired");
	cJSON_Delete(o);
	assert_int_equal(w_sql_int(w, "SELECT count(*) FROM orders"), 1);
}

static void test_two_channels_both_paid(void **state)
{
	kp_world *w = *state;
	char order_id[65], a1[65], out[4096];
	create_order(w, "two-1", 480, order_id);
	assert_int_equal(pay(w, order_id, "card", a1, out, sizeof(out)), 200);
	/* The customer pays on the card and on the phone: two captures. */
	sim(w, "{\"cmd\":\"pay_order_twice\",\"order_id\":\"%s\"}", order_id);
	assert_true(wait_sql(w, 1, 10000, "SELECT count(*) FROM refunds WHERE state='refunded'"));
	cJSON *o = w_wait_order(w, order_id, "paid", 2000);
	assert_string_equal(jstr(o, "status"), "paid");
	cJSON_Delete(o);
	assert_int_equal(sqlf(w, "SELECT count(*) FROM attempts WHERE order_id='%s' AND state='succeeded'", order_id), 1);
	assert_int_equal(w_sql_int(w, "SELECT count(*) FROM refunds WHERE state='refunded'"), 1);
	int64_t captures, net;
	ledger_order(w, order_id, &captures, &net);
	assert_int_equal(captures, 2);
	assert_int_equal(net, 480); /* one kept, one given back */
	assert_int_equal(w_journal_check(w), 0);
}

static void test_confirm_delivered_five_times(void **state)
{
	kp_world *w = *state;
	char order_id[65], a[65], out[4096];
	sim(w, "{\"cmd\":\"fault\",\"fault\":\"duplicate_confirms\",\"count\":%s}", "4");
	create_order(w, "dup5-1", 200, order_id);
	assert_int_equal(pay(w, order_id, "card", a, out, sizeof(out)), 200);
	int64_t events_before = sqlf(w, "SELECT count(*) FROM events WHERE record_id='%s'", a);
	sim(w, "{\"cmd\":\"pay\",\"attempt_id\":\"%s\"}", a);
	sim(w, "{\"cmd\":\"redeliver\"}");
	sim(w, "{\"cmd\":\"redeliver\"}");
	cJSON *o = w_wait_order(w, order_id, "paid", 5000);
	assert_string_equal(jstr(o, "status"), "paid");
	cJSON_Delete(o);
	sleep(1);
	assert_int_equal(w_sql_int(w, "SELECT count(*) FROM confirmations"), 1);
	/* one move paying -> succeeded for the attempt, whatever the redeliveries */
	assert_int_equal(sqlf(w, "SELECT count(*) FROM events WHERE record_id='%s'", a), events_before + 1);
	cJSON *l = w_ledger(w);
	const cJSON *c;
	int acked = 0;
	cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(l, "confirms"))
		acked += cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "acked"));
	cJSON_Delete(l);
	assert_int_equal(acked, 1);
}

/* The daemon's count of requests sent to the host (GET /metrics). */
static int64_t host_requests_sent(kp_world *w)
{
	char out[8192];
	assert_int_equal(w_coap(w, "get", "metrics", NULL, out, sizeof(out)), 200);
	cJSON *m = cJSON_Parse(out);
	assert_non_null(m);
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(m, "host"), "requests_sent");
	assert_true(cJSON_IsNumber(n));
	int64_t v = (int64_t)n->valuedouble;
	cJSON_Delete(m);
	return v;
}

static void test_no_confirm_queries_then_cancel(void **state)
{
	kp_world *w = *state;
	char order_id[65], a[65], out[4096];
	create_order(w, "quiet-1", 90, order_id);
	int64_t sent = host_requests_sent(w);
	assert_int_equal(pay(w, order_id, "card", a, out, sizeof(out)), 200);
	/* pay_window 2s: nobody pays, so the kiosk queries (every 300 ms), then cancels. */
	assert_true(wait_sql(w, 1, 10000, "SELECT count(*) FROM attempts WHERE attempt_id='%s' AND state='canceled'", a));
	/* create, at least 3 queries (every 300 ms in a 2 s window), cancel: the
	 * queries are planned in memory, so the journal's tries do not count them
	 * (test_engine checks that they write nothing) */
	assert_true(host_requests_sent(w) - sent >= 5);
	cJSON *l = w_ledger(w);
	const cJSON *p;
	const char *status = "";
	cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(l, "payments"))
		if (strcmp(jstr(p, "attempt_id"), a) == 0)
			status = jstr(p, "status");
	assert_string_equal(status, "canceled");
	cJSON_Delete(l);
}

static void test_cancel_races_capture(void **state)
{
	kp_world *w = *state;
	char order_id[65], a1[65], a2[65], out[4096];
	create_order(w, "race-1", 270, order_id);
	assert_int_equal(pay(w, order_id, "card", a1, out, sizeof(out)), 200);
	/* The card is captured but its confirm is lost; the customer then picks QR. */
	sim(w, "{\"cmd\":\"fault\",\"fault\":\"drop_confirms\",\"count\":%s}", "1");
	sim(w, "{\"cmd\":\"pay\",\"attempt_id\":\"%s\"}", a1);
	int code = pay(w, order_id, "qr", a2, out, sizeof(out));
	/* The cancel lost the race: the card payment stands, no QR attempt. */
	assert_int_equal(code, 409);
	assert_non_null(strstr(out, "\"error\":\"state\""));
	cJSON *o = w_wait_order(w, order_id, "paid", 3000);
	assert_string_equal(jstr(o, "status"), "paid");
	cJSON_Delete(o);
	assert_int_equal(sqlf(w, "SELECT count(*) FROM attempts WHERE order_id='%s'", order_id), 1);
	assert_int_equal(sqlf(w, "SELECT count(*) FROM attempts WHERE attempt_id='%s' AND state='succeeded'", a1), 1);
}

static void test_orphan_confirm_refunded(void **state)
{
	kp_world *w = *state;
	char order_id[65], a[65], out[4096], line[256];
	create_order(w, "orphan-1", 610, order_id);
	assert_int_equal(pay(w, order_id, "card", a, out, sizeof(out)), 200);
	snprintf(line, sizeof(line), "{\"cmd\":\"orphan\",\"order_id\":\"%s\",\"amount\":610}", order_id);
	assert_int_equal(w_sim(w, line, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "\"ok\":true"));
	assert_true(wait_sql(w, 1, 10000, "SELECT count(*) FROM refunds WHERE reason='orphan' AND state='refunded'"));
	/* The real attempt is untouched by the orphan. */
	assert_int_equal(sqlf(w, "SELECT count(*) FROM attempts WHERE attempt_id='%s' AND state='paying'", a), 1);
	int64_t captures, net;
	ledger_order(w, order_id, &captures, &net);
	assert_int_equal(captures, 1);
	assert_int_equal(net, 0);
}

static void test_refund_reply_lost_retried(void **state)
{
	kp_world *w = *state;
	char order_id[65], a[65], out[4096];
	sell_and_pay(w, "lost-refund-1", 440, order_id, a);
	/* The host refunds but the connection drops before the answer. */
	sim(w, "{\"cmd\":\"fault\",\"fault\":\"close_after_handling\",\"op\":\"refund\",\"count\":%s}", "1");
	char args[256];
	snprintf(args, sizeof(args), "order vend %s failure", order_id);
	assert_int_equal(w_ctl(w, args, out, sizeof(out)), 0);
	assert_true(wait_sql(w, 1, 15000, "SELECT count(*) FROM refunds WHERE reason='vend_failed' AND state='refunded'"));
	assert_true(w_sql_int(w, "SELECT tries FROM refunds") >= 2); /* it was sent again */
	cJSON *l = w_ledger(w);
	int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(l, "refunds"));
	cJSON_Delete(l);
	assert_int_equal(n, 1); /* refunded once, same refund_id */
	int64_t captures, net;
	ledger_order(w, order_id, &captures, &net);
	assert_int_equal(net, 0);
	cJSON *o = w_wait_order(w, order_id, "fulfill_failed", 1000);
	assert_string_equal(jstr(o, "status"), "fulfill_failed");
	cJSON_Delete(o);
}

static bool host_down(kp_world *w, void *arg)
{
	(void)arg;
	char out[2048];
	return w_coap(w, "get", "health", NULL, out, sizeof(out)) == 200 && strstr(out, "\"host\":\"down\"");
}

static void test_host_down_at_pay(void **state)
{
	kp_world *w = *state;
	char order_id[65], a[65], out[4096];
	create_order(w, "down-1", 75, order_id);
	w_stop_hostsim(w);
	assert_true(w_wait(host_down, w, NULL, 5000));
	assert_int_equal(pay(w, order_id, "card", a, out, sizeof(out)), 503);
	assert_non_null(strstr(out, "\"error\":\"disconnected\""));
	assert_int_equal(sqlf(w, "SELECT count(*) FROM attempts WHERE order_id='%s'", order_id), 0);
	/* Back up: the same order can be paid. */
	assert_int_equal(w_start_hostsim(w, NULL), 0);
	for (int i = 0; i < 100 && host_down(w, NULL); i++)
		usleep(100000);
	assert_int_equal(pay(w, order_id, "card", a, out, sizeof(out)), 200);
}

static void test_vend_failure_refunds(void **state)
{
	kp_world *w = *state;
	char order_id[65], a[65], out[4096];
	sell_and_pay(w, "vendfail-1", 199, order_id, a);
	char args[256];
	snprintf(args, sizeof(args), "order vend %s failure", order_id);
	assert_int_equal(w_ctl(w, args, out, sizeof(out)), 0);
	assert_true(wait_sql(w, 1, 10000, "SELECT count(*) FROM attempts WHERE attempt_id='%s' AND state='refunded'", a));
	int64_t captures, net;
	ledger_order(w, order_id, &captures, &net);
	assert_int_equal(captures, 1);
	assert_int_equal(net, 0);
	assert_int_equal(w_journal_check(w), 0);
}

static void test_kill9_mid_sale_replayed(void **state)
{
	kp_world *w = *state;
	char order_id[65], a[65], out[4096];
	create_order(w, "kill-1", 380, order_id);
	assert_int_equal(pay(w, order_id, "card", a, out, sizeof(out)), 200);
	/* Power cut while paying; the customer pays while the kiosk is down. */
	assert_int_equal(w_stop_daemon(w, SIGKILL), -SIGKILL);
	sim(w, "{\"cmd\":\"fault\",\"fault\":\"drop_confirms\",\"count\":%d}", 100);
	sim(w, "{\"cmd\":\"pay\",\"attempt_id\":\"%s\"}", a);
	/* Boot: the attempt is replayed with its own id (a query), never a new one. */
	assert_int_equal(w_start_daemon(w, FAST), 0);
	cJSON *o = w_wait_order(w, order_id, "paid", 5000);
	assert_string_equal(jstr(o, "status"), "paid");
	cJSON_Delete(o);
	assert_int_equal(sqlf(w, "SELECT count(*) FROM attempts WHERE order_id='%s'", order_id), 1);
	cJSON *l = w_ledger(w);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(l, "payments")), 1);
	cJSON_Delete(l);
	assert_int_equal(w_journal_check(w), 0);
}

static void test_kill9_paid_not_vended_refunded(void **state)
{
	kp_world *w = *state;
	char order_id[65], a[65];
	sell_and_pay(w, "kill-2", 520, order_id, a);
	/* Power cut between "paid" and the vend outcome: the default policy refunds. */
	assert_int_equal(w_stop_daemon(w, SIGKILL), -SIGKILL);
	assert_int_equal(w_start_daemon(w, FAST), 0);
	assert_true(wait_sql(w, 1, 10000, "SELECT count(*) FROM refunds WHERE reason='power_cut' AND state='refunded'"));
	cJSON *o = w_wait_order(w, order_id, "fulfill_failed", 2000);
	assert_string_equal(jstr(o, "status"), "fulfill_failed");
	cJSON_Delete(o);
	int64_t captures, net;
	ledger_order(w, order_id, &captures, &net);
	assert_int_equal(captures, 1);
	assert_int_equal(net, 0);
}

/* The whole file (NULL if unreadable); *len its size. */
static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = NULL;
	size_t cap = 0;
	*len = 0;
	for (;;) {
		if (*len == cap) {
			cap = cap ? cap * 2 : 65536;
			char *n = realloc(buf, cap);
			assert_non_null(n);
			buf = n;
		}
		size_t got = fread(buf + *len, 1, cap - *len, f);
		*len += got;
		if (got == 0)
			break;
	}
	fclose(f);
	return buf;
}

/* The journal is checked beside the running service (so a big one does not
 * delay the first sale); a damaged one stops it with exit 1, says why, and is
 * left as it was for a technician. */
static void test_damaged_journal_stops_service(void **state)
{
	kp_world *w = *state;
	char order_id[65];
	for (int i = 0; i < 40; i++) {
		char key[32];
		snprintf(key, sizeof(key), "dmg-%d", i);
		create_order(w, key, 100 + i, order_id);
	}
	assert_int_equal(w_stop_daemon(w, SIGTERM), 0); /* clean: all in the main file */
	/* Garble a page of the event log: the start reads the records (recovery),
	 * never the history, so only the check beside the service can see it.
	 * (Damage to what the start reads stops it at once: test_journal.) */
	int64_t page = w_sql_int(w, "SELECT max(pageno) FROM dbstat WHERE name='events' AND pagetype='leaf'");
	int64_t page_size = w_sql_int(w, "PRAGMA page_size");
	assert_true(page > 1 && page_size >= 512);
	size_t len = 0, len2 = 0;
	FILE *f = fopen(w->journal, "r+b");
	assert_non_null(f);
	assert_int_equal(fseek(f, (long)((page - 1) * page_size), SEEK_SET), 0);
	for (int64_t i = 0; i < page_size; i++)
		fputc(0x5A ^ (int)(i & 0xFF), f);
	fclose(f);
	char *before = slurp(w->journal, &len);
	assert_non_null(before);

	(void)w_start_daemon(w, FAST); /* up or not: the check ends it either way */
	assert_int_equal(w_stop_daemon(w, 0), 1); /* signal 0: only wait for its exit */
	size_t loglen = 0;
	char *log = slurp(w->daemon_log, &loglen);
	assert_non_null(log);
	log[loglen ? loglen - 1 : 0] = '\0';
	assert_non_null(strstr(log, "failed its quick_check"));
	assert_non_null(strstr(log, "stopping; the file is left as it is for a technician"));
	free(log);
	char *after = slurp(w->journal, &len2);
	assert_non_null(after);
	assert_int_equal(len2, len);
	assert_memory_equal(after, before, len);
	free(before);
	free(after);
}

#define WORLD(fn, name, ini)                                                        \
	static int setup_##fn(void **state) { return start_world(state, name, ini); }

WORLD(sale, "sale", FAST)
WORLD(margin, "margin", "order_ttl = 5s\npay_margin = 3s\nquery_every = 300ms\npay_window = 2s\n")
WORLD(quiet, "quiet", "query_every = 300ms\npay_window = 2s\nquery_backoff_min = 300ms\n")

#define T(fn, setup) cmocka_unit_test_setup_teardown(fn, setup_##setup, stop_world)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_sale_end_to_end, sale),
		T(test_double_tap_one_order, sale),
		T(test_same_key_other_amount_conflict, sale),
		T(test_repay_after_failed_attempt, sale),
		T(test_pay_inside_margin_is_expired, margin),
		T(test_two_channels_both_paid, sale),
		T(test_confirm_delivered_five_times, sale),
		T(test_no_confirm_queries_then_cancel, quiet),
		T(test_cancel_races_capture, sale),
		T(test_orphan_confirm_refunded, sale),
		T(test_refund_reply_lost_retried, sale),
		T(test_host_down_at_pay, sale),
		T(test_vend_failure_refunds, sale),
		T(test_kill9_mid_sale_replayed, sale),
		T(test_damaged_journal_stops_service, sale),
		T(test_kill9_paid_not_vended_refunded, sale),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
