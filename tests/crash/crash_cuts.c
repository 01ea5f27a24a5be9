/* crash_cuts.c — kp-crash-cuts, the in-process power-cut loop: the cheap bulk
 * of the crash campaign, run by CI by the thousand. Each cut forks a child
 * that boots the engine on the journal through the crash VFS (recovery
 * first, like kioskpayd), runs a seeded random workload against a host whose
 * ledger lives in shared memory (orders, pays, channel switches, customer
 * pays and fails, double payments, orphans, lost requests and replies,
 * duplicated confirms, link drops, vends, cancels) and dies at the cut: after
 * the Nth write, at or after the Nth sync, or at an armed failpoint, with the
 * unsynced writes dropped, torn or garbled. The parent then reopens the
 * journal, checks it (integrity, foreign keys, the journal's invariants, and
 * that everything the child was told had been committed is there), recovers
 * it with the engine, runs to quiescence and checks money against the host's
 * ledger (design.md invariants 1-7). A run is several cuts on the same journal
 * and ledger. Everything derives from --seed: a run replays exactly. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crashvfs.h"
#include "engine.h"
#include "journal.h"
#include "kp_failpoint.h"
#include "sharedhost.h"

#define T0 1800000000000LL
#define LOCAL_ORDERS 64
#define QUIET_ROUNDS 400

/* Results the workload does not look at (a refusal is part of the game). */
#define IGNORE(x)                  \
	do {                       \
		kp_err ig_ = (x);  \
		(void)ig_;         \
	} while (0)

/* Failpoints that can crash in-process (journal 1-11, engine 60; the host
 * link's 40-48 need the real daemon: the process campaign arms those). */
static const unsigned fp_points[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 60};

struct opts {
	uint64_t seed;
	unsigned cuts;
	unsigned run_len;
	int only_run;     /* -1: all */
	bool verbose;
	bool keep;
	int force_mode;   /* -1: rotate drop/tear/garbage */
	unsigned force_sector; /* 0: 512 or 4096 at random */
	int force_psow;   /* -1: at random */
};

struct cut {
	unsigned run, index;      /* index within the run */
	uint64_t seed;
	kp_crashvfs_config vfs;
	unsigned fp, fp_countdown;
	char point[48];
};

struct stats {
	unsigned cuts, idle, by_mode[KP_CRASH__COUNT], by_kind[4];
	unsigned violations, reports_checked, quiesce_rounds;
	unsigned max_orders;
};

static struct stats S;
static const struct cut *cur_cut;
static uint64_t run_seed_now;

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...)
{
	char line[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	S.violations++;
	if (cur_cut)
		fprintf(stderr, "VIOLATION seed=%llu run=%u cut=%u (%s, %s): %s\n",
			(unsigned long long)run_seed_now, cur_cut->run, cur_cut->index,
			kp_crash_mode_str(cur_cut->vfs.mode), cur_cut->point, line);
	else
		fprintf(stderr, "VIOLATION: %s\n", line);
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

static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void engine_config(kp_engine_config *c)
{
	kp_engine_config_defaults(c);
	snprintf(c->currency, sizeof(c->currency), "EUR");
	c->max_amount = 100000;
	c->order_ttl_ms = 60000;
	c->pay_margin_ms = 5000;
	c->query_every_ms = 1000;
	c->pay_window_ms = 8000;
	c->give_up_after_ms = 3600000;
	c->query_backoff_min_ms = 1000;
	c->query_backoff_max_ms = 4000;
	c->refund_retry_ms = 1000;
	c->refund_retry_max_ms = 4000;
	c->request_timeout_ms = 2000;
	c->power_cut_policy = KP_ENGINE_CUT_REFUND;
}

/* The env of both processes: the fake world in the shared ledger. */
static void shared_env(kp_env *env, sh_ledger *l)
{
	kp_fake_world scratch;
	kp_env_init_fake(env, &scratch, 1, T0);
	env->ctx = &l->world;
	env->log_level = getenv("KP_CUTS_LOG") ? KP_LOG_DEBUG : KP_LOG_ERROR;
	l->world.quiet = getenv("KP_CUTS_LOG") == NULL;
}

/* ---------- what the child reports: things it was told are committed ---------- */

struct report {
	char kind;                 /* o a r: record in state; c: confirmation acked; E: end */
	char id[KP_ID_SIZE];
	char state[24];
};

struct child {
	int fd;
	sh_ledger *l;
	sh_host host;
	kp_journal *j;
	kp_engine *e;
	uint64_t rng;
	struct {
		char id[KP_ID_SIZE];
		char key[KP_ID_SIZE];
		int64_t amount;
	} orders[LOCAL_ORDERS];
	int norders;
};
static struct child C;

static void report(char kind, const char *id, const char *state)
{
	struct report r;
	memset(&r, 0, sizeof(r));
	r.kind = kind;
	snprintf(r.id, sizeof(r.id), "%s", id);
	snprintf(r.state, sizeof(r.state), "%s", state ? state : "");
	if (write(C.fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
		_exit(20);
}

/* Told after a commit: everything visible now about the order is committed. */
static void child_on_change(void *arg, const char *order_id)
{
	(void)arg;
	kp_order o;
	if (kp_journal_order_get(C.j, order_id, &o) == KP_OK)
		report('o', o.order_id, kp_order_state_str(o.state));
	kp_attempt a[32];
	size_t n = 0;
	if (kp_journal_attempts_of_order(C.j, order_id, a, 32, &n) == KP_OK)
		for (size_t i = 0; i < n; i++)
			report('a', a[i].attempt_id, kp_attempt_state_str(a[i].state));
	kp_refund r[32];
	n = 0;
	if (kp_journal_refunds_of_order(C.j, order_id, r, 32, &n) == KP_OK)
		for (size_t i = 0; i < n; i++)
			report('r', r[i].refund_id, kp_refund_state_str(r[i].state));
}

static kp_err child_ack(void *host, int64_t seq)
{
	sh_host *h = host;
	if (seq >= 1 && seq <= h->l->nconfirm)
		report('c', h->l->pay[h->l->confirm[seq - 1].pay].host_txn, "");
	return sh_host_ops.ack(host, seq);
}

static void pay_done(void *arg, kp_err err, const kp_attempt *a, const char *qr)
{
	(void)arg;
	if (err == KP_OK && a)
		report('a', a->attempt_id, kp_attempt_state_str(a->state));
}

static int pick_order(void)
{
	return C.norders ? (int)(rnd(&C.rng) % (uint64_t)C.norders) : -1;
}

static void child_step(void)
{
	unsigned r = (unsigned)(rnd(&C.rng) % 100);
	sh_ledger *l = C.l;
	if (r < 18 && C.norders < LOCAL_ORDERS) {
		/* A new cart, or a retry of an old one (same key: same order). */
		bool retry = C.norders > 0 && rnd(&C.rng) % 8 == 0;
		int i = retry ? pick_order() : C.norders;
		if (!retry) {
			snprintf(C.orders[i].key, KP_ID_SIZE, "k-%016llx", (unsigned long long)rnd(&C.rng));
			C.orders[i].amount = 1 + (int64_t)(rnd(&C.rng) % 5000);
		}
		kp_order_req req = {.dedup_key = C.orders[i].key, .amount = C.orders[i].amount};
		kp_order o;
		bool dup = false;
		char why[128];
		kp_err err = kp_engine_order_create(C.e, &req, &o, &dup, why, sizeof(why));
		if (err == KP_OK) {
			report('o', o.order_id, "pending");
			if (!retry) {
				snprintf(C.orders[i].id, KP_ID_SIZE, "%s", o.order_id);
				C.norders++;
			}
		}
	} else if (r < 38) {
		int i = pick_order();
		if (i >= 0) {
			const char *ch = rnd(&C.rng) % 2 ? "card" : "qr";
			IGNORE(kp_engine_pay(C.e, C.orders[i].id, ch, pay_done, NULL));
		}
	} else if (r < 55) {
		int p = sh_pending_pick(l, rnd(&C.rng));
		unsigned what = (unsigned)(rnd(&C.rng) % 100);
		if (p >= 0 && what < 65)
			(void)sh_customer_pay(l, p, true);
		else if (p >= 0 && what < 80)
			(void)sh_customer_pay(l, p, false);
		else if (p >= 0 && what < 95)
			(void)sh_customer_pay_order_twice(l, l->pay[p].order_id);
		else if (p >= 0)
			(void)sh_customer_orphan(l, l->pay[p].order_id, l->pay[p].amount, "EUR");
	} else if (r < 63) {
		int i = pick_order();
		kp_order o;
		if (i >= 0)
			IGNORE(kp_engine_vend(C.e, C.orders[i].id, rnd(&C.rng) % 4 != 0, &o));
	} else if (r < 67) {
		int i = pick_order();
		kp_order o;
		if (i >= 0)
			IGNORE(kp_engine_cancel(C.e, C.orders[i].id, &o));
	} else if (r < 70) {
		l->link_up = !l->link_up;
		kp_engine_on_link(C.e, l->link_up);
	}
	if (!l->link_up && rnd(&C.rng) % 4 == 0) {
		l->link_up = true;
		kp_engine_on_link(C.e, true);
	}
	sh_host_pump(&C.host);
	(void)kp_engine_tick(C.e);
	kp_fake_advance(&l->world, (int64_t)(rnd(&C.rng) % 700));
}

/* The child: boot (recover), work, die at the cut. Never returns. */
static void child_main(const struct cut *c, sh_ledger *l, const char *path, int fd)
{
	alarm(30);
	memset(&C, 0, sizeof(C));
	C.fd = fd;
	C.l = l;
	C.rng = c->seed ^ 0xC0FFEEULL;
	if (kp_crashvfs_register(&c->vfs, false) != KP_OK)
		_exit(3);
	kp_failpoint_disarm_all();
	if (c->fp && kp_failpoint_arm(c->fp, c->fp_countdown, 1, KP_FP_CRASH) != KP_OK)
		_exit(4);
	kp_env env;
	shared_env(&env, l);
	kp_journal_opts jo = {.vfs_name = KP_CRASHVFS_NAME, .wal_autocheckpoint = 16};
	kp_err err = kp_journal_open_ex(&C.j, path, 0, &env, &jo);
	if (err != KP_OK) {
		fprintf(stderr, "child: journal open: %s: %s\n", kp_strerror(err),
			C.j ? kp_journal_errmsg(C.j) : "");
		_exit(10);
	}
	sh_host_init(&C.host, l, c->seed);
	C.host.lose_request_pct = 5;
	C.host.lose_reply_pct = 8;
	C.host.deliver_pct = 60;
	C.host.duplicate_pct = 10;
	C.host.refund_late_pct = 20;
	kp_host_ops ops = sh_host_ops;
	ops.ack = child_ack;
	kp_engine_config ec;
	engine_config(&ec);
	kp_engine_deps deps = {.env = &env, .journal = C.j, .host_ops = &ops, .host = &C.host,
			       .on_change = child_on_change};
	if (kp_engine_new(&C.e, &ec, &deps) != KP_OK)
		_exit(11);
	C.host.engine = C.e;
	int64_t found = 0;
	if (kp_engine_recover(C.e, &found) != KP_OK)
		_exit(12);
	unsigned steps = 20 + (unsigned)(rnd(&C.rng) % 40);
	for (unsigned i = 0; i < steps; i++)
		child_step();
	kp_crashvfs_counts k;
	kp_crashvfs_counts_get(&k);
	char counts[64];
	snprintf(counts, sizeof(counts), "%llu %llu", (unsigned long long)k.writes, (unsigned long long)k.syncs);
	report('E', counts, "");
	kp_crashvfs_crash(); /* the cut came after the workload: an idle cut */
}

/* ---------- the parent: after the cut ---------- */

static void print_problem(void *arg, const char *problem)
{
	(void)arg;
	violation("journal check: %s", problem);
}

static bool sql_exists(sqlite3 *db, const char *sql, const char *a, const char *b, const char *c)
{
	sqlite3_stmt *st = NULL;
	bool yes = false;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
		if (b)
			sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
		if (c)
			sqlite3_bind_text(st, 3, c, -1, SQLITE_STATIC);
		yes = sqlite3_step(st) == SQLITE_ROW;
	} else {
		violation("sql %s: %s", sql, sqlite3_errmsg(db));
	}
	sqlite3_finalize(st);
	return yes;
}

/* Everything the child was told had been committed is in the journal. */
static void check_reports(sqlite3 *db, const struct report *r, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *kind = r[i].kind == 'o' ? "order" : r[i].kind == 'a' ? "attempt"
							   : r[i].kind == 'r' ? "refund" : NULL;
		S.reports_checked++;
		if (kind) {
			if (!sql_exists(db, "SELECT 1 FROM events WHERE kind=?1 AND record_id=?2 AND to_state=?3",
					kind, r[i].id, r[i].state))
				violation("lost commit: %s %s was told %s, the journal has no such event", kind,
					  r[i].id, r[i].state);
		} else if (r[i].kind == 'c') {
			if (!sql_exists(db, "SELECT 1 FROM confirmations WHERE host_txn=?1", r[i].id, NULL, NULL))
				violation("lost commit: confirm %s was acked, the journal has no confirmation",
					  r[i].id);
		}
	}
}

struct parent {
	sh_ledger *l;
	kp_env env;
	kp_journal *j;
	sqlite3 *db;          /* plain SQL view of the journal */
	sh_host host;
	kp_engine *e;
	uint64_t rng;
};

static int64_t q_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	int64_t v = -1;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Ids of the rows of sql (first column), up to cap. */
static size_t q_ids(sqlite3 *db, const char *sql, char (*out)[KP_ID_SIZE], size_t cap)
{
	sqlite3_stmt *st = NULL;
	size_t n = 0;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK)
		while (n < cap && sqlite3_step(st) == SQLITE_ROW)
			snprintf(out[n++], KP_ID_SIZE, "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return n;
}

static bool quiet(struct parent *p, char *why, size_t cap)
{
	int64_t live = q_int(p->db, "SELECT count(*) FROM attempts WHERE state IN ('created','paying','canceling')");
	int64_t open = q_int(p->db, "SELECT count(*) FROM refunds WHERE state IN ('pending','sent')");
	int64_t paid = q_int(p->db, "SELECT count(*) FROM orders WHERE state IN ('paid','pending')");
	int hp = sh_pending_count(p->l), un = sh_unacked_count(p->l);
	int hr = 0;
	for (int i = 0; i < p->l->nrefund; i++)
		hr += !p->l->refund[i].refunded;
	snprintf(why, cap,
		 "%lld live attempts, %lld open refunds, %lld paid/pending orders, host: %d pending "
		 "payments, %d unacked confirms, %d pending refunds, %zu requests in flight",
		 (long long)live, (long long)open, (long long)paid, hp, un, hr, p->host.nq);
	return live == 0 && open == 0 && paid == 0 && hp == 0 && un == 0 && hr == 0 && p->host.nq == 0;
}

/* Recover with the engine, play the customer and the vending machine until
 * nothing is in flight anywhere. */
static void quiesce(struct parent *p)
{
	char (*ids)[KP_ID_SIZE] = calloc(256, KP_ID_SIZE);
	char why[400] = "";
	int round;
	for (round = 0; round < QUIET_ROUNDS; round++) {
		sh_host_pump(&p->host);
		(void)kp_engine_tick(p->e);
		sh_host_pump(&p->host);
		for (int i = 0; i < p->l->npay; i++) {
			unsigned r = (unsigned)(rnd(&p->rng) % 100);
			if (r < 20)
				(void)sh_customer_pay(p->l, i, true);
			else if (r < 25)
				(void)sh_customer_pay(p->l, i, false);
		}
		size_t n = q_ids(p->db, "SELECT order_id FROM orders WHERE state='paid'", ids, 256);
		for (size_t i = 0; i < n; i++) {
			kp_order o;
			kp_err err = kp_engine_vend(p->e, ids[i], rnd(&p->rng) % 10 < 7, &o);
			if (err != KP_OK)
				violation("vend of paid order %s: %s", ids[i], kp_strerror(err));
		}
		if (round >= 5) {
			n = q_ids(p->db, "SELECT order_id FROM orders WHERE state='pending'", ids, 256);
			for (size_t i = 0; i < n; i++) {
				kp_order o;
				IGNORE(kp_engine_cancel(p->e, ids[i], &o));
			}
		}
		sh_host_pump(&p->host);
		(void)kp_engine_tick(p->e);
		if (quiet(p, why, sizeof(why)))
			break;
		kp_fake_advance(&p->l->world, 1000);
	}
	S.quiesce_rounds += (unsigned)round;
	if (round == QUIET_ROUNDS)
		violation("not quiet after %d rounds (%d s): %s", QUIET_ROUNDS, QUIET_ROUNDS, why);
	free(ids);
}

/* Invariants 2-4 against the host's ledger, once quiet. */
static void check_money(struct parent *p)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(p->db, "SELECT order_id, amount, state FROM orders", -1, &st, NULL) != SQLITE_OK) {
		violation("orders query: %s", sqlite3_errmsg(p->db));
		return;
	}
	unsigned orders = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(st, 0);
		int64_t amount = sqlite3_column_int64(st, 1);
		const char *state = (const char *)sqlite3_column_text(st, 2);
		int64_t captured = 0, refunded = 0;
		orders++;
		for (int i = 0; i < p->l->npay; i++) {
			const sh_payment *x = &p->l->pay[i];
			if (x->tombstone || x->status != SH_SUCCEEDED || strcmp(x->order_id, id) != 0)
				continue;
			captured += x->amount;
			for (int k = 0; k < p->l->nrefund; k++)
				if (strcmp(p->l->refund[k].host_txn, x->host_txn) == 0 && p->l->refund[k].refunded)
					refunded += p->l->refund[k].amount;
		}
		int64_t want = strcmp(state, "fulfilled") == 0 ? amount : 0;
		if (captured - refunded != want)
			violation("money: order %s (%s, %lld): captured %lld - refunded %lld != %lld", id, state,
				  (long long)amount, (long long)captured, (long long)refunded, (long long)want);
	}
	sqlite3_finalize(st);
	if (orders > S.max_orders)
		S.max_orders = orders;
	for (int i = 0; i < p->l->npay; i++) {
		const sh_payment *x = &p->l->pay[i];
		if (x->tombstone || x->status != SH_SUCCEEDED)
			continue;
		bool known = sql_exists(p->db, "SELECT 1 FROM attempts WHERE attempt_id=?1 AND host_txn=?2",
					x->attempt_id, x->host_txn, NULL) ||
			     sql_exists(p->db, "SELECT 1 FROM refunds WHERE host_txn=?1", x->host_txn, NULL, NULL);
		if (!known)
			violation("capture %s (attempt %s%s, order %s) unknown to the journal", x->host_txn,
				  x->attempt_id, x->orphan ? ", orphan" : "", x->order_id);
	}
	for (int i = 0; i < p->l->npay; i++) {
		const sh_payment *x = &p->l->pay[i];
		if (!x->orphan && !x->tombstone &&
		    !sql_exists(p->db, "SELECT 1 FROM attempts WHERE attempt_id=?1", x->attempt_id, NULL, NULL))
			violation("host has payment %s that the journal never made", x->attempt_id);
	}
	for (unsigned i = 0; i < p->l->violations; i++)
		violation("host: %s", i < 4 ? p->l->violation[i] : "(more)");
	p->l->violations = 0;
}

/* After the child died: open, check, recover, quiesce, check. false if the
 * journal could not be opened (the run cannot go on). */
static bool after_cut(sh_ledger *l, const char *path, const struct report *r, size_t n, uint64_t seed)
{
	struct parent p;
	memset(&p, 0, sizeof(p));
	p.l = l;
	p.rng = seed ^ 0xBEEFULL;
	shared_env(&p.env, l);
	kp_crashvfs_config fast;
	kp_crashvfs_config_init(&fast);
	fast.quiet = true;
	if (kp_crashvfs_register(&fast, false) != KP_OK) {
		violation("cannot register the VFS in the parent");
		return false;
	}
	kp_journal_opts jo = {.vfs_name = KP_CRASHVFS_NAME};
	kp_err err = kp_journal_open_ex(&p.j, path, 0, &p.env, &jo);
	if (err != KP_OK) {
		violation("journal does not open after the cut: %s: %s", kp_strerror(err),
			  p.j ? kp_journal_errmsg(p.j) : "");
		kp_journal_close(p.j);
		return false;
	}
	if (kp_journal_check(p.j, print_problem, NULL) != KP_OK && S.violations == 0)
		violation("journal check failed");
	if (sqlite3_open_v2(path, &p.db, SQLITE_OPEN_READONLY, KP_CRASHVFS_NAME) != SQLITE_OK) {
		violation("plain SQL open: %s", sqlite3_errmsg(p.db));
		goto out;
	}
	check_reports(p.db, r, n);

	sh_host_init(&p.host, l, seed ^ 0x5A5AULL);
	p.host.lose_reply_pct = 3;
	p.host.deliver_pct = 80;
	p.host.refund_late_pct = 10;
	l->link_up = true;
	kp_engine_config ec;
	engine_config(&ec);
	kp_engine_deps deps = {.env = &p.env, .journal = p.j, .host_ops = &sh_host_ops, .host = &p.host};
	if (kp_engine_new(&p.e, &ec, &deps) != KP_OK) {
		violation("engine_new failed");
		goto out;
	}
	p.host.engine = p.e;
	int64_t found = 0;
	err = kp_engine_recover(p.e, &found);
	if (err != KP_OK) {
		violation("recovery: %s", kp_strerror(err));
		goto out;
	}
	quiesce(&p);
	check_money(&p);
	if (kp_journal_check(p.j, print_problem, NULL) != KP_OK && S.violations == 0)
		violation("journal check failed after quiescence");
out:
	sh_host_drop_all(&p.host);
	kp_engine_free(p.e);
	sh_host_free(&p.host);
	sqlite3_close(p.db);
	kp_journal_close(p.j);
	kp_crashvfs_unregister();
	return true;
}

/* ---------- cuts and runs ---------- */

static const struct opts *g_opts;

static void plan_cut(struct cut *c, uint64_t *rng, unsigned run, unsigned index, uint64_t est_writes,
		     uint64_t est_syncs)
{
	memset(c, 0, sizeof(*c));
	c->run = run;
	c->index = index;
	c->seed = rnd(rng);
	kp_crashvfs_config_init(&c->vfs);
	c->vfs.mode = (kp_crash_mode)((run * 7 + index) % KP_CRASH__COUNT);
	c->vfs.sector = rnd(rng) % 2 ? 512 : 4096;
	c->vfs.psow = rnd(rng) % 2;
	c->vfs.seed = c->seed;
	c->vfs.quiet = true;
	if (g_opts->force_mode >= 0)
		c->vfs.mode = (kp_crash_mode)g_opts->force_mode;
	if (g_opts->force_sector)
		c->vfs.sector = g_opts->force_sector;
	if (g_opts->force_psow >= 0)
		c->vfs.psow = g_opts->force_psow == 1;
	unsigned kind = (unsigned)(rnd(rng) % 10);
	if (kind < 3) {
		c->vfs.after_write = 1 + rnd(rng) % est_writes;
		snprintf(c->point, sizeof(c->point), "after_write=%llu", (unsigned long long)c->vfs.after_write);
		S.by_kind[0]++;
	} else if (kind < 7) {
		c->vfs.before_sync = 1 + rnd(rng) % est_syncs;
		snprintf(c->point, sizeof(c->point), "before_sync=%llu", (unsigned long long)c->vfs.before_sync);
		S.by_kind[1]++;
	} else if (kind < 8) {
		c->vfs.after_sync = 1 + rnd(rng) % est_syncs;
		snprintf(c->point, sizeof(c->point), "after_sync=%llu", (unsigned long long)c->vfs.after_sync);
		S.by_kind[2]++;
	} else {
		c->fp = fp_points[rnd(rng) % (sizeof(fp_points) / sizeof(fp_points[0]))];
		c->fp_countdown = 1 + (unsigned)(rnd(rng) % 6);
		snprintf(c->point, sizeof(c->point), "failpoint %u:%u:crash", c->fp, c->fp_countdown);
		S.by_kind[3]++;
	}
}

static void run_one(const struct opts *o, unsigned run, unsigned ncuts, const char *dir, sh_ledger *l)
{
	uint64_t rng = o->seed * 0x9E3779B97F4A7C15ULL + run + 1;
	run_seed_now = o->seed;
	char path[256];
	snprintf(path, sizeof(path), "%s/run-%u", dir, run);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/run-%u/journal.db", dir, run);
	sh_ledger_reset(l, rnd(&rng) | 1, T0);
	uint64_t est_writes = 150, est_syncs = 40;
	struct report *reps = malloc(sizeof(*reps) * 65536);
	for (unsigned i = 0; i < ncuts; i++) {
		struct cut c;
		plan_cut(&c, &rng, run, i, est_writes, est_syncs);
		cur_cut = &c;
		int fds[2];
		if (pipe(fds) != 0) {
			perror("pipe");
			exit(2);
		}
		fflush(NULL);
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			exit(2);
		}
		if (pid == 0) {
			close(fds[0]);
			child_main(&c, l, path, fds[1]);
		}
		close(fds[1]);
		size_t n = 0;
		bool idle = false;
		for (;;) {
			struct report r;
			ssize_t got = read(fds[0], &r, sizeof(r));
			if (got == 0)
				break;
			if (got < 0 && errno == EINTR)
				continue;
			if (got != (ssize_t)sizeof(r))
				break;
			if (r.kind == 'E') {
				unsigned long long w = 0, s = 0;
				if (sscanf(r.id, "%llu %llu", &w, &s) == 2) {
					/* Aim the cuts inside a workload of this size. */
					est_writes = w > 10 ? w : 10;
					est_syncs = s > 4 ? s : 4;
				}
				idle = true;
			} else if (n < 65536) {
				reps[n++] = r;
			}
		}
		close(fds[0]);
		int st = 0;
		waitpid(pid, &st, 0);
		S.cuts++;
		S.by_mode[c.vfs.mode]++;
		S.idle += idle;
		if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
			violation("child did not die by the cut: %s %d", WIFSIGNALED(st) ? "signal" : "exit",
				  WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
		unsigned before = S.violations;
		bool go_on = after_cut(l, path, reps, n, c.seed);
		if (o->verbose || S.violations > before)
			printf("run %u cut %u: seed %llu mode=%s sector=%u psow=%d %s%s: %zu commits told, %s\n",
			       run, i, (unsigned long long)c.seed, kp_crash_mode_str(c.vfs.mode), c.vfs.sector,
			       c.vfs.psow, c.point, idle ? " (idle)" : "", n,
			       S.violations > before ? "VIOLATIONS" : "ok");
		if (!go_on)
			break;
	}
	cur_cut = NULL;
	free(reps);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: kp-crash-cuts [--cuts N] [--seed S] [--run-len R] [--only-run r] [--verbose] [--keep]\n"
		   "                     [--mode drop|tear|garbage] [--sector 512..65536] [--psow 0|1]\n"
		   "  N cuts (default 1000) in runs of R cuts (default 10) on one journal and ledger each;\n"
		   "  exit 0 if no invariant was violated, 1 otherwise, 2 usage.\n"
		   "  Replay a run: same --seed and --run-len, --only-run r --verbose --keep.\n"
		   "  --mode, --sector, --psow force the crash VFS settings of every cut.\n");
}

static bool parse_num(const char *s, uint64_t *out)
{
	char *end = NULL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || !end || *end || end == s)
		return false;
	*out = v;
	return true;
}

int main(int argc, char **argv)
{
	struct opts o = {.seed = 1, .cuts = 1000, .run_len = 10, .only_run = -1, .force_mode = -1,
			 .force_psow = -1};
	g_opts = &o;
	static const struct option lo[] = {
		{"cuts", required_argument, NULL, 'n'}, {"seed", required_argument, NULL, 's'},
		{"run-len", required_argument, NULL, 'r'}, {"only-run", required_argument, NULL, 'o'},
		{"verbose", no_argument, NULL, 'v'}, {"keep", no_argument, NULL, 'k'},
		{"mode", required_argument, NULL, 'm'}, {"sector", required_argument, NULL, 'S'},
		{"psow", required_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
	};
	int ch;
	uint64_t v;
	while ((ch = getopt_long(argc, argv, "n:s:r:o:vkm:S:p:h", lo, NULL)) != -1) {
		switch (ch) {
		case 'n': if (!parse_num(optarg, &v) || v == 0 || v > 10000000) { usage(stderr); return 2; } o.cuts = (unsigned)v; break;
		case 's': if (!parse_num(optarg, &v)) { usage(stderr); return 2; } o.seed = v; break;
		case 'r': if (!parse_num(optarg, &v) || v == 0 || v > 1000) { usage(stderr); return 2; } o.run_len = (unsigned)v; break;
		case 'o': if (!parse_num(optarg, &v) || v > 1000000) { usage(stderr); return 2; } o.only_run = (int)v; break;
		case 'v': o.verbose = true; break;
		case 'k': o.keep = true; break;
		case 'm':
			for (int m = 0; m < KP_CRASH__COUNT; m++)
				if (strcmp(optarg, kp_crash_mode_str((kp_crash_mode)m)) == 0)
					o.force_mode = m;
			if (o.force_mode < 0) { usage(stderr); return 2; }
			break;
		case 'S': if (!parse_num(optarg, &v) || v < 512 || v > 65536 || (v & (v - 1))) { usage(stderr); return 2; } o.force_sector = (unsigned)v; break;
		case 'p': if (!parse_num(optarg, &v) || v > 1) { usage(stderr); return 2; } o.force_psow = (int)v; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	char dir[] = "/tmp/kp-cuts-XXXXXX";
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 2;
	}
	sh_ledger *l = sh_ledger_map();
	if (!l) {
		perror("mmap");
		return 2;
	}
	int64_t t0 = mono_us();
	unsigned runs = (o.cuts + o.run_len - 1) / o.run_len;
	for (unsigned r = 0; r < runs; r++) {
		if (o.only_run >= 0 && (unsigned)o.only_run != r)
			continue;
		unsigned n = r + 1 == runs ? o.cuts - r * o.run_len : o.run_len;
		run_one(&o, r, n, dir, l);
	}
	double secs = (double)(mono_us() - t0) / 1e6;
	printf("kp-crash-cuts seed %llu: %u cuts (%u drop, %u tear, %u garbage; %u after_write, "
	       "%u before_sync, %u after_sync, %u failpoint; %u idle), %u commits checked, "
	       "%.1f s (%.1f ms per cut), violations: %u\n",
	       (unsigned long long)o.seed, S.cuts, S.by_mode[KP_CRASH_DROP], S.by_mode[KP_CRASH_TEAR],
	       S.by_mode[KP_CRASH_GARBAGE], S.by_kind[0], S.by_kind[1], S.by_kind[2], S.by_kind[3], S.idle,
	       S.reports_checked, secs, S.cuts ? secs * 1000.0 / S.cuts : 0.0, S.violations);
	sh_ledger_unmap(l);
	if (o.keep || S.violations) {
		printf("files kept in %s\n", dir);
	} else {
		char cmd[64];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	}
	return S.violations ? 1 : 0;
}
