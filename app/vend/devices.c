/* devices.c — opens the kiosk's devices from the config and runs them from
 * the daemon's loop: MDB frames through kp_vend, GPIO edges (power failing
 * stops new sales in the API and on the bus; a vend outcome line records the
 * vend of the oldest order paid in this run), and the watchdog fed when the
 * journal's file system is writable. */
#include "devices.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpio.h"
#include "mdb_serial.h"
#include "mdb_sim.h"
#include "vend.h"
#include "watchdog.h"

#define PAID_FIFO 16                    /* paid orders waiting for a GPIO vend outcome */
#define JOURNAL_MIN_FREE (1024 * 1024)  /* the watchdog's "journal writable": 1 MiB free at least */
#define POWER_FAILING "power failing"

struct kp_devices {
	kp_devices_deps d;
	kp_vend *vend;
	kp_mdb_sim *sim;        /* [mdb] device = sim */
	kp_gpio *gpio;
	kp_watchdog *wd;
	int64_t wd_due;         /* monotonic; 0 = nothing to feed */
	bool power_failing;
	char paid[PAID_FIFO][KP_ID_SIZE]; /* oldest first */
	size_t npaid;
};

static bool host_up_always(void *arg)
{
	(void)arg;
	return true;
}

static kp_err open_mdb(kp_devices *dev)
{
	const kp_config *c = dev->d.cfg;
	const kp_env *env = dev->d.env;
	kp_mdb_transport t = {0};
	kp_err err;
	if (strcmp(c->mdb.device, "none") == 0)
		return KP_OK;
	if (strcmp(c->mdb.device, "sim") == 0) {
		uint64_t seed = 0;
		err = env->random(env->ctx, &seed, sizeof(seed));
		if (err == KP_OK)
			err = kp_mdb_sim_new(&dev->sim, env, seed);
		if (err != KP_OK)
			return err;
		kp_mdb_sim_transport(dev->sim, &t);
	} else {
		kp_mdb_serial_config sc = {.path = c->mdb.device, .role = KP_MDB_ROLE_PERIPHERAL};
		char *end = NULL;
		unsigned long baud = strtoul(c->mdb.baud, &end, 10);
		if (kp_mdb_framing_from_string(c->mdb.framing, &sc.framing) != KP_OK || !end || *end || baud > 115200) {
			kp_log_error(env, "mdb: framing %s or baud %s not usable", c->mdb.framing, c->mdb.baud);
			return KP_ERR_INVALID;
		}
		sc.baud = (unsigned)baud;
		err = kp_mdb_serial_open(&t, &sc, env);
		if (err != KP_OK) {
			kp_log_error(env, "mdb: %s: %s", c->mdb.device, kp_strerror(err));
			return err;
		}
	}
	kp_vend_config vc = {
		.currency = c->payment.currency,
		.max_amount = c->payment.max_amount,
		.patience_ms = c->mdb.patience_ms,
		.session_idle_ms = c->mdb.session_idle_ms,
	};
	kp_vend_deps vd = {
		.env = env, .engine = dev->d.engine, .journal = dev->d.journal, .transport = t,
		.host_up = dev->d.host_up ? dev->d.host_up : host_up_always, .host_arg = dev->d.host_arg,
	};
	err = kp_vend_new(&dev->vend, &vc, &vd); /* takes t, also on error */
	if (err != KP_OK) {
		kp_log_error(env, "mdb: reader: %s", kp_strerror(err));
		return err;
	}
	int64_t canceled = 0;
	err = kp_vend_recover(dev->vend, &canceled);
	if (err != KP_OK) {
		kp_log_error(env, "mdb: canceling the vend requests of the last run: %s", kp_strerror(err));
		return err;
	}
	if (dev->sim)
		kp_log_info(env, "mdb: cashless reader on an in-process VMC, patience %lld ms",
			    (long long)c->mdb.patience_ms);
	else
		kp_log_info(env, "mdb: cashless reader on %s (%s framing), patience %lld ms", c->mdb.device,
			    c->mdb.framing, (long long)c->mdb.patience_ms);
	return KP_OK;
}

static void set_power_failing(kp_devices *dev, bool failing)
{
	if (dev->power_failing == failing)
		return;
	dev->power_failing = failing;
	if (failing)
		kp_log_warn(dev->d.env, "power failing: no new sales; sales under way finish");
	else
		kp_log_info(dev->d.env, "power back: taking sales again");
	if (dev->d.api)
		kp_api_set_refusing(dev->d.api, failing ? POWER_FAILING : NULL);
	kp_vend_set_selling(dev->vend, !failing, failing ? POWER_FAILING : "power back");
}

static kp_err open_gpio(kp_devices *dev)
{
	const kp_config *c = dev->d.cfg;
	if (strcmp(c->gpio.chip, "none") == 0)
		return KP_OK;
	kp_gpio_config gc = {.chip = c->gpio.chip, .debounce_ms = (int)c->gpio.debounce_ms};
	const kp_config_line *lines[KP_GPIO__COUNT] = {
		[KP_GPIO_POWER_FAIL] = &c->gpio.power_fail,
		[KP_GPIO_VEND_OK] = &c->gpio.vend_ok,
		[KP_GPIO_VEND_FAIL] = &c->gpio.vend_fail,
	};
	for (int l = 0; l < KP_GPIO__COUNT; l++) {
		gc.lines[l].offset = (int)lines[l]->offset;
		gc.lines[l].active_low = lines[l]->active_low;
	}
	kp_err err = kp_gpio_open(&dev->gpio, &gc, dev->d.env);
	if (err != KP_OK) {
		kp_log_error(dev->d.env, "gpio: %s: %s", c->gpio.chip, kp_strerror(err));
		return err;
	}
	bool failing = false;
	if (c->gpio.power_fail.offset >= 0) {
		err = kp_gpio_get(dev->gpio, KP_GPIO_POWER_FAIL, &failing);
		if (err != KP_OK) {
			kp_log_error(dev->d.env, "gpio: cannot read power_fail: %s", kp_strerror(err));
			return err;
		}
	}
	set_power_failing(dev, failing);
	kp_log_info(dev->d.env, "gpio: %s, power_fail %" PRId64 ", vend_ok %" PRId64 ", vend_fail %" PRId64,
		    c->gpio.chip, c->gpio.power_fail.offset, c->gpio.vend_ok.offset, c->gpio.vend_fail.offset);
	return KP_OK;
}

static kp_err open_watchdog(kp_devices *dev)
{
	const kp_config *c = dev->d.cfg;
	kp_watchdog_config wc = {
		.device = strcmp(c->watchdog.device, "none") == 0 ? "" : c->watchdog.device,
		.timeout_ms = c->watchdog.timeout_ms,
		.notify_socket = getenv("NOTIFY_SOCKET"),
	};
	const char *usec = getenv("WATCHDOG_USEC");
	const char *pid = getenv("WATCHDOG_PID");
	if (usec && (!pid || strtol(pid, NULL, 10) == (long)getpid())) {
		char *end = NULL;
		errno = 0;
		long long v = strtoll(usec, &end, 10);
		if (errno == 0 && end && *end == '\0' && v > 0)
			wc.notify_usec = v;
		else
			kp_log_warn(dev->d.env, "watchdog: WATCHDOG_USEC=\"%s\" ignored: not a number", usec);
	}
	kp_err err = kp_watchdog_open(&dev->wd, &wc, dev->d.env);
	if (err != KP_OK)
		kp_log_error(dev->d.env, "watchdog: %s", kp_strerror(err));
	return err;
}

kp_err kp_devices_open(kp_devices **out, const kp_devices_deps *deps)
{
	if (!out || !deps || !deps->env || !deps->cfg || !deps->engine || !deps->journal)
		return KP_ERR_INVALID;
	*out = NULL;
	kp_devices *dev = calloc(1, sizeof(*dev));
	if (!dev)
		return KP_ERR_NOMEM;
	dev->d = *deps;
	kp_err err = open_mdb(dev);
	if (err == KP_OK)
		err = open_gpio(dev);
	if (err == KP_OK)
		err = open_watchdog(dev);
	if (err != KP_OK) {
		kp_devices_close(dev, true);
		return err;
	}
	dev->wd_due = kp_now_mono(deps->env);
	*out = dev;
	return KP_OK;
}

void kp_devices_close(kp_devices *dev, bool clean)
{
	if (!dev)
		return;
	kp_vend_free(dev->vend);
	kp_mdb_sim_free(dev->sim);
	kp_gpio_close(dev->gpio);
	kp_watchdog_close(dev->wd, clean);
	free(dev);
}

void kp_devices_ready(kp_devices *dev)
{
	if (dev && dev->wd && kp_watchdog_notify(dev->wd, "READY=1") != KP_OK)
		kp_log_warn(dev->d.env, "systemd: READY=1 not sent");
}

size_t kp_devices_pollfds(const kp_devices *dev, struct pollfd *pfd, size_t cap)
{
	size_t n = 0;
	if (!dev)
		return 0;
	if (dev->vend && n < cap)
		kp_vend_pollfd(dev->vend, &pfd[n++]);
	if (dev->gpio && n < cap)
		pfd[n++] = (struct pollfd){.fd = kp_gpio_fd(dev->gpio), .events = POLLIN};
	return n;
}

/* ---- vend outcome on GPIO (kiosks without MDB) ---- */

static void paid_remember(kp_devices *dev, const char *order_id)
{
	for (size_t i = 0; i < dev->npaid; i++)
		if (strcmp(dev->paid[i], order_id) == 0)
			return;
	if (dev->npaid == PAID_FIFO) {
		kp_log_warn(dev->d.env, "gpio: %d paid orders wait for a vend outcome; forgetting order %s", PAID_FIFO,
			    dev->paid[0]);
		memmove(dev->paid[0], dev->paid[1], (PAID_FIFO - 1) * sizeof(dev->paid[0]));
		dev->npaid--;
	}
	snprintf(dev->paid[dev->npaid++], KP_ID_SIZE, "%s", order_id);
}

/* The dispenser reported: the oldest order paid in this run that is still
 * waiting for its outcome gets it. */
static void vend_outcome(kp_devices *dev, bool ok)
{
	while (dev->npaid > 0) {
		char id[KP_ID_SIZE];
		snprintf(id, sizeof(id), "%s", dev->paid[0]);
		kp_order o;
		kp_err err = kp_journal_order_get(dev->d.journal, id, &o);
		if (err != KP_OK) {
			kp_log_error(dev->d.env, "gpio: vend %s: order %s: %s; edge ignored", ok ? "ok" : "failed", id,
				     kp_strerror(err));
			return;
		}
		memmove(dev->paid[0], dev->paid[1], (dev->npaid - 1) * sizeof(dev->paid[0]));
		dev->npaid--;
		if (o.state != KP_ORDER_PAID)
			continue; /* its outcome came another way (the API) */
		err = kp_engine_vend(dev->d.engine, id, ok, &o);
		if (err == KP_OK) {
			kp_log_info(dev->d.env, "gpio: vend %s for order %s", ok ? "ok" : "failed", id);
		} else {
			kp_log_error(dev->d.env, "gpio: vend %s for order %s not recorded: %s", ok ? "ok" : "failed", id,
				     kp_strerror(err));
			paid_remember(dev, id); /* try again at the next edge */
		}
		return;
	}
	kp_log_warn(dev->d.env, "gpio: vend %s with no paid order waiting: ignored", ok ? "ok" : "failed");
}

void kp_devices_on_change(kp_devices *dev, const char *order_id)
{
	if (!dev || !order_id)
		return;
	kp_vend_on_change(dev->vend, order_id);
	const kp_config *c = dev->d.cfg;
	if (c->gpio.vend_ok.offset < 0 && c->gpio.vend_fail.offset < 0)
		return;
	kp_order o;
	if (kp_journal_order_get(dev->d.journal, order_id, &o) == KP_OK && o.state == KP_ORDER_PAID)
		paid_remember(dev, order_id);
}

static void read_gpio(kp_devices *dev)
{
	kp_gpio_event ev;
	kp_err err;
	while ((err = kp_gpio_read(dev->gpio, &ev)) == KP_OK) {
		kp_log_debug(dev->d.env, "gpio: %s %s", kp_gpio_line_name(ev.line), ev.active ? "active" : "inactive");
		if (ev.line == KP_GPIO_POWER_FAIL)
			set_power_failing(dev, ev.active);
		else if (ev.active)
			vend_outcome(dev, ev.line == KP_GPIO_VEND_OK);
	}
	if (err != KP_ERR_TIMEOUT)
		kp_log_error(dev->d.env, "gpio: read: %s", kp_strerror(err));
}

void kp_devices_process(kp_devices *dev, const struct pollfd *pfd, size_t n)
{
	if (!dev)
		return;
	for (size_t i = 0; i < n; i++)
		if (dev->gpio && pfd[i].fd >= 0 && pfd[i].fd == kp_gpio_fd(dev->gpio) && pfd[i].revents)
			read_gpio(dev);
	kp_vend_process(dev->vend); /* cheap when nothing is due; reads only what is there */
	int64_t now = kp_now_mono(dev->d.env);
	if (dev->wd && dev->wd_due != 0 && now >= dev->wd_due) {
		char why[256];
		bool healthy = kp_watchdog_path_writable(dev->d.cfg->journal.path, JOURNAL_MIN_FREE, why, sizeof(why));
		dev->wd_due = kp_watchdog_service(dev->wd, now, healthy, why);
	}
}

int64_t kp_devices_deadline(const kp_devices *dev)
{
	if (!dev)
		return 0;
	int64_t d = dev->vend ? kp_vend_deadline(dev->vend) : 0;
	if (dev->wd && dev->wd_due != 0 && (d == 0 || dev->wd_due < d))
		d = dev->wd_due;
	return d;
}

bool kp_devices_power_failing(const kp_devices *dev)
{
	return dev && dev->power_failing;
}
