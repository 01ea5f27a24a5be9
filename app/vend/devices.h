/* devices.h — the kiosk's hardware as kioskpayd's poll loop sees it: the VMC
 * on the MDB bus (vend.h), the GPIO inputs (power failing, and the vend
 * outcome of kiosks without MDB), and the watchdog with systemd's notify.
 * One object, so that the daemon's loop only adds its fds, its deadline and
 * one call per turn. */
#ifndef KP_DEVICES_H
#define KP_DEVICES_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api.h"
#include "config.h"
#include "engine.h"
#include "journal.h"
#include "kp_env.h"
#include "kp_error.h"

typedef struct kp_devices kp_devices;

#define KP_DEVICES_POLLFDS 2 /* the MDB port and the GPIO lines */

typedef struct kp_devices_deps {
	const kp_env *env;
	const kp_config *cfg;       /* [mdb], [gpio], [watchdog], [journal] path, [payment] */
	kp_engine *engine;
	kp_journal *journal;
	kp_api *api;                /* told to refuse new sales while power fails */
	bool (*host_up)(void *arg); /* MDB sessions are offered only while up */
	void *host_arg;
} kp_devices_deps;

/* Open what the config names ("none" everywhere: an object that does
 * nothing). $NOTIFY_SOCKET and $WATCHDOG_USEC are read here. KP_ERR_IO or
 * KP_ERR_INVALID (logged) if a device cannot be used; KP_ERR_NOMEM. Borrows
 * everything in deps. */
kp_err kp_devices_open(kp_devices **out, const kp_devices_deps *deps) KP_MUST_USE;
/* clean: a stop on purpose (the watchdog is disarmed, systemd hears
 * STOPPING=1). Close before the engine is freed. Safe on NULL. */
void kp_devices_close(kp_devices *dev, bool clean);

/* Startup is done: READY=1 to systemd. */
void kp_devices_ready(kp_devices *dev);

/* Fill up to cap pollfds (fd -1 entries are ignored by poll); returns how
 * many were written. */
size_t kp_devices_pollfds(const kp_devices *dev, struct pollfd *pfd, size_t cap);
/* After poll: read what is ready (pfd as filled and polled), answer the
 * VMC, apply GPIO edges, do what is due, feed the watchdog if healthy. Call
 * it on every loop turn. */
void kp_devices_process(kp_devices *dev, const struct pollfd *pfd, size_t n);
/* Monotonic ms at which kp_devices_process wants to run; 0 = none. */
int64_t kp_devices_deadline(const kp_devices *dev);

/* The engine committed a change to an order (fan-out of kp_engine_deps
 * on_change beside kp_api_on_change). */
void kp_devices_on_change(kp_devices *dev, const char *order_id);

/* True while the power-fail input says the power is failing. */
bool kp_devices_power_failing(const kp_devices *dev);

#endif
