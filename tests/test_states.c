/* test_states.c — every allowed and every forbidden move of every persisted
 * state machine, and the names round-trip through to_string/from_string. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "states.h"

#define O(x) KP_ORDER_##x
#define A(x) KP_ATTEMPT_##x
#define R(x) KP_REFUND_##x

/* The allowed moves, written out independently of states.c. */
static const int order_allowed[][2] = {
	{O(PENDING), O(PAID)}, {O(PENDING), O(EXPIRED)}, {O(PENDING), O(CANCELED)},
	{O(PAID), O(FULFILLED)}, {O(PAID), O(FULFILL_FAILED)},
};
static const int attempt_allowed[][2] = {
	{A(CREATED), A(PAYING)}, {A(CREATED), A(FAILED)}, {A(CREATED), A(CANCELED)},
	{A(PAYING), A(SUCCEEDED)}, {A(PAYING), A(FAILED)}, {A(PAYING), A(CANCELED)},
	{A(PAYING), A(EXPIRED)}, {A(PAYING), A(CANCELING)}, {A(PAYING), A(REFUNDING)},
	{A(PAYING), A(UNRESOLVED)},
	{A(CANCELING), A(CANCELED)}, {A(CANCELING), A(SUCCEEDED)}, {A(CANCELING), A(FAILED)},
	{A(CANCELING), A(REFUNDING)}, {A(CANCELING), A(UNRESOLVED)},
	{A(SUCCEEDED), A(REFUNDING)},
	{A(FAILED), A(REFUNDING)}, {A(CANCELED), A(REFUNDING)}, {A(EXPIRED), A(REFUNDING)},
	{A(UNRESOLVED), A(SUCCEEDED)}, {A(UNRESOLVED), A(FAILED)}, {A(UNRESOLVED), A(CANCELED)},
	{A(UNRESOLVED), A(REFUNDING)},
	{A(REFUNDING), A(REFUNDED)}, {A(REFUNDING), A(REFUND_REJECTED)},
};
static const int refund_allowed[][2] = {
	{R(PENDING), R(SENT)}, {R(PENDING), R(REFUNDED)}, {R(PENDING), R(REJECTED)},
	{R(SENT), R(REFUNDED)}, {R(SENT), R(REJECTED)},
};

static bool listed(const int (*tab)[2], size_t n, int from, int to)
{
	for (size_t i = 0; i < n; i++)
		if (tab[i][0] == from && tab[i][1] == to)
			return true;
	return false;
}

#define N(t) (sizeof(t) / sizeof((t)[0]))

static void test_order_moves(void **state)
{
	(void)state;
	for (int f = 0; f < KP_ORDER__COUNT; f++)
		for (int t = 0; t < KP_ORDER__COUNT; t++)
			assert_int_equal(kp_order_move_check((kp_order_state)f, (kp_order_state)t),
					 listed(order_allowed, N(order_allowed), f, t) ? KP_OK : KP_ERR_ILLEGAL_MOVE);
}

static void test_attempt_moves(void **state)
{
	(void)state;
	for (int f = 0; f < KP_ATTEMPT__COUNT; f++)
		for (int t = 0; t < KP_ATTEMPT__COUNT; t++)
			assert_int_equal(kp_attempt_move_check((kp_attempt_state)f, (kp_attempt_state)t),
					 listed(attempt_allowed, N(attempt_allowed), f, t) ? KP_OK : KP_ERR_ILLEGAL_MOVE);
}

static void test_refund_moves(void **state)
{
	(void)state;
	for (int f = 0; f < KP_REFUND__COUNT; f++)
		for (int t = 0; t < KP_REFUND__COUNT; t++)
			assert_int_equal(kp_refund_move_check((kp_refund_state)f, (kp_refund_state)t),
					 listed(refund_allowed, N(refund_allowed), f, t) ? KP_OK : KP_ERR_ILLEGAL_MOVE);
}

static void test_names_round_trip(void **state)
{
	(void)state;
	for (int s = 0; s < KP_ORDER__COUNT; s++) {
		kp_order_state back;
		assert_int_equal(kp_order_state_parse(kp_order_state_str((kp_order_state)s), &back), KP_OK);
		assert_int_equal(back, s);
	}
	for (int s = 0; s < KP_ATTEMPT__COUNT; s++) {
		kp_attempt_state back;
		assert_int_equal(kp_attempt_state_parse(kp_attempt_state_str((kp_attempt_state)s), &back), KP_OK);
		assert_int_equal(back, s);
	}
	for (int s = 0; s < KP_REFUND__COUNT; s++) {
		kp_refund_state back;
		assert_int_equal(kp_refund_state_parse(kp_refund_state_str((kp_refund_state)s), &back), KP_OK);
		assert_int_equal(back, s);
	}
	for (int s = 0; s < KP_REASON__COUNT; s++) {
		kp_refund_reason back;
		assert_int_equal(kp_refund_reason_parse(kp_refund_reason_str((kp_refund_reason)s), &back), KP_OK);
		assert_int_equal(back, s);
	}
	static const char *const bad[] = {"", "PAID", "paid ", "unknown", "pay"};
	for (size_t i = 0; i < N(bad); i++) {
		kp_order_state o;
		kp_attempt_state a;
		assert_int_equal(kp_order_state_parse(bad[i], &o), KP_ERR_INVALID);
		assert_int_equal(kp_attempt_state_parse(bad[i], &a), KP_ERR_INVALID);
	}
	kp_order_state o;
	assert_int_equal(kp_order_state_parse(NULL, &o), KP_ERR_INVALID);
	assert_string_equal(kp_order_state_str(KP_ORDER__COUNT), "invalid");
}

static void test_live_and_final(void **state)
{
	(void)state;
	assert_true(kp_attempt_state_live(A(PAYING)));
	assert_true(kp_attempt_state_live(A(CANCELING)));
	assert_false(kp_attempt_state_live(A(SUCCEEDED)));
	assert_false(kp_attempt_state_final(A(REFUNDING)));
	assert_true(kp_attempt_state_final(A(REFUNDED)));
	assert_true(kp_order_state_final(O(FULFILLED)));
	assert_false(kp_order_state_final(O(PAID)));
	assert_true(kp_refund_state_final(R(REJECTED)));
	assert_false(kp_refund_state_final(R(SENT)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_moves),
		cmocka_unit_test(test_attempt_moves),
		cmocka_unit_test(test_refund_moves),
		cmocka_unit_test(test_names_round_trip),
		cmocka_unit_test(test_live_and_final),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
