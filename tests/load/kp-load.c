/* kp-load — drives a running kioskpayd like a stream of customers: order, pay,
 * the customer pays at the host simulator (or fails, pays twice, or a stray
 * capture arrives), wait for paid, vend. Used by the 1000-order e2e test and
 * by `./run bench sale`. Prints one JSON summary line on stdout.
 *
 *   kp-load --api 127.0.0.1:5683 --control 127.0.0.1:7001 --orders 1000
 *           [--seed S] [--prefix P] [--faults]   (--faults: fails, doubles, orphans, vend failures)
 *           [--one-request]   (the order and its payment in one POST /orders with "channel") */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <coap3/coap.h>

#define BODY_MAX 16384

struct client {
	coap_context_t *ctx;
	coap_session_t *session;
	bool done;
	int code;            /* class*100 + detail */
	char body[BODY_MAX];
	size_t body_len;
	coap_binary_t token;
	uint8_t token_buf[8];
	int ctl_fd;
};

static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t rng_state = 88172645463325252ULL;
static uint64_t rnd(void)
{
	uint64_t x = rng_state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static struct client *the_client;

static coap_response_t on_response(coap_session_t *session, const coap_pdu_t *sent,
				   const coap_pdu_t *received, const coap_mid_t mid)
{
	(void)session;
	(void)sent;
	(void)mid;
	struct client *c = the_client;
	coap_bin_const_t tok = coap_pdu_get_token(received);
	if (tok.length != c->token.length || memcmp(tok.s, c->token.s, tok.length) != 0)
		return COAP_RESPONSE_OK; /* not the one we wait for */
	coap_pdu_code_t code = coap_pdu_get_code(received);
	c->code = (int)(code >> 5) * 100 + (int)(code & 0x1f);
	size_t len = 0, offset = 0, total = 0;
	const uint8_t *data = NULL;
	if (coap_get_data_large(received, &len, &data, &offset, &total) && offset + len < BODY_MAX) {
		memcpy(c->body + offset, data, len);
		c->body_len = offset + len;
		c->body[c->body_len] = '\0';
		if (offset + len < total)
			return COAP_RESPONSE_OK; /* more blocks come */
	} else {
		c->body[0] = '\0';
		c->body_len = 0;
	}
	c->done = true;
	return COAP_RESPONSE_OK;
}

/* One request; waits for its answer (up to timeout_ms). Returns the code, or -1. */
static int request(struct client *c, coap_pdu_code_t method, const char *path, const char *json,
		   int timeout_ms)
{
	coap_pdu_t *pdu = coap_pdu_init(COAP_MESSAGE_CON, method, coap_new_message_id(c->session),
					coap_session_max_pdu_size(c->session));
	if (!pdu)
		return -1;
	size_t tl = 0;
	coap_session_new_token(c->session, &tl, c->token_buf);
	c->token.s = c->token_buf;
	c->token.length = tl;
	coap_add_token(pdu, tl, c->token_buf);
	char seg[256];
	snprintf(seg, sizeof(seg), "%s", path);
	for (char *save = NULL, *p = strtok_r(seg, "/", &save); p; p = strtok_r(NULL, "/", &save))
		coap_add_option(pdu, COAP_OPTION_URI_PATH, strlen(p), (const uint8_t *)p);
	if (json) {
		uint8_t cf[4];
		coap_add_option(pdu, COAP_OPTION_CONTENT_FORMAT,
				coap_encode_var_safe(cf, sizeof(cf), COAP_MEDIATYPE_APPLICATION_JSON), cf);
		coap_add_data(pdu, strlen(json), (const uint8_t *)json);
	}
	c->done = false;
	c->code = -1;
	if (coap_send(c->session, pdu) == COAP_INVALID_MID)
		return -1;
	int64_t end = mono_us() + (int64_t)timeout_ms * 1000;
	while (!c->done && mono_us() < end)
		coap_io_process(c->ctx, 50);
	return c->done ? c->code : -1;
}

static int ctl_connect(const char *addr)
{
	char host[64];
	const char *colon = strrchr(addr, ':');
	if (!colon || (size_t)(colon - addr) >= sizeof(host))
		return -1;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)strtol(colon + 1, NULL, 10))};
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
		return -1;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* One control command; the reply line is read and dropped. */
static int ctl(struct client *c, const char *line)
{
	/* One write per command: a line split over two writes waits on Nagle. */
	char buf[600];
	int len = snprintf(buf, sizeof(buf), "%s\n", line);
	if (len < 0 || (size_t)len >= sizeof(buf) || write(c->ctl_fd, buf, (size_t)len) != len)
		return -1;
	char ch;
	while (read(c->ctl_fd, &ch, 1) == 1)
		if (ch == '\n')
			return 0;
	return -1;
}

static const char *field(const char *body, const char *key, char *out, size_t cap)
{
	cJSON *o = cJSON_Parse(body);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	snprintf(out, cap, "%s", cJSON_IsString(v) ? v->valuestring : "");
	cJSON_Delete(o);
	return out;
}

/* body.obj.key, the same way ("" if any is absent). */
static const char *field_in(const char *body, const char *obj, const char *key, char *out, size_t cap)
{
	cJSON *o = cJSON_Parse(body);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, obj), key);
	snprintf(out, cap, "%s", cJSON_IsString(v) ? v->valuestring : "");
	cJSON_Delete(o);
	return out;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	const char *api = "127.0.0.1:5683", *control = NULL, *prefix = "load";
	long orders = 100;
	bool faults = false, one_request = false;
	long health = 0; /* --health N: only time N GET /health round trips */
	static const struct option opts[] = {
		{"api", required_argument, NULL, 'a'}, {"control", required_argument, NULL, 'c'},
		{"orders", required_argument, NULL, 'n'}, {"seed", required_argument, NULL, 's'},
		{"prefix", required_argument, NULL, 'p'}, {"faults", no_argument, NULL, 'f'},
		{"health", required_argument, NULL, 'h'}, {"one-request", no_argument, NULL, '1'},
		{NULL, 0, NULL, 0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'a': api = optarg; break;
		case 'c': control = optarg; break;
		case 'n': orders = strtol(optarg, NULL, 10); break;
		case 's': rng_state = strtoull(optarg, NULL, 10) | 1; break;
		case 'p': prefix = optarg; break;
		case 'f': faults = true; break;
		case 'h': health = strtol(optarg, NULL, 10); break;
		case '1': one_request = true; break;
		default:
			fprintf(stderr, "usage: kp-load --api H:P --control H:P --orders N [--seed S] [--prefix P] [--faults] [--one-request]\n");
			return 2;
		}
	}
	if (!control || orders < 1 || orders > 1000000) {
		fprintf(stderr, "kp-load: --control and --orders 1..1000000 are required\n");
		return 2;
	}
	struct client c;
	memset(&c, 0, sizeof(c));
	the_client = &c;
	coap_startup();
	coap_set_log_level(LOG_EMERG);
	c.ctx = coap_new_context(NULL);
	coap_address_t dst;
	coap_address_init(&dst);
	dst.addr.sin.sin_family = AF_INET;
	char host[64];
	const char *colon = strrchr(api, ':');
	if (!c.ctx || !colon || (size_t)(colon - api) >= sizeof(host)) {
		fprintf(stderr, "kp-load: bad --api %s\n", api);
		return 2;
	}
	memcpy(host, api, (size_t)(colon - api));
	host[colon - api] = '\0';
	dst.addr.sin.sin_port = htons((uint16_t)strtol(colon + 1, NULL, 10));
	dst.size = sizeof(dst.addr.sin);
	if (inet_pton(AF_INET, host, &dst.addr.sin.sin_addr) != 1) {
		fprintf(stderr, "kp-load: bad --api %s\n", api);
		return 2;
	}
	c.session = coap_new_client_session(c.ctx, NULL, &dst, COAP_PROTO_UDP);
	coap_register_response_handler(c.ctx, on_response);
	c.ctl_fd = ctl_connect(control);
	if (!c.session || c.ctl_fd < 0) {
		fprintf(stderr, "kp-load: cannot reach %s / %s\n", api, control);
		return 2;
	}

	if (health > 0) {
		int64_t t = mono_us();
		for (long i = 0; i < health; i++)
			if (request(&c, COAP_REQUEST_CODE_GET, "health", NULL, 2000) != 205)
				return 1;
		printf("{\"health_round_trips\":%ld,\"us_each\":%.1f}\n", health,
		       (double)(mono_us() - t) / (double)health);
		return 0;
	}
	int64_t *lat = calloc((size_t)orders, sizeof(*lat));
	long created = 0, paid = 0, fulfilled = 0, vend_failed = 0, pay_errors = 0, not_paid = 0;
	long doubles = 0, orphans = 0, fails = 0, nlat = 0, polls = 0;
	int64_t t_start = mono_us();
	for (long i = 0; i < orders; i++) {
		char body[512], path[160], order_id[80], attempt[80], line[512];
		int64_t amount = 50 + (int64_t)(rnd() % 950);
		const char *channel = rnd() % 2 ? "card" : "qr";
		if (one_request)
			snprintf(body, sizeof(body), "{\"dedup_key\":\"%s-%ld\",\"amount\":%lld,\"channel\":\"%s\"}",
				 prefix, i, (long long)amount, channel);
		else
			snprintf(body, sizeof(body), "{\"dedup_key\":\"%s-%ld\",\"amount\":%lld}", prefix, i,
				 (long long)amount);
		int64_t t0 = mono_us();
		/* A retry has the same dedup_key: a duplicate answer, and /pay below. */
		int created_code = -1;
		for (int tries = 0; tries < (one_request ? 5 : 1) && created_code != 201; tries++) {
			created_code = request(&c, COAP_REQUEST_CODE_POST, "orders", body, 5000);
			if (created_code != 201 && one_request)
				usleep(100000); /* host link down under faults: try again */
		}
		if (created_code != 201) {
			pay_errors += one_request;
			continue;
		}
		field(c.body, "order_id", order_id, sizeof(order_id));
		created++;
		attempt[0] = '\0';
		if (one_request)
			field_in(c.body, "attempt", "attempt_id", attempt, sizeof(attempt));
		/* Two requests, or the payment did not start in the first: /pay. */
		snprintf(path, sizeof(path), "orders/%s/pay", order_id);
		snprintf(body, sizeof(body), "{\"channel\":\"%s\"}", channel);
		int code = attempt[0] ? 201 : -1;
		for (int tries = 0; tries < 5 && code != 201; tries++) {
			code = request(&c, COAP_REQUEST_CODE_POST, path, body, 5000);
			if (code != 201)
				usleep(100000); /* host link down under faults: try again */
		}
		if (code != 201) {
			pay_errors++;
			continue;
		}
		if (!attempt[0])
			field(c.body, "attempt_id", attempt, sizeof(attempt));
		int64_t t_paid_req = mono_us();
		unsigned dice = (unsigned)(rnd() % 100);
		if (faults && dice < 5) {
			snprintf(line, sizeof(line), "{\"cmd\":\"fail\",\"attempt_id\":\"%s\"}", attempt);
			fails++;
		} else if (faults && dice < 10) {
			snprintf(line, sizeof(line), "{\"cmd\":\"pay_order_twice\",\"order_id\":\"%s\"}", order_id);
			doubles++;
		} else {
			snprintf(line, sizeof(line), "{\"cmd\":\"pay\",\"attempt_id\":\"%s\"}", attempt);
		}
		if (ctl(&c, line) != 0) {
			fprintf(stderr, "kp-load: control connection lost\n");
			break;
		}
		int64_t t_ctl = mono_us();
		if (faults && dice >= 10 && dice < 13) {
			snprintf(line, sizeof(line), "{\"cmd\":\"orphan\",\"order_id\":\"%s\",\"amount\":%lld}",
				 order_id, (long long)amount);
			if (ctl(&c, line) == 0)
				orphans++;
		}
		/* Wait for paid (or failed) as the UI would, by looking. */
		snprintf(path, sizeof(path), "orders/%s", order_id);
		char status[32] = "";
		int64_t deadline = mono_us() + 5000000;
		while (mono_us() < deadline) {
			polls++;
			if (request(&c, COAP_REQUEST_CODE_GET, path, NULL, 2000) == 205) {
				field(c.body, "status", status, sizeof(status));
				if (strcmp(status, "pending") != 0)
					break;
				if (strstr(c.body, "\"status\":\"failed\""))
					break;
			}
			usleep(500);
		}
		if (getenv("KP_LOAD_TRACE"))
			fprintf(stderr, "order %ld: create+pay %.1f ms, control %.1f ms, then seen paid %.1f ms\n", i,
				(double)(t_paid_req - t0) / 1000.0, (double)(t_ctl - t_paid_req) / 1000.0,
				(double)(mono_us() - t_ctl) / 1000.0);
		if (strcmp(status, "paid") != 0) {
			not_paid++;
			continue;
		}
		paid++;
		lat[nlat++] = mono_us() - t0;
		bool ok = !(faults && rnd() % 10 == 0);
		snprintf(path, sizeof(path), "orders/%s/vend", order_id);
		snprintf(body, sizeof(body), "{\"result\":\"%s\"}", ok ? "success" : "failure");
		if (request(&c, COAP_REQUEST_CODE_POST, path, body, 5000) == 204) {
			if (ok)
				fulfilled++;
			else
				vend_failed++;
		}
	}
	double secs = (double)(mono_us() - t_start) / 1e6;
	qsort(lat, (size_t)nlat, sizeof(*lat), cmp_i64);
	double p50 = nlat ? (double)lat[nlat / 2] / 1000.0 : 0;
	double p99 = nlat ? (double)lat[(nlat * 99) / 100 < nlat ? (nlat * 99) / 100 : nlat - 1] / 1000.0 : 0;
	printf("{\"orders\":%ld,\"created\":%ld,\"paid\":%ld,\"fulfilled\":%ld,\"vend_failed\":%ld,"
	       "\"pay_errors\":%ld,\"not_paid\":%ld,\"fails\":%ld,\"doubles\":%ld,\"orphans\":%ld,"
	       "\"seconds\":%.3f,\"paid_per_s\":%.1f,\"order_to_paid_ms_p50\":%.2f,"
	       "\"order_to_paid_ms_p99\":%.2f,\"polls\":%ld}\n",
	       orders, created, paid, fulfilled, vend_failed, pay_errors, not_paid, fails, doubles,
	       orphans, secs, secs > 0 ? (double)paid / secs : 0.0, p50, p99, polls);
	free(lat);
	close(c.ctl_fd);
	coap_session_release(c.session);
	coap_free_context(c.ctx);
	coap_cleanup();
	return created == orders ? 0 : 1;
}
