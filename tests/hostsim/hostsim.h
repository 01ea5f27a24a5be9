/* hostsim.h — internals of kp-hostsim, the payment host simulator, shared by its
 * files: server.c (TLS listener and connections), proto.c (the host side of
 * host-protocol.md, confirms and timers), control.c (the test control port and
 * scripts) and kp-hostsim.c (options and the poll loop). One thread, one poll. */
#ifndef KP_HOSTSIM_H
#define KP_HOSTSIM_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cache.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

#include <cjson/cJSON.h>

#include "faults.h"
#include "hostproto.h"
#include "kp_env.h"
#include "kp_error.h"
#include "ledger.h"

/* Bounds: everything the simulator holds is limited. */
#define HS_MAX_CONNS 64                 /* TLS connections at once */
#define HS_MAX_CTL 8                    /* control connections at once */
#define HS_TX_CAP (1u << 20)            /* unsent bytes per TLS connection */
#define HS_CTL_LINE_MAX 8192            /* one control command line */
#define HS_CTL_OUT_CAP (16u << 20)      /* unsent bytes per control connection */
#define HS_MAX_TIMERS 1024              /* delayed pays/fails and confirm sends */
#define HS_CONFIRM_BATCH 256            /* confirms per delivery */
#define HS_SCRIPT_MAX_LINES 4096
#define HS_HANDSHAKE_TIMEOUT_MS 10000
#define HS_IDLE_TIMEOUT_MS 300000

typedef struct hs_options {
	const char *listen;
	const char *control;
	const char *ledger;
	const char *ca;
	const char *cert;
	const char *key;
	const char *script;
	const char *port_file;
	bool tls11_only;
	bool seeded;
	uint64_t seed;
	int64_t confirm_interval_ms;
	int64_t max_amount;             /* 0: no limit */
	bool verbose;
} hs_options;

typedef enum hs_conn_state {
	HS_CONN_FREE = 0,
	HS_CONN_HANDSHAKE,
	HS_CONN_OPEN,
	HS_CONN_CLOSING,                /* flushing its last bytes, reads nothing more */
} hs_conn_state;

typedef struct hs_conn {
	hs_conn_state state;
	int fd;
	uint64_t serial;                /* connection number, for logs and poll slots */
	char peer[64];
	mbedtls_ssl_context ssl;
	kp_frame_reader rd;
	uint8_t *tx;
	size_t tx_off, tx_len, tx_cap;
	size_t write_pending;           /* length of an mbedtls_ssl_write to repeat */
	bool hs_want_write;
	bool verified;                  /* client chain was verified: a full handshake */
	bool hello_done;
	char cert_cn[KP_PROTO_ID_SIZE];
	char device_id[KP_PROTO_ID_SIZE];
	int64_t opened_ms;
	int64_t last_rx_ms;
} hs_conn;

typedef enum hs_timer_kind {
	HS_TIMER_FREE = 0,
	HS_TIMER_PAY,                   /* control "pay" with delay_ms */
	HS_TIMER_FAIL,                  /* control "fail" with delay_ms */
	HS_TIMER_CONFIRM,               /* a confirm send held by delay_confirms */
} hs_timer_kind;

typedef struct hs_timer {
	hs_timer_kind kind;
	int64_t due_ms;                 /* monotonic */
	char id[KP_PROTO_ID_SIZE];      /* attempt_id, or device_id for CONFIRM */
	int64_t seq;                    /* CONFIRM: one seq, 0 = every unacked */
} hs_timer;

typedef struct hs_ctl {
	int fd;                         /* -1: free */
	char in[HS_CTL_LINE_MAX];
	size_t in_len;
	char *out;
	size_t out_off, out_len, out_cap;
	bool closing;
} hs_ctl;

typedef struct hs_stats {
	uint64_t accepted;
	uint64_t refused_full;
	uint64_t handshakes_full;
	uint64_t handshakes_resumed;
	uint64_t handshake_failures;
	uint64_t requests;
	uint64_t protocol_errors;
	uint64_t confirms_sent;
	uint64_t acks;
	uint64_t unknown_acks;
} hs_stats;

typedef struct hostsim {
	kp_env env;
	hs_options opt;
	kp_ledger *ledger;
	kp_faults faults;
	uint64_t rng;                   /* xorshift64*: host_txn and orphan ids */

	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	mbedtls_x509_crt ca;
	mbedtls_x509_crt cert;
	mbedtls_pk_context key;
	mbedtls_ssl_config conf;
	mbedtls_ssl_ticket_context ticket;
	mbedtls_ssl_cache_context cache;
	int ciphersuites[8];

	int listen_fd;
	uint16_t port;
	int ctl_fd;
	uint16_t ctl_port;
	hs_conn conns[HS_MAX_CONNS];
	uint64_t conn_serial;
	hs_ctl ctls[HS_MAX_CTL];
	hs_timer timers[HS_MAX_TIMERS];
	int64_t next_redeliver_ms;      /* monotonic */
	int64_t next_refund_due;        /* wall clock, 0: none */

	char **script;                  /* lines of --script, owned */
	size_t script_n, script_pos;
	int64_t script_t0;              /* monotonic start */

	hs_stats stats;
} hostsim;

/* What one pollfd slot belongs to. */
typedef enum hs_slot_kind { HS_SLOT_LISTEN, HS_SLOT_CTL_LISTEN, HS_SLOT_CONN, HS_SLOT_CTL } hs_slot_kind;

#define HS_POLL_MAX (2 + HS_MAX_CONNS + HS_MAX_CTL)
typedef struct hs_pollset {
	struct pollfd pfd[HS_POLL_MAX];
	hs_slot_kind kind[HS_POLL_MAX];
	int index[HS_POLL_MAX];
	uint64_t serial[HS_POLL_MAX];
	int n;
	bool pending;                   /* some TLS record is buffered: poll must not wait */
} hs_pollset;

/* ---- server.c ---- */

/* Bind a TCP listener on "host:port" (numeric host; port 0 picks one);
 * *port gets the real port. */
kp_err hs_listen(const char *addr, int *fd, uint16_t *port) KP_MUST_USE;
/* Load certificates and key, set up the TLS config and the kiosk listener. */
kp_err hs_server_setup(hostsim *s) KP_MUST_USE;
/* Close every connection (close_notify, best effort) and free TLS state. */
void hs_server_free(hostsim *s);
void hs_server_poll_add(hostsim *s, hs_pollset *ps);
void hs_server_process(hostsim *s, hs_slot_kind kind, int index, uint64_t serial, short revents);
/* Handshake and idle timeouts; the next deadline (monotonic, 0: none). */
int64_t hs_server_tick(hostsim *s);
/* The open connection whose hello named device_id, or NULL. */
hs_conn *hs_conn_for_device(hostsim *s, const char *device_id);
/* Encode m and queue it (then try to send). KP_ERR_TOO_BIG if the connection's
 * output is full (the connection is closed then). */
kp_err hs_conn_send(hostsim *s, hs_conn *c, const kp_host_msg *m) KP_MUST_USE;
/* Queue raw bytes (for malformed frames and torn replies). */
kp_err hs_conn_send_raw(hostsim *s, hs_conn *c, const uint8_t *data, size_t len) KP_MUST_USE;
/* Cut the connection now, without close_notify. */
void hs_conn_close(hostsim *s, hs_conn *c, const char *why);
/* Stop reading; close once the queued bytes are out. */
void hs_conn_close_after_flush(hostsim *s, hs_conn *c, const char *why);
bool hs_conn_live(const hs_conn *c);

/* ---- proto.c ---- */

/* One whole frame payload from the kiosk on c. */
void hs_proto_frame(hostsim *s, hs_conn *c, const uint8_t *frame, size_t len);
/* Send device_id's unacked confirms (seq 0) or one confirm (seq) if the device
 * is connected, with the armed confirm faults. */
void hs_confirms_deliver(hostsim *s, const char *device_id, int64_t seq);
/* Settle a pending attempt (captured or failed) with a new host_txn and
 * deliver its confirm. Errors: KP_ERR_NOT_FOUND, KP_ERR_STATE (not pending). */
kp_err hs_settle(hostsim *s, const char *attempt_id, bool success, kp_ledger_payment *out,
		 kp_ledger_confirm *confirm) KP_MUST_USE;
/* A capture for an attempt id the kiosk never sent (p: order_id, amount,
 * currency, channel, device_id; attempt_id generated if empty). */
kp_err hs_orphan(hostsim *s, kp_ledger_payment *p, kp_ledger_confirm *confirm) KP_MUST_USE;
/* Send one malformed frame of kind on c. KP_ERR_INVALID for an unknown kind. */
kp_err hs_send_malformed(hostsim *s, hs_conn *c, const char *kind) KP_MUST_USE;
/* Add a timer; KP_ERR_TOO_BIG if the table is full. */
kp_err hs_timer_add(hostsim *s, hs_timer_kind kind, int64_t due_ms, const char *id, int64_t seq) KP_MUST_USE;
/* Run due timers, periodic redelivery and late refunds; the next deadline. */
int64_t hs_proto_tick(hostsim *s);
/* Recompute the next late-refund time after a refund was written. */
void hs_refunds_rearm(hostsim *s);

/* ---- control.c ---- */

kp_err hs_control_setup(hostsim *s) KP_MUST_USE;
void hs_control_free(hostsim *s);
void hs_control_poll_add(hostsim *s, hs_pollset *ps);
void hs_control_process(hostsim *s, int index, short revents);
/* Run one control command (a JSON object); *reply is a new JSON object with
 * "ok" (caller owns). */
void hs_control_exec(hostsim *s, const cJSON *cmd, cJSON **reply);
/* Load --script (one JSON command per line, optional "at_ms"). */
kp_err hs_script_load(hostsim *s, const char *path) KP_MUST_USE;
/* Run the script lines that are due; the next deadline (monotonic, 0: none). */
int64_t hs_script_tick(hostsim *s);
void hs_script_free(hostsim *s);

/* ---- shared helpers ---- */

/* Next value of the simulator's own generator. */
uint64_t hs_rand(hostsim *s);
/* Earliest of two deadlines where 0 means none. */
static inline int64_t hs_min_deadline(int64_t a, int64_t b)
{
	if (a == 0)
		return b;
	if (b == 0)
		return a;
	return a < b ? a : b;
}

#endif
