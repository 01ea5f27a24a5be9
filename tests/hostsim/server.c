/* server.c — kp-hostsim's TLS side: a non-blocking listener, up to
 * HS_MAX_CONNS mbedtls server connections (mutual auth against the provisioning
 * CA, ECDHE-ECDSA AEAD suites, session tickets), framing in, queued output out. */
#include "hostsim.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>

#define HS_TLS_CHUNK 16384

static void tls_err(int ret, char *buf, size_t cap)
{
	char t[96];
	mbedtls_strerror(ret, t, sizeof(t));
	snprintf(buf, cap, "%s (-0x%04x)", t, (unsigned)-ret);
}

/* ---- listener ---------------------------------------------------------------- */

kp_err hs_listen(const char *addr, int *fd_out, uint16_t *port_out)
{
	char host[128];
	const char *colon = strrchr(addr, ':');
	struct addrinfo hints, *res = NULL;
	int fd = -1;
	kp_err err = KP_ERR_INVALID;

	*fd_out = -1;
	if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof(host) || !colon[1]) {
		fprintf(stderr, "kp-hostsim: bad address '%s': want host:port\n", addr);
		return KP_ERR_INVALID;
	}
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	int rc = getaddrinfo(host, colon + 1, &hints, &res);
	if (rc != 0) {
		fprintf(stderr, "kp-hostsim: bad address '%s': %s\n", addr, gai_strerror(rc));
		return KP_ERR_INVALID;
	}
	err = KP_ERR_IO;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto sys;
	int one = 1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 64) != 0)
		goto sys;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
		goto sys;
	*port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						   : ((struct sockaddr_in *)&ss)->sin_port);
	*fd_out = fd;
	fd = -1;
	err = KP_OK;
	goto out;
sys:
	fprintf(stderr, "kp-hostsim: cannot listen on %s: %s\n", addr, strerror(errno));
out:
	if (fd >= 0)
		close(fd);
	freeaddrinfo(res);
	return err;
}

/* ---- TLS configuration ------------------------------------------------------ */

static kp_err tls_fail(const char *what, const char *on, int ret)
{
	char why[160];
	tls_err(ret, why, sizeof(why));
	fprintf(stderr, "kp-hostsim: %s failed on %s: %s\n", what, on, why);
	return KP_ERR_TLS;
}

kp_err hs_server_setup(hostsim *s)
{
	int ret;
	static const char pers[] = "kp-hostsim";

	mbedtls_entropy_init(&s->entropy);
	mbedtls_ctr_drbg_init(&s->drbg);
	mbedtls_x509_crt_init(&s->ca);
	mbedtls_x509_crt_init(&s->cert);
	mbedtls_pk_init(&s->key);
	mbedtls_ssl_config_init(&s->conf);
	mbedtls_ssl_ticket_init(&s->ticket);
	mbedtls_ssl_cache_init(&s->cache);
	s->listen_fd = -1;
	for (int i = 0; i < HS_MAX_CONNS; i++)
		s->conns[i].fd = -1;

	if ((ret = mbedtls_ctr_drbg_seed(&s->drbg, mbedtls_entropy_func, &s->entropy,
					 (const unsigned char *)pers, sizeof(pers) - 1)) != 0)
		return tls_fail("mbedtls_ctr_drbg_seed", "entropy", ret);
	if ((ret = mbedtls_x509_crt_parse_file(&s->ca, s->opt.ca)) != 0)
		return tls_fail("loading CA", s->opt.ca, ret);
	if ((ret = mbedtls_x509_crt_parse_file(&s->cert, s->opt.cert)) != 0)
		return tls_fail("loading certificate", s->opt.cert, ret);
	if ((ret = mbedtls_pk_parse_keyfile(&s->key, s->opt.key, NULL)) != 0)
		return tls_fail("loading key", s->opt.key, ret);
	if ((ret = mbedtls_pk_check_pair(&s->cert.pk, &s->key)) != 0)
		return tls_fail("matching key to certificate", s->opt.key, ret);

	if ((ret = mbedtls_ssl_config_defaults(&s->conf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
					       MBEDTLS_SSL_PRESET_DEFAULT)) != 0)
		return tls_fail("mbedtls_ssl_config_defaults", "server", ret);
	mbedtls_ssl_conf_rng(&s->conf, mbedtls_ctr_drbg_random, &s->drbg);
	mbedtls_ssl_conf_ca_chain(&s->conf, &s->ca, NULL);
	if ((ret = mbedtls_ssl_conf_own_cert(&s->conf, &s->cert, &s->key)) != 0)
		return tls_fail("mbedtls_ssl_conf_own_cert", s->opt.cert, ret);
	mbedtls_ssl_conf_authmode(&s->conf, MBEDTLS_SSL_VERIFY_REQUIRED);

	int n = 0;
	if (s->opt.tls11_only) {
		/* TLS 1.1 has no AEAD suites: ECDHE-ECDSA with CBC is what it offers. */
		mbedtls_ssl_conf_min_version(&s->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_2);
		mbedtls_ssl_conf_max_version(&s->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_2);
		s->ciphersuites[n++] = MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA;
		s->ciphersuites[n++] = MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA;
	} else {
		mbedtls_ssl_conf_min_version(&s->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
		mbedtls_ssl_conf_max_version(&s->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
		s->ciphersuites[n++] = MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;
		s->ciphersuites[n++] = MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384;
		s->ciphersuites[n++] = MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256;
		s->ciphersuites[n++] = MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CCM;
	}
	s->ciphersuites[n] = 0;
	mbedtls_ssl_conf_ciphersuites(&s->conf, s->ciphersuites);

	if ((ret = mbedtls_ssl_ticket_setup(&s->ticket, mbedtls_ctr_drbg_random, &s->drbg,
					    MBEDTLS_CIPHER_AES_256_GCM, 86400)) != 0)
		return tls_fail("mbedtls_ssl_ticket_setup", "tickets", ret);
	mbedtls_ssl_conf_session_tickets_cb(&s->conf, mbedtls_ssl_ticket_write, mbedtls_ssl_ticket_parse,
					    &s->ticket);
	mbedtls_ssl_conf_session_cache(&s->conf, &s->cache, mbedtls_ssl_cache_get, mbedtls_ssl_cache_set);

	return hs_listen(s->opt.listen, &s->listen_fd, &s->port);
}

/* ---- connections ------------------------------------------------------------ */

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
	hs_conn *c = ctx;
	ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
	if (n >= 0)
		return (int)n;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return MBEDTLS_ERR_SSL_WANT_WRITE;
	if (errno == EPIPE || errno == ECONNRESET)
		return MBEDTLS_ERR_NET_CONN_RESET;
	return MBEDTLS_ERR_NET_SEND_FAILED;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
	hs_conn *c = ctx;
	ssize_t n = recv(c->fd, buf, len, 0);
	if (n >= 0)
		return (int)n;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return MBEDTLS_ERR_SSL_WANT_READ;
	if (errno == ECONNRESET)
		return MBEDTLS_ERR_NET_CONN_RESET;
	return MBEDTLS_ERR_NET_RECV_FAILED;
}

/* Called for each certificate of the client's chain in a full handshake only:
 * a resumed session skips it, which is how the two are told apart. */
static int verify_cb(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
	hs_conn *c = ctx;
	(void)crt;
	(void)depth;
	(void)flags;
	c->verified = true;
	return 0;
}

bool hs_conn_live(const hs_conn *c)
{
	return c->state == HS_CONN_OPEN || c->state == HS_CONN_HANDSHAKE;
}

static void conn_release(hs_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	mbedtls_ssl_free(&c->ssl);
	kp_frame_reader_free(&c->rd);
	free(c->tx);
	uint64_t serial = c->serial;
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->serial = serial;
	c->state = HS_CONN_FREE;
}

void hs_conn_close(hostsim *s, hs_conn *c, const char *why)
{
	if (c->state == HS_CONN_FREE)
		return;
	kp_log_info(&s->env, "conn %llu %s%s%s: closed: %s", (unsigned long long)c->serial, c->peer,
		    c->device_id[0] ? " device " : "", c->device_id, why);
	conn_release(c);
}

static void conn_flush(hostsim *s, hs_conn *c)
{
	while (c->tx_off < c->tx_len) {
		size_t n = c->write_pending;
		if (n == 0)
			n = c->tx_len - c->tx_off < HS_TLS_CHUNK ? c->tx_len - c->tx_off : HS_TLS_CHUNK;
		int ret = mbedtls_ssl_write(&c->ssl, c->tx + c->tx_off, n);
		if (ret == MBEDTLS_ERR_SSL_WANT_WRITE || ret == MBEDTLS_ERR_SSL_WANT_READ) {
			c->write_pending = n;
			return;
		}
		if (ret < 0) {
			char why[160];
			tls_err(ret, why, sizeof(why));
			hs_conn_close(s, c, why);
			return;
		}
		c->write_pending = 0;
		c->tx_off += (size_t)ret;
	}
	c->tx_off = c->tx_len = 0;
	if (c->state == HS_CONN_CLOSING)
		hs_conn_close(s, c, "closed after last reply");
}

kp_err hs_conn_send_raw(hostsim *s, hs_conn *c, const uint8_t *data, size_t len)
{
	if (c->state != HS_CONN_OPEN && c->state != HS_CONN_CLOSING)
		return KP_ERR_DISCONNECTED;
	if (c->tx_off > 0 && c->write_pending == 0) {
		memmove(c->tx, c->tx + c->tx_off, c->tx_len - c->tx_off);
		c->tx_len -= c->tx_off;
		c->tx_off = 0;
	}
	if (c->tx_len - c->tx_off + len > HS_TX_CAP) {
		hs_conn_close(s, c, "output queue full (client does not read)");
		return KP_ERR_TOO_BIG;
	}
	if (c->tx_len + len > c->tx_cap) {
		size_t cap = c->tx_cap ? c->tx_cap : 4096;
		while (cap < c->tx_len + len)
			cap *= 2;
		uint8_t *p = realloc(c->tx, cap);
		if (!p) {
			hs_conn_close(s, c, "out of memory");
			return KP_ERR_NOMEM;
		}
		c->tx = p;
		c->tx_cap = cap;
	}
	memcpy(c->tx + c->tx_len, data, len);
	c->tx_len += len;
	conn_flush(s, c);
	return KP_OK;
}

kp_err hs_conn_send(hostsim *s, hs_conn *c, const kp_host_msg *m)
{
	static uint8_t frame[KP_FRAME_HDR + KP_FRAME_MAX];
	size_t len = 0;
	kp_err err = kp_hostproto_encode(m, frame, sizeof(frame), &len);
	if (err != KP_OK) {
		kp_log_error(&s->env, "conn %llu: cannot encode %s: %s", (unsigned long long)c->serial,
			     kp_host_op_str(m->op), kp_strerror(err));
		return err;
	}
	return hs_conn_send_raw(s, c, frame, len);
}

void hs_conn_close_after_flush(hostsim *s, hs_conn *c, const char *why)
{
	if (c->state != HS_CONN_OPEN)
		return;
	kp_log_info(&s->env, "conn %llu: closing after flush: %s", (unsigned long long)c->serial, why);
	c->state = HS_CONN_CLOSING;
	conn_flush(s, c);
}

hs_conn *hs_conn_for_device(hostsim *s, const char *device_id)
{
	for (int i = 0; i < HS_MAX_CONNS; i++) {
		hs_conn *c = &s->conns[i];
		if (c->state == HS_CONN_OPEN && c->hello_done && strcmp(c->device_id, device_id) == 0)
			return c;
	}
	return NULL;
}

static void peer_cn(hs_conn *c)
{
	const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&c->ssl);
	c->cert_cn[0] = '\0';
	if (!crt)
		return;
	for (const mbedtls_x509_name *n = &crt->subject; n; n = n->next) {
		if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0) {
			size_t len = n->val.len < sizeof(c->cert_cn) - 1 ? n->val.len : sizeof(c->cert_cn) - 1;
			memcpy(c->cert_cn, n->val.p, len);
			c->cert_cn[len] = '\0';
			return;
		}
	}
}

static void accept_all(hostsim *s)
{
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(s->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				kp_log_warn(&s->env, "accept: %s", strerror(errno));
			return;
		}
		hs_conn *c = NULL;
		for (int i = 0; i < HS_MAX_CONNS && !c; i++)
			if (s->conns[i].state == HS_CONN_FREE)
				c = &s->conns[i];
		if (!c) {
			s->stats.refused_full++;
			kp_log_warn(&s->env, "refusing a connection: %d connections open", HS_MAX_CONNS);
			close(fd);
			continue;
		}
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		memset(c, 0, sizeof(*c));
		c->fd = fd;
		c->serial = ++s->conn_serial;
		c->state = HS_CONN_HANDSHAKE;
		c->opened_ms = c->last_rx_ms = kp_now_mono(&s->env);
		char host[INET6_ADDRSTRLEN] = "?";
		uint16_t port = 0;
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
			port = ntohs(a->sin6_port);
		}
		snprintf(c->peer, sizeof(c->peer), "%s:%u", host, port);
		mbedtls_ssl_init(&c->ssl);
		kp_frame_reader_init(&c->rd);
		int ret = mbedtls_ssl_setup(&c->ssl, &s->conf);
		if (ret != 0 || kp_frame_reader_setup(&c->rd) != KP_OK) {
			hs_conn_close(s, c, "cannot set up TLS state");
			continue;
		}
		mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
		mbedtls_ssl_set_verify(&c->ssl, verify_cb, c);
		s->stats.accepted++;
		kp_log_debug(&s->env, "conn %llu: accepted from %s", (unsigned long long)c->serial, c->peer);
	}
}

static void conn_read(hostsim *s, hs_conn *c)
{
	unsigned char buf[HS_TLS_CHUNK];
	for (int round = 0; round < 64 && c->state == HS_CONN_OPEN; round++) {
		int ret = mbedtls_ssl_read(&c->ssl, buf, sizeof(buf));
		if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
			return;
		if (ret == 0 || ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || ret == MBEDTLS_ERR_NET_CONN_RESET) {
			hs_conn_close(s, c, "peer closed");
			return;
		}
		if (ret < 0) {
			char why[160];
			tls_err(ret, why, sizeof(why));
			hs_conn_close(s, c, why);
			return;
		}
		c->last_rx_ms = kp_now_mono(&s->env);
		size_t off = 0;
		while (off < (size_t)ret && c->state == HS_CONN_OPEN) {
			size_t used = 0, flen = 0;
			const uint8_t *frame = NULL;
			kp_err err = kp_frame_reader_feed(&c->rd, buf + off, (size_t)ret - off, &used, &frame,
							  &flen);
			if (err != KP_OK) {
				s->stats.protocol_errors++;
				hs_conn_close(s, c, "protocol error: frame length 0 or over 65536");
				return;
			}
			off += used;
			if (frame)
				hs_proto_frame(s, c, frame, flen);
		}
	}
}

static void conn_handshake(hostsim *s, hs_conn *c)
{
	int ret = mbedtls_ssl_handshake(&c->ssl);
	if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
		c->hs_want_write = ret == MBEDTLS_ERR_SSL_WANT_WRITE;
		return;
	}
	if (ret != 0) {
		char why[200], v[96] = "";
		tls_err(ret, why, sizeof(why));
		uint32_t flags = mbedtls_ssl_get_verify_result(&c->ssl);
		if (flags != 0 && flags != (uint32_t)-1)
			mbedtls_x509_crt_verify_info(v, sizeof(v), "", flags);
		size_t vl = strlen(v);
		while (vl > 0 && v[vl - 1] == '\n')
			v[--vl] = '\0';
		s->stats.handshake_failures++;
		kp_log_warn(&s->env, "conn %llu %s: TLS handshake failed: %s%s%s", (unsigned long long)c->serial,
			    c->peer, why, v[0] ? "; client certificate: " : "", v);
		conn_release(c);
		return;
	}
	c->state = HS_CONN_OPEN;
	c->hs_want_write = false;
	peer_cn(c);
	if (c->verified)
		s->stats.handshakes_full++;
	else
		s->stats.handshakes_resumed++;
	kp_log_info(&s->env, "conn %llu %s: TLS up (%s, %s, %s), client CN %s", (unsigned long long)c->serial,
		    c->peer, mbedtls_ssl_get_version(&c->ssl), mbedtls_ssl_get_ciphersuite(&c->ssl),
		    c->verified ? "full" : "resumed", c->cert_cn[0] ? c->cert_cn : "?");
	conn_read(s, c);
}

void hs_server_poll_add(hostsim *s, hs_pollset *ps)
{
	if (s->listen_fd >= 0) {
		ps->pfd[ps->n] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
		ps->kind[ps->n] = HS_SLOT_LISTEN;
		ps->index[ps->n] = -1;
		ps->n++;
	}
	for (int i = 0; i < HS_MAX_CONNS; i++) {
		hs_conn *c = &s->conns[i];
		short ev = 0;
		switch (c->state) {
		case HS_CONN_FREE: continue;
		case HS_CONN_HANDSHAKE: ev = POLLIN | (c->hs_want_write ? POLLOUT : 0); break;
		case HS_CONN_OPEN:
			ev = POLLIN | (c->tx_len > c->tx_off ? POLLOUT : 0);
			if (mbedtls_ssl_check_pending(&c->ssl))
				ps->pending = true;
			break;
		case HS_CONN_CLOSING: ev = POLLOUT; break;
		}
		ps->pfd[ps->n] = (struct pollfd){.fd = c->fd, .events = ev};
		ps->kind[ps->n] = HS_SLOT_CONN;
		ps->index[ps->n] = i;
		ps->serial[ps->n] = c->serial;
		ps->n++;
	}
}

void hs_server_process(hostsim *s, hs_slot_kind kind, int index, uint64_t serial, short revents)
{
	if (kind == HS_SLOT_LISTEN) {
		if (revents & POLLIN)
			accept_all(s);
		return;
	}
	hs_conn *c = &s->conns[index];
	if (c->state == HS_CONN_FREE || c->serial != serial)
		return;
	bool pending = c->state == HS_CONN_OPEN && mbedtls_ssl_check_pending(&c->ssl);
	if (revents == 0 && !pending)
		return;
	if (c->state == HS_CONN_HANDSHAKE) {
		if (revents & (POLLERR | POLLNVAL)) {
			s->stats.handshake_failures++;
			hs_conn_close(s, c, "socket error during handshake");
			return;
		}
		conn_handshake(s, c);
		return;
	}
	if (c->tx_len > c->tx_off && (revents & (POLLOUT | POLLIN)))
		conn_flush(s, c);
	if (c->state == HS_CONN_OPEN && (revents & (POLLIN | POLLHUP | POLLERR) || pending))
		conn_read(s, c);
	else if (c->state == HS_CONN_CLOSING && (revents & (POLLERR | POLLHUP | POLLNVAL)))
		hs_conn_close(s, c, "peer gone while closing");
}

int64_t hs_server_tick(hostsim *s)
{
	int64_t now = kp_now_mono(&s->env), next = 0;
	for (int i = 0; i < HS_MAX_CONNS; i++) {
		hs_conn *c = &s->conns[i];
		int64_t due;
		if (c->state == HS_CONN_HANDSHAKE) {
			due = c->opened_ms + HS_HANDSHAKE_TIMEOUT_MS;
			if (now >= due) {
				s->stats.handshake_failures++;
				hs_conn_close(s, c, "handshake timed out");
				continue;
			}
		} else if (c->state == HS_CONN_OPEN || c->state == HS_CONN_CLOSING) {
			due = c->last_rx_ms + HS_IDLE_TIMEOUT_MS;
			if (now >= due) {
				hs_conn_close(s, c, "idle timeout");
				continue;
			}
		} else {
			continue;
		}
		next = hs_min_deadline(next, due);
	}
	return next;
}

void hs_server_free(hostsim *s)
{
	for (int i = 0; i < HS_MAX_CONNS; i++) {
		hs_conn *c = &s->conns[i];
		if (c->state == HS_CONN_OPEN || c->state == HS_CONN_CLOSING) {
			conn_flush(s, c);
			if (c->state != HS_CONN_FREE)
				(void)mbedtls_ssl_close_notify(&c->ssl);
		}
		if (c->state != HS_CONN_FREE)
			conn_release(c);
	}
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	s->listen_fd = -1;
	mbedtls_ssl_cache_free(&s->cache);
	mbedtls_ssl_ticket_free(&s->ticket);
	mbedtls_ssl_config_free(&s->conf);
	mbedtls_pk_free(&s->key);
	mbedtls_x509_crt_free(&s->cert);
	mbedtls_x509_crt_free(&s->ca);
	mbedtls_ctr_drbg_free(&s->drbg);
	mbedtls_entropy_free(&s->entropy);
}
