/* test_glob_fast.c — the journal's glob() (storage/glob_fast.c) answers as
 * SQLite's own GLOB does: for the two patterns it scans itself, on every
 * byte and on strings of mixed and broken UTF-8; for any other pattern; and
 * through SQL (NULLs, numbers, BLOBs, the pattern length limit, a CHECK in
 * an untrusted schema). Every GLOB of the schema is one it scans, and the
 * journal's own connections do scan them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "glob_fast.h"
#include "journal.h"
#include "kp_rmtree.h"
#include "schema.h"

static const char *const patterns[] = {
	"*[^A-Za-z0-9_-]*", /* the fast ones */
	"*[^A-Z]*",
	"*[^A-Za-z0-9_]*", /* near them: SQLite's path */
	"[^A-Z]*",
	"*[A-Z]*",
	"txn-*",
	"",
};
#define N_PATTERNS (sizeof(patterns) / sizeof(patterns[0]))

static void same(const char *s)
{
	for (size_t i = 0; i < N_PATTERNS; i++) {
		int want = sqlite3_strglob(patterns[i], s) == 0;
		if (kp_glob_fast_match(patterns[i], s) != want)
			fail_msg("glob('%s', '%s'): SQLite says %d", patterns[i], s, want);
	}
}

static void test_every_byte(void **state)
{
	(void)state;
	char s[4] = {0};
	for (int c = 1; c < 256; c++) {
		s[0] = (char)c; /* alone, first, last, in the middle */
		s[1] = 0;
		same(s);
		snprintf(s, sizeof(s), "A%c", c);
		same(s);
		snprintf(s, sizeof(s), "%cA", c);
		same(s);
		snprintf(s, sizeof(s), "a%c9", c);
		same(s);
	}
	same("");
}

/* Random strings over an alphabet of class members, neighbours of the
 * class bounds, and the bytes of valid, overlong and cut UTF-8. */
static void test_random_strings(void **state)
{
	(void)state;
	static const char *const bits[] = {"A", "Z", "a", "z", "0", "9", "_", "-", "@", "[", "`", "{",
					   "/", ":", " ", "\xc3\xa9", "\xc0\x81", "\xe2\x82", "\x80", "\xff"};
	uint64_t seed = 12345;
	char s[96];
	for (int n = 0; n < 20000; n++) {
		size_t len = 0;
		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		int parts = (int)(seed >> 59); /* 0..31 */
		s[0] = 0;
		for (int k = 0; k < parts; k++) {
			seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
			/* mostly class members, as real ids are */
			size_t pick = (seed >> 33) % 40;
			const char *b = bits[pick < 20 ? pick : pick % 8];
			size_t bl = strlen(b);
			if (len + bl >= sizeof(s))
				break;
			memcpy(s + len, b, bl + 1);
			len += bl;
		}
		same(s);
	}
	same("0191b7c2-3a4f-7d21-9e6b-2f1c4a5d6e7f");
	same("txn-00ff00ff00ff00ff");
	same("EUR");
	same("EUr");
}

/* SELECT a GLOB b on one connection: the result's type and value, or the error. */
static void glob_sql(sqlite3 *db, const char *sql, char *out, size_t cap)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		snprintf(out, cap, "%d:%s", sqlite3_column_type(st, 0),
			 sqlite3_column_type(st, 0) == SQLITE_NULL ? "" : (const char *)sqlite3_column_text(st, 0));
	else
		snprintf(out, cap, "error %d: %s", rc, sqlite3_errmsg(db));
	sqlite3_finalize(st);
}

static void test_sql_as_sqlite(void **state)
{
	(void)state;
	sqlite3 *plain = NULL, *fast = NULL;
	assert_int_equal(sqlite3_open(":memory:", &plain), SQLITE_OK);
	assert_int_equal(sqlite3_open(":memory:", &fast), SQLITE_OK);
	assert_int_equal(kp_glob_fast_register(fast), SQLITE_OK);
	/* A short limit on both, to see the same refusal of a long pattern. */
	sqlite3_limit(plain, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 12);
	sqlite3_limit(fast, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 12);
	static const char *const sql[] = {
		"SELECT 'ab-9' GLOB '*[^A-Z]*'",
		"SELECT 'ABC' GLOB '*[^A-Z]*'",
		"SELECT 'abc' NOT GLOB '*[^A-Z]*'",
		"SELECT NULL GLOB '*[^A-Z]*'",
		"SELECT 'ABC' GLOB NULL",
		"SELECT 123 GLOB '*[^A-Z]*'",
		"SELECT 1.5 GLOB '1.*'",
		"SELECT CAST('AB' || char(0) || 'x' AS BLOB) GLOB '*[^A-Z]*'",
		"SELECT x'616263' GLOB '*[^A-Z]*'", /* a BLOB: no match where SQLite says so */
		"SELECT x'41' GLOB 'A'",
		"SELECT 'A' GLOB x'41'",
		"SELECT x'41' GLOB NULL",
		"SELECT 'x' GLOB '*[^A-Za-z0-9_-]*'", /* 16 bytes: over the limit of 12 */
		"SELECT glob('*[^A-Z]*', 'ABc')",
		"SELECT 'AB' GLOB '*[^A-Z]*' ESCAPE 'x'", /* no ESCAPE for GLOB: an error on both */
	};
	for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++) {
		char a[160], b[160];
		glob_sql(plain, sql[i], a, sizeof(a));
		glob_sql(fast, sql[i], b, sizeof(b));
		if (strcmp(a, b) != 0)
			fail_msg("%s: SQLite %s, fast %s", sql[i], a, b);
	}
	sqlite3_close(plain);
	sqlite3_close(fast);
}

/* The schema's id CHECK, on a connection with the fast glob: the same rows
 * in, the same rows refused. */
static void test_check_refuses(void **state)
{
	(void)state;
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
	assert_int_equal(kp_glob_fast_register(db), SQLITE_OK);
	/* As the journal opens its file: functions in the schema must be innocuous. */
	sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
	assert_int_equal(sqlite3_exec(db,
				      "CREATE TABLE t (id TEXT NOT NULL CHECK (length(id) BETWEEN 1 AND 64 AND "
				      "id NOT GLOB '*[^A-Za-z0-9_-]*'), cur TEXT NOT NULL CHECK (length(cur) = 3 AND "
				      "cur NOT GLOB '*[^A-Z]*')) STRICT",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "INSERT INTO t VALUES ('Ab-_09', 'EUR')", NULL, NULL, NULL), SQLITE_OK);
	static const char *const bad[] = {
		"INSERT INTO t VALUES ('a b', 'EUR')",
		"INSERT INTO t VALUES ('caf\xc3\xa9', 'EUR')",
		"INSERT INTO t VALUES ('a.b', 'EUR')",
		"INSERT INTO t VALUES ('ab', 'EuR')",
		"INSERT INTO t VALUES ('ab', 'E1R')",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (sqlite3_exec(db, bad[i], NULL, NULL, NULL) != SQLITE_CONSTRAINT)
			fail_msg("%s: not refused", bad[i]);
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 1);
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/* Every GLOB pattern in every migration's SQL is one scanned in one pass:
 * a pattern changed in schema.c and not in glob_fast.c would quietly fall
 * back to SQLite's (right answers, the old cost). */
static void test_schema_patterns_scanned(void **state)
{
	(void)state;
	int found = 0;
	for (int v = 1; kp_schema_migration(v); v++) {
		const char *sql = kp_schema_migration(v);
		for (const char *p = strstr(sql, "GLOB '"); p; p = strstr(p + 1, "GLOB '")) {
			const char *b = p + strlen("GLOB '"), *e = strchr(b, '\'');
			assert_non_null(e);
			char pattern[64];
			assert_true((size_t)(e - b) < sizeof(pattern));
			memcpy(pattern, b, (size_t)(e - b));
			pattern[e - b] = 0;
			if (!kp_glob_fast_has(pattern))
				fail_msg("migration %d: GLOB '%s' is not scanned in one pass", v, pattern);
			found++;
		}
	}
	assert_true(found >= 4); /* the ids and currencies of orders, attempts, confirmations, refunds */
}

/* The journal's connections answer the CHECKs with the one-pass scan. */
static void test_journal_uses_it(void **state)
{
	(void)state;
	char dir[64], path[128];
	snprintf(dir, sizeof(dir), "/tmp/kp-globfast-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/journal.db", dir);
	kp_env env;
	kp_fake_world w;
	kp_env_init_fake(&env, &w, 1, 1800000000000LL);
	w.quiet = true;
	kp_journal *j = NULL;
	assert_int_equal(kp_journal_open(&j, path, 0, &env), KP_OK);
	long before = kp_glob_fast_scans();
	kp_order_new req = {.order_id = "o-1", .dedup_key = "k-1", .amount = 250, .currency = "EUR",
			    .now = 1800000000000LL, .expires_at = 1800000300000LL};
	kp_order o;
	bool dup = true;
	assert_int_equal(kp_journal_order_create(j, &req, &o, &dup), KP_OK);
	assert_false(dup);
	/* order_id, dedup_key, currency */
	assert_int_equal(kp_glob_fast_scans() - before, 3);
	kp_journal_close(j);
	kp_rmtree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_byte),
		cmocka_unit_test(test_random_strings),
		cmocka_unit_test(test_sql_as_sqlite),
		cmocka_unit_test(test_check_refuses),
		cmocka_unit_test(test_schema_patterns_scanned),
		cmocka_unit_test(test_journal_uses_it),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
