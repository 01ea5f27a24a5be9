/* gpio.h — the kiosk's signal inputs: power failing (from the supply's
 * power-fail output or a UPS/supercap supervisor) and, for kiosks without
 * MDB, the dispenser's vend outcome (a success line and a failure line).
 * Two backends: the Linux GPIO character device through the uAPI v2 ioctls
 * of <linux/gpio.h> (no libgpiod), and a sim that reads "name 0|1" lines
 * from a FIFO, for tests and the demo. Edges come out as events. */
#ifndef KP_GPIO_H
#define KP_GPIO_H

#include <stdbool.h>
#include <stdint.h>

#include "kp_env.h"
#include "kp_error.h"

typedef struct kp_gpio kp_gpio;

typedef enum kp_gpio_line {
	KP_GPIO_POWER_FAIL = 0, /* active: power is failing, stop taking sales */
	KP_GPIO_VEND_OK,        /* active edge: the dispenser delivered */
	KP_GPIO_VEND_FAIL,      /* active edge: the dispenser failed */
	KP_GPIO__COUNT
} kp_gpio_line;

typedef struct kp_gpio_line_cfg {
	int offset;      /* line number on the chip; -1 = not wired */
	bool active_low; /* active is the low level (typical of open-drain power-fail outputs) */
} kp_gpio_line_cfg;

typedef struct kp_gpio_config {
	/* "/dev/gpiochipN", or "sim:PATH" (a FIFO, made if missing, that takes
	 * lines like "power_fail 1"; offsets are ignored but a line must still be
	 * wired, i.e. offset >= 0, to be reported). */
	const char *chip;
	kp_gpio_line_cfg lines[KP_GPIO__COUNT];
	int debounce_ms; /* asked of the kernel (chardev); 0 = none */
} kp_gpio_config;

typedef struct kp_gpio_event {
	kp_gpio_line line;
	bool active;     /* the line became active (true) or inactive */
} kp_gpio_event;

/* Open the chip and request the wired lines as inputs with both edges.
 * KP_ERR_INVALID for a bad config (no line wired, an offset twice),
 * KP_ERR_IO if the chip or a line cannot be had (the message is logged),
 * KP_ERR_NOMEM. env is borrowed (log). */
kp_err kp_gpio_open(kp_gpio **out, const kp_gpio_config *cfg, const kp_env *env) KP_MUST_USE;
/* Safe on NULL. */
void kp_gpio_close(kp_gpio *g);

/* The fd to poll for POLLIN. */
int kp_gpio_fd(const kp_gpio *g);
/* The next edge: KP_OK and *ev; KP_ERR_TIMEOUT when none is waiting;
 * KP_ERR_IO if the fd failed. A sim line with a bad name or level is logged
 * and skipped. */
kp_err kp_gpio_read(kp_gpio *g, kp_gpio_event *ev) KP_MUST_USE;
/* The present level of a wired line (true = active). KP_ERR_INVALID for a
 * line that is not wired. */
kp_err kp_gpio_get(kp_gpio *g, kp_gpio_line line, bool *active) KP_MUST_USE;

/* "power_fail", "vend_ok", "vend_fail"; never NULL. */
const char *kp_gpio_line_name(kp_gpio_line line);

#endif
