/* journal.h — the payment journal: every order, attempt, confirmation, refund
 * and state change of kioskpay, in one SQLite file on disk.
 * It is the last line against double charges (UNIQUE keys, per-order
 * triggers, CHECKs in the schema) and the reason nothing is lost on power loss
 * (WAL, synchronous=FULL: a commit that returned KP_OK survives a power cut). */
#ifndef KP_JOURNAL_H
#define KP_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kp_env.h"
#include "kp_error.h"
#include "states.h"

typedef struct kp_journal kp_journal;

#define KP_JOURNAL_SCHEMA_VERSION 6

/* Text sizes, NUL included. Ids follow the host protocol: 1..64 of [A-Za-z0-9_-]. */
#define KP_ID_SIZE 65
#define KP_CURRENCY_SIZE 4
#define KP_CHANNEL_SIZE 17
#define KP_ITEMS_MAX 1024
#define KP_CAUSE_SIZE 128

typedef struct kp_order {
	char order_id[KP_ID_SIZE];
	char dedup_key[KP_ID_SIZE];
	int64_t amount;                  /* minor units, > 0 */
	char currency[KP_CURRENCY_SIZE]; /* ISO 4217, 3 upper-case letters */
	char items[KP_ITEMS_MAX];        /* JSON text, "" if none */
	kp_order_state state;
	int64_t created_at;              /* wall ms */
	int64_t expires_at;              /* wall ms */
	int64_t updated_at;              /* wall ms */
} kp_order;

typedef struct kp_attempt {
	char attempt_id[KP_ID_SIZE];
	char order_id[KP_ID_SIZE];
	char channel[KP_CHANNEL_SIZE];
	int64_t amount;
	kp_attempt_state state;
	char host_txn[KP_ID_SIZE];       /* "" until the host names one */
	int64_t created_at;
	int64_t updated_at;
	int64_t next_check_at;           /* wall ms; 0 = nothing scheduled (final) */
	int64_t tries;                   /* host queries/cancels sent so far */
} kp_attempt;

typedef struct kp_confirmation {
	char host_txn[KP_ID_SIZE];
	int64_t seq;
	char attempt_id[KP_ID_SIZE];
	kp_confirm_status status;
	int64_t amount;
	char currency[KP_CURRENCY_SIZE];
	int64_t at;                      /* host's time, wall ms */
	int64_t received_at;             /* our time, wall ms */
} kp_confirmation;

typedef struct kp_refund {
	char refund_id[KP_ID_SIZE];
	char order_id[KP_ID_SIZE];       /* "" for an orphan (attempt unknown to us) */
	char attempt_id[KP_ID_SIZE];
	char host_txn[KP_ID_SIZE];
	int64_t amount;
	kp_refund_reason reason;
	kp_refund_state state;
	int64_t created_at;
	int64_t updated_at;
	int64_t next_check_at;           /* 0 = final */
	int64_t tries;
} kp_refund;

typedef struct kp_event {
	int64_t seq;                     /* strictly increasing */
	int64_t at;
	char kind[16];                   /* "order" | "attempt" | "refund" | "confirmation" */
	char record_id[KP_ID_SIZE];
	char from_state[24];             /* "" for a creation */
	char to_state[24];
	char cause[KP_CAUSE_SIZE];
} kp_event;

/* ---- lifecycle ---- */

#define KP_JOURNAL_READONLY 0x1u   /* open for reading; never creates or migrates */
/* Skip the quick_check at open: the caller runs kp_journal_quick_check_file()
 * (kioskpayd: in a thread, so a big journal does not delay the first sale)
 * and calls kp_journal_mark_checked() when it passed; until then nothing is
 * checkpointed from the WAL into the file (neither automatically nor at
 * close). Ignored (checked at open) when the schema must be migrated first. */
#define KP_JOURNAL_CHECK_LATER 0x2u

/* Open (and for read-write, create and migrate) the journal at path. Creates
 * the parent directory (0700) and the file (0600) when missing and not
 * READONLY. Runs quick_check; a corrupt file gives KP_ERR_CORRUPT and is left
 * untouched. A schema newer than KP_JOURNAL_SCHEMA_VERSION gives
 * KP_ERR_FUTURE_VERSION. env is borrowed and must outlive the journal.
 * On success *out owns the handle; free with kp_journal_close(). */
kp_err kp_journal_open(kp_journal **out, const char *path, unsigned flags, const kp_env *env) KP_MUST_USE;

/* The journal's process-wide SQLite settings (memory statistics off: a
 * global mutex on every allocation). The first open applies them; a program
 * that touches SQLite before it (a VFS of its own) calls this first, or they
 * are not applied. Idempotent, thread-safe. */
void kp_journal_setup(void);
/* Knobs for tests and benchmarks; the daemon uses kp_journal_open(). */
typedef struct kp_journal_opts {
	const char *vfs_name;    /* a registered sqlite3_vfs (counting, crash); NULL: default */
	int page_size;           /* for a file created now; 0: KP_JOURNAL_PAGE_SIZE */
	int busy_timeout_ms;     /* wait for another writer; 0: 5000 */
	int wal_autocheckpoint;  /* pages; 0: KP_JOURNAL_WAL_AUTOCHECKPOINT; < 0: never */
	char *errbuf;            /* if set: why the open failed, one line ("" on success) */
	size_t errbuf_size;
} kp_journal_opts;
/* 512-byte pages: a WAL frame is a whole page, so small pages cut the bytes
 * a payment writes (WAL: 15 KiB against 25 KiB with 1 KiB pages, 82 KiB with
 * 4 KiB; docs/journal.md, the bench). A file keeps the page size it was
 * created with. */
#define KP_JOURNAL_PAGE_SIZE 512
/* WAL pages between automatic checkpoints. */
#define KP_JOURNAL_WAL_AUTOCHECKPOINT 1000
/* kp_journal_open() with opts (NULL = defaults). */
kp_err kp_journal_open_ex(kp_journal **out, const char *path, unsigned flags, const kp_env *env,
			  const kp_journal_opts *opts) KP_MUST_USE;
/* PRAGMA quick_check of the journal file at path on a read-only connection of
 * its own (SQLite's "unix" VFS): safe in another thread while the journal is
 * open and written. KP_ERR_CORRUPT (or the open's error) with why filled. */
kp_err kp_journal_quick_check_file(const char *path, char *why, size_t why_size) KP_MUST_USE;
/* The check of a KP_JOURNAL_CHECK_LATER journal passed: closing may checkpoint. */
void kp_journal_mark_checked(kp_journal *j);
/* Safe on NULL. */
void kp_journal_close(kp_journal *j);
/* The last SQLite message, for logs ("" if none). */
const char *kp_journal_errmsg(const kp_journal *j);

/* ---- transactions ----
 * Every write function below commits on its own. To make several writes one
 * atomic change (confirmation + attempt + order), wrap them in begin/commit:
 * inside, the writes join the outer transaction. On any error inside, call
 * rollback; nothing of the group is kept. */
kp_err kp_journal_begin(kp_journal *j) KP_MUST_USE;
kp_err kp_journal_commit(kp_journal *j) KP_MUST_USE;
void kp_journal_rollback(kp_journal *j);
/* True inside begin/commit while SQLite's transaction is still open (a
 * statement error such as a full disk can end it early). */
bool kp_journal_in_txn(const kp_journal *j);
/* A read snapshot around a batch of work (a loop turn's API requests): its
 * reads share one read transaction instead of taking the WAL's read lock each.
 * Writes inside are allowed and commit as always (the snapshot ends before
 * each and opens again after it). Nests; safe on NULL. Hold it only for a
 * batch: an open snapshot keeps a checkpoint from resetting the WAL. */
void kp_journal_read_begin(kp_journal *j);
void kp_journal_read_end(kp_journal *j);

/* ---- orders ---- */

typedef struct kp_order_new {
	const char *order_id;   /* a fresh UUID made by the caller */
	const char *dedup_key;
	int64_t amount;
	const char *currency;
	const char *items;      /* JSON text or NULL */
	int64_t now;            /* wall ms */
	int64_t expires_at;     /* wall ms */
} kp_order_new;

/* Create an order, or find the one made earlier with the same dedup_key.
 * Same key + same amount, currency and items: KP_OK, *out is the existing
 * order, *duplicated = true, nothing written. Same key + other content:
 * KP_ERR_CONFLICT, nothing written. Bad values: KP_ERR_INVALID. */
kp_err kp_journal_order_create(kp_journal *j, const kp_order_new *req, kp_order *out,
			       bool *duplicated) KP_MUST_USE;
kp_err kp_journal_order_get(kp_journal *j, const char *order_id, kp_order *out) KP_MUST_USE;
/* Move an order; KP_ERR_ILLEGAL_MOVE if the machine forbids from->to,
 * KP_ERR_STATE if the order is not in `from` now. Appends an event. */
kp_err kp_journal_order_move(kp_journal *j, const char *order_id, kp_order_state from,
			     kp_order_state to, int64_t now, const char *cause) KP_MUST_USE;

/* ---- attempts ---- */

typedef struct kp_attempt_new {
	const char *attempt_id; /* fresh UUID */
	const char *order_id;
	const char *channel;
	int64_t amount;
	int64_t now;
	int64_t next_check_at;
} kp_attempt_new;

/* Insert an attempt directly in `paying` (write-ahead: committed before the
 * host hears of it). KP_ERR_BUSY if the order already has a live attempt
 * (created/paying/canceling), KP_ERR_NOT_FOUND if the order is unknown,
 * KP_ERR_STATE if the order is not pending. */
kp_err kp_journal_attempt_begin(kp_journal *j, const kp_attempt_new *req, kp_attempt *out) KP_MUST_USE;
kp_err kp_journal_attempt_get(kp_journal *j, const char *attempt_id, kp_attempt *out) KP_MUST_USE;
/* The live attempt of an order (created/paying/canceling); KP_ERR_NOT_FOUND if none. */
kp_err kp_journal_attempt_live(kp_journal *j, const char *order_id, kp_attempt *out) KP_MUST_USE;
/* The kept success of an order (state succeeded; the schema allows one);
 * KP_ERR_NOT_FOUND if none. */
kp_err kp_journal_attempt_kept(kp_journal *j, const char *order_id, kp_attempt *out) KP_MUST_USE;

typedef struct kp_attempt_move {
	kp_attempt_state from;
	kp_attempt_state to;
	const char *host_txn;   /* NULL: keep; else set (only if empty or equal) */
	int64_t now;
	int64_t next_check_at;  /* 0 when `to` is final */
	bool count_try;         /* tries += 1 */
	const char *cause;
} kp_attempt_move;

/* Move an attempt through its state machine. from == to is allowed only for
 * non-final states and is a reschedule (next_check_at, tries) without an
 * event. Illegal move: KP_ERR_ILLEGAL_MOVE; not in `from`: KP_ERR_STATE. */
kp_err kp_journal_attempt_move(kp_journal *j, const char *attempt_id, const kp_attempt_move *m) KP_MUST_USE;
/* Up to cap attempts of an order, oldest first; *n set to how many. */
kp_err kp_journal_attempts_of_order(kp_journal *j, const char *order_id, kp_attempt *arr,
				    size_t cap, size_t *n) KP_MUST_USE;

/* ---- confirmations ---- */

/* Record a host confirmation, idempotent by host_txn: a host_txn already
 * journaled gives KP_OK with *already = true and writes nothing (even if the
 * other fields differ; the first one stands). */
kp_err kp_journal_confirmation_record(kp_journal *j, const kp_confirmation *c, bool *already) KP_MUST_USE;
kp_err kp_journal_confirmation_get(kp_journal *j, const char *host_txn, kp_confirmation *out) KP_MUST_USE;

/* ---- refunds ---- */

typedef struct kp_refund_new {
	const char *refund_id;  /* fresh UUID */
	const char *order_id;   /* NULL/"" for an orphan */
	const char *attempt_id;
	const char *host_txn;
	int64_t amount;
	kp_refund_reason reason;
	int64_t now;
	int64_t next_check_at;
} kp_refund_new;

/* Insert a refund in `pending`. A refund for a host_txn that already has one:
 * KP_ERR_CONFLICT (at most one refund per captured payment). */
kp_err kp_journal_refund_create(kp_journal *j, const kp_refund_new *req, kp_refund *out) KP_MUST_USE;
kp_err kp_journal_refund_get(kp_journal *j, const char *refund_id, kp_refund *out) KP_MUST_USE;

typedef struct kp_refund_move {
	kp_refund_state from;
	kp_refund_state to;
	int64_t now;
	int64_t next_check_at;
	bool count_try;
	const char *cause;
} kp_refund_move;
kp_err kp_journal_refund_move(kp_journal *j, const char *refund_id, const kp_refund_move *m) KP_MUST_USE;
kp_err kp_journal_refunds_of_order(kp_journal *j, const char *order_id, kp_refund *arr,
				   size_t cap, size_t *n) KP_MUST_USE;

/* ---- what recovery and the reconciler need ---- */

/* Call fn for every non-final attempt (created/paying/canceling) with
 * next_check_at <= due_before, earliest first, at most `limit` (0 = all).
 * fn returning non-OK stops the walk and that code is returned. The records
 * are read first and fn is called after, so fn may write to the journal. */
typedef kp_err (*kp_attempt_fn)(void *arg, const kp_attempt *a);
kp_err kp_journal_due_attempts(kp_journal *j, int64_t due_before, size_t limit,
			       kp_attempt_fn fn, void *arg) KP_MUST_USE;
/* Same for refunds in pending/sent. */
typedef kp_err (*kp_refund_fn)(void *arg, const kp_refund *r);
kp_err kp_journal_due_refunds(kp_journal *j, int64_t due_before, size_t limit,
			      kp_refund_fn fn, void *arg) KP_MUST_USE;
/* Orders in `pending` whose expires_at <= now, live attempt or not. */
typedef kp_err (*kp_order_fn)(void *arg, const kp_order *o);
kp_err kp_journal_expired_orders(kp_journal *j, int64_t now, size_t limit, kp_order_fn fn,
				 void *arg) KP_MUST_USE;
/* The same, less those with a live attempt: the ones the engine may expire now. */
kp_err kp_journal_orders_to_expire(kp_journal *j, int64_t now, size_t limit, kp_order_fn fn,
				   void *arg) KP_MUST_USE;
/* Orders in `paid` with no vend outcome, created before `before` (power-cut policy). */
kp_err kp_journal_paid_unfulfilled(kp_journal *j, int64_t before, size_t limit, kp_order_fn fn,
				   void *arg) KP_MUST_USE;
/* Make every non-final attempt and refund due at `now` (boot replay and
 * POST /reconcile); *count is how many records that touched. No events. */
kp_err kp_journal_make_all_due(kp_journal *j, int64_t now, int64_t *count) KP_MUST_USE;
/* Earliest next_check_at over non-final attempts and refunds; 0 if none. */
kp_err kp_journal_next_due(kp_journal *j, int64_t *at) KP_MUST_USE;

/* ---- events and stats ---- */

/* Events with seq > since, oldest first, at most cap. */
kp_err kp_journal_events(kp_journal *j, int64_t since, kp_event *arr, size_t cap, size_t *n) KP_MUST_USE;

typedef struct kp_journal_stats {
	int64_t orders[KP_ORDER__COUNT];
	int64_t attempts[KP_ATTEMPT__COUNT];
	int64_t refunds[KP_REFUND__COUNT];
	int64_t confirmations;
	int64_t events;
	int64_t file_bytes;   /* main file + WAL */
} kp_journal_stats;
kp_err kp_journal_stats_get(kp_journal *j, kp_journal_stats *out) KP_MUST_USE;

/* ---- walks over everything (kioskctl journal export) ----
 * Rows are streamed: fn must not write to the journal (it may read). fn
 * returning non-OK stops the walk and that code is returned. */
typedef kp_err (*kp_confirmation_fn)(void *arg, const kp_confirmation *c);
/* Every order, oldest first. */
kp_err kp_journal_orders_each(kp_journal *j, kp_order_fn fn, void *arg) KP_MUST_USE;
/* The attempts of order_id (NULL: of every order), oldest first. */
kp_err kp_journal_attempts_each(kp_journal *j, const char *order_id, kp_attempt_fn fn,
				void *arg) KP_MUST_USE;
/* The refunds of order_id; NULL: every refund; "": the orphans (no order). */
kp_err kp_journal_refunds_each(kp_journal *j, const char *order_id, kp_refund_fn fn,
			       void *arg) KP_MUST_USE;
/* Every confirmation, in the order they were received. */
kp_err kp_journal_confirmations_each(kp_journal *j, kp_confirmation_fn fn, void *arg) KP_MUST_USE;

/* ---- offline checks (kioskctl journal check) ---- */

/* Run integrity_check, foreign_key_check and the invariants that need no host
 * (at most one kept success per order; paid/fulfilled orders have exactly one
 * kept success; no live attempt on a final order; refunds reference a
 * confirmation). Each problem is reported through fn (a one-line text);
 * returns KP_OK if none, KP_ERR_CORRUPT if any. */
typedef void (*kp_problem_fn)(void *arg, const char *problem);
kp_err kp_journal_check(kp_journal *j, kp_problem_fn fn, void *arg) KP_MUST_USE;

#endif
