/* states.c — names and allowed moves of the journal's state machines. The one
 * place that decides which transitions exist; storage refuses everything else. */
#include "states.h"

#include <string.h>

static const char *const order_names[KP_ORDER__COUNT] = {
	"pending", "paid", "fulfilled", "fulfill_failed", "expired", "canceled",
};
static const char *const attempt_names[KP_ATTEMPT__COUNT] = {
	"created", "paying", "canceling", "succeeded", "failed", "canceled",
	"expired", "refunding", "refunded", "refund_rejected", "unresolved",
};
static const char *const refund_names[KP_REFUND__COUNT] = {
	"pending", "sent", "refunded", "rejected",
};
static const char *const reason_names[KP_REASON__COUNT] = {
	"duplicate", "late", "vend_failed", "orphan", "amount_mismatch", "power_cut",
};
static const char *const confirm_names[KP_CONFIRM__COUNT] = {
	"succeeded", "failed",
};

static kp_err parse(const char *const *names, int count, const char *text, int *out)
{
	if (!text)
		return KP_ERR_INVALID;
	for (int i = 0; i < count; i++) {
		if (strcmp(names[i], text) == 0) {
			*out = i;
			return KP_OK;
		}
	}
	return KP_ERR_INVALID;
}

#define NAME_OF(names, count, v) ((unsigned)(v) < (unsigned)(count) ? (names)[(v)] : "invalid")

const char *kp_order_state_str(kp_order_state s) { return NAME_OF(order_names, KP_ORDER__COUNT, s); }
const char *kp_attempt_state_str(kp_attempt_state s) { return NAME_OF(attempt_names, KP_ATTEMPT__COUNT, s); }
const char *kp_refund_state_str(kp_refund_state s) { return NAME_OF(refund_names, KP_REFUND__COUNT, s); }
const char *kp_refund_reason_str(kp_refund_reason r) { return NAME_OF(reason_names, KP_REASON__COUNT, r); }
const char *kp_confirm_status_str(kp_confirm_status s) { return NAME_OF(confirm_names, KP_CONFIRM__COUNT, s); }

kp_err kp_order_state_parse(const char *text, kp_order_state *out)
{
	int v;
	kp_err err = parse(order_names, KP_ORDER__COUNT, text, &v);
	if (err == KP_OK)
		*out = (kp_order_state)v;
	return err;
}

kp_err kp_attempt_state_parse(const char *text, kp_attempt_state *out)
{
	int v;
	kp_err err = parse(attempt_names, KP_ATTEMPT__COUNT, text, &v);
	if (err == KP_OK)
		*out = (kp_attempt_state)v;
	return err;
}

kp_err kp_refund_state_parse(const char *text, kp_refund_state *out)
{
	int v;
	kp_err err = parse(refund_names, KP_REFUND__COUNT, text, &v);
	if (err == KP_OK)
		*out = (kp_refund_state)v;
	return err;
}

kp_err kp_refund_reason_parse(const char *text, kp_refund_reason *out)
{
	int v;
	kp_err err = parse(reason_names, KP_REASON__COUNT, text, &v);
	if (err == KP_OK)
		*out = (kp_refund_reason)v;
	return err;
}

kp_err kp_confirm_status_parse(const char *text, kp_confirm_status *out)
{
	int v;
	kp_err err = parse(confirm_names, KP_CONFIRM__COUNT, text, &v);
	if (err == KP_OK)
		*out = (kp_confirm_status)v;
	return err;
}

bool kp_order_state_final(kp_order_state s)
{
	return s == KP_ORDER_FULFILLED || s == KP_ORDER_FULFILL_FAILED ||
	       s == KP_ORDER_EXPIRED || s == KP_ORDER_CANCELED;
}

/* order: pending -> paid -> fulfilled | fulfill_failed; pending -> expired | canceled */
kp_err kp_order_move_check(kp_order_state from, kp_order_state to)
{
	switch (from) {
	case KP_ORDER_PENDING:
		if (to == KP_ORDER_PAID || to == KP_ORDER_EXPIRED || to == KP_ORDER_CANCELED)
			return KP_OK;
		break;
	case KP_ORDER_PAID:
		if (to == KP_ORDER_FULFILLED || to == KP_ORDER_FULFILL_FAILED)
			return KP_OK;
		break;
	case KP_ORDER_FULFILLED:
	case KP_ORDER_FULFILL_FAILED:
	case KP_ORDER_EXPIRED:
	case KP_ORDER_CANCELED:
	case KP_ORDER__COUNT:
		break;
	}
	return KP_ERR_ILLEGAL_MOVE;
}

bool kp_attempt_state_live(kp_attempt_state s)
{
	return s == KP_ATTEMPT_CREATED || s == KP_ATTEMPT_PAYING || s == KP_ATTEMPT_CANCELING;
}

bool kp_attempt_state_final(kp_attempt_state s)
{
	return !kp_attempt_state_live(s) && s != KP_ATTEMPT_REFUNDING;
}

/* attempt:
 *   created   -> paying | failed | canceled
 *   paying    -> succeeded | failed | canceled | expired | canceling | refunding | unresolved
 *   canceling -> canceled | succeeded | failed | refunding | unresolved
 *   succeeded -> refunding                 (vend failed, power-cut policy)
 *   failed | canceled | expired | unresolved -> refunding  (a late success, kept and refunded)
 *   unresolved -> succeeded | failed | canceled            (the host answered at last)
 *   refunding -> refunded | refund_rejected
 * A success is kept (succeeded) only while the order has no other kept one; the
 * schema's partial UNIQUE index enforces that. */
kp_err kp_attempt_move_check(kp_attempt_state from, kp_attempt_state to)
{
	switch (from) {
	case KP_ATTEMPT_CREATED:
		if (to == KP_ATTEMPT_PAYING || to == KP_ATTEMPT_FAILED || to == KP_ATTEMPT_CANCELED)
			return KP_OK;
		break;
	case KP_ATTEMPT_PAYING:
		if (to == KP_ATTEMPT_SUCCEEDED || to == KP_ATTEMPT_FAILED ||
		    to == KP_ATTEMPT_CANCELED || to == KP_ATTEMPT_EXPIRED ||
		    to == KP_ATTEMPT_CANCELING || to == KP_ATTEMPT_REFUNDING ||
		    to == KP_ATTEMPT_UNRESOLVED)
			return KP_OK;
		break;
	case KP_ATTEMPT_CANCELING:
		if (to == KP_ATTEMPT_CANCELED || to == KP_ATTEMPT_SUCCEEDED ||
		    to == KP_ATTEMPT_FAILED || to == KP_ATTEMPT_REFUNDING ||
		    to == KP_ATTEMPT_UNRESOLVED)
			return KP_OK;
		break;
	case KP_ATTEMPT_SUCCEEDED:
		if (to == KP_ATTEMPT_REFUNDING)
			return KP_OK;
		break;
	case KP_ATTEMPT_FAILED:
	case KP_ATTEMPT_CANCELED:
	case KP_ATTEMPT_EXPIRED:
		if (to == KP_ATTEMPT_REFUNDING)
			return KP_OK;
		break;
	case KP_ATTEMPT_UNRESOLVED:
		if (to == KP_ATTEMPT_SUCCEEDED || to == KP_ATTEMPT_FAILED ||
		    to == KP_ATTEMPT_CANCELED || to == KP_ATTEMPT_REFUNDING)
			return KP_OK;
		break;
	case KP_ATTEMPT_REFUNDING:
		if (to == KP_ATTEMPT_REFUNDED || to == KP_ATTEMPT_REFUND_REJECTED)
			return KP_OK;
		break;
	case KP_ATTEMPT_REFUNDED:
	case KP_ATTEMPT_REFUND_REJECTED:
	case KP_ATTEMPT__COUNT:
		break;
	}
	return KP_ERR_ILLEGAL_MOVE;
}

bool kp_refund_state_final(kp_refund_state s)
{
	return s == KP_REFUND_REFUNDED || s == KP_REFUND_REJECTED;
}

/* refund: pending -> sent | refunded | rejected; sent -> refunded | rejected */
kp_err kp_refund_move_check(kp_refund_state from, kp_refund_state to)
{
	switch (from) {
	case KP_REFUND_PENDING:
		if (to == KP_REFUND_SENT || to == KP_REFUND_REFUNDED || to == KP_REFUND_REJECTED)
			return KP_OK;
		break;
	case KP_REFUND_SENT:
		if (to == KP_REFUND_REFUNDED || to == KP_REFUND_REJECTED)
			return KP_OK;
		break;
	case KP_REFUND_REFUNDED:
	case KP_REFUND_REJECTED:
	case KP_REFUND__COUNT:
		break;
	}
	return KP_ERR_ILLEGAL_MOVE;
}
