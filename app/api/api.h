/* api.h — the local CoAP API of kioskpayd (libcoap 3, UDP, loopback by
 * default): orders, pay, cancel, vend, health, metrics, reconcile, events,
 * with Observe on GET /orders/{id}. Resources, payloads and error codes are
 * the contract of design.md "Interfaces" and docs/api.md. Non-blocking: the
 * daemon's poll loop waits on kp_api_pollfd() and calls kp_api_process(). */
#ifndef KP_API_H
#define KP_API_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "journal.h"
#include "kp_env.h"
#include "kp_error.h"

typedef struct kp_api kp_api;

#define KP_API_LISTEN_DEFAULT "127.0.0.1:5683"
#define KP_API_MAX_PAYLOAD_DEFAULT 2048u /* request body bytes; more gets 4.13 */
#define KP_API_EVENTS_PAGE 100u          /* most events in one GET /events answer */
#define KP_API_PAYS_MAX 64u              /* pay requests waiting for the host at once */
#define KP_API_OBSERVED_MAX 64u          /* orders with an Observe resource at once */

typedef struct kp_api_config {
	/* "ipv4:port", "[ipv6]:port" or "localhost:port"; numeric only, no DNS.
	 * NULL or "" = KP_API_LISTEN_DEFAULT. Port 0 binds any free port (tests:
	 * see kp_api_port). A non-loopback address is served, with a warning. */
	const char *listen;
	size_t max_payload;      /* 0 = KP_API_MAX_PAYLOAD_DEFAULT */
} kp_api_config;

/* One named counter for /metrics. */
typedef struct kp_api_stat {
	const char *name;        /* static text, e.g. "timeouts" */
	int64_t value;
} kp_api_stat;

/* What the API asks about the host link, so it needs no hostlink.h: the
 * daemon wraps kp_hostlink_up/kp_hostlink_stats_get, a test fakes it. */
typedef struct kp_api_host_ops {
	bool (*up)(void *host);
	/* Fill up to cap counters, return how many were written. May be NULL. */
	size_t (*stats)(void *host, kp_api_stat *out, size_t cap);
} kp_api_host_ops;

typedef struct kp_api_deps {
	const kp_env *env;                /* required */
	kp_engine *engine;                /* NULL until ready: requests get 5.03 */
	kp_journal *journal;              /* NULL until ready (journal not open) */
	const kp_api_host_ops *host_ops;  /* NULL: host reported "down" */
	void *host;
} kp_api_deps;

/* Bind the listen address and register every resource. Borrows everything in
 * deps (they must outlive the API, except engine/journal, see set_backend).
 * KP_ERR_CONFIG for an unusable listen address, KP_ERR_IO if it cannot be
 * bound, KP_ERR_INTERNAL if libcoap lacks epoll support. *out owned by the
 * caller; free with kp_api_free(). */
kp_err kp_api_new(kp_api **out, const kp_api_config *cfg, const kp_api_deps *deps) KP_MUST_USE;

/* Close the socket and free everything; observers get a final 4.04. Pay
 * requests still waiting for the engine are detached: their callback, when
 * the engine runs it (at the latest in kp_engine_free), only frees them.
 * Safe on NULL. */
void kp_api_free(kp_api *api);

/* Point the API at the engine and journal (both NULL: answer 5.03 again,
 * e.g. while the journal is closed). */
void kp_api_set_backend(kp_api *api, kp_engine *engine, kp_journal *journal);

/* Stop taking new sales (why, e.g. "power failing") or take them again
 * (NULL): while stopped, POST /orders and a new POST /orders/{id}/pay answer
 * 5.03 with why as the message; reads, cancel, vend and pay answers already
 * under way go on. why is copied (up to 63 bytes). */
void kp_api_set_refusing(kp_api *api, const char *why);

/* The UDP port actually bound (useful with port 0), or 0 if unknown. */
uint16_t kp_api_port(const kp_api *api);

/* Poll integration. libcoap keeps its sockets and its timers (retransmits,
 * Observe notifications, separate responses) behind one epoll fd: wait for
 * POLLIN on it, then call kp_api_process. kp_api_deadline is therefore
 * always 0 (no deadline of its own); it exists for the loop's symmetry. */
void kp_api_pollfd(const kp_api *api, struct pollfd *pfd);
int64_t kp_api_deadline(const kp_api *api);
/* Handle whatever is ready, without blocking. Harmless when nothing is. */
void kp_api_process(kp_api *api, short revents);

/* The engine committed a change to this order (or an attempt/refund under
 * it): Observe subscribers of GET /orders/{id} get the new representation. */
void kp_api_order_changed(kp_api *api, const char *order_id);
/* The same with the engine's callback signature (kp_order_changed_fn):
 * deps.on_change = kp_api_on_change, deps.on_change_arg = api. */
void kp_api_on_change(void *api, const char *order_id);

typedef struct kp_api_stats {
	uint64_t requests;          /* requests handled (handler calls) */
	uint64_t answers_2xx;
	uint64_t answers_4xx;
	uint64_t answers_5xx;
	uint64_t notifications;     /* order changes that had Observe subscribers */
	uint64_t pays_waiting;      /* pay requests waiting for the engine now */
	uint64_t observed_orders;   /* Observe resources now */
} kp_api_stats;
void kp_api_stats_get(const kp_api *api, kp_api_stats *out);

#endif
