/* check_db.c — opens the evidence for kp-check (see check_db.h): the journal
 * read-only as "main", the ledger copied into TEMP tables named ledger_*. Knows
 * the journal only by its table and column names, never by the engine's code. */
#include "check_db.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEDGER_JSON_MAX ((size_t)512 * 1024 * 1024)
#define TEXT_MAX 256 /* longest text field accepted from a ledger record */
#define DEVICES_MAX 8 /* device names listed in an error */

struct kp_check_db {
	sqlite3 *db;
	char path[4096];
	bool ledger;
};

static const char ledger_schema[] =
	"CREATE TABLE temp.ledger_payments(attempt_id TEXT NOT NULL PRIMARY KEY, device_id TEXT NOT NULL,"
	" order_id TEXT NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL,"
	" channel TEXT NOT NULL, status TEXT NOT NULL, host_txn TEXT, origin TEXT NOT NULL);"
	"CREATE INDEX temp.ledger_payments_txn ON ledger_payments(host_txn);"
	"CREATE INDEX temp.ledger_payments_order ON ledger_payments(order_id);"
	"CREATE TABLE temp.ledger_refunds(refund_id TEXT NOT NULL PRIMARY KEY, attempt_id TEXT NOT NULL,"
	" host_txn TEXT NOT NULL, amount INTEGER NOT NULL, reason TEXT NOT NULL,"
	" status TEXT NOT NULL);"
	"CREATE INDEX temp.ledger_refunds_txn ON ledger_refunds(host_txn);"
	"CREATE TABLE temp.ledger_tombstones(attempt_id TEXT NOT NULL PRIMARY KEY, device_id TEXT NOT NULL);"
	"CREATE TABLE temp.ledger_confirms(device_id TEXT NOT NULL, seq INTEGER NOT NULL,"
	" attempt_id TEXT NOT NULL, host_txn TEXT NOT NULL, acked INTEGER NOT NULL,"
	" PRIMARY KEY(device_id, seq));"
	"CREATE INDEX temp.ledger_confirms_txn ON ledger_confirms(host_txn);";

#define INS_PAYMENT "INSERT INTO temp.ledger_payments VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)"
#define INS_REFUND "INSERT INTO temp.ledger_refunds VALUES(?1,?2,?3,?4,?5,?6)"
#define INS_TOMBSTONE "INSERT INTO temp.ledger_tombstones VALUES(?1,?2)"
#define INS_CONFIRM "INSERT INTO temp.ledger_confirms VALUES(?1,?2,?3,?4,?5)"

static void say(char *why, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(char *why, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, size, fmt, ap);
	va_end(ap);
}

/* Map a SQLite primary result code to the checker's error. */
static kp_err map_rc(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE: return KP_OK;
	case SQLITE_NOMEM: return KP_ERR_NOMEM;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB: return KP_ERR_CORRUPT;
	case SQLITE_CONSTRAINT: return KP_ERR_CONSTRAINT;
	case SQLITE_BUSY:
	case SQLITE_LOCKED: return KP_ERR_BUSY;
	default: return KP_ERR_IO;
	}
}

static kp_err exec_sql(sqlite3 *db, const char *sql, const char *what, char *why, size_t size)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		say(why, size, "%s: %s", what, msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return map_rc(rc);
	}
	return KP_OK;
}

/* One integer from a one-row query (a PRAGMA). */
static kp_err query_int(sqlite3 *db, const char *sql, int64_t *out, const char *what, char *why,
			size_t size)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	kp_err err = KP_OK;
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(st, 0);
	} else {
		say(why, size, "%s: %s", what, rc == SQLITE_DONE ? "no answer" : sqlite3_errmsg(db));
		err = rc == SQLITE_DONE ? KP_ERR_INVALID : map_rc(rc);
	}
	sqlite3_finalize(st);
	return err;
}

static void harden(sqlite3 *db)
{
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_timeout(db, 5000);
	sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
}

/* sqlite3_open_v2 read-only with a one-line reason on failure. */
static kp_err open_readonly(const char *path, sqlite3 **out, const char *what, char *why, size_t size)
{
	int rc = sqlite3_open_v2(path, out, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		say(why, size, "cannot open %s %s: %s", what, path,
		    *out ? sqlite3_errmsg(*out) : sqlite3_errstr(rc));
		sqlite3_close(*out);
		*out = NULL;
		return KP_ERR_IO;
	}
	harden(*out);
	return KP_OK;
}

kp_err kp_check_db_open(kp_check_db **out, const char *path, char *why, size_t why_size)
{
	kp_check_db *c = NULL;
	int64_t app = 0, version = 0;
	char what[4200];
	kp_err err = KP_OK;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (!c) {
		say(why, why_size, "out of memory");
		return KP_ERR_NOMEM;
	}
	if (strlen(path) >= sizeof(c->path)) {
		say(why, why_size, "journal path is too long");
		err = KP_ERR_INVALID;
		goto out;
	}
	snprintf(c->path, sizeof(c->path), "%s", path);
	if ((err = open_readonly(path, &c->db, "journal", why, why_size)) != KP_OK)
		goto out;
	snprintf(what, sizeof(what), "cannot read journal %s", path);
	if ((err = query_int(c->db, "PRAGMA main.application_id", &app, what, why, why_size)) != KP_OK ||
	    (err = query_int(c->db, "PRAGMA main.user_version", &version, what, why, why_size)) != KP_OK)
		goto out;
	if (app != KP_CHECK_JOURNAL_APP_ID) {
		say(why, why_size, "%s is not a kioskpay journal (application_id %lld)", path, (long long)app);
		err = KP_ERR_INVALID;
		goto out;
	}
	if (version < KP_CHECK_JOURNAL_VERSION_MIN || version > KP_CHECK_JOURNAL_VERSION) {
		say(why, why_size, "journal %s has schema version %lld; kp-check reads versions %d..%d",
		    path, (long long)version, KP_CHECK_JOURNAL_VERSION_MIN, KP_CHECK_JOURNAL_VERSION);
		err = KP_ERR_FUTURE_VERSION;
		goto out;
	}
	/* TEMP stays writable on a read-only connection; main is never written. */
	if ((err = exec_sql(c->db, ledger_schema, "cannot create the work tables", why, why_size)) != KP_OK)
		goto out;
	*out = c;
	c = NULL;
out:
	kp_check_db_close(c);
	return err;
}

void kp_check_db_close(kp_check_db *db)
{
	if (!db)
		return;
	sqlite3_close(db->db);
	free(db);
}

bool kp_check_db_has_ledger(const kp_check_db *db)
{
	return db->ledger;
}

sqlite3 *kp_check_db_sqlite(kp_check_db *db)
{
	return db->db;
}

/* ---------- the ledger as JSON ---------- */

/* Read all of path ("-": stdin) into a NUL-terminated heap buffer. */
static kp_err read_file(const char *path, char **out, size_t *len, char *why, size_t size)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0, cap = 0;
	kp_err err = KP_OK;

	*out = NULL;
	if (!f) {
		say(why, size, "cannot open ledger %s: %s", path, strerror(errno));
		return KP_ERR_IO;
	}
	for (;;) {
		if (cap - n < 65536) {
			if (cap >= LEDGER_JSON_MAX) {
				say(why, size, "ledger %s is larger than %zu MiB", path, LEDGER_JSON_MAX >> 20);
				err = KP_ERR_TOO_BIG;
				goto out;
			}
			size_t ncap = cap ? cap * 2 : 1 << 20;
			char *nbuf = realloc(buf, ncap + 1);
			if (!nbuf) {
				say(why, size, "out of memory reading ledger %s", path);
				err = KP_ERR_NOMEM;
				goto out;
			}
			buf = nbuf;
			cap = ncap;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		say(why, size, "cannot read ledger %s: %s", path, strerror(errno));
		err = KP_ERR_IO;
		goto out;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	buf = NULL;
out:
	free(buf);
	if (f != stdin)
		fclose(f);
	return err;
}

/* One record being loaded: where it is, for messages. */
struct rec {
	const char *path;
	const char *part;
	int index;
	const cJSON *obj;
	char *why;
	size_t size;
};

/* Bind the string field key of r to slot i; null_ok lets JSON null bind NULL. */
static kp_err bind_str(sqlite3_stmt *st, int i, const struct rec *r, const char *key, bool null_ok)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->obj, key);
	if (null_ok && cJSON_IsNull(v))
		return sqlite3_bind_null(st, i) == SQLITE_OK ? KP_OK : KP_ERR_NOMEM;
	if (!cJSON_IsString(v) || !v->valuestring) {
		say(r->why, r->size, "ledger %s: %s[%d]: \"%s\" is missing or not a string", r->path,
		    r->part, r->index, key);
		return KP_ERR_INVALID;
	}
	size_t len = strlen(v->valuestring);
	if (len == 0 || len > TEXT_MAX) {
		say(r->why, r->size, "ledger %s: %s[%d]: \"%s\" has %zu characters (1..%d)", r->path,
		    r->part, r->index, key, len, TEXT_MAX);
		return KP_ERR_INVALID;
	}
	return sqlite3_bind_text(st, i, v->valuestring, (int)len, SQLITE_STATIC) == SQLITE_OK
		       ? KP_OK
		       : KP_ERR_NOMEM;
}

/* Bind the integer field key of r (a JSON number with no fraction, |v| <= 2^53). */
static kp_err bind_int(sqlite3_stmt *st, int i, const struct rec *r, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->obj, key);
	const double lim = 9007199254740992.0;
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= -lim && v->valuedouble <= lim) ||
	    (double)(int64_t)v->valuedouble != v->valuedouble) {
		say(r->why, r->size, "ledger %s: %s[%d]: \"%s\" is missing or not an integer", r->path,
		    r->part, r->index, key);
		return KP_ERR_INVALID;
	}
	return sqlite3_bind_int64(st, i, (int64_t)v->valuedouble) == SQLITE_OK ? KP_OK : KP_ERR_NOMEM;
}

/* Bind the boolean field key of r as 0 or 1. */
static kp_err bind_bool(sqlite3_stmt *st, int i, const struct rec *r, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->obj, key);
	if (!cJSON_IsBool(v)) {
		say(r->why, r->size, "ledger %s: %s[%d]: \"%s\" is missing or not true/false", r->path,
		    r->part, r->index, key);
		return KP_ERR_INVALID;
	}
	return sqlite3_bind_int(st, i, cJSON_IsTrue(v)) == SQLITE_OK ? KP_OK : KP_ERR_NOMEM;
}

/* Step an insert into a work table; a duplicate key becomes KP_ERR_INVALID naming the record. */
static kp_err insert_step(sqlite3 *db, sqlite3_stmt *st, const char *path, const char *part, int index,
			  char *why, size_t size)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc == SQLITE_DONE)
		return KP_OK;
	if ((rc & 0xff) == SQLITE_CONSTRAINT) {
		say(why, size, "ledger %s: %s[%d]: duplicate key (%s)", path, part, index, sqlite3_errmsg(db));
		return KP_ERR_INVALID;
	}
	say(why, size, "ledger %s: %s[%d]: cannot store: %s", path, part, index, sqlite3_errmsg(db));
	return map_rc(rc);
}

typedef kp_err (*bind_fn)(sqlite3_stmt *st, const struct rec *r);

static kp_err bind_payment(sqlite3_stmt *st, const struct rec *r)
{
	kp_err err;
	if ((err = bind_str(st, 1, r, "attempt_id", false)) != KP_OK ||
	    (err = bind_str(st, 2, r, "device_id", false)) != KP_OK ||
	    (err = bind_str(st, 3, r, "order_id", false)) != KP_OK ||
	    (err = bind_int(st, 4, r, "amount")) != KP_OK ||
	    (err = bind_str(st, 5, r, "currency", false)) != KP_OK ||
	    (err = bind_str(st, 6, r, "channel", false)) != KP_OK ||
	    (err = bind_str(st, 7, r, "status", false)) != KP_OK ||
	    (err = bind_str(st, 8, r, "host_txn", true)) != KP_OK ||
	    (err = bind_str(st, 9, r, "origin", false)) != KP_OK)
		return err;
	return KP_OK;
}

static kp_err bind_refund(sqlite3_stmt *st, const struct rec *r)
{
	kp_err err;
	if ((err = bind_str(st, 1, r, "refund_id", false)) != KP_OK ||
	    (err = bind_str(st, 2, r, "attempt_id", false)) != KP_OK ||
	    (err = bind_str(st, 3, r, "host_txn", false)) != KP_OK ||
	    (err = bind_int(st, 4, r, "amount")) != KP_OK ||
	    (err = bind_str(st, 5, r, "reason", false)) != KP_OK ||
	    (err = bind_str(st, 6, r, "status", false)) != KP_OK)
		return err;
	return KP_OK;
}

static kp_err bind_tombstone(sqlite3_stmt *st, const struct rec *r)
{
	kp_err err;
	if ((err = bind_str(st, 1, r, "attempt_id", false)) != KP_OK ||
	    (err = bind_str(st, 2, r, "device_id", false)) != KP_OK)
		return err;
	return KP_OK;
}

static kp_err bind_confirm(sqlite3_stmt *st, const struct rec *r)
{
	kp_err err;
	if ((err = bind_str(st, 1, r, "device_id", false)) != KP_OK ||
	    (err = bind_int(st, 2, r, "seq")) != KP_OK ||
	    (err = bind_str(st, 3, r, "attempt_id", false)) != KP_OK ||
	    (err = bind_str(st, 4, r, "host_txn", false)) != KP_OK ||
	    (err = bind_bool(st, 5, r, "acked")) != KP_OK)
		return err;
	return KP_OK;
}

/* Insert every object of root[part] with sql and bind. */
static kp_err load_part(kp_check_db *c, const cJSON *root, const char *path, const char *part,
			const char *sql, bind_fn bind, char *why, size_t size)
{
	sqlite3_stmt *st = NULL;
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, part);
	kp_err err = KP_OK;
	int i = 0;

	if (!cJSON_IsArray(arr)) {
		say(why, size, "ledger %s: \"%s\" is missing or not an array", path, part);
		return KP_ERR_INVALID;
	}
	int rc = sqlite3_prepare_v2(c->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK) {
		say(why, size, "ledger %s: %s: %s", path, part, sqlite3_errmsg(c->db));
		return map_rc(rc);
	}
	const cJSON *o;
	cJSON_ArrayForEach(o, arr)
	{
		struct rec r = {path, part, i, o, why, size};
		if (!cJSON_IsObject(o)) {
			say(why, size, "ledger %s: %s[%d] is not an object", path, part, i);
			err = KP_ERR_INVALID;
			goto out;
		}
		if ((err = bind(st, &r)) != KP_OK)
			goto out;
		if ((err = insert_step(c->db, st, path, part, i, why, size)) != KP_OK)
			goto out;
		i++;
	}
out:
	sqlite3_finalize(st);
	return err;
}

kp_err kp_check_db_ledger_json(kp_check_db *db, const char *path, char *why, size_t why_size)
{
	char *text = NULL;
	size_t len = 0;
	cJSON *root = NULL;
	bool in_txn = false;
	kp_err err;

	if (db->ledger) {
		say(why, why_size, "a ledger is already loaded");
		return KP_ERR_STATE;
	}
	if ((err = read_file(path, &text, &len, why, why_size)) != KP_OK)
		return err;
	root = cJSON_ParseWithLength(text, len);
	if (!cJSON_IsObject(root)) {
		say(why, why_size, "ledger %s is not a JSON object", path);
		err = KP_ERR_INVALID;
		goto out;
	}
	const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
	if (!cJSON_IsString(format) || strcmp(format->valuestring, KP_CHECK_LEDGER_FORMAT) != 0) {
		say(why, why_size, "ledger %s: \"format\" is not \"%s\" (not a kp-hostsim --dump?)", path,
		    KP_CHECK_LEDGER_FORMAT);
		err = KP_ERR_INVALID;
		goto out;
	}
	if ((err = exec_sql(db->db, "BEGIN", "cannot load ledger", why, why_size)) != KP_OK)
		goto out;
	in_txn = true;
	if ((err = load_part(db, root, path, "payments", INS_PAYMENT, bind_payment, why, why_size)) != KP_OK ||
	    (err = load_part(db, root, path, "refunds", INS_REFUND, bind_refund, why, why_size)) != KP_OK ||
	    (err = load_part(db, root, path, "tombstones", INS_TOMBSTONE, bind_tombstone, why,
			     why_size)) != KP_OK ||
	    (err = load_part(db, root, path, "confirms", INS_CONFIRM, bind_confirm, why, why_size)) != KP_OK)
		goto out;
	if ((err = exec_sql(db->db, "COMMIT", "cannot load ledger", why, why_size)) != KP_OK)
		goto out;
	in_txn = false;
	db->ledger = true;
out:
	if (in_txn)
		(void)sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
	cJSON_Delete(root);
	free(text);
	return err;
}

/* ---------- the ledger as its SQLite file ---------- */

/* Copy the rows of select (on src) into the work tables with insert (on dst), column by column. */
static kp_err copy_rows(sqlite3 *src, const char *select, sqlite3 *dst, const char *insert,
			const char *path, const char *part, char *why, size_t size)
{
	sqlite3_stmt *from = NULL, *to = NULL;
	kp_err err = KP_OK;
	int rc = sqlite3_prepare_v2(src, select, -1, &from, NULL);
	if (rc != SQLITE_OK) {
		say(why, size, "ledger %s: cannot read %s: %s", path, part, sqlite3_errmsg(src));
		err = (rc & 0xff) == SQLITE_ERROR ? KP_ERR_INVALID : map_rc(rc);
		goto out;
	}
	if ((rc = sqlite3_prepare_v2(dst, insert, -1, &to, NULL)) != SQLITE_OK) {
		say(why, size, "ledger %s: %s: %s", path, part, sqlite3_errmsg(dst));
		err = map_rc(rc);
		goto out;
	}
	int i = 0;
	while ((rc = sqlite3_step(from)) == SQLITE_ROW) {
		int n = sqlite3_column_count(from);
		for (int k = 0; k < n; k++) {
			if (sqlite3_bind_value(to, k + 1, sqlite3_column_value(from, k)) != SQLITE_OK) {
				say(why, size, "ledger %s: %s row %d: out of memory", path, part, i);
				err = KP_ERR_NOMEM;
				goto out;
			}
		}
		if ((err = insert_step(dst, to, path, part, i, why, size)) != KP_OK)
			goto out;
		i++;
	}
	if (rc != SQLITE_DONE) {
		say(why, size, "ledger %s: cannot read %s: %s", path, part, sqlite3_errmsg(src));
		err = map_rc(rc);
	}
out:
	sqlite3_finalize(from);
	sqlite3_finalize(to);
	return err;
}

kp_err kp_check_db_ledger_sqlite(kp_check_db *db, const char *path, char *why, size_t why_size)
{
	sqlite3 *src = NULL;
	int64_t version = 0;
	bool in_txn = false;
	char what[4200];
	kp_err err;

	if (db->ledger) {
		say(why, why_size, "a ledger is already loaded");
		return KP_ERR_STATE;
	}
	if ((err = open_readonly(path, &src, "ledger", why, why_size)) != KP_OK)
		return err;
	snprintf(what, sizeof(what), "cannot read ledger %s", path);
	if ((err = query_int(src, "PRAGMA user_version", &version, what, why, why_size)) != KP_OK)
		goto out;
	if (version != KP_CHECK_LEDGER_VERSION) {
		say(why, why_size, "ledger %s has version %lld; kp-check reads kp-hostsim ledger version %d",
		    path, (long long)version, KP_CHECK_LEDGER_VERSION);
		err = version == 0 ? KP_ERR_INVALID : KP_ERR_FUTURE_VERSION;
		goto out;
	}
	/* One read transaction on the source, so the four parts agree. */
	if ((err = exec_sql(src, "BEGIN", what, why, why_size)) != KP_OK)
		goto out;
	if ((err = exec_sql(db->db, "BEGIN", "cannot load ledger", why, why_size)) != KP_OK)
		goto out;
	in_txn = true;
	if ((err = copy_rows(src, "SELECT attempt_id, device_id, order_id, amount, currency, channel, "
				  "status, host_txn, origin FROM payments", db->db, INS_PAYMENT, path,
			     "payments", why, why_size)) != KP_OK ||
	    (err = copy_rows(src, "SELECT refund_id, attempt_id, host_txn, amount, reason, status FROM refunds",
			     db->db, INS_REFUND, path, "refunds", why, why_size)) != KP_OK ||
	    (err = copy_rows(src, "SELECT attempt_id, device_id FROM tombstones", db->db, INS_TOMBSTONE,
			     path, "tombstones", why, why_size)) != KP_OK ||
	    (err = copy_rows(src, "SELECT device_id, seq, attempt_id, host_txn, acked FROM confirms", db->db,
			     INS_CONFIRM, path, "confirms", why, why_size)) != KP_OK)
		goto out;
	if ((err = exec_sql(db->db, "COMMIT", "cannot load ledger", why, why_size)) != KP_OK)
		goto out;
	in_txn = false;
	db->ledger = true;
out:
	if (in_txn)
		(void)sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(src); /* ends its read transaction */
	return err;
}

/* ---------- one device ---------- */

kp_err kp_check_db_ledger_device(kp_check_db *db, const char *device_id, char *device,
				 size_t device_size, char *why, size_t why_size)
{
	sqlite3_stmt *st = NULL;
	char names[DEVICES_MAX * 72] = "";
	size_t used = 0;
	int count = 0;
	bool found = false;
	kp_err err = KP_OK;

	device[0] = '\0';
	int rc = sqlite3_prepare_v2(db->db, "SELECT device_id FROM temp.ledger_payments UNION "
					     "SELECT device_id FROM temp.ledger_tombstones ORDER BY 1", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		say(why, why_size, "ledger devices: %s", sqlite3_errmsg(db->db));
		return map_rc(rc);
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *d = (const char *)sqlite3_column_text(st, 0);
		if (!d)
			continue;
		if (count == 0)
			snprintf(device, device_size, "%s", d);
		if (device_id && strcmp(device_id, d) == 0)
			found = true;
		if (count < DEVICES_MAX && used < sizeof(names)) {
			int w = snprintf(names + used, sizeof(names) - used, "%s%.64s", count ? ", " : "", d);
			if (w > 0)
				used += (size_t)w;
		}
		count++;
	}
	if (rc != SQLITE_DONE) {
		say(why, why_size, "ledger devices: %s", sqlite3_errmsg(db->db));
		err = map_rc(rc);
		goto out;
	}
	if (!device_id) {
		if (count > 1) {
			say(why, why_size, "the ledger holds records of %d devices (%s%s): pass --device ID",
			    count, names, count > DEVICES_MAX ? ", ..." : "");
			err = KP_ERR_INVALID;
		}
		goto out;
	}
	if (count > 0 && !found) {
		say(why, why_size, "the ledger has no records of device %s (it has: %s%s)", device_id, names,
		    count > DEVICES_MAX ? ", ..." : "");
		err = KP_ERR_INVALID;
		goto out;
	}
	snprintf(device, device_size, "%s", device_id);
	sqlite3_finalize(st);
	st = NULL;
	static const char *const drop[] = {
		"DELETE FROM temp.ledger_payments WHERE device_id <> ?1",
		"DELETE FROM temp.ledger_tombstones WHERE device_id <> ?1",
		"DELETE FROM temp.ledger_confirms WHERE device_id <> ?1",
		/* A refund belongs to the device of the payment it refunds. */
		"DELETE FROM temp.ledger_refunds WHERE attempt_id NOT IN (SELECT attempt_id FROM temp.ledger_payments)",
	};
	for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]) && err == KP_OK; i++) {
		rc = sqlite3_prepare_v2(db->db, drop[i], -1, &st, NULL);
		if (rc == SQLITE_OK && sqlite3_bind_parameter_count(st) > 0)
			rc = sqlite3_bind_text(st, 1, device_id, -1, SQLITE_STATIC);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(st);
		if (rc != SQLITE_DONE) {
			say(why, why_size, "ledger device filter: %s", sqlite3_errmsg(db->db));
			err = map_rc(rc);
		}
		sqlite3_finalize(st);
		st = NULL;
	}
out:
	sqlite3_finalize(st);
	return err;
}
