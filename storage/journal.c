/* journal.c — the payment journal on SQLite: open (check, migrate), typed
 * writes that each append an event in the same transaction, and the queries
 * recovery needs. Legal moves come from states.c; the schema stands behind it.
 * One handle is used by one thread at a time. */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "glob_fast.h"
#include "kp_failpoint.h"
#include "schema.h"
#include "wal_batch.h"

/* Failpoints (docs/failpoints.md). A typed write fires its point just before
 * it would commit (or release its savepoint inside an outer transaction). */
enum {
	FP_ORDER_CREATE = 1,
	FP_ORDER_MOVE = 2,
	FP_ATTEMPT_BEGIN = 3,
	FP_ATTEMPT_MOVE = 4,
	FP_CONFIRMATION = 5,
	FP_REFUND_CREATE = 6,
	FP_REFUND_MOVE = 7,
	FP_COMMIT = 8,       /* kp_journal_commit(), before COMMIT */
	FP_AFTER_COMMIT = 9, /* any COMMIT that succeeded, before returning */
	FP_MIGRATE = 10,     /* a migration, before its COMMIT */
	FP_MAKE_DUE = 11,    /* kp_journal_make_all_due(), before COMMIT */
	FP_ATTEMPT_GET = 12, /* kp_journal_attempt_get(), before reading: a read that fails */
};

#define BUSY_TIMEOUT_MS 5000
#define ERRMSG_SIZE 512

#define ORDER_COLS "order_id,dedup_key,amount,currency,items,state,created_at,expires_at,updated_at"
#define ATTEMPT_COLS \
	"attempt_id,order_id,channel,amount,state,host_txn,created_at,updated_at,next_check_at,tries"
#define CONF_COLS "host_txn,seq,attempt_id,status,amount,currency,at,received_at"
#define REFUND_COLS \
	"refund_id,order_id,attempt_id,host_txn,amount,reason,state,created_at,updated_at," \
	"next_check_at,tries"
#define EVENT_COLS "seq,at,kind,record_id,from_state,to_state,cause"

enum st {
	ST_BEGIN,
	ST_BEGIN_READ,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_SAVEPOINT,
	ST_RELEASE,
	ST_ROLLBACK_TO,
	ST_EVENT_ADD,
	ST_ORDER_GET,
	ST_ORDER_BY_KEY,
	ST_ORDER_ADD,
	ST_ORDER_SET,
	ST_ATTEMPT_GET,
	ST_ATTEMPT_LIVE,
	ST_ATTEMPT_KEPT,
	ST_ATTEMPT_NEXT_RID,
	ST_ATTEMPT_ADD,
	ST_ATTEMPT_SET,
	ST_ATTEMPTS_OF_ORDER,
	ST_CONF_GET,
	ST_CONF_ADD,
	ST_REFUND_GET,
	ST_REFUND_ADD,
	ST_REFUND_SET,
	ST_REFUNDS_OF_ORDER,
	ST_DUE_ATTEMPTS,
	ST_DUE_REFUNDS,
	ST_EXPIRED_ORDERS,
	ST_ORDERS_TO_EXPIRE,
	ST_PAID_UNFULFILLED,
	ST_ALL_DUE_ATTEMPTS,
	ST_ALL_DUE_REFUNDS,
	ST_COUNT_OPEN,
	ST_NEXT_DUE,
	ST_EVENTS,
	ST__COUNT
};

/* The attempts of the order with id `id` (a parameter), as a FROM clause and
 * the start of its WHERE: the order's rid range, read from orders once. */
#define OF_ORDER(id)                                                                           \
	"(SELECT rid << 16 AS lo FROM orders WHERE order_id=" id ") AS o CROSS JOIN attempts "  \
	"WHERE attempts.rid BETWEEN o.lo AND o.lo + 65535"

static const char *const sql_text[ST__COUNT] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_BEGIN_READ] = "BEGIN DEFERRED",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_SAVEPOINT] = "SAVEPOINT kp_sp",
	[ST_RELEASE] = "RELEASE kp_sp",
	[ST_ROLLBACK_TO] = "ROLLBACK TO kp_sp",
	[ST_EVENT_ADD] = "INSERT INTO events(at,kind,record_id,from_state,to_state,cause) "
			 "VALUES(?1,?2,?3,?4,?5,?6)",
	[ST_ORDER_GET] = "SELECT " ORDER_COLS " FROM orders WHERE order_id=?1",
	[ST_ORDER_BY_KEY] = "SELECT " ORDER_COLS " FROM orders WHERE dedup_key=?1",
	/* A dedup_key already there writes nothing (the caller reads its order
	 * then); any other conflict is an error. */
	[ST_ORDER_ADD] = "INSERT INTO orders(" ORDER_COLS ") VALUES(?1,?2,?3,?4,?5,'pending',?6,?7,?6) "
			 "ON CONFLICT(dedup_key) DO NOTHING",
	[ST_ORDER_SET] = "UPDATE orders SET state=?3, updated_at=?4 WHERE order_id=?1 AND state=?2",
	[ST_ATTEMPT_GET] = "SELECT " ATTEMPT_COLS " FROM attempts WHERE attempt_id=?1",
	/* An order's attempts are the rows rid*65536 .. rid*65536+65535 of
	 * attempts (schema 6): found through the order's rid, no index. */
	[ST_ATTEMPT_LIVE] = "SELECT " ATTEMPT_COLS " FROM " OF_ORDER("?1") " AND " KP_SCHEMA_LIVE("state"),
	[ST_ATTEMPT_KEPT] = "SELECT " ATTEMPT_COLS " FROM " OF_ORDER("?1") " AND state = 'succeeded'",
	/* The rid of a pending order's next attempt: one past its last
	 * attempt's, or the start of its range; no row if the order is not
	 * pending or not there. A statement of its own: an INSERT that reads
	 * its own table first copies what it reads into a temporary table. */
	[ST_ATTEMPT_NEXT_RID] = "SELECT coalesce((SELECT a.rid + 1 FROM attempts a WHERE a.rid BETWEEN o.lo AND "
				"o.lo + 65535 ORDER BY a.rid DESC LIMIT 1), o.lo) "
				"FROM (SELECT rid << 16 AS lo FROM orders WHERE order_id=?1 AND state='pending') AS o",
	[ST_ATTEMPT_ADD] = "INSERT INTO attempts(rid," ATTEMPT_COLS ") "
			   "VALUES(?7,?1,?2,?3,?4,'paying','',?5,?5,?6,0)",
	/* A move from state ?7; no row changed: not found or in another state
	 * (the caller reads it then, for the message). A NULL ?3 keeps host_txn. */
	[ST_ATTEMPT_SET] = "UPDATE attempts SET state=?2, host_txn=coalesce(?3, host_txn), updated_at=?4, "
			   "next_check_at=?5, tries=tries+?6 WHERE attempt_id=?1 AND state=?7",
	[ST_ATTEMPTS_OF_ORDER] = "SELECT " ATTEMPT_COLS " FROM " OF_ORDER("?1") " "
				 "ORDER BY created_at, attempt_id LIMIT ?2",
	[ST_CONF_GET] = "SELECT " CONF_COLS " FROM confirmations WHERE host_txn=?1",
	[ST_CONF_ADD] = "INSERT INTO confirmations(" CONF_COLS ") VALUES(?1,?2,?3,?4,?5,?6,?7,?8) "
			"ON CONFLICT(host_txn) DO NOTHING",
	[ST_REFUND_GET] = "SELECT " REFUND_COLS " FROM refunds WHERE refund_id=?1",
	[ST_REFUND_ADD] = "INSERT INTO refunds(" REFUND_COLS ") "
			  "VALUES(?1,?2,?3,?4,?5,?6,'pending',?7,?7,?8,0)",
	[ST_REFUND_SET] = "UPDATE refunds SET state=?2, updated_at=?3, next_check_at=?4, tries=?5 "
			  "WHERE refund_id=?1",
	[ST_REFUNDS_OF_ORDER] = "SELECT " REFUND_COLS " FROM refunds WHERE order_id=?1 "
				"ORDER BY created_at, refund_id LIMIT ?2",
	/* The due table (schema 5) holds only what is pending, live or open, in
	 * time order: each walk joins its rows to their records. */
	[ST_DUE_ATTEMPTS] = "SELECT " ATTEMPT_COLS " FROM due CROSS JOIN attempts ON attempts.attempt_id=due.id "
			    "WHERE due.kind='attempt' AND due.at<=?1 ORDER BY due.at LIMIT ?2",
	[ST_DUE_REFUNDS] = "SELECT " REFUND_COLS " FROM due CROSS JOIN refunds ON refunds.refund_id=due.id "
			   "WHERE due.kind='refund' AND due.at<=?1 ORDER BY due.at LIMIT ?2",
	[ST_EXPIRED_ORDERS] = "SELECT " ORDER_COLS " FROM due CROSS JOIN orders ON orders.order_id=due.id "
			      "WHERE due.kind='order' AND due.at<=?1 ORDER BY due.at LIMIT ?2",
	/* The same less those whose attempt is still live (it finishes first): after a
	 * power cut, thousands of these must not be walked past on every tick. */
	[ST_ORDERS_TO_EXPIRE] = "SELECT " ORDER_COLS " FROM due CROSS JOIN orders ON orders.order_id=due.id "
				"WHERE due.kind='order' AND due.at<=?1 AND NOT EXISTS (SELECT 1 FROM attempts "
				"WHERE attempts.rid BETWEEN orders.rid << 16 AND (orders.rid << 16) + 65535 "
				"AND " KP_SCHEMA_LIVE("attempts.state") ") ORDER BY due.at LIMIT ?2",
	/* At boot only: a scan of the table. */
	[ST_PAID_UNFULFILLED] = "SELECT " ORDER_COLS " FROM orders WHERE state='paid' AND created_at<?1 "
				"ORDER BY created_at LIMIT ?2",
	/* Boot and POST /reconcile: only rows not yet due are written (after a
	 * power cut most are overdue already, and rewriting 10,000 rows would
	 * delay the first sale). Their due rows move with them (the triggers). */
	[ST_ALL_DUE_ATTEMPTS] = "UPDATE attempts SET next_check_at=?1 WHERE attempt_id IN "
				"(SELECT id FROM due WHERE kind='attempt' AND at>?1)",
	[ST_ALL_DUE_REFUNDS] = "UPDATE refunds SET next_check_at=?1 WHERE refund_id IN "
			       "(SELECT id FROM due WHERE kind='refund' AND at>?1)",
	[ST_COUNT_OPEN] = KP_SCHEMA_COUNT_OPEN,
	[ST_NEXT_DUE] = "SELECT (SELECT at FROM due WHERE kind='attempt' ORDER BY at LIMIT 1), "
			"(SELECT at FROM due WHERE kind='refund' ORDER BY at LIMIT 1)",
	[ST_EVENTS] = "SELECT " EVENT_COLS " FROM events WHERE seq>?1 ORDER BY seq LIMIT ?2",
};

struct kp_journal {
	sqlite3 *db;
	const kp_env *env;
	bool readonly;
	bool check_later;      /* KP_JOURNAL_CHECK_LATER and not checked yet */
	int autockpt;          /* wal_autocheckpoint pages once checked (0: none) */
	int depth; /* kp_journal_begin() nesting; 0 = no outer transaction */
	int reads;     /* kp_journal_read_begin() nesting */
	bool snapshot; /* the read transaction of read_begin is open (depth 0) */
	bool pending_rollback; /* a ROLLBACK failed: retry before anything else */
	kp_err pending_err;    /* why it failed */
	char path[PATH_MAX];
	char errmsg[ERRMSG_SIZE];
	sqlite3_stmt *st[ST__COUNT];
};

/* ---------- errors ---------- */

/* Make a message one line: SQLite's reports (quick_check) span several. */
static void one_line(char *s)
{
	for (; *s; s++)
		if (*s == '\n' || *s == '\r')
			*s = ' ';
}

static void set_msg(kp_journal *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_msg(kp_journal *j, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(j->errmsg, sizeof(j->errmsg), fmt, ap);
	va_end(ap);
	one_line(j->errmsg);
}

/* Put "PREFIX: " (fmt, ...) before the message already there, which says
 * what failed (SQLite's, through map_rc). */
static void prefix_msg(kp_journal *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void prefix_msg(kp_journal *j, const char *fmt, ...)
{
	char keep[ERRMSG_SIZE], prefix[ERRMSG_SIZE];
	memcpy(keep, j->errmsg, sizeof(keep));
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	set_msg(j, "%s: %s", prefix, keep);
}

/* An SQLite result code as a kp_err; remembers SQLite's message. */
static kp_err map_rc(kp_journal *j, int rc)
{
	if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW)
		return KP_OK;
	if (j->db)
		set_msg(j, "%s", sqlite3_errmsg(j->db));
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return KP_ERR_BUSY;
	case SQLITE_NOMEM:
		return KP_ERR_NOMEM;
	case SQLITE_READONLY:
		return KP_ERR_READONLY;
	case SQLITE_IOERR:
	case SQLITE_FULL:
	case SQLITE_CANTOPEN:
	case SQLITE_PROTOCOL:
		return KP_ERR_IO;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return KP_ERR_CORRUPT;
	case SQLITE_TOOBIG:
		return KP_ERR_TOO_BIG;
	case SQLITE_CONSTRAINT:
		if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
			return KP_ERR_CONFLICT;
		return KP_ERR_CONSTRAINT;
	default:
		return KP_ERR_INTERNAL;
	}
}

/* Was the last error a UNIQUE violation naming these columns ("t.c")? */
bool kp_journal_in_txn(const kp_journal *j)
{
	return j && j->depth > 0 && !sqlite3_get_autocommit(j->db);
}

static bool unique_on(const kp_journal *j, const char *cols)
{
	const char *p = strstr(j->errmsg, "UNIQUE constraint failed: ");
	return p && strcmp(p + strlen("UNIQUE constraint failed: "), cols) == 0;
}

/* Was the last error the RAISE of one of the schema's per-order triggers? */
static bool trigger_said(const kp_journal *j, const char *what)
{
	return strcmp(j->errmsg, what) == 0;
}

const char *kp_journal_errmsg(const kp_journal *j)
{
	return j ? j->errmsg : "";
}

/* ---------- statements ---------- */

static kp_err stmt(kp_journal *j, enum st id, sqlite3_stmt **out)
{
	if (!j->st[id]) {
		int rc = sqlite3_prepare_v3(j->db, sql_text[id], -1, SQLITE_PREPARE_PERSISTENT,
					    &j->st[id], NULL);
		if (rc != SQLITE_OK) {
			kp_err err = map_rc(j, rc);
			j->st[id] = NULL;
			return err;
		}
	}
	*out = j->st[id];
	return KP_OK;
}

/* Reset after use so the statement holds no read lock and no bindings. */
static void done(sqlite3_stmt *st)
{
	if (st) {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	}
}

static int bind_text(sqlite3_stmt *st, int i, const char *s)
{
	return sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

static int bind_i64(sqlite3_stmt *st, int i, int64_t v)
{
	return sqlite3_bind_int64(st, i, v);
}

/* LIMIT value for a size_t cap; 0 means no limit. */
static int64_t limit_of(size_t cap)
{
	return cap == 0 || cap > (size_t)INT64_MAX ? -1 : (int64_t)cap;
}

/* A bind failed: what SQLite says. */
static kp_err bind_failed(kp_journal *j, int rc)
{
	kp_err err = map_rc(j, rc);
	return err == KP_OK ? KP_ERR_INTERNAL : err;
}

/* Step a statement that returns no rows, then reset it. */
static kp_err step_done(kp_journal *j, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	kp_err err = rc == SQLITE_DONE ? KP_OK : map_rc(j, rc);
	if (rc == SQLITE_ROW) {
		set_msg(j, "statement returned a row: %s", sqlite3_sql(st));
		err = KP_ERR_INTERNAL;
	}
	done(st);
	return err;
}

static kp_err exec_st(kp_journal *j, enum st id)
{
	sqlite3_stmt *st = NULL;
	kp_err err = stmt(j, id, &st);
	return err == KP_OK ? step_done(j, st) : err;
}

/* Copy column i as text into buf; too long for buf means the file is not ours. */
static kp_err col_text(sqlite3_stmt *st, int i, char *buf, size_t cap)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	size_t len = (size_t)sqlite3_column_bytes(st, i);
	if (!t) {
		buf[0] = '\0';
		return sqlite3_column_type(st, i) == SQLITE_NULL ? KP_OK : KP_ERR_NOMEM;
	}
	if (len >= cap)
		return KP_ERR_CORRUPT;
	memcpy(buf, t, len);
	buf[len] = '\0';
	return KP_OK;
}

#define TRY(x)                       \
	do {                         \
		kp_err try_err_ = (x); \
		if (try_err_ != KP_OK) \
			return try_err_; \
	} while (0)

static kp_err row_order(sqlite3_stmt *st, void *rec)
{
	kp_order *o = rec;
	char state[24];
	TRY(col_text(st, 0, o->order_id, sizeof(o->order_id)));
	TRY(col_text(st, 1, o->dedup_key, sizeof(o->dedup_key)));
	o->amount = sqlite3_column_int64(st, 2);
	TRY(col_text(st, 3, o->currency, sizeof(o->currency)));
	TRY(col_text(st, 4, o->items, sizeof(o->items)));
	TRY(col_text(st, 5, state, sizeof(state)));
	if (kp_order_state_parse(state, &o->state) != KP_OK)
		return KP_ERR_CORRUPT;
	o->created_at = sqlite3_column_int64(st, 6);
	o->expires_at = sqlite3_column_int64(st, 7);
	o->updated_at = sqlite3_column_int64(st, 8);
	return KP_OK;
}

static kp_err row_attempt(sqlite3_stmt *st, void *rec)
{
	kp_attempt *a = rec;
	char state[24];
	TRY(col_text(st, 0, a->attempt_id, sizeof(a->attempt_id)));
	TRY(col_text(st, 1, a->order_id, sizeof(a->order_id)));
	TRY(col_text(st, 2, a->channel, sizeof(a->channel)));
	a->amount = sqlite3_column_int64(st, 3);
	TRY(col_text(st, 4, state, sizeof(state)));
	if (kp_attempt_state_parse(state, &a->state) != KP_OK)
		return KP_ERR_CORRUPT;
	TRY(col_text(st, 5, a->host_txn, sizeof(a->host_txn)));
	a->created_at = sqlite3_column_int64(st, 6);
	a->updated_at = sqlite3_column_int64(st, 7);
	a->next_check_at = sqlite3_column_int64(st, 8);
	a->tries = sqlite3_column_int64(st, 9);
	return KP_OK;
}

static kp_err row_conf(sqlite3_stmt *st, void *rec)
{
	kp_confirmation *c = rec;
	char status[24];
	TRY(col_text(st, 0, c->host_txn, sizeof(c->host_txn)));
	c->seq = sqlite3_column_int64(st, 1);
	TRY(col_text(st, 2, c->attempt_id, sizeof(c->attempt_id)));
	TRY(col_text(st, 3, status, sizeof(status)));
	if (kp_confirm_status_parse(status, &c->status) != KP_OK)
		return KP_ERR_CORRUPT;
	c->amount = sqlite3_column_int64(st, 4);
	TRY(col_text(st, 5, c->currency, sizeof(c->currency)));
	c->at = sqlite3_column_int64(st, 6);
	c->received_at = sqlite3_column_int64(st, 7);
	return KP_OK;
}

static kp_err row_refund(sqlite3_stmt *st, void *rec)
{
	kp_refund *r = rec;
	char text[24];
	TRY(col_text(st, 0, r->refund_id, sizeof(r->refund_id)));
	TRY(col_text(st, 1, r->order_id, sizeof(r->order_id)));
	TRY(col_text(st, 2, r->attempt_id, sizeof(r->attempt_id)));
	TRY(col_text(st, 3, r->host_txn, sizeof(r->host_txn)));
	r->amount = sqlite3_column_int64(st, 4);
	TRY(col_text(st, 5, text, sizeof(text)));
	if (kp_refund_reason_parse(text, &r->reason) != KP_OK)
		return KP_ERR_CORRUPT;
	TRY(col_text(st, 6, text, sizeof(text)));
	if (kp_refund_state_parse(text, &r->state) != KP_OK)
		return KP_ERR_CORRUPT;
	r->created_at = sqlite3_column_int64(st, 7);
	r->updated_at = sqlite3_column_int64(st, 8);
	r->next_check_at = sqlite3_column_int64(st, 9);
	r->tries = sqlite3_column_int64(st, 10);
	return KP_OK;
}

static kp_err row_event(sqlite3_stmt *st, void *rec)
{
	kp_event *e = rec;
	e->seq = sqlite3_column_int64(st, 0);
	e->at = sqlite3_column_int64(st, 1);
	TRY(col_text(st, 2, e->kind, sizeof(e->kind)));
	TRY(col_text(st, 3, e->record_id, sizeof(e->record_id)));
	TRY(col_text(st, 4, e->from_state, sizeof(e->from_state)));
	TRY(col_text(st, 5, e->to_state, sizeof(e->to_state)));
	TRY(col_text(st, 6, e->cause, sizeof(e->cause)));
	return KP_OK;
}

typedef kp_err (*row_fn)(sqlite3_stmt *st, void *rec);

/* Step a bound statement for at most one row; KP_ERR_NOT_FOUND if none. Resets it. */
static kp_err get_one(kp_journal *j, sqlite3_stmt *st, row_fn rd, void *rec)
{
	int rc = sqlite3_step(st);
	kp_err err;
	if (rc == SQLITE_ROW) {
		err = rd(st, rec);
		if (err == KP_ERR_CORRUPT)
			set_msg(j, "a row does not fit its record: %s", sqlite3_sql(st));
	} else if (rc == SQLITE_DONE) {
		err = KP_ERR_NOT_FOUND;
	} else {
		err = map_rc(j, rc);
	}
	done(st);
	return err;
}

/* Step a bound statement into arr (up to cap rows); resets it. */
static kp_err get_many(kp_journal *j, sqlite3_stmt *st, row_fn rd, void *arr, size_t size,
		       size_t cap, size_t *n)
{
	kp_err err = KP_OK;
	*n = 0;
	while (*n < cap) {
		int rc = sqlite3_step(st);
		if (rc == SQLITE_DONE)
			break;
		if (rc != SQLITE_ROW) {
			err = map_rc(j, rc);
			break;
		}
		err = rd(st, (char *)arr + *n * size);
		if (err != KP_OK) {
			set_msg(j, "a row does not fit its record: %s", sqlite3_sql(st));
			break;
		}
		(*n)++;
	}
	done(st);
	return err;
}

/* Step a bound statement into a fresh heap array of all its rows; resets it.
 * On success the caller frees *arr. */
static kp_err get_all(kp_journal *j, sqlite3_stmt *st, row_fn rd, size_t size, void **arr, size_t *n)
{
	kp_err err = KP_OK;
	char *buf = NULL;
	size_t cap = 0;
	*n = 0;
	for (;;) {
		int rc = sqlite3_step(st);
		if (rc == SQLITE_DONE)
			break;
		if (rc != SQLITE_ROW) {
			err = map_rc(j, rc);
			goto out;
		}
		if (*n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			char *nb = realloc(buf, ncap * size);
			if (!nb) {
				err = KP_ERR_NOMEM;
				goto out;
			}
			buf = nb;
			cap = ncap;
		}
		err = rd(st, buf + *n * size);
		if (err != KP_OK) {
			set_msg(j, "a row does not fit its record: %s", sqlite3_sql(st));
			goto out;
		}
		(*n)++;
	}
out:
	done(st);
	if (err != KP_OK) {
		free(buf);
		*n = 0;
		buf = NULL;
	}
	*arr = buf;
	return err;
}

/* ---------- input checks (before any SQL) ---------- */

static bool token_ok(const char *s, size_t max)
{
	if (!s || !*s)
		return false;
	size_t i = 0;
	for (; s[i]; i++) {
		char c = s[i];
		if (i >= max)
			return false;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* A host-protocol id: 1..64 of [A-Za-z0-9_-]. */
static bool id_ok(const char *s)
{
	return token_ok(s, KP_ID_SIZE - 1);
}

static bool currency_ok(const char *s)
{
	if (!s)
		return false;
	for (int i = 0; i < 3; i++)
		if (s[i] < 'A' || s[i] > 'Z')
			return false;
	return s[3] == '\0';
}

static bool text_fits(const char *s, size_t cap)
{
	return !s || strnlen(s, cap) < cap;
}

/* The cause as stored: at most KP_CAUSE_SIZE - 1 bytes, cut at a UTF-8 boundary. */
static const char *cause_of(const char *cause, char *buf)
{
	if (!cause)
		return "";
	size_t len = strnlen(cause, KP_CAUSE_SIZE);
	if (len < KP_CAUSE_SIZE)
		return cause;
	len = KP_CAUSE_SIZE - 1;
	while (len > 0 && ((unsigned char)cause[len] & 0xC0) == 0x80)
		len--;
	memcpy(buf, cause, len);
	buf[len] = '\0';
	return buf;
}

/* ---------- transactions ---------- */

/* Transactions. depth counts kp_journal_begin() levels: level 1 is BEGIN
 * IMMEDIATE, deeper levels and typed writes inside a group are savepoints.
 * When a savepoint cannot be undone, the whole transaction is rolled back
 * instead (the group is lost, and its commit says so). When even ROLLBACK
 * fails (memory ran out), it is retried at the start of every later call, and
 * until it succeeds the handle answers only errors: nothing ever reads, joins
 * or commits half a group. */

static void rollback_all(kp_journal *j)
{
	j->snapshot = false; /* a read snapshot ends with the transaction */
	if (sqlite3_get_autocommit(j->db)) {
		j->pending_rollback = false;
		return;
	}
	char keep[ERRMSG_SIZE];
	memcpy(keep, j->errmsg, sizeof(keep));
	kp_err err = KP_OK;
	for (int i = 0; i < 2 && !sqlite3_get_autocommit(j->db); i++)
		err = exec_st(j, ST_ROLLBACK);
	if (!sqlite3_get_autocommit(j->db)) {
		if (!j->pending_rollback)
			kp_log_error(j->env, "journal %s: ROLLBACK failed (%s); retried on the next call",
				     j->path, j->errmsg);
		j->pending_rollback = true;
		j->pending_err = err == KP_OK ? KP_ERR_IO : err;
	} else {
		j->pending_rollback = false;
	}
	memcpy(j->errmsg, keep, sizeof(keep));
}

/* At the start of every call: finish a ROLLBACK that failed before. */
static kp_err heal(kp_journal *j)
{
	if (!j->pending_rollback)
		return KP_OK;
	rollback_all(j);
	if (!j->pending_rollback) {
		kp_log_warn(j->env, "journal %s: the pending ROLLBACK is done", j->path);
		return KP_OK;
	}
	set_msg(j, "journal %s: a failed transaction is not rolled back yet", j->path);
	return j->pending_err;
}

/* Undo and drop the innermost savepoint; failing that, end the transaction. */
static void savepoint_undo(kp_journal *j)
{
	char keep[ERRMSG_SIZE];
	memcpy(keep, j->errmsg, sizeof(keep));
	if (exec_st(j, ST_ROLLBACK_TO) != KP_OK || exec_st(j, ST_RELEASE) != KP_OK)
		rollback_all(j);
	memcpy(j->errmsg, keep, sizeof(keep));
}

/* Keep and drop the innermost savepoint; failing that, end the transaction
 * (the savepoint stack would no longer match the levels). */
static kp_err savepoint_release(kp_journal *j)
{
	kp_err err = exec_st(j, ST_RELEASE);
	if (err != KP_OK)
		rollback_all(j);
	return err;
}

/* Read snapshots (kp_journal_read_begin): the reads of a batch share one
 * deferred read transaction, so one WAL read lock (two fcntl calls) instead of
 * one per statement. A write at depth 0 ends the snapshot first and, once it
 * committed, opens a new one: nothing else writes the journal (one daemon, the
 * other processes open it read-only), so reads in a snapshot see every commit
 * made before them. */
static void snapshot_end(kp_journal *j)
{
	if (!j->snapshot)
		return;
	j->snapshot = false;
	if (!sqlite3_get_autocommit(j->db) && exec_st(j, ST_COMMIT) != KP_OK)
		rollback_all(j); /* a read transaction has nothing to lose */
}

static void snapshot_open(kp_journal *j)
{
	if (j->reads == 0 || j->snapshot || j->depth > 0 || j->pending_rollback ||
	    !sqlite3_get_autocommit(j->db))
		return;
	char keep[ERRMSG_SIZE];
	memcpy(keep, j->errmsg, sizeof(keep));
	/* Failing to open one only costs the locks it would have saved. */
	j->snapshot = exec_st(j, ST_BEGIN_READ) == KP_OK;
	memcpy(j->errmsg, keep, sizeof(keep));
}

void kp_journal_read_begin(kp_journal *j)
{
	if (!j || !j->db)
		return;
	j->reads++;
	snapshot_open(j);
}

void kp_journal_read_end(kp_journal *j)
{
	if (!j || j->reads == 0)
		return;
	if (--j->reads == 0)
		snapshot_end(j);
}

/* A typed write: its own transaction, or a savepoint inside the caller's. */
struct wtx {
	bool own;
};

static kp_err wtx_begin(kp_journal *j, struct wtx *t)
{
	t->own = false;
	if (j->readonly) {
		set_msg(j, "journal %s is open read-only", j->path);
		return KP_ERR_READONLY;
	}
	/* A snapshot lives only at depth 0; its end may leave a ROLLBACK to heal. */
	snapshot_end(j);
	TRY(heal(j));
	if (j->depth == 0) {
		t->own = true;
		return exec_st(j, ST_BEGIN);
	}
	if (sqlite3_get_autocommit(j->db)) {
		/* The group's transaction is gone (an error inside it): writing
		 * now would commit on its own, outside the caller's group. */
		set_msg(j, "the group's transaction was rolled back; roll back the group");
		return KP_ERR_STATE;
	}
	return exec_st(j, ST_SAVEPOINT);
}

/* COMMIT; on failure nothing is kept. */
static kp_err commit_now(kp_journal *j)
{
	kp_err err = exec_st(j, ST_COMMIT);
	if (err != KP_OK) {
		rollback_all(j);
		snapshot_open(j);
		return err;
	}
	snapshot_open(j);
	if (KP_FAILPOINT(FP_AFTER_COMMIT)) {
		set_msg(j, "failpoint %d: committed, answer lost", FP_AFTER_COMMIT);
		return KP_ERR_FAILPOINT;
	}
	return KP_OK;
}

/* End a typed write with its outcome err; failpoint fp fires just before the
 * commit (or release). Returns the final outcome. */
static kp_err wtx_end(kp_journal *j, struct wtx *t, kp_err err, unsigned fp)
{
	if (err == KP_OK && KP_FAILPOINT(fp)) {
		set_msg(j, "failpoint %u fired", fp);
		err = KP_ERR_FAILPOINT;
	}
	if (t->own) {
		if (err == KP_OK)
			return commit_now(j);
		rollback_all(j);
		snapshot_open(j);
		return err;
	}
	if (sqlite3_get_autocommit(j->db)) /* the group is already gone */
		return err == KP_OK ? KP_ERR_IO : err;
	if (err != KP_OK) {
		savepoint_undo(j);
		return err;
	}
	return savepoint_release(j);
}

/* End a typed write that wrote nothing, keeping the error message. */
static void wtx_abandon(kp_journal *j, struct wtx *t)
{
	if (t->own) {
		rollback_all(j);
		snapshot_open(j);
	} else if (!sqlite3_get_autocommit(j->db))
		savepoint_undo(j);
}

kp_err kp_journal_begin(kp_journal *j)
{
	if (!j)
		return KP_ERR_INVALID;
	if (j->readonly) {
		set_msg(j, "journal %s is open read-only", j->path);
		return KP_ERR_READONLY;
	}
	snapshot_end(j); /* as in wtx_begin */
	TRY(heal(j));
	kp_err err;
	if (j->depth == 0) {
		err = exec_st(j, ST_BEGIN);
	} else if (sqlite3_get_autocommit(j->db)) {
		set_msg(j, "the group's transaction was rolled back; roll back the group");
		err = KP_ERR_STATE;
	} else {
		err = exec_st(j, ST_SAVEPOINT);
	}
	if (err == KP_OK)
		j->depth++;
	else if (j->depth == 0)
		snapshot_open(j);
	return err;
}

kp_err kp_journal_commit(kp_journal *j)
{
	if (!j)
		return KP_ERR_INVALID;
	if (j->depth == 0) {
		set_msg(j, "commit without begin");
		return KP_ERR_STATE;
	}
	j->depth--; /* this level ends, whatever happens below */
	TRY(heal(j));
	if (sqlite3_get_autocommit(j->db)) {
		set_msg(j, "the group's transaction was rolled back before its commit");
		return KP_ERR_IO;
	}
	if (j->depth > 0)
		return savepoint_release(j);
	if (KP_FAILPOINT(FP_COMMIT)) {
		set_msg(j, "failpoint %d fired before commit", FP_COMMIT);
		rollback_all(j);
		snapshot_open(j);
		return KP_ERR_FAILPOINT;
	}
	return commit_now(j);
}

void kp_journal_rollback(kp_journal *j)
{
	if (!j || j->depth == 0)
		return;
	j->depth--;
	if (j->depth > 0) {
		if (!sqlite3_get_autocommit(j->db))
			savepoint_undo(j);
		return;
	}
	rollback_all(j);
	snapshot_open(j);
}

static kp_err event_add(kp_journal *j, int64_t at, const char *kind, const char *record_id,
			const char *from, const char *to, const char *cause)
{
	sqlite3_stmt *st = NULL;
	char buf[KP_CAUSE_SIZE];
	TRY(stmt(j, ST_EVENT_ADD, &st));
	int rc = bind_i64(st, 1, at) | bind_text(st, 2, kind) | bind_text(st, 3, record_id) |
		 bind_text(st, 4, from) | bind_text(st, 5, to) | bind_text(st, 6, cause_of(cause, buf));
	if (rc != SQLITE_OK) {
		done(st);
		return bind_failed(j, rc);
	}
	return step_done(j, st);
}

/* ---------- open / close ---------- */

/* mkdir -p of the directory part of path, new directories 0700. */
static kp_err make_parent(kp_journal *j, const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	if (!slash || slash == path)
		return KP_OK;
	size_t len = (size_t)(slash - path);
	if (len >= sizeof(dir))
		return KP_ERR_TOO_BIG;
	memcpy(dir, path, len);
	dir[len] = '\0';
	for (size_t i = 1; i <= len; i++) {
		if (dir[i] != '/' && dir[i] != '\0')
			continue;
		char c = dir[i];
		dir[i] = '\0';
		struct stat sb;
		if (stat(dir, &sb) != 0) {
			if (errno != ENOENT || mkdir(dir, 0700) != 0) {
				set_msg(j, "cannot create directory %s: %s", dir, strerror(errno));
				return KP_ERR_IO;
			}
			if (chmod(dir, 0700) != 0) { /* whatever the umask said */
				set_msg(j, "cannot chmod directory %s: %s", dir, strerror(errno));
				return KP_ERR_IO;
			}
		} else if (!S_ISDIR(sb.st_mode)) {
			set_msg(j, "%s is not a directory", dir);
			return KP_ERR_IO;
		}
		dir[i] = c;
	}
	return KP_OK;
}

/* Create the file 0600 (umask-proof) if missing, and make its name durable. */
static kp_err make_file(kp_journal *j, const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		if (errno == EEXIST)
			return KP_OK;
		set_msg(j, "cannot create %s: %s", path, strerror(errno));
		return KP_ERR_IO;
	}
	kp_err err = KP_OK;
	if (fchmod(fd, 0600) != 0 || fsync(fd) != 0) {
		set_msg(j, "cannot set up %s: %s", path, strerror(errno));
		err = KP_ERR_IO;
	}
	close(fd);
	if (err != KP_OK)
		return err;
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) != 0) {
		set_msg(j, "cannot sync directory %s: %s", dir, strerror(errno));
		err = KP_ERR_IO;
	}
	if (dfd >= 0)
		close(dfd);
	return err;
}

/* Run a one-value PRAGMA (or query) and return its integer. */
static kp_err query_int(kp_journal *j, const char *sql, int64_t *out)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(j->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	kp_err err = KP_OK;
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		*out = 0;
	else
		err = map_rc(j, rc);
	sqlite3_finalize(st);
	return err;
}

static kp_err exec_sql(kp_journal *j, const char *sql)
{
	int rc = sqlite3_exec(j->db, sql, NULL, NULL, NULL);
	return map_rc(j, rc);
}

/* PRAGMA quick_check; its first complaint goes into errmsg. */
static kp_err quick_check(kp_journal *j)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(j->db, "PRAGMA quick_check", -1, &st, NULL);
	kp_err err = KP_OK;
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *t = (const char *)sqlite3_column_text(st, 0);
		if (!t || strcmp(t, "ok") != 0) {
			set_msg(j, "journal %s failed its quick_check: %s", j->path, t ? t : "?");
			err = KP_ERR_CORRUPT;
		}
	} else {
		err = map_rc(j, rc);
		if (err == KP_OK)
			err = KP_ERR_INTERNAL;
		prefix_msg(j, "journal %s", j->path);
	}
	sqlite3_finalize(st);
	return err;
}

static kp_err set_page_size(kp_journal *j, int size)
{
	static const struct {
		int size;
		const char *sql;
	} sizes[] = {
		{512, "PRAGMA page_size=512"},     {1024, "PRAGMA page_size=1024"},
		{2048, "PRAGMA page_size=2048"},   {4096, "PRAGMA page_size=4096"},
		{8192, "PRAGMA page_size=8192"},   {16384, "PRAGMA page_size=16384"},
		{32768, "PRAGMA page_size=32768"}, {65536, "PRAGMA page_size=65536"},
	};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		if (sizes[i].size == size)
			return exec_sql(j, sizes[i].sql);
	set_msg(j, "page size %d is not a power of two in 512..65536", size);
	return KP_ERR_INVALID;
}

/* After a migration, before its commit: PRAGMA foreign_key_check finds no row. */
static kp_err foreign_keys_hold(kp_journal *j, int64_t version)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(j->db, "PRAGMA foreign_key_check", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	kp_err err = rc == SQLITE_DONE ? KP_OK : map_rc(j, rc);
	if (rc == SQLITE_ROW) {
		set_msg(j, "migration to version %lld: a row of %s names a missing record",
			(long long)version, (const char *)sqlite3_column_text(st, 0));
		err = KP_ERR_CONSTRAINT;
	}
	sqlite3_finalize(st);
	return err;
}

/* Bring the file to KP_SCHEMA_LATEST, one transaction per version. */
static kp_err migrate(kp_journal *j)
{
	for (;;) {
		kp_err err = exec_st(j, ST_BEGIN);
		if (err != KP_OK)
			return err;
		int64_t version = 0, app = 0, objects = 0;
		err = query_int(j, "PRAGMA user_version", &version);
		if (err == KP_OK)
			err = query_int(j, "PRAGMA application_id", &app);
		if (err == KP_OK && version == 0)
			err = query_int(j, "SELECT count(*) FROM sqlite_schema", &objects);
		if (err != KP_OK)
			goto fail;
		if (version >= KP_SCHEMA_LATEST) {
			rollback_all(j);
			return KP_OK; /* another process migrated it meanwhile */
		}
		if (version == 0 && objects > 0) {
			set_msg(j, "%s is an SQLite file of something else, not a kioskpay journal", j->path);
			err = KP_ERR_INVALID;
			goto fail;
		}
		if (version > 0 && app != KP_SCHEMA_APP_ID) {
			set_msg(j, "%s is not a kioskpay journal (application_id %lld)", j->path, (long long)app);
			err = KP_ERR_INVALID;
			goto fail;
		}
		const char *sql = kp_schema_migration((int)version + 1);
		err = sql ? exec_sql(j, sql) : KP_ERR_INTERNAL;
		if (err == KP_OK)
			err = foreign_keys_hold(j, version + 1);
		if (err == KP_OK && KP_FAILPOINT(FP_MIGRATE)) {
			set_msg(j, "failpoint %d fired in migration to %lld", FP_MIGRATE, (long long)version + 1);
			err = KP_ERR_FAILPOINT;
		}
		if (err != KP_OK)
			goto fail;
		err = commit_now(j);
		if (err != KP_OK)
			return err;
		kp_log_info(j->env, "journal %s: schema migrated to version %lld", j->path,
			    (long long)version + 1);
		continue;
fail:
		rollback_all(j);
		return err;
	}
}

/* Process-wide SQLite settings, once, before SQLite initializes itself (the
 * first open or VFS registration does). Memory statistics off: with them on,
 * every sqlite3_malloc and sqlite3_free takes a global mutex and counts (2.8 %
 * of a sale's instructions in the mutex alone); nothing here reads them, and
 * no heap limit is set. If SQLite is initialized already (a test or tool
 * registered its VFS first), the call is refused and nothing changes. */
static void sqlite_setup(void)
{
	(void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

void kp_journal_setup(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, sqlite_setup);
}

/* Open the file, check it, and for read-write set it up and migrate it. */
static kp_err open_db(kp_journal *j, const kp_journal_opts *o)
{
	kp_journal_setup();
	int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW;
	flags |= j->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
	/* One write(2) per commit for the WAL's frames (wal_batch.h): sound
	 * because every commit syncs (synchronous=FULL below). */
	const char *vfs = NULL;
	if (kp_wal_batch_vfs(o->vfs_name, &vfs) != KP_OK) {
		set_msg(j, "no VFS %s to open the journal with", o->vfs_name ? o->vfs_name : "(default)");
		return KP_ERR_INTERNAL;
	}
	int rc = sqlite3_open_v2(j->path, &j->db, flags, vfs);
	if (rc != SQLITE_OK) {
		kp_err err = map_rc(j, rc);
		prefix_msg(j, "cannot open %s", j->path);
		return err;
	}
	sqlite3_extended_result_codes(j->db, 1);
	sqlite3_busy_timeout(j->db, o->busy_timeout_ms > 0 ? o->busy_timeout_ms : BUSY_TIMEOUT_MS);
	/* Until the file is known good, closing must not checkpoint a WAL into it. */
	sqlite3_db_config(j->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	sqlite3_db_config(j->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	sqlite3_db_config(j->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
	/* Before the first statement: the schema's id CHECKs in one pass. */
	if ((rc = kp_glob_fast_register(j->db)) != SQLITE_OK) {
		kp_err err = map_rc(j, rc);
		prefix_msg(j, "cannot open %s: glob()", j->path);
		return err == KP_OK ? KP_ERR_INTERNAL : err;
	}

	int64_t version = 0, app = 0, pages = 0;
	TRY(query_int(j, "PRAGMA user_version", &version));
	/* Checked later by the caller only if nothing is migrated: a migration
	 * writes, and nothing is written into a file not known good. */
	if (j->check_later && (j->readonly || version != KP_SCHEMA_LATEST))
		j->check_later = false;
	if (!j->check_later)
		TRY(quick_check(j));
	TRY(query_int(j, "PRAGMA application_id", &app));
	TRY(query_int(j, "PRAGMA page_count", &pages));
	if (version > KP_JOURNAL_SCHEMA_VERSION) {
		set_msg(j, "journal %s has schema version %lld; this kioskpay knows up to %d",
			j->path, (long long)version, KP_JOURNAL_SCHEMA_VERSION);
		return KP_ERR_FUTURE_VERSION;
	}
	if (version > 0 && app != KP_SCHEMA_APP_ID) {
		set_msg(j, "%s is not a kioskpay journal (application_id %lld)", j->path, (long long)app);
		return KP_ERR_INVALID;
	}
	if (version == 0) {
		/* Refuse someone else's SQLite file before changing anything in it. */
		int64_t objects = 0;
		TRY(query_int(j, "SELECT count(*) FROM sqlite_schema", &objects));
		if (objects > 0) {
			set_msg(j, "%s is an SQLite file of something else, not a kioskpay journal",
				j->path);
			return KP_ERR_INVALID;
		}
	}
	if (j->readonly) {
		if (version < KP_JOURNAL_SCHEMA_VERSION) {
			set_msg(j, "journal %s has schema version %lld, older than %d: open it "
				"read-write once to migrate", j->path, (long long)version,
				KP_JOURNAL_SCHEMA_VERSION);
			return KP_ERR_STATE;
		}
		TRY(exec_sql(j, "PRAGMA query_only=1"));
		return KP_OK;
	}
	if (pages == 0)
		TRY(set_page_size(j, o->page_size > 0 ? o->page_size : KP_JOURNAL_PAGE_SIZE));
	int64_t mode_ok = 0;
	sqlite3_stmt *st = NULL;
	rc = sqlite3_prepare_v2(j->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *m = (const char *)sqlite3_column_text(st, 0);
		mode_ok = m && strcmp(m, "wal") == 0;
	}
	kp_err err = rc == SQLITE_ROW ? KP_OK : map_rc(j, rc);
	sqlite3_finalize(st);
	if (err != KP_OK)
		return err;
	if (!mode_ok) {
		set_msg(j, "journal %s: cannot switch to WAL mode", j->path);
		return KP_ERR_IO;
	}
	TRY(exec_sql(j, "PRAGMA synchronous=FULL"));
	j->autockpt = o->wal_autocheckpoint < 0 ? 0
		      : o->wal_autocheckpoint > 0 ? o->wal_autocheckpoint : KP_JOURNAL_WAL_AUTOCHECKPOINT;
	/* Until a CHECK_LATER file passed its check, nothing is merged into it. */
	sqlite3_wal_autocheckpoint(j->db, j->check_later ? 0 : j->autockpt);
	/* Migrations rebuild tables (drop and replace): foreign keys are
	 * enforced only after them, and checked by each before its commit. */
	TRY(exec_sql(j, "PRAGMA foreign_keys=OFF"));
	if (version < KP_SCHEMA_LATEST)
		TRY(migrate(j));
	TRY(exec_sql(j, "PRAGMA foreign_keys=ON"));
	/* Prepare the transaction statements now: a rollback must not need
	 * memory (to prepare itself) when memory is what just ran out. */
	for (int id = ST_BEGIN; id <= ST_ROLLBACK_TO; id++) {
		sqlite3_stmt *ts = NULL;
		TRY(stmt(j, (enum st)id, &ts));
	}
	if (!j->check_later)
		sqlite3_db_config(j->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0, NULL);
	return KP_OK;
}

kp_err kp_journal_quick_check_file(const char *path, char *why, size_t why_size)
{
	if (why && why_size)
		why[0] = '\0';
	if (!path || !*path || strlen(path) >= PATH_MAX)
		return KP_ERR_INVALID;
	kp_journal *j = calloc(1, sizeof(*j));
	if (!j)
		return KP_ERR_NOMEM;
	j->readonly = true;
	snprintf(j->path, sizeof(j->path), "%s", path);
	/* The platform's own VFS, whatever the process's default is: a test VFS
	 * (kioskpayd-crash) is not made for a second thread. */
	int rc = sqlite3_open_v2(path, &j->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX |
				 SQLITE_OPEN_NOFOLLOW, "unix");
	kp_err err;
	if (rc == SQLITE_OK) {
		sqlite3_db_config(j->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
		err = quick_check(j);
	} else {
		err = map_rc(j, rc);
		prefix_msg(j, "cannot open %s", path);
	}
	if (err != KP_OK && why && why_size)
		snprintf(why, why_size, "%s", j->errmsg);
	sqlite3_close(j->db);
	free(j);
	return err;
}

void kp_journal_mark_checked(kp_journal *j)
{
	if (!j || !j->check_later)
		return;
	j->check_later = false;
	sqlite3_db_config(j->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0, NULL);
	sqlite3_wal_autocheckpoint(j->db, j->autockpt);
}

kp_err kp_journal_open_ex(kp_journal **out, const char *path, unsigned flags, const kp_env *env,
			  const kp_journal_opts *opts)
{
	static const kp_journal_opts defaults;
	if (!out)
		return KP_ERR_INVALID;
	*out = NULL;
	if (!path || !*path || !env || (flags & ~(KP_JOURNAL_READONLY | KP_JOURNAL_CHECK_LATER)))
		return KP_ERR_INVALID;
	if (strlen(path) >= PATH_MAX)
		return KP_ERR_TOO_BIG;
	kp_journal *j = calloc(1, sizeof(*j));
	if (!j)
		return KP_ERR_NOMEM;
	j->env = env;
	j->readonly = flags & KP_JOURNAL_READONLY;
	j->check_later = flags & KP_JOURNAL_CHECK_LATER;
	snprintf(j->path, sizeof(j->path), "%s", path);
	kp_err err;
	if (j->readonly) {
		struct stat sb;
		if (stat(path, &sb) != 0) {
			set_msg(j, "cannot open %s: %s", path, strerror(errno));
			err = errno == ENOENT ? KP_ERR_NOT_FOUND : KP_ERR_IO;
			goto out;
		}
	} else {
		err = make_parent(j, path);
		if (err == KP_OK)
			err = make_file(j, path);
		if (err != KP_OK)
			goto out;
	}
	err = open_db(j, opts ? opts : &defaults);
out:
	if (opts && opts->errbuf && opts->errbuf_size)
		snprintf(opts->errbuf, opts->errbuf_size, "%s", err == KP_OK ? "" : j->errmsg);
	if (err != KP_OK) {
		kp_log_error(env, "journal: %s (%s)", j->errmsg, kp_strerror(err));
		kp_journal_close(j);
		return err;
	}
	*out = j;
	return KP_OK;
}

kp_err kp_journal_open(kp_journal **out, const char *path, unsigned flags, const kp_env *env)
{
	return kp_journal_open_ex(out, path, flags, env, NULL);
}

void kp_journal_close(kp_journal *j)
{
	if (!j)
		return;
	if (j->db && (j->depth > 0 || j->pending_rollback || j->snapshot))
		rollback_all(j);
	for (int i = 0; i < ST__COUNT; i++)
		sqlite3_finalize(j->st[i]);
	if (j->db && sqlite3_close(j->db) != SQLITE_OK)
		kp_log_error(j->env, "journal %s: close: %s", j->path, sqlite3_errmsg(j->db));
	free(j);
}

/* ---------- orders ---------- */

static kp_err order_get(kp_journal *j, enum st id, const char *key, kp_order *out)
{
	sqlite3_stmt *st = NULL;
	TRY(stmt(j, id, &st));
	int rc = bind_text(st, 1, key);
	if (rc != SQLITE_OK) {
		done(st);
		return bind_failed(j, rc);
	}
	return get_one(j, st, row_order, out);
}

kp_err kp_journal_order_get(kp_journal *j, const char *order_id, kp_order *out)
{
	if (!j || !out || !id_ok(order_id))
		return KP_ERR_INVALID;
	TRY(heal(j));
	return order_get(j, ST_ORDER_GET, order_id, out);
}

kp_err kp_journal_order_create(kp_journal *j, const kp_order_new *req, kp_order *out, bool *duplicated)
{
	if (!j || !req || !out || !duplicated)
		return KP_ERR_INVALID;
	*duplicated = false;
	const char *items = req->items ? req->items : "";
	if (!id_ok(req->order_id) || !id_ok(req->dedup_key) || req->amount <= 0 ||
	    !currency_ok(req->currency)) {
		set_msg(j, "order: bad id, dedup_key, amount or currency");
		return KP_ERR_INVALID;
	}
	if (!text_fits(items, KP_ITEMS_MAX)) {
		set_msg(j, "order %s: items over %d bytes", req->order_id, KP_ITEMS_MAX - 1);
		return KP_ERR_TOO_BIG;
	}
	struct wtx t;
	kp_err err = wtx_begin(j, &t);
	if (err != KP_OK)
		return err;
	sqlite3_stmt *st = NULL;
	err = stmt(j, ST_ORDER_ADD, &st);
	if (err == KP_OK) {
		int rc = bind_text(st, 1, req->order_id) | bind_text(st, 2, req->dedup_key) |
			 bind_i64(st, 3, req->amount) | bind_text(st, 4, req->currency) |
			 bind_text(st, 5, items) | bind_i64(st, 6, req->now) |
			 bind_i64(st, 7, req->expires_at);
		if (rc != SQLITE_OK) {
			done(st);
			err = bind_failed(j, rc);
		} else {
			err = step_done(j, st);
		}
	}
	/* The key is taken: the same order again, or another one under it.
	 * (Read on this path only; the insert's own probe of the key's index
	 * is the one a new order pays.) */
	if (err == KP_OK && sqlite3_changes(j->db) == 0) {
		kp_order old;
		err = order_get(j, ST_ORDER_BY_KEY, req->dedup_key, &old);
		if (err == KP_OK) {
			if (old.amount == req->amount && strcmp(old.currency, req->currency) == 0 &&
			    strcmp(old.items, items) == 0) {
				*out = old;
				*duplicated = true;
			} else {
				set_msg(j, "dedup_key %s names order %s with other content", req->dedup_key,
					old.order_id);
				err = KP_ERR_CONFLICT;
			}
		} else if (err == KP_ERR_NOT_FOUND) {
			set_msg(j, "order %s: dedup_key %s taken and not found", req->order_id,
				req->dedup_key);
			err = KP_ERR_INTERNAL;
		}
		/* Nothing written either way: end without a commit. */
		wtx_abandon(j, &t);
		return err;
	}
	if (err == KP_OK)
		err = event_add(j, req->now, "order", req->order_id, "", "pending", "created");
	err = wtx_end(j, &t, err, FP_ORDER_CREATE);
	if (err == KP_OK) {
		memset(out, 0, sizeof(*out));
		snprintf(out->order_id, sizeof(out->order_id), "%s", req->order_id);
		snprintf(out->dedup_key, sizeof(out->dedup_key), "%s", req->dedup_key);
		out->amount = req->amount;
		snprintf(out->currency, sizeof(out->currency), "%s", req->currency);
		snprintf(out->items, sizeof(out->items), "%s", items);
		out->state = KP_ORDER_PENDING;
		out->created_at = req->now;
		out->expires_at = req->expires_at;
		out->updated_at = req->now;
	}
	return err;
}

kp_err kp_journal_order_move(kp_journal *j, const char *order_id, kp_order_state from,
			     kp_order_state to, int64_t now, const char *cause)
{
	if (!j || !id_ok(order_id) || (unsigned)from >= KP_ORDER__COUNT ||
	    (unsigned)to >= KP_ORDER__COUNT)
		return KP_ERR_INVALID;
	if (kp_order_move_check(from, to) != KP_OK) {
		set_msg(j, "order %s: %s -> %s is not a move", order_id, kp_order_state_str(from),
			kp_order_state_str(to));
		return KP_ERR_ILLEGAL_MOVE;
	}
	struct wtx t;
	kp_err err = wtx_begin(j, &t);
	if (err != KP_OK)
		return err;
	sqlite3_stmt *st = NULL;
	err = stmt(j, ST_ORDER_SET, &st);
	if (err == KP_OK) {
		int rc = bind_text(st, 1, order_id) | bind_text(st, 2, kp_order_state_str(from)) |
			 bind_text(st, 3, kp_order_state_str(to)) | bind_i64(st, 4, now);
		if (rc != SQLITE_OK) {
			done(st);
			err = bind_failed(j, rc);
		} else {
			err = step_done(j, st);
		}
	}
	if (err == KP_OK && sqlite3_changes(j->db) == 0) {
		kp_order cur;
		err = order_get(j, ST_ORDER_GET, order_id, &cur);
		if (err == KP_OK) {
			set_msg(j, "order %s is %s, not %s", order_id, kp_order_state_str(cur.state),
				kp_order_state_str(from));
			err = KP_ERR_STATE;
		} else if (err == KP_ERR_NOT_FOUND) {
			set_msg(j, "order %s not found", order_id);
		}
	}
	if (err == KP_OK)
		err = event_add(j, now, "order", order_id, kp_order_state_str(from),
				kp_order_state_str(to), cause);
	return wtx_end(j, &t, err, FP_ORDER_MOVE);
}

/* ---------- attempts ---------- */

static kp_err attempt_get(kp_journal *j, enum st id, const char *key, kp_attempt *out)
{
	sqlite3_stmt *st = NULL;
	TRY(stmt(j, id, &st));
	int rc = bind_text(st, 1, key);
	if (rc != SQLITE_OK) {
		done(st);
		return bind_failed(j, rc);
	}
	return get_one(j, st, row_attempt, out);
}

kp_err kp_journal_attempt_get(kp_journal *j, const char *attempt_id, kp_attempt *out)
{
	if (!j || !out || !id_ok(attempt_id))
		return KP_ERR_INVALID;
	TRY(heal(j));
	if (KP_FAILPOINT(FP_ATTEMPT_GET)) {
		set_msg(j, "failpoint %d: attempt %s not read", FP_ATTEMPT_GET, attempt_id);
		return KP_ERR_FAILPOINT;
	}
	return attempt_get(j, ST_ATTEMPT_GET, attempt_id, out);
}

kp_err kp_journal_attempt_live(kp_journal *j, const char *order_id, kp_attempt *out)
{
	if (!j || !out || !id_ok(order_id))
		return KP_ERR_INVALID;
	TRY(heal(j));
	return attempt_get(j, ST_ATTEMPT_LIVE, order_id, out);
}

kp_err kp_journal_attempt_kept(kp_journal *j, const char *order_id, kp_attempt *out)
{
	if (!j || !out || !id_ok(order_id))
		return KP_ERR_INVALID;
	TRY(heal(j));
	return attempt_get(j, ST_ATTEMPT_KEPT, order_id, out);
}

/* The rid for the next attempt of order_id (schema 6): its order's rid *
 * 65536 + its number. Past 65,535 the range is full: the insert's trigger
 * refuses it (KP_SCHEMA_RID). */
static kp_err next_attempt_rid(kp_journal *j, const char *order_id, int64_t *rid)
{
	sqlite3_stmt *st = NULL;
	TRY(stmt(j, ST_ATTEMPT_NEXT_RID, &st));
	int rc = bind_text(st, 1, order_id);
	if (rc != SQLITE_OK) {
		done(st);
		return bind_failed(j, rc);
	}
	rc = sqlite3_step(st);
	kp_err err = KP_OK;
	if (rc == SQLITE_ROW)
		*rid = sqlite3_column_int64(st, 0);
	else
		err = rc == SQLITE_DONE ? KP_ERR_NOT_FOUND : map_rc(j, rc);
	done(st);
	return err;
}

kp_err kp_journal_attempt_begin(kp_journal *j, const kp_attempt_new *req, kp_attempt *out)
{
	if (!j || !req || !out)
		return KP_ERR_INVALID;
	if (!id_ok(req->attempt_id) || !id_ok(req->order_id) ||
	    !token_ok(req->channel, KP_CHANNEL_SIZE - 1) || req->amount <= 0) {
		set_msg(j, "attempt: bad id, order id, channel or amount");
		return KP_ERR_INVALID;
	}
	struct wtx t;
	kp_err err = wtx_begin(j, &t);
	if (err != KP_OK)
		return err;
	sqlite3_stmt *st = NULL;
	int64_t rid = 0;
	err = next_attempt_rid(j, req->order_id, &rid);
	/* No pending order of that id: the order as it is says why (read on
	 * this path only: the rid's read already found a pending one). */
	kp_order o;
	if (err == KP_ERR_NOT_FOUND && (err = order_get(j, ST_ORDER_GET, req->order_id, &o)) == KP_OK) {
		set_msg(j, "attempt %s: order %s is %s, not pending", req->attempt_id, req->order_id,
			kp_order_state_str(o.state));
		err = KP_ERR_STATE;
	} else if (err == KP_ERR_NOT_FOUND) {
		set_msg(j, "attempt %s: order %s not found", req->attempt_id, req->order_id);
	}
	if (err == KP_OK)
		err = stmt(j, ST_ATTEMPT_ADD, &st);
	if (err == KP_OK) {
		int rc = bind_text(st, 1, req->attempt_id) | bind_text(st, 2, req->order_id) |
			 bind_text(st, 3, req->channel) | bind_i64(st, 4, req->amount) |
			 bind_i64(st, 5, req->now) | bind_i64(st, 6, req->next_check_at) | bind_i64(st, 7, rid);
		if (rc != SQLITE_OK) {
			done(st);
			err = bind_failed(j, rc);
		} else {
			err = step_done(j, st);
		}
		/* The schema's one-live-attempt trigger is the per-order lock. */
		if (err == KP_ERR_CONSTRAINT && trigger_said(j, KP_SCHEMA_ONE_LIVE))
			err = KP_ERR_BUSY;
		/* Its rid range is full: the order takes no more attempts. */
		if (err == KP_ERR_CONSTRAINT && trigger_said(j, KP_SCHEMA_RID)) {
			set_msg(j, "attempt %s: order %s has had 65536 attempts, the most an order can have",
				req->attempt_id, req->order_id);
			err = KP_ERR_STATE;
		}
	}
	if (err == KP_OK)
		err = event_add(j, req->now, "attempt", req->attempt_id, "", "paying", "begin");
	err = wtx_end(j, &t, err, FP_ATTEMPT_BEGIN);
	if (err == KP_OK) {
		memset(out, 0, sizeof(*out));
		snprintf(out->attempt_id, sizeof(out->attempt_id), "%s", req->attempt_id);
		snprintf(out->order_id, sizeof(out->order_id), "%s", req->order_id);
		snprintf(out->channel, sizeof(out->channel), "%s", req->channel);
		out->amount = req->amount;
		out->state = KP_ATTEMPT_PAYING;
		out->created_at = req->now;
		out->updated_at = req->now;
		out->next_check_at = req->next_check_at;
	}
	return err;
}

/* Why a move's UPDATE changed nothing (err KP_OK) or was refused by the
 * schema (err KP_ERR_CONSTRAINT): not found, in another state, another
 * host_txn already, or the one-kept trigger; otherwise err with SQLite's
 * message. */
static kp_err attempt_move_refused(kp_journal *j, const char *attempt_id, const kp_attempt_move *m,
				   kp_err err)
{
	bool kept = err == KP_ERR_CONSTRAINT && trigger_said(j, KP_SCHEMA_ONE_KEPT);
	char keep[ERRMSG_SIZE];
	memcpy(keep, j->errmsg, sizeof(keep));
	kp_attempt a;
	kp_err got = attempt_get(j, ST_ATTEMPT_GET, attempt_id, &a);
	if (got == KP_ERR_NOT_FOUND) {
		set_msg(j, "attempt %s not found", attempt_id);
		return KP_ERR_NOT_FOUND;
	}
	if (got != KP_OK)
		return got;
	if (a.state != m->from) {
		set_msg(j, "attempt %s is %s, not %s", attempt_id, kp_attempt_state_str(a.state),
			kp_attempt_state_str(m->from));
		return KP_ERR_STATE;
	}
	if (m->host_txn && a.host_txn[0] && strcmp(a.host_txn, m->host_txn) != 0) {
		set_msg(j, "attempt %s has host_txn %s, not %s", attempt_id, a.host_txn, m->host_txn);
		return KP_ERR_CONFLICT;
	}
	if (kept) {
		set_msg(j, "attempt %s: order %s already has a kept success", attempt_id, a.order_id);
		return KP_ERR_CONSTRAINT;
	}
	memcpy(j->errmsg, keep, sizeof(keep));
	if (err == KP_OK) { /* found, in its state, and still nothing changed */
		set_msg(j, "attempt %s: the move %s -> %s changed no row", attempt_id,
			kp_attempt_state_str(m->from), kp_attempt_state_str(m->to));
		return KP_ERR_INTERNAL;
	}
	return err;
}

kp_err kp_journal_attempt_move(kp_journal *j, const char *attempt_id, const kp_attempt_move *m)
{
	if (!j || !m || !id_ok(attempt_id) || (unsigned)m->from >= KP_ATTEMPT__COUNT ||
	    (unsigned)m->to >= KP_ATTEMPT__COUNT)
		return KP_ERR_INVALID;
	if (m->host_txn && !id_ok(m->host_txn)) {
		set_msg(j, "attempt %s: bad host_txn", attempt_id);
		return KP_ERR_INVALID;
	}
	bool reschedule = m->from == m->to;
	if (reschedule ? kp_attempt_state_final(m->from)
		       : kp_attempt_move_check(m->from, m->to) != KP_OK) {
		set_msg(j, "attempt %s: %s -> %s is not a move", attempt_id,
			kp_attempt_state_str(m->from), kp_attempt_state_str(m->to));
		return KP_ERR_ILLEGAL_MOVE;
	}
	struct wtx t;
	kp_err err = wtx_begin(j, &t);
	if (err != KP_OK)
		return err;
	sqlite3_stmt *st = NULL;
	err = stmt(j, ST_ATTEMPT_SET, &st);
	if (err == KP_OK) {
		int64_t next = kp_attempt_state_final(m->to) ? 0 : m->next_check_at;
		int rc = bind_text(st, 1, attempt_id) | bind_text(st, 2, kp_attempt_state_str(m->to)) |
			 bind_text(st, 3, m->host_txn) | bind_i64(st, 4, m->now) | bind_i64(st, 5, next) |
			 bind_i64(st, 6, m->count_try ? 1 : 0) | bind_text(st, 7, kp_attempt_state_str(m->from));
		if (rc != SQLITE_OK) {
			done(st);
			err = bind_failed(j, rc);
		} else {
			err = step_done(j, st);
		}
	}
	/* Refused or nothing moved: the attempt as it is says why, checked in
	 * the order a read before the write would (the move's one read, on the
	 * error path only: 8,500 instructions of every sale). */
	if (err == KP_ERR_CONSTRAINT || (err == KP_OK && sqlite3_changes(j->db) == 0))
		err = attempt_move_refused(j, attempt_id, m, err);
	if (err == KP_OK && !reschedule)
		err = event_add(j, m->now, "attempt", attempt_id, kp_attempt_state_str(m->from),
				kp_attempt_state_str(m->to), m->cause);
	return wtx_end(j, &t, err, FP_ATTEMPT_MOVE);
}

/* Up to cap records of one order (statement id, rows read by rd into arr of
 * elements of size bytes): attempts or refunds. */
static kp_err of_order(kp_journal *j, enum st id, const char *order_id, row_fn rd, void *arr,
		       size_t size, size_t cap, size_t *n)
{
	if (!j || !n || (!arr && cap) || !id_ok(order_id))
		return KP_ERR_INVALID;
	TRY(heal(j));
	*n = 0;
	if (cap == 0)
		return KP_OK;
	sqlite3_stmt *st = NULL;
	TRY(stmt(j, id, &st));
	int rc = bind_text(st, 1, order_id) | bind_i64(st, 2, limit_of(cap));
	if (rc != SQLITE_OK) {
		done(st);
		return bind_failed(j, rc);
	}
	return get_many(j, st, rd, arr, size, cap, n);
}

kp_err kp_journal_attempts_of_order(kp_journal *j, const char *order_id, kp_attempt *arr,
				    size_t cap, size_t *n)
{
	return of_order(j, ST_ATTEMPTS_OF_ORDER, order_id, row_attempt, arr, sizeof(*arr), cap, n);
}

/* ---------- confirmations ---------- */

kp_err kp_journal_confirmation_record(kp_journal *j, const kp_confirmation *c, bool *already)
{
	if (!j || !c || !already)
		return KP_ERR_INVALID;
	*already = false;
	if (!id_ok(c->host_txn) || !id_ok(c->attempt_id) || (unsigned)c->status >= KP_CONFIRM__COUNT ||
	    c->amount < 0 || !currency_ok(c->currency)) {
		set_msg(j, "confirmation: bad host_txn, attempt id, status, amount or currency");
		return KP_ERR_INVALID;
	}
	struct wtx t;
	kp_err err = wtx_begin(j, &t);
	if (err != KP_OK)
		return err;
	sqlite3_stmt *st = NULL;
	err = stmt(j, ST_CONF_ADD, &st);
	if (err == KP_OK) {
		int rc = bind_text(st, 1, c->host_txn) | bind_i64(st, 2, c->seq) |
			 bind_text(st, 3, c->attempt_id) | bind_text(st, 4, kp_confirm_status_str(c->status)) |
			 bind_i64(st, 5, c->amount) | bind_text(st, 6, c->currency) |
			 bind_i64(st, 7, c->at) | bind_i64(st, 8, c->received_at);
		if (rc != SQLITE_OK) {
			done(st);
			err = bind_failed(j, rc);
		} else {
			err = step_done(j, st);
		}
	}
	if (err == KP_OK && sqlite3_changes(j->db) == 0) {
		*already = true; /* the first one stands; nothing written */
	} else if (err == KP_OK) {
		/* Not the attempt id: the row holds it, and the attempt's own event
		 * follows in the same commit. Repeating it (36 bytes in a 512-byte
		 * page) cost every payment 0.9 KiB of WAL (docs/journal.md, "The
		 * benchmark"). */
		char cause[KP_CAUSE_SIZE];
		snprintf(cause, sizeof(cause), "host confirm seq %lld", (long long)c->seq);
		err = event_add(j, c->received_at, "confirmation", c->host_txn, "",
				kp_confirm_status_str(c->status), cause);
	}
	return wtx_end(j, &t, err, FP_CONFIRMATION);
}

kp_err kp_journal_confirmation_get(kp_journal *j, const char *host_txn, kp_confirmation *out)
{
	if (!j || !out || !id_ok(host_txn))
		return KP_ERR_INVALID;
	TRY(heal(j));
	sqlite3_stmt *st = NULL;
	TRY(stmt(j, ST_CONF_GET, &st));
	int rc = bind_text(st, 1, host_txn);
	if (rc != SQLITE_OK) {
		done(st);
		return bind_failed(j, rc);
	}
	return get_one(j, st, row_conf, out);
}

/* ---------- refunds ---------- */

static kp_err refund_get(kp_journal *j, const char *refund_id, kp_refund *out)
{
	sqlite3_stmt *st = NULL;
	TRY(stmt(j, ST_REFUND_GET, &st));
	int rc = bind_text(st, 1, refund_id);
	if (rc != SQLITE_OK) {
		done(st);
		return bind_failed(j, rc);
	}
	return get_one(j, st, row_refund, out);
}

kp_err kp_journal_refund_get(kp_journal *j, const char *refund_id, kp_refund *out)
{
	if (!j || !out || !id_ok(refund_id))
		return KP_ERR_INVALID;
	TRY(heal(j));
	return refund_get(j, refund_id, out);
}

kp_err kp_journal_refund_create(kp_journal *j, const kp_refund_new *req, kp_refund *out)
{
	if (!j || !req || !out)
		return KP_ERR_INVALID;
	bool orphan = !req->order_id || !req->order_id[0];
	if (!id_ok(req->refund_id) || (!orphan && !id_ok(req->order_id)) || !id_ok(req->attempt_id) ||
	    !id_ok(req->host_txn) || req->amount <= 0 || (unsigned)req->reason >= KP_REASON__COUNT ||
	    (orphan && req->reason != KP_REASON_ORPHAN)) {
		set_msg(j, "refund: bad id, order, attempt, host_txn, amount or reason");
		return KP_ERR_INVALID;
	}
	struct wtx t;
	kp_err err = wtx_begin(j, &t);
	if (err != KP_OK)
		return err;
	sqlite3_stmt *st = NULL;
	err = stmt(j, ST_REFUND_ADD, &st);
	if (err == KP_OK) {
		int rc = bind_text(st, 1, req->refund_id) |
			 (orphan ? sqlite3_bind_null(st, 2) : bind_text(st, 2, req->order_id)) |
			 bind_text(st, 3, req->attempt_id) | bind_text(st, 4, req->host_txn) |
			 bind_i64(st, 5, req->amount) | bind_text(st, 6, kp_refund_reason_str(req->reason)) |
			 bind_i64(st, 7, req->now) | bind_i64(st, 8, req->next_check_at);
		if (rc != SQLITE_OK) {
			done(st);
			err = bind_failed(j, rc);
		} else {
			err = step_done(j, st);
		}
		if (err == KP_ERR_CONFLICT && unique_on(j, "refunds.host_txn"))
			set_msg(j, "host_txn %s already has a refund", req->host_txn);
		else if (err == KP_ERR_CONSTRAINT && strstr(j->errmsg, "FOREIGN KEY"))
			set_msg(j, "refund %s: order %s not found", req->refund_id, req->order_id);
	}
	if (err == KP_OK)
		err = event_add(j, req->now, "refund", req->refund_id, "", "pending",
				kp_refund_reason_str(req->reason));
	err = wtx_end(j, &t, err, FP_REFUND_CREATE);
	if (err == KP_OK) {
		memset(out, 0, sizeof(*out));
		snprintf(out->refund_id, sizeof(out->refund_id), "%s", req->refund_id);
		snprintf(out->order_id, sizeof(out->order_id), "%s", orphan ? "" : req->order_id);
		snprintf(out->attempt_id, sizeof(out->attempt_id), "%s", req->attempt_id);
		snprintf(out->host_txn, sizeof(out->host_txn), "%s", req->host_txn);
		out->amount = req->amount;
		out->reason = req->reason;
		out->state = KP_REFUND_PENDING;
		out->created_at = req->now;
		out->updated_at = req->now;
		out->next_check_at = req->next_check_at;
	}
	return err;
}

kp_err kp_journal_refund_move(kp_journal *j, const char *refund_id, const kp_refund_move *m)
{
	if (!j || !m || !id_ok(refund_id) || (unsigned)m->from >= KP_REFUND__COUNT ||
	    (unsigned)m->to >= KP_REFUND__COUNT)
		return KP_ERR_INVALID;
	bool reschedule = m->from == m->to;
	if (reschedule ? kp_refund_state_final(m->from) : kp_refund_move_check(m->from, m->to) != KP_OK) {
		set_msg(j, "refund %s: %s -> %s is not a move", refund_id, kp_refund_state_str(m->from),
			kp_refund_state_str(m->to));
		return KP_ERR_ILLEGAL_MOVE;
	}
	struct wtx t;
	kp_err err = wtx_begin(j, &t);
	if (err != KP_OK)
		return err;
	kp_refund r;
	err = refund_get(j, refund_id, &r);
	if (err == KP_ERR_NOT_FOUND)
		set_msg(j, "refund %s not found", refund_id);
	if (err == KP_OK && r.state != m->from) {
		set_msg(j, "refund %s is %s, not %s", refund_id, kp_refund_state_str(r.state),
			kp_refund_state_str(m->from));
		err = KP_ERR_STATE;
	}
	sqlite3_stmt *st = NULL;
	if (err == KP_OK)
		err = stmt(j, ST_REFUND_SET, &st);
	if (err == KP_OK) {
		int64_t next = kp_refund_state_final(m->to) ? 0 : m->next_check_at;
		int rc = bind_text(st, 1, refund_id) | bind_text(st, 2, kp_refund_state_str(m->to)) |
			 bind_i64(st, 3, m->now) | bind_i64(st, 4, next) |
			 bind_i64(st, 5, r.tries + (m->count_try ? 1 : 0));
		if (rc != SQLITE_OK) {
			done(st);
			err = bind_failed(j, rc);
		} else {
			err = step_done(j, st);
		}
	}
	if (err == KP_OK && !reschedule)
		err = event_add(j, m->now, "refund", refund_id, kp_refund_state_str(m->from),
				kp_refund_state_str(m->to), m->cause);
	return wtx_end(j, &t, err, FP_REFUND_MOVE);
}

kp_err kp_journal_refunds_of_order(kp_journal *j, const char *order_id, kp_refund *arr,
				   size_t cap, size_t *n)
{
	return of_order(j, ST_REFUNDS_OF_ORDER, order_id, row_refund, arr, sizeof(*arr), cap, n);
}

/* ---------- recovery queries ---------- */

/* Read the rows of a (bound-by-us) time query into memory, then hand them out. */
static kp_err due_rows(kp_journal *j, enum st id, int64_t t, size_t limit, row_fn rd, size_t size,
		       void **arr, size_t *n)
{
	sqlite3_stmt *st = NULL;
	TRY(stmt(j, id, &st));
	int rc = bind_i64(st, 1, t) | bind_i64(st, 2, limit_of(limit));
	if (rc != SQLITE_OK) {
		done(st);
		return bind_failed(j, rc);
	}
	return get_all(j, st, rd, size, arr, n);
}

kp_err kp_journal_due_attempts(kp_journal *j, int64_t due_before, size_t limit, kp_attempt_fn fn,
			       void *arg)
{
	if (!j || !fn)
		return KP_ERR_INVALID;
	TRY(heal(j));
	void *arr = NULL;
	size_t n = 0;
	TRY(due_rows(j, ST_DUE_ATTEMPTS, due_before, limit, row_attempt, sizeof(kp_attempt), &arr, &n));
	kp_err err = KP_OK;
	for (size_t i = 0; i < n && err == KP_OK; i++)
		err = fn(arg, (kp_attempt *)arr + i);
	free(arr);
	return err;
}

kp_err kp_journal_due_refunds(kp_journal *j, int64_t due_before, size_t limit, kp_refund_fn fn,
			      void *arg)
{
	if (!j || !fn)
		return KP_ERR_INVALID;
	TRY(heal(j));
	void *arr = NULL;
	size_t n = 0;
	TRY(due_rows(j, ST_DUE_REFUNDS, due_before, limit, row_refund, sizeof(kp_refund), &arr, &n));
	kp_err err = KP_OK;
	for (size_t i = 0; i < n && err == KP_OK; i++)
		err = fn(arg, (kp_refund *)arr + i);
	free(arr);
	return err;
}

static kp_err order_walk(kp_journal *j, enum st id, int64_t t, size_t limit, kp_order_fn fn, void *arg)
{
	if (!j || !fn)
		return KP_ERR_INVALID;
	TRY(heal(j));
	void *arr = NULL;
	size_t n = 0;
	TRY(due_rows(j, id, t, limit, row_order, sizeof(kp_order), &arr, &n));
	kp_err err = KP_OK;
	for (size_t i = 0; i < n && err == KP_OK; i++)
		err = fn(arg, (kp_order *)arr + i);
	free(arr);
	return err;
}

kp_err kp_journal_expired_orders(kp_journal *j, int64_t now, size_t limit, kp_order_fn fn, void *arg)
{
	return order_walk(j, ST_EXPIRED_ORDERS, now, limit, fn, arg);
}

kp_err kp_journal_orders_to_expire(kp_journal *j, int64_t now, size_t limit, kp_order_fn fn, void *arg)
{
	return order_walk(j, ST_ORDERS_TO_EXPIRE, now, limit, fn, arg);
}

kp_err kp_journal_paid_unfulfilled(kp_journal *j, int64_t before, size_t limit, kp_order_fn fn,
				   void *arg)
{
	return order_walk(j, ST_PAID_UNFULFILLED, before, limit, fn, arg);
}

/* How many attempts and refunds are not final (the replay's size). */
static kp_err count_open(kp_journal *j, int64_t *n)
{
	sqlite3_stmt *st = NULL;
	TRY(stmt(j, ST_COUNT_OPEN, &st));
	int rc = sqlite3_step(st);
	kp_err err = KP_OK;
	if (rc == SQLITE_ROW)
		*n = sqlite3_column_int64(st, 0);
	else
		err = map_rc(j, rc);
	done(st);
	return err;
}

kp_err kp_journal_make_all_due(kp_journal *j, int64_t now, int64_t *count)
{
	if (!j || !count)
		return KP_ERR_INVALID;
	*count = 0;
	struct wtx t;
	kp_err err = wtx_begin(j, &t);
	if (err != KP_OK)
		return err;
	int64_t total = 0;
	static const enum st ids[] = {ST_ALL_DUE_ATTEMPTS, ST_ALL_DUE_REFUNDS};
	for (size_t i = 0; i < 2 && err == KP_OK; i++) {
		sqlite3_stmt *st = NULL;
		err = stmt(j, ids[i], &st);
		if (err != KP_OK)
			break;
		int rc = bind_i64(st, 1, now);
		if (rc != SQLITE_OK) {
			done(st);
			err = bind_failed(j, rc);
			break;
		}
		err = step_done(j, st);
	}
	if (err == KP_OK)
		err = count_open(j, &total);
	err = wtx_end(j, &t, err, FP_MAKE_DUE);
	if (err == KP_OK)
		*count = total;
	return err;
}

kp_err kp_journal_next_due(kp_journal *j, int64_t *at)
{
	if (!j || !at)
		return KP_ERR_INVALID;
	TRY(heal(j));
	*at = 0;
	sqlite3_stmt *st = NULL;
	TRY(stmt(j, ST_NEXT_DUE, &st));
	int rc = sqlite3_step(st);
	kp_err err = KP_OK;
	if (rc == SQLITE_ROW) {
		int64_t best = 0;
		bool any = false;
		for (int i = 0; i < 2; i++) {
			if (sqlite3_column_type(st, i) == SQLITE_NULL)
				continue;
			int64_t v = sqlite3_column_int64(st, i);
			if (!any || v < best)
				best = v;
			any = true;
		}
		/* 0 means "none": a record scheduled at or before 0 is due at 1. */
		*at = any ? (best < 1 ? 1 : best) : 0;
	} else {
		err = map_rc(j, rc);
	}
	done(st);
	return err;
}

/* ---------- events and stats ---------- */

kp_err kp_journal_events(kp_journal *j, int64_t since, kp_event *arr, size_t cap, size_t *n)
{
	if (!j || !n || (!arr && cap))
		return KP_ERR_INVALID;
	TRY(heal(j));
	*n = 0;
	if (cap == 0)
		return KP_OK;
	sqlite3_stmt *st = NULL;
	TRY(stmt(j, ST_EVENTS, &st));
	int rc = bind_i64(st, 1, since) | bind_i64(st, 2, limit_of(cap));
	if (rc != SQLITE_OK) {
		done(st);
		return bind_failed(j, rc);
	}
	return get_many(j, st, row_event, arr, sizeof(*arr), cap, n);
}

/* Count rows per state of one table into counts[], indexed by parse(). */
static kp_err count_states(kp_journal *j, const char *sql, int64_t *counts, int ncounts,
			   kp_err (*parse)(const char *text, int *out))
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(j->db, sql, -1, &st, NULL);
	kp_err err = KP_OK;
	if (rc == SQLITE_OK)
		rc = SQLITE_ROW;
	while (rc == SQLITE_ROW && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		int v;
		if (parse((const char *)sqlite3_column_text(st, 0), &v) != KP_OK || v < 0 || v >= ncounts) {
			set_msg(j, "unknown state in: %s", sql);
			err = KP_ERR_CORRUPT;
			break;
		}
		counts[v] = sqlite3_column_int64(st, 1);
	}
	if (err == KP_OK && rc != SQLITE_DONE)
		err = map_rc(j, rc);
	sqlite3_finalize(st);
	return err;
}

static kp_err parse_order(const char *t, int *v)
{
	kp_order_state s;
	TRY(kp_order_state_parse(t, &s));
	*v = (int)s;
	return KP_OK;
}

static kp_err parse_attempt(const char *t, int *v)
{
	kp_attempt_state s;
	TRY(kp_attempt_state_parse(t, &s));
	*v = (int)s;
	return KP_OK;
}

static kp_err parse_refund(const char *t, int *v)
{
	kp_refund_state s;
	TRY(kp_refund_state_parse(t, &s));
	*v = (int)s;
	return KP_OK;
}

static int64_t file_size(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

kp_err kp_journal_stats_get(kp_journal *j, kp_journal_stats *out)
{
	if (!j || !out)
		return KP_ERR_INVALID;
	TRY(heal(j));
	memset(out, 0, sizeof(*out));
	TRY(count_states(j, "SELECT state, count(*) FROM orders GROUP BY state", out->orders,
			 KP_ORDER__COUNT, parse_order));
	TRY(count_states(j, "SELECT state, count(*) FROM attempts GROUP BY state", out->attempts,
			 KP_ATTEMPT__COUNT, parse_attempt));
	TRY(count_states(j, "SELECT state, count(*) FROM refunds GROUP BY state", out->refunds,
			 KP_REFUND__COUNT, parse_refund));
	TRY(query_int(j, "SELECT count(*) FROM confirmations", &out->confirmations));
	TRY(query_int(j, "SELECT count(*) FROM events", &out->events));
	char wal[PATH_MAX + 8];
	snprintf(wal, sizeof(wal), "%s-wal", j->path);
	out->file_bytes = file_size(j->path) + file_size(wal);
	return KP_OK;
}

/* ---------- walks (export) ---------- */

/* The callback of a walk, whichever record it takes. */
struct walk_fn {
	union {
		kp_order_fn order;
		kp_attempt_fn attempt;
		kp_refund_fn refund;
		kp_confirmation_fn conf;
	} fn;
	kp_err (*call)(const struct walk_fn *w, const void *rec);
	void *arg;
};

static kp_err call_order(const struct walk_fn *w, const void *rec)
{
	return w->fn.order(w->arg, rec);
}

static kp_err call_attempt(const struct walk_fn *w, const void *rec)
{
	return w->fn.attempt(w->arg, rec);
}

static kp_err call_refund(const struct walk_fn *w, const void *rec)
{
	return w->fn.refund(w->arg, rec);
}

static kp_err call_conf(const struct walk_fn *w, const void *rec)
{
	return w->fn.conf(w->arg, rec);
}

/* Stream the rows of sql (optionally binding text ?1) to w through rd. Its own
 * statement, so that the callback may run other reads meanwhile. */
static kp_err walk(kp_journal *j, const char *sql, const char *key, row_fn rd, void *rec,
		   const struct walk_fn *w)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(j->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK && key)
		rc = bind_text(st, 1, key);
	kp_err err = KP_OK;
	if (rc == SQLITE_OK)
		rc = SQLITE_ROW;
	while (err == KP_OK && rc == SQLITE_ROW && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		err = rd(st, rec);
		if (err != KP_OK)
			set_msg(j, "a row does not fit its record: %s", sql);
		else
			err = w->call(w, rec);
	}
	if (err == KP_OK && rc != SQLITE_DONE)
		err = map_rc(j, rc);
	sqlite3_finalize(st);
	return err;
}

kp_err kp_journal_orders_each(kp_journal *j, kp_order_fn fn, void *arg)
{
	if (!j || !fn)
		return KP_ERR_INVALID;
	TRY(heal(j));
	kp_order o;
	struct walk_fn w = {.fn.order = fn, .call = call_order, .arg = arg};
	return walk(j, "SELECT " ORDER_COLS " FROM orders ORDER BY created_at, order_id", NULL,
		    row_order, &o, &w);
}

kp_err kp_journal_attempts_each(kp_journal *j, const char *order_id, kp_attempt_fn fn, void *arg)
{
	if (!j || !fn || (order_id && !id_ok(order_id)))
		return KP_ERR_INVALID;
	TRY(heal(j));
	kp_attempt a;
	struct walk_fn w = {.fn.attempt = fn, .call = call_attempt, .arg = arg};
	return walk(j, order_id ? "SELECT " ATTEMPT_COLS " FROM " OF_ORDER("?1") " "
				  "ORDER BY created_at, attempt_id"
				: "SELECT " ATTEMPT_COLS " FROM attempts ORDER BY created_at, attempt_id",
		    order_id, row_attempt, &a, &w);
}

kp_err kp_journal_refunds_each(kp_journal *j, const char *order_id, kp_refund_fn fn, void *arg)
{
	if (!j || !fn || (order_id && order_id[0] && !id_ok(order_id)))
		return KP_ERR_INVALID;
	TRY(heal(j));
	const char *sql =
		!order_id ? "SELECT " REFUND_COLS " FROM refunds ORDER BY created_at, refund_id"
		: !order_id[0] ? "SELECT " REFUND_COLS " FROM refunds WHERE order_id IS NULL "
				 "ORDER BY created_at, refund_id"
			       : "SELECT " REFUND_COLS " FROM refunds WHERE order_id=?1 "
				 "ORDER BY created_at, refund_id";
	kp_refund r;
	struct walk_fn w = {.fn.refund = fn, .call = call_refund, .arg = arg};
	return walk(j, sql, order_id && order_id[0] ? order_id : NULL, row_refund, &r, &w);
}

kp_err kp_journal_confirmations_each(kp_journal *j, kp_confirmation_fn fn, void *arg)
{
	if (!j || !fn)
		return KP_ERR_INVALID;
	TRY(heal(j));
	kp_confirmation c;
	struct walk_fn w = {.fn.conf = fn, .call = call_conf, .arg = arg};
	return walk(j, "SELECT " CONF_COLS " FROM confirmations ORDER BY received_at, seq, host_txn",
		    NULL, row_conf, &c, &w);
}

/* ---------- offline check ---------- */

/* Each invariant: a query whose every row is one problem, and how to say it.
 * Only what is certainly true of a journal written through this API. */
struct invariant {
	const char *sql; /* rows of (text, text[, text]) */
	const char *fmt; /* up to four %s */
};

/* What the due table of schema 5 must hold, row for row (its triggers keep it). */
#define DUE_EXPECTED                                                                          \
	"WITH e(kind, id, at) AS (SELECT 'order', order_id, expires_at FROM orders WHERE "   \
	"state='pending' UNION ALL SELECT 'attempt', attempt_id, next_check_at FROM attempts " \
	"WHERE " KP_SCHEMA_LIVE("state") " UNION ALL SELECT 'refund', refund_id, next_check_at " \
	"FROM refunds WHERE " KP_SCHEMA_REFUND_OPEN("state") ") "

static const struct invariant invariants[] = {
	{"SELECT order_id, count(*) FROM attempts WHERE state='succeeded' "
	 "GROUP BY order_id HAVING count(*) > 1",
	 "order %s has %s kept successes (at most one allowed)"},
	/* Not correlated by order_id: no index serves that (schema 6). */
	{"WITH k AS (SELECT order_id, count(*) AS n FROM attempts WHERE state='succeeded' GROUP BY order_id) "
	 "SELECT o.order_id, o.state, coalesce(k.n, 0) FROM orders o LEFT JOIN k ON k.order_id=o.order_id "
	 "WHERE o.state IN ('paid','fulfilled') AND coalesce(k.n, 0) <> 1",
	 "order %s is %s with %s kept successes (exactly one expected)"},
	{"SELECT o.order_id, o.state FROM orders o WHERE o.state NOT IN ('paid','fulfilled') AND "
	 "o.order_id IN (SELECT order_id FROM attempts WHERE state='succeeded')",
	 "order %s is %s but has a kept success"},
	{"SELECT o.order_id FROM orders o WHERE o.state='fulfill_failed' AND o.order_id NOT IN (SELECT "
	 "order_id FROM attempts WHERE state IN ('refunding','refunded','refund_rejected'))",
	 "order %s is fulfill_failed but none of its attempts is refunding or refunded"},
	{"SELECT a.attempt_id, a.state, o.order_id, o.state FROM attempts a JOIN orders o "
	 "ON o.order_id=a.order_id WHERE (o.state='expired' AND " KP_SCHEMA_LIVE("a.state") ") OR "
	 "(o.state='canceled' AND a.state IN ('created','paying'))",
	 "attempt %s is %s on order %s which is %s"},
	{"SELECT r.refund_id, r.attempt_id FROM refunds r WHERE r.reason <> 'orphan' AND NOT EXISTS "
	 "(SELECT 1 FROM attempts a WHERE a.attempt_id=r.attempt_id)",
	 "refund %s names attempt %s, which is not in the journal"},
	{"SELECT r.refund_id, r.order_id, a.order_id FROM refunds r JOIN attempts a "
	 "ON a.attempt_id=r.attempt_id WHERE r.order_id IS NOT NULL AND r.order_id <> a.order_id",
	 "refund %s is for order %s but its attempt belongs to order %s"},
	{"SELECT a.attempt_id, a.state FROM attempts a WHERE a.state IN "
	 "('refunding','refunded','refund_rejected') AND NOT EXISTS (SELECT 1 FROM refunds r "
	 "WHERE r.attempt_id=a.attempt_id)",
	 "attempt %s is %s but no refund names it"},
	{"SELECT a.attempt_id, a.rid, o.order_id, o.rid FROM attempts a JOIN orders o "
	 "ON o.order_id=a.order_id WHERE a.rid >> 16 <> o.rid",
	 "attempt %s has rid %s, outside the range of its order %s (rid %s)"},
	{DUE_EXPECTED "SELECT kind, id, at FROM e EXCEPT SELECT kind, id, at FROM due",
	 "%s %s is due at %s but the due table does not say so"},
	{DUE_EXPECTED "SELECT kind, id, at FROM due EXCEPT SELECT kind, id, at FROM e",
	 "the due table holds %s %s at %s, which is not pending, live or open at that time"},
};

struct problems {
	kp_problem_fn fn;
	void *arg;
	int64_t count;
};

static void problem(struct problems *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct problems *p, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	one_line(line);
	p->count++;
	if (p->fn)
		p->fn(p->arg, line);
}

static const char *col_or(sqlite3_stmt *st, int i)
{
	const char *t = (const char *)sqlite3_column_text(st, i);
	return t ? t : "NULL";
}

/* Run sql; hand each row's first four columns to emit. */
static kp_err each_row(kp_journal *j, const char *sql, struct problems *p, const char *what,
		       const char *fmt)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(j->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = SQLITE_ROW;
	while (rc == SQLITE_ROW && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (!fmt) {
			const char *t = col_or(st, 0);
			if (strcmp(t, "ok") != 0)
				problem(p, "%s: %s", what, t);
			continue;
		}
		const char *c[4];
		for (int i = 0; i < 4; i++)
			c[i] = i < sqlite3_column_count(st) ? col_or(st, i) : "";
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
		char line[400];
		snprintf(line, sizeof(line), fmt, c[0], c[1], c[2], c[3]);
#pragma GCC diagnostic pop
		problem(p, "%s: %s", what, line);
	}
	kp_err err = rc == SQLITE_DONE ? KP_OK : map_rc(j, rc);
	sqlite3_finalize(st);
	return err;
}

kp_err kp_journal_check(kp_journal *j, kp_problem_fn fn, void *arg)
{
	if (!j)
		return KP_ERR_INVALID;
	TRY(heal(j));
	struct problems p = {.fn = fn, .arg = arg};
	kp_err err = each_row(j, "PRAGMA integrity_check", &p, "integrity", NULL);
	if (err != KP_OK) {
		problem(&p, "integrity: cannot run integrity_check: %s", j->errmsg);
		return err == KP_ERR_BUSY ? err : KP_ERR_CORRUPT;
	}
	err = each_row(j, "SELECT \"table\", parent, fkid FROM pragma_foreign_key_check", &p,
		       "foreign key", "a row of %s names a missing %s (constraint %s)");
	for (size_t i = 0; err == KP_OK && i < sizeof(invariants) / sizeof(invariants[0]); i++)
		err = each_row(j, invariants[i].sql, &p, "invariant", invariants[i].fmt);
	if (err != KP_OK) {
		problem(&p, "check: query failed: %s", j->errmsg);
		return err;
	}
	return p.count ? KP_ERR_CORRUPT : KP_OK;
}
