/* mdb_device.h — the MDB level-1 cashless device (../shared/mdb.md §4) as a pure
 * state machine: a decoded VMC command and "now" go in; the reply to put on
 * the bus and an action for the payment engine come out. No journal, no I/O,
 * no clock of its own, so tests drive it frame by frame.
 *
 * The contract with the caller (mdb.md §5, "no answer before its commit"):
 * for every step, first carry out out.action (commit it to the journal), then
 * send out.reply. If the commit fails, call kp_mdb_device_rollback() and send
 * nothing: the VMC repeats the block and the device takes it as new.
 * Approval, denial and the start of a session come from the engine through
 * kp_mdb_device_approve/deny/begin_session, after their commit; the device
 * queues the response and hands it to the VMC at its next POLL, repeating it
 * until the VMC ACKs it.
 *
 * A lost ACK from the VMC is covered two ways: a block identical to the
 * previous one gets the same reply and no action (retransmission); and a
 * command that proves the VMC got a queued response counts as its ACK:
 * SETUP config after JUST RESET, VEND REQUEST or SESSION COMPLETE after BEGIN
 * SESSION or VEND DENIED, VEND SUCCESS/FAILURE after VEND APPROVED. Then SESSION_STARTED or
 * APPROVAL_DELIVERED is not reported separately: the action of the command
 * implies it. */
#ifndef KP_MDB_DEVICE_H
#define KP_MDB_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "kp_error.h"
#include "mdb_codec.h"

typedef struct kp_mdb_device kp_mdb_device;

typedef enum kp_mdb_state {
	KP_MDB_INACTIVE = 0, /* power-up or RESET: JUST RESET until ACKed, waits for SETUP */
	KP_MDB_DISABLED,     /* set up, READER DISABLE */
	KP_MDB_ENABLED,      /* READER ENABLE: may begin a session */
	KP_MDB_SESSION_IDLE, /* BEGIN SESSION delivered: waits for a VEND REQUEST */
	KP_MDB_VEND,         /* VEND REQUEST taken: waits for our 05/06, then the outcome */
} kp_mdb_state;

/* What the engine has to do for one step. */
typedef enum kp_mdb_action {
	KP_MDB_ACT_NONE = 0,
	KP_MDB_ACT_RESET,            /* the VMC reset us; what was open: prev_state, approved,
					approval_delivered (mdb.md §5 table) */
	KP_MDB_ACT_SETUP,            /* SETUP config: cmd.vmc_level, display_* */
	KP_MDB_ACT_PRICES,           /* SETUP max/min price: cmd.max_price, min_price */
	KP_MDB_ACT_VMC_ID,           /* EXPANSION REQUEST ID: cmd.vmc_maker, ... */
	KP_MDB_ACT_READER_ENABLE,    /* reader enabled: a session may begin */
	KP_MDB_ACT_READER_DISABLE,   /* disabled now, or when the open session ends;
					session_dropped: a BEGIN SESSION not yet ACKed was dropped */
	KP_MDB_ACT_READER_CANCEL,    /* READER CANCEL; session_dropped as above */
	KP_MDB_ACT_SESSION_STARTED,  /* the VMC ACKed BEGIN SESSION: Session Idle */
	KP_MDB_ACT_SESSION_TIMEOUT,  /* our session timeout: SESSION CANCEL REQUEST goes out */
	KP_MDB_ACT_VEND_REQUEST,     /* make the order (cmd.price, cmd.item), commit, then ACK;
					later kp_mdb_device_approve() or _deny() */
	KP_MDB_ACT_VEND_REFUSED,     /* price 0 or above max_price: the device denies by itself */
	KP_MDB_ACT_VEND_CANCEL,      /* cancel the attempt, commit, then kp_mdb_device_deny();
					approved: a 05 not yet delivered was replaced by 06 here,
					so the committed success must be refunded (no deny call) */
	KP_MDB_ACT_APPROVAL_DELIVERED, /* the VMC ACKed 05: journal it; from now a reset counts
					  as a vend (mdb.md §4) */
	KP_MDB_ACT_VEND_SUCCESS,     /* cmd.item vended: fulfilled */
	KP_MDB_ACT_VEND_FAILURE,     /* not vended: fulfill_failed + refund, commit, then ACK */
	KP_MDB_ACT_SESSION_COMPLETE, /* close the session, commit, then ACK (07 follows on POLL) */
	KP_MDB_ACT_SESSION_ENDED,    /* the VMC ACKed END SESSION: Enabled (or Disabled) again */
	KP_MDB_ACT_CASH_SALE,        /* cmd.price, cmd.item paid in cash (reader option b3) */
	KP_MDB_ACT_OUT_OF_SEQUENCE,  /* command not allowed now: ACKed, ignored, 0B follows */
	KP_MDB_ACT_IGNORED,          /* a valid command kioskpay does not implement (level 2/3,
					or CASH SALE without option b3): log it */
} kp_mdb_action;

typedef struct kp_mdb_out {
	kp_mdb_frame reply;        /* to send after the action is done; n == 0: silence */
	kp_mdb_action action;
	kp_mdb_dec dec;            /* how the frame decoded (kp_mdb_device_receive) */
	kp_mdb_cmd cmd;            /* the command behind the action */
	kp_mdb_state prev_state;   /* the state before this step */
	bool approved;             /* RESET, VEND_CANCEL: a 05 was queued for the open vend */
	bool approval_delivered;   /* RESET: the VMC had ACKed that 05 */
	bool session_dropped;      /* READER_DISABLE/CANCEL: a queued BEGIN SESSION was dropped */
	bool retransmission;       /* the block repeated the previous one: same reply, no action */
} kp_mdb_out;

typedef struct kp_mdb_device_config {
	kp_mdb_reader_info reader;
	uint32_t max_price;         /* VEND REQUEST prices 1..max_price go to the engine */
	int64_t session_timeout_ms; /* Session Idle this long without a vend: send 04; 0 = never */
} kp_mdb_device_config;

typedef struct kp_mdb_device_stats {
	uint64_t frames;          /* frames for us, decoded */
	uint64_t bad_frames;      /* frames for us that were broken (silence) */
	uint64_t retransmissions; /* repeated blocks answered again without action */
	uint64_t rets;            /* RET from the VMC: last block sent again */
	uint64_t out_of_sequence;
} kp_mdb_device_stats;

/* mdb.md §6's reader, max_price 10000, session timeout 60 s. */
void kp_mdb_device_config_default(kp_mdb_device_config *cfg);

/* A device in Inactive with JUST RESET queued (power-up). cfg is copied.
 * KP_ERR_INVALID if cfg->reader does not encode, KP_ERR_NOMEM. */
kp_err kp_mdb_device_new(kp_mdb_device **out, const kp_mdb_device_config *cfg) KP_MUST_USE;
/* Safe on NULL. */
void kp_mdb_device_free(kp_mdb_device *dev);

/* One frame from the VMC as kp_mdb_decode() filled it (KP_MDB_DEC_OK), at
 * now_ms (monotonic). Fills *out. KP_ERR_INVALID for NULL, a kind out of
 * range or no raw bytes. */
kp_err kp_mdb_device_step(kp_mdb_device *dev, const kp_mdb_cmd *cmd, int64_t now_ms, kp_mdb_out *out) KP_MUST_USE;

/* Decode words and step. A broken frame (bad CHK, truncated, unknown command,
 * stray byte) gets silence, action NONE and no state change; a block for
 * another address is ignored the same way. out->dec says which. */
kp_err kp_mdb_device_receive(kp_mdb_device *dev, const uint16_t *words, size_t n, int64_t now_ms,
			     kp_mdb_out *out) KP_MUST_USE;

/* Undo the last step, because its action could not be committed (send no
 * reply). KP_ERR_STATE if there is nothing to undo: only the latest step can
 * be undone, and not after any other call on the device. */
kp_err kp_mdb_device_rollback(kp_mdb_device *dev) KP_MUST_USE;

/* Funds are available (the session is committed): queue BEGIN SESSION
 * (funds, KP_MDB_FUNDS_UNKNOWN if not known). KP_ERR_STATE unless Enabled
 * with no session queued; KP_ERR_BUSY if the response queue is full. */
kp_err kp_mdb_device_begin_session(kp_mdb_device *dev, uint16_t funds) KP_MUST_USE;

/* The payment of the open vend succeeded and is committed: queue VEND
 * APPROVED(amount). KP_ERR_STATE unless in Vend with no answer queued and
 * no VEND CANCEL received (then refund and deny); KP_ERR_INVALID if amount
 * exceeds the requested price. */
kp_err kp_mdb_device_approve(kp_mdb_device *dev, uint16_t amount) KP_MUST_USE;

/* The payment failed or was cancelled, committed: queue VEND DENIED.
 * KP_ERR_STATE unless in Vend with no answer queued. */
kp_err kp_mdb_device_deny(kp_mdb_device *dev) KP_MUST_USE;

/* Ask the VMC to end the session (SESSION CANCEL REQUEST at the next POLL).
 * KP_ERR_STATE unless in Session Idle and not already ending. */
kp_err kp_mdb_device_cancel_session(kp_mdb_device *dev) KP_MUST_USE;

kp_mdb_state kp_mdb_device_state(const kp_mdb_device *dev);
/* "inactive", "disabled", "enabled", "session_idle", "vend"; never NULL. */
const char *kp_mdb_state_name(kp_mdb_state s);
/* "none", "vend_request", ...; never NULL. */
const char *kp_mdb_action_name(kp_mdb_action a);
/* True if the VMC sent us a valid frame within the non-response time (5 s). */
bool kp_mdb_device_link_up(const kp_mdb_device *dev, int64_t now_ms);
void kp_mdb_device_stats_get(const kp_mdb_device *dev, kp_mdb_device_stats *out);

#endif
