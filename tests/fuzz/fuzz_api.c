/* fuzz_api.c — the local CoAP API (app/api) on hostile datagrams. The input is
 * one UDP datagram sent over loopback to a real kp_api, so that libcoap's own
 * PDU parsing, its dispatch, block-wise and Observe handling lead into our
 * resource handlers, the JSON checks (api_json.c) and the real engine over a
 * real journal (in a tmpfs directory) with a fake host that answers at once.
 * Orders "o-pending" (100, stays pending at the host), "o-paid" (300, the host
 * says succeeded) and "o-failed" (200) exist from the start, so that seeds can
 * pay, cancel, vend and observe them.
 *
 * The world keeps its state from one input to the next (as the daemon does)
 * and is rebuilt every WORLD_INPUTS inputs, so memory and the journal stay
 * bounded. An input may also hold several datagrams (MULTI_MAGIC), sent in
 * turn: that is how a crash that needs earlier requests becomes one file. Every answer must be a CoAP message libcoap parses, and every
 * whole JSON body must parse. */
#include <errno.h>
#include <signal.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cjson/cJSON.h>
#include <coap3/coap.h>

#include "api.h"
#include "engine.h"
#include "fuzz.h"
#include "journal.h"

#define WORLD_INPUTS 2000
#define T0 1800000000000LL
#define FAKE_REQS 64
/* An input that starts with this carries several datagrams (a stateful bug
 * then fits in one file). Not a CoAP message: 'K' would be a token of 11. */
#define MULTI_MAGIC "KPM1"

/* ---------- the fake host: answers every request on the next pump ---------- */

struct fake_req {
	kp_host_msg msg;
	kp_engine_reply_fn fn;
	void *arg;
};

struct fake_host {
	struct fake_req reqs[FAKE_REQS];
	size_t n;
	unsigned txn;
};

static bool fh_up(void *h)
{
	(void)h;
	return true;
}

static kp_err fh_request(void *h, const kp_host_msg *req, kp_engine_reply_fn fn, void *arg)
{
	struct fake_host *fh = h;
	if (fh->n == FAKE_REQS)
		return KP_ERR_BUSY;
	fh->reqs[fh->n++] = (struct fake_req){*req, fn, arg};
	return KP_OK;
}

static kp_err fh_ack(void *h, int64_t seq)
{
	(void)h;
	(void)seq;
	return KP_OK;
}

static const kp_host_ops fake_ops = {.up = fh_up, .request = fh_request, .ack = fh_ack};

static size_t api_host_stats(void *h, kp_api_stat *out, size_t cap)
{
	struct fake_host *fh = h;
	if (cap < 1)
		return 0;
	out[0] = (kp_api_stat){"requests_waiting", (int64_t)fh->n};
	return 1;
}

static const kp_api_host_ops api_host_ops = {.up = fh_up, .stats = api_host_stats};

/* A payment's fate by its amount: multiples of 3 succeed, 2 mod 3 fail, the
 * rest stay pending (with a QR). */
static void fh_answer_one(struct fake_host *fh, const struct fake_req *r)
{
	kp_host_msg m;
	memset(&m, 0, sizeof(m));
	m.re = r->msg.id;
	m.has_re = true;
	switch (r->msg.op) {
	case KP_OP_CREATE_PAYMENT:
	case KP_OP_QUERY_PAYMENT:
	case KP_OP_CANCEL_PAYMENT:
		m.op = KP_OP_PAYMENT;
		snprintf(m.attempt_id, sizeof(m.attempt_id), "%s", r->msg.attempt_id);
		if (r->msg.op == KP_OP_CANCEL_PAYMENT) {
			snprintf(m.status, sizeof(m.status), "canceled");
		} else if (r->msg.op == KP_OP_CREATE_PAYMENT && r->msg.amount % 3 == 0) {
			snprintf(m.status, sizeof(m.status), "succeeded");
			snprintf(m.host_txn, sizeof(m.host_txn), "txn-%u", ++fh->txn);
			m.amount = r->msg.amount;
			m.has_amount = true;
		} else if (r->msg.op == KP_OP_CREATE_PAYMENT && r->msg.amount % 3 == 2) {
			snprintf(m.status, sizeof(m.status), "failed");
		} else {
			snprintf(m.status, sizeof(m.status), "pending");
			snprintf(m.qr, sizeof(m.qr), "QR:%s", r->msg.attempt_id);
		}
		break;
	case KP_OP_REFUND:
	case KP_OP_QUERY_REFUND:
		m.op = KP_OP_REFUND_REPLY;
		snprintf(m.refund_id, sizeof(m.refund_id), "%s", r->msg.refund_id);
		snprintf(m.status, sizeof(m.status), "refunded");
		break;
	default:
		m.op = KP_OP_ERROR;
		snprintf(m.code, sizeof(m.code), "bad_request");
		snprintf(m.message, sizeof(m.message), "not in the fake");
		break;
	}
	r->fn(r->arg, KP_OK, &m);
}

/* Answer what is waiting; answers may queue new requests (answered next time). */
static void fh_answer(struct fake_host *fh)
{
	size_t n = fh->n;
	struct fake_req batch[FAKE_REQS];
	memcpy(batch, fh->reqs, n * sizeof(batch[0]));
	fh->n = 0;
	for (size_t i = 0; i < n; i++)
		fh_answer_one(fh, &batch[i]);
}

/* Fail what is waiting, as the link does when it closes. */
static void fh_close(struct fake_host *fh)
{
	while (fh->n > 0) {
		struct fake_req r = fh->reqs[--fh->n];
		r.fn(r.arg, KP_ERR_DISCONNECTED, NULL);
	}
}

/* ---------- the world ---------- */

struct world {
	char dir[128];
	char path[192];
	kp_env env;
	kp_fake_world fw;
	kp_journal *j;
	kp_engine *e;
	kp_api *api;
	struct fake_host host;
	int sock;            /* our UDP socket, connected to the API */
	unsigned inputs;
};

static struct world *w;

static void on_change(void *arg, const char *order_id)
{
	struct world *wd = arg;
	if (wd->api)
		kp_api_order_changed(wd->api, order_id);
}

static void world_free(struct world *wd)
{
	if (!wd)
		return;
	fh_close(&wd->host);
	if (wd->api)
		kp_api_set_backend(wd->api, NULL, NULL);
	kp_engine_free(wd->e);
	kp_api_free(wd->api);
	kp_journal_close(wd->j);
	if (wd->sock >= 0)
		close(wd->sock);
	if (wd->dir[0]) {
		const char *names[] = {"journal.db", "journal.db-wal", "journal.db-shm"};
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			char p[256];
			snprintf(p, sizeof(p), "%s/%s", wd->dir, names[i]);
			unlink(p);
		}
		rmdir(wd->dir);
	}
	free(wd);
}

static void seed_order(struct world *wd, const char *id, int64_t amount)
{
	kp_order_new req = {
		.order_id = id,
		.dedup_key = id,
		.amount = amount,
		.currency = "EUR",
		.items = "[{\"sku\":\"cola\",\"qty\":1}]",
		.now = kp_now_wall(&wd->env),
		.expires_at = kp_now_wall(&wd->env) + 300000,
	};
	kp_order o;
	bool dup = false;
	FUZZ_CHECK(kp_journal_order_create(wd->j, &req, &o, &dup) == KP_OK);
}

static struct world *world_new(void)
{
	struct world *wd = calloc(1, sizeof(*wd));
	FUZZ_CHECK(wd != NULL);
	wd->sock = -1;
	/* tmpfs when there is one: the journal syncs on every commit */
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	snprintf(wd->dir, sizeof(wd->dir), "%s/kp-fuzz-api-XXXXXX", base);
	FUZZ_CHECK(mkdtemp(wd->dir) != NULL);
	snprintf(wd->path, sizeof(wd->path), "%s/journal.db", wd->dir);

	kp_env_init_fake(&wd->env, &wd->fw, 42, T0);
	wd->fw.quiet = true;
	wd->env.log_level = KP_LOG_DEBUG; /* format every line: the log path runs too */
	FUZZ_CHECK(kp_journal_open(&wd->j, wd->path, 0, &wd->env) == KP_OK);

	kp_api_config ac = {.listen = "127.0.0.1:0", .max_payload = 2048};
	kp_api_deps ad = {.env = &wd->env, .host_ops = &api_host_ops, .host = &wd->host};
	FUZZ_CHECK(kp_api_new(&wd->api, &ac, &ad) == KP_OK);
	coap_set_log_level(LOG_EMERG);

	kp_engine_config ec;
	kp_engine_config_defaults(&ec);
	ec.max_amount = 100000;
	kp_engine_deps ed = {.env = &wd->env, .journal = wd->j, .host_ops = &fake_ops, .host = &wd->host,
			     .on_change = on_change, .on_change_arg = wd};
	FUZZ_CHECK(kp_engine_new(&wd->e, &ec, &ed) == KP_OK);
	kp_api_set_backend(wd->api, wd->e, wd->j);
	seed_order(wd, "o-pending", 100);
	seed_order(wd, "o-paid", 300);
	seed_order(wd, "o-failed", 200);

	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(kp_api_port(wd->api))};
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	wd->sock = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	FUZZ_CHECK(wd->sock >= 0);
	FUZZ_CHECK(connect(wd->sock, (const struct sockaddr *)&to, sizeof(to)) == 0);
	return wd;
}

/* ---------- one input ---------- */

/* One turn of the daemon's loop: API, host answers, engine timers. */
static void pump(struct world *wd)
{
	kp_api_process(wd->api, POLLIN);
	fh_answer(&wd->host);
	(void)kp_engine_tick(wd->e);
	kp_api_process(wd->api, POLLIN);
}

/* A message from the API: it must parse; a whole JSON body must parse; a
 * confirmable one is reset (ends an Observe, drops a separate answer). */
static void check_answer(struct world *wd, const uint8_t *buf, size_t n)
{
	coap_pdu_t *pdu = coap_pdu_init(0, 0, 0, n);
	FUZZ_CHECK(pdu != NULL);
	FUZZ_CHECK(coap_pdu_parse(COAP_PROTO_UDP, buf, n, pdu) == 1);
	coap_opt_iterator_t it;
	size_t len = 0;
	const uint8_t *data = NULL;
	coap_opt_t *cf = coap_check_option(pdu, COAP_OPTION_CONTENT_FORMAT, &it);
	bool whole = !coap_check_option(pdu, COAP_OPTION_BLOCK2, &it);
	if (cf && whole && coap_get_data(pdu, &len, &data) && len > 0 &&
	    coap_decode_var_bytes(coap_opt_value(cf), coap_opt_length(cf)) == COAP_MEDIATYPE_APPLICATION_JSON) {
		cJSON *body = cJSON_ParseWithLength((const char *)data, len);
		FUZZ_CHECK(body != NULL);
		cJSON_Delete(body);
	}
	if (coap_pdu_get_type(pdu) == COAP_MESSAGE_CON) {
		coap_mid_t mid = coap_pdu_get_mid(pdu);
		uint8_t rst[4] = {0x70, 0x00, (uint8_t)(mid >> 8), (uint8_t)mid};
		(void)send(wd->sock, rst, sizeof(rst), 0);
	}
	coap_delete_pdu(pdu);
}

static void drain(struct world *wd)
{
	uint8_t buf[2048];
	for (int round = 0; round < 4; round++) {
		ssize_t n;
		while ((n = recv(wd->sock, buf, sizeof(buf), 0)) > 0)
			check_answer(wd, buf, (size_t)n);
		pump(wd);
	}
}

/* One datagram to the API, then everything it answers. */
static void send_one(struct world *wd, const uint8_t *data, size_t size)
{
	if (size > 0 && send(wd->sock, data, size, 0) < 0)
		FUZZ_CHECK(errno == ECONNREFUSED || errno == EAGAIN || errno == EMSGSIZE);
	drain(wd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN);
	/* libFuzzer ends with exit(): the journal directory goes with it */
	atexit(kp_fuzz_cleanup);
	return 0;
}

void kp_fuzz_cleanup(void)
{
	world_free(w);
	w = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0 || size > 4096)
		return 0;
	if (!w || w->inputs >= WORLD_INPUTS) {
		world_free(w);
		w = world_new();
	}
	w->inputs++;
	kp_fake_advance(&w->fw, 50);
	if (size > 4 && memcmp(data, MULTI_MAGIC, 4) == 0) {
		/* several datagrams, each after a 2-byte big-endian length */
		size_t off = 4;
		while (size - off >= 2) {
			size_t n = (size_t)data[off] << 8 | data[off + 1];
			off += 2;
			if (n > size - off)
				n = size - off;
			send_one(w, data + off, n);
			off += n;
		}
	} else {
		send_one(w, data, size);
	}
	return 0;
}
