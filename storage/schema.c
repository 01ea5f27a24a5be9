/* schema.c — the journal's schema as forward-only migrations, one SQL script
 * per version. The CHECK lists repeat the names of states.c on purpose: the
 * database refuses a state the code does not know, even from a raw writer. */
#include "schema.h"

#include <stddef.h>

/* Ids follow the host protocol: 1..64 characters of [A-Za-z0-9_-]. */
#define ID_OK(c) "length(" c ") BETWEEN 1 AND 64 AND " c " NOT GLOB '*[^A-Za-z0-9_-]*'"
#define LIVE "('created','paying','canceling')"

static const char migration_1[] =
	"CREATE TABLE orders (\n"
	"  order_id   TEXT NOT NULL PRIMARY KEY CHECK (" ID_OK("order_id") "),\n"
	"  dedup_key  TEXT NOT NULL UNIQUE CHECK (" ID_OK("dedup_key") "),\n"
	"  amount     INTEGER NOT NULL CHECK (amount > 0),\n"
	"  currency   TEXT NOT NULL CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),\n"
	"  items      TEXT NOT NULL DEFAULT '' CHECK (length(CAST(items AS BLOB)) < 1024),\n"
	"  state      TEXT NOT NULL CHECK (state IN ('pending','paid','fulfilled','fulfill_failed',"
	"'expired','canceled')),\n"
	"  created_at INTEGER NOT NULL,\n"
	"  expires_at INTEGER NOT NULL,\n"
	"  updated_at INTEGER NOT NULL\n"
	") STRICT, WITHOUT ROWID;\n"
	/* Orders waiting to be paid: small, so the expiry scan on every tick stays cheap. */
	"CREATE INDEX orders_pending ON orders(expires_at) WHERE state = 'pending';\n"

	"CREATE TABLE attempts (\n"
	"  attempt_id    TEXT NOT NULL PRIMARY KEY CHECK (" ID_OK("attempt_id") "),\n"
	"  order_id      TEXT NOT NULL REFERENCES orders(order_id),\n"
	"  channel       TEXT NOT NULL CHECK (length(channel) BETWEEN 1 AND 16 AND "
	"channel NOT GLOB '*[^A-Za-z0-9_-]*'),\n"
	"  amount        INTEGER NOT NULL CHECK (amount > 0),\n"
	"  state         TEXT NOT NULL CHECK (state IN ('created','paying','canceling','succeeded',"
	"'failed','canceled','expired','refunding','refunded','refund_rejected','unresolved')),\n"
	"  host_txn      TEXT NOT NULL DEFAULT '' CHECK (host_txn = '' OR (" ID_OK("host_txn") ")),\n"
	"  qr            TEXT NOT NULL DEFAULT '' CHECK (length(CAST(qr AS BLOB)) < 512),\n"
	"  created_at    INTEGER NOT NULL,\n"
	"  updated_at    INTEGER NOT NULL,\n"
	"  next_check_at INTEGER NOT NULL,\n"
	"  tries         INTEGER NOT NULL DEFAULT 0 CHECK (tries >= 0)\n"
	") STRICT, WITHOUT ROWID;\n"
	"CREATE INDEX attempts_by_order ON attempts(order_id);\n"
	/* At most one live attempt per order: the per-order payment lock. It is
	 * also the (small) index of everything the reconciler must look at. */
	"CREATE UNIQUE INDEX attempts_one_live ON attempts(order_id) WHERE state IN " LIVE ";\n"
	/* At most one kept success per order: the last line against double charges. */
	"CREATE UNIQUE INDEX attempts_one_kept ON attempts(order_id) WHERE state = 'succeeded';\n"

	"CREATE TABLE confirmations (\n"
	"  host_txn    TEXT NOT NULL PRIMARY KEY CHECK (" ID_OK("host_txn") "),\n"
	"  seq         INTEGER NOT NULL,\n"
	/* No foreign key: a host success for an attempt we never made is kept too. */
	"  attempt_id  TEXT NOT NULL CHECK (" ID_OK("attempt_id") "),\n"
	"  status      TEXT NOT NULL CHECK (status IN ('succeeded','failed')),\n"
	"  amount      INTEGER NOT NULL CHECK (amount >= 0),\n"
	"  currency    TEXT NOT NULL CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),\n"
	"  at          INTEGER NOT NULL,\n"
	"  received_at INTEGER NOT NULL\n"
	") STRICT, WITHOUT ROWID;\n"

	"CREATE TABLE refunds (\n"
	"  refund_id     TEXT NOT NULL PRIMARY KEY CHECK (" ID_OK("refund_id") "),\n"
	"  order_id      TEXT REFERENCES orders(order_id) CHECK (order_id IS NULL OR (" ID_OK("order_id") ")),\n"
	"  attempt_id    TEXT NOT NULL CHECK (" ID_OK("attempt_id") "),\n"
	/* One refund per captured payment. */
	"  host_txn      TEXT NOT NULL UNIQUE CHECK (" ID_OK("host_txn") "),\n"
	"  amount        INTEGER NOT NULL CHECK (amount > 0),\n"
	"  reason        TEXT NOT NULL CHECK (reason IN ('duplicate','late','vend_failed','orphan',"
	"'amount_mismatch','power_cut')),\n"
	"  state         TEXT NOT NULL CHECK (state IN ('pending','sent','refunded','rejected')),\n"
	"  created_at    INTEGER NOT NULL,\n"
	"  updated_at    INTEGER NOT NULL,\n"
	"  next_check_at INTEGER NOT NULL,\n"
	"  tries         INTEGER NOT NULL DEFAULT 0 CHECK (tries >= 0),\n"
	"  CHECK (order_id IS NOT NULL OR reason = 'orphan')\n"
	") STRICT, WITHOUT ROWID;\n"
	"CREATE INDEX refunds_by_order ON refunds(order_id) WHERE order_id IS NOT NULL;\n"
	"CREATE INDEX refunds_due ON refunds(next_check_at) WHERE state IN ('pending','sent');\n"

	"CREATE TABLE events (\n"
	"  seq        INTEGER PRIMARY KEY, /* max+1: strictly increasing, rows are never deleted */\n"
	"  at         INTEGER NOT NULL,\n"
	"  kind       TEXT NOT NULL CHECK (kind IN ('order','attempt','refund','confirmation')),\n"
	"  record_id  TEXT NOT NULL CHECK (" ID_OK("record_id") "),\n"
	"  from_state TEXT NOT NULL CHECK (length(from_state) < 24),\n"
	"  to_state   TEXT NOT NULL CHECK (length(to_state) BETWEEN 1 AND 23),\n"
	"  cause      TEXT NOT NULL CHECK (length(CAST(cause AS BLOB)) < 128)\n"
	") STRICT;\n"

	/* Append-only history, and records that are never deleted nor re-keyed. */
	"CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
	"BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;\n"
	"CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
	"BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;\n"
	"CREATE TRIGGER orders_no_delete BEFORE DELETE ON orders "
	"BEGIN SELECT RAISE(ABORT, 'orders are never deleted'); END;\n"
	"CREATE TRIGGER orders_fixed BEFORE UPDATE OF order_id, dedup_key, amount, currency, items, "
	"created_at, expires_at ON orders "
	"BEGIN SELECT RAISE(ABORT, 'order content is fixed'); END;\n"
	"CREATE TRIGGER attempts_no_delete BEFORE DELETE ON attempts "
	"BEGIN SELECT RAISE(ABORT, 'attempts are never deleted'); END;\n"
	"CREATE TRIGGER attempts_fixed BEFORE UPDATE OF attempt_id, order_id, channel, amount, "
	"created_at ON attempts "
	"BEGIN SELECT RAISE(ABORT, 'attempt content is fixed'); END;\n"
	"CREATE TRIGGER attempts_host_txn_fixed BEFORE UPDATE OF host_txn ON attempts "
	"WHEN old.host_txn <> '' AND new.host_txn <> old.host_txn "
	"BEGIN SELECT RAISE(ABORT, 'attempt host_txn is fixed once set'); END;\n"
	"CREATE TRIGGER confirmations_no_update BEFORE UPDATE ON confirmations "
	"BEGIN SELECT RAISE(ABORT, 'confirmations are immutable'); END;\n"
	"CREATE TRIGGER confirmations_no_delete BEFORE DELETE ON confirmations "
	"BEGIN SELECT RAISE(ABORT, 'confirmations are immutable'); END;\n"
	"CREATE TRIGGER refunds_no_delete BEFORE DELETE ON refunds "
	"BEGIN SELECT RAISE(ABORT, 'refunds are never deleted'); END;\n"
	"CREATE TRIGGER refunds_fixed BEFORE UPDATE OF refund_id, order_id, attempt_id, host_txn, "
	"amount, reason, created_at ON refunds "
	"BEGIN SELECT RAISE(ABORT, 'refund content is fixed'); END;\n"
	"PRAGMA application_id = 1263553100;\n" /* KP_SCHEMA_APP_ID */
	"PRAGMA user_version = 1;\n";

/* Version 2: the reconciler's due order. Without it, each tick of a boot
 * replay read and sorted every live attempt to find the 64 due first: 10,000
 * in-flight attempts made replay quadratic. Partial, so in normal selling it
 * holds only the few live attempts (one small page); state is in it so that
 * counting and min() over live attempts never read the table (boot: 0.4 s at
 * 100,000 without it). */
static const char migration_2[] =
	"CREATE INDEX attempts_due ON attempts(next_check_at, state) WHERE state IN " LIVE ";\n"
	"PRAGMA user_version = 2;\n";

static const char *const migrations[] = {
	NULL, /* version 0: the empty file */
	migration_1,
	migration_2,
};

_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == KP_SCHEMA_LATEST + 1,
	       "one migration per schema version");

const char *kp_schema_migration(int version)
{
	if (version < 1 || version > KP_SCHEMA_LATEST)
		return NULL;
	return migrations[version];
}
