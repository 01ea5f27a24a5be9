/* test_check.c — kp-check against hand-made evidence: a journal built from the
 * real schema text (storage/schema.c) and a ledger built and dumped by the
 * simulator's own ledger code, then broken on purpose with plain SQL (dropping
 * the indexes and triggers that would refuse the forgery). Each case runs the
 * real kp-check binary and asserts its exit code and exactly which invariants
 * it reports as FAIL, plus the line a user would read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ledger.h"
#include "schema.h"

#define N(t) (sizeof(t) / sizeof((t)[0]))
#define OUT_MAX 65536

/* ---------- the base scenario: every invariant holds ---------- */

#define ORD(id, amt, st)                                                                         \
	"INSERT INTO orders(order_id,dedup_key,amount,currency,state,created_at,expires_at,"    \
	"updated_at) VALUES('" id "','k-" id "'," amt ",'EUR','" st "',1,300000,2);"
/* rid: the next number in the order's range (schema 6); an order that is
 * not there gives none, and the journal's trigger refuses the row. */
#define ATT(id, ord, ch, amt, st, txn)                                                           \
	"INSERT INTO attempts(rid,attempt_id,order_id,channel,amount,state,host_txn,created_at,"\
	"updated_at,next_check_at) VALUES((SELECT coalesce((SELECT max(a.rid) + 1 FROM attempts a " \
	"WHERE a.rid BETWEEN o.rid << 16 AND (o.rid << 16) + 65535), o.rid << 16) FROM orders o "  \
	"WHERE o.order_id = '" ord "'),'" id "','" ord "','" ch "'," amt ",'" st "','" txn       \
	"',1,2,0);"
#define CONF(txn, seq, att, amt)                                                                 \
	"INSERT INTO confirmations VALUES('" txn "'," seq ",'" att "','succeeded'," amt           \
	",'EUR',2,2);"
/* ord is SQL: 'o2' or NULL */
#define REF(id, ord, att, txn, amt, reason, st)                                                  \
	"INSERT INTO refunds(refund_id,order_id,attempt_id,host_txn,amount,reason,state,"       \
	"created_at,updated_at,next_check_at) VALUES('" id "'," ord ",'" att "','" txn "'," amt  \
	",'" reason "','" st "',3,4,0);"
#define EV(kind, id, from, to)                                                                   \
	"INSERT INTO events(at,kind,record_id,from_state,to_state,cause) VALUES(5,'" kind "','" \
	id "','" from "','" to "','test');"

/* o1 fulfilled; o2 vend failed and refunded; o3 expired after a cancel; o4 paid,
 * not vended yet; o5 paid twice (a5 late after its cancel, refunded; a6 kept);
 * x9 an orphan capture (order o9 unknown here) refunded as such. */
static const char base_journal[] =
	ORD("o1", "500", "fulfilled") ATT("a1", "o1", "card", "500", "succeeded", "t1")
	CONF("t1", "1", "a1", "500")
	EV("order", "o1", "", "pending") EV("attempt", "a1", "", "paying")
	EV("confirmation", "t1", "", "succeeded") EV("attempt", "a1", "paying", "succeeded")
	EV("order", "o1", "pending", "paid") EV("order", "o1", "paid", "fulfilled")

	ORD("o2", "300", "fulfill_failed") ATT("a2", "o2", "qr", "300", "refunded", "t2")
	CONF("t2", "2", "a2", "300") REF("r2", "'o2'", "a2", "t2", "300", "vend_failed", "refunded")
	EV("order", "o2", "", "pending") EV("attempt", "a2", "", "paying")
	EV("confirmation", "t2", "", "succeeded") EV("attempt", "a2", "paying", "succeeded")
	EV("order", "o2", "pending", "paid") EV("order", "o2", "paid", "fulfill_failed")
	EV("attempt", "a2", "succeeded", "refunding") EV("refund", "r2", "", "pending")
	EV("refund", "r2", "pending", "sent") EV("refund", "r2", "sent", "refunded")
	EV("attempt", "a2", "refunding", "refunded")

	ORD("o3", "200", "expired") ATT("a3", "o3", "card", "200", "canceled", "")
	EV("order", "o3", "", "pending") EV("attempt", "a3", "", "paying")
	EV("attempt", "a3", "paying", "canceling") EV("attempt", "a3", "canceling", "canceled")
	EV("order", "o3", "pending", "expired")

	ORD("o4", "250", "paid") ATT("a4", "o4", "card", "250", "succeeded", "t4")
	CONF("t4", "3", "a4", "250")
	EV("order", "o4", "", "pending") EV("attempt", "a4", "", "paying")
	EV("confirmation", "t4", "", "succeeded") EV("attempt", "a4", "paying", "succeeded")
	EV("order", "o4", "pending", "paid")

	ORD("o5", "400", "fulfilled") ATT("a5", "o5", "card", "400", "refunded", "t5")
	ATT("a6", "o5", "phone", "400", "succeeded", "t6")
	CONF("t6", "4", "a6", "400") CONF("t5", "5", "a5", "400")
	REF("r5", "'o5'", "a5", "t5", "400", "duplicate", "refunded")
	EV("order", "o5", "", "pending") EV("attempt", "a5", "", "paying")
	EV("attempt", "a5", "paying", "canceling") EV("attempt", "a5", "canceling", "canceled")
	EV("attempt", "a6", "", "paying") EV("confirmation", "t6", "", "succeeded")
	EV("attempt", "a6", "paying", "succeeded") EV("order", "o5", "pending", "paid")
	EV("confirmation", "t5", "", "succeeded") EV("attempt", "a5", "canceled", "refunding")
	EV("refund", "r5", "", "pending") EV("refund", "r5", "pending", "refunded")
	EV("attempt", "a5", "refunding", "refunded") EV("order", "o5", "paid", "fulfilled")

	CONF("t9", "6", "x9", "700") REF("r9", "NULL", "x9", "t9", "700", "orphan", "refunded")
	EV("confirmation", "t9", "", "succeeded") EV("refund", "r9", "", "pending")
	EV("refund", "r9", "pending", "sent") EV("refund", "r9", "sent", "refunded");

/* txn is SQL: 't1' or NULL */
#define PAY_DEV(dev, id, ord, amt, ch, st, txn, origin)                                          \
	"INSERT INTO payments(attempt_id,device_id,order_id,amount,currency,channel,expires_at,"\
	"status,host_txn,origin,created_at,updated_at,settled_at) VALUES('" id "','" dev "','"  \
	ord "'," amt ",'EUR','" ch "',300000,'" st "'," txn ",'" origin "',1,2,2);"
#define PAY(id, ord, amt, ch, st, txn, origin) PAY_DEV("kiosk-1", id, ord, amt, ch, st, txn, origin)
#define HREF(id, att, txn, amt, reason, st)                                                      \
	"INSERT INTO refunds(refund_id,attempt_id,host_txn,amount,reason,status,created_at,"    \
	"updated_at) VALUES('" id "','" att "','" txn "'," amt ",'" reason "','" st "',3,4);"

/* A confirm the host queued for a capture; acked is 0 or 1. */
#define HCONF(seq, att, txn, amt, acked)                                                         \
	"INSERT INTO confirms(device_id,seq,attempt_id,host_txn,status,amount,currency,at,acked,"  \
	"acked_at) VALUES('kiosk-1'," seq ",'" att "','" txn "','succeeded'," amt ",'EUR',5," acked "," acked ");"

static const char base_ledger[] =
	PAY("a1", "o1", "500", "card", "succeeded", "'t1'", "kiosk")
	PAY("a2", "o2", "300", "qr", "succeeded", "'t2'", "kiosk")
	PAY("a3", "o3", "200", "card", "canceled", "NULL", "kiosk")
	PAY("a4", "o4", "250", "card", "succeeded", "'t4'", "kiosk")
	PAY("a5", "o5", "400", "card", "succeeded", "'t5'", "kiosk")
	PAY("a6", "o5", "400", "phone", "succeeded", "'t6'", "kiosk")
	PAY("x9", "o9", "700", "card", "succeeded", "'t9'", "orphan")
	HREF("r2", "a2", "t2", "300", "vend_failed", "refunded")
	HREF("r5", "a5", "t5", "400", "duplicate", "refunded")
	HREF("r9", "x9", "t9", "700", "orphan", "refunded");

/* An order o6 waiting for its payment a10 (paying). */
#define O6_PAYING                                                                                \
	ORD("o6", "150", "pending") ATT("a10", "o6", "card", "150", "paying", "")             \
	EV("order", "o6", "", "pending") EV("attempt", "a10", "", "paying")

/* ---------- cases ---------- */

enum {
	NO_LEDGER = 1 << 0,  /* journal only */
	LEDGER_DB = 1 << 1,  /* --ledger DB instead of the JSON dump */
	QUIET = 1 << 2,      /* --quiet-expected */
	MORE_FAILS = 1 << 3, /* other invariants may FAIL too (corruption) */
	GARBLE_PAGE = 1 << 4,   /* overwrite a b-tree page of the journal */
	GARBLE_HEADER = 1 << 5, /* overwrite the journal's file header */
	NOT_KIOSKPAY = 1 << 6,  /* the journal is some other SQLite file */
};

struct kase {
	const char *name;
	const char *journal_sql; /* after the base; may forge */
	const char *ledger_sql;  /* after the base ledger */
	unsigned flags;
	const char *args; /* extra arguments; "RAW:" replaces all of them */
	int exit;
	const char *fails;  /* digits of the invariants that must FAIL, and only those */
	const char *expect; /* a line (part) the user must see */
};

static const struct kase cases[] = {
	{"clean journal and ledger dump", "", "", 0, "", 0, "", "PASS inv4 no id sent to the host"},
	{"clean, quiet expected", "", "", QUIET, "", 0, "", "PASS inv5 nothing in limbo"},
	{"clean, ledger file", "", "", LEDGER_DB, "", 0, "", "PASS inv2 money conserved per order"},
	{"clean, journal only", "", "", NO_LEDGER, "", 0, "", "SKIP inv2 money conserved per order"},
	{"clean, in flight but not asked to be quiet", O6_PAYING,
	 PAY("a10", "o6", "150", "card", "pending", "NULL", "kiosk"), 0, "", 0, "",
	 "SKIP inv5 nothing in limbo after quiescence (10 attempts, refunds and host confirms): not asked (1 in flight"},

	/* 1 */
	{"inv1: two kept successes for one order",
	 "DROP TRIGGER attempts_one_kept_insert;" ATT("a8", "o1", "phone", "500", "succeeded", "t8")
		 EV("attempt", "a8", "", "paying") EV("attempt", "a8", "paying", "succeeded"),
	 "", NO_LEDGER, "", 1, "1", "  inv1: order o1 has 2 kept successes: a1 a8"},
	{"inv1: two kept successes, both captured", "DROP TRIGGER attempts_one_kept_insert;"
	 ATT("a8", "o1", "phone", "500", "succeeded", "t8") EV("attempt", "a8", "", "paying")
	 EV("attempt", "a8", "paying", "succeeded"),
	 PAY("a8", "o1", "500", "phone", "succeeded", "'t8'", "kiosk"), 0, "", 1, "12",
	 "  inv2: order o1 captured 1000 refunded 0 expected 500 (fulfilled)"},
	{"inv1: paid order without its kept success",
	 "UPDATE attempts SET state = 'refunding' WHERE attempt_id = 'a4';"
	 EV("attempt", "a4", "succeeded", "refunding"),
	 "", NO_LEDGER, "", 1, "1", "  inv1: order o4 is paid but has no kept success"},

	/* 2 */
	{"inv2: host rejected a refund the journal calls refunded", "",
	 "UPDATE refunds SET status = 'rejected' WHERE refund_id = 'r2';", 0, "", 1, "2",
	 "  inv2: order o2 captured 300 refunded 0 expected 0 (fulfill_failed)"},
	{"inv2: refund pending at the host is a warning", "",
	 "UPDATE refunds SET status = 'pending', due_at = 9 WHERE refund_id = 'r2';", 0, "", 0, "",
	 "WARN inv2: order o2 captured 300 refunded 0 expected 0 (fulfill_failed): not quiet"},
	{"inv2: refund pending at the host, quiet expected", "",
	 "UPDATE refunds SET status = 'pending', due_at = 9 WHERE refund_id = 'r2';", QUIET, "", 1, "2",
	 "  inv2: order o2 captured 300 refunded 0 expected 0 (fulfill_failed): not quiet"},
	{"inv2: rejected refund known to the journal is an alarm",
	 "DROP TRIGGER events_no_update;"
	 "UPDATE refunds SET state = 'rejected' WHERE refund_id = 'r2';"
	 "UPDATE attempts SET state = 'refund_rejected' WHERE attempt_id = 'a2';"
	 "UPDATE events SET to_state = 'rejected' WHERE record_id = 'r2' AND to_state = 'refunded';"
	 "UPDATE events SET to_state = 'refund_rejected' WHERE record_id = 'a2' AND to_state = 'refunded';",
	 "UPDATE refunds SET status = 'rejected' WHERE refund_id = 'r2';", QUIET, "", 0, "",
	 "ALARM inv2: order o2 captured 300 refunded 0 expected 0 (fulfill_failed): a refund was rejected"},
	{"inv2: paid order captured for less than its amount",
	 "DROP TRIGGER orders_fixed; UPDATE orders SET amount = 300 WHERE order_id = 'o4';", "", 0, "", 1, "2",
	 "  inv2: order o4 captured 250 refunded 0 expected 300 (paid)"},

	/* 3 */
	{"inv3: orphan capture the journal never heard of", "",
	 PAY("x10", "o10", "600", "card", "succeeded", "'t10'", "orphan"), 0, "", 1, "3",
	 "  inv3: capture t10 of attempt x10 (order o10, 600 EUR) is unknown to the journal and has no refund"},
	{"inv3: orphan capture whose confirm is not acked yet is a warning", "",
	 PAY("x10", "o10", "600", "card", "succeeded", "'t10'", "orphan") HCONF("7", "x10", "t10", "600", "0"),
	 0, "", 0, "",
	 "WARN inv3: capture t10 of attempt x10 (order o10, 600 EUR) is not recorded yet: the host's confirm 7 "
	 "to kiosk-1 is not acked (not quiet)"},
	{"inv3+5: orphan confirm not acked, quiet expected", "",
	 PAY("x10", "o10", "600", "card", "succeeded", "'t10'", "orphan") HCONF("7", "x10", "t10", "600", "0"),
	 QUIET, "", 1, "35", "  inv5: the host's confirm 7 to kiosk-1 (attempt x10, capture t10) is not acked"},
	{"inv3: orphan capture acked by the kiosk but not in the journal", "",
	 PAY("x10", "o10", "600", "card", "succeeded", "'t10'", "orphan") HCONF("7", "x10", "t10", "600", "1"),
	 QUIET, "", 1, "3",
	 "  inv3: capture t10 of attempt x10 (order o10, 600 EUR) is unknown to the journal and has no refund, "
	 "yet the kiosk acked its confirm 7"},
	{"inv2: a second capture whose confirm is not acked yet is a warning", "",
	 PAY("x11", "o4", "250", "qr", "succeeded", "'t11'", "orphan") HCONF("7", "x11", "t11", "250", "0"),
	 0, "", 0, "", "WARN inv2: order o4 captured 500 refunded 0 expected 250 (paid): not quiet"},
	{"inv3: capture of an attempt the journal says canceled", "",
	 "UPDATE payments SET status = 'succeeded', host_txn = 't3' WHERE attempt_id = 'a3';", 0, "", 1, "23",
	 "  inv3: capture t3 of attempt a3 (order o3, 200 EUR) is lost: the journal attempt is canceled"},
	{"inv3: capture not recorded yet is a warning", O6_PAYING,
	 PAY("a10", "o6", "150", "card", "succeeded", "'t10'", "kiosk"), 0, "", 0, "",
	 "WARN inv3: capture t10 of attempt a10 (order o6, 150 EUR) is not recorded yet: the attempt is paying"},
	{"inv3: capture not recorded yet, quiet expected", O6_PAYING,
	 PAY("a10", "o6", "150", "card", "succeeded", "'t10'", "kiosk"), QUIET, "", 1, "235",
	 "  inv3: capture t10 of attempt a10 (order o6, 150 EUR) is not recorded yet"},

	/* 4 */
	{"inv4: attempt sent with another channel", "",
	 "UPDATE payments SET channel = 'phone' WHERE attempt_id = 'a1';", 0, "", 1, "4",
	 "  inv4: attempt a1: the host has order o1 amount 500 EUR channel phone; the journal has order o1 "
	 "amount 500 EUR channel card"},
	{"inv4: refund sent with another reason", "",
	 "UPDATE refunds SET reason = 'duplicate' WHERE refund_id = 'r2';", 0, "", 1, "4",
	 "  inv4: refund r2: the host has attempt a2 capture t2 amount 300 reason duplicate"},
	{"inv4: attempt at the host that the journal never made", "",
	 PAY("a99", "o3", "200", "card", "canceled", "NULL", "kiosk"), 0, "", 1, "4",
	 "  inv4: attempt a99 (order o3, 200 EUR, canceled) reached the host but is not in the journal"},
	{"inv4: cancel at the host of an id the journal never made", "",
	 "INSERT INTO tombstones VALUES('a98', 'kiosk-1', 5);", 0, "", 1, "4",
	 "  inv4: attempt a98 was canceled at the host but is not in the journal"},
	{"inv4: refund at the host that the journal never made", "",
	 HREF("r7", "a4", "t4", "250", "duplicate", "refunded"), 0, "", 1, "24",
	 "  inv4: refund r7 (attempt a4, capture t4, 250, duplicate) reached the host but is not in the journal"},
	{"inv4: confirmation that differs from the host's payment",
	 "DROP TRIGGER confirmations_no_update; UPDATE confirmations SET amount = 999 WHERE host_txn = 't4';",
	 "", 0, "", 1, "4", "  inv4: confirmation t4 (attempt a4, succeeded, 999 EUR) differs from the host's payment"},

	/* 5 */
	{"inv5: attempt still paying after quiescence", O6_PAYING,
	 PAY("a10", "o6", "150", "card", "pending", "NULL", "kiosk"), QUIET, "", 1, "5",
	 "  inv5: attempt a10 (order o6) is still paying"},
	{"inv5: refund still sent after quiescence",
	 "DROP TRIGGER events_no_delete; UPDATE refunds SET state = 'sent' WHERE refund_id = 'r9';"
	 "DELETE FROM events WHERE record_id = 'r9' AND to_state = 'refunded';",
	 "", QUIET, "", 1, "5", "  inv5: refund r9 (capture t9, orphan) is still sent"},
	{"inv5: unresolved attempt is an alarm",
	 ORD("o6", "150", "pending") ATT("a10", "o6", "card", "150", "unresolved", "")
		 EV("order", "o6", "", "pending") EV("attempt", "a10", "", "paying")
			 EV("attempt", "a10", "paying", "unresolved"),
	 PAY("a10", "o6", "150", "card", "pending", "NULL", "kiosk"), QUIET, "", 0, "",
	 "ALARM inv5: attempt a10 (order o6, 150) is unresolved: needs a person"},

	/* 6 */
	/* Since schema 6 the journal refuses such a row by a trigger too: gone here. */
	{"inv6: attempt of an order that does not exist",
	 "DROP TRIGGER attempts_rid;" ATT("a11", "o-missing", "card", "100", "failed", "") EV("attempt", "a11", "", "paying")
		 EV("attempt", "a11", "paying", "failed"),
	 "", 0, "", 1, "6", "  inv6: foreign key: attempt a11 names order o-missing, which does not exist"},
	{"inv6: garbled page", "", "", GARBLE_PAGE | MORE_FAILS, "", 1, "6", "FAIL inv6 integrity_check ok"},
	{"not a database at all", "", "", GARBLE_HEADER, "", 2, "",
	 "kp-check: cannot read journal"},
	{"not a kioskpay journal", "", "", NOT_KIOSKPAY, "", 2, "", "is not a kioskpay journal"},

	/* 7 */
	{"inv7: state changed without an event", "UPDATE attempts SET state = 'failed' WHERE attempt_id = 'a3';",
	 "", 0, "", 1, "7", "  inv7: attempt a3 is failed but its last event (seq "},
	{"inv7: illegal move in the log",
	 ORD("o7", "100", "canceled") EV("order", "o7", "", "pending") EV("order", "o7", "pending", "expired")
		 EV("order", "o7", "expired", "canceled"),
	 "", 0, "", 1, "7", "(order o7: expired -> canceled) is not a legal move"},
	{"inv7: record without events", ORD("o8", "100", "pending"), "", 0, "", 1, "7",
	 "  inv7: order o8 (pending) has no events"},
	{"inv7: broken chain",
	 ORD("o7", "100", "expired") EV("order", "o7", "", "pending") EV("order", "o7", "paid", "fulfilled")
		 EV("order", "o7", "pending", "expired"),
	 "", 0, "", 1, "7", "(order o7: paid -> fulfilled) does not follow on from the previous state pending"},

	/* the command line */
	{"seed printed on failure", "UPDATE attempts SET state = 'failed' WHERE attempt_id = 'a3';", "", 0,
	 "--seed 1234", 1, "7", "replay with: ./run campaign 1 1234"},
	{"list limit", "", PAY("x10", "o10", "600", "card", "succeeded", "'t10'", "orphan")
	 PAY("x11", "o10", "600", "card", "succeeded", "'t11'", "orphan"),
	 0, "--list 1", 1, "3", "  inv3: ... and 1 more"},
	{"two devices need --device", "",
	 PAY_DEV("kiosk-2", "b1", "z1", "100", "card", "succeeded", "'tz1'", "kiosk"), 0, "", 2, "",
	 "the ledger holds records of 2 devices (kiosk-1, kiosk-2): pass --device ID"},
	{"two devices, one chosen", "",
	 PAY_DEV("kiosk-2", "b1", "z1", "100", "card", "succeeded", "'tz1'", "kiosk"), 0,
	 "--device kiosk-1", 0, "", "device kiosk-1"},
	{"unknown device", "", "", 0, "--device kiosk-7", 2, "", "the ledger has no records of device kiosk-7"},
	{"no arguments", "", "", NO_LEDGER, "RAW:", 2, "", "kp-check: --journal FILE is required"},
	{"missing journal", "", "", NO_LEDGER, "RAW:--journal /nonexistent/j.db", 2, "",
	 "cannot open journal /nonexistent/j.db"},
	{"both ledger kinds", "", "", NO_LEDGER, "--ledger-json a --ledger b", 2, "",
	 "give --ledger-json or --ledger, not both"},
	{"bad seed", "", "", NO_LEDGER, "--seed x1", 2, "", "--seed wants a decimal number"},
	{"ledger that is not a dump", "", "", NO_LEDGER, "--ledger-json /dev/null", 2, "",
	 "ledger /dev/null is not a JSON object"},
};

/* ---------- helpers ---------- */

struct fixture {
	const struct kase *k;
	char dir[64];
	char journal[128];
	char ledger[128];
	char json[128];
	char out[OUT_MAX];
	int exit;
};

static void exec_sql(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		fail_msg("SQL failed: %s\n%s", msg ? msg : "?", sql);
	}
}

static void make_journal(struct fixture *f, const struct kase *k)
{
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(f->journal, &db), SQLITE_OK);
	if (k->flags & NOT_KIOSKPAY) {
		exec_sql(db, "CREATE TABLE orders(x); PRAGMA user_version = 1;");
	} else {
		exec_sql(db, "BEGIN");
		for (int v = 1; v <= KP_SCHEMA_LATEST; v++)
			exec_sql(db, kp_schema_migration(v));
		exec_sql(db, base_journal);
		exec_sql(db, k->journal_sql);
		exec_sql(db, "COMMIT");
	}
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* Overwrite len bytes at off with a pattern, as a bad sector would. */
static void garble(const char *path, long off, size_t len)
{
	char junk[4096];
	assert_true(len <= sizeof(junk));
	memset(junk, 0x5a, len);
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, junk, len, off), (ssize_t)len);
	close(fd);
}

/* The root page of table (so that a test garbles a page the schema uses). */
static long root_page(const char *path, const char *table, long *page_size)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	long root = -1;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT rootpage, (SELECT page_size FROM pragma_page_size) "
					     "FROM sqlite_schema WHERE name = ?1", -1, &st, NULL), SQLITE_OK);
	sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	root = sqlite3_column_int(st, 0);
	*page_size = sqlite3_column_int(st, 1);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return root;
}

static void make_ledger(struct fixture *f, const struct kase *k)
{
	kp_ledger *l = NULL;
	sqlite3 *db = NULL;
	cJSON *dump = NULL;

	assert_int_equal(kp_ledger_open(&l, f->ledger, false), KP_OK);
	kp_ledger_close(l);
	l = NULL;
	assert_int_equal(sqlite3_open(f->ledger, &db), SQLITE_OK);
	exec_sql(db, "BEGIN");
	exec_sql(db, base_ledger);
	exec_sql(db, k->ledger_sql);
	exec_sql(db, "COMMIT");
	assert_int_equal(sqlite3_close(db), SQLITE_OK);

	/* The dump as kp-hostsim --dump prints it. */
	assert_int_equal(kp_ledger_open(&l, f->ledger, true), KP_OK);
	assert_int_equal(kp_ledger_dump(l, 1700000000000LL, &dump), KP_OK);
	kp_ledger_close(l);
	char *text = cJSON_PrintUnformatted(dump);
	assert_non_null(text);
	FILE *out = fopen(f->json, "w");
	assert_non_null(out);
	assert_true(fputs(text, out) >= 0);
	assert_int_equal(fclose(out), 0);
	cJSON_free(text);
	cJSON_Delete(dump);
}

/* Run kp-check with args; stdout and stderr into f->out, exit code into f->exit. */
static void run_check(struct fixture *f, const char *args)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "'%s' %s 2>&1", KP_CHECK_BIN, args);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t n = fread(f->out, 1, sizeof(f->out) - 1, p);
	f->out[n] = '\0';
	int st = pclose(p);
	assert_true(WIFEXITED(st));
	f->exit = WEXITSTATUS(st);
}

/* *state comes in as the case (cmocka's initial_state) and leaves as the fixture. */
static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->k = *state;
	snprintf(f->dir, sizeof(f->dir), "/tmp/kp-check-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->journal, sizeof(f->journal), "%s/journal.db", f->dir);
	snprintf(f->ledger, sizeof(f->ledger), "%s/ledger.db", f->dir);
	snprintf(f->json, sizeof(f->json), "%s/ledger.json", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	int rc = system(cmd);
	free(f);
	return rc == 0 ? 0 : -1;
}

/* ---------- one cmocka test per case ---------- */

static void check_case(void **state)
{
	struct fixture *f = *state;
	const struct kase *k = f->k;
	char args[900];

	make_journal(f, k);
	if (k->flags & GARBLE_PAGE) {
		long size = 0;
		long root = root_page(f->journal, "attempts", &size);
		assert_true(root > 1);
		garble(f->journal, (root - 1) * size, (size_t)size);
	}
	if (k->flags & GARBLE_HEADER)
		garble(f->journal, 0, 100);
	if (!(k->flags & NO_LEDGER))
		make_ledger(f, k);

	if (strncmp(k->args, "RAW:", 4) == 0) {
		snprintf(args, sizeof(args), "%s", k->args + 4);
	} else {
		int n = snprintf(args, sizeof(args), "--journal '%s'", f->journal);
		if (k->flags & LEDGER_DB)
			n += snprintf(args + n, sizeof(args) - (size_t)n, " --ledger '%s'", f->ledger);
		else if (!(k->flags & NO_LEDGER))
			n += snprintf(args + n, sizeof(args) - (size_t)n, " --ledger-json '%s'", f->json);
		if (k->flags & QUIET)
			n += snprintf(args + n, sizeof(args) - (size_t)n, " --quiet-expected");
		snprintf(args + n, sizeof(args) - (size_t)n, " %s", k->args);
	}
	run_check(f, args);

	if (f->exit != k->exit)
		fail_msg("exit %d, expected %d; output:\n%s", f->exit, k->exit, f->out);
	for (int inv = 1; inv <= 7; inv++) {
		char tag[16];
		snprintf(tag, sizeof(tag), "FAIL inv%d ", inv);
		bool want = strchr(k->fails, '0' + inv) != NULL;
		bool got = strstr(f->out, tag) != NULL;
		if (want && !got)
			fail_msg("no FAIL for inv%d; output:\n%s", inv, f->out);
		if (got && !want && !(k->flags & MORE_FAILS))
			fail_msg("unexpected FAIL for inv%d; output:\n%s", inv, f->out);
	}
	if (!strstr(f->out, k->expect))
		fail_msg("'%s' is not in the output:\n%s", k->expect, f->out);
	if (k->exit == 0)
		assert_non_null(strstr(f->out, " 0 fail,"));
}

int main(void)
{
	struct CMUnitTest tests[N(cases)];
	for (size_t i = 0; i < N(cases); i++) {
		tests[i] = (struct CMUnitTest){
			.name = cases[i].name,
			.test_func = check_case,
			.setup_func = setup,
			.teardown_func = teardown,
			.initial_state = (void *)&cases[i],
		};
	}
	return _cmocka_run_group_tests("check", tests, N(cases), NULL, NULL);
}
