/* test_journal_faults.c — SQLite I/O-error and out-of-memory countdown loops
 * over every journal transaction (SQLite's own OOM/ioerr loop style): the Nth
 * xWrite / xSync / xRead fails with SQLITE_IOERR (through the crash VFS), or
 * the Nth SQLite allocation fails, for N = 1, 2, ... until the operation runs
 * without meeting the fault. Each time: an error is returned, or KP_OK and the
 * change is there (never KP_OK with nothing written); an error leaves nothing
 * of the change (a group is all or nothing); the journal passes its check;
 * and the operation succeeds when retried. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crashvfs.h"
#include "journal.h"

#define T0 1800000000000LL
#define AMOUNT 250
#define N_MAX 5000

/* ---------- countdown malloc under SQLite ---------- */

static sqlite3_mem_methods real_mem;
static struct {
	bool armed;
	bool persist;
	uint64_t countdown; /* fail when it reaches 1 */
	uint64_t fired;
} oom;

static bool oom_now(void)
{
	if (!oom.armed)
		return false;
	if (oom.countdown > 1) {
		oom.countdown--;
		return false;
	}
	oom.fired++;
	if (!oom.persist)
		oom.armed = false;
	return true;
}

static void *m_malloc(int n)
{
	return oom_now() ? NULL : real_mem.xMalloc(n);
}

static void *m_realloc(void *p, int n)
{
	return oom_now() ? NULL : real_mem.xRealloc(p, n);
}

static void install_malloc(void)
{
	static sqlite3_mem_methods mine;
	if (mine.xMalloc)
		return;
	sqlite3_shutdown();
	if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &real_mem) != SQLITE_OK)
		abort();
	mine = real_mem;
	mine.xMalloc = m_malloc;
	mine.xRealloc = m_realloc;
	if (sqlite3_config(SQLITE_CONFIG_MALLOC, &mine) != SQLITE_OK || sqlite3_initialize() != SQLITE_OK)
		abort();
}

/* ---------- faults ---------- */

enum fault { F_WRITE, F_SYNC, F_READ, F_OOM, F__COUNT };
static const char *const fault_names[] = {"ioerr-write", "ioerr-sync", "ioerr-read", "oom"};

static void fault_arm(enum fault f, uint64_t n, bool persist)
{
	switch (f) {
	case F_WRITE: kp_crashvfs_ioerr_arm(KP_CVFS_WRITE, n, persist); break;
	case F_SYNC: kp_crashvfs_ioerr_arm(KP_CVFS_SYNC, n, persist); break;
	case F_READ: kp_crashvfs_ioerr_arm(KP_CVFS_READ, n, persist); break;
	default:
		oom.countdown = n;
		oom.persist = persist;
		oom.fired = 0;
		oom.armed = true;
		break;
	}
}

/* Disarm; how many times the fault fired. */
static uint64_t fault_disarm(enum fault f)
{
	if (f == F_OOM) {
		oom.armed = false;
		return oom.fired;
	}
	uint64_t fired = kp_crashvfs_ioerr_fired();
	for (int op = 0; op < KP_CVFS__OPS; op++)
		kp_crashvfs_ioerr_arm((kp_crashvfs_op)op, 0, false);
	return fired;
}

/* ---------- the journal under test ---------- */

struct ctx {
	char dir[64];
	char path[128];
	kp_env env;
	kp_fake_world world;
	kp_journal *j;
	kp_journal *other;  /* a second handle on the same file (a concurrent writer) */
	int64_t now;
	unsigned ambiguous; /* error returned, yet the change is there after a reopen */
};

static void reopen(struct ctx *c)
{
	kp_journal_close(c->j);
	c->j = NULL;
	kp_journal_opts o = {.vfs_name = KP_CRASHVFS_NAME};
	assert_int_equal(kp_journal_open_ex(&c->j, c->path, 0, &c->env, &o), KP_OK);
}

static void print_problem(void *arg, const char *problem)
{
	(void)arg;
	fprintf(stderr, "journal check: %s\n", problem);
}

static void check_journal(struct ctx *c)
{
	assert_int_equal(kp_journal_check(c->j, print_problem, NULL), KP_OK);
}

static int setup(void **state)
{
	install_malloc();
	struct ctx *c = calloc(1, sizeof(*c));
	snprintf(c->dir, sizeof(c->dir), "/tmp/kp-jfaults-XXXXXX");
	if (!mkdtemp(c->dir))
		return -1;
	snprintf(c->path, sizeof(c->path), "%s/journal.db", c->dir);
	kp_env_init_fake(&c->env, &c->world, 7, T0);
	c->world.quiet = true;
	c->env.log_level = KP_LOG_ERROR;
	c->now = T0;
	kp_crashvfs_config cfg;
	kp_crashvfs_config_init(&cfg);
	if (kp_crashvfs_register(&cfg, false) != KP_OK)
		return -1;
	kp_journal_opts o = {.vfs_name = KP_CRASHVFS_NAME};
	if (kp_journal_open_ex(&c->j, c->path, 0, &c->env, &o) != KP_OK ||
	    kp_journal_open_ex(&c->other, c->path, 0, &c->env, &o) != KP_OK)
		return -1;
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	kp_journal_close(c->j);
	kp_journal_close(c->other);
	kp_crashvfs_unregister();
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
	if (system(cmd) != 0)
		return -1;
	free(c);
	return 0;
}

/* ---------- records by iteration number k ---------- */

struct ids {
	char order[32], key[32], attempt[32], txn[32], refund[32];
};

static void ids_of(int k, struct ids *x)
{
	snprintf(x->order, sizeof(x->order), "o-%d", k);
	snprintf(x->key, sizeof(x->key), "k-%d", k);
	snprintf(x->attempt, sizeof(x->attempt), "a-%d", k);
	snprintf(x->txn, sizeof(x->txn), "t-%d", k);
	snprintf(x->refund, sizeof(x->refund), "r-%d", k);
}

static kp_err do_order(struct ctx *c, const struct ids *x)
{
	kp_order_new r = {.order_id = x->order, .dedup_key = x->key, .amount = AMOUNT, .currency = "EUR",
			  .items = "[{\"sku\":\"A1\"}]", .now = c->now, .expires_at = c->now + 300000};
	kp_order o;
	bool dup = false;
	kp_err err = kp_journal_order_create(c->j, &r, &o, &dup);
	if (err == KP_OK && dup)
		return KP_ERR_INTERNAL; /* the fresh key must not be a duplicate */
	return err;
}

static kp_err do_attempt(struct ctx *c, const struct ids *x)
{
	kp_attempt_new r = {.attempt_id = x->attempt, .order_id = x->order, .channel = "card",
			    .amount = AMOUNT, .now = c->now, .next_check_at = c->now + 5000};
	kp_attempt a;
	return kp_journal_attempt_begin(c->j, &r, &a);
}

static kp_err do_confirm(struct ctx *c, const struct ids *x)
{
	kp_confirmation cf;
	memset(&cf, 0, sizeof(cf));
	snprintf(cf.host_txn, sizeof(cf.host_txn), "%s", x->txn);
	snprintf(cf.attempt_id, sizeof(cf.attempt_id), "%s", x->attempt);
	snprintf(cf.currency, sizeof(cf.currency), "EUR");
	cf.seq = 1;
	cf.status = KP_CONFIRM_SUCCEEDED;
	cf.amount = AMOUNT;
	cf.at = c->now;
	cf.received_at = c->now;
	bool already = false;
	kp_err err = kp_journal_confirmation_record(c->j, &cf, &already);
	if (err == KP_OK && already)
		return KP_ERR_INTERNAL;
	return err;
}

static kp_err do_refund(struct ctx *c, const struct ids *x)
{
	kp_refund_new r = {.refund_id = x->refund, .order_id = x->order, .attempt_id = x->attempt,
			   .host_txn = x->txn, .amount = AMOUNT, .reason = KP_REASON_DUPLICATE,
			   .now = c->now, .next_check_at = c->now};
	kp_refund out;
	return kp_journal_refund_create(c->j, &r, &out);
}

static kp_err do_order_cancel(struct ctx *c, const struct ids *x)
{
	return kp_journal_order_move(c->j, x->order, KP_ORDER_PENDING, KP_ORDER_CANCELED, c->now, "test");
}

static kp_err do_attempt_cancel(struct ctx *c, const struct ids *x)
{
	kp_attempt_move m = {.from = KP_ATTEMPT_PAYING, .to = KP_ATTEMPT_CANCELING, .now = c->now,
			     .next_check_at = c->now + 1000, .count_try = true, .cause = "test"};
	return kp_journal_attempt_move(c->j, x->attempt, &m);
}

static kp_err do_refund_send(struct ctx *c, const struct ids *x)
{
	kp_refund_move m = {.from = KP_REFUND_PENDING, .to = KP_REFUND_SENT, .now = c->now,
			    .next_check_at = c->now + 5000, .count_try = true, .cause = "test"};
	return kp_journal_refund_move(c->j, x->refund, &m);
}

/* The engine's confirm path: confirmation + attempt succeeded + order paid, one txn. */
static kp_err do_confirm_group(struct ctx *c, const struct ids *x)
{
	kp_err err = kp_journal_begin(c->j);
	if (err != KP_OK)
		return err;
	err = do_confirm(c, x);
	if (err == KP_OK) {
		kp_attempt_move m = {.from = KP_ATTEMPT_PAYING, .to = KP_ATTEMPT_SUCCEEDED,
				     .host_txn = x->txn, .now = c->now, .cause = "confirm"};
		err = kp_journal_attempt_move(c->j, x->attempt, &m);
	}
	if (err == KP_OK)
		err = kp_journal_order_move(c->j, x->order, KP_ORDER_PENDING, KP_ORDER_PAID, c->now, "confirm");
	if (err == KP_OK)
		return kp_journal_commit(c->j);
	kp_journal_rollback(c->j);
	return err;
}

/* The one-request sale (kp_engine_order_pay): order + attempt paying, one txn. */
static kp_err do_order_pay_group(struct ctx *c, const struct ids *x)
{
	kp_err err = kp_journal_begin(c->j);
	if (err != KP_OK)
		return err;
	err = do_order(c, x);
	if (err == KP_OK)
		err = do_attempt(c, x);
	if (err == KP_OK)
		return kp_journal_commit(c->j);
	kp_journal_rollback(c->j);
	return err;
}

enum done { NOT_DONE, DONE, MIXED };

static enum done state_order(struct ctx *c, const struct ids *x)
{
	kp_order o;
	kp_err err = kp_journal_order_get(c->j, x->order, &o);
	assert_true(err == KP_OK || err == KP_ERR_NOT_FOUND);
	return err == KP_OK ? DONE : NOT_DONE;
}

static enum done state_attempt(struct ctx *c, const struct ids *x)
{
	kp_attempt a;
	kp_err err = kp_journal_attempt_get(c->j, x->attempt, &a);
	assert_true(err == KP_OK || err == KP_ERR_NOT_FOUND);
	return err == KP_OK ? DONE : NOT_DONE;
}

static enum done state_confirm(struct ctx *c, const struct ids *x)
{
	kp_confirmation cf;
	kp_err err = kp_journal_confirmation_get(c->j, x->txn, &cf);
	assert_true(err == KP_OK || err == KP_ERR_NOT_FOUND);
	return err == KP_OK ? DONE : NOT_DONE;
}

static enum done state_refund(struct ctx *c, const struct ids *x)
{
	kp_refund r;
	kp_err err = kp_journal_refund_get(c->j, x->refund, &r);
	assert_true(err == KP_OK || err == KP_ERR_NOT_FOUND);
	return err == KP_OK ? DONE : NOT_DONE;
}

static enum done state_order_canceled(struct ctx *c, const struct ids *x)
{
	kp_order o;
	assert_int_equal(kp_journal_order_get(c->j, x->order, &o), KP_OK);
	return o.state == KP_ORDER_CANCELED ? DONE : NOT_DONE;
}

static enum done state_attempt_canceling(struct ctx *c, const struct ids *x)
{
	kp_attempt a;
	assert_int_equal(kp_journal_attempt_get(c->j, x->attempt, &a), KP_OK);
	return a.state == KP_ATTEMPT_CANCELING ? DONE : NOT_DONE;
}

static enum done state_refund_sent(struct ctx *c, const struct ids *x)
{
	kp_refund r;
	assert_int_equal(kp_journal_refund_get(c->j, x->refund, &r), KP_OK);
	return r.state == KP_REFUND_SENT ? DONE : NOT_DONE;
}

static enum done state_group(struct ctx *c, const struct ids *x)
{
	kp_order o;
	kp_attempt a;
	assert_int_equal(kp_journal_order_get(c->j, x->order, &o), KP_OK);
	assert_int_equal(kp_journal_attempt_get(c->j, x->attempt, &a), KP_OK);
	bool conf = state_confirm(c, x) == DONE, att = a.state == KP_ATTEMPT_SUCCEEDED,
	     ord = o.state == KP_ORDER_PAID;
	int n = conf + att + ord;
	if (n != 0 && n != 3)
		fprintf(stderr, "group kept: confirmation %s, attempt %s (%s), order %s (%s)\n",
			conf ? "yes" : "no", att ? "yes" : "no", kp_attempt_state_str(a.state),
			ord ? "yes" : "no", kp_order_state_str(o.state));
	return n == 0 ? NOT_DONE : n == 3 ? DONE : MIXED;
}

static enum done state_order_pay_group(struct ctx *c, const struct ids *x)
{
	bool ord = state_order(c, x) == DONE, att = state_attempt(c, x) == DONE;
	if (ord != att)
		fprintf(stderr, "group kept: order %s, attempt %s\n", ord ? "yes" : "no", att ? "yes" : "no");
	return ord && att ? DONE : !ord && !att ? NOT_DONE : MIXED;
}

/* Prerequisites, made without faults. */
enum prep { P_NONE, P_ORDER, P_ATTEMPT, P_CONFIRM, P_REFUND };

static void prep(struct ctx *c, const struct ids *x, enum prep p)
{
	if (p >= P_ORDER)
		assert_int_equal(do_order(c, x), KP_OK);
	if (p >= P_ATTEMPT)
		assert_int_equal(do_attempt(c, x), KP_OK);
	if (p >= P_CONFIRM)
		assert_int_equal(do_confirm(c, x), KP_OK);
	if (p >= P_REFUND)
		assert_int_equal(do_refund(c, x), KP_OK);
}

static const struct op_case {
	const char *name;
	enum prep prep;
	kp_err (*run)(struct ctx *, const struct ids *);
	enum done (*state)(struct ctx *, const struct ids *);
} ops[] = {
	{"order create", P_NONE, do_order, state_order},
	{"order move", P_ORDER, do_order_cancel, state_order_canceled},
	{"attempt begin", P_ORDER, do_attempt, state_attempt},
	{"attempt move", P_ATTEMPT, do_attempt_cancel, state_attempt_canceling},
	{"confirmation record", P_ATTEMPT, do_confirm, state_confirm},
	{"refund create", P_CONFIRM, do_refund, state_refund},
	{"refund move", P_REFUND, do_refund_send, state_refund_sent},
	{"confirm group (confirmation+attempt+order)", P_ATTEMPT, do_confirm_group, state_group},
	{"order+attempt group (one-request sale)", P_NONE, do_order_pay_group, state_order_pay_group},
};

struct loop_stats {
	unsigned iterations, errors, ok_after_fault;
};

/* One countdown loop: op under fault f (persistent or not), N = 1.. until the
 * op no longer meets the fault. */
static void countdown(struct ctx *c, const struct op_case *op, enum fault f, bool persist, int *k,
		      struct loop_stats *ls)
{
	for (uint64_t n = 1;; n++) {
		assert_true(n < N_MAX);
		struct ids x;
		ids_of(++*k, &x);
		if (f == F_READ) {
			/* Made through the other handle: its commits make this
			 * handle drop its page cache, so that the op reads. */
			kp_journal *mine = c->j;
			c->j = c->other;
			prep(c, &x, op->prep);
			struct ids dummy;
			ids_of(1000000 + *k, &dummy);
			assert_int_equal(do_order(c, &dummy), KP_OK);
			c->j = mine;
		} else {
			prep(c, &x, op->prep);
		}
		c->now += 10;
		fault_arm(f, n, persist);
		kp_err err = op->run(c, &x);
		uint64_t fired = fault_disarm(f);
		ls->iterations++;
		enum done d = op->state(c, &x);
		if (d == MIXED)
			fail_msg("%s under %s N=%llu: half of a group kept (err %s)", op->name,
				 fault_names[f], (unsigned long long)n, kp_strerror(err));
		if (err == KP_OK) {
			if (d != DONE)
				fail_msg("%s under %s N=%llu: KP_OK with nothing written", op->name,
					 fault_names[f], (unsigned long long)n);
			ls->ok_after_fault += fired > 0;
		} else {
			ls->errors++;
			if (!fired)
				fail_msg("%s under %s N=%llu: %s without a fault", op->name, fault_names[f],
					 (unsigned long long)n, kp_strerror(err));
			if (d != NOT_DONE)
				fail_msg("%s under %s N=%llu: error %s but the change is there", op->name,
					 fault_names[f], (unsigned long long)n, kp_strerror(err));
		}
		check_journal(c);
		if (err != KP_OK) {
			/* What a restart would see, then the retry. */
			reopen(c);
			check_journal(c);
			enum done after = op->state(c, &x);
			assert_true(after != MIXED);
			if (after == DONE) {
				c->ambiguous++;
			} else {
				kp_err again = op->run(c, &x);
				if (again != KP_OK)
					fail_msg("%s under %s N=%llu: retry failed: %s (%s)", op->name,
						 fault_names[f], (unsigned long long)n, kp_strerror(again),
						 kp_journal_errmsg(c->j));
				assert_int_equal(op->state(c, &x), DONE);
			}
		}
		if (!fired)
			return;
	}
}

static void run_fault(void **state, enum fault f)
{
	struct ctx *c = *state;
	int k = 0;
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		for (int persist = 0; persist <= 1; persist++) {
			struct loop_stats ls = {0};
			countdown(c, &ops[i], f, persist, &k, &ls);
			printf("  %-44s %-11s %-10s N up to %3u: %3u errors, %3u ok despite a fault\n",
			       ops[i].name, fault_names[f], persist ? "persistent" : "transient",
			       ls.iterations, ls.errors, ls.ok_after_fault);
		}
	}
	reopen(c);
	check_journal(c);
	if (c->ambiguous)
		printf("  %s: %u errors whose change was there after a reopen (commit outcome unknown "
		       "to the caller)\n", fault_names[f], c->ambiguous);
}

static void test_ioerr_write(void **state)
{
	run_fault(state, F_WRITE);
}

static void test_ioerr_sync(void **state)
{
	run_fault(state, F_SYNC);
}

static void test_ioerr_read(void **state)
{
	run_fault(state, F_READ);
}

static void test_oom(void **state)
{
	run_fault(state, F_OOM);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ioerr_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ioerr_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ioerr_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oom, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
