/* control.c — kp-hostsim's control port for tests: one JSON object per line in,
 * one JSON object per line out, on a loopback TCP port apart from the kiosk's.
 * Makes customers pay or fail, pays orders twice, makes orphans, arms faults,
 * lists and dumps. --script runs the same commands from a file. */
#include "hostsim.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- reply helpers ---------------------------------------------------------------- */

static cJSON *ok_reply(void)
{
	cJSON *r = cJSON_CreateObject();
	if (r)
		cJSON_AddBoolToObject(r, "ok", 1);
	return r;
}

static cJSON *err_reply(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static cJSON *err_reply(const char *code, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cJSON *r = cJSON_CreateObject();
	if (r) {
		cJSON_AddBoolToObject(r, "ok", 0);
		cJSON_AddStringToObject(r, "error", code);
		cJSON_AddStringToObject(r, "message", msg);
	}
	return r;
}

/* Optional string member that must be a protocol id; "" if absent. */
static bool get_id(const cJSON *cmd, const char *name, char *out, size_t cap, cJSON **err)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(cmd, name);
	out[0] = '\0';
	if (!it)
		return true;
	if (!cJSON_IsString(it) || !kp_proto_id_valid(it->valuestring) || strlen(it->valuestring) >= cap) {
		*err = err_reply("bad_request", "%s must be 1..64 of [A-Za-z0-9_-]", name);
		return false;
	}
	snprintf(out, cap, "%s", it->valuestring);
	return true;
}

/* Optional integer member in [min, max]; def if absent. */
static bool get_int(const cJSON *cmd, const char *name, int64_t min, int64_t max, int64_t def,
		    int64_t *out, cJSON **err)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(cmd, name);
	if (!it) {
		*out = def;
		return true;
	}
	double v = cJSON_IsNumber(it) ? it->valuedouble : NAN;
	if (!isfinite(v) || v != floor(v) || v < (double)min || v > (double)max) {
		*err = err_reply("bad_request", "%s must be an integer in %" PRId64 "..%" PRId64, name, min,
				 max);
		return false;
	}
	*out = (int64_t)v;
	return true;
}

static bool add_payment(cJSON *arr, const kp_ledger_payment *p)
{
	cJSON *o = cJSON_CreateObject();
	if (!o || !cJSON_AddItemToArray(arr, o)) {
		cJSON_Delete(o);
		return false;
	}
	return cJSON_AddStringToObject(o, "attempt_id", p->attempt_id) &&
	       cJSON_AddStringToObject(o, "order_id", p->order_id) &&
	       cJSON_AddStringToObject(o, "device_id", p->device_id) &&
	       cJSON_AddNumberToObject(o, "amount", (double)p->amount) &&
	       cJSON_AddStringToObject(o, "currency", p->currency) &&
	       cJSON_AddStringToObject(o, "channel", p->channel) &&
	       cJSON_AddStringToObject(o, "status", p->status) &&
	       cJSON_AddNumberToObject(o, "expires_at", (double)p->expires_at) &&
	       cJSON_AddNumberToObject(o, "created_at", (double)p->created_at);
}

/* ---- commands --------------------------------------------------------------------- */

/* The attempt a pay/fail names: attempt_id, or the newest pending one of order_id. */
static bool resolve_attempt(hostsim *s, const cJSON *cmd, char *id, size_t cap, cJSON **err)
{
	char order[KP_PROTO_ID_SIZE];
	if (!get_id(cmd, "attempt_id", id, cap, err) || !get_id(cmd, "order_id", order, sizeof(order), err))
		return false;
	if (id[0])
		return true;
	if (!order[0]) {
		*err = err_reply("bad_request", "attempt_id or order_id is required");
		return false;
	}
	static kp_ledger_payment pend[16];
	int n = 0;
	if (kp_ledger_payments_pending(s->ledger, order, pend, 16, &n) != KP_OK || n == 0) {
		*err = err_reply("not_found", "order %s has no pending attempt", order);
		return false;
	}
	snprintf(id, cap, "%s", pend[n - 1].attempt_id);
	return true;
}

static cJSON *settle_reply(kp_err err, const char *id, const kp_ledger_payment *p, const kp_ledger_confirm *k)
{
	if (err == KP_ERR_NOT_FOUND)
		return err_reply("not_found", "no payment %s", id);
	if (err == KP_ERR_STATE)
		return err_reply("state", "payment %s is %s, not pending", id, p->status);
	if (err != KP_OK)
		return err_reply("internal", "%s", kp_strerror(err));
	cJSON *r = ok_reply();
	if (r) {
		cJSON_AddStringToObject(r, "attempt_id", p->attempt_id);
		cJSON_AddStringToObject(r, "order_id", p->order_id);
		cJSON_AddStringToObject(r, "status", p->status);
		cJSON_AddStringToObject(r, "host_txn", p->host_txn);
		cJSON_AddStringToObject(r, "device_id", k->device_id);
		cJSON_AddNumberToObject(r, "seq", (double)k->seq);
	}
	return r;
}

static cJSON *cmd_settle(hostsim *s, const cJSON *cmd, bool success)
{
	char id[KP_PROTO_ID_SIZE];
	int64_t delay = 0;
	cJSON *err = NULL;
	if (!resolve_attempt(s, cmd, id, sizeof(id), &err) ||
	    !get_int(cmd, "delay_ms", 0, 24LL * 3600 * 1000, 0, &delay, &err))
		return err;
	if (delay > 0) {
		kp_ledger_payment p;
		if (kp_ledger_payment_get(s->ledger, id, &p) != KP_OK) {
			/* allowed: the kiosk may create it within the delay */
			kp_log_info(&s->env, "control: %s of %s scheduled before it exists", success ? "pay" : "fail", id);
		}
		if (hs_timer_add(s, success ? HS_TIMER_PAY : HS_TIMER_FAIL, kp_now_mono(&s->env) + delay, id, 0) !=
		    KP_OK)
			return err_reply("too_big", "timer table full (%d)", HS_MAX_TIMERS);
		cJSON *r = ok_reply();
		if (r) {
			cJSON_AddStringToObject(r, "attempt_id", id);
			cJSON_AddBoolToObject(r, "scheduled", 1);
			cJSON_AddNumberToObject(r, "delay_ms", (double)delay);
		}
		return r;
	}
	kp_ledger_payment p;
	kp_ledger_confirm k;
	memset(&p, 0, sizeof(p));
	memset(&k, 0, sizeof(k));
	kp_err e = hs_settle(s, id, success, &p, &k);
	return settle_reply(e, id, &p, &k);
}

/* Default device for an orphan: the device of another payment of the order,
 * else the only connected device. */
static bool orphan_device(hostsim *s, const char *order, char *dev, size_t cap)
{
	static kp_ledger_payment pend[1];
	int n = 0;
	if (kp_ledger_payments_pending(s->ledger, order, pend, 1, &n) == KP_OK && n > 0) {
		snprintf(dev, cap, "%s", pend[0].device_id);
		return true;
	}
	int found = 0;
	for (int i = 0; i < HS_MAX_CONNS; i++) {
		hs_conn *c = &s->conns[i];
		if (c->state == HS_CONN_OPEN && c->hello_done) {
			if (found++ == 0)
				snprintf(dev, cap, "%s", c->device_id);
		}
	}
	return found == 1;
}

static cJSON *do_orphan(hostsim *s, const cJSON *cmd, const char *order, int64_t amount, const char *currency,
			const char *device, const char *channel_default, kp_ledger_payment *out)
{
	cJSON *err = NULL;
	kp_ledger_payment p;
	kp_ledger_confirm k;
	memset(&p, 0, sizeof(p));
	if (!get_id(cmd, "attempt_id", p.attempt_id, sizeof(p.attempt_id), &err))
		return err;
	snprintf(p.order_id, sizeof(p.order_id), "%s", order);
	snprintf(p.currency, sizeof(p.currency), "%s", currency);
	const cJSON *ch = cJSON_GetObjectItemCaseSensitive(cmd, "channel");
	snprintf(p.channel, sizeof(p.channel), "%s",
		 cJSON_IsString(ch) && ch->valuestring[0] && strlen(ch->valuestring) < sizeof(p.channel)
			 ? ch->valuestring : channel_default);
	snprintf(p.device_id, sizeof(p.device_id), "%s", device);
	p.amount = amount;
	p.expires_at = 0;
	kp_err e = hs_orphan(s, &p, &k);
	if (e == KP_ERR_CONFLICT)
		return err_reply("conflict", "attempt_id %s is taken", p.attempt_id);
	if (e != KP_OK)
		return err_reply("internal", "%s", kp_strerror(e));
	*out = p;
	return NULL;
}

static bool currency_ok(const char *c)
{
	return strlen(c) == 3 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z' && c[2] >= 'A' &&
	       c[2] <= 'Z';
}

static cJSON *cmd_orphan(hostsim *s, const cJSON *cmd)
{
	char order[KP_PROTO_ID_SIZE], dev[KP_PROTO_ID_SIZE];
	int64_t amount = 0;
	cJSON *err = NULL;
	if (!get_id(cmd, "order_id", order, sizeof(order), &err) || !get_id(cmd, "device_id", dev, sizeof(dev), &err) ||
	    !get_int(cmd, "amount", 1, INT64_C(1) << 50, 0, &amount, &err))
		return err;
	if (!order[0] || amount == 0)
		return err_reply("bad_request", "order_id and amount are required");
	const cJSON *cur = cJSON_GetObjectItemCaseSensitive(cmd, "currency");
	const char *currency = cJSON_IsString(cur) ? cur->valuestring : "EUR";
	if (!currency_ok(currency))
		return err_reply("bad_request", "currency must be 3 upper-case letters");
	if (!dev[0] && !orphan_device(s, order, dev, sizeof(dev)))
		return err_reply("bad_request", "device_id is required (no single connected device)");
	kp_ledger_payment p;
	if ((err = do_orphan(s, cmd, order, amount, currency, dev, "orphan", &p)) != NULL)
		return err;
	cJSON *r = ok_reply();
	if (r) {
		cJSON_AddStringToObject(r, "attempt_id", p.attempt_id);
		cJSON_AddStringToObject(r, "order_id", p.order_id);
		cJSON_AddStringToObject(r, "host_txn", p.host_txn);
		cJSON_AddStringToObject(r, "device_id", p.device_id);
		cJSON_AddStringToObject(r, "status", p.status);
	}
	return r;
}

/* Capture every pending attempt of the order; if that makes fewer than two
 * captures, add an orphan capture on another channel so the order ends with two
 * host_txn. */
static cJSON *cmd_pay_order_twice(hostsim *s, const cJSON *cmd)
{
	char order[KP_PROTO_ID_SIZE];
	cJSON *err = NULL;
	static kp_ledger_payment pend[8];
	int n = 0;
	if (!get_id(cmd, "order_id", order, sizeof(order), &err))
		return err;
	if (!order[0])
		return err_reply("bad_request", "order_id is required");
	if (kp_ledger_payments_pending(s->ledger, order, pend, 8, &n) != KP_OK)
		return err_reply("internal", "ledger read failed");
	if (n == 0)
		return err_reply("not_found", "order %s has no pending attempt", order);
	cJSON *r = ok_reply();
	cJSON *txns = r ? cJSON_AddArrayToObject(r, "host_txns") : NULL;
	cJSON *ids = r ? cJSON_AddArrayToObject(r, "attempt_ids") : NULL;
	if (!txns || !ids) {
		cJSON_Delete(r);
		return err_reply("internal", "out of memory");
	}
	int captured = 0;
	kp_ledger_payment first;
	memset(&first, 0, sizeof(first));
	for (int i = 0; i < n; i++) {
		kp_ledger_payment p;
		kp_ledger_confirm k;
		if (hs_settle(s, pend[i].attempt_id, true, &p, &k) != KP_OK)
			continue;
		if (captured++ == 0)
			first = p;
		cJSON_AddItemToArray(txns, cJSON_CreateString(p.host_txn));
		cJSON_AddItemToArray(ids, cJSON_CreateString(p.attempt_id));
	}
	if (captured == 1) {
		char other[17];
		snprintf(other, sizeof(other), "%s", strcmp(first.channel, "qr") == 0 ? "card" : "qr");
		kp_ledger_payment o;
		cJSON *e = do_orphan(s, cmd, order, first.amount, first.currency, first.device_id, other, &o);
		if (e) {
			cJSON_Delete(r);
			return e;
		}
		cJSON_AddItemToArray(txns, cJSON_CreateString(o.host_txn));
		cJSON_AddItemToArray(ids, cJSON_CreateString(o.attempt_id));
		cJSON_AddStringToObject(r, "orphan_attempt_id", o.attempt_id);
		captured++;
	}
	cJSON_AddNumberToObject(r, "captured", captured);
	return r;
}

static cJSON *cmd_list(hostsim *s, const cJSON *cmd)
{
	char order[KP_PROTO_ID_SIZE];
	cJSON *err = NULL;
	static kp_ledger_payment pend[256];
	int n = 0;
	if (!get_id(cmd, "order_id", order, sizeof(order), &err))
		return err;
	if (kp_ledger_payments_pending(s->ledger, order[0] ? order : NULL, pend, 256, &n) != KP_OK)
		return err_reply("internal", "ledger read failed");
	cJSON *r = ok_reply();
	cJSON *arr = r ? cJSON_AddArrayToObject(r, "pending") : NULL;
	cJSON *devs = r ? cJSON_AddArrayToObject(r, "devices") : NULL;
	bool ok = arr && devs;
	for (int i = 0; ok && i < n; i++)
		ok = add_payment(arr, &pend[i]);
	for (int i = 0; ok && i < HS_MAX_CONNS; i++)
		if (s->conns[i].state == HS_CONN_OPEN && s->conns[i].hello_done)
			ok = cJSON_AddItemToArray(devs, cJSON_CreateString(s->conns[i].device_id));
	if (!ok) {
		cJSON_Delete(r);
		return err_reply("internal", "out of memory");
	}
	return r;
}

static cJSON *cmd_fault(hostsim *s, const cJSON *cmd)
{
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(cmd, "fault");
	if (cJSON_IsString(f) && strcmp(f->valuestring, "malformed_frame") == 0) {
		const cJSON *k = cJSON_GetObjectItemCaseSensitive(cmd, "kind");
		const char *kind = cJSON_IsString(k) ? k->valuestring : "not_json";
		char dev[KP_PROTO_ID_SIZE];
		cJSON *err = NULL;
		if (!get_id(cmd, "device_id", dev, sizeof(dev), &err))
			return err;
		int sent = 0;
		for (int i = 0; i < HS_MAX_CONNS; i++) {
			hs_conn *c = &s->conns[i];
			if (c->state != HS_CONN_OPEN || !c->hello_done || (dev[0] && strcmp(dev, c->device_id) != 0))
				continue;
			kp_err e = hs_send_malformed(s, c, kind);
			if (e == KP_ERR_INVALID)
				return err_reply("bad_request", "unknown malformed_frame kind '%.32s'", kind);
			if (e == KP_OK)
				sent++;
		}
		cJSON *r = ok_reply();
		if (r)
			cJSON_AddNumberToObject(r, "sent", sent);
		return r;
	}
	char why[128] = "";
	if (kp_faults_arm(&s->faults, cmd, why, sizeof(why)) != KP_OK)
		return err_reply("bad_request", "%s", why);
	kp_log_info(&s->env, "control: fault %s armed", cJSON_IsString(f) ? f->valuestring : "?");
	cJSON *r = ok_reply();
	cJSON *st = kp_faults_json(&s->faults);
	if (r && st)
		cJSON_AddItemToObject(r, "faults", st);
	else
		cJSON_Delete(st);
	return r;
}

static cJSON *cmd_chaos(hostsim *s, const cJSON *cmd)
{
	int64_t seed = 0;
	cJSON *err = NULL;
	const cJSON *rate = cJSON_GetObjectItemCaseSensitive(cmd, "rate");
	if (!get_int(cmd, "seed", 0, INT64_C(1) << 53, 1, &seed, &err))
		return err;
	if (!cJSON_IsNumber(rate) || kp_faults_chaos(&s->faults, (uint64_t)seed, rate->valuedouble) != KP_OK)
		return err_reply("bad_request", "rate must be a number in 0..1");
	kp_log_info(&s->env, "control: chaos seed %" PRId64 " rate %.3f", seed, rate->valuedouble);
	return ok_reply();
}

static cJSON *cmd_dump(hostsim *s, const cJSON *cmd)
{
	cJSON *d = NULL;
	kp_err e = kp_ledger_dump(s->ledger, kp_now_wall(&s->env), &d);
	if (e != KP_OK)
		return err_reply("internal", "dump failed: %s", kp_strerror(e));
	return d;
}

static cJSON *cmd_status(hostsim *s, const cJSON *cmd)
{
	cJSON *r = ok_reply();
	if (!r)
		return NULL;
	cJSON_AddNumberToObject(r, "port", s->port);
	cJSON_AddNumberToObject(r, "control_port", s->ctl_port);
	cJSON_AddStringToObject(r, "tls", s->opt.tls11_only ? "1.1" : "1.2");
	cJSON *conns = cJSON_AddArrayToObject(r, "connections");
	for (int i = 0; conns && i < HS_MAX_CONNS; i++) {
		hs_conn *c = &s->conns[i];
		if (c->state == HS_CONN_FREE)
			continue;
		cJSON *o = cJSON_CreateObject();
		if (!o || !cJSON_AddItemToArray(conns, o)) {
			cJSON_Delete(o);
			break;
		}
		cJSON_AddNumberToObject(o, "serial", (double)c->serial);
		cJSON_AddStringToObject(o, "peer", c->peer);
		cJSON_AddStringToObject(o, "state", c->state == HS_CONN_HANDSHAKE ? "handshake"
						   : c->state == HS_CONN_OPEN ? "open" : "closing");
		cJSON_AddStringToObject(o, "device_id", c->device_id);
		cJSON_AddBoolToObject(o, "hello", c->hello_done);
	}
	cJSON *st = cJSON_AddObjectToObject(r, "stats");
	if (st) {
		const hs_stats *x = &s->stats;
		cJSON_AddNumberToObject(st, "accepted", (double)x->accepted);
		cJSON_AddNumberToObject(st, "refused_full", (double)x->refused_full);
		cJSON_AddNumberToObject(st, "handshakes_full", (double)x->handshakes_full);
		cJSON_AddNumberToObject(st, "handshakes_resumed", (double)x->handshakes_resumed);
		cJSON_AddNumberToObject(st, "handshake_failures", (double)x->handshake_failures);
		cJSON_AddNumberToObject(st, "requests", (double)x->requests);
		cJSON_AddNumberToObject(st, "protocol_errors", (double)x->protocol_errors);
		cJSON_AddNumberToObject(st, "confirms_sent", (double)x->confirms_sent);
		cJSON_AddNumberToObject(st, "acks", (double)x->acks);
		cJSON_AddNumberToObject(st, "unknown_acks", (double)x->unknown_acks);
	}
	cJSON *f = kp_faults_json(&s->faults);
	if (f)
		cJSON_AddItemToObject(r, "faults", f);
	return r;
}

static cJSON *cmd_kick(hostsim *s, const cJSON *cmd)
{
	char dev[KP_PROTO_ID_SIZE];
	cJSON *err = NULL;
	if (!get_id(cmd, "device_id", dev, sizeof(dev), &err))
		return err;
	int closed = 0;
	for (int i = 0; i < HS_MAX_CONNS; i++) {
		hs_conn *c = &s->conns[i];
		if (c->state == HS_CONN_FREE || (dev[0] && strcmp(dev, c->device_id) != 0))
			continue;
		hs_conn_close(s, c, "kicked by control");
		closed++;
	}
	cJSON *r = ok_reply();
	if (r)
		cJSON_AddNumberToObject(r, "closed", closed);
	return r;
}

static cJSON *cmd_redeliver(hostsim *s, const cJSON *cmd)
{
	char dev[KP_PROTO_ID_SIZE];
	cJSON *err = NULL;
	if (!get_id(cmd, "device_id", dev, sizeof(dev), &err))
		return err;
	int n = 0;
	for (int i = 0; i < HS_MAX_CONNS; i++) {
		hs_conn *c = &s->conns[i];
		if (c->state != HS_CONN_OPEN || !c->hello_done || (dev[0] && strcmp(dev, c->device_id) != 0))
			continue;
		char d[KP_PROTO_ID_SIZE];
		snprintf(d, sizeof(d), "%s", c->device_id);
		hs_confirms_deliver(s, d, 0);
		n++;
	}
	cJSON *r = ok_reply();
	if (r)
		cJSON_AddNumberToObject(r, "devices", n);
	return r;
}

static cJSON *cmd_pay(hostsim *s, const cJSON *cmd) { return cmd_settle(s, cmd, true); }
static cJSON *cmd_fail(hostsim *s, const cJSON *cmd) { return cmd_settle(s, cmd, false); }
static cJSON *cmd_ping(hostsim *s, const cJSON *cmd) { return ok_reply(); }

static const struct {
	const char *name;
	cJSON *(*fn)(hostsim *s, const cJSON *cmd);
} commands[] = {
	{"pay", cmd_pay},
	{"fail", cmd_fail},
	{"pay_order_twice", cmd_pay_order_twice},
	{"orphan", cmd_orphan},
	{"list", cmd_list},
	{"fault", cmd_fault},
	{"chaos", cmd_chaos},
	{"dump", cmd_dump},
	{"status", cmd_status},
	{"kick", cmd_kick},
	{"redeliver", cmd_redeliver},
	{"ping", cmd_ping},
};

void hs_control_exec(hostsim *s, const cJSON *cmd, cJSON **reply)
{
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(cmd, "cmd");
	*reply = NULL;
	if (!cJSON_IsObject(cmd) || !cJSON_IsString(name)) {
		*reply = err_reply("bad_request", "want a JSON object with \"cmd\"");
		return;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(name->valuestring, commands[i].name) == 0) {
			*reply = commands[i].fn(s, cmd);
			if (!*reply)
				*reply = err_reply("internal", "out of memory");
			return;
		}
	}
	*reply = err_reply("unknown_cmd", "unknown cmd '%.40s'", name->valuestring);
}

/* ---- control connections ----------------------------------------------------------- */

kp_err hs_control_setup(hostsim *s)
{
	for (int i = 0; i < HS_MAX_CTL; i++)
		s->ctls[i].fd = -1;
	s->ctl_fd = -1;
	/* The control port has no authentication: loopback only. */
	const char *colon = strrchr(s->opt.control, ':');
	size_t hl = colon ? (size_t)(colon - s->opt.control) : 0;
	bool loopback = (hl >= 4 && strncmp(s->opt.control, "127.", 4) == 0) ||
			(hl == 5 && strncmp(s->opt.control, "[::1]", 5) == 0) ||
			(hl == 3 && strncmp(s->opt.control, "::1", 3) == 0);
	if (!loopback) {
		fprintf(stderr, "kp-hostsim: --control %s: must be a loopback address (127.x.x.x or [::1])\n",
			s->opt.control);
		return KP_ERR_INVALID;
	}
	return hs_listen(s->opt.control, &s->ctl_fd, &s->ctl_port);
}

static void ctl_close(hs_ctl *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->out);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

void hs_control_free(hostsim *s)
{
	for (int i = 0; i < HS_MAX_CTL; i++)
		ctl_close(&s->ctls[i]);
	if (s->ctl_fd >= 0)
		close(s->ctl_fd);
	s->ctl_fd = -1;
}

void hs_control_poll_add(hostsim *s, hs_pollset *ps)
{
	if (s->ctl_fd >= 0) {
		ps->pfd[ps->n] = (struct pollfd){.fd = s->ctl_fd, .events = POLLIN};
		ps->kind[ps->n] = HS_SLOT_CTL_LISTEN;
		ps->index[ps->n] = -1;
		ps->n++;
	}
	for (int i = 0; i < HS_MAX_CTL; i++) {
		hs_ctl *c = &s->ctls[i];
		if (c->fd < 0)
			continue;
		short ev = (c->closing ? 0 : POLLIN) | (c->out_len > c->out_off ? POLLOUT : 0);
		ps->pfd[ps->n] = (struct pollfd){.fd = c->fd, .events = ev};
		ps->kind[ps->n] = HS_SLOT_CTL;
		ps->index[ps->n] = i;
		ps->n++;
	}
}

static void ctl_flush(hs_ctl *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n <= 0) {
			ctl_close(c);
			return;
		}
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	if (c->closing)
		ctl_close(c);
}

static void ctl_queue(hs_ctl *c, const char *text)
{
	size_t n = strlen(text);
	if (c->out_len - c->out_off + n + 1 > HS_CTL_OUT_CAP) {
		ctl_close(c);
		return;
	}
	if (c->out_off > 0) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_len + n + 1 > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + n + 1)
			cap *= 2;
		char *p = realloc(c->out, cap);
		if (!p) {
			ctl_close(c);
			return;
		}
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, text, n);
	c->out[c->out_len + n] = '\n';
	c->out_len += n + 1;
}

/* Run one line and queue its one-line answer. */
static void ctl_line(hostsim *s, hs_ctl *c, const char *line, size_t len)
{
	cJSON *reply = NULL;
	cJSON *cmd = cJSON_ParseWithLength(line, len);
	if (!cmd)
		reply = err_reply("bad_request", "not JSON");
	else
		hs_control_exec(s, cmd, &reply);
	char *text = reply ? cJSON_PrintUnformatted(reply) : NULL;
	ctl_queue(c, text ? text : "{\"ok\":false,\"error\":\"internal\",\"message\":\"out of memory\"}");
	cJSON_free(text);
	cJSON_Delete(reply);
	cJSON_Delete(cmd);
}

static void ctl_read(hostsim *s, hs_ctl *c)
{
	for (;;) {
		ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			break;
		if (n <= 0) {
			/* Peer done: answer what is queued, then close. */
			c->closing = true;
			break;
		}
		c->in_len += (size_t)n;
		size_t start = 0;
		for (size_t i = 0; i < c->in_len && c->fd >= 0; i++) {
			if (c->in[i] != '\n')
				continue;
			size_t l = i - start;
			if (l > 0 && c->in[start + l - 1] == '\r')
				l--;
			if (l > 0)
				ctl_line(s, c, c->in + start, l);
			start = i + 1;
		}
		if (c->fd < 0)
			return;
		memmove(c->in, c->in + start, c->in_len - start);
		c->in_len -= start;
		if (c->in_len == sizeof(c->in)) {
			ctl_queue(c, "{\"ok\":false,\"error\":\"too_big\",\"message\":\"line over 8192 bytes\"}");
			c->closing = true;
			break;
		}
	}
	if (c->fd >= 0)
		ctl_flush(c);
	if (c->fd >= 0 && c->closing && c->out_len == c->out_off)
		ctl_close(c);
}

void hs_control_process(hostsim *s, int index, short revents)
{
	if (index < 0) {
		for (;;) {
			int fd = accept4(s->ctl_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
			if (fd < 0)
				return;
			hs_ctl *c = NULL;
			for (int i = 0; i < HS_MAX_CTL && !c; i++)
				if (s->ctls[i].fd < 0)
					c = &s->ctls[i];
			if (!c) {
				static const char busy[] = "{\"ok\":false,\"error\":\"busy\",\"message\":\"too many control connections\"}\n";
				(void)send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL);
				close(fd);
				continue;
			}
			memset(c, 0, sizeof(*c));
			c->fd = fd;
		}
	}
	hs_ctl *c = &s->ctls[index];
	if (c->fd < 0)
		return;
	if (revents & POLLOUT)
		ctl_flush(c);
	if (c->fd >= 0 && (revents & (POLLIN | POLLHUP | POLLERR)))
		ctl_read(s, c);
}

/* ---- scripts -------------------------------------------------------------------- */

kp_err hs_script_load(hostsim *s, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[HS_CTL_LINE_MAX];
	kp_err err = KP_OK;
	if (!f) {
		fprintf(stderr, "kp-hostsim: cannot open script %s: %s\n", path, strerror(errno));
		return KP_ERR_IO;
	}
	s->script = calloc(HS_SCRIPT_MAX_LINES, sizeof(char *));
	if (!s->script) {
		err = KP_ERR_NOMEM;
		goto out;
	}
	unsigned lineno = 0;
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		size_t n = strlen(line);
		if (n == sizeof(line) - 1 && line[n - 1] != '\n') {
			fprintf(stderr, "kp-hostsim: %s:%u: line too long\n", path, lineno);
			err = KP_ERR_TOO_BIG;
			goto out;
		}
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
			line[--n] = '\0';
		const char *p = line;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0' || *p == '#')
			continue;
		cJSON *cmd = cJSON_Parse(p);
		bool ok = cmd && cJSON_IsObject(cmd) && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(cmd, "cmd"));
		cJSON_Delete(cmd);
		if (!ok) {
			fprintf(stderr, "kp-hostsim: %s:%u: not a JSON object with \"cmd\"\n", path, lineno);
			err = KP_ERR_INVALID;
			goto out;
		}
		if (s->script_n == HS_SCRIPT_MAX_LINES) {
			fprintf(stderr, "kp-hostsim: %s: over %d commands\n", path, HS_SCRIPT_MAX_LINES);
			err = KP_ERR_TOO_BIG;
			goto out;
		}
		s->script[s->script_n] = strdup(p);
		if (!s->script[s->script_n]) {
			err = KP_ERR_NOMEM;
			goto out;
		}
		s->script_n++;
	}
	s->script_t0 = kp_now_mono(&s->env);
out:
	fclose(f);
	if (err != KP_OK)
		hs_script_free(s);
	return err;
}

int64_t hs_script_tick(hostsim *s)
{
	while (s->script_pos < s->script_n) {
		cJSON *cmd = cJSON_Parse(s->script[s->script_pos]);
		const cJSON *at = cJSON_GetObjectItemCaseSensitive(cmd, "at_ms");
		int64_t due = s->script_t0 + (cJSON_IsNumber(at) && at->valuedouble > 0 ? (int64_t)at->valuedouble : 0);
		if (kp_now_mono(&s->env) < due) {
			cJSON_Delete(cmd);
			return due;
		}
		cJSON *reply = NULL;
		hs_control_exec(s, cmd, &reply);
		char *text = reply ? cJSON_PrintUnformatted(reply) : NULL;
		kp_log_info(&s->env, "script line %zu: %s -> %s", s->script_pos + 1, s->script[s->script_pos],
			    text ? text : "?");
		cJSON_free(text);
		cJSON_Delete(reply);
		cJSON_Delete(cmd);
		s->script_pos++;
	}
	return 0;
}

void hs_script_free(hostsim *s)
{
	for (size_t i = 0; s->script && i < s->script_n; i++)
		free(s->script[i]);
	free(s->script);
	s->script = NULL;
	s->script_n = s->script_pos = 0;
}
