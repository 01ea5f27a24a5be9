/* test_mdb_sim.c — the cashless device against the in-process VMC over the
 * transport ops: clean sales byte-exact in their counts, then seeded runs with
 * lost replies, lost ACKs, bad checksums and failed commits, where money must
 * still balance (charged - refunded = value dispensed) and no vend request
 * may become two orders. Also the sim byte framing of mdb.md §1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "kp_env.h"
#include "mdb_device.h"
#include "mdb_sim.h"
#include "mdb_transport.h"
#include "mdb_words.h"

#define DENY_ITEM 99  /* the engine refuses this item */
#define SILENT_ITEM 98 /* the engine never answers: the VMC's Z7 runs out */

/* A stand-in for the payment engine: approves at once, keeps the books. */
struct harness {
	kp_env env;
	kp_fake_world world;
	kp_mdb_sim *sim;
	kp_mdb_transport t;
	kp_mdb_device *dev;
	uint64_t rng;
	unsigned commit_fail_pm;
	unsigned commits_failed;
	unsigned orders;
	unsigned fulfilled;
	uint64_t charged, refunded;
	uint16_t price, item;
};

static bool h_roll(struct harness *h, unsigned pm)
{
	h->rng = h->rng * 6364136223846793005ULL + 1442695040888963407ULL;
	return pm && (h->rng >> 33) % 1000 < pm;
}

static void h_open(struct harness *h, uint64_t seed, const kp_mdb_sim_faults *faults, unsigned commit_fail_pm)
{
	memset(h, 0, sizeof(*h));
	kp_env_init_fake(&h->env, &h->world, seed, 1700000000000);
	h->world.quiet = true;
	h->rng = seed;
	h->commit_fail_pm = commit_fail_pm;
	assert_int_equal(kp_mdb_sim_new(&h->sim, &h->env, seed), KP_OK);
	if (faults)
		kp_mdb_sim_set_faults(h->sim, faults);
	kp_mdb_sim_transport(h->sim, &h->t);
	kp_mdb_device_config cfg;
	kp_mdb_device_config_default(&cfg);
	assert_int_equal(kp_mdb_device_new(&h->dev, &cfg), KP_OK);
}

static void h_close(struct harness *h)
{
	kp_mdb_transport_close(&h->t);
	kp_mdb_device_free(h->dev);
	kp_mdb_sim_free(h->sim);
}

static bool needs_commit(kp_mdb_action a)
{
	switch (a) {
	case KP_MDB_ACT_RESET:
	case KP_MDB_ACT_VEND_REQUEST:
	case KP_MDB_ACT_VEND_CANCEL:
	case KP_MDB_ACT_APPROVAL_DELIVERED:
	case KP_MDB_ACT_VEND_SUCCESS:
	case KP_MDB_ACT_VEND_FAILURE:
	case KP_MDB_ACT_SESSION_COMPLETE:
		return true;
	default:
		return false;
	}
}

/* One frame from the VMC through device and engine. */
static void h_step(struct harness *h)
{
	kp_fake_advance(&h->world, 25); /* the VMC polls every 25-200 ms */
	uint16_t w[KP_MDB_BLOCK_MAX];
	size_t n = 0;
	assert_int_equal(kp_mdb_transport_recv(&h->t, w, KP_MDB_BLOCK_MAX, &n), KP_OK);
	kp_mdb_out out;
	assert_int_equal(kp_mdb_device_receive(h->dev, w, n, kp_now_mono(&h->env), &out), KP_OK);

	if (needs_commit(out.action) && h_roll(h, h->commit_fail_pm)) {
		/* the journal refused: undo, say nothing, the VMC repeats */
		assert_int_equal(kp_mdb_device_rollback(h->dev), KP_OK);
		h->commits_failed++;
		return;
	}
	switch (out.action) {
	case KP_MDB_ACT_VEND_REQUEST:
		h->orders++;
		h->price = out.cmd.price;
		h->item = out.cmd.item;
		break;
	case KP_MDB_ACT_VEND_CANCEL:
	case KP_MDB_ACT_VEND_FAILURE:
		if (out.action == KP_MDB_ACT_VEND_FAILURE || out.approved)
			h->refunded += h->price;
		break;
	case KP_MDB_ACT_RESET:
		if (out.approved && !out.approval_delivered)
			h->refunded += h->price;
		break;
	case KP_MDB_ACT_VEND_SUCCESS:
		h->fulfilled++;
		break;
	default:
		break;
	}
	if (out.reply.n > 0)
		assert_int_equal(kp_mdb_transport_send(&h->t, out.reply.w, out.reply.n), KP_OK);

	/* after the commit: the payment outcome, the next session */
	kp_err rc = KP_OK;
	if (out.action == KP_MDB_ACT_VEND_REQUEST && h->item == DENY_ITEM) {
		rc = kp_mdb_device_deny(h->dev);
	} else if (out.action == KP_MDB_ACT_VEND_REQUEST && h->item != SILENT_ITEM) {
		rc = kp_mdb_device_approve(h->dev, h->price);
		if (rc == KP_OK)
			h->charged += h->price;
	} else if (out.action == KP_MDB_ACT_VEND_CANCEL && !out.approved) {
		rc = kp_mdb_device_deny(h->dev);
	}
	assert_int_equal(rc, KP_OK);
	if (kp_mdb_device_state(h->dev) == KP_MDB_ENABLED && kp_mdb_sim_has_selection(h->sim)) {
		rc = kp_mdb_device_begin_session(h->dev, KP_MDB_FUNDS_UNKNOWN);
		assert_true(rc == KP_OK || rc == KP_ERR_STATE); /* one may be queued already */
	}
}

struct sale {
	uint16_t price, item;
	bool dispense_ok;
};

/* Sell each sale in turn; the VMC must finish them all within max_steps. */
static void h_sell(struct harness *h, const struct sale *sales, size_t n, unsigned max_steps)
{
	size_t next = 0;
	kp_mdb_sim_stats st;
	for (unsigned i = 0; i < max_steps; i++) {
		kp_mdb_sim_stats_get(h->sim, &st);
		if (st.selections_done == n)
			return;
		if (next < n && !kp_mdb_sim_has_selection(h->sim) && st.selections_done == next) {
			assert_int_equal(kp_mdb_sim_select(h->sim, sales[next].price, sales[next].item,
							   sales[next].dispense_ok),
					 KP_OK);
			next++;
		}
		h_step(h);
	}
	fail_msg("only %u of %zu sales finished in %u steps", st.selections_done, n, max_steps);
}

static const struct sale clean_sales[] = {
	{150, 1, true},
	{200, 2, true},
	{120, 3, false},        /* the machine jams: refund */
	{300, DENY_ITEM, true}, /* the payment fails */
	{50, 4, true},
};

static void test_clean_sales(void **state)
{
	(void)state;
	struct harness h;
	h_open(&h, 1, NULL, 0);
	h_sell(&h, clean_sales, 5, 5000);
	kp_mdb_sim_stats st;
	kp_mdb_sim_stats_get(h.sim, &st);
	assert_int_equal(st.resets, 1);
	assert_int_equal(st.setups, 1);
	assert_int_equal(st.sessions, 5);
	assert_int_equal(st.vend_requests, 5);
	assert_int_equal(st.approved, 4);
	assert_int_equal(st.denied, 1);
	assert_int_equal(st.dispensed, 3);
	assert_int_equal(st.dispense_failed, 1);
	assert_int_equal(st.dispensed_value, 400);
	assert_int_equal(st.out_of_sequence, 0);
	assert_int_equal(st.retries, 0);
	assert_int_equal(h.orders, 5);
	assert_int_equal(h.fulfilled, 3);
	assert_int_equal(h.charged, 520);
	assert_int_equal(h.refunded, 120);
	/* the last session closes too */
	for (int i = 0; i < 10; i++)
		h_step(&h);
	kp_mdb_sim_stats_get(h.sim, &st);
	assert_int_equal(st.sessions_ended, 5);
	assert_int_equal(kp_mdb_device_state(h.dev), KP_MDB_ENABLED);
	assert_true(kp_mdb_device_link_up(h.dev, kp_now_mono(&h.env)));
	h_close(&h);
}

/* The engine never answers: after Z7 the VMC cancels, the engine denies. */
static void test_vmc_gives_up(void **state)
{
	(void)state;
	struct harness h;
	h_open(&h, 2, NULL, 0);
	static const struct sale s[] = {{150, SILENT_ITEM, true}, {100, 5, true}};
	h_sell(&h, s, 2, 20000);
	kp_mdb_sim_stats st;
	kp_mdb_sim_stats_get(h.sim, &st);
	assert_int_equal(st.denied, 1);
	assert_int_equal(st.dispensed, 1);
	assert_int_equal(h.charged - h.refunded, st.dispensed_value);
	assert_int_equal(h.orders, 2);
	h_close(&h);
}

/* Seeded faults on the wire and in the journal: the books still balance. */
static void test_faulty_bus_keeps_money(void **state)
{
	(void)state;
	static const struct sale sales[] = {
		{150, 1, true}, {200, 2, true}, {120, 3, false}, {300, DENY_ITEM, true}, {50, 4, true},
		{75, 5, true},  {90, 6, false}, {250, 7, true},  {10, 8, true},          {999, 9, true},
	};
	const kp_mdb_sim_faults faults = {.lost_reply_pm = 60, .lost_ack_pm = 60, .bad_chk_pm = 60};
	unsigned retries = 0, failed_commits = 0, resets = 0, oos = 0, frames = 0;
	for (uint64_t seed = 1; seed <= 40; seed++) {
		struct harness h;
		h_open(&h, seed, &faults, 30);
		h_sell(&h, sales, sizeof(sales) / sizeof(sales[0]), 60000);
		kp_mdb_sim_stats st;
		kp_mdb_sim_stats_get(h.sim, &st);
		if (h.charged - h.refunded != st.dispensed_value || h.orders != st.vend_requests ||
		    st.dispensed + st.dispense_failed + st.denied != 10)
			fail_msg("seed %llu: charged %llu refunded %llu dispensed %llu; orders %u requests %u; "
				 "%u+%u+%u outcomes",
				 (unsigned long long)seed, (unsigned long long)h.charged,
				 (unsigned long long)h.refunded, (unsigned long long)st.dispensed_value, h.orders,
				 st.vend_requests, st.dispensed, st.dispense_failed, st.denied);
		retries += st.retries;
		failed_commits += h.commits_failed;
		resets += st.resets - 1; /* beyond the one at power-up */
		oos += st.out_of_sequence;
		kp_mdb_device_stats ds;
		kp_mdb_device_stats_get(h.dev, &ds);
		frames += (unsigned)ds.frames;
		h_close(&h);
	}
	print_message("40 seeds x 10 sales: %u frames, %u VMC retries, %u failed commits, "
		      "%u extra resets, %u out of sequence\n",
		      frames, retries, failed_commits, resets, oos);
	/* the faults did happen, and every one was absorbed without a reset */
	assert_true(retries > 100);
	assert_true(failed_commits > 10);
	assert_int_equal(resets, 0);
	assert_int_equal(oos, 0);
}

static void test_sim_framing(void **state)
{
	(void)state;
	uint16_t w[8];
	size_t n = mdb_words("12* 12", w, 8);
	uint8_t b[16];
	assert_int_equal(kp_mdb_sim_pack(w, n, b, sizeof(b)), 4);
	static const uint8_t want[] = {0x01, 0x12, 0x00, 0x12};
	assert_memory_equal(b, want, 4);
	assert_int_equal(kp_mdb_sim_pack(w, n, b, 3), 0);

	uint16_t back[8];
	size_t m = 0;
	bool reset = true;
	assert_int_equal(kp_mdb_sim_unpack(b, 4, back, 8, &m, &reset), KP_OK);
	assert_int_equal(m, 2);
	assert_int_equal(back[0], 0x112);
	assert_int_equal(back[1], 0x012);
	assert_false(reset);

	static const uint8_t with_reset[] = {0x80, 0x00, 0x01, 0x10, 0x00, 0x10};
	assert_int_equal(kp_mdb_sim_unpack(with_reset, 6, back, 8, &m, &reset), KP_OK);
	assert_true(reset);
	assert_int_equal(m, 2);
	assert_int_equal(back[0], 0x110);

	static const uint8_t odd[] = {0x01, 0x12, 0x00};
	assert_int_equal(kp_mdb_sim_unpack(odd, 3, back, 8, &m, &reset), KP_ERR_INVALID);
	static const uint8_t bad_flags[] = {0x02, 0x12};
	assert_int_equal(kp_mdb_sim_unpack(bad_flags, 2, back, 8, &m, &reset), KP_ERR_INVALID);
	assert_int_equal(kp_mdb_sim_unpack(b, 4, back, 1, &m, &reset), KP_ERR_TOO_BIG);
}

static void test_sim_rejects_bad_replies(void **state)
{
	(void)state;
	struct harness h;
	h_open(&h, 3, NULL, 0);
	static const uint16_t ack[] = {0x100};
	assert_int_equal(kp_mdb_transport_send(&h.t, ack, 1), KP_ERR_PROTOCOL); /* nothing asked */
	uint16_t w[KP_MDB_BLOCK_MAX];
	size_t n;
	assert_int_equal(kp_mdb_transport_recv(&h.t, w, KP_MDB_BLOCK_MAX, &n), KP_OK); /* RESET */
	assert_int_equal(n, 2);
	assert_int_equal(w[0], 0x110);
	static const uint16_t no_mode[] = {0x00};
	static const uint16_t nak[] = {0x1FF};
	static const uint16_t bad_chk[] = {0x05, 0x00, 0x96, 0x19A};
	static const uint16_t mode_early[] = {0x105, 0x00, 0x96, 0x19B};
	assert_int_equal(kp_mdb_transport_send(&h.t, no_mode, 1), KP_ERR_PROTOCOL);
	assert_int_equal(kp_mdb_transport_send(&h.t, nak, 1), KP_ERR_PROTOCOL);
	assert_int_equal(kp_mdb_transport_send(&h.t, bad_chk, 4), KP_ERR_PROTOCOL);
	assert_int_equal(kp_mdb_transport_send(&h.t, mode_early, 4), KP_ERR_PROTOCOL);
	assert_int_equal(kp_mdb_transport_send(&h.t, ack, 1), KP_OK);
	assert_int_equal(kp_mdb_transport_fd(&h.t), -1);
	assert_string_equal(h.t.ops->name, "sim");
	assert_int_equal(kp_mdb_sim_select(h.sim, 1, 1, true), KP_OK);
	assert_int_equal(kp_mdb_sim_select(h.sim, 1, 1, true), KP_ERR_BUSY);
	h_close(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clean_sales),
		cmocka_unit_test(test_vmc_gives_up),
		cmocka_unit_test(test_faulty_bus_keeps_money),
		cmocka_unit_test(test_sim_framing),
		cmocka_unit_test(test_sim_rejects_bad_replies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
