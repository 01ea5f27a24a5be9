/* watchdog.h — keeping the board's watchdog (and systemd's) fed, only while
 * the daemon is healthy. The daemon's poll loop calls kp_watchdog_service()
 * on every turn with its verdict (journal writable); a feed goes out when one
 * is due and the verdict is good. A stalled loop never gets there, so the
 * hardware resets the board. Sinks: /dev/watchdog (WDIOC_KEEPALIVE), a sim
 * file for tests (one line per keepalive), and sd_notify("WATCHDOG=1") over
 * $NOTIFY_SOCKET, written by hand (no libsystemd). */
#ifndef KP_WATCHDOG_H
#define KP_WATCHDOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kp_env.h"
#include "kp_error.h"

typedef struct kp_watchdog kp_watchdog;

#define KP_WATCHDOG_TIMEOUT_DEFAULT_MS 15000

typedef struct kp_watchdog_config {
	/* "/dev/watchdog" (or watchdogN), "sim:PATH" (appends "keepalive MS"
	 * lines), or "" / "none": no device, systemd only (if NOTIFY_SOCKET). */
	const char *device;
	int64_t timeout_ms;     /* asked of the device (WDIOC_SETTIMEOUT, whole seconds); 0 = default */
	const char *notify_socket; /* $NOTIFY_SOCKET; NULL = not under systemd */
	int64_t notify_usec;    /* $WATCHDOG_USEC (0 = no systemd watchdog) */
} kp_watchdog_config;

typedef struct kp_watchdog_stats {
	uint64_t keepalives;    /* feeds of the device */
	uint64_t notifies;      /* WATCHDOG=1 datagrams sent */
	uint64_t withheld;      /* feeds that were due but withheld: not healthy */
	int64_t interval_ms;    /* how often a feed is due */
} kp_watchdog_stats;

/* Open the device (and the notify socket). "none" with no notify socket is
 * valid: every call is then a no-op. KP_ERR_IO if the device cannot be opened
 * or set up (logged), KP_ERR_INVALID for a bad config, KP_ERR_NOMEM. */
kp_err kp_watchdog_open(kp_watchdog **out, const kp_watchdog_config *cfg, const kp_env *env) KP_MUST_USE;
/* clean: the daemon stops on purpose, so the device is disarmed ("V", magic
 * close) where it allows; otherwise it is left running and will fire.
 * Sends STOPPING=1 to systemd when clean. Safe on NULL. */
void kp_watchdog_close(kp_watchdog *w, bool clean);

/* One turn of the loop at now_ms (monotonic): feed if a feed is due and
 * healthy; if due but not healthy, withhold it and log why_not (once per
 * change). Returns when the next feed is due (monotonic ms), 0 if nothing is
 * to be fed. */
int64_t kp_watchdog_service(kp_watchdog *w, int64_t now_ms, bool healthy, const char *why_not);
/* Tell systemd something ("READY=1", "STOPPING=1", "STATUS=..."); KP_OK if
 * sent or not under systemd. */
kp_err kp_watchdog_notify(kp_watchdog *w, const char *state) KP_MUST_USE;

void kp_watchdog_stats_get(const kp_watchdog *w, kp_watchdog_stats *out);

/* The health probe the daemon uses for "journal writable": the file exists
 * and may be written, and its file system is mounted read-write with at least
 * min_free bytes available. why (if not NULL) gets the reason when false. */
bool kp_watchdog_path_writable(const char *path, uint64_t min_free, char *why, size_t why_cap);

#endif
