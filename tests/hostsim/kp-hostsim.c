/* kp-hostsim.c — the payment host simulator: a real mbedtls TLS server speaking
 * host protocol v1 for kioskpayd and its tests, with a SQLite ledger, a control
 * port to play the customer and inject faults, and an offline ledger dump.
 * See docs/hostsim.md. */
#include "hostsim.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kp-hostsim --listen HOST:PORT --control HOST:PORT --ledger FILE\n"
		"                  --ca CA.crt --cert HOST.crt --key HOST.key [options]\n"
		"       kp-hostsim --dump --ledger FILE\n"
		"options:\n"
		"  --tls11-only              offer only TLS 1.1 (refusal tests)\n"
		"  --seed N                  seed host_txn / orphan ids (default: random)\n"
		"  --confirm-interval-ms N   redeliver unacked confirms every N ms (30000; 0 off)\n"
		"  --max-amount N            create_payment above N gets error over_limit (0 off)\n"
		"  --script FILE             control commands to run, one JSON per line (at_ms)\n"
		"  --port-file FILE          write \"PORT CONTROL_PORT\\n\" once listening\n"
		"  --verbose                 debug log lines on stderr\n"
		"Port 0 picks a free port; the ready line on stdout names the real ones.\n"
		"Exit: 0 clean stop (SIGTERM/SIGINT), 1 failure, 2 usage.\n");
}

static bool parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	char *end = NULL;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* Parse argv into opt; returns 0 to run, 2 on a usage error, 3 for --dump, 4 for --help. */
static int parse_args(int argc, char **argv, hs_options *opt)
{
	bool dump = false;
	memset(opt, 0, sizeof(*opt));
	opt->confirm_interval_ms = 30000;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		const char **str = NULL;
		if (strcmp(a, "--listen") == 0) str = &opt->listen;
		else if (strcmp(a, "--control") == 0) str = &opt->control;
		else if (strcmp(a, "--ledger") == 0) str = &opt->ledger;
		else if (strcmp(a, "--ca") == 0) str = &opt->ca;
		else if (strcmp(a, "--cert") == 0) str = &opt->cert;
		else if (strcmp(a, "--key") == 0) str = &opt->key;
		else if (strcmp(a, "--script") == 0) str = &opt->script;
		else if (strcmp(a, "--port-file") == 0) str = &opt->port_file;
		if (str) {
			if (!v) {
				fprintf(stderr, "kp-hostsim: %s needs a value\n", a);
				return 2;
			}
			*str = v;
			i++;
			continue;
		}
		int64_t n = 0;
		if (strcmp(a, "--tls11-only") == 0) {
			opt->tls11_only = true;
		} else if (strcmp(a, "--verbose") == 0) {
			opt->verbose = true;
		} else if (strcmp(a, "--dump") == 0) {
			dump = true;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			return 4;
		} else if (strcmp(a, "--seed") == 0 && v && parse_i64(v, 0, INT64_MAX, &n)) {
			opt->seeded = true;
			opt->seed = (uint64_t)n;
			i++;
		} else if (strcmp(a, "--confirm-interval-ms") == 0 && v && parse_i64(v, 0, 86400000, &n)) {
			opt->confirm_interval_ms = n;
			i++;
		} else if (strcmp(a, "--max-amount") == 0 && v && parse_i64(v, 0, INT64_C(1) << 50, &n)) {
			opt->max_amount = n;
			i++;
		} else {
			fprintf(stderr, "kp-hostsim: bad argument '%s'%s%s\n", a, v ? " " : "", v ? v : "");
			return 2;
		}
	}
	if (dump) {
		if (!opt->ledger) {
			fprintf(stderr, "kp-hostsim: --dump needs --ledger FILE\n");
			return 2;
		}
		return 3;
	}
	const char *missing = !opt->listen ? "--listen" : !opt->control ? "--control" : !opt->ledger ? "--ledger"
			      : !opt->ca ? "--ca" : !opt->cert ? "--cert" : !opt->key ? "--key" : NULL;
	if (missing) {
		fprintf(stderr, "kp-hostsim: %s is required\n", missing);
		return 2;
	}
	return 0;
}

static int dump_offline(const char *path)
{
	kp_env env;
	kp_ledger *l = NULL;
	cJSON *d = NULL;
	char *text = NULL;
	int rc = 1;
	kp_env_init_system(&env);
	if (kp_ledger_open(&l, path, true) != KP_OK)
		goto out;
	if (kp_ledger_dump(l, kp_now_wall(&env), &d) != KP_OK) {
		fprintf(stderr, "kp-hostsim: cannot dump %s\n", path);
		goto out;
	}
	text = cJSON_PrintUnformatted(d);
	if (!text)
		goto out;
	printf("%s\n", text);
	rc = fflush(stdout) == 0 ? 0 : 1;
out:
	cJSON_free(text);
	cJSON_Delete(d);
	kp_ledger_close(l);
	return rc;
}

static kp_err write_port_file(const char *path, uint16_t port, uint16_t ctl)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return KP_ERR_TOO_BIG;
	FILE *f = fopen(tmp, "w");
	if (!f)
		return KP_ERR_IO;
	bool ok = fprintf(f, "%u %u\n", port, ctl) > 0;
	ok = fflush(f) == 0 && ok;
	ok = fsync(fileno(f)) == 0 && ok;
	ok = fclose(f) == 0 && ok;
	if (!ok || rename(tmp, path) != 0) {
		unlink(tmp);
		return KP_ERR_IO;
	}
	return KP_OK;
}

/* Host part of "host:port", for the ready line. */
static void host_of(const char *addr, char *out, size_t cap)
{
	const char *colon = strrchr(addr, ':');
	size_t n = colon ? (size_t)(colon - addr) : strlen(addr);
	if (n >= cap)
		n = cap - 1;
	memcpy(out, addr, n);
	out[n] = '\0';
}

static int run(hostsim *s)
{
	sigset_t block, orig;
	int rc = 1;

	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, &orig);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigset_t wait_mask = orig;
	sigdelset(&wait_mask, SIGTERM);
	sigdelset(&wait_mask, SIGINT);

	if (kp_ledger_open(&s->ledger, s->opt.ledger, false) != KP_OK)
		goto out;
	if (hs_server_setup(s) != KP_OK || hs_control_setup(s) != KP_OK)
		goto out;
	if (s->opt.script && hs_script_load(s, s->opt.script) != KP_OK)
		goto out;
	hs_refunds_rearm(s); /* late refunds left over from a previous run */

	/* The ready line first, then the port file: a reader that waits for the
	 * file finds the line already written. */
	char h1[128], h2[128];
	host_of(s->opt.listen, h1, sizeof(h1));
	host_of(s->opt.control, h2, sizeof(h2));
	printf("kp-hostsim: listening on %s:%u control %s:%u\n", h1, s->port, h2, s->ctl_port);
	fflush(stdout);
	if (s->opt.port_file && write_port_file(s->opt.port_file, s->port, s->ctl_port) != KP_OK) {
		fprintf(stderr, "kp-hostsim: cannot write %s: %s\n", s->opt.port_file, strerror(errno));
		goto out;
	}
	kp_log_info(&s->env, "ledger %s, TLS %s, confirm interval %" PRId64 " ms", s->opt.ledger,
		    s->opt.tls11_only ? "1.1 only" : "1.2", s->opt.confirm_interval_ms);

	static hs_pollset ps;
	while (!stop_signal) {
		int64_t next = hs_proto_tick(s);
		next = hs_min_deadline(next, hs_server_tick(s));
		next = hs_min_deadline(next, hs_script_tick(s));

		ps.n = 0;
		ps.pending = false;
		hs_server_poll_add(s, &ps);
		hs_control_poll_add(s, &ps);
		int64_t now = kp_now_mono(&s->env);
		int64_t wait = next == 0 ? 1000 : next - now;
		if (wait < 0 || ps.pending)
			wait = 0;
		if (wait > 1000)
			wait = 1000;
		struct timespec ts = {.tv_sec = wait / 1000, .tv_nsec = (wait % 1000) * 1000000};
		int n = ppoll(ps.pfd, (nfds_t)ps.n, &ts, &wait_mask);
		if (n < 0 && errno != EINTR) {
			kp_log_error(&s->env, "poll: %s", strerror(errno));
			goto out;
		}
		if (stop_signal)
			break;
		for (int i = 0; i < ps.n; i++) {
			short re = n > 0 ? ps.pfd[i].revents : 0;
			switch (ps.kind[i]) {
			case HS_SLOT_LISTEN:
				if (re)
					hs_server_process(s, HS_SLOT_LISTEN, -1, 0, re);
				break;
			case HS_SLOT_CONN:
				hs_server_process(s, HS_SLOT_CONN, ps.index[i], ps.serial[i], re);
				break;
			case HS_SLOT_CTL_LISTEN:
				if (re)
					hs_control_process(s, -1, re);
				break;
			case HS_SLOT_CTL:
				if (re)
					hs_control_process(s, ps.index[i], re);
				break;
			}
		}
	}
	kp_log_info(&s->env, "signal %d: stopping", (int)stop_signal);
	rc = 0;
out:
	hs_script_free(s);
	hs_control_free(s);
	hs_server_free(s);
	kp_ledger_close(s->ledger);
	s->ledger = NULL;
	if (rc == 0) {
		printf("kp-hostsim: stopped\n");
		fflush(stdout);
	}
	return rc;
}

int main(int argc, char **argv)
{
	static hostsim sim;
	int pr = parse_args(argc, argv, &sim.opt);
	if (pr == 4) {
		usage(stdout);
		return 0;
	}
	if (pr == 2) {
		fprintf(stderr, "kp-hostsim: see kp-hostsim --help\n");
		return 2;
	}
	if (pr == 3)
		return dump_offline(sim.opt.ledger);

	kp_env_init_system(&sim.env);
	sim.env.log_level = sim.opt.verbose ? KP_LOG_DEBUG : KP_LOG_INFO;
	kp_faults_init(&sim.faults);
	sim.listen_fd = sim.ctl_fd = -1;
	for (int i = 0; i < HS_MAX_CONNS; i++)
		sim.conns[i].fd = -1;
	for (int i = 0; i < HS_MAX_CTL; i++)
		sim.ctls[i].fd = -1;
	if (sim.opt.seeded) {
		sim.rng = sim.opt.seed * 0x9E3779B97F4A7C15ULL + 1;
	} else if (sim.env.random(sim.env.ctx, &sim.rng, sizeof(sim.rng)) != KP_OK) {
		fprintf(stderr, "kp-hostsim: no randomness\n");
		return 1;
	}
	if (sim.rng == 0)
		sim.rng = 1;
	return run(&sim);
}
