/* glob_fast.h — the journal's connections answer the schema's two character
 * class CHECKs (`x NOT GLOB '*[^A-Za-z0-9_-]*'` on every id, `'*[^A-Z]*'` on
 * every currency) with a table lookup per byte. SQLite's GLOB re-reads the
 * class at every character of the string: ~8,500 instructions for a 36-byte
 * id, six ids per sale, 11 % of a sale's instructions (kp-bench-cpu under
 * callgrind). Internal to storage/. */
#ifndef KP_GLOB_FAST_H
#define KP_GLOB_FAST_H

#include <sqlite3.h>
#include <stdbool.h>

#include "kp_error.h"

/* Register glob(P, S) on db: the function behind the GLOB operator. For the
 * two patterns above it scans S once; for any other pattern it is SQLite's
 * own (sqlite3_strglob). The answers are SQLite's for every pattern and
 * string: NULL if either is NULL, no match for a BLOB where this SQLite's
 * LIKE_DOESNT_MATCH_BLOBS says so, the same text conversion, the same limit
 * on the pattern's length, a string read up to its first NUL. The schema's
 * text is unchanged: the sqlite3 shell, with SQLite's GLOB, checks the same
 * rows the same way. One thing it does not keep: SQLite turns a GLOB with a
 * literal prefix into an index range only for its own glob (no journal
 * query has a GLOB in its WHERE). Returns SQLite's code. */
int kp_glob_fast_register(sqlite3 *db) KP_MUST_USE;

/* What glob(pattern, s) answers for two non-NULL strings: 1 match, 0 not. */
int kp_glob_fast_match(const char *pattern, const char *s);

/* Whether pattern is one of the two scanned in one pass. */
bool kp_glob_fast_has(const char *pattern);

/* How many answers were one-pass scans, in this process (tests: the
 * journal's connections use it). */
long kp_glob_fast_scans(void);

#endif
