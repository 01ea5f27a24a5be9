/* api.c — the local CoAP API on libcoap 3: resources, request checks, the
 * engine calls behind them, separate responses for pay (the host answers
 * later) and Observe on orders. Every request is checked in full before the
 * engine is called, so a rejected request changes nothing. */
#include "api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <coap3/coap.h>

#include "api_json.h"
#include "coap_addr.h"

#define WHY_SIZE 192
#define ORDER_CHILDREN_MAX 32   /* attempts / refunds shown per order */
#define PATH_SEGS_MAX 4

/* A POST /orders/{id}/pay waiting for the engine's callback; tied to a
 * libcoap async (separate response) registered for the request. */
struct pay_req {
	struct pay_req *next;
	kp_api *api;             /* NULL once the API is freed: the callback only frees */
	coap_async_t *async;     /* owned by libcoap; valid until it fires */
	bool done;
	kp_err err;
	kp_attempt attempt;
	char qr[KP_QR_SIZE];     /* the host's QR for it, "" if none */
	char order_id[KP_ID_SIZE];
};

/* An order that has its own resource "orders/{id}", so that it can be
 * observed (libcoap cannot observe its catch-all resource). */
struct observed {
	coap_resource_t *res;
	char order_id[KP_ID_SIZE];
	uint64_t used;           /* api->clock at the last use: eviction order */
	bool observed;           /* had subscribers at the last look */
};

struct kp_api {
	const kp_env *env;
	kp_engine *engine;
	kp_journal *journal;
	const kp_api_host_ops *host_ops;
	void *host;
	size_t max_payload;
	coap_context_t *ctx;
	uint16_t port;
	int64_t started_mono;
	struct pay_req *pays;
	struct observed obs[KP_API_OBSERVED_MAX];
	size_t n_obs;
	uint64_t clock;
	kp_api_stats stats;
	char refusing[64];      /* not "": new sales get 5.03 with this (kp_api_set_refusing) */
};

/* Everything a handler was given, in one place. */
struct req {
	kp_api *api;
	coap_resource_t *res;
	coap_session_t *session;
	const coap_pdu_t *pdu;
	const coap_string_t *query;
	coap_pdu_t *resp;
};

static const char nomem_body[] = "{\"error\":\"nomem\",\"message\":\"out of memory\"}";

/* ---------- answering ---------- */

static void release_text(coap_session_t *session, void *app_ptr)
{
	(void)session;
	cJSON_free(app_ptr);
}

static void count_answer(kp_api *api, int code)
{
	if (code < 300)
		api->stats.answers_2xx++;
	else if (code < 500)
		api->stats.answers_4xx++;
	else
		api->stats.answers_5xx++;
}

/* Answer with code (e.g. 205) and root as the JSON body; takes root. */
static void respond_json(struct req *rq, int code, cJSON *root)
{
	char *text = kp_api_json_print(root);
	cJSON_Delete(root);
	if (!text)
		code = 500;
	coap_pdu_set_code(rq->resp, COAP_RESPONSE_CODE(code));
	count_answer(rq->api, code);
	if (code >= 500)
		kp_log_warn(rq->api->env, "api: answered %d.%02d", code / 100, code % 100);
	const uint8_t *data = text ? (const uint8_t *)text : (const uint8_t *)nomem_body;
	size_t len = text ? strlen(text) : sizeof(nomem_body) - 1;
	/* On failure libcoap has already called release_text. */
	if (!coap_add_data_large_response(rq->res, rq->session, rq->pdu, rq->resp, rq->query,
					  COAP_MEDIATYPE_APPLICATION_JSON, -1, 0, len, data,
					  text ? release_text : NULL, text))
		kp_log_error(rq->api->env, "api: cannot add a %zu-byte body to the answer", len);
}

/* Answer an error: code 0 takes the code from the kp_err table. */
static void respond_error(struct req *rq, int code, kp_err err, const char *message)
{
	if (code == 0)
		code = kp_api_err_coap(err);
	respond_json(rq, code, kp_api_json_error(err, message));
}

/* ---------- request helpers ---------- */

static bool backend_ready(struct req *rq)
{
	if (rq->api->engine && rq->api->journal)
		return true;
	respond_error(rq, 0, KP_ERR_UNAVAILABLE, "journal not open");
	return false;
}

/* New sales (POST /orders, a new pay) are refused while refusing is set. */
static bool taking_sales(struct req *rq)
{
	if (!rq->api->refusing[0])
		return true;
	respond_error(rq, 0, KP_ERR_UNAVAILABLE, rq->api->refusing);
	return false;
}

/* The request body, checked for size (before any parsing) and content
 * format (absent or application/json). false: already answered. */
static bool request_body(struct req *rq, const uint8_t **data, size_t *len)
{
	size_t offset = 0, total = 0;
	coap_opt_iterator_t it;
	char why[WHY_SIZE];

	*data = NULL;
	*len = 0;
	if (!coap_get_data_large(rq->pdu, len, data, &offset, &total)) {
		*data = NULL;
		*len = 0;
		total = 0;
	}
	if (total > rq->api->max_payload || *len > rq->api->max_payload) {
		snprintf(why, sizeof(why), "request body of %zu bytes is over the limit of %zu", total,
			 rq->api->max_payload);
		respond_error(rq, 0, KP_ERR_TOO_BIG, why);
		return false;
	}
	if (offset != 0 || (total && total != *len)) {
		respond_error(rq, 0, KP_ERR_INVALID, "incomplete block-wise request body");
		return false;
	}
	coap_opt_t *cf = coap_check_option(rq->pdu, COAP_OPTION_CONTENT_FORMAT, &it);
	if (cf && coap_decode_var_bytes(coap_opt_value(cf), coap_opt_length(cf)) !=
			  COAP_MEDIATYPE_APPLICATION_JSON) {
		respond_error(rq, 415, KP_ERR_INVALID, "content-format must be application/json (50)");
		return false;
	}
	return true;
}

/* Split the Uri-Path options into NUL-terminated segments. Returns how many
 * (0..PATH_SEGS_MAX), or -1 if there are more or one is too long. */
static int path_segments(const coap_pdu_t *pdu, char seg[PATH_SEGS_MAX][KP_ID_SIZE])
{
	coap_opt_filter_t f;
	coap_opt_iterator_t it;
	coap_opt_t *o;
	int n = 0;

	coap_option_filter_clear(&f);
	coap_option_filter_set(&f, COAP_OPTION_URI_PATH);
	coap_option_iterator_init(pdu, &it, &f);
	while ((o = coap_option_next(&it))) {
		uint32_t len = coap_opt_length(o);
		if (n == PATH_SEGS_MAX || len >= KP_ID_SIZE)
			return -1;
		memcpy(seg[n], coap_opt_value(o), len);
		seg[n][len] = '\0';
		n++;
	}
	return n;
}

static bool valid_id(const char *id)
{
	return kp_api_json_id_valid(id, strlen(id));
}

/* -1: no Observe option, else its value (0 register, 1 deregister). */
static int observe_value(const coap_pdu_t *pdu)
{
	coap_opt_iterator_t it;
	coap_opt_t *o = coap_check_option(pdu, COAP_OPTION_OBSERVE, &it);
	if (!o)
		return -1;
	return (int)coap_decode_var_bytes(coap_opt_value(o), coap_opt_length(o));
}

/* Answer with the whole order (attempts and refunds) and code. */
static void answer_order(struct req *rq, const char *order_id, int code)
{
	kp_api *api = rq->api;
	kp_attempt *att = NULL;
	kp_refund *ref = NULL;
	size_t na = 0, nr = 0;
	kp_order o;
	char why[WHY_SIZE];

	kp_err err = kp_journal_order_get(api->journal, order_id, &o);
	if (err == KP_ERR_NOT_FOUND) {
		snprintf(why, sizeof(why), "no order %s", order_id);
		respond_error(rq, 0, err, why);
		goto out;
	}
	if (err != KP_OK) {
		kp_log_error(api->env, "api: order %s: cannot read: %s", order_id, kp_strerror(err));
		respond_error(rq, 0, err, kp_strerror(err));
		goto out;
	}
	att = calloc(ORDER_CHILDREN_MAX, sizeof(*att));
	ref = calloc(ORDER_CHILDREN_MAX, sizeof(*ref));
	if (!att || !ref) {
		respond_error(rq, 0, KP_ERR_NOMEM, NULL);
		goto out;
	}
	err = kp_journal_attempts_of_order(api->journal, order_id, att, ORDER_CHILDREN_MAX, &na);
	if (err == KP_OK)
		err = kp_journal_refunds_of_order(api->journal, order_id, ref, ORDER_CHILDREN_MAX, &nr);
	if (err != KP_OK) {
		kp_log_error(api->env, "api: order %s: cannot read attempts/refunds: %s", order_id,
			     kp_strerror(err));
		respond_error(rq, 0, err, kp_strerror(err));
		goto out;
	}
	const char *qrs[ORDER_CHILDREN_MAX];
	for (size_t i = 0; i < na; i++)
		qrs[i] = kp_engine_qr(api->engine, &att[i]);
	respond_json(rq, code, kp_api_json_order(&o, att, qrs, na, ref, nr));
out:
	free(att);
	free(ref);
}

/* ---------- Observe resources ---------- */

static struct observed *observed_find(kp_api *api, const char *order_id)
{
	for (size_t i = 0; i < api->n_obs; i++)
		if (strcmp(api->obs[i].order_id, order_id) == 0)
			return &api->obs[i];
	return NULL;
}

static void hnd_order_get(coap_resource_t *res, coap_session_t *session, const coap_pdu_t *pdu,
			  const coap_string_t *query, coap_pdu_t *resp);

/* Give order_id its own observable resource, evicting the least recently
 * used one (unobserved first) when full. Never evicts inside that resource's
 * own handler: it is only called from the catch-all handler. */
static kp_err observed_add(kp_api *api, const char *order_id)
{
	char path[sizeof("orders/") + KP_ID_SIZE];
	struct observed *slot;

	if (api->n_obs == KP_API_OBSERVED_MAX) {
		size_t victim = 0;
		for (size_t i = 1; i < api->n_obs; i++) {
			const struct observed *a = &api->obs[i], *v = &api->obs[victim];
			if ((v->observed && !a->observed) || (a->observed == v->observed && a->used < v->used))
				victim = i;
		}
		kp_log_info(api->env, "api: order %s: dropping its Observe resource (%s)",
			    api->obs[victim].order_id, api->obs[victim].observed ? "observed" : "idle");
		coap_delete_resource(api->ctx, api->obs[victim].res);
		api->obs[victim] = api->obs[--api->n_obs];
	}
	int n = snprintf(path, sizeof(path), "orders/%s", order_id);
	coap_str_const_t uri = {(size_t)n, (const uint8_t *)path};
	coap_resource_t *r = coap_resource_init(&uri, COAP_RESOURCE_FLAGS_NOTIFY_CON);
	if (!r)
		return KP_ERR_NOMEM;
	coap_register_request_handler(r, COAP_REQUEST_GET, hnd_order_get);
	coap_resource_set_get_observable(r, 1);
	coap_resource_set_userdata(r, api);
	coap_add_resource(api->ctx, r);
	slot = &api->obs[api->n_obs++];
	slot->res = r;
	snprintf(slot->order_id, sizeof(slot->order_id), "%s", order_id);
	slot->used = ++api->clock;
	slot->observed = true;
	return KP_OK;
}

void kp_api_order_changed(kp_api *api, const char *order_id)
{
	if (!api || !order_id)
		return;
	struct observed *o = observed_find(api, order_id);
	if (!o)
		return;
	/* Returns 0 when nobody subscribes: the resource may be evicted first. */
	if (coap_resource_notify_observers(o->res, NULL)) {
		api->stats.notifications++;
		o->observed = true;
		o->used = ++api->clock;
	} else {
		o->observed = false;
	}
}

void kp_api_on_change(void *api, const char *order_id)
{
	kp_api_order_changed(api, order_id);
}

/* ---------- handlers ---------- */

static struct req req_of(coap_resource_t *res, coap_session_t *session, const coap_pdu_t *pdu,
			 const coap_string_t *query, coap_pdu_t *resp)
{
	struct req rq = {coap_resource_get_userdata(res), res, session, pdu, query, resp};
	rq.api->stats.requests++;
	return rq;
}

/* GET orders/{id} on the order's own resource: a plain GET, an Observe
 * registration, or a notification being rendered. */
static void hnd_order_get(coap_resource_t *res, coap_session_t *session, const coap_pdu_t *pdu,
			  const coap_string_t *query, coap_pdu_t *resp)
{
	struct req rq = req_of(res, session, pdu, query, resp);
	char seg[PATH_SEGS_MAX][KP_ID_SIZE];
	coap_str_const_t *uri = coap_resource_get_uri_path(res);

	if (!backend_ready(&rq))
		return;
	/* The resource's own path names the order (a notification's request
	 * is the subscriber's original GET, same path). */
	if (path_segments(pdu, seg) != 2 || !uri || uri->length != strlen("orders/") + strlen(seg[1]) ||
	    memcmp(uri->s + strlen("orders/"), seg[1], strlen(seg[1])) != 0) {
		respond_error(&rq, 0, KP_ERR_INTERNAL, "resource path mismatch");
		return;
	}
	struct observed *o = observed_find(rq.api, seg[1]);
	if (o) {
		o->used = ++rq.api->clock;
		if (observe_value(pdu) == 0)
			o->observed = true;
	}
	answer_order(&rq, seg[1], 205);
}

static void on_pay_done(void *arg, kp_err err, const kp_attempt *attempt, const char *qr)
{
	struct pay_req *p = arg;
	if (!p->api) {
		free(p);
		return;
	}
	p->done = true;
	p->err = err;
	if (attempt) {
		p->attempt = *attempt;
		snprintf(p->qr, sizeof(p->qr), "%s", qr ? qr : "");
	} else if (err == KP_OK)
		p->err = KP_ERR_INTERNAL;
	coap_async_trigger(p->async);
}

static void pay_unlink(kp_api *api, struct pay_req *p)
{
	for (struct pay_req **pp = &api->pays; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			api->stats.pays_waiting--;
			return;
		}
	}
}

/* Hold the request for a separate answer (a pay request's); NULL with the
 * error answered when it cannot be held. */
static struct pay_req *pay_hold(struct req *rq)
{
	kp_api *api = rq->api;
	if (api->stats.pays_waiting >= KP_API_PAYS_MAX) {
		respond_error(rq, 0, KP_ERR_UNAVAILABLE, "too many pay requests in progress");
		return NULL;
	}
	struct pay_req *p = calloc(1, sizeof(*p));
	if (!p) {
		respond_error(rq, 0, KP_ERR_NOMEM, NULL);
		return NULL;
	}
	p->api = api;
	p->async = coap_register_async(rq->session, rq->pdu, 0);
	if (!p->async) {
		free(p);
		respond_error(rq, 0, KP_ERR_UNAVAILABLE, "cannot hold the request for a separate answer");
		return NULL;
	}
	coap_async_set_app_data(p->async, p);
	return p;
}

/* The engine refused at once (its done will not be called): answer now. */
static void pay_hold_drop(struct req *rq, struct pay_req *p)
{
	coap_free_async(rq->session, p->async);
	free(p);
}

/* The engine took it: on_pay_done will fire the async. */
static void pay_track(kp_api *api, struct pay_req *p, const char *order_id)
{
	snprintf(p->order_id, sizeof(p->order_id), "%s", order_id);
	p->next = api->pays;
	api->pays = p;
	api->stats.pays_waiting++;
}

/* libcoap calls the handler again once on_pay_done fired: the pay request
 * behind it, or NULL with the error answered. */
static struct pay_req *pay_fired(struct req *rq, coap_async_t *async)
{
	struct pay_req *p = coap_async_get_app_data(async);
	if (!p || !p->done) {
		respond_error(rq, 0, KP_ERR_INTERNAL, "pay answer triggered before the engine finished");
		return NULL;
	}
	return p;
}

static void pay_answered(kp_api *api, coap_async_t *async, struct pay_req *p)
{
	pay_unlink(api, p);
	free(p);
	coap_async_set_app_data(async, NULL); /* libcoap frees the async after this handler */
}

/* 2.01 with the order's Location-Path (orders/{id}). */
static void respond_created(struct req *rq, const kp_order *o, cJSON *body)
{
	coap_add_option(rq->resp, COAP_OPTION_LOCATION_PATH, strlen("orders"), (const uint8_t *)"orders");
	coap_add_option(rq->resp, COAP_OPTION_LOCATION_PATH, strlen(o->order_id), (const uint8_t *)o->order_id);
	respond_json(rq, 201, body);
}

/* POST /orders with "channel": the order and its attempt in one commit
 * (kp_engine_order_pay); the answer waits for the host's create_payment
 * reply, as POST /orders/{id}/pay does. A duplicate is answered at once. */
static void orders_post_pay(struct req *rq, const kp_order_req *r, const char *channel)
{
	char why[WHY_SIZE] = "";
	kp_order o;
	bool dup = false;
	struct pay_req *p = pay_hold(rq);
	if (!p)
		return;
	kp_err err = kp_engine_order_pay(rq->api->engine, r, channel, &o, &dup, why, sizeof(why), on_pay_done, p);
	if (err != KP_OK || dup) {
		pay_hold_drop(rq, p);
		if (err != KP_OK)
			respond_error(rq, 0, err, why[0] ? why : kp_strerror(err));
		else
			respond_created(rq, &o, kp_api_json_created(&o, true));
		return;
	}
	pay_track(rq->api, p, o.order_id);
	/* No code set: libcoap sends an empty ACK now, the answer comes later. */
}

/* The separate answer of orders_post_pay: the order as it is now, and the
 * attempt (or why the payment did not start: the order stays pending). */
static void orders_post_answer(struct req *rq, coap_async_t *async)
{
	struct pay_req *p = pay_fired(rq, async);
	if (!p)
		return;
	kp_order o;
	char why[WHY_SIZE];
	kp_err err = kp_journal_order_get(rq->api->journal, p->order_id, &o);
	if (err != KP_OK) {
		kp_log_error(rq->api->env, "api: order %s: cannot read: %s", p->order_id, kp_strerror(err));
		respond_error(rq, 0, err, kp_strerror(err));
	} else {
		snprintf(why, sizeof(why), "order %s: %s", p->order_id, kp_strerror(p->err));
		respond_created(rq, &o,
				kp_api_json_created_paying(&o, p->err == KP_OK ? &p->attempt : NULL, p->qr, p->err, why));
	}
	pay_answered(rq->api, async, p);
}

/* POST /orders */
static void hnd_orders_post(coap_resource_t *res, coap_session_t *session, const coap_pdu_t *pdu,
			    const coap_string_t *query, coap_pdu_t *resp)
{
	struct req rq = req_of(res, session, pdu, query, resp);
	kp_api_order_body *b = NULL;
	const uint8_t *data;
	size_t len;
	char why[WHY_SIZE] = "";
	kp_order o;
	bool dup = false;

	coap_async_t *async = coap_find_async(session, coap_pdu_get_token(pdu));
	if (async) {
		orders_post_answer(&rq, async);
		return;
	}
	if (!backend_ready(&rq) || !taking_sales(&rq) || !request_body(&rq, &data, &len))
		return;
	b = malloc(sizeof(*b));
	if (!b) {
		respond_error(&rq, 0, KP_ERR_NOMEM, NULL);
		return;
	}
	kp_err err = kp_api_json_parse_order(data, len, b, why, sizeof(why));
	if (err != KP_OK) {
		respond_error(&rq, 0, err, why);
		goto out;
	}
	kp_order_req r = {
		.dedup_key = b->dedup_key,
		.amount = b->amount,
		.currency = b->has_currency ? b->currency : NULL,
		.items = b->has_items ? b->items : NULL,
	};
	if (b->has_channel) {
		orders_post_pay(&rq, &r, b->channel);
		goto out;
	}
	err = kp_engine_order_create(rq.api->engine, &r, &o, &dup, why, sizeof(why));
	if (err != KP_OK) {
		respond_error(&rq, 0, err, why[0] ? why : kp_strerror(err));
		goto out;
	}
	respond_created(&rq, &o, kp_api_json_created(&o, dup));
out:
	free(b);
}

/* POST /orders/{id}/pay: first call starts the payment and leaves the
 * answer for later (empty ACK); libcoap calls again, with the same request,
 * once on_pay_done triggered the async: then the answer goes out. */
static void order_pay(struct req *rq, const char *order_id)
{
	kp_api *api = rq->api;
	coap_async_t *async = coap_find_async(rq->session, coap_pdu_get_token(rq->pdu));
	const uint8_t *data;
	size_t len;
	char channel[KP_CHANNEL_SIZE];
	char why[WHY_SIZE];

	if (async) {
		struct pay_req *p = pay_fired(rq, async);
		if (!p)
			return;
		if (p->err == KP_OK) {
			respond_json(rq, 201, kp_api_json_attempt(&p->attempt, p->qr));
		} else {
			snprintf(why, sizeof(why), "order %s: %s", p->order_id, kp_strerror(p->err));
			respond_error(rq, 0, p->err, why);
		}
		pay_answered(api, async, p);
		return;
	}

	if (!backend_ready(rq) || !taking_sales(rq) || !request_body(rq, &data, &len))
		return;
	kp_err err = kp_api_json_parse_pay(data, len, channel, why, sizeof(why));
	if (err != KP_OK) {
		respond_error(rq, 0, err, why);
		return;
	}
	struct pay_req *p = pay_hold(rq);
	if (!p)
		return;
	err = kp_engine_pay(api->engine, order_id, channel, on_pay_done, p);
	if (err != KP_OK) {
		pay_hold_drop(rq, p);
		if (err == KP_ERR_NOT_FOUND)
			snprintf(why, sizeof(why), "no order %s", order_id);
		else if (err == KP_ERR_INVALID)
			snprintf(why, sizeof(why), "channel \"%s\" is not valid (1..16 of [a-z0-9_-])", channel);
		else
			snprintf(why, sizeof(why), "order %s: %s", order_id, kp_strerror(err));
		respond_error(rq, 0, err, why);
		return;
	}
	pay_track(api, p, order_id);
	/* No code set: libcoap sends an empty ACK now, the answer comes later. */
}

/* POST /orders/{id}/cancel */
static void order_cancel(struct req *rq, const char *order_id)
{
	const uint8_t *data;
	size_t len;
	char why[WHY_SIZE];
	kp_order o;

	if (!backend_ready(rq) || !request_body(rq, &data, &len))
		return;
	kp_err err = kp_engine_cancel(rq->api->engine, order_id, &o);
	if (err != KP_OK) {
		if (err == KP_ERR_NOT_FOUND)
			snprintf(why, sizeof(why), "no order %s", order_id);
		else
			snprintf(why, sizeof(why), "order %s: %s", order_id, kp_strerror(err));
		respond_error(rq, 0, err, why);
		return;
	}
	answer_order(rq, order_id, 204);
}

/* POST /orders/{id}/vend */
static void order_vend(struct req *rq, const char *order_id)
{
	const uint8_t *data;
	size_t len;
	char why[WHY_SIZE];
	bool success;
	kp_order o;

	if (!backend_ready(rq) || !request_body(rq, &data, &len))
		return;
	kp_err err = kp_api_json_parse_vend(data, len, &success, why, sizeof(why));
	if (err != KP_OK) {
		respond_error(rq, 0, err, why);
		return;
	}
	err = kp_engine_vend(rq->api->engine, order_id, success, &o);
	if (err != KP_OK) {
		if (err == KP_ERR_NOT_FOUND)
			snprintf(why, sizeof(why), "no order %s", order_id);
		else
			snprintf(why, sizeof(why), "order %s: %s", order_id, kp_strerror(err));
		respond_error(rq, 0, err, why);
		return;
	}
	answer_order(rq, order_id, 204);
}

/* GET orders/{id} reaching the catch-all: the order has no resource of its
 * own yet. A plain GET is answered here. An Observe registration makes the
 * resource, then has libcoap hand the same request to it (async fired at
 * once), where the subscription is recorded. */
static void order_get_unknown(struct req *rq, const char *order_id)
{
	kp_api *api = rq->api;
	kp_order o;

	if (!backend_ready(rq))
		return;
	if (observe_value(rq->pdu) == 0 && !coap_find_async(rq->session, coap_pdu_get_token(rq->pdu))) {
		kp_err err = kp_journal_order_get(api->journal, order_id, &o);
		if (err == KP_OK && !observed_find(api, order_id) && observed_add(api, order_id) == KP_OK) {
			coap_async_t *a = coap_register_async(rq->session, rq->pdu, 0);
			if (a) {
				coap_async_trigger(a);
				return; /* empty ACK now, the answer from the new resource */
			}
		}
	}
	answer_order(rq, order_id, 205);
}

static void hnd_unknown(coap_resource_t *res, coap_session_t *session, const coap_pdu_t *pdu,
			const coap_string_t *query, coap_pdu_t *resp)
{
	struct req rq = req_of(res, session, pdu, query, resp);
	char seg[PATH_SEGS_MAX][KP_ID_SIZE];
	char why[WHY_SIZE];
	int n = path_segments(pdu, seg);
	coap_pdu_code_t method = coap_pdu_get_code(pdu);

	if (n < 2 || strcmp(seg[0], "orders") != 0) {
		respond_error(&rq, 0, KP_ERR_NOT_FOUND, "no such resource");
		return;
	}
	if (!valid_id(seg[1])) {
		snprintf(why, sizeof(why), "\"%.64s\" is not an order id (1..64 of [A-Za-z0-9_-])", seg[1]);
		respond_error(&rq, 0, KP_ERR_INVALID, why);
		return;
	}
	if (n == 2 && method == COAP_REQUEST_CODE_GET) {
		order_get_unknown(&rq, seg[1]);
		return;
	}
	if (n == 3 && method == COAP_REQUEST_CODE_POST) {
		if (strcmp(seg[2], "pay") == 0)
			order_pay(&rq, seg[1]);
		else if (strcmp(seg[2], "cancel") == 0)
			order_cancel(&rq, seg[1]);
		else if (strcmp(seg[2], "vend") == 0)
			order_vend(&rq, seg[1]);
		else
			respond_error(&rq, 0, KP_ERR_NOT_FOUND, "no such resource");
		return;
	}
	if (n == 2 || (n == 3 && (strcmp(seg[2], "pay") == 0 || strcmp(seg[2], "cancel") == 0 ||
				  strcmp(seg[2], "vend") == 0)))
		respond_error(&rq, 405, KP_ERR_INVALID, "method not allowed on this resource");
	else
		respond_error(&rq, 0, KP_ERR_NOT_FOUND, "no such resource");
}

static void hnd_not_allowed(coap_resource_t *res, coap_session_t *session, const coap_pdu_t *pdu,
			    const coap_string_t *query, coap_pdu_t *resp)
{
	struct req rq = req_of(res, session, pdu, query, resp);
	respond_error(&rq, 405, KP_ERR_INVALID, "method not allowed on this resource");
}

/* GET /health */
static void hnd_health_get(coap_resource_t *res, coap_session_t *session, const coap_pdu_t *pdu,
			   const coap_string_t *query, coap_pdu_t *resp)
{
	struct req rq = req_of(res, session, pdu, query, resp);
	kp_api *api = rq.api;
	const char *journal = "closed";
	int64_t at;

	if (api->journal)
		journal = kp_journal_next_due(api->journal, &at) == KP_OK ? "ok" : "error";
	bool host_up = api->host_ops && api->host_ops->up && api->host_ops->up(api->host);
	bool ok = strcmp(journal, "ok") == 0 && host_up && api->engine;
	int64_t uptime_s = (kp_now_mono(api->env) - api->started_mono) / 1000; /* whole seconds */
	cJSON *o = cJSON_CreateObject();
	if (o && (!cJSON_AddStringToObject(o, "status", ok ? "ok" : "degraded") ||
		  !cJSON_AddStringToObject(o, "journal", journal) ||
		  !cJSON_AddStringToObject(o, "host", host_up ? "up" : "down") ||
		  !cJSON_AddNumberToObject(o, "uptime_s", (double)uptime_s) ||
		  !cJSON_AddStringToObject(o, "version", KP_VERSION))) {
		cJSON_Delete(o);
		o = NULL;
	}
	respond_json(&rq, 205, o);
}

/* {"name": count} for each state of a machine. */
static bool add_counts(cJSON *root, const char *name, const int64_t *counts, int n,
		       const char *(*str)(int))
{
	cJSON *o = cJSON_AddObjectToObject(root, name);
	if (!o)
		return false;
	for (int i = 0; i < n; i++)
		if (!cJSON_AddNumberToObject(o, str(i), (double)counts[i]))
			return false;
	return true;
}

static const char *order_str(int s) { return kp_order_state_str((kp_order_state)s); }
static const char *attempt_str(int s) { return kp_attempt_state_str((kp_attempt_state)s); }
static const char *refund_str(int s) { return kp_refund_state_str((kp_refund_state)s); }

static bool add_u64(cJSON *o, const char *name, uint64_t v)
{
	return cJSON_AddNumberToObject(o, name, (double)v) != NULL;
}

/* GET /metrics */
static void hnd_metrics_get(coap_resource_t *res, coap_session_t *session, const coap_pdu_t *pdu,
			    const coap_string_t *query, coap_pdu_t *resp)
{
	struct req rq = req_of(res, session, pdu, query, resp);
	kp_api *api = rq.api;
	kp_journal_stats js;
	kp_engine_stats es;
	kp_api_stat hs[32];
	size_t nhs = 0;
	cJSON *root = NULL, *o;

	if (!backend_ready(&rq))
		return;
	kp_err err = kp_journal_stats_get(api->journal, &js);
	if (err != KP_OK) {
		kp_log_error(api->env, "api: metrics: journal stats: %s", kp_strerror(err));
		respond_error(&rq, 0, err, "cannot read journal statistics");
		return;
	}
	kp_engine_stats_get(api->engine, &es);
	bool host_up = api->host_ops && api->host_ops->up && api->host_ops->up(api->host);
	if (api->host_ops && api->host_ops->stats)
		nhs = api->host_ops->stats(api->host, hs, sizeof(hs) / sizeof(hs[0]));
	if (nhs > sizeof(hs) / sizeof(hs[0]))
		nhs = sizeof(hs) / sizeof(hs[0]);
	int64_t alarms = js.attempts[KP_ATTEMPT_UNRESOLVED] + js.attempts[KP_ATTEMPT_REFUND_REJECTED] +
			 js.refunds[KP_REFUND_REJECTED];

	root = cJSON_CreateObject();
	if (!root)
		goto fail;
	if (!add_counts(root, "orders", js.orders, KP_ORDER__COUNT, order_str) ||
	    !add_counts(root, "attempts", js.attempts, KP_ATTEMPT__COUNT, attempt_str) ||
	    !add_counts(root, "refunds", js.refunds, KP_REFUND__COUNT, refund_str) ||
	    !cJSON_AddNumberToObject(root, "confirmations", (double)js.confirmations) ||
	    !cJSON_AddNumberToObject(root, "events", (double)js.events) ||
	    !cJSON_AddNumberToObject(root, "journal_bytes", (double)js.file_bytes) ||
	    !cJSON_AddNumberToObject(root, "alarms", (double)alarms))
		goto fail;
	o = cJSON_AddObjectToObject(root, "host");
	if (!o || !cJSON_AddBoolToObject(o, "up", host_up))
		goto fail;
	for (size_t i = 0; i < nhs; i++)
		if (hs[i].name && !cJSON_AddNumberToObject(o, hs[i].name, (double)hs[i].value))
			goto fail;
	o = cJSON_AddObjectToObject(root, "engine");
	if (!o || !add_u64(o, "alarms_seen", es.alarms) || !add_u64(o, "confirms", es.confirms) ||
	    !add_u64(o, "confirms_duplicate", es.confirms_duplicate) ||
	    !add_u64(o, "refunds_created", es.refunds_created) || !add_u64(o, "host_errors", es.host_errors) ||
	    !add_u64(o, "requests_in_flight", es.requests_in_flight))
		goto fail;
	o = cJSON_AddObjectToObject(root, "api");
	if (!o || !add_u64(o, "requests", api->stats.requests) ||
	    !add_u64(o, "answers_2xx", api->stats.answers_2xx) ||
	    !add_u64(o, "answers_4xx", api->stats.answers_4xx) ||
	    !add_u64(o, "answers_5xx", api->stats.answers_5xx) ||
	    !add_u64(o, "notifications", api->stats.notifications) ||
	    !add_u64(o, "pays_waiting", api->stats.pays_waiting) || !add_u64(o, "observed_orders", api->n_obs))
		goto fail;
	respond_json(&rq, 205, root);
	return;
fail:
	cJSON_Delete(root);
	respond_json(&rq, 500, NULL);
}

/* POST /reconcile */
static void hnd_reconcile_post(coap_resource_t *res, coap_session_t *session, const coap_pdu_t *pdu,
			       const coap_string_t *query, coap_pdu_t *resp)
{
	struct req rq = req_of(res, session, pdu, query, resp);
	const uint8_t *data;
	size_t len;

	if (!backend_ready(&rq) || !request_body(&rq, &data, &len))
		return;
	kp_err err = kp_engine_reconcile_now(rq.api->engine);
	if (err != KP_OK) {
		kp_log_error(rq.api->env, "api: reconcile: %s", kp_strerror(err));
		respond_error(&rq, 0, err, "cannot schedule the reconciliation");
		return;
	}
	cJSON *o = cJSON_CreateObject();
	if (o && !cJSON_AddStringToObject(o, "status", "scheduled")) {
		cJSON_Delete(o);
		o = NULL;
	}
	respond_json(&rq, 204, o);
}

/* Parse a non-negative decimal integer of exactly len bytes. */
static bool parse_count(const uint8_t *s, size_t len, int64_t max, int64_t *out)
{
	char buf[24];
	char *end;
	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (buf[0] < '0' || buf[0] > '9')
		return false;
	errno = 0;
	long long v = strtoll(buf, &end, 10);
	if (errno || *end || v < 0 || v > max)
		return false;
	*out = v;
	return true;
}

/* GET /events?since=N&limit=M */
static void hnd_events_get(coap_resource_t *res, coap_session_t *session, const coap_pdu_t *pdu,
			   const coap_string_t *query, coap_pdu_t *resp)
{
	struct req rq = req_of(res, session, pdu, query, resp);
	int64_t since = 0, limit = KP_API_EVENTS_PAGE;
	kp_event *ev = NULL;
	size_t n = 0;

	if (!backend_ready(&rq))
		return;
	/* libcoap joins the Uri-Query options with '&'. */
	const uint8_t *p = query ? query->s : NULL, *end = p ? p + query->length : NULL;
	while (p && p < end) {
		const uint8_t *amp = memchr(p, '&', (size_t)(end - p));
		const uint8_t *stop = amp ? amp : end;
		const uint8_t *eq = memchr(p, '=', (size_t)(stop - p));
		size_t klen = eq ? (size_t)(eq - p) : (size_t)(stop - p);
		const uint8_t *v = eq ? eq + 1 : stop;
		size_t vlen = (size_t)(stop - v);
		bool ok;
		if (klen == 5 && memcmp(p, "since", 5) == 0)
			ok = eq && parse_count(v, vlen, KP_API_JSON_INT_MAX, &since);
		else if (klen == 5 && memcmp(p, "limit", 5) == 0)
			ok = eq && parse_count(v, vlen, KP_API_EVENTS_PAGE, &limit) && limit >= 1;
		else
			ok = false;
		if (!ok) {
			respond_error(&rq, 0, KP_ERR_INVALID,
				      "query must be since=N (N >= 0) and optionally limit=1..100");
			return;
		}
		p = amp ? amp + 1 : end;
	}
	ev = calloc((size_t)limit, sizeof(*ev));
	if (!ev) {
		respond_error(&rq, 0, KP_ERR_NOMEM, NULL);
		return;
	}
	kp_err err = kp_journal_events(rq.api->journal, since, ev, (size_t)limit, &n);
	if (err != KP_OK) {
		kp_log_error(rq.api->env, "api: events since %lld: %s", (long long)since, kp_strerror(err));
		respond_error(&rq, 0, err, "cannot read events");
	} else {
		respond_json(&rq, 205, kp_api_json_events(ev, n, n ? ev[n - 1].seq : since));
	}
	free(ev);
}

/* ---------- lifecycle ---------- */

/* The bound port, from libcoap's "addr:port UDP" text of the endpoint. */
static uint16_t endpoint_port(const coap_endpoint_t *ep)
{
	char buf[128];
	snprintf(buf, sizeof(buf), "%s", coap_endpoint_str(ep));
	char *sp = strchr(buf, ' ');
	if (sp)
		*sp = '\0';
	char *colon = strrchr(buf, ':');
	if (!colon)
		return 0;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	return (*end || port <= 0 || port > 65535) ? 0 : (uint16_t)port;
}

static kp_err add_static(kp_api *api, const char *path, coap_request_t method, coap_method_handler_t h)
{
	coap_str_const_t uri = {strlen(path), (const uint8_t *)path};
	coap_resource_t *r = coap_resource_init(&uri, 0);
	if (!r)
		return KP_ERR_NOMEM;
	static const coap_request_t all[] = {COAP_REQUEST_GET, COAP_REQUEST_POST, COAP_REQUEST_PUT,
					     COAP_REQUEST_DELETE};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		coap_register_request_handler(r, all[i], all[i] == method ? h : hnd_not_allowed);
	coap_resource_set_userdata(r, api);
	coap_add_resource(api->ctx, r);
	return KP_OK;
}

kp_err kp_api_new(kp_api **out, const kp_api_config *cfg, const kp_api_deps *deps)
{
	kp_api *api = NULL;
	coap_address_t addr;
	coap_endpoint_t *ep;
	bool loopback = false;
	kp_err err;

	*out = NULL;
	if (!deps || !deps->env)
		return KP_ERR_INVALID;
	const char *listen = cfg && cfg->listen && cfg->listen[0] ? cfg->listen : KP_API_LISTEN_DEFAULT;
	if (kp_coap_addr_parse(listen, true, &addr, &loopback) != KP_OK) {
		kp_log_error(deps->env, "api: listen address \"%s\" is not ipv4:port, [ipv6]:port or localhost:port",
			     listen);
		return KP_ERR_CONFIG;
	}
	api = calloc(1, sizeof(*api));
	if (!api)
		return KP_ERR_NOMEM;
	api->env = deps->env;
	api->engine = deps->engine;
	api->journal = deps->journal;
	api->host_ops = deps->host_ops;
	api->host = deps->host;
	api->max_payload = cfg && cfg->max_payload ? cfg->max_payload : KP_API_MAX_PAYLOAD_DEFAULT;
	api->started_mono = kp_now_mono(deps->env);

	coap_startup();
	api->ctx = coap_new_context(NULL);
	if (!api->ctx) {
		err = KP_ERR_NOMEM;
		goto out;
	}
	if (coap_context_get_coap_fd(api->ctx) < 0) {
		kp_log_error(api->env, "api: libcoap was built without epoll; cannot join the poll loop");
		err = KP_ERR_INTERNAL;
		goto out;
	}
	/* Not COAP_BLOCK_SINGLE_BODY: libcoap 4.3.1's Block1 reassembly
	 * dereferences a NULL body when a transfer began without Size1 (two
	 * datagrams crash the daemon; fixed upstream in 4.3.2, commit 4ef0705c;
	 * tests/fuzz/corpus/api/regress-libcoap431-block1-no-size1). Request
	 * bodies must fit one datagram: request_body() refuses a block. */
	coap_context_set_block_mode(api->ctx, COAP_BLOCK_USE_LIBCOAP);
	ep = coap_new_endpoint(api->ctx, &addr, COAP_PROTO_UDP);
	if (!ep) {
		kp_log_error(api->env, "api: cannot bind UDP %s", listen);
		err = KP_ERR_IO;
		goto out;
	}
	api->port = endpoint_port(ep);
	if (!loopback)
		kp_log_warn(api->env,
			    "api: WARNING: listening on non-loopback %s: anyone who can reach it can create, "
			    "pay, cancel and vend orders (the API has no authentication)",
			    listen);

	err = add_static(api, "orders", COAP_REQUEST_POST, hnd_orders_post);
	if (err == KP_OK)
		err = add_static(api, "health", COAP_REQUEST_GET, hnd_health_get);
	if (err == KP_OK)
		err = add_static(api, "metrics", COAP_REQUEST_GET, hnd_metrics_get);
	if (err == KP_OK)
		err = add_static(api, "reconcile", COAP_REQUEST_POST, hnd_reconcile_post);
	if (err == KP_OK)
		err = add_static(api, "events", COAP_REQUEST_GET, hnd_events_get);
	if (err != KP_OK)
		goto out;
	coap_resource_t *u = coap_resource_unknown_init(hnd_unknown);
	if (!u) {
		err = KP_ERR_NOMEM;
		goto out;
	}
	coap_register_request_handler(u, COAP_REQUEST_GET, hnd_unknown);
	coap_register_request_handler(u, COAP_REQUEST_POST, hnd_unknown);
	coap_register_request_handler(u, COAP_REQUEST_DELETE, hnd_unknown);
	coap_resource_set_userdata(u, api);
	coap_add_resource(api->ctx, u);

	kp_log_info(api->env, "api: listening on udp %s (port %u)", listen, api->port);
	*out = api;
	api = NULL;
	err = KP_OK;
out:
	kp_api_free(api);
	return err;
}

void kp_api_free(kp_api *api)
{
	if (!api)
		return;
	struct pay_req *p = api->pays;
	while (p) {
		struct pay_req *next = p->next;
		if (p->done)
			free(p);       /* answer was due; its async dies with the context */
		else
			p->api = NULL; /* the engine still holds it; its callback frees it */
		p = next;
	}
	if (api->ctx)
		coap_free_context(api->ctx);
	free(api);
}

void kp_api_set_backend(kp_api *api, kp_engine *engine, kp_journal *journal)
{
	api->engine = engine;
	api->journal = journal;
}

void kp_api_set_refusing(kp_api *api, const char *why)
{
	snprintf(api->refusing, sizeof(api->refusing), "%s", why ? why : "");
}

uint16_t kp_api_port(const kp_api *api)
{
	return api->port;
}

void kp_api_pollfd(const kp_api *api, struct pollfd *pfd)
{
	pfd->fd = coap_context_get_coap_fd(api->ctx);
	pfd->events = POLLIN;
	pfd->revents = 0;
}

int64_t kp_api_deadline(const kp_api *api)
{
	(void)api;
	return 0;
}

void kp_api_process(kp_api *api, short revents)
{
	(void)revents;
	/* The requests of this turn read in one snapshot (writes still commit
	 * each on its own before their answer): GET /orders/{id} alone makes
	 * three reads. */
	kp_journal_read_begin(api->journal);
	if (coap_io_process(api->ctx, COAP_IO_NO_WAIT) < 0)
		kp_log_warn(api->env, "api: coap_io_process failed");
	kp_journal_read_end(api->journal);
}

void kp_api_stats_get(const kp_api *api, kp_api_stats *out)
{
	*out = api->stats;
	out->observed_orders = api->n_obs;
}
