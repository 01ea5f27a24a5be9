/* vend.h — kioskpay as the vending machine controller's cashless reader: the
 * module between the MDB device state machine (drivers/mdb) and the payment
 * engine. A VEND REQUEST becomes an order and a payment attempt; VEND
 * APPROVED goes out only once the engine has committed the payment; VEND
 * DENIED once a failure, an expiry or a cancel is committed (our patience
 * running out ends in a committed cancel too); VEND SUCCESS and FAILURE are
 * committed before the VMC gets its ACK. Every reply follows the commit it
 * reports (docs/mdb.md "Wiring"). */
#ifndef KP_VEND_H
#define KP_VEND_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine.h"
#include "journal.h"
#include "kp_env.h"
#include "kp_error.h"
#include "mdb_transport.h"

typedef struct kp_vend kp_vend;

#define KP_VEND_CHANNEL_DEFAULT "mdb"
#define KP_VEND_PATIENCE_DEFAULT_MS 60000   /* a vend request unpaid this long is canceled */
#define KP_VEND_PATIENCE_MAX_MS 240000      /* Z7 = patience + 10 s must fit in a byte of seconds */
#define KP_VEND_SESSION_IDLE_DEFAULT_MS 60000
#define KP_VEND_POLL_MS 25                  /* an in-process VMC (no fd) is served this often */

typedef struct kp_vend_config {
	const char *channel;       /* payment channel of MDB sales; NULL = "mdb" */
	const char *currency;      /* the engine's currency: READER CONFIG country and decimals */
	int64_t max_amount;        /* largest price taken (capped to FFFE); more is denied */
	int64_t patience_ms;       /* 0 = default; the VMC is told Z7 = patience + 10 s */
	int64_t session_idle_ms;   /* a session without a vend request this long is ended (04); 0 = default */
} kp_vend_config;

typedef struct kp_vend_deps {
	const kp_env *env;          /* clock, randomness (the run's id), log */
	kp_engine *engine;
	kp_journal *journal;        /* read only: where an order stands */
	kp_mdb_transport transport; /* owned from kp_vend_new on (closed by kp_vend_free, also on error) */
	bool (*host_up)(void *arg); /* sessions are offered only while it says true; NULL = always */
	void *host_arg;
} kp_vend_deps;

/* Make the reader. Borrows env, engine and journal; takes the transport.
 * KP_ERR_INVALID for bad settings, KP_ERR_NOMEM, KP_ERR_IO if the run's id
 * cannot be drawn. */
kp_err kp_vend_new(kp_vend **out, const kp_vend_config *cfg, const kp_vend_deps *deps) KP_MUST_USE;
/* Close the transport and free. A payment the engine still works on keeps
 * going in the engine; its callback then only frees a ticket. Safe on NULL. */
void kp_vend_free(kp_vend *v);

/* Boot: orders of earlier runs' vend requests that are still pending are
 * canceled (their VMC session died with that run; a payment that still
 * succeeds is refunded as late by the engine). Paid ones are left to the
 * engine's power-cut policy (kp_engine_recover). *canceled says how many.
 * Call once after kp_engine_recover. */
kp_err kp_vend_recover(kp_vend *v, int64_t *canceled) KP_MUST_USE;

/* Poll integration: the transport's fd (fd -1 when there is none, e.g. an
 * in-process VMC or a serial port waiting to be reopened). */
void kp_vend_pollfd(const kp_vend *v, struct pollfd *pfd);
/* Monotonic ms when kp_vend_process wants to run again (a gap, a reopen,
 * our patience, the next poll of an in-process VMC); 0 = only on input. */
int64_t kp_vend_deadline(const kp_vend *v);
/* Read and answer what the VMC sent, then do what is due: approvals and
 * denials whose commits are done, patience, offering a session. Call it
 * after poll said the fd is readable, at the deadline, and once per loop
 * turn (cheap when nothing is due). */
void kp_vend_process(kp_vend *v);

/* The engine committed a change to an order (kp_engine_deps.on_change; the
 * daemon fans it out to the API and here). Only notes it: the work happens
 * in the next kp_vend_process. */
void kp_vend_on_change(void *v, const char *order_id);

/* Stop (false) or resume taking new sales: no new session is offered, an
 * idle one is asked to end, a VEND REQUEST is denied; a vend already paying
 * goes on. why (e.g. "power failing") goes to the log. */
void kp_vend_set_selling(kp_vend *v, bool selling, const char *why);

typedef struct kp_vend_stats {
	uint64_t sessions;        /* BEGIN SESSION queued */
	uint64_t vend_requests;   /* VEND REQUESTs taken (a repeat of the same one counts once) */
	uint64_t orders;          /* orders made (or found again by their dedup key) */
	uint64_t approved;
	uint64_t denied;
	uint64_t patience_expired;
	uint64_t vend_success;
	uint64_t vend_failure;
	uint64_t refunds;         /* vend failure, cancel after approval, reset before delivery */
	uint64_t commit_failures; /* steps rolled back: the VMC got silence and repeats */
	uint64_t bad_frames;
	uint64_t out_of_sequence;
} kp_vend_stats;
void kp_vend_stats_get(const kp_vend *v, kp_vend_stats *out);

/* True while the VMC has talked to us within the bus's non-response time. */
bool kp_vend_link_up(const kp_vend *v);

#endif
