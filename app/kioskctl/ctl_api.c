/* ctl_api.c — kioskctl's commands over kioskpayd's CoAP API (order create|
 * show|pay|cancel|vend, events, health, metrics, reconcile) and the small
 * libcoap client they share: one confirmable request, wait for its (possibly
 * separate, possibly block-wise) answer with a timeout, print it for a person
 * or as the raw JSON. */
#include "kioskctl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <coap3/coap.h>

#include "coap_addr.h"
#include "kp_env.h"
#include "kp_error.h"

#define CTL_TIMEOUT_MS 20000 /* a pay waits for the host (10 s) and more */

/* One answer from the API. */
typedef struct ctl_reply {
	int code;        /* class*100+detail: 201, 409, ... */
	char *body;      /* NUL-terminated, malloc'd ("" if none) */
	size_t len;
} ctl_reply;

/* ---------- the client ---------- */

static void reply_free(ctl_reply *r);

struct call {
	uint8_t token[8];
	size_t token_len;
	bool done;
	kp_err err;          /* set with done when there is no answer */
	ctl_reply *out;
};

static coap_response_t on_response(coap_session_t *session, const coap_pdu_t *sent, const coap_pdu_t *rcv,
				   const coap_mid_t mid)
{
	(void)sent;
	(void)mid;
	struct call *c = coap_get_app_data(coap_session_get_context(session));
	coap_bin_const_t tok = coap_pdu_get_token(rcv);
	coap_pdu_code_t code = coap_pdu_get_code(rcv);
	if (c->done || tok.length != c->token_len || memcmp(tok.s, c->token, tok.length) != 0 ||
	    COAP_RESPONSE_CLASS(code) == 0)
		return COAP_RESPONSE_OK;
	size_t len = 0, offset = 0, total = 0;
	const uint8_t *data = NULL;
	if (!coap_get_data_large(rcv, &len, &data, &offset, &total) || offset != 0) {
		len = 0;
		data = NULL;
	}
	c->out->body = malloc(len + 1);
	if (!c->out->body) {
		c->err = KP_ERR_NOMEM;
	} else {
		if (len)
			memcpy(c->out->body, data, len);
		c->out->body[len] = '\0';
		c->out->len = len;
		c->out->code = COAP_RESPONSE_CLASS(code) * 100 + (code & 0x1f);
		c->err = KP_OK;
	}
	c->done = true;
	return COAP_RESPONSE_OK;
}

static void on_nack(coap_session_t *session, const coap_pdu_t *sent, const coap_nack_reason_t reason,
		    const coap_mid_t mid)
{
	(void)sent;
	(void)mid;
	struct call *c = coap_get_app_data(coap_session_get_context(session));
	if (c->done)
		return;
	c->err = reason == COAP_NACK_TOO_MANY_RETRIES ? KP_ERR_TIMEOUT : KP_ERR_DISCONNECTED;
	c->done = true;
}

/* Add one option per sep-separated part of text. */
static bool add_parts(coap_pdu_t *pdu, coap_option_num_t num, const char *text, char sep)
{
	const char *p = text;
	while (p && *p) {
		const char *e = strchr(p, sep);
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (n && !coap_add_option(pdu, num, n, (const uint8_t *)p))
			return false;
		p = e ? e + 1 : NULL;
	}
	return true;
}

/* Send one confirmable request to api ("host:port", numeric or localhost)
 * and wait up to timeout_ms for its answer. KP_OK with *out filled (whatever
 * the code), KP_ERR_CONFIG for a bad address, KP_ERR_DISCONNECTED if the
 * service refused or reset, KP_ERR_TIMEOUT if nothing came in time. */
static kp_err api_request(const char *api, const char *method, const char *path, const char *query,
			  const char *body, int64_t timeout_ms, ctl_reply *out)
{
	coap_context_t *ctx = NULL;
	coap_session_t *session = NULL;
	coap_pdu_t *pdu = NULL;
	coap_address_t dst;
	struct call c;
	kp_env env;
	kp_err err;

	memset(out, 0, sizeof(*out));
	memset(&c, 0, sizeof(c));
	c.out = out;
	kp_env_init_system(&env);
	if (kp_coap_addr_parse(api ? api : KCTL_DEFAULT_API, false, &dst, NULL) != KP_OK)
		return KP_ERR_CONFIG;
	coap_pdu_code_t code = strcmp(method, "POST") == 0 ? COAP_REQUEST_CODE_POST : COAP_REQUEST_CODE_GET;

	coap_startup();
	coap_set_log_level(LOG_ERR); /* ICMP warnings: we report unreachable ourselves */
	ctx = coap_new_context(NULL);
	if (!ctx) {
		err = KP_ERR_NOMEM;
		goto out;
	}
	coap_context_set_block_mode(ctx, COAP_BLOCK_USE_LIBCOAP | COAP_BLOCK_SINGLE_BODY);
	coap_set_app_data(ctx, &c);
	coap_register_response_handler(ctx, on_response);
	coap_register_nack_handler(ctx, on_nack);
	session = coap_new_client_session(ctx, NULL, &dst, COAP_PROTO_UDP);
	if (!session) {
		err = KP_ERR_DISCONNECTED;
		goto out;
	}
	pdu = coap_new_pdu(COAP_MESSAGE_CON, code, session);
	if (!pdu) {
		err = KP_ERR_NOMEM;
		goto out;
	}
	coap_session_new_token(session, &c.token_len, c.token);
	uint8_t cf[4];
	if (!coap_add_token(pdu, c.token_len, c.token) || !add_parts(pdu, COAP_OPTION_URI_PATH, path, '/') ||
	    (body && !coap_add_option(pdu, COAP_OPTION_CONTENT_FORMAT,
				      coap_encode_var_safe(cf, sizeof(cf), COAP_MEDIATYPE_APPLICATION_JSON), cf)) ||
	    !add_parts(pdu, COAP_OPTION_URI_QUERY, query, '&') ||
	    (body && !coap_add_data_large_request(session, pdu, strlen(body), (const uint8_t *)body, NULL, NULL))) {
		err = KP_ERR_NOMEM;
		goto out;
	}
	if (coap_send(session, pdu) == COAP_INVALID_MID) {
		pdu = NULL; /* coap_send frees it either way */
		err = KP_ERR_DISCONNECTED;
		goto out;
	}
	pdu = NULL;
	int64_t deadline = kp_now_mono(&env) + (timeout_ms > 0 ? timeout_ms : CTL_TIMEOUT_MS);
	while (!c.done) {
		int64_t left = deadline - kp_now_mono(&env);
		if (left <= 0) {
			c.err = KP_ERR_TIMEOUT;
			break;
		}
		if (coap_io_process(ctx, (uint32_t)(left < 1000 ? left : 1000)) < 0) {
			c.err = KP_ERR_IO;
			break;
		}
	}
	err = c.err;
out:
	coap_delete_pdu(pdu);
	if (session)
		coap_session_release(session);
	if (ctx)
		coap_free_context(ctx);
	if (err != KP_OK)
		reply_free(out);
	return err;
}

static void reply_free(ctl_reply *r)
{
	free(r->body);
	r->body = NULL;
	r->len = 0;
}

/* ---------- printing ---------- */

/* Wall ms as "2026-11-23T20:51:09Z". */
static const char *iso_time(int64_t ms, char *buf, size_t cap)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	if (ms <= 0 || !gmtime_r(&t, &tm) || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, cap, "-");
	return buf;
}

static const char *jstr(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	return cJSON_IsString(v) ? v->valuestring : "";
}

static int64_t jint(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static void print_order(const cJSON *o)
{
	char t[32];
	printf("order    %s  %s  %lld %s\n", jstr(o, "order_id"), jstr(o, "status"), (long long)jint(o, "amount"),
	       jstr(o, "currency"));
	printf("dedup    %s\n", jstr(o, "dedup_key"));
	printf("created  %s\n", iso_time(jint(o, "created_at"), t, sizeof(t)));
	printf("expires  %s\n", iso_time(jint(o, "expires_at"), t, sizeof(t)));
	const cJSON *items = cJSON_GetObjectItemCaseSensitive(o, "items");
	if (items) {
		char *s = cJSON_PrintUnformatted(items);
		printf("items    %s\n", s ? s : "?");
		cJSON_free(s);
	}
	const cJSON *a;
	cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(o, "attempts"))
	{
		printf("attempt  %s  %s  %s", jstr(a, "attempt_id"), jstr(a, "channel"), jstr(a, "status"));
		if (jstr(a, "host_txn")[0])
			printf("  host_txn %s", jstr(a, "host_txn"));
		printf("\n");
	}
	cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(o, "refunds"))
	{
		printf("refund   %s  %s  %s  %lld\n", jstr(a, "refund_id"), jstr(a, "reason"), jstr(a, "status"),
		       (long long)jint(a, "amount"));
	}
}

static void print_attempt(const cJSON *o)
{
	printf("attempt %s %s on %s\n", jstr(o, "attempt_id"), jstr(o, "status"), jstr(o, "channel"));
	if (jstr(o, "qr")[0])
		printf("qr %s\n", jstr(o, "qr"));
}

/* POST /orders' answer; with --channel also the attempt, or why none. */
static void print_created(const cJSON *o)
{
	char t[32];
	printf("order %s %s %lld %s, expires %s%s\n", jstr(o, "order_id"), jstr(o, "status"),
	       (long long)jint(o, "amount"), jstr(o, "currency"), iso_time(jint(o, "expires_at"), t, sizeof(t)),
	       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "duplicated")) ? " (duplicated: existing order)"
										: "");
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "attempt");
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "pay_error");
	if (cJSON_IsObject(a))
		print_attempt(a);
	if (cJSON_IsObject(e))
		printf("payment not started: %s: %s\n", jstr(e, "error"), jstr(e, "message"));
}

static void print_events(const cJSON *o)
{
	char t[32];
	const cJSON *e;
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(o, "events"))
	{
		printf("%lld  %s  %-12s %s  %s -> %s  (%s)\n", (long long)jint(e, "seq"),
		       iso_time(jint(e, "at"), t, sizeof(t)), jstr(e, "kind"), jstr(e, "id"),
		       jstr(e, "from")[0] ? jstr(e, "from") : "new", jstr(e, "to"), jstr(e, "cause"));
	}
	printf("next %lld\n", (long long)jint(o, "next"));
}

static void print_health(const cJSON *o)
{
	printf("status %s, journal %s, host %s, uptime %lld s, version %s\n", jstr(o, "status"),
	       jstr(o, "journal"), jstr(o, "host"), (long long)jint(o, "uptime_s"), jstr(o, "version"));
}

/* metrics: one "a.b value" line per leaf. */
static void print_flat(const cJSON *o, const char *prefix)
{
	const cJSON *c;
	cJSON_ArrayForEach(c, o)
	{
		char name[128];
		snprintf(name, sizeof(name), "%s%s%s", prefix, prefix[0] ? "." : "", c->string ? c->string : "");
		if (cJSON_IsObject(c))
			print_flat(c, name);
		else if (cJSON_IsNumber(c))
			printf("%s %lld\n", name, (long long)c->valuedouble);
		else if (cJSON_IsBool(c))
			printf("%s %s\n", name, cJSON_IsTrue(c) ? "true" : "false");
		else if (cJSON_IsString(c))
			printf("%s %s\n", name, c->valuestring);
	}
}

static void print_reconcile(const cJSON *o)
{
	printf("reconcile %s\n", jstr(o, "status"));
}

/* Send, then print the answer: the raw JSON with --json, else pretty for a
 * 2.xx; an error answer as one line on stderr. Returns the exit code. */
static int call_and_print(const kctl_ctx *ctx, const char *what, const char *method, const char *path,
			  const char *query, const char *body, void (*print)(const cJSON *))
{
	ctl_reply r;
	const char *api = ctx->api ? ctx->api : KCTL_DEFAULT_API;
	kp_err err = api_request(api, method, path, query, body, CTL_TIMEOUT_MS, &r);
	if (err == KP_ERR_CONFIG) {
		fprintf(stderr, "%s %s: --api %s: not HOST:PORT (numeric address or localhost)\n", ctx->prog, what,
			api);
		return KCTL_EXIT_USAGE;
	}
	if (err != KP_OK) {
		fprintf(stderr, "%s %s: kioskpayd at %s: %s\n", ctx->prog, what, api,
			err == KP_ERR_TIMEOUT	     ? "no answer in time"
			: err == KP_ERR_DISCONNECTED ? "unreachable (is it running?)"
						     : kp_strerror(err));
		return KCTL_EXIT_CANNOT_OPEN;
	}
	int rc = r.code < 300 ? KCTL_EXIT_OK : KCTL_EXIT_FAILED;
	cJSON *j = cJSON_Parse(r.body);
	if (ctx->json) {
		printf("%s\n", r.body);
	} else if (rc == KCTL_EXIT_OK) {
		if (j)
			print(j);
		else
			printf("%s\n", r.body);
	}
	if (rc != KCTL_EXIT_OK) {
		const char *name = j ? jstr(j, "error") : "";
		const char *msg = j ? jstr(j, "message") : r.body;
		fprintf(stderr, "%s %s: %d.%02d %s%s%s\n", ctx->prog, what, r.code / 100, r.code % 100, name,
			name[0] && msg[0] ? ": " : "", msg);
	}
	cJSON_Delete(j);
	reply_free(&r);
	return rc;
}

/* ---------- the commands ---------- */

/* A decimal integer in [min, max], whole text. */
static bool parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
	char *end;
	if (!s || !*s || (*s != '-' && (*s < '0' || *s > '9')))
		return false;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

static bool id_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
		      s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}

int kctl_order_create(const kctl_ctx *ctx, int argc, char **argv)
{
	const kctl_cmd *self = kctl_cmd_of(kctl_order_create);
	const char *key = NULL, *amount_s = NULL, *currency = NULL, *items_s = NULL, *channel = NULL;
	int64_t amount;
	cJSON *body = NULL, *items = NULL;
	char *text = NULL;
	int rc;

	for (int i = 1; i < argc; i++) {
		const char **dst = strcmp(argv[i], "--dedup-key") == 0 ? &key
				 : strcmp(argv[i], "--amount") == 0    ? &amount_s
				 : strcmp(argv[i], "--currency") == 0  ? &currency
				 : strcmp(argv[i], "--items") == 0     ? &items_s
				 : strcmp(argv[i], "--channel") == 0   ? &channel
								       : NULL;
		if (!dst)
			return kctl_usage_error(ctx, self, "unknown argument %s", argv[i]);
		if (i + 1 >= argc)
			return kctl_usage_error(ctx, self, "%s needs a value", argv[i]);
		*dst = argv[++i];
	}
	if (!key)
		return kctl_usage_error(ctx, self, "--dedup-key is required");
	if (!amount_s)
		return kctl_usage_error(ctx, self, "--amount is required");
	if (!parse_int(amount_s, 1, 9007199254740992LL, &amount))
		return kctl_usage_error(ctx, self, "--amount must be an integer >= 1 in minor units, not %s",
					amount_s);
	if (items_s) {
		items = cJSON_Parse(items_s);
		if (!items || !(cJSON_IsArray(items) || cJSON_IsObject(items))) {
			cJSON_Delete(items);
			return kctl_usage_error(ctx, self, "--items must be a JSON array or object");
		}
	}
	body = cJSON_CreateObject();
	bool ok = body && cJSON_AddStringToObject(body, "dedup_key", key) &&
		  cJSON_AddNumberToObject(body, "amount", (double)amount) &&
		  (!currency || cJSON_AddStringToObject(body, "currency", currency)) &&
		  (!channel || cJSON_AddStringToObject(body, "channel", channel));
	if (ok && items) {
		ok = cJSON_AddItemToObject(body, "items", items);
		if (ok)
			items = NULL; /* body owns it now */
	}
	text = ok ? cJSON_PrintUnformatted(body) : NULL;
	if (!text) {
		fprintf(stderr, "%s order create: out of memory\n", ctx->prog);
		rc = KCTL_EXIT_FAILED;
		goto out;
	}
	rc = call_and_print(ctx, "order create", "POST", "orders", NULL, text, print_created);
out:
	cJSON_free(text);
	cJSON_Delete(body);
	cJSON_Delete(items);
	return rc;
}

/* "ID" as the only or first argument; false: a usage error was printed. */
static bool order_id_arg(const kctl_ctx *ctx, const kctl_cmd *self, int argc, char **argv, int want_argc,
			 int *rc)
{
	if (argc < 2) {
		*rc = kctl_usage_error(ctx, self, "an order id is required");
		return false;
	}
	if (!id_ok(argv[1])) {
		*rc = kctl_usage_error(ctx, self, "\"%s\" is not an order id (1..64 of [A-Za-z0-9_-])", argv[1]);
		return false;
	}
	if (argc != want_argc) {
		*rc = kctl_usage_error(ctx, self, "expected %d argument(s), got %d", want_argc - 1, argc - 1);
		return false;
	}
	return true;
}

int kctl_order_show(const kctl_ctx *ctx, int argc, char **argv)
{
	char path[96];
	int rc;
	if (!order_id_arg(ctx, kctl_cmd_of(kctl_order_show), argc, argv, 2, &rc))
		return rc;
	snprintf(path, sizeof(path), "orders/%s", argv[1]);
	return call_and_print(ctx, "order show", "GET", path, NULL, NULL, print_order);
}

int kctl_order_pay(const kctl_ctx *ctx, int argc, char **argv)
{
	const kctl_cmd *self = kctl_cmd_of(kctl_order_pay);
	char path[96], body[64];
	int rc;
	if (!order_id_arg(ctx, self, argc, argv, 4, &rc))
		return rc;
	if (strcmp(argv[2], "--channel") != 0)
		return kctl_usage_error(ctx, self, "expected --channel CHANNEL, got %s", argv[2]);
	const char *ch = argv[3];
	size_t n = strlen(ch);
	bool ok = n >= 1 && n <= 16;
	for (size_t i = 0; ok && i < n; i++)
		ok = (ch[i] >= 'a' && ch[i] <= 'z') || (ch[i] >= '0' && ch[i] <= '9') || ch[i] == '_' || ch[i] == '-';
	if (!ok)
		return kctl_usage_error(ctx, self, "channel must be 1..16 of [a-z0-9_-], not %s", ch);
	snprintf(path, sizeof(path), "orders/%s/pay", argv[1]);
	snprintf(body, sizeof(body), "{\"channel\":\"%s\"}", ch);
	return call_and_print(ctx, "order pay", "POST", path, NULL, body, print_attempt);
}

int kctl_order_cancel(const kctl_ctx *ctx, int argc, char **argv)
{
	char path[96];
	int rc;
	if (!order_id_arg(ctx, kctl_cmd_of(kctl_order_cancel), argc, argv, 2, &rc))
		return rc;
	snprintf(path, sizeof(path), "orders/%s/cancel", argv[1]);
	return call_and_print(ctx, "order cancel", "POST", path, NULL, NULL, print_order);
}

int kctl_order_vend(const kctl_ctx *ctx, int argc, char **argv)
{
	const kctl_cmd *self = kctl_cmd_of(kctl_order_vend);
	char path[96], body[64];
	int rc;
	if (!order_id_arg(ctx, self, argc, argv, 3, &rc))
		return rc;
	if (strcmp(argv[2], "success") != 0 && strcmp(argv[2], "failure") != 0)
		return kctl_usage_error(ctx, self, "the outcome is success or failure, not %s", argv[2]);
	snprintf(path, sizeof(path), "orders/%s/vend", argv[1]);
	snprintf(body, sizeof(body), "{\"result\":\"%s\"}", argv[2]);
	return call_and_print(ctx, "order vend", "POST", path, NULL, body, print_order);
}

int kctl_events(const kctl_ctx *ctx, int argc, char **argv)
{
	const kctl_cmd *self = kctl_cmd_of(kctl_events);
	int64_t since = 0, limit = 100;
	char query[64];
	for (int i = 1; i < argc; i++) {
		bool is_since = strcmp(argv[i], "--since") == 0;
		if (!is_since && strcmp(argv[i], "--limit") != 0)
			return kctl_usage_error(ctx, self, "unknown argument %s", argv[i]);
		if (i + 1 >= argc)
			return kctl_usage_error(ctx, self, "%s needs a value", argv[i]);
		const char *v = argv[++i];
		if (is_since ? !parse_int(v, 0, 9007199254740992LL, &since) : !parse_int(v, 1, 100, &limit))
			return kctl_usage_error(ctx, self, "%s: bad number %s", argv[i - 1], v);
	}
	snprintf(query, sizeof(query), "since=%lld&limit=%lld", (long long)since, (long long)limit);
	return call_and_print(ctx, "events", "GET", "events", query, NULL, print_events);
}

/* The commands that take no argument. */
static int no_args(const kctl_ctx *ctx, kctl_handler self, int argc, char **argv)
{
	if (argc > 1)
		return kctl_usage_error(ctx, kctl_cmd_of(self), "unexpected argument %s", argv[1]);
	return KCTL_EXIT_OK;
}

int kctl_health(const kctl_ctx *ctx, int argc, char **argv)
{
	int rc = no_args(ctx, kctl_health, argc, argv);
	return rc ? rc : call_and_print(ctx, "health", "GET", "health", NULL, NULL, print_health);
}

static void print_metrics(const cJSON *o)
{
	print_flat(o, "");
}

int kctl_metrics(const kctl_ctx *ctx, int argc, char **argv)
{
	int rc = no_args(ctx, kctl_metrics, argc, argv);
	return rc ? rc : call_and_print(ctx, "metrics", "GET", "metrics", NULL, NULL, print_metrics);
}

int kctl_reconcile(const kctl_ctx *ctx, int argc, char **argv)
{
	int rc = no_args(ctx, kctl_reconcile, argc, argv);
	return rc ? rc : call_and_print(ctx, "reconcile", "POST", "reconcile", NULL, NULL, print_reconcile);
}
