/* mdb_sim.h — an in-process VMC for tests and the demo: a transport backend
 * (mdb_transport.h) whose other end is a model of a vending machine
 * controller. It resets and sets up the reader, polls, vends what a test
 * "customer" selected, and misbehaves on request with seeded faults (lost
 * replies, lost ACKs, bad checksums), so that a run replays from its seed.
 * Time comes from a kp_env (the fake clock in tests). It waits for 05/06 as
 * long as the reader's READER CONFIG says (Z7), then sends VEND CANCEL. Also
 * the byte framing of mdb.md §1 "Sim framing" for a pty or socketpair
 * backend. tests/vmcsim/kp-vmcsim runs this model as its own process. */
#ifndef KP_MDB_SIM_H
#define KP_MDB_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kp_env.h"
#include "kp_error.h"
#include "mdb_transport.h"

typedef struct kp_mdb_sim kp_mdb_sim;

/* Per-mille chances, drawn from the seed. */
typedef struct kp_mdb_sim_faults {
	unsigned lost_reply_pm; /* our reply never reaches the VMC (it hears silence) */
	unsigned lost_ack_pm;   /* the VMC's ACK to our data never reaches us */
	unsigned bad_chk_pm;    /* a VMC block reaches us with a wrong CHK */
} kp_mdb_sim_faults;

/* What the VMC saw and did. */
typedef struct kp_mdb_sim_stats {
	unsigned resets;          /* RESETs sent */
	unsigned setups;          /* READER CONFIG received */
	unsigned sessions;        /* BEGIN SESSION received */
	unsigned vend_requests;   /* VEND REQUESTs ACKed (a repeat counts once) */
	unsigned approved;        /* VEND APPROVED received */
	unsigned denied;          /* VEND DENIED received */
	unsigned dispensed;       /* VEND SUCCESS reported */
	unsigned dispense_failed; /* VEND FAILURE reported */
	uint64_t dispensed_value; /* sum of the prices of what was dispensed */
	unsigned sessions_ended;  /* END SESSION received */
	unsigned out_of_sequence; /* CMD OUT OF SEQUENCE received */
	unsigned retries;         /* blocks sent again after silence */
	unsigned selections_done; /* selections that ended (dispensed, failed, denied or aborted) */
	unsigned vend_cancels;    /* VEND CANCELs sent (asked for, or Z7 ran out) */
	unsigned session_cancels; /* SESSION CANCEL REQUESTs received */
	unsigned outcomes_repeated; /* VEND SUCCESS/FAILURE sent a second time (repeat_outcome) */
	unsigned aborted;         /* selections dropped by a VMC reset after their VEND REQUEST */
	unsigned last_approved;   /* amount of the last VEND APPROVED */
} kp_mdb_sim_stats;

/* A VMC at power-up (it starts with RESET). env is borrowed (clock only). */
kp_err kp_mdb_sim_new(kp_mdb_sim **out, const kp_env *env, uint64_t seed) KP_MUST_USE;
/* Safe on NULL. */
void kp_mdb_sim_free(kp_mdb_sim *sim);

/* The transport whose far end is this VMC. Borrowed: its close does nothing;
 * kp_mdb_sim_free() ends both. */
void kp_mdb_sim_transport(kp_mdb_sim *sim, kp_mdb_transport *t);

void kp_mdb_sim_set_faults(kp_mdb_sim *sim, const kp_mdb_sim_faults *faults);

/* A customer selects an item: in the next session the VMC sends VEND
 * REQUEST(price, item); if approved it dispenses and reports VEND SUCCESS
 * (dispense_ok) or VEND FAILURE. KP_ERR_BUSY while a selection is pending. */
kp_err kp_mdb_sim_select(kp_mdb_sim *sim, uint16_t price, uint16_t item, bool dispense_ok) KP_MUST_USE;

typedef enum kp_mdb_sim_dispense {
	KP_MDB_SIM_DISPENSE_OK = 0, /* VEND SUCCESS right after VEND APPROVED */
	KP_MDB_SIM_DISPENSE_FAIL,   /* VEND FAILURE */
	KP_MDB_SIM_DISPENSE_HOLD,   /* keep polling until kp_mdb_sim_dispense() */
} kp_mdb_sim_dispense;

typedef struct kp_mdb_sim_selection {
	uint16_t price, item;
	kp_mdb_sim_dispense dispense;
	bool repeat_outcome; /* send VEND SUCCESS/FAILURE again after its ACK (a lost ACK) */
} kp_mdb_sim_selection;

/* kp_mdb_sim_select with every option. KP_ERR_BUSY while one is pending. */
kp_err kp_mdb_sim_select_ex(kp_mdb_sim *sim, const kp_mdb_sim_selection *sel) KP_MUST_USE;
/* A held selection (KP_MDB_SIM_DISPENSE_HOLD) that was approved: report its
 * outcome now. KP_ERR_STATE if none is waiting for it. */
kp_err kp_mdb_sim_dispense_now(kp_mdb_sim *sim, bool ok) KP_MUST_USE;
/* The customer presses "cancel" while the VMC waits for 05/06: it sends VEND
 * CANCEL next. KP_ERR_STATE if no vend request is waiting. */
kp_err kp_mdb_sim_cancel(kp_mdb_sim *sim) KP_MUST_USE;
/* True while a selection waits or is being vended. */
bool kp_mdb_sim_has_selection(const kp_mdb_sim *sim);
/* The VMC's state as text ("reset", "idle", "session", "vend_wait", ...). */
const char *kp_mdb_sim_state_name(const kp_mdb_sim *sim);

/* Silence this long makes the VMC RESET the reader (default 5000 ms, the
 * bus's non-response time). */
void kp_mdb_sim_set_non_response(kp_mdb_sim *sim, int64_t ms);

/* Called with one line for each thing the VMC does or sees (RESET sent,
 * READER CONFIG, BEGIN SESSION, VEND REQUEST, APPROVED, ...). */
typedef void (*kp_mdb_sim_trace_fn)(void *arg, const char *line);
void kp_mdb_sim_set_trace(kp_mdb_sim *sim, kp_mdb_sim_trace_fn fn, void *arg);

void kp_mdb_sim_stats_get(const kp_mdb_sim *sim, kp_mdb_sim_stats *out);

/* Sim framing: each word as two bytes [flags][data], flags bit 0 = mode bit
 * ("12* 12" is 01 12 00 12). Returns the bytes written, 0 if cap is short. */
size_t kp_mdb_sim_pack(const uint16_t *words, size_t n, uint8_t *bytes, size_t cap);
/* Back to words. A pair with flags 80 is a bus reset: *bus_reset is set and
 * no word is added. KP_ERR_INVALID on an odd length or other flag bits,
 * KP_ERR_TOO_BIG if the words do not fit cap. */
kp_err kp_mdb_sim_unpack(const uint8_t *bytes, size_t len, uint16_t *words, size_t cap, size_t *n,
			 bool *bus_reset) KP_MUST_USE;

#endif
