/* schema.c — the journal's schema as forward-only migrations, one SQL script
 * per version. The CHECK lists repeat the names of states.c on purpose: the
 * database refuses a state the code does not know, even from a raw writer.
 * A migration, once released, is history: it is never edited; a change is a
 * new migration. */
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

/* ---------- version 3 ---------- */

/* Version 3: fewer pages written and fewer instructions per payment
 * (docs/journal.md, "What a payment costs"). Every table is rebuilt:
 *
 * - rowid tables with the id UNIQUE instead of WITHOUT ROWID: a WITHOUT ROWID
 *   row longer than about a quarter of a page spills into an overflow page,
 *   rewritten on every state change; as rowid tables the rows stay whole in
 *   512-byte pages, at the price of one index per id, written once;
 * - a list of more than two constants is written as comparisons, not IN:
 *   SQLite answers a constant IN list of three or more by building a
 *   temporary B-tree, once in every statement that evaluates it, and the
 *   CHECKs, partial indexes and triggers are evaluated by every insert and
 *   update (6 such B-trees in one attempt update);
 * - the two per-order partial UNIQUE indexes become triggers that look the
 *   order's attempts up through attempts_by_order: the same refusal by the
 *   database itself (SQLite has one writer, and a BEFORE trigger sees every
 *   earlier row of its statement), two B-trees fewer to write.
 *
 * Each table is copied into a new one, dropped and replaced; the caller runs
 * this with foreign keys off and checks them before its commit. */

#define ORDERS_V3 \
	"  order_id   TEXT NOT NULL UNIQUE CHECK (" ID_OK("order_id") "),\n" \
	"  dedup_key  TEXT NOT NULL UNIQUE CHECK (" ID_OK("dedup_key") "),\n" \
	"  amount     INTEGER NOT NULL CHECK (amount > 0),\n" \
	"  currency   TEXT NOT NULL CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),\n" \
	"  items      TEXT NOT NULL DEFAULT '' CHECK (length(CAST(items AS BLOB)) < 1024),\n" \
	"  state      TEXT NOT NULL CHECK (state = 'pending' OR state = 'paid' OR state = 'fulfilled' OR " \
	"state = 'fulfill_failed' OR state = 'expired' OR state = 'canceled'),\n" \
	"  created_at INTEGER NOT NULL,\n" \
	"  expires_at INTEGER NOT NULL,\n" \
	"  updated_at INTEGER NOT NULL\n"
#define ORDERS_LIST "order_id,dedup_key,amount,currency,items,state,created_at,expires_at,updated_at"
#define ORDERS_EXTRAS \
	/* Orders waiting to be paid: small, so the expiry scan on every tick stays cheap. */ \
	"CREATE INDEX orders_pending ON orders(expires_at) WHERE state = 'pending';\n" \
	"CREATE TRIGGER orders_no_delete BEFORE DELETE ON orders " \
	"BEGIN SELECT RAISE(ABORT, 'orders are never deleted'); END;\n" \
	"CREATE TRIGGER orders_fixed BEFORE UPDATE OF order_id, dedup_key, amount, currency, items, " \
	"created_at, expires_at ON orders " \
	"BEGIN SELECT RAISE(ABORT, 'order content is fixed'); END;\n"

/* The attempt columns of versions 3 and 6: the id to host_txn, then the times. */
#define ATTEMPTS_IDS_TO_HOST_TXN \
	"  attempt_id    TEXT NOT NULL UNIQUE CHECK (" ID_OK("attempt_id") "),\n" \
	"  order_id      TEXT NOT NULL REFERENCES orders(order_id),\n" \
	"  channel       TEXT NOT NULL CHECK (length(channel) BETWEEN 1 AND 16 AND " \
	"channel NOT GLOB '*[^A-Za-z0-9_-]*'),\n" \
	"  amount        INTEGER NOT NULL CHECK (amount > 0),\n" \
	"  state         TEXT NOT NULL CHECK (" KP_SCHEMA_LIVE("state") " OR state = 'succeeded' OR " \
	"state = 'failed' OR state = 'canceled' OR state = 'expired' OR state = 'refunding' OR " \
	"state = 'refunded' OR state = 'refund_rejected' OR state = 'unresolved'),\n" \
	"  host_txn      TEXT NOT NULL DEFAULT '' CHECK (host_txn = '' OR (" ID_OK("host_txn") ")),\n"
#define ATTEMPTS_TIMES \
	"  created_at    INTEGER NOT NULL,\n" \
	"  updated_at    INTEGER NOT NULL,\n" \
	"  next_check_at INTEGER NOT NULL,\n" \
	"  tries         INTEGER NOT NULL DEFAULT 0 CHECK (tries >= 0)\n"
#define ATTEMPTS_V3 ATTEMPTS_IDS_TO_HOST_TXN \
	"  qr            TEXT NOT NULL DEFAULT '' CHECK (length(CAST(qr AS BLOB)) < 512),\n" \
	ATTEMPTS_TIMES
#define ATTEMPTS_LIST \
	"attempt_id,order_id,channel,amount,state,host_txn,qr,created_at,updated_at,next_check_at,tries"
#define ATTEMPTS_EXTRAS \
	"CREATE INDEX attempts_by_order ON attempts(order_id);\n" \
	/* The reconciler's due order, as in version 2. */ \
	"CREATE INDEX attempts_due ON attempts(next_check_at, state) WHERE " KP_SCHEMA_LIVE("state") ";\n" \
	"CREATE TRIGGER attempts_no_delete BEFORE DELETE ON attempts " \
	"BEGIN SELECT RAISE(ABORT, 'attempts are never deleted'); END;\n" \
	"CREATE TRIGGER attempts_fixed BEFORE UPDATE OF attempt_id, order_id, channel, amount, " \
	"created_at ON attempts " \
	"BEGIN SELECT RAISE(ABORT, 'attempt content is fixed'); END;\n" \
	"CREATE TRIGGER attempts_host_txn_fixed BEFORE UPDATE OF host_txn ON attempts " \
	"WHEN old.host_txn <> '' AND new.host_txn <> old.host_txn " \
	"BEGIN SELECT RAISE(ABORT, 'attempt host_txn is fixed once set'); END;\n" \
	/* The per-order payment lock, and the last line against double charges. */ \
	ONE_PER_ORDER("attempts_one_live", KP_SCHEMA_LIVE, KP_SCHEMA_ONE_LIVE) \
	ONE_PER_ORDER("attempts_one_kept", SUCCEEDED, KP_SCHEMA_ONE_KEPT)
#define SUCCEEDED(c) "(" c " = 'succeeded')"
/* At most one attempt per order in the states IS(...): checked before an
 * attempt is inserted in one, and before one moves into one. */
#define ONE_PER_ORDER(name, IS, what) \
	"CREATE TRIGGER " name "_insert BEFORE INSERT ON attempts WHEN " IS("new.state") " AND EXISTS " \
	"(SELECT 1 FROM attempts WHERE order_id = new.order_id AND " IS("state") ") " \
	"BEGIN SELECT RAISE(ABORT, '" what "'); END;\n" \
	"CREATE TRIGGER " name "_update BEFORE UPDATE OF state ON attempts WHEN " IS("new.state") \
	" AND NOT " IS("old.state") " AND EXISTS (SELECT 1 FROM attempts WHERE order_id = new.order_id " \
	"AND " IS("state") " AND attempt_id <> new.attempt_id) " \
	"BEGIN SELECT RAISE(ABORT, '" what "'); END;\n"

#define CONFIRMATIONS_V3 \
	"  host_txn    TEXT NOT NULL UNIQUE CHECK (" ID_OK("host_txn") "),\n" \
	"  seq         INTEGER NOT NULL,\n" \
	/* No foreign key: a host success for an attempt we never made is kept too. */ \
	"  attempt_id  TEXT NOT NULL CHECK (" ID_OK("attempt_id") "),\n" \
	"  status      TEXT NOT NULL CHECK (status = 'succeeded' OR status = 'failed'),\n" \
	"  amount      INTEGER NOT NULL CHECK (amount >= 0),\n" \
	"  currency    TEXT NOT NULL CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),\n" \
	"  at          INTEGER NOT NULL,\n" \
	"  received_at INTEGER NOT NULL\n"
#define CONFIRMATIONS_LIST "host_txn,seq,attempt_id,status,amount,currency,at,received_at"
#define CONFIRMATIONS_EXTRAS \
	"CREATE TRIGGER confirmations_no_update BEFORE UPDATE ON confirmations " \
	"BEGIN SELECT RAISE(ABORT, 'confirmations are immutable'); END;\n" \
	"CREATE TRIGGER confirmations_no_delete BEFORE DELETE ON confirmations " \
	"BEGIN SELECT RAISE(ABORT, 'confirmations are immutable'); END;\n"

#define REFUNDS_V3 \
	"  refund_id     TEXT NOT NULL UNIQUE CHECK (" ID_OK("refund_id") "),\n" \
	"  order_id      TEXT REFERENCES orders(order_id) CHECK (order_id IS NULL OR (" ID_OK("order_id") ")),\n" \
	"  attempt_id    TEXT NOT NULL CHECK (" ID_OK("attempt_id") "),\n" \
	/* One refund per captured payment. */ \
	"  host_txn      TEXT NOT NULL UNIQUE CHECK (" ID_OK("host_txn") "),\n" \
	"  amount        INTEGER NOT NULL CHECK (amount > 0),\n" \
	"  reason        TEXT NOT NULL CHECK (reason = 'duplicate' OR reason = 'late' OR " \
	"reason = 'vend_failed' OR reason = 'orphan' OR reason = 'amount_mismatch' OR reason = 'power_cut'),\n" \
	"  state         TEXT NOT NULL CHECK (" KP_SCHEMA_REFUND_OPEN("state") " OR state = 'refunded' OR " \
	"state = 'rejected'),\n" \
	"  created_at    INTEGER NOT NULL,\n" \
	"  updated_at    INTEGER NOT NULL,\n" \
	"  next_check_at INTEGER NOT NULL,\n" \
	"  tries         INTEGER NOT NULL DEFAULT 0 CHECK (tries >= 0),\n" \
	"  CHECK (order_id IS NOT NULL OR reason = 'orphan')\n"
#define REFUNDS_LIST \
	"refund_id,order_id,attempt_id,host_txn,amount,reason,state,created_at,updated_at,next_check_at,tries"
#define REFUNDS_EXTRAS \
	"CREATE INDEX refunds_by_order ON refunds(order_id) WHERE order_id IS NOT NULL;\n" \
	"CREATE INDEX refunds_due ON refunds(next_check_at) WHERE " KP_SCHEMA_REFUND_OPEN("state") ";\n" \
	"CREATE TRIGGER refunds_no_delete BEFORE DELETE ON refunds " \
	"BEGIN SELECT RAISE(ABORT, 'refunds are never deleted'); END;\n" \
	"CREATE TRIGGER refunds_fixed BEFORE UPDATE OF refund_id, order_id, attempt_id, host_txn, " \
	"amount, reason, created_at ON refunds " \
	"BEGIN SELECT RAISE(ABORT, 'refund content is fixed'); END;\n"

#define EVENTS_V3 \
	"  seq        INTEGER PRIMARY KEY, /* max+1: strictly increasing, rows are never deleted */\n" \
	"  at         INTEGER NOT NULL,\n" \
	"  kind       TEXT NOT NULL CHECK (kind = 'order' OR kind = 'attempt' OR kind = 'refund' OR " \
	"kind = 'confirmation'),\n" \
	/* Lengths only, as for the states: each id was checked by its own table. */ \
	"  record_id  TEXT NOT NULL CHECK (length(record_id) BETWEEN 1 AND 64),\n" \
	"  from_state TEXT NOT NULL CHECK (length(from_state) < 24),\n" \
	"  to_state   TEXT NOT NULL CHECK (length(to_state) BETWEEN 1 AND 23),\n" \
	"  cause      TEXT NOT NULL CHECK (length(CAST(cause AS BLOB)) < 128)\n"
#define EVENTS_LIST "seq,at,kind,record_id,from_state,to_state,cause"
#define EVENTS_EXTRAS \
	/* Append-only history. */ \
	"CREATE TRIGGER events_no_update BEFORE UPDATE ON events " \
	"BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;\n" \
	"CREATE TRIGGER events_no_delete BEFORE DELETE ON events " \
	"BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;\n"

/* Copy table t into its version 3 shape, rows in their old order. */
#define REBUILD(t, COLUMNS, LIST, ORDER, EXTRAS) \
	"CREATE TABLE " t "_v3 (\n" COLUMNS ") STRICT;\n" \
	"INSERT INTO " t "_v3(" LIST ") SELECT " LIST " FROM " t " ORDER BY " ORDER ";\n" \
	"DROP TABLE " t ";\n" \
	"ALTER TABLE " t "_v3 RENAME TO " t ";\n" EXTRAS

static const char migration_3[] =
	REBUILD("orders", ORDERS_V3, ORDERS_LIST, "created_at", ORDERS_EXTRAS)
	REBUILD("attempts", ATTEMPTS_V3, ATTEMPTS_LIST, "created_at", ATTEMPTS_EXTRAS)
	REBUILD("confirmations", CONFIRMATIONS_V3, CONFIRMATIONS_LIST, "received_at, seq", CONFIRMATIONS_EXTRAS)
	REBUILD("refunds", REFUNDS_V3, REFUNDS_LIST, "created_at", REFUNDS_EXTRAS)
	REBUILD("events", EVENTS_V3, EVENTS_LIST, "seq", EVENTS_EXTRAS)
	"PRAGMA user_version = 3;\n";

/* ---------- version 4 ---------- */

/* The host's QR code is no longer journaled: committing it cost every sale a
 * fifth fsync before the pay answer, and nothing recovers from it (a restart
 * replays the attempt and the host's reply brings the QR again). The engine
 * keeps the QRs of live attempts in memory (docs/engine.md). The column's own
 * CHECK goes with it; no index, trigger or other CHECK names it. */
static const char migration_4[] =
	"ALTER TABLE attempts DROP COLUMN qr;\n"
	"PRAGMA user_version = 4;\n";

/* ---------- version 5 ---------- */

/* One small table of what is due replaces the three partial indexes
 * (orders_pending, attempts_due, refunds_due): a sale put its order and its
 * attempt in two of them and took them out again, two pages written in each
 * of its first two commits; in one table both rows share one page, which
 * saves two of the ~26 WAL frames of a sale (docs/journal.md). It holds a
 * row per pending order (at its expires_at), live attempt and open refund
 * (at its next_check_at), keyed by kind, then time: each walk reads its
 * own kind in time order (keyed by time first, a walk for attempts stepped
 * over every due order: after a power cut with 100,000 in flight, each tick
 * read them all). Triggers keep it, not the code: a record enters when it becomes
 * pending/live/open, leaves when it stops being so, and moves when its time
 * changes; the records are never deleted (their own triggers), so no row is
 * left behind. The ids are the records' own text ids: rowids could change
 * under a VACUUM (at version 5 none of these tables had an INTEGER PRIMARY
 * KEY; refunds still has none). */
#define DUE_TRIGGERS(t, idc, atc, IS, kind) \
	"CREATE TRIGGER " t "_due_insert AFTER INSERT ON " t " WHEN " IS("new.state") " BEGIN " \
	"INSERT INTO due(at, kind, id) VALUES (new." atc ", '" kind "', new." idc "); END;\n" \
	"CREATE TRIGGER " t "_due_update AFTER UPDATE OF state, " atc " ON " t " WHEN (" IS("old.state") \
	" OR " IS("new.state") ") AND NOT (" IS("old.state") " AND " IS("new.state") " AND old." atc \
	" = new." atc ") BEGIN " \
	"DELETE FROM due WHERE " IS("old.state") " AND at = old." atc " AND kind = '" kind "' AND id = old." \
	idc "; " \
	"INSERT INTO due(at, kind, id) SELECT new." atc ", '" kind "', new." idc " WHERE " IS("new.state") \
	"; END;\n"
#define PENDING(c) "(" c " = 'pending')"

static const char migration_5[] =
	"CREATE TABLE due (\n"
	"  at   INTEGER NOT NULL,\n"
	"  kind TEXT NOT NULL CHECK (kind = 'order' OR kind = 'attempt' OR kind = 'refund'),\n"
	"  id   TEXT NOT NULL,\n"
	"  PRIMARY KEY (kind, at, id)\n"
	") STRICT, WITHOUT ROWID;\n"
	"INSERT INTO due(at, kind, id) SELECT expires_at, 'order', order_id FROM orders WHERE "
	PENDING("state") ";\n"
	"INSERT INTO due(at, kind, id) SELECT next_check_at, 'attempt', attempt_id FROM attempts WHERE "
	KP_SCHEMA_LIVE("state") ";\n"
	"INSERT INTO due(at, kind, id) SELECT next_check_at, 'refund', refund_id FROM refunds WHERE "
	KP_SCHEMA_REFUND_OPEN("state") ";\n"
	"DROP INDEX orders_pending;\n"
	"DROP INDEX attempts_due;\n"
	"DROP INDEX refunds_due;\n"
	DUE_TRIGGERS("orders", "order_id", "expires_at", PENDING, "order")
	DUE_TRIGGERS("attempts", "attempt_id", "next_check_at", KP_SCHEMA_LIVE, "attempt")
	DUE_TRIGGERS("refunds", "refund_id", "next_check_at", KP_SCHEMA_REFUND_OPEN, "refund")
	"PRAGMA user_version = 5;\n";

/* ---------- version 6 ---------- */

/* An order's attempts are found by their row numbers, not by an index: the
 * attempts_by_order index cost every sale ~2 of its ~24 WAL frames (an index
 * that grows at its right edge is rebalanced with its neighbours each time a
 * leaf fills). Orders get an INTEGER PRIMARY KEY `rid` (the rowid they had:
 * unlike a bare rowid, VACUUM keeps it), and an attempt's `rid` is its
 * order's rid * 65536 + its number within the order (0, 1, ...): the
 * attempts of order r are the rows r * 65536 .. r * 65536 + 65535 of the
 * attempts table itself. The database holds this rule (attempts_rid: an
 * insert whose rid is not in its order's range is refused; rid is fixed),
 * and the per-order triggers look the order's attempts up by that range. At
 * most 65,536 attempts per order. Both tables are copied, as in version 3
 * (the caller runs this with foreign keys off and checks them before its
 * commit); the attempts of an order are numbered in the order they were
 * made. */
#define RID_LO(r) "((" r " >> 16) << 16)"
#define ORDER_ATTEMPTS(r) "rid BETWEEN " RID_LO(r) " AND " RID_LO(r) " + 65535"
/* The insert trigger looks at new.rid's range only if new.rid is in its
 * order's: a wrong rid is attempts_rid's to refuse, with its own message
 * (the order in which SQLite fires two BEFORE triggers is not defined). */
#define ONE_PER_ORDER_V6(name, IS, what) \
	"CREATE TRIGGER " name "_insert BEFORE INSERT ON attempts WHEN " IS("new.state") " AND new.rid >> 16 " \
	"= (SELECT rid FROM orders WHERE order_id = new.order_id) AND EXISTS " \
	"(SELECT 1 FROM attempts WHERE " ORDER_ATTEMPTS("new.rid") " AND " IS("state") ") " \
	"BEGIN SELECT RAISE(ABORT, '" what "'); END;\n" \
	"CREATE TRIGGER " name "_update BEFORE UPDATE OF state ON attempts WHEN " IS("new.state") \
	" AND NOT " IS("old.state") " AND EXISTS (SELECT 1 FROM attempts WHERE " ORDER_ATTEMPTS("new.rid") \
	" AND " IS("state") " AND rid <> new.rid) " \
	"BEGIN SELECT RAISE(ABORT, '" what "'); END;\n"

#define ATTEMPTS_V6 \
	"  rid           INTEGER PRIMARY KEY,\n" \
	ATTEMPTS_IDS_TO_HOST_TXN ATTEMPTS_TIMES
#define ATTEMPTS_V6_LIST \
	"attempt_id,order_id,channel,amount,state,host_txn,created_at,updated_at,next_check_at,tries"

static const char migration_6[] =
	"CREATE TABLE orders_v6 (\n  rid        INTEGER PRIMARY KEY,\n" ORDERS_V3 ") STRICT;\n"
	"INSERT INTO orders_v6(rid," ORDERS_LIST ") SELECT rowid," ORDERS_LIST " FROM orders ORDER BY rowid;\n"
	"DROP TABLE orders;\n"
	"ALTER TABLE orders_v6 RENAME TO orders;\n"
	"CREATE TRIGGER orders_no_delete BEFORE DELETE ON orders "
	"BEGIN SELECT RAISE(ABORT, 'orders are never deleted'); END;\n"
	"CREATE TRIGGER orders_fixed BEFORE UPDATE OF rid, order_id, dedup_key, amount, currency, items, "
	"created_at, expires_at ON orders "
	"BEGIN SELECT RAISE(ABORT, 'order content is fixed'); END;\n"
	DUE_TRIGGERS("orders", "order_id", "expires_at", PENDING, "order")
	/* rid under any of its names (rowid, oid, _rowid_ skip an UPDATE OF rid). */
	"CREATE TRIGGER orders_rid_fixed BEFORE UPDATE ON orders WHEN new.rid IS NOT old.rid "
	"BEGIN SELECT RAISE(ABORT, 'order content is fixed'); END;\n"

	"CREATE TABLE attempts_v6 (\n" ATTEMPTS_V6 ") STRICT;\n"
	"INSERT INTO attempts_v6(rid," ATTEMPTS_V6_LIST ") SELECT (o.rid << 16) + row_number() OVER "
	"(PARTITION BY o.rid ORDER BY a.created_at, a.rowid) - 1, a.attempt_id, a.order_id, a.channel, "
	"a.amount, a.state, a.host_txn, a.created_at, a.updated_at, a.next_check_at, a.tries "
	"FROM attempts a JOIN orders o ON o.order_id = a.order_id ORDER BY 1;\n"
	/* An attempt whose order is missing (foreign keys were off when it was
	 * written) has no rid to get: it is kept, and the foreign key check
	 * before the commit refuses the file, as it does for version 3. */
	"INSERT INTO attempts_v6(rid," ATTEMPTS_V6_LIST ") SELECT NULL," ATTEMPTS_V6_LIST " FROM attempts "
	"WHERE order_id NOT IN (SELECT order_id FROM orders);\n"
	"DROP TABLE attempts;\n"
	"ALTER TABLE attempts_v6 RENAME TO attempts;\n"
	"CREATE TRIGGER attempts_no_delete BEFORE DELETE ON attempts "
	"BEGIN SELECT RAISE(ABORT, 'attempts are never deleted'); END;\n"
	"CREATE TRIGGER attempts_fixed BEFORE UPDATE OF rid, attempt_id, order_id, channel, amount, "
	"created_at ON attempts "
	"BEGIN SELECT RAISE(ABORT, 'attempt content is fixed'); END;\n"
	"CREATE TRIGGER attempts_host_txn_fixed BEFORE UPDATE OF host_txn ON attempts "
	"WHEN old.host_txn <> '' AND new.host_txn <> old.host_txn "
	"BEGIN SELECT RAISE(ABORT, 'attempt host_txn is fixed once set'); END;\n"
	"CREATE TRIGGER attempts_rid_fixed BEFORE UPDATE ON attempts WHEN new.rid IS NOT old.rid "
	"BEGIN SELECT RAISE(ABORT, 'attempt content is fixed'); END;\n"
	"CREATE TRIGGER attempts_rid BEFORE INSERT ON attempts WHEN new.rid >> 16 IS NOT "
	"(SELECT rid FROM orders WHERE order_id = new.order_id) "
	"BEGIN SELECT RAISE(ABORT, '" KP_SCHEMA_RID "'); END;\n"
	ONE_PER_ORDER_V6("attempts_one_live", KP_SCHEMA_LIVE, KP_SCHEMA_ONE_LIVE)
	ONE_PER_ORDER_V6("attempts_one_kept", SUCCEEDED, KP_SCHEMA_ONE_KEPT)
	DUE_TRIGGERS("attempts", "attempt_id", "next_check_at", KP_SCHEMA_LIVE, "attempt")
	"PRAGMA user_version = 6;\n";

static const char *const migrations[] = {
	NULL, /* version 0: the empty file */
	migration_1,
	migration_2,
	migration_3,
	migration_4,
	migration_5,
	migration_6,
};

_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == KP_SCHEMA_LATEST + 1,
	       "one migration per schema version");

const char *kp_schema_migration(int version)
{
	if (version < 1 || version > KP_SCHEMA_LATEST)
		return NULL;
	return migrations[version];
}
