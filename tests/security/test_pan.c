/* test_pan.c — the card-number detector and mask (app/common/kp_pan.h) on
 * published test PANs of every brand and length, the ways they are written,
 * and what must never be taken for one: UUIDs, the simulator's hex host_txn
 * ids, millisecond timestamps, ids and decimals with digits inside. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "kp_env.h"
#include "kp_pan.h"

struct pan_case {
	const char *text;
	bool pan;
};

static const struct pan_case cases[] = {
	/* published test numbers, each brand */
	{"4111111111111111", true},          /* Visa 16 */
	{"4222222222222", true},             /* Visa 13 */
	{"4012888888881881", true},
	{"5555555555554444", true},          /* Mastercard */
	{"2223003122003222", true},          /* Mastercard 2-series */
	{"378282246310005", true},           /* Amex 15 */
	{"6011111111111117", true},          /* Discover */
	{"3530111333300000", true},          /* JCB */
	{"6759649826438453", true},          /* Maestro */
	/* how people write them, and where they hide */
	{"4111 1111 1111 1111", true},
	{"4111-1111-1111-1111", true},
	{"3782 822463 10005", true},
	{"card 4111111111111111.", true},
	{"\"4111111111111111\"", true},
	{"{\"sku\":4111111111111111}", true},
	{"qty 2 4111 1111 1111 1111", true}, /* a small number before it */
	{"4111111111111111 5", true},
	{"x/4111111111111111?", true},
	{"a\n4111111111111111", true},
	/* not card numbers */
	{"4111111111111112", false},         /* Luhn fails */
	{"411111111111", false},             /* 12 digits */
	{"41111111111111111115", false},     /* 20 digits, Luhn-valid */
	{"1800000000002", false},            /* a 13-digit ms timestamp, Luhn-valid */
	{"7111111111111114", false},         /* Luhn-valid, no card issuer digit */
	{"txn-4111111111111111", false},     /* part of an id */
	{"o_4111111111111111", false},
	{"a4111111111111111", false},
	{"4111111111111111x", false},
	{"4111111111111111-", false},
	{"0.4111111111111111", false},       /* a decimal's fraction */
	{"4111  1111 1111 1111", false},     /* two blanks: groups of 4 and 12 */
	{"4111--1111-1111-1111", false},
	{"41234567-8901-4234-8123-456789012345", false}, /* an all-digit UUID */
	{"a1234567-8901-4abc-8123-456789012345", false},
	{"txn-4012888888881881", false},     /* the simulator's host_txn, hex all digits */
	{"", false},
};

static void test_detect_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool got = kp_text_has_pan(cases[i].text, strlen(cases[i].text));
		if (got != cases[i].pan)
			fail_msg("\"%s\": want %s", cases[i].text, cases[i].pan ? "card number" : "none");
	}
}

/* The length bound is the caller's, not the NUL. */
static void test_length_bound(void **state)
{
	(void)state;
	const char *t = "4111111111111111";
	assert_true(kp_text_has_pan(t, 16));
	assert_false(kp_text_has_pan(t, 15));
	assert_false(kp_text_has_pan(NULL, 4));
	char buf[20] = "x4111111111111111";
	assert_true(kp_text_has_pan(buf + 1, 16));  /* what is before the span is not looked at */
}

/* Luhn-valid numbers of every length 13..19 and issuer digit 2..6 are found;
 * digit 1, 7, 8, 9 are not. The check digit is computed here by hand. */
static void test_every_length(void **state)
{
	(void)state;
	for (int first = 1; first <= 9; first++) {
		for (int len = 12; len <= 20; len++) {
			char num[24];
			for (int i = 0; i < len - 1; i++)
				num[i] = (char)('0' + (i == 0 ? first : (i * 7 + len) % 10));
			for (int check = 0; check <= 9; check++) {
				num[len - 1] = (char)('0' + check);
				num[len] = '\0';
				int sum = 0;
				for (int i = len - 1, k = 0; i >= 0; i--, k++) {
					int d = num[i] - '0';
					if (k % 2 == 1)
						d = d * 2 > 9 ? d * 2 - 9 : d * 2;
					sum += d;
				}
				bool want = sum % 10 == 0 && len >= 13 && len <= 19 && first >= 2 && first <= 6;
				if (kp_text_has_pan(num, (size_t)len) != want)
					fail_msg("%s (len %d, Luhn %s)", num, len, sum % 10 ? "bad" : "ok");
			}
		}
	}
}

/* 200 000 of the daemon's UUIDs (seeded, their clock part spread over 240
 * days): not one is taken for a card number. */
static void test_uuids_never(void **state)
{
	(void)state;
	kp_env env;
	kp_fake_world w;
	kp_env_init_fake(&env, &w, 0x5eed, 1700000000000);
	unsigned all_digit_tails = 0;
	for (int i = 0; i < 200000; i++) {
		kp_uuid u;
		kp_fake_advance(&w, 104729);
		assert_int_equal(kp_uuid_new(&env, &u), KP_OK);
		if (strspn(u.s + 19, "0123456789-") == 17)
			all_digit_tails++;
		if (kp_text_has_pan(u.s, KP_UUID_LEN))
			fail_msg("UUID %s taken for a card number", u.s);
	}
	assert_true(all_digit_tails > 0); /* the case that would trip a naive scan did occur */
}

struct mask_case {
	const char *in;
	const char *out;
	size_t n;
};

static const struct mask_case masks[] = {
	{"card 4111111111111111 ok", "card 411111******1111 ok", 1},
	{"4111 1111 1111 1111", "4111 11** **** 1111", 1},
	{"378282246310005", "378282*****0005", 1},
	{"4222222222222", "422222***2222", 1},
	{"a 5555555555554444, b 6011111111111117", "a 555555******4444, b 601111******1117", 2},
	{"order 8c6f-1 at 1800000000002 for 250", "order 8c6f-1 at 1800000000002 for 250", 0},
};

static void test_mask(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
		char buf[128];
		snprintf(buf, sizeof(buf), "%s", masks[i].in);
		assert_int_equal(kp_text_mask_pan(buf, strlen(buf)), masks[i].n);
		assert_string_equal(buf, masks[i].out);
		assert_false(kp_text_has_pan(buf, strlen(buf)));
	}
}

/* kp_log masks before the line reaches the env's writer. */
static void test_log_masks(void **state)
{
	(void)state;
	kp_env env;
	kp_fake_world w;
	kp_env_init_fake(&env, &w, 1, 0);
	w.quiet = true;
	kp_log_info(&env, "host said %s", "{\"host_txn\":\"4111111111111111\"}");
	assert_string_equal(w.last_log, "host said {\"host_txn\":\"411111******1111\"}");
	kp_log_info(&env, "attempt %s", "6f1c2a4e-0b7d-4c53-9a8e-201234567890");
	assert_string_equal(w.last_log, "attempt 6f1c2a4e-0b7d-4c53-9a8e-201234567890");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_detect_table), cmocka_unit_test(test_length_bound),
		cmocka_unit_test(test_every_length), cmocka_unit_test(test_uuids_never),
		cmocka_unit_test(test_mask),         cmocka_unit_test(test_log_masks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
