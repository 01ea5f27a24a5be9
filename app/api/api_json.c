/* api_json.c — request bodies in, JSON bodies out, kp_err to CoAP code.
 * cJSON does the parsing; the checks on top (integers only, bounded strings,
 * no NUL, no duplicate fields, no card numbers) are ours, so a rejected body
 * never reaches the engine. */
#include "api_json.h"
#include "kp_pan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- kp_err -> CoAP code ---------- */

/* Indexed by -err. 4.09 for every "the record is not in a state for this"
 * (conflict, expired, illegal move, busy); 5.02/5.04 when the payment host
 * refused or did not answer; 5.03 when the service cannot serve now. */
static const int err_coap_tab[] = {
	[-KP_OK] = 205,
	[-KP_ERR_NOMEM] = 500,
	[-KP_ERR_INVALID] = 400,
	[-KP_ERR_NOT_FOUND] = 404,
	[-KP_ERR_CONFLICT] = 409,
	[-KP_ERR_EXPIRED] = 409,
	[-KP_ERR_ILLEGAL_MOVE] = 409,
	[-KP_ERR_CONSTRAINT] = 409,
	[-KP_ERR_BUSY] = 409,
	[-KP_ERR_IO] = 500,
	[-KP_ERR_CORRUPT] = 500,
	[-KP_ERR_FUTURE_VERSION] = 503,
	[-KP_ERR_READONLY] = 503,
	[-KP_ERR_PROTOCOL] = 502,
	[-KP_ERR_TLS] = 502,
	[-KP_ERR_TIMEOUT] = 504,
	[-KP_ERR_DISCONNECTED] = 503,
	[-KP_ERR_HOST] = 502,
	[-KP_ERR_TOO_BIG] = 413,
	[-KP_ERR_CONFIG] = 500,
	[-KP_ERR_FAILPOINT] = 500,
	[-KP_ERR_UNAVAILABLE] = 503,
	[-KP_ERR_STATE] = 409,
	[-KP_ERR_INTERNAL] = 500,
};

_Static_assert(sizeof(err_coap_tab) / sizeof(err_coap_tab[0]) == -(int)KP_ERR__SENTINEL,
	       "err_coap_tab must have one entry per kp_err code");

int kp_api_err_coap(kp_err err)
{
	int i = -(int)err;
	if (i < 0 || i >= -(int)KP_ERR__SENTINEL || err_coap_tab[i] == 0)
		return 500;
	return err_coap_tab[i];
}

/* ---------- parsing ---------- */

bool kp_api_json_id_valid(const char *s, size_t len)
{
	if (!s || len == 0 || len >= KP_ID_SIZE)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '-'))
			return false;
	}
	return true;
}

static kp_err fail(char *why, size_t why_cap, kp_err err, const char *text)
{
	snprintf(why, why_cap, "%s", text);
	return err;
}

/* A JSON \u0000 escape would cut a C string short and silently change a
 * value; refuse it (and raw NUL bytes) outright. */
static bool has_nul(const uint8_t *body, size_t len)
{
	if (memchr(body, 0, len))
		return true;
	for (size_t i = 0; i + 6 <= len; i++) {
		if (body[i] == '\\' && (body[i + 1] == 'u' || body[i + 1] == 'U') && body[i + 2] == '0' &&
		    body[i + 3] == '0' && body[i + 4] == '0' && body[i + 5] == '0')
			return true;
	}
	return false;
}

/* Parse body as one JSON object with no duplicate member names. On KP_OK
 * *root is owned by the caller. */
static kp_err parse_object(const uint8_t *body, size_t len, cJSON **root, char *why, size_t why_cap)
{
	kp_err err = KP_OK;
	char *text = NULL;
	cJSON *r = NULL;

	*root = NULL;
	if (!body || len == 0)
		return fail(why, why_cap, KP_ERR_INVALID, "a JSON object body is required");
	if (has_nul(body, len))
		return fail(why, why_cap, KP_ERR_INVALID, "NUL characters are not allowed");
	/* as written (a number past 2^53 reaches cJSON rounded); strings again
	 * once unescaped, in get_string and json_has_pan */
	if (kp_text_has_pan((const char *)body, len))
		return fail(why, why_cap, KP_ERR_INVALID, "the body holds what looks like a card number");
	text = malloc(len + 1);
	if (!text)
		return fail(why, why_cap, KP_ERR_NOMEM, "out of memory");
	memcpy(text, body, len);
	text[len] = '\0';
	/* len + 1: the NUL is inside the buffer, so require_null_terminated
	 * rejects trailing garbage after the value. */
	r = cJSON_ParseWithLengthOpts(text, len + 1, NULL, 1);
	if (!r) {
		err = fail(why, why_cap, KP_ERR_INVALID, "malformed JSON");
		goto out;
	}
	if (!cJSON_IsObject(r)) {
		err = fail(why, why_cap, KP_ERR_INVALID, "the body must be a JSON object");
		goto out;
	}
	for (const cJSON *a = r->child; a; a = a->next) {
		for (const cJSON *b = a->next; b; b = b->next) {
			if (strcmp(a->string, b->string) == 0) {
				snprintf(why, why_cap, "field \"%.40s\" appears twice", a->string);
				err = KP_ERR_INVALID;
				goto out;
			}
		}
	}
	*root = r;
	r = NULL;
out:
	cJSON_Delete(r);
	free(text);
	return err;
}

/* A string member: required or not, 1..cap-1 bytes. *found tells whether it
 * was present. */
static kp_err get_string(const cJSON *root, const char *name, bool required, char *dst, size_t cap,
			 bool *found, char *why, size_t why_cap)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
	if (found)
		*found = false;
	if (!v) {
		if (!required)
			return KP_OK;
		snprintf(why, why_cap, "field \"%s\" is required", name);
		return KP_ERR_INVALID;
	}
	if (!cJSON_IsString(v) || !v->valuestring) {
		snprintf(why, why_cap, "field \"%s\" must be a string", name);
		return KP_ERR_INVALID;
	}
	size_t n = strlen(v->valuestring);
	if (n == 0 || n >= cap) {
		snprintf(why, why_cap, "field \"%s\" must be 1..%zu characters", name, cap - 1);
		return KP_ERR_INVALID;
	}
	if (kp_text_has_pan(v->valuestring, n)) {
		snprintf(why, why_cap, "field \"%s\" looks like a card number", name);
		return KP_ERR_INVALID;
	}
	memcpy(dst, v->valuestring, n + 1);
	if (found)
		*found = true;
	return KP_OK;
}

/* A card number anywhere in the JSON values from v on (v and its siblings,
 * and everything below them): strings once unescaped, member names, and
 * whole numbers written out in full (cJSON would store 4111111111111111 as
 * "4.11111111111111e+15", a card number all the same). */
static bool json_has_pan(const cJSON *v)
{
	for (; v; v = v->next) {
		if (v->string && kp_text_has_pan(v->string, strlen(v->string)))
			return true;
		if (cJSON_IsString(v) && v->valuestring && kp_text_has_pan(v->valuestring, strlen(v->valuestring)))
			return true;
		if (cJSON_IsNumber(v) && fabs(v->valuedouble) < 1e19 && v->valuedouble == floor(v->valuedouble)) {
			char num[32];
			snprintf(num, sizeof(num), "%.0f", fabs(v->valuedouble));
			if (kp_text_has_pan(num, strlen(num)))
				return true;
		}
		if (v->child && json_has_pan(v->child))
			return true;
	}
	return false;
}

kp_err kp_api_json_parse_order(const uint8_t *body, size_t len, kp_api_order_body *out, char *why,
			       size_t why_cap)
{
	cJSON *root = NULL;
	char *items = NULL;
	kp_err err;

	memset(out, 0, sizeof(*out));
	err = parse_object(body, len, &root, why, why_cap);
	if (err != KP_OK)
		goto out;
	err = get_string(root, "dedup_key", true, out->dedup_key, sizeof(out->dedup_key), NULL, why, why_cap);
	if (err != KP_OK)
		goto out;

	const cJSON *amount = cJSON_GetObjectItemCaseSensitive(root, "amount");
	if (!amount) {
		err = fail(why, why_cap, KP_ERR_INVALID, "field \"amount\" is required");
		goto out;
	}
	/* Integers only: 1.5, "100", -1, 0 and anything past 2^53 are refused. */
	double d = cJSON_IsNumber(amount) ? amount->valuedouble : NAN;
	if (!isfinite(d) || d != floor(d) || d < 1 || d > (double)KP_API_JSON_INT_MAX) {
		err = fail(why, why_cap, KP_ERR_INVALID,
			   "field \"amount\" must be an integer number of minor units, >= 1");
		goto out;
	}
	out->amount = (int64_t)d;

	err = get_string(root, "currency", false, out->currency, sizeof(out->currency), &out->has_currency,
			 why, why_cap);
	if (err != KP_OK)
		goto out;

	const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, "items");
	if (it && !cJSON_IsNull(it)) {
		if (!cJSON_IsArray(it) && !cJSON_IsObject(it)) {
			err = fail(why, why_cap, KP_ERR_INVALID, "field \"items\" must be a JSON array or object");
			goto out;
		}
		items = cJSON_PrintUnformatted(it);
		if (!items) {
			err = fail(why, why_cap, KP_ERR_NOMEM, "out of memory");
			goto out;
		}
		size_t n = strlen(items);
		if (json_has_pan(it->child)) {
			err = fail(why, why_cap, KP_ERR_INVALID, "field \"items\" looks like a card number");
			goto out;
		}
		if (n >= sizeof(out->items)) {
			snprintf(why, why_cap, "field \"items\" is too long (max %zu bytes as compact JSON)",
				 sizeof(out->items) - 1);
			err = KP_ERR_TOO_BIG;
			goto out;
		}
		memcpy(out->items, items, n + 1);
		out->has_items = true;
	}
	/* The alphabet is the engine's to check, as for POST /orders/{id}/pay. */
	err = get_string(root, "channel", false, out->channel, sizeof(out->channel), &out->has_channel, why,
			 why_cap);
out:
	cJSON_free(items);
	cJSON_Delete(root);
	return err;
}

kp_err kp_api_json_parse_pay(const uint8_t *body, size_t len, char *channel, char *why, size_t why_cap)
{
	cJSON *root = NULL;
	kp_err err = parse_object(body, len, &root, why, why_cap);
	channel[0] = '\0';
	if (err == KP_OK)
		err = get_string(root, "channel", true, channel, KP_CHANNEL_SIZE, NULL, why, why_cap);
	cJSON_Delete(root);
	return err;
}

kp_err kp_api_json_parse_vend(const uint8_t *body, size_t len, bool *success, char *why, size_t why_cap)
{
	cJSON *root = NULL;
	char result[16];
	kp_err err = parse_object(body, len, &root, why, why_cap);
	*success = false;
	if (err == KP_OK)
		err = get_string(root, "result", true, result, sizeof(result), NULL, why, why_cap);
	if (err == KP_OK) {
		if (strcmp(result, "success") == 0)
			*success = true;
		else if (strcmp(result, "failure") != 0)
			err = fail(why, why_cap, KP_ERR_INVALID, "field \"result\" must be \"success\" or \"failure\"");
	}
	cJSON_Delete(root);
	return err;
}

/* ---------- rendering ---------- */

/* Each add_* returns false when out of memory; callers chain them with &&. */
static bool add_str(cJSON *o, const char *name, const char *v)
{
	return cJSON_AddStringToObject(o, name, v ? v : "") != NULL;
}

static bool add_int(cJSON *o, const char *name, int64_t v)
{
	return cJSON_AddNumberToObject(o, name, (double)v) != NULL;
}

static bool add_opt_str(cJSON *o, const char *name, const char *v)
{
	return !v || !v[0] || add_str(o, name, v);
}

cJSON *kp_api_json_error(kp_err err, const char *message)
{
	cJSON *o = cJSON_CreateObject();
	if (o && add_str(o, "error", kp_errname(err)) && add_str(o, "message", message ? message : kp_strerror(err)))
		return o;
	cJSON_Delete(o);
	return NULL;
}

cJSON *kp_api_json_created(const kp_order *ord, bool duplicated)
{
	cJSON *o = cJSON_CreateObject();
	if (o && add_str(o, "order_id", ord->order_id) && add_str(o, "status", kp_order_state_str(ord->state)) &&
	    add_int(o, "amount", ord->amount) && add_str(o, "currency", ord->currency) &&
	    add_int(o, "expires_at", ord->expires_at) && cJSON_AddBoolToObject(o, "duplicated", duplicated))
		return o;
	cJSON_Delete(o);
	return NULL;
}

cJSON *kp_api_json_created_paying(const kp_order *ord, const kp_attempt *attempt, const char *qr,
				  kp_err pay_err, const char *pay_message)
{
	cJSON *o = kp_api_json_created(ord, false);
	if (!o)
		return NULL;
	cJSON *a = attempt ? kp_api_json_attempt(attempt, qr) : NULL;
	if (attempt && !cJSON_AddItemToObject(o, "attempt", a)) {
		cJSON_Delete(a);
		goto fail;
	}
	if (pay_err != KP_OK) {
		cJSON *e = kp_api_json_error(pay_err, pay_message);
		if (!cJSON_AddItemToObject(o, "pay_error", e)) {
			cJSON_Delete(e);
			goto fail;
		}
	}
	return o;
fail:
	cJSON_Delete(o);
	return NULL;
}

cJSON *kp_api_json_attempt(const kp_attempt *a, const char *qr)
{
	cJSON *o = cJSON_CreateObject();
	if (o && add_str(o, "attempt_id", a->attempt_id) && add_str(o, "order_id", a->order_id) &&
	    add_str(o, "channel", a->channel) && add_str(o, "status", kp_attempt_state_str(a->state)) &&
	    add_int(o, "amount", a->amount) && add_opt_str(o, "host_txn", a->host_txn) &&
	    add_opt_str(o, "qr", qr) && add_int(o, "created_at", a->created_at) &&
	    add_int(o, "updated_at", a->updated_at))
		return o;
	cJSON_Delete(o);
	return NULL;
}

cJSON *kp_api_json_refund(const kp_refund *r)
{
	cJSON *o = cJSON_CreateObject();
	if (o && add_str(o, "refund_id", r->refund_id) && add_str(o, "attempt_id", r->attempt_id) &&
	    add_str(o, "reason", kp_refund_reason_str(r->reason)) &&
	    add_str(o, "status", kp_refund_state_str(r->state)) && add_int(o, "amount", r->amount) &&
	    add_int(o, "created_at", r->created_at) && add_int(o, "updated_at", r->updated_at))
		return o;
	cJSON_Delete(o);
	return NULL;
}

/* items is stored as the compact JSON the API wrote; show it as JSON again,
 * or as a string if some other writer left text that does not parse. */
static bool add_items(cJSON *o, const char *items)
{
	if (!items[0])
		return true;
	cJSON *v = cJSON_Parse(items);
	if (!v)
		return add_str(o, "items", items);
	if (!cJSON_AddItemToObject(o, "items", v)) {
		cJSON_Delete(v);
		return false;
	}
	return true;
}

cJSON *kp_api_json_order(const kp_order *ord, const kp_attempt *attempts, const char *const *qrs,
			 size_t n_attempts, const kp_refund *refunds, size_t n_refunds)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *arr;
	if (!o)
		return NULL;
	if (!(add_str(o, "order_id", ord->order_id) && add_str(o, "dedup_key", ord->dedup_key) &&
	      add_str(o, "status", kp_order_state_str(ord->state)) && add_int(o, "amount", ord->amount) &&
	      add_str(o, "currency", ord->currency) && add_items(o, ord->items) &&
	      add_int(o, "created_at", ord->created_at) && add_int(o, "expires_at", ord->expires_at) &&
	      add_int(o, "updated_at", ord->updated_at)))
		goto fail;
	arr = cJSON_AddArrayToObject(o, "attempts");
	if (!arr)
		goto fail;
	for (size_t i = 0; i < n_attempts; i++) {
		cJSON *a = kp_api_json_attempt(&attempts[i], qrs ? qrs[i] : NULL);
		if (!a || !cJSON_AddItemToArray(arr, a)) {
			cJSON_Delete(a);
			goto fail;
		}
	}
	arr = cJSON_AddArrayToObject(o, "refunds");
	if (!arr)
		goto fail;
	for (size_t i = 0; i < n_refunds; i++) {
		cJSON *r = kp_api_json_refund(&refunds[i]);
		if (!r || !cJSON_AddItemToArray(arr, r)) {
			cJSON_Delete(r);
			goto fail;
		}
	}
	return o;
fail:
	cJSON_Delete(o);
	return NULL;
}

cJSON *kp_api_json_events(const kp_event *events, size_t n, int64_t next)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *arr = o ? cJSON_AddArrayToObject(o, "events") : NULL;
	if (!arr)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		const kp_event *ev = &events[i];
		cJSON *e = cJSON_CreateObject();
		if (!e || !cJSON_AddItemToArray(arr, e)) {
			cJSON_Delete(e);
			goto fail;
		}
		if (!(add_int(e, "seq", ev->seq) && add_int(e, "at", ev->at) && add_str(e, "kind", ev->kind) &&
		      add_str(e, "id", ev->record_id) && add_opt_str(e, "from", ev->from_state) &&
		      add_str(e, "to", ev->to_state) && add_str(e, "cause", ev->cause)))
			goto fail;
	}
	if (!add_int(o, "next", next))
		goto fail;
	return o;
fail:
	cJSON_Delete(o);
	return NULL;
}

char *kp_api_json_print(const cJSON *root)
{
	return root ? cJSON_PrintUnformatted(root) : NULL;
}
