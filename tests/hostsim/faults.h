/* faults.h — the host simulator's fault injection: what the control interface
 * (or a script, or the seeded chaos mode) armed, and the one place that decides,
 * request by request and confirm by confirm, whether a fault fires. Inert when
 * nothing is armed. */
#ifndef KP_HOSTSIM_FAULTS_H
#define KP_HOSTSIM_FAULTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "hostproto.h"
#include "kp_error.h"

/* Where a connection is cut around one request. */
typedef enum kp_close_fault {
	KP_CLOSE_NONE = 0,
	KP_CLOSE_BEFORE_HANDLING, /* request dropped, ledger untouched, connection closed */
	KP_CLOSE_AFTER_HANDLING,  /* ledger changed, no reply, connection closed */
	KP_CLOSE_BEFORE_REPLY,    /* ledger changed, half of the reply frame, then closed */
	KP_CLOSE_AFTER_REPLY,     /* ledger changed, whole reply, then closed */
	KP_CLOSE__COUNT
} kp_close_fault;

/* What happens to one confirm about to be sent. */
typedef enum kp_confirm_fault {
	KP_CONFIRM_SEND = 0,
	KP_CONFIRM_DROP,          /* not sent (stays unacked: redelivered later) */
	KP_CONFIRM_DUPLICATE,     /* sent twice back to back */
} kp_confirm_fault;

enum {
	KP_FAULT_STAT_CLOSE = 0,  /* + kp_close_fault, 1..4 */
	KP_FAULT_STAT_DROP = KP_CLOSE__COUNT,
	KP_FAULT_STAT_DUPLICATE,
	KP_FAULT_STAT_DELAY,
	KP_FAULT_STAT_REORDER,
	KP_FAULT_STAT_REFUND_LATE,
	KP_FAULT_STAT_REFUND_REJECT,
	KP_FAULT_STAT_MALFORMED,
	KP_FAULT_STAT__COUNT
};

typedef struct kp_faults {
	struct {
		int64_t count;        /* fire for the next count matching requests */
		kp_host_op op;        /* KP_OP_NONE: any op */
	} close[KP_CLOSE__COUNT];
	int64_t drop_confirms;        /* next N confirm sends dropped */
	int64_t duplicate_confirms;   /* next N confirm sends doubled */
	int64_t reorder_confirms;     /* next N deliveries in descending seq */
	int64_t delay_confirms_ms;    /* every confirm send held this long (0: off) */
	int64_t refund_late_ms;       /* next refund_late_count refunds answered pending */
	int64_t refund_late_count;
	int64_t refund_reject;        /* next N refunds rejected */
	bool chaos;
	double chaos_rate;            /* 0..1 per request and per confirm send */
	uint64_t chaos_seed;
	uint64_t chaos_rng;           /* xorshift64* state */
	uint64_t fired[KP_FAULT_STAT__COUNT];
} kp_faults;

/* Nothing armed, counters zero. */
void kp_faults_init(kp_faults *f);

/* Arm from a control object {"fault": name, "count"?, "op"?, "ms"?}; "clear"
 * disarms everything (counters stay). KP_ERR_INVALID with a reason in why for
 * an unknown name or a bad parameter. "malformed_frame" is an action, not a
 * state: the caller handles it and this returns KP_ERR_INVALID for it. */
kp_err kp_faults_arm(kp_faults *f, const cJSON *cmd, char *why, size_t why_cap) KP_MUST_USE;

/* Seeded random faults on rate (0 turns chaos off). KP_ERR_INVALID if rate is
 * not in [0, 1]. */
kp_err kp_faults_chaos(kp_faults *f, uint64_t seed, double rate) KP_MUST_USE;

/* Decide for one request of op: an armed close fault (first in enum order)
 * or chaos; counts it. */
kp_close_fault kp_faults_take_close(kp_faults *f, kp_host_op op);
/* Decide for one confirm send. */
kp_confirm_fault kp_faults_take_confirm(kp_faults *f);
/* True if this delivery batch goes out in descending seq order. */
bool kp_faults_take_reorder(kp_faults *f);
/* For one new refund: *late_ms > 0 to answer pending for that long; *reject to
 * reject it (at once, or at the end of the late period). */
void kp_faults_take_refund(kp_faults *f, int64_t *late_ms, bool *reject);

const char *kp_close_fault_name(kp_close_fault c);
/* The op named s among kiosk requests, KP_OP_NONE if none. */
kp_host_op kp_faults_op_parse(const char *s);

/* Armed state and fired counters as a new JSON object (caller owns). */
cJSON *kp_faults_json(const kp_faults *f);

#endif
