/* sharedhost.h — an in-process payment host for the in-process cut loop
 * (kp-crash-cuts). It keeps its ledger in shared memory, so that a forked
 * child running the engine can be killed at any instant and the host's memory
 * of payments, captures, refunds and confirms survives it, as a real host
 * would. The host side follows shared/host-protocol.md the way kp-hostsim does
 * (idempotency by id, tombstones, cancel races, one refund per capture,
 * confirms redelivered until acked), and records any request that breaks
 * invariant 4 (an id reused with other parameters, a second refund id for one
 * capture). Requests and replies in flight live in the process that sent them:
 * a crash loses them, like a connection. */
#ifndef KP_SHAREDHOST_H
#define KP_SHAREDHOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "journal.h"

#define SH_PAY_MAX 4096
#define SH_REFUND_MAX 2048
#define SH_CONFIRM_MAX 4096
#define SH_VIOLATION_SIZE 256

typedef enum sh_pay_status { SH_PENDING, SH_SUCCEEDED, SH_FAILED, SH_CANCELED } sh_pay_status;

typedef struct sh_payment {
	char attempt_id[KP_ID_SIZE];
	char order_id[KP_ID_SIZE];
	char channel[KP_CHANNEL_SIZE];
	char currency[KP_CURRENCY_SIZE];
	char host_txn[KP_ID_SIZE]; /* set once settled */
	int64_t amount;
	int64_t expires_at;
	sh_pay_status status;
	bool orphan;               /* made by the customer side, never by the kiosk */
	bool tombstone;            /* canceled before it was ever created */
} sh_payment;

typedef struct sh_refund {
	char refund_id[KP_ID_SIZE];
	char attempt_id[KP_ID_SIZE];
	char host_txn[KP_ID_SIZE];
	char reason[24];
	int64_t amount;
	bool refunded;             /* else pending until due_at */
	int64_t due_at;
} sh_refund;

typedef struct sh_confirm {
	int64_t seq;
	int pay;                   /* index into payments */
	bool acked;
} sh_confirm;

/* Everything that must outlive a crash of the kiosk. Lives in a MAP_SHARED page. */
typedef struct sh_ledger {
	kp_fake_world world;       /* the clock (and the env's randomness) of both processes */
	bool link_up;
	uint64_t txn_counter;
	uint64_t orphan_counter;
	int npay, nrefund, nconfirm;
	unsigned violations;
	char violation[4][SH_VIOLATION_SIZE];
	sh_payment pay[SH_PAY_MAX];
	sh_refund refund[SH_REFUND_MAX];
	sh_confirm confirm[SH_CONFIRM_MAX];
} sh_ledger;

/* A fresh ledger in shared memory (munmap with sh_ledger_unmap). NULL on failure. */
sh_ledger *sh_ledger_map(void);
void sh_ledger_unmap(sh_ledger *l);
/* Forget everything (a new run), keep the mapping; wall clock starts at wall_ms. */
void sh_ledger_reset(sh_ledger *l, uint64_t seed, int64_t wall_ms);

/* The per-process side: requests in flight and the engine to deliver to. */
typedef struct sh_host {
	sh_ledger *l;
	kp_engine *engine;         /* set after kp_engine_new */
	uint64_t rng;
	unsigned lose_request_pct; /* request never reaches the host (reply: timeout) */
	unsigned lose_reply_pct;   /* handled, the reply lost (timeout) */
	unsigned deliver_pct;      /* chance per pump that an unacked confirm is sent */
	unsigned duplicate_pct;    /* a confirm sent twice */
	unsigned refund_late_pct;  /* a new refund answers pending, refunded 2 s later */
	struct sh_req *q;
	size_t nq, capq;
} sh_host;

extern const kp_host_ops sh_host_ops;

void sh_host_init(sh_host *h, sh_ledger *l, uint64_t seed);
/* Answer the requests in flight (each: lost, handled, or handled with its
 * reply lost) and deliver unacked confirms, if the link is up. Returns how
 * many things happened. */
int sh_host_pump(sh_host *h);
/* Fail every request in flight with KP_ERR_DISCONNECTED (before freeing the engine). */
void sh_host_drop_all(sh_host *h);
void sh_host_free(sh_host *h);

/* The customer's side (what kp-hostsim's control port does). Index of the
 * payment touched, or -1 if none was applicable. */
int sh_customer_pay(sh_ledger *l, int pay_index, bool success);
/* Capture every pending payment of the order; if that made exactly one
 * capture, add an orphan capture of the same amount (two channels paid). */
int sh_customer_pay_order_twice(sh_ledger *l, const char *order_id);
int sh_customer_orphan(sh_ledger *l, const char *order_id, int64_t amount, const char *currency);
/* A random pending payment (kiosk-made), -1 if none. */
int sh_pending_pick(const sh_ledger *l, uint64_t r);
int sh_pending_count(const sh_ledger *l);
int sh_unacked_count(const sh_ledger *l);

#endif
