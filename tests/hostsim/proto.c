/* proto.c — the host side of host-protocol.md for kp-hostsim: requests in,
 * idempotent answers from the ledger out, confirms delivered at least once
 * (with the armed confirm faults), and the timers behind delayed pays, delayed
 * confirms and late refunds. */
#include "hostsim.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

uint64_t hs_rand(hostsim *s)
{
	uint64_t x = s->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	s->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static void set_str(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src);
}

#define SET(dst, src) set_str((dst), sizeof(dst), (src))

/* ---- replies ------------------------------------------------------------------- */

static void reply_error(kp_host_msg *rep, const kp_host_msg *req, const char *code, const char *message)
{
	memset(rep, 0, sizeof(*rep));
	rep->op = KP_OP_ERROR;
	if (req && req->id > 0) {
		rep->re = req->id;
		rep->has_re = true;
	}
	SET(rep->code, code);
	SET(rep->message, message);
}

static void reply_payment(kp_host_msg *rep, const kp_host_msg *req, const kp_ledger_payment *p)
{
	memset(rep, 0, sizeof(*rep));
	rep->op = KP_OP_PAYMENT;
	rep->re = req->id;
	rep->has_re = true;
	SET(rep->attempt_id, p->attempt_id);
	SET(rep->status, p->status);
	if (p->host_txn[0])
		SET(rep->host_txn, p->host_txn);
	if (p->amount > 0) {
		rep->amount = p->amount;
		rep->has_amount = true;
	}
	if (strcmp(p->status, "pending") == 0)
		snprintf(rep->qr, sizeof(rep->qr), "kpsim://pay?attempt=%s&amount=%" PRId64 "&currency=%s",
			 p->attempt_id, p->amount, p->currency);
}

static void reply_payment_unknown(kp_host_msg *rep, const kp_host_msg *req, const char *status)
{
	kp_ledger_payment p;
	memset(&p, 0, sizeof(p));
	SET(p.attempt_id, req->attempt_id);
	SET(p.status, status);
	reply_payment(rep, req, &p);
}

static void reply_refund(kp_host_msg *rep, const kp_host_msg *req, const kp_ledger_refund *r)
{
	memset(rep, 0, sizeof(*rep));
	rep->op = KP_OP_REFUND_REPLY;
	rep->re = req->id;
	rep->has_re = true;
	SET(rep->refund_id, r->refund_id);
	SET(rep->status, r->status);
	if (r->reason[0])
		SET(rep->reason, r->reason);
}

static void reply_internal(hostsim *s, kp_host_msg *rep, const kp_host_msg *req, kp_err err)
{
	kp_log_error(&s->env, "%s %s: ledger failed: %s", kp_host_op_str(req->op),
		     req->attempt_id[0] ? req->attempt_id : req->refund_id, kp_strerror(err));
	reply_error(rep, req, "internal", kp_strerror(err));
}

/* ---- handlers ------------------------------------------------------------------ */

enum after { AFTER_NOTHING, AFTER_REDELIVER, AFTER_CLOSE };

static enum after handle_hello(hostsim *s, hs_conn *c, const kp_host_msg *req, kp_host_msg *rep)
{
	if (c->hello_done) {
		reply_error(rep, req, "bad_request", "hello already done on this connection");
		return AFTER_NOTHING;
	}
	if (req->proto != 1) {
		reply_error(rep, req, "bad_request", "unsupported proto: this host speaks 1");
		return AFTER_CLOSE;
	}
	if (strcmp(req->device_id, c->cert_cn) != 0) {
		char msg[200];
		snprintf(msg, sizeof(msg), "device_id %s does not match the client certificate (%s)",
			 req->device_id, c->cert_cn);
		reply_error(rep, req, "bad_request", msg);
		return AFTER_CLOSE;
	}
	/* One session per device: a new hello replaces the old connection. */
	hs_conn *old = hs_conn_for_device(s, req->device_id);
	if (old && old != c)
		hs_conn_close(s, old, "replaced by a newer connection of the same device");
	c->hello_done = true;
	SET(c->device_id, req->device_id);
	kp_log_info(&s->env, "conn %llu: hello from %s fw %s", (unsigned long long)c->serial,
		    req->device_id, req->fw);
	memset(rep, 0, sizeof(*rep));
	rep->op = KP_OP_HELLO_OK;
	rep->re = req->id;
	rep->has_re = true;
	rep->host_time = kp_now_wall(&s->env);
	return AFTER_REDELIVER;
}

static void handle_create(hostsim *s, hs_conn *c, const kp_host_msg *req, kp_host_msg *rep)
{
	if (s->opt.max_amount > 0 && req->amount > s->opt.max_amount) {
		char msg[96];
		snprintf(msg, sizeof(msg), "amount %" PRId64 " over the limit %" PRId64, req->amount,
			 s->opt.max_amount);
		reply_error(rep, req, "over_limit", msg);
		return;
	}
	kp_ledger_payment p, cur;
	kp_ledger_verdict v = KP_LEDGER_CREATED;
	memset(&p, 0, sizeof(p));
	SET(p.attempt_id, req->attempt_id);
	SET(p.device_id, c->device_id);
	SET(p.order_id, req->order_id);
	SET(p.currency, req->currency);
	SET(p.channel, req->channel);
	p.amount = req->amount;
	p.expires_at = req->expires_at;
	kp_err err = kp_ledger_payment_create(s->ledger, &p, kp_now_wall(&s->env), &cur, &v);
	if (err != KP_OK) {
		reply_internal(s, rep, req, err);
		return;
	}
	switch (v) {
	case KP_LEDGER_CREATED:
		kp_log_info(&s->env, "payment %s created: order %s amount %" PRId64 " %s via %s",
			    p.attempt_id, p.order_id, p.amount, p.currency, p.channel);
		reply_payment(rep, req, &cur);
		break;
	case KP_LEDGER_EXISTS:
		reply_payment(rep, req, &cur);
		break;
	case KP_LEDGER_MISMATCH:
		kp_log_warn(&s->env, "payment %s: create with other parameters refused", p.attempt_id);
		reply_error(rep, req, "idempotency_mismatch",
			    "attempt_id already used with other parameters");
		break;
	case KP_LEDGER_TOMBSTONED:
		reply_error(rep, req, "attempt_canceled", "attempt_id was canceled before it was created");
		break;
	default:
		reply_error(rep, req, "internal", "unexpected ledger verdict");
		break;
	}
}

static void handle_query(hostsim *s, const kp_host_msg *req, kp_host_msg *rep)
{
	kp_ledger_payment p;
	kp_err err = kp_ledger_payment_get(s->ledger, req->attempt_id, &p);
	if (err == KP_OK) {
		reply_payment(rep, req, &p);
		return;
	}
	if (err != KP_ERR_NOT_FOUND) {
		reply_internal(s, rep, req, err);
		return;
	}
	bool tomb = false;
	err = kp_ledger_tombstone_has(s->ledger, req->attempt_id, &tomb);
	if (err != KP_OK) {
		reply_internal(s, rep, req, err);
		return;
	}
	reply_payment_unknown(rep, req, tomb ? "canceled" : "unknown");
}

static void handle_cancel(hostsim *s, hs_conn *c, const kp_host_msg *req, kp_host_msg *rep)
{
	kp_ledger_payment p;
	bool tomb = false;
	kp_err err = kp_ledger_payment_cancel(s->ledger, req->attempt_id, c->device_id,
					      kp_now_wall(&s->env), &p, &tomb);
	if (err != KP_OK) {
		reply_internal(s, rep, req, err);
		return;
	}
	kp_log_info(&s->env, "payment %s: cancel -> %s%s", req->attempt_id, p.status,
		    tomb ? " (tombstone)" : "");
	reply_payment(rep, req, &p);
}

static void refunds_catch_up(hostsim *s);

static void handle_refund(hostsim *s, const kp_host_msg *req, kp_host_msg *rep)
{
	kp_ledger_refund r, cur;
	kp_ledger_verdict v = KP_LEDGER_CREATED;
	int64_t late_ms = 0;
	bool reject = false, fresh = false;

	refunds_catch_up(s);
	kp_err err = kp_ledger_refund_get(s->ledger, req->refund_id, &cur);
	if (err == KP_ERR_NOT_FOUND) {
		fresh = true;
		kp_faults_take_refund(&s->faults, &late_ms, &reject);
	} else if (err != KP_OK) {
		reply_internal(s, rep, req, err);
		return;
	}
	memset(&r, 0, sizeof(r));
	SET(r.refund_id, req->refund_id);
	SET(r.attempt_id, req->attempt_id);
	SET(r.host_txn, req->host_txn);
	SET(r.reason, req->reason);
	r.amount = req->amount;
	int64_t now = kp_now_wall(&s->env);
	err = kp_ledger_refund_create(s->ledger, &r, now, late_ms > 0 ? now + late_ms : 0, reject, &cur, &v);
	if (err != KP_OK) {
		reply_internal(s, rep, req, err);
		return;
	}
	if (fresh && v != KP_LEDGER_CREATED) {
		/* Not a new refund after all: give the armed faults back. */
		if (late_ms > 0 && s->faults.refund_late_ms > 0) {
			s->faults.refund_late_count++;
			s->faults.fired[KP_FAULT_STAT_REFUND_LATE]--;
		}
		if (reject) {
			s->faults.refund_reject++;
			s->faults.fired[KP_FAULT_STAT_REFUND_REJECT]--;
		}
	}
	char msg[160];
	switch (v) {
	case KP_LEDGER_CREATED:
		kp_log_info(&s->env, "refund %s of %s (%s): %s", cur.refund_id, cur.host_txn, cur.reason,
			    cur.status);
		if (late_ms > 0)
			hs_refunds_rearm(s);
		reply_refund(rep, req, &cur);
		break;
	case KP_LEDGER_EXISTS:
		reply_refund(rep, req, &cur);
		break;
	case KP_LEDGER_MISMATCH:
		reply_error(rep, req, "idempotency_mismatch", "refund_id already used with other parameters");
		break;
	case KP_LEDGER_TXN_REFUNDED:
		snprintf(msg, sizeof(msg), "host_txn already has refund %s (%s)", cur.refund_id, cur.status);
		reply_error(rep, req, "idempotency_mismatch", msg);
		break;
	case KP_LEDGER_NOT_CAPTURED:
		reply_error(rep, req, "not_found", "no captured payment with that attempt_id and host_txn");
		break;
	case KP_LEDGER_WRONG_AMOUNT:
		reply_error(rep, req, "bad_request", "a refund is for the full captured amount");
		break;
	default:
		reply_error(rep, req, "internal", "unexpected ledger verdict");
		break;
	}
}

/* Finish late refunds that are due before answering about refunds, even if
 * the loop's tick has not run yet. */
static void refunds_catch_up(hostsim *s)
{
	if (s->next_refund_due > 0 && kp_now_wall(&s->env) >= s->next_refund_due)
		hs_refunds_rearm(s);
}

static void handle_query_refund(hostsim *s, const kp_host_msg *req, kp_host_msg *rep)
{
	kp_ledger_refund r;
	refunds_catch_up(s);
	kp_err err = kp_ledger_refund_get(s->ledger, req->refund_id, &r);
	if (err == KP_ERR_NOT_FOUND) {
		memset(&r, 0, sizeof(r));
		SET(r.refund_id, req->refund_id);
		SET(r.status, "unknown");
		err = KP_OK;
	}
	if (err != KP_OK) {
		reply_internal(s, rep, req, err);
		return;
	}
	reply_refund(rep, req, &r);
}

static void handle_ack(hostsim *s, hs_conn *c, const kp_host_msg *req)
{
	bool found = false;
	kp_err err = kp_ledger_confirm_ack(s->ledger, c->device_id, req->seq, kp_now_wall(&s->env), &found);
	if (err != KP_OK) {
		kp_log_error(&s->env, "ack %s seq %" PRId64 ": %s", c->device_id, req->seq, kp_strerror(err));
		return;
	}
	s->stats.acks++;
	if (!found) {
		s->stats.unknown_acks++;
		kp_log_warn(&s->env, "ack %s seq %" PRId64 ": no such confirm", c->device_id, req->seq);
	}
}

/* Handle one decoded request; fills *rep unless the op has no reply. */
static enum after handle(hostsim *s, hs_conn *c, const kp_host_msg *req, kp_host_msg *rep, bool *has_rep)
{
	*has_rep = true;
	if (req->op != KP_OP_HELLO && !c->hello_done) {
		if (req->op == KP_OP_ACK) {
			*has_rep = false;
			return AFTER_NOTHING;
		}
		reply_error(rep, req, "bad_request", "hello first");
		return AFTER_NOTHING;
	}
	switch (req->op) {
	case KP_OP_HELLO: return handle_hello(s, c, req, rep);
	case KP_OP_CREATE_PAYMENT: handle_create(s, c, req, rep); break;
	case KP_OP_QUERY_PAYMENT: handle_query(s, req, rep); break;
	case KP_OP_CANCEL_PAYMENT: handle_cancel(s, c, req, rep); break;
	case KP_OP_REFUND: handle_refund(s, req, rep); break;
	case KP_OP_QUERY_REFUND: handle_query_refund(s, req, rep); break;
	case KP_OP_ACK:
		handle_ack(s, c, req);
		*has_rep = false;
		break;
	case KP_OP_PING:
		memset(rep, 0, sizeof(*rep));
		rep->op = KP_OP_PONG;
		rep->re = req->id;
		rep->has_re = true;
		break;
	default:
		reply_error(rep, req, "unknown_op", "not a kiosk request");
		break;
	}
	return AFTER_NOTHING;
}

void hs_proto_frame(hostsim *s, hs_conn *c, const uint8_t *frame, size_t len)
{
	kp_host_msg req, rep;
	char why[128];
	bool has_rep = false;

	kp_err err = kp_hostproto_decode(frame, len, false, &req, why, sizeof(why));
	if (err != KP_OK) {
		s->stats.protocol_errors++;
		kp_log_warn(&s->env, "conn %llu %s: malformed frame (%s): %s", (unsigned long long)c->serial,
			    c->device_id[0] ? c->device_id : c->peer, kp_host_op_str(req.op), why);
		reply_error(&rep, NULL, strncmp(why, "unknown op", 10) == 0 ? "unknown_op" : "bad_request", why);
		if (hs_conn_send(s, c, &rep) == KP_OK)
			hs_conn_close_after_flush(s, c, "malformed frame");
		return;
	}
	s->stats.requests++;
	kp_close_fault fault = kp_faults_take_close(&s->faults, req.op);
	if (fault == KP_CLOSE_BEFORE_HANDLING) {
		kp_log_info(&s->env, "fault %s on %s", kp_close_fault_name(fault), kp_host_op_str(req.op));
		hs_conn_close(s, c, "fault close_before_handling");
		return;
	}
	enum after after = handle(s, c, &req, &rep, &has_rep);
	if (c->state != HS_CONN_OPEN)
		return;
	if (fault != KP_CLOSE_NONE)
		kp_log_info(&s->env, "fault %s on %s", kp_close_fault_name(fault), kp_host_op_str(req.op));
	switch (fault) {
	case KP_CLOSE_AFTER_HANDLING:
		hs_conn_close(s, c, "fault close_after_handling");
		return;
	case KP_CLOSE_BEFORE_REPLY: {
		static uint8_t buf[KP_FRAME_HDR + KP_FRAME_MAX];
		size_t n = 0;
		if (has_rep && kp_hostproto_encode(&rep, buf, sizeof(buf), &n) == KP_OK && n > 1 &&
		    hs_conn_send_raw(s, c, buf, n / 2) != KP_OK)
			return;
		hs_conn_close_after_flush(s, c, "fault close_before_reply (torn reply)");
		return;
	}
	case KP_CLOSE_AFTER_REPLY:
		if (has_rep && hs_conn_send(s, c, &rep) != KP_OK)
			return;
		hs_conn_close_after_flush(s, c, "fault close_after_reply");
		return;
	default:
		break;
	}
	if (has_rep && hs_conn_send(s, c, &rep) != KP_OK)
		return;
	if (after == AFTER_CLOSE)
		hs_conn_close_after_flush(s, c, "refused hello");
	else if (after == AFTER_REDELIVER)
		hs_confirms_deliver(s, c->device_id, 0);
}

/* ---- confirms ------------------------------------------------------------------ */

static void confirm_send(hostsim *s, hs_conn *c, const kp_ledger_confirm *k)
{
	kp_host_msg m;
	memset(&m, 0, sizeof(m));
	m.op = KP_OP_CONFIRM;
	m.seq = k->seq;
	SET(m.attempt_id, k->attempt_id);
	SET(m.host_txn, k->host_txn);
	SET(m.status, k->status);
	SET(m.currency, k->currency);
	m.amount = k->amount;
	m.has_amount = true;
	m.at = k->at;
	kp_confirm_fault f = kp_faults_take_confirm(&s->faults);
	if (f == KP_CONFIRM_DROP) {
		kp_log_info(&s->env, "fault drop_confirms: confirm %s seq %" PRId64 " not sent", k->device_id,
			    k->seq);
		return;
	}
	int times = f == KP_CONFIRM_DUPLICATE ? 2 : 1;
	for (int i = 0; i < times && c->state == HS_CONN_OPEN; i++) {
		if (hs_conn_send(s, c, &m) != KP_OK)
			return;
		s->stats.confirms_sent++;
	}
	kp_log_debug(&s->env, "confirm %s seq %" PRId64 " sent%s", k->device_id, k->seq,
		     times == 2 ? " twice" : "");
}

/* Send now, ignoring delay_confirms (timers land here). */
static void deliver_now(hostsim *s, const char *device_id, int64_t seq)
{
	static kp_ledger_confirm batch[HS_CONFIRM_BATCH];
	int n = 0;
	hs_conn *c = hs_conn_for_device(s, device_id);
	if (!c)
		return;
	if (seq > 0) {
		kp_err err = kp_ledger_confirm_get(s->ledger, device_id, seq, &batch[0]);
		if (err != KP_OK || batch[0].acked)
			return;
		n = 1;
	} else if (kp_ledger_confirms_unacked(s->ledger, device_id, batch, HS_CONFIRM_BATCH, &n) != KP_OK) {
		return;
	}
	bool reverse = n > 1 && kp_faults_take_reorder(&s->faults);
	for (int i = 0; i < n && c->state == HS_CONN_OPEN; i++)
		confirm_send(s, c, &batch[reverse ? n - 1 - i : i]);
}

void hs_confirms_deliver(hostsim *s, const char *device_id, int64_t seq)
{
	if (!hs_conn_for_device(s, device_id))
		return; /* redelivered after its next hello */
	if (seq > 0 && s->faults.reorder_confirms > 0) {
		kp_log_info(&s->env, "reorder_confirms: confirm %s seq %" PRId64 " held for the next delivery",
			    device_id, seq);
		return;
	}
	if (s->faults.delay_confirms_ms > 0) {
		int64_t due = kp_now_mono(&s->env) + s->faults.delay_confirms_ms;
		if (hs_timer_add(s, HS_TIMER_CONFIRM, due, device_id, seq) == KP_OK) {
			s->faults.fired[KP_FAULT_STAT_DELAY]++;
			return;
		}
		kp_log_warn(&s->env, "timer table full: confirm for %s sent without delay", device_id);
	}
	deliver_now(s, device_id, seq);
}

static kp_err new_txn(hostsim *s, char *out, size_t cap)
{
	snprintf(out, cap, "txn-%016" PRIx64, hs_rand(s));
	return KP_OK;
}

kp_err hs_settle(hostsim *s, const char *attempt_id, bool success, kp_ledger_payment *out,
		 kp_ledger_confirm *confirm)
{
	kp_err err = KP_ERR_CONFLICT;
	for (int tries = 0; tries < 8 && err == KP_ERR_CONFLICT; tries++) {
		char txn[KP_PROTO_ID_SIZE];
		(void)new_txn(s, txn, sizeof(txn));
		err = kp_ledger_payment_settle(s->ledger, attempt_id, success, txn, kp_now_wall(&s->env), out,
					       confirm);
	}
	if (err != KP_OK)
		return err;
	kp_log_info(&s->env, "payment %s %s: %s, confirm seq %" PRId64 " for %s", attempt_id,
		    success ? "captured" : "failed", out->host_txn, confirm->seq, confirm->device_id);
	hs_confirms_deliver(s, confirm->device_id, confirm->seq);
	return KP_OK;
}

kp_err hs_orphan(hostsim *s, kp_ledger_payment *p, kp_ledger_confirm *confirm)
{
	kp_ledger_payment out;
	kp_err err = KP_ERR_CONFLICT;
	bool gen_id = p->attempt_id[0] == '\0';
	for (int tries = 0; tries < 8 && err == KP_ERR_CONFLICT; tries++) {
		if (gen_id)
			snprintf(p->attempt_id, sizeof(p->attempt_id), "orphan-%016" PRIx64, hs_rand(s));
		(void)new_txn(s, p->host_txn, sizeof(p->host_txn));
		err = kp_ledger_orphan_capture(s->ledger, p, kp_now_wall(&s->env), &out, confirm);
		if (err == KP_ERR_CONFLICT && !gen_id) {
			kp_ledger_payment existing;
			if (kp_ledger_payment_get(s->ledger, p->attempt_id, &existing) == KP_OK)
				return KP_ERR_CONFLICT; /* the caller's attempt_id is taken */
		}
	}
	if (err != KP_OK)
		return err;
	*p = out;
	kp_log_info(&s->env, "orphan capture %s for order %s: %s, confirm seq %" PRId64 " for %s",
		    p->attempt_id, p->order_id, p->host_txn, confirm->seq, confirm->device_id);
	hs_confirms_deliver(s, confirm->device_id, confirm->seq);
	return KP_OK;
}

kp_err hs_send_malformed(hostsim *s, hs_conn *c, const char *kind)
{
	static const char not_json[] = "{\"op\":\"payment\",\"re\":";
	static const char not_object[] = "[\"op\",\"payment\"]";
	static const char bad_field[] = "{\"op\":\"payment\",\"re\":1,\"attempt_id\":\"a\",\"status\":\"maybe\"}";
	static const char unknown_op[] = "{\"op\":\"surprise\",\"re\":1}";
	uint8_t buf[64];
	const char *body = NULL;
	size_t hdr_len = 0;

	if (strcmp(kind, "not_json") == 0)
		body = not_json;
	else if (strcmp(kind, "not_object") == 0)
		body = not_object;
	else if (strcmp(kind, "bad_field") == 0)
		body = bad_field;
	else if (strcmp(kind, "unknown_op") == 0)
		body = unknown_op;
	else if (strcmp(kind, "zero_length") == 0)
		hdr_len = 0;
	else if (strcmp(kind, "too_long") == 0)
		hdr_len = KP_FRAME_MAX + 1;
	else
		return KP_ERR_INVALID;

	size_t n = body ? strlen(body) : hdr_len;
	buf[0] = (uint8_t)(n >> 24);
	buf[1] = (uint8_t)(n >> 16);
	buf[2] = (uint8_t)(n >> 8);
	buf[3] = (uint8_t)n;
	size_t total = KP_FRAME_HDR;
	if (body) {
		memcpy(buf + KP_FRAME_HDR, body, n);
		total += n;
	} else if (hdr_len > 0) {
		memset(buf + KP_FRAME_HDR, '{', 16); /* a start of a body that never ends */
		total += 16;
	}
	s->faults.fired[KP_FAULT_STAT_MALFORMED]++;
	kp_log_info(&s->env, "conn %llu: sending malformed frame (%s)", (unsigned long long)c->serial, kind);
	return hs_conn_send_raw(s, c, buf, total);
}

/* ---- timers -------------------------------------------------------------------- */

kp_err hs_timer_add(hostsim *s, hs_timer_kind kind, int64_t due_ms, const char *id, int64_t seq)
{
	for (int i = 0; i < HS_MAX_TIMERS; i++) {
		hs_timer *t = &s->timers[i];
		if (t->kind != HS_TIMER_FREE)
			continue;
		t->kind = kind;
		t->due_ms = due_ms;
		t->seq = seq;
		SET(t->id, id);
		return KP_OK;
	}
	return KP_ERR_TOO_BIG;
}

static void timer_fire(hostsim *s, hs_timer t)
{
	kp_ledger_payment p;
	kp_ledger_confirm k;
	kp_err err;
	switch (t.kind) {
	case HS_TIMER_PAY:
	case HS_TIMER_FAIL:
		err = hs_settle(s, t.id, t.kind == HS_TIMER_PAY, &p, &k);
		if (err != KP_OK)
			kp_log_warn(&s->env, "delayed %s of %s: %s", t.kind == HS_TIMER_PAY ? "pay" : "fail",
				    t.id, kp_strerror(err));
		break;
	case HS_TIMER_CONFIRM:
		deliver_now(s, t.id, t.seq);
		break;
	case HS_TIMER_FREE:
		break;
	}
}

void hs_refunds_rearm(hostsim *s)
{
	int64_t next = 0;
	if (kp_ledger_refunds_finish_due(s->ledger, kp_now_wall(&s->env), &next) == KP_OK)
		s->next_refund_due = next;
}

int64_t hs_proto_tick(hostsim *s)
{
	int64_t now = kp_now_mono(&s->env), next = 0;

	/* Due timers, in due order (a timer may add timers: take a copy first). */
	for (;;) {
		int best = -1;
		for (int i = 0; i < HS_MAX_TIMERS; i++) {
			hs_timer *t = &s->timers[i];
			if (t->kind != HS_TIMER_FREE && t->due_ms <= now &&
			    (best < 0 || t->due_ms < s->timers[best].due_ms))
				best = i;
		}
		if (best < 0)
			break;
		hs_timer t = s->timers[best];
		s->timers[best].kind = HS_TIMER_FREE;
		timer_fire(s, t);
	}
	for (int i = 0; i < HS_MAX_TIMERS; i++)
		if (s->timers[i].kind != HS_TIMER_FREE)
			next = hs_min_deadline(next, s->timers[i].due_ms);

	/* Periodic redelivery of everything unacked to every connected device. */
	if (s->opt.confirm_interval_ms > 0) {
		if (s->next_redeliver_ms == 0)
			s->next_redeliver_ms = now + s->opt.confirm_interval_ms;
		if (now >= s->next_redeliver_ms) {
			s->next_redeliver_ms = now + s->opt.confirm_interval_ms;
			for (int i = 0; i < HS_MAX_CONNS; i++) {
				hs_conn *c = &s->conns[i];
				if (c->state == HS_CONN_OPEN && c->hello_done) {
					char dev[KP_PROTO_ID_SIZE];
					SET(dev, c->device_id);
					hs_confirms_deliver(s, dev, 0);
				}
			}
		}
		next = hs_min_deadline(next, s->next_redeliver_ms);
	}

	/* Late refunds. */
	if (s->next_refund_due > 0) {
		int64_t wall = kp_now_wall(&s->env);
		if (wall >= s->next_refund_due)
			hs_refunds_rearm(s);
		if (s->next_refund_due > 0)
			next = hs_min_deadline(next, now + (s->next_refund_due - kp_now_wall(&s->env)));
	}
	return next;
}
