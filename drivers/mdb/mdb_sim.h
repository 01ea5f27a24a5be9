/* mdb_sim.h — an in-process VMC for tests and the demo: a transport backend
 * (mdb_transport.h) whose other end is a model of a vending machine
 * controller. It resets and sets up the reader, polls, vends what a test
 * "customer" selected, and misbehaves on request with seeded faults (lost
 * replies, lost ACKs, bad checksums), so that a run replays from its seed.
 * Time comes from a kp_env (the fake clock in tests). Also the byte framing
 * of mdb.md §1 "Sim framing" for a pty or socketpair backend. */
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
	unsigned selections_done; /* selections that ended (dispensed, failed or denied) */
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
/* True while a selection waits or is being vended. */
bool kp_mdb_sim_has_selection(const kp_mdb_sim *sim);

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
