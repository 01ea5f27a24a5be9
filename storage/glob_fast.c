/* glob_fast.c — glob() with a one-pass answer for the schema's two class
 * patterns (glob_fast.h). */
#include "glob_fast.h"

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

int kp_glob_fast_match(const char *pattern, const char *s)
{
	for (size_t i = 0; i < sizeof(fast) / sizeof(fast[0]); i++) {
		if (strcmp(pattern, fast[i].pattern) != 0)
			continue;
		for (const unsigned char *p = (const unsigned char *)s; *p; p++)
			if (!fast[i].in_class(*p))
				return 1;
		return 0;
	}
	return sqlite3_strglob(pattern, s) == 0;
}

/* As SQLite's own glob function (likeFunc in its func.c): the pattern is
 * argv[0], the string argv[1]. */
static void glob_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	(void)argc;
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

kp_err kp_glob_fast_register(sqlite3 *db)
{
	/* Deterministic: allowed in CHECKs; innocuous: allowed in a schema that
	 * is not trusted (SQLITE_DBCONFIG_TRUSTED_SCHEMA off, journal.c). */
	int rc = sqlite3_create_function_v2(db, "glob", 2,
					    SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL,
					    glob_fn, NULL, NULL, NULL);
	return rc == SQLITE_OK ? KP_OK : rc == SQLITE_NOMEM ? KP_ERR_NOMEM : KP_ERR_INTERNAL;
}
