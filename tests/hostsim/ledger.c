/* ledger.c — the host simulator's SQLite books (see ledger.h). Each public call
 * is one transaction; the schema's CHECKs and UNIQUEs back the rules (one
 * refund per host_txn, host_txn unique, seq unique per device). */
#include "ledger.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEDGER_SCHEMA_VERSION 1

/* Statements are kept prepared, per SQL text: the simulator stands in for a
 * remote host, but in the benchmarks it shares the kiosk's two cores, and
 * parsing every statement again made it cost more CPU per sale than
 * kioskpayd itself (perf: sqlite3Parser and malloc at the top). */
#define STMT_CACHE 32

struct kp_ledger {
	sqlite3 *db;
	bool readonly;
	sqlite3_stmt *cache[STMT_CACHE];
	int ncache;
};

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS payments("
	" attempt_id TEXT PRIMARY KEY NOT NULL,"
	" device_id TEXT NOT NULL,"
	" order_id TEXT NOT NULL,"
	" amount INTEGER NOT NULL CHECK(amount > 0),"
	" currency TEXT NOT NULL CHECK(length(currency) = 3),"
	" channel TEXT NOT NULL,"
	" expires_at INTEGER NOT NULL,"
	" status TEXT NOT NULL CHECK(status IN ('pending','succeeded','failed','canceled')),"
	" host_txn TEXT UNIQUE,"
	" origin TEXT NOT NULL CHECK(origin IN ('kiosk','orphan')),"
	" created_at INTEGER NOT NULL,"
	" updated_at INTEGER NOT NULL,"
	" settled_at INTEGER NOT NULL DEFAULT 0,"
	" CHECK((status IN ('succeeded','failed')) = (host_txn IS NOT NULL)));"
	"CREATE INDEX IF NOT EXISTS payments_order ON payments(order_id);"
	"CREATE TABLE IF NOT EXISTS tombstones("
	" attempt_id TEXT PRIMARY KEY NOT NULL,"
	" device_id TEXT NOT NULL,"
	" created_at INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS refunds("
	" refund_id TEXT PRIMARY KEY NOT NULL,"
	" attempt_id TEXT NOT NULL REFERENCES payments(attempt_id),"
	" host_txn TEXT NOT NULL UNIQUE REFERENCES payments(host_txn),"
	" amount INTEGER NOT NULL CHECK(amount > 0),"
	" reason TEXT NOT NULL,"
	" status TEXT NOT NULL CHECK(status IN ('pending','refunded','rejected')),"
	" created_at INTEGER NOT NULL,"
	" updated_at INTEGER NOT NULL,"
	" due_at INTEGER NOT NULL DEFAULT 0,"
	" reject_at_due INTEGER NOT NULL DEFAULT 0 CHECK(reject_at_due IN (0,1)));"
	"CREATE TABLE IF NOT EXISTS confirms("
	" device_id TEXT NOT NULL,"
	" seq INTEGER NOT NULL CHECK(seq > 0),"
	" attempt_id TEXT NOT NULL REFERENCES payments(attempt_id),"
	" host_txn TEXT NOT NULL UNIQUE,"
	" status TEXT NOT NULL CHECK(status IN ('succeeded','failed')),"
	" amount INTEGER NOT NULL CHECK(amount > 0),"
	" currency TEXT NOT NULL,"
	" at INTEGER NOT NULL,"
	" acked INTEGER NOT NULL DEFAULT 0 CHECK(acked IN (0,1)),"
	" acked_at INTEGER NOT NULL DEFAULT 0,"
	" PRIMARY KEY(device_id, seq));";

#define PAY_COLS                                                                               \
	"attempt_id, device_id, order_id, amount, currency, channel, expires_at, status, "      \
	"coalesce(host_txn, ''), origin, created_at, updated_at, settled_at"
#define REFUND_COLS                                                                            \
	"refund_id, attempt_id, host_txn, amount, reason, status, created_at, updated_at, due_at, " \
	"reject_at_due"
#define CONFIRM_COLS \
	"device_id, seq, attempt_id, host_txn, status, amount, currency, at, acked, acked_at"

/* ---- small SQLite helpers ---------------------------------------------------- */

static kp_err map_rc(int rc)
{
	switch (rc) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW: return KP_OK;
	case SQLITE_CONSTRAINT: return KP_ERR_CONSTRAINT;
	case SQLITE_BUSY:
	case SQLITE_LOCKED: return KP_ERR_BUSY;
	case SQLITE_NOMEM: return KP_ERR_NOMEM;
	case SQLITE_READONLY: return KP_ERR_READONLY;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB: return KP_ERR_CORRUPT;
	default: return KP_ERR_IO;
	}
}

static kp_err prep(kp_ledger *l, const char *sql, sqlite3_stmt **st)
{
	for (int i = 0; i < l->ncache; i++) {
		if (strcmp(sqlite3_sql(l->cache[i]), sql) == 0) {
			*st = l->cache[i];
			sqlite3_reset(*st);
			return KP_OK;
		}
	}
	bool keep = l->ncache < STMT_CACHE;
	int rc = sqlite3_prepare_v3(l->db, sql, -1, keep ? SQLITE_PREPARE_PERSISTENT : 0, st, NULL);
	if (rc != SQLITE_OK) {
		fprintf(stderr, "kp-hostsim: ledger: prepare failed: %s\n", sqlite3_errmsg(l->db));
		return map_rc(rc);
	}
	if (keep)
		l->cache[l->ncache++] = *st;
	return KP_OK;
}

/* A statement from prep() is done: reset and kept if cached, else finalized. */
static void done(kp_ledger *l, sqlite3_stmt *st)
{
	if (!st)
		return;
	for (int i = 0; i < l->ncache; i++) {
		if (l->cache[i] == st) {
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			return;
		}
	}
	sqlite3_finalize(st);
}

static kp_err exec(kp_ledger *l, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(l->db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		fprintf(stderr, "kp-hostsim: ledger: '%.40s' failed: %s\n", sql, msg ? msg : "?");
		sqlite3_free(msg);
		return map_rc(rc);
	}
	return KP_OK;
}

/* One statement without rows, through the cache (BEGIN, COMMIT). */
static kp_err exec1(kp_ledger *l, const char *sql)
{
	sqlite3_stmt *st = NULL;
	kp_err err = prep(l, sql, &st);
	if (err != KP_OK)
		return err;
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		fprintf(stderr, "kp-hostsim: ledger: '%.40s' failed: %s\n", sql, sqlite3_errmsg(l->db));
		err = map_rc(rc);
	}
	done(l, st);
	return err;
}

static kp_err begin(kp_ledger *l)
{
	return exec1(l, "BEGIN IMMEDIATE");
}

/* Commit if err is KP_OK, else roll back; returns the first error. */
static kp_err finish(kp_ledger *l, kp_err err)
{
	if (err == KP_OK)
		return exec1(l, "COMMIT");
	(void)sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
	return err;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
	sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
}

/* Step a statement that returns no rows. */
static kp_err step_done(kp_ledger *l, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		fprintf(stderr, "kp-hostsim: ledger: %s\n", sqlite3_errmsg(l->db));
		return rc == SQLITE_ROW ? KP_ERR_INTERNAL : map_rc(sqlite3_extended_errcode(l->db) & 0xff);
	}
	return KP_OK;
}

static void col_text(sqlite3_stmt *st, int i, char *out, size_t cap)
{
	const unsigned char *s = sqlite3_column_text(st, i);
	snprintf(out, cap, "%s", s ? (const char *)s : "");
}

static void row_payment(sqlite3_stmt *st, kp_ledger_payment *p)
{
	memset(p, 0, sizeof(*p));
	col_text(st, 0, p->attempt_id, sizeof(p->attempt_id));
	col_text(st, 1, p->device_id, sizeof(p->device_id));
	col_text(st, 2, p->order_id, sizeof(p->order_id));
	p->amount = sqlite3_column_int64(st, 3);
	col_text(st, 4, p->currency, sizeof(p->currency));
	col_text(st, 5, p->channel, sizeof(p->channel));
	p->expires_at = sqlite3_column_int64(st, 6);
	col_text(st, 7, p->status, sizeof(p->status));
	col_text(st, 8, p->host_txn, sizeof(p->host_txn));
	col_text(st, 9, p->origin, sizeof(p->origin));
	p->created_at = sqlite3_column_int64(st, 10);
	p->updated_at = sqlite3_column_int64(st, 11);
	p->settled_at = sqlite3_column_int64(st, 12);
}

static void row_refund(sqlite3_stmt *st, kp_ledger_refund *r)
{
	memset(r, 0, sizeof(*r));
	col_text(st, 0, r->refund_id, sizeof(r->refund_id));
	col_text(st, 1, r->attempt_id, sizeof(r->attempt_id));
	col_text(st, 2, r->host_txn, sizeof(r->host_txn));
	r->amount = sqlite3_column_int64(st, 3);
	col_text(st, 4, r->reason, sizeof(r->reason));
	col_text(st, 5, r->status, sizeof(r->status));
	r->created_at = sqlite3_column_int64(st, 6);
	r->updated_at = sqlite3_column_int64(st, 7);
	r->due_at = sqlite3_column_int64(st, 8);
	r->reject_at_due = sqlite3_column_int64(st, 9) != 0;
}

static void row_confirm(sqlite3_stmt *st, kp_ledger_confirm *c)
{
	memset(c, 0, sizeof(*c));
	col_text(st, 0, c->device_id, sizeof(c->device_id));
	c->seq = sqlite3_column_int64(st, 1);
	col_text(st, 2, c->attempt_id, sizeof(c->attempt_id));
	col_text(st, 3, c->host_txn, sizeof(c->host_txn));
	col_text(st, 4, c->status, sizeof(c->status));
	c->amount = sqlite3_column_int64(st, 5);
	col_text(st, 6, c->currency, sizeof(c->currency));
	c->at = sqlite3_column_int64(st, 7);
	c->acked = sqlite3_column_int64(st, 8) != 0;
	c->acked_at = sqlite3_column_int64(st, 9);
}

/* ---- open / close -------------------------------------------------------------- */

kp_err kp_ledger_open(kp_ledger **out, const char *path, bool readonly)
{
	kp_ledger *l = NULL;
	sqlite3_stmt *st = NULL;
	kp_err err = KP_OK;

	*out = NULL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return KP_ERR_NOMEM;
	l->readonly = readonly;
	int flags = readonly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
	int rc = sqlite3_open_v2(path, &l->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		fprintf(stderr, "kp-hostsim: cannot open ledger %s: %s\n", path,
			l->db ? sqlite3_errmsg(l->db) : sqlite3_errstr(rc));
		err = KP_ERR_IO;
		goto out;
	}
	sqlite3_busy_timeout(l->db, 5000);
	sqlite3_extended_result_codes(l->db, 1);
	if (!readonly) {
		if ((err = exec(l, "PRAGMA journal_mode=WAL")) != KP_OK ||
		    (err = exec(l, "PRAGMA synchronous=FULL")) != KP_OK)
			goto out;
	}
	if ((err = exec(l, "PRAGMA foreign_keys=ON")) != KP_OK)
		goto out;
	if ((err = prep(l, "PRAGMA user_version", &st)) != KP_OK)
		goto out;
	if (sqlite3_step(st) != SQLITE_ROW) {
		fprintf(stderr, "kp-hostsim: cannot read ledger %s: %s\n", path, sqlite3_errmsg(l->db));
		err = KP_ERR_CORRUPT;
		goto out;
	}
	int version = sqlite3_column_int(st, 0);
	done(l, st);
	st = NULL;
	if (version > LEDGER_SCHEMA_VERSION) {
		fprintf(stderr, "kp-hostsim: ledger %s has schema %d, this build knows %d\n", path,
			version, LEDGER_SCHEMA_VERSION);
		err = KP_ERR_FUTURE_VERSION;
		goto out;
	}
	if (version == 0) {
		if (readonly) {
			fprintf(stderr, "kp-hostsim: %s is not a kp-hostsim ledger\n", path);
			err = KP_ERR_NOT_FOUND;
			goto out;
		}
		if ((err = begin(l)) != KP_OK)
			goto out;
		err = exec(l, schema);
		if (err == KP_OK)
			err = exec(l, "PRAGMA user_version=1");
		if ((err = finish(l, err)) != KP_OK)
			goto out;
	}
	*out = l;
	l = NULL;
out:
	done(l, st);
	kp_ledger_close(l);
	return err;
}

void kp_ledger_close(kp_ledger *l)
{
	if (!l)
		return;
	for (int i = 0; i < l->ncache; i++)
		sqlite3_finalize(l->cache[i]);
	sqlite3_close_v2(l->db);
	free(l);
}

/* ---- payments ------------------------------------------------------------------ */

static kp_err payment_read(kp_ledger *l, const char *attempt_id, kp_ledger_payment *out)
{
	sqlite3_stmt *st = NULL;
	kp_err err = prep(l, "SELECT " PAY_COLS " FROM payments WHERE attempt_id = ?1", &st);
	if (err != KP_OK)
		return err;
	bind_text(st, 1, attempt_id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		row_payment(st, out);
	else
		err = rc == SQLITE_DONE ? KP_ERR_NOT_FOUND : map_rc(rc);
	done(l, st);
	return err;
}

static kp_err tombstone_read(kp_ledger *l, const char *attempt_id, bool *yes)
{
	sqlite3_stmt *st = NULL;
	kp_err err = prep(l, "SELECT 1 FROM tombstones WHERE attempt_id = ?1", &st);
	if (err != KP_OK)
		return err;
	bind_text(st, 1, attempt_id);
	int rc = sqlite3_step(st);
	*yes = rc == SQLITE_ROW;
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		err = map_rc(rc);
	done(l, st);
	return err;
}

kp_err kp_ledger_payment_get(kp_ledger *l, const char *attempt_id, kp_ledger_payment *out)
{
	return payment_read(l, attempt_id, out);
}

kp_err kp_ledger_tombstone_has(kp_ledger *l, const char *attempt_id, bool *yes)
{
	return tombstone_read(l, attempt_id, yes);
}

static bool same_payment_params(const kp_ledger_payment *a, const kp_ledger_payment *b)
{
	return strcmp(a->order_id, b->order_id) == 0 && a->amount == b->amount &&
	       strcmp(a->currency, b->currency) == 0 && strcmp(a->channel, b->channel) == 0 &&
	       a->expires_at == b->expires_at && strcmp(a->device_id, b->device_id) == 0;
}

static kp_err payment_insert(kp_ledger *l, const kp_ledger_payment *p)
{
	sqlite3_stmt *st = NULL;
	kp_err err = prep(l,
			  "INSERT INTO payments(attempt_id, device_id, order_id, amount, currency, "
			  "channel, expires_at, status, host_txn, origin, created_at, updated_at, "
			  "settled_at) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,nullif(?9,''),?10,?11,?11,?12)",
			  &st);
	if (err != KP_OK)
		return err;
	bind_text(st, 1, p->attempt_id);
	bind_text(st, 2, p->device_id);
	bind_text(st, 3, p->order_id);
	sqlite3_bind_int64(st, 4, p->amount);
	bind_text(st, 5, p->currency);
	bind_text(st, 6, p->channel);
	sqlite3_bind_int64(st, 7, p->expires_at);
	bind_text(st, 8, p->status);
	bind_text(st, 9, p->host_txn);
	bind_text(st, 10, p->origin);
	sqlite3_bind_int64(st, 11, p->created_at);
	sqlite3_bind_int64(st, 12, p->settled_at);
	err = step_done(l, st);
	done(l, st);
	return err;
}

kp_err kp_ledger_payment_create(kp_ledger *l, const kp_ledger_payment *req, int64_t now,
				kp_ledger_payment *cur, kp_ledger_verdict *verdict)
{
	kp_err err = begin(l);
	if (err != KP_OK)
		return err;
	bool tomb = false;
	memset(cur, 0, sizeof(*cur));
	err = tombstone_read(l, req->attempt_id, &tomb);
	if (err != KP_OK)
		goto out;
	if (tomb) {
		*verdict = KP_LEDGER_TOMBSTONED;
		goto out;
	}
	err = payment_read(l, req->attempt_id, cur);
	if (err == KP_OK) {
		*verdict = same_payment_params(req, cur) ? KP_LEDGER_EXISTS : KP_LEDGER_MISMATCH;
		goto out;
	}
	if (err != KP_ERR_NOT_FOUND)
		goto out;
	kp_ledger_payment p = *req;
	snprintf(p.status, sizeof(p.status), "pending");
	snprintf(p.origin, sizeof(p.origin), "kiosk");
	p.host_txn[0] = '\0';
	p.created_at = now;
	p.updated_at = now;
	p.settled_at = 0;
	err = payment_insert(l, &p);
	if (err == KP_OK) {
		*cur = p;
		*verdict = KP_LEDGER_CREATED;
	}
out:
	return finish(l, err);
}

kp_err kp_ledger_payment_cancel(kp_ledger *l, const char *attempt_id, const char *device_id,
				int64_t now, kp_ledger_payment *out, bool *tombstoned)
{
	sqlite3_stmt *st = NULL;
	kp_err err = begin(l);
	if (err != KP_OK)
		return err;
	*tombstoned = false;
	err = payment_read(l, attempt_id, out);
	if (err == KP_ERR_NOT_FOUND) {
		memset(out, 0, sizeof(*out));
		snprintf(out->attempt_id, sizeof(out->attempt_id), "%s", attempt_id);
		snprintf(out->status, sizeof(out->status), "canceled");
		*tombstoned = true;
		err = prep(l, "INSERT OR IGNORE INTO tombstones(attempt_id, device_id, created_at) "
			      "VALUES(?1, ?2, ?3)", &st);
		if (err != KP_OK)
			goto out;
		bind_text(st, 1, attempt_id);
		bind_text(st, 2, device_id);
		sqlite3_bind_int64(st, 3, now);
		err = step_done(l, st);
		goto out;
	}
	if (err != KP_OK || strcmp(out->status, "pending") != 0)
		goto out; /* settled or canceled already: the answer is the current state */
	err = prep(l, "UPDATE payments SET status = 'canceled', updated_at = ?2 WHERE attempt_id = ?1 "
		      "AND status = 'pending'", &st);
	if (err != KP_OK)
		goto out;
	bind_text(st, 1, attempt_id);
	sqlite3_bind_int64(st, 2, now);
	err = step_done(l, st);
	if (err == KP_OK)
		err = payment_read(l, attempt_id, out);
out:
	done(l, st);
	return finish(l, err);
}

/* Queue the confirm for payment p (already settled) with the next seq of its device. */
static kp_err confirm_queue(kp_ledger *l, const kp_ledger_payment *p, int64_t now,
			    kp_ledger_confirm *c)
{
	sqlite3_stmt *st = NULL;
	kp_err err = prep(l, "SELECT coalesce(max(seq), 0) + 1 FROM confirms WHERE device_id = ?1", &st);
	if (err != KP_OK)
		return err;
	bind_text(st, 1, p->device_id);
	if (sqlite3_step(st) != SQLITE_ROW) {
		err = KP_ERR_IO;
		goto out;
	}
	memset(c, 0, sizeof(*c));
	c->seq = sqlite3_column_int64(st, 0);
	done(l, st);
	st = NULL;
	snprintf(c->device_id, sizeof(c->device_id), "%s", p->device_id);
	snprintf(c->attempt_id, sizeof(c->attempt_id), "%s", p->attempt_id);
	snprintf(c->host_txn, sizeof(c->host_txn), "%s", p->host_txn);
	snprintf(c->status, sizeof(c->status), "%s", p->status);
	snprintf(c->currency, sizeof(c->currency), "%s", p->currency);
	c->amount = p->amount;
	c->at = now;
	err = prep(l, "INSERT INTO confirms(device_id, seq, attempt_id, host_txn, status, amount, "
		      "currency, at) VALUES(?1,?2,?3,?4,?5,?6,?7,?8)", &st);
	if (err != KP_OK)
		goto out;
	bind_text(st, 1, c->device_id);
	sqlite3_bind_int64(st, 2, c->seq);
	bind_text(st, 3, c->attempt_id);
	bind_text(st, 4, c->host_txn);
	bind_text(st, 5, c->status);
	sqlite3_bind_int64(st, 6, c->amount);
	bind_text(st, 7, c->currency);
	sqlite3_bind_int64(st, 8, c->at);
	err = step_done(l, st);
out:
	done(l, st);
	return err;
}

static kp_err txn_taken(kp_ledger *l, const char *host_txn, bool *taken)
{
	sqlite3_stmt *st = NULL;
	kp_err err = prep(l, "SELECT 1 FROM payments WHERE host_txn = ?1 UNION ALL "
			     "SELECT 1 FROM confirms WHERE host_txn = ?1", &st);
	if (err != KP_OK)
		return err;
	bind_text(st, 1, host_txn);
	int rc = sqlite3_step(st);
	*taken = rc == SQLITE_ROW;
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		err = map_rc(rc);
	done(l, st);
	return err;
}

kp_err kp_ledger_payment_settle(kp_ledger *l, const char *attempt_id, bool success,
				const char *host_txn, int64_t now, kp_ledger_payment *out,
				kp_ledger_confirm *confirm)
{
	sqlite3_stmt *st = NULL;
	bool taken = false;
	kp_err err = begin(l);
	if (err != KP_OK)
		return err;
	if ((err = payment_read(l, attempt_id, out)) != KP_OK)
		goto out;
	if (strcmp(out->status, "pending") != 0) {
		err = KP_ERR_STATE;
		goto out;
	}
	if ((err = txn_taken(l, host_txn, &taken)) != KP_OK)
		goto out;
	if (taken) {
		err = KP_ERR_CONFLICT;
		goto out;
	}
	err = prep(l, "UPDATE payments SET status = ?2, host_txn = ?3, updated_at = ?4, "
		      "settled_at = ?4 WHERE attempt_id = ?1 AND status = 'pending'", &st);
	if (err != KP_OK)
		goto out;
	bind_text(st, 1, attempt_id);
	bind_text(st, 2, success ? "succeeded" : "failed");
	bind_text(st, 3, host_txn);
	sqlite3_bind_int64(st, 4, now);
	if ((err = step_done(l, st)) != KP_OK)
		goto out;
	if ((err = payment_read(l, attempt_id, out)) != KP_OK)
		goto out;
	err = confirm_queue(l, out, now, confirm);
out:
	done(l, st);
	return finish(l, err);
}

kp_err kp_ledger_orphan_capture(kp_ledger *l, const kp_ledger_payment *p, int64_t now,
				kp_ledger_payment *out, kp_ledger_confirm *confirm)
{
	bool taken = false, tomb = false;
	kp_err err = begin(l);
	if (err != KP_OK)
		return err;
	if ((err = payment_read(l, p->attempt_id, out)) == KP_OK) {
		err = KP_ERR_CONFLICT;
		goto out;
	}
	if (err != KP_ERR_NOT_FOUND)
		goto out;
	if ((err = tombstone_read(l, p->attempt_id, &tomb)) != KP_OK)
		goto out;
	if ((err = txn_taken(l, p->host_txn, &taken)) != KP_OK)
		goto out;
	if (taken || tomb) {
		err = KP_ERR_CONFLICT;
		goto out;
	}
	*out = *p;
	snprintf(out->status, sizeof(out->status), "succeeded");
	snprintf(out->origin, sizeof(out->origin), "orphan");
	out->created_at = now;
	out->updated_at = now;
	out->settled_at = now;
	if ((err = payment_insert(l, out)) != KP_OK)
		goto out;
	err = confirm_queue(l, out, now, confirm);
out:
	return finish(l, err);
}

kp_err kp_ledger_payments_pending(kp_ledger *l, const char *order_id, kp_ledger_payment *out,
				  int max, int *n)
{
	sqlite3_stmt *st = NULL;
	*n = 0;
	kp_err err = prep(l, "SELECT " PAY_COLS " FROM payments WHERE status = 'pending' AND "
			     "(?1 IS NULL OR order_id = ?1) ORDER BY created_at, rowid", &st);
	if (err != KP_OK)
		return err;
	if (order_id)
		bind_text(st, 1, order_id);
	int rc;
	while (*n < max && (rc = sqlite3_step(st)) == SQLITE_ROW)
		row_payment(st, &out[(*n)++]);
	done(l, st);
	return KP_OK;
}

/* ---- refunds ------------------------------------------------------------------- */

static kp_err refund_read(kp_ledger *l, const char *where, const char *key, kp_ledger_refund *out)
{
	sqlite3_stmt *st = NULL;
	char sql[256];
	snprintf(sql, sizeof(sql), "SELECT " REFUND_COLS " FROM refunds WHERE %s = ?1", where);
	kp_err err = prep(l, sql, &st);
	if (err != KP_OK)
		return err;
	bind_text(st, 1, key);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		row_refund(st, out);
	else
		err = rc == SQLITE_DONE ? KP_ERR_NOT_FOUND : map_rc(rc);
	done(l, st);
	return err;
}

kp_err kp_ledger_refund_get(kp_ledger *l, const char *refund_id, kp_ledger_refund *out)
{
	return refund_read(l, "refund_id", refund_id, out);
}

kp_err kp_ledger_refund_create(kp_ledger *l, const kp_ledger_refund *req, int64_t now, int64_t due_at,
			       bool reject, kp_ledger_refund *cur, kp_ledger_verdict *verdict)
{
	sqlite3_stmt *st = NULL;
	kp_ledger_payment p;
	kp_err err = begin(l);
	if (err != KP_OK)
		return err;
	memset(cur, 0, sizeof(*cur));
	err = refund_read(l, "refund_id", req->refund_id, cur);
	if (err == KP_OK) {
		bool same = strcmp(cur->attempt_id, req->attempt_id) == 0 &&
			    strcmp(cur->host_txn, req->host_txn) == 0 && cur->amount == req->amount &&
			    strcmp(cur->reason, req->reason) == 0;
		*verdict = same ? KP_LEDGER_EXISTS : KP_LEDGER_MISMATCH;
		goto out;
	}
	if (err != KP_ERR_NOT_FOUND)
		goto out;
	err = payment_read(l, req->attempt_id, &p);
	if (err == KP_ERR_NOT_FOUND || (err == KP_OK && (strcmp(p.status, "succeeded") != 0 ||
							 strcmp(p.host_txn, req->host_txn) != 0))) {
		err = KP_OK;
		*verdict = KP_LEDGER_NOT_CAPTURED;
		goto out;
	}
	if (err != KP_OK)
		goto out;
	if (p.amount != req->amount) {
		*verdict = KP_LEDGER_WRONG_AMOUNT;
		goto out;
	}
	err = refund_read(l, "host_txn", req->host_txn, cur);
	if (err == KP_OK) {
		*verdict = KP_LEDGER_TXN_REFUNDED;
		goto out;
	}
	if (err != KP_ERR_NOT_FOUND)
		goto out;
	kp_ledger_refund r = *req;
	const char *status = due_at > 0 ? "pending" : (reject ? "rejected" : "refunded");
	snprintf(r.status, sizeof(r.status), "%s", status);
	r.created_at = now;
	r.updated_at = now;
	r.due_at = due_at > 0 ? due_at : 0;
	r.reject_at_due = due_at > 0 && reject;
	err = prep(l, "INSERT INTO refunds(" REFUND_COLS ") VALUES(?1,?2,?3,?4,?5,?6,?7,?7,?8,?9)", &st);
	if (err != KP_OK)
		goto out;
	bind_text(st, 1, r.refund_id);
	bind_text(st, 2, r.attempt_id);
	bind_text(st, 3, r.host_txn);
	sqlite3_bind_int64(st, 4, r.amount);
	bind_text(st, 5, r.reason);
	bind_text(st, 6, r.status);
	sqlite3_bind_int64(st, 7, now);
	sqlite3_bind_int64(st, 8, r.due_at);
	sqlite3_bind_int(st, 9, r.reject_at_due ? 1 : 0);
	if ((err = step_done(l, st)) != KP_OK)
		goto out;
	*cur = r;
	*verdict = KP_LEDGER_CREATED;
out:
	done(l, st);
	return finish(l, err);
}

kp_err kp_ledger_refunds_finish_due(kp_ledger *l, int64_t now, int64_t *next_due)
{
	sqlite3_stmt *st = NULL;
	*next_due = 0;
	kp_err err = begin(l);
	if (err != KP_OK)
		return err;
	err = prep(l, "UPDATE refunds SET status = CASE reject_at_due WHEN 1 THEN 'rejected' "
		      "ELSE 'refunded' END, updated_at = ?1 WHERE status = 'pending' AND due_at > 0 "
		      "AND due_at <= ?1", &st);
	if (err != KP_OK)
		goto out;
	sqlite3_bind_int64(st, 1, now);
	if ((err = step_done(l, st)) != KP_OK)
		goto out;
	done(l, st);
	st = NULL;
	if ((err = prep(l, "SELECT coalesce(min(due_at), 0) FROM refunds WHERE status = 'pending' "
			   "AND due_at > 0", &st)) != KP_OK)
		goto out;
	if (sqlite3_step(st) == SQLITE_ROW)
		*next_due = sqlite3_column_int64(st, 0);
out:
	done(l, st);
	return finish(l, err);
}

/* ---- confirms ------------------------------------------------------------------ */

kp_err kp_ledger_confirms_unacked(kp_ledger *l, const char *device_id, kp_ledger_confirm *out,
				  int max, int *n)
{
	sqlite3_stmt *st = NULL;
	*n = 0;
	kp_err err = prep(l, "SELECT " CONFIRM_COLS " FROM confirms WHERE device_id = ?1 AND "
			     "acked = 0 ORDER BY seq", &st);
	if (err != KP_OK)
		return err;
	bind_text(st, 1, device_id);
	while (*n < max && sqlite3_step(st) == SQLITE_ROW)
		row_confirm(st, &out[(*n)++]);
	done(l, st);
	return KP_OK;
}

kp_err kp_ledger_confirm_get(kp_ledger *l, const char *device_id, int64_t seq, kp_ledger_confirm *out)
{
	sqlite3_stmt *st = NULL;
	kp_err err = prep(l, "SELECT " CONFIRM_COLS " FROM confirms WHERE device_id = ?1 AND seq = ?2",
			  &st);
	if (err != KP_OK)
		return err;
	bind_text(st, 1, device_id);
	sqlite3_bind_int64(st, 2, seq);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		row_confirm(st, out);
	else
		err = rc == SQLITE_DONE ? KP_ERR_NOT_FOUND : map_rc(rc);
	done(l, st);
	return err;
}

kp_err kp_ledger_confirm_ack(kp_ledger *l, const char *device_id, int64_t seq, int64_t now, bool *found)
{
	sqlite3_stmt *st = NULL;
	*found = false;
	kp_err err = prep(l, "UPDATE confirms SET acked = 1, acked_at = ?3 WHERE device_id = ?1 AND "
			     "seq = ?2 AND acked = 0", &st);
	if (err != KP_OK)
		return err;
	bind_text(st, 1, device_id);
	sqlite3_bind_int64(st, 2, seq);
	sqlite3_bind_int64(st, 3, now);
	err = step_done(l, st);
	done(l, st);
	if (err != KP_OK)
		return err;
	if (sqlite3_changes(l->db) > 0) {
		*found = true;
		return KP_OK;
	}
	kp_ledger_confirm c;
	err = kp_ledger_confirm_get(l, device_id, seq, &c);
	if (err == KP_OK)
		*found = true;
	return err == KP_ERR_NOT_FOUND ? KP_OK : err;
}

/* ---- dump ---------------------------------------------------------------------- */

static bool add_i(cJSON *o, const char *k, int64_t v)
{
	return cJSON_AddNumberToObject(o, k, (double)v) != NULL;
}

static bool add_s(cJSON *o, const char *k, const char *v)
{
	return cJSON_AddStringToObject(o, k, v) != NULL;
}

static bool add_s_or_null(cJSON *o, const char *k, const char *v)
{
	return (v[0] ? cJSON_AddStringToObject(o, k, v) : cJSON_AddNullToObject(o, k)) != NULL;
}

/* Run sql and turn each row into an object with fill(); append to arr. */
typedef bool (*row_fill_fn)(sqlite3_stmt *st, cJSON *obj);

static kp_err dump_rows(kp_ledger *l, const char *sql, row_fill_fn fill, cJSON *arr)
{
	sqlite3_stmt *st = NULL;
	kp_err err = prep(l, sql, &st);
	if (err != KP_OK)
		return err;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		cJSON *o = cJSON_CreateObject();
		if (!o || !cJSON_AddItemToArray(arr, o)) {
			cJSON_Delete(o);
			err = KP_ERR_NOMEM;
			break;
		}
		if (!fill(st, o)) {
			err = KP_ERR_NOMEM;
			break;
		}
	}
	if (err == KP_OK && rc != SQLITE_DONE)
		err = map_rc(rc);
	done(l, st);
	return err;
}

static bool fill_payment(sqlite3_stmt *st, cJSON *o)
{
	kp_ledger_payment p;
	row_payment(st, &p);
	return add_s(o, "attempt_id", p.attempt_id) && add_s(o, "device_id", p.device_id) &&
	       add_s(o, "order_id", p.order_id) && add_i(o, "amount", p.amount) &&
	       add_s(o, "currency", p.currency) && add_s(o, "channel", p.channel) &&
	       add_i(o, "expires_at", p.expires_at) && add_s(o, "status", p.status) &&
	       add_s_or_null(o, "host_txn", p.host_txn) && add_s(o, "origin", p.origin) &&
	       add_i(o, "created_at", p.created_at) && add_i(o, "updated_at", p.updated_at) &&
	       add_i(o, "settled_at", p.settled_at);
}

static bool fill_capture(sqlite3_stmt *st, cJSON *o)
{
	kp_ledger_payment p;
	row_payment(st, &p);
	const unsigned char *refund = sqlite3_column_text(st, 13);
	const unsigned char *rstatus = sqlite3_column_text(st, 14);
	return add_s(o, "host_txn", p.host_txn) && add_s(o, "attempt_id", p.attempt_id) &&
	       add_s(o, "device_id", p.device_id) && add_s(o, "order_id", p.order_id) &&
	       add_i(o, "amount", p.amount) && add_s(o, "currency", p.currency) &&
	       add_s(o, "channel", p.channel) && add_s(o, "origin", p.origin) &&
	       add_i(o, "captured_at", p.settled_at) &&
	       add_s_or_null(o, "refund_id", refund ? (const char *)refund : "") &&
	       add_s_or_null(o, "refund_status", rstatus ? (const char *)rstatus : "");
}

static bool fill_refund(sqlite3_stmt *st, cJSON *o)
{
	kp_ledger_refund r;
	row_refund(st, &r);
	return add_s(o, "refund_id", r.refund_id) && add_s(o, "attempt_id", r.attempt_id) &&
	       add_s(o, "host_txn", r.host_txn) && add_i(o, "amount", r.amount) &&
	       add_s(o, "reason", r.reason) && add_s(o, "status", r.status) &&
	       add_i(o, "created_at", r.created_at) && add_i(o, "updated_at", r.updated_at) &&
	       add_i(o, "due_at", r.due_at);
}

static bool fill_tombstone(sqlite3_stmt *st, cJSON *o)
{
	char id[KP_PROTO_ID_SIZE], dev[KP_PROTO_ID_SIZE];
	col_text(st, 0, id, sizeof(id));
	col_text(st, 1, dev, sizeof(dev));
	return add_s(o, "attempt_id", id) && add_s(o, "device_id", dev) &&
	       add_i(o, "created_at", sqlite3_column_int64(st, 2));
}

static bool fill_confirm(sqlite3_stmt *st, cJSON *o)
{
	kp_ledger_confirm c;
	row_confirm(st, &c);
	return add_s(o, "device_id", c.device_id) && add_i(o, "seq", c.seq) &&
	       add_s(o, "attempt_id", c.attempt_id) && add_s(o, "host_txn", c.host_txn) &&
	       add_s(o, "status", c.status) && add_i(o, "amount", c.amount) &&
	       add_s(o, "currency", c.currency) && add_i(o, "at", c.at) &&
	       cJSON_AddBoolToObject(o, "acked", c.acked) != NULL && add_i(o, "acked_at", c.acked_at);
}

static bool fill_order(sqlite3_stmt *st, cJSON *o)
{
	char id[KP_PROTO_ID_SIZE], cur[4];
	col_text(st, 0, id, sizeof(id));
	col_text(st, 1, cur, sizeof(cur));
	return add_s(o, "order_id", id) && add_s(o, "currency", cur) &&
	       add_i(o, "captures", sqlite3_column_int64(st, 2)) &&
	       add_i(o, "captured", sqlite3_column_int64(st, 3)) &&
	       add_i(o, "refunded", sqlite3_column_int64(st, 4)) &&
	       add_i(o, "net", sqlite3_column_int64(st, 3) - sqlite3_column_int64(st, 4));
}

kp_err kp_ledger_dump(kp_ledger *l, int64_t now, cJSON **out)
{
	static const struct {
		const char *key;
		const char *sql;
		row_fill_fn fill;
	} parts[] = {
		{"payments", "SELECT " PAY_COLS " FROM payments ORDER BY created_at, rowid", fill_payment},
		{"captures",
		 "SELECT p.attempt_id, p.device_id, p.order_id, p.amount, p.currency, p.channel, "
		 "p.expires_at, p.status, p.host_txn, p.origin, p.created_at, p.updated_at, "
		 "p.settled_at, r.refund_id, r.status FROM payments p LEFT JOIN refunds r ON "
		 "r.host_txn = p.host_txn WHERE p.status = 'succeeded' ORDER BY p.settled_at, p.rowid",
		 fill_capture},
		{"refunds", "SELECT " REFUND_COLS " FROM refunds ORDER BY created_at, rowid", fill_refund},
		{"tombstones", "SELECT attempt_id, device_id, created_at FROM tombstones "
			       "ORDER BY created_at, rowid", fill_tombstone},
		{"confirms", "SELECT " CONFIRM_COLS " FROM confirms ORDER BY device_id, seq", fill_confirm},
		{"orders",
		 "SELECT p.order_id, min(p.currency), count(*), sum(p.amount), "
		 "coalesce(sum(CASE WHEN r.status = 'refunded' THEN r.amount END), 0) FROM payments p "
		 "LEFT JOIN refunds r ON r.host_txn = p.host_txn WHERE p.status = 'succeeded' "
		 "GROUP BY p.order_id ORDER BY p.order_id", fill_order},
	};
	kp_err err = KP_OK;
	bool in_txn = false;
	cJSON *root = cJSON_CreateObject();
	*out = NULL;
	if (!root || !cJSON_AddBoolToObject(root, "ok", 1) ||
	    !add_s(root, "format", "kp-hostsim-ledger/1") || !add_i(root, "host_time", now)) {
		err = KP_ERR_NOMEM;
		goto out;
	}
	/* One read transaction: the parts agree with each other. */
	if ((err = exec(l, "BEGIN")) != KP_OK)
		goto out;
	in_txn = true;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		cJSON *arr = cJSON_AddArrayToObject(root, parts[i].key);
		if (!arr) {
			err = KP_ERR_NOMEM;
			goto out;
		}
		if ((err = dump_rows(l, parts[i].sql, parts[i].fill, arr)) != KP_OK)
			goto out;
	}
	*out = root;
	root = NULL;
out:
	if (in_txn)
		(void)sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL);
	cJSON_Delete(root);
	return err;
}
