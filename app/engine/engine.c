/* engine.c — the payment engine. Every decision reads the journal's current
 * state, commits the change, and only then tells anyone (pay callback, host
 * ack, observer). Host replies, confirms and timers all funnel into
 * apply_payment()/apply_refund(), so the live path and the reconciler are one. */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp_failpoint.h"
#include "kp_pan.h"

#define DUE_BATCH 64          /* records looked at per tick: keeps the loop turning */
#define TICK_MAX_MS 1000      /* look at least this often (expiries are not scheduled) */
/* Expired orders (with no live attempt) expired per scan; a full scan is
 * followed by another on the next tick, a short one waits TICK_MAX_MS. */
#define EXPIRY_SCAN 256

enum req_kind { REQ_CREATE, REQ_QUERY, REQ_CANCEL, REQ_REFUND };

struct pay_op;

/* One host request in flight: what it was about, so the reply finds its record. */
struct req_ctx {
	kp_engine *e;
	enum req_kind kind;
	char id[KP_ID_SIZE];    /* attempt_id or refund_id */
	struct pay_op *pay;     /* the pay request waiting on this, or NULL */
};

enum pay_stage { PAY_WAIT_CANCEL, PAY_WAIT_CREATE, PAY_DONE };

/* A pay request from the API, from acceptance until its callback ran. */
struct pay_op {
	struct pay_op *next;
	char order_id[KP_ID_SIZE];
	char channel[KP_CHANNEL_SIZE];
	char attempt_id[KP_ID_SIZE];
	enum pay_stage stage;
	kp_err result;
	kp_pay_done_fn done;
	void *arg;
};

/* A request, ack or notification held back until the reconciler's batch commits. */
enum deferred_kind { DEF_NOTIFY, DEF_REQUEST, DEF_ACK };
struct deferred {
	enum deferred_kind what;
	enum req_kind kind;
	kp_host_msg msg;         /* the request; for DEF_ACK, msg.seq is the confirm's seq */
	char id[KP_ID_SIZE];     /* record id (request) or order id (notification) */
};

/* What the host said since the last tick and was not yet written: replies to
 * the reconciler's requests and confirms. The next tick applies them all in
 * its batch transaction, so a burst of answers costs one fsync, not one each
 * (boot replay of 10,000 records is bounded by this). Replies that a waiting
 * pay request needs are applied at once instead: the customer waits on them. */
struct queued {
	bool is_confirm;
	struct req_ctx *ctx;     /* the request answered (NULL for a confirm) */
	kp_err err;              /* KP_OK: msg is the host's answer */
	kp_host_msg msg;
};

/* A QR code the host gave (kp_engine_qr). */
/* A paying attempt's next query, planned in memory (KP_ENGINE_QUERIES). */
struct query_slot {
	char attempt_id[KP_ID_SIZE];
	int64_t at;              /* wall ms; 0 = empty */
};

struct qr_slot {
	char attempt_id[KP_ID_SIZE];
	char qr[KP_QR_SIZE];
	uint64_t stored;         /* kp_engine.qr_clock when stored; 0 = empty */
};

struct kp_engine {
	kp_engine_config cfg;
	kp_engine_deps d;
	kp_engine_stats stats;
	struct pay_op *pays;
	bool link_up;
	/* The reconciler writes a batch of records in one transaction (one fsync
	 * instead of one per record); what it would tell the host or observers
	 * waits here until that commit. */
	bool batching;
	struct deferred *held;
	size_t nheld, capheld;
	bool batch_failed;       /* a step of this tick's batch failed */
	struct queued *queue;    /* host answers waiting for the next tick */
	size_t nqueue, capqueue;
	/* Earliest wall time anything scheduled is due; 0 = look now. */
	int64_t next_due;
	/* Order expiry is not scheduled: scanned at most every TICK_MAX_MS. */
	int64_t next_expiry_scan;
	size_t expiry_seen;      /* orders the current scan handed over */
	size_t due_seen;         /* attempts this tick's due walk handed over */
	struct qr_slot qrs[KP_ENGINE_QRS]; /* the newest QR codes, by attempt */
	uint64_t qr_clock;
	struct query_slot queries[KP_ENGINE_QUERIES];
};

/* ---------- small helpers ---------- */

static void copy_id(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}

void kp_engine_config_defaults(kp_engine_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->currency, sizeof(cfg->currency), "EUR");
	cfg->max_amount = 10000;
	cfg->order_ttl_ms = 300 * 1000;
	cfg->pay_margin_ms = 60 * 1000;
	cfg->query_every_ms = 5 * 1000;
	cfg->pay_window_ms = 60 * 1000;
	cfg->give_up_after_ms = 24LL * 3600 * 1000;
	cfg->query_backoff_min_ms = 30 * 1000;
	cfg->query_backoff_max_ms = 10 * 60 * 1000;
	cfg->refund_retry_ms = 5 * 1000;
	cfg->refund_retry_max_ms = 10 * 60 * 1000;
	cfg->request_timeout_ms = 10 * 1000;
	cfg->power_cut_policy = KP_ENGINE_CUT_REFUND;
}

static int64_t now_wall(const kp_engine *e)
{
	return kp_now_wall(e->d.env);
}

/* min * 2^(tries-1), capped; tries <= 1 gives min. */
static int64_t backoff(int64_t min, int64_t max, int64_t tries)
{
	int64_t v = min;
	for (int64_t i = 1; i < tries && v < max; i++)
		v *= 2;
	return v < max ? v : max;
}

/* The growable array arr (*cap elements of size elem, n in use) with room for
 * one more: arr itself or its larger copy; NULL if out of memory (arr unchanged). */
static void *room_for_one(void *arr, size_t *cap, size_t n, size_t elem)
{
	if (n < *cap)
		return arr;
	size_t grown = *cap ? *cap * 2 : 64;
	void *p = realloc(arr, grown * elem);
	if (p)
		*cap = grown;
	return p;
}

/* Keep d for after the batch's commit; false if out of memory. */
static bool hold(kp_engine *e, const struct deferred *d)
{
	struct deferred *held = room_for_one(e->held, &e->capheld, e->nheld, sizeof(*d));
	if (!held)
		return false;
	e->held = held;
	e->held[e->nheld++] = *d;
	return true;
}

static void notify(kp_engine *e, const char *order_id)
{
	if (!e->d.on_change || !order_id || !*order_id)
		return;
	if (e->batching) {
		struct deferred d = {.what = DEF_NOTIFY};
		copy_id(d.id, sizeof(d.id), order_id);
		if (hold(e, &d))
			return;
		/* out of memory: an observer misses a notification, the state is safe */
		return;
	}
	e->d.on_change(e->d.on_change_arg, order_id);
}

/* Keep the host's QR for an attempt, in place of the oldest one kept; true
 * if it is new or changed (then observers are worth telling). */
static bool qr_keep(kp_engine *e, const char *attempt_id, const char *qr)
{
	struct qr_slot *slot = NULL, *oldest = &e->qrs[0];
	for (size_t i = 0; i < KP_ENGINE_QRS && !slot; i++) {
		struct qr_slot *s = &e->qrs[i];
		if (s->stored && strcmp(s->attempt_id, attempt_id) == 0)
			slot = s;
		else if (s->stored < oldest->stored)
			oldest = s;
	}
	if (slot && strcmp(slot->qr, qr) == 0)
		return false;
	if (!slot) {
		slot = oldest;
		copy_id(slot->attempt_id, sizeof(slot->attempt_id), attempt_id);
	}
	snprintf(slot->qr, sizeof(slot->qr), "%s", qr);
	slot->stored = ++e->qr_clock;
	return true;
}

const char *kp_engine_qr(const kp_engine *e, const kp_attempt *a)
{
	if (!e || !a || a->state != KP_ATTEMPT_PAYING)
		return NULL;
	for (size_t i = 0; i < KP_ENGINE_QRS; i++)
		if (e->qrs[i].stored && strcmp(e->qrs[i].attempt_id, a->attempt_id) == 0)
			return e->qrs[i].qr;
	return NULL;
}

static bool host_up(const kp_engine *e)
{
	return e->d.host_ops->up(e->d.host);
}

/* How many records the reconciler may walk now (KP_ENGINE_HOST_WINDOW): each
 * sends at most one request. With the host down nothing is sent, and records
 * still move on the timer (pay window -> canceling). */
static size_t reconciler_room(const kp_engine *e, size_t batch)
{
	if (!host_up(e))
		return batch;
	uint64_t busy = e->stats.requests_in_flight;
	for (size_t i = 0; i < e->nheld; i++)
		busy += e->held[i].what == DEF_REQUEST;
	if (busy >= KP_ENGINE_HOST_WINDOW)
		return 0;
	uint64_t room = KP_ENGINE_HOST_WINDOW - busy;
	return room < batch ? (size_t)room : batch;
}

static bool channel_valid(const char *c)
{
	size_t n = c ? strlen(c) : 0;
	if (n == 0 || n >= KP_CHANNEL_SIZE)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = c[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
			return false;
	}
	return !kp_text_has_pan(c, n); /* 16 digits pass the alphabet */
}


/* The reconciler looks again no later than `at` (0: nothing scheduled). */
static void wake_at(kp_engine *e, int64_t at)
{
	if (at > 0 && at < e->next_due)
		e->next_due = at;
}

/* The earlier of two wall times, 0 meaning none. */
static int64_t sooner(int64_t a, int64_t b)
{
	return a == 0 ? b : b == 0 ? a : a < b ? a : b;
}

/* The slot of attempt_id, or a free one if make; NULL if none. */
static struct query_slot *query_slot(kp_engine *e, const char *attempt_id, bool make)
{
	struct query_slot *free_slot = NULL;
	for (size_t i = 0; i < KP_ENGINE_QUERIES; i++) {
		struct query_slot *q = &e->queries[i];
		if (q->at && strcmp(q->attempt_id, attempt_id) == 0)
			return q;
		if (!q->at && !free_slot)
			free_slot = q;
	}
	if (!make || !free_slot)
		return NULL;
	copy_id(free_slot->attempt_id, sizeof(free_slot->attempt_id), attempt_id);
	return free_slot;
}

/* Can attempt_id's queries be planned in memory? */
static bool query_room(kp_engine *e, const char *attempt_id)
{
	for (size_t i = 0; i < KP_ENGINE_QUERIES; i++)
		if (!e->queries[i].at || strcmp(e->queries[i].attempt_id, attempt_id) == 0)
			return true;
	return false;
}

/* Query attempt_id at `at` from memory; false if there is no room. */
static bool query_plan(kp_engine *e, const char *attempt_id, int64_t at)
{
	struct query_slot *q = query_slot(e, attempt_id, true);
	if (!q)
		return false;
	q->at = at;
	return true;
}

/* The journaled next check of a paying attempt queried from memory: its pay
 * window's end, when the reconciler cancels it. */
static int64_t pay_deadline(const kp_engine *e, int64_t created_at)
{
	return created_at + e->cfg.pay_window_ms;
}

/* Journal moves that also keep the reconciler's next look early enough. */
static kp_err attempt_move(kp_engine *e, const char *attempt_id, const kp_attempt_move *m)
{
	kp_err err = kp_journal_attempt_move(e->d.journal, attempt_id, m);
	if (err == KP_OK)
		wake_at(e, m->next_check_at);
	return err;
}

static kp_err refund_move(kp_engine *e, const char *refund_id, const kp_refund_move *m)
{
	kp_err err = kp_journal_refund_move(e->d.journal, refund_id, m);
	if (err == KP_OK)
		wake_at(e, m->next_check_at);
	return err;
}

/* ---------- host requests ---------- */

static void on_reply(void *arg, kp_err err, const kp_host_msg *reply);

/* Send a request about a record. KP_OK: on_reply runs later. */
static kp_err send_req(kp_engine *e, enum req_kind kind, const kp_host_msg *req, const char *id,
		       struct pay_op *pay)
{
	if (!host_up(e))
		return KP_ERR_DISCONNECTED;
	if (e->batching && !pay) {
		/* Sent after the batch commits: the host hears nothing uncommitted. */
		struct deferred d = {.what = DEF_REQUEST, .kind = kind, .msg = *req};
		copy_id(d.id, sizeof(d.id), id);
		return hold(e, &d) ? KP_OK : KP_ERR_NOMEM;
	}
	struct req_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return KP_ERR_NOMEM;
	ctx->e = e;
	ctx->kind = kind;
	ctx->pay = pay;
	copy_id(ctx->id, sizeof(ctx->id), id);
	kp_err err = e->d.host_ops->request(e->d.host, req, on_reply, ctx);
	if (err != KP_OK) {
		free(ctx);
		return err;
	}
	e->stats.requests_in_flight++;
	return KP_OK;
}

static kp_err send_attempt_op(kp_engine *e, kp_host_op op, const kp_attempt *a, int64_t expires_at,
			      const char *currency, struct pay_op *pay)
{
	kp_host_msg m;
	memset(&m, 0, sizeof(m));
	m.op = op;
	copy_id(m.attempt_id, sizeof(m.attempt_id), a->attempt_id);
	enum req_kind kind = REQ_QUERY;
	if (op == KP_OP_CREATE_PAYMENT) {
		kind = REQ_CREATE;
		copy_id(m.order_id, sizeof(m.order_id), a->order_id);
		m.amount = a->amount;
		m.has_amount = true;
		copy_id(m.channel, sizeof(m.channel), a->channel);
		copy_id(m.currency, sizeof(m.currency), currency);
		m.expires_at = expires_at;
	} else if (op == KP_OP_CANCEL_PAYMENT) {
		kind = REQ_CANCEL;
	}
	return send_req(e, kind, &m, a->attempt_id, pay);
}

/* ---------- pay requests ---------- */

static void pay_finish(kp_engine *e, struct pay_op *op, kp_err result)
{
	(void)e;
	op->stage = PAY_DONE;
	op->result = result;
}

/* Run the callbacks of finished pay requests (never from inside kp_engine_pay). */
static void pay_flush(kp_engine *e)
{
	struct pay_op **pp = &e->pays;
	while (*pp) {
		struct pay_op *op = *pp;
		if (op->stage != PAY_DONE) {
			pp = &op->next;
			continue;
		}
		*pp = op->next;
		kp_attempt a;
		memset(&a, 0, sizeof(a));
		kp_err err = op->result;
		if (err == KP_OK && op->attempt_id[0])
			err = kp_journal_attempt_get(e->d.journal, op->attempt_id, &a);
		op->done(op->arg, err, err == KP_OK ? &a : NULL, err == KP_OK ? kp_engine_qr(e, &a) : NULL);
		free(op);
	}
}

static kp_err order_payable(kp_engine *e, const char *order_id, kp_order *o)
{
	kp_err err = kp_journal_order_get(e->d.journal, order_id, o);
	if (err != KP_OK)
		return err;
	if (o->state != KP_ORDER_PENDING)
		return KP_ERR_STATE;
	if (now_wall(e) > o->expires_at - e->cfg.pay_margin_ms)
		return KP_ERR_EXPIRED;
	return KP_OK;
}

/* When the first query of an attempt begun at `now` is due. */
static int64_t first_query_at(const kp_engine *e, int64_t now)
{
	return now + (e->cfg.query_every_ms < e->cfg.request_timeout_ms ? e->cfg.query_every_ms
									 : e->cfg.request_timeout_ms);
}

/* The journal request of a new attempt on an order (a fresh id into *id). */
static kp_err attempt_new_for(kp_engine *e, const char *order_id, const char *channel, int64_t amount,
			      kp_uuid *id, kp_attempt_new *out, bool *in_memory)
{
	kp_err err = kp_uuid_new(e->d.env, id);
	if (err != KP_OK)
		return err;
	int64_t now = now_wall(e);
	/* The next check is committed with the begin, so the create_payment reply
	 * writes nothing (its QR is kept in memory). With room in memory, the
	 * queries until the pay window's end are planned there (pay_send_create,
	 * the first at first_query_at) and the journal holds that end; without,
	 * the journal holds the first query. A create the host has not answered
	 * by then gets a query beside it, as queries do among themselves. */
	*in_memory = query_room(e, id->s);
	*out = (kp_attempt_new){
		.attempt_id = id->s,
		.order_id = order_id,
		.channel = channel,
		.amount = amount,
		.now = now,
		.next_check_at = *in_memory ? pay_deadline(e, now) : first_query_at(e, now),
	};
	return KP_OK;
}

/* Attempt a is committed as paying: tell the observers, send create_payment.
 * If it cannot be sent, the host never saw the id: fail the attempt and
 * finish op with the error. */
static void pay_send_create(kp_engine *e, struct pay_op *op, const kp_attempt *a, int64_t expires_at,
			    const char *currency, bool in_memory)
{
	wake_at(e, a->next_check_at);
	if (in_memory)
		(void)query_plan(e, a->attempt_id, first_query_at(e, a->created_at)); /* room: attempt_new_for */
	copy_id(op->attempt_id, sizeof(op->attempt_id), a->attempt_id);
	notify(e, op->order_id);
	kp_log_info(e->d.env, "order %s: attempt %s paying on %s", op->order_id, a->attempt_id, a->channel);
	op->stage = PAY_WAIT_CREATE;
	kp_err err = send_attempt_op(e, KP_OP_CREATE_PAYMENT, a, expires_at, currency, op);
	if (err == KP_OK)
		return;
	kp_attempt_move m = {
		.from = KP_ATTEMPT_PAYING, .to = KP_ATTEMPT_FAILED, .now = now_wall(e),
		.cause = "host link down before create_payment",
	};
	kp_err merr = attempt_move(e, a->attempt_id, &m);
	if (merr != KP_OK)
		kp_log_error(e->d.env, "attempt %s: cannot fail unsent attempt: %s (reconciler will cancel it)",
			     a->attempt_id, kp_strerror(merr));
	notify(e, op->order_id);
	op->attempt_id[0] = '\0';
	pay_finish(e, op, err);
}

/* A commit that reported err may still have committed (an fsync error after
 * the WAL write, failpoint 9): the journal is the truth. If the new attempt
 * is there (into *a), it is paying and the host must hear of it, so go on
 * (KP_OK); otherwise err stands. If the journal cannot even be read, err
 * stands too: should the commit have landed, the attempt is paying with no
 * create_payment sent, and the customer's retry (the same pay, or the same
 * dedup_key and then pay) sends it (kp_engine_pay, "a double tap"). */
static kp_err committed_anyway(kp_engine *e, const char *attempt_id, kp_err err, kp_attempt *a)
{
	if (err == KP_OK || kp_journal_attempt_get(e->d.journal, attempt_id, a) != KP_OK)
		return err;
	kp_log_warn(e->d.env, "attempt %s: the commit said %s, but it is in the journal: sending it", attempt_id,
		    kp_strerror(err));
	return KP_OK;
}

/* A pay request, in the list pay_flush answers from. */
static struct pay_op *pay_op_new(kp_engine *e, const char *order_id, const char *channel, kp_pay_done_fn done,
				 void *arg)
{
	struct pay_op *op = calloc(1, sizeof(*op));
	if (!op)
		return NULL;
	copy_id(op->order_id, sizeof(op->order_id), order_id);
	copy_id(op->channel, sizeof(op->channel), channel);
	op->done = done;
	op->arg = arg;
	op->next = e->pays;
	e->pays = op;
	return op;
}

/* Take back a pay request that never started (its done is not called). */
static void pay_op_drop(kp_engine *e, struct pay_op *op)
{
	for (struct pay_op **pp = &e->pays; *pp; pp = &(*pp)->next) {
		if (*pp == op) {
			*pp = op->next;
			break;
		}
	}
	free(op);
}

/* Write-ahead: commit the attempt as paying, then send create_payment. */
static void pay_start_attempt(kp_engine *e, struct pay_op *op)
{
	kp_order o;
	kp_uuid id;
	kp_attempt_new req;
	kp_attempt a;
	bool in_memory = false;
	kp_err err = order_payable(e, op->order_id, &o);
	if (err == KP_OK && !host_up(e))
		err = KP_ERR_DISCONNECTED;
	if (err == KP_OK)
		err = attempt_new_for(e, op->order_id, op->channel, o.amount, &id, &req, &in_memory);
	if (err == KP_OK) {
		err = kp_journal_attempt_begin(e->d.journal, &req, &a);
		err = committed_anyway(e, req.attempt_id, err, &a);
		if (err != KP_OK)
			kp_log_warn(e->d.env, "order %s: cannot begin attempt: %s", op->order_id, kp_strerror(err));
	}
	if (err != KP_OK) {
		pay_finish(e, op, err);
		return;
	}
	pay_send_create(e, op, &a, o.expires_at, o.currency, in_memory);
}

/* After a cancel of the previous attempt: start the new one, or say why not. */
static void pay_continue(kp_engine *e, struct pay_op *op)
{
	kp_attempt live;
	kp_err err = kp_journal_attempt_live(e->d.journal, op->order_id, &live);
	if (err == KP_OK) {
		pay_finish(e, op, KP_ERR_BUSY);
		return;
	}
	if (err != KP_ERR_NOT_FOUND) {
		pay_finish(e, op, err);
		return;
	}
	pay_start_attempt(e, op);
}

kp_err kp_engine_pay(kp_engine *e, const char *order_id, const char *channel, kp_pay_done_fn done,
		     void *arg)
{
	if (!order_id || !kp_proto_id_valid(order_id) || !channel_valid(channel) || !done)
		return KP_ERR_INVALID;
	kp_order o;
	kp_err err = order_payable(e, order_id, &o);
	if (err != KP_OK)
		return err;
	if (!host_up(e))
		return KP_ERR_DISCONNECTED;

	struct pay_op *op = pay_op_new(e, order_id, channel, done, arg);
	if (!op)
		return KP_ERR_NOMEM;

	kp_attempt live;
	err = kp_journal_attempt_live(e->d.journal, order_id, &live);
	if (err == KP_ERR_NOT_FOUND) {
		pay_start_attempt(e, op);
		return KP_OK;
	}
	if (err != KP_OK) {
		pay_finish(e, op, err);
		return KP_OK;
	}
	if (live.state == KP_ATTEMPT_PAYING && strcmp(live.channel, channel) == 0) {
		/* A double tap: the customer is already paying on this channel. */
		copy_id(op->attempt_id, sizeof(op->attempt_id), live.attempt_id);
		if (kp_engine_qr(e, &live)) {
			pay_finish(e, op, KP_OK);
			return KP_OK;
		}
		/* No QR yet: its create_payment is unanswered, was never sent (a
		 * commit that reported an error) or was answered before a restart.
		 * The host's create is idempotent by attempt_id (host-protocol.md):
		 * ask again and answer with its reply, so the customer gets the QR. */
		op->stage = PAY_WAIT_CREATE;
		if (live.next_check_at == pay_deadline(e, live.created_at) && !query_slot(e, live.attempt_id, false))
			(void)query_plan(e, live.attempt_id, first_query_at(e, now_wall(e))); /* its plan was lost */
		if (send_attempt_op(e, KP_OP_CREATE_PAYMENT, &live, o.expires_at, o.currency, op) != KP_OK)
			pay_finish(e, op, KP_OK); /* the attempt stands; the reconciler queries it */
		return KP_OK;
	}
	/* Another channel: cancel the live attempt at the host first. */
	if (live.state != KP_ATTEMPT_CANCELING) {
		int64_t now = now_wall(e);
		kp_attempt_move m = {
			.from = live.state, .to = KP_ATTEMPT_CANCELING, .now = now,
			.next_check_at = now + e->cfg.request_timeout_ms,
			.cause = "customer switched channel",
		};
		err = attempt_move(e, live.attempt_id, &m);
		if (err != KP_OK) {
			pay_finish(e, op, err);
			return KP_OK;
		}
		notify(e, order_id);
	}
	op->stage = PAY_WAIT_CANCEL;
	err = send_attempt_op(e, KP_OP_CANCEL_PAYMENT, &live, 0, NULL, op);
	if (err != KP_OK)
		pay_finish(e, op, KP_ERR_BUSY);
	return KP_OK;
}

/* ---------- applying what the host says ---------- */

static kp_err refund_create_in_txn(kp_engine *e, const char *order_id, const char *attempt_id,
				   const char *host_txn, int64_t amount, kp_refund_reason reason,
				   kp_refund *out)
{
	kp_uuid id;
	kp_err err = kp_uuid_new(e->d.env, &id);
	if (err != KP_OK)
		return err;
	int64_t now = now_wall(e);
	kp_refund_new r = {
		.refund_id = id.s, .order_id = order_id, .attempt_id = attempt_id,
		.host_txn = host_txn, .amount = amount, .reason = reason, .now = now,
		.next_check_at = now,
	};
	err = kp_journal_refund_create(e->d.journal, &r, out);
	if (err == KP_OK) {
		wake_at(e, r.next_check_at);
		e->stats.refunds_created++;
		kp_log_warn(e->d.env, "refund %s created for host_txn %s (%s, %lld)", out->refund_id,
			    host_txn, kp_refund_reason_str(reason), (long long)amount);
	}
	return err;
}

/* Does the order have a kept success other than attempt `except`? */
static kp_err order_has_kept_success(kp_engine *e, const char *order_id, const char *except, bool *yes)
{
	kp_attempt k;
	kp_err err = kp_journal_attempt_kept(e->d.journal, order_id, &k);
	*yes = err == KP_OK && strcmp(k.attempt_id, except) != 0;
	return err == KP_ERR_NOT_FOUND ? KP_OK : err;
}

/* A capture for attempt a. Inside a transaction. Decides: keep it (order paid)
 * or keep it and refund it. *refund_made tells the caller to send the refund. */
static kp_err success_in_txn(kp_engine *e, const kp_attempt *a, const char *host_txn, int64_t amount,
			     const char *currency, const char *cause, kp_refund *refund, bool *refund_made)
{
	*refund_made = false;
	bool ours = a->host_txn[0] != '\0';
	if (ours && strcmp(a->host_txn, host_txn) != 0) {
		/* The host captured twice for one attempt: keep the first, refund this one. */
		kp_err err = refund_create_in_txn(e, a->order_id, a->attempt_id, host_txn, amount,
						  KP_REASON_DUPLICATE, refund);
		*refund_made = err == KP_OK;
		return err;
	}
	switch (a->state) {
	case KP_ATTEMPT_SUCCEEDED:
	case KP_ATTEMPT_REFUNDING:
	case KP_ATTEMPT_REFUNDED:
	case KP_ATTEMPT_REFUND_REJECTED:
		return KP_OK; /* already known: nothing changes */
	default:
		break;
	}
	kp_order o;
	kp_err err = kp_journal_order_get(e->d.journal, a->order_id, &o);
	if (err != KP_OK)
		return err;
	int64_t now = now_wall(e);
	kp_refund_reason reason = KP_REASON_DUPLICATE;
	bool keep = false;
	if (amount != a->amount || (currency && currency[0] && strcmp(currency, o.currency) != 0)) {
		reason = KP_REASON_AMOUNT_MISMATCH; /* another amount or currency than asked */
	} else if (o.state == KP_ORDER_PENDING) {
		bool other = false;
		err = order_has_kept_success(e, a->order_id, a->attempt_id, &other);
		if (err != KP_OK)
			return err;
		keep = !other && (a->state == KP_ATTEMPT_PAYING || a->state == KP_ATTEMPT_CANCELING ||
				  a->state == KP_ATTEMPT_CREATED || a->state == KP_ATTEMPT_UNRESOLVED);
		if (!keep)
			reason = other ? KP_REASON_DUPLICATE : KP_REASON_LATE;
	} else if (o.state == KP_ORDER_EXPIRED || o.state == KP_ORDER_CANCELED) {
		reason = KP_REASON_LATE;
	} else {
		reason = KP_REASON_DUPLICATE; /* paid, fulfilled, fulfill_failed: one kept already */
	}
	kp_attempt_move m = {
		.from = a->state, .host_txn = host_txn, .now = now, .cause = cause,
	};
	if (a->state == KP_ATTEMPT_CREATED) {
		/* created -> succeeded is not a move of the machine: pass through paying. */
		kp_attempt_move p = {.from = KP_ATTEMPT_CREATED, .to = KP_ATTEMPT_PAYING, .now = now,
				     .next_check_at = now, .cause = cause};
		err = attempt_move(e, a->attempt_id, &p);
		if (err != KP_OK)
			return err;
		m.from = KP_ATTEMPT_PAYING;
	}
	if (keep) {
		m.to = KP_ATTEMPT_SUCCEEDED;
		err = attempt_move(e, a->attempt_id, &m);
		if (err != KP_OK)
			return err;
		return kp_journal_order_move(e->d.journal, o.order_id, KP_ORDER_PENDING, KP_ORDER_PAID, now, cause);
	}
	m.to = KP_ATTEMPT_REFUNDING;
	err = attempt_move(e, a->attempt_id, &m);
	if (err != KP_OK)
		return err;
	err = refund_create_in_txn(e, a->order_id, a->attempt_id, host_txn, amount, reason, refund);
	if (err == KP_OK)
		*refund_made = true;
	return err;
}

static void refund_step(kp_engine *e, const kp_refund *r);

/* The host's view of an attempt, from a reply (not a confirm). */
static void apply_payment(kp_engine *e, const char *attempt_id, const kp_host_msg *p, const char *cause)
{
	kp_attempt a;
	kp_err err = kp_journal_attempt_get(e->d.journal, attempt_id, &a);
	if (err != KP_OK) {
		kp_log_error(e->d.env, "attempt %s: reply for an attempt not in the journal: %s",
			     attempt_id, kp_strerror(err));
		return;
	}
	int64_t now = now_wall(e);
	kp_attempt_move m = {.from = a.state, .to = a.state, .now = now, .cause = cause};
	kp_refund refund;
	bool refund_made = false;

	if (strcmp(p->status, "succeeded") == 0) {
		err = kp_journal_begin(e->d.journal);
		if (err == KP_OK)
			err = success_in_txn(e, &a, p->host_txn, p->amount, NULL, cause, &refund, &refund_made);
		if (err == KP_OK)
			err = kp_journal_commit(e->d.journal);
		else
			kp_journal_rollback(e->d.journal);
	} else if (strcmp(p->status, "failed") == 0 || strcmp(p->status, "canceled") == 0) {
		if (!kp_attempt_state_live(a.state) && a.state != KP_ATTEMPT_UNRESOLVED)
			return;
		m.to = p->status[0] == 'f' ? KP_ATTEMPT_FAILED : KP_ATTEMPT_CANCELED;
		err = attempt_move(e, a.attempt_id, &m);
	} else if (strcmp(p->status, "pending") == 0) {
		if (!kp_attempt_state_live(a.state))
			return;
		/* The QR is kept in memory only (kp_engine_qr): a customer scans it
		 * now, and a restart asks the host again. */
		bool qr_new = p->qr[0] && a.state != KP_ATTEMPT_CANCELING && qr_keep(e, a.attempt_id, p->qr);
		if (a.state == KP_ATTEMPT_PAYING && a.next_check_at > now) {
			/* The create_payment reply of a sale: its state and next check
			 * were committed before the host heard of it. No write, no fsync. */
			if (qr_new)
				notify(e, a.order_id);
			return;
		}
		if (a.state == KP_ATTEMPT_CREATED) {
			m.to = KP_ATTEMPT_PAYING;
		}
		/* Paying: next query in query_every; canceling: keep canceling with backoff. */
		m.next_check_at = now + (a.state == KP_ATTEMPT_CANCELING
			? backoff(e->cfg.query_backoff_min_ms, e->cfg.query_backoff_max_ms, a.tries)
			: e->cfg.query_every_ms);
		err = attempt_move(e, a.attempt_id, &m);
	} else if (strcmp(p->status, "unknown") == 0) {
		/* The host never saw it: cancel, which leaves a tombstone so a late
		 * create_payment with this id can never capture. */
		if (!kp_attempt_state_live(a.state))
			return;
		if (a.state == KP_ATTEMPT_CANCELING) {
			/* Already canceling: the reconciler resends with backoff, not now. */
			m.next_check_at = now + backoff(e->cfg.query_backoff_min_ms, e->cfg.query_backoff_max_ms,
							a.tries + 1);
			m.count_try = true;
			err = attempt_move(e, a.attempt_id, &m);
			goto out;
		}
		if (a.state == KP_ATTEMPT_CREATED) {
			kp_attempt_move c = {.from = KP_ATTEMPT_CREATED, .to = KP_ATTEMPT_PAYING,
					     .now = now, .next_check_at = now, .cause = cause};
			err = attempt_move(e, a.attempt_id, &c);
			if (err != KP_OK)
				goto out;
			a.state = KP_ATTEMPT_PAYING;
		}
		m.from = a.state;
		m.to = KP_ATTEMPT_CANCELING;
		m.next_check_at = now + e->cfg.request_timeout_ms;
		m.cause = "host does not know the attempt";
		err = attempt_move(e, a.attempt_id, &m);
		if (err != KP_OK)
			goto out;
		notify(e, a.order_id);
		a.state = KP_ATTEMPT_CANCELING;
		(void)send_attempt_op(e, KP_OP_CANCEL_PAYMENT, &a, 0, NULL, NULL);
		return;
	} else {
		kp_log_error(e->d.env, "attempt %s: host status '%s' not understood", attempt_id, p->status);
		return;
	}
out:
	if (err != KP_OK) {
		kp_log_error(e->d.env, "attempt %s: cannot apply host status %s: %s", attempt_id,
			     p->status, kp_strerror(err));
		return;
	}
	notify(e, a.order_id);
	if (refund_made)
		refund_step(e, &refund);
}

/* An error reply to an attempt request. */
static void apply_payment_error(kp_engine *e, const char *attempt_id, enum req_kind kind,
				const kp_host_msg *r)
{
	e->stats.host_errors++;
	kp_attempt a;
	if (kp_journal_attempt_get(e->d.journal, attempt_id, &a) != KP_OK)
		return;
	kp_log_warn(e->d.env, "attempt %s: host error %s: %s", attempt_id, r->code, r->message);
	if (!kp_attempt_state_live(a.state))
		return;
	kp_attempt_move m = {.from = a.state, .now = now_wall(e), .cause = r->code};
	if (strcmp(r->code, "attempt_canceled") == 0) {
		m.to = KP_ATTEMPT_CANCELED; /* tombstoned: can never capture */
	} else if (kind == REQ_CREATE && (strcmp(r->code, "over_limit") == 0 ||
					  strcmp(r->code, "bad_request") == 0 ||
					  strcmp(r->code, "idempotency_mismatch") == 0)) {
		/* Refused outright; idempotency_mismatch is a bug here: log it loudly. */
		if (r->code[0] == 'i')
			kp_log_error(e->d.env, "attempt %s: host says idempotency_mismatch", attempt_id);
		m.to = KP_ATTEMPT_FAILED;
	} else {
		/* Anything else: try again later, through the journal (a memory
		 * plan sees the changed next check and steps aside), and for a
		 * paying attempt no later than its pay window's end. */
		m.to = a.state;
		m.next_check_at = now_wall(e) + backoff(e->cfg.query_backoff_min_ms,
							e->cfg.query_backoff_max_ms, a.tries);
		if (a.state == KP_ATTEMPT_PAYING && m.next_check_at > pay_deadline(e, a.created_at))
			m.next_check_at = pay_deadline(e, a.created_at);
	}
	kp_err err = attempt_move(e, attempt_id, &m);
	if (err != KP_OK)
		kp_log_error(e->d.env, "attempt %s: %s", attempt_id, kp_strerror(err));
	else
		notify(e, a.order_id);
}

static void apply_refund(kp_engine *e, const char *refund_id, kp_err err, const kp_host_msg *r)
{
	kp_refund rf;
	if (kp_journal_refund_get(e->d.journal, refund_id, &rf) != KP_OK ||
	    kp_refund_state_final(rf.state))
		return;
	int64_t now = now_wall(e);
	int64_t retry = now + backoff(e->cfg.refund_retry_ms, e->cfg.refund_retry_max_ms, rf.tries);
	kp_refund_move m = {.from = rf.state, .to = rf.state, .now = now, .next_check_at = retry};
	const char *status = err == KP_OK && r->op == KP_OP_REFUND_REPLY ? r->status : "";
	bool final = false;
	if (strcmp(status, "refunded") == 0) {
		m.to = KP_REFUND_REFUNDED;
		m.next_check_at = 0;
		m.cause = "host refunded";
		final = true;
	} else if (strcmp(status, "rejected") == 0) {
		m.to = KP_REFUND_REJECTED;
		m.next_check_at = 0;
		m.cause = r->reason[0] ? r->reason : "host rejected";
		final = true;
	} else if (err == KP_OK && r->op == KP_OP_ERROR) {
		e->stats.host_errors++;
		kp_log_warn(e->d.env, "refund %s: host error %s: %s", refund_id, r->code, r->message);
	}
	kp_err werr = kp_journal_begin(e->d.journal);
	if (werr == KP_OK)
		werr = refund_move(e, refund_id, &m);
	if (werr == KP_OK && final && rf.attempt_id[0]) {
		kp_attempt a;
		if (kp_journal_attempt_get(e->d.journal, rf.attempt_id, &a) == KP_OK &&
		    a.state == KP_ATTEMPT_REFUNDING && strcmp(a.host_txn, rf.host_txn) == 0) {
			kp_attempt_move am = {
				.from = KP_ATTEMPT_REFUNDING,
				.to = m.to == KP_REFUND_REFUNDED ? KP_ATTEMPT_REFUNDED : KP_ATTEMPT_REFUND_REJECTED,
				.now = now, .cause = m.cause,
			};
			werr = attempt_move(e, rf.attempt_id, &am);
		}
	}
	if (werr == KP_OK)
		werr = kp_journal_commit(e->d.journal);
	else
		kp_journal_rollback(e->d.journal);
	if (werr != KP_OK) {
		kp_log_error(e->d.env, "refund %s: cannot record host answer: %s", refund_id, kp_strerror(werr));
		return;
	}
	if (m.to == KP_REFUND_REJECTED) {
		e->stats.alarms++;
		kp_log_error(e->d.env, "ALARM refund %s rejected by host (host_txn %s, %lld): needs a person",
			     refund_id, rf.host_txn, (long long)rf.amount);
	}
	notify(e, rf.order_id);
}

/* Keep a host answer for the next tick; false if out of memory. */
static bool enqueue(kp_engine *e, const struct queued *q)
{
	struct queued *queue = room_for_one(e->queue, &e->capqueue, e->nqueue, sizeof(*q));
	if (!queue)
		return false;
	e->queue = queue;
	e->queue[e->nqueue++] = *q;
	return true;
}

static void reply_apply(struct req_ctx *ctx, kp_err err, const kp_host_msg *reply);

static void on_reply(void *arg, kp_err err, const kp_host_msg *reply)
{
	struct req_ctx *ctx = arg;
	/* Applied in the next tick's batch, with whatever else came meanwhile: one
	 * commit for many answers. Not the answer to a pay request's cancel: its
	 * continuation sends create_payment for a new attempt, which must be
	 * committed alone first (write-ahead). A pay request waiting for its
	 * create_payment reply is answered after the batch commits (pay_flush). */
	if (!ctx->pay || ctx->pay->stage == PAY_WAIT_CREATE) {
		struct queued q = {.ctx = ctx, .err = err};
		if (reply)
			q.msg = *reply;
		if (enqueue(ctx->e, &q))
			return;
		/* Out of memory for the queue: apply it now, in its own commit. */
	}
	reply_apply(ctx, err, reply);
}

static void reply_apply(struct req_ctx *ctx, kp_err err, const kp_host_msg *reply)
{
	kp_engine *e = ctx->e;
	if (err == KP_OK && !reply)
		err = KP_ERR_INTERNAL; /* the link always gives an answer with KP_OK */
	if (e->stats.requests_in_flight > 0)
		e->stats.requests_in_flight--;
	if (ctx->kind == REQ_REFUND) {
		apply_refund(e, ctx->id, err, reply);
	} else if (err != KP_OK) {
		/* No answer: the record stays as it is and its next check comes. */
		kp_log_warn(e->d.env, "attempt %s: no answer from host: %s", ctx->id, kp_strerror(err));
	} else if (reply->op == KP_OP_PAYMENT) {
		apply_payment(e, ctx->id, reply, ctx->kind == REQ_CREATE ? "create_payment reply"
						 : ctx->kind == REQ_CANCEL ? "cancel_payment reply"
						 : "query_payment reply");
	} else if (reply->op == KP_OP_ERROR) {
		apply_payment_error(e, ctx->id, ctx->kind, reply);
	} else {
		kp_log_error(e->d.env, "attempt %s: unexpected reply op %s", ctx->id, kp_host_op_str(reply->op));
	}
	struct pay_op *op = ctx->pay;
	if (op && op->stage == PAY_WAIT_CREATE)
		pay_finish(e, op, KP_OK);
	else if (op && op->stage == PAY_WAIT_CANCEL)
		pay_continue(e, op);
	free(ctx);
}

/* ---------- confirms ---------- */

static void confirm_apply(kp_engine *e, const kp_host_msg *c);

void kp_engine_on_confirm(kp_engine *e, const kp_host_msg *c)
{
	struct queued q = {.is_confirm = true, .msg = *c};
	if (!enqueue(e, &q))
		confirm_apply(e, c); /* out of memory for the queue: apply it now */
}

static void confirm_apply(kp_engine *e, const kp_host_msg *c)
{
	kp_confirmation rec;
	memset(&rec, 0, sizeof(rec));
	copy_id(rec.host_txn, sizeof(rec.host_txn), c->host_txn);
	copy_id(rec.attempt_id, sizeof(rec.attempt_id), c->attempt_id);
	copy_id(rec.currency, sizeof(rec.currency), c->currency);
	rec.seq = c->seq;
	rec.amount = c->amount;
	rec.at = c->at;
	rec.received_at = now_wall(e);
	if (kp_confirm_status_parse(c->status, &rec.status) != KP_OK) {
		kp_log_error(e->d.env, "confirm seq %lld: status '%s' not understood; not acked",
			     (long long)c->seq, c->status);
		return;
	}
	e->stats.confirms++;

	kp_attempt a;
	bool known = false, already = false, refund_made = false;
	kp_refund refund;
	kp_err err = kp_journal_begin(e->d.journal);
	if (err != KP_OK)
		goto out;
	err = kp_journal_confirmation_record(e->d.journal, &rec, &already);
	if (err != KP_OK || already)
		goto out;
	err = kp_journal_attempt_get(e->d.journal, rec.attempt_id, &a);
	if (err == KP_OK) {
		known = true;
	} else if (err != KP_ERR_NOT_FOUND) {
		goto out;
	}
	err = KP_OK;
	if (rec.status == KP_CONFIRM_SUCCEEDED) {
		if (known) {
			err = success_in_txn(e, &a, rec.host_txn, rec.amount, rec.currency, "confirm", &refund, &refund_made);
		} else {
			/* A capture for an attempt we never made: keep it, refund it. */
			err = refund_create_in_txn(e, NULL, rec.attempt_id, rec.host_txn, rec.amount,
						   KP_REASON_ORPHAN, &refund);
			refund_made = err == KP_OK;
		}
	} else if (known && (kp_attempt_state_live(a.state) || a.state == KP_ATTEMPT_UNRESOLVED)) {
		kp_attempt_move m = {.from = a.state, .to = KP_ATTEMPT_FAILED, .now = now_wall(e),
				     .cause = "confirm failed"};
		err = attempt_move(e, a.attempt_id, &m);
	}
	if (err == KP_OK && KP_FAILPOINT(60))
		err = KP_ERR_FAILPOINT;
out:
	if (err == KP_OK)
		err = kp_journal_commit(e->d.journal);
	else
		kp_journal_rollback(e->d.journal);
	if (err != KP_OK) {
		/* Not acked: the host redelivers, and we try again then. */
		kp_log_error(e->d.env, "confirm seq %lld host_txn %s: not committed: %s; not acked",
			     (long long)c->seq, c->host_txn, kp_strerror(err));
		return;
	}
	if (already)
		e->stats.confirms_duplicate++;
	/* Committed: now, and only now, the host may forget it. In a batch, that
	 * is after the batch commits; if it cannot be held, the host redelivers. */
	if (e->batching) {
		struct deferred d = {.what = DEF_ACK};
		d.msg.seq = c->seq;
		if (!hold(e, &d))
			kp_log_warn(e->d.env, "confirm seq %lld: ack not sent (out of memory); redelivered",
				    (long long)c->seq);
	} else {
		(void)e->d.host_ops->ack(e->d.host, c->seq);
	}
	if (known)
		notify(e, a.order_id);
	if (refund_made)
		refund_step(e, &refund);
}

/* ---------- refunds ---------- */

/* Send a refund (again): same refund_id every time, so the host refunds once. */
static void refund_step(kp_engine *e, const kp_refund *r)
{
	int64_t now = now_wall(e);
	kp_refund_move m = {
		.from = r->state, .to = r->state == KP_REFUND_PENDING ? KP_REFUND_SENT : r->state,
		.now = now, .count_try = true, .cause = "refund sent",
		.next_check_at = now + e->cfg.request_timeout_ms +
				 backoff(e->cfg.refund_retry_ms, e->cfg.refund_retry_max_ms, r->tries + 1),
	};
	if (!host_up(e)) {
		m.to = r->state;
		m.count_try = false;
		m.next_check_at = now + e->cfg.refund_retry_ms;
		if (refund_move(e, r->refund_id, &m) != KP_OK)
			kp_log_error(e->d.env, "refund %s: cannot reschedule", r->refund_id);
		return;
	}
	kp_err err = refund_move(e, r->refund_id, &m);
	if (err != KP_OK) {
		kp_log_error(e->d.env, "refund %s: cannot mark sent: %s", r->refund_id, kp_strerror(err));
		return;
	}
	kp_host_msg q;
	memset(&q, 0, sizeof(q));
	q.op = KP_OP_REFUND;
	copy_id(q.refund_id, sizeof(q.refund_id), r->refund_id);
	copy_id(q.attempt_id, sizeof(q.attempt_id), r->attempt_id);
	copy_id(q.host_txn, sizeof(q.host_txn), r->host_txn);
	copy_id(q.reason, sizeof(q.reason), kp_refund_reason_str(r->reason));
	q.amount = r->amount;
	q.has_amount = true;
	err = send_req(e, REQ_REFUND, &q, r->refund_id, NULL);
	if (err != KP_OK)
		kp_log_warn(e->d.env, "refund %s: not sent: %s (will retry)", r->refund_id, kp_strerror(err));
}

static kp_err due_refund(void *arg, const kp_refund *r)
{
	kp_engine *e = arg;
	size_t held = e->nheld;
	if (kp_journal_begin(e->d.journal) != KP_OK)
		return KP_OK;
	refund_step(e, r);
	if (kp_journal_commit(e->d.journal) == KP_OK)
		return KP_OK;
	e->nheld = held; /* its savepoint is gone: so is what it would have said */
	e->batch_failed = true;
	return kp_journal_in_txn(e->d.journal) ? KP_OK : KP_ERR_IO;
}

/* ---------- attempts on the timer ---------- */

static kp_err due_attempt_step(kp_engine *e, const kp_attempt *a);

/* One due attempt inside the reconciler's batch, in its own savepoint. */
static kp_err due_attempt(void *arg, const kp_attempt *a)
{
	kp_engine *e = arg;
	e->due_seen++;
	size_t held = e->nheld;
	if (kp_journal_begin(e->d.journal) != KP_OK)
		return KP_OK;
	kp_err err = due_attempt_step(e, a);
	if (err != KP_OK)
		kp_journal_rollback(e->d.journal);
	else
		err = kp_journal_commit(e->d.journal); /* ends this level even when it fails */
	if (err == KP_OK)
		return KP_OK;
	e->nheld = held; /* its savepoint is gone: so is what it would have said */
	e->batch_failed = true;
	kp_log_error(e->d.env, "attempt %s: reconciler step failed: %s; retried later", a->attempt_id,
		     kp_strerror(err));
	/* A statement error may have ended the whole transaction: stop the walk. */
	return kp_journal_in_txn(e->d.journal) ? KP_OK : err;
}

static kp_err due_attempt_step(kp_engine *e, const kp_attempt *a)
{
	int64_t now = now_wall(e);
	int64_t age = now - a->created_at;
	kp_attempt_move m = {.from = a->state, .to = a->state, .now = now, .count_try = true};
	kp_host_op op = KP_OP_QUERY_PAYMENT;

	if (a->state == KP_ATTEMPT_PAYING && age < e->cfg.pay_window_ms) {
		/* Queried now; the next ones from memory if there is room, so that
		 * this is the window's last reschedule commit (a boot replay, a
		 * reconcile, an attempt that found no room at its begin). If the
		 * batch rolls back, the plan only doubles the journal's. */
		m.next_check_at = query_plan(e, a->attempt_id, now + e->cfg.query_every_ms)
					  ? pay_deadline(e, a->created_at)
					  : now + e->cfg.query_every_ms;
		m.cause = "query";
	} else if (a->state == KP_ATTEMPT_CANCELING && age >= e->cfg.give_up_after_ms) {
		m.to = KP_ATTEMPT_UNRESOLVED;
		m.next_check_at = 0;
		m.count_try = false;
		m.cause = "outcome unknown after give_up_after";
		op = KP_OP_NONE;
	} else {
		/* created (maybe never sent), paying past its window, canceling:
		 * cancel at the host; keep at it with backoff until it answers. */
		if (a->state != KP_ATTEMPT_CANCELING) {
			m.to = KP_ATTEMPT_CANCELING;
			m.cause = a->state == KP_ATTEMPT_CREATED ? "replay: never confirmed sent"
								 : "pay window closed";
		} else {
			m.cause = "cancel retry";
		}
		m.next_check_at = now + backoff(e->cfg.query_backoff_min_ms, e->cfg.query_backoff_max_ms,
						a->tries + 1);
		op = KP_OP_CANCEL_PAYMENT;
	}
	if (a->state == KP_ATTEMPT_CREATED) {
		/* created -> canceling is not a move: created -> paying first, in one txn. */
		kp_err err = kp_journal_begin(e->d.journal);
		kp_attempt_move p = {.from = KP_ATTEMPT_CREATED, .to = KP_ATTEMPT_PAYING, .now = now,
				     .next_check_at = now, .cause = "replay"};
		if (err == KP_OK)
			err = attempt_move(e, a->attempt_id, &p);
		m.from = KP_ATTEMPT_PAYING;
		if (err == KP_OK)
			err = attempt_move(e, a->attempt_id, &m);
		if (err == KP_OK)
			err = kp_journal_commit(e->d.journal);
		else
			kp_journal_rollback(e->d.journal);
		if (err != KP_OK)
			return err;
	} else {
		kp_err err = attempt_move(e, a->attempt_id, &m);
		if (err != KP_OK)
			return err; /* rolled back by the caller; looked at again later */
	}
	if (m.to != a->state)
		notify(e, a->order_id);
	if (m.to == KP_ATTEMPT_UNRESOLVED) {
		e->stats.alarms++;
		kp_log_error(e->d.env, "ALARM attempt %s of order %s unresolved after %lld ms: needs a person",
			     a->attempt_id, a->order_id, (long long)age);
		return KP_OK;
	}
	kp_attempt sent = *a;
	sent.state = m.to;
	kp_err err = send_attempt_op(e, op, &sent, 0, NULL, NULL);
	if (err != KP_OK)
		kp_log_debug(e->d.env, "attempt %s: %s not sent: %s", a->attempt_id, kp_host_op_str(op),
			     kp_strerror(err));
	return KP_OK;
}

/* ---------- orders ---------- */

/* One order the scan found expired with no live attempt (an order whose
 * attempt is live waits for it: a success then still counts). */
static kp_err expire_order(void *arg, const kp_order *o)
{
	kp_engine *e = arg;
	e->expiry_seen++;
	kp_err err = kp_journal_order_move(e->d.journal, o->order_id, KP_ORDER_PENDING, KP_ORDER_EXPIRED,
					   now_wall(e), "order_ttl passed");
	if (err == KP_OK) {
		kp_log_info(e->d.env, "order %s expired", o->order_id);
		notify(e, o->order_id);
	}
	return KP_OK;
}

static bool amount_ok(const kp_engine *e, int64_t amount)
{
	return amount >= 1 && amount <= e->cfg.max_amount;
}

/* The journal request of a new order, checked (a fresh id into *id). */
static kp_err order_new_of(kp_engine *e, const kp_order_req *req, kp_uuid *id, kp_order_new *out, char *why,
			   size_t why_cap)
{
	const char *currency = req->currency ? req->currency : e->cfg.currency;
	if (!req->dedup_key || !kp_proto_id_valid(req->dedup_key)) {
		snprintf(why, why_cap, "dedup_key must be 1..64 characters of [A-Za-z0-9_-]");
		return KP_ERR_INVALID;
	}
	if (!amount_ok(e, req->amount)) {
		snprintf(why, why_cap, "amount must be an integer in minor units, 1..%lld",
			 (long long)e->cfg.max_amount);
		return KP_ERR_INVALID;
	}
	if (strcmp(currency, e->cfg.currency) != 0) {
		snprintf(why, why_cap, "currency must be %s", e->cfg.currency);
		return KP_ERR_INVALID;
	}
	if (req->items && strlen(req->items) >= KP_ITEMS_MAX) {
		snprintf(why, why_cap, "items too long (max %d bytes)", KP_ITEMS_MAX - 1);
		return KP_ERR_TOO_BIG;
	}
	/* No card data in the journal (kp_pan.h): whatever the caller (API, MDB). */
	bool pan_key = kp_text_has_pan(req->dedup_key, strlen(req->dedup_key));
	if (pan_key || (req->items && kp_text_has_pan(req->items, strlen(req->items)))) {
		snprintf(why, why_cap, "%s looks like a card number", pan_key ? "dedup_key" : "items");
		return KP_ERR_INVALID;
	}
	kp_err err = kp_uuid_new(e->d.env, id);
	if (err != KP_OK)
		return err;
	int64_t now = now_wall(e);
	*out = (kp_order_new){
		.order_id = id->s, .dedup_key = req->dedup_key, .amount = req->amount,
		.currency = currency, .items = req->items, .now = now,
		.expires_at = now + e->cfg.order_ttl_ms,
	};
	return KP_OK;
}

/* After kp_journal_order_create: the reason of an error, or the log line. */
static void order_created(kp_engine *e, const kp_order_req *req, kp_err err, const kp_order *o, bool duplicated,
			  char *why, size_t why_cap)
{
	if (err == KP_ERR_CONFLICT)
		snprintf(why, why_cap, "dedup_key %s was used for an order with other content", req->dedup_key);
	else if (err != KP_OK)
		snprintf(why, why_cap, "%s", kp_strerror(err));
	else if (!duplicated)
		kp_log_info(e->d.env, "order %s created (%lld %s)", o->order_id, (long long)o->amount, o->currency);
}

kp_err kp_engine_order_create(kp_engine *e, const kp_order_req *req, kp_order *out, bool *duplicated,
			      char *why, size_t why_cap)
{
	kp_uuid id;
	kp_order_new o;
	kp_err err = order_new_of(e, req, &id, &o, why, why_cap);
	if (err != KP_OK)
		return err;
	err = kp_journal_order_create(e->d.journal, &o, out, duplicated);
	order_created(e, req, err, out, *duplicated, why, why_cap);
	return err;
}

kp_err kp_engine_order_pay(kp_engine *e, const kp_order_req *req, const char *channel, kp_order *out,
			   bool *duplicated, char *why, size_t why_cap, kp_pay_done_fn done, void *arg)
{
	kp_uuid oid, aid;
	kp_order_new on;
	kp_attempt_new an;
	kp_attempt a;

	*duplicated = false;
	if (!done) {
		snprintf(why, why_cap, "no pay callback");
		return KP_ERR_INVALID;
	}
	if (!channel_valid(channel)) {
		snprintf(why, why_cap, "channel \"%s\" is not valid (1..%d of [a-z0-9_-])", channel ? channel : "",
			 KP_CHANNEL_SIZE - 1);
		return KP_ERR_INVALID;
	}
	kp_err err = order_new_of(e, req, &oid, &on, why, why_cap);
	if (err != KP_OK)
		return err;
	/* What kp_engine_pay would refuse of the new order, before anything is written. */
	if (on.now > on.expires_at - e->cfg.pay_margin_ms) {
		snprintf(why, why_cap, "order_ttl leaves no time to pay (pay_margin)");
		return KP_ERR_EXPIRED;
	}
	if (!host_up(e)) {
		snprintf(why, why_cap, "payment host not connected");
		return KP_ERR_DISCONNECTED;
	}
	/* Allocated first: once committed, nothing may stop the create_payment. */
	struct pay_op *op = pay_op_new(e, on.order_id, channel, done, arg);
	if (!op)
		return KP_ERR_NOMEM;
	bool in_memory = false;
	err = attempt_new_for(e, op->order_id, op->channel, on.amount, &aid, &an, &in_memory);
	if (err == KP_OK)
		err = kp_journal_begin(e->d.journal);
	if (err == KP_OK) {
		/* One transaction: the order and its attempt, already paying. A
		 * duplicate wrote nothing and starts nothing. */
		err = kp_journal_order_create(e->d.journal, &on, out, duplicated);
		if (err == KP_OK && !*duplicated)
			err = kp_journal_attempt_begin(e->d.journal, &an, &a);
		if (err == KP_OK && !*duplicated) {
			err = kp_journal_commit(e->d.journal);
			err = committed_anyway(e, an.attempt_id, err, &a);
		} else {
			kp_journal_rollback(e->d.journal);
		}
	}
	order_created(e, req, err, out, *duplicated, why, why_cap);
	if (err != KP_OK || *duplicated) {
		pay_op_drop(e, op);
		return err;
	}
	pay_send_create(e, op, &a, out->expires_at, out->currency, in_memory);
	return KP_OK;
}

kp_err kp_engine_cancel(kp_engine *e, const char *order_id, kp_order *out)
{
	kp_order o;
	kp_err err = kp_journal_order_get(e->d.journal, order_id, &o);
	if (err != KP_OK)
		return err;
	if (o.state == KP_ORDER_CANCELED) {
		*out = o;
		return KP_OK;
	}
	if (o.state != KP_ORDER_PENDING)
		return KP_ERR_STATE;
	int64_t now = now_wall(e);
	kp_attempt live;
	bool has_live = kp_journal_attempt_live(e->d.journal, order_id, &live) == KP_OK;
	err = kp_journal_begin(e->d.journal);
	if (err != KP_OK)
		return err;
	err = kp_journal_order_move(e->d.journal, order_id, KP_ORDER_PENDING, KP_ORDER_CANCELED, now,
				    "canceled by customer");
	if (err == KP_OK && has_live && live.state != KP_ATTEMPT_CANCELING) {
		kp_attempt_move m = {.from = live.state, .to = KP_ATTEMPT_CANCELING, .now = now,
				     .next_check_at = now + e->cfg.request_timeout_ms,
				     .cause = "order canceled"};
		if (live.state == KP_ATTEMPT_CREATED) {
			kp_attempt_move p = {.from = KP_ATTEMPT_CREATED, .to = KP_ATTEMPT_PAYING,
					     .now = now, .next_check_at = now, .cause = "order canceled"};
			err = attempt_move(e, live.attempt_id, &p);
			m.from = KP_ATTEMPT_PAYING;
		}
		if (err == KP_OK)
			err = attempt_move(e, live.attempt_id, &m);
	}
	if (err == KP_OK)
		err = kp_journal_commit(e->d.journal);
	else
		kp_journal_rollback(e->d.journal);
	if (err != KP_OK)
		return err;
	if (has_live) {
		live.state = KP_ATTEMPT_CANCELING;
		(void)send_attempt_op(e, KP_OP_CANCEL_PAYMENT, &live, 0, NULL, NULL);
	}
	notify(e, order_id);
	return kp_journal_order_get(e->d.journal, order_id, out);
}


/* paid -> fulfill_failed with its kept success refunded, in one transaction. */
static kp_err fail_and_refund(kp_engine *e, const kp_order *o, kp_refund_reason reason, const char *cause,
			      kp_refund *refund)
{
	kp_attempt a;
	kp_err err = kp_journal_attempt_kept(e->d.journal, o->order_id, &a);
	if (err != KP_OK)
		return err;
	int64_t now = now_wall(e);
	err = kp_journal_begin(e->d.journal);
	if (err != KP_OK)
		return err;
	err = kp_journal_order_move(e->d.journal, o->order_id, KP_ORDER_PAID, KP_ORDER_FULFILL_FAILED, now, cause);
	kp_attempt_move m = {.from = KP_ATTEMPT_SUCCEEDED, .to = KP_ATTEMPT_REFUNDING, .now = now, .cause = cause};
	if (err == KP_OK)
		err = attempt_move(e, a.attempt_id, &m);
	if (err == KP_OK)
		err = refund_create_in_txn(e, o->order_id, a.attempt_id, a.host_txn, a.amount, reason, refund);
	if (err == KP_OK)
		err = kp_journal_commit(e->d.journal);
	else
		kp_journal_rollback(e->d.journal);
	return err;
}

kp_err kp_engine_vend(kp_engine *e, const char *order_id, bool success, kp_order *out)
{
	kp_order o;
	kp_err err = kp_journal_order_get(e->d.journal, order_id, &o);
	if (err != KP_OK)
		return err;
	kp_order_state want = success ? KP_ORDER_FULFILLED : KP_ORDER_FULFILL_FAILED;
	if (o.state == want) {
		*out = o; /* the same outcome again: nothing changes */
		return KP_OK;
	}
	if (o.state != KP_ORDER_PAID)
		return KP_ERR_STATE;
	kp_refund refund;
	if (success) {
		err = kp_journal_order_move(e->d.journal, order_id, KP_ORDER_PAID, KP_ORDER_FULFILLED,
					    now_wall(e), "vend success");
	} else {
		err = fail_and_refund(e, &o, KP_REASON_VEND_FAILED, "vend failure", &refund);
	}
	if (err != KP_OK)
		return err;
	kp_log_info(e->d.env, "order %s %s", order_id, success ? "fulfilled" : "vend failed: refunding");
	notify(e, order_id);
	if (!success)
		refund_step(e, &refund);
	return kp_journal_order_get(e->d.journal, order_id, out);
}

/* ---------- lifecycle, timer, recovery ---------- */

kp_err kp_engine_new(kp_engine **out, const kp_engine_config *cfg, const kp_engine_deps *deps)
{
	if (!deps || !deps->env || !deps->journal || !deps->host_ops)
		return KP_ERR_INVALID;
	kp_engine *e = calloc(1, sizeof(*e));
	if (!e)
		return KP_ERR_NOMEM;
	e->cfg = *cfg;
	e->d = *deps;
	*out = e;
	return KP_OK;
}

void kp_engine_free(kp_engine *e)
{
	if (!e)
		return;
	for (struct pay_op *op = e->pays; op; op = op->next)
		if (op->stage != PAY_DONE)
			pay_finish(e, op, KP_ERR_UNAVAILABLE);
	pay_flush(e);
	/* Answers never applied: the records are looked at again, confirms redelivered. */
	for (size_t i = 0; i < e->nqueue; i++)
		free(e->queue[i].ctx);
	free(e->queue);
	free(e->held);
	free(e);
}

void kp_engine_set_config(kp_engine *e, const kp_engine_config *cfg)
{
	bool replan = cfg->pay_window_ms != e->cfg.pay_window_ms || cfg->query_every_ms != e->cfg.query_every_ms;
	e->cfg = *cfg;
	e->next_due = 0;
	if (!replan)
		return;
	/* The journaled deadlines were the old window's: make every live record
	 * due, as a boot does; the reconciler plans the queries again. */
	memset(e->queries, 0, sizeof(e->queries));
	int64_t n = 0;
	if (kp_journal_make_all_due(e->d.journal, now_wall(e), &n) != KP_OK)
		kp_log_error(e->d.env, "reload: cannot reschedule the records in flight: %s",
			     kp_journal_errmsg(e->d.journal));
}

void kp_engine_on_link(kp_engine *e, bool up)
{
	e->link_up = up;
	if (up)
		if (kp_engine_reconcile_now(e) != KP_OK)
			kp_log_error(e->d.env, "link up: cannot make records due");
}

kp_err kp_engine_reconcile_now(kp_engine *e)
{
	int64_t n = 0;
	e->next_due = 0;
	return kp_journal_make_all_due(e->d.journal, now_wall(e), &n);
}

static kp_err power_cut(void *arg, const kp_order *o)
{
	kp_engine *e = arg;
	if (e->cfg.power_cut_policy == KP_ENGINE_CUT_HOLD) {
		kp_log_warn(e->d.env, "order %s paid before the restart, vend outcome unknown: held for a technician",
			    o->order_id);
		return KP_OK;
	}
	kp_refund refund;
	kp_err err = fail_and_refund(e, o, KP_REASON_POWER_CUT, "power cut before vend outcome", &refund);
	if (err != KP_OK) {
		kp_log_error(e->d.env, "order %s: power-cut refund not recorded: %s", o->order_id, kp_strerror(err));
		return KP_OK;
	}
	notify(e, o->order_id);
	return KP_OK;
}

kp_err kp_engine_recover(kp_engine *e, int64_t *found)
{
	int64_t now = now_wall(e);
	kp_err err = kp_journal_paid_unfulfilled(e->d.journal, now, 0, power_cut, e);
	if (err != KP_OK)
		return err;
	e->next_due = 0;
	return kp_journal_make_all_due(e->d.journal, now, found);
}

/* Send and tell what the committed batch held back. */
static void release_held(kp_engine *e)
{
	for (size_t i = 0; i < e->nheld; i++) {
		struct deferred *d = &e->held[i];
		if (d->what == DEF_NOTIFY) {
			notify(e, d->id);
			continue;
		}
		if (d->what == DEF_ACK) {
			(void)e->d.host_ops->ack(e->d.host, d->msg.seq);
			continue;
		}
		kp_err err = send_req(e, d->kind, &d->msg, d->id, NULL);
		if (err != KP_OK)
			kp_log_debug(e->d.env, "%s %s not sent: %s (retried when due)",
				     kp_host_op_str(d->msg.op), d->id, kp_strerror(err));
	}
	e->nheld = 0;
}

/* Apply the host's answers queued since the last tick, each in its own
 * savepoint of the batch: one that fails is rolled back alone (a reply's
 * record is looked at again when due; a confirm is not acked, so redelivered). */
static void apply_queue(kp_engine *e)
{
	size_t n = e->nqueue;
	for (size_t i = 0; i < n; i++) {
		struct queued *q = &e->queue[i];
		size_t held = e->nheld;
		if (kp_journal_begin(e->d.journal) != KP_OK) {
			e->batch_failed = true;
			break;
		}
		if (q->is_confirm)
			confirm_apply(e, &q->msg);
		else
			reply_apply(q->ctx, q->err, q->err == KP_OK ? &q->msg : NULL);
		q->ctx = NULL; /* reply_apply freed it */
		if (kp_journal_commit(e->d.journal) != KP_OK) {
			e->nheld = held;
			e->batch_failed = true;
		}
		if (!kp_journal_in_txn(e->d.journal))
			break; /* SQLite ended the batch: the rest is lost with it */
	}
	/* Whatever was not reached is dropped like an unanswered request. */
	for (size_t i = 0; i < n; i++) {
		if (e->queue[i].ctx && e->stats.requests_in_flight > 0)
			e->stats.requests_in_flight--;
		free(e->queue[i].ctx);
	}
	e->nqueue = 0;
}

/* Send the queries planned in memory that are due; the earliest next one
 * (0: none). A slot ends when its attempt is no longer paying inside its
 * window: the journaled deadline takes it from there. */
static int64_t queries_run(kp_engine *e, int64_t now)
{
	int64_t next = 0;
	for (size_t i = 0; i < KP_ENGINE_QUERIES; i++) {
		struct query_slot *q = &e->queries[i];
		if (!q->at)
			continue;
		if (q->at > now) {
			next = sooner(next, q->at);
			continue;
		}
		kp_attempt a;
		kp_err err = kp_journal_attempt_get(e->d.journal, q->attempt_id, &a);
		/* Not paying any more, past its window, or scheduled by the journal
		 * again (a host error's backoff, a reconcile): the journal has it. */
		if (err == KP_ERR_NOT_FOUND ||
		    (err == KP_OK && (a.state != KP_ATTEMPT_PAYING || now - a.created_at >= e->cfg.pay_window_ms ||
				      a.next_check_at != pay_deadline(e, a.created_at)))) {
			q->at = 0;
			continue;
		}
		/* Not held back by the reconciler's window (at most
		 * KP_ENGINE_QUERIES of them: a boot replay must not starve the
		 * queries of today's customers); a journal that cannot be read or a
		 * host down: later. */
		if (err == KP_OK && host_up(e))
			(void)send_attempt_op(e, KP_OP_QUERY_PAYMENT, &a, 0, NULL, NULL);
		q->at = now + e->cfg.query_every_ms;
		next = sooner(next, q->at);
	}
	return next;
}

/* The earliest planned query (0: none); a plan past now + query_every (the
 * wall clock went back) is brought in. */
static int64_t queries_next(kp_engine *e, int64_t now)
{
	int64_t next = 0;
	for (size_t i = 0; i < KP_ENGINE_QUERIES; i++) {
		struct query_slot *q = &e->queries[i];
		if (q->at && q->at > now + e->cfg.query_every_ms)
			q->at = now + e->cfg.query_every_ms;
		next = sooner(next, q->at);
	}
	return next;
}

static int64_t reconcile_tick(kp_engine *e, int64_t now);

int64_t kp_engine_tick(kp_engine *e)
{
	int64_t now = now_wall(e);
	(void)queries_run(e, now);
	int64_t next = reconcile_tick(e, now);
	return sooner(next, queries_next(e, now)); /* with what the batch planned */
}

/* The reconciler's turn: host answers, due records, expiries. */
static int64_t reconcile_tick(kp_engine *e, int64_t now)
{
	pay_flush(e);
	bool due = e->next_due <= now;
	if (!due && e->nqueue == 0)
		return e->next_due; /* nothing scheduled is due: the hot path costs nothing */
	if (e->nqueue == 0 && reconciler_room(e, DUE_BATCH) == 0)
		return now + TICK_MAX_MS; /* the window is full: the host's answers wake the loop */

	/* One transaction for the whole batch; each record in its own savepoint. */
	kp_err err = kp_journal_begin(e->d.journal);
	if (err != KP_OK) {
		kp_log_error(e->d.env, "reconciler: %s", kp_strerror(err));
		return now + TICK_MAX_MS;
	}
	e->batching = true;
	e->batch_failed = false;
	apply_queue(e);
	size_t room = reconciler_room(e, DUE_BATCH);
	if (due && room > 0 && host_up(e) && kp_journal_in_txn(e->d.journal)) {
		err = kp_journal_due_refunds(e->d.journal, now, room, due_refund, e);
		if (err != KP_OK)
			kp_log_error(e->d.env, "reconciler: refunds: %s", kp_strerror(err));
	}
	/* Attempts move on the timer even with the host down (pay window -> canceling). */
	e->due_seen = 0;
	room = reconciler_room(e, DUE_BATCH);
	if (due && room > 0 && kp_journal_in_txn(e->d.journal)) {
		err = kp_journal_due_attempts(e->d.journal, now, room, due_attempt, e);
		if (err != KP_OK)
			kp_log_error(e->d.env, "reconciler: attempts: %s", kp_strerror(err));
	}
	/* Not while attempts are backed up (a boot replay: the walk was full, or
	 * the window left it no room): the scan walks past every expired order
	 * whose attempt is still live, ~8 us each, and an expired order cannot be
	 * paid anyway (order_payable checks the time). */
	bool more_to_expire = false;
	if (due && now >= e->next_expiry_scan && room > 0 && e->due_seen < room &&
	    kp_journal_in_txn(e->d.journal)) {
		e->expiry_seen = 0;
		err = kp_journal_orders_to_expire(e->d.journal, now, EXPIRY_SCAN, expire_order, e);
		if (err != KP_OK)
			kp_log_error(e->d.env, "reconciler: orders: %s", kp_strerror(err));
		/* A full scan may have left more: look again on the next tick. */
		more_to_expire = err == KP_OK && e->expiry_seen >= EXPIRY_SCAN;
		e->next_expiry_scan = more_to_expire ? now : now + TICK_MAX_MS;
	}
	e->batching = false;
	/* Always the commit, even when SQLite ended the batch after a statement
	 * error: it ends the level (KP_ERR_IO then). Skipping it left the
	 * journal one level deep for good, and every later write refused. */
	err = kp_journal_commit(e->d.journal);
	if (err != KP_OK) {
		kp_log_error(e->d.env, "reconciler: batch not committed: %s", kp_strerror(err));
		e->nheld = 0; /* nothing of it happened */
		e->batch_failed = true;
	}
	release_held(e);
	pay_flush(e);
	if (!due)
		return e->next_due; /* only answers were applied: the schedule stands */

	/* Work already due means another tick at once, unless it is waiting for
	 * the host (refunds are not sent while it is down): then no busy loop.
	 * Order expiry is not scheduled, so look at least every TICK_MAX_MS. */
	int64_t next = 0;
	if (kp_journal_next_due(e->d.journal, &next) != KP_OK || next == 0 || next > now + TICK_MAX_MS)
		next = now + TICK_MAX_MS;
	else if (next <= now && (!host_up(e) || e->batch_failed))
		next = now + TICK_MAX_MS; /* waiting for the host, or a failing journal: no busy loop */
	if (more_to_expire && !e->batch_failed)
		next = now; /* a backlog of expiries (never on a failing journal: no busy loop) */
	e->next_due = next;
	if (next <= now && reconciler_room(e, DUE_BATCH) == 0)
		return now + TICK_MAX_MS; /* still due; the host's answers wake the loop */
	return next;
}

void kp_engine_stats_get(const kp_engine *e, kp_engine_stats *out)
{
	*out = e->stats;
}
