/* gpio.c — both backends of gpio.h. The chardev one requests all wired lines
 * in one GPIO_V2_GET_LINE_IOCTL (inputs, both edges, active-low and debounce
 * as per-line attributes) and reads struct gpio_v2_line_event from the line
 * fd; the sim one parses text lines from a FIFO. Chosen over libgpiod: no new
 * dependency in the cross sysroots, and the v2 uAPI is stable since Linux
 * 5.10 while libgpiod changed its API between 1.6 and 2.x. */
#include "gpio.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/gpio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIM_PREFIX "sim:"
#define SIM_LINE_MAX 64

struct kp_gpio {
	const kp_env *env;
	kp_gpio_config cfg;
	bool sim;
	int fd;                         /* line request fd, or the FIFO */
	int index[KP_GPIO__COUNT];      /* chardev: index in the request, -1 unwired */
	bool level[KP_GPIO__COUNT];     /* sim: present levels */
	char buf[SIM_LINE_MAX * 4];     /* sim: partial input */
	size_t len;
};

static const char *const line_names[KP_GPIO__COUNT] = {
	[KP_GPIO_POWER_FAIL] = "power_fail",
	[KP_GPIO_VEND_OK] = "vend_ok",
	[KP_GPIO_VEND_FAIL] = "vend_fail",
};

const char *kp_gpio_line_name(kp_gpio_line line)
{
	return (unsigned)line < KP_GPIO__COUNT ? line_names[line] : "?";
}

static bool wired(const kp_gpio *g, kp_gpio_line l)
{
	return g->cfg.lines[l].offset >= 0;
}

/* ---- chardev ---- */

static kp_err chardev_open(kp_gpio *g)
{
	kp_err err = KP_OK;
	struct gpio_v2_line_request req;
	int chip = open(g->cfg.chip, O_RDWR | O_CLOEXEC);
	if (chip < 0) {
		kp_log_error(g->env, "gpio: %s: %s", g->cfg.chip, strerror(errno));
		return KP_ERR_IO;
	}
	memset(&req, 0, sizeof(req));
	snprintf(req.consumer, sizeof(req.consumer), "kioskpayd");
	const uint64_t base = GPIO_V2_LINE_FLAG_INPUT | GPIO_V2_LINE_FLAG_EDGE_RISING | GPIO_V2_LINE_FLAG_EDGE_FALLING;
	req.config.flags = base;
	uint64_t low_mask = 0;
	for (int l = 0; l < KP_GPIO__COUNT; l++) {
		g->index[l] = -1;
		if (!wired(g, (kp_gpio_line)l))
			continue;
		g->index[l] = (int)req.num_lines;
		if (g->cfg.lines[l].active_low)
			low_mask |= UINT64_C(1) << req.num_lines;
		req.offsets[req.num_lines++] = (uint32_t)g->cfg.lines[l].offset;
	}
	unsigned a = 0;
	if (low_mask) {
		req.config.attrs[a].attr.id = GPIO_V2_LINE_ATTR_ID_FLAGS;
		req.config.attrs[a].attr.flags = base | GPIO_V2_LINE_FLAG_ACTIVE_LOW;
		req.config.attrs[a].mask = low_mask;
		a++;
	}
	if (g->cfg.debounce_ms > 0) {
		req.config.attrs[a].attr.id = GPIO_V2_LINE_ATTR_ID_DEBOUNCE;
		req.config.attrs[a].attr.debounce_period_us = (uint32_t)g->cfg.debounce_ms * 1000u;
		req.config.attrs[a].mask = (UINT64_C(1) << req.num_lines) - 1;
		a++;
	}
	req.config.num_attrs = a;
	req.event_buffer_size = 16;
	if (ioctl(chip, GPIO_V2_GET_LINE_IOCTL, &req) != 0) {
		kp_log_error(g->env, "gpio: %s: cannot request lines: %s", g->cfg.chip, strerror(errno));
		err = KP_ERR_IO;
		goto out;
	}
	g->fd = req.fd;
	int fl = fcntl(g->fd, F_GETFL);
	if (fl < 0 || fcntl(g->fd, F_SETFL, fl | O_NONBLOCK) != 0 || fcntl(g->fd, F_SETFD, FD_CLOEXEC) != 0) {
		kp_log_error(g->env, "gpio: line fd: %s", strerror(errno));
		err = KP_ERR_IO;
	}
out:
	close(chip);
	return err;
}

static kp_err chardev_read(kp_gpio *g, kp_gpio_event *ev)
{
	for (;;) {
		struct gpio_v2_line_event e;
		ssize_t r = read(g->fd, &e, sizeof(e));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return KP_ERR_TIMEOUT;
		if (r != (ssize_t)sizeof(e))
			return KP_ERR_IO;
		for (int l = 0; l < KP_GPIO__COUNT; l++) {
			if (wired(g, (kp_gpio_line)l) && (uint32_t)g->cfg.lines[l].offset == e.offset) {
				ev->line = (kp_gpio_line)l;
				ev->active = e.id == GPIO_V2_LINE_EVENT_RISING_EDGE; /* edges are logical */
				return KP_OK;
			}
		}
	}
}

static kp_err chardev_get(kp_gpio *g, kp_gpio_line line, bool *active)
{
	struct gpio_v2_line_values v = {.bits = 0, .mask = UINT64_C(1) << g->index[line]};
	if (ioctl(g->fd, GPIO_V2_LINE_GET_VALUES_IOCTL, &v) != 0)
		return KP_ERR_IO;
	*active = (v.bits & v.mask) != 0; /* logical: active-low is inverted by the kernel */
	return KP_OK;
}

/* ---- sim ---- */

static kp_err sim_open(kp_gpio *g)
{
	const char *path = g->cfg.chip + strlen(SIM_PREFIX);
	if (mkfifo(path, 0600) != 0 && errno != EEXIST) {
		kp_log_error(g->env, "gpio: sim %s: %s", path, strerror(errno));
		return KP_ERR_IO;
	}
	/* read-write, so that the FIFO never reports a hang-up between writers */
	g->fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (g->fd < 0) {
		kp_log_error(g->env, "gpio: sim %s: %s", path, strerror(errno));
		return KP_ERR_IO;
	}
	return KP_OK;
}

/* One text line: "name 0|1"; KP_OK with an event if a wired line changed. */
static kp_err sim_line(kp_gpio *g, const char *text, kp_gpio_event *ev)
{
	char name[SIM_LINE_MAX];
	int level = -1;
	char extra;
	if (sscanf(text, "%63s %d %c", name, &level, &extra) != 2 || (level != 0 && level != 1)) {
		if (text[0])
			kp_log_warn(g->env, "gpio: sim: want \"name 0|1\", got \"%s\"", text);
		return KP_ERR_TIMEOUT;
	}
	for (int l = 0; l < KP_GPIO__COUNT; l++) {
		if (strcmp(name, line_names[l]) != 0)
			continue;
		if (!wired(g, (kp_gpio_line)l)) {
			kp_log_warn(g->env, "gpio: sim: line %s is not wired", name);
			return KP_ERR_TIMEOUT;
		}
		if (g->level[l] == (level == 1))
			return KP_ERR_TIMEOUT; /* no edge */
		g->level[l] = level == 1;
		ev->line = (kp_gpio_line)l;
		ev->active = g->level[l];
		return KP_OK;
	}
	kp_log_warn(g->env, "gpio: sim: no line \"%s\"", name);
	return KP_ERR_TIMEOUT;
}

static kp_err sim_read(kp_gpio *g, kp_gpio_event *ev)
{
	for (;;) {
		char *nl = memchr(g->buf, '\n', g->len);
		if (nl) {
			*nl = '\0';
			size_t used = (size_t)(nl - g->buf) + 1;
			kp_err err = sim_line(g, g->buf, ev);
			memmove(g->buf, g->buf + used, g->len - used);
			g->len -= used;
			if (err == KP_OK)
				return KP_OK;
			continue;
		}
		if (g->len == sizeof(g->buf)) {
			kp_log_warn(g->env, "gpio: sim: line too long, dropped");
			g->len = 0;
		}
		ssize_t r = read(g->fd, g->buf + g->len, sizeof(g->buf) - g->len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return KP_ERR_TIMEOUT;
		if (r <= 0)
			return KP_ERR_IO;
		g->len += (size_t)r;
	}
}

/* ---- common ---- */

kp_err kp_gpio_open(kp_gpio **out, const kp_gpio_config *cfg, const kp_env *env)
{
	if (!out || !cfg || !env || !cfg->chip || !cfg->chip[0] || cfg->debounce_ms < 0)
		return KP_ERR_INVALID;
	*out = NULL;
	int n = 0;
	for (int l = 0; l < KP_GPIO__COUNT; l++) {
		int off = cfg->lines[l].offset;
		if (off < 0)
			continue;
		if (off >= 1024)
			return KP_ERR_INVALID;
		for (int k = 0; k < l; k++)
			if (cfg->lines[k].offset == off)
				return KP_ERR_INVALID; /* one pin, two meanings */
		n++;
	}
	if (n == 0)
		return KP_ERR_INVALID;
	kp_gpio *g = calloc(1, sizeof(*g));
	if (!g)
		return KP_ERR_NOMEM;
	g->env = env;
	g->cfg = *cfg;
	g->fd = -1;
	g->sim = strncmp(cfg->chip, SIM_PREFIX, strlen(SIM_PREFIX)) == 0;
	kp_err err = g->sim ? sim_open(g) : chardev_open(g);
	if (err != KP_OK) {
		kp_gpio_close(g);
		return err;
	}
	/* cfg->chip is the caller's: keep nothing that points into it */
	g->cfg.chip = g->sim ? "sim" : "chardev";
	*out = g;
	return KP_OK;
}

void kp_gpio_close(kp_gpio *g)
{
	if (!g)
		return;
	if (g->fd >= 0)
		close(g->fd);
	free(g);
}

int kp_gpio_fd(const kp_gpio *g)
{
	return g ? g->fd : -1;
}

kp_err kp_gpio_read(kp_gpio *g, kp_gpio_event *ev)
{
	if (!g || !ev)
		return KP_ERR_INVALID;
	return g->sim ? sim_read(g, ev) : chardev_read(g, ev);
}

kp_err kp_gpio_get(kp_gpio *g, kp_gpio_line line, bool *active)
{
	if (!g || !active || (unsigned)line >= KP_GPIO__COUNT || !wired(g, line))
		return KP_ERR_INVALID;
	if (g->sim) {
		*active = g->level[line];
		return KP_OK;
	}
	return chardev_get(g, line, active);
}
