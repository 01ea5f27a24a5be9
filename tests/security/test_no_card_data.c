/* test_no_card_data.c — issue 9's card-number scan, end to end: the real
 * kioskpayd with kp-hostsim (and kp-vmcsim on a pty for MDB when it is
 * built). Luhn-valid card numbers are pushed through every input — API
 * fields (dedup_key, items, channel; plain, grouped, JSON-escaped), kioskctl,
 * host messages (a confirm's attempt_id and amount), the config file — next
 * to a real sale (and an MDB vend), and each must be refused. Then the
 * journal, its -wal and -shm (while running and after stop), the daemon's log
 * and `kioskctl journal export` are scanned with the detector every edge uses
 * (kp_text_has_pan) and for the pushed digits themselves: nothing may be
 * found. The simulator's own ledger, which did store what it sent, is the
 * positive control of the scan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "kp_pan.h"

#define FAST                                                                          \
	"order_ttl = 60s\npay_margin = 5s\nquery_every = 300ms\npay_window = 20s\n"   \
	"query_backoff_min = 500ms\nquery_backoff_max = 2s\nrefund_retry = 300ms\n"   \
	"refund_retry_max = 2s\n"

/* Published test card numbers (Luhn-valid), one per brand and length. */
static const char *const pans[] = {
	"4111111111111111",    /* Visa 16 */
	"4222222222222",       /* Visa 13 */
	"5555555555554444",    /* Mastercard */
	"2223003122003222",    /* Mastercard 2-series */
	"378282246310005",     /* Amex 15 */
	"6011111111111117",    /* Discover */
	"3530111333300000",    /* JCB */
	"6759649826438453",    /* Maestro */
	"4000000000000000006", /* Visa 19 */
};
#define NPANS (sizeof(pans) / sizeof(pans[0]))

static unsigned pushed;      /* card numbers pushed in */
static unsigned refused;     /* ... and refused where they came in */

static void msleep(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* ---------- the scan ---------- */

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	*len = 0;
	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0) {
		long n = ftell(f);
		if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
			*len = fread(buf, 1, (size_t)n, f);
			buf[*len] = '\0';
		}
	}
	fclose(f);
	return buf;
}

/* Hits in one file: card numbers by the detector, and the pushed digits
 * verbatim anywhere (glued to anything). -1 if the file is missing. */
static int scan_file(const char *path, bool verbose)
{
	size_t len;
	char *buf = slurp(path, &len);
	int hits = 0;
	if (!buf)
		return -1;
	if (kp_text_has_pan(buf, len)) {
		hits++;
		if (verbose)
			fprintf(stderr, "%s: holds a card number\n", path);
	}
	for (size_t i = 0; i < NPANS; i++) {
		size_t n = strlen(pans[i]);
		for (size_t k = 0; k + n <= len; k++) {
			if (memcmp(buf + k, pans[i], n) == 0) {
				hits++;
				if (verbose)
					fprintf(stderr, "%s: holds %s at %zu\n", path, pans[i], k);
				break;
			}
		}
	}
	free(buf);
	return hits;
}

/* ---------- the world ---------- */

struct fx {
	kp_world w;
	char ledger0[192];
	pid_t vmcsim;
	char pty[200];
	char vmcsim_log[200];
};

static bool host_up(kp_world *w, void *arg)
{
	(void)arg;
	char out[2048];
	return w_coap(w, "get", "health", NULL, out, sizeof(out)) == 200 && strstr(out, "\"host\":\"up\"");
}

static int64_t metric(kp_world *w, const char *group, const char *name)
{
	char out[8192];
	int64_t v = -1;
	if (w_coap(w, "get", "metrics", NULL, out, sizeof(out)) != 200)
		return -1;
	cJSON *j = cJSON_Parse(out);
	const cJSON *g = cJSON_GetObjectItemCaseSensitive(j, group);
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(g, name);
	if (cJSON_IsNumber(n))
		v = (int64_t)n->valuedouble;
	cJSON_Delete(j);
	return v;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char sections[512] = "";
	*state = f;
	if (w_setup(&f->w, "nocard") != 0 || w_start_hostsim(&f->w, NULL) != 0)
		return -1;
	snprintf(f->ledger0, sizeof(f->ledger0), "%s", f->w.ledger);
#ifdef KP_BIN_VMCSIM
	/* the VMC asks for item 11111 at 41.11: the digits an MDB frame can carry */
	snprintf(f->pty, sizeof(f->pty), "%s/mdb", f->w.dir);
	snprintf(f->vmcsim_log, sizeof(f->vmcsim_log), "%s/vmcsim.log", f->w.dir);
	f->vmcsim = fork();
	if (f->vmcsim == 0) {
		int fd = open(f->vmcsim_log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execl(KP_BIN_VMCSIM, KP_BIN_VMCSIM, "--pty", f->pty, "--framing", "pair", "--select",
		      "4111:11111:ok", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200 && access(f->pty, F_OK) != 0; i++)
		msleep(25);
	snprintf(sections, sizeof(sections), "[mdb]\ndevice = %s\nframing = pair\npatience = 20s\n", f->pty);
#endif
	if (w_start_daemon_ex(&f->w, FAST, sections) != 0) {
		fprintf(stderr, "kioskpayd did not start (logs in %s)\n", f->w.dir);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	if (f->vmcsim > 0) {
		kill(f->vmcsim, SIGTERM);
		waitpid(f->vmcsim, NULL, 0);
	}
	w_teardown(&f->w);
	free(f);
	return 0;
}

/* ---------- the inputs ---------- */

/* A real sale, so that the journal holds everything a sale writes (UUIDs,
 * the simulator's host_txn, timestamps): the scan must not cry wolf. */
static void real_sale(struct fx *f)
{
	char out[8192];
	int code = w_coap(&f->w, "post", "orders", "{\"dedup_key\":\"cart-1\",\"amount\":250,\"items\":[{\"sku\":\"cola\"}]}",
			  out, sizeof(out));
	assert_int_equal(code, 200); /* coap-client shows a 2.xx as its body alone */
	cJSON *o = cJSON_Parse(out);
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "order_id");
	assert_true(cJSON_IsString(id));
	char path[160], sim[256];
	snprintf(path, sizeof(path), "orders/%s/pay", id->valuestring);
	code = w_coap(&f->w, "post", path, "{\"channel\":\"qr\"}", out, sizeof(out));
	assert_int_equal(code, 200);
	snprintf(sim, sizeof(sim), "{\"cmd\":\"pay\",\"order_id\":\"%s\"}", id->valuestring);
	assert_int_equal(w_sim(&f->w, sim, out, sizeof(out)), 0);
	cJSON *paid = w_wait_order(&f->w, id->valuestring, "paid", 10000);
	assert_non_null(paid);
	cJSON_Delete(paid);
	snprintf(path, sizeof(path), "orders/%s/vend", id->valuestring);
	assert_int_equal(w_coap(&f->w, "post", path, "{\"result\":\"success\"}", out, sizeof(out)) / 100, 2);
	cJSON_Delete(o);
}

#ifdef KP_BIN_VMCSIM
/* The VMC's vend request becomes an order on channel mdb: pay it at the host. */
static void mdb_sale(struct fx *f)
{
	char out[16384];
	bool paid = false;
	for (int i = 0; i < 200 && !paid; i++) {
		assert_int_equal(w_sim(&f->w, "{\"cmd\":\"list\"}", out, sizeof(out)), 0);
		cJSON *j = cJSON_Parse(out);
		const cJSON *p;
		cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(j, "pending"))
		{
			const cJSON *ch = cJSON_GetObjectItemCaseSensitive(p, "channel");
			const cJSON *a = cJSON_GetObjectItemCaseSensitive(p, "attempt_id");
			if (cJSON_IsString(ch) && strcmp(ch->valuestring, "mdb") == 0 && cJSON_IsString(a)) {
				char cmd[256];
				snprintf(cmd, sizeof(cmd), "{\"cmd\":\"pay\",\"attempt_id\":\"%s\"}", a->valuestring);
				assert_int_equal(w_sim(&f->w, cmd, out, sizeof(out)), 0);
				paid = true;
			}
		}
		cJSON_Delete(j);
		if (!paid)
			msleep(50);
	}
	if (!paid)
		fail_msg("no MDB vend request reached the host (logs in %s)", f->w.dir);
	for (int i = 0; i < 200 && metric(&f->w, "orders", "fulfilled") < 2; i++)
		msleep(50);
	assert_int_equal(metric(&f->w, "orders", "fulfilled"), 2);
}
#endif

/* An API request that must be refused as a card number (nothing stored). */
static void api_refused(struct fx *f, const char *method, const char *path, const char *body)
{
	char out[4096];
	int code = w_coap(&f->w, method, path, body, out, sizeof(out));
	pushed++;
	if (code != 400 || !strstr(out, "like a card number"))
		fail_msg("%s /%s %s: want 4.00 \"looks like a card number\", got %d %s", method, path, body, code, out);
	refused++;
}

static void api_inputs(struct fx *f)
{
	char body[512], out[4096];
	for (size_t i = 0; i < NPANS; i++) {
		snprintf(body, sizeof(body), "{\"dedup_key\":\"%s\",\"amount\":100}", pans[i]);
		api_refused(f, "post", "orders", body);
		snprintf(body, sizeof(body), "{\"dedup_key\":\"k-%zu\",\"amount\":100,\"items\":[{\"note\":\"%s\"}]}", i,
			 pans[i]);
		api_refused(f, "post", "orders", body);
		snprintf(body, sizeof(body), "{\"dedup_key\":\"n-%zu\",\"amount\":100,\"items\":[{\"n\":%s}]}", i, pans[i]);
		api_refused(f, "post", "orders", body);
	}
	/* written as people write them, and behind a JSON escape */
	api_refused(f, "post", "orders", "{\"dedup_key\":\"4111-1111-1111-1111\",\"amount\":100}");
	api_refused(f, "post", "orders", "{\"dedup_key\":\"g\",\"amount\":1,\"items\":{\"card\":\"4111 1111 1111 1111\"}}");
	api_refused(f, "post", "orders", "{\"dedup_key\":\"e\",\"amount\":1,\"items\":[\"\\u0034111111111111111\"]}");
	api_refused(f, "post", "orders", "{\"dedup_key\":\"\\u0034111111111111111\",\"amount\":1}");

	/* the channel of a real order */
	int code = w_coap(&f->w, "post", "orders", "{\"dedup_key\":\"cart-2\",\"amount\":300}", out, sizeof(out));
	assert_int_equal(code, 200);
	cJSON *o = cJSON_Parse(out);
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "order_id");
	assert_true(cJSON_IsString(id));
	char path[160];
	snprintf(path, sizeof(path), "orders/%s/pay", id->valuestring);
	for (size_t i = 0; i < NPANS; i++) {
		snprintf(body, sizeof(body), "{\"channel\":\"%s\"}", pans[i]);
		api_refused(f, "post", path, body);
	}
	api_refused(f, "post", path, "{\"channel\":\"4111-1111-1111-1111\"}");
	cJSON_Delete(o);

	/* kioskctl passes them on and fails (exit 1) */
	for (size_t i = 0; i < 2; i++) {
		char args[256];
		snprintf(args, sizeof(args), "order create --dedup-key %s --amount 100", pans[i]);
		pushed++;
		int rc = w_ctl(&f->w, args, out, sizeof(out));
		if (rc != 1)
			fail_msg("kioskctl %s: exit %d, want 1: %s", args, rc, out);
		refused++;
	}
	/* a GET of such an id finds nothing and stores nothing */
	snprintf(path, sizeof(path), "orders/%s", pans[0]);
	assert_int_equal(w_coap(&f->w, "get", path, NULL, out, sizeof(out)), 404);
}

/* A confirm from the host carrying a card number: the link refuses the frame
 * (protocol error) and never acks it. Each push gets a fresh simulator (the
 * unacked confirm would come back after every hello and hide the next). */
static void host_refused(struct fx *f, int n, const char *orphan_fields)
{
	char cmd[512], out[4096];
	assert_true(w_wait(host_up, &f->w, NULL, 10000));
	int64_t before = metric(&f->w, "host", "protocol_errors");
	assert_true(before >= 0);
	snprintf(cmd, sizeof(cmd), "{\"cmd\":\"orphan\",\"order_id\":\"o-%d\",%s}", n, orphan_fields);
	assert_int_equal(w_sim(&f->w, cmd, out, sizeof(out)), 0);
	if (!strstr(out, "\"ok\":true"))
		fail_msg("kp-hostsim %s: %s", cmd, out);
	pushed++;
	int64_t after = before;
	for (int i = 0; i < 200 && after <= before; i++) {
		msleep(50);
		after = metric(&f->w, "host", "protocol_errors");
	}
	if (after <= before)
		fail_msg("the kiosk did not refuse %s (logs in %s)", cmd, f->w.dir);
	refused++;
	/* a new simulator with a new ledger; the old ledger is the positive control */
	w_stop_hostsim(&f->w);
	snprintf(f->w.ledger, sizeof(f->w.ledger), "%s/ledger-%d.db", f->w.dir, n + 1);
	assert_int_equal(w_start_hostsim(&f->w, NULL), 0);
}

static void host_inputs(struct fx *f)
{
	host_refused(f, 0, "\"amount\":100,\"attempt_id\":\"4111111111111111\"");
	host_refused(f, 1, "\"amount\":100,\"attempt_id\":\"4111-1111-1111-1111\"");
	host_refused(f, 2, "\"amount\":378282246310005");
	assert_true(w_wait(host_up, &f->w, NULL, 10000));
}

/* kioskpayd --check-config refuses a card number in any string setting. */
static void config_inputs(struct fx *f)
{
	static const char *const lines[] = {
		"[device]\nid = 4111111111111111\n",
		"[host]\nserver_name = 5555555555554444\n",
		"[journal]\npath = /var/lib/kioskpay/4111 1111 1111 1111.db\n",
		"[host]\nca = /etc/kioskpay/378282246310005.crt\n",
	};
	char path[256], cmd[600];
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		snprintf(path, sizeof(path), "%s/card-%zu.ini", f->w.dir, i);
		FILE *c = fopen(path, "w");
		assert_non_null(c);
		fputs(lines[i], c);
		fclose(c);
		snprintf(cmd, sizeof(cmd), "%s --check-config -c %s 2>&1 | grep -q 'looks like a card number'",
			 KP_BIN_KIOSKPAYD, path);
		pushed++;
		if (system(cmd) != 0)
			fail_msg("kioskpayd --check-config did not refuse: %s", lines[i]);
		refused++;
		unlink(path);
	}
}

/* ---------- the test ---------- */

static int scan_all(struct fx *f, const char *tag, char files[][256], size_t *nfiles)
{
	const char *suffix[] = {"", "-wal", "-shm"};
	int hits = 0;
	for (size_t i = 0; i < 3; i++) {
		char src[256];
		snprintf(src, sizeof(src), "%s%s", f->w.journal, suffix[i]);
		snprintf(files[*nfiles], 256, "%s/scan-%s-journal%s", f->w.dir, tag, suffix[i]);
		char cmd[600];
		snprintf(cmd, sizeof(cmd), "cp '%s' '%s' 2>/dev/null", src, files[*nfiles]);
		if (system(cmd) == 0) {
			hits += scan_file(files[*nfiles], true);
			(*nfiles)++;
		}
	}
	return hits;
}

static void test_no_card_data(void **state)
{
	struct fx *f = *state;
	char files[16][256];
	size_t nfiles = 0;

	real_sale(f);
#ifdef KP_BIN_VMCSIM
	mdb_sale(f);
#endif
	api_inputs(f);
	host_inputs(f);
	config_inputs(f);

	/* while running: the journal, its WAL and shared memory as they are */
	int hits = scan_all(f, "live", files, &nfiles);
	assert_int_equal(w_stop_daemon(&f->w, SIGTERM), 0);
	hits += scan_all(f, "stopped", files, &nfiles);
	assert_int_equal(w_journal_check(&f->w), 0);

	char cmd[600];
	snprintf(files[nfiles], 256, "%s/export.json", f->w.dir);
	snprintf(cmd, sizeof(cmd), "%s journal export %s > %s", KP_BIN_KIOSKCTL, f->w.journal, files[nfiles]);
	assert_int_equal(system(cmd), 0);
	hits += scan_file(files[nfiles++], true);
	snprintf(files[nfiles], 256, "%s", f->w.daemon_log);
	hits += scan_file(files[nfiles++], true);

	size_t bytes = 0;
	for (size_t i = 0; i < nfiles; i++) {
		size_t n;
		free(slurp(files[i], &n));
		bytes += n;
	}
	/* the scan can fail: the simulator stored the attempt_id it sent */
	char wal[256];
	snprintf(wal, sizeof(wal), "%s-wal", f->ledger0);
	assert_true(scan_file(f->ledger0, false) + scan_file(wal, false) > 0);

	fprintf(stderr, "card numbers: %u pushed, %u refused at the edge; scan of %zu files (%zu bytes): %d found\n",
		pushed, refused, nfiles, bytes, hits);
	assert_int_equal(refused, pushed);
	assert_int_equal(hits, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_no_card_data, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
