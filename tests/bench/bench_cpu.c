/* bench_cpu.c — the CPU cost of one completed payment through the engine and
 * the journal (order and pay in one request, the host's pending reply, confirm, vend) with a fake
 * host answering at once and a fake clock, so that every run executes the same
 * instructions. Meant to run under valgrind --tool=callgrind
 * --toggle-collect=pay_many: instructions per payment are a figure that a busy
 * machine does not move (fsync and other kernel time are not counted).
 * Without valgrind it prints the wall and CPU time per payment instead. */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "count_vfs.h"
#include "engine.h"
#include "journal.h"
#include "kp_rmtree.h"

#define MAXQ 8

struct fake_host {
	kp_host_msg req[MAXQ];
	kp_engine_reply_fn fn[MAXQ];
	void *arg[MAXQ];
	int nreq;
	int64_t acks;
};

struct run {
	kp_env env;
	kp_fake_world world;
	kp_journal *j;
	kp_engine *e;
	struct fake_host host;
	int paid_callbacks;
	int failures;
	int next;
	int64_t customer_ms; /* the customer pays this long after the QR shows */
};

static bool fh_up(void *h)
{
	(void)h;
	return true;
}

static kp_err fh_request(void *h, const kp_host_msg *req, kp_engine_reply_fn fn, void *arg)
{
	struct fake_host *fh = h;
	if (fh->nreq == MAXQ)
		return KP_ERR_TOO_BIG;
	fh->req[fh->nreq] = *req;
	fh->fn[fh->nreq] = fn;
	fh->arg[fh->nreq] = arg;
	fh->nreq++;
	return KP_OK;
}

static kp_err fh_ack(void *h, int64_t seq)
{
	(void)seq;
	((struct fake_host *)h)->acks++;
	return KP_OK;
}

static const kp_host_ops fake_ops = {.up = fh_up, .request = fh_request, .ack = fh_ack};

/* The host answers every request it holds: a created payment is pending,
 * with a QR as the simulator (and a QR host) gives it; the engine keeps
 * it in memory and answers the pay request (no commit since schema 4). */
static void host_answer(struct run *r)
{
	struct fake_host *fh = &r->host;
	for (int i = 0; i < fh->nreq; i++) {
		kp_host_msg m;
		memset(&m, 0, sizeof(m));
		m.op = KP_OP_PAYMENT;
		snprintf(m.attempt_id, sizeof(m.attempt_id), "%s", fh->req[i].attempt_id);
		snprintf(m.status, sizeof(m.status), "pending");
		snprintf(m.qr, sizeof(m.qr), "kpsim://pay?attempt=%s&amount=250&currency=EUR", m.attempt_id);
		fh->fn[i](fh->arg[i], KP_OK, &m);
	}
	fh->nreq = 0;
}

static void on_paid(void *arg, kp_err err, const kp_attempt *a, const char *qr)
{
	struct run *r = arg;
	if (err == KP_OK && a && a->state == KP_ATTEMPT_PAYING)
		r->paid_callbacks++;
	else
		r->failures++;
}

/* One completed payment, as the daemon's loop would drive it. */
static void pay_one(struct run *r)
{
	char key[40], why[128], txn[40];
	int i = r->next++;
	snprintf(key, sizeof(key), "cpu-%d", i);
	kp_order_req req = {.dedup_key = key, .amount = 250, .items = "[{\"sku\":\"cola-33cl\",\"qty\":1}]"};
	kp_order o;
	bool dup = false;
	/* A one-request sale (POST /orders with "channel"): order and attempt in one commit. */
	if (kp_engine_order_pay(r->e, &req, "card", &o, &dup, why, sizeof(why), on_paid, r) != KP_OK || dup) {
		r->failures++;
		return;
	}
	host_answer(r);
	(void)kp_engine_tick(r->e); /* runs the pay callback */
	/* A customer who takes customer_ms: the loop ticks every second, the
	 * host answers the queries "pending". */
	for (int64_t t = 0; t < r->customer_ms; t += 1000) {
		kp_fake_advance(&r->world, 1000);
		(void)kp_engine_tick(r->e);
		host_answer(r);
		(void)kp_engine_tick(r->e);
	}
	kp_attempt a;
	if (kp_journal_attempt_live(r->j, o.order_id, &a) != KP_OK) {
		r->failures++;
		return;
	}
	kp_host_msg c;
	memset(&c, 0, sizeof(c));
	c.op = KP_OP_CONFIRM;
	c.seq = i + 1;
	snprintf(txn, sizeof(txn), "txn-%08d", i);
	snprintf(c.host_txn, sizeof(c.host_txn), "%s", txn);
	snprintf(c.attempt_id, sizeof(c.attempt_id), "%s", a.attempt_id);
	snprintf(c.status, sizeof(c.status), "succeeded");
	snprintf(c.currency, sizeof(c.currency), "EUR");
	c.amount = 250;
	c.has_amount = true;
	c.at = kp_now_wall(&r->env);
	kp_engine_on_confirm(r->e, &c);
	(void)kp_engine_tick(r->e); /* the loop's next turn applies the confirm */
	if (kp_engine_vend(r->e, o.order_id, true, &o) != KP_OK || o.state != KP_ORDER_FULFILLED)
		r->failures++;
	kp_fake_advance(&r->world, 10);
}

/* What callgrind measures (--toggle-collect=pay_many). */
__attribute__((noinline)) static void pay_many(struct run *r, int n)
{
	for (int i = 0; i < n; i++)
		pay_one(r);
}

/* The baseline: the same 4 commits per payment as bare single-row SQLite
 * statements (WAL, synchronous=FULL, the journal's page size). */
struct base {
	sqlite3 *db;
	sqlite3_stmt *ins, *upd;
	int next;
};

static int base_open(struct base *b, const char *path)
{
	char page[40];
	snprintf(page, sizeof(page), "PRAGMA page_size=%d", KP_JOURNAL_PAGE_SIZE);
	const char *const setup[] = {
		page, "PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
		"CREATE TABLE t(id INTEGER PRIMARY KEY, state TEXT NOT NULL, at INTEGER NOT NULL)",
	};
	if (sqlite3_open_v2(path, &b->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
		return -1;
	for (size_t i = 0; i < sizeof(setup) / sizeof(setup[0]); i++)
		if (sqlite3_exec(b->db, setup[i], NULL, NULL, NULL) != SQLITE_OK)
			return -1;
	if (sqlite3_prepare_v2(b->db, "INSERT INTO t VALUES(?1,'pending',?1)", -1, &b->ins, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(b->db, "UPDATE t SET state=?2, at=?1 WHERE id=?1", -1, &b->upd, NULL) != SQLITE_OK)
		return -1;
	return 0;
}

static int base_step(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* After the insert, one update per later commit of a payment. */
static const char *const base_states[] = {"paid", "fulfilled"};
#define BASE_COMMITS (1 + (int)(sizeof(base_states) / sizeof(base_states[0])))

static int base_one(struct base *b)
{
	int id = ++b->next, bad = 0;
	sqlite3_bind_int(b->ins, 1, id);
	bad |= base_step(b->ins);
	for (int k = 0; k < BASE_COMMITS - 1; k++) {
		sqlite3_bind_int(b->upd, 1, id);
		sqlite3_bind_text(b->upd, 2, base_states[k], -1, SQLITE_STATIC);
		bad |= base_step(b->upd);
	}
	return bad;
}

/* What callgrind measures for the baseline (--toggle-collect=base_many). */
__attribute__((noinline)) static int base_many(struct base *b, int n)
{
	int bad = 0;
	for (int i = 0; i < n; i++)
		bad |= base_one(b);
	return bad;
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(void)
{
	fprintf(stderr, "usage: kp-bench-cpu [--payments N] [--warmup W] [--dir DIR] [--baseline]\n"
			"                    [--syncs] [--customer-ms MS]\n"
			"  --syncs: count the journal's WAL syncs per payment (through the counting VFS:\n"
			"  not with callgrind); --customer-ms: the customer pays MS after the QR shows\n"
			"  (queries answered pending meanwhile; implies --syncs).\n"
			"  W payments to warm up (default 20), then N measured (default 200), on a journal\n"
			"  in DIR (default /dev/shm if present, else /tmp). Under callgrind use\n"
			"  --toggle-collect=pay_many and divide the instructions by N. --baseline: the same\n"
			"  4 commits per payment as bare single-row SQLite (--toggle-collect=base_many).\n");
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
	int n = 200, warm = 20;
	const char *dir = NULL;
	bool baseline = false, syncs = false;
	int64_t customer_ms = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--payments") == 0 && i + 1 < argc)
			n = int_arg(argv[++i], 1, 1000000);
		else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc)
			warm = int_arg(argv[++i], 0, 1000000);
		else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			dir = argv[++i];
		else if (strcmp(argv[i], "--baseline") == 0)
			baseline = true;
		else if (strcmp(argv[i], "--syncs") == 0)
			syncs = true;
		else if (strcmp(argv[i], "--customer-ms") == 0 && i + 1 < argc)
			customer_ms = int_arg(argv[++i], 0, 3600000), syncs = true;
		else
			usage();
	}
	struct stat sb;
	if (!dir)
		dir = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : "/tmp";
	char tmp[512], path[600];
	int len = snprintf(tmp, sizeof(tmp), "%s/kp-bench-cpu-XXXXXX", dir);
	if (len < 0 || (size_t)len >= sizeof(tmp) || !mkdtemp(tmp)) {
		fprintf(stderr, "kp-bench-cpu: cannot make a temp dir in %s\n", dir);
		return 1;
	}
	snprintf(path, sizeof(path), "%s/journal.db", tmp);
	if (baseline) {
		struct base b = {0};
		int bad = base_open(&b, path) != 0 || base_many(&b, warm) != 0;
		double c0 = cpu_s(), t0 = now_s();
		bad |= base_many(&b, n);
		double cpu = cpu_s() - c0, wall = now_s() - t0;
		sqlite3_finalize(b.ins);
		sqlite3_finalize(b.upd);
		sqlite3_close(b.db);
		kp_rmtree(tmp);
		printf("kp-bench-cpu --baseline: %d x %d bare single-row SQLite commits: %.1f us CPU, %.1f us "
		       "wall per %d\n", n, BASE_COMMITS, cpu / n * 1e6, wall / n * 1e6, BASE_COMMITS);
		return bad ? 1 : 0;
	}
	struct run *r = calloc(1, sizeof(*r));
	if (!r)
		return 1;
	kp_env_init_fake(&r->env, &r->world, 42, 1800000000000LL);
	r->world.quiet = true;
	r->env.log_level = KP_LOG_ERROR;
	kp_engine_config cfg;
	kp_engine_config_defaults(&cfg);
	r->customer_ms = customer_ms;
	kp_journal_opts jo = {.vfs_name = syncs ? KP_COUNT_VFS_NAME : NULL};
	kp_journal_setup(); /* before the counting VFS initializes SQLite, as in the daemon */
	if ((syncs && kp_count_vfs_register() != KP_OK) || kp_journal_open_ex(&r->j, path, 0, &r->env, &jo) != KP_OK) {
		fprintf(stderr, "kp-bench-cpu: cannot open %s\n", path);
		return 1;
	}
	kp_engine_deps d = {.env = &r->env, .journal = r->j, .host_ops = &fake_ops, .host = &r->host};
	if (kp_engine_new(&r->e, &cfg, &d) != KP_OK)
		return 1;
	for (int i = 0; i < warm; i++)
		pay_one(r);
	kp_count_stats s0, s1;
	kp_count_vfs_get(&s0);
	double c0 = cpu_s(), t0 = now_s();
	pay_many(r, n);
	double cpu = cpu_s() - c0, wall = now_s() - t0;
	kp_count_vfs_get(&s1);
	int rc = 0;
	if (r->failures || r->paid_callbacks != warm + n || r->host.acks != warm + n) {
		fprintf(stderr, "kp-bench-cpu: %d failures, %d pay callbacks, %lld acks for %d payments\n",
			r->failures, r->paid_callbacks, (long long)r->host.acks, warm + n);
		rc = 1;
	}
	printf("kp-bench-cpu: %d completed payments (after %d to warm up) through engine + journal, fake host:\n"
	       "  %.1f us CPU and %.1f us wall each (journal in %s)\n",
	       n, warm, cpu / n * 1e6, wall / n * 1e6, dir);
	if (syncs)
		printf("  %.2f WAL syncs per payment, the customer paying %lld ms after the QR shows\n",
		       (double)(s1.syncs[KP_COUNT_WAL] - s0.syncs[KP_COUNT_WAL]) / n, (long long)customer_ms);
	kp_engine_free(r->e);
	kp_journal_close(r->j);
	free(r);
	kp_rmtree(tmp);
	return rc;
}
