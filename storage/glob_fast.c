/* glob_fast.c — glob() with a one-pass answer for the schema's two class
 * patterns (glob_fast.h). */
#include "glob_fast.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

/* The bytes each pattern's class lets through; any other byte, and every
 * byte of a multi-byte UTF-8 character (>= 0x80: SQLite reads such a
 * character, valid or not, as a code point above 0x7F), is one the class
 * does not hold, so `*[^...]*` matches. */
static bool id_byte(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
	       c == '-';
}

static bool upper_byte(unsigned char c)
{
	return c >= 'A' && c <= 'Z';
}

static const struct {
	const char *pattern;
	bool (*in_class)(unsigned char c);
} fast[] = {
	{"*[^A-Za-z0-9_-]*", id_byte},
	{"*[^A-Z]*", upper_byte},
};

static atomic_long scans;

static bool (*fast_class(const char *pattern))(unsigned char)
{
	for (size_t i = 0; i < sizeof(fast) / sizeof(fast[0]); i++)
		if (strcmp(pattern, fast[i].pattern) == 0)
			return fast[i].in_class;
	return NULL;
}

bool kp_glob_fast_has(const char *pattern)
{
	return fast_class(pattern) != NULL;
}

long kp_glob_fast_scans(void)
{
	return atomic_load_explicit(&scans, memory_order_relaxed);
}

int kp_glob_fast_match(const char *pattern, const char *s)
{
	bool (*in_class)(unsigned char) = fast_class(pattern);
	if (!in_class)
		return sqlite3_strglob(pattern, s) == 0;
	atomic_fetch_add_explicit(&scans, 1, memory_order_relaxed);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (!in_class(*p))
			return 1;
	return 0;
}

/* As SQLite's own glob function (likeFunc in its func.c): the pattern is
 * argv[0], the string argv[1]; the user data says whether this SQLite was
 * built with LIKE_DOESNT_MATCH_BLOBS (Debian's is), under which a BLOB on
 * either side is no match, before anything else is looked at. */
static void glob_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	(void)argc;
	if (sqlite3_user_data(ctx) &&
	    (sqlite3_value_type(argv[0]) == SQLITE_BLOB || sqlite3_value_type(argv[1]) == SQLITE_BLOB)) {
		sqlite3_result_int(ctx, 0);
		return;
	}
	const char *pattern = (const char *)sqlite3_value_text(argv[0]);
	const char *s = (const char *)sqlite3_value_text(argv[1]);
	int limit = sqlite3_limit(sqlite3_context_db_handle(ctx), SQLITE_LIMIT_LIKE_PATTERN_LENGTH, -1);
	if (sqlite3_value_bytes(argv[0]) > limit) {
		sqlite3_result_error(ctx, "LIKE or GLOB pattern too complex", -1);
		return;
	}
	if (pattern && s)
		sqlite3_result_int(ctx, kp_glob_fast_match(pattern, s));
}

int kp_glob_fast_register(sqlite3 *db)
{
	static int blobs_never_match = 1; /* its address is the flag: non-NULL */
	void *blobs = sqlite3_compileoption_used("LIKE_DOESNT_MATCH_BLOBS") ? &blobs_never_match : NULL;
	/* Deterministic: allowed in CHECKs; innocuous: allowed in a schema that
	 * is not trusted (SQLITE_DBCONFIG_TRUSTED_SCHEMA off, journal.c). */
	return sqlite3_create_function_v2(db, "glob", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS,
					  blobs, glob_fn, NULL, NULL, NULL);
}
