/* kioskpayd — the payment service: one poll loop over the CoAP API, the TLS
 * link to the payment host, the engine's timers, the kiosk's devices (MDB,
 * GPIO, watchdog) and signals (SIGTERM/SIGINT stop cleanly, SIGHUP reloads
 * the timings). Everything else is in modules. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "api.h"
#include "bootcheck.h"
#include "config.h"
#include "devices.h"
#include "engine.h"
#include "hostlink.h"
#include "journal.h"
#include "kp_env.h"
#include "kp_failpoint.h"

struct daemon {
	kp_env env;
	kp_config cfg;
	const char *config_path;
	kp_journal *journal;
	kp_hostlink *link;
	kp_engine *engine;
	kp_api *api;
	kp_devices *devices; /* MDB, GPIO, watchdog (app/vend/devices.h) */
	kp_bootcheck *check; /* the journal's quick_check, running beside the loop */
	int64_t check_started;
	int sigfd;
	bool stop;
	bool failed;         /* stop with exit 1 (the unit restarts us, a person looks) */
};

/* ---- the host link as the engine and the API see it ---- */

static bool host_up(void *h)
{
	return kp_hostlink_up(h);
}

static kp_err host_request(void *h, const kp_host_msg *req, kp_engine_reply_fn fn, void *arg)
{
	return kp_hostlink_request(h, req, fn, arg);
}

static kp_err host_ack(void *h, int64_t seq)
{
	return kp_hostlink_ack(h, seq);
}

static const kp_host_ops engine_host_ops = {.up = host_up, .request = host_request, .ack = host_ack};

static size_t host_stats(void *h, kp_api_stat *out, size_t cap)
{
	kp_hostlink_stats s;
	kp_hostlink_stats_get(h, &s);
	const kp_api_stat all[] = {
		{"full_handshakes", (int64_t)s.full_handshakes},
		{"resumed_handshakes", (int64_t)s.resumed_handshakes},
		{"connects_failed", (int64_t)s.connects_failed},
		{"protocol_errors", (int64_t)s.protocol_errors},
		{"requests_sent", (int64_t)s.requests_sent},
		{"replies", (int64_t)s.replies},
		{"timeouts", (int64_t)s.timeouts},
		{"confirms", (int64_t)s.confirms},
	};
	size_t n = sizeof(all) / sizeof(all[0]);
	if (n > cap)
		n = cap;
	memcpy(out, all, n * sizeof(*out));
	return n;
}

static const kp_api_host_ops api_host_ops = {.up = host_up, .stats = host_stats};

/* ---- devices: the engine's changes go to the API and the devices ---- */

static void on_order_change(void *arg, const char *order_id)
{
	struct daemon *d = arg;
	kp_api_on_change(d->api, order_id);
	kp_devices_on_change(d->devices, order_id);
}

static bool devices_host_up(void *arg)
{
	struct daemon *d = arg;
	return d->link && kp_hostlink_up(d->link);
}

static void on_confirm(void *arg, const kp_host_msg *c)
{
	struct daemon *d = arg;
	if (d->engine)
		kp_engine_on_confirm(d->engine, c);
}

static void on_link_state(void *arg, bool up)
{
	struct daemon *d = arg;
	kp_log_info(&d->env, "payment host %s", up ? "connected" : "disconnected");
	if (d->engine)
		kp_engine_on_link(d->engine, up);
}

/* ---- config ---- */

static void engine_config_from(const kp_config *c, kp_engine_config *e)
{
	kp_engine_config_defaults(e);
	snprintf(e->currency, sizeof(e->currency), "%s", c->payment.currency);
	e->max_amount = c->payment.max_amount;
	e->order_ttl_ms = c->payment.order_ttl_ms;
	e->pay_margin_ms = c->payment.pay_margin_ms;
	e->query_every_ms = c->payment.query_every_ms;
	e->pay_window_ms = c->payment.pay_window_ms;
	e->give_up_after_ms = c->payment.give_up_after_ms;
	e->query_backoff_min_ms = c->payment.query_backoff_min_ms;
	e->query_backoff_max_ms = c->payment.query_backoff_max_ms;
	e->refund_retry_ms = c->payment.refund_retry_ms;
	e->refund_retry_max_ms = c->payment.refund_retry_max_ms;
	e->request_timeout_ms = c->host.request_timeout_ms;
	e->power_cut_policy = c->payment.power_cut_policy == KP_POWER_CUT_HOLD ? KP_ENGINE_CUT_HOLD
									       : KP_ENGINE_CUT_REFUND;
}

static int load_config(const char *path, kp_config *out)
{
	char err[512];
	if (kp_config_load(out, path, err, sizeof(err)) != KP_OK ||
	    kp_config_validate(out, KP_CONFIG_NEED_HOST, err, sizeof(err)) != KP_OK) {
		fprintf(stderr, "kioskpayd: config: %s\n", err);
		return -1;
	}
	return 0;
}

static void reload(struct daemon *d)
{
	kp_config fresh;
	if (load_config(d->config_path, &fresh) != 0) {
		kp_log_error(&d->env, "SIGHUP: config not reloaded, keeping the running one");
		return;
	}
	if (strcmp(fresh.journal.path, d->cfg.journal.path) != 0 ||
	    strcmp(fresh.api.listen, d->cfg.api.listen) != 0 ||
	    strcmp(fresh.host.address, d->cfg.host.address) != 0 ||
	    strcmp(fresh.device.id, d->cfg.device.id) != 0)
		kp_log_warn(&d->env, "SIGHUP: journal, api, host and device changes take effect at restart");
	kp_engine_config ec;
	engine_config_from(&fresh, &ec);
	kp_engine_set_config(d->engine, &ec);
	d->env.log_level = fresh.log.level;
	d->cfg.payment = fresh.payment;
	d->cfg.log = fresh.log;
	kp_log_info(&d->env, "SIGHUP: payment timings and log level reloaded");
}

/* ---- start, loop, stop ---- */

static int start(struct daemon *d)
{
	int64_t t0 = kp_now_mono(&d->env);
	kp_err err = kp_journal_open(&d->journal, d->cfg.journal.path, KP_JOURNAL_CHECK_LATER, &d->env);
	if (err != KP_OK) {
		kp_log_error(&d->env, "journal %s: %s%s%s — refusing to run", d->cfg.journal.path,
			     kp_strerror(err), d->journal ? ": " : "",
			     d->journal ? kp_journal_errmsg(d->journal) : "");
		return -1;
	}
	d->check_started = kp_now_mono(&d->env);
	err = kp_bootcheck_start(&d->check, d->cfg.journal.path);
	if (err != KP_OK) {
		kp_log_error(&d->env, "journal check: cannot start: %s", kp_strerror(err));
		return -1;
	}
	kp_hostlink_config hc = {
		.address = d->cfg.host.address,
		.server_name = d->cfg.host.server_name,
		.ca_file = d->cfg.host.ca,
		.cert_file = d->cfg.host.cert,
		.key_file = d->cfg.host.key,
		.device_id = d->cfg.device.id,
		.fw_version = KP_VERSION,
		.request_timeout_ms = d->cfg.host.request_timeout_ms,
		.ping_idle_ms = d->cfg.host.ping_idle_ms,
		.backoff_min_ms = d->cfg.host.reconnect_min_ms,
		.backoff_max_ms = d->cfg.host.reconnect_max_ms,
	};
	err = kp_hostlink_new(&d->link, &hc, &d->env, on_confirm, on_link_state, d);
	if (err != KP_OK) {
		kp_log_error(&d->env, "host link: %s (check [host] ca, cert, key)", kp_strerror(err));
		return -1;
	}
	kp_api_config ac = {.listen = d->cfg.api.listen, .max_payload = (size_t)d->cfg.api.max_payload};
	kp_api_deps ad = {.env = &d->env, .host_ops = &api_host_ops, .host = d->link};
	err = kp_api_new(&d->api, &ac, &ad);
	if (err != KP_OK) {
		kp_log_error(&d->env, "api %s: %s", d->cfg.api.listen, kp_strerror(err));
		return -1;
	}
	kp_engine_config ec;
	engine_config_from(&d->cfg, &ec);
	kp_engine_deps ed = {
		.env = &d->env, .journal = d->journal, .host_ops = &engine_host_ops, .host = d->link,
		.on_change = on_order_change, .on_change_arg = d,
	};
	err = kp_engine_new(&d->engine, &ec, &ed);
	if (err != KP_OK) {
		kp_log_error(&d->env, "engine: %s", kp_strerror(err));
		return -1;
	}
	int64_t found = 0, t1 = kp_now_mono(&d->env);
	err = kp_engine_recover(d->engine, &found);
	if (err != KP_OK) {
		kp_log_error(&d->env, "recovery: %s%s", kp_strerror(err),
			     err == KP_ERR_CORRUPT ? " — refusing to run; the file is left as it is for a "
						     "technician (docs/technicians.md)" : "");
		return -1;
	}
	kp_devices_deps dd = {.env = &d->env, .cfg = &d->cfg, .engine = d->engine, .journal = d->journal,
			      .api = d->api, .host_up = devices_host_up, .host_arg = d};
	err = kp_devices_open(&d->devices, &dd);
	if (err != KP_OK) {
		kp_log_error(&d->env, "devices: %s (check [mdb], [gpio], [watchdog])", kp_strerror(err));
		return -1;
	}
	kp_api_set_backend(d->api, d->engine, d->journal);
	int64_t t2 = kp_now_mono(&d->env);
	kp_log_info(&d->env, "ready: api %s (port %u), journal %s, %lld records to replay "
		    "(started in %lld ms: journal and link %lld ms, recovery %lld ms)",
		    d->cfg.api.listen, (unsigned)kp_api_port(d->api), d->cfg.journal.path, (long long)found,
		    (long long)(t2 - t0), (long long)(t1 - t0), (long long)(t2 - t1));
	kp_devices_ready(d->devices);
	return 0;
}

/* The journal's quick_check came back: a damaged journal stops the service
 * (as it would have refused to start), with no checkpoint into the file. */
static void check_done(struct daemon *d)
{
	char why[512];
	kp_err err = kp_bootcheck_collect(d->check, why, sizeof(why));
	int64_t ms = kp_now_mono(&d->env) - d->check_started;
	if (err == KP_OK) {
		kp_journal_mark_checked(d->journal);
		kp_log_info(&d->env, "journal check: ok (%lld ms)", (long long)ms);
		return;
	}
	kp_log_error(&d->env, "%s (%s) — stopping; the file is left as it is for a technician "
		     "(docs/technicians.md)", why, kp_strerror(err));
	d->stop = true;
	d->failed = true;
}

static void stop(struct daemon *d, bool clean)
{
	/* The devices first: the vend's payments in the engine are detached. */
	kp_devices_close(d->devices, clean);
	d->devices = NULL;
	/* The link next: it fails its requests into the engine, which must be alive. */
	kp_hostlink_free(d->link);
	d->link = NULL;
	if (d->api)
		kp_api_set_backend(d->api, NULL, NULL);
	kp_engine_free(d->engine);
	d->engine = NULL;
	kp_api_free(d->api);
	d->api = NULL;
	/* A check still running reads the file: wait for it before closing. */
	kp_bootcheck_free(d->check);
	d->check = NULL;
	kp_journal_close(d->journal);
	d->journal = NULL;
}

static int poll_timeout(struct daemon *d, int64_t engine_next_wall)
{
	int64_t t = 1000;
	int64_t now_w = kp_now_wall(&d->env);
	if (engine_next_wall > 0 && engine_next_wall - now_w < t)
		t = engine_next_wall - now_w;
	int64_t dl = kp_hostlink_deadline(d->link);
	if (dl > 0 && dl - kp_now_mono(&d->env) < t)
		t = dl - kp_now_mono(&d->env);
	dl = kp_devices_deadline(d->devices);
	if (dl > 0 && dl - kp_now_mono(&d->env) < t)
		t = dl - kp_now_mono(&d->env);
	return t < 0 ? 0 : (int)t;
}

static void handle_signals(struct daemon *d)
{
	struct signalfd_siginfo si;
	while (read(d->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGHUP) {
			reload(d);
		} else {
			kp_log_info(&d->env, "signal %u: stopping", si.ssi_signo);
			d->stop = true;
		}
	}
}

/* Runs until a signal stops it (0) or poll itself fails (-1). */
static int loop(struct daemon *d)
{
	int64_t next = 0;
	while (!d->stop) {
		/* The turn's due work reads in one snapshot, ended before the
		 * loop sleeps (kp_journal_read_begin). */
		kp_journal_read_begin(d->journal);
		kp_hostlink_tick(d->link);
		next = kp_engine_tick(d->engine);
		kp_journal_read_end(d->journal);
		struct pollfd pfd[4 + KP_DEVICES_POLLFDS];
		pfd[0] = (struct pollfd){.fd = d->sigfd, .events = POLLIN};
		kp_api_pollfd(d->api, &pfd[1]);
		kp_hostlink_pollfd(d->link, &pfd[2]);
		pfd[3] = (struct pollfd){.fd = kp_bootcheck_fd(d->check), .events = POLLIN};
		size_t ndev = kp_devices_pollfds(d->devices, &pfd[4], KP_DEVICES_POLLFDS);
		int n = poll(pfd, (nfds_t)(4 + ndev), poll_timeout(d, next));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			kp_log_error(&d->env, "poll: %s: stopping with an error so that the unit restarts",
				     strerror(errno));
			return -1;
		}
		if (pfd[0].revents)
			handle_signals(d);
		if (pfd[1].fd >= 0 && pfd[1].revents)
			kp_api_process(d->api, pfd[1].revents);
		if (pfd[2].fd >= 0 && pfd[2].revents)
			kp_hostlink_process(d->link, pfd[2].revents);
		if (pfd[3].fd >= 0 && pfd[3].revents)
			check_done(d);
		kp_devices_process(d->devices, &pfd[4], ndev); /* every turn: also feeds the watchdog */
	}
	return d->failed ? -1 : 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kioskpayd -c FILE            run the payment service\n"
		"       kioskpayd --check-config -c FILE   check the config, print it, exit\n"
		"       kioskpayd --version\n"
		"exit codes: 0 clean stop / config ok, 1 cannot start / config bad, 2 usage\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"check-config", no_argument, NULL, 'k'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct daemon d;
	memset(&d, 0, sizeof(d));
	d.sigfd = -1;
	bool check_only = false;
	int c;
	while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c': d.config_path = optarg; break;
		case 'k': check_only = true; break;
		case 'V': printf("kioskpayd %s\n", KP_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!d.config_path || optind != argc) {
		usage(stderr);
		return 2;
	}
	if (load_config(d.config_path, &d.cfg) != 0)
		return 1;
	if (check_only) {
		kp_config_dump(&d.cfg, stdout);
		printf("# %s: ok\n", d.config_path);
		return 0;
	}
	kp_env_init_system(&d.env);
	d.env.log_level = d.cfg.log.level;
	/* glibc gives freed heap back to the kernel above 128 KiB of slack; SQLite
	 * frees and re-takes about that much per savepoint, so a boot replay spent
	 * a third of its time in brk(). Keep up to 1 MiB (bounded; RSS < 8 MiB). */
	if (mallopt(M_TRIM_THRESHOLD, 1 << 20) != 1)
		kp_log_warn(&d.env, "mallopt(M_TRIM_THRESHOLD) refused; replay will be slower");
	if (kp_failpoint_init_from_env() != KP_OK) {
		fprintf(stderr, "kioskpayd: KP_FAILPOINTS: bad spec\n");
		return 2;
	}

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	d.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (d.sigfd < 0) {
		perror("kioskpayd: signalfd");
		return 1;
	}
	int rc = 1;
	if (start(&d) == 0 && loop(&d) == 0)
		rc = 0;
	stop(&d, rc == 0);
	close(d.sigfd);
	if (rc == 0)
		kp_log_info(&d.env, "stopped");
	return rc;
}
