/* sharedhost.c — the in-process payment host of kp-crash-cuts: ledger in
 * shared memory, requests and confirms delivered by pumping, faults from a
 * seeded generator. */
#include "sharedhost.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

struct sh_req {
	kp_host_msg msg;
	kp_engine_reply_fn fn;
	void *arg;
};

static uint64_t next_rnd(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static bool chance(sh_host *h, unsigned pct)
{
	return pct > 0 && next_rnd(&h->rng) % 100 < pct;
}

static void copy(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}

sh_ledger *sh_ledger_map(void)
{
	void *p = mmap(NULL, sizeof(sh_ledger), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void sh_ledger_unmap(sh_ledger *l)
{
	if (l)
		munmap(l, sizeof(*l));
}

void sh_ledger_reset(sh_ledger *l, uint64_t seed, int64_t wall_ms)
{
	memset(l, 0, sizeof(*l));
	kp_env tmp;
	kp_env_init_fake(&tmp, &l->world, seed, wall_ms);
	l->world.quiet = true;
	l->link_up = true;
}

static void violation(sh_ledger *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(sh_ledger *l, const char *fmt, ...)
{
	if (l->violations < 4) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(l->violation[l->violations], SH_VIOLATION_SIZE, fmt, ap);
		va_end(ap);
	}
	l->violations++;
}

static int find_pay(const sh_ledger *l, const char *attempt_id)
{
	for (int i = 0; i < l->npay; i++)
		if (strcmp(l->pay[i].attempt_id, attempt_id) == 0)
			return i;
	return -1;
}

static int find_refund_id(const sh_ledger *l, const char *refund_id)
{
	for (int i = 0; i < l->nrefund; i++)
		if (strcmp(l->refund[i].refund_id, refund_id) == 0)
			return i;
	return -1;
}

static int find_refund_txn(const sh_ledger *l, const char *host_txn)
{
	for (int i = 0; i < l->nrefund; i++)
		if (strcmp(l->refund[i].host_txn, host_txn) == 0)
			return i;
	return -1;
}

static int64_t now_wall(const sh_ledger *l)
{
	return l->world.wall_ms;
}

/* Settle a pending payment: a new host_txn and a confirm for the kiosk. */
static void settle(sh_ledger *l, int i, bool success)
{
	sh_payment *p = &l->pay[i];
	p->status = success ? SH_SUCCEEDED : SH_FAILED;
	snprintf(p->host_txn, sizeof(p->host_txn), "txn-%016llx", (unsigned long long)++l->txn_counter);
	if (l->nconfirm < SH_CONFIRM_MAX) {
		sh_confirm *c = &l->confirm[l->nconfirm];
		c->seq = l->nconfirm + 1;
		c->pay = i;
		c->acked = false;
		l->nconfirm++;
	}
}

/* ---------- the host side of the protocol ---------- */

static void payment_reply(const sh_payment *p, kp_host_msg *r)
{
	r->op = KP_OP_PAYMENT;
	copy(r->attempt_id, sizeof(r->attempt_id), p->attempt_id);
	if (p->tombstone) {
		copy(r->status, sizeof(r->status), "canceled");
		return;
	}
	static const char *const names[] = {"pending", "succeeded", "failed", "canceled"};
	copy(r->status, sizeof(r->status), names[p->status]);
	if (p->status == SH_SUCCEEDED) {
		copy(r->host_txn, sizeof(r->host_txn), p->host_txn);
		r->amount = p->amount;
		r->has_amount = true;
	}
	if (p->status == SH_PENDING)
		snprintf(r->qr, sizeof(r->qr), "kpsim://pay?attempt=%s&amount=%lld", p->attempt_id,
			 (long long)p->amount);
}

static void error_reply(kp_host_msg *r, const char *code, const char *message)
{
	r->op = KP_OP_ERROR;
	copy(r->code, sizeof(r->code), code);
	copy(r->message, sizeof(r->message), message);
}

static void refund_reply(sh_ledger *l, sh_refund *f, kp_host_msg *r)
{
	if (!f->refunded && now_wall(l) >= f->due_at)
		f->refunded = true;
	r->op = KP_OP_REFUND_REPLY;
	copy(r->refund_id, sizeof(r->refund_id), f->refund_id);
	copy(r->status, sizeof(r->status), f->refunded ? "refunded" : "pending");
	copy(r->reason, sizeof(r->reason), f->reason);
}

static void handle(sh_host *h, const kp_host_msg *q, kp_host_msg *r)
{
	sh_ledger *l = h->l;
	memset(r, 0, sizeof(*r));
	r->re = q->id;
	r->has_re = true;
	int i;
	switch (q->op) {
	case KP_OP_CREATE_PAYMENT:
		i = find_pay(l, q->attempt_id);
		if (i >= 0 && l->pay[i].tombstone) {
			error_reply(r, "attempt_canceled", "canceled before it was created");
			return;
		}
		if (i >= 0) {
			sh_payment *p = &l->pay[i];
			if (strcmp(p->order_id, q->order_id) != 0 || p->amount != q->amount ||
			    strcmp(p->currency, q->currency) != 0 || strcmp(p->channel, q->channel) != 0 ||
			    p->expires_at != q->expires_at) {
				violation(l, "create_payment %s again with other parameters", q->attempt_id);
				error_reply(r, "idempotency_mismatch", "other parameters");
				return;
			}
			payment_reply(p, r);
			return;
		}
		if (l->npay >= SH_PAY_MAX) {
			error_reply(r, "internal", "ledger full");
			return;
		}
		i = l->npay++;
		memset(&l->pay[i], 0, sizeof(l->pay[i]));
		copy(l->pay[i].attempt_id, KP_ID_SIZE, q->attempt_id);
		copy(l->pay[i].order_id, KP_ID_SIZE, q->order_id);
		copy(l->pay[i].channel, KP_CHANNEL_SIZE, q->channel);
		copy(l->pay[i].currency, KP_CURRENCY_SIZE, q->currency);
		l->pay[i].amount = q->amount;
		l->pay[i].expires_at = q->expires_at;
		l->pay[i].status = SH_PENDING;
		payment_reply(&l->pay[i], r);
		return;
	case KP_OP_QUERY_PAYMENT:
		i = find_pay(l, q->attempt_id);
		if (i < 0) {
			r->op = KP_OP_PAYMENT;
			copy(r->attempt_id, sizeof(r->attempt_id), q->attempt_id);
			copy(r->status, sizeof(r->status), "unknown");
			return;
		}
		payment_reply(&l->pay[i], r);
		return;
	case KP_OP_CANCEL_PAYMENT:
		i = find_pay(l, q->attempt_id);
		if (i < 0) {
			if (l->npay >= SH_PAY_MAX) {
				error_reply(r, "internal", "ledger full");
				return;
			}
			i = l->npay++;
			memset(&l->pay[i], 0, sizeof(l->pay[i]));
			copy(l->pay[i].attempt_id, KP_ID_SIZE, q->attempt_id);
			l->pay[i].tombstone = true;
			l->pay[i].status = SH_CANCELED;
		} else if (l->pay[i].status == SH_PENDING) {
			l->pay[i].status = SH_CANCELED;
		}
		payment_reply(&l->pay[i], r);
		return;
	case KP_OP_REFUND: {
		int f = find_refund_id(l, q->refund_id);
		if (f >= 0) {
			sh_refund *x = &l->refund[f];
			if (strcmp(x->attempt_id, q->attempt_id) != 0 || strcmp(x->host_txn, q->host_txn) != 0 ||
			    x->amount != q->amount || strcmp(x->reason, q->reason) != 0) {
				violation(l, "refund %s again with other parameters", q->refund_id);
				error_reply(r, "idempotency_mismatch", "other parameters");
				return;
			}
			refund_reply(l, x, r);
			return;
		}
		i = find_pay(l, q->attempt_id);
		if (i < 0 || l->pay[i].status != SH_SUCCEEDED || strcmp(l->pay[i].host_txn, q->host_txn) != 0) {
			violation(l, "refund %s names no capture (attempt %s, host_txn %s)", q->refund_id,
				  q->attempt_id, q->host_txn);
			error_reply(r, "not_found", "no such capture");
			return;
		}
		if (q->amount != l->pay[i].amount) {
			violation(l, "refund %s for %lld of a %lld capture", q->refund_id, (long long)q->amount,
				  (long long)l->pay[i].amount);
			error_reply(r, "bad_request", "not the full amount");
			return;
		}
		int other = find_refund_txn(l, q->host_txn);
		if (other >= 0) {
			violation(l, "second refund id %s for host_txn %s (first %s)", q->refund_id, q->host_txn,
				  l->refund[other].refund_id);
			error_reply(r, "idempotency_mismatch", "capture already has a refund");
			return;
		}
		if (l->nrefund >= SH_REFUND_MAX) {
			error_reply(r, "internal", "ledger full");
			return;
		}
		sh_refund *x = &l->refund[l->nrefund++];
		memset(x, 0, sizeof(*x));
		copy(x->refund_id, KP_ID_SIZE, q->refund_id);
		copy(x->attempt_id, KP_ID_SIZE, q->attempt_id);
		copy(x->host_txn, KP_ID_SIZE, q->host_txn);
		copy(x->reason, sizeof(x->reason), q->reason);
		x->amount = q->amount;
		x->refunded = !chance(h, h->refund_late_pct);
		x->due_at = now_wall(l) + 2000;
		refund_reply(l, x, r);
		return;
	}
	case KP_OP_QUERY_REFUND: {
		int f = find_refund_id(l, q->refund_id);
		if (f < 0) {
			r->op = KP_OP_REFUND_REPLY;
			copy(r->refund_id, sizeof(r->refund_id), q->refund_id);
			copy(r->status, sizeof(r->status), "unknown");
			return;
		}
		refund_reply(l, &l->refund[f], r);
		return;
	}
	default:
		error_reply(r, "unknown_op", kp_host_op_str(q->op));
		return;
	}
}

/* ---------- the kiosk's view (kp_host_ops) ---------- */

static bool op_up(void *host)
{
	return ((sh_host *)host)->l->link_up;
}

static kp_err op_request(void *host, const kp_host_msg *req, kp_engine_reply_fn fn, void *arg)
{
	sh_host *h = host;
	if (!h->l->link_up)
		return KP_ERR_DISCONNECTED;
	if (h->nq == h->capq) {
		size_t nc = h->capq ? h->capq * 2 : 64;
		struct sh_req *nq = realloc(h->q, nc * sizeof(*nq));
		if (!nq)
			return KP_ERR_NOMEM;
		h->q = nq;
		h->capq = nc;
	}
	h->q[h->nq++] = (struct sh_req){.msg = *req, .fn = fn, .arg = arg};
	return KP_OK;
}

static kp_err op_ack(void *host, int64_t seq)
{
	sh_host *h = host;
	if (seq >= 1 && seq <= h->l->nconfirm)
		h->l->confirm[seq - 1].acked = true;
	return KP_OK;
}

const kp_host_ops sh_host_ops = {.up = op_up, .request = op_request, .ack = op_ack};

void sh_host_init(sh_host *h, sh_ledger *l, uint64_t seed)
{
	memset(h, 0, sizeof(*h));
	h->l = l;
	h->rng = seed ? seed : 1;
	h->deliver_pct = 100;
}

int sh_host_pump(sh_host *h)
{
	int done = 0;
	/* Requests: take the batch; callbacks may queue more for the next pump. */
	size_t n = h->nq;
	struct sh_req *batch = NULL;
	if (n) {
		batch = h->q;
		h->q = NULL;
		h->nq = h->capq = 0;
	}
	for (size_t i = 0; i < n; i++) {
		struct sh_req *rq = &batch[i];
		kp_host_msg reply;
		memset(&reply, 0, sizeof(reply));
		done++;
		if (!h->l->link_up || chance(h, h->lose_request_pct)) {
			rq->fn(rq->arg, KP_ERR_TIMEOUT, &reply);
			continue;
		}
		handle(h, &rq->msg, &reply);
		if (chance(h, h->lose_reply_pct)) {
			memset(&reply, 0, sizeof(reply));
			rq->fn(rq->arg, KP_ERR_TIMEOUT, &reply);
			continue;
		}
		rq->fn(rq->arg, KP_OK, &reply);
	}
	free(batch);
	if (!h->l->link_up || !h->engine)
		return done;
	int nconf = h->l->nconfirm;
	for (int i = 0; i < nconf; i++) {
		sh_confirm *c = &h->l->confirm[i];
		if (c->acked || !chance(h, h->deliver_pct))
			continue;
		const sh_payment *p = &h->l->pay[c->pay];
		kp_host_msg m;
		memset(&m, 0, sizeof(m));
		m.op = KP_OP_CONFIRM;
		m.seq = c->seq;
		copy(m.attempt_id, sizeof(m.attempt_id), p->attempt_id);
		copy(m.host_txn, sizeof(m.host_txn), p->host_txn);
		copy(m.status, sizeof(m.status), p->status == SH_SUCCEEDED ? "succeeded" : "failed");
		copy(m.currency, sizeof(m.currency), p->currency);
		m.amount = p->amount;
		m.has_amount = true;
		m.at = now_wall(h->l);
		kp_engine_on_confirm(h->engine, &m);
		if (chance(h, h->duplicate_pct))
			kp_engine_on_confirm(h->engine, &m);
		done++;
	}
	return done;
}

void sh_host_drop_all(sh_host *h)
{
	while (h->nq) {
		size_t n = h->nq;
		struct sh_req *batch = h->q;
		h->q = NULL;
		h->nq = h->capq = 0;
		for (size_t i = 0; i < n; i++) {
			kp_host_msg reply;
			memset(&reply, 0, sizeof(reply));
			batch[i].fn(batch[i].arg, KP_ERR_DISCONNECTED, &reply);
		}
		free(batch);
	}
}

void sh_host_free(sh_host *h)
{
	free(h->q);
	h->q = NULL;
	h->nq = h->capq = 0;
}

/* ---------- the customer ---------- */

int sh_customer_pay(sh_ledger *l, int i, bool success)
{
	if (i < 0 || i >= l->npay || l->pay[i].tombstone || l->pay[i].status != SH_PENDING)
		return -1;
	settle(l, i, success);
	return i;
}

static int add_orphan(sh_ledger *l, const char *order_id, int64_t amount, const char *currency,
		      const char *channel)
{
	if (l->npay >= SH_PAY_MAX || l->nconfirm >= SH_CONFIRM_MAX)
		return -1;
	int i = l->npay++;
	sh_payment *p = &l->pay[i];
	memset(p, 0, sizeof(*p));
	snprintf(p->attempt_id, sizeof(p->attempt_id), "orphan-%llx", (unsigned long long)++l->orphan_counter);
	copy(p->order_id, KP_ID_SIZE, order_id);
	copy(p->channel, KP_CHANNEL_SIZE, channel);
	copy(p->currency, KP_CURRENCY_SIZE, currency);
	p->amount = amount;
	p->orphan = true;
	settle(l, i, true);
	return i;
}

int sh_customer_pay_order_twice(sh_ledger *l, const char *order_id)
{
	int captured = 0, last = -1;
	for (int i = 0; i < l->npay; i++) {
		sh_payment *p = &l->pay[i];
		if (!p->tombstone && p->status == SH_PENDING && strcmp(p->order_id, order_id) == 0) {
			settle(l, i, true);
			captured++;
			last = i;
		}
	}
	if (captured == 1) {
		const sh_payment *p = &l->pay[last];
		add_orphan(l, order_id, p->amount, p->currency, strcmp(p->channel, "qr") == 0 ? "card" : "qr");
	}
	return last;
}

int sh_customer_orphan(sh_ledger *l, const char *order_id, int64_t amount, const char *currency)
{
	return add_orphan(l, order_id, amount, currency, "orphan");
}

int sh_pending_count(const sh_ledger *l)
{
	int n = 0;
	for (int i = 0; i < l->npay; i++)
		n += !l->pay[i].tombstone && l->pay[i].status == SH_PENDING;
	return n;
}

int sh_pending_pick(const sh_ledger *l, uint64_t r)
{
	int n = sh_pending_count(l);
	if (n == 0)
		return -1;
	int k = (int)(r % (uint64_t)n);
	for (int i = 0; i < l->npay; i++)
		if (!l->pay[i].tombstone && l->pay[i].status == SH_PENDING && k-- == 0)
			return i;
	return -1;
}

int sh_unacked_count(const sh_ledger *l)
{
	int n = 0;
	for (int i = 0; i < l->nconfirm; i++)
		n += !l->confirm[i].acked;
	return n;
}
