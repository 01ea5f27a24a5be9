/* test_api_json.c — the API's wire format without sockets: the kp_err ->
 * CoAP code table, every good and bad request body, and the JSON bodies a
 * client reads back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_json.h"

/* ---------- kp_err -> CoAP code ---------- */

static void test_err_coap_table(void **state)
{
	(void)state;
	static const struct {
		kp_err err;
		int code;
	} cases[] = {
		{KP_OK, 205},
		{KP_ERR_INVALID, 400},
		{KP_ERR_NOT_FOUND, 404},
		{KP_ERR_CONFLICT, 409},
		{KP_ERR_EXPIRED, 409},
		{KP_ERR_STATE, 409},
		{KP_ERR_BUSY, 409},
		{KP_ERR_ILLEGAL_MOVE, 409},
		{KP_ERR_CONSTRAINT, 409},
		{KP_ERR_TOO_BIG, 413},
		{KP_ERR_UNAVAILABLE, 503},
		{KP_ERR_DISCONNECTED, 503},
		{KP_ERR_READONLY, 503},
		{KP_ERR_HOST, 502},
		{KP_ERR_PROTOCOL, 502},
		{KP_ERR_TIMEOUT, 504},
		{KP_ERR_NOMEM, 500},
		{KP_ERR_IO, 500},
		{KP_ERR_INTERNAL, 500},
		{KP_ERR__SENTINEL, 500},
		{(kp_err)7, 500},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = kp_api_err_coap(cases[i].err);
		if (got != cases[i].code)
			fail_msg("%s: got %d, want %d", kp_errname(cases[i].err), got, cases[i].code);
	}
	/* Every real error maps to a 4.xx or 5.xx code. */
	for (int e = -1; e > KP_ERR__SENTINEL; e--) {
		int c = kp_api_err_coap((kp_err)e);
		assert_true(c >= 400 && c < 600);
	}
}

/* ---------- POST /orders bodies ---------- */

struct order_case {
	const char *body;
	kp_err err;
	const char *why_has;   /* substring of the reason, for failures */
	int64_t amount;        /* for successes */
	const char *items;     /* compact items, for successes ("" none) */
	const char *channel;   /* "channel", for successes (NULL: none given) */
};

static const struct order_case order_cases[] = {
	{"{\"dedup_key\":\"k1\",\"amount\":250}", KP_OK, NULL, 250, "", NULL},
	{"{\"dedup_key\":\"k1\",\"amount\":250,\"currency\":\"EUR\"}", KP_OK, NULL, 250, "", NULL},
	{" {\"amount\":1, \"dedup_key\":\"a-b_C9\"} \n", KP_OK, NULL, 1, "", NULL},
	{"{\"dedup_key\":\"k\",\"amount\":9007199254740992}", KP_OK, NULL, 9007199254740992LL, "", NULL},
	{"{\"dedup_key\":\"k\",\"amount\":100.0}", KP_OK, NULL, 100, "", NULL},
	{"{\"dedup_key\":\"k\",\"amount\":5,\"items\":[ {\"sku\": \"A1\", \"qty\": 2} ]}", KP_OK, NULL, 5,
	 "[{\"sku\":\"A1\",\"qty\":2}]", NULL},
	{"{\"dedup_key\":\"k\",\"amount\":5,\"items\":null}", KP_OK, NULL, 5, "", NULL},
	{"{\"dedup_key\":\"k\",\"amount\":5,\"extra\":{\"x\":1}}", KP_OK, NULL, 5, "", NULL},
	/* a one-request sale; the channel's alphabet is the engine's to check */
	{"{\"dedup_key\":\"k\",\"amount\":5,\"channel\":\"card\"}", KP_OK, NULL, 5, "", "card"},
	{"{\"dedup_key\":\"k\",\"amount\":5,\"channel\":\"Card Reader\"}", KP_OK, NULL, 5, "", "Card Reader"},
	{"{\"dedup_key\":\"k\",\"amount\":5,\"channel\":7}", KP_ERR_INVALID, "channel", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":5,\"channel\":\"\"}", KP_ERR_INVALID, "channel", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":5,\"channel\":null}", KP_ERR_INVALID, "channel", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":5,\"channel\":\"abcdefghijklmnopq\"}", KP_ERR_INVALID, "channel", 0, NULL, NULL},
	/* malformed */
	{"", KP_ERR_INVALID, "body is required", 0, NULL, NULL},
	{"{", KP_ERR_INVALID, "malformed", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":5", KP_ERR_INVALID, "malformed", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":5} trailing", KP_ERR_INVALID, "malformed", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":5}{}", KP_ERR_INVALID, "malformed", 0, NULL, NULL},
	{"[1,2]", KP_ERR_INVALID, "object", 0, NULL, NULL},
	{"\"text\"", KP_ERR_INVALID, "object", 0, NULL, NULL},
	{"null", KP_ERR_INVALID, "object", 0, NULL, NULL},
	/* missing / wrong types */
	{"{\"amount\":5}", KP_ERR_INVALID, "dedup_key", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\"}", KP_ERR_INVALID, "amount", 0, NULL, NULL},
	{"{\"dedup_key\":5,\"amount\":5}", KP_ERR_INVALID, "dedup_key", 0, NULL, NULL},
	{"{\"dedup_key\":\"\",\"amount\":5}", KP_ERR_INVALID, "dedup_key", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":0}", KP_ERR_INVALID, "amount", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":-5}", KP_ERR_INVALID, "amount", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":1.5}", KP_ERR_INVALID, "amount", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":\"100\"}", KP_ERR_INVALID, "amount", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":true}", KP_ERR_INVALID, "amount", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":null}", KP_ERR_INVALID, "amount", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":9007199254740994}", KP_ERR_INVALID, "amount", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":1e300}", KP_ERR_INVALID, "amount", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":5,\"currency\":\"EURO\"}", KP_ERR_INVALID, "currency", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":5,\"currency\":978}", KP_ERR_INVALID, "currency", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":5,\"items\":\"two cokes\"}", KP_ERR_INVALID, "items", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\",\"amount\":5,\"amount\":6}", KP_ERR_INVALID, "twice", 0, NULL, NULL},
	{"{\"dedup_key\":\"k\\u0000x\",\"amount\":5}", KP_ERR_INVALID, "NUL", 0, NULL, NULL},
};

static void test_parse_order_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(order_cases) / sizeof(order_cases[0]); i++) {
		const struct order_case *c = &order_cases[i];
		kp_api_order_body b;
		char why[192] = "";
		kp_err err = kp_api_json_parse_order((const uint8_t *)c->body, strlen(c->body), &b, why, sizeof(why));
		if (err != c->err)
			fail_msg("case %zu %s: got %s (%s), want %s", i, c->body, kp_errname(err), why,
				 kp_errname(c->err));
		if (err == KP_OK) {
			assert_int_equal(b.amount, c->amount);
			assert_string_equal(b.items, c->items);
			assert_int_equal(b.has_items, c->items[0] != '\0');
			assert_int_equal(b.has_channel, c->channel != NULL);
			assert_string_equal(b.channel, c->channel ? c->channel : "");
		} else if (!strstr(why, c->why_has)) {
			fail_msg("case %zu %s: reason \"%s\" lacks \"%s\"", i, c->body, why, c->why_has);
		}
	}
}

static void test_parse_order_bounds(void **state)
{
	(void)state;
	char body[4096];
	char why[192];
	kp_api_order_body b;

	/* dedup_key of 64 characters is the longest accepted. */
	char key[70];
	memset(key, 'a', 64);
	key[64] = '\0';
	int n = snprintf(body, sizeof(body), "{\"dedup_key\":\"%s\",\"amount\":1}", key);
	assert_int_equal(kp_api_json_parse_order((uint8_t *)body, (size_t)n, &b, why, sizeof(why)), KP_OK);
	assert_string_equal(b.dedup_key, key);
	key[64] = 'a';
	key[65] = '\0';
	n = snprintf(body, sizeof(body), "{\"dedup_key\":\"%s\",\"amount\":1}", key);
	assert_int_equal(kp_api_json_parse_order((uint8_t *)body, (size_t)n, &b, why, sizeof(why)),
			 KP_ERR_INVALID);

	/* items: compact JSON of KP_ITEMS_MAX-1 bytes fits, one more is too big. */
	for (int extra = 0; extra <= 1; extra++) {
		size_t want = KP_ITEMS_MAX - 1 + (size_t)extra; /* ["xxx..."] */
		char items[KP_ITEMS_MAX + 8];
		items[0] = '[';
		items[1] = '"';
		memset(items + 2, 'x', want - 4);
		items[want - 2] = '"';
		items[want - 1] = ']';
		items[want] = '\0';
		n = snprintf(body, sizeof(body), "{\"dedup_key\":\"k\",\"amount\":1,\"items\":%s}", items);
		kp_err err = kp_api_json_parse_order((uint8_t *)body, (size_t)n, &b, why, sizeof(why));
		assert_int_equal(err, extra ? KP_ERR_TOO_BIG : KP_OK);
		if (!extra)
			assert_string_equal(b.items, items);
	}

	/* A raw NUL byte inside the body. */
	static const char nul_body[] = "{\"dedup_key\":\"k\",\"amount\":1}\0xx";
	assert_int_equal(kp_api_json_parse_order((const uint8_t *)nul_body, sizeof(nul_body) - 1, &b, why,
						 sizeof(why)),
			 KP_ERR_INVALID);
	/* The body is not NUL-terminated: only len bytes are read. */
	static const char cut[] = "{\"dedup_key\":\"k\",\"amount\":12}GARBAGE";
	assert_int_equal(kp_api_json_parse_order((const uint8_t *)cut, strlen(cut) - 7, &b, why, sizeof(why)),
			 KP_OK);
	assert_int_equal(b.amount, 12);
}

/* ---------- pay and vend bodies ---------- */

static void test_parse_pay_vend(void **state)
{
	(void)state;
	static const struct {
		const char *body;
		kp_err err;
		const char *channel;
	} pays[] = {
		{"{\"channel\":\"card\"}", KP_OK, "card"},
		{"{\"channel\":\"0123456789abcdef\"}", KP_OK, "0123456789abcdef"},
		{"{\"channel\":\"0123456789abcdefg\"}", KP_ERR_INVALID, NULL},
		{"{\"channel\":\"\"}", KP_ERR_INVALID, NULL},
		{"{\"channel\":3}", KP_ERR_INVALID, NULL},
		{"{}", KP_ERR_INVALID, NULL},
		{"channel=card", KP_ERR_INVALID, NULL},
	};
	for (size_t i = 0; i < sizeof(pays) / sizeof(pays[0]); i++) {
		char channel[KP_CHANNEL_SIZE];
		char why[192];
		kp_err err = kp_api_json_parse_pay((const uint8_t *)pays[i].body, strlen(pays[i].body), channel, why,
						   sizeof(why));
		if (err != pays[i].err)
			fail_msg("pay %s: got %s", pays[i].body, kp_errname(err));
		if (err == KP_OK)
			assert_string_equal(channel, pays[i].channel);
	}

	static const struct {
		const char *body;
		kp_err err;
		bool success;
	} vends[] = {
		{"{\"result\":\"success\"}", KP_OK, true},
		{"{\"result\":\"failure\"}", KP_OK, false},
		{"{\"result\":\"SUCCESS\"}", KP_ERR_INVALID, false},
		{"{\"result\":true}", KP_ERR_INVALID, false},
		{"{\"result\":\"ok\"}", KP_ERR_INVALID, false},
		{"{}", KP_ERR_INVALID, false},
	};
	for (size_t i = 0; i < sizeof(vends) / sizeof(vends[0]); i++) {
		bool ok = !vends[i].success;
		char why[192];
		kp_err err = kp_api_json_parse_vend((const uint8_t *)vends[i].body, strlen(vends[i].body), &ok, why,
						    sizeof(why));
		if (err != vends[i].err)
			fail_msg("vend %s: got %s", vends[i].body, kp_errname(err));
		if (err == KP_OK)
			assert_int_equal(ok, vends[i].success);
	}
}

static void test_id_valid(void **state)
{
	(void)state;
	assert_true(kp_api_json_id_valid("0b7c2a1e-4d7f-4b8e-9d3c-1a2b3c4d5e6f", 36));
	assert_true(kp_api_json_id_valid("A_z-9", 5));
	assert_false(kp_api_json_id_valid("", 0));
	assert_false(kp_api_json_id_valid("a b", 3));
	assert_false(kp_api_json_id_valid("a/b", 3));
	assert_false(kp_api_json_id_valid("a%2F", 4));
	char long_id[66];
	memset(long_id, 'a', 65);
	long_id[65] = '\0';
	assert_true(kp_api_json_id_valid(long_id, 64));
	assert_false(kp_api_json_id_valid(long_id, 65));
}

/* ---------- rendering ---------- */

static char *render(cJSON *root)
{
	assert_non_null(root);
	char *s = kp_api_json_print(root);
	cJSON_Delete(root);
	assert_non_null(s);
	return s;
}

static void test_render(void **state)
{
	(void)state;
	kp_order o;
	memset(&o, 0, sizeof(o));
	snprintf(o.order_id, sizeof(o.order_id), "o1");
	snprintf(o.dedup_key, sizeof(o.dedup_key), "k1");
	o.amount = 250;
	snprintf(o.currency, sizeof(o.currency), "EUR");
	snprintf(o.items, sizeof(o.items), "[{\"sku\":\"A1\"}]");
	o.state = KP_ORDER_PAID;
	o.created_at = 1800000000000LL;
	o.expires_at = 1800000300000LL;
	o.updated_at = 1800000001000LL;

	char *s = render(kp_api_json_created(&o, true));
	assert_string_equal(s, "{\"order_id\":\"o1\",\"status\":\"paid\",\"amount\":250,\"currency\":\"EUR\","
			       "\"expires_at\":1800000300000,\"duplicated\":true}");
	cJSON_free(s);

	kp_attempt a[2];
	memset(a, 0, sizeof(a));
	snprintf(a[0].attempt_id, sizeof(a[0].attempt_id), "a1");
	snprintf(a[0].order_id, sizeof(a[0].order_id), "o1");
	snprintf(a[0].channel, sizeof(a[0].channel), "card");
	a[0].state = KP_ATTEMPT_FAILED;
	a[0].amount = 250;
	a[1] = a[0];
	snprintf(a[1].attempt_id, sizeof(a[1].attempt_id), "a2");
	snprintf(a[1].host_txn, sizeof(a[1].host_txn), "t9");
	a[1].state = KP_ATTEMPT_SUCCEEDED;
	kp_refund r;
	memset(&r, 0, sizeof(r));
	snprintf(r.refund_id, sizeof(r.refund_id), "r1");
	snprintf(r.attempt_id, sizeof(r.attempt_id), "a2");
	r.reason = KP_REASON_DUPLICATE;
	r.state = KP_REFUND_SENT;
	r.amount = 250;

	const char *qrs[2] = {NULL, "qr-text"};
	s = render(kp_api_json_order(&o, a, qrs, 2, &r, 1));
	cJSON *back = cJSON_Parse(s);
	cJSON_free(s);
	assert_non_null(back);
	assert_string_equal(cJSON_GetObjectItem(back, "status")->valuestring, "paid");
	assert_true(cJSON_IsArray(cJSON_GetObjectItem(back, "items")));
	cJSON *atts = cJSON_GetObjectItem(back, "attempts");
	assert_int_equal(cJSON_GetArraySize(atts), 2);
	/* host_txn appears once the host named it, qr when the caller gives one. */
	assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(atts, 0), "host_txn"));
	assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(atts, 0), "qr"));
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(atts, 1), "host_txn")->valuestring, "t9");
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(atts, 1), "qr")->valuestring, "qr-text");
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(atts, 1), "status")->valuestring, "succeeded");
	cJSON *refs = cJSON_GetObjectItem(back, "refunds");
	assert_int_equal(cJSON_GetArraySize(refs), 1);
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(refs, 0), "reason")->valuestring, "duplicate");
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(refs, 0), "status")->valuestring, "sent");
	cJSON_Delete(back);

	/* items text that is not JSON (another writer) is shown as a string. */
	snprintf(o.items, sizeof(o.items), "not json");
	s = render(kp_api_json_order(&o, NULL, NULL, 0, NULL, 0));
	assert_non_null(strstr(s, "\"items\":\"not json\""));
	assert_non_null(strstr(s, "\"attempts\":[],\"refunds\":[]"));
	cJSON_free(s);

	/* A one-request sale's answer: the created answer and the attempt, or
	 * why the payment did not start. */
	o.state = KP_ORDER_PENDING;
	s = render(kp_api_json_created_paying(&o, &a[0], "qr-1", KP_OK, NULL));
	assert_string_equal(s, "{\"order_id\":\"o1\",\"status\":\"pending\",\"amount\":250,\"currency\":\"EUR\","
			       "\"expires_at\":1800000300000,\"duplicated\":false,\"attempt\":{\"attempt_id\":\"a1\","
			       "\"order_id\":\"o1\",\"channel\":\"card\",\"status\":\"failed\",\"amount\":250,"
			       "\"qr\":\"qr-1\",\"created_at\":0,\"updated_at\":0}}");
	cJSON_free(s);
	s = render(kp_api_json_created_paying(&o, NULL, NULL, KP_ERR_DISCONNECTED, "order o1: host down"));
	assert_string_equal(s, "{\"order_id\":\"o1\",\"status\":\"pending\",\"amount\":250,\"currency\":\"EUR\","
			       "\"expires_at\":1800000300000,\"duplicated\":false,\"pay_error\":{\"error\":"
			       "\"disconnected\",\"message\":\"order o1: host down\"}}");
	cJSON_free(s);

	s = render(kp_api_json_error(KP_ERR_CONFLICT, "dedup_key k1 was used"));
	assert_string_equal(s, "{\"error\":\"conflict\",\"message\":\"dedup_key k1 was used\"}");
	cJSON_free(s);

	kp_event ev[2];
	memset(ev, 0, sizeof(ev));
	ev[0].seq = 7;
	ev[0].at = 5;
	snprintf(ev[0].kind, sizeof(ev[0].kind), "order");
	snprintf(ev[0].record_id, sizeof(ev[0].record_id), "o1");
	snprintf(ev[0].to_state, sizeof(ev[0].to_state), "pending");
	snprintf(ev[0].cause, sizeof(ev[0].cause), "created");
	ev[1] = ev[0];
	ev[1].seq = 9;
	snprintf(ev[1].from_state, sizeof(ev[1].from_state), "pending");
	snprintf(ev[1].to_state, sizeof(ev[1].to_state), "paid");
	s = render(kp_api_json_events(ev, 2, 9));
	assert_string_equal(s, "{\"events\":[{\"seq\":7,\"at\":5,\"kind\":\"order\",\"id\":\"o1\",\"to\":\"pending\","
			       "\"cause\":\"created\"},{\"seq\":9,\"at\":5,\"kind\":\"order\",\"id\":\"o1\","
			       "\"from\":\"pending\",\"to\":\"paid\",\"cause\":\"created\"}],\"next\":9}");
	cJSON_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_err_coap_table),
		cmocka_unit_test(test_parse_order_table),
		cmocka_unit_test(test_parse_order_bounds),
		cmocka_unit_test(test_parse_pay_vend),
		cmocka_unit_test(test_id_valid),
		cmocka_unit_test(test_render),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
