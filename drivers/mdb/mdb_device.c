/* mdb_device.c — the level-1 cashless state machine of ../shared/mdb.md §4.
 * One transition function, a switch on the state; around it the parts that do
 * not depend on the state: link bytes (ACK/RET/NAK), POLL and its queue of
 * responses kept until ACKed, repeated blocks, RESET. Pure: no I/O, no clock. */
#include "mdb_device.h"

#include <stdlib.h>
#include <string.h>

#define QCAP 6
#define NON_RESPONSE_MS 5000

enum awaiting {
	AW_NONE = 0,  /* no data block of ours waits for the VMC's ACK */
	AW_HEAD,      /* the queue head was sent at a POLL */
	AW_IMMEDIATE, /* a direct data reply (READER CONFIG, PERIPHERAL ID) */
};

/* Everything a step can change: copied whole for rollback. */
struct core {
	kp_mdb_state state;
	kp_mdb_resp q[QCAP]; /* POLL responses, head first, each kept until ACKed */
	size_t qn;
	bool head_sent;           /* q[0] went out at least once */
	enum awaiting awaiting;
	kp_mdb_frame last_data;   /* our last data block, for RET */

	bool have_last;           /* the previous block, for repeats after a lost ACK */
	uint8_t last_raw[KP_MDB_BLOCK_MAX];
	size_t last_raw_len;
	kp_mdb_frame last_reply;

	bool disable_after;       /* READER DISABLE came during a session */
	bool ending;              /* SESSION COMPLETE taken, END SESSION queued */
	bool cancel_requested;    /* SESSION CANCEL REQUEST queued in this idle period */
	int64_t idle_since_ms;    /* entered Session Idle */
	uint16_t vend_price, vend_item;
	bool vend_answered;       /* 05 or 06 queued for the open vend */
	bool vend_approved;       /* ... and it is 05 */
	bool vend_cancelled;      /* VEND CANCEL received */
	bool approval_delivered;  /* the VMC ACKed the 05 */

	bool rx_seen;
	int64_t last_rx_ms;
	kp_mdb_device_stats stats;
};

struct kp_mdb_device {
	kp_mdb_device_config cfg;
	struct core c;
	struct core saved; /* before the last step */
	bool can_rollback;
};

/* ---- response queue ---- */

static bool q_has(const struct core *c, kp_mdb_resp_kind k)
{
	for (size_t i = 0; i < c->qn; i++)
		if (c->q[i].kind == k)
			return true;
	return false;
}

/* Queue r unless one of its kind is queued already; false if full. */
static bool q_push(struct core *c, kp_mdb_resp_kind k, uint16_t value)
{
	if (q_has(c, k))
		return true;
	if (c->qn == QCAP)
		return false;
	c->q[c->qn++] = (kp_mdb_resp){.kind = k, .value = value};
	return true;
}

/* Drop a queued response of kind k; true if there was one. */
static bool q_drop(struct core *c, kp_mdb_resp_kind k)
{
	for (size_t i = 0; i < c->qn; i++) {
		if (c->q[i].kind != k)
			continue;
		if (i == 0) {
			c->head_sent = false;
			if (c->awaiting == AW_HEAD)
				c->awaiting = AW_NONE;
		}
		memmove(&c->q[i], &c->q[i + 1], (c->qn - i - 1) * sizeof(c->q[0]));
		c->qn--;
		return true;
	}
	return false;
}

static void clear_vend(struct core *c)
{
	c->vend_price = c->vend_item = 0;
	c->vend_answered = c->vend_approved = c->vend_cancelled = c->approval_delivered = false;
}

static void enter_session_idle(struct core *c, int64_t now)
{
	c->state = KP_MDB_SESSION_IDLE;
	c->idle_since_ms = now;
	c->cancel_requested = false;
	clear_vend(c);
}

/* The VMC has the queue head (ACK, or a command that shows it got it). */
static void head_delivered(struct core *c, int64_t now, kp_mdb_out *out)
{
	kp_mdb_resp r = c->q[0];
	memmove(&c->q[0], &c->q[1], (c->qn - 1) * sizeof(c->q[0]));
	c->qn--;
	c->head_sent = false;
	c->awaiting = AW_NONE;
	switch (r.kind) {
	case KP_MDB_R_BEGIN_SESSION:
		if (c->state == KP_MDB_ENABLED) {
			enter_session_idle(c, now);
			out->action = KP_MDB_ACT_SESSION_STARTED;
		}
		break;
	case KP_MDB_R_VEND_APPROVED:
		if (c->state == KP_MDB_VEND) {
			c->approval_delivered = true;
			out->action = KP_MDB_ACT_APPROVAL_DELIVERED;
		}
		break;
	case KP_MDB_R_VEND_DENIED:
		if (c->state == KP_MDB_VEND)
			enter_session_idle(c, now);
		break;
	case KP_MDB_R_END_SESSION:
		if (c->state == KP_MDB_SESSION_IDLE) {
			c->state = c->disable_after ? KP_MDB_DISABLED : KP_MDB_ENABLED;
			c->disable_after = c->ending = false;
			out->action = KP_MDB_ACT_SESSION_ENDED;
		}
		break;
	default:
		break;
	}
}

/* A sent but un-ACKed head whose receipt this command proves: the VMC sets
 * up after JUST RESET, vends after BEGIN SESSION, reports an outcome after
 * VEND APPROVED, and moves on after VEND DENIED. */
static bool implies_head(const struct core *c, kp_mdb_cmd_kind k)
{
	if (c->qn == 0 || !c->head_sent)
		return false;
	switch (c->q[0].kind) {
	case KP_MDB_R_JUST_RESET:
		return k == KP_MDB_CMD_SETUP_CONFIG;
	case KP_MDB_R_BEGIN_SESSION:
	case KP_MDB_R_VEND_DENIED:
		return k == KP_MDB_CMD_VEND_REQUEST || k == KP_MDB_CMD_SESSION_COMPLETE;
	case KP_MDB_R_VEND_APPROVED:
		return k == KP_MDB_CMD_VEND_SUCCESS || k == KP_MDB_CMD_VEND_FAILURE;
	default:
		return false;
	}
}

/* ---- replies ---- */

static void reply_ack(kp_mdb_out *out)
{
	kp_mdb_frame_ack(&out->reply);
}

/* A direct data reply that the VMC is to ACK. */
static void reply_data(const kp_mdb_device *dev, struct core *c, kp_mdb_resp_kind k, kp_mdb_out *out)
{
	kp_mdb_resp r = {.kind = k, .value = 0};
	if (kp_mdb_encode(&r, &dev->cfg.reader, &out->reply) != KP_OK) {
		out->reply.n = 0; /* cannot happen: the reader info was checked at new */
		return;
	}
	c->last_data = out->reply;
	c->awaiting = AW_IMMEDIATE;
}

static void out_of_sequence(struct core *c, kp_mdb_out *out)
{
	reply_ack(out);
	q_push(c, KP_MDB_R_OUT_OF_SEQUENCE, 0); /* a full queue already has plenty to say */
	c->stats.out_of_sequence++;
	out->action = KP_MDB_ACT_OUT_OF_SEQUENCE;
}

static void cash_sale(const kp_mdb_device *dev, kp_mdb_out *out)
{
	reply_ack(out);
	out->action = (dev->cfg.reader.options & KP_MDB_OPT_CASH_SALE) ? KP_MDB_ACT_CASH_SALE : KP_MDB_ACT_IGNORED;
}

static void reset_core(struct core *c)
{
	kp_mdb_device_stats stats = c->stats;
	bool rx_seen = c->rx_seen;
	int64_t last_rx = c->last_rx_ms;
	memset(c, 0, sizeof(*c));
	c->state = KP_MDB_INACTIVE;
	c->q[0] = (kp_mdb_resp){.kind = KP_MDB_R_JUST_RESET, .value = 0};
	c->qn = 1;
	c->stats = stats;
	c->rx_seen = rx_seen;
	c->last_rx_ms = last_rx;
}

/* POLL: the queue head (again, until ACKed), our session timeout, or ACK. */
static void on_poll(kp_mdb_device *dev, struct core *c, int64_t now, kp_mdb_out *out)
{
	c->have_last = false;
	if (c->awaiting == AW_IMMEDIATE)
		c->awaiting = AW_NONE; /* the VMC moved on without ACKing it */
	if (c->state == KP_MDB_SESSION_IDLE && !c->ending && !c->cancel_requested &&
	    dev->cfg.session_timeout_ms > 0 && now - c->idle_since_ms >= dev->cfg.session_timeout_ms &&
	    q_push(c, KP_MDB_R_SESSION_CANCEL, 0)) {
		c->cancel_requested = true;
		out->action = KP_MDB_ACT_SESSION_TIMEOUT;
	}
	if (c->qn == 0) {
		reply_ack(out);
		return;
	}
	if (kp_mdb_encode(&c->q[0], &dev->cfg.reader, &out->reply) != KP_OK) {
		out->reply.n = 0;
		return;
	}
	c->head_sent = true;
	c->awaiting = AW_HEAD;
	c->last_data = out->reply;
}

/* ACK, RET or NAK from the VMC after one of our data blocks. */
static void on_link_byte(struct core *c, kp_mdb_cmd_kind k, int64_t now, kp_mdb_out *out)
{
	switch (k) {
	case KP_MDB_CMD_VMC_ACK:
		c->have_last = false;
		if (c->awaiting == AW_HEAD && c->qn > 0)
			head_delivered(c, now, out);
		c->awaiting = AW_NONE;
		break;
	case KP_MDB_CMD_VMC_RET:
		if (c->awaiting != AW_NONE) {
			out->reply = c->last_data;
			c->stats.rets++;
		}
		break;
	default: /* NAK: the head stays queued and goes out again at the next POLL */
		if (c->awaiting == AW_IMMEDIATE)
			c->awaiting = AW_NONE;
		break;
	}
}

/* The state machine proper: one command that is not POLL, RESET, a link byte,
 * a repeat or a level 2/3 command, in the current state. */
static void transition(kp_mdb_device *dev, struct core *c, const kp_mdb_cmd *cmd, int64_t now, kp_mdb_out *out)
{
	kp_mdb_cmd_kind k = cmd->kind;

	/* Accepted in every state (mdb.md §4: 11 01 after Inactive too, 14 00 any time). */
	if (k == KP_MDB_CMD_SETUP_PRICES) {
		reply_ack(out);
		out->action = KP_MDB_ACT_PRICES;
		return;
	}

	switch (c->state) {
	case KP_MDB_INACTIVE:
		switch (k) {
		case KP_MDB_CMD_SETUP_CONFIG:
			reply_data(dev, c, KP_MDB_R_READER_CONFIG, out);
			c->state = KP_MDB_DISABLED;
			out->action = KP_MDB_ACT_SETUP;
			return;
		case KP_MDB_CMD_EXPANSION_ID:
			reply_data(dev, c, KP_MDB_R_PERIPHERAL_ID, out);
			out->action = KP_MDB_ACT_VMC_ID;
			return;
		case KP_MDB_CMD_READER_DISABLE:
			reply_ack(out);
			return;
		default:
			out_of_sequence(c, out);
			return;
		}

	case KP_MDB_DISABLED:
	case KP_MDB_ENABLED:
		switch (k) {
		case KP_MDB_CMD_SETUP_CONFIG:
			reply_data(dev, c, KP_MDB_R_READER_CONFIG, out);
			out->action = KP_MDB_ACT_SETUP;
			return;
		case KP_MDB_CMD_EXPANSION_ID:
			reply_data(dev, c, KP_MDB_R_PERIPHERAL_ID, out);
			out->action = KP_MDB_ACT_VMC_ID;
			return;
		case KP_MDB_CMD_READER_ENABLE:
			reply_ack(out);
			if (c->state == KP_MDB_DISABLED) {
				c->state = KP_MDB_ENABLED;
				out->action = KP_MDB_ACT_READER_ENABLE;
			}
			return;
		case KP_MDB_CMD_READER_DISABLE:
			reply_ack(out);
			if (c->state == KP_MDB_ENABLED) {
				out->session_dropped = q_drop(c, KP_MDB_R_BEGIN_SESSION);
				c->state = KP_MDB_DISABLED;
				out->action = KP_MDB_ACT_READER_DISABLE;
			}
			return;
		case KP_MDB_CMD_READER_CANCEL:
			reply_ack(out);
			out->session_dropped = q_drop(c, KP_MDB_R_BEGIN_SESSION);
			q_push(c, KP_MDB_R_CANCELLED, 0);
			out->action = KP_MDB_ACT_READER_CANCEL;
			return;
		case KP_MDB_CMD_CASH_SALE:
			cash_sale(dev, out);
			return;
		default: /* VEND and SESSION COMPLETE: level 1 has no Always Idle */
			out_of_sequence(c, out);
			return;
		}

	case KP_MDB_SESSION_IDLE:
		switch (k) {
		case KP_MDB_CMD_VEND_REQUEST:
			if (c->ending) {
				out_of_sequence(c, out);
				return;
			}
			reply_ack(out);
			q_drop(c, KP_MDB_R_SESSION_CANCEL); /* the VMC vends anyway: 04 is for Session Idle */
			c->state = KP_MDB_VEND;
			clear_vend(c);
			c->vend_price = cmd->price;
			c->vend_item = cmd->item;
			if (cmd->price == 0 || cmd->price > dev->cfg.max_price) {
				q_push(c, KP_MDB_R_VEND_DENIED, 0);
				c->vend_answered = true;
				out->action = KP_MDB_ACT_VEND_REFUSED;
			} else {
				out->action = KP_MDB_ACT_VEND_REQUEST;
			}
			return;
		case KP_MDB_CMD_SESSION_COMPLETE:
			reply_ack(out);
			if (c->ending)
				return; /* END SESSION is queued already */
			q_drop(c, KP_MDB_R_SESSION_CANCEL);
			q_push(c, KP_MDB_R_END_SESSION, 0);
			c->ending = true;
			out->action = KP_MDB_ACT_SESSION_COMPLETE;
			return;
		case KP_MDB_CMD_READER_DISABLE:
			reply_ack(out);
			c->disable_after = true;
			out->action = KP_MDB_ACT_READER_DISABLE;
			return;
		case KP_MDB_CMD_READER_ENABLE:
			reply_ack(out);
			c->disable_after = false;
			return;
		case KP_MDB_CMD_CASH_SALE:
			cash_sale(dev, out);
			return;
		default:
			out_of_sequence(c, out);
			return;
		}

	case KP_MDB_VEND:
		switch (k) {
		case KP_MDB_CMD_VEND_REQUEST:
			/* the same request again (its ACK was lost): same order, ACK again */
			if (!c->approval_delivered && cmd->price == c->vend_price && cmd->item == c->vend_item)
				reply_ack(out);
			else
				out_of_sequence(c, out);
			return;
		case KP_MDB_CMD_VEND_CANCEL:
			if (c->approval_delivered) {
				out_of_sequence(c, out);
				return;
			}
			reply_ack(out);
			if (c->vend_cancelled || (c->vend_answered && !c->vend_approved))
				return; /* cancelled already, or 06 on its way */
			c->vend_cancelled = true;
			out->action = KP_MDB_ACT_VEND_CANCEL;
			if (c->vend_approved) {
				/* the VMC cancels before it saw 05: deny; the engine refunds */
				q_drop(c, KP_MDB_R_VEND_APPROVED);
				q_push(c, KP_MDB_R_VEND_DENIED, 0);
				c->vend_approved = false;
				out->approved = true;
			}
			return;
		case KP_MDB_CMD_VEND_SUCCESS:
		case KP_MDB_CMD_VEND_FAILURE:
			if (!c->approval_delivered) {
				out_of_sequence(c, out);
				return;
			}
			reply_ack(out);
			enter_session_idle(c, now);
			out->action = k == KP_MDB_CMD_VEND_SUCCESS ? KP_MDB_ACT_VEND_SUCCESS : KP_MDB_ACT_VEND_FAILURE;
			return;
		case KP_MDB_CMD_READER_DISABLE:
			reply_ack(out);
			c->disable_after = true;
			out->action = KP_MDB_ACT_READER_DISABLE;
			return;
		default:
			out_of_sequence(c, out);
			return;
		}
	}
	out_of_sequence(c, out); /* not reached: every state returns above */
}

static bool valid_kind(kp_mdb_cmd_kind k)
{
	return k > KP_MDB_CMD_NONE && k <= KP_MDB_CMD_VMC_NAK;
}

kp_err kp_mdb_device_step(kp_mdb_device *dev, const kp_mdb_cmd *cmd, int64_t now_ms, kp_mdb_out *out)
{
	if (!dev || !cmd || !out || !valid_kind(cmd->kind) || cmd->raw_len == 0 ||
	    cmd->raw_len > KP_MDB_BLOCK_MAX)
		return KP_ERR_INVALID;
	struct core *c = &dev->c;
	dev->saved = *c;
	dev->can_rollback = true;
	memset(out, 0, sizeof(*out));
	out->cmd = *cmd;
	out->prev_state = c->state;
	out->dec = KP_MDB_DEC_OK;
	c->rx_seen = true;
	c->last_rx_ms = now_ms;
	c->stats.frames++;

	switch (cmd->kind) {
	case KP_MDB_CMD_VMC_ACK:
	case KP_MDB_CMD_VMC_RET:
	case KP_MDB_CMD_VMC_NAK:
		on_link_byte(c, cmd->kind, now_ms, out);
		return KP_OK;
	case KP_MDB_CMD_POLL:
		on_poll(dev, c, now_ms, out);
		return KP_OK;
	default:
		break;
	}

	if (c->have_last && c->last_raw_len == cmd->raw_len && memcmp(c->last_raw, cmd->raw, cmd->raw_len) == 0) {
		out->reply = c->last_reply;
		out->retransmission = true;
		c->stats.retransmissions++;
		if (c->awaiting == AW_NONE && out->reply.n > 1)
			c->awaiting = AW_IMMEDIATE; /* our data reply goes out again */
		return KP_OK;
	}
	if (c->awaiting == AW_IMMEDIATE)
		c->awaiting = AW_NONE;

	if (cmd->kind == KP_MDB_CMD_RESET) {
		out->approved = c->state == KP_MDB_VEND && c->vend_approved;
		out->approval_delivered = c->state == KP_MDB_VEND && c->approval_delivered;
		reset_core(c);
		reply_ack(out);
		out->action = KP_MDB_ACT_RESET;
	} else if (cmd->kind == KP_MDB_CMD_UNSUPPORTED) {
		reply_ack(out);
		out->action = KP_MDB_ACT_IGNORED;
	} else {
		if (implies_head(c, cmd->kind))
			head_delivered(c, now_ms, out);
		out->action = KP_MDB_ACT_NONE;
		transition(dev, c, cmd, now_ms, out);
	}

	c->have_last = true;
	memcpy(c->last_raw, cmd->raw, cmd->raw_len);
	c->last_raw_len = cmd->raw_len;
	c->last_reply = out->reply;
	return KP_OK;
}

kp_err kp_mdb_device_receive(kp_mdb_device *dev, const uint16_t *words, size_t n, int64_t now_ms, kp_mdb_out *out)
{
	if (!dev || !out || (!words && n > 0))
		return KP_ERR_INVALID;
	kp_mdb_cmd cmd;
	kp_mdb_dec dec = kp_mdb_decode(words, n, &cmd);
	if (dec == KP_MDB_DEC_OK)
		return kp_mdb_device_step(dev, &cmd, now_ms, out);
	memset(out, 0, sizeof(*out));
	out->dec = dec;
	out->prev_state = dev->c.state;
	dev->can_rollback = false;
	if (dec != KP_MDB_DEC_OTHER_ADDR)
		dev->c.stats.bad_frames++;
	return KP_OK;
}

kp_err kp_mdb_device_rollback(kp_mdb_device *dev)
{
	if (!dev || !dev->can_rollback)
		return KP_ERR_STATE;
	dev->c = dev->saved;
	dev->can_rollback = false;
	return KP_OK;
}

kp_err kp_mdb_device_begin_session(kp_mdb_device *dev, uint16_t funds)
{
	if (!dev)
		return KP_ERR_INVALID;
	struct core *c = &dev->c;
	dev->can_rollback = false;
	if (c->state != KP_MDB_ENABLED || q_has(c, KP_MDB_R_BEGIN_SESSION))
		return KP_ERR_STATE;
	return q_push(c, KP_MDB_R_BEGIN_SESSION, funds) ? KP_OK : KP_ERR_BUSY;
}

kp_err kp_mdb_device_approve(kp_mdb_device *dev, uint16_t amount)
{
	if (!dev)
		return KP_ERR_INVALID;
	struct core *c = &dev->c;
	dev->can_rollback = false;
	if (c->state != KP_MDB_VEND || c->vend_answered || c->vend_cancelled)
		return KP_ERR_STATE;
	if (amount > c->vend_price)
		return KP_ERR_INVALID;
	if (!q_push(c, KP_MDB_R_VEND_APPROVED, amount))
		return KP_ERR_BUSY;
	c->vend_answered = c->vend_approved = true;
	return KP_OK;
}

kp_err kp_mdb_device_deny(kp_mdb_device *dev)
{
	if (!dev)
		return KP_ERR_INVALID;
	struct core *c = &dev->c;
	dev->can_rollback = false;
	if (c->state != KP_MDB_VEND || c->vend_answered)
		return KP_ERR_STATE;
	if (!q_push(c, KP_MDB_R_VEND_DENIED, 0))
		return KP_ERR_BUSY;
	c->vend_answered = true;
	return KP_OK;
}

kp_err kp_mdb_device_cancel_session(kp_mdb_device *dev)
{
	if (!dev)
		return KP_ERR_INVALID;
	struct core *c = &dev->c;
	dev->can_rollback = false;
	if (c->state != KP_MDB_SESSION_IDLE || c->ending)
		return KP_ERR_STATE;
	if (!q_push(c, KP_MDB_R_SESSION_CANCEL, 0))
		return KP_ERR_BUSY;
	c->cancel_requested = true;
	return KP_OK;
}

void kp_mdb_device_config_default(kp_mdb_device_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	kp_mdb_reader_info_default(&cfg->reader);
	cfg->max_price = 10000;
	cfg->session_timeout_ms = 60000;
}

kp_err kp_mdb_device_new(kp_mdb_device **out, const kp_mdb_device_config *cfg)
{
	if (!out || !cfg)
		return KP_ERR_INVALID;
	*out = NULL;
	kp_mdb_frame f;
	kp_mdb_resp probe[] = {{KP_MDB_R_READER_CONFIG, 0}, {KP_MDB_R_PERIPHERAL_ID, 0}};
	for (size_t i = 0; i < sizeof(probe) / sizeof(probe[0]); i++)
		if (kp_mdb_encode(&probe[i], &cfg->reader, &f) != KP_OK)
			return KP_ERR_INVALID;
	if (cfg->session_timeout_ms < 0)
		return KP_ERR_INVALID;
	kp_mdb_device *dev = calloc(1, sizeof(*dev));
	if (!dev)
		return KP_ERR_NOMEM;
	dev->cfg = *cfg;
	reset_core(&dev->c);
	*out = dev;
	return KP_OK;
}

void kp_mdb_device_free(kp_mdb_device *dev)
{
	free(dev);
}

kp_mdb_state kp_mdb_device_state(const kp_mdb_device *dev)
{
	return dev->c.state;
}

const char *kp_mdb_state_name(kp_mdb_state s)
{
	static const char *const names[] = {
		[KP_MDB_INACTIVE] = "inactive", [KP_MDB_DISABLED] = "disabled", [KP_MDB_ENABLED] = "enabled",
		[KP_MDB_SESSION_IDLE] = "session_idle", [KP_MDB_VEND] = "vend",
	};
	if ((unsigned)s >= sizeof(names) / sizeof(names[0]))
		return "?";
	return names[s];
}

const char *kp_mdb_action_name(kp_mdb_action a)
{
	static const char *const names[] = {
		[KP_MDB_ACT_NONE] = "none",
		[KP_MDB_ACT_RESET] = "reset",
		[KP_MDB_ACT_SETUP] = "setup",
		[KP_MDB_ACT_PRICES] = "prices",
		[KP_MDB_ACT_VMC_ID] = "vmc_id",
		[KP_MDB_ACT_READER_ENABLE] = "reader_enable",
		[KP_MDB_ACT_READER_DISABLE] = "reader_disable",
		[KP_MDB_ACT_READER_CANCEL] = "reader_cancel",
		[KP_MDB_ACT_SESSION_STARTED] = "session_started",
		[KP_MDB_ACT_SESSION_TIMEOUT] = "session_timeout",
		[KP_MDB_ACT_VEND_REQUEST] = "vend_request",
		[KP_MDB_ACT_VEND_REFUSED] = "vend_refused",
		[KP_MDB_ACT_VEND_CANCEL] = "vend_cancel",
		[KP_MDB_ACT_APPROVAL_DELIVERED] = "approval_delivered",
		[KP_MDB_ACT_VEND_SUCCESS] = "vend_success",
		[KP_MDB_ACT_VEND_FAILURE] = "vend_failure",
		[KP_MDB_ACT_SESSION_COMPLETE] = "session_complete",
		[KP_MDB_ACT_SESSION_ENDED] = "session_ended",
		[KP_MDB_ACT_CASH_SALE] = "cash_sale",
		[KP_MDB_ACT_OUT_OF_SEQUENCE] = "out_of_sequence",
		[KP_MDB_ACT_IGNORED] = "ignored",
	};
	if ((unsigned)a >= sizeof(names) / sizeof(names[0]))
		return "?";
	return names[a];
}

bool kp_mdb_device_link_up(const kp_mdb_device *dev, int64_t now_ms)
{
	return dev->c.rx_seen && now_ms - dev->c.last_rx_ms < NON_RESPONSE_MS;
}

void kp_mdb_device_stats_get(const kp_mdb_device *dev, kp_mdb_device_stats *out)
{
	*out = dev->c.stats;
}
