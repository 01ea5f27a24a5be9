/* config.c — the INI config of kioskpayd: one table of every key with its kind
 * and range drives parsing (inih), validation and the dump, so that a key is
 * added in one place. The file is read whole and fed to inih line by line by
 * our own reader, which keeps the line number for error messages. */
#include "config.h"
#include "kp_pan.h"

#include <errno.h>
#include <inttypes.h>
#include <ini.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MS_PER_S INT64_C(1000)
#define MS_PER_MIN (60 * MS_PER_S)
#define MS_PER_H (60 * MS_PER_MIN)
#define DURATION_MAX (30 * 24 * MS_PER_H) /* no timing is longer than 30 days */
#define AMOUNT_MAX INT64_C(1000000000000) /* 10^12 minor units */

enum kind {
	K_PATH,     /* free text (path, host name), no control characters */
	K_ADDR,     /* "host:port" */
	K_ID,       /* 1..64 of [A-Za-z0-9_-] */
	K_CURRENCY, /* three upper-case letters */
	K_CHOICE,   /* one of the key's choices */
	K_DURATION, /* int64 ms */
	K_INT,      /* int64 */
	K_POLICY,   /* kp_power_cut_policy */
	K_LOGLEVEL, /* kp_log_level */
	K_LINE,     /* kp_config_line: "none", "N" or "N active_low" */
};

/* The kinds stored as a string in the struct. */
#define IS_STRING(kind) ((kind) <= K_CHOICE)

#define F_REQUIRED 1u  /* must never be empty */
#define F_HOST 2u      /* must be set when KP_CONFIG_NEED_HOST */

struct keydef {
	const char *section;
	const char *key;
	enum kind kind;
	unsigned flags;
	size_t off;
	size_t cap; /* strings: buffer size */
	int64_t min, max;
	const char *const *choices; /* K_CHOICE: NULL-terminated */
};

#define FSIZE(field) sizeof(((kp_config *)0)->field)
#define STRKEY(sec, k, kind, flags, field) \
	{sec, k, kind, flags, offsetof(kp_config, field), FSIZE(field), 0, 0, NULL}
#define NUMKEY(sec, k, kind, field, lo, hi) \
	{sec, k, kind, 0, offsetof(kp_config, field), FSIZE(field), lo, hi, NULL}
#define CHOICEKEY(sec, k, field, list) \
	{sec, k, K_CHOICE, F_REQUIRED, offsetof(kp_config, field), FSIZE(field), 0, 0, list}

#define LINE_MAX_OFFSET 1023 /* GPIO line offsets on one chip */

static const char *const framings[] = {"parity", "pair", NULL};
static const char *const bauds[] = {"9600", "19200", "38400", "57600", "115200", NULL};

/* In dump order. */
static const struct keydef keys[] = {
	STRKEY("journal", "path", K_PATH, F_REQUIRED, journal.path),
	STRKEY("api", "listen", K_ADDR, F_REQUIRED, api.listen),
	NUMKEY("api", "max_payload", K_INT, api.max_payload, 64, 65536),
	STRKEY("host", "address", K_ADDR, F_HOST, host.address),
	STRKEY("host", "server_name", K_PATH, 0, host.server_name),
	STRKEY("host", "ca", K_PATH, F_HOST, host.ca),
	STRKEY("host", "cert", K_PATH, F_HOST, host.cert),
	STRKEY("host", "key", K_PATH, F_HOST, host.key),
	NUMKEY("host", "request_timeout", K_DURATION, host.request_timeout_ms, 1, DURATION_MAX),
	NUMKEY("host", "ping_idle", K_DURATION, host.ping_idle_ms, 1, DURATION_MAX),
	NUMKEY("host", "reconnect_min", K_DURATION, host.reconnect_min_ms, 1, DURATION_MAX),
	NUMKEY("host", "reconnect_max", K_DURATION, host.reconnect_max_ms, 1, DURATION_MAX),
	STRKEY("device", "id", K_ID, F_HOST, device.id),
	STRKEY("payment", "currency", K_CURRENCY, F_REQUIRED, payment.currency),
	NUMKEY("payment", "max_amount", K_INT, payment.max_amount, 1, AMOUNT_MAX),
	NUMKEY("payment", "order_ttl", K_DURATION, payment.order_ttl_ms, 1, DURATION_MAX),
	NUMKEY("payment", "pay_margin", K_DURATION, payment.pay_margin_ms, 0, DURATION_MAX),
	NUMKEY("payment", "query_every", K_DURATION, payment.query_every_ms, 1, DURATION_MAX),
	NUMKEY("payment", "pay_window", K_DURATION, payment.pay_window_ms, 1, DURATION_MAX),
	NUMKEY("payment", "give_up_after", K_DURATION, payment.give_up_after_ms, 1, DURATION_MAX),
	NUMKEY("payment", "query_backoff_min", K_DURATION, payment.query_backoff_min_ms, 1, DURATION_MAX),
	NUMKEY("payment", "query_backoff_max", K_DURATION, payment.query_backoff_max_ms, 1, DURATION_MAX),
	NUMKEY("payment", "refund_retry", K_DURATION, payment.refund_retry_ms, 1, DURATION_MAX),
	NUMKEY("payment", "refund_retry_max", K_DURATION, payment.refund_retry_max_ms, 1, DURATION_MAX),
	NUMKEY("payment", "power_cut_policy", K_POLICY, payment.power_cut_policy, 0, 0),
	NUMKEY("log", "level", K_LOGLEVEL, log.level, 0, 0),
	STRKEY("mdb", "device", K_PATH, F_REQUIRED, mdb.device),
	CHOICEKEY("mdb", "framing", mdb.framing, framings),
	CHOICEKEY("mdb", "baud", mdb.baud, bauds),
	NUMKEY("mdb", "patience", K_DURATION, mdb.patience_ms, MS_PER_S, 240 * MS_PER_S),
	NUMKEY("mdb", "session_idle", K_DURATION, mdb.session_idle_ms, MS_PER_S, MS_PER_H),
	STRKEY("gpio", "chip", K_PATH, F_REQUIRED, gpio.chip),
	NUMKEY("gpio", "power_fail", K_LINE, gpio.power_fail, -1, LINE_MAX_OFFSET),
	NUMKEY("gpio", "vend_ok", K_LINE, gpio.vend_ok, -1, LINE_MAX_OFFSET),
	NUMKEY("gpio", "vend_fail", K_LINE, gpio.vend_fail, -1, LINE_MAX_OFFSET),
	NUMKEY("gpio", "debounce", K_DURATION, gpio.debounce_ms, 0, MS_PER_S),
	STRKEY("watchdog", "device", K_PATH, F_REQUIRED, watchdog.device),
	NUMKEY("watchdog", "timeout", K_DURATION, watchdog.timeout_ms, 2 * MS_PER_S, 10 * MS_PER_MIN),
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static const char *const sections[] = {"journal", "api", "host", "device", "payment", "log", "mdb", "gpio",
				       "watchdog"};

static const char *const policy_names[] = {
	[KP_POWER_CUT_REFUND] = "refund",
	[KP_POWER_CUT_HOLD] = "hold",
};
static const char *const level_names[] = {
	[KP_LOG_ERROR] = "error",
	[KP_LOG_WARN] = "warn",
	[KP_LOG_INFO] = "info",
	[KP_LOG_DEBUG] = "debug",
};

static char *fstr(kp_config *c, const struct keydef *d) { return (char *)c + d->off; }
static const char *cfstr(const kp_config *c, const struct keydef *d) { return (const char *)c + d->off; }
static int64_t *fi64(kp_config *c, const struct keydef *d) { return (int64_t *)(void *)((char *)c + d->off); }
static int64_t cfi64(const kp_config *c, const struct keydef *d)
{
	return *(const int64_t *)(const void *)((const char *)c + d->off);
}
static kp_config_line *fline(kp_config *c, const struct keydef *d)
{
	return (kp_config_line *)(void *)((char *)c + d->off);
}
static const kp_config_line *cfline(const kp_config *c, const struct keydef *d)
{
	return (const kp_config_line *)(const void *)((const char *)c + d->off);
}

/* Copy src into a buffer of cap bytes; false (and dst untouched) if it does not fit. */
static bool copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);
	if (n >= cap)
		return false;
	memcpy(dst, src, n + 1);
	return true;
}

void kp_config_defaults(kp_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	copy_str(cfg->journal.path, sizeof(cfg->journal.path), "/var/lib/kioskpay/journal.db");
	copy_str(cfg->api.listen, sizeof(cfg->api.listen), "127.0.0.1:5683");
	cfg->api.max_payload = 1024;
	cfg->host.request_timeout_ms = 10 * MS_PER_S;
	cfg->host.ping_idle_ms = 15 * MS_PER_S;
	cfg->host.reconnect_min_ms = 500;
	cfg->host.reconnect_max_ms = 30 * MS_PER_S;
	copy_str(cfg->payment.currency, sizeof(cfg->payment.currency), "EUR");
	cfg->payment.max_amount = 10000;
	cfg->payment.order_ttl_ms = 300 * MS_PER_S;
	cfg->payment.pay_margin_ms = 60 * MS_PER_S;
	cfg->payment.query_every_ms = 5 * MS_PER_S;
	cfg->payment.pay_window_ms = 60 * MS_PER_S;
	cfg->payment.give_up_after_ms = 24 * MS_PER_H;
	cfg->payment.query_backoff_min_ms = 30 * MS_PER_S;
	cfg->payment.query_backoff_max_ms = 10 * MS_PER_MIN;
	cfg->payment.refund_retry_ms = 5 * MS_PER_S;
	cfg->payment.refund_retry_max_ms = 10 * MS_PER_MIN;
	cfg->payment.power_cut_policy = KP_POWER_CUT_REFUND;
	cfg->log.level = KP_LOG_INFO;
	copy_str(cfg->mdb.device, sizeof(cfg->mdb.device), "none");
	copy_str(cfg->mdb.framing, sizeof(cfg->mdb.framing), "parity");
	copy_str(cfg->mdb.baud, sizeof(cfg->mdb.baud), "9600");
	cfg->mdb.patience_ms = 60 * MS_PER_S;
	cfg->mdb.session_idle_ms = 60 * MS_PER_S;
	copy_str(cfg->gpio.chip, sizeof(cfg->gpio.chip), "none");
	cfg->gpio.power_fail.offset = -1;
	cfg->gpio.vend_ok.offset = -1;
	cfg->gpio.vend_fail.offset = -1;
	cfg->gpio.debounce_ms = 10;
	copy_str(cfg->watchdog.device, sizeof(cfg->watchdog.device), "none");
	cfg->watchdog.timeout_ms = 15 * MS_PER_S;
}

const char *kp_config_policy_name(kp_power_cut_policy p)
{
	if ((unsigned)p >= sizeof(policy_names) / sizeof(policy_names[0]))
		return "?";
	return policy_names[p];
}

const char *kp_config_log_level_name(kp_log_level level)
{
	if ((unsigned)level >= sizeof(level_names) / sizeof(level_names[0]))
		return "?";
	return level_names[level];
}

/* Digits only, no sign, no blanks; NULL and *out, or why not. */
static const char *parse_digits(const char *s, const char **end, int64_t *out)
{
	int64_t v = 0;
	const char *p = s;
	if (*p < '0' || *p > '9')
		return "not a non-negative integer";
	for (; *p >= '0' && *p <= '9'; p++) {
		int d = *p - '0';
		if (v > (INT64_MAX - d) / 10)
			return "number too large";
		v = v * 10 + d;
	}
	*end = p;
	*out = v;
	return NULL;
}

static const char *duration_parse(const char *text, int64_t *ms)
{
	static const struct {
		const char *suffix;
		int64_t ms;
	} units[] = {{"", MS_PER_S}, {"ms", 1}, {"s", MS_PER_S}, {"min", MS_PER_MIN}, {"h", MS_PER_H}};
	const char *end = NULL;
	int64_t v = 0;
	const char *why = parse_digits(text, &end, &v);
	if (why)
		return why;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].suffix) != 0)
			continue;
		if (v > INT64_MAX / units[i].ms)
			return "number too large";
		*ms = v * units[i].ms;
		return NULL;
	}
	return "unknown unit (use ms, s, min or h)";
}

kp_err kp_config_parse_duration(const char *text, int64_t *ms)
{
	int64_t v = 0;
	if (!text || !ms || duration_parse(text, &v))
		return KP_ERR_INVALID;
	*ms = v;
	return KP_OK;
}

/* The duration in its largest exact unit: "24h", "10min", "5s", "500ms". */
static void duration_format(int64_t ms, char *buf, size_t cap)
{
	if (ms != 0 && ms % MS_PER_H == 0)
		snprintf(buf, cap, "%" PRId64 "h", ms / MS_PER_H);
	else if (ms != 0 && ms % MS_PER_MIN == 0)
		snprintf(buf, cap, "%" PRId64 "min", ms / MS_PER_MIN);
	else if (ms % MS_PER_S == 0)
		snprintf(buf, cap, "%" PRId64 "s", ms / MS_PER_S);
	else
		snprintf(buf, cap, "%" PRId64 "ms", ms);
}

kp_err kp_config_split_hostport(const char *addr, char *host, size_t hostcap, uint16_t *port)
{
	if (!addr || !host || !port || hostcap == 0)
		return KP_ERR_INVALID;
	const char *h = addr, *colon;
	size_t hlen;
	if (addr[0] == '[') {
		const char *rb = strchr(addr, ']');
		if (!rb || rb[1] != ':')
			return KP_ERR_INVALID;
		h = addr + 1;
		hlen = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon || memchr(addr, ':', (size_t)(colon - addr)))
			return KP_ERR_INVALID; /* none, or a bare IPv6 address */
		hlen = (size_t)(colon - addr);
	}
	if (hlen == 0)
		return KP_ERR_INVALID;
	const char *end = NULL;
	int64_t p = 0;
	if (parse_digits(colon + 1, &end, &p) || *end != '\0' || p < 1 || p > 65535)
		return KP_ERR_INVALID;
	if (hlen >= hostcap)
		return KP_ERR_TOO_BIG;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	*port = (uint16_t)p;
	return KP_OK;
}

kp_err kp_config_host_server_name(const kp_config *cfg, char *out, size_t cap)
{
	if (!cfg || !out || cap == 0)
		return KP_ERR_INVALID;
	if (cfg->host.server_name[0])
		return copy_str(out, cap, cfg->host.server_name) ? KP_OK : KP_ERR_TOO_BIG;
	uint16_t port;
	kp_err rc = kp_config_split_hostport(cfg->host.address, out, cap, &port);
	return rc == KP_ERR_INVALID ? KP_ERR_CONFIG : rc;
}

/* "want a, b or c" for a K_CHOICE key. */
static void choices_text(const struct keydef *d, char *why, size_t cap)
{
	size_t used = (size_t)snprintf(why, cap, "want ");
	for (const char *const *ch = d->choices; *ch && used < cap; ch++) {
		const char *sep = ch == d->choices ? "" : ch[1] ? ", " : " or ";
		used += (size_t)snprintf(why + used, cap - used, "%s%s", sep, *ch);
	}
}

/* Why the value of d in c is not acceptable on its own, or NULL. Empty strings
 * pass here; the F_REQUIRED / F_HOST rules are checked by the callers. */
static const char *check_value(const struct keydef *d, const kp_config *c, char *why, size_t cap)
{
	const char *s = cfstr(c, d);
	if (IS_STRING(d->kind) && kp_text_has_pan(s, strlen(s)))
		return "looks like a card number"; /* kioskpay takes no card data (kp_pan.h) */
	switch (d->kind) {
	case K_PATH:
		for (const char *p = s; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				return "control character in value";
		return NULL;
	case K_ADDR: {
		char host[KP_CONFIG_STR_MAX + 1];
		uint16_t port;
		if (*s && kp_config_split_hostport(s, host, sizeof(host), &port) != KP_OK)
			return "want host:port (or [v6]:port) with port 1..65535";
		return NULL;
	}
	case K_ID:
		for (const char *p = s; *p; p++)
			if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			      (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
				return "want 1..64 characters of A-Z a-z 0-9 _ -";
		return NULL;
	case K_CURRENCY:
		if (*s && !(strlen(s) == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' &&
			    s[1] <= 'Z' && s[2] >= 'A' && s[2] <= 'Z'))
			return "want three upper-case letters (ISO 4217), e.g. EUR";
		return NULL;
	case K_CHOICE:
		for (const char *const *ch = d->choices; *s && *ch; ch++)
			if (strcmp(*ch, s) == 0)
				return NULL;
		if (!*s)
			return NULL;
		choices_text(d, why, cap);
		return why;
	case K_LINE: {
		int64_t off = cfline(c, d)->offset;
		if (off < d->min || off > d->max) {
			snprintf(why, cap, "want none or a line offset 0..%" PRId64 " (optionally \"active_low\")", d->max);
			return why;
		}
		return NULL;
	}
	case K_POLICY:
		if ((unsigned)c->payment.power_cut_policy >= sizeof(policy_names) / sizeof(policy_names[0]))
			return "want refund or hold";
		return NULL;
	case K_LOGLEVEL:
		if ((unsigned)c->log.level >= sizeof(level_names) / sizeof(level_names[0]))
			return "want error, warn, info or debug";
		return NULL;
	case K_INT: {
		int64_t v = cfi64(c, d);
		if (v < d->min || v > d->max) {
			snprintf(why, cap, "must be between %" PRId64 " and %" PRId64, d->min, d->max);
			return why;
		}
		return NULL;
	}
	case K_DURATION: {
		int64_t v = cfi64(c, d);
		if (v < d->min || v > d->max) {
			char lo[32], hi[32];
			duration_format(d->min, lo, sizeof(lo));
			duration_format(d->max, hi, sizeof(hi));
			snprintf(why, cap, "must be between %s and %s", lo, hi);
			return why;
		}
		return NULL;
	}
	}
	return "internal: unknown kind";
}

static void set_err(char *err, size_t errcap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errcap, const char *fmt, ...)
{
	if (!err || errcap == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errcap, fmt, ap);
	va_end(ap);
}

/* One rule between two durations: a must be less than (strict) or at most b. */
struct order_rule {
	const char *a, *b; /* "section.key" names for the message */
	size_t off_a, off_b;
	bool strict;
};

#define RULE(sa, fa, sb, fb, strict) \
	{sa, sb, offsetof(kp_config, fa), offsetof(kp_config, fb), strict}

static const struct order_rule rules[] = {
	RULE("[payment] pay_margin", payment.pay_margin_ms, "[payment] order_ttl", payment.order_ttl_ms, true),
	RULE("[payment] query_every", payment.query_every_ms, "[payment] pay_window", payment.pay_window_ms, false),
	RULE("[payment] pay_window", payment.pay_window_ms, "[payment] give_up_after", payment.give_up_after_ms, true),
	RULE("[payment] query_backoff_min", payment.query_backoff_min_ms, "[payment] query_backoff_max",
	     payment.query_backoff_max_ms, false),
	RULE("[payment] refund_retry", payment.refund_retry_ms, "[payment] refund_retry_max",
	     payment.refund_retry_max_ms, false),
	RULE("[host] reconnect_min", host.reconnect_min_ms, "[host] reconnect_max", host.reconnect_max_ms, false),
};

/* The rules of [mdb] and [gpio] together; why not, or NULL. */
static const char *check_devices(const kp_config *c)
{
	const kp_config_line *lines[] = {&c->gpio.power_fail, &c->gpio.vend_ok, &c->gpio.vend_fail};
	int wired = 0;
	for (size_t i = 0; i < 3; i++) {
		if (lines[i]->offset < 0)
			continue;
		wired++;
		for (size_t k = 0; k < i; k++)
			if (lines[k]->offset == lines[i]->offset)
				return "[gpio] the same line offset is given twice";
	}
	bool chip = strcmp(c->gpio.chip, "none") != 0;
	if (chip && wired == 0)
		return "[gpio] chip is set but no line (power_fail, vend_ok, vend_fail) is wired";
	if (!chip && wired > 0)
		return "[gpio] lines are wired but chip is none";
	if (strcmp(c->mdb.device, "none") != 0 && (c->gpio.vend_ok.offset >= 0 || c->gpio.vend_fail.offset >= 0))
		return "[gpio] vend_ok/vend_fail are for kiosks without MDB: the VMC reports the vend "
		       "([mdb] device is set)";
	return NULL;
}

kp_err kp_config_validate(const kp_config *cfg, unsigned flags, char *err, size_t errcap)
{
	if (!cfg) {
		set_err(err, errcap, "config: no config given");
		return KP_ERR_INVALID;
	}
	const char *src = cfg->source[0] ? cfg->source : "config";
	for (size_t i = 0; i < NKEYS; i++) {
		const struct keydef *d = &keys[i];
		char buf[96];
		const char *why = check_value(d, cfg, buf, sizeof(buf));
		if (!why && IS_STRING(d->kind) && cfstr(cfg, d)[0] == '\0') {
			if (d->flags & F_REQUIRED)
				why = "must not be empty";
			else if ((d->flags & F_HOST) && (flags & KP_CONFIG_NEED_HOST))
				why = "not set (required to reach the payment host)";
		}
		if (why) {
			set_err(err, errcap, "%s: [%s] %s: %s", src, d->section, d->key, why);
			return KP_ERR_CONFIG;
		}
	}
	const char *why = check_devices(cfg);
	if (why) {
		set_err(err, errcap, "%s: %s", src, why);
		return KP_ERR_CONFIG;
	}
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		const struct order_rule *r = &rules[i];
		int64_t a = *(const int64_t *)(const void *)((const char *)cfg + r->off_a);
		int64_t b = *(const int64_t *)(const void *)((const char *)cfg + r->off_b);
		if (r->strict ? a < b : a <= b)
			continue;
		char fa[32], fb[32];
		duration_format(a, fa, sizeof(fa));
		duration_format(b, fb, sizeof(fb));
		set_err(err, errcap, "%s: %s (%s) must be %s %s (%s)", src, r->a, fa,
			r->strict ? "less than" : "at most", r->b, fb);
		return KP_ERR_CONFIG;
	}
	return KP_OK;
}

/* ---- loading ---- */

struct parse_ctx {
	kp_config cfg;         /* defaults, then the file's values */
	const char *path;      /* for messages */
	const char *buf;       /* the whole file */
	size_t len, pos;
	int line;              /* line last handed to inih, 1-based */
	int seen[NKEYS];       /* line where each key was set, 0 = not yet */
	int err_line;          /* first error we found, 0 = none */
	char err[256];
};

static void ctx_fail(struct parse_ctx *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ctx_fail(struct parse_ctx *p, const char *fmt, ...)
{
	if (p->err_line)
		return; /* the first error is the one reported */
	int n = snprintf(p->err, sizeof(p->err), "%s:%d: ", p->path, p->line);
	if (n < 0 || (size_t)n >= sizeof(p->err))
		n = 0;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->err + n, sizeof(p->err) - (size_t)n, fmt, ap);
	va_end(ap);
	p->err_line = p->line;
}

static bool section_known(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
		if (strlen(sections[i]) == len && memcmp(sections[i], name, len) == 0)
			return true;
	return false;
}

/* inih's fgets-like reader: hands out one line at a time with leading blanks
 * removed (so inih never sees a multi-line continuation), counts lines and
 * refuses lines longer than inih's buffer instead of letting it split them. */
static char *read_line(char *str, int num, void *stream)
{
	struct parse_ctx *p = stream;
	if (p->pos >= p->len || num < 2)
		return NULL;
	const char *start = p->buf + p->pos;
	const char *nl = memchr(start, '\n', p->len - p->pos);
	size_t n = nl ? (size_t)(nl - start) : p->len - p->pos;
	p->pos += n + (nl ? 1 : 0);
	p->line++;
	while (n > 0 && (*start == ' ' || *start == '\t')) {
		start++;
		n--;
	}
	if (n >= (size_t)num - 1) {
		ctx_fail(p, "line too long (at most %d characters)", num - 2);
		str[0] = '\0';
		return str;
	}
	memcpy(str, start, n);
	str[n] = '\0';
	if (str[0] == '[') {
		const char *rb = strchr(str, ']');
		if (rb && !section_known(str + 1, (size_t)(rb - str - 1)))
			ctx_fail(p, "%.*s: unknown section", (int)(rb - str + 1), str);
	}
	return str;
}

static const char *parse_value(const struct keydef *d, kp_config *c, const char *value, char *why, size_t cap)
{
	if (value[0] == '\0')
		return "empty value (leave the key out to keep the default)";
	switch (d->kind) {
	case K_PATH:
	case K_ADDR:
	case K_ID:
	case K_CURRENCY:
	case K_CHOICE:
		if (!copy_str(fstr(c, d), d->cap, value)) {
			snprintf(why, cap, "value too long (at most %zu bytes)", d->cap - 1);
			return why;
		}
		break;
	case K_DURATION: {
		const char *bad = duration_parse(value, fi64(c, d));
		if (bad) {
			snprintf(why, cap, "bad duration \"%s\": %s", value, bad);
			return why;
		}
		break;
	}
	case K_INT: {
		const char *end = NULL;
		const char *bad = parse_digits(value, &end, fi64(c, d));
		if (!bad && *end != '\0')
			bad = "not a plain integer";
		if (bad) {
			snprintf(why, cap, "bad number \"%s\": %s", value, bad);
			return why;
		}
		break;
	}
	case K_LINE: {
		kp_config_line *l = fline(c, d);
		if (strcmp(value, "none") == 0) {
			l->offset = -1;
			l->active_low = false;
			break;
		}
		const char *end = NULL;
		const char *bad = parse_digits(value, &end, &l->offset);
		l->active_low = false;
		if (!bad && strcmp(end, " active_low") == 0)
			l->active_low = true;
		else if (!bad && *end != '\0')
			bad = "want none, N or \"N active_low\"";
		if (bad) {
			snprintf(why, cap, "bad line \"%s\": %s", value, bad);
			return why;
		}
		break;
	}
	case K_POLICY:
	case K_LOGLEVEL: {
		const char *const *names = d->kind == K_POLICY ? policy_names : level_names;
		size_t n = d->kind == K_POLICY ? sizeof(policy_names) / sizeof(policy_names[0])
					       : sizeof(level_names) / sizeof(level_names[0]);
		size_t i = 0;
		while (i < n && strcmp(names[i], value) != 0)
			i++;
		if (i == n) {
			snprintf(why, cap, "unknown value \"%s\": want %s", value,
				 d->kind == K_POLICY ? "refund or hold" : "error, warn, info or debug");
			return why;
		}
		if (d->kind == K_POLICY)
			c->payment.power_cut_policy = (kp_power_cut_policy)i;
		else
			c->log.level = (kp_log_level)i;
		break;
	}
	}
	return check_value(d, c, why, cap);
}

static int on_pair(void *user, const char *section, const char *name, const char *value)
{
	struct parse_ctx *p = user;
	if (section[0] == '\0') {
		ctx_fail(p, "%s: key outside any [section]", name);
		return 1;
	}
	size_t i = 0;
	bool sec_ok = section_known(section, strlen(section));
	while (i < NKEYS && !(strcmp(keys[i].section, section) == 0 && strcmp(keys[i].key, name) == 0))
		i++;
	if (i == NKEYS) {
		ctx_fail(p, "[%s] %s: %s", section, name, sec_ok ? "unknown key" : "unknown section");
		return 1;
	}
	if (p->seen[i]) {
		ctx_fail(p, "[%s] %s: duplicate key (first set on line %d)", section, name, p->seen[i]);
		return 1;
	}
	p->seen[i] = p->line;
	char buf[160];
	const char *why = parse_value(&keys[i], &p->cfg, value, buf, sizeof(buf));
	if (why)
		ctx_fail(p, "[%s] %s: %s", section, name, why);
	return 1; /* keep going: inih's return value then means syntax errors only */
}

kp_err kp_config_load(kp_config *out, const char *path, char *err, size_t errcap)
{
	kp_err rc = KP_OK;
	struct parse_ctx *p = NULL;
	char *buf = NULL;
	FILE *f = NULL;

	if (!out || !path) {
		set_err(err, errcap, "config: no file given");
		return KP_ERR_INVALID;
	}
	p = calloc(1, sizeof(*p));
	buf = malloc(KP_CONFIG_FILE_MAX + 1);
	if (!p || !buf) {
		set_err(err, errcap, "%s: out of memory", path);
		rc = KP_ERR_NOMEM;
		goto out;
	}
	f = fopen(path, "rb");
	if (!f) {
		set_err(err, errcap, "%s: cannot open: %s", path, strerror(errno));
		rc = KP_ERR_IO;
		goto out;
	}
	size_t len = fread(buf, 1, KP_CONFIG_FILE_MAX + 1, f);
	if (ferror(f)) {
		set_err(err, errcap, "%s: cannot read: %s", path, strerror(errno));
		rc = KP_ERR_IO;
		goto out;
	}
	if (len > KP_CONFIG_FILE_MAX) {
		set_err(err, errcap, "%s: file larger than %d bytes", path, KP_CONFIG_FILE_MAX);
		rc = KP_ERR_CONFIG;
		goto out;
	}
	const char *nul = memchr(buf, '\0', len);
	if (nul) {
		int line = 1;
		for (const char *q = buf; q < nul; q++)
			line += *q == '\n';
		set_err(err, errcap, "%s:%d: NUL byte in file", path, line);
		rc = KP_ERR_CONFIG;
		goto out;
	}

	kp_config_defaults(&p->cfg);
	if (!copy_str(p->cfg.source, sizeof(p->cfg.source), path)) {
		set_err(err, errcap, "config file name longer than %d bytes", KP_CONFIG_STR_MAX);
		rc = KP_ERR_INVALID;
		goto out;
	}
	p->path = path;
	p->buf = buf;
	p->len = len;
	int ret = ini_parse_stream(read_line, p, on_pair, p);
	if (ret < 0) {
		set_err(err, errcap, "%s: parser failed (%d)", path, ret);
		rc = ret == -2 ? KP_ERR_NOMEM : KP_ERR_IO;
		goto out;
	}
	if (p->err_line && (ret == 0 || p->err_line <= ret)) {
		set_err(err, errcap, "%s", p->err);
		rc = KP_ERR_CONFIG;
		goto out;
	}
	if (ret > 0) {
		set_err(err, errcap, "%s:%d: syntax error: want [section], key = value or a ; comment",
			path, ret);
		rc = KP_ERR_CONFIG;
		goto out;
	}
	rc = kp_config_validate(&p->cfg, 0, err, errcap);
	if (rc != KP_OK)
		goto out;
	*out = p->cfg;
out:
	if (f)
		fclose(f);
	free(buf);
	free(p);
	return rc;
}

void kp_config_dump(const kp_config *cfg, FILE *f)
{
	const char *section = NULL;
	fprintf(f, "; kioskpayd effective configuration (%s%s)\n", cfg->source[0] ? "from " : "defaults",
		cfg->source);
	for (size_t i = 0; i < NKEYS; i++) {
		const struct keydef *d = &keys[i];
		if (!section || strcmp(section, d->section) != 0) {
			section = d->section;
			fprintf(f, "\n[%s]\n", section);
		}
		char buf[32];
		switch (d->kind) {
		case K_PATH:
		case K_ADDR:
		case K_ID:
		case K_CURRENCY:
		case K_CHOICE: {
			const char *s = cfstr(cfg, d);
			/* "key = ;x" would read back empty (inih: " ;" starts a comment).
			 * A value that filled its line as "key=value" must not grow past
			 * what the reader takes back (INI_MAX_LINE less newline and NUL):
			 * then it is written without the blanks, which inih ignores. */
			bool tight = strlen(d->key) + 3 + strlen(s) > INI_MAX_LINE - 2;
			const char *sep = tight ? "=" : *s == ';' ? " =" : " = ";
			fprintf(f, "%s%s%s%s\n", *s ? "" : "; ", d->key, sep, *s ? s : "(not set)");
			break;
		}
		case K_DURATION:
			duration_format(cfi64(cfg, d), buf, sizeof(buf));
			fprintf(f, "%s = %s\n", d->key, buf);
			break;
		case K_INT:
			fprintf(f, "%s = %" PRId64 "\n", d->key, cfi64(cfg, d));
			break;
		case K_POLICY:
			fprintf(f, "%s = %s\n", d->key, kp_config_policy_name(cfg->payment.power_cut_policy));
			break;
		case K_LOGLEVEL:
			fprintf(f, "%s = %s\n", d->key, kp_config_log_level_name(cfg->log.level));
			break;
		case K_LINE: {
			const kp_config_line *l = cfline(cfg, d);
			if (l->offset < 0)
				fprintf(f, "%s = none\n", d->key);
			else
				fprintf(f, "%s = %" PRId64 "%s\n", d->key, l->offset, l->active_low ? " active_low" : "");
			break;
		}
		}
	}
}
