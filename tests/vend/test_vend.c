/* test_vend.c — the MDB reader wired to the real engine and journal, with
 * the in-process VMC on the far side and a fake payment host, all on the
 * fake clock: approved + vended, payment failed, the VMC's cancel, vend
 * failure refunded, our patience, a repeated VEND SUCCESS, stop/resume
 * selling, commits that fail (the VMC repeats, one order), and a reset before
 * the approval reached the VMC. A spy between the reader and the VMC checks
 * on every reply that the journal already holds what the reply says. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "journal.h"
#include "kp_env.h"
#include "kp_failpoint.h"
#include "mdb_sim.h"
#include "vend.h"

#define T0 1700000000000LL
#define MAXREQ 256
#define PATIENCE_MS 5000

/* ---- fake payment host: answers at once, the test plays the customer ---- */

struct fake_req {
	kp_host_msg msg;
	kp_engine_reply_fn fn;
	void *arg;
	bool answered;
};

struct fake_host {
	bool up;
	struct fake_req reqs[MAXREQ];
	int nreq;
	char paid[16][KP_ID_SIZE]; /* attempts the customer paid */
	int npaid;
	int seq;
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
	struct fake_req *r = &fh->reqs[fh->nreq++];
	memset(r, 0, sizeof(*r));
	r->msg = *req;
	r->fn = fn;
	r->arg = arg;
	return KP_OK;
}

static kp_err fh_ack(void *h, int64_t seq)
{
	(void)h;
	(void)seq;
	return KP_OK;
}

static const kp_host_ops fake_ops = {.up = fh_up, .request = fh_request, .ack = fh_ack};

static bool fh_is_paid(const struct fake_host *fh, const char *attempt_id)
{
	for (int i = 0; i < fh->npaid; i++)
		if (strcmp(fh->paid[i], attempt_id) == 0)
			return true;
	return false;
}

/* The host's transaction id of an attempt. */
static void txn_of(const char *attempt_id, char *out, size_t cap)
{
	snprintf(out, cap, "txn-%.36s", attempt_id);
}

/* Answer every request: payments stay pending unless paid, cancels cancel
 * unless paid, refunds are refunded. */
static void fh_pump(struct fake_host *fh)
{
	for (int i = 0; i < fh->nreq; i++) {
		struct fake_req *r = &fh->reqs[i];
		if (r->answered)
			continue;
		r->answered = true;
		kp_host_msg m;
		memset(&m, 0, sizeof(m));
		switch (r->msg.op) {
		case KP_OP_CREATE_PAYMENT:
		case KP_OP_QUERY_PAYMENT:
		case KP_OP_CANCEL_PAYMENT: {
			bool paid = fh_is_paid(fh, r->msg.attempt_id);
			m.op = KP_OP_PAYMENT;
			snprintf(m.attempt_id, sizeof(m.attempt_id), "%s", r->msg.attempt_id);
			snprintf(m.status, sizeof(m.status), "%s",
				 paid ? "succeeded" : r->msg.op == KP_OP_CANCEL_PAYMENT ? "canceled" : "pending");
			if (paid)
				txn_of(r->msg.attempt_id, m.host_txn, sizeof(m.host_txn));
			break;
		}
		case KP_OP_REFUND:
		case KP_OP_QUERY_REFUND:
			m.op = KP_OP_REFUND_REPLY;
			snprintf(m.refund_id, sizeof(m.refund_id), "%s", r->msg.refund_id);
			snprintf(m.status, sizeof(m.status), "refunded");
			break;
		default:
			r->fn(r->arg, KP_ERR_PROTOCOL, NULL);
			continue;
		}
		r->fn(r->arg, KP_OK, &m);
	}
}

/* ---- spy transport: between the reader and the VMC ---- */

struct spy {
	kp_mdb_transport inner;
	kp_journal *j;
	uint8_t last[2];  /* the VMC's last command bytes */
	bool drop;        /* our replies are lost until the VMC resets */
	unsigned checked; /* replies whose commit was checked */
	unsigned dropped;
};

struct newest {
	kp_order o;
	int n;
};

static kp_err newest_fn(void *arg, const kp_order *o)
{
	struct newest *nw = arg;
	nw->o = *o; /* oldest first: the last one wins */
	nw->n++;
	return KP_OK;
}

static int orders(kp_journal *j, kp_order *newest)
{
	struct newest nw;
	memset(&nw, 0, sizeof(nw));
	assert_int_equal(kp_journal_orders_each(j, newest_fn, &nw), KP_OK);
	if (newest)
		*newest = nw.o;
	return nw.n;
}

static kp_err spy_recv(void *impl, uint16_t *w, size_t cap, size_t *n)
{
	struct spy *s = impl;
	kp_err err = kp_mdb_transport_recv(&s->inner, w, cap, n);
	if (err == KP_OK && (w[0] & 0x100)) {
		s->last[0] = (uint8_t)w[0];
		s->last[1] = *n > 1 ? (uint8_t)w[1] : 0;
		if (s->last[0] == 0x10)
			s->drop = false; /* the VMC gave up on us and resets: hear it */
	}
	return err;
}

static kp_err spy_send(void *impl, const uint16_t *w, size_t n)
{
	struct spy *s = impl;
	kp_order o;
	bool data = n > 1;
	uint8_t first = (uint8_t)w[0];
	if (data && first == 0x05) {
		assert_true(orders(s->j, &o) > 0);
		assert_int_equal(o.state, KP_ORDER_PAID); /* 05 only after the success is committed */
		s->checked++;
	} else if (data && first == 0x06) {
		if (orders(s->j, &o) > 0)
			assert_int_not_equal(o.state, KP_ORDER_PENDING); /* 06 after the cancel is committed */
		s->checked++;
	} else if (!data && s->last[0] == 0x13 && s->last[1] == 0x00) {
		assert_true(orders(s->j, &o) > 0); /* VEND REQUEST ACKed: the order exists */
		s->checked++;
	} else if (!data && s->last[0] == 0x13 && (s->last[1] == 0x02 || s->last[1] == 0x03)) {
		assert_true(orders(s->j, &o) > 0);
		if (o.state == KP_ORDER_FULFILLED || o.state == KP_ORDER_FULFILL_FAILED)
			s->checked++;
		else
			fail_msg("VEND %s ACKed with the order %s", s->last[1] == 2 ? "SUCCESS" : "FAILURE",
				 kp_order_state_str(o.state));
	}
	if (s->drop) {
		s->dropped++;
		return KP_OK; /* lost on the wire */
	}
	return kp_mdb_transport_send(&s->inner, w, n);
}

static int spy_fd(void *impl)
{
	(void)impl;
	return -1;
}

static void spy_close(void *impl)
{
	(void)impl;
}

static const kp_mdb_transport_ops spy_ops = {
	.name = "spy", .recv = spy_recv, .send = spy_send, .fd = spy_fd, .close = spy_close};

/* ---- the world ---- */

struct world {
	char dir[64];
	char path[128];
	kp_env env;
	kp_fake_world fw;
	kp_journal *j;
	kp_engine *e;
	struct fake_host host;
	kp_mdb_sim *sim;
	struct spy spy;
	kp_vend *v;
	int seen_req; /* host requests looked at by wait_attempt */
};

static void on_change(void *arg, const char *order_id)
{
	struct world *w = arg;
	kp_vend_on_change(w->v, order_id);
}

static bool host_up(void *arg)
{
	return ((struct world *)arg)->host.up;
}

static int setup(void **state)
{
	struct world *w = calloc(1, sizeof(*w));
	snprintf(w->dir, sizeof(w->dir), "/tmp/kp-vend-XXXXXX");
	assert_non_null(mkdtemp(w->dir));
	snprintf(w->path, sizeof(w->path), "%s/journal.db", w->dir);
	kp_env_init_fake(&w->env, &w->fw, 11, T0);
	w->fw.quiet = true;
	assert_int_equal(kp_journal_open(&w->j, w->path, 0, &w->env), KP_OK);
	kp_engine_config ec;
	kp_engine_config_defaults(&ec);
	w->host.up = true;
	kp_engine_deps ed = {.env = &w->env, .journal = w->j, .host_ops = &fake_ops, .host = &w->host,
			     .on_change = on_change, .on_change_arg = w};
	assert_int_equal(kp_engine_new(&w->e, &ec, &ed), KP_OK);
	assert_int_equal(kp_mdb_sim_new(&w->sim, &w->env, 5), KP_OK);
	kp_mdb_sim_set_non_response(w->sim, 500);
	kp_mdb_sim_transport(w->sim, &w->spy.inner);
	w->spy.j = w->j;
	kp_vend_config vc = {.currency = "EUR", .max_amount = 10000, .patience_ms = PATIENCE_MS};
	kp_vend_deps vd = {.env = &w->env, .engine = w->e, .journal = w->j,
			   .transport = {.ops = &spy_ops, .impl = &w->spy}, .host_up = host_up, .host_arg = w};
	assert_int_equal(kp_vend_new(&w->v, &vc, &vd), KP_OK);
	*state = w;
	return 0;
}

static void print_problem(void *arg, const char *problem)
{
	(void)arg;
	fprintf(stderr, "journal check: %s\n", problem);
}

static int teardown(void **state)
{
	struct world *w = *state;
	kp_failpoint_disarm_all();
	kp_vend_free(w->v);
	kp_engine_free(w->e);
	assert_int_equal(kp_journal_check(w->j, print_problem, NULL), KP_OK);
	kp_journal_close(w->j);
	kp_mdb_sim_free(w->sim);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", w->dir);
	if (system(cmd) != 0)
		return -1;
	free(w);
	return 0;
}

/* One turn of the daemon's loop, 25 ms later. */
static void step(struct world *w)
{
	kp_fake_advance(&w->fw, 25);
	(void)kp_engine_tick(w->e);
	fh_pump(&w->host);
	kp_vend_process(w->v);
	fh_pump(&w->host);
}

static void run_ms(struct world *w, int64_t ms)
{
	for (int64_t t = 0; t < ms; t += 25)
		step(w);
}

static kp_mdb_sim_stats sim_stats(struct world *w)
{
	kp_mdb_sim_stats st;
	kp_mdb_sim_stats_get(w->sim, &st);
	return st;
}

static kp_vend_stats vend_stats(struct world *w)
{
	kp_vend_stats st;
	kp_vend_stats_get(w->v, &st);
	return st;
}

/* Run until the VMC has finished n selections in all. */
static void run_until_done(struct world *w, unsigned n, int64_t max_ms)
{
	for (int64_t t = 0; t < max_ms; t += 25) {
		if (sim_stats(w).selections_done >= n)
			return;
		step(w);
	}
	fail_msg("VMC state %s after %lld ms: %u selections done, want %u", kp_mdb_sim_state_name(w->sim),
		 (long long)max_ms, sim_stats(w).selections_done, n);
}

/* The attempt of the next create_payment not seen yet, once the engine sent it. */
static const char *wait_attempt(struct world *w, int64_t max_ms)
{
	for (int64_t t = 0; t < max_ms; t += 25) {
		for (int i = w->seen_req; i < w->host.nreq; i++) {
			if (w->host.reqs[i].msg.op == KP_OP_CREATE_PAYMENT) {
				w->seen_req = i + 1;
				return w->host.reqs[i].msg.attempt_id;
			}
		}
		step(w);
	}
	fail_msg("no create_payment within %lld ms (VMC %s)", (long long)max_ms, kp_mdb_sim_state_name(w->sim));
	return NULL;
}

static void confirm(struct world *w, const char *attempt_id, const char *status, int64_t amount)
{
	if (strcmp(status, "succeeded") == 0) {
		snprintf(w->host.paid[w->host.npaid++], KP_ID_SIZE, "%s", attempt_id);
	}
	kp_host_msg c;
	memset(&c, 0, sizeof(c));
	c.op = KP_OP_CONFIRM;
	c.seq = ++w->host.seq;
	snprintf(c.attempt_id, sizeof(c.attempt_id), "%s", attempt_id);
	txn_of(attempt_id, c.host_txn, sizeof(c.host_txn));
	snprintf(c.status, sizeof(c.status), "%s", status);
	snprintf(c.currency, sizeof(c.currency), "EUR");
	c.amount = amount;
	c.at = kp_now_wall(&w->env);
	kp_engine_on_confirm(w->e, &c);
}

static void select_item(struct world *w, uint16_t price, uint16_t item, kp_mdb_sim_dispense d, bool repeat)
{
	kp_mdb_sim_selection sel = {.price = price, .item = item, .dispense = d, .repeat_outcome = repeat};
	assert_int_equal(kp_mdb_sim_select_ex(w->sim, &sel), KP_OK);
}

static int refunds_of(struct world *w, const char *order_id, kp_refund *first)
{
	kp_refund arr[4];
	size_t n = 0;
	assert_int_equal(kp_journal_refunds_of_order(w->j, order_id, arr, 4, &n), KP_OK);
	if (n > 0 && first)
		*first = arr[0];
	return (int)n;
}

static int events_to(struct world *w, const char *to_state)
{
	kp_event ev[256];
	size_t n = 0;
	assert_int_equal(kp_journal_events(w->j, 0, ev, 256, &n), KP_OK);
	int k = 0;
	for (size_t i = 0; i < n; i++)
		k += strcmp(ev[i].kind, "order") == 0 && strcmp(ev[i].to_state, to_state) == 0;
	return k;
}

/* ---- scenarios ---- */

static void test_approved_and_vended(void **state)
{
	struct world *w = *state;
	run_ms(w, 500); /* RESET, setup, enable, a session on offer */
	assert_int_equal(sim_stats(w).setups, 1);
	select_item(w, 150, 7, KP_MDB_SIM_DISPENSE_OK, false);
	const char *att = wait_attempt(w, 2000);
	kp_order o;
	assert_int_equal(orders(w->j, &o), 1);
	assert_int_equal(o.state, KP_ORDER_PENDING);
	assert_int_equal(o.amount, 150);
	assert_true(strncmp(o.dedup_key, "mdb-", 4) == 0);
	assert_string_equal(o.items, "[{\"mdb_item\":7,\"qty\":1}]");
	kp_attempt a;
	assert_int_equal(kp_journal_attempt_get(w->j, att, &a), KP_OK);
	assert_string_equal(a.channel, "mdb");
	run_ms(w, 1000);
	assert_int_equal(sim_stats(w).approved, 0); /* nothing before the money */
	confirm(w, att, "succeeded", 150);
	run_until_done(w, 1, 2000);
	kp_mdb_sim_stats st = sim_stats(w);
	assert_int_equal(st.approved, 1);
	assert_int_equal(st.last_approved, 150);
	assert_int_equal(st.dispensed, 1);
	assert_int_equal(st.dispensed_value, 150);
	assert_int_equal(st.denied, 0);
	assert_int_equal(st.retries, 0);
	assert_int_equal(orders(w->j, &o), 1);
	assert_int_equal(o.state, KP_ORDER_FULFILLED);
	kp_vend_stats vs = vend_stats(w);
	assert_int_equal(vs.vend_requests, 1);
	assert_int_equal(vs.orders, 1);
	assert_int_equal(vs.approved, 1);
	assert_int_equal(vs.vend_success, 1);
	assert_int_equal(vs.commit_failures, 0);
	assert_true(w->spy.checked >= 3); /* VEND REQUEST ACK, 05, VEND SUCCESS ACK */
	assert_true(kp_vend_link_up(w->v));
	/* the session ends and the next one is offered */
	run_ms(w, 500);
	st = sim_stats(w);
	assert_int_equal(st.sessions_ended, 1);
	assert_int_equal(st.sessions, 2);
}

static void test_payment_failed_denied(void **state)
{
	struct world *w = *state;
	run_ms(w, 500);
	select_item(w, 200, 2, KP_MDB_SIM_DISPENSE_OK, false);
	const char *att = wait_attempt(w, 2000);
	confirm(w, att, "failed", 200);
	run_until_done(w, 1, 2000);
	kp_mdb_sim_stats st = sim_stats(w);
	assert_int_equal(st.denied, 1);
	assert_int_equal(st.approved, 0);
	assert_int_equal(st.dispensed, 0);
	kp_order o;
	assert_int_equal(orders(w->j, &o), 1);
	assert_int_equal(o.state, KP_ORDER_CANCELED);
	kp_attempt a;
	assert_int_equal(kp_journal_attempt_get(w->j, att, &a), KP_OK);
	assert_int_equal(a.state, KP_ATTEMPT_FAILED);
	assert_int_equal(vend_stats(w).denied, 1);
}

static void test_vmc_cancel(void **state)
{
	struct world *w = *state;
	run_ms(w, 500);
	select_item(w, 120, 3, KP_MDB_SIM_DISPENSE_OK, false);
	const char *att = wait_attempt(w, 2000);
	assert_int_equal(kp_mdb_sim_cancel(w->sim), KP_OK);
	run_until_done(w, 1, 2000);
	kp_mdb_sim_stats st = sim_stats(w);
	assert_int_equal(st.vend_cancels, 1);
	assert_int_equal(st.denied, 1);
	kp_order o;
	assert_int_equal(orders(w->j, &o), 1);
	assert_int_equal(o.state, KP_ORDER_CANCELED);
	run_ms(w, 200); /* the cancel reaches the host */
	kp_attempt a;
	assert_int_equal(kp_journal_attempt_get(w->j, att, &a), KP_OK);
	assert_int_equal(a.state, KP_ATTEMPT_CANCELED);
	assert_int_equal(kp_mdb_sim_cancel(w->sim), KP_ERR_STATE); /* nothing waits now */
}

static void test_vend_failure_refunded(void **state)
{
	struct world *w = *state;
	run_ms(w, 500);
	select_item(w, 90, 4, KP_MDB_SIM_DISPENSE_FAIL, false);
	const char *att = wait_attempt(w, 2000);
	confirm(w, att, "succeeded", 90);
	run_until_done(w, 1, 2000);
	kp_mdb_sim_stats st = sim_stats(w);
	assert_int_equal(st.approved, 1);
	assert_int_equal(st.dispense_failed, 1);
	assert_int_equal(st.dispensed_value, 0);
	kp_order o;
	assert_int_equal(orders(w->j, &o), 1);
	assert_int_equal(o.state, KP_ORDER_FULFILL_FAILED);
	run_ms(w, 200);
	kp_refund r;
	assert_int_equal(refunds_of(w, o.order_id, &r), 1);
	assert_int_equal(r.reason, KP_REASON_VEND_FAILED);
	assert_int_equal(r.state, KP_REFUND_REFUNDED);
	assert_int_equal(r.amount, 90);
	assert_int_equal(vend_stats(w).refunds, 1);
}

static void test_patience_runs_out(void **state)
{
	struct world *w = *state;
	run_ms(w, 500);
	select_item(w, 300, 5, KP_MDB_SIM_DISPENSE_OK, false);
	const char *att = wait_attempt(w, 2000);
	char attempt_id[KP_ID_SIZE];
	snprintf(attempt_id, sizeof(attempt_id), "%s", att);
	run_ms(w, PATIENCE_MS - 500);
	assert_int_equal(sim_stats(w).denied, 0);
	run_until_done(w, 1, 1500);
	kp_mdb_sim_stats st = sim_stats(w);
	assert_int_equal(st.denied, 1);
	assert_int_equal(st.vend_cancels, 0); /* we answered before the VMC's Z7 */
	assert_int_equal(vend_stats(w).patience_expired, 1);
	kp_order o;
	assert_int_equal(orders(w->j, &o), 1);
	assert_int_equal(o.state, KP_ORDER_CANCELED);
	/* the customer pays after all: the engine refunds it as late */
	confirm(w, attempt_id, "succeeded", 300);
	run_ms(w, 200);
	kp_refund r;
	assert_int_equal(refunds_of(w, o.order_id, &r), 1);
	assert_int_equal(r.reason, KP_REASON_LATE);
	assert_int_equal(sim_stats(w).approved, 0);
}

static void test_repeated_vend_success(void **state)
{
	struct world *w = *state;
	run_ms(w, 500);
	select_item(w, 150, 1, KP_MDB_SIM_DISPENSE_OK, true);
	const char *att = wait_attempt(w, 2000);
	confirm(w, att, "succeeded", 150);
	run_until_done(w, 1, 2000);
	kp_mdb_sim_stats st = sim_stats(w);
	assert_int_equal(st.outcomes_repeated, 1);
	assert_int_equal(st.dispensed, 1);
	assert_int_equal(st.out_of_sequence, 0);
	kp_order o;
	assert_int_equal(orders(w->j, &o), 1);
	assert_int_equal(o.state, KP_ORDER_FULFILLED);
	assert_int_equal(events_to(w, "fulfilled"), 1);
	assert_int_equal(vend_stats(w).vend_success, 1);
	assert_int_equal(refunds_of(w, o.order_id, NULL), 0);
}

static void test_stop_and_resume_selling(void **state)
{
	struct world *w = *state;
	run_ms(w, 500);
	/* a vend in flight when selling stops goes on */
	select_item(w, 150, 1, KP_MDB_SIM_DISPENSE_OK, false);
	const char *att = wait_attempt(w, 2000);
	kp_vend_set_selling(w->v, false, "power failing");
	confirm(w, att, "succeeded", 150);
	run_until_done(w, 1, 2000);
	assert_int_equal(sim_stats(w).dispensed, 1);
	/* but no new session is offered */
	unsigned sessions = sim_stats(w).sessions;
	run_ms(w, 2000);
	assert_int_equal(sim_stats(w).sessions, sessions);
	select_item(w, 100, 2, KP_MDB_SIM_DISPENSE_OK, false);
	run_ms(w, 1000);
	assert_int_equal(orders(w->j, NULL), 1);
	/* back: the waiting customer gets their session */
	kp_vend_set_selling(w->v, true, "power back");
	att = wait_attempt(w, 2000);
	assert_int_equal(orders(w->j, NULL), 2);
	confirm(w, att, "succeeded", 100);
	run_until_done(w, 2, 2000);
	assert_int_equal(sim_stats(w).dispensed, 2);
	/* an idle session is asked to end when selling stops */
	run_ms(w, 300);
	unsigned cancels = sim_stats(w).session_cancels;
	kp_vend_set_selling(w->v, false, "power failing");
	run_ms(w, 500);
	assert_int_equal(sim_stats(w).session_cancels, cancels + 1);
}

static void test_host_down_no_session(void **state)
{
	struct world *w = *state;
	w->host.up = false;
	run_ms(w, 1000);
	assert_int_equal(sim_stats(w).setups, 1);
	assert_int_equal(sim_stats(w).sessions, 0);
	w->host.up = true;
	run_ms(w, 200);
	assert_int_equal(sim_stats(w).sessions, 1);
}

static void test_failed_commits_repeat(void **state)
{
	struct world *w = *state;
	run_ms(w, 500);
	/* the order's commit fails once: silence, the VMC repeats, one order */
	assert_int_equal(kp_failpoint_arm(1, 1, 1, KP_FP_ERROR), KP_OK);
	select_item(w, 150, 1, KP_MDB_SIM_DISPENSE_HOLD, false);
	const char *att = wait_attempt(w, 2000);
	assert_int_equal(vend_stats(w).commit_failures, 1);
	assert_true(sim_stats(w).retries >= 1);
	assert_int_equal(orders(w->j, NULL), 1);
	/* VEND SUCCESS: committed, but the answer is lost (failpoint 9): the
	 * repeat finds the order fulfilled already and is ACKed */
	confirm(w, att, "succeeded", 150);
	run_ms(w, 300);
	assert_int_equal(sim_stats(w).approved, 1);
	assert_int_equal(kp_mdb_sim_dispense_now(w->sim, true), KP_OK);
	assert_int_equal(kp_mdb_sim_dispense_now(w->sim, true), KP_ERR_STATE);
	kp_failpoint_disarm_all();
	assert_int_equal(kp_failpoint_arm(9, 1, 1, KP_FP_ERROR), KP_OK);
	run_until_done(w, 1, 2000);
	kp_order o;
	assert_int_equal(orders(w->j, &o), 1);
	assert_int_equal(o.state, KP_ORDER_FULFILLED);
	assert_int_equal(vend_stats(w).commit_failures, 2);
	assert_int_equal(sim_stats(w).dispensed, 1);
	assert_int_equal(sim_stats(w).out_of_sequence, 0);
	/* a second sale: the VEND REQUEST's order and attempt are committed but
	 * the commit reports an error; the engine finds the attempt in the
	 * journal and sends it: the vend goes on, no failure, one order */
	kp_failpoint_disarm_all();
	run_ms(w, 500);
	assert_int_equal(kp_failpoint_arm(9, 1, 1, KP_FP_ERROR), KP_OK);
	select_item(w, 80, 2, KP_MDB_SIM_DISPENSE_OK, false);
	att = wait_attempt(w, 2000);
	assert_int_equal(vend_stats(w).commit_failures, 2);
	assert_int_equal(orders(w->j, NULL), 2);
	assert_int_equal(vend_stats(w).orders, 2);
	confirm(w, att, "succeeded", 80);
	run_until_done(w, 2, 2000);
	assert_int_equal(orders(w->j, NULL), 2);
	assert_int_equal(sim_stats(w).dispensed_value, 230);
}

/* The VEND REQUEST's order and attempt are committed, the commit reports an
 * error (failpoint 9) and the read that would find the attempt fails too
 * (failpoint 12): the engine does not know it was written, the VMC hears
 * nothing and repeats. The repeat finds the order by its key and pays it
 * with the attempt already there (the same create_payment, sent once): one
 * order, one attempt, one capture, one dispense, no refund. */
static void test_repeat_finds_the_order(void **state)
{
	struct world *w = *state;
	run_ms(w, 500);
	assert_int_equal(kp_failpoint_arm(9, 1, 1, KP_FP_ERROR), KP_OK);
	assert_int_equal(kp_failpoint_arm(12, 1, 1, KP_FP_ERROR), KP_OK);
	select_item(w, 150, 3, KP_MDB_SIM_DISPENSE_OK, false);
	const char *att = wait_attempt(w, 2000);
	assert_int_equal(kp_failpoint_hits(12), 1); /* the read after the lost answer did fail */
	assert_int_equal(vend_stats(w).commit_failures, 1);
	assert_true(sim_stats(w).retries >= 1);
	kp_order o;
	assert_int_equal(orders(w->j, &o), 1);
	kp_attempt arr[4];
	size_t n = 0;
	assert_int_equal(kp_journal_attempts_of_order(w->j, o.order_id, arr, 4, &n), KP_OK);
	assert_int_equal(n, 1);
	assert_string_equal(arr[0].attempt_id, att);
	kp_failpoint_disarm_all();
	confirm(w, att, "succeeded", 150);
	run_until_done(w, 1, 2000);
	assert_int_equal(orders(w->j, &o), 1);
	assert_int_equal(o.state, KP_ORDER_FULFILLED);
	int creates = 0;
	for (int i = 0; i < w->host.nreq; i++)
		creates += w->host.reqs[i].msg.op == KP_OP_CREATE_PAYMENT;
	assert_int_equal(creates, 1);
	assert_int_equal(refunds_of(w, o.order_id, NULL), 0);
	assert_int_equal(sim_stats(w).dispensed, 1);
	assert_int_equal(sim_stats(w).dispensed_value, 150);
	assert_int_equal(sim_stats(w).out_of_sequence, 0);
}

static void test_reset_before_delivery_refunds(void **state)
{
	struct world *w = *state;
	run_ms(w, 500);
	select_item(w, 250, 9, KP_MDB_SIM_DISPENSE_OK, false);
	const char *att = wait_attempt(w, 2000);
	w->spy.drop = true; /* from now our replies are lost: 05 never arrives */
	confirm(w, att, "succeeded", 250);
	run_ms(w, 2000);    /* the VMC gives up, resets; the spy lets the RESET through */
	kp_mdb_sim_stats st = sim_stats(w);
	assert_true(w->spy.dropped > 0);
	assert_int_equal(st.approved, 0);
	assert_int_equal(st.aborted, 1);
	assert_int_equal(st.resets, 2);
	kp_order o;
	assert_int_equal(orders(w->j, &o), 1);
	assert_int_equal(o.state, KP_ORDER_FULFILL_FAILED);
	kp_refund r;
	assert_int_equal(refunds_of(w, o.order_id, &r), 1);
	assert_int_equal(r.reason, KP_REASON_VEND_FAILED);
	assert_int_equal(vend_stats(w).refunds, 1);
	/* and the machine sells again */
	select_item(w, 100, 1, KP_MDB_SIM_DISPENSE_OK, false);
	att = wait_attempt(w, 2000);
	confirm(w, att, "succeeded", 100);
	run_until_done(w, 2, 2000);
	assert_int_equal(sim_stats(w).dispensed_value, 100);
}

/* A restart while a vend request was paying: the new run cancels it (its
 * VMC session is gone); a UI order and the new run's own orders stay. */
static void test_recover_cancels_last_runs_requests(void **state)
{
	struct world *w = *state;
	run_ms(w, 500);
	select_item(w, 150, 1, KP_MDB_SIM_DISPENSE_OK, false);
	const char *att = wait_attempt(w, 2000);
	char attempt_id[KP_ID_SIZE];
	snprintf(attempt_id, sizeof(attempt_id), "%s", att);
	kp_order mdb_order, ui_order;
	assert_int_equal(orders(w->j, &mdb_order), 1);
	bool dup;
	char why[128];
	kp_order_req ui = {.dedup_key = "ui-cart-1", .amount = 500};
	assert_int_equal(kp_engine_order_create(w->e, &ui, &ui_order, &dup, why, sizeof(why)), KP_OK);
	/* this run's own pending request is not touched */
	int64_t n = -1;
	assert_int_equal(kp_vend_recover(w->v, &n), KP_OK);
	assert_int_equal(n, 0);
	/* the next run (a new reader; the old one is gone with its session) */
	kp_vend_free(w->v);
	kp_mdb_sim_free(w->sim);
	assert_int_equal(kp_mdb_sim_new(&w->sim, &w->env, 6), KP_OK);
	kp_mdb_sim_transport(w->sim, &w->spy.inner);
	kp_vend_config vc = {.currency = "EUR", .max_amount = 10000, .patience_ms = PATIENCE_MS};
	kp_vend_deps vd = {.env = &w->env, .engine = w->e, .journal = w->j,
			   .transport = {.ops = &spy_ops, .impl = &w->spy}, .host_up = host_up, .host_arg = w};
	assert_int_equal(kp_vend_new(&w->v, &vc, &vd), KP_OK);
	assert_int_equal(kp_vend_recover(w->v, &n), KP_OK);
	assert_int_equal(n, 1);
	kp_order o;
	assert_int_equal(kp_journal_order_get(w->j, mdb_order.order_id, &o), KP_OK);
	assert_int_equal(o.state, KP_ORDER_CANCELED);
	assert_int_equal(kp_journal_order_get(w->j, ui_order.order_id, &o), KP_OK);
	assert_int_equal(o.state, KP_ORDER_PENDING);
	run_ms(w, 200);
	kp_attempt a;
	assert_int_equal(kp_journal_attempt_get(w->j, attempt_id, &a), KP_OK);
	assert_int_equal(a.state, KP_ATTEMPT_CANCELED);
	/* once is enough */
	assert_int_equal(kp_vend_recover(w->v, &n), KP_OK);
	assert_int_equal(n, 0);
}

static void test_bad_settings(void **state)
{
	(void)state;
	kp_vend *v = NULL;
	kp_vend_config c = {.currency = "EUR", .max_amount = 100};
	kp_vend_deps d = {0};
	assert_int_equal(kp_vend_new(&v, &c, &d), KP_ERR_INVALID);
	assert_null(v);
	kp_vend_free(NULL);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_approved_and_vended),
		T(test_payment_failed_denied),
		T(test_vmc_cancel),
		T(test_vend_failure_refunded),
		T(test_patience_runs_out),
		T(test_repeated_vend_success),
		T(test_stop_and_resume_selling),
		T(test_host_down_no_session),
		T(test_failed_commits_repeat),
		T(test_repeat_finds_the_order),
		T(test_reset_before_delivery_refunds),
		T(test_recover_cancels_last_runs_requests),
		cmocka_unit_test(test_bad_settings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
