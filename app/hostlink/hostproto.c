/* hostproto.c — the host protocol v1 codec (docs/hostlink.md, shared/host-protocol.md):
 * frames in and out, JSON via cJSON, with our own type and range checks on top
 * so that nothing past decode ever sees an ill-formed message. */
#include "hostproto.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Largest integer a JSON number may carry here: cJSON parses numbers into a
 * double, which is exact only up to 2^53. Beyond that a value would change
 * silently, so it is refused instead (milliseconds and minor units stay far
 * below). */
#define KP_JSON_INT_MAX 9007199254740991LL

static const char *const op_names[KP_OP__COUNT] = {
	[KP_OP_NONE] = "none",
	[KP_OP_HELLO] = "hello",
	[KP_OP_CREATE_PAYMENT] = "create_payment",
	[KP_OP_QUERY_PAYMENT] = "query_payment",
	[KP_OP_CANCEL_PAYMENT] = "cancel_payment",
	[KP_OP_REFUND] = "refund",
	[KP_OP_QUERY_REFUND] = "query_refund",
	[KP_OP_ACK] = "ack",
	[KP_OP_PING] = "ping",
	[KP_OP_HELLO_OK] = "hello_ok",
	[KP_OP_PAYMENT] = "payment",
	[KP_OP_REFUND_REPLY] = "refund",
	[KP_OP_PONG] = "pong",
	[KP_OP_ERROR] = "error",
	[KP_OP_CONFIRM] = "confirm",
};

const char *kp_host_op_str(kp_host_op op)
{
	if ((int)op < 0 || op >= KP_OP__COUNT)
		return "?";
	return op_names[op];
}

static bool op_from_host(kp_host_op op)
{
	return op >= KP_OP_HELLO_OK && op < KP_OP__COUNT;
}

static kp_host_op op_parse(const char *s, bool from_host)
{
	kp_host_op first = from_host ? KP_OP_HELLO_OK : KP_OP_HELLO;
	kp_host_op last = from_host ? KP_OP_CONFIRM : KP_OP_PING;
	for (int op = (int)first; op <= (int)last; op++)
		if (strcmp(s, op_names[op]) == 0)
			return (kp_host_op)op;
	return KP_OP_NONE;
}

static bool is_token_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

/* 1..max characters of [A-Za-z0-9_-]. */
static bool token_valid(const char *s, size_t max)
{
	size_t n = 0;
	for (; s[n]; n++) {
		if (n >= max || !is_token_char(s[n]))
			return false;
	}
	return n >= 1;
}

bool kp_proto_id_valid(const char *s)
{
	return s && token_valid(s, KP_PROTO_ID_SIZE - 1);
}

static bool currency_valid(const char *s)
{
	for (int i = 0; i < 3; i++)
		if (s[i] < 'A' || s[i] > 'Z')
			return false;
	return s[3] == '\0';
}

/* 1..max printable ASCII characters (firmware versions: "0.1.0+g1a2b"). */
static bool printable_valid(const char *s, size_t max)
{
	size_t n = 0;
	for (; s[n]; n++) {
		if (n >= max || s[n] < 0x20 || s[n] > 0x7e)
			return false;
	}
	return n >= 1;
}

static bool in_set(const char *s, const char *const *set)
{
	for (; *set; set++)
		if (strcmp(s, *set) == 0)
			return true;
	return false;
}

static const char *const payment_statuses[] = {"pending", "succeeded", "failed", "canceled",
						"unknown", NULL};
static const char *const refund_statuses[] = {"pending", "refunded", "rejected", "unknown", NULL};
static const char *const confirm_statuses[] = {"succeeded", "failed", NULL};

/* An escaped NUL (\u0000) would cut a string short inside cJSON ("a\u0000b"
 * would read as "a"): refuse it. Backslashes occur only inside strings, and
 * skipping the escaped character keeps "\\u0000" (a literal backslash) apart. */
static bool has_escaped_nul(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++) {
		if (p[i] != '\\')
			continue;
		if (p[i + 1] == 'u' && len - i >= 6 && memcmp(p + i + 2, "0000", 4) == 0)
			return true;
		i++; /* the escaped character */
	}
	return false;
}

/* Strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF, no NUL). */
static bool utf8_valid(const uint8_t *p, size_t len)
{
	size_t i = 0;
	while (i < len) {
		uint8_t c = p[i];
		if (c == 0)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t n;
		uint32_t cp;
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i - 1 < n)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

/* ---- decode ---------------------------------------------------------------- */

struct dec {
	const cJSON *obj;
	char *why;
	size_t why_cap;
};

/* Sets why to "<field>: <what>" (or just what) and gives KP_ERR_PROTOCOL. */
static kp_err fail(struct dec *d, const char *field, const char *what)
{
	if (d->why && d->why_cap)
		snprintf(d->why, d->why_cap, "%s%s%s", field ? field : "", field ? ": " : "", what);
	return KP_ERR_PROTOCOL;
}

/* Integer field: a JSON number with an integral value in [min, KP_JSON_INT_MAX].
 * *present tells whether it was there; required fields pass present = NULL. */
static kp_err get_int(struct dec *d, const char *name, int64_t min, int64_t *out, bool *present)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(d->obj, name);
	if (!it) {
		if (present) {
			*present = false;
			return KP_OK;
		}
		return fail(d, name, "missing");
	}
	if (!cJSON_IsNumber(it))
		return fail(d, name, "not a number");
	double v = it->valuedouble;
	if (!isfinite(v) || v != floor(v))
		return fail(d, name, "not an integer");
	if (v > (double)KP_JSON_INT_MAX || v < -(double)KP_JSON_INT_MAX)
		return fail(d, name, "out of range");
	int64_t i = (int64_t)v;
	if (i < min)
		return fail(d, name, "out of range");
	*out = i;
	if (present)
		*present = true;
	return KP_OK;
}

enum str_kind {
	STR_ID,        /* 1..64 of [A-Za-z0-9_-] */
	STR_TOKEN,     /* 1..cap-1 of [A-Za-z0-9_-] */
	STR_PRINTABLE, /* 1..cap-1 printable ASCII */
	STR_CURRENCY,  /* 3 upper-case letters */
	STR_TEXT,      /* 0..cap-1 bytes of UTF-8 text; longer is refused */
	STR_TEXT_TRUNC /* as STR_TEXT, but longer text is cut at a character boundary */
};

/* String field copied into out[cap] after the kind's checks. */
static kp_err get_str(struct dec *d, const char *name, enum str_kind kind, char *out, size_t cap,
		      bool *present)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(d->obj, name);
	if (!it) {
		if (present) {
			*present = false;
			return KP_OK;
		}
		return fail(d, name, "missing");
	}
	if (!cJSON_IsString(it) || !it->valuestring)
		return fail(d, name, "not a string");
	const char *s = it->valuestring;
	size_t n = strlen(s);
	if (n >= cap) {
		if (kind != STR_TEXT_TRUNC)
			return fail(d, name, "too long");
		n = cap - 1;
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--; /* do not split a UTF-8 sequence */
	}
	memcpy(out, s, n);
	out[n] = '\0';
	bool ok = true;
	switch (kind) {
	case STR_ID: ok = kp_proto_id_valid(out); break;
	case STR_TOKEN: ok = token_valid(out, cap - 1); break;
	case STR_PRINTABLE: ok = printable_valid(out, cap - 1); break;
	case STR_CURRENCY: ok = currency_valid(out); break;
	case STR_TEXT:
	case STR_TEXT_TRUNC: ok = true; break;
	}
	if (!ok)
		return fail(d, name, "ill-formed");
	if (present)
		*present = true;
	return KP_OK;
}

static kp_err get_status(struct dec *d, char *out, size_t cap, const char *const *set)
{
	kp_err err = get_str(d, "status", STR_TOKEN, out, cap, NULL);
	if (err != KP_OK)
		return err;
	if (!in_set(out, set))
		return fail(d, "status", "unknown value");
	return KP_OK;
}

#define TRY(x)                      \
	do {                        \
		err = (x);          \
		if (err != KP_OK)   \
			return err; \
	} while (0)

static kp_err decode_fields(struct dec *d, kp_host_msg *m)
{
	kp_err err = KP_OK;
	bool present = false;
	/* every kiosk request but ack carries an id; every host reply but confirm a re */
	if (!op_from_host(m->op) && m->op != KP_OP_ACK)
		TRY(get_int(d, "id", 1, &m->id, NULL));
	switch (m->op) {
	case KP_OP_HELLO:
		TRY(get_str(d, "device_id", STR_ID, m->device_id, sizeof(m->device_id), NULL));
		TRY(get_int(d, "proto", 1, &m->proto, NULL));
		TRY(get_str(d, "fw", STR_PRINTABLE, m->fw, sizeof(m->fw), NULL));
		break;
	case KP_OP_CREATE_PAYMENT:
		TRY(get_str(d, "attempt_id", STR_ID, m->attempt_id, sizeof(m->attempt_id), NULL));
		TRY(get_str(d, "order_id", STR_ID, m->order_id, sizeof(m->order_id), NULL));
		TRY(get_int(d, "amount", 1, &m->amount, NULL));
		m->has_amount = true;
		TRY(get_str(d, "currency", STR_CURRENCY, m->currency, sizeof(m->currency), NULL));
		TRY(get_str(d, "channel", STR_TOKEN, m->channel, sizeof(m->channel), NULL));
		TRY(get_int(d, "expires_at", 0, &m->expires_at, NULL));
		break;
	case KP_OP_QUERY_PAYMENT:
	case KP_OP_CANCEL_PAYMENT:
		TRY(get_str(d, "attempt_id", STR_ID, m->attempt_id, sizeof(m->attempt_id), NULL));
		break;
	case KP_OP_REFUND:
		TRY(get_str(d, "refund_id", STR_ID, m->refund_id, sizeof(m->refund_id), NULL));
		TRY(get_str(d, "attempt_id", STR_ID, m->attempt_id, sizeof(m->attempt_id), NULL));
		TRY(get_str(d, "host_txn", STR_ID, m->host_txn, sizeof(m->host_txn), NULL));
		TRY(get_int(d, "amount", 1, &m->amount, NULL));
		m->has_amount = true;
		TRY(get_str(d, "reason", STR_TOKEN, m->reason, sizeof(m->reason), NULL));
		break;
	case KP_OP_QUERY_REFUND:
		TRY(get_str(d, "refund_id", STR_ID, m->refund_id, sizeof(m->refund_id), NULL));
		break;
	case KP_OP_ACK:
		TRY(get_int(d, "seq", 1, &m->seq, NULL));
		break;
	case KP_OP_PING:
		break;
	case KP_OP_HELLO_OK:
		TRY(get_int(d, "host_time", 0, &m->host_time, NULL));
		break;
	case KP_OP_PAYMENT:
		TRY(get_str(d, "attempt_id", STR_ID, m->attempt_id, sizeof(m->attempt_id), NULL));
		TRY(get_status(d, m->status, sizeof(m->status), payment_statuses));
		{
			bool succeeded = strcmp(m->status, "succeeded") == 0;
			TRY(get_str(d, "host_txn", STR_ID, m->host_txn, sizeof(m->host_txn),
				    succeeded ? NULL : &present));
			TRY(get_int(d, "amount", 1, &m->amount, succeeded ? NULL : &m->has_amount));
			if (succeeded)
				m->has_amount = true;
		}
		TRY(get_str(d, "qr", STR_TEXT, m->qr, sizeof(m->qr), &present));
		break;
	case KP_OP_REFUND_REPLY:
		TRY(get_str(d, "refund_id", STR_ID, m->refund_id, sizeof(m->refund_id), NULL));
		TRY(get_status(d, m->status, sizeof(m->status), refund_statuses));
		TRY(get_str(d, "reason", STR_TOKEN, m->reason, sizeof(m->reason), &present));
		break;
	case KP_OP_PONG:
		break;
	case KP_OP_ERROR:
		TRY(get_str(d, "code", STR_TOKEN, m->code, sizeof(m->code), NULL));
		TRY(get_str(d, "message", STR_TEXT_TRUNC, m->message, sizeof(m->message), NULL));
		break;
	case KP_OP_CONFIRM:
		TRY(get_int(d, "seq", 1, &m->seq, NULL));
		TRY(get_str(d, "attempt_id", STR_ID, m->attempt_id, sizeof(m->attempt_id), NULL));
		TRY(get_str(d, "host_txn", STR_ID, m->host_txn, sizeof(m->host_txn), NULL));
		TRY(get_status(d, m->status, sizeof(m->status), confirm_statuses));
		TRY(get_int(d, "amount", 1, &m->amount, NULL));
		m->has_amount = true;
		TRY(get_str(d, "currency", STR_CURRENCY, m->currency, sizeof(m->currency), NULL));
		TRY(get_int(d, "at", 0, &m->at, NULL));
		break;
	case KP_OP_NONE:
	case KP_OP__COUNT:
		return fail(d, NULL, "no op");
	}
	/* replies carry re (error: optional, for errors about no request) */
	if (op_from_host(m->op) && m->op != KP_OP_CONFIRM)
		TRY(get_int(d, "re", 1, &m->re, m->op == KP_OP_ERROR ? &m->has_re : NULL));
	if (op_from_host(m->op) && m->op != KP_OP_CONFIRM && m->op != KP_OP_ERROR)
		m->has_re = true;
	return KP_OK;
}

kp_err kp_hostproto_decode(const uint8_t *json, size_t len, bool from_host, kp_host_msg *out,
			   char *why, size_t why_cap)
{
	struct dec d = {.obj = NULL, .why = why, .why_cap = why_cap};
	cJSON *root = NULL;
	kp_err err = KP_OK;

	memset(out, 0, sizeof(*out));
	if (why && why_cap)
		why[0] = '\0';
	if (!json || len == 0 || len > KP_FRAME_MAX) {
		err = fail(&d, NULL, "payload length out of range");
		goto out;
	}
	if (!utf8_valid(json, len)) {
		err = fail(&d, NULL, "payload is not UTF-8 text");
		goto out;
	}
	if (has_escaped_nul(json, len)) {
		err = fail(&d, NULL, "payload contains an escaped NUL");
		goto out;
	}
	const char *end = NULL;
	root = cJSON_ParseWithLengthOpts((const char *)json, len, &end, false);
	if (!root) {
		err = fail(&d, NULL, "payload is not JSON");
		goto out;
	}
	for (const char *p = end; p < (const char *)json + len; p++) {
		if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
			err = fail(&d, NULL, "trailing bytes after the JSON value");
			goto out;
		}
	}
	if (!cJSON_IsObject(root)) {
		err = fail(&d, NULL, "payload is not a JSON object");
		goto out;
	}
	d.obj = root;
	const cJSON *op = cJSON_GetObjectItemCaseSensitive(root, "op");
	if (!op || !cJSON_IsString(op) || !op->valuestring) {
		err = fail(&d, NULL, "op missing or not a string");
		goto out;
	}
	out->op = op_parse(op->valuestring, from_host);
	if (out->op == KP_OP_NONE) {
		err = fail(&d, NULL, from_host ? "unknown op from host" : "unknown op from kiosk");
		goto out;
	}
	err = decode_fields(&d, out);
out:
	cJSON_Delete(root);
	if (err != KP_OK) {
		kp_host_op op_seen = out->op;
		memset(out, 0, sizeof(*out));
		out->op = op_seen; /* lets the caller log which op was bad */
	}
	return err;
}

/* ---- encode ---------------------------------------------------------------- */

static bool add_int(cJSON *o, const char *name, int64_t v)
{
	char num[24];
	snprintf(num, sizeof(num), "%" PRId64, v);
	return cJSON_AddRawToObject(o, name, num) != NULL;
}

/* A struct char array that is not NUL-terminated within its size is refused. */
static bool add_str(cJSON *o, const char *name, const char *s, size_t cap)
{
	if (strnlen(s, cap) == cap)
		return false;
	return cJSON_AddStringToObject(o, name, s) != NULL;
}

#define ADD_STR(o, m, f) add_str((o), #f, (m)->f, sizeof((m)->f))

static bool encode_fields(cJSON *o, const kp_host_msg *m)
{
	bool ok = cJSON_AddStringToObject(o, "op", kp_host_op_str(m->op)) != NULL;
	if (!op_from_host(m->op) && m->op != KP_OP_ACK)
		ok = ok && add_int(o, "id", m->id);
	if (op_from_host(m->op) && m->op != KP_OP_CONFIRM && (m->op != KP_OP_ERROR || m->has_re))
		ok = ok && add_int(o, "re", m->re);
	switch (m->op) {
	case KP_OP_HELLO:
		ok = ok && ADD_STR(o, m, device_id) && add_int(o, "proto", m->proto) &&
		     ADD_STR(o, m, fw);
		break;
	case KP_OP_CREATE_PAYMENT:
		ok = ok && ADD_STR(o, m, attempt_id) && ADD_STR(o, m, order_id) &&
		     add_int(o, "amount", m->amount) && ADD_STR(o, m, currency) &&
		     ADD_STR(o, m, channel) && add_int(o, "expires_at", m->expires_at);
		break;
	case KP_OP_QUERY_PAYMENT:
	case KP_OP_CANCEL_PAYMENT:
		ok = ok && ADD_STR(o, m, attempt_id);
		break;
	case KP_OP_REFUND:
		ok = ok && ADD_STR(o, m, refund_id) && ADD_STR(o, m, attempt_id) &&
		     ADD_STR(o, m, host_txn) && add_int(o, "amount", m->amount) &&
		     ADD_STR(o, m, reason);
		break;
	case KP_OP_QUERY_REFUND:
		ok = ok && ADD_STR(o, m, refund_id);
		break;
	case KP_OP_ACK:
		ok = ok && add_int(o, "seq", m->seq);
		break;
	case KP_OP_PING:
	case KP_OP_PONG:
		break;
	case KP_OP_HELLO_OK:
		ok = ok && add_int(o, "host_time", m->host_time);
		break;
	case KP_OP_PAYMENT:
		ok = ok && ADD_STR(o, m, attempt_id) && ADD_STR(o, m, status);
		if (m->host_txn[0])
			ok = ok && ADD_STR(o, m, host_txn);
		if (m->has_amount)
			ok = ok && add_int(o, "amount", m->amount);
		if (m->qr[0])
			ok = ok && ADD_STR(o, m, qr);
		break;
	case KP_OP_REFUND_REPLY:
		ok = ok && ADD_STR(o, m, refund_id) && ADD_STR(o, m, status);
		if (m->reason[0])
			ok = ok && ADD_STR(o, m, reason);
		break;
	case KP_OP_ERROR:
		ok = ok && ADD_STR(o, m, code) && ADD_STR(o, m, message);
		break;
	case KP_OP_CONFIRM:
		ok = ok && add_int(o, "seq", m->seq) && ADD_STR(o, m, attempt_id) &&
		     ADD_STR(o, m, host_txn) && ADD_STR(o, m, status) &&
		     add_int(o, "amount", m->amount) && ADD_STR(o, m, currency) &&
		     add_int(o, "at", m->at);
		break;
	case KP_OP_NONE:
	case KP_OP__COUNT:
		ok = false;
		break;
	}
	return ok;
}

kp_err kp_hostproto_encode(const kp_host_msg *msg, uint8_t *buf, size_t cap, size_t *len)
{
	kp_err err = KP_OK;
	cJSON *o = NULL;
	char *text = NULL;
	kp_host_msg *check = NULL;

	if (!msg || !buf || !len || (int)msg->op <= KP_OP_NONE || msg->op >= KP_OP__COUNT) {
		err = KP_ERR_INVALID;
		goto out;
	}
	o = cJSON_CreateObject();
	if (!o) {
		err = KP_ERR_NOMEM;
		goto out;
	}
	if (!encode_fields(o, msg)) {
		err = KP_ERR_INVALID; /* unterminated field (allocation failures land here too) */
		goto out;
	}
	text = cJSON_PrintUnformatted(o);
	if (!text) {
		err = KP_ERR_NOMEM;
		goto out;
	}
	size_t n = strlen(text);
	if (n > KP_FRAME_MAX || n + KP_FRAME_HDR > cap) {
		err = KP_ERR_TOO_BIG;
		goto out;
	}
	/* What we send passes the same checks as what we receive: decode it back. */
	check = malloc(sizeof(*check));
	if (!check) {
		err = KP_ERR_NOMEM;
		goto out;
	}
	if (kp_hostproto_decode((const uint8_t *)text, n, op_from_host(msg->op), check, NULL, 0) !=
	    KP_OK) {
		err = KP_ERR_INVALID;
		goto out;
	}
	buf[0] = (uint8_t)(n >> 24);
	buf[1] = (uint8_t)(n >> 16);
	buf[2] = (uint8_t)(n >> 8);
	buf[3] = (uint8_t)n;
	memcpy(buf + KP_FRAME_HDR, text, n);
	*len = n + KP_FRAME_HDR;
out:
	free(check);
	cJSON_free(text);
	cJSON_Delete(o);
	return err;
}

/* ---- frame reader ------------------------------------------------------------ */

void kp_frame_reader_init(kp_frame_reader *r)
{
	memset(r, 0, sizeof(*r));
}

kp_err kp_frame_reader_setup(kp_frame_reader *r)
{
	kp_frame_reader_init(r);
	r->payload = malloc(KP_FRAME_MAX);
	return r->payload ? KP_OK : KP_ERR_NOMEM;
}

void kp_frame_reader_reset(kp_frame_reader *r)
{
	r->hdr_have = 0;
	r->need = 0;
	r->have = 0;
}

void kp_frame_reader_free(kp_frame_reader *r)
{
	if (!r)
		return;
	free(r->payload);
	kp_frame_reader_init(r);
}

kp_err kp_frame_reader_feed(kp_frame_reader *r, const uint8_t *data, size_t len, size_t *used,
			    const uint8_t **frame, size_t *frame_len)
{
	size_t i = 0;
	*frame = NULL;
	*frame_len = 0;
	*used = 0;
	if (!r->payload)
		return KP_ERR_INVALID;
	while (i < len) {
		if (r->need == 0) {
			r->hdr[r->hdr_have++] = data[i++];
			if (r->hdr_have < KP_FRAME_HDR)
				continue;
			uint32_t n = (uint32_t)r->hdr[0] << 24 | (uint32_t)r->hdr[1] << 16 |
				     (uint32_t)r->hdr[2] << 8 | (uint32_t)r->hdr[3];
			r->hdr_have = 0;
			if (n == 0 || n > KP_FRAME_MAX) {
				*used = i;
				return KP_ERR_PROTOCOL;
			}
			r->need = n;
			r->have = 0;
			continue;
		}
		size_t take = r->need - r->have;
		if (take > len - i)
			take = len - i;
		memcpy(r->payload + r->have, data + i, take);
		r->have += take;
		i += take;
		if (r->have == r->need) {
			*frame = r->payload;
			*frame_len = r->need;
			r->need = 0;
			r->have = 0;
			break;
		}
	}
	*used = i;
	return KP_OK;
}
