/* bench_journal.c — what durability costs: commits/s of the journal's
 * transactions for a completed payment against plain single-row SQLite
 * commits with the same pragmas, and the syncs and bytes each payment puts on
 * the disk, counted by a VFS shim. Prints figures; asserts nothing. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "count_vfs.h"
#include "journal.h"
#include "kp_rmtree.h"

#define ROUNDS 10
/* The journal's commits for one completed payment, as the engine makes them
 * (docs/engine.md, "A sale"): order + attempt begin (a one-request sale,
 * POST /orders with "channel") | confirmation + attempt succeeded + order paid
 * | order fulfilled. With --two-requests (POST /orders, then /pay) the order
 * and the attempt are a commit each: 4. The host's `pending` reply (its QR
 * code) writes nothing since schema 4. */
static int commits_per_payment = 3;
#define COMMITS_PER_PAYMENT commits_per_payment

struct opts {
	const char *dir; /* parent of the temp dir */
	const char *json; /* write the figures here too (one flat JSON object) */
	int payments;
	int page_size;
	int autockpt; /* wal_autocheckpoint pages of the journal; 0: the daemon's */
	int prefill;  /* payments already in the journals before (a)-(c) measure */
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* CPU time of this process (user + system): what the code costs, whatever
 * the disk and the neighbours do; *user: the part outside the kernel. */
static double cpu_s(double *user)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	*user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
	return *user + (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int die(const char *what, kp_err err)
{
	fprintf(stderr, "kp-bench-journal: %s: %s\n", what, kp_strerror(err));
	exit(1);
}

static const char *fs_name(const char *path)
{
	struct statfs sf;
	if (statfs(path, &sf) != 0)
		return "unknown";
	switch ((unsigned long)sf.f_type) {
	case 0xEF53UL: return "ext2/3/4";
	case 0x01021994UL: return "tmpfs (fsync is free: figures are CPU only)";
	case 0x58465342UL: return "xfs";
	case 0x9123683EUL: return "btrfs";
	case 0x794C7630UL: return "overlayfs";
	case 0xF2F52010UL: return "f2fs";
	default: return "other";
	}
}

/* ---------- the journal side ---------- */

struct jside {
	kp_journal *j;
	int64_t t;
	int next; /* payment number */
};

static uint64_t splitmix64(uint64_t *seed)
{
	uint64_t z = (*seed += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* The ids of payment i at time t, shaped as in service and the same on every
 * run: order and attempt ids as the daemon makes them (kp_uuid_new: time-
 * ordered), the dedup key as a UI makes it (a random version 4 UUID; with
 * --ordered-keys a time-ordered version 7 one, as docs/api.md recommends),
 * the host's transaction id as the simulator makes it (txn- and 16 random
 * hex). */
static bool ordered_keys;

struct ids {
	char oid[40], key[40], aid[40], txn[40];
};

static void payment_ids(struct ids *d, int i, int64_t t)
{
	kp_env env;
	kp_fake_world w;
	kp_env_init_fake(&env, &w, 1 + (uint64_t)i, t);
	kp_uuid u;
	if (kp_uuid_new(&env, &u) != KP_OK)
		die("uuid", KP_ERR_INTERNAL);
	snprintf(d->oid, sizeof(d->oid), "%s", u.s);
	kp_fake_advance(&w, 1);
	if (kp_uuid_new(&env, &u) != KP_OK)
		die("uuid", KP_ERR_INTERNAL);
	snprintf(d->aid, sizeof(d->aid), "%s", u.s);
	uint64_t seed = 2 * (uint64_t)i, v0 = splitmix64(&seed), v1 = splitmix64(&seed);
	snprintf(d->key, sizeof(d->key), "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(v0 >> 32),
		 (unsigned)(v0 >> 16) & 0xFFFF, (unsigned)v0 & 0xFFF, (unsigned)(v1 >> 48) & 0xFFFF,
		 (unsigned long long)(v1 & 0xFFFFFFFFFFFFULL));
	if (ordered_keys) { /* the UI's clock is the kiosk's: made just before the order */
		if (kp_uuid_new(&env, &u) != KP_OK)
			die("uuid", KP_ERR_INTERNAL);
		snprintf(d->key, sizeof(d->key), "%s", u.s);
	}
	snprintf(d->txn, sizeof(d->txn), "txn-%016llx", (unsigned long long)splitmix64(&seed));
}

static void pay_one(struct jside *s)
{
	int i = s->next++;
	int64_t t = s->t += 10;
	struct ids d;
	payment_ids(&d, i, t);
	const char *oid = d.oid, *key = d.key, *aid = d.aid, *txn = d.txn;
	kp_order_new on = {.order_id = oid, .dedup_key = key, .amount = 250, .currency = "EUR",
			   .items = "[{\"sku\":\"cola-33cl\",\"qty\":1}]", .now = t, .expires_at = t + 300000};
	kp_order o;
	bool dup;
	bool one = COMMITS_PER_PAYMENT == 3;
	kp_err err = one ? kp_journal_begin(s->j) : KP_OK;
	if (err == KP_OK)
		err = kp_journal_order_create(s->j, &on, &o, &dup);
	if (err != KP_OK)
		die("order create", err);
	kp_attempt_new an = {.attempt_id = aid, .order_id = oid, .channel = "card", .amount = 250,
			     .now = t + 1, .next_check_at = t + 5001};
	kp_attempt a;
	if ((err = kp_journal_attempt_begin(s->j, &an, &a)) != KP_OK || (one && (err = kp_journal_commit(s->j)) != KP_OK))
		die("attempt begin", err);
	kp_confirmation c = {.seq = i, .status = KP_CONFIRM_SUCCEEDED, .amount = 250, .at = t + 2,
			     .received_at = t + 3};
	snprintf(c.host_txn, sizeof(c.host_txn), "%s", txn);
	snprintf(c.attempt_id, sizeof(c.attempt_id), "%s", aid);
	snprintf(c.currency, sizeof(c.currency), "EUR");
	bool already;
	kp_attempt_move m = {.from = KP_ATTEMPT_PAYING, .to = KP_ATTEMPT_SUCCEEDED, .host_txn = txn,
			     .now = t + 3, .cause = "confirm"};
	if ((err = kp_journal_begin(s->j)) != KP_OK ||
	    (err = kp_journal_confirmation_record(s->j, &c, &already)) != KP_OK ||
	    (err = kp_journal_attempt_move(s->j, aid, &m)) != KP_OK ||
	    (err = kp_journal_order_move(s->j, oid, KP_ORDER_PENDING, KP_ORDER_PAID, t + 3, "confirm")) != KP_OK ||
	    (err = kp_journal_commit(s->j)) != KP_OK)
		die("confirm transaction", err);
	if ((err = kp_journal_order_move(s->j, oid, KP_ORDER_PAID, KP_ORDER_FULFILLED, t + 4, "vend success")) != KP_OK)
		die("fulfil", err);
}

static kp_journal *jopen(const char *path, const kp_env *env, int page_size, int autockpt)
{
	kp_journal_opts o = {.vfs_name = KP_COUNT_VFS_NAME, .page_size = page_size,
			     .wal_autocheckpoint = autockpt};
	kp_journal *j = NULL;
	kp_err err = kp_journal_open_ex(&j, path, 0, env, &o);
	if (err != KP_OK)
		die(path, err);
	return j;
}

/* ---------- the plain SQLite side: one row, one statement per commit ---------- */

struct bside {
	sqlite3 *db;
	sqlite3_stmt *ins, *upd;
	int next;
};

static void bexec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		fprintf(stderr, "kp-bench-journal: baseline: %s: %s\n", sql, msg ? msg : "?");
		exit(1);
	}
}

static void bopen(struct bside *b, const char *path, int page_size, int autockpt)
{
	char sql[64];
	if (sqlite3_open_v2(path, &b->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, KP_COUNT_VFS_NAME) !=
	    SQLITE_OK) {
		fprintf(stderr, "kp-bench-journal: cannot open %s\n", path);
		exit(1);
	}
	snprintf(sql, sizeof(sql), "PRAGMA page_size=%d", page_size);
	bexec(b->db, sql);
	bexec(b->db, "PRAGMA journal_mode=WAL");
	bexec(b->db, "PRAGMA synchronous=FULL");
	sqlite3_wal_autocheckpoint(b->db, autockpt);
	bexec(b->db, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, state TEXT NOT NULL, "
		     "at INTEGER NOT NULL)");
	if (sqlite3_prepare_v2(b->db, "INSERT INTO t VALUES(?1,'pending',?1)", -1, &b->ins, NULL) ||
	    sqlite3_prepare_v2(b->db, "UPDATE t SET state=?2, at=?1 WHERE id=?1", -1, &b->upd, NULL)) {
		fprintf(stderr, "kp-bench-journal: baseline prepare: %s\n", sqlite3_errmsg(b->db));
		exit(1);
	}
}

static void bstep(struct bside *b, sqlite3_stmt *st)
{
	if (sqlite3_step(st) != SQLITE_DONE) {
		fprintf(stderr, "kp-bench-journal: baseline: %s\n", sqlite3_errmsg(b->db));
		exit(1);
	}
	sqlite3_reset(st);
}

/* The same number of commits as one payment: an insert and 2 or 3 updates. */
static void bpay_one(struct bside *b)
{
	int id = ++b->next;
	static const char *const states[] = {"paying", "paid", "fulfilled"};
	const char *const *last = states + 3 - (COMMITS_PER_PAYMENT - 1);
	sqlite3_bind_int(b->ins, 1, id);
	bstep(b, b->ins);
	for (int k = 0; k < COMMITS_PER_PAYMENT - 1; k++) {
		sqlite3_bind_int(b->upd, 1, id);
		sqlite3_bind_text(b->upd, 2, last[k], -1, SQLITE_STATIC);
		bstep(b, b->upd);
	}
}

static void bclose(struct bside *b)
{
	sqlite3_finalize(b->ins);
	sqlite3_finalize(b->upd);
	sqlite3_close(b->db);
}

/* ---------- the naive design: what a user would write instead ----------
 * The same payment in plain SQLite with the default rollback journal
 * (journal_mode=DELETE, synchronous=FULL) and every statement its own
 * transaction: 11 autocommits where the journal makes 4 commits. */

struct nside {
	sqlite3 *db;
	sqlite3_stmt *st[7];
	int next;
};

enum { N_ORDER, N_ATTEMPT, N_CONF, N_ATT_SET, N_ORD_SET, N_EVENT, N__COUNT };

static void nopen(struct nside *n, const char *path, int page_size)
{
	static const char *const sql[] = {
		[N_ORDER] = "INSERT INTO orders VALUES(?1,?2,250,'EUR','pending',?3,?3)",
		[N_ATTEMPT] = "INSERT INTO attempts VALUES(?1,?2,'card',250,'paying','',?3,?3)",
		[N_CONF] = "INSERT INTO confirmations VALUES(?1,?2,?3,'succeeded',250,?4)",
		[N_ATT_SET] = "UPDATE attempts SET state=?2, host_txn=?3, updated_at=?4 WHERE attempt_id=?1",
		[N_ORD_SET] = "UPDATE orders SET state=?2, updated_at=?3 WHERE order_id=?1",
		[N_EVENT] = "INSERT INTO events(at,kind,record_id,to_state) VALUES(?1,?2,?3,?4)",
	};
	char pragma[64];
	if (sqlite3_open_v2(path, &n->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, KP_COUNT_VFS_NAME) !=
	    SQLITE_OK) {
		fprintf(stderr, "kp-bench-journal: cannot open %s\n", path);
		exit(1);
	}
	snprintf(pragma, sizeof(pragma), "PRAGMA page_size=%d", page_size);
	bexec(n->db, pragma);
	bexec(n->db, "PRAGMA journal_mode=DELETE");
	bexec(n->db, "PRAGMA synchronous=FULL");
	bexec(n->db, "CREATE TABLE orders(order_id TEXT PRIMARY KEY, dedup_key TEXT UNIQUE, amount INT, "
		     "currency TEXT, state TEXT, created_at INT, updated_at INT)");
	bexec(n->db, "CREATE TABLE attempts(attempt_id TEXT PRIMARY KEY, order_id TEXT, channel TEXT, "
		     "amount INT, state TEXT, host_txn TEXT, created_at INT, updated_at INT)");
	bexec(n->db, "CREATE INDEX attempts_order ON attempts(order_id)");
	bexec(n->db, "CREATE TABLE confirmations(host_txn TEXT PRIMARY KEY, seq INT, attempt_id TEXT, "
		     "status TEXT, amount INT, received_at INT)");
	bexec(n->db, "CREATE TABLE events(seq INTEGER PRIMARY KEY, at INT, kind TEXT, record_id TEXT, "
		     "to_state TEXT)");
	for (int k = 0; k < N__COUNT; k++)
		if (sqlite3_prepare_v2(n->db, sql[k], -1, &n->st[k], NULL) != SQLITE_OK) {
			fprintf(stderr, "kp-bench-journal: naive prepare: %s\n", sqlite3_errmsg(n->db));
			exit(1);
		}
}

static void nstep(struct nside *n, int k)
{
	if (sqlite3_step(n->st[k]) != SQLITE_DONE) {
		fprintf(stderr, "kp-bench-journal: naive: %s\n", sqlite3_errmsg(n->db));
		exit(1);
	}
	sqlite3_reset(n->st[k]);
}

static void nevent(struct nside *n, int64_t t, const char *kind, const char *id, const char *to)
{
	sqlite3_bind_int64(n->st[N_EVENT], 1, t);
	sqlite3_bind_text(n->st[N_EVENT], 2, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(n->st[N_EVENT], 3, id, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(n->st[N_EVENT], 4, to, -1, SQLITE_STATIC);
	nstep(n, N_EVENT);
}

static void nset(struct nside *n, int k, const char *id, const char *state, const char *txn, int64_t t)
{
	sqlite3_stmt *st = n->st[k];
	sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
	if (k == N_ATT_SET) {
		sqlite3_bind_text(st, 3, txn, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 4, t);
	} else {
		sqlite3_bind_int64(st, 3, t);
	}
	nstep(n, k);
}

/* One payment, 11 autocommits: order (2), attempt (2), confirm (5), fulfil (2). */
static void npay_one(struct nside *n)
{
	int i = n->next++;
	int64_t t = 1700000000000LL + 10 * (int64_t)(i + 1);
	struct ids d;
	payment_ids(&d, i, t);
	const char *oid = d.oid, *key = d.key, *aid = d.aid, *txn = d.txn;
	sqlite3_bind_text(n->st[N_ORDER], 1, oid, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(n->st[N_ORDER], 2, key, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(n->st[N_ORDER], 3, t);
	nstep(n, N_ORDER);
	nevent(n, t, "order", oid, "pending");
	sqlite3_bind_text(n->st[N_ATTEMPT], 1, aid, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(n->st[N_ATTEMPT], 2, oid, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(n->st[N_ATTEMPT], 3, t + 1);
	nstep(n, N_ATTEMPT);
	nevent(n, t + 1, "attempt", aid, "paying");
	sqlite3_bind_text(n->st[N_CONF], 1, txn, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(n->st[N_CONF], 2, i);
	sqlite3_bind_text(n->st[N_CONF], 3, aid, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(n->st[N_CONF], 4, t + 3);
	nstep(n, N_CONF);
	nset(n, N_ATT_SET, aid, "succeeded", txn, t + 3);
	nevent(n, t + 3, "attempt", aid, "succeeded");
	nset(n, N_ORD_SET, oid, "paid", NULL, t + 3);
	nevent(n, t + 3, "order", oid, "paid");
	nset(n, N_ORD_SET, oid, "fulfilled", NULL, t + 4);
	nevent(n, t + 4, "order", oid, "fulfilled");
}

static void nclose(struct nside *n)
{
	for (int k = 0; k < N__COUNT; k++)
		sqlite3_finalize(n->st[k]);
	sqlite3_close(n->db);
}

/* ---------- the device: a 4 KiB append made durable with fdatasync ---------- */

/* n appends; their latencies (us) into lat. Returns the total seconds. */
static double fsync_appends(const char *path, int n, double *lat)
{
	static char block[4096];
	memset(block, 'k', sizeof(block));
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "kp-bench-journal: %s: %s\n", path, strerror(errno));
		exit(1);
	}
	double s = now_s();
	for (int i = 0; i < n; i++) {
		double t = now_s();
		if (write(fd, block, sizeof(block)) != (ssize_t)sizeof(block) || fdatasync(fd) != 0) {
			fprintf(stderr, "kp-bench-journal: append/fdatasync: %s\n", strerror(errno));
			exit(1);
		}
		lat[i] = (now_s() - t) * 1e6;
	}
	double e = now_s() - s;
	close(fd);
	return e;
}

/* ---------- report ---------- */

/* A counter summed over the kinds of file. */
static int64_t all_kinds(const int64_t *v)
{
	int64_t sum = 0;
	for (int k = 0; k < KP_COUNT__KINDS; k++)
		sum += v[k];
	return sum;
}

/* acc += d, counter by counter. */
static void add_to(kp_count_stats *acc, const kp_count_stats *d)
{
	for (int k = 0; k < KP_COUNT__KINDS; k++) {
		acc->syncs[k] += d->syncs[k];
		acc->bytes[k] += d->bytes[k];
		acc->writes[k] += d->writes[k];
		acc->reads[k] += d->reads[k];
	}
}

static void delta(kp_count_stats *d, const kp_count_stats *a, const kp_count_stats *b)
{
	for (int k = 0; k < KP_COUNT__KINDS; k++) {
		d->syncs[k] = b->syncs[k] - a->syncs[k];
		d->bytes[k] = b->bytes[k] - a->bytes[k];
		d->writes[k] = b->writes[k] - a->writes[k];
		d->reads[k] = b->reads[k] - a->reads[k];
	}
}

static void io_per(const kp_count_stats *d, int n, double *syncs, double *kib)
{
	*syncs = (double)all_kinds(d->syncs) / n;
	*kib = (double)all_kinds(d->bytes) / n / 1024.0;
}

static void print_io(const char *label, const kp_count_stats *d, int n)
{
	double syncs, kib;
	io_per(d, n, &syncs, &kib);
	printf("    %-34s %5.2f syncs (WAL %.2f, main %.2f), %6.1f KiB written (WAL %.1f, main %.1f)\n",
	       label, syncs, (double)d->syncs[KP_COUNT_WAL] / n, (double)d->syncs[KP_COUNT_MAIN] / n, kib,
	       (double)d->bytes[KP_COUNT_WAL] / n / 1024.0, (double)d->bytes[KP_COUNT_MAIN] / n / 1024.0);
}

static void usage(void)
{
	fprintf(stderr, "usage: kp-bench-journal [--dir DIR] [--payments N] [--page-size BYTES]\n"
			"                         [--autocheckpoint PAGES] [--prefill N] [--two-requests]\n"
			"                         [--ordered-keys] [--json FILE]\n"
			"  measures in a fresh temp dir under DIR (default /tmp); N completed payments\n"
			"  (default 300); page size of the journal and the baseline (default the\n"
			"  journal's, %d); the journal's WAL autocheckpoint (default the daemon's);\n"
			"  --prefill: N payments made first, not measured (a journal in service:\n"
			"  the random-key indexes then touch leaves all over the file);\n"
			"  --two-requests: a sale as POST /orders then /pay (4 commits, not 3);\n"
			"  --ordered-keys: the UI's dedup keys are time-ordered (UUID v7), not v4;\n"
			"  --json: the figures as one JSON object too\n", KP_JOURNAL_PAGE_SIZE);
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
	struct opts op = {.dir = "/tmp", .payments = 300, .page_size = KP_JOURNAL_PAGE_SIZE};
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			op.dir = argv[++i];
		else if (strcmp(argv[i], "--payments") == 0 && i + 1 < argc)
			op.payments = int_arg(argv[++i], ROUNDS, 10000000);
		else if (strcmp(argv[i], "--page-size") == 0 && i + 1 < argc)
			op.page_size = int_arg(argv[++i], 512, 65536);
		else if (strcmp(argv[i], "--autocheckpoint") == 0 && i + 1 < argc)
			op.autockpt = int_arg(argv[++i], 1, 1000000);
		else if (strcmp(argv[i], "--prefill") == 0 && i + 1 < argc)
			op.prefill = int_arg(argv[++i], 0, 10000000);
		else if (strcmp(argv[i], "--two-requests") == 0)
			commits_per_payment = 4;
		else if (strcmp(argv[i], "--ordered-keys") == 0)
			ordered_keys = true;
		else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc)
			op.json = argv[++i];
		else
			usage();
	}
	op.payments -= op.payments % ROUNDS;
	kp_journal_setup(); /* before the VFS below initializes SQLite: as in the daemon, for both sides */
	if (kp_count_vfs_register() != KP_OK)
		die("register the counting VFS", KP_ERR_INTERNAL);
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s/kp-bench-journal-XXXXXX", op.dir);
	if (!mkdtemp(dir)) {
		fprintf(stderr, "kp-bench-journal: mkdtemp in %s: %s\n", op.dir, strerror(errno));
		return 1;
	}
	kp_env env;
	kp_env_init_system(&env);
	env.log_level = KP_LOG_WARN;
	char jpath[4200], bpath[4200], j2path[4200], j3path[4200], npath[4200], fpath[4200];
	snprintf(jpath, sizeof(jpath), "%s/journal.db", dir);
	snprintf(j2path, sizeof(j2path), "%s/journal-nockpt.db", dir);
	snprintf(bpath, sizeof(bpath), "%s/baseline.db", dir);
	snprintf(j3path, sizeof(j3path), "%s/journal-vs-naive.db", dir);
	snprintf(npath, sizeof(npath), "%s/naive.db", dir);
	snprintf(fpath, sizeof(fpath), "%s/appends.bin", dir);
	int n = op.payments, commits = COMMITS_PER_PAYMENT * n;

	printf("kp-bench-journal: %d completed payments = %d journal commits, vs %d plain single-row commits\n",
	       n, commits, commits);
	printf("  files in %s, file system %s\n", dir, fs_name(dir));
	printf("  SQLite %s, WAL, synchronous=FULL, page_size %d, both through the counting VFS\n",
	       sqlite3_libversion(), op.page_size);
	if (op.prefill)
		printf("  (a)-(c) on journals that already hold %d payments (--prefill)\n", op.prefill);
	printf("  a payment: %s | confirmation + attempt succeeded + order paid | order fulfilled\n",
	       COMMITS_PER_PAYMENT == 3 ? "order + attempt begin (one-request sale)" : "order create | attempt begin");
	printf("  dedup keys: %s\n", ordered_keys ? "time-ordered (UUID v7, --ordered-keys)" : "random (UUID v4)");

	/* (a) vs (b), interleaved in rounds (which goes first alternates) so that a
	 * busy machine hurts both alike; the ratio reported is the median of the
	 * rounds'. Both checkpoint every autockpt pages (the daemon's unless
	 * --autocheckpoint). */
	struct jside js = {.j = jopen(jpath, &env, op.page_size, op.autockpt), .t = 1700000000000LL};
	struct bside bs = {0};
	bopen(&bs, bpath, op.page_size, op.autockpt ? op.autockpt : KP_JOURNAL_WAL_AUTOCHECKPOINT);
	for (int i = 0; i < op.prefill; i++) {
		pay_one(&js);
		bpay_one(&bs);
	}
	double tj = 0, tb = 0, cj = 0, cb = 0, uj = 0, ub = 0, ratios[ROUNDS];
	kp_count_stats c0, c1, c2, dj = {0}, db = {0}, d;
	for (int r = 0; r < ROUNDS; r++) {
		double rj = 0, rb = 0;
		for (int half = 0; half < 2; half++) {
			bool journal = (half == 0) == (r % 2 == 0);
			kp_count_vfs_get(&c0);
			double us, cs = cpu_s(&us), s = now_s();
			for (int i = 0; i < n / ROUNDS; i++) {
				if (journal)
					pay_one(&js);
				else
					bpay_one(&bs);
			}
			double e = now_s();
			double ue, ce = cpu_s(&ue);
			*(journal ? &cj : &cb) += ce - cs;
			*(journal ? &uj : &ub) += ue - us;
			kp_count_vfs_get(&c1);
			delta(&d, &c0, &c1);
			add_to(journal ? &dj : &db, &d);
			*(journal ? &rj : &rb) = e - s;
		}
		tj += rj;
		tb += rb;
		ratios[r] = rb / rj; /* (commits/rj) / (commits/rb) */
	}
	kp_journal_close(js.j);
	bclose(&bs);
	qsort(ratios, ROUNDS, sizeof(ratios[0]), cmp_double);
	double ja = commits / tj, bb = commits / tb;
	printf("(a) journal:  %6d commits in %6.2f s = %7.1f commits/s (%.1f payments/s)\n", commits, tj, ja,
	       ja / COMMITS_PER_PAYMENT);
	printf("(b) baseline: %6d commits in %6.2f s = %7.1f commits/s\n", commits, tb, bb);
	printf("    ratio a/b = %.2f overall, %.2f median of %d rounds (min %.2f, max %.2f; target >= 0.8)\n",
	       ja / bb, (ratios[ROUNDS / 2 - 1] + ratios[ROUNDS / 2]) / 2, ROUNDS, ratios[0],
	       ratios[ROUNDS - 1]);
	printf("    CPU per commit (user+sys, incl. fsync syscalls): journal %.0f us (user %.0f), baseline %.0f us "
	       "(user %.0f)\n",
	       cj / commits * 1e6, uj / commits * 1e6, cb / commits * 1e6, ub / commits * 1e6);
	double reads_j = (double)all_kinds(dj.reads) / commits;
	printf("    file calls per commit: journal %.1f writes, %.1f reads; baseline %.1f writes, %.1f reads\n",
	       (double)all_kinds(dj.writes) / commits, reads_j, (double)all_kinds(db.writes) / commits,
	       (double)all_kinds(db.reads) / commits);
	double load[3] = {0};
	if (getloadavg(load, 3) == 3)
		printf("    load average %.2f %.2f %.2f (a busy machine makes these figures noisy)\n", load[0],
		       load[1], load[2]);

	/* (c) what one payment costs on the disk, without checkpoints, then the
	 * checkpoint that eventually moves it into the main file. */
	struct jside jn = {.j = jopen(j2path, &env, op.page_size, op.autockpt), .t = 1700000000000LL};
	for (int i = 0; i < op.prefill; i++)
		pay_one(&jn);
	kp_journal_close(jn.j); /* the prefill checkpointed into the main file */
	jn.j = jopen(j2path, &env, op.page_size, -1);
	kp_count_vfs_get(&c0);
	for (int i = 0; i < n; i++)
		pay_one(&jn);
	kp_count_vfs_get(&c1);
	kp_journal_close(jn.j); /* the last close checkpoints the WAL into the main file */
	kp_count_vfs_get(&c2);
	printf("(c) per completed payment (%d commits), counted by the VFS (targets <= 4 syncs, <= 16 KiB):\n",
	       COMMITS_PER_PAYMENT);
	delta(&d, &c0, &c1);
	print_io("without checkpoint:", &d, n);
	kp_count_stats ck;
	delta(&ck, &c1, &c2);
	print_io("+ one final checkpoint, amortized:", &ck, n);
	add_to(&d, &ck);
	print_io("= total without autocheckpoint:", &d, n);
	char label[64];
	snprintf(label, sizeof(label), "with autocheckpoint (%d pages):",
		 op.autockpt ? op.autockpt : KP_JOURNAL_WAL_AUTOCHECKPOINT);
	print_io(label, &dj, n);
	snprintf(label, sizeof(label), "baseline, %d single-row commits:", COMMITS_PER_PAYMENT);
	print_io(label, &db, n);

	/* (d) the naive design, interleaved in rounds with a fresh journal, and
	 * (e) the device's durability limit, 4 KiB appends each made durable, as
	 * many as the journal's commits, in the same rounds. */
	int per = COMMITS_PER_PAYMENT * (n / ROUNDS);
	double *lat = calloc((size_t)(per * ROUNDS), sizeof(*lat));
	if (!lat)
		die("out of memory", KP_ERR_NOMEM);
	double tf = 0;
	struct jside j3 = {.j = jopen(j3path, &env, op.page_size, op.autockpt), .t = 1700000000000LL};
	struct nside ns = {0};
	nopen(&ns, npath, op.page_size);
	double tj3 = 0, tn = 0;
	kp_count_stats dj3 = {0}, dn = {0};
	for (int r = 0; r < ROUNDS; r++) {
		for (int half = 0; half < 2; half++) {
			bool journal = (half == 0) == (r % 2 == 0);
			kp_count_vfs_get(&c0);
			double s = now_s();
			for (int i = 0; i < n / ROUNDS; i++) {
				if (journal)
					pay_one(&j3);
				else
					npay_one(&ns);
			}
			*(journal ? &tj3 : &tn) += now_s() - s;
			kp_count_vfs_get(&c1);
			delta(&d, &c0, &c1);
			add_to(journal ? &dj3 : &dn, &d);
		}
		tf += fsync_appends(fpath, per, lat + r * per);
	}
	kp_journal_close(j3.j);
	nclose(&ns);
	double pj = n / tj3, pn = n / tn, sj, kj, sn, kn;
	io_per(&dj3, n, &sj, &kj);
	io_per(&dn, n, &sn, &kn);
	printf("(d) naive design (rollback journal, synchronous=FULL, one statement per transaction:\n"
	       "    11 autocommits per payment), interleaved with the journal:\n");
	printf("    journal %6.1f payments/s (%.2f syncs, %.1f KiB each) | naive %6.1f payments/s (%.2f syncs,"
	       " %.1f KiB each) | ratio journal/naive %.2f\n", pj, sj, kj, pn, sn, kn, pj / pn);

	int na = per * ROUNDS;
	qsort(lat, (size_t)na, sizeof(*lat), cmp_double);
	double fps = na / tf, jc = COMMITS_PER_PAYMENT * pj;
	printf("(e) raw 4 KiB append + fdatasync, in the rounds of (d): %d in %.2f s = %.1f/s (p50 %.2f ms, "
	       "p99 %.2f ms):\n    the device's durability limit; the journal's %.1f commits/s in (d) are %.2f "
	       "of it\n", na, tf, fps, lat[na / 2] / 1000.0, lat[(na * 99) / 100] / 1000.0, jc, jc / fps);

	if (op.json) {
		FILE *f = fopen(op.json, "w");
		if (!f)
			die(op.json, KP_ERR_IO);
		double sa, ka, sbase, kbase; /* as the daemon runs: with autocheckpoint */
		io_per(&dj, n, &sa, &ka);
		io_per(&db, n, &sbase, &kbase);
		fprintf(f, "{\"bench\":\"journal\",\"payments\":%d,\"prefill\":%d,\"ordered_keys\":%s,"
			   "\"commits\":%d,\"page_size\":%d,"
			   "\"journal_commits_per_s\":%.1f,\"baseline_commits_per_s\":%.1f,\"ratio_overall\":%.3f,"
			   "\"ratio_median\":%.3f,\"journal_payments_per_s\":%.1f,\"cpu_us_per_commit\":%.1f,"
			   "\"baseline_cpu_us_per_commit\":%.1f,\"user_us_per_commit\":%.1f,"
			   "\"baseline_user_us_per_commit\":%.1f,\"reads_per_commit\":%.2f,\"syncs_per_payment\":%.3f,\"kib_per_payment\":%.2f,"
			   "\"baseline_syncs_per_payment\":%.3f,\"baseline_kib_per_payment\":%.2f,"
			   "\"vsnaive_journal_payments_per_s\":%.1f,\"naive_payments_per_s\":%.1f,"
			   "\"naive_syncs_per_payment\":%.3f,\"naive_kib_per_payment\":%.2f,"
			   "\"journal_over_naive\":%.3f,\"fsync_per_s\":%.1f,\"fsync_p50_ms\":%.3f,"
			   "\"fsync_p99_ms\":%.3f,\"journal_commits_per_s_vs_fsync\":%.1f,\"journal_over_fsync\":%.3f,"
			   "\"load1\":%.2f}\n",
			n, op.prefill, ordered_keys ? "true" : "false", commits, op.page_size, ja, bb, ja / bb, (ratios[ROUNDS / 2 - 1] + ratios[ROUNDS / 2]) / 2,
			ja / COMMITS_PER_PAYMENT, cj / commits * 1e6, cb / commits * 1e6, uj / commits * 1e6,
			ub / commits * 1e6, reads_j, sa, ka, sbase, kbase, pj, pn, sn, kn, pj / pn,
			fps, lat[na / 2] / 1000.0, lat[(na * 99) / 100] / 1000.0, jc, jc / fps, load[0]);
		fclose(f);
	}
	free(lat);

	kp_rmtree(dir);
	return 0;
}
