/* test_hostproto.c — the host protocol codec: tables of good and bad messages
 * for every op in both directions, the frame reader on split and joined input,
 * and encode -> frame -> decode round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostproto.h"

static kp_err dec(const char *json, bool from_host, kp_host_msg *m, char *why, size_t cap)
{
	return kp_hostproto_decode((const uint8_t *)json, strlen(json), from_host, m, why, cap);
}

/* ---- good messages ------------------------------------------------------- */

struct good {
	const char *json;
	bool from_host;
	kp_host_op op;
	int64_t id_or_re;   /* id for kiosk ops, re for replies, seq for ack/confirm */
	const char *key;    /* the op's main id field (attempt_id/refund_id/...), or NULL */
	int64_t amount;     /* 0 = no amount */
};

static const struct good goods[] = {
	{"{\"op\":\"hello\",\"id\":1,\"device_id\":\"kiosk-01\",\"proto\":1,\"fw\":\"0.1.0+g1a2b\"}",
	 false, KP_OP_HELLO, 1, "kiosk-01", 0},
	{"{\"op\":\"create_payment\",\"id\":2,\"attempt_id\":\"a1\",\"order_id\":\"o1\","
	 "\"amount\":250,\"currency\":\"EUR\",\"channel\":\"twint\",\"expires_at\":1700000000000}",
	 false, KP_OP_CREATE_PAYMENT, 2, "a1", 250},
	{"{\"op\":\"query_payment\",\"id\":3,\"attempt_id\":\"a1\"}", false, KP_OP_QUERY_PAYMENT, 3,
	 "a1", 0},
	{"{\"op\":\"cancel_payment\",\"id\":4,\"attempt_id\":\"A_b-9\"}", false,
	 KP_OP_CANCEL_PAYMENT, 4, "A_b-9", 0},
	{"{\"op\":\"refund\",\"id\":5,\"refund_id\":\"r1\",\"attempt_id\":\"a1\",\"host_txn\":\"t1\","
	 "\"amount\":250,\"reason\":\"duplicate\"}",
	 false, KP_OP_REFUND, 5, "r1", 250},
	{"{\"op\":\"query_refund\",\"id\":6,\"refund_id\":\"r1\"}", false, KP_OP_QUERY_REFUND, 6, "r1",
	 0},
	{"{\"op\":\"ack\",\"seq\":17}", false, KP_OP_ACK, 17, NULL, 0},
	{"{\"op\":\"ping\",\"id\":9007199254740991}", false, KP_OP_PING, 9007199254740991LL, NULL, 0},
	/* unknown fields are ignored, whitespace around the value is fine */
	{" {\"op\":\"ping\",\"id\":7,\"extra\":[1,{\"x\":null}],\"re\":\"zz\"}\n", false, KP_OP_PING, 7,
	 NULL, 0},
	/* 1e3 is an integral number */
	{"{\"op\":\"ping\",\"id\":1e3}", false, KP_OP_PING, 1000, NULL, 0},

	{"{\"op\":\"hello_ok\",\"re\":1,\"host_time\":1700000000123}", true, KP_OP_HELLO_OK, 1, NULL,
	 0},
	{"{\"op\":\"payment\",\"re\":2,\"attempt_id\":\"a1\",\"status\":\"pending\",\"qr\":\"https://"
	 "pay.example/q/a1\"}",
	 true, KP_OP_PAYMENT, 2, "a1", 0},
	{"{\"op\":\"payment\",\"re\":3,\"attempt_id\":\"a1\",\"status\":\"succeeded\",\"host_txn\":"
	 "\"t1\",\"amount\":250}",
	 true, KP_OP_PAYMENT, 3, "a1", 250},
	{"{\"op\":\"payment\",\"re\":3,\"attempt_id\":\"a1\",\"status\":\"failed\"}", true,
	 KP_OP_PAYMENT, 3, "a1", 0},
	{"{\"op\":\"payment\",\"re\":3,\"attempt_id\":\"a1\",\"status\":\"canceled\"}", true,
	 KP_OP_PAYMENT, 3, "a1", 0},
	{"{\"op\":\"payment\",\"re\":3,\"attempt_id\":\"a1\",\"status\":\"unknown\"}", true,
	 KP_OP_PAYMENT, 3, "a1", 0},
	{"{\"op\":\"refund\",\"re\":5,\"refund_id\":\"r1\",\"status\":\"refunded\"}", true,
	 KP_OP_REFUND_REPLY, 5, "r1", 0},
	{"{\"op\":\"refund\",\"re\":5,\"refund_id\":\"r1\",\"status\":\"rejected\",\"reason\":"
	 "\"too_late\"}",
	 true, KP_OP_REFUND_REPLY, 5, "r1", 0},
	{"{\"op\":\"refund\",\"re\":5,\"refund_id\":\"r1\",\"status\":\"pending\"}", true,
	 KP_OP_REFUND_REPLY, 5, "r1", 0},
	{"{\"op\":\"refund\",\"re\":5,\"refund_id\":\"r1\",\"status\":\"unknown\"}", true,
	 KP_OP_REFUND_REPLY, 5, "r1", 0},
	{"{\"op\":\"pong\",\"re\":9}", true, KP_OP_PONG, 9, NULL, 0},
	{"{\"op\":\"error\",\"re\":2,\"code\":\"idempotency_mismatch\",\"message\":\"no\"}", true,
	 KP_OP_ERROR, 2, NULL, 0},
	/* an error about no request: re absent; a code outside the listed set is kept as text */
	{"{\"op\":\"error\",\"code\":\"rate_limited\",\"message\":\"\"}", true, KP_OP_ERROR, 0, NULL,
	 0},
	{"{\"op\":\"confirm\",\"seq\":3,\"attempt_id\":\"a1\",\"host_txn\":\"t1\",\"status\":"
	 "\"succeeded\",\"amount\":250,\"currency\":\"CHF\",\"at\":1700000000000}",
	 true, KP_OP_CONFIRM, 3, "a1", 250},
	{"{\"op\":\"confirm\",\"seq\":4,\"attempt_id\":\"a1\",\"host_txn\":\"t2\",\"status\":"
	 "\"failed\",\"amount\":250,\"currency\":\"CHF\",\"at\":0,\"new\":true}",
	 true, KP_OP_CONFIRM, 4, "a1", 250},
};

static void test_decode_good(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
		const struct good *g = &goods[i];
		kp_host_msg m;
		char why[128];
		kp_err err = dec(g->json, g->from_host, &m, why, sizeof(why));
		if (err != KP_OK)
			fail_msg("good[%zu] %s refused: %s", i, g->json, why);
		assert_int_equal(m.op, g->op);
		switch (g->op) {
		case KP_OP_ACK:
		case KP_OP_CONFIRM:
			assert_int_equal(m.seq, g->id_or_re);
			assert_false(m.has_re);
			break;
		default:
			if (g->from_host) {
				assert_int_equal(m.re, g->id_or_re);
				assert_int_equal(m.has_re, g->id_or_re != 0);
				assert_int_equal(m.id, 0);
			} else {
				assert_int_equal(m.id, g->id_or_re);
				assert_false(m.has_re);
			}
		}
		if (g->key) {
			const char *k = m.attempt_id;
			if (g->op == KP_OP_HELLO)
				k = m.device_id;
			else if (g->op == KP_OP_REFUND || g->op == KP_OP_QUERY_REFUND ||
				 g->op == KP_OP_REFUND_REPLY)
				k = m.refund_id;
			assert_string_equal(k, g->key);
		}
		assert_int_equal(m.has_amount, g->amount != 0);
		assert_int_equal(m.amount, g->amount);
	}
}

static void test_decode_fields_detail(void **state)
{
	(void)state;
	kp_host_msg m;
	assert_int_equal(dec(goods[1].json, false, &m, NULL, 0), KP_OK);
	assert_string_equal(m.order_id, "o1");
	assert_string_equal(m.currency, "EUR");
	assert_string_equal(m.channel, "twint");
	assert_int_equal(m.expires_at, 1700000000000LL);

	assert_int_equal(dec(goods[23].json, true, &m, NULL, 0), KP_OK);
	assert_string_equal(m.host_txn, "t1");
	assert_string_equal(m.status, "succeeded");
	assert_string_equal(m.currency, "CHF");
	assert_int_equal(m.at, 1700000000000LL);

	assert_int_equal(dec(goods[22].json, true, &m, NULL, 0), KP_OK);
	assert_string_equal(m.code, "rate_limited");
	assert_string_equal(m.message, "");

	/* an escaped backslash before "u0000" is text, not an escaped NUL */
	assert_int_equal(dec("{\"op\":\"error\",\"code\":\"x\",\"message\":\"a\\\\u0000\"}", true, &m,
			     NULL, 0),
			 KP_OK);
	assert_string_equal(m.message, "a\\u0000");

	/* an over-long error message is cut, not refused, and never mid-character */
	char json[1200];
	char text[700];
	memset(text, 'x', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	memcpy(text + 254, "\xc3\xa9", 2); /* 'é' straddling the 255-byte limit */
	snprintf(json, sizeof(json), "{\"op\":\"error\",\"re\":1,\"code\":\"internal\",\"message\":\"%s\"}",
		 text);
	assert_int_equal(dec(json, true, &m, NULL, 0), KP_OK);
	assert_int_equal(strlen(m.message), 254);
}

/* ---- bad messages --------------------------------------------------------- */

struct bad {
	const char *json;
	bool from_host;
	const char *why; /* substring of the reason */
};

#define ID64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define PAY "{\"op\":\"payment\",\"re\":1,\"attempt_id\":\"a1\","
#define CONF "{\"op\":\"confirm\",\"seq\":1,\"attempt_id\":\"a1\",\"host_txn\":\"t1\","
#define CREATE "{\"op\":\"create_payment\",\"id\":2,\"attempt_id\":\"a1\",\"order_id\":\"o1\","

static const struct bad bads[] = {
	/* not an object / not JSON */
	{"not json", true, "not JSON"},
	{"[1,2]", true, "not a JSON object"},
	{"\"pong\"", true, "not a JSON object"},
	{"null", true, "not a JSON object"},
	{"{\"op\":\"pong\",\"re\":1", true, "not JSON"},
	{"{\"op\":\"pong\",\"re\":1}x", true, "trailing"},
	{"{\"op\":\"pong\",\"re\":1}{}", true, "trailing"},
	{"{\"op\":\"pong\",\"re\":1,\"x\":\"\xff\"}", true, "UTF-8"},
	{"{\"op\":\"pong\",\"re\":1,\"x\":\"\xc0\xaf\"}", true, "UTF-8"},
	{"{\"op\":\"pong\",\"re\":1,\"x\":\"\xed\xa0\x80\"}", true, "UTF-8"},
	/* op */
	{"{\"re\":1}", true, "op missing"},
	{"{\"op\":1,\"re\":1}", true, "op missing"},
	{"{\"op\":\"teleport\",\"re\":1}", true, "unknown op"},
	{"{\"op\":\"PONG\",\"re\":1}", true, "unknown op"},
	/* ops of the other direction */
	{"{\"op\":\"ping\",\"id\":1}", true, "unknown op from host"},
	{"{\"op\":\"hello\",\"id\":1,\"device_id\":\"d\",\"proto\":1,\"fw\":\"1\"}", true,
	 "unknown op from host"},
	{"{\"op\":\"pong\",\"re\":1}", false, "unknown op from kiosk"},
	{"{\"op\":\"confirm\",\"seq\":1}", false, "unknown op from kiosk"},
	/* id / re */
	{"{\"op\":\"ping\"}", false, "id: missing"},
	{"{\"op\":\"ping\",\"id\":\"1\"}", false, "id: not a number"},
	{"{\"op\":\"ping\",\"id\":1.5}", false, "id: not an integer"},
	{"{\"op\":\"ping\",\"id\":0}", false, "id: out of range"},
	{"{\"op\":\"ping\",\"id\":-3}", false, "id: out of range"},
	{"{\"op\":\"ping\",\"id\":9007199254740993}", false, "id: out of range"},
	{"{\"op\":\"ping\",\"id\":1e300}", false, "id: out of range"},
	{"{\"op\":\"ping\",\"id\":true}", false, "id: not a number"},
	{"{\"op\":\"ping\",\"id\":null}", false, "id: not a number"},
	{"{\"op\":\"pong\"}", true, "re: missing"},
	{"{\"op\":\"pong\",\"re\":\"1\"}", true, "re: not a number"},
	{"{\"op\":\"hello_ok\",\"host_time\":1}", true, "re: missing"},
	{"{\"op\":\"hello_ok\",\"re\":1,\"host_time\":1.25}", true, "host_time: not an integer"},
	{"{\"op\":\"hello_ok\",\"re\":1}", true, "host_time: missing"},
	{"{\"op\":\"error\",\"re\":0.5,\"code\":\"internal\",\"message\":\"m\"}", true,
	 "re: not an integer"},
	/* hello */
	{"{\"op\":\"hello\",\"id\":1,\"proto\":1,\"fw\":\"1\"}", false, "device_id: missing"},
	{"{\"op\":\"hello\",\"id\":1,\"device_id\":\"d\",\"proto\":\"1\",\"fw\":\"1\"}", false,
	 "proto: not a number"},
	{"{\"op\":\"hello\",\"id\":1,\"device_id\":\"d\",\"proto\":1}", false, "fw: missing"},
	{"{\"op\":\"hello\",\"id\":1,\"device_id\":\"d\",\"proto\":1,\"fw\":\"\"}", false,
	 "fw: ill-formed"},
	{"{\"op\":\"hello\",\"id\":1,\"device_id\":\"d e\",\"proto\":1,\"fw\":\"1\"}", false,
	 "device_id: ill-formed"},
	/* ids */
	{"{\"op\":\"query_payment\",\"id\":1,\"attempt_id\":\"\"}", false, "attempt_id: ill-formed"},
	{"{\"op\":\"query_payment\",\"id\":1,\"attempt_id\":\"a/b\"}", false,
	 "attempt_id: ill-formed"},
	{"{\"op\":\"query_payment\",\"id\":1,\"attempt_id\":\"a.b\"}", false,
	 "attempt_id: ill-formed"},
	{"{\"op\":\"query_payment\",\"id\":1,\"attempt_id\":\"\xc3\xa9\"}", false,
	 "attempt_id: ill-formed"},
	{"{\"op\":\"query_payment\",\"id\":1,\"attempt_id\":\"" ID64 "b\"}", false,
	 "attempt_id: too long"},
	{"{\"op\":\"query_payment\",\"id\":1,\"attempt_id\":\"a\\u0000b\"}", false,
	 "NUL"},
	{"{\"op\":\"query_payment\",\"id\":1,\"attempt_id\":7}", false, "attempt_id: not a string"},
	{"{\"op\":\"query_payment\",\"id\":1}", false, "attempt_id: missing"},
	{"{\"op\":\"cancel_payment\",\"id\":1,\"attempt_id\":[\"a\"]}", false,
	 "attempt_id: not a string"},
	{"{\"op\":\"query_refund\",\"id\":1,\"refund_id\":\" r\"}", false, "refund_id: ill-formed"},
	/* create_payment */
	{CREATE "\"amount\":0,\"currency\":\"EUR\",\"channel\":\"c\",\"expires_at\":1}", false,
	 "amount: out of range"},
	{CREATE "\"amount\":-5,\"currency\":\"EUR\",\"channel\":\"c\",\"expires_at\":1}", false,
	 "amount: out of range"},
	{CREATE "\"amount\":2.5,\"currency\":\"EUR\",\"channel\":\"c\",\"expires_at\":1}", false,
	 "amount: not an integer"},
	{CREATE "\"amount\":\"250\",\"currency\":\"EUR\",\"channel\":\"c\",\"expires_at\":1}", false,
	 "amount: not a number"},
	{CREATE "\"amount\":1e19,\"currency\":\"EUR\",\"channel\":\"c\",\"expires_at\":1}", false,
	 "amount: out of range"},
	{CREATE "\"amount\":250,\"currency\":\"eur\",\"channel\":\"c\",\"expires_at\":1}", false,
	 "currency: ill-formed"},
	{CREATE "\"amount\":250,\"currency\":\"EURO\",\"channel\":\"c\",\"expires_at\":1}", false,
	 "currency: too long"},
	{CREATE "\"amount\":250,\"currency\":\"EU\",\"channel\":\"c\",\"expires_at\":1}", false,
	 "currency: ill-formed"},
	{CREATE "\"amount\":250,\"currency\":\"EUR\",\"channel\":\"\",\"expires_at\":1}", false,
	 "channel: ill-formed"},
	{CREATE "\"amount\":250,\"currency\":\"EUR\",\"channel\":\"abcdefghijklmnopq\","
		"\"expires_at\":1}",
	 false, "channel: too long"},
	{CREATE "\"amount\":250,\"currency\":\"EUR\",\"channel\":\"c\"}", false, "expires_at: missing"},
	{CREATE "\"amount\":250,\"currency\":\"EUR\",\"channel\":\"c\",\"expires_at\":-1}", false,
	 "expires_at: out of range"},
	{"{\"op\":\"create_payment\",\"id\":2,\"attempt_id\":\"a1\",\"amount\":250,\"currency\":"
	 "\"EUR\",\"channel\":\"c\",\"expires_at\":1}",
	 false, "order_id: missing"},
	/* refund request */
	{"{\"op\":\"refund\",\"id\":5,\"refund_id\":\"r1\",\"attempt_id\":\"a1\",\"amount\":250,"
	 "\"reason\":\"late\"}",
	 false, "host_txn: missing"},
	{"{\"op\":\"refund\",\"id\":5,\"refund_id\":\"r1\",\"attempt_id\":\"a1\",\"host_txn\":\"t\","
	 "\"amount\":250}",
	 false, "reason: missing"},
	{"{\"op\":\"refund\",\"id\":5,\"refund_id\":\"r1\",\"attempt_id\":\"a1\",\"host_txn\":\"t\","
	 "\"amount\":250.01,\"reason\":\"late\"}",
	 false, "amount: not an integer"},
	/* ack */
	{"{\"op\":\"ack\"}", false, "seq: missing"},
	{"{\"op\":\"ack\",\"seq\":0}", false, "seq: out of range"},
	{"{\"op\":\"ack\",\"seq\":\"3\"}", false, "seq: not a number"},
	/* payment reply */
	{PAY "\"status\":\"done\"}", true, "status: unknown value"},
	{PAY "\"status\":\"refunded\"}", true, "status: unknown value"},
	{PAY "\"status\":\"Succeeded\"}", true, "status: unknown value"},
	{PAY "\"status\":\"a-very-long-status-text\"}", true, "status: too long"},
	{PAY "\"status\":3}", true, "status: not a string"},
	{"{\"op\":\"payment\",\"re\":1,\"attempt_id\":\"a1\"}", true, "status: missing"},
	{PAY "\"status\":\"succeeded\",\"amount\":250}", true, "host_txn: missing"},
	{PAY "\"status\":\"succeeded\",\"host_txn\":\"t1\"}", true, "amount: missing"},
	{PAY "\"status\":\"succeeded\",\"host_txn\":\"t1\",\"amount\":0}", true,
	 "amount: out of range"},
	{PAY "\"status\":\"pending\",\"host_txn\":\"t 1\"}", true, "host_txn: ill-formed"},
	{PAY "\"status\":\"pending\",\"amount\":1.5}", true, "amount: not an integer"},
	{PAY "\"status\":\"pending\",\"qr\":5}", true, "qr: not a string"},
	{"{\"op\":\"payment\",\"attempt_id\":\"a1\",\"status\":\"pending\"}", true, "re: missing"},
	/* refund reply */
	{"{\"op\":\"refund\",\"re\":1,\"refund_id\":\"r1\",\"status\":\"succeeded\"}", true,
	 "status: unknown value"},
	{"{\"op\":\"refund\",\"re\":1,\"status\":\"refunded\"}", true, "refund_id: missing"},
	{"{\"op\":\"refund\",\"re\":1,\"refund_id\":\"r1\",\"status\":\"rejected\",\"reason\":7}",
	 true, "reason: not a string"},
	/* error */
	{"{\"op\":\"error\",\"re\":1,\"message\":\"m\"}", true, "code: missing"},
	{"{\"op\":\"error\",\"re\":1,\"code\":\"\",\"message\":\"m\"}", true, "code: ill-formed"},
	{"{\"op\":\"error\",\"re\":1,\"code\":\"bad code\",\"message\":\"m\"}", true,
	 "code: ill-formed"},
	{"{\"op\":\"error\",\"re\":1,\"code\":\"abcdefghijklmnopqrstuvwxyz_abcdef\",\"message\":\"m\"}",
	 true, "code: too long"},
	{"{\"op\":\"error\",\"re\":1,\"code\":\"internal\"}", true, "message: missing"},
	{"{\"op\":\"error\",\"re\":1,\"code\":\"internal\",\"message\":null}", true,
	 "message: not a string"},
	/* confirm */
	{CONF "\"status\":\"pending\",\"amount\":1,\"currency\":\"EUR\",\"at\":1}", true,
	 "status: unknown value"},
	{CONF "\"status\":\"succeeded\",\"currency\":\"EUR\",\"at\":1}", true, "amount: missing"},
	{CONF "\"status\":\"succeeded\",\"amount\":1,\"at\":1}", true, "currency: missing"},
	{CONF "\"status\":\"succeeded\",\"amount\":1,\"currency\":\"EUR\"}", true, "at: missing"},
	{CONF "\"status\":\"succeeded\",\"amount\":1,\"currency\":\"EUR\",\"at\":\"now\"}", true,
	 "at: not a number"},
	{"{\"op\":\"confirm\",\"attempt_id\":\"a1\",\"host_txn\":\"t1\",\"status\":\"failed\","
	 "\"amount\":1,\"currency\":\"EUR\",\"at\":1}",
	 true, "seq: missing"},
	{"{\"op\":\"confirm\",\"seq\":1,\"attempt_id\":\"a1\",\"status\":\"failed\","
	 "\"amount\":1,\"currency\":\"EUR\",\"at\":1}",
	 true, "host_txn: missing"},
};

static void test_decode_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		const struct bad *b = &bads[i];
		kp_host_msg m;
		char why[128];
		kp_err err = dec(b->json, b->from_host, &m, why, sizeof(why));
		if (err != KP_ERR_PROTOCOL)
			fail_msg("bad[%zu] %s: got %d, want protocol error", i, b->json, err);
		if (!strstr(why, b->why))
			fail_msg("bad[%zu] %s: reason \"%s\", want \"%s\"", i, b->json, why, b->why);
		/* nothing half-decoded leaks out */
		assert_int_equal(m.id, 0);
		assert_int_equal(m.re, 0);
		assert_string_equal(m.attempt_id, "");
	}
}

static void test_decode_lengths(void **state)
{
	(void)state;
	kp_host_msg m;
	char why[128];
	assert_int_equal(kp_hostproto_decode((const uint8_t *)"", 0, true, &m, why, sizeof(why)),
			 KP_ERR_PROTOCOL);
	/* a payload of exactly KP_FRAME_MAX bytes is fine, one more is not */
	uint8_t *big = malloc(KP_FRAME_MAX + 1);
	assert_non_null(big);
	const char *head = "{\"op\":\"pong\",\"re\":1,\"pad\":\"";
	size_t hl = strlen(head);
	memcpy(big, head, hl);
	memset(big + hl, 'p', KP_FRAME_MAX - hl - 2);
	memcpy(big + KP_FRAME_MAX - 2, "\"}", 2);
	assert_int_equal(kp_hostproto_decode(big, KP_FRAME_MAX, true, &m, why, sizeof(why)), KP_OK);
	assert_int_equal(m.op, KP_OP_PONG);
	big[KP_FRAME_MAX] = ' ';
	assert_int_equal(kp_hostproto_decode(big, KP_FRAME_MAX + 1, true, &m, why, sizeof(why)),
			 KP_ERR_PROTOCOL);
	free(big);
	/* a NUL byte inside the payload */
	static const char nul[] = "{\"op\":\"pong\",\"re\":1}\0";
	assert_int_equal(kp_hostproto_decode((const uint8_t *)nul, sizeof(nul) - 1, true, &m, why,
					     sizeof(why)),
			 KP_ERR_PROTOCOL);
	/* deep nesting of an ignored field is refused by cJSON's limit, not a crash */
	size_t depth = 5000;
	char *deep = malloc(2 * depth + 64);
	assert_non_null(deep);
	size_t n = (size_t)snprintf(deep, 64, "{\"op\":\"pong\",\"re\":1,\"x\":");
	memset(deep + n, '[', depth);
	memset(deep + n + depth, ']', depth);
	deep[n + 2 * depth] = '}';
	assert_int_equal(kp_hostproto_decode((const uint8_t *)deep, n + 2 * depth + 1, true, &m,
					     why, sizeof(why)),
			 KP_ERR_PROTOCOL);
	free(deep);
}

/* ---- frame reader ---------------------------------------------------------- */

static size_t put_frame(uint8_t *p, const char *json)
{
	size_t n = strlen(json);
	p[0] = (uint8_t)(n >> 24);
	p[1] = (uint8_t)(n >> 16);
	p[2] = (uint8_t)(n >> 8);
	p[3] = (uint8_t)n;
	memcpy(p + 4, json, n);
	return n + 4;
}

/* Feed the whole buffer in chunks of `step` bytes; collect frames as strings. */
static kp_err feed_all(kp_frame_reader *r, const uint8_t *buf, size_t len, size_t step,
		       char frames[][128], size_t *count)
{
	size_t off = 0;
	*count = 0;
	while (off < len) {
		size_t chunk = len - off < step ? len - off : step;
		const uint8_t *p = buf + off;
		size_t left = chunk;
		while (left > 0) {
			size_t used;
			const uint8_t *f;
			size_t fl;
			kp_err err = kp_frame_reader_feed(r, p, left, &used, &f, &fl);
			if (err != KP_OK)
				return err;
			assert_true(used <= left);
			if (f) {
				assert_true(fl < 128);
				memcpy(frames[*count], f, fl);
				frames[*count][fl] = '\0';
				(*count)++;
			} else {
				assert_int_equal(used, left);
			}
			p += used;
			left -= used;
		}
		off += chunk;
	}
	return KP_OK;
}

static void test_frame_reader(void **state)
{
	(void)state;
	static const char *const msgs[] = {"{\"op\":\"pong\",\"re\":1}",
					   "{\"op\":\"hello_ok\",\"re\":2,\"host_time\":5}", "{}"};
	uint8_t buf[512];
	size_t len = 0;
	for (size_t i = 0; i < 3; i++)
		len += put_frame(buf + len, msgs[i]);

	static const size_t steps[] = {1, 2, 3, 4, 5, 7, 24, 25, 26, 64, 512};
	for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
		kp_frame_reader r;
		assert_int_equal(kp_frame_reader_setup(&r), KP_OK);
		char frames[4][128];
		size_t count;
		assert_int_equal(feed_all(&r, buf, len, steps[s], frames, &count), KP_OK);
		assert_int_equal(count, 3);
		for (size_t i = 0; i < 3; i++)
			assert_string_equal(frames[i], msgs[i]);
		/* nothing pending after the last frame */
		assert_int_equal(r.need, 0);
		assert_int_equal(r.hdr_have, 0);
		kp_frame_reader_free(&r);
	}
}

static void test_frame_reader_bad_lengths(void **state)
{
	(void)state;
	struct {
		uint8_t hdr[4];
		kp_err want;
	} cases[] = {
		{{0, 0, 0, 0}, KP_ERR_PROTOCOL},          /* length 0 */
		{{0, 1, 0, 1}, KP_ERR_PROTOCOL},          /* 65537 */
		{{0xff, 0xff, 0xff, 0xff}, KP_ERR_PROTOCOL},
		{{0x80, 0, 0, 1}, KP_ERR_PROTOCOL},
		{{0, 1, 0, 0}, KP_OK},                    /* exactly 65536: fine */
		{{0, 0, 0, 1}, KP_OK},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kp_frame_reader r;
		assert_int_equal(kp_frame_reader_setup(&r), KP_OK);
		/* byte by byte: the error comes on the fourth byte */
		kp_err err = KP_OK;
		for (size_t k = 0; k < 4 && err == KP_OK; k++) {
			size_t used;
			const uint8_t *f;
			size_t fl;
			err = kp_frame_reader_feed(&r, &cases[i].hdr[k], 1, &used, &f, &fl);
			assert_null(f);
			if (k < 3)
				assert_int_equal(err, KP_OK);
		}
		assert_int_equal(err, cases[i].want);
		kp_frame_reader_free(&r);
	}

	/* a 65536-byte frame arrives whole */
	kp_frame_reader r;
	assert_int_equal(kp_frame_reader_setup(&r), KP_OK);
	uint8_t *big = malloc(KP_FRAME_MAX + 4);
	assert_non_null(big);
	big[0] = 0;
	big[1] = 1;
	big[2] = 0;
	big[3] = 0;
	memset(big + 4, 'z', KP_FRAME_MAX);
	size_t used;
	const uint8_t *f;
	size_t fl;
	assert_int_equal(kp_frame_reader_feed(&r, big, KP_FRAME_MAX + 4, &used, &f, &fl), KP_OK);
	assert_non_null(f);
	assert_int_equal(fl, KP_FRAME_MAX);
	assert_int_equal(used, KP_FRAME_MAX + 4);
	assert_int_equal(f[KP_FRAME_MAX - 1], 'z');
	/* reset drops a partial frame */
	assert_int_equal(kp_frame_reader_feed(&r, big, 10, &used, &f, &fl), KP_OK);
	assert_null(f);
	kp_frame_reader_reset(&r);
	uint8_t one[] = {0, 0, 0, 2, '{', '}'};
	assert_int_equal(kp_frame_reader_feed(&r, one, sizeof(one), &used, &f, &fl), KP_OK);
	assert_non_null(f);
	assert_int_equal(fl, 2);
	free(big);
	kp_frame_reader_free(&r);
	kp_frame_reader_free(NULL);
}

/* ---- round trips ------------------------------------------------------------ */

static bool msg_equal(const kp_host_msg *a, const kp_host_msg *b)
{
	return a->op == b->op && a->id == b->id && a->re == b->re && a->has_re == b->has_re &&
	       !strcmp(a->attempt_id, b->attempt_id) && !strcmp(a->order_id, b->order_id) &&
	       !strcmp(a->refund_id, b->refund_id) && !strcmp(a->host_txn, b->host_txn) &&
	       !strcmp(a->device_id, b->device_id) && !strcmp(a->status, b->status) &&
	       !strcmp(a->channel, b->channel) && !strcmp(a->currency, b->currency) &&
	       !strcmp(a->reason, b->reason) && !strcmp(a->code, b->code) &&
	       !strcmp(a->message, b->message) && !strcmp(a->fw, b->fw) && !strcmp(a->qr, b->qr) &&
	       a->amount == b->amount && a->has_amount == b->has_amount &&
	       a->expires_at == b->expires_at && a->seq == b->seq && a->at == b->at &&
	       a->host_time == b->host_time && a->proto == b->proto;
}

static kp_host_msg mk(kp_host_op op)
{
	kp_host_msg m;
	memset(&m, 0, sizeof(m));
	m.op = op;
	return m;
}

static void set(char *dst, size_t cap, const char *s)
{
	snprintf(dst, cap, "%s", s);
}
#define SET(m, f, s) set((m).f, sizeof((m).f), (s))

static size_t build_all(kp_host_msg *out)
{
	size_t n = 0;
	kp_host_msg m;

	m = mk(KP_OP_HELLO);
	m.id = 1;
	SET(m, device_id, "kiosk-0001");
	m.proto = 1;
	SET(m, fw, "0.1.0 (g1a2b3c)");
	out[n++] = m;

	m = mk(KP_OP_CREATE_PAYMENT);
	m.id = 2;
	SET(m, attempt_id, "3b241101-e2bb-4255-8caf-4136c566a962");
	SET(m, order_id, "o-1");
	m.amount = 9007199254740991LL;
	m.has_amount = true;
	SET(m, currency, "JPY");
	SET(m, channel, "0123456789abcdef");
	m.expires_at = 1700000000000LL;
	out[n++] = m;

	m = mk(KP_OP_QUERY_PAYMENT);
	m.id = 3;
	SET(m, attempt_id, ID64);
	out[n++] = m;

	m = mk(KP_OP_CANCEL_PAYMENT);
	m.id = 4;
	SET(m, attempt_id, "x");
	out[n++] = m;

	m = mk(KP_OP_REFUND);
	m.id = 5;
	SET(m, refund_id, "r-1");
	SET(m, attempt_id, "a-1");
	SET(m, host_txn, "T_9");
	m.amount = 1;
	m.has_amount = true;
	SET(m, reason, "amount_mismatch");
	out[n++] = m;

	m = mk(KP_OP_QUERY_REFUND);
	m.id = 6;
	SET(m, refund_id, "r-1");
	out[n++] = m;

	m = mk(KP_OP_ACK);
	m.seq = 123456789012LL;
	out[n++] = m;

	m = mk(KP_OP_PING);
	m.id = 2147483648LL;
	out[n++] = m;

	m = mk(KP_OP_HELLO_OK);
	m.re = 1;
	m.has_re = true;
	m.host_time = 1712345678901LL;
	out[n++] = m;

	m = mk(KP_OP_PAYMENT);
	m.re = 2;
	m.has_re = true;
	SET(m, attempt_id, "a-1");
	SET(m, status, "pending");
	SET(m, qr, "https://pay.example/q?a=1&b=\"2\"\\ \xc3\xa9\n");
	out[n++] = m;

	m = mk(KP_OP_PAYMENT);
	m.re = 3;
	m.has_re = true;
	SET(m, attempt_id, "a-1");
	SET(m, status, "succeeded");
	SET(m, host_txn, "t-1");
	m.amount = 250;
	m.has_amount = true;
	out[n++] = m;

	m = mk(KP_OP_REFUND_REPLY);
	m.re = 5;
	m.has_re = true;
	SET(m, refund_id, "r-1");
	SET(m, status, "rejected");
	SET(m, reason, "too_late");
	out[n++] = m;

	m = mk(KP_OP_PONG);
	m.re = 8;
	m.has_re = true;
	out[n++] = m;

	m = mk(KP_OP_ERROR);
	m.re = 2;
	m.has_re = true;
	SET(m, code, "attempt_canceled");
	SET(m, message, "attempt a-1 was canceled \"before\" create");
	out[n++] = m;

	m = mk(KP_OP_ERROR);
	SET(m, code, "bad_request");
	SET(m, message, "");
	out[n++] = m;

	m = mk(KP_OP_CONFIRM);
	m.seq = 42;
	SET(m, attempt_id, "a-1");
	SET(m, host_txn, "t-1");
	SET(m, status, "succeeded");
	m.amount = 250;
	m.has_amount = true;
	SET(m, currency, "EUR");
	m.at = 1712345678901LL;
	out[n++] = m;
	return n;
}

static void test_round_trip(void **state)
{
	(void)state;
	kp_host_msg msgs[32];
	size_t n = build_all(msgs);
	bool seen[KP_OP__COUNT] = {false};

	/* all frames into one stream, then read back through the frame reader */
	uint8_t *stream = malloc(32 * 1024);
	assert_non_null(stream);
	size_t len = 0;
	for (size_t i = 0; i < n; i++) {
		size_t fl;
		kp_err err = kp_hostproto_encode(&msgs[i], stream + len, 32 * 1024 - len, &fl);
		if (err != KP_OK)
			fail_msg("encode %zu (%s): %d", i, kp_host_op_str(msgs[i].op), err);
		/* compact JSON, prefix matches */
		size_t pl = (size_t)stream[len] << 24 | (size_t)stream[len + 1] << 16 |
			    (size_t)stream[len + 2] << 8 | stream[len + 3];
		assert_int_equal(pl + 4, fl);
		assert_null(memchr(stream + len + 4, '\n', pl));
		len += fl;
		seen[msgs[i].op] = true;
	}
	for (int op = KP_OP_HELLO; op < KP_OP__COUNT; op++)
		if (!seen[op])
			fail_msg("op %s has no round-trip case", kp_host_op_str((kp_host_op)op));

	kp_frame_reader r;
	assert_int_equal(kp_frame_reader_setup(&r), KP_OK);
	size_t off = 0, got = 0;
	while (off < len) {
		size_t used;
		const uint8_t *f;
		size_t fl;
		assert_int_equal(kp_frame_reader_feed(&r, stream + off, 3, &used, &f, &fl), KP_OK);
		off += used;
		if (!f)
			continue;
		kp_host_msg back;
		char why[128];
		bool from_host = msgs[got].op >= KP_OP_HELLO_OK;
		kp_err err = kp_hostproto_decode(f, fl, from_host, &back, why, sizeof(why));
		if (err != KP_OK)
			fail_msg("decode %zu: %s (%.*s)", got, why, (int)fl, (const char *)f);
		if (!msg_equal(&back, &msgs[got]))
			fail_msg("round trip %zu (%s) differs: %.*s", got,
				 kp_host_op_str(msgs[got].op), (int)fl, (const char *)f);
		got++;
	}
	assert_int_equal(got, n);
	kp_frame_reader_free(&r);
	free(stream);
}

static void test_encode_refuses(void **state)
{
	(void)state;
	uint8_t buf[1024];
	size_t len = 99;
	kp_host_msg msgs[32];
	build_all(msgs);

	kp_host_msg m = msgs[1]; /* create_payment */
	m.id = 0;                /* the link assigns ids; 0 is none */
	assert_int_equal(kp_hostproto_encode(&m, buf, sizeof(buf), &len), KP_ERR_INVALID);
	m = msgs[1];
	m.amount = 0;
	assert_int_equal(kp_hostproto_encode(&m, buf, sizeof(buf), &len), KP_ERR_INVALID);
	m = msgs[1];
	SET(m, currency, "eu");
	assert_int_equal(kp_hostproto_encode(&m, buf, sizeof(buf), &len), KP_ERR_INVALID);
	m = msgs[1];
	SET(m, attempt_id, "");
	assert_int_equal(kp_hostproto_encode(&m, buf, sizeof(buf), &len), KP_ERR_INVALID);
	m = msgs[1];
	memset(m.order_id, 'o', sizeof(m.order_id)); /* unterminated */
	assert_int_equal(kp_hostproto_encode(&m, buf, sizeof(buf), &len), KP_ERR_INVALID);
	m = msgs[10]; /* payment succeeded */
	m.has_amount = false;
	assert_int_equal(kp_hostproto_encode(&m, buf, sizeof(buf), &len), KP_ERR_INVALID);
	m = msgs[10];
	SET(m, status, "done");
	assert_int_equal(kp_hostproto_encode(&m, buf, sizeof(buf), &len), KP_ERR_INVALID);
	m = msgs[6]; /* ack */
	m.seq = 0;
	assert_int_equal(kp_hostproto_encode(&m, buf, sizeof(buf), &len), KP_ERR_INVALID);
	m = mk(KP_OP_NONE);
	assert_int_equal(kp_hostproto_encode(&m, buf, sizeof(buf), &len), KP_ERR_INVALID);
	m = mk(KP_OP__COUNT);
	assert_int_equal(kp_hostproto_encode(&m, buf, sizeof(buf), &len), KP_ERR_INVALID);
	/* too small a buffer */
	assert_int_equal(kp_hostproto_encode(&msgs[0], buf, 20, &len), KP_ERR_TOO_BIG);
	assert_int_equal(len, 99); /* untouched on failure */
	/* an exact fit works */
	size_t need;
	assert_int_equal(kp_hostproto_encode(&msgs[0], buf, sizeof(buf), &need), KP_OK);
	assert_int_equal(kp_hostproto_encode(&msgs[0], buf, need, &len), KP_OK);
	assert_int_equal(kp_hostproto_encode(&msgs[0], buf, need - 1, &len), KP_ERR_TOO_BIG);
}

static void test_misc(void **state)
{
	(void)state;
	assert_string_equal(kp_host_op_str(KP_OP_REFUND), "refund");
	assert_string_equal(kp_host_op_str(KP_OP_REFUND_REPLY), "refund");
	assert_string_equal(kp_host_op_str(KP_OP_CONFIRM), "confirm");
	assert_string_equal(kp_host_op_str(KP_OP__COUNT), "?");
	assert_true(kp_proto_id_valid("a"));
	assert_true(kp_proto_id_valid(ID64));
	assert_false(kp_proto_id_valid(ID64 "a"));
	assert_false(kp_proto_id_valid(""));
	assert_false(kp_proto_id_valid(NULL));
	assert_false(kp_proto_id_valid("a b"));
	/* "refund" text decodes by direction */
	kp_host_msg m;
	assert_int_equal(dec(goods[4].json, false, &m, NULL, 0), KP_OK);
	assert_int_equal(m.op, KP_OP_REFUND);
	assert_int_equal(dec(goods[16].json, true, &m, NULL, 0), KP_OK);
	assert_int_equal(m.op, KP_OP_REFUND_REPLY);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode_good),
		cmocka_unit_test(test_decode_fields_detail),
		cmocka_unit_test(test_decode_bad),
		cmocka_unit_test(test_decode_lengths),
		cmocka_unit_test(test_frame_reader),
		cmocka_unit_test(test_frame_reader_bad_lengths),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_encode_refuses),
		cmocka_unit_test(test_misc),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
