/* vend.c — the MDB reader wired to the payment engine: one frame at a time
 * through the device state machine, its action done and committed through
 * the engine, then the reply; engine outcomes (paid, failed, canceled) turned
 * into VEND APPROVED/DENIED once committed; our patience; sessions offered
 * while we can sell. One vend is open at a time (level 1, no multivend). */
#include "vend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_codec.h"
#include "mdb_device.h"

#define FRAMES_PER_TURN 32 /* a chatty VMC cannot keep the loop for itself */

struct pay_ticket {
	kp_vend *v; /* NULL once the reader is gone or the vend moved on */
};

/* The vend the VMC asked for last, until the session goes on without it. */
struct vend_slot {
	bool open;
	bool has_order;
	char order_id[KP_ID_SIZE];
	char attempt_id[KP_ID_SIZE];
	uint16_t price, item;
	int64_t since_ms;     /* VEND REQUEST taken (mono): patience runs from here */
	struct pay_ticket *ticket; /* kp_engine_pay is working on it */
	bool pay_done;
	kp_err pay_err;
	bool answered;        /* 05 or 06 queued at the device */
	bool approved;        /* ... and it was 05 */
	bool delivered;       /* the VMC ACKed 05 */
	bool cancel_due;      /* the order must be canceled (then 06); retried until committed */
	const char *cancel_why;
};

struct kp_vend {
	kp_vend_config cfg;
	char channel[KP_CHANNEL_SIZE];
	kp_vend_deps d;
	kp_mdb_device *dev;
	char run_id[17];      /* random per start: dedup keys never repeat across restarts */
	uint64_t session_no;  /* sessions offered in this run */
	unsigned vend_no;     /* vend requests in the current session */
	struct vend_slot vend;
	bool review_due;      /* the engine changed something: look at the open order */
	bool selling;
	char why[64];
	bool link_was_up;
	bool end_asked;       /* SESSION CANCEL REQUEST queued for this idle session */
	int64_t next_poll_ms; /* in-process VMC */
	kp_vend_stats st;
};

static int64_t now_mono(const kp_vend *v)
{
	return kp_now_mono(v->d.env);
}

static bool in_process(const kp_vend *v)
{
	return v->d.transport.ops->deadline == NULL && kp_mdb_transport_fd(&v->d.transport) < 0;
}

/* ---- the engine side of one vend ---- */

static void pay_done(void *arg, kp_err err, const kp_attempt *attempt, const char *qr)
{
	struct pay_ticket *t = arg;
	kp_vend *v = t->v;
	free(t);
	if (!v)
		return; /* the vend (or the reader) is gone; the engine keeps its books */
	v->vend.ticket = NULL;
	v->vend.pay_done = true;
	v->vend.pay_err = err;
	if (attempt)
		snprintf(v->vend.attempt_id, sizeof(v->vend.attempt_id), "%s", attempt->attempt_id);
	v->review_due = true;
}

/* Forget the open vend; a payment still in the engine's hands is detached. */
static void vend_close(kp_vend *v)
{
	if (v->vend.ticket)
		v->vend.ticket->v = NULL;
	memset(&v->vend, 0, sizeof(v->vend));
}

static void queue_deny(kp_vend *v, const char *why)
{
	if (v->vend.answered)
		return;
	kp_err err = kp_mdb_device_deny(v->dev);
	if (err != KP_OK) {
		kp_log_warn(v->d.env, "mdb: cannot deny the vend (%s): %s", why, kp_strerror(err));
		return;
	}
	v->vend.answered = true;
	v->st.denied++;
	kp_log_info(v->d.env, "mdb: VEND DENIED (%s)%s%s", why, v->vend.has_order ? ", order " : "",
		    v->vend.has_order ? v->vend.order_id : "");
}

static void queue_approve(kp_vend *v, int64_t amount)
{
	if (v->vend.answered)
		return;
	kp_err err = amount > 0 && amount <= UINT16_MAX ? kp_mdb_device_approve(v->dev, (uint16_t)amount)
							: KP_ERR_INVALID;
	if (err != KP_OK) {
		kp_log_warn(v->d.env, "mdb: order %s paid but VEND APPROVED cannot be queued: %s",
			    v->vend.order_id, kp_strerror(err));
		return;
	}
	v->vend.answered = v->vend.approved = true;
	v->st.approved++;
	kp_log_info(v->d.env, "mdb: VEND APPROVED %lld, order %s", (long long)amount, v->vend.order_id);
}

/* The order is to be dropped: cancel it if pending. *paid tells that it is
 * paid instead (a success committed first). KP_OK once nothing is pending;
 * an error means nothing was committed (try again). */
static kp_err order_cancel(kp_vend *v, const char *why, bool *paid)
{
	*paid = false;
	kp_order o;
	kp_err err = kp_engine_cancel(v->d.engine, v->vend.order_id, &o);
	if (err == KP_OK) {
		kp_log_info(v->d.env, "mdb: order %s canceled (%s)", v->vend.order_id, why);
		return KP_OK;
	}
	if (err != KP_ERR_STATE)
		return err;
	err = kp_journal_order_get(v->d.journal, v->vend.order_id, &o);
	if (err != KP_OK)
		return err;
	*paid = o.state == KP_ORDER_PAID;
	return KP_OK; /* paid, expired, or already final */
}

/* Refund a paid order of the open vend: fulfill_failed + refund vend_failed. */
static kp_err order_refund(kp_vend *v, const char *why)
{
	kp_order o;
	kp_err err = kp_engine_vend(v->d.engine, v->vend.order_id, false, &o);
	if (err == KP_OK) {
		v->st.refunds++;
		kp_log_info(v->d.env, "mdb: order %s refunded (%s)", v->vend.order_id, why);
	}
	return err;
}

/* Patience ran out, the payment failed, or selling stopped: cancel, then 06
 * (or 05 if it turns out paid). Retried at the next turn if the cancel
 * cannot be committed. */
static void settle_unpaid(kp_vend *v, const char *why)
{
	if (!v->vend.has_order) {
		queue_deny(v, why);
		return;
	}
	bool paid = false;
	kp_err err = order_cancel(v, why, &paid);
	if (err != KP_OK) {
		v->vend.cancel_due = true;
		v->vend.cancel_why = why;
		kp_log_warn(v->d.env, "mdb: order %s: cancel not committed (%s), trying again", v->vend.order_id,
			    kp_strerror(err));
		return;
	}
	v->vend.cancel_due = false;
	if (paid) {
		kp_order o;
		if (kp_journal_order_get(v->d.journal, v->vend.order_id, &o) == KP_OK)
			queue_approve(v, o.amount);
		return;
	}
	queue_deny(v, why);
}

static void pay_start(kp_vend *v)
{
	struct pay_ticket *t = calloc(1, sizeof(*t));
	if (!t) {
		settle_unpaid(v, "out of memory");
		return;
	}
	t->v = v;
	kp_err err = kp_engine_pay(v->d.engine, v->vend.order_id, v->channel, pay_done, t);
	if (err != KP_OK) {
		free(t);
		kp_log_warn(v->d.env, "mdb: order %s: payment not started: %s", v->vend.order_id, kp_strerror(err));
		settle_unpaid(v, kp_strerror(err));
		return;
	}
	v->vend.ticket = t;
}

/* Where the open order stands after the engine changed something. */
static void review(kp_vend *v)
{
	v->review_due = false;
	if (!v->vend.open || !v->vend.has_order || v->vend.answered)
		return;
	if (v->vend.cancel_due) {
		settle_unpaid(v, v->vend.cancel_why);
		return;
	}
	kp_order o;
	if (kp_journal_order_get(v->d.journal, v->vend.order_id, &o) != KP_OK) {
		v->review_due = true; /* the journal is busy: look again */
		return;
	}
	switch (o.state) {
	case KP_ORDER_PAID:
		queue_approve(v, o.amount);
		return;
	case KP_ORDER_CANCELED:
	case KP_ORDER_EXPIRED:
		queue_deny(v, o.state == KP_ORDER_EXPIRED ? "order expired" : "order canceled");
		return;
	case KP_ORDER_PENDING:
		break;
	default:
		queue_deny(v, "order already settled");
		return;
	}
	if (!v->vend.pay_done)
		return;
	if (v->vend.pay_err != KP_OK) {
		settle_unpaid(v, kp_strerror(v->vend.pay_err));
		return;
	}
	kp_attempt a;
	if (v->vend.attempt_id[0] && kp_journal_attempt_get(v->d.journal, v->vend.attempt_id, &a) == KP_OK &&
	    (a.state == KP_ATTEMPT_FAILED || a.state == KP_ATTEMPT_CANCELED || a.state == KP_ATTEMPT_EXPIRED ||
	     a.state == KP_ATTEMPT_UNRESOLVED))
		settle_unpaid(v, "payment failed");
}

/* ---- one frame ---- */

/* The VEND REQUEST's order and its payment, committed together
 * (kp_engine_order_pay: one fsync before the VMC's ACK); *deny set when it is
 * refused instead (nothing to commit), *paying when the engine took the
 * payment (else the caller starts it: a repeat found the order again). An
 * error: nothing committed, the VMC will repeat. */
static kp_err on_vend_request(kp_vend *v, const kp_mdb_out *out, bool *deny, bool *paying, const char **why)
{
	*deny = *paying = false;
	vend_close(v);
	v->vend.open = true;
	v->vend.price = out->cmd.price;
	v->vend.item = out->cmd.item;
	v->vend.since_ms = now_mono(v);
	if (!v->selling) {
		*deny = true;
		*why = v->why;
		return KP_OK;
	}
	/* Per session and vend; a repeat after a rollback has the same key and
	 * finds the same order. The run id keeps keys apart across restarts
	 * (no session survives one: the device starts Inactive). */
	char key[KP_ID_SIZE], items[64], reason[128] = "";
	snprintf(key, sizeof(key), "mdb-%s-%llu-%u", v->run_id, (unsigned long long)v->session_no, v->vend_no + 1);
	snprintf(items, sizeof(items), "[{\"mdb_item\":%u,\"qty\":1}]", (unsigned)out->cmd.item);
	kp_order_req req = {.dedup_key = key, .amount = out->cmd.price, .items = items};
	kp_order o;
	bool dup = false;
	struct pay_ticket *t = calloc(1, sizeof(*t));
	if (!t)
		return KP_ERR_NOMEM;
	t->v = v;
	kp_err err = kp_engine_order_pay(v->d.engine, &req, v->channel, &o, &dup, reason, sizeof(reason), pay_done, t);
	if (err != KP_OK || dup)
		free(t); /* the engine did not take it: pay_done will not be called */
	if (err == KP_ERR_INVALID || err == KP_ERR_CONFLICT || err == KP_ERR_TOO_BIG) {
		kp_log_warn(v->d.env, "mdb: VEND REQUEST %u item %u refused: %s", (unsigned)out->cmd.price,
			    (unsigned)out->cmd.item, reason);
		*deny = true;
		*why = "order refused";
		return KP_OK;
	}
	if (err == KP_ERR_DISCONNECTED || err == KP_ERR_EXPIRED) {
		kp_log_warn(v->d.env, "mdb: VEND REQUEST %u item %u: payment not started: %s", (unsigned)out->cmd.price,
			    (unsigned)out->cmd.item, reason);
		*deny = true;
		*why = kp_strerror(err);
		return KP_OK;
	}
	if (err != KP_OK)
		return err;
	v->vend_no++;
	v->vend.has_order = true;
	snprintf(v->vend.order_id, sizeof(v->vend.order_id), "%s", o.order_id);
	if (!dup) {
		v->vend.ticket = t;
		*paying = true;
	}
	v->st.orders++;
	kp_log_info(v->d.env, "mdb: VEND REQUEST %u item %u: order %s%s", (unsigned)out->cmd.price,
		    (unsigned)out->cmd.item, o.order_id, dup ? " (found again)" : "");
	return KP_OK;
}

/* What the VMC's reset leaves behind (docs/mdb.md §5 table). */
static kp_err on_reset(kp_vend *v, const kp_mdb_out *out)
{
	if (out->prev_state != KP_MDB_VEND || !v->vend.open || !v->vend.has_order)
		return KP_OK;
	if (out->approval_delivered) {
		/* the spec counts a reset after an ACKed 05 as a vend */
		kp_order o;
		kp_err err = kp_engine_vend(v->d.engine, v->vend.order_id, true, &o);
		if (err == KP_OK)
			kp_log_warn(v->d.env, "mdb: reset after VEND APPROVED was delivered: order %s counted as vended",
				    v->vend.order_id);
		return err == KP_ERR_STATE ? KP_OK : err;
	}
	if (out->approved)
		return order_refund(v, "reset before VEND APPROVED was delivered");
	bool paid = false;
	kp_err err = order_cancel(v, "VMC reset", &paid);
	if (err == KP_OK && paid)
		err = order_refund(v, "VMC reset before VEND APPROVED");
	return err;
}

/* Do and commit the step's action. KP_OK: send the reply; otherwise the
 * step is rolled back and the VMC hears nothing. *after says what to do once
 * the reply is out. */
enum after { AFTER_NONE, AFTER_PAY, AFTER_DENY };

static kp_err do_action(kp_vend *v, const kp_mdb_out *out, enum after *after, const char **why)
{
	*after = AFTER_NONE;
	kp_err err = KP_OK;
	bool deny = false, paying = false;
	switch (out->action) {
	case KP_MDB_ACT_VEND_REQUEST:
		err = on_vend_request(v, out, &deny, &paying, why);
		if (err == KP_OK)
			*after = deny ? AFTER_DENY : paying ? AFTER_NONE : AFTER_PAY;
		return err;
	case KP_MDB_ACT_VEND_REFUSED:
		vend_close(v);
		kp_log_warn(v->d.env, "mdb: VEND REQUEST %u item %u denied by the reader (price 0 or over %u)",
			    (unsigned)out->cmd.price, (unsigned)out->cmd.item, (unsigned)v->cfg.max_amount);
		v->st.denied++;
		return KP_OK;
	case KP_MDB_ACT_VEND_CANCEL: {
		kp_log_info(v->d.env, "mdb: VEND CANCEL from the VMC");
		if (!v->vend.open || !v->vend.has_order) {
			*after = AFTER_DENY;
			*why = "canceled by the VMC";
			return KP_OK;
		}
		if (out->approved) /* our 05 never reached it: 06 replaced it, give the money back */
			return order_refund(v, "VEND CANCEL before VEND APPROVED was delivered");
		bool paid = false;
		err = order_cancel(v, "VEND CANCEL", &paid);
		if (err == KP_OK && paid)
			err = order_refund(v, "VEND CANCEL after the payment");
		if (err == KP_OK) {
			*after = AFTER_DENY;
			*why = "canceled by the VMC";
		}
		return err;
	}
	case KP_MDB_ACT_APPROVAL_DELIVERED:
		v->vend.delivered = true;
		kp_log_info(v->d.env, "mdb: VEND APPROVED delivered, order %s", v->vend.order_id);
		return KP_OK;
	case KP_MDB_ACT_VEND_SUCCESS:
	case KP_MDB_ACT_VEND_FAILURE: {
		bool ok = out->action == KP_MDB_ACT_VEND_SUCCESS;
		if (!v->vend.has_order) {
			kp_log_error(v->d.env, "mdb: VEND %s with no order: nothing to record", ok ? "SUCCESS" : "FAILURE");
			return KP_OK;
		}
		kp_order o;
		err = kp_engine_vend(v->d.engine, v->vend.order_id, ok, &o);
		if (err == KP_ERR_STATE) {
			kp_log_error(v->d.env, "mdb: VEND %s for order %s in state %s: not recorded",
				     ok ? "SUCCESS" : "FAILURE", v->vend.order_id,
				     kp_journal_order_get(v->d.journal, v->vend.order_id, &o) == KP_OK
					     ? kp_order_state_str(o.state) : "?");
			err = KP_OK;
		}
		if (err == KP_OK) {
			if (ok) {
				v->st.vend_success++;
			} else {
				v->st.vend_failure++;
				v->st.refunds++;
			}
			kp_log_info(v->d.env, "mdb: VEND %s item %u, order %s", ok ? "SUCCESS" : "FAILURE",
				    (unsigned)v->vend.item, v->vend.order_id);
			vend_close(v);
		}
		return err;
	}
	case KP_MDB_ACT_SESSION_COMPLETE:
		if (v->vend.open && v->vend.has_order && !v->vend.answered) {
			bool paid = false;
			err = order_cancel(v, "session completed", &paid);
			if (err == KP_OK && paid)
				err = order_refund(v, "session completed before VEND APPROVED");
			if (err != KP_OK)
				return err;
		}
		vend_close(v);
		return KP_OK;
	case KP_MDB_ACT_RESET:
		err = on_reset(v, out);
		if (err == KP_OK) {
			kp_log_info(v->d.env, "mdb: RESET by the VMC (was %s)", kp_mdb_state_name(out->prev_state));
			vend_close(v);
		}
		return err;
	case KP_MDB_ACT_SETUP:
		kp_log_info(v->d.env, "mdb: SETUP by a level %u VMC", (unsigned)out->cmd.vmc_level);
		return KP_OK;
	case KP_MDB_ACT_VMC_ID:
		kp_log_info(v->d.env, "mdb: VMC %s serial %s model %s", out->cmd.vmc_maker, out->cmd.vmc_serial,
			    out->cmd.vmc_model);
		return KP_OK;
	case KP_MDB_ACT_READER_ENABLE:
	case KP_MDB_ACT_READER_DISABLE:
	case KP_MDB_ACT_READER_CANCEL:
	case KP_MDB_ACT_SESSION_STARTED:
	case KP_MDB_ACT_SESSION_ENDED:
	case KP_MDB_ACT_SESSION_TIMEOUT:
		kp_log_debug(v->d.env, "mdb: %s", kp_mdb_action_name(out->action));
		return KP_OK;
	case KP_MDB_ACT_OUT_OF_SEQUENCE:
		v->st.out_of_sequence++;
		kp_log_warn(v->d.env, "mdb: %s out of sequence in %s", kp_mdb_cmd_name(out->cmd.kind),
			    kp_mdb_state_name(out->prev_state));
		return KP_OK;
	case KP_MDB_ACT_CASH_SALE:
	case KP_MDB_ACT_IGNORED:
	case KP_MDB_ACT_PRICES:
	case KP_MDB_ACT_NONE:
		return KP_OK;
	}
	return KP_OK;
}

static void frame_in(kp_vend *v, const uint16_t *w, size_t n)
{
	kp_mdb_out out;
	char text[160];
	if (kp_mdb_device_receive(v->dev, w, n, now_mono(v), &out) != KP_OK)
		return;
	if (out.dec != KP_MDB_DEC_OK) {
		if (out.dec != KP_MDB_DEC_OTHER_ADDR) {
			v->st.bad_frames++;
			kp_log_debug(v->d.env, "mdb: > %s: %s, silence", kp_mdb_frame_format(w, n, text, sizeof(text)),
				     kp_mdb_dec_name(out.dec));
		}
		return;
	}
	if (out.action == KP_MDB_ACT_VEND_REQUEST)
		v->st.vend_requests++;
	enum after after = AFTER_NONE;
	const char *why = "";
	kp_err err = do_action(v, &out, &after, &why);
	if (err != KP_OK) {
		/* not committed: undo the step and say nothing; the VMC repeats */
		if (out.action == KP_MDB_ACT_VEND_REQUEST)
			v->st.vend_requests--;
		if (kp_mdb_device_rollback(v->dev) != KP_OK)
			kp_log_error(v->d.env, "mdb: cannot roll back the device step");
		v->st.commit_failures++;
		kp_log_warn(v->d.env, "mdb: %s not committed (%s): no reply, the VMC will repeat",
			    kp_mdb_action_name(out.action), kp_strerror(err));
		return;
	}
	if (out.reply.n > 0) {
		err = kp_mdb_transport_send(&v->d.transport, out.reply.w, out.reply.n);
		if (err != KP_OK)
			kp_log_warn(v->d.env, "mdb: reply not sent: %s", kp_strerror(err));
	}
	if (v->d.env->log_level >= KP_LOG_DEBUG && out.cmd.kind != KP_MDB_CMD_POLL &&
	    !(out.cmd.kind == KP_MDB_CMD_VMC_ACK && out.reply.n == 0)) {
		char reply[160];
		kp_log_debug(v->d.env, "mdb: > %s < %s (%s)", kp_mdb_frame_format(w, n, text, sizeof(text)),
			     kp_mdb_frame_format(out.reply.w, out.reply.n, reply, sizeof(reply)),
			     kp_mdb_action_name(out.action));
	}
	if (after == AFTER_PAY)
		pay_start(v);
	else if (after == AFTER_DENY)
		queue_deny(v, why);
}

/* ---- what is due without input ---- */

static void patience(kp_vend *v, int64_t now)
{
	if (!v->vend.open || v->vend.answered || now - v->vend.since_ms < v->cfg.patience_ms)
		return;
	if (!v->vend.cancel_due) {
		v->st.patience_expired++;
		kp_log_info(v->d.env, "mdb: no payment within %lld ms", (long long)v->cfg.patience_ms);
	}
	settle_unpaid(v, "patience ran out");
}

static bool can_sell(const kp_vend *v)
{
	return v->selling && (!v->d.host_up || v->d.host_up(v->d.host_arg));
}

/* Level 1 has no way for the VMC to ask for a session, and a kiosk has no
 * card to detect: while we can sell, a session is always on offer (funds
 * unknown); our idle timeout ends it and the next one is offered. */
static void offer_session(kp_vend *v)
{
	kp_mdb_state s = kp_mdb_device_state(v->dev);
	if (s != KP_MDB_SESSION_IDLE)
		v->end_asked = false;
	if (s == KP_MDB_ENABLED && can_sell(v)) {
		if (kp_mdb_device_begin_session(v->dev, KP_MDB_FUNDS_UNKNOWN) == KP_OK) {
			v->session_no++;
			v->vend_no = 0;
			v->st.sessions++;
			kp_log_debug(v->d.env, "mdb: session %llu offered", (unsigned long long)v->session_no);
		}
	} else if (s == KP_MDB_SESSION_IDLE && !can_sell(v) && !v->vend.open && !v->end_asked) {
		kp_err err = kp_mdb_device_cancel_session(v->dev);
		if (err == KP_OK || err == KP_ERR_STATE) /* STATE: the VMC is ending it already */
			v->end_asked = true;
		else
			kp_log_warn(v->d.env, "mdb: cannot ask the VMC to end the session: %s", kp_strerror(err));
	}
}

static void read_frames(kp_vend *v, int64_t now)
{
	uint16_t w[KP_MDB_BLOCK_MAX];
	size_t n = 0;
	if (in_process(v)) {
		if (now < v->next_poll_ms)
			return;
		v->next_poll_ms = now + KP_VEND_POLL_MS;
		/* one block per poll; the VMC's ACK of our data reply comes first */
		for (int i = 0; i < 2; i++) {
			if (kp_mdb_transport_recv(&v->d.transport, w, KP_MDB_BLOCK_MAX, &n) != KP_OK)
				return;
			frame_in(v, w, n);
			if (!(n == 1 && !(w[0] & KP_MDB_MODE)))
				return;
		}
		return;
	}
	for (int i = 0; i < FRAMES_PER_TURN; i++) {
		kp_err err = kp_mdb_transport_recv(&v->d.transport, w, KP_MDB_BLOCK_MAX, &n);
		if (err == KP_ERR_TIMEOUT || err == KP_ERR_IO)
			return;
		if (err != KP_OK) {
			kp_log_warn(v->d.env, "mdb: receive: %s", kp_strerror(err));
			return;
		}
		frame_in(v, w, n);
	}
}

void kp_vend_process(kp_vend *v)
{
	if (!v)
		return;
	int64_t now = now_mono(v);
	read_frames(v, now);
	if (v->review_due)
		review(v);
	else if (v->vend.cancel_due)
		settle_unpaid(v, v->vend.cancel_why);
	patience(v, now_mono(v));
	offer_session(v);
	bool up = kp_mdb_device_link_up(v->dev, now_mono(v));
	if (up != v->link_was_up) {
		v->link_was_up = up;
		if (up)
			kp_log_info(v->d.env, "mdb: VMC talking");
		else
			kp_log_warn(v->d.env, "mdb: VMC silent for 5 s");
	}
}

int64_t kp_vend_deadline(const kp_vend *v)
{
	int64_t d = 0;
	if (in_process(v))
		d = v->next_poll_ms;
	else
		d = kp_mdb_transport_deadline(&v->d.transport);
	if (v->vend.open && !v->vend.answered) {
		int64_t p = v->vend.since_ms + v->cfg.patience_ms;
		if (v->review_due || v->vend.cancel_due)
			p = now_mono(v) + 100; /* retry soon, without spinning */
		if (d == 0 || p < d)
			d = p;
	}
	if (v->link_was_up) {
		/* notice the silence */
		int64_t s = now_mono(v) + 1000;
		if (d == 0 || s < d)
			d = s;
	}
	return d;
}

struct stale_orders {
	const char *run_id;
	char (*ids)[KP_ID_SIZE];
	size_t n, cap;
	bool full;
};

static kp_err collect_stale(void *arg, const kp_order *o)
{
	struct stale_orders *so = arg;
	char mine[32];
	snprintf(mine, sizeof(mine), "mdb-%s-", so->run_id);
	if (strncmp(o->dedup_key, "mdb-", 4) != 0 || strncmp(o->dedup_key, mine, strlen(mine)) == 0)
		return KP_OK;
	if (so->n == so->cap) {
		so->full = true;
		return KP_OK;
	}
	snprintf(so->ids[so->n++], KP_ID_SIZE, "%s", o->order_id);
	return KP_OK;
}

kp_err kp_vend_recover(kp_vend *v, int64_t *canceled)
{
	if (!v || !canceled)
		return KP_ERR_INVALID;
	*canceled = 0;
	struct stale_orders so = {.run_id = v->run_id, .cap = 64};
	so.ids = calloc(so.cap, sizeof(*so.ids));
	if (!so.ids)
		return KP_ERR_NOMEM;
	kp_err err;
	do {
		so.n = 0;
		so.full = false;
		/* every pending order (expires_at <= the end of time); the MDB ones are taken */
		err = kp_journal_expired_orders(v->d.journal, INT64_MAX, 0, collect_stale, &so);
		for (size_t i = 0; i < so.n && err == KP_OK; i++) {
			kp_order o;
			err = kp_engine_cancel(v->d.engine, so.ids[i], &o);
			if (err == KP_ERR_STATE)
				err = KP_OK; /* settled meanwhile */
			else if (err == KP_OK)
				(*canceled)++;
		}
	} while (err == KP_OK && so.full);
	free(so.ids);
	if (err == KP_OK && *canceled > 0)
		kp_log_warn(v->d.env, "mdb: %lld vend request(s) of an earlier run were still unpaid: canceled",
			    (long long)*canceled);
	return err;
}

void kp_vend_pollfd(const kp_vend *v, struct pollfd *pfd)
{
	pfd->fd = kp_mdb_transport_fd(&v->d.transport);
	pfd->events = POLLIN;
	pfd->revents = 0;
}

void kp_vend_on_change(void *arg, const char *order_id)
{
	kp_vend *v = arg;
	if (v && v->vend.has_order && order_id && strcmp(order_id, v->vend.order_id) == 0)
		v->review_due = true;
}

void kp_vend_set_selling(kp_vend *v, bool selling, const char *why)
{
	if (!v || v->selling == selling)
		return;
	v->selling = selling;
	snprintf(v->why, sizeof(v->why), "%s", why ? why : (selling ? "selling" : "not selling"));
	kp_log_info(v->d.env, "mdb: %s (%s)", selling ? "taking sales again" : "no new sales", v->why);
}

void kp_vend_stats_get(const kp_vend *v, kp_vend_stats *out)
{
	*out = v->st;
}

bool kp_vend_link_up(const kp_vend *v)
{
	return kp_mdb_device_link_up(v->dev, now_mono(v));
}

/* ---- lifecycle ---- */

static uint8_t currency_decimals(const char *currency)
{
	static const char *const zero[] = {"JPY", "KRW", "ISK", "CLP", "VND"};
	for (size_t i = 0; i < sizeof(zero) / sizeof(zero[0]); i++)
		if (strcmp(currency, zero[i]) == 0)
			return 0;
	return 2;
}

kp_err kp_vend_new(kp_vend **out, const kp_vend_config *cfg, const kp_vend_deps *deps)
{
	kp_err err = KP_OK;
	kp_vend *v = NULL;
	kp_mdb_transport t = deps ? deps->transport : (kp_mdb_transport){0};

	if (!out || !cfg || !deps || !deps->env || !deps->engine || !deps->journal || !t.ops || !cfg->currency ||
	    cfg->max_amount < 1 || cfg->patience_ms < 0 || cfg->patience_ms > KP_VEND_PATIENCE_MAX_MS ||
	    cfg->session_idle_ms < 0) {
		err = KP_ERR_INVALID;
		goto out;
	}
	const char *channel = cfg->channel && cfg->channel[0] ? cfg->channel : KP_VEND_CHANNEL_DEFAULT;
	if (strlen(channel) >= KP_CHANNEL_SIZE) {
		err = KP_ERR_INVALID;
		goto out;
	}
	v = calloc(1, sizeof(*v));
	if (!v) {
		err = KP_ERR_NOMEM;
		goto out;
	}
	v->cfg = *cfg;
	v->d = *deps;
	snprintf(v->channel, sizeof(v->channel), "%s", channel);
	if (v->cfg.patience_ms == 0)
		v->cfg.patience_ms = KP_VEND_PATIENCE_DEFAULT_MS;
	if (v->cfg.session_idle_ms == 0)
		v->cfg.session_idle_ms = KP_VEND_SESSION_IDLE_DEFAULT_MS;
	uint8_t rnd[8];
	err = v->d.env->random(v->d.env->ctx, rnd, sizeof(rnd));
	if (err != KP_OK)
		goto out;
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(v->run_id + 2 * i, 3, "%02x", rnd[i]);

	kp_mdb_device_config dc;
	kp_mdb_device_config_default(&dc);
	dc.max_price = cfg->max_amount > 0xFFFE ? 0xFFFE : (uint32_t)cfg->max_amount;
	dc.session_timeout_ms = v->cfg.session_idle_ms;
	if (kp_mdb_country_from_currency(cfg->currency, &dc.reader.country) != KP_OK)
		dc.reader.country = 0xFFFF;
	dc.reader.decimals = currency_decimals(cfg->currency);
	dc.reader.max_response_s = (uint8_t)((v->cfg.patience_ms + 999) / 1000 + 10);
	err = kp_mdb_device_new(&v->dev, &dc);
	if (err != KP_OK)
		goto out;
	v->cfg.max_amount = dc.max_price;
	v->selling = true;
	snprintf(v->why, sizeof(v->why), "selling");
	*out = v;
	return KP_OK;
out:
	if (v) {
		kp_mdb_device_free(v->dev);
		free(v);
	}
	kp_mdb_transport_close(&t);
	return err;
}

void kp_vend_free(kp_vend *v)
{
	if (!v)
		return;
	vend_close(v);
	kp_mdb_transport_close(&v->d.transport);
	kp_mdb_device_free(v->dev);
	free(v);
}
