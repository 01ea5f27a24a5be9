/* hostlink.h — the kiosk's one long-lived connection to the payment host:
 * mutual TLS (mbedtls), framing, pipelined requests with per-request timeouts,
 * hello + confirm delivery, ping on idle, reconnect with backoff and jitter.
 * Non-blocking: the daemon's poll loop drives it. No journal access here; the
 * engine acks a confirm only after it committed it. */
#ifndef KP_HOSTLINK_H
#define KP_HOSTLINK_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>

#include "hostproto.h"
#include "kp_env.h"
#include "kp_error.h"

typedef struct kp_hostlink kp_hostlink;

#define KP_HOSTLINK_OUT_MAX (1u << 20)   /* queued outgoing bytes; over it: KP_ERR_TOO_BIG */
#define KP_HOSTLINK_PENDING_MAX 4096u    /* requests in flight; over it: KP_ERR_TOO_BIG */

/* Reply to one request: err is KP_OK with the host's reply in *reply (which
 * may be op error), or KP_ERR_TIMEOUT / KP_ERR_DISCONNECTED with reply NULL.
 * Called exactly once per accepted request, from kp_hostlink_process/tick or
 * kp_hostlink_close. */
typedef void (*kp_host_reply_fn)(void *arg, kp_err err, const kp_host_msg *reply);
/* A confirm from the host; the receiver commits it and then calls
 * kp_hostlink_ack(seq). */
typedef void (*kp_host_confirm_fn)(void *arg, const kp_host_msg *confirm);
/* The link came up (hello_ok received) or went down. */
typedef void (*kp_host_state_fn)(void *arg, bool up);

typedef struct kp_hostlink_config {
	const char *address;      /* "host:port" */
	const char *server_name;  /* name the host's certificate must carry */
	const char *ca_file;      /* pinned CA (PEM) */
	const char *cert_file;    /* device certificate (PEM) */
	const char *key_file;     /* device key (PEM) */
	const char *device_id;
	const char *fw_version;
	int64_t request_timeout_ms;   /* per request; default 10000 */
	int64_t ping_idle_ms;         /* ping after this much silence; default 15000 */
	int64_t backoff_min_ms;       /* 500 */
	int64_t backoff_max_ms;       /* 30000 */
	int64_t connect_timeout_ms;   /* TCP connect + handshake; default 10000 */
} kp_hostlink_config;

typedef struct kp_hostlink_stats {
	uint64_t full_handshakes;     /* TLS handshakes completed with certificate checks */
	uint64_t resumed_handshakes;  /* TLS handshakes completed from a session ticket */
	uint64_t connects_failed;     /* attempts that ended before hello_ok */
	uint64_t protocol_errors;
	uint64_t requests_sent;       /* requests accepted by kp_hostlink_request */
	uint64_t replies;
	uint64_t timeouts;
	uint64_t confirms;
	uint64_t tls_failures;        /* handshakes that failed (bad chain, version, ...) */
	uint64_t disconnects;         /* links that were up and went down */
	uint64_t late_replies;        /* replies to requests that had already timed out */
	int last_tls_error;           /* mbedtls code of the last TLS failure, 0 if none */
	uint32_t last_verify_flags;   /* MBEDTLS_X509_BADCERT_* of the last failed verify */
} kp_hostlink_stats;

/* Create a link (loads certificates and key; no network yet: the first
 * kp_hostlink_tick connects). cfg's strings are copied; env is borrowed. The
 * callbacks' arg is cb_arg; either callback may be NULL. KP_ERR_CONFIG if a
 * file does not load or the key does not match the certificate. Callbacks may
 * call kp_hostlink_request/ack but never kp_hostlink_free. */
kp_err kp_hostlink_new(kp_hostlink **out, const kp_hostlink_config *cfg, const kp_env *env,
		       kp_host_confirm_fn on_confirm, kp_host_state_fn on_state, void *cb_arg) KP_MUST_USE;
/* Close and free; every pending request gets KP_ERR_DISCONNECTED. Safe on NULL. */
void kp_hostlink_free(kp_hostlink *link);

/* True once the handshake and hello completed. */
bool kp_hostlink_up(const kp_hostlink *link);
/* "idle", "connecting", "handshake", "hello" or "up": for status output. */
const char *kp_hostlink_state_str(const kp_hostlink *link);

/* Send a request (op, fields; id is assigned here). KP_ERR_DISCONNECTED if not
 * up (fn is not called then). */
kp_err kp_hostlink_request(kp_hostlink *link, const kp_host_msg *req, kp_host_reply_fn fn,
			   void *arg) KP_MUST_USE;
/* Ack a confirm's seq (after the journal commit). Dropped if not up, with
 * KP_ERR_DISCONNECTED: the host redelivers. */
kp_err kp_hostlink_ack(kp_hostlink *link, int64_t seq) KP_MUST_USE;

/* Poll integration: the fd and events to wait for (fd -1 if none now), and the
 * monotonic time by which kp_hostlink_tick must run (0 if no deadline). */
void kp_hostlink_pollfd(const kp_hostlink *link, struct pollfd *pfd);
int64_t kp_hostlink_deadline(const kp_hostlink *link);
/* Handle readiness on the fd (revents from poll). */
void kp_hostlink_process(kp_hostlink *link, short revents);
/* Timers: connect/reconnect, request timeouts, ping. Call every loop turn. */
void kp_hostlink_tick(kp_hostlink *link);

void kp_hostlink_stats_get(const kp_hostlink *link, kp_hostlink_stats *out);

#endif
