/* test_engine.c — the payment engine on a fake clock and a fake host, over a
 * real journal file. Each scenario asserts what the caller sees and the
 * journal behind it, and that nothing is told before it is committed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "count_vfs.h"
#include "crashvfs.h"
#include "engine.h"
#include "journal.h"
#include "kp_failpoint.h"

#define T0 1800000000000LL
#define MAXREQ 1024

/* ---------- the fake host ---------- */

struct fake_host;

struct fake_req {
	struct fake_host *fh;
	kp_host_msg msg;
	kp_engine_reply_fn fn;
	void *arg;
	bool answered;
};

struct fake_host {
	bool up;
	struct fake_req reqs[MAXREQ];
	int nreq;
	int64_t acks[MAXREQ];
	int nack;
	kp_journal *j;          /* to check commit-before-tell */
	kp_engine *e;           /* ticked after each answer, like the daemon's loop */
	int changes;            /* on_change calls */
};

struct fixture {
	char dir[64];
	char path[128];
	kp_env env;
	kp_fake_world world;
	kp_journal *j;
	kp_engine *e;
	kp_engine_config cfg;
	struct fake_host host;
};

static bool fh_up(void *h)
{
	return ((struct fake_host *)h)->up;
}

static kp_err fh_request(void *h, const kp_host_msg *req, kp_engine_reply_fn fn, void *arg)
{
	struct fake_host *fh = h;
	if (!fh->up)
		return KP_ERR_DISCONNECTED;
	assert_true(fh->nreq < MAXREQ);
	/* Nothing is said to the host from inside an uncommitted transaction. */
	assert_false(kp_journal_in_txn(fh->j));
	/* Write-ahead: whatever goes to the host is already in the journal. */
	if (req->op == KP_OP_CREATE_PAYMENT || req->op == KP_OP_CANCEL_PAYMENT) {
		kp_attempt a;
		assert_int_equal(kp_journal_attempt_get(fh->j, req->attempt_id, &a), KP_OK);
		if (req->op == KP_OP_CREATE_PAYMENT)
			assert_int_equal(a.state, KP_ATTEMPT_PAYING);
	}
	if (req->op == KP_OP_REFUND) {
		kp_refund r;
		assert_int_equal(kp_journal_refund_get(fh->j, req->refund_id, &r), KP_OK);
		assert_int_equal(r.state, KP_REFUND_SENT);
	}
	struct fake_req *r = &fh->reqs[fh->nreq++];
	memset(r, 0, sizeof(*r));
	r->fh = fh;
	r->msg = *req;
	r->fn = fn;
	r->arg = arg;
	return KP_OK;
}

static kp_err fh_ack(void *h, int64_t seq)
{
	struct fake_host *fh = h;
	/* Ack only after commit: never from inside a transaction (a batch). */
	assert_false(kp_journal_in_txn(fh->j));
	assert_true(fh->nack < MAXREQ);
	fh->acks[fh->nack++] = seq;
	return KP_OK;
}

static const kp_host_ops fake_ops = {.up = fh_up, .request = fh_request, .ack = fh_ack};

static void on_change(void *arg, const char *order_id)
{
	(void)order_id;
	((struct fake_host *)arg)->changes++;
}

/* The last unanswered request with this op (and attempt id, if given). */
static struct fake_req *find_req(struct fixture *f, kp_host_op op, const char *id)
{
	for (int i = f->host.nreq - 1; i >= 0; i--) {
		struct fake_req *r = &f->host.reqs[i];
		if (r->answered || r->msg.op != op)
			continue;
		if (id && strcmp(r->msg.attempt_id, id) != 0 && strcmp(r->msg.refund_id, id) != 0)
			continue;
		return r;
	}
	return NULL;
}

static int count_req(struct fixture *f, kp_host_op op)
{
	int n = 0;
	for (int i = 0; i < f->host.nreq; i++)
		n += f->host.reqs[i].msg.op == op;
	return n;
}

static void answer(struct fake_req *r, kp_err err, const kp_host_msg *reply)
{
	assert_non_null(r);
	assert_false(r->answered);
	r->answered = true;
	r->fn(r->arg, err, reply);
	/* The daemon's loop ticks after every turn of host I/O: queued answers
	 * are applied there, in one transaction. */
	(void)kp_engine_tick(r->fh->e);
}

/* The host's "pending" reply to r's attempt, with a QR code. */
static void pending_with_qr(kp_host_msg *m, const struct fake_req *r, const char *qr)
{
	memset(m, 0, sizeof(*m));
	m->op = KP_OP_PAYMENT;
	snprintf(m->attempt_id, sizeof(m->attempt_id), "%s", r->msg.attempt_id);
	snprintf(m->status, sizeof(m->status), "pending");
	snprintf(m->qr, sizeof(m->qr), "%s", qr);
}

/* The host answers q "pending" with a QR, and the engine's loop turns. */
static void reply_pending(struct fixture *f, struct fake_req *q, const char *qr)
{
	kp_host_msg m;
	pending_with_qr(&m, q, qr);
	answer(q, KP_OK, &m);
	(void)kp_engine_tick(f->e);
}

static void answer_payment(struct fake_req *r, const char *status, const char *host_txn, int64_t amount)
{
	kp_host_msg m;
	memset(&m, 0, sizeof(m));
	m.op = KP_OP_PAYMENT;
	snprintf(m.attempt_id, sizeof(m.attempt_id), "%s", r->msg.attempt_id);
	snprintf(m.status, sizeof(m.status), "%s", status);
	if (host_txn)
		snprintf(m.host_txn, sizeof(m.host_txn), "%s", host_txn);
	m.amount = amount;
	m.has_amount = amount != 0;
	answer(r, KP_OK, &m);
}

static void answer_refund(struct fake_req *r, const char *status)
{
	kp_host_msg m;
	memset(&m, 0, sizeof(m));
	m.op = KP_OP_REFUND_REPLY;
	snprintf(m.refund_id, sizeof(m.refund_id), "%s", r->msg.refund_id);
	snprintf(m.status, sizeof(m.status), "%s", status);
	answer(r, KP_OK, &m);
}

/* A confirm read off the link; applied on the loop's next tick. */
static void confirm_arrives(struct fixture *f, int64_t seq, const char *attempt_id, const char *host_txn,
		    const char *status, int64_t amount)
{
	kp_host_msg c;
	memset(&c, 0, sizeof(c));
	c.op = KP_OP_CONFIRM;
	c.seq = seq;
	snprintf(c.attempt_id, sizeof(c.attempt_id), "%s", attempt_id);
	snprintf(c.host_txn, sizeof(c.host_txn), "%s", host_txn);
	snprintf(c.status, sizeof(c.status), "%s", status);
	snprintf(c.currency, sizeof(c.currency), "EUR");
	c.amount = amount;
	c.at = kp_now_wall(&f->env);
	kp_engine_on_confirm(f->e, &c);
}

static void confirm(struct fixture *f, int64_t seq, const char *attempt_id, const char *host_txn,
		    const char *status, int64_t amount)
{
	confirm_arrives(f, seq, attempt_id, host_txn, status, amount);
	(void)kp_engine_tick(f->e); /* the loop's next turn applies it */
}

/* ---------- fixture ---------- */

/* A new engine on the fixture's journal and fake host (a start or restart). */
static void engine_start(struct fixture *f)
{
	kp_engine_deps d = {.env = &f->env, .journal = f->j, .host_ops = &fake_ops, .host = &f->host,
			    .on_change = on_change, .on_change_arg = &f->host};
	assert_int_equal(kp_engine_new(&f->e, &f->cfg, &d), KP_OK);
	f->host.e = f->e;
}

/* A fixture whose journal goes through the VFS named vfs_name. */
static struct fixture *fixture_open(const char *vfs_name)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/kp-engine-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/journal.db", f->dir);
	kp_env_init_fake(&f->env, &f->world, 7, T0);
	f->world.quiet = true;
	kp_journal_opts jo = {.vfs_name = vfs_name};
	assert_int_equal(kp_journal_open_ex(&f->j, f->path, 0, &f->env, &jo), KP_OK);
	kp_engine_config_defaults(&f->cfg);
	f->host.up = true;
	f->host.j = f->j;
	engine_start(f);
	return f;
}

static int setup(void **state)
{
	/* Through the counting VFS (changes nothing else): tests can count fsyncs. */
	assert_int_equal(kp_count_vfs_register(), KP_OK);
	*state = fixture_open(KP_COUNT_VFS_NAME);
	return 0;
}

static void print_problem(void *arg, const char *problem)
{
	(void)arg;
	fprintf(stderr, "journal check: %s\n", problem);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	/* Like kp_hostlink_free: every request still in flight fails. */
	f->host.up = false;
	for (int i = 0; i < f->host.nreq; i++)
		if (!f->host.reqs[i].answered)
			answer(&f->host.reqs[i], KP_ERR_DISCONNECTED, NULL);
	kp_engine_free(f->e);
	/* The invariants that need no host hold after every scenario. */
	assert_int_equal(kp_journal_check(f->j, print_problem, NULL), KP_OK);
	kp_journal_close(f->j);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

static void advance_by(struct fixture *f, int64_t ms, int64_t max_step)
{
	while (ms > 0) {
		int64_t step = ms < max_step ? ms : max_step;
		kp_fake_advance(&f->world, step);
		ms -= step;
		(void)kp_engine_tick(f->e);
	}
}

/* Move time in steps of at most 1 s, ticking like the daemon's loop. */
static void advance(struct fixture *f, int64_t ms)
{
	advance_by(f, ms, 1000);
}

static void make_order(struct fixture *f, const char *key, int64_t amount, kp_order *o)
{
	bool dup = true;
	char why[128];
	kp_order_req req = {.dedup_key = key, .amount = amount};
	assert_int_equal(kp_engine_order_create(f->e, &req, o, &dup, why, sizeof(why)), KP_OK);
	assert_false(dup);
	assert_int_equal(o->state, KP_ORDER_PENDING);
}

struct pay_result {
	int calls;
	kp_err err;
	kp_attempt a;
	char qr[KP_QR_SIZE];    /* the QR the answer showed, "" if none */
};

static void pay_done(void *arg, kp_err err, const kp_attempt *a, const char *qr)
{
	struct pay_result *r = arg;
	r->calls++;
	r->err = err;
	if (a)
		r->a = *a;
	snprintf(r->qr, sizeof(r->qr), "%s", qr ? qr : "");
}

static int64_t wal_syncs(void)
{
	kp_count_stats c;
	kp_count_vfs_get(&c);
	return c.syncs[KP_COUNT_WAL];
}

/* Pay and answer create_payment with "pending": returns the attempt id. The
 * answer shows the host's QR, and that reply wrote nothing: the attempt was
 * committed as paying, with its next check, before the host heard of it. */
static void pay_pending(struct fixture *f, const char *order_id, const char *channel, kp_attempt *out)
{
	struct pay_result r = {0};
	assert_int_equal(kp_engine_pay(f->e, order_id, channel, pay_done, &r), KP_OK);
	assert_int_equal(r.calls, 0); /* never inside kp_engine_pay */
	struct fake_req *q = find_req(f, KP_OP_CREATE_PAYMENT, NULL);
	assert_non_null(q);
	assert_string_equal(q->msg.channel, channel);
	kp_host_msg m;
	pending_with_qr(&m, q, "https://pay.example/qr/1");
	kp_attempt before, after;
	memset(&before, 0, sizeof(before)); /* compared whole, bytes past the strings too */
	memset(&after, 0, sizeof(after));
	assert_int_equal(kp_journal_attempt_get(f->j, q->msg.attempt_id, &before), KP_OK);
	int64_t syncs = wal_syncs();
	answer(q, KP_OK, &m);
	(void)kp_engine_tick(f->e);
	assert_int_equal(wal_syncs(), syncs);
	assert_int_equal(kp_journal_attempt_get(f->j, q->msg.attempt_id, &after), KP_OK);
	assert_memory_equal(&before, &after, sizeof(before));
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, KP_OK);
	assert_int_equal(r.a.state, KP_ATTEMPT_PAYING);
	assert_string_equal(r.qr, "https://pay.example/qr/1");
	assert_string_equal(kp_engine_qr(f->e, &r.a), "https://pay.example/qr/1");
	*out = r.a;
}

static kp_order_state order_state(struct fixture *f, const char *id)
{
	kp_order o;
	assert_int_equal(kp_journal_order_get(f->j, id, &o), KP_OK);
	return o.state;
}

static kp_attempt_state attempt_state(struct fixture *f, const char *id)
{
	kp_attempt a;
	assert_int_equal(kp_journal_attempt_get(f->j, id, &a), KP_OK);
	return a.state;
}

static size_t refunds(struct fixture *f, const char *order_id, kp_refund *arr)
{
	size_t n = 0;
	assert_int_equal(kp_journal_refunds_of_order(f->j, order_id, arr, 8, &n), KP_OK);
	return n;
}

/* ---------- scenarios ---------- */

static void test_order_validation_and_dedup(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *key;
		int64_t amount;
		const char *currency;
		kp_err want;
	} cases[] = {
		{"cart-1", 250, NULL, KP_OK},
		{"cart-1", 250, "EUR", KP_OK},           /* duplicate */
		{"cart-1", 300, NULL, KP_ERR_CONFLICT},  /* same key, other amount */
		{"cart-2", 0, NULL, KP_ERR_INVALID},
		{"cart-2", -5, NULL, KP_ERR_INVALID},
		{"cart-2", 10001, NULL, KP_ERR_INVALID}, /* over max_amount */
		{"cart-2", 100, "USD", KP_ERR_INVALID},
		{"", 100, NULL, KP_ERR_INVALID},
		{"bad key!", 100, NULL, KP_ERR_INVALID},
	};
	char first[KP_ID_SIZE] = "";
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kp_order o;
		bool dup = false;
		char why[128] = "";
		kp_order_req req = {.dedup_key = cases[i].key, .amount = cases[i].amount,
				    .currency = cases[i].currency};
		assert_int_equal(kp_engine_order_create(f->e, &req, &o, &dup, why, sizeof(why)), cases[i].want);
		if (cases[i].want != KP_OK) {
			assert_true(why[0] != '\0');
			continue;
		}
		if (!first[0]) {
			snprintf(first, sizeof(first), "%s", o.order_id);
			assert_false(dup);
			assert_int_equal(o.expires_at, T0 + 300000);
		} else {
			assert_true(dup);
			assert_string_equal(o.order_id, first);
		}
	}
	kp_journal_stats st;
	assert_int_equal(kp_journal_stats_get(f->j, &st), KP_OK);
	assert_int_equal(st.orders[KP_ORDER_PENDING], 1);
}

/* POST /orders with a channel: the order and its attempt in one commit,
 * the create_payment after it; refusals and a duplicate write nothing. */
static void test_order_pay_one_commit(void **state)
{
	struct fixture *f = *state;
	kp_order o, again;
	bool dup = true;
	char why[128] = "";
	struct pay_result r = {0};
	kp_journal_stats before, after;
	kp_order_req req = {.dedup_key = "one-1", .amount = 420};

	/* Refused before anything is written: bad channel, bad order, host down. */
	assert_int_equal(kp_journal_stats_get(f->j, &before), KP_OK);
	int64_t syncs = wal_syncs();
	assert_int_equal(kp_engine_order_pay(f->e, &req, "Card!", &o, &dup, why, sizeof(why), pay_done, &r),
			 KP_ERR_INVALID);
	assert_non_null(strstr(why, "channel"));
	kp_order_req bad = {.dedup_key = "one-1", .amount = 0};
	assert_int_equal(kp_engine_order_pay(f->e, &bad, "card", &o, &dup, why, sizeof(why), pay_done, &r),
			 KP_ERR_INVALID);
	assert_non_null(strstr(why, "amount"));
	f->host.up = false;
	assert_int_equal(kp_engine_order_pay(f->e, &req, "card", &o, &dup, why, sizeof(why), pay_done, &r),
			 KP_ERR_DISCONNECTED);
	f->host.up = true;
	assert_int_equal(wal_syncs(), syncs);
	assert_int_equal(kp_journal_stats_get(f->j, &after), KP_OK);
	assert_memory_equal(&before, &after, sizeof(before));
	assert_int_equal(f->host.nreq, 0);
	(void)kp_engine_tick(f->e);
	assert_int_equal(r.calls, 0);

	/* The sale: one WAL sync for the order and its paying attempt. */
	assert_int_equal(kp_engine_order_pay(f->e, &req, "qr", &o, &dup, why, sizeof(why), pay_done, &r), KP_OK);
	assert_int_equal(wal_syncs(), syncs + 1);
	assert_false(dup);
	assert_int_equal(o.state, KP_ORDER_PENDING);
	assert_int_equal(o.amount, 420);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_PENDING);
	kp_attempt arr[4];
	size_t n = 0;
	assert_int_equal(kp_journal_attempts_of_order(f->j, o.order_id, arr, 4, &n), KP_OK);
	assert_int_equal(n, 1);
	assert_int_equal(arr[0].state, KP_ATTEMPT_PAYING);
	assert_string_equal(arr[0].channel, "qr");
	assert_int_equal(arr[0].amount, 420);
	struct fake_req *q = find_req(f, KP_OP_CREATE_PAYMENT, arr[0].attempt_id);
	assert_non_null(q);
	assert_string_equal(q->msg.order_id, o.order_id);
	assert_int_equal(q->msg.amount, 420);
	assert_int_equal(r.calls, 0); /* never inside the call */

	/* The host's pending reply answers it, with the QR; it writes nothing. */
	reply_pending(f, q, "https://pay.example/qr/one");
	assert_int_equal(wal_syncs(), syncs + 1);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, KP_OK);
	assert_string_equal(r.a.attempt_id, arr[0].attempt_id);
	assert_int_equal(r.a.state, KP_ATTEMPT_PAYING);
	assert_string_equal(r.qr, "https://pay.example/qr/one");

	/* The same request again (a lost answer): the same order, nothing new. */
	struct pay_result r2 = {0};
	int nreq = f->host.nreq;
	assert_int_equal(kp_engine_order_pay(f->e, &req, "card", &again, &dup, why, sizeof(why), pay_done, &r2),
			 KP_OK);
	assert_true(dup);
	assert_string_equal(again.order_id, o.order_id);
	assert_int_equal(wal_syncs(), syncs + 1);
	assert_int_equal(f->host.nreq, nreq);
	assert_int_equal(kp_journal_attempts_of_order(f->j, o.order_id, arr, 4, &n), KP_OK);
	assert_int_equal(n, 1);
	(void)kp_engine_tick(f->e);
	assert_int_equal(r2.calls, 0);
	/* Same key, other content: a conflict, nothing written. */
	kp_order_req other = {.dedup_key = "one-1", .amount = 421};
	assert_int_equal(kp_engine_order_pay(f->e, &other, "qr", &again, &dup, why, sizeof(why), pay_done, &r2),
			 KP_ERR_CONFLICT);
	assert_non_null(strstr(why, "one-1"));
	assert_int_equal(wal_syncs(), syncs + 1);

	/* The rest of the sale is the usual one. */
	confirm(f, 7, arr[0].attempt_id, "txn-one", "succeeded", 420);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_PAID);
	assert_int_equal(kp_engine_vend(f->e, o.order_id, true, &again), KP_OK);
	assert_int_equal(again.state, KP_ORDER_FULFILLED);
	assert_int_equal(wal_syncs(), syncs + 3);
}

/* A one-request sale that the engine takes (not a duplicate). */
static void order_pay_taken(struct fixture *f, const char *key, int64_t amount, const char *channel, kp_order *o,
			    struct pay_result *r)
{
	bool dup = true;
	char why[128] = "";
	kp_order_req req = {.dedup_key = key, .amount = amount};
	assert_int_equal(kp_engine_order_pay(f->e, &req, channel, o, &dup, why, sizeof(why), pay_done, r), KP_OK);
	assert_false(dup);
}

/* The host refuses the create_payment: the order stays (committed, pending,
 * payable again) and done shows the attempt failed. */
static void test_order_pay_host_refuses(void **state)
{
	struct fixture *f = *state;
	kp_order o;
	struct pay_result r = {0};
	order_pay_taken(f, "one-2", 99, "card", &o, &r);
	struct fake_req *q = find_req(f, KP_OP_CREATE_PAYMENT, NULL);
	assert_non_null(q);
	char attempt_id[KP_ID_SIZE];
	snprintf(attempt_id, sizeof(attempt_id), "%s", q->msg.attempt_id);
	answer_payment(q, "failed", NULL, 0);
	(void)kp_engine_tick(f->e);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, KP_OK); /* the answer is the attempt as the reply left it */
	assert_int_equal(r.a.state, KP_ATTEMPT_FAILED);
	assert_string_equal(r.qr, "");
	assert_int_equal(attempt_state(f, attempt_id), KP_ATTEMPT_FAILED);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_PENDING);
	kp_attempt a;
	pay_pending(f, o.order_id, "card", &a); /* paid again the usual way */
	assert_string_not_equal(a.attempt_id, attempt_id);
}

/* A commit that reports an error after committing (failpoint 9, an fsync
 * error after the WAL write): the attempt is in the journal, paying, so the
 * engine sends its create_payment anyway, on both pay paths. */
static void test_pay_commit_error_after_commit(void **state)
{
	struct fixture *f = *state;
	kp_order o;
	struct pay_result r = {0};
	assert_int_equal(kp_failpoint_arm(9, 1, 1, KP_FP_ERROR), KP_OK);
	order_pay_taken(f, "fp9-1", 77, "card", &o, &r);
	kp_failpoint_disarm_all();
	struct fake_req *q = find_req(f, KP_OP_CREATE_PAYMENT, NULL);
	assert_non_null(q);
	assert_string_equal(q->msg.order_id, o.order_id);
	assert_int_equal(attempt_state(f, q->msg.attempt_id), KP_ATTEMPT_PAYING);
	answer_payment(q, "failed", NULL, 0);
	(void)kp_engine_tick(f->e);
	assert_int_equal(r.calls, 1);

	/* The same for POST /orders/{id}/pay on the order, now payable again. */
	struct pay_result r2 = {0};
	int nreq = f->host.nreq;
	assert_int_equal(kp_failpoint_arm(9, 1, 1, KP_FP_ERROR), KP_OK);
	assert_int_equal(kp_engine_pay(f->e, o.order_id, "qr", pay_done, &r2), KP_OK);
	kp_failpoint_disarm_all();
	assert_int_equal(f->host.nreq, nreq + 1);
	q = find_req(f, KP_OP_CREATE_PAYMENT, NULL);
	assert_non_null(q);
	assert_string_equal(q->msg.channel, "qr");
	reply_pending(f, q, "qr-fp9");
	assert_int_equal(r2.calls, 1);
	assert_int_equal(r2.err, KP_OK);
	assert_int_equal(r2.a.state, KP_ATTEMPT_PAYING);
	assert_string_equal(r2.a.attempt_id, q->msg.attempt_id);
}

/* Paying again on the channel of a paying attempt whose QR the engine does
 * not have (its create_payment never went out: a commit that reported an
 * error, a journal that could not be read back): the create is sent again,
 * with the same attempt id, and the answer carries the host's QR. With the
 * QR known, a double tap sends nothing. */
static void test_double_tap_without_qr_asks_again(void **state)
{
	struct fixture *f = *state;
	kp_order o;
	make_order(f, "tap-1", 150, &o);
	kp_attempt_new an = {.attempt_id = "att-never-sent", .order_id = o.order_id, .channel = "card",
			     .amount = 150, .now = T0, .next_check_at = T0 + 5000};
	kp_attempt a;
	assert_int_equal(kp_journal_attempt_begin(f->j, &an, &a), KP_OK);
	struct pay_result r = {0};
	int nreq = f->host.nreq;
	assert_int_equal(kp_engine_pay(f->e, o.order_id, "card", pay_done, &r), KP_OK);
	assert_int_equal(f->host.nreq, nreq + 1);
	struct fake_req *q = find_req(f, KP_OP_CREATE_PAYMENT, "att-never-sent");
	assert_non_null(q);
	assert_int_equal(q->msg.amount, 150);
	(void)kp_engine_tick(f->e);
	assert_int_equal(r.calls, 0); /* waits for the host's reply */
	reply_pending(f, q, "qr-again");
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, KP_OK);
	assert_string_equal(r.a.attempt_id, "att-never-sent");
	assert_string_equal(r.qr, "qr-again");
	/* Its queries were planned again: one comes within query_every. */
	advance(f, f->cfg.query_every_ms + 1000);
	assert_non_null(find_req(f, KP_OP_QUERY_PAYMENT, "att-never-sent"));
	kp_attempt arr[4];
	size_t n = 0;
	assert_int_equal(kp_journal_attempts_of_order(f->j, o.order_id, arr, 4, &n), KP_OK);
	assert_int_equal(n, 1); /* the same attempt, no new id */

	struct pay_result r2 = {0};
	nreq = f->host.nreq;
	assert_int_equal(kp_engine_pay(f->e, o.order_id, "card", pay_done, &r2), KP_OK);
	assert_int_equal(f->host.nreq, nreq);
	(void)kp_engine_tick(f->e);
	assert_int_equal(r2.calls, 1);
	assert_string_equal(r2.qr, "qr-again");
}

static void test_sale_confirm_vend(void **state)
{
	struct fixture *f = *state;
	kp_order o;
	kp_attempt a;
	make_order(f, "sale-1", 250, &o);
	pay_pending(f, o.order_id, "card", &a);
	assert_int_equal(f->host.reqs[0].msg.amount, 250);
	assert_string_equal(f->host.reqs[0].msg.order_id, o.order_id);

	/* The same confirm delivered five times: one change, five acks. */
	for (int i = 0; i < 5; i++)
		confirm(f, 11, a.attempt_id, "txn-1", "succeeded", 250);
	assert_int_equal(f->host.nack, 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(f->host.acks[i], 11);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_PAID);
	assert_int_equal(attempt_state(f, a.attempt_id), KP_ATTEMPT_SUCCEEDED);
	kp_engine_stats st;
	kp_engine_stats_get(f->e, &st);
	assert_int_equal(st.confirms_duplicate, 4);
	kp_refund rf[8];
	assert_int_equal(refunds(f, o.order_id, rf), 0);

	kp_order out;
	assert_int_equal(kp_engine_vend(f->e, o.order_id, true, &out), KP_OK);
	assert_int_equal(out.state, KP_ORDER_FULFILLED);
	assert_int_equal(kp_engine_vend(f->e, o.order_id, true, &out), KP_OK); /* repeat: no change */
	assert_int_equal(kp_engine_vend(f->e, o.order_id, false, &out), KP_ERR_STATE);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_FULFILLED);
}

static void test_pay_refusals(void **state)
{
	struct fixture *f = *state;
	kp_order o;
	make_order(f, "refuse-1", 100, &o);
	struct pay_result r = {0};
	assert_int_equal(kp_engine_pay(f->e, "no-such-order", "card", pay_done, &r), KP_ERR_NOT_FOUND);
	assert_int_equal(kp_engine_pay(f->e, o.order_id, "Card!", pay_done, &r), KP_ERR_INVALID);
	f->host.up = false; /* host down at pay time: clear error, no attempt */
	assert_int_equal(kp_engine_pay(f->e, o.order_id, "card", pay_done, &r), KP_ERR_DISCONNECTED);
	kp_attempt live;
	assert_int_equal(kp_journal_attempt_live(f->j, o.order_id, &live), KP_ERR_NOT_FOUND);
	f->host.up = true;
	/* Inside the pay margin: expired, never a silent new order. */
	advance(f, 300000 - 60000 + 1);
	assert_int_equal(kp_engine_pay(f->e, o.order_id, "card", pay_done, &r), KP_ERR_EXPIRED);
	assert_int_equal(kp_journal_attempt_live(f->j, o.order_id, &live), KP_ERR_NOT_FOUND);
	assert_int_equal(r.calls, 0);
	advance(f, 60000);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_EXPIRED);
}

static void test_repay_after_failed_attempt(void **state)
{
	struct fixture *f = *state;
	kp_order o;
	kp_attempt a1, a2;
	make_order(f, "repay-1", 400, &o);
	pay_pending(f, o.order_id, "card", &a1);
	confirm(f, 1, a1.attempt_id, "txn-f1", "failed", 400);
	assert_int_equal(attempt_state(f, a1.attempt_id), KP_ATTEMPT_FAILED);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_PENDING);
	pay_pending(f, o.order_id, "card", &a2);
	assert_string_not_equal(a1.attempt_id, a2.attempt_id);
	confirm(f, 2, a2.attempt_id, "txn-ok", "succeeded", 400);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_PAID);
}

static void test_two_channels_both_paid(void **state)
{
	struct fixture *f = *state;
	kp_order o;
	kp_attempt a1;
	make_order(f, "two-1", 500, &o);
	pay_pending(f, o.order_id, "card", &a1);

	/* Switch to the wallet: the card attempt is canceled at the host first. */
	struct pay_result r = {0};
	assert_int_equal(kp_engine_pay(f->e, o.order_id, "wallet", pay_done, &r), KP_OK);
	assert_int_equal(attempt_state(f, a1.attempt_id), KP_ATTEMPT_CANCELING);
	struct fake_req *c = find_req(f, KP_OP_CANCEL_PAYMENT, a1.attempt_id);
	answer_payment(c, "canceled", NULL, 0);
	struct fake_req *q = find_req(f, KP_OP_CREATE_PAYMENT, NULL);
	assert_string_equal(q->msg.channel, "wallet");
	answer_payment(q, "pending", NULL, 0);
	(void)kp_engine_tick(f->e);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, KP_OK);
	kp_attempt a2 = r.a;

	/* Both got paid: the wallet first, the card's capture arrives late. */
	confirm(f, 5, a2.attempt_id, "txn-w", "succeeded", 500);
	confirm(f, 6, a1.attempt_id, "txn-c", "succeeded", 500);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_PAID);
	assert_int_equal(attempt_state(f, a2.attempt_id), KP_ATTEMPT_SUCCEEDED);
	assert_int_equal(attempt_state(f, a1.attempt_id), KP_ATTEMPT_REFUNDING);
	kp_refund rf[8];
	assert_int_equal(refunds(f, o.order_id, rf), 1);
	assert_int_equal(rf[0].reason, KP_REASON_DUPLICATE);
	assert_string_equal(rf[0].host_txn, "txn-c");
	assert_int_equal(rf[0].state, KP_REFUND_SENT);

	/* The refund's reply is lost: retried later with the same refund_id. */
	struct fake_req *rq = find_req(f, KP_OP_REFUND, rf[0].refund_id);
	assert_non_null(rq);
	answer(rq, KP_ERR_TIMEOUT, NULL);
	advance(f, 60000);
	rq = find_req(f, KP_OP_REFUND, NULL);
	assert_non_null(rq);
	assert_string_equal(rq->msg.refund_id, rf[0].refund_id);
	assert_int_equal(rq->msg.amount, 500);
	answer_refund(rq, "refunded");
	assert_int_equal(refunds(f, o.order_id, rf), 1);
	assert_int_equal(rf[0].state, KP_REFUND_REFUNDED);
	assert_int_equal(attempt_state(f, a1.attempt_id), KP_ATTEMPT_REFUNDED);
	/* Quiet: no more refund traffic. */
	int before = count_req(f, KP_OP_REFUND);
	advance(f, 600000);
	assert_int_equal(count_req(f, KP_OP_REFUND), before);
}

static void test_cancel_loses_race(void **state)
{
	struct fixture *f = *state;
	kp_order o;
	kp_attempt a1;
	make_order(f, "race-1", 300, &o);
	pay_pending(f, o.order_id, "card", &a1);
	struct pay_result r = {0};
	assert_int_equal(kp_engine_pay(f->e, o.order_id, "wallet", pay_done, &r), KP_OK);
	/* The customer's card payment went through before the cancel. */
	answer_payment(find_req(f, KP_OP_CANCEL_PAYMENT, a1.attempt_id), "succeeded", "txn-r", 300);
	(void)kp_engine_tick(f->e);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, KP_ERR_STATE); /* already paid: no wallet attempt */
	assert_int_equal(attempt_state(f, a1.attempt_id), KP_ATTEMPT_SUCCEEDED);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_PAID);
	assert_int_equal(count_req(f, KP_OP_CREATE_PAYMENT), 1);
}

static void test_no_confirm_queries_then_cancel(void **state)
{
	struct fixture *f = *state;
	kp_order o;
	kp_attempt a;
	make_order(f, "quiet-1", 120, &o);
	pay_pending(f, o.order_id, "card", &a);
	/* Inside the pay window: queries every query_every, answered pending.
	 * Planned in memory: not one of them writes (the journal holds the
	 * window's end, when the cancel is due). */
	int64_t syncs = wal_syncs();
	for (int i = 0; i < 30; i++) {
		advance(f, 1000);
		struct fake_req *q = find_req(f, KP_OP_QUERY_PAYMENT, a.attempt_id);
		if (q)
			answer_payment(q, "pending", NULL, 0);
	}
	int queries = count_req(f, KP_OP_QUERY_PAYMENT);
	assert_in_range(queries, 4, 7);
	assert_int_equal(count_req(f, KP_OP_CANCEL_PAYMENT), 0);
	assert_int_equal(wal_syncs(), syncs);
	kp_attempt now;
	assert_int_equal(kp_journal_attempt_get(f->j, a.attempt_id, &now), KP_OK);
	assert_int_equal(now.tries, 0);
	assert_int_equal(now.next_check_at, a.created_at + 60000);
	advance(f, 35000);
	for (struct fake_req *q; (q = find_req(f, KP_OP_QUERY_PAYMENT, a.attempt_id));)
		answer_payment(q, "pending", NULL, 0);
	/* Window closed: cancel at the host. */
	struct fake_req *c = find_req(f, KP_OP_CANCEL_PAYMENT, a.attempt_id);
	assert_non_null(c);
	assert_int_equal(attempt_state(f, a.attempt_id), KP_ATTEMPT_CANCELING);
	answer_payment(c, "canceled", NULL, 0);
	assert_int_equal(attempt_state(f, a.attempt_id), KP_ATTEMPT_CANCELED);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_PENDING);
	/* And the order expires when its TTL passes, with nothing live. */
	advance(f, 300000);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_EXPIRED);
	/* A confirm after expiry: kept and refunded as late. */
	confirm(f, 9, a.attempt_id, "txn-late", "succeeded", 120);
	assert_int_equal(attempt_state(f, a.attempt_id), KP_ATTEMPT_REFUNDING);
	kp_refund rf[8];
	assert_int_equal(refunds(f, o.order_id, rf), 1);
	assert_int_equal(rf[0].reason, KP_REASON_LATE);
	assert_int_equal(f->host.nack, 1);
}

/* More paying attempts than KP_ENGINE_QUERIES: the ones beyond are queried
 * through the journal (a reschedule commit each), and every one is queried. */
static void test_queries_beyond_memory(void **state)
{
	struct fixture *f = *state;
	enum { N = KP_ENGINE_QUERIES + 3 };
	kp_attempt a[N];
	for (int i = 0; i < N; i++) {
		char key[32];
		kp_order o;
		snprintf(key, sizeof(key), "many-%d", i);
		make_order(f, key, 10 + i, &o);
		pay_pending(f, o.order_id, "card", &a[i]);
	}
	int in_memory = 0;
	for (int i = 0; i < N; i++)
		in_memory += a[i].next_check_at == a[i].created_at + f->cfg.pay_window_ms;
	assert_int_equal(in_memory, KP_ENGINE_QUERIES);
	advance(f, f->cfg.query_every_ms + 1000);
	for (int i = 0; i < N; i++) {
		struct fake_req *q = find_req(f, KP_OP_QUERY_PAYMENT, a[i].attempt_id);
		if (!q)
			fail_msg("attempt %d (%s) not queried", i, a[i].attempt_id);
		answer_payment(q, "pending", NULL, 0);
	}
}

/* A host error on a query from memory: the journal takes the attempt back
 * (its backoff, never past the pay window's end) and the memory plan steps
 * aside; a reload that changes the window replans every live attempt. */
static void test_query_error_and_reload(void **state)
{
	struct fixture *f = *state;
	kp_order o;
	kp_attempt a;
	make_order(f, "qerr-1", 60, &o);
	pay_pending(f, o.order_id, "card", &a);
	advance(f, f->cfg.query_every_ms + 1000);
	struct fake_req *q = find_req(f, KP_OP_QUERY_PAYMENT, a.attempt_id);
	assert_non_null(q);
	kp_host_msg m;
	memset(&m, 0, sizeof(m));
	m.op = KP_OP_ERROR;
	snprintf(m.code, sizeof(m.code), "busy");
	snprintf(m.message, sizeof(m.message), "try later");
	answer(q, KP_OK, &m);
	(void)kp_engine_tick(f->e);
	kp_attempt now;
	assert_int_equal(kp_journal_attempt_get(f->j, a.attempt_id, &now), KP_OK);
	assert_true(now.next_check_at < a.created_at + f->cfg.pay_window_ms);
	int before = count_req(f, KP_OP_QUERY_PAYMENT);
	advance(f, f->cfg.query_every_ms + 1000); /* inside the backoff: no query from memory either */
	assert_int_equal(count_req(f, KP_OP_QUERY_PAYMENT), before);
	advance(f, 40000); /* the backoff, then the journal's query */
	assert_true(count_req(f, KP_OP_QUERY_PAYMENT) > before);
	for (struct fake_req *p; (p = find_req(f, KP_OP_QUERY_PAYMENT, a.attempt_id));)
		answer_payment(p, "pending", NULL, 0);

	/* A reload with a shorter window: every live record is due, the window
	 * is the new one (the cancel comes at it, not at the old deadline). */
	kp_order o2;
	kp_attempt a2;
	make_order(f, "qerr-2", 61, &o2);
	pay_pending(f, o2.order_id, "qr", &a2);
	kp_engine_config cfg = f->cfg;
	cfg.pay_window_ms = 20000;
	kp_engine_set_config(f->e, &cfg);
	advance(f, 21000);
	for (struct fake_req *p; (p = find_req(f, KP_OP_QUERY_PAYMENT, a2.attempt_id));)
		answer_payment(p, "pending", NULL, 0);
	advance(f, 2000);
	assert_non_null(find_req(f, KP_OP_CANCEL_PAYMENT, a2.attempt_id));
	assert_int_equal(attempt_state(f, a2.attempt_id), KP_ATTEMPT_CANCELING);
}

static void test_orphan_and_amount_mismatch(void **state)
{
	struct fixture *f = *state;
	/* A capture for an attempt we never made. */
	confirm(f, 20, "never-made-attempt", "txn-orphan", "succeeded", 999);
	assert_int_equal(f->host.nack, 1);
	struct fake_req *rq = find_req(f, KP_OP_REFUND, NULL);
	assert_non_null(rq);
	assert_string_equal(rq->msg.host_txn, "txn-orphan");
	assert_string_equal(rq->msg.reason, "orphan");
	assert_int_equal(rq->msg.amount, 999);
	answer_refund(rq, "refunded");
	kp_refund r;
	assert_int_equal(kp_journal_refund_get(f->j, rq->msg.refund_id, &r), KP_OK);
	assert_int_equal(r.state, KP_REFUND_REFUNDED);

	/* A capture of another amount than the attempt asked for. */
	kp_order o;
	kp_attempt a;
	make_order(f, "mismatch-1", 700, &o);
	pay_pending(f, o.order_id, "card", &a);
	confirm(f, 21, a.attempt_id, "txn-mm", "succeeded", 70);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_PENDING);
	assert_int_equal(attempt_state(f, a.attempt_id), KP_ATTEMPT_REFUNDING);
	kp_refund rf[8];
	assert_int_equal(refunds(f, o.order_id, rf), 1);
	assert_int_equal(rf[0].reason, KP_REASON_AMOUNT_MISMATCH);
	assert_int_equal(rf[0].amount, 70);
}

static void test_vend_failure_refunds(void **state)
{
	struct fixture *f = *state;
	kp_order o, out;
	kp_attempt a;
	make_order(f, "vendfail-1", 180, &o);
	pay_pending(f, o.order_id, "card", &a);
	confirm(f, 30, a.attempt_id, "txn-v", "succeeded", 180);
	assert_int_equal(kp_engine_vend(f->e, o.order_id, false, &out), KP_OK);
	assert_int_equal(out.state, KP_ORDER_FULFILL_FAILED);
	kp_refund rf[8];
	assert_int_equal(refunds(f, o.order_id, rf), 1);
	assert_int_equal(rf[0].reason, KP_REASON_VEND_FAILED);
	answer_refund(find_req(f, KP_OP_REFUND, rf[0].refund_id), "rejected");
	assert_int_equal(attempt_state(f, a.attempt_id), KP_ATTEMPT_REFUND_REJECTED);
	kp_engine_stats st;
	kp_engine_stats_get(f->e, &st);
	assert_int_equal(st.alarms, 1);
}

static void test_give_up_unresolved(void **state)
{
	struct fixture *f = *state;
	kp_order o;
	kp_attempt a;
	make_order(f, "lost-1", 90, &o);
	pay_pending(f, o.order_id, "card", &a);
	f->host.up = false; /* the host is gone for good */
	advance(f, 70000);
	assert_int_equal(attempt_state(f, a.attempt_id), KP_ATTEMPT_CANCELING);
	advance_by(f, 25 * 3600000LL, 10000);
	assert_int_equal(attempt_state(f, a.attempt_id), KP_ATTEMPT_UNRESOLVED);
	kp_engine_stats st;
	kp_engine_stats_get(f->e, &st);
	assert_int_equal(st.alarms, 1);
}

static void test_confirm_not_committed_not_acked(void **state)
{
	struct fixture *f = *state;
	kp_order o;
	kp_attempt a;
	make_order(f, "fp-1", 50, &o);
	pay_pending(f, o.order_id, "card", &a);
	assert_int_equal(kp_failpoint_arm(60, 1, 1, KP_FP_ERROR), KP_OK);
	confirm(f, 40, a.attempt_id, "txn-fp", "succeeded", 50);
	kp_failpoint_disarm_all();
	assert_int_equal(f->host.nack, 0); /* not committed, so not acked */
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_PENDING);
	kp_confirmation c;
	assert_int_equal(kp_journal_confirmation_get(f->j, "txn-fp", &c), KP_ERR_NOT_FOUND);
	confirm(f, 40, a.attempt_id, "txn-fp", "succeeded", 50); /* redelivered */
	assert_int_equal(f->host.nack, 1);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_PAID);
}

/* Confirms read in one loop turn are applied by the next tick in one
 * transaction: nothing is acked before it commits, a confirm that fails is
 * rolled back alone (not acked: redelivered), a duplicate is acked again. */
static void test_confirm_burst_one_commit(void **state)
{
	struct fixture *f = *state;
	kp_order o[4];
	kp_attempt a[4];
	char key[16], txn[16];
	for (int i = 0; i < 4; i++) {
		snprintf(key, sizeof(key), "burst-%d", i);
		make_order(f, key, 100 + i, &o[i]);
		pay_pending(f, o[i].order_id, "card", &a[i]);
	}
	int acks = f->host.nack;
	/* The third confirm's commit fails (failpoint 60 fires on its 3rd pass). */
	assert_int_equal(kp_failpoint_arm(60, 3, 1, KP_FP_ERROR), KP_OK);
	for (int i = 0; i < 4; i++) {
		snprintf(txn, sizeof(txn), "txn-b%d", i);
		confirm_arrives(f, 100 + i, a[i].attempt_id, txn, "succeeded", 100 + i);
	}
	confirm_arrives(f, 100, a[0].attempt_id, "txn-b0", "succeeded", 100); /* doubled */
	/* Read but not yet applied: nothing changed, nothing acked. */
	assert_int_equal(f->host.nack, acks);
	for (int i = 0; i < 4; i++)
		assert_int_equal(order_state(f, o[i].order_id), KP_ORDER_PENDING);
	kp_count_stats before, after;
	kp_count_vfs_get(&before);
	(void)kp_engine_tick(f->e);
	kp_count_vfs_get(&after);
	kp_failpoint_disarm_all();
	assert_int_equal(after.syncs[KP_COUNT_WAL] - before.syncs[KP_COUNT_WAL], 1); /* one commit */
	assert_int_equal(f->host.nack, acks + 4); /* 0, 1, 3 and the double of 0 */
	for (int i = 0; i < f->host.nack - acks; i++)
		assert_int_not_equal(f->host.acks[acks + i], 102);
	kp_confirmation c;
	for (int i = 0; i < 4; i++) {
		snprintf(txn, sizeof(txn), "txn-b%d", i);
		assert_int_equal(kp_journal_confirmation_get(f->j, txn, &c), i == 2 ? KP_ERR_NOT_FOUND : KP_OK);
		assert_int_equal(order_state(f, o[i].order_id), i == 2 ? KP_ORDER_PENDING : KP_ORDER_PAID);
	}
	/* The host redelivers the one not acked. */
	confirm(f, 102, a[2].attempt_id, "txn-b2", "succeeded", 102);
	assert_int_equal(f->host.acks[f->host.nack - 1], 102);
	assert_int_equal(order_state(f, o[2].order_id), KP_ORDER_PAID);
}

/* Two customers' create_payment replies (each with a QR code) and a third's
 * confirm arrive in one loop turn: one commit (the confirm's; the replies
 * write nothing), and neither pay request is answered before it; each answer
 * shows its own QR code. */
static void test_pay_replies_share_commit(void **state)
{
	struct fixture *f = *state;
	kp_order o[3];
	kp_attempt paid;
	make_order(f, "share-0", 100, &o[0]);
	make_order(f, "share-1", 200, &o[1]);
	make_order(f, "share-2", 300, &o[2]);
	pay_pending(f, o[2].order_id, "card", &paid);
	struct pay_result r[2] = {{0}, {0}};
	struct fake_req *q[2];
	for (int i = 0; i < 2; i++) {
		assert_int_equal(kp_engine_pay(f->e, o[i].order_id, "qr", pay_done, &r[i]), KP_OK);
		q[i] = find_req(f, KP_OP_CREATE_PAYMENT, NULL);
		assert_non_null(q[i]);
	}
	kp_host_msg m[2];
	for (int i = 0; i < 2; i++) {
		char qr[64];
		snprintf(qr, sizeof(qr), "https://pay.example/qr/share-%d", i);
		pending_with_qr(&m[i], q[i], qr);
		q[i]->answered = true;
		q[i]->fn(q[i]->arg, KP_OK, &m[i]); /* read off the link, not yet applied */
	}
	confirm_arrives(f, 300, paid.attempt_id, "txn-share-2", "succeeded", 300);
	kp_attempt a;
	assert_int_equal(kp_journal_attempt_get(f->j, m[0].attempt_id, &a), KP_OK);
	assert_null(kp_engine_qr(f->e, &a)); /* not applied yet, and nobody told */
	assert_int_equal(r[0].calls + r[1].calls, 0);
	kp_count_stats before, after;
	kp_count_vfs_get(&before);
	(void)kp_engine_tick(f->e);
	kp_count_vfs_get(&after);
	assert_int_equal(after.syncs[KP_COUNT_WAL] - before.syncs[KP_COUNT_WAL], 1); /* one commit */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(r[i].calls, 1);
		assert_int_equal(r[i].err, KP_OK);
		assert_string_equal(r[i].a.attempt_id, m[i].attempt_id);
		assert_string_equal(r[i].qr, m[i].qr);
		assert_int_equal(kp_journal_attempt_get(f->j, m[i].attempt_id, &a), KP_OK);
		assert_string_equal(kp_engine_qr(f->e, &a), m[i].qr);
		assert_int_equal(a.state, KP_ATTEMPT_PAYING);
	}
	assert_int_equal(order_state(f, o[2].order_id), KP_ORDER_PAID);
}

/* The QR code is in memory only: a restarted engine shows none until the
 * boot replay's query brings it back (and observers are told); it is shown
 * only while its attempt is paying, and a second pending reply with the same
 * QR tells nobody again. */
static void test_qr_after_restart(void **state)
{
	struct fixture *f = *state;
	kp_order o;
	kp_attempt a;
	make_order(f, "qr-restart", 150, &o);
	pay_pending(f, o.order_id, "qr", &a);

	kp_engine_free(f->e); /* a restart: the journal stays */
	engine_start(f);
	assert_null(kp_engine_qr(f->e, &a));
	int64_t found = 0;
	assert_int_equal(kp_engine_recover(f->e, &found), KP_OK);
	assert_int_equal(found, 1);
	(void)kp_engine_tick(f->e);
	struct fake_req *q = find_req(f, KP_OP_QUERY_PAYMENT, a.attempt_id);
	assert_non_null(q);
	kp_host_msg m;
	pending_with_qr(&m, q, "https://pay.example/qr/again");
	int changes = f->host.changes;
	answer(q, KP_OK, &m);
	assert_int_equal(f->host.changes, changes + 1);
	kp_attempt now;
	assert_int_equal(kp_journal_attempt_get(f->j, a.attempt_id, &now), KP_OK);
	assert_int_equal(now.state, KP_ATTEMPT_PAYING);
	assert_string_equal(kp_engine_qr(f->e, &now), "https://pay.example/qr/again");

	/* The next query's reply repeats it: nobody is told twice. */
	advance(f, f->cfg.query_every_ms);
	q = find_req(f, KP_OP_QUERY_PAYMENT, a.attempt_id);
	assert_non_null(q);
	changes = f->host.changes;
	answer(q, KP_OK, &m);
	assert_int_equal(f->host.changes, changes);

	confirm(f, 7, a.attempt_id, "txn-qr-restart", "succeeded", 150);
	assert_int_equal(kp_journal_attempt_get(f->j, a.attempt_id, &now), KP_OK);
	assert_int_equal(now.state, KP_ATTEMPT_SUCCEEDED);
	assert_null(kp_engine_qr(f->e, &now));
}

/* More due attempts than a batch, and every move failing (a journal that
 * refuses writes): the reconciler tries again a second later, never at once
 * (no busy loop), and nothing moved. */
static void test_failing_journal_no_busy_loop(void **state)
{
	struct fixture *f = *state;
	char key[16];
	kp_order o;
	for (int i = 69; i >= 0; i--) {
		kp_attempt a;
		snprintf(key, sizeof(key), "busy-%d", i);
		make_order(f, key, 10 + i, &o);
		pay_pending(f, o.order_id, "card", &a);
	} /* o: the last made */
	/* Past the pay window: all 70 are due to be canceled. */
	kp_fake_advance(&f->world, f->cfg.pay_window_ms + 1);
	assert_int_equal(kp_failpoint_arm(4, 1, 1000000, KP_FP_ERROR), KP_OK); /* every attempt move */
	int64_t now = kp_now_wall(&f->env);
	int64_t next = kp_engine_tick(f->e);
	kp_failpoint_disarm_all();
	assert_true(next >= now + 1000);
	kp_attempt live;
	assert_int_equal(kp_journal_attempt_live(f->j, o.order_id, &live), KP_OK);
	assert_int_equal(live.state, KP_ATTEMPT_PAYING); /* nothing moved */
	/* The journal works again: the next tick cancels them. */
	kp_fake_advance(&f->world, 1000);
	(void)kp_engine_tick(f->e);
	(void)kp_engine_tick(f->e);
	assert_int_equal(kp_journal_attempt_live(f->j, o.order_id, &live), KP_OK);
	assert_int_equal(live.state, KP_ATTEMPT_CANCELING);
}

/* Another connection (kioskctl, say) commits an order: this connection's page
 * cache is stale, so its next transaction reads pages from the files. */
static void other_connection_writes(struct fixture *f)
{
	kp_journal *j2 = NULL;
	kp_order o;
	bool dup = true;
	assert_int_equal(kp_journal_open(&j2, f->path, 0, &f->env), KP_OK);
	kp_order_new req = {.order_id = "0195f0a0-0000-7000-8000-00000000beef", .dedup_key = "other-1",
			    .amount = 90, .currency = "EUR", .now = kp_now_wall(&f->env),
			    .expires_at = kp_now_wall(&f->env) + 300000};
	assert_int_equal(kp_journal_order_create(j2, &req, &o, &dup), KP_OK);
	kp_journal_close(j2);
}

/* An I/O error inside a tick (the Nth xWrite / xSync / xRead from the tick's
 * start fails, and every one after it until the tick returns), for N = 1, 2,
 * ... until the tick runs clean. The tick applies a confirm that pays the order;
 * another connection wrote just before, so the tick also reads from the files
 * (a read error in a statement makes SQLite roll the whole transaction back).
 * Each time: nothing of the batch is told (no ack) unless it is committed; the
 * journal is left at no transaction level and takes the next write (SQLite may
 * have ended the transaction itself: the tick must still close its level);
 * the host's redelivery of the confirm then pays the order and is acked. */
static void test_io_error_inside_tick(void **state)
{
	(void)state;
	static const struct {
		kp_crashvfs_op op;
		const char *name;
	} ops[] = {{KP_CVFS_WRITE, "write"}, {KP_CVFS_SYNC, "sync"}, {KP_CVFS_READ, "read"}};
	kp_crashvfs_config cc;
	kp_crashvfs_config_init(&cc);
	cc.real_sync = true; /* no crash here: the files must stay as they are */
	for (size_t k = 0; k < sizeof(ops) / sizeof(ops[0]); k++) {
		int failed_ticks = 0;
		for (uint64_t n = 1;; n++) {
			assert_true(n < 500); /* a tick does a few dozen I/O calls */
			assert_int_equal(kp_crashvfs_register(&cc, false), KP_OK);
			struct fixture *f = fixture_open(KP_CRASHVFS_NAME);
			kp_order o, o2;
			kp_attempt a;
			make_order(f, "io-1", 300, &o);
			pay_pending(f, o.order_id, "card", &a);
			confirm_arrives(f, 1, a.attempt_id, "txn-io-1", "succeeded", 300);

			other_connection_writes(f);
			kp_crashvfs_ioerr_arm(ops[k].op, n, true);
			(void)kp_engine_tick(f->e);
			uint64_t fired = kp_crashvfs_ioerr_fired();
			kp_crashvfs_ioerr_arm(ops[k].op, 0, false);

			bool paid = order_state(f, o.order_id) == KP_ORDER_PAID;
			if (fired == 0) { /* the tick did fewer than n calls of op: done */
				assert_true(paid);
				assert_int_equal(f->host.nack, 1);
			} else {
				failed_ticks += !paid;
				/* Told only what is committed: an ack means the order is paid. */
				assert_true(f->host.nack == 0 || paid);
				assert_false(kp_journal_in_txn(f->j));
				/* The journal takes writes again, at once. */
				make_order(f, "io-2", 120, &o2);
				/* The host redelivers the unacked confirm (or a duplicate). */
				confirm(f, 1, a.attempt_id, "txn-io-1", "succeeded", 300);
				assert_int_equal(order_state(f, o.order_id), KP_ORDER_PAID);
				assert_int_equal(attempt_state(f, a.attempt_id), KP_ATTEMPT_SUCCEEDED);
				assert_true(f->host.nack >= 1);
				assert_int_equal(f->host.acks[f->host.nack - 1], 1);
			}
			void *st = f;
			assert_int_equal(teardown(&st), 0);
			kp_crashvfs_unregister();
			if (fired == 0) {
				fprintf(stderr, "ioerr-%s: %d of %llu failing calls cost the tick its batch\n", ops[k].name,
					failed_ticks, (unsigned long long)(n - 1));
				break;
			}
		}
		assert_true(failed_ticks > 0); /* the fault really reached the batch */
	}
}

static int count_attempts(struct fixture *f, const kp_attempt *a, int n, kp_attempt_state st, int tries)
{
	int k = 0;
	for (int i = 0; i < n; i++) {
		kp_attempt now;
		assert_int_equal(kp_journal_attempt_get(f->j, a[i].attempt_id, &now), KP_OK);
		k += now.state == st && (tries < 0 || now.tries == tries);
	}
	return k;
}

/* A backlog larger than the host window (a boot replay): at most
 * KP_ENGINE_HOST_WINDOW requests in flight, however often the loop ticks; the
 * rest wait untouched (still paying, no try counted: no backoff to sit out)
 * and go as soon as answers open the window, without the clock moving. */
static void test_host_window(void **state)
{
	struct fixture *f = *state;
	enum { N = KP_ENGINE_HOST_WINDOW + 40 };
	kp_attempt *a = calloc(N, sizeof(*a));
	assert_non_null(a);
	char key[16];
	for (int i = 0; i < N; i++) {
		kp_order o;
		snprintf(key, sizeof(key), "win-%d", i);
		make_order(f, key, 10 + i, &o);
		pay_pending(f, o.order_id, "card", &a[i]);
	}
	int tries0 = a[0].tries;
	kp_fake_advance(&f->world, f->cfg.pay_window_ms + 1); /* all N due to be canceled */
	for (int i = 0; i < 20; i++)
		(void)kp_engine_tick(f->e);
	assert_int_equal(count_req(f, KP_OP_CANCEL_PAYMENT), KP_ENGINE_HOST_WINDOW);
	assert_int_equal(count_attempts(f, a, N, KP_ATTEMPT_CANCELING, -1), KP_ENGINE_HOST_WINDOW);
	assert_int_equal(count_attempts(f, a, N, KP_ATTEMPT_PAYING, tries0), 40);
	/* One answer: one more goes out. */
	struct fake_req *c = find_req(f, KP_OP_CANCEL_PAYMENT, NULL);
	answer_payment(c, "canceled", NULL, 0);
	assert_int_equal(count_req(f, KP_OP_CANCEL_PAYMENT), KP_ENGINE_HOST_WINDOW + 1);
	/* Answer everything as it comes: all N canceled, the clock never moved. */
	while ((c = find_req(f, KP_OP_CANCEL_PAYMENT, NULL)))
		answer_payment(c, "canceled", NULL, 0);
	assert_int_equal(count_req(f, KP_OP_CANCEL_PAYMENT), N);
	assert_int_equal(count_attempts(f, a, N, KP_ATTEMPT_CANCELED, -1), N);
	free(a);
}

static void test_power_cut_policy_on_recover(void **state)
{
	struct fixture *f = *state;
	kp_order o;
	kp_attempt a;
	make_order(f, "cut-1", 260, &o);
	pay_pending(f, o.order_id, "card", &a);
	confirm(f, 50, a.attempt_id, "txn-cut", "succeeded", 260);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_PAID);
	/* Restart: paid, vend outcome never recorded -> refund (default policy). */
	advance(f, 1000);
	int64_t found = 0;
	assert_int_equal(kp_engine_recover(f->e, &found), KP_OK);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_FULFILL_FAILED);
	kp_refund rf[8];
	assert_int_equal(refunds(f, o.order_id, rf), 1);
	assert_int_equal(rf[0].reason, KP_REASON_POWER_CUT);
	(void)kp_engine_tick(f->e);
	assert_non_null(find_req(f, KP_OP_REFUND, rf[0].refund_id));
}

static void test_cancel_order_then_late_success(void **state)
{
	struct fixture *f = *state;
	kp_order o, out;
	kp_attempt a;
	make_order(f, "cancel-1", 330, &o);
	pay_pending(f, o.order_id, "card", &a);
	assert_int_equal(kp_engine_cancel(f->e, o.order_id, &out), KP_OK);
	assert_int_equal(out.state, KP_ORDER_CANCELED);
	assert_int_equal(attempt_state(f, a.attempt_id), KP_ATTEMPT_CANCELING);
	answer_payment(find_req(f, KP_OP_CANCEL_PAYMENT, a.attempt_id), "succeeded", "txn-cx", 330);
	assert_int_equal(attempt_state(f, a.attempt_id), KP_ATTEMPT_REFUNDING);
	kp_refund rf[8];
	assert_int_equal(refunds(f, o.order_id, rf), 1);
	assert_int_equal(rf[0].reason, KP_REASON_LATE);
	assert_int_equal(kp_engine_cancel(f->e, o.order_id, &out), KP_OK); /* again: fine */
}

/* The kept success is found however many attempts came before it. */
static void test_vend_failure_after_many_attempts(void **state)
{
	struct fixture *f = *state;
	kp_order o, out;
	kp_attempt a;
	make_order(f, "many-1", 140, &o);
	for (int i = 0; i < 40; i++) {
		char txn[32];
		pay_pending(f, o.order_id, i % 2 ? "card" : "qr", &a);
		snprintf(txn, sizeof(txn), "txn-fail-%d", i);
		confirm(f, 100 + i, a.attempt_id, txn, "failed", 140);
		f->host.nreq = 0; /* keep the fake host's table small */
	}
	pay_pending(f, o.order_id, "card", &a);
	confirm(f, 200, a.attempt_id, "txn-kept", "succeeded", 140);
	assert_int_equal(order_state(f, o.order_id), KP_ORDER_PAID);
	assert_int_equal(kp_engine_vend(f->e, o.order_id, false, &out), KP_OK);
	assert_int_equal(out.state, KP_ORDER_FULFILL_FAILED);
	kp_refund rf[8];
	assert_int_equal(refunds(f, o.order_id, rf), 1);
	assert_string_equal(rf[0].host_txn, "txn-kept");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_order_validation_and_dedup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sale_confirm_vend, setup, teardown),
		cmocka_unit_test_setup_teardown(test_order_pay_one_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_order_pay_host_refuses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pay_commit_error_after_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_double_tap_without_qr_asks_again, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pay_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_repay_after_failed_attempt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_channels_both_paid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_loses_race, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_confirm_queries_then_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queries_beyond_memory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_error_and_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_orphan_and_amount_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vend_failure_refunds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_give_up_unresolved, setup, teardown),
		cmocka_unit_test_setup_teardown(test_confirm_not_committed_not_acked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_confirm_burst_one_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pay_replies_share_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_qr_after_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failing_journal_no_busy_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_window, setup, teardown),
		cmocka_unit_test_setup_teardown(test_power_cut_policy_on_recover, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_order_then_late_success, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vend_failure_after_many_attempts, setup, teardown),
		cmocka_unit_test(test_io_error_inside_tick),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
