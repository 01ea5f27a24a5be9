/* check_db.h — the invariant checker's view of the evidence: a journal opened
 * read-only with plain SQLite (no engine or journal code), plus the host
 * simulator's ledger (its JSON dump or its SQLite file) copied into an attached
 * TEMP tables (temp.ledger_payments, _refunds, _tombstones), so that every
 * invariant is one SQL query. */
#ifndef KP_CHECK_DB_H
#define KP_CHECK_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "kp_error.h"

typedef struct kp_check_db kp_check_db;

/* PRAGMA application_id of a kioskpay journal ("KPJL") and the one journal
 * schema version this checker reads. */
#define KP_CHECK_JOURNAL_APP_ID 0x4B504A4C
/* Journal schema versions it reads: 2 only added an index, the tables are 1's. */
#define KP_CHECK_JOURNAL_VERSION_MIN 1
#define KP_CHECK_JOURNAL_VERSION 6
/* The ledger dump format and ledger file version of kp-hostsim it reads. */
#define KP_CHECK_LEDGER_FORMAT "kp-hostsim-ledger/1"
#define KP_CHECK_LEDGER_VERSION 1

/* Open the journal at path read-only (it is never written; SQLite may create
 * its -shm beside it) and create the empty TEMP work tables. Checks that it is a
 * kioskpay journal of the known version. The caller owns *out (close with
 * kp_check_db_close). On failure why holds one line: what, on what, why.
 * KP_ERR_IO: cannot open or read; KP_ERR_CORRUPT: not a database;
 * KP_ERR_INVALID: not a kioskpay journal; KP_ERR_FUTURE_VERSION: other version. */
kp_err kp_check_db_open(kp_check_db **out, const char *path, char *why, size_t why_size) KP_MUST_USE;

/* Close; safe on NULL. */
void kp_check_db_close(kp_check_db *db);

/* Load a kp-hostsim ledger dump (JSON text; path "-" reads stdin) into the
 * work tables.
 * KP_ERR_IO: unreadable; KP_ERR_INVALID: not a dump or a malformed record
 * (why names the record); KP_ERR_TOO_BIG: over 512 MiB. */
kp_err kp_check_db_ledger_json(kp_check_db *db, const char *path, char *why, size_t why_size) KP_MUST_USE;

/* Load a kp-hostsim ledger SQLite file (opened read-only) into the work tables.
 * KP_ERR_IO / KP_ERR_CORRUPT / KP_ERR_INVALID / KP_ERR_FUTURE_VERSION as above. */
kp_err kp_check_db_ledger_sqlite(kp_check_db *db, const char *path, char *why,
				 size_t why_size) KP_MUST_USE;

/* Keep only the ledger records of one device: device_id, or, if NULL, the only
 * device the ledger names (KP_ERR_INVALID, with the names in why, if it names
 * several). The device kept goes into device (empty if the ledger is empty). */
kp_err kp_check_db_ledger_device(kp_check_db *db, const char *device_id, char *device,
				 size_t device_size, char *why, size_t why_size) KP_MUST_USE;

/* True once a ledger was loaded. */
bool kp_check_db_has_ledger(const kp_check_db *db);

/* The connection (journal as "main", work tables as "temp"); owned by db. */
sqlite3 *kp_check_db_sqlite(kp_check_db *db);

#endif
