/* test_kioskctl.c — the real kioskctl binary on real journal files: init,
 * check, export (parsed as JSON and compared with the journal), a damaged copy
 * (exit 1, file untouched), broken invariants, usage errors (2), files it
 * cannot open (3), and --help for every command. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "journal.h"
#include "kp_rmtree.h"

#ifndef KIOSKCTL
#error "KIOSKCTL must name the kioskctl binary"
#endif

#define T0 1700000000000LL
#define OUT_MAX (1 << 20)

struct fixture {
	char dir[64];
	char path[128];
	kp_env env;
	kp_fake_world world;
	char *out; /* stdout of the last run */
	char err[4096];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->out = malloc(OUT_MAX);
	assert_non_null(f->out);
	snprintf(f->dir, sizeof(f->dir), "/tmp/kp-kioskctl-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/state/journal.db", f->dir);
	kp_env_init_fake(&f->env, &f->world, 3, T0);
	f->world.quiet = true;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	kp_rmtree(f->dir);
	free(f->out);
	free(f);
	return 0;
}

static size_t slurp(const char *path, char *buf, size_t cap)
{
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	size_t n = fread(buf, 1, cap - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	return n;
}

/* Run kioskctl with the given words (NULL-terminated); stdout into f->out,
 * stderr into f->err; returns the exit code. */
static int ctl(struct fixture *f, ...)
{
	char *argv[16];
	int argc = 0;
	argv[argc++] = (char *)KIOSKCTL;
	va_list ap;
	va_start(ap, f);
	for (const char *w; (w = va_arg(ap, const char *)) != NULL && argc < 15;)
		argv[argc++] = (char *)w;
	va_end(ap);
	argv[argc] = NULL;
	char out_path[128], err_path[128];
	snprintf(out_path, sizeof(out_path), "%s/stdout", f->dir);
	snprintf(err_path, sizeof(err_path), "%s/stderr", f->dir);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
			_exit(120);
		execv(argv[0], argv);
		_exit(121);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	slurp(out_path, f->out, OUT_MAX);
	slurp(err_path, f->err, sizeof(f->err));
	return WEXITSTATUS(status);
}

/* A journal with one paid-and-fulfilled sale and one orphan refund. */
static void fill(struct fixture *f, char *order_id, size_t cap)
{
	kp_journal *j = NULL;
	assert_int_equal(kp_journal_open(&j, f->path, 0, &f->env), KP_OK);
	kp_order_new on = {.order_id = "ord-1", .dedup_key = "cart-1", .amount = 250, .currency = "EUR",
			   .items = "[{\"sku\":\"cola\"}]", .now = T0, .expires_at = T0 + 300000};
	kp_order o;
	bool dup;
	assert_int_equal(kp_journal_order_create(j, &on, &o, &dup), KP_OK);
	kp_attempt_new an = {.attempt_id = "att-1", .order_id = "ord-1", .channel = "card",
			     .amount = 250, .now = T0 + 1, .next_check_at = T0 + 5000};
	kp_attempt a;
	assert_int_equal(kp_journal_attempt_begin(j, &an, &a), KP_OK);
	kp_confirmation c = {.host_txn = "txn-1", .seq = 1, .attempt_id = "att-1",
			     .status = KP_CONFIRM_SUCCEEDED, .amount = 250, .currency = "EUR",
			     .at = T0 + 2, .received_at = T0 + 3};
	bool already;
	assert_int_equal(kp_journal_begin(j), KP_OK);
	assert_int_equal(kp_journal_confirmation_record(j, &c, &already), KP_OK);
	kp_attempt_move m = {.from = KP_ATTEMPT_PAYING, .to = KP_ATTEMPT_SUCCEEDED, .host_txn = "txn-1",
			     .now = T0 + 3, .cause = "confirm"};
	assert_int_equal(kp_journal_attempt_move(j, "att-1", &m), KP_OK);
	assert_int_equal(kp_journal_order_move(j, "ord-1", KP_ORDER_PENDING, KP_ORDER_PAID, T0 + 3, "confirm"),
			 KP_OK);
	assert_int_equal(kp_journal_commit(j), KP_OK);
	assert_int_equal(kp_journal_order_move(j, "ord-1", KP_ORDER_PAID, KP_ORDER_FULFILLED, T0 + 4, "vend"),
			 KP_OK);
	kp_refund_new rn = {.refund_id = "ref-1", .attempt_id = "att-x", .host_txn = "txn-x",
			    .amount = 100, .reason = KP_REASON_ORPHAN, .now = T0 + 5, .next_check_at = T0 + 5};
	kp_refund r;
	assert_int_equal(kp_journal_refund_create(j, &rn, &r), KP_OK);
	kp_journal_close(j);
	snprintf(order_id, cap, "%s", o.order_id);
}

static void test_init_check_export(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(ctl(f, "journal", "init", f->path, NULL), 0);
	assert_non_null(strstr(f->out, "ok: journal"));
	struct stat sb;
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(ctl(f, "journal", "check", f->path, NULL), 0);
	assert_non_null(strstr(f->out, "ok: 0 orders"));

	char order_id[KP_ID_SIZE];
	fill(f, order_id, sizeof(order_id));
	assert_int_equal(ctl(f, "journal", "check", f->path, NULL), 0);
	assert_non_null(strstr(f->out, "ok: 1 orders, 1 attempts"));
	assert_string_equal(f->err, "");

	assert_int_equal(ctl(f, "--json", "journal", "check", f->path, NULL), 0);
	cJSON *chk = cJSON_Parse(f->out);
	assert_non_null(chk);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(chk, "ok")));
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(chk, "problems")), 0);
	assert_int_equal(cJSON_GetObjectItem(chk, "refunds_open")->valueint, 1);
	cJSON_Delete(chk);

	assert_int_equal(ctl(f, "journal", "export", f->path, NULL), 0);
	cJSON *x = cJSON_Parse(f->out);
	assert_non_null(x);
	assert_int_equal(cJSON_GetObjectItem(x, "schema_version")->valueint, KP_JOURNAL_SCHEMA_VERSION);
	cJSON *orders = cJSON_GetObjectItem(x, "orders");
	assert_int_equal(cJSON_GetArraySize(orders), 1);
	cJSON *o = cJSON_GetArrayItem(orders, 0);
	assert_string_equal(cJSON_GetObjectItem(o, "order_id")->valuestring, order_id);
	assert_string_equal(cJSON_GetObjectItem(o, "state")->valuestring, "fulfilled");
	assert_string_equal(cJSON_GetObjectItem(o, "items")->valuestring, "[{\"sku\":\"cola\"}]");
	assert_true(cJSON_GetObjectItem(o, "created_at")->valuedouble == (double)T0);
	cJSON *atts = cJSON_GetObjectItem(o, "attempts");
	assert_int_equal(cJSON_GetArraySize(atts), 1);
	cJSON *a = cJSON_GetArrayItem(atts, 0);
	assert_string_equal(cJSON_GetObjectItem(a, "state")->valuestring, "succeeded");
	assert_string_equal(cJSON_GetObjectItem(a, "host_txn")->valuestring, "txn-1");
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "refunds")), 0);
	cJSON *orphans = cJSON_GetObjectItem(x, "orphan_refunds");
	assert_int_equal(cJSON_GetArraySize(orphans), 1);
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(orphans, 0), "order_id")));
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(x, "confirmations")), 1);
	/* order created, attempt begun, confirmation, attempt succeeded, order paid,
	 * order fulfilled, refund created */
	cJSON *events = cJSON_GetObjectItem(x, "events");
	assert_int_equal(cJSON_GetArraySize(events), 7);
	cJSON *e5 = cJSON_GetArrayItem(events, 4);
	assert_string_equal(cJSON_GetObjectItem(e5, "kind")->valuestring, "order");
	assert_string_equal(cJSON_GetObjectItem(e5, "from")->valuestring, "pending");
	assert_string_equal(cJSON_GetObjectItem(e5, "to")->valuestring, "paid");
	cJSON_Delete(x);
}

static char *read_file(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	long n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	char *buf = malloc((size_t)n + 1);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	*len = (size_t)n;
	return buf;
}

static void test_check_finds_damage(void **state)
{
	struct fixture *f = *state;
	char order_id[KP_ID_SIZE];
	fill(f, order_id, sizeof(order_id));
	/* A damaged copy: exit 1 with a line that says so, the file untouched. */
	char copy[160];
	snprintf(copy, sizeof(copy), "%s/copy.db", f->dir);
	size_t len;
	char *good = read_file(f->path, &len);
	FILE *fp = fopen(copy, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(good, 1, len, fp), len);
	fclose(fp);
	free(good);
	int fd = open(copy, O_WRONLY);
	char junk[8192];
	memset(junk, 0x5A, sizeof(junk));
	assert_int_equal(pwrite(fd, junk, sizeof(junk), 4096), (ssize_t)sizeof(junk));
	close(fd);
	char *before = read_file(copy, &len);
	assert_int_equal(ctl(f, "journal", "check", copy, NULL), 1);
	assert_non_null(strstr(f->out, "integrity"));
	size_t len2;
	char *after = read_file(copy, &len2);
	assert_int_equal(len2, len);
	assert_memory_equal(before, after, len);
	free(before);
	free(after);
	assert_int_equal(ctl(f, "journal", "export", copy, NULL), 3);
	assert_non_null(strstr(f->err, "kioskctl journal export:"));

	/* A broken invariant behind the API's back: exit 1, one line naming it. */
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "UPDATE attempts SET state='failed'", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(ctl(f, "journal", "check", f->path, NULL), 1);
	assert_non_null(strstr(f->out, "is fulfilled with 0 kept successes"));
	assert_null(strchr(strchr(f->out, '\n') + 1, '\n')); /* exactly one line */
	assert_int_equal(ctl(f, "--json", "journal", "check", f->path, NULL), 1);
	cJSON *chk = cJSON_Parse(f->out);
	assert_non_null(chk);
	assert_true(cJSON_IsFalse(cJSON_GetObjectItem(chk, "ok")));
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(chk, "problems")), 1);
	cJSON_Delete(chk);
}

static void test_usage_and_open_errors(void **state)
{
	struct fixture *f = *state;
	char missing[160], future[160];
	snprintf(missing, sizeof(missing), "%s/none.db", f->dir);
	snprintf(future, sizeof(future), "%s/future.db", f->dir);
	struct {
		const char *words[5];
		int code;
		const char *err; /* in stderr */
	} cases[] = {
		{{NULL}, 2, "usage:"},
		{{"--frob", NULL}, 2, "unknown option --frob"},
		{{"--api", NULL}, 2, "--api needs"},
		{{"nonsense", NULL}, 2, "unknown command nonsense"},
		{{"journal", NULL}, 2, "missing command"},
		{{"journal", "nope", NULL}, 2, "unknown command nope"},
		{{"journal", "check", NULL}, 2, "PATH missing"},
		{{"journal", "check", "a", "b", NULL}, 2, "one PATH only"},
		{{"journal", "export", "--deep", "a", NULL}, 2, "unknown option --deep"},
		{{"journal", "check", missing, NULL}, 3, "No such file"},
		{{"journal", "export", missing, NULL}, 3, "not_found"},
		{{"journal", "check", future, NULL}, 3, "future_version"},
		{{"journal", "init", future, NULL}, 3, "newer kioskpay"},
	};
	assert_int_equal(ctl(f, "journal", "init", future, NULL), 0);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(future, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=99", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *const *w = cases[i].words;
		int code = ctl(f, w[0], w[0] ? w[1] : NULL, w[0] && w[1] ? w[2] : NULL,
			       w[0] && w[1] && w[2] ? w[3] : NULL, NULL);
		if (code != cases[i].code || !strstr(f->err, cases[i].err))
			fail_msg("case %zu: exit %d, stderr '%s'; want %d and '%s'", i, code, f->err,
				 cases[i].code, cases[i].err);
	}
	struct stat sb;
	assert_int_equal(stat(missing, &sb), -1); /* check and export never create */
}

static void test_help(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(ctl(f, "--help", NULL), 0);
	assert_non_null(strstr(f->out, "journal check PATH"));
	assert_non_null(strstr(f->out, "exit codes: 0 ok, 1"));
	const char *names[] = {"init", "check", "export"};
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(ctl(f, "journal", names[i], "--help", NULL), 0);
		char want[64];
		snprintf(want, sizeof(want), "usage: kioskctl [--json] journal %s PATH", names[i]);
		assert_non_null(strstr(f->out, want));
		assert_non_null(strstr(f->out, "exit codes:"));
	}
	assert_int_equal(ctl(f, "journal", "--help", NULL), 0);
	assert_non_null(strstr(f->out, "journal export PATH"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_init_check_export, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check_finds_damage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_usage_and_open_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_help, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
