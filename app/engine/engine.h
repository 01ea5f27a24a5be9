/* engine.h — the payment engine: orders, attempts, confirmations, refunds.
 * Pure logic over kp_env (clock, randomness, log), the journal and a host
 * interface; no sockets, no globals. Every state change is committed to the
 * journal before anyone (API caller, host ack, observer) hears of it. The live
 * path and the reconciler are the same functions: a host reply, a confirm and
 * a timer all end in the same "apply what the host says" step. */
#ifndef KP_ENGINE_H
#define KP_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "hostproto.h"
#include "journal.h"
#include "kp_env.h"
#include "kp_error.h"

typedef struct kp_engine kp_engine;

/* What the engine needs of the host link; hostlink.c in the daemon, a fake in
 * unit tests. request: the reply callback runs exactly once, later, never
 * inside request(); a non-OK return means it will not run. */
typedef void (*kp_engine_reply_fn)(void *arg, kp_err err, const kp_host_msg *reply);
typedef struct kp_host_ops {
	bool (*up)(void *host);
	kp_err (*request)(void *host, const kp_host_msg *req, kp_engine_reply_fn fn, void *arg);
	kp_err (*ack)(void *host, int64_t seq);
} kp_host_ops;

typedef enum kp_engine_cut_policy {
	KP_ENGINE_CUT_REFUND = 0, /* paid, vend outcome unknown at boot: refund */
	KP_ENGINE_CUT_HOLD = 1,   /* leave it paid for a technician */
} kp_engine_cut_policy;

typedef struct kp_engine_config {
	char currency[4];
	int64_t max_amount;          /* minor units */
	int64_t order_ttl_ms;        /* 300 s */
	int64_t pay_margin_ms;       /* 60 s */
	int64_t query_every_ms;      /* 5 s */
	int64_t pay_window_ms;       /* 60 s */
	int64_t give_up_after_ms;    /* 24 h */
	int64_t query_backoff_min_ms;/* 30 s */
	int64_t query_backoff_max_ms;/* 10 min */
	int64_t refund_retry_ms;     /* 5 s */
	int64_t refund_retry_max_ms; /* 10 min */
	int64_t request_timeout_ms;  /* how long a sent request keeps a record busy; 10 s */
	kp_engine_cut_policy power_cut_policy;
} kp_engine_config;

/* The defaults of design.md. */
void kp_engine_config_defaults(kp_engine_config *cfg);

/* Told after a commit that changed an order or something under it. */
typedef void (*kp_order_changed_fn)(void *arg, const char *order_id);

typedef struct kp_engine_deps {
	const kp_env *env;
	kp_journal *journal;
	const kp_host_ops *host_ops;
	void *host;
	kp_order_changed_fn on_change; /* may be NULL */
	void *on_change_arg;
} kp_engine_deps;

/* Create an engine; borrows everything in deps. Does no I/O. */
kp_err kp_engine_new(kp_engine **out, const kp_engine_config *cfg, const kp_engine_deps *deps) KP_MUST_USE;
/* Pending pay callbacks are called with KP_ERR_UNAVAILABLE. Safe on NULL.
 * Host requests still in flight keep a pointer to the engine: free the host
 * link (which fails them) before the engine. */
void kp_engine_free(kp_engine *e);
/* Replace the timings (SIGHUP reload). */
void kp_engine_set_config(kp_engine *e, const kp_engine_config *cfg);

typedef struct kp_order_req {
	const char *dedup_key;
	int64_t amount;
	const char *currency;   /* NULL = the configured currency */
	const char *items;      /* JSON text or NULL */
} kp_order_req;

/* Validate and create an order (or return the one with the same dedup_key:
 * *duplicated = true). KP_ERR_INVALID with a reason in why for bad input
 * (a dedup_key or items that look like a card number too: kp_pan.h),
 * KP_ERR_CONFLICT for the same key with other content. */
kp_err kp_engine_order_create(kp_engine *e, const kp_order_req *req, kp_order *out, bool *duplicated,
			      char *why, size_t why_cap) KP_MUST_USE;

/* Result of a pay request: err KP_OK with the attempt as committed and the
 * host's QR code for it (kp_engine_qr; NULL if none), or the error
 * (KP_ERR_STATE: order already paid / not payable; KP_ERR_BUSY: the previous
 * attempt is still being canceled; KP_ERR_DISCONNECTED ...). */
typedef void (*kp_pay_done_fn)(void *arg, kp_err err, const kp_attempt *attempt, const char *qr);

/* Start paying an order on a channel. Checks at once: order exists
 * (KP_ERR_NOT_FOUND), is pending (KP_ERR_STATE), the pay deadline
 * expires_at - pay_margin has not passed (KP_ERR_EXPIRED), the host is up
 * (KP_ERR_DISCONNECTED), channel valid and no card number (KP_ERR_INVALID);
 * on such an error done is not called. Otherwise returns KP_OK and calls
 * done exactly once, later: after the new attempt is committed as paying and
 * the host answered its create_payment (or did not in time). A live attempt
 * on another channel is canceled at the host first. */
kp_err kp_engine_pay(kp_engine *e, const char *order_id, const char *channel, kp_pay_done_fn done,
		     void *arg) KP_MUST_USE;

/* A one-request sale: create the order and begin paying it on channel in
 * ONE commit (the order and its attempt, already paying), then send the
 * create_payment: one fsync less than kp_engine_order_create followed by
 * kp_engine_pay, for a UI whose customer chose the channel with the cart.
 * Checks first what both check (KP_ERR_INVALID / KP_ERR_CONFLICT /
 * KP_ERR_TOO_BIG with why; KP_ERR_DISCONNECTED; KP_ERR_EXPIRED if the
 * configured TTL leaves no time to pay); on such an error nothing is
 * committed and done is not called. A duplicate (same dedup_key, same
 * content): KP_OK, *out is that order, *duplicated = true, no attempt starts
 * and done is not called (pay it again with kp_engine_pay). Otherwise KP_OK,
 * *out is the order as committed, and done is called exactly once, later, as
 * for kp_engine_pay (the attempt as the host's reply left it: paying, or
 * failed when refused); whatever done says, the order is committed and stays
 * pending until paid, canceled or expired. */
kp_err kp_engine_order_pay(kp_engine *e, const kp_order_req *req, const char *channel, kp_order *out,
			   bool *duplicated, char *why, size_t why_cap, kp_pay_done_fn done,
			   void *arg) KP_MUST_USE;

/* A QR code as the host gives it, NUL included (host-protocol.md: < 512 bytes). */
#define KP_QR_SIZE 512
/* How many attempts' QR codes the engine keeps (the newest). */
#define KP_ENGINE_QRS 32
/* How many paying attempts the engine queries from memory. Such an attempt's
 * journaled next check is its pay window's end (the cancel, which must
 * survive a restart); the queries every query_every until then write
 * nothing: a customer who takes 30 s to pay no longer costs 6 commits. A
 * restart forgets them, and the boot replay makes every live record due.
 * Beyond this many, an attempt is queried through the journal as before
 * (each query a reschedule commit). */
#define KP_ENGINE_QUERIES 32

/* The QR code the host gave for attempt a, while a is paying; NULL if none.
 * Not journaled (schema 4): a QR is the host's data about a payment, not a
 * state the kiosk reports, and committing it cost every sale one fsync before
 * the pay answer. A restart forgets it; the boot replay's query_payment brings
 * it back (the host repeats it in every pending reply) and observers are told.
 * Valid until the engine's next call. */
const char *kp_engine_qr(const kp_engine *e, const kp_attempt *a);

/* Cancel a pending order (its live attempt is canceled at the host; a success
 * that still arrives is refunded as late). Canceling a canceled order is OK.
 * KP_ERR_STATE if paid or final otherwise. *out is the order after commit. */
kp_err kp_engine_cancel(kp_engine *e, const char *order_id, kp_order *out) KP_MUST_USE;

/* Record the vend outcome of a paid order: fulfilled, or fulfill_failed and a
 * refund (vend_failed). The same outcome again changes nothing; the other
 * outcome after one was recorded is KP_ERR_STATE. */
kp_err kp_engine_vend(kp_engine *e, const char *order_id, bool success, kp_order *out) KP_MUST_USE;

/* A confirm from the host: committed (idempotent by host_txn), then acked. */
void kp_engine_on_confirm(kp_engine *e, const kp_host_msg *confirm);
/* The host link went up or down. Up: due work is looked at on the next tick. */
void kp_engine_on_link(kp_engine *e, bool up);

/* Boot: apply the power-cut policy to paid orders with no vend outcome that
 * were made before this start, and make every non-final record due now.
 * Returns how many records were found. */
kp_err kp_engine_recover(kp_engine *e, int64_t *found) KP_MUST_USE;

/* Requests the reconciler keeps in flight to the host at most. A boot replay
 * has tens of thousands of records due at once: sent as fast as the journal
 * moves them, they outrun the host, fill the link's buffer
 * (KP_HOSTLINK_OUT_MAX) and every refused one waits out its backoff (30 s and
 * more). The walk takes only what the window has room for; the host's answers
 * open it again. A customer's create_payment is never held back by it. */
#define KP_ENGINE_HOST_WINDOW 128

/* Do the work that is due (queries, cancels, refunds, expiries) and return
 * the wall time (ms) at which the next tick is wanted (0: nothing scheduled). */
int64_t kp_engine_tick(kp_engine *e);

/* Make every non-final record due now (POST /reconcile). */
kp_err kp_engine_reconcile_now(kp_engine *e) KP_MUST_USE;

typedef struct kp_engine_stats {
	uint64_t alarms;              /* unresolved attempts + rejected refunds seen */
	uint64_t confirms;
	uint64_t confirms_duplicate;
	uint64_t refunds_created;
	uint64_t host_errors;
	uint64_t requests_in_flight;
} kp_engine_stats;
void kp_engine_stats_get(const kp_engine *e, kp_engine_stats *out);

#endif
