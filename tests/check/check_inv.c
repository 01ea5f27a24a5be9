/* check_inv.c — the seven invariants as SQL queries (see check_inv.h and
 * docs/check.md). Each query yields (severity, message) rows; severity is FAIL,
 * WARN (not quiet yet) or ALARM (allowed, needs a person). The state machines
 * used for the event log are written here from design.md, not taken from
 * storage/states.c, so that a mistake there is not repeated here. */
#include "check_inv.h"

#include <stdlib.h>
#include <string.h>

#define MSG_MAX 400
#define LIST_CAP 10000

enum needs { NEEDS_NONE = 0, NEEDS_LEDGER = 1, NEEDS_QUIET = 2 };

struct invariant {
	int num;
	const char *title;
	const char *count_sql; /* one integer: how many things were looked at */
	const char *noun;
	unsigned needs;
	const char *const *queries; /* NULL-terminated; rows (severity, message) */
};

#define LIVE "('created','paying','canceling')"
/* Attempt states in which the journal knows its capture. */
#define CAPTURE_KNOWN "('succeeded','refunding','refunded','refund_rejected')"

/* ---- 1: at most one kept success per order ---- */
static const char *const q_inv1[] = {
	"SELECT 'FAIL', printf('order %s has %d kept successes: %s', order_id, count(*), "
	"group_concat(attempt_id, ' ')) FROM attempts WHERE state = 'succeeded' "
	"GROUP BY order_id HAVING count(*) > 1 ORDER BY order_id",

	"SELECT 'FAIL', printf('order %s is %s but has no kept success', o.order_id, o.state) "
	/* Not correlated by order_id: since schema 6 no index serves that. */
	"FROM orders o WHERE o.state IN ('paid','fulfilled') AND o.order_id NOT IN (SELECT order_id "
	"FROM attempts WHERE state = 'succeeded') ORDER BY o.order_id",

	"SELECT 'FAIL', printf('order %s is %s but keeps success %s', o.order_id, o.state, a.attempt_id) "
	"FROM attempts a JOIN orders o ON o.order_id = a.order_id WHERE a.state = 'succeeded' AND "
	"o.state NOT IN ('paid','fulfilled') ORDER BY o.order_id",
	NULL,
};

/* ---- 2: money conserved per order against the ledger ---- */
static const char *const q_inv2[] = {
	"WITH cap AS (SELECT order_id, sum(amount) AS captured FROM temp.ledger_payments "
	"  WHERE status = 'succeeded' GROUP BY order_id),"
	" hr AS (SELECT p.order_id, sum(CASE WHEN r.status = 'refunded' THEN r.amount ELSE 0 END) AS refunded,"
	"  sum(r.status = 'pending') AS pending FROM temp.ledger_refunds r JOIN temp.ledger_payments p"
	"  ON p.host_txn = r.host_txn AND p.status = 'succeeded' GROUP BY p.order_id),"
	/* journal refunds with the order they concern (an orphan's through its capture) */
	" jr AS (SELECT coalesce(r.order_id, p.order_id) AS order_id, r.state FROM refunds r"
	"  LEFT JOIN temp.ledger_payments p ON p.host_txn = r.host_txn),"
	" busy AS (SELECT order_id FROM attempts WHERE state IN ('created','paying','canceling','refunding')"
	"  UNION SELECT order_id FROM jr WHERE state IN ('pending','sent')"
	"  UNION SELECT order_id FROM hr WHERE pending > 0"
	/* a capture whose confirm the host has not had acked: the kiosk may not know it yet */
	"  UNION SELECT p.order_id FROM temp.ledger_confirms c JOIN temp.ledger_payments p"
	"  ON p.host_txn = c.host_txn WHERE c.acked = 0),"
	" person AS (SELECT order_id FROM attempts WHERE state IN ('unresolved','refund_rejected')"
	"  UNION SELECT order_id FROM jr WHERE state = 'rejected'),"
	" m AS (SELECT o.order_id, o.state, coalesce(cap.captured, 0) AS captured,"
	"  coalesce(hr.refunded, 0) AS refunded,"
	"  CASE WHEN o.state IN ('paid','fulfilled') THEN o.amount ELSE 0 END AS expected,"
	"  o.order_id IN busy AS busy, o.order_id IN person AS person"
	"  FROM orders o LEFT JOIN cap ON cap.order_id = o.order_id LEFT JOIN hr ON hr.order_id = o.order_id)"
	" SELECT CASE WHEN busy THEN (CASE WHEN :quiet THEN 'FAIL' ELSE 'WARN' END)"
	"  WHEN person THEN 'ALARM' ELSE 'FAIL' END,"
	" printf('order %s captured %d refunded %d expected %d (%s)%s', order_id, captured, refunded,"
	"  expected, state, CASE WHEN busy THEN ': not quiet'"
	"  WHEN person THEN ': a refund was rejected or an attempt is unresolved (needs a person)'"
	"  ELSE '' END)"
	" FROM m WHERE captured - refunded <> expected ORDER BY order_id",
	NULL,
};

/* ---- 3: every capture known to the journal ---- */
static const char *const q_inv3[] = {
	"SELECT CASE WHEN a.state IN " LIVE " OR c.acked = 0 THEN (CASE WHEN :quiet THEN 'FAIL' ELSE 'WARN' END)"
	"  WHEN a.state = 'unresolved' THEN 'ALARM' ELSE 'FAIL' END,"
	" printf('capture %s of attempt %s (order %s, %d %s) %s', p.host_txn, p.attempt_id, p.order_id,"
	"  p.amount, p.currency, CASE"
	"  WHEN a.state IN " LIVE " THEN printf('is not recorded yet: the attempt is %s (not quiet)', a.state)"
	"  WHEN c.acked = 0 THEN printf('is not recorded yet: the host''s confirm %d to %s is not acked (not quiet)',"
	"   c.seq, c.device_id)"
	"  WHEN a.attempt_id IS NULL THEN 'is unknown to the journal and has no refund' ||"
	"   CASE WHEN c.acked = 1 THEN printf(', yet the kiosk acked its confirm %d', c.seq) ELSE '' END"
	"  WHEN a.state = 'unresolved' THEN 'is unresolved in the journal (needs a person)'"
	"  ELSE printf('is lost: the journal attempt is %s with host_txn ''%s'' and no refund', a.state,"
	"   a.host_txn) END)"
	" FROM temp.ledger_payments p LEFT JOIN attempts a ON a.attempt_id = p.attempt_id"
	" LEFT JOIN temp.ledger_confirms c ON c.host_txn = p.host_txn"
	" WHERE p.status = 'succeeded'"
	"  AND NOT coalesce(a.host_txn = p.host_txn AND a.state IN " CAPTURE_KNOWN ", 0)"
	"  AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.host_txn = p.host_txn)"
	" ORDER BY p.attempt_id",
	NULL,
};

/* ---- 4: no id sent to the host with other parameters, no id the journal never made ---- */
static const char *const q_inv4[] = {
	"SELECT 'FAIL', printf('attempt %s: the host has order %s amount %d %s channel %s; the journal "
	"has order %s amount %d %s channel %s', p.attempt_id, p.order_id, p.amount, p.currency, p.channel,"
	" a.order_id, a.amount, coalesce(o.currency, '?'), a.channel)"
	" FROM temp.ledger_payments p JOIN attempts a ON a.attempt_id = p.attempt_id"
	" LEFT JOIN orders o ON o.order_id = a.order_id"
	" WHERE p.order_id <> a.order_id OR p.amount <> a.amount OR p.channel <> a.channel"
	"  OR p.currency IS NOT o.currency ORDER BY p.attempt_id",

	"SELECT 'FAIL', printf('attempt %s (order %s, %d %s, %s) reached the host but is not in the journal',"
	" p.attempt_id, p.order_id, p.amount, p.currency, p.status) FROM temp.ledger_payments p"
	" WHERE p.origin = 'kiosk' AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.attempt_id = p.attempt_id)"
	" ORDER BY p.attempt_id",

	"SELECT 'FAIL', printf('attempt %s was canceled at the host but is not in the journal', t.attempt_id)"
	" FROM temp.ledger_tombstones t WHERE NOT EXISTS (SELECT 1 FROM attempts a WHERE a.attempt_id = t.attempt_id)"
	" ORDER BY t.attempt_id",

	"SELECT 'FAIL', CASE WHEN j.refund_id IS NULL THEN printf('refund %s (attempt %s, capture %s, %d, %s) "
	"reached the host but is not in the journal', r.refund_id, r.attempt_id, r.host_txn, r.amount, r.reason)"
	" ELSE printf('refund %s: the host has attempt %s capture %s amount %d reason %s; the journal has "
	"attempt %s capture %s amount %d reason %s', r.refund_id, r.attempt_id, r.host_txn, r.amount, r.reason,"
	" j.attempt_id, j.host_txn, j.amount, j.reason) END"
	" FROM temp.ledger_refunds r LEFT JOIN refunds j ON j.refund_id = r.refund_id"
	" WHERE j.refund_id IS NULL OR j.attempt_id <> r.attempt_id OR j.host_txn <> r.host_txn"
	"  OR j.amount <> r.amount OR j.reason <> r.reason ORDER BY r.refund_id",

	"SELECT 'FAIL', printf('attempt %s has host_txn %s in the journal; the host %s', a.attempt_id, a.host_txn,"
	" CASE WHEN p.attempt_id IS NULL THEN 'has no such payment'"
	" ELSE printf('says %s', coalesce(p.host_txn, 'none')) END)"
	" FROM attempts a LEFT JOIN temp.ledger_payments p ON p.attempt_id = a.attempt_id"
	" WHERE a.host_txn <> '' AND (p.attempt_id IS NULL OR p.host_txn IS NOT a.host_txn)"
	" ORDER BY a.attempt_id",

	"SELECT 'FAIL', printf('confirmation %s (attempt %s, %s, %d %s) %s', c.host_txn, c.attempt_id, c.status,"
	" c.amount, c.currency, CASE WHEN p.host_txn IS NULL THEN 'matches no payment at the host'"
	" ELSE printf('differs from the host''s payment (attempt %s, %s, %d %s)', p.attempt_id, p.status,"
	" p.amount, p.currency) END)"
	" FROM confirmations c LEFT JOIN temp.ledger_payments p ON p.host_txn = c.host_txn"
	" WHERE p.host_txn IS NULL OR p.attempt_id <> c.attempt_id OR p.status <> c.status"
	"  OR p.amount <> c.amount OR p.currency <> c.currency ORDER BY c.host_txn",
	NULL,
};

/* ---- 5: nothing in limbo after quiescence ---- */
static const char *const q_inv5[] = {
	"SELECT 'FAIL', printf('attempt %s (order %s) is still %s', attempt_id, order_id, state)"
	" FROM attempts WHERE state IN ('created','paying','canceling','refunding') ORDER BY attempt_id",

	"SELECT 'FAIL', printf('refund %s (capture %s, %s) is still %s', refund_id, host_txn, reason, state)"
	" FROM refunds WHERE state IN ('pending','sent') ORDER BY refund_id",

	"SELECT 'ALARM', printf('attempt %s (order %s, %d) is unresolved: needs a person', attempt_id,"
	" order_id, amount) FROM attempts WHERE state = 'unresolved' ORDER BY attempt_id",

	"SELECT 'ALARM', printf('refund %s of capture %s (%s, %d) was rejected by the host: needs a person',"
	" refund_id, host_txn, reason, amount) FROM refunds WHERE state = 'rejected' ORDER BY refund_id",

	"SELECT 'FAIL', printf('the host''s confirm %d to %s (attempt %s, capture %s) is not acked', seq,"
	" device_id, attempt_id, host_txn) FROM temp.ledger_confirms WHERE acked = 0 ORDER BY device_id, seq",

	"SELECT 'WARN', printf('the host still has attempt %s pending; the journal says %s', p.attempt_id,"
	" coalesce(a.state, 'nothing')) FROM temp.ledger_payments p LEFT JOIN attempts a ON a.attempt_id = p.attempt_id"
	" WHERE p.status = 'pending' AND coalesce(a.state, '') NOT IN " LIVE " ORDER BY p.attempt_id",
	NULL,
};

/* ---- 6: integrity and foreign keys ---- */
static const char *const q_inv6[] = {
	"SELECT 'FAIL', printf('integrity_check: %s', integrity_check) FROM main.pragma_integrity_check"
	" WHERE integrity_check <> 'ok'",

	"SELECT 'FAIL', printf('foreign key: attempt %s names order %s, which does not exist', attempt_id,"
	" order_id) FROM attempts WHERE order_id NOT IN (SELECT order_id FROM orders) ORDER BY attempt_id",

	"SELECT 'FAIL', printf('foreign key: refund %s names order %s, which does not exist', refund_id,"
	" order_id) FROM refunds WHERE order_id IS NOT NULL AND order_id NOT IN (SELECT order_id FROM orders)"
	" ORDER BY refund_id",

	/* Whatever else foreign_key_check finds (the two above are its only keys today). */
	"SELECT 'FAIL', printf('foreign_key_check: %s row %s has no parent in %s', \"table\","
	" coalesce(rowid, '?'), parent) FROM main.pragma_foreign_key_check"
	" WHERE \"table\" NOT IN ('attempts','refunds')",
	NULL,
};

/* ---- 7: the event log tells each record's story up to its current state ---- */
static const char *const q_inv7[] = {
	"WITH e AS (SELECT seq, kind, record_id, from_state, to_state,"
	"  lag(to_state) OVER (PARTITION BY kind, record_id ORDER BY seq) AS prev FROM events)"
	" SELECT 'FAIL', printf('event %d (%s %s: %s -> %s) %s', seq, kind, record_id,"
	"  CASE WHEN from_state = '' THEN '(new)' ELSE from_state END, to_state,"
	"  CASE WHEN from_state IS NOT coalesce(prev, '') THEN"
	"   printf('does not follow on from the previous state %s', coalesce(prev, '(none: first event)'))"
	"  ELSE 'is not a legal move' END)"
	" FROM e WHERE from_state IS NOT coalesce(prev, '') OR NOT EXISTS (SELECT 1 FROM temp.moves m"
	"  WHERE m.kind = e.kind AND m.from_state = e.from_state AND m.to_state = e.to_state)"
	" ORDER BY seq",

	"WITH last AS (SELECT kind, record_id, to_state, max(seq) AS seq FROM events GROUP BY kind, record_id),"
	" rec AS (SELECT 'order' AS kind, order_id AS id, state FROM orders"
	"  UNION ALL SELECT 'attempt', attempt_id, state FROM attempts"
	"  UNION ALL SELECT 'refund', refund_id, state FROM refunds"
	"  UNION ALL SELECT 'confirmation', host_txn, status FROM confirmations)"
	" SELECT 'FAIL', CASE WHEN l.kind IS NULL THEN printf('%s %s (%s) has no events', r.kind, r.id, r.state)"
	"  ELSE printf('%s %s is %s but its last event (seq %d) says %s', r.kind, r.id, r.state, l.seq,"
	"  l.to_state) END"
	" FROM rec r LEFT JOIN last l ON l.kind = r.kind AND l.record_id = r.id"
	" WHERE l.kind IS NULL OR l.to_state IS NOT r.state"
	" UNION ALL SELECT 'FAIL', printf('events up to seq %d concern %s %s, which is not in the journal',"
	"  l.seq, l.kind, l.record_id) FROM last l WHERE NOT EXISTS (SELECT 1 FROM rec r"
	"  WHERE r.kind = l.kind AND r.id = l.record_id)",
	NULL,
};

static const struct invariant invariants[KP_CHECK_INVARIANTS] = {
	{1, "at most one kept success per order", "SELECT count(*) FROM orders", "orders", NEEDS_NONE, q_inv1},
	{2, "money conserved per order against the ledger", "SELECT count(*) FROM orders", "orders",
	 NEEDS_LEDGER, q_inv2},
	{3, "every capture is known to the journal",
	 "SELECT count(*) FROM temp.ledger_payments WHERE status = 'succeeded'", "captures", NEEDS_LEDGER, q_inv3},
	{4, "no id sent to the host with other parameters",
	 "SELECT (SELECT count(*) FROM temp.ledger_payments) + (SELECT count(*) FROM temp.ledger_refunds) + "
	 "(SELECT count(*) FROM temp.ledger_tombstones)", "ids at the host", NEEDS_LEDGER, q_inv4},
	{5, "nothing in limbo after quiescence",
	 "SELECT (SELECT count(*) FROM attempts) + (SELECT count(*) FROM refunds) + "
	 "(SELECT count(*) FROM temp.ledger_confirms)", "attempts, refunds and host confirms",
	 NEEDS_QUIET, q_inv5},
	{6, "integrity_check ok and foreign keys hold", "SELECT page_count FROM main.pragma_page_count",
	 "pages", NEEDS_NONE, q_inv6},
	{7, "event log consistent with every record", "SELECT count(*) FROM events", "events", NEEDS_NONE,
	 q_inv7},
};

/* The legal moves of each machine, from design.md "Records and states"; a
 * record is born by a move from "". Late host successes are refunded, so an
 * attempt that ended without money may still move to refunding. A refund may
 * skip "sent" when its answer comes in the same step. */
static const char *const moves[][3] = {
	{"order", "", "pending"},
	{"order", "pending", "paid"},
	{"order", "pending", "expired"},
	{"order", "pending", "canceled"},
	{"order", "paid", "fulfilled"},
	{"order", "paid", "fulfill_failed"},

	{"attempt", "", "created"},
	{"attempt", "", "paying"},
	{"attempt", "created", "paying"},
	{"attempt", "created", "failed"},
	{"attempt", "created", "canceled"},
	{"attempt", "paying", "succeeded"},
	{"attempt", "paying", "failed"},
	{"attempt", "paying", "canceled"},
	{"attempt", "paying", "expired"},
	{"attempt", "paying", "canceling"},
	{"attempt", "paying", "refunding"},
	{"attempt", "paying", "unresolved"},
	{"attempt", "canceling", "canceled"},
	{"attempt", "canceling", "succeeded"},
	{"attempt", "canceling", "failed"},
	{"attempt", "canceling", "refunding"},
	{"attempt", "canceling", "unresolved"},
	{"attempt", "succeeded", "refunding"},
	{"attempt", "failed", "refunding"},
	{"attempt", "canceled", "refunding"},
	{"attempt", "expired", "refunding"},
	{"attempt", "unresolved", "succeeded"},
	{"attempt", "unresolved", "failed"},
	{"attempt", "unresolved", "canceled"},
	{"attempt", "unresolved", "refunding"},
	{"attempt", "refunding", "refunded"},
	{"attempt", "refunding", "refund_rejected"},

	{"refund", "", "pending"},
	{"refund", "pending", "sent"},
	{"refund", "pending", "refunded"},
	{"refund", "pending", "rejected"},
	{"refund", "sent", "refunded"},
	{"refund", "sent", "rejected"},

	{"confirmation", "", "succeeded"},
	{"confirmation", "", "failed"},
};

/* ---------- findings ---------- */

enum sev { SEV_FAIL, SEV_WARN, SEV_ALARM, SEV__COUNT };
static const char *const sev_names[SEV__COUNT] = {"FAIL", "WARN", "ALARM"};

struct found {
	char **lines[SEV__COUNT];
	int listed[SEV__COUNT];
	long total[SEV__COUNT];
	int cap;
	bool broken; /* a query met a corrupt journal: the rest are not run */
};

static void found_free(struct found *f)
{
	for (int s = 0; s < SEV__COUNT; s++) {
		for (int i = 0; i < f->listed[s]; i++)
			free(f->lines[s][i]);
		free(f->lines[s]);
		f->lines[s] = NULL;
		f->listed[s] = 0;
		f->total[s] = 0;
	}
}

/* A printable copy of text: control bytes become '?', long text is cut. */
static char *clean_copy(const char *text)
{
	size_t n = strlen(text);
	bool cut = n > MSG_MAX;
	if (cut)
		n = MSG_MAX;
	char *s = malloc(n + 4);
	if (!s)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)text[i];
		s[i] = c == '\n' ? ' ' : (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	memcpy(s + n, cut ? "..." : "", cut ? 4 : 1);
	return s;
}

static kp_err found_add(struct found *f, enum sev s, const char *text)
{
	f->total[s]++;
	if (f->listed[s] >= f->cap)
		return KP_OK;
	if (!f->lines[s]) {
		f->lines[s] = calloc((size_t)f->cap, sizeof(char *));
		if (!f->lines[s])
			return KP_ERR_NOMEM;
	}
	char *line = clean_copy(text);
	if (!line)
		return KP_ERR_NOMEM;
	f->lines[s][f->listed[s]++] = line;
	return KP_OK;
}

/* ---------- running ---------- */

static bool corrupt_rc(int rc)
{
	return (rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB;
}

/* Run one query into f. A corrupt journal becomes a FAIL finding; any other
 * SQLite failure is returned (why set). */
static kp_err run_query(sqlite3 *db, const char *sql, bool quiet, struct found *f, int num, char *why,
			size_t why_size)
{
	sqlite3_stmt *st = NULL;
	kp_err err = KP_OK;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		int qi = sqlite3_bind_parameter_index(st, ":quiet");
		if (qi > 0)
			rc = sqlite3_bind_int(st, qi, quiet ? 1 : 0);
	}
	while (rc == SQLITE_OK || rc == SQLITE_ROW) {
		rc = sqlite3_step(st);
		if (rc != SQLITE_ROW)
			break;
		const char *sev = (const char *)sqlite3_column_text(st, 0);
		const char *msg = (const char *)sqlite3_column_text(st, 1);
		enum sev s = SEV_FAIL;
		for (int k = 0; k < SEV__COUNT; k++)
			if (sev && strcmp(sev, sev_names[k]) == 0)
				s = (enum sev)k;
		if ((err = found_add(f, s, msg ? msg : "(no message)")) != KP_OK) {
			snprintf(why, why_size, "inv%d: out of memory", num);
			goto out;
		}
	}
	if (rc == SQLITE_DONE)
		goto out;
	if (corrupt_rc(rc)) {
		char text[300];
		snprintf(text, sizeof(text), "cannot be computed: %s", sqlite3_errmsg(db));
		f->broken = true;
		err = found_add(f, SEV_FAIL, text);
		goto out;
	}
	snprintf(why, why_size, "inv%d: query failed: %s", num, sqlite3_errmsg(db));
	err = (rc & 0xff) == SQLITE_NOMEM ? KP_ERR_NOMEM : KP_ERR_IO;
out:
	sqlite3_finalize(st);
	return err;
}

/* The count for the header; -1 if the journal cannot say (corrupt). */
static kp_err run_count(sqlite3 *db, const char *sql, long long *out, int num, char *why, size_t why_size)
{
	sqlite3_stmt *st = NULL;
	*out = -1;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (rc == SQLITE_ROW || corrupt_rc(rc))
		return KP_OK;
	snprintf(why, why_size, "inv%d: count failed: %s", num, sqlite3_errmsg(db));
	return KP_ERR_IO;
}

static void print_lines(FILE *out, const struct found *f, enum sev s, int num, const char *prefix)
{
	for (int i = 0; i < f->listed[s]; i++)
		fprintf(out, "%s inv%d: %s\n", prefix, num, f->lines[s][i]);
	if (f->total[s] > f->listed[s])
		fprintf(out, "%s inv%d: ... and %ld more\n", prefix, num, f->total[s] - f->listed[s]);
}

static void print_count(FILE *out, long long count, const char *noun)
{
	if (count >= 0)
		fprintf(out, " (%lld %s)", count, noun);
}

static kp_err check_one(sqlite3 *db, const struct invariant *iv, bool has_ledger,
			const kp_check_opts *o, kp_check_result *res, char *why, size_t why_size)
{
	struct found f = {.cap = o->max_list};
	long long count = -1;
	kp_err err = KP_OK;

	if ((iv->needs & NEEDS_LEDGER) && !has_ledger) {
		fprintf(o->out, "SKIP inv%d %s: no ledger given\n", iv->num, iv->title);
		res->skip++;
		return KP_OK;
	}
	if ((err = run_count(db, iv->count_sql, &count, iv->num, why, why_size)) != KP_OK)
		goto out;
	for (const char *const *q = iv->queries; *q && !f.broken; q++)
		if ((err = run_query(db, *q, o->quiet_expected, &f, iv->num, why, why_size)) != KP_OK)
			goto out;

	if ((iv->needs & NEEDS_QUIET) && !o->quiet_expected && !f.broken) {
		fprintf(o->out, "SKIP inv%d %s", iv->num, iv->title);
		print_count(o->out, count, iv->noun);
		fprintf(o->out, ": not asked (%ld in flight; use --quiet-expected)\n", f.total[SEV_FAIL]);
		res->skip++;
	} else if (f.total[SEV_FAIL] > 0) {
		fprintf(o->out, "FAIL inv%d %s", iv->num, iv->title);
		print_count(o->out, count, iv->noun);
		fprintf(o->out, ": %ld violation%s\n", f.total[SEV_FAIL], f.total[SEV_FAIL] == 1 ? "" : "s");
		print_lines(o->out, &f, SEV_FAIL, iv->num, " ");
		res->fail++;
		res->failed[iv->num] = true;
	} else {
		fprintf(o->out, "PASS inv%d %s", iv->num, iv->title);
		print_count(o->out, count, iv->noun);
		fputc('\n', o->out);
		res->pass++;
	}
	print_lines(o->out, &f, SEV_WARN, iv->num, "WARN");
	print_lines(o->out, &f, SEV_ALARM, iv->num, "ALARM");
	res->warn += (int)f.total[SEV_WARN];
	res->alarm += (int)f.total[SEV_ALARM];
out:
	found_free(&f);
	return err;
}

/* Fill temp.moves from the table above. */
static kp_err load_moves(sqlite3 *db, char *why, size_t why_size)
{
	sqlite3_stmt *st = NULL;
	kp_err err = KP_OK;
	int rc = sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS temp.moves(kind TEXT NOT NULL, "
				  "from_state TEXT NOT NULL, to_state TEXT NOT NULL, "
				  "PRIMARY KEY(kind, from_state, to_state))", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO temp.moves VALUES(?1, ?2, ?3)", -1, &st, NULL);
	for (size_t i = 0; rc == SQLITE_OK && i < sizeof(moves) / sizeof(moves[0]); i++) {
		for (int k = 0; k < 3 && rc == SQLITE_OK; k++)
			rc = sqlite3_bind_text(st, k + 1, moves[i][k], -1, SQLITE_STATIC);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
		sqlite3_reset(st);
	}
	if (rc != SQLITE_OK) {
		snprintf(why, why_size, "cannot load the state machines: %s", sqlite3_errmsg(db));
		err = KP_ERR_IO;
	}
	sqlite3_finalize(st);
	return err;
}

kp_err kp_check_run(kp_check_db *cdb, const kp_check_opts *opts, kp_check_result *res, char *why,
		    size_t why_size)
{
	sqlite3 *db = kp_check_db_sqlite(cdb);
	kp_check_opts o = *opts;
	bool in_txn = false;
	kp_err err;

	memset(res, 0, sizeof(*res));
	if (o.max_list < 0)
		o.max_list = 0;
	if (o.max_list > LIST_CAP)
		o.max_list = LIST_CAP;
	if ((err = load_moves(db, why, why_size)) != KP_OK)
		return err;
	/* One read transaction: every invariant sees the same journal. */
	if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
		snprintf(why, why_size, "cannot begin reading: %s", sqlite3_errmsg(db));
		return KP_ERR_IO;
	}
	in_txn = true;
	for (int i = 0; i < KP_CHECK_INVARIANTS; i++) {
		err = check_one(db, &invariants[i], kp_check_db_has_ledger(cdb), &o, res, why, why_size);
		if (err != KP_OK)
			goto out;
	}
out:
	if (in_txn)
		(void)sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	return err;
}
