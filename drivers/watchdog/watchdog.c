/* watchdog.c — the device sinks (/dev/watchdog ioctls, or a sim file) and the
 * systemd notify datagram, fed on a schedule from the daemon's loop and only
 * on a healthy verdict. */
#include "watchdog.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/watchdog.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <unistd.h>

#define SIM_PREFIX "sim:"

enum kind { WD_NONE, WD_DEVICE, WD_SIM };

struct kp_watchdog {
	const kp_env *env;
	enum kind kind;
	int fd;                  /* device or sim file */
	int sock;                /* notify socket, -1 = not under systemd */
	struct sockaddr_un addr;
	socklen_t addr_len;
	bool notify_watchdog;    /* systemd wants WATCHDOG=1 */
	int64_t interval_ms;
	int64_t last_feed_ms;
	bool fed_once;
	bool withholding;        /* logged already */
	kp_watchdog_stats st;
};

static kp_err send_notify(kp_watchdog *w, const char *state)
{
	if (w->sock < 0)
		return KP_OK;
	ssize_t r = sendto(w->sock, state, strlen(state), MSG_NOSIGNAL, (const struct sockaddr *)&w->addr,
			   w->addr_len);
	return r == (ssize_t)strlen(state) ? KP_OK : KP_ERR_IO;
}

kp_err kp_watchdog_notify(kp_watchdog *w, const char *state)
{
	if (!w || !state)
		return KP_ERR_INVALID;
	return send_notify(w, state);
}

/* $NOTIFY_SOCKET: a path, or "@name" for the abstract namespace. */
static kp_err notify_setup(kp_watchdog *w, const char *path)
{
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof(w->addr.sun_path) || (path[0] != '/' && path[0] != '@'))
		return KP_ERR_INVALID;
	memset(&w->addr, 0, sizeof(w->addr));
	w->addr.sun_family = AF_UNIX;
	memcpy(w->addr.sun_path, path, n);
	if (path[0] == '@')
		w->addr.sun_path[0] = '\0';
	w->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '@' ? 0 : 1));
	w->sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	return w->sock >= 0 ? KP_OK : KP_ERR_IO;
}

static kp_err device_setup(kp_watchdog *w, const char *dev, int64_t timeout_ms)
{
	w->fd = open(dev, O_WRONLY | O_CLOEXEC);
	if (w->fd < 0) {
		kp_log_error(w->env, "watchdog: %s: %s", dev, strerror(errno));
		return KP_ERR_IO;
	}
	int secs = (int)((timeout_ms + 999) / 1000);
	if (ioctl(w->fd, WDIOC_SETTIMEOUT, &secs) != 0) {
		/* some devices have a fixed timeout: take what it says */
		if (ioctl(w->fd, WDIOC_GETTIMEOUT, &secs) != 0 || secs <= 0) {
			kp_log_error(w->env, "watchdog: %s: cannot set or read its timeout: %s", dev, strerror(errno));
			return KP_ERR_IO;
		}
		kp_log_warn(w->env, "watchdog: %s keeps its own timeout of %d s", dev, secs);
	}
	w->interval_ms = (int64_t)secs * 1000 / 3;
	kp_log_info(w->env, "watchdog: %s armed, timeout %d s, fed every %lld ms while healthy", dev, secs,
		    (long long)w->interval_ms);
	return KP_OK;
}

kp_err kp_watchdog_open(kp_watchdog **out, const kp_watchdog_config *cfg, const kp_env *env)
{
	kp_err err = KP_OK;
	if (!out || !cfg || !env || cfg->timeout_ms < 0 || cfg->notify_usec < 0)
		return KP_ERR_INVALID;
	*out = NULL;
	kp_watchdog *w = calloc(1, sizeof(*w));
	if (!w)
		return KP_ERR_NOMEM;
	w->env = env;
	w->fd = -1;
	w->sock = -1;
	int64_t timeout = cfg->timeout_ms ? cfg->timeout_ms : KP_WATCHDOG_TIMEOUT_DEFAULT_MS;
	const char *dev = cfg->device ? cfg->device : "";
	if (dev[0] == '\0' || strcmp(dev, "none") == 0) {
		w->kind = WD_NONE;
	} else if (strncmp(dev, SIM_PREFIX, strlen(SIM_PREFIX)) == 0) {
		w->kind = WD_SIM;
		w->fd = open(dev + strlen(SIM_PREFIX), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (w->fd < 0) {
			kp_log_error(env, "watchdog: %s: %s", dev, strerror(errno));
			err = KP_ERR_IO;
			goto out;
		}
		w->interval_ms = timeout / 3;
	} else {
		w->kind = WD_DEVICE;
		err = device_setup(w, dev, timeout);
		if (err != KP_OK)
			goto out;
	}
	if (cfg->notify_socket && cfg->notify_socket[0]) {
		err = notify_setup(w, cfg->notify_socket);
		if (err != KP_OK) {
			kp_log_error(env, "watchdog: NOTIFY_SOCKET \"%s\" unusable", cfg->notify_socket);
			goto out;
		}
		if (cfg->notify_usec > 0) {
			w->notify_watchdog = true;
			int64_t half = cfg->notify_usec / 2000; /* systemd's advice: twice per period */
			if (w->interval_ms == 0 || half < w->interval_ms)
				w->interval_ms = half > 0 ? half : 1;
		}
	}
	w->st.interval_ms = w->interval_ms;
	*out = w;
	return KP_OK;
out:
	kp_watchdog_close(w, true);
	return err;
}

static void feed(kp_watchdog *w, int64_t now)
{
	if (w->kind == WD_DEVICE) {
		int dummy = 0;
		if (ioctl(w->fd, WDIOC_KEEPALIVE, &dummy) == 0)
			w->st.keepalives++;
		else
			kp_log_error(w->env, "watchdog: keepalive: %s", strerror(errno));
	} else if (w->kind == WD_SIM) {
		char line[48];
		int n = snprintf(line, sizeof(line), "keepalive %lld\n", (long long)now);
		if (n > 0 && write(w->fd, line, (size_t)n) == n)
			w->st.keepalives++;
	}
	if (w->notify_watchdog) {
		if (send_notify(w, "WATCHDOG=1") == KP_OK)
			w->st.notifies++;
		else
			kp_log_warn(w->env, "watchdog: WATCHDOG=1 not sent: %s", strerror(errno));
	}
	w->last_feed_ms = now;
	w->fed_once = true;
}

int64_t kp_watchdog_service(kp_watchdog *w, int64_t now_ms, bool healthy, const char *why_not)
{
	if (!w || w->interval_ms == 0)
		return 0;
	int64_t due = w->fed_once ? w->last_feed_ms + w->interval_ms : now_ms;
	if (now_ms < due)
		return due;
	if (!healthy) {
		w->st.withheld++;
		if (!w->withholding)
			kp_log_error(w->env, "watchdog: not fed: %s", why_not ? why_not : "unhealthy");
		w->withholding = true;
		return now_ms + w->interval_ms; /* look again then: no busy loop */
	}
	if (w->withholding)
		kp_log_info(w->env, "watchdog: healthy again, fed");
	w->withholding = false;
	feed(w, now_ms);
	return now_ms + w->interval_ms;
}

void kp_watchdog_close(kp_watchdog *w, bool clean)
{
	if (!w)
		return;
	if (clean && send_notify(w, "STOPPING=1") != KP_OK)
		kp_log_warn(w->env, "watchdog: STOPPING=1 not sent");
	if (w->kind == WD_DEVICE && w->fd >= 0) {
		if (clean && write(w->fd, "V", 1) != 1) /* magic close: disarm (unless nowayout) */
			kp_log_warn(w->env, "watchdog: magic close failed: %s", strerror(errno));
		if (!clean)
			kp_log_warn(w->env, "watchdog: closed without disarming: the board will reset");
	}
	if (w->kind == WD_SIM && w->fd >= 0 && clean) {
		static const char closing[] = "close\n";
		if (write(w->fd, closing, sizeof(closing) - 1) != (ssize_t)(sizeof(closing) - 1))
			kp_log_warn(w->env, "watchdog: sim close line not written");
	}
	if (w->fd >= 0)
		close(w->fd);
	if (w->sock >= 0)
		close(w->sock);
	free(w);
}

void kp_watchdog_stats_get(const kp_watchdog *w, kp_watchdog_stats *out)
{
	*out = w->st;
}

bool kp_watchdog_path_writable(const char *path, uint64_t min_free, char *why, size_t why_cap)
{
	struct statvfs s;
	char dummy[1];
	if (!why) {
		why = dummy;
		why_cap = sizeof(dummy);
	}
	if (!path || !path[0]) {
		snprintf(why, why_cap, "no path");
		return false;
	}
	if (access(path, W_OK) != 0) {
		snprintf(why, why_cap, "%s not writable: %s", path, strerror(errno));
		return false;
	}
	if (statvfs(path, &s) != 0) {
		snprintf(why, why_cap, "%s: statvfs: %s", path, strerror(errno));
		return false;
	}
	if (s.f_flag & ST_RDONLY) {
		snprintf(why, why_cap, "%s is on a read-only file system", path);
		return false;
	}
	if ((uint64_t)s.f_bavail * (uint64_t)s.f_frsize < min_free) {
		snprintf(why, why_cap, "%s: less than %llu bytes free", path, (unsigned long long)min_free);
		return false;
	}
	return true;
}
