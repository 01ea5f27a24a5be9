/* kp-vmcsim — a vending machine controller as its own process, for testing
 * kioskpayd's MDB reader end to end: it makes a pty (or opens a port), runs
 * the VMC model of drivers/mdb/mdb_sim.c over it (RESET, SETUP, ENABLE, POLL
 * every few ms, sessions, vend requests, outcomes), takes customers'
 * selections from its command line or a control socket, and prints what it
 * sees. docs/mdb.md "kp-vmcsim" has the options and the control commands. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "kp_env.h"
#include "mdb_codec.h"
#include "mdb_serial.h"
#include "mdb_sim.h"

#define MAX_CLIENTS 8
#define LINE_MAX_LEN 256
#define QUEUE_MAX 64

struct client {
	int fd;
	char buf[LINE_MAX_LEN];
	size_t len;
};

struct vmcsim {
	kp_env env;
	kp_mdb_sim *sim;
	kp_mdb_transport model;  /* the VMC model: recv = its next frame, send = a reply to it */
	kp_mdb_transport port;   /* the bus to kioskpayd */
	int held_slave;          /* our own fd on the pty's slave: keeps its termios and the pty alive */
	int listen_fd;
	char control_path[108];
	struct client clients[MAX_CLIENTS];
	kp_mdb_sim_selection queue[QUEUE_MAX];
	size_t queued;
	int poll_ms, response_ms;
	bool verbose;
	int exit_after;          /* exit once this many selections are done; 0 = never */
	bool quit;
	bool port_gone;
	bool awaiting;           /* a block is out, its reply not yet in */
	int64_t deadline;        /* awaiting: when it counts as silence */
	int64_t next_send;
	int64_t t0;
	unsigned stale, bad_replies, silences;
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

static int64_t now_ms(struct vmcsim *v)
{
	return kp_now_mono(&v->env);
}

static void say(struct vmcsim *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct vmcsim *v, const char *fmt, ...)
{
	int64_t t = now_ms(v) - v->t0;
	printf("[%4lld.%03lld] ", (long long)(t / 1000), (long long)(t % 1000));
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void on_trace(void *arg, const char *line)
{
	say(arg, "%s", line);
}

static void stats_json(struct vmcsim *v, char *out, size_t cap)
{
	kp_mdb_sim_stats s;
	kp_mdb_sim_stats_get(v->sim, &s);
	snprintf(out, cap,
		 "{\"state\":\"%s\",\"resets\":%u,\"setups\":%u,\"sessions\":%u,\"vend_requests\":%u,"
		 "\"approved\":%u,\"denied\":%u,\"dispensed\":%u,\"dispense_failed\":%u,\"dispensed_value\":%llu,"
		 "\"sessions_ended\":%u,\"out_of_sequence\":%u,\"retries\":%u,\"selections_done\":%u,"
		 "\"vend_cancels\":%u,\"session_cancels\":%u,\"outcomes_repeated\":%u,\"aborted\":%u,"
		 "\"last_approved\":%u,\"queued\":%zu,\"stale\":%u,\"bad_replies\":%u,\"silences\":%u}",
		 kp_mdb_sim_state_name(v->sim), s.resets, s.setups, s.sessions, s.vend_requests, s.approved, s.denied,
		 s.dispensed, s.dispense_failed, (unsigned long long)s.dispensed_value, s.sessions_ended,
		 s.out_of_sequence, s.retries, s.selections_done, s.vend_cancels, s.session_cancels,
		 s.outcomes_repeated, s.aborted, s.last_approved, v->queued + (kp_mdb_sim_has_selection(v->sim) ? 1 : 0),
		 v->stale, v->bad_replies, v->silences);
}

/* "PRICE ITEM [ok|fail|hold] [dup]" or "PRICE:ITEM[:ok|fail|hold][:dup]". */
static bool parse_selection(const char *text, kp_mdb_sim_selection *sel)
{
	char buf[LINE_MAX_LEN];
	snprintf(buf, sizeof(buf), "%s", text);
	for (char *p = buf; *p; p++)
		if (*p == ':')
			*p = ' ';
	memset(sel, 0, sizeof(*sel));
	char *save = NULL;
	int i = 0;
	for (char *tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save), i++) {
		if (i < 2) {
			char *end = NULL;
			errno = 0;
			long n = strtol(tok, &end, 10);
			if (errno || !end || *end || n < 0 || n > 0xFFFF)
				return false;
			if (i == 0)
				sel->price = (uint16_t)n;
			else
				sel->item = (uint16_t)n;
		} else if (strcmp(tok, "ok") == 0) {
			sel->dispense = KP_MDB_SIM_DISPENSE_OK;
		} else if (strcmp(tok, "fail") == 0) {
			sel->dispense = KP_MDB_SIM_DISPENSE_FAIL;
		} else if (strcmp(tok, "hold") == 0) {
			sel->dispense = KP_MDB_SIM_DISPENSE_HOLD;
		} else if (strcmp(tok, "dup") == 0) {
			sel->repeat_outcome = true;
		} else {
			return false;
		}
	}
	return i >= 2;
}

static bool enqueue(struct vmcsim *v, const kp_mdb_sim_selection *sel)
{
	if (v->queued == QUEUE_MAX)
		return false;
	v->queue[v->queued++] = *sel;
	return true;
}

/* The next queued customer steps up once the previous one is done. */
static void feed_selection(struct vmcsim *v)
{
	if (v->queued == 0 || kp_mdb_sim_has_selection(v->sim))
		return;
	if (kp_mdb_sim_select_ex(v->sim, &v->queue[0]) == KP_OK) {
		say(v, "customer selects item %u at %u", (unsigned)v->queue[0].item, (unsigned)v->queue[0].price);
		memmove(&v->queue[0], &v->queue[1], (v->queued - 1) * sizeof(v->queue[0]));
		v->queued--;
	}
}

/* One control command; the answer line (no newline) into out. */
static void command(struct vmcsim *v, char *line, char *out, size_t cap)
{
	char *args = strchr(line, ' ');
	if (args)
		*args++ = '\0';
	else
		args = line + strlen(line);
	kp_mdb_sim_selection sel;
	if (strcmp(line, "select") == 0) {
		if (!parse_selection(args, &sel))
			snprintf(out, cap, "error usage: select PRICE ITEM [ok|fail|hold] [dup]");
		else if (!enqueue(v, &sel))
			snprintf(out, cap, "error queue full");
		else
			snprintf(out, cap, "ok");
		feed_selection(v);
	} else if (strcmp(line, "dispense") == 0) {
		bool ok = strcmp(args, "ok") == 0;
		if (!ok && strcmp(args, "fail") != 0)
			snprintf(out, cap, "error usage: dispense ok|fail");
		else if (kp_mdb_sim_dispense_now(v->sim, ok) != KP_OK)
			snprintf(out, cap, "error state %s", kp_mdb_sim_state_name(v->sim));
		else
			snprintf(out, cap, "ok");
	} else if (strcmp(line, "cancel") == 0) {
		if (kp_mdb_sim_cancel(v->sim) != KP_OK)
			snprintf(out, cap, "error state %s", kp_mdb_sim_state_name(v->sim));
		else
			snprintf(out, cap, "ok");
	} else if (strcmp(line, "stats") == 0) {
		stats_json(v, out, cap);
	} else if (strcmp(line, "state") == 0) {
		snprintf(out, cap, "state %s", kp_mdb_sim_state_name(v->sim));
	} else if (strcmp(line, "quit") == 0) {
		v->quit = true;
		snprintf(out, cap, "ok");
	} else {
		snprintf(out, cap, "error unknown command (select, dispense, cancel, stats, state, quit)");
	}
}

static void client_read(struct vmcsim *v, struct client *c)
{
	ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
	if (r <= 0) {
		close(c->fd);
		c->fd = -1;
		return;
	}
	c->len += (size_t)r;
	char *nl;
	while ((nl = memchr(c->buf, '\n', c->len))) {
		*nl = '\0';
		if (nl > c->buf && nl[-1] == '\r')
			nl[-1] = '\0';
		char out[1024];
		command(v, c->buf, out, sizeof(out));
		size_t used = (size_t)(nl - c->buf) + 1;
		memmove(c->buf, nl + 1, c->len - used);
		c->len -= used;
		size_t n = strlen(out);
		out[n++] = '\n';
		if (write(c->fd, out, n) != (ssize_t)n) {
			close(c->fd);
			c->fd = -1;
			return;
		}
	}
	if (c->len == sizeof(c->buf) - 1) {
		close(c->fd); /* a line longer than any command */
		c->fd = -1;
	}
}

static int control_listen(struct vmcsim *v, const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(a.sun_path)) {
		fprintf(stderr, "kp-vmcsim: control path too long: %s\n", path);
		return -1;
	}
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	snprintf(v->control_path, sizeof(v->control_path), "%s", path);
	unlink(path);
	v->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (v->listen_fd < 0 || bind(v->listen_fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    listen(v->listen_fd, 4) != 0) {
		fprintf(stderr, "kp-vmcsim: control %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* A pty whose slave is raw before anyone writes, reachable at link. */
static int make_pty(struct vmcsim *v, const char *link, int *master)
{
	*master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (*master < 0 || grantpt(*master) != 0 || unlockpt(*master) != 0) {
		fprintf(stderr, "kp-vmcsim: pty: %s\n", strerror(errno));
		return -1;
	}
	char slave[64];
	if (ptsname_r(*master, slave, sizeof(slave)) != 0) {
		fprintf(stderr, "kp-vmcsim: ptsname: %s\n", strerror(errno));
		return -1;
	}
	v->held_slave = open(slave, O_RDWR | O_NOCTTY | O_CLOEXEC);
	struct termios t;
	if (v->held_slave < 0 || tcgetattr(v->held_slave, &t) != 0) {
		fprintf(stderr, "kp-vmcsim: %s: %s\n", slave, strerror(errno));
		return -1;
	}
	cfmakeraw(&t);
	if (tcsetattr(v->held_slave, TCSANOW, &t) != 0) {
		fprintf(stderr, "kp-vmcsim: %s: raw mode: %s\n", slave, strerror(errno));
		return -1;
	}
	/* point link at it atomically: a reader that reopens finds the new one */
	char tmp[300];
	snprintf(tmp, sizeof(tmp), "%s.new", link);
	unlink(tmp);
	if (symlink(slave, tmp) != 0 || rename(tmp, link) != 0) {
		fprintf(stderr, "kp-vmcsim: link %s -> %s: %s\n", link, slave, strerror(errno));
		return -1;
	}
	say(v, "pty %s at %s", slave, link);
	return 0;
}

/* Put the model's next frame on the bus. */
static void send_next(struct vmcsim *v, int64_t now)
{
	uint16_t w[KP_MDB_BLOCK_MAX], stale[KP_MDB_BLOCK_MAX];
	size_t n = 0, sn = 0;
	if (kp_mdb_transport_recv(&v->model, w, KP_MDB_BLOCK_MAX, &n) != KP_OK)
		return;
	while (kp_mdb_transport_recv(&v->port, stale, KP_MDB_BLOCK_MAX, &sn) == KP_OK)
		v->stale++; /* a late reply to an earlier block: the bus has moved on */
	char text[160];
	if (v->verbose && !(n == 2 && w[0] == (KP_MDB_MODE | 0x12)))
		say(v, "> %s", kp_mdb_frame_format(w, n, text, sizeof(text)));
	if (kp_mdb_transport_send(&v->port, w, n) != KP_OK && v->verbose)
		say(v, "(not sent: the port is closed)");
	if (n == 1 && !(w[0] & KP_MDB_MODE)) {
		v->next_send = now; /* our ACK: no reply; the next block follows */
		return;
	}
	v->awaiting = true;
	v->deadline = now + v->response_ms;
}

static void read_replies(struct vmcsim *v, int64_t now)
{
	uint16_t w[KP_MDB_BLOCK_MAX];
	size_t n = 0;
	char text[160];
	kp_err err;
	while ((err = kp_mdb_transport_recv(&v->port, w, KP_MDB_BLOCK_MAX, &n)) == KP_OK) {
		if (!v->awaiting) {
			v->stale++;
			if (v->verbose)
				say(v, "< %s (late, ignored)", kp_mdb_frame_format(w, n, text, sizeof(text)));
			continue;
		}
		v->awaiting = false;
		bool data = n > 1;
		if (v->verbose && !(n == 1 && w[0] == (KP_MDB_MODE | KP_MDB_ACK)))
			say(v, "< %s", kp_mdb_frame_format(w, n, text, sizeof(text)));
		if (kp_mdb_transport_send(&v->model, w, n) != KP_OK) {
			v->bad_replies++;
			say(v, "bad reply %s: taken as silence", kp_mdb_frame_format(w, n, text, sizeof(text)));
			v->next_send = now;
			continue;
		}
		v->next_send = data ? now : now + v->poll_ms; /* after data our ACK goes at once */
	}
	if (err == KP_ERR_IO) {
		say(v, "the port is gone");
		v->port_gone = v->quit = true;
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kp-vmcsim (--pty LINK | --device PATH) [--framing pair|parity] [--control SOCKET]\n"
		"                 [--select PRICE:ITEM[:ok|fail|hold][:dup]]... [--exit-after N]\n"
		"                 [--poll-ms N] [--response-ms N] [--non-response-ms N] [--verbose]\n"
		"  --pty LINK      make a pty and point the symlink LINK at it ([mdb] device = LINK)\n"
		"  --device PATH   talk over an existing port instead (a real bus adapter)\n"
		"  --control SOCK  unix socket for: select PRICE ITEM [ok|fail|hold] [dup], dispense ok|fail,\n"
		"                  cancel, stats, state, quit (one line in, one line out)\n"
		"exit codes: 0 done (quit, signal, --exit-after), 1 could not start or the port went away, 2 usage\n");
}

static bool parse_int(const char *s, int lo, int hi, int *out)
{
	char *end = NULL;
	errno = 0;
	long n = strtol(s, &end, 10);
	if (errno || !end || *end || n < lo || n > hi)
		return false;
	*out = (int)n;
	return true;
}

static void loop(struct vmcsim *v)
{
	while (!v->quit && !stop_signal) {
		int64_t now = now_ms(v);
		feed_selection(v);
		if (v->awaiting && now >= v->deadline) {
			v->awaiting = false; /* silence: the model repeats (or resets) */
			v->silences++;
			v->next_send = now;
		}
		if (!v->awaiting && now >= v->next_send)
			send_next(v, now);
		if (v->exit_after > 0) {
			kp_mdb_sim_stats s;
			kp_mdb_sim_stats_get(v->sim, &s);
			if (s.selections_done >= (unsigned)v->exit_after && !v->awaiting)
				break;
		}

		struct pollfd pfd[2 + MAX_CLIENTS];
		nfds_t np = 0;
		pfd[np++] = (struct pollfd){.fd = kp_mdb_transport_fd(&v->port), .events = POLLIN};
		pfd[np++] = (struct pollfd){.fd = v->listen_fd, .events = POLLIN};
		for (int i = 0; i < MAX_CLIENTS; i++)
			pfd[np++] = (struct pollfd){.fd = v->clients[i].fd, .events = POLLIN};
		int64_t until = v->awaiting ? v->deadline : v->next_send;
		int64_t gap = kp_mdb_transport_deadline(&v->port);
		if (gap > 0 && gap < until)
			until = gap;
		int timeout = until <= now ? 0 : (int)(until - now);
		if (poll(pfd, np, timeout) < 0 && errno != EINTR) {
			perror("kp-vmcsim: poll");
			v->quit = true;
		}
		now = now_ms(v);
		read_replies(v, now);
		if (pfd[1].revents) {
			int fd = accept4(v->listen_fd, NULL, NULL, SOCK_CLOEXEC);
			for (int i = 0; fd >= 0 && i < MAX_CLIENTS; i++) {
				if (v->clients[i].fd < 0) {
					v->clients[i] = (struct client){.fd = fd};
					fd = -1;
				}
			}
			if (fd >= 0)
				close(fd); /* full */
		}
		for (int i = 0; i < MAX_CLIENTS; i++)
			if (v->clients[i].fd >= 0 && pfd[2 + i].revents)
				client_read(v, &v->clients[i]);
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"pty", required_argument, NULL, 'p'},
		{"device", required_argument, NULL, 'd'},
		{"framing", required_argument, NULL, 'f'},
		{"control", required_argument, NULL, 'c'},
		{"select", required_argument, NULL, 's'},
		{"exit-after", required_argument, NULL, 'x'},
		{"poll-ms", required_argument, NULL, 'P'},
		{"response-ms", required_argument, NULL, 'R'},
		{"non-response-ms", required_argument, NULL, 'N'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static struct vmcsim v;
	const char *pty_link = NULL, *device = NULL, *control = NULL;
	kp_mdb_framing framing = KP_MDB_FRAMING_PAIR;
	int non_response = 0;
	int rc = 1;

	memset(&v, 0, sizeof(v));
	v.held_slave = v.listen_fd = -1;
	for (int i = 0; i < MAX_CLIENTS; i++)
		v.clients[i].fd = -1;
	v.poll_ms = 20;
	v.response_ms = 1000;
	kp_env_init_system(&v.env);
	v.t0 = now_ms(&v);

	int c;
	kp_mdb_sim_selection sel;
	while ((c = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
		switch (c) {
		case 'p': pty_link = optarg; break;
		case 'd': device = optarg; break;
		case 'c': control = optarg; break;
		case 'f':
			if (kp_mdb_framing_from_string(optarg, &framing) != KP_OK) {
				usage(stderr);
				return 2;
			}
			break;
		case 's':
			if (!parse_selection(optarg, &sel) || !enqueue(&v, &sel)) {
				fprintf(stderr, "kp-vmcsim: bad --select %s\n", optarg);
				return 2;
			}
			break;
		case 'x':
			if (!parse_int(optarg, 1, 1000000, &v.exit_after)) {
				usage(stderr);
				return 2;
			}
			break;
		case 'P':
			if (!parse_int(optarg, 1, 10000, &v.poll_ms)) {
				usage(stderr);
				return 2;
			}
			break;
		case 'R':
			if (!parse_int(optarg, 1, 60000, &v.response_ms)) {
				usage(stderr);
				return 2;
			}
			break;
		case 'N':
			if (!parse_int(optarg, 1, 600000, &non_response)) {
				usage(stderr);
				return 2;
			}
			break;
		case 'v': v.verbose = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || (!pty_link == !device)) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);

	uint64_t seed = 0;
	if (v.env.random(v.env.ctx, &seed, sizeof(seed)) != KP_OK || kp_mdb_sim_new(&v.sim, &v.env, seed) != KP_OK) {
		fprintf(stderr, "kp-vmcsim: cannot make the VMC model\n");
		goto out;
	}
	if (non_response > 0)
		kp_mdb_sim_set_non_response(v.sim, non_response);
	kp_mdb_sim_set_trace(v.sim, on_trace, &v);
	kp_mdb_sim_transport(v.sim, &v.model);

	kp_mdb_serial_config sc = {.framing = framing, .role = KP_MDB_ROLE_VMC};
	if (pty_link) {
		int master = -1;
		if (make_pty(&v, pty_link, &master) != 0 ||
		    kp_mdb_serial_open_fd(&v.port, master, &sc, &v.env) != KP_OK) {
			fprintf(stderr, "kp-vmcsim: cannot use the pty\n");
			goto out;
		}
	} else {
		sc.path = device;
		if (kp_mdb_serial_open(&v.port, &sc, &v.env) != KP_OK || kp_mdb_transport_fd(&v.port) < 0) {
			fprintf(stderr, "kp-vmcsim: cannot open %s\n", device);
			goto out;
		}
	}
	if (control && control_listen(&v, control) != 0)
		goto out;
	say(&v, "VMC up (%s framing)%s%s", kp_mdb_framing_name(framing), control ? ", control " : "",
	    control ? control : "");

	loop(&v);

	char stats[1024];
	stats_json(&v, stats, sizeof(stats));
	say(&v, "stats %s", stats);
	rc = v.port_gone ? 1 : 0;
out:
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (v.clients[i].fd >= 0)
			close(v.clients[i].fd);
	if (v.listen_fd >= 0) {
		close(v.listen_fd);
		unlink(v.control_path);
	}
	if (v.port.ops)
		kp_mdb_transport_close(&v.port);
	if (v.held_slave >= 0)
		close(v.held_slave);
	kp_mdb_sim_free(v.sim);
	return rc;
}
