/* states.h — the persisted state machines of the journal. Each state is an
 * enum with to_string/from_string (which rejects unknown text), and each
 * machine has one function that says whether a move is allowed. The schema's
 * CHECK constraints list the same names. */
#ifndef KP_STATES_H
#define KP_STATES_H

#include <stdbool.h>

#include "kp_error.h"

typedef enum kp_order_state {
	KP_ORDER_PENDING,
	KP_ORDER_PAID,
	KP_ORDER_FULFILLED,
	KP_ORDER_FULFILL_FAILED,
	KP_ORDER_EXPIRED,
	KP_ORDER_CANCELED,
	KP_ORDER__COUNT
} kp_order_state;

typedef enum kp_attempt_state {
	KP_ATTEMPT_CREATED,
	KP_ATTEMPT_PAYING,
	KP_ATTEMPT_CANCELING,
	KP_ATTEMPT_SUCCEEDED,
	KP_ATTEMPT_FAILED,
	KP_ATTEMPT_CANCELED,
	KP_ATTEMPT_EXPIRED,
	KP_ATTEMPT_REFUNDING,
	KP_ATTEMPT_REFUNDED,
	KP_ATTEMPT_REFUND_REJECTED,
	KP_ATTEMPT_UNRESOLVED,
	KP_ATTEMPT__COUNT
} kp_attempt_state;

typedef enum kp_refund_state {
	KP_REFUND_PENDING,
	KP_REFUND_SENT,
	KP_REFUND_REFUNDED,
	KP_REFUND_REJECTED,
	KP_REFUND__COUNT
} kp_refund_state;

typedef enum kp_refund_reason {
	KP_REASON_DUPLICATE,
	KP_REASON_LATE,
	KP_REASON_VEND_FAILED,
	KP_REASON_ORPHAN,
	KP_REASON_AMOUNT_MISMATCH,
	KP_REASON_POWER_CUT,
	KP_REASON__COUNT
} kp_refund_reason;

typedef enum kp_confirm_status {
	KP_CONFIRM_SUCCEEDED,
	KP_CONFIRM_FAILED,
	KP_CONFIRM__COUNT
} kp_confirm_status;

const char *kp_order_state_str(kp_order_state s);
kp_err kp_order_state_parse(const char *text, kp_order_state *out) KP_MUST_USE;
bool kp_order_state_final(kp_order_state s);
/* KP_OK if the order machine allows from -> to, else KP_ERR_ILLEGAL_MOVE. */
kp_err kp_order_move_check(kp_order_state from, kp_order_state to) KP_MUST_USE;

const char *kp_attempt_state_str(kp_attempt_state s);
kp_err kp_attempt_state_parse(const char *text, kp_attempt_state *out) KP_MUST_USE;
/* created, paying, canceling: the attempt still needs the host. */
bool kp_attempt_state_live(kp_attempt_state s);
/* Nothing will ever move it again by itself (refunding is not final). */
bool kp_attempt_state_final(kp_attempt_state s);
kp_err kp_attempt_move_check(kp_attempt_state from, kp_attempt_state to) KP_MUST_USE;

const char *kp_refund_state_str(kp_refund_state s);
kp_err kp_refund_state_parse(const char *text, kp_refund_state *out) KP_MUST_USE;
bool kp_refund_state_final(kp_refund_state s);
kp_err kp_refund_move_check(kp_refund_state from, kp_refund_state to) KP_MUST_USE;

const char *kp_refund_reason_str(kp_refund_reason r);
kp_err kp_refund_reason_parse(const char *text, kp_refund_reason *out) KP_MUST_USE;

const char *kp_confirm_status_str(kp_confirm_status s);
kp_err kp_confirm_status_parse(const char *text, kp_confirm_status *out) KP_MUST_USE;

#endif
