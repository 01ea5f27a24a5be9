/* api_json.h — the wire format of the local CoAP API: request bodies in,
 * JSON bodies out, and the one table from kp_err to CoAP response code.
 * Kept apart from the CoAP glue (api.c) so that every good and bad body can
 * be checked in a table-driven unit test without sockets or an engine. */
#ifndef KP_API_JSON_H
#define KP_API_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "journal.h"
#include "kp_error.h"

/* Largest integer a JSON number carries exactly (2^53). */
#define KP_API_JSON_INT_MAX 9007199254740992LL

/* CoAP response code for an error, written as class*100+detail (409 = 4.09).
 * Every kp_err has an entry; KP_OK gives 205 and unknown codes 500. */
int kp_api_err_coap(kp_err err);

/* True if s[0..len) is a record id as the host protocol defines it:
 * 1..64 characters of [A-Za-z0-9_-]. */
bool kp_api_json_id_valid(const char *s, size_t len);

/* POST /orders body, checked for types and bounds (the engine checks the
 * business rules: max_amount, the configured currency, the id alphabet). */
typedef struct kp_api_order_body {
	char dedup_key[KP_ID_SIZE];
	int64_t amount;
	char currency[KP_CURRENCY_SIZE];
	bool has_currency;
	char items[KP_ITEMS_MAX];        /* compact JSON text of "items", "" if absent */
	bool has_items;
	char channel[KP_CHANNEL_SIZE];   /* "channel": pay in the same request, "" if absent */
	bool has_channel;
} kp_api_order_body;

/* Parse a POST /orders body of len bytes (not NUL-terminated). KP_OK, or
 * KP_ERR_INVALID (malformed JSON, a missing field, a wrong type, an amount
 * that is not an integer in 1..2^53, a string out of bounds, a string or
 * items that look like a card number: kp_pan.h) or
 * KP_ERR_TOO_BIG (items longer than KP_ITEMS_MAX-1 once compacted), with a
 * one-line reason in why. Unknown fields are ignored. */
kp_err kp_api_json_parse_order(const uint8_t *body, size_t len, kp_api_order_body *out, char *why,
			       size_t why_cap) KP_MUST_USE;

/* Parse a POST /orders/{id}/pay body {"channel": "..."} into channel
 * (KP_CHANNEL_SIZE bytes). KP_ERR_INVALID with why on any problem. */
kp_err kp_api_json_parse_pay(const uint8_t *body, size_t len, char *channel, char *why,
			     size_t why_cap) KP_MUST_USE;

/* Parse a POST /orders/{id}/vend body {"result": "success"|"failure"}. */
kp_err kp_api_json_parse_vend(const uint8_t *body, size_t len, bool *success, char *why,
			      size_t why_cap) KP_MUST_USE;

/* The renderers below return a new cJSON tree owned by the caller
 * (cJSON_Delete), or NULL when out of memory. */

/* {"error": kp_errname(err), "message": message}. */
cJSON *kp_api_json_error(kp_err err, const char *message);

/* POST /orders answer: {"order_id","status","amount","currency","expires_at","duplicated"}. */
cJSON *kp_api_json_created(const kp_order *o, bool duplicated);

/* POST /orders answer of a one-request sale (a body with "channel"): the
 * created answer plus "attempt" (kp_api_json_attempt; a refused payment is an
 * attempt in "failed") when the payment started, or "pay_error"
 * (kp_api_json_error) when it could not start. Both are rendered if given. */
cJSON *kp_api_json_created_paying(const kp_order *o, const kp_attempt *attempt, const char *qr,
				  kp_err pay_err, const char *pay_message);

/* One attempt: {"attempt_id","order_id","channel","status","amount",
 * "host_txn"?,"qr"?,"created_at","updated_at"}; host_txn only when set, qr
 * only when given (the engine's kp_engine_qr: the host's, not journaled). */
cJSON *kp_api_json_attempt(const kp_attempt *a, const char *qr);

/* One refund: {"refund_id","attempt_id","reason","status","amount","created_at","updated_at"}. */
cJSON *kp_api_json_refund(const kp_refund *r);

/* The whole order with its attempts (oldest first) and refunds; qrs[i] is
 * attempt i's QR or NULL (qrs itself may be NULL: none). */
cJSON *kp_api_json_order(const kp_order *o, const kp_attempt *attempts, const char *const *qrs,
			 size_t n_attempts, const kp_refund *refunds, size_t n_refunds);

/* GET /events answer: {"events":[{"seq","at","kind","id","from"?,"to","cause"}],"next"}. */
cJSON *kp_api_json_events(const kp_event *events, size_t n, int64_t next);

/* Print a tree compactly; NULL when out of memory. Free with cJSON_free(). */
char *kp_api_json_print(const cJSON *root);

#endif
