/* ledger.h — the host simulator's books: payments, tombstones, refunds and the
 * per-device confirm queue in one SQLite file (WAL, synchronous=FULL), so that
 * they survive restarts of the simulator and can be dumped for the invariant
 * checker. Idempotency keys are never deleted. Times are passed in by the caller
 * (wall-clock ms from kp_env); nothing here reads a clock. */
#ifndef KP_HOSTSIM_LEDGER_H
#define KP_HOSTSIM_LEDGER_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "hostproto.h"
#include "kp_error.h"

typedef struct kp_ledger kp_ledger;

#define KP_LEDGER_ORIGIN_SIZE 8

/* One payment attempt as the host knows it. status: pending, succeeded,
 * failed, canceled. host_txn is set once settled (succeeded or failed).
 * origin: "kiosk" (created by create_payment) or "orphan" (made by the control
 * interface with an id the kiosk never sent). */
typedef struct kp_ledger_payment {
	char attempt_id[KP_PROTO_ID_SIZE];
	char device_id[KP_PROTO_ID_SIZE];
	char order_id[KP_PROTO_ID_SIZE];
	char currency[4];
	char channel[17];
	char status[16];
	char host_txn[KP_PROTO_ID_SIZE];
	char origin[KP_LEDGER_ORIGIN_SIZE];
	int64_t amount;
	int64_t expires_at;
	int64_t created_at;
	int64_t updated_at;
	int64_t settled_at;   /* 0 until succeeded/failed */
} kp_ledger_payment;

/* A refund: status pending (answered late: due_at), refunded or rejected. */
typedef struct kp_ledger_refund {
	char refund_id[KP_PROTO_ID_SIZE];
	char attempt_id[KP_PROTO_ID_SIZE];
	char host_txn[KP_PROTO_ID_SIZE];
	char reason[24];
	char status[16];
	int64_t amount;
	int64_t created_at;
	int64_t updated_at;
	int64_t due_at;       /* pending until this wall time; 0 if not late */
	bool reject_at_due;   /* a late refund that ends rejected */
} kp_ledger_refund;

/* One confirm queued for a device; seq increases per device from 1. */
typedef struct kp_ledger_confirm {
	char device_id[KP_PROTO_ID_SIZE];
	char attempt_id[KP_PROTO_ID_SIZE];
	char host_txn[KP_PROTO_ID_SIZE];
	char status[16];
	char currency[4];
	int64_t seq;
	int64_t amount;
	int64_t at;
	bool acked;
	int64_t acked_at;
} kp_ledger_confirm;

/* What an idempotent create (payment or refund) found. */
typedef enum kp_ledger_verdict {
	KP_LEDGER_CREATED = 0,    /* new row written */
	KP_LEDGER_EXISTS,         /* same key, same parameters: *cur is the current state */
	KP_LEDGER_MISMATCH,       /* same key, other parameters: nothing changed */
	KP_LEDGER_TOMBSTONED,     /* payment id was canceled before it was created */
	KP_LEDGER_TXN_REFUNDED,   /* refund: that host_txn already has another refund */
	KP_LEDGER_NOT_CAPTURED,   /* refund: no captured payment with that attempt_id + host_txn */
	KP_LEDGER_WRONG_AMOUNT,   /* refund: amount is not the captured amount */
} kp_ledger_verdict;

/* Open (creating if needed) the ledger at path. readonly opens an existing file
 * without writing (for --dump). The caller owns *out; close with
 * kp_ledger_close. KP_ERR_IO if SQLite cannot open it, KP_ERR_FUTURE_VERSION if
 * the schema is newer than this build. */
kp_err kp_ledger_open(kp_ledger **out, const char *path, bool readonly) KP_MUST_USE;
/* Close; safe on NULL. */
void kp_ledger_close(kp_ledger *l);

/* Idempotent create_payment. req carries every field but status/host_txn/times;
 * *cur receives the current state for CREATED and EXISTS (and the stored row
 * for MISMATCH). */
kp_err kp_ledger_payment_create(kp_ledger *l, const kp_ledger_payment *req, int64_t now,
				kp_ledger_payment *cur, kp_ledger_verdict *verdict) KP_MUST_USE;
/* The payment with attempt_id; KP_ERR_NOT_FOUND if none. */
kp_err kp_ledger_payment_get(kp_ledger *l, const char *attempt_id, kp_ledger_payment *out) KP_MUST_USE;
/* True in *yes if attempt_id carries a tombstone. */
kp_err kp_ledger_tombstone_has(kp_ledger *l, const char *attempt_id, bool *yes) KP_MUST_USE;
/* cancel_payment: pending becomes canceled; settled and canceled stay; an id
 * never seen gets a tombstone (*tombstoned true, *out zeroed but for
 * attempt_id and status "canceled"). */
kp_err kp_ledger_payment_cancel(kp_ledger *l, const char *attempt_id, const char *device_id,
				int64_t now, kp_ledger_payment *out, bool *tombstoned) KP_MUST_USE;
/* Settle a pending payment: succeeded (captured) or failed, with the new unique
 * host_txn, and queue its confirm for the payment's device in the same
 * transaction. KP_ERR_NOT_FOUND if no such payment, KP_ERR_STATE if not
 * pending, KP_ERR_CONFLICT if host_txn is taken (pick another). */
kp_err kp_ledger_payment_settle(kp_ledger *l, const char *attempt_id, bool success,
				const char *host_txn, int64_t now, kp_ledger_payment *out,
				kp_ledger_confirm *confirm) KP_MUST_USE;
/* A capture the kiosk never asked for (p: attempt_id, order, amount, currency,
 * channel, device, host_txn set by the caller), with its confirm. */
kp_err kp_ledger_orphan_capture(kp_ledger *l, const kp_ledger_payment *p, int64_t now,
				kp_ledger_payment *out, kp_ledger_confirm *confirm) KP_MUST_USE;
/* Pending payments of order_id (or of every order if order_id is NULL), oldest
 * first, up to max into out; *n is how many. */
kp_err kp_ledger_payments_pending(kp_ledger *l, const char *order_id, kp_ledger_payment *out,
				  int max, int *n) KP_MUST_USE;

/* Idempotent refund. req: refund_id, attempt_id, host_txn, amount, reason.
 * due_at > 0 makes it pending until then (reject_at_due: then rejected);
 * reject makes it rejected at once. *cur gets the current refund. */
kp_err kp_ledger_refund_create(kp_ledger *l, const kp_ledger_refund *req, int64_t now, int64_t due_at,
			       bool reject, kp_ledger_refund *cur, kp_ledger_verdict *verdict) KP_MUST_USE;
/* The refund with refund_id; KP_ERR_NOT_FOUND if none. */
kp_err kp_ledger_refund_get(kp_ledger *l, const char *refund_id, kp_ledger_refund *out) KP_MUST_USE;
/* Finish every late refund due by now; *next_due is the next due time (0: none). */
kp_err kp_ledger_refunds_finish_due(kp_ledger *l, int64_t now, int64_t *next_due) KP_MUST_USE;

/* Unacked confirms of device_id in seq order, up to max; *n is how many. */
kp_err kp_ledger_confirms_unacked(kp_ledger *l, const char *device_id, kp_ledger_confirm *out,
				  int max, int *n) KP_MUST_USE;
/* One confirm; KP_ERR_NOT_FOUND if none. */
kp_err kp_ledger_confirm_get(kp_ledger *l, const char *device_id, int64_t seq,
			     kp_ledger_confirm *out) KP_MUST_USE;
/* Mark (device_id, seq) acked; *found false if there is no such confirm (already
 * acked counts as found). */
kp_err kp_ledger_confirm_ack(kp_ledger *l, const char *device_id, int64_t seq, int64_t now,
			     bool *found) KP_MUST_USE;

/* The whole ledger as the JSON object described in docs/hostsim.md; the caller
 * owns *out (cJSON_Delete). */
kp_err kp_ledger_dump(kp_ledger *l, int64_t now, cJSON **out) KP_MUST_USE;

#endif
