/* mdb_sim.c — an in-process VMC behind the transport ops: a small model of a
 * vending machine controller (RESET, setup, polling, one vend per session)
 * with seeded faults. Each recv() is the VMC's next frame, each send() our
 * reply to it; a recv() with no send() since the last block is silence. */
#include "mdb_sim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_codec.h"

#define NON_RESPONSE_MS 5000 /* silence this long: the VMC resets the reader */
#define VEND_TIMEOUT_MS 90000 /* Z7 until READER CONFIG tells it: then VEND CANCEL */

enum vstate {
	VS_RESET,       /* send RESET */
	VS_JUST_RESET,  /* poll until JUST RESET */
	VS_SETUP,       /* SETUP config, wait for READER CONFIG */
	VS_PRICES,      /* SETUP max/min price */
	VS_ID,          /* EXPANSION REQUEST ID, wait for PERIPHERAL ID */
	VS_ENABLE,      /* READER ENABLE */
	VS_IDLE,        /* poll, wait for BEGIN SESSION */
	VS_SESSION,     /* session open: VEND REQUEST if selected, else poll */
	VS_VEND_WAIT,   /* poll for VEND APPROVED / DENIED */
	VS_VEND_CANCEL, /* no answer within Z7: VEND CANCEL */
	VS_DISPENSING,  /* approved, held: poll until told the outcome */
	VS_OUTCOME,     /* VEND SUCCESS / FAILURE */
	VS_COMPLETE,    /* SESSION COMPLETE */
	VS_END_WAIT,    /* poll for END SESSION */
};

struct kp_mdb_sim {
	const kp_env *env;
	uint64_t rng;
	kp_mdb_sim_faults faults;
	kp_mdb_sim_stats stats;
	enum vstate vs;
	uint8_t last[KP_MDB_BLOCK_MAX]; /* the block out (CHK included) */
	size_t last_n;
	bool waiting;      /* a block is out and no reply came yet */
	bool ack_due;      /* the device sent data: the next frame is our ACK */
	int64_t last_reply_ms;
	int64_t vend_since_ms;
	int64_t vend_timeout_ms;  /* Z7 */
	int64_t non_response_ms;
	bool have_sel, sel_ok;
	uint16_t sel_price, sel_item;
	kp_mdb_sim_dispense sel_dispense;
	bool sel_repeat, repeated;
	bool requested;    /* the selection's VEND REQUEST was ACKed */
	bool cancel_req;   /* send VEND CANCEL next */
	bool release_req;  /* a held selection: report the outcome next */
	kp_mdb_sim_trace_fn trace_fn;
	void *trace_arg;
};

static void trace(kp_mdb_sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void trace(kp_mdb_sim *s, const char *fmt, ...)
{
	if (!s->trace_fn)
		return;
	char line[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	s->trace_fn(s->trace_arg, line);
}

static int64_t sim_now(const kp_mdb_sim *s)
{
	return s->env->mono_ms(s->env->ctx);
}

static bool roll(kp_mdb_sim *s, unsigned permille)
{
	if (permille == 0)
		return false;
	/* xorshift64* */
	s->rng ^= s->rng >> 12;
	s->rng ^= s->rng << 25;
	s->rng ^= s->rng >> 27;
	return (s->rng * UINT64_C(2685821657736338717)) % 1000 < permille;
}

static void block(kp_mdb_sim *s, const uint8_t *data, size_t n)
{
	memcpy(s->last, data, n);
	s->last[n] = kp_mdb_checksum(data, n);
	s->last_n = n + 1;
}

/* The VMC's next block for its state. */
static void next_block(kp_mdb_sim *s)
{
	static const uint8_t poll[] = {0x12};
	switch (s->vs) {
	case VS_RESET: {
		static const uint8_t b[] = {0x10};
		block(s, b, sizeof(b));
		s->stats.resets++;
		trace(s, "RESET");
		return;
	}
	case VS_SETUP: {
		static const uint8_t b[] = {0x11, 0x00, 0x01, 0x00, 0x00, 0x00}; /* level 1, no display */
		block(s, b, sizeof(b));
		return;
	}
	case VS_PRICES: {
		static const uint8_t b[] = {0x11, 0x01, 0xFF, 0xFF, 0x00, 0x00}; /* prices unknown */
		block(s, b, sizeof(b));
		return;
	}
	case VS_ID: {
		static const uint8_t b[] = {0x17, 0x00, 'S', 'I', 'M', '0', '0', '0', '0', '0', '0', '0', '0', '0',
					    '0', '0', '7', 'K', 'P', '-', 'S', 'I', 'M', '-', 'V', 'M', 'C', ' ',
					    ' ', 0x01, 0x00};
		block(s, b, sizeof(b));
		return;
	}
	case VS_ENABLE: {
		static const uint8_t b[] = {0x14, 0x01};
		block(s, b, sizeof(b));
		return;
	}
	case VS_SESSION:
		if (s->have_sel) {
			uint8_t b[] = {0x13, 0x00, (uint8_t)(s->sel_price >> 8), (uint8_t)s->sel_price,
				       (uint8_t)(s->sel_item >> 8), (uint8_t)s->sel_item};
			block(s, b, sizeof(b));
			trace(s, "VEND REQUEST price %u item %u", (unsigned)s->sel_price, (unsigned)s->sel_item);
			return;
		}
		block(s, poll, sizeof(poll));
		return;
	case VS_VEND_WAIT: {
		bool z7 = sim_now(s) - s->vend_since_ms >= s->vend_timeout_ms;
		if (z7 || s->cancel_req) {
			s->vs = VS_VEND_CANCEL;
			s->cancel_req = false;
			s->stats.vend_cancels++;
			static const uint8_t b[] = {0x13, 0x01};
			block(s, b, sizeof(b));
			trace(s, "VEND CANCEL (%s)", z7 ? "no answer within Z7" : "customer");
			return;
		}
		block(s, poll, sizeof(poll));
		return;
	}
	case VS_DISPENSING:
		if (s->release_req) {
			s->release_req = false;
			s->vs = VS_OUTCOME;
			next_block(s);
			return;
		}
		block(s, poll, sizeof(poll));
		return;
	case VS_VEND_CANCEL: {
		static const uint8_t b[] = {0x13, 0x01};
		block(s, b, sizeof(b));
		return;
	}
	case VS_OUTCOME:
		if (s->sel_ok) {
			uint8_t b[] = {0x13, 0x02, (uint8_t)(s->sel_item >> 8), (uint8_t)s->sel_item};
			block(s, b, sizeof(b));
		} else {
			static const uint8_t b[] = {0x13, 0x03};
			block(s, b, sizeof(b));
		}
		trace(s, "%s item %u%s", s->sel_ok ? "VEND SUCCESS" : "VEND FAILURE", (unsigned)s->sel_item,
		      s->repeated ? " (again)" : "");
		return;
	case VS_COMPLETE: {
		static const uint8_t b[] = {0x13, 0x04};
		block(s, b, sizeof(b));
		trace(s, "SESSION COMPLETE");
		return;
	}
	case VS_JUST_RESET:
	case VS_IDLE:
	case VS_END_WAIT:
		block(s, poll, sizeof(poll));
		return;
	}
}

static void selection_done(kp_mdb_sim *s)
{
	s->have_sel = false;
	s->requested = false;
	s->repeated = false;
	s->cancel_req = s->release_req = false;
	s->stats.selections_done++;
}

/* The VMC starts over (silence, or 0B): a selection it already asked to vend
 * is dropped (the customer gets their credit back from the VMC). */
static void vmc_reset(kp_mdb_sim *s, const char *why)
{
	if (s->have_sel && s->requested) {
		s->stats.aborted++;
		selection_done(s);
		trace(s, "selection aborted by the reset");
	}
	trace(s, "resetting the reader: %s", why);
	s->vs = VS_RESET;
}

/* The device answered the block in s->last with a lone ACK (data == NULL) or
 * with data[0..n). */
static void on_reply(kp_mdb_sim *s, const uint8_t *data)
{
	uint8_t cmd = s->last[0];
	if (!data) {
		switch (s->vs) {
		case VS_RESET:
			s->vs = VS_JUST_RESET;
			break;
		case VS_PRICES:
			s->vs = VS_ID;
			break;
		case VS_ENABLE:
			s->vs = VS_IDLE;
			break;
		case VS_SESSION:
			if (cmd == 0x13) {
				s->stats.vend_requests++;
				s->requested = true;
				s->vend_since_ms = sim_now(s);
				s->vs = VS_VEND_WAIT;
			}
			break;
		case VS_VEND_CANCEL:
			if (cmd == 0x13) {
				s->vend_since_ms = sim_now(s);
				s->vs = VS_VEND_WAIT; /* now 06 must come */
			}
			break;
		case VS_OUTCOME:
			if (cmd != 0x13)
				break;
			if (s->sel_repeat && !s->repeated) {
				/* as if this ACK was lost: the same block once more */
				s->repeated = true;
				s->stats.outcomes_repeated++;
				break;
			}
			if (s->sel_ok) {
				s->stats.dispensed++;
				s->stats.dispensed_value += s->sel_price;
			} else {
				s->stats.dispense_failed++;
			}
			selection_done(s);
			s->vs = VS_COMPLETE;
			break;
		case VS_COMPLETE:
			s->vs = VS_END_WAIT;
			break;
		default:
			break;
		}
		return;
	}

	s->ack_due = true;
	switch (data[0]) {
	case 0x00: /* JUST RESET: the reader was reset, set it up again */
		trace(s, "JUST RESET");
		if (s->have_sel && s->requested) {
			s->stats.aborted++;
			selection_done(s);
			trace(s, "selection aborted by the reader's reset");
		}
		s->vs = VS_SETUP;
		break;
	case 0x01:
		if (s->vs == VS_SETUP) {
			s->stats.setups++;
			s->vend_timeout_ms = (int64_t)data[6] * 1000; /* Z7 */
			trace(s, "READER CONFIG level %u country %02X%02X decimals %u Z7 %u s", data[1], data[2],
			      data[3], data[5], data[6]);
			s->vs = VS_PRICES;
		}
		break;
	case 0x03:
		if (s->vs == VS_IDLE) {
			s->stats.sessions++;
			uint16_t funds = (uint16_t)(data[1] << 8 | data[2]);
			if (funds == 0xFFFF)
				trace(s, "BEGIN SESSION funds unknown");
			else
				trace(s, "BEGIN SESSION funds %u", (unsigned)funds);
			s->vs = VS_SESSION;
		}
		break;
	case 0x04:
		if (s->vs == VS_SESSION) {
			s->stats.session_cancels++;
			trace(s, "SESSION CANCEL REQUEST");
			s->vs = VS_COMPLETE;
		}
		break;
	case 0x05:
		if (s->vs == VS_VEND_WAIT || s->vs == VS_VEND_CANCEL) {
			s->stats.approved++;
			s->stats.last_approved = (unsigned)(data[1] << 8 | data[2]);
			trace(s, "VEND APPROVED %u", s->stats.last_approved);
			s->vs = s->sel_dispense == KP_MDB_SIM_DISPENSE_HOLD ? VS_DISPENSING : VS_OUTCOME;
		}
		break;
	case 0x06:
		if (s->vs == VS_VEND_WAIT || s->vs == VS_VEND_CANCEL) {
			s->stats.denied++;
			trace(s, "VEND DENIED");
			selection_done(s);
			s->vs = VS_COMPLETE;
		}
		break;
	case 0x07:
		if (s->vs == VS_END_WAIT) {
			s->stats.sessions_ended++;
			trace(s, "END SESSION");
			s->vs = VS_IDLE;
		}
		break;
	case 0x09:
		if (s->vs == VS_ID) {
			trace(s, "PERIPHERAL ID");
			s->vs = VS_ENABLE;
		}
		break;
	case 0x0B:
		s->stats.out_of_sequence++;
		trace(s, "CMD OUT OF SEQUENCE");
		vmc_reset(s, "out of sequence");
		break;
	default: /* 08 CANCELLED and others: ACK, nothing to do */
		break;
	}
}

static kp_err sim_recv(void *impl, uint16_t *words, size_t cap, size_t *n)
{
	kp_mdb_sim *s = impl;
	int64_t now = s->env->mono_ms(s->env->ctx);
	if (cap == 0)
		return KP_ERR_TOO_BIG;
	if (s->ack_due) {
		s->ack_due = false;
		if (!roll(s, s->faults.lost_ack_pm)) {
			words[0] = KP_MDB_ACK;
			*n = 1;
			return KP_OK;
		}
		/* the ACK was lost on the wire: the VMC goes on as if it arrived */
	}
	if (s->waiting) {
		s->stats.retries++;
		if (now - s->last_reply_ms >= s->non_response_ms) {
			vmc_reset(s, "no response");
			s->last_reply_ms = now;
			next_block(s);
		}
		/* else: the same block again */
	} else {
		next_block(s);
	}
	if (s->last_n > cap)
		return KP_ERR_TOO_BIG;
	s->waiting = true;
	for (size_t i = 0; i < s->last_n; i++)
		words[i] = s->last[i];
	words[0] |= KP_MDB_MODE;
	if (roll(s, s->faults.bad_chk_pm))
		words[s->last_n - 1] ^= 0x01;
	*n = s->last_n;
	return KP_OK;
}

static kp_err sim_send(void *impl, const uint16_t *words, size_t n)
{
	kp_mdb_sim *s = impl;
	if (!s->waiting || n == 0 || n > KP_MDB_BLOCK_MAX)
		return KP_ERR_PROTOCOL; /* a reply to nothing, or no reply at all */
	if (roll(s, s->faults.lost_reply_pm))
		return KP_OK; /* the VMC hears silence */
	uint8_t data[KP_MDB_BLOCK_MAX] = {0}; /* a short reply reads zeros, not garbage */
	for (size_t i = 0; i < n; i++) {
		bool last = i == n - 1;
		if (words[i] > 0x1FF || last != ((words[i] & KP_MDB_MODE) != 0))
			return KP_ERR_PROTOCOL; /* the mode bit belongs on our last word only */
		data[i] = (uint8_t)words[i];
	}
	if (n == 1 && data[0] != KP_MDB_ACK)
		return KP_ERR_PROTOCOL; /* a lone NAK, or garbage */
	if (n > 1 && kp_mdb_checksum(data, n - 1) != data[n - 1])
		return KP_ERR_PROTOCOL;
	s->waiting = false;
	s->last_reply_ms = s->env->mono_ms(s->env->ctx);
	on_reply(s, n == 1 ? NULL : data);
	return KP_OK;
}

static int sim_fd(void *impl)
{
	(void)impl;
	return -1;
}

static void sim_close(void *impl)
{
	(void)impl; /* the sim owns itself: kp_mdb_sim_free() */
}

static const kp_mdb_transport_ops sim_ops = {
	.name = "sim",
	.recv = sim_recv,
	.send = sim_send,
	.fd = sim_fd,
	.close = sim_close,
};

kp_err kp_mdb_sim_new(kp_mdb_sim **out, const kp_env *env, uint64_t seed)
{
	if (!out || !env)
		return KP_ERR_INVALID;
	kp_mdb_sim *s = calloc(1, sizeof(*s));
	if (!s)
		return KP_ERR_NOMEM;
	s->env = env;
	s->rng = seed ? seed : UINT64_C(0x9E3779B97F4A7C15);
	s->vs = VS_RESET;
	s->last_reply_ms = env->mono_ms(env->ctx);
	s->vend_timeout_ms = VEND_TIMEOUT_MS;
	s->non_response_ms = NON_RESPONSE_MS;
	*out = s;
	return KP_OK;
}

void kp_mdb_sim_free(kp_mdb_sim *sim)
{
	free(sim);
}

void kp_mdb_sim_transport(kp_mdb_sim *sim, kp_mdb_transport *t)
{
	t->ops = &sim_ops;
	t->impl = sim;
}

void kp_mdb_sim_set_faults(kp_mdb_sim *sim, const kp_mdb_sim_faults *faults)
{
	sim->faults = *faults;
}

kp_err kp_mdb_sim_select(kp_mdb_sim *sim, uint16_t price, uint16_t item, bool dispense_ok)
{
	kp_mdb_sim_selection sel = {.price = price, .item = item,
				    .dispense = dispense_ok ? KP_MDB_SIM_DISPENSE_OK : KP_MDB_SIM_DISPENSE_FAIL};
	return kp_mdb_sim_select_ex(sim, &sel);
}

kp_err kp_mdb_sim_select_ex(kp_mdb_sim *sim, const kp_mdb_sim_selection *sel)
{
	if (!sim || !sel || (unsigned)sel->dispense > KP_MDB_SIM_DISPENSE_HOLD)
		return KP_ERR_INVALID;
	if (sim->have_sel)
		return KP_ERR_BUSY;
	sim->have_sel = true;
	sim->requested = sim->repeated = sim->cancel_req = sim->release_req = false;
	sim->sel_price = sel->price;
	sim->sel_item = sel->item;
	sim->sel_dispense = sel->dispense;
	sim->sel_ok = sel->dispense != KP_MDB_SIM_DISPENSE_FAIL;
	sim->sel_repeat = sel->repeat_outcome;
	return KP_OK;
}

kp_err kp_mdb_sim_dispense_now(kp_mdb_sim *sim, bool ok)
{
	if (!sim)
		return KP_ERR_INVALID;
	if (sim->vs != VS_DISPENSING || sim->release_req)
		return KP_ERR_STATE;
	sim->sel_ok = ok;
	sim->release_req = true;
	return KP_OK;
}

kp_err kp_mdb_sim_cancel(kp_mdb_sim *sim)
{
	if (!sim)
		return KP_ERR_INVALID;
	if (sim->vs != VS_VEND_WAIT || sim->cancel_req)
		return KP_ERR_STATE;
	sim->cancel_req = true;
	return KP_OK;
}

const char *kp_mdb_sim_state_name(const kp_mdb_sim *sim)
{
	static const char *const names[] = {
		[VS_RESET] = "reset",         [VS_JUST_RESET] = "just_reset", [VS_SETUP] = "setup",
		[VS_PRICES] = "prices",       [VS_ID] = "id",                 [VS_ENABLE] = "enable",
		[VS_IDLE] = "idle",           [VS_SESSION] = "session",       [VS_VEND_WAIT] = "vend_wait",
		[VS_VEND_CANCEL] = "vend_cancel", [VS_DISPENSING] = "dispensing", [VS_OUTCOME] = "outcome",
		[VS_COMPLETE] = "complete",   [VS_END_WAIT] = "end_wait",
	};
	if ((unsigned)sim->vs >= sizeof(names) / sizeof(names[0]))
		return "?";
	return names[sim->vs];
}

void kp_mdb_sim_set_non_response(kp_mdb_sim *sim, int64_t ms)
{
	sim->non_response_ms = ms > 0 ? ms : NON_RESPONSE_MS;
}

void kp_mdb_sim_set_trace(kp_mdb_sim *sim, kp_mdb_sim_trace_fn fn, void *arg)
{
	sim->trace_fn = fn;
	sim->trace_arg = arg;
}

bool kp_mdb_sim_has_selection(const kp_mdb_sim *sim)
{
	return sim->have_sel;
}

void kp_mdb_sim_stats_get(const kp_mdb_sim *sim, kp_mdb_sim_stats *out)
{
	*out = sim->stats;
}

size_t kp_mdb_sim_pack(const uint16_t *words, size_t n, uint8_t *bytes, size_t cap)
{
	if (n > cap / 2)
		return 0;
	for (size_t i = 0; i < n; i++) {
		bytes[2 * i] = (words[i] & KP_MDB_MODE) ? 0x01 : 0x00;
		bytes[2 * i + 1] = (uint8_t)words[i];
	}
	return 2 * n;
}

kp_err kp_mdb_sim_unpack(const uint8_t *bytes, size_t len, uint16_t *words, size_t cap, size_t *n,
			 bool *bus_reset)
{
	if (!bytes || !words || !n || !bus_reset || len % 2 != 0)
		return KP_ERR_INVALID;
	size_t k = 0;
	*bus_reset = false;
	for (size_t i = 0; i < len; i += 2) {
		uint8_t flags = bytes[i];
		if (flags == 0x80) {
			*bus_reset = true;
			continue;
		}
		if (flags & ~0x01u)
			return KP_ERR_INVALID;
		if (k == cap)
			return KP_ERR_TOO_BIG;
		words[k++] = (uint16_t)((flags ? KP_MDB_MODE : 0) | bytes[i + 1]);
	}
	*n = k;
	return KP_OK;
}
