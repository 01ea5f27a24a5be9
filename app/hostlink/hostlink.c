/* hostlink.c — the kiosk's TLS client to the payment host (docs/hostlink.md):
 * mbedtls 2.28, TLS 1.2 only, mutual auth, session tickets, non-blocking and
 * driven by the daemon's poll loop, pipelined requests matched by "re". */
#include "hostlink.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "kp_failpoint.h"
#include "kp_pan.h"

/* Failpoints of the host link (docs/failpoints.md). */
enum {
	FP_CONNECT = 40,        /* TCP connect attempt fails at once */
	FP_HANDSHAKE = 41,      /* TLS handshake fails when it completes */
	FP_DROP_BEFORE_SEND = 42,
	FP_DROP_AFTER_SEND = 43,
	FP_DROP_ON_REPLY = 44,  /* reply received, connection dropped before it is delivered */
	FP_DROP_AFTER_REPLY = 45,
	FP_LOSE_CONFIRM = 46,   /* confirm received and ignored (the host redelivers) */
	FP_LOSE_ACK = 47,       /* ack accepted but never sent */
	FP_MALFORMED_IN = 48,   /* next received frame treated as malformed */
};

enum link_state {
	ST_IDLE,       /* no socket; next attempt at next_attempt_at */
	ST_CONNECTING, /* non-blocking TCP connect in progress */
	ST_HANDSHAKE,  /* TLS handshake in progress */
	ST_HELLO,      /* TLS up, hello sent, waiting for hello_ok */
	ST_UP,
};

static const char *const state_names[] = {"idle", "connecting", "handshake", "hello", "up"};

enum pend_kind { PEND_USER, PEND_HELLO, PEND_PING };

struct pending {
	int64_t id;
	int64_t deadline;
	kp_host_op op;
	enum pend_kind kind;
	char key[KP_PROTO_ID_SIZE]; /* attempt_id / refund_id the reply must name */
	kp_host_reply_fn fn;
	void *arg;
};

#define RECENT_TIMEOUTS 256 /* ids of timed-out requests whose late replies are dropped */
#define READ_CHUNK 16384

struct kp_hostlink {
	const kp_env *env;
	kp_host_confirm_fn on_confirm;
	kp_host_state_fn on_state;
	void *cb_arg;

	/* configuration (own copies) */
	char *host;
	char *port;
	char *server_name;
	char *device_id;
	char *fw;
	int64_t request_timeout_ms;
	int64_t ping_idle_ms;
	int64_t backoff_min_ms;
	int64_t backoff_max_ms;
	int64_t connect_timeout_ms;

	/* TLS material, loaded once */
	mbedtls_ssl_config conf;
	mbedtls_ctr_drbg_context drbg;
	mbedtls_x509_crt ca;
	mbedtls_x509_crt cert;
	mbedtls_pk_context key;
	mbedtls_ssl_session session; /* last session, offered on reconnect */
	bool have_session;

	/* one connection */
	enum link_state state;
	int fd;
	mbedtls_ssl_context ssl;
	bool ssl_ready;
	bool hs_want_write;
	bool hs_verified;            /* the verify callback ran: a full handshake */
	struct addrinfo *ai_list;
	struct addrinfo *ai_cur;
	int64_t connect_deadline;
	int64_t next_attempt_at;
	int64_t backoff_cur;
	int64_t last_rx;
	bool ping_outstanding;
	int64_t next_id;

	kp_frame_reader reader;
	uint8_t *out;                /* queued plaintext frames */
	size_t out_off, out_len, out_cap;
	size_t inflight;             /* length passed to an mbedtls_ssl_write that wants a retry */
	uint8_t *scratch;            /* one encoded frame */
	uint8_t rbuf[READ_CHUNK];
	kp_host_msg rx;

	struct pending *pend;
	size_t npend, cap_pend;
	int64_t recent[RECENT_TIMEOUTS];
	size_t recent_next;

	kp_hostlink_stats stats;
};

/* ---- small helpers ----------------------------------------------------------- */

static int64_t now_ms(const kp_hostlink *l)
{
	return kp_now_mono(l->env);
}

static void tls_errtext(int ret, char *buf, size_t cap)
{
	mbedtls_strerror(ret, buf, cap);
}

/* mbedtls' entropy callback: the env's randomness (getrandom in production). */
static int entropy_from_env(void *p, unsigned char *out, size_t len)
{
	const kp_hostlink *l = p;
	return l->env->random(l->env->ctx, out, len) == KP_OK ? 0 : MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED;
}

/* Called for each certificate of the host's chain; it only runs in a full
 * handshake (a resumed one sends no Certificate), which is how the two are told
 * apart. The verdict stays mbedtls' (flags are left as they are). */
static int verify_seen(void *p, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
	(void)crt;
	(void)depth;
	(void)flags;
	((kp_hostlink *)p)->hs_verified = true;
	return 0;
}

static char *dup_str(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

/* "host:port" or "[v6]:port" into host and port. */
static kp_err split_address(const char *addr, char **host, char **port)
{
	const char *colon = strrchr(addr, ':');
	if (!colon || colon == addr || !colon[1])
		return KP_ERR_CONFIG;
	const char *h = addr;
	size_t hl = (size_t)(colon - addr);
	if (h[0] == '[') {
		if (hl < 3 || h[hl - 1] != ']')
			return KP_ERR_CONFIG;
		h++;
		hl -= 2;
	}
	char *end = NULL;
	errno = 0;
	long p = strtol(colon + 1, &end, 10);
	if (errno || *end || p < 1 || p > 65535)
		return KP_ERR_CONFIG;
	*host = malloc(hl + 1);
	*port = dup_str(colon + 1);
	if (!*host || !*port)
		return KP_ERR_NOMEM;
	memcpy(*host, h, hl);
	(*host)[hl] = '\0';
	return KP_OK;
}

/* ---- pending requests --------------------------------------------------------- */

static struct pending *pend_find(kp_hostlink *l, int64_t id, size_t *idx)
{
	for (size_t i = 0; i < l->npend; i++) {
		if (l->pend[i].id == id) {
			*idx = i;
			return &l->pend[i];
		}
	}
	return NULL;
}

static void pend_remove(kp_hostlink *l, size_t idx)
{
	l->pend[idx] = l->pend[--l->npend];
}

static kp_err pend_add(kp_hostlink *l, const struct pending *p)
{
	if (l->npend == l->cap_pend) {
		size_t cap = l->cap_pend ? l->cap_pend * 2 : 64;
		struct pending *n = realloc(l->pend, cap * sizeof(*n));
		if (!n)
			return KP_ERR_NOMEM;
		l->pend = n;
		l->cap_pend = cap;
	}
	l->pend[l->npend++] = *p;
	return KP_OK;
}

static bool recent_timeout(const kp_hostlink *l, int64_t id)
{
	for (size_t i = 0; i < RECENT_TIMEOUTS; i++)
		if (l->recent[i] == id)
			return true;
	return false;
}

/* Every user request gets KP_ERR_DISCONNECTED; internal ones are forgotten.
 * The table is detached first: callbacks may queue new requests (refused:
 * the link is down by then). */
static void pend_fail_all(kp_hostlink *l)
{
	struct pending *list = l->pend;
	size_t n = l->npend;
	l->pend = NULL;
	l->npend = 0;
	l->cap_pend = 0;
	for (size_t i = 0; i < n; i++)
		if (list[i].kind == PEND_USER && list[i].fn)
			list[i].fn(list[i].arg, KP_ERR_DISCONNECTED, NULL);
	free(list);
}

/* ---- output queue ------------------------------------------------------------ */

static size_t out_queued(const kp_hostlink *l)
{
	return l->out_len - l->out_off;
}

static kp_err out_append(kp_hostlink *l, const uint8_t *p, size_t n)
{
	if (out_queued(l) + n > KP_HOSTLINK_OUT_MAX)
		return KP_ERR_TOO_BIG;
	if (l->out_len + n > l->out_cap && l->out_off > 0) {
		/* slide the unsent bytes down; a pending retry resends from out_off, same bytes */
		memmove(l->out, l->out + l->out_off, out_queued(l));
		l->out_len -= l->out_off;
		l->out_off = 0;
	}
	if (l->out_len + n > l->out_cap) {
		size_t cap = l->out_cap ? l->out_cap : 16384;
		while (cap < l->out_len + n)
			cap *= 2;
		uint8_t *b = realloc(l->out, cap);
		if (!b)
			return KP_ERR_NOMEM;
		l->out = b;
		l->out_cap = cap;
	}
	memcpy(l->out + l->out_len, p, n);
	l->out_len += n;
	return KP_OK;
}

/* Encode msg and queue it. */
static kp_err queue_msg(kp_hostlink *l, const kp_host_msg *msg)
{
	size_t n = 0;
	kp_err err = kp_hostproto_encode(msg, l->scratch, KP_FRAME_MAX + KP_FRAME_HDR, &n);
	if (err != KP_OK)
		return err;
	return out_append(l, l->scratch, n);
}

/* ---- connection lifecycle ------------------------------------------------------ */

static void schedule_retry(kp_hostlink *l)
{
	int64_t cur = l->backoff_cur;
	uint32_t r = 0;
	if (l->env->random(l->env->ctx, &r, sizeof(r)) != KP_OK)
		r = 0;
	/* "equal jitter": somewhere in [cur/2, cur] */
	int64_t half = cur / 2;
	int64_t delay = half + (int64_t)(r % (uint64_t)(cur - half + 1));
	l->next_attempt_at = now_ms(l) + delay;
	l->backoff_cur = cur * 2 > l->backoff_max_ms ? l->backoff_max_ms : cur * 2;
	kp_log_info(l->env, "hostlink: next attempt in %lld ms", (long long)delay);
}

static void close_socket(kp_hostlink *l)
{
	if (l->ssl_ready) {
		if (l->state == ST_HELLO || l->state == ST_UP)
			(void)mbedtls_ssl_close_notify(&l->ssl); /* best effort, non-blocking */
		mbedtls_ssl_free(&l->ssl);
		mbedtls_ssl_init(&l->ssl);
		l->ssl_ready = false;
	}
	if (l->fd >= 0) {
		close(l->fd);
		l->fd = -1;
	}
	if (l->ai_list) {
		freeaddrinfo(l->ai_list);
		l->ai_list = NULL;
		l->ai_cur = NULL;
	}
	kp_frame_reader_reset(&l->reader);
	l->out_off = l->out_len = 0;
	l->inflight = 0;
	l->ping_outstanding = false;
	l->hs_want_write = false;
}

/* The connection (or the attempt) is over: log why, close, fail what was in
 * flight, schedule the next attempt. */
static void link_drop(kp_hostlink *l, const char *why)
{
	bool was_up = l->state == ST_UP;
	if (l->state == ST_IDLE)
		return;
	if (was_up)
		l->stats.disconnects++;
	else
		l->stats.connects_failed++;
	kp_log_warn(l->env, "hostlink: %s %s:%s: %s", was_up ? "lost" : "could not connect to",
		    l->host, l->port, why);
	close_socket(l);
	l->state = ST_IDLE;
	schedule_retry(l);
	pend_fail_all(l);
	if (was_up && l->on_state)
		l->on_state(l->cb_arg, false);
}

static void protocol_error(kp_hostlink *l, const char *why)
{
	l->stats.protocol_errors++;
	kp_log_error(l->env, "hostlink: protocol error: %s", why);
	link_drop(l, "protocol error");
}

/* A failed handshake: count it, and forget the saved session (a resumed
 * session skips the certificate checks: start from scratch). */
static void handshake_failed(kp_hostlink *l, int ret)
{
	l->stats.last_tls_error = ret;
	l->stats.tls_failures++;
	if (l->have_session) {
		mbedtls_ssl_session_free(&l->session);
		mbedtls_ssl_session_init(&l->session);
		l->have_session = false;
	}
}

static void tls_failure(kp_hostlink *l, int ret, const char *during)
{
	char text[160];
	char why[512];
	tls_errtext(ret, text, sizeof(text));
	l->stats.last_tls_error = ret;
	if (l->state == ST_HANDSHAKE)
		handshake_failed(l, ret);
	uint32_t flags = l->ssl_ready ? mbedtls_ssl_get_verify_result(&l->ssl) : 0;
	if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && flags != 0 && flags != (uint32_t)-1) {
		char info[256];
		l->stats.last_verify_flags = flags;
		int n = mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
		for (int i = 0; n > 0 && i < n; i++)
			if (info[i] == '\n')
				info[i] = (i == n - 1) ? '\0' : ';';
		snprintf(why, sizeof(why), "TLS %s failed: %s (host certificate: %s)", during, text,
			 info);
	} else {
		snprintf(why, sizeof(why), "TLS %s failed: %s (-0x%04x)", during, text,
			 (unsigned)-ret);
	}
	link_drop(l, why);
}

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
	kp_hostlink *l = ctx;
	ssize_t n = send(l->fd, buf, len, MSG_NOSIGNAL);
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
	kp_hostlink *l = ctx;
	ssize_t n = recv(l->fd, buf, len, 0);
	if (n >= 0)
		return (int)n;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return MBEDTLS_ERR_SSL_WANT_READ;
	if (errno == ECONNRESET || errno == EPIPE)
		return MBEDTLS_ERR_NET_CONN_RESET;
	return MBEDTLS_ERR_NET_RECV_FAILED;
}

static void send_hello(kp_hostlink *l)
{
	kp_host_msg m;
	memset(&m, 0, sizeof(m));
	m.op = KP_OP_HELLO;
	m.id = l->next_id++;
	m.proto = 1;
	snprintf(m.device_id, sizeof(m.device_id), "%s", l->device_id);
	snprintf(m.fw, sizeof(m.fw), "%s", l->fw);
	struct pending p = {.id = m.id,
			    .deadline = now_ms(l) + l->request_timeout_ms,
			    .op = KP_OP_HELLO,
			    .kind = PEND_HELLO};
	kp_err err = queue_msg(l, &m);
	if (err == KP_OK)
		err = pend_add(l, &p);
	if (err != KP_OK) {
		char why[96];
		snprintf(why, sizeof(why), "cannot queue hello: %s", kp_strerror(err));
		link_drop(l, why);
		return;
	}
	l->state = ST_HELLO;
}

static void flush_out(kp_hostlink *l);

static void handshake_step(kp_hostlink *l)
{
	int ret = mbedtls_ssl_handshake(&l->ssl);
	if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
		l->hs_want_write = ret == MBEDTLS_ERR_SSL_WANT_WRITE;
		return;
	}
	if (ret == 0 && KP_FAILPOINT(FP_HANDSHAKE))
		ret = MBEDTLS_ERR_SSL_INTERNAL_ERROR;
	if (ret != 0) {
		tls_failure(l, ret, "handshake");
		return;
	}
	bool resumed = !l->hs_verified;
	/* Mutual TLS is the policy: a host that did not ask for the device
	 * certificate in a full handshake is not the payment host. (A resumed
	 * handshake has no CertificateRequest; its session was asked for one.) */
	if (!resumed && !l->ssl.client_auth) {
		handshake_failed(l, MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE);
		link_drop(l, "TLS handshake refused: the host did not ask for the device certificate");
		return;
	}
	if (resumed)
		l->stats.resumed_handshakes++;
	else
		l->stats.full_handshakes++;
	/* keep the (new) session and its ticket for the next connection */
	mbedtls_ssl_session_free(&l->session);
	mbedtls_ssl_session_init(&l->session);
	l->have_session = mbedtls_ssl_get_session(&l->ssl, &l->session) == 0;
	kp_log_info(l->env, "hostlink: TLS up with %s (%s, %s handshake)", l->server_name,
		    mbedtls_ssl_get_ciphersuite(&l->ssl), resumed ? "resumed" : "full");
	l->last_rx = now_ms(l);
	send_hello(l);
	if (l->state == ST_HELLO)
		flush_out(l);
}

static void tls_start(kp_hostlink *l)
{
	int ret;
	char why[160];
	mbedtls_ssl_init(&l->ssl);
	l->ssl_ready = true;
	if ((ret = mbedtls_ssl_setup(&l->ssl, &l->conf)) != 0 ||
	    (ret = mbedtls_ssl_set_hostname(&l->ssl, l->server_name)) != 0) {
		char text[96];
		tls_errtext(ret, text, sizeof(text));
		snprintf(why, sizeof(why), "TLS setup: %s", text);
		link_drop(l, why);
		return;
	}
	mbedtls_ssl_set_bio(&l->ssl, l, bio_send, bio_recv, NULL);
	if (l->have_session && mbedtls_ssl_set_session(&l->ssl, &l->session) != 0) {
		mbedtls_ssl_session_free(&l->session);
		mbedtls_ssl_session_init(&l->session);
		l->have_session = false;
	}
	l->hs_verified = false;
	l->hs_want_write = false;
	l->state = ST_HANDSHAKE;
	handshake_step(l);
}

/* Try addresses from ai_cur on until one connects or is in progress. */
static void connect_next(kp_hostlink *l)
{
	int last_errno = 0;
	while (l->ai_cur) {
		struct addrinfo *ai = l->ai_cur;
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
				ai->ai_protocol);
		if (fd < 0) {
			last_errno = errno;
			l->ai_cur = ai->ai_next;
			continue;
		}
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			l->fd = fd;
			tls_start(l);
			return;
		}
		if (errno == EINPROGRESS) {
			l->fd = fd;
			l->state = ST_CONNECTING;
			return;
		}
		last_errno = errno;
		close(fd);
		l->ai_cur = ai->ai_next;
	}
	char why[128];
	snprintf(why, sizeof(why), "connect: %s", last_errno ? strerror(last_errno) : "no address");
	link_drop(l, why);
}

static void connect_start(kp_hostlink *l)
{
	char why[160];
	l->state = ST_CONNECTING; /* so that a failure below counts as an attempt */
	l->connect_deadline = now_ms(l) + l->connect_timeout_ms;
	if (KP_FAILPOINT(FP_CONNECT)) {
		link_drop(l, "connect: failpoint");
		return;
	}
	struct addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	int rc = getaddrinfo(l->host, l->port, &hints, &l->ai_list);
	if (rc == EAI_NONAME) {
		hints.ai_flags = AI_NUMERICSERV; /* a name: the one blocking call (DNS) */
		rc = getaddrinfo(l->host, l->port, &hints, &l->ai_list);
	}
	if (rc != 0) {
		l->ai_list = NULL;
		snprintf(why, sizeof(why), "resolve %s: %s", l->host, gai_strerror(rc));
		link_drop(l, why);
		return;
	}
	l->ai_cur = l->ai_list;
	kp_log_debug(l->env, "hostlink: connecting to %s:%s", l->host, l->port);
	connect_next(l);
}

static void connect_check(kp_hostlink *l)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	if (getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
		soerr = errno;
	if (soerr == 0) {
		tls_start(l);
		return;
	}
	if (soerr == EINPROGRESS || soerr == EALREADY)
		return;
	close(l->fd);
	l->fd = -1;
	kp_log_debug(l->env, "hostlink: connect: %s", strerror(soerr));
	l->ai_cur = l->ai_cur ? l->ai_cur->ai_next : NULL;
	if (!l->ai_cur) {
		char why[128];
		snprintf(why, sizeof(why), "connect: %s", strerror(soerr));
		link_drop(l, why);
		return;
	}
	connect_next(l);
}

/* ---- I/O on an established connection ------------------------------------------ */

static void flush_out(kp_hostlink *l)
{
	if (out_queued(l) == 0)
		return;
	if (KP_FAILPOINT(FP_DROP_BEFORE_SEND)) {
		link_drop(l, "failpoint: dropped before send");
		return;
	}
	size_t max_rec = (size_t)mbedtls_ssl_get_max_out_record_payload(&l->ssl);
	if (max_rec == 0 || max_rec > 16384)
		max_rec = 16384;
	while (out_queued(l) > 0) {
		size_t n = l->inflight;
		if (n == 0)
			n = out_queued(l) < max_rec ? out_queued(l) : max_rec;
		int ret = mbedtls_ssl_write(&l->ssl, l->out + l->out_off, n);
		if (ret == MBEDTLS_ERR_SSL_WANT_WRITE || ret == MBEDTLS_ERR_SSL_WANT_READ) {
			l->inflight = n; /* mbedtls wants the same length again */
			return;
		}
		if (ret < 0) {
			tls_failure(l, ret, "write");
			return;
		}
		l->inflight = 0;
		l->out_off += (size_t)ret;
	}
	l->out_off = l->out_len = 0;
	if (KP_FAILPOINT(FP_DROP_AFTER_SEND))
		link_drop(l, "failpoint: dropped after send");
}

static kp_host_op reply_op_for(kp_host_op req)
{
	switch (req) {
	case KP_OP_HELLO: return KP_OP_HELLO_OK;
	case KP_OP_CREATE_PAYMENT:
	case KP_OP_QUERY_PAYMENT:
	case KP_OP_CANCEL_PAYMENT: return KP_OP_PAYMENT;
	case KP_OP_REFUND:
	case KP_OP_QUERY_REFUND: return KP_OP_REFUND_REPLY;
	case KP_OP_PING: return KP_OP_PONG;
	default: return KP_OP_NONE;
	}
}

/* A card number in any string of m (JSON escapes undone), kp_pan.h. */
static bool msg_has_pan(const kp_host_msg *m)
{
	const char *const fields[] = {m->attempt_id, m->order_id, m->refund_id, m->host_txn,
				      m->device_id,  m->status,   m->channel,   m->currency,
				      m->reason,     m->code,     m->message,   m->fw,
				      m->qr};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (kp_text_has_pan(fields[i], strlen(fields[i])))
			return true;
	return false;
}

/* One frame from the host. False if the connection was dropped. */
static bool handle_frame(kp_hostlink *l, const uint8_t *f, size_t n)
{
	kp_host_msg *m = &l->rx;
	char why[200];
	char reason[128];
	kp_err err = kp_hostproto_decode(f, n, true, m, reason, sizeof(reason));
	if (err == KP_OK && KP_FAILPOINT(FP_MALFORMED_IN)) {
		err = KP_ERR_PROTOCOL;
		snprintf(reason, sizeof(reason), "failpoint");
	}
	if (err != KP_OK) {
		snprintf(why, sizeof(why), "malformed frame (%zu bytes, op %s): %s", n,
			 kp_host_op_str(m->op), reason);
		protocol_error(l, why);
		return false;
	}
	/* The kiosk never takes card data: a frame carrying a card number (in its
	 * bytes, or in a string once unescaped) is refused whole, unlogged. */
	if (kp_text_has_pan((const char *)f, n) || msg_has_pan(m)) {
		snprintf(why, sizeof(why), "%s frame (%zu bytes) carries what looks like a card number",
			 kp_host_op_str(m->op), n);
		protocol_error(l, why);
		return false;
	}
	if (m->op == KP_OP_CONFIRM) {
		if (l->state != ST_UP) {
			protocol_error(l, "confirm before hello_ok");
			return false;
		}
		l->stats.confirms++;
		if (KP_FAILPOINT(FP_LOSE_CONFIRM)) {
			kp_log_warn(l->env, "hostlink: failpoint: confirm seq %lld ignored",
				    (long long)m->seq);
			return true;
		}
		if (l->on_confirm)
			l->on_confirm(l->cb_arg, m);
		else
			kp_log_warn(l->env, "hostlink: confirm seq %lld with no receiver",
				    (long long)m->seq);
		return l->state == ST_UP;
	}
	if (m->op == KP_OP_ERROR && !m->has_re) {
		kp_log_warn(l->env, "hostlink: host error %s (no request named)", m->code);
		return true;
	}
	size_t idx = 0;
	struct pending *p = pend_find(l, m->re, &idx);
	if (!p) {
		if (recent_timeout(l, m->re)) {
			l->stats.late_replies++;
			kp_log_info(l->env, "hostlink: late %s for timed-out request %lld dropped",
				    kp_host_op_str(m->op), (long long)m->re);
			return true;
		}
		snprintf(why, sizeof(why), "%s for unknown request %lld", kp_host_op_str(m->op),
			 (long long)m->re);
		protocol_error(l, why);
		return false;
	}
	if (m->op != KP_OP_ERROR && m->op != reply_op_for(p->op)) {
		snprintf(why, sizeof(why), "%s in reply to %s %lld", kp_host_op_str(m->op),
			 kp_host_op_str(p->op), (long long)m->re);
		protocol_error(l, why);
		return false;
	}
	const char *named = m->op == KP_OP_PAYMENT ? m->attempt_id
			    : m->op == KP_OP_REFUND_REPLY ? m->refund_id
							  : NULL;
	if (named && strcmp(named, p->key) != 0) {
		snprintf(why, sizeof(why), "%s %lld names %s, request was for %s",
			 kp_host_op_str(m->op), (long long)m->re, named, p->key);
		protocol_error(l, why);
		return false;
	}
	if (KP_FAILPOINT(FP_DROP_ON_REPLY)) {
		link_drop(l, "failpoint: dropped on reply");
		return false;
	}
	struct pending done = *p;
	pend_remove(l, idx);
	switch (done.kind) {
	case PEND_HELLO:
		if (m->op == KP_OP_ERROR) {
			snprintf(why, sizeof(why), "hello refused: %s", m->code);
			link_drop(l, why);
			return false;
		}
		l->state = ST_UP;
		l->backoff_cur = l->backoff_min_ms;
		kp_log_info(l->env, "hostlink: up (host time %lld)", (long long)m->host_time);
		if (l->on_state)
			l->on_state(l->cb_arg, true);
		break;
	case PEND_PING:
		l->ping_outstanding = false;
		break;
	case PEND_USER:
		l->stats.replies++;
		if (done.fn)
			done.fn(done.arg, KP_OK, m);
		break;
	}
	if (l->state != ST_UP && l->state != ST_HELLO)
		return false;
	if (KP_FAILPOINT(FP_DROP_AFTER_REPLY)) {
		link_drop(l, "failpoint: dropped after reply");
		return false;
	}
	return true;
}

/* Read and handle everything available. False if the connection was dropped. */
static bool read_all(kp_hostlink *l)
{
	for (;;) {
		int ret = mbedtls_ssl_read(&l->ssl, l->rbuf, sizeof(l->rbuf));
		if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
			return true;
		if (ret == 0 || ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
			link_drop(l, "host closed the connection");
			return false;
		}
		if (ret == MBEDTLS_ERR_NET_CONN_RESET) {
			link_drop(l, "connection reset");
			return false;
		}
		if (ret < 0) {
			tls_failure(l, ret, "read");
			return false;
		}
		l->last_rx = now_ms(l);
		size_t off = 0, len = (size_t)ret;
		while (off < len) {
			size_t used = 0;
			const uint8_t *frame = NULL;
			size_t flen = 0;
			kp_err err = kp_frame_reader_feed(&l->reader, l->rbuf + off, len - off, &used,
							  &frame, &flen);
			if (err != KP_OK) {
				protocol_error(l, "frame length out of range");
				return false;
			}
			off += used;
			if (frame && !handle_frame(l, frame, flen))
				return false;
		}
	}
}

/* ---- public API ------------------------------------------------------------------ */

static const int suites[] = {
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	0,
};

static kp_err load_tls(kp_hostlink *l, const kp_hostlink_config *cfg)
{
	int ret;
	char text[128];
	const char *what = NULL;
	const char *file = NULL;

	if ((ret = mbedtls_ctr_drbg_seed(&l->drbg, entropy_from_env, l,
					 (const unsigned char *)"kioskpay-hostlink", 17)) != 0) {
		what = "seed the DRBG";
		goto out;
	}
	file = cfg->ca_file;
	if ((ret = mbedtls_x509_crt_parse_file(&l->ca, cfg->ca_file)) != 0) {
		what = "load CA";
		goto out;
	}
	file = cfg->cert_file;
	if ((ret = mbedtls_x509_crt_parse_file(&l->cert, cfg->cert_file)) != 0) {
		what = "load certificate";
		goto out;
	}
	file = cfg->key_file;
	if ((ret = mbedtls_pk_parse_keyfile(&l->key, cfg->key_file, NULL)) != 0) {
		what = "load key";
		goto out;
	}
	if ((ret = mbedtls_pk_check_pair(&l->cert.pk, &l->key)) != 0) {
		what = "match key to certificate";
		goto out;
	}
	file = NULL;
	if ((ret = mbedtls_ssl_config_defaults(&l->conf, MBEDTLS_SSL_IS_CLIENT,
					       MBEDTLS_SSL_TRANSPORT_STREAM,
					       MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
		what = "set TLS defaults";
		goto out;
	}
	mbedtls_ssl_conf_min_version(&l->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_max_version(&l->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_ciphersuites(&l->conf, suites);
	mbedtls_ssl_conf_authmode(&l->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	mbedtls_ssl_conf_ca_chain(&l->conf, &l->ca, NULL);
	mbedtls_ssl_conf_verify(&l->conf, verify_seen, l);
	mbedtls_ssl_conf_rng(&l->conf, mbedtls_ctr_drbg_random, &l->drbg);
	mbedtls_ssl_conf_session_tickets(&l->conf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
	mbedtls_ssl_conf_renegotiation(&l->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
	if ((ret = mbedtls_ssl_conf_own_cert(&l->conf, &l->cert, &l->key)) != 0) {
		what = "use the device certificate";
		goto out;
	}
out:
	if (what) {
		tls_errtext(ret, text, sizeof(text));
		kp_log_error(l->env, "hostlink: cannot %s%s%s: %s", what, file ? " from " : "",
			     file ? file : "", text);
		return KP_ERR_CONFIG;
	}
	return KP_OK;
}

kp_err kp_hostlink_new(kp_hostlink **out, const kp_hostlink_config *cfg, const kp_env *env,
		       kp_host_confirm_fn on_confirm, kp_host_state_fn on_state, void *cb_arg)
{
	kp_err err = KP_OK;
	kp_hostlink *l = NULL;

	*out = NULL;
	if (!cfg || !env || !cfg->address || !cfg->server_name || !cfg->ca_file ||
	    !cfg->cert_file || !cfg->key_file || !cfg->device_id) {
		err = KP_ERR_INVALID;
		goto out;
	}
	if (!kp_proto_id_valid(cfg->device_id)) {
		kp_log_error(env, "hostlink: device id \"%s\" is not a protocol id", cfg->device_id);
		err = KP_ERR_CONFIG;
		goto out;
	}
	const char *fw = cfg->fw_version && cfg->fw_version[0] ? cfg->fw_version : "unknown";
	if (strlen(fw) >= sizeof(((kp_host_msg *)0)->fw)) {
		kp_log_error(env, "hostlink: firmware version text too long");
		err = KP_ERR_CONFIG;
		goto out;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		err = KP_ERR_NOMEM;
		goto out;
	}
	l->env = env;
	l->fd = -1;
	l->on_confirm = on_confirm;
	l->on_state = on_state;
	l->cb_arg = cb_arg;
	mbedtls_ssl_config_init(&l->conf);
	mbedtls_ctr_drbg_init(&l->drbg);
	mbedtls_x509_crt_init(&l->ca);
	mbedtls_x509_crt_init(&l->cert);
	mbedtls_pk_init(&l->key);
	mbedtls_ssl_session_init(&l->session);
	mbedtls_ssl_init(&l->ssl);
	kp_frame_reader_init(&l->reader);
	l->request_timeout_ms = cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms : 10000;
	l->ping_idle_ms = cfg->ping_idle_ms > 0 ? cfg->ping_idle_ms : 15000;
	l->backoff_min_ms = cfg->backoff_min_ms > 0 ? cfg->backoff_min_ms : 500;
	l->backoff_max_ms = cfg->backoff_max_ms > 0 ? cfg->backoff_max_ms : 30000;
	if (l->backoff_max_ms < l->backoff_min_ms)
		l->backoff_max_ms = l->backoff_min_ms;
	l->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 10000;
	l->backoff_cur = l->backoff_min_ms;
	l->next_id = 1;
	l->state = ST_IDLE;
	l->next_attempt_at = 0; /* first tick connects */

	err = split_address(cfg->address, &l->host, &l->port);
	if (err == KP_ERR_CONFIG)
		kp_log_error(env, "hostlink: address \"%s\" is not host:port", cfg->address);
	if (err != KP_OK)
		goto out;
	l->server_name = dup_str(cfg->server_name);
	l->device_id = dup_str(cfg->device_id);
	l->fw = dup_str(fw);
	l->scratch = malloc(KP_FRAME_MAX + KP_FRAME_HDR);
	if (!l->server_name || !l->device_id || !l->fw || !l->scratch) {
		err = KP_ERR_NOMEM;
		goto out;
	}
	err = kp_frame_reader_setup(&l->reader);
	if (err != KP_OK)
		goto out;
	err = load_tls(l, cfg);
	if (err != KP_OK)
		goto out;
	*out = l;
	l = NULL;
out:
	kp_hostlink_free(l);
	return err;
}

void kp_hostlink_free(kp_hostlink *l)
{
	if (!l)
		return;
	close_socket(l);
	l->state = ST_IDLE;
	pend_fail_all(l);
	mbedtls_ssl_free(&l->ssl);
	mbedtls_ssl_session_free(&l->session);
	mbedtls_ssl_config_free(&l->conf);
	mbedtls_pk_free(&l->key);
	mbedtls_x509_crt_free(&l->cert);
	mbedtls_x509_crt_free(&l->ca);
	mbedtls_ctr_drbg_free(&l->drbg);
	kp_frame_reader_free(&l->reader);
	free(l->out);
	free(l->scratch);
	free(l->host);
	free(l->port);
	free(l->server_name);
	free(l->device_id);
	free(l->fw);
	free(l);
}

bool kp_hostlink_up(const kp_hostlink *l)
{
	return l && l->state == ST_UP;
}

const char *kp_hostlink_state_str(const kp_hostlink *l)
{
	return l ? state_names[l->state] : "none";
}

kp_err kp_hostlink_request(kp_hostlink *l, const kp_host_msg *req, kp_host_reply_fn fn, void *arg)
{
	if (!l || !req)
		return KP_ERR_INVALID;
	if (reply_op_for(req->op) == KP_OP_NONE || req->op == KP_OP_HELLO)
		return KP_ERR_INVALID; /* not a request the engine sends */
	if (l->state != ST_UP)
		return KP_ERR_DISCONNECTED;
	if (l->npend >= KP_HOSTLINK_PENDING_MAX)
		return KP_ERR_TOO_BIG;
	kp_host_msg m = *req;
	m.id = l->next_id;
	m.re = 0;
	m.has_re = false;
	struct pending p = {.id = m.id,
			    .deadline = now_ms(l) + l->request_timeout_ms,
			    .op = m.op,
			    .kind = PEND_USER,
			    .fn = fn,
			    .arg = arg};
	if (m.op == KP_OP_CREATE_PAYMENT || m.op == KP_OP_QUERY_PAYMENT ||
	    m.op == KP_OP_CANCEL_PAYMENT)
		snprintf(p.key, sizeof(p.key), "%s", m.attempt_id);
	else if (m.op == KP_OP_REFUND || m.op == KP_OP_QUERY_REFUND)
		snprintf(p.key, sizeof(p.key), "%s", m.refund_id);
	/* grow the table first so that nothing is queued for a request not tracked */
	kp_err err = pend_add(l, &p);
	if (err != KP_OK)
		return err;
	err = queue_msg(l, &m);
	if (err != KP_OK) {
		l->npend--; /* the entry just added is last */
		return err;
	}
	l->next_id++;
	l->stats.requests_sent++;
	return KP_OK;
}

kp_err kp_hostlink_ack(kp_hostlink *l, int64_t seq)
{
	if (!l || seq < 1)
		return KP_ERR_INVALID;
	if (l->state != ST_UP)
		return KP_ERR_DISCONNECTED;
	if (KP_FAILPOINT(FP_LOSE_ACK)) {
		kp_log_warn(l->env, "hostlink: failpoint: ack %lld not sent", (long long)seq);
		return KP_OK;
	}
	kp_host_msg m;
	memset(&m, 0, sizeof(m));
	m.op = KP_OP_ACK;
	m.seq = seq;
	return queue_msg(l, &m);
}

void kp_hostlink_pollfd(const kp_hostlink *l, struct pollfd *pfd)
{
	pfd->fd = -1;
	pfd->events = 0;
	pfd->revents = 0;
	if (!l || l->fd < 0)
		return;
	switch (l->state) {
	case ST_IDLE: return;
	case ST_CONNECTING: pfd->events = POLLOUT; break;
	case ST_HANDSHAKE: pfd->events = l->hs_want_write ? POLLOUT : POLLIN; break;
	case ST_HELLO:
	case ST_UP:
		pfd->events = POLLIN;
		if (out_queued(l) > 0)
			pfd->events |= POLLOUT;
		break;
	}
	pfd->fd = l->fd;
}

static int64_t earlier(int64_t a, int64_t b)
{
	return a == 0 ? b : (b == 0 || b > a) ? a : b;
}

int64_t kp_hostlink_deadline(const kp_hostlink *l)
{
	if (!l)
		return 0;
	int64_t d = 0;
	switch (l->state) {
	case ST_IDLE:
		/* never 0: 0 means "no deadline"; the first attempt is due at once */
		return l->next_attempt_at > 0 ? l->next_attempt_at : 1;
	case ST_CONNECTING:
	case ST_HANDSHAKE: d = l->connect_deadline; break;
	case ST_UP:
		if (!l->ping_outstanding)
			d = l->last_rx + l->ping_idle_ms;
		break;
	case ST_HELLO: break;
	}
	for (size_t i = 0; i < l->npend; i++)
		d = earlier(d, l->pend[i].deadline);
	return d;
}

static void send_ping(kp_hostlink *l)
{
	kp_host_msg m;
	memset(&m, 0, sizeof(m));
	m.op = KP_OP_PING;
	m.id = l->next_id++;
	struct pending p = {.id = m.id,
			    .deadline = now_ms(l) + l->request_timeout_ms,
			    .op = KP_OP_PING,
			    .kind = PEND_PING};
	kp_err err = pend_add(l, &p);
	if (err == KP_OK)
		err = queue_msg(l, &m);
	if (err != KP_OK) {
		/* the queue is full of unsent requests: the request timeouts will tell */
		if (l->npend > 0 && l->pend[l->npend - 1].id == m.id)
			l->npend--;
		return;
	}
	l->ping_outstanding = true;
	flush_out(l);
}

void kp_hostlink_tick(kp_hostlink *l)
{
	if (!l)
		return;
	int64_t now = now_ms(l);
	switch (l->state) {
	case ST_IDLE:
		if (now >= l->next_attempt_at)
			connect_start(l);
		return;
	case ST_CONNECTING:
	case ST_HANDSHAKE:
		if (now >= l->connect_deadline)
			link_drop(l, l->state == ST_CONNECTING ? "connect timed out"
							       : "TLS handshake timed out");
		return;
	case ST_HELLO:
	case ST_UP:
		break;
	}
	/* request timeouts: take one expired entry at a time, as callbacks may add more */
	for (size_t i = 0; i < l->npend;) {
		if (l->pend[i].deadline > now) {
			i++;
			continue;
		}
		struct pending p = l->pend[i];
		pend_remove(l, i);
		if (p.kind != PEND_USER) {
			link_drop(l, p.kind == PEND_HELLO ? "no answer to hello" : "no answer to ping");
			return;
		}
		l->stats.timeouts++;
		l->recent[l->recent_next] = p.id;
		l->recent_next = (l->recent_next + 1) % RECENT_TIMEOUTS;
		kp_log_warn(l->env, "hostlink: %s %lld timed out", kp_host_op_str(p.op),
			    (long long)p.id);
		if (p.fn)
			p.fn(p.arg, KP_ERR_TIMEOUT, NULL);
		if (l->state != ST_UP && l->state != ST_HELLO)
			return;
		i = 0; /* the table may have changed under the callback */
	}
	if (l->state == ST_UP && !l->ping_outstanding && now - l->last_rx >= l->ping_idle_ms)
		send_ping(l);
}

void kp_hostlink_process(kp_hostlink *l, short revents)
{
	if (!l)
		return;
	switch (l->state) {
	case ST_IDLE: return;
	case ST_CONNECTING:
		if (revents & (POLLOUT | POLLERR | POLLHUP))
			connect_check(l);
		return;
	case ST_HANDSHAKE:
		if (revents)
			handshake_step(l);
		return;
	case ST_HELLO:
	case ST_UP:
		if ((revents & (POLLIN | POLLERR | POLLHUP)) && !read_all(l))
			return;
		if (l->state == ST_HELLO || l->state == ST_UP)
			flush_out(l);
		return;
	}
}

void kp_hostlink_stats_get(const kp_hostlink *l, kp_hostlink_stats *out)
{
	if (!l) {
		memset(out, 0, sizeof(*out));
		return;
	}
	*out = l->stats;
}
