/* simtest.c — see simtest.h: process control for kp-hostsim, its control port,
 * and a blocking mbedtls test client over the project's codec. */
#include "simtest.h"
#include "kp_rmtree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/error.h>

extern char **environ;

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- files and processes ------------------------------------------------------- */

bool st_tmpdir(const char *prefix, char *out, size_t cap)
{
	int n = snprintf(out, cap, "/tmp/%s-XXXXXX", prefix);
	return n > 0 && (size_t)n < cap && mkdtemp(out) != NULL;
}

void st_rmtree(const char *dir)
{
	kp_rmtree(dir);
}

int st_run(const char *const *argv)
{
	pid_t pid;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	int rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0)
		return -1;
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

/* Read one line from fd within timeout_ms (byte by byte: it is a pipe). */
static bool read_line(int fd, char *out, size_t cap, int timeout_ms)
{
	size_t n = 0;
	int64_t end = mono_ms() + timeout_ms;
	while (n + 1 < cap) {
		int64_t left = end - mono_ms();
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return false;
		char ch;
		ssize_t r = read(fd, &ch, 1);
		if (r <= 0)
			return false;
		if (ch == '\n') {
			out[n] = '\0';
			return true;
		}
		out[n++] = ch;
	}
	return false;
}

kp_err st_sim_start(st_sim *sim, const char *exe, const char *const *args)
{
	const char *argv[48];
	size_t n = 0;
	int pipefd[2] = {-1, -1};
	posix_spawn_file_actions_t fa;
	char line[256];

	memset(sim, 0, sizeof(*sim));
	sim->out_fd = -1;
	argv[n++] = exe;
	for (size_t i = 0; args[i] && n < 47; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	if (pipe2(pipefd, O_CLOEXEC) != 0)
		return KP_ERR_IO;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
	int rc = posix_spawn(&sim->pid, exe, &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(pipefd[1]);
	if (rc != 0) {
		close(pipefd[0]);
		sim->pid = 0;
		return KP_ERR_IO;
	}
	sim->out_fd = pipefd[0];
	unsigned p1 = 0, p2 = 0;
	char h1[64], h2[64];
	if (!read_line(sim->out_fd, line, sizeof(line), 10000) ||
	    sscanf(line, "kp-hostsim: listening on %63[^:]:%u control %63[^:]:%u", h1, &p1, h2, &p2) != 4 ||
	    p1 == 0 || p2 == 0 || p1 > 65535 || p2 > 65535) {
		(void)st_sim_stop(sim);
		return KP_ERR_IO;
	}
	sim->port = (uint16_t)p1;
	sim->ctl_port = (uint16_t)p2;
	return KP_OK;
}

int st_sim_stop(st_sim *sim)
{
	int result = -1;
	if (sim->pid > 0) {
		kill(sim->pid, SIGTERM);
		int st = 0;
		int64_t end = mono_ms() + 10000;
		pid_t r = 0;
		while ((r = waitpid(sim->pid, &st, WNOHANG)) == 0 && mono_ms() < end)
			usleep(10000);
		if (r == 0) {
			kill(sim->pid, SIGKILL);
			waitpid(sim->pid, &st, 0);
		} else if (r == sim->pid && WIFEXITED(st)) {
			result = WEXITSTATUS(st);
		}
		if (result == 0 && sim->out_fd >= 0) {
			char line[128];
			if (!read_line(sim->out_fd, line, sizeof(line), 1000) ||
			    strcmp(line, "kp-hostsim: stopped") != 0)
				result = -2;
		}
	}
	if (sim->out_fd >= 0)
		close(sim->out_fd);
	sim->out_fd = -1;
	sim->pid = 0;
	return result;
}

/* ---- control port -------------------------------------------------------------- */

static cJSON *ctl_send(const st_sim *sim, const char *line)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(sim->ctl_port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	char *buf = NULL;
	cJSON *reply = NULL;
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
		goto out;
	size_t len = strlen(line);
	if (send(fd, line, len, MSG_NOSIGNAL) != (ssize_t)len || send(fd, "\n", 1, MSG_NOSIGNAL) != 1)
		goto out;
	size_t cap = 1 << 16, n = 0;
	buf = malloc(cap);
	int64_t end = mono_ms() + 10000;
	while (buf) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int64_t left = end - mono_ms();
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			goto out;
		if (n + 4096 > cap) {
			if (cap >= (32u << 20))
				goto out;
			char *nb = realloc(buf, cap * 2);
			if (!nb)
				goto out;
			buf = nb;
			cap *= 2;
		}
		ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
		if (r <= 0)
			goto out;
		n += (size_t)r;
		if (memchr(buf + n - (size_t)r, '\n', (size_t)r))
			break;
	}
	if (buf) {
		buf[n] = '\0';
		reply = cJSON_Parse(buf);
	}
out:
	free(buf);
	if (fd >= 0)
		close(fd);
	return reply;
}

cJSON *st_ctl(const st_sim *sim, const char *fmt, ...)
{
	char line[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line))
		return NULL;
	return ctl_send(sim, line);
}

bool st_ctl_ok(const st_sim *sim, const char *fmt, ...)
{
	char line[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line))
		return false;
	cJSON *r = ctl_send(sim, line);
	bool ok = r && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok"));
	if (!ok) {
		char *t = r ? cJSON_PrintUnformatted(r) : NULL;
		fprintf(stderr, "control %s -> %s\n", line, t ? t : "(no reply)");
		cJSON_free(t);
	}
	cJSON_Delete(r);
	return ok;
}

/* ---- TLS client ---------------------------------------------------------------- */

int st_client_connect(st_client *c, uint16_t port, const st_client_opts *o)
{
	static const char pers[] = "kp-simtest";
	char portstr[8];
	int ret;

	memset(c, 0, sizeof(*c));
	mbedtls_net_init(&c->net);
	mbedtls_ssl_init(&c->ssl);
	mbedtls_ssl_config_init(&c->conf);
	mbedtls_entropy_init(&c->entropy);
	mbedtls_ctr_drbg_init(&c->drbg);
	mbedtls_x509_crt_init(&c->ca);
	mbedtls_x509_crt_init(&c->cert);
	mbedtls_pk_init(&c->key);
	kp_frame_reader_init(&c->rd);
	c->next_id = 1;
	if (kp_frame_reader_setup(&c->rd) != KP_OK)
		return MBEDTLS_ERR_SSL_ALLOC_FAILED;

	if ((ret = mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy,
					 (const unsigned char *)pers, sizeof(pers) - 1)) != 0 ||
	    (ret = mbedtls_x509_crt_parse_file(&c->ca, o->ca)) != 0)
		return ret;
	if (o->cert && ((ret = mbedtls_x509_crt_parse_file(&c->cert, o->cert)) != 0 ||
			(ret = mbedtls_pk_parse_keyfile(&c->key, o->key, NULL)) != 0))
		return ret;
	if ((ret = mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
					       MBEDTLS_SSL_PRESET_DEFAULT)) != 0)
		return ret;
	mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
	mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
	mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
				     o->allow_tls11 ? MBEDTLS_SSL_MINOR_VERSION_2 : MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_max_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
	if (o->cert && (ret = mbedtls_ssl_conf_own_cert(&c->conf, &c->cert, &c->key)) != 0)
		return ret;
	if ((ret = mbedtls_ssl_setup(&c->ssl, &c->conf)) != 0 ||
	    (ret = mbedtls_ssl_set_hostname(&c->ssl, o->server_name ? o->server_name : "localhost")) != 0)
		return ret;
	bool offered = o->session && o->session->ciphersuite != 0;
	if (offered && (ret = mbedtls_ssl_set_session(&c->ssl, o->session)) != 0)
		return ret;
	snprintf(portstr, sizeof(portstr), "%u", port);
	if ((ret = mbedtls_net_connect(&c->net, "127.0.0.1", portstr, MBEDTLS_NET_PROTO_TCP)) != 0)
		return ret;
	struct timeval tv = {.tv_sec = 5};
	setsockopt(c->net.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	mbedtls_ssl_set_bio(&c->ssl, &c->net, mbedtls_net_send, mbedtls_net_recv, NULL);
	do {
		ret = mbedtls_ssl_handshake(&c->ssl);
	} while (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE);
	c->verify_flags = mbedtls_ssl_get_verify_result(&c->ssl);
	if (ret != 0)
		return ret;
	if (o->session) {
		unsigned char old_master[48];
		memcpy(old_master, o->session->master, sizeof(old_master));
		mbedtls_ssl_session_free(o->session);
		mbedtls_ssl_session_init(o->session);
		if ((ret = mbedtls_ssl_get_session(&c->ssl, o->session)) != 0)
			return ret;
		c->resumed = offered && memcmp(old_master, o->session->master, sizeof(old_master)) == 0;
	}
	return 0;
}

void st_client_close(st_client *c)
{
	if (c->net.fd >= 0)
		(void)mbedtls_ssl_close_notify(&c->ssl);
	mbedtls_net_free(&c->net);
	mbedtls_ssl_free(&c->ssl);
	mbedtls_ssl_config_free(&c->conf);
	mbedtls_x509_crt_free(&c->ca);
	mbedtls_x509_crt_free(&c->cert);
	mbedtls_pk_free(&c->key);
	mbedtls_ctr_drbg_free(&c->drbg);
	mbedtls_entropy_free(&c->entropy);
	kp_frame_reader_free(&c->rd);
}

kp_err st_client_send_raw(st_client *c, const void *data, size_t len)
{
	const unsigned char *p = data;
	while (len > 0) {
		int ret = mbedtls_ssl_write(&c->ssl, p, len);
		if (ret == MBEDTLS_ERR_SSL_WANT_WRITE || ret == MBEDTLS_ERR_SSL_WANT_READ)
			continue;
		if (ret <= 0)
			return KP_ERR_DISCONNECTED;
		p += ret;
		len -= (size_t)ret;
	}
	return KP_OK;
}

kp_err st_client_send(st_client *c, kp_host_msg *m)
{
	static uint8_t frame[KP_FRAME_HDR + KP_FRAME_MAX];
	size_t len = 0;
	if (m->op != KP_OP_ACK && m->id == 0)
		m->id = c->next_id++;
	kp_err err = kp_hostproto_encode(m, frame, sizeof(frame), &len);
	if (err != KP_OK)
		return err;
	return st_client_send_raw(c, frame, len);
}

kp_err st_client_recv(st_client *c, kp_host_msg *out, int timeout_ms)
{
	int64_t end = mono_ms() + timeout_ms;
	for (;;) {
		while (c->buf_off < c->buf_len) {
			size_t used = 0, flen = 0;
			const uint8_t *frame = NULL;
			kp_err err = kp_frame_reader_feed(&c->rd, c->buf + c->buf_off, c->buf_len - c->buf_off, &used,
							  &frame, &flen);
			c->buf_off += used;
			if (err != KP_OK)
				return KP_ERR_PROTOCOL;
			if (frame) {
				char why[128];
				err = kp_hostproto_decode(frame, flen, true, out, why, sizeof(why));
				return err == KP_OK ? KP_OK : KP_ERR_PROTOCOL;
			}
		}
		if (mbedtls_ssl_get_bytes_avail(&c->ssl) == 0) {
			int64_t left = end - mono_ms();
			struct pollfd p = {.fd = c->net.fd, .events = POLLIN};
			if (left <= 0)
				return KP_ERR_TIMEOUT;
			int pr = poll(&p, 1, (int)left);
			if (pr == 0)
				return KP_ERR_TIMEOUT;
			if (pr < 0)
				return KP_ERR_IO;
		}
		int ret = mbedtls_ssl_read(&c->ssl, c->buf, sizeof(c->buf));
		if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
			continue;
		if (ret <= 0)
			return KP_ERR_DISCONNECTED;
		c->buf_off = 0;
		c->buf_len = (size_t)ret;
	}
}

static void enqueue(st_client *c, const kp_host_msg *m)
{
	if (c->queued < ST_MAX_QUEUED)
		c->queue[c->queued++] = *m;
}

kp_err st_client_call(st_client *c, kp_host_msg *req, kp_host_msg *rep, int timeout_ms)
{
	req->id = 0;
	kp_err err = st_client_send(c, req);
	if (err != KP_OK)
		return err;
	int64_t end = mono_ms() + timeout_ms;
	for (;;) {
		int64_t left = end - mono_ms();
		if (left <= 0)
			return KP_ERR_TIMEOUT;
		err = st_client_recv(c, rep, (int)left);
		if (err != KP_OK)
			return err;
		if (rep->op != KP_OP_CONFIRM && rep->has_re && rep->re == req->id)
			return KP_OK;
		enqueue(c, rep);
	}
}

kp_err st_client_hello(st_client *c, const char *device_id)
{
	kp_host_msg m, rep;
	memset(&m, 0, sizeof(m));
	m.op = KP_OP_HELLO;
	snprintf(m.device_id, sizeof(m.device_id), "%s", device_id);
	m.proto = 1;
	snprintf(m.fw, sizeof(m.fw), "simtest");
	kp_err err = st_client_call(c, &m, &rep, 5000);
	if (err != KP_OK)
		return err;
	return rep.op == KP_OP_HELLO_OK ? KP_OK : KP_ERR_HOST;
}

kp_err st_client_confirm(st_client *c, kp_host_msg *out, int timeout_ms)
{
	for (int i = 0; i < c->queued; i++) {
		if (c->queue[i].op != KP_OP_CONFIRM)
			continue;
		*out = c->queue[i];
		memmove(&c->queue[i], &c->queue[i + 1], (size_t)(c->queued - i - 1) * sizeof(c->queue[0]));
		c->queued--;
		return KP_OK;
	}
	int64_t end = mono_ms() + timeout_ms;
	for (;;) {
		int64_t left = end - mono_ms();
		if (left <= 0)
			return KP_ERR_TIMEOUT;
		kp_err err = st_client_recv(c, out, (int)left);
		if (err != KP_OK || out->op == KP_OP_CONFIRM)
			return err;
		enqueue(c, out);
	}
}

kp_err st_client_ack(st_client *c, int64_t seq)
{
	kp_host_msg m;
	memset(&m, 0, sizeof(m));
	m.op = KP_OP_ACK;
	m.seq = seq;
	return st_client_send(c, &m);
}

void st_msg_create(kp_host_msg *m, const char *attempt, const char *order, int64_t amount, const char *channel)
{
	memset(m, 0, sizeof(*m));
	m->op = KP_OP_CREATE_PAYMENT;
	snprintf(m->attempt_id, sizeof(m->attempt_id), "%s", attempt);
	snprintf(m->order_id, sizeof(m->order_id), "%s", order);
	m->amount = amount;
	m->has_amount = true;
	snprintf(m->currency, sizeof(m->currency), "EUR");
	snprintf(m->channel, sizeof(m->channel), "%s", channel);
	m->expires_at = 1700000000000;
}

void st_msg_attempt(kp_host_msg *m, kp_host_op op, const char *attempt)
{
	memset(m, 0, sizeof(*m));
	m->op = op;
	snprintf(m->attempt_id, sizeof(m->attempt_id), "%s", attempt);
}

void st_msg_refund(kp_host_msg *m, const char *refund, const char *attempt, const char *txn, int64_t amount,
		   const char *reason)
{
	memset(m, 0, sizeof(*m));
	m->op = KP_OP_REFUND;
	snprintf(m->refund_id, sizeof(m->refund_id), "%s", refund);
	snprintf(m->attempt_id, sizeof(m->attempt_id), "%s", attempt);
	snprintf(m->host_txn, sizeof(m->host_txn), "%s", txn);
	m->amount = amount;
	m->has_amount = true;
	snprintf(m->reason, sizeof(m->reason), "%s", reason);
}
