/* test_common.c — the error table, the env (UUIDs, fake clock) and failpoints. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "kp_env.h"
#include "kp_error.h"
#include "kp_failpoint.h"

static void test_strerror_every_code(void **state)
{
	(void)state;
	for (int e = 0; e > KP_ERR__SENTINEL; e--) {
		const char *t = kp_strerror((kp_err)e);
		assert_non_null(t);
		assert_string_not_equal(t, "unknown error");
		assert_string_not_equal(kp_errname((kp_err)e), "unknown");
	}
	assert_string_equal(kp_strerror(KP_ERR__SENTINEL), "unknown error");
	assert_string_equal(kp_strerror((kp_err)1), "unknown error");
	assert_string_equal(kp_errname(KP_ERR_NOT_FOUND), "not_found");
}

static bool uuid_shape_ok(const char *s)
{
	if (strlen(s) != KP_UUID_LEN)
		return false;
	for (int i = 0; i < KP_UUID_LEN; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash != (s[i] == '-'))
			return false;
		if (!dash && !strchr("0123456789abcdef", s[i]))
			return false;
	}
	return s[14] == '7' && strchr("89ab", s[19]) != NULL;
}

static void test_uuid_system_unique(void **state)
{
	(void)state;
	kp_env env;
	kp_env_init_system(&env);
	kp_uuid a, b;
	assert_int_equal(kp_uuid_new(&env, &a), KP_OK);
	assert_int_equal(kp_uuid_new(&env, &b), KP_OK);
	assert_true(uuid_shape_ok(a.s));
	assert_true(uuid_shape_ok(b.s));
	assert_string_not_equal(a.s, b.s);
}

/* Ids made later sort later (the journal's indexes rely on it for their
 * write cost), the first 48 bits are the wall clock, and ids of one
 * millisecond still differ. */
static void test_uuid_time_ordered(void **state)
{
	(void)state;
	kp_env env;
	kp_fake_world w;
	kp_env_init_fake(&env, &w, 7, 1800000000000); /* 0x1a3185c5000 */
	kp_uuid first, prev, u;
	assert_int_equal(kp_uuid_new(&env, &first), KP_OK);
	assert_memory_equal(first.s, "01a3185c-5000-7", 15);
	prev = first;
	for (int i = 0; i < 1000; i++) {
		kp_fake_advance(&w, 1);
		assert_int_equal(kp_uuid_new(&env, &u), KP_OK);
		assert_true(uuid_shape_ok(u.s));
		assert_true(strcmp(prev.s, u.s) < 0);
		prev = u;
	}
	kp_uuid same;
	assert_int_equal(kp_uuid_new(&env, &same), KP_OK);
	assert_memory_equal(same.s, u.s, 13); /* the same millisecond */
	assert_string_not_equal(same.s, u.s);
}

static void test_fake_env_replays_from_seed(void **state)
{
	(void)state;
	kp_env e1, e2;
	kp_fake_world w1, w2;
	kp_env_init_fake(&e1, &w1, 42, 1700000000000);
	kp_env_init_fake(&e2, &w2, 42, 1700000000000);
	kp_uuid a, b;
	assert_int_equal(kp_uuid_new(&e1, &a), KP_OK);
	assert_int_equal(kp_uuid_new(&e2, &b), KP_OK);
	assert_string_equal(a.s, b.s);
	assert_true(uuid_shape_ok(a.s));
	int64_t m = kp_now_mono(&e1);
	assert_int_equal(kp_now_wall(&e1), 1700000000000);
	kp_fake_advance(&w1, 2500);
	assert_int_equal(kp_now_mono(&e1), m + 2500);
	assert_int_equal(kp_now_wall(&e1), 1700000002500);
	w1.quiet = true;
	kp_log_warn(&e1, "order %s expired", "o-1");
	assert_int_equal(w1.log_lines, 1);
	assert_string_equal(w1.last_log, "order o-1 expired");
}

static void test_failpoint_countdown(void **state)
{
	(void)state;
	kp_failpoint_disarm_all();
	assert_false(KP_FAILPOINT(7));
	assert_int_equal(kp_failpoint_arm(7, 3, 1, KP_FP_ERROR), KP_OK);
	assert_false(KP_FAILPOINT(7));
	assert_false(KP_FAILPOINT(8));
	assert_false(KP_FAILPOINT(7));
	assert_true(KP_FAILPOINT(7));  /* third hit fires */
	assert_false(KP_FAILPOINT(7)); /* once only */
	assert_int_equal(kp_failpoint_hits(7), 4);
	assert_int_equal(kp_failpoint_arm(KP_FAILPOINT_MAX, 1, 1, KP_FP_ERROR), KP_ERR_INVALID);
	kp_failpoint_disarm_all();
	assert_false(KP_FAILPOINT(7));
}

static void test_failpoint_spec(void **state)
{
	(void)state;
	static const struct {
		const char *spec;
		kp_err want;
	} cases[] = {
		{"", KP_OK},
		{"5:2:error", KP_OK},
		{"5:1:error,6:1:crash", KP_OK},
		{"5", KP_ERR_INVALID},
		{"5:0:error", KP_ERR_INVALID},
		{"5:1:explode", KP_ERR_INVALID},
		{"999:1:error", KP_ERR_INVALID},
		{"5:1:error,", KP_OK},
		{"a:1:error", KP_ERR_INVALID},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kp_failpoint_disarm_all();
		assert_int_equal(kp_failpoint_arm_spec(cases[i].spec), cases[i].want);
	}
	kp_failpoint_disarm_all();
	assert_int_equal(kp_failpoint_arm_spec("9:2:error,bad"), KP_ERR_INVALID);
	assert_false(KP_FAILPOINT(9)); /* a bad spec arms nothing */
	assert_false(KP_FAILPOINT(9));
	assert_int_equal(kp_failpoint_arm_spec("9:2:error"), KP_OK);
	assert_false(KP_FAILPOINT(9));
	assert_true(KP_FAILPOINT(9));
	kp_failpoint_disarm_all();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strerror_every_code),
		cmocka_unit_test(test_uuid_system_unique),
		cmocka_unit_test(test_uuid_time_ordered),
		cmocka_unit_test(test_fake_env_replays_from_seed),
		cmocka_unit_test(test_failpoint_countdown),
		cmocka_unit_test(test_failpoint_spec),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
