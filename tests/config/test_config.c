/* test_config.c — kioskpayd's INI config: defaults, every unit, every kind of
 * bad value with its line number, unknown/duplicate keys, cross-field rules,
 * the dump read back, and *out left alone on every error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char tmpdir[256];
static char cfgpath[300];

static int setup_dir(void **state)
{
	(void)state;
	const char *t = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/kp-config-XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(cfgpath, sizeof(cfgpath), "%s/kioskpay.ini", tmpdir);
	return 0;
}

static int teardown_dir(void **state)
{
	(void)state;
	unlink(cfgpath);
	return rmdir(tmpdir);
}

static void write_file(const char *text, size_t len)
{
	FILE *f = fopen(cfgpath, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static kp_err load_text(const char *text, kp_config *out, char *err, size_t errcap)
{
	write_file(text, strlen(text));
	return kp_config_load(out, cfgpath, err, errcap);
}

/* ---- defaults ---- */

static void test_defaults(void **state)
{
	(void)state;
	kp_config c;
	memset(&c, 0x5a, sizeof(c));
	kp_config_defaults(&c);
	assert_string_equal(c.source, "");
	assert_string_equal(c.journal.path, "/var/lib/kioskpay/journal.db");
	assert_string_equal(c.api.listen, "127.0.0.1:5683");
	assert_int_equal(c.api.max_payload, 1024);
	assert_string_equal(c.host.address, "");
	assert_string_equal(c.host.server_name, "");
	assert_string_equal(c.host.ca, "");
	assert_string_equal(c.host.cert, "");
	assert_string_equal(c.host.key, "");
	assert_int_equal(c.host.request_timeout_ms, 10000);
	assert_int_equal(c.host.ping_idle_ms, 15000);
	assert_int_equal(c.host.reconnect_min_ms, 500);
	assert_int_equal(c.host.reconnect_max_ms, 30000);
	assert_string_equal(c.device.id, "");
	assert_string_equal(c.payment.currency, "EUR");
	assert_int_equal(c.payment.max_amount, 10000);
	assert_int_equal(c.payment.order_ttl_ms, 300000);
	assert_int_equal(c.payment.pay_margin_ms, 60000);
	assert_int_equal(c.payment.query_every_ms, 5000);
	assert_int_equal(c.payment.pay_window_ms, 60000);
	assert_int_equal(c.payment.give_up_after_ms, 24 * 3600 * 1000LL);
	assert_int_equal(c.payment.query_backoff_min_ms, 30000);
	assert_int_equal(c.payment.query_backoff_max_ms, 600000);
	assert_int_equal(c.payment.refund_retry_ms, 5000);
	assert_int_equal(c.payment.refund_retry_max_ms, 600000);
	assert_int_equal(c.payment.power_cut_policy, KP_POWER_CUT_REFUND);
	assert_int_equal(c.log.level, KP_LOG_INFO);

	char err[256];
	assert_int_equal(kp_config_validate(&c, 0, err, sizeof(err)), KP_OK);
	assert_int_equal(kp_config_validate(&c, KP_CONFIG_NEED_HOST, err, sizeof(err)), KP_ERR_CONFIG);
	assert_string_equal(err, "config: [host] address: not set (required to reach the payment host)");
}

static void test_empty_and_comment_files_give_defaults(void **state)
{
	(void)state;
	static const char *const texts[] = {
		"",
		"\n\n",
		"; only a comment\n# another\n",
		"[journal]\n[api]\n[host]\n[device]\n[payment]\n[log]\n",
		"[mdb]\n[gpio]\n[watchdog]\n",
		"\xef\xbb\xbf; a file with a UTF-8 BOM\n",
	};
	kp_config want;
	kp_config_defaults(&want);
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		kp_config c;
		char err[256] = "";
		assert_int_equal(load_text(texts[i], &c, err, sizeof(err)), KP_OK);
		assert_string_equal(c.source, cfgpath);
		memset(c.source, 0, sizeof(c.source));
		assert_memory_equal(&c, &want, sizeof(c));
	}
}

/* ---- good values: one table per field type ---- */

#define OFF(field) offsetof(kp_config, field)

struct good_num {
	const char *text;
	size_t off; /* of an int64_t field */
	int64_t want;
};

static const struct good_num good_nums[] = {
	/* each unit, and no unit = seconds */
	{"[host]\nrequest_timeout = 500ms\n", OFF(host.request_timeout_ms), 500},
	{"[host]\nrequest_timeout = 7s\n", OFF(host.request_timeout_ms), 7000},
	{"[host]\nrequest_timeout = 7\n", OFF(host.request_timeout_ms), 7000},
	{"[host]\nping_idle = 2min\n", OFF(host.ping_idle_ms), 120000},
	{"[payment]\ngive_up_after = 48h\n", OFF(payment.give_up_after_ms), 48LL * 3600 * 1000},
	{"[payment]\ngive_up_after = 720h\n", OFF(payment.give_up_after_ms), 720LL * 3600 * 1000},
	{"[host]\nrequest_timeout = 1ms\n", OFF(host.request_timeout_ms), 1},
	{"[host]\nrequest_timeout = 007s\n", OFF(host.request_timeout_ms), 7000},
	/* every duration key reaches its field */
	{"[host]\nreconnect_min = 250ms\n", OFF(host.reconnect_min_ms), 250},
	{"[host]\nreconnect_max = 1min\n", OFF(host.reconnect_max_ms), 60000},
	{"[payment]\norder_ttl = 30min\n", OFF(payment.order_ttl_ms), 1800000},
	{"[payment]\npay_margin = 0\n", OFF(payment.pay_margin_ms), 0},
	{"[payment]\nquery_every = 2s\n", OFF(payment.query_every_ms), 2000},
	{"[payment]\npay_window = 90s\n", OFF(payment.pay_window_ms), 90000},
	{"[payment]\nquery_backoff_min = 10s\n", OFF(payment.query_backoff_min_ms), 10000},
	{"[payment]\nquery_backoff_max = 1h\n", OFF(payment.query_backoff_max_ms), 3600000},
	{"[payment]\nrefund_retry = 1s\n", OFF(payment.refund_retry_ms), 1000},
	{"[payment]\nrefund_retry_max = 20min\n", OFF(payment.refund_retry_max_ms), 1200000},
	{"[mdb]\npatience = 45s\n", OFF(mdb.patience_ms), 45000},
	{"[mdb]\npatience = 4min\n", OFF(mdb.patience_ms), 240000},
	{"[mdb]\nsession_idle = 2min\n", OFF(mdb.session_idle_ms), 120000},
	{"[gpio]\ndebounce = 0\n", OFF(gpio.debounce_ms), 0},
	{"[gpio]\ndebounce = 20ms\n", OFF(gpio.debounce_ms), 20},
	{"[watchdog]\ntimeout = 30s\n", OFF(watchdog.timeout_ms), 30000},
	/* integers */
	{"[payment]\nmax_amount = 1\n", OFF(payment.max_amount), 1},
	{"[payment]\nmax_amount = 250000\n", OFF(payment.max_amount), 250000},
	{"[api]\nmax_payload = 4096\n", OFF(api.max_payload), 4096},
	/* layout: no blanks, indentation, inline comment, CRLF, section repeated */
	{"[host]\nping_idle=20s\n", OFF(host.ping_idle_ms), 20000},
	{"  [host]\n\tping_idle = 20s ; idle ping\n", OFF(host.ping_idle_ms), 20000},
	{"[host]\r\nping_idle = 20s\r\n", OFF(host.ping_idle_ms), 20000},
	{"[host]\nping_idle = 20s\n[payment]\nmax_amount = 5\n[host]\nrequest_timeout = 3s\n",
	 OFF(host.request_timeout_ms), 3000},
	{"[host]\nping_idle : 21s\n", OFF(host.ping_idle_ms), 21000},
};

static void test_good_numbers(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(good_nums) / sizeof(good_nums[0]); i++) {
		const struct good_num *g = &good_nums[i];
		kp_config c;
		char err[256] = "";
		kp_err rc = load_text(g->text, &c, err, sizeof(err));
		if (rc != KP_OK)
			fail_msg("case %zu (%s): %s", i, g->text, err);
		int64_t got;
		memcpy(&got, (const char *)&c + g->off, sizeof(got));
		if (got != g->want)
			fail_msg("case %zu (%s): got %lld want %lld", i, g->text, (long long)got,
				 (long long)g->want);
	}
}

struct good_str {
	const char *text;
	size_t off; /* of a char array */
	const char *want;
};

static const struct good_str good_strs[] = {
	{"[journal]\npath = /data/kp/journal.db\n", OFF(journal.path), "/data/kp/journal.db"},
	{"[journal]\npath = /mnt/my kiosk/j.db\n", OFF(journal.path), "/mnt/my kiosk/j.db"},
	{"[api]\nlisten = 0.0.0.0:5684\n", OFF(api.listen), "0.0.0.0:5684"},
	{"[api]\nlisten = [::1]:5683\n", OFF(api.listen), "[::1]:5683"},
	{"[host]\naddress = pay.example.com:8443\n", OFF(host.address), "pay.example.com:8443"},
	{"[host]\nserver_name = pay.example.com\n", OFF(host.server_name), "pay.example.com"},
	{"[host]\nca = /etc/kioskpay/ca.pem\n", OFF(host.ca), "/etc/kioskpay/ca.pem"},
	{"[host]\ncert = /etc/kioskpay/dev.pem\n", OFF(host.cert), "/etc/kioskpay/dev.pem"},
	{"[host]\nkey = /etc/kioskpay/dev.key\n", OFF(host.key), "/etc/kioskpay/dev.key"},
	{"[device]\nid = kiosk-0042_A\n", OFF(device.id), "kiosk-0042_A"},
	{"[device]\nid = 0123456789012345678901234567890123456789012345678901234567890123\n", OFF(device.id),
	 "0123456789012345678901234567890123456789012345678901234567890123"},
	{"[payment]\ncurrency = USD\n", OFF(payment.currency), "USD"},
	{"[mdb]\ndevice = /dev/ttyAMA0\n", OFF(mdb.device), "/dev/ttyAMA0"},
	{"[mdb]\ndevice = sim\n", OFF(mdb.device), "sim"},
	{"[mdb]\nframing = pair\n", OFF(mdb.framing), "pair"},
	{"[mdb]\nframing = parity\n", OFF(mdb.framing), "parity"},
	{"[mdb]\nbaud = 115200\n", OFF(mdb.baud), "115200"},
	{"[gpio]\nchip = sim:/run/kp-gpio\npower_fail = 3\n", OFF(gpio.chip), "sim:/run/kp-gpio"},
	{"[watchdog]\ndevice = /dev/watchdog0\n", OFF(watchdog.device), "/dev/watchdog0"},
};

static void test_good_strings(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(good_strs) / sizeof(good_strs[0]); i++) {
		const struct good_str *g = &good_strs[i];
		kp_config c;
		char err[256] = "";
		kp_err rc = load_text(g->text, &c, err, sizeof(err));
		if (rc != KP_OK)
			fail_msg("case %zu (%s): %s", i, g->text, err);
		assert_string_equal((const char *)&c + g->off, g->want);
	}
}

/* [gpio] lines: none, an offset, or an offset and active_low */
static void test_good_lines(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		int64_t power_fail, vend_ok, vend_fail;
		bool low;
	} cases[] = {
		{"", -1, -1, -1, false},
		{"[gpio]\nchip = /dev/gpiochip0\npower_fail = 17\n", 17, -1, -1, false},
		{"[gpio]\nchip = /dev/gpiochip0\npower_fail = 17 active_low\n", 17, -1, -1, true},
		{"[gpio]\nchip = /dev/gpiochip1\npower_fail = none\nvend_ok = 0\nvend_fail = 1023\n", -1, 0, 1023,
		 false},
		{"[gpio]\nchip = /dev/gpiochip0\npower_fail = 5 active_low ; PFO of the supply\n", 5, -1, -1, true},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kp_config c;
		char err[256] = "";
		if (load_text(cases[i].text, &c, err, sizeof(err)) != KP_OK)
			fail_msg("case %zu: %s", i, err);
		assert_int_equal(c.gpio.power_fail.offset, cases[i].power_fail);
		assert_int_equal(c.gpio.vend_ok.offset, cases[i].vend_ok);
		assert_int_equal(c.gpio.vend_fail.offset, cases[i].vend_fail);
		assert_int_equal(c.gpio.power_fail.active_low, cases[i].low);
		assert_false(c.gpio.vend_ok.active_low);
	}
}

static void test_good_names(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		kp_power_cut_policy policy;
		kp_log_level level;
	} cases[] = {
		{"[payment]\npower_cut_policy = refund\n", KP_POWER_CUT_REFUND, KP_LOG_INFO},
		{"[payment]\npower_cut_policy = hold\n", KP_POWER_CUT_HOLD, KP_LOG_INFO},
		{"[log]\nlevel = error\n", KP_POWER_CUT_REFUND, KP_LOG_ERROR},
		{"[log]\nlevel = warn\n", KP_POWER_CUT_REFUND, KP_LOG_WARN},
		{"[log]\nlevel = info\n", KP_POWER_CUT_REFUND, KP_LOG_INFO},
		{"[log]\nlevel = debug\n", KP_POWER_CUT_REFUND, KP_LOG_DEBUG},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kp_config c;
		char err[256] = "";
		assert_int_equal(load_text(cases[i].text, &c, err, sizeof(err)), KP_OK);
		assert_int_equal(c.payment.power_cut_policy, cases[i].policy);
		assert_int_equal(c.log.level, cases[i].level);
	}
}

/* ---- bad files: the error text after "FILE" is compared whole ---- */

struct bad_case {
	const char *text;
	kp_err rc;
	const char *want; /* err without the leading file name */
};

#define LONG100 "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"

static const struct bad_case bad_cases[] = {
	/* durations */
	{"[host]\nping_idle = -5s\n", KP_ERR_CONFIG,
	 ":2: [host] ping_idle: bad duration \"-5s\": not a non-negative integer"},
	{"[host]\nping_idle = 5x\n", KP_ERR_CONFIG,
	 ":2: [host] ping_idle: bad duration \"5x\": unknown unit (use ms, s, min or h)"},
	{"[host]\nping_idle = 5d\n", KP_ERR_CONFIG,
	 ":2: [host] ping_idle: bad duration \"5d\": unknown unit (use ms, s, min or h)"},
	{"[host]\nping_idle = 5S\n", KP_ERR_CONFIG,
	 ":2: [host] ping_idle: bad duration \"5S\": unknown unit (use ms, s, min or h)"},
	{"[host]\nping_idle = 5 s\n", KP_ERR_CONFIG,
	 ":2: [host] ping_idle: bad duration \"5 s\": unknown unit (use ms, s, min or h)"},
	{"[host]\nping_idle = 1.5s\n", KP_ERR_CONFIG,
	 ":2: [host] ping_idle: bad duration \"1.5s\": unknown unit (use ms, s, min or h)"},
	{"[host]\nping_idle = s\n", KP_ERR_CONFIG,
	 ":2: [host] ping_idle: bad duration \"s\": not a non-negative integer"},
	{"[host]\nping_idle = +5s\n", KP_ERR_CONFIG,
	 ":2: [host] ping_idle: bad duration \"+5s\": not a non-negative integer"},
	{"[host]\nping_idle = 99999999999999h\n", KP_ERR_CONFIG,
	 ":2: [host] ping_idle: bad duration \"99999999999999h\": number too large"},
	{"[host]\nping_idle = 99999999999999999999\n", KP_ERR_CONFIG,
	 ":2: [host] ping_idle: bad duration \"99999999999999999999\": number too large"},
	{"[host]\nping_idle =\n", KP_ERR_CONFIG,
	 ":2: [host] ping_idle: empty value (leave the key out to keep the default)"},
	{"[host]\nping_idle = ; nothing\n", KP_ERR_CONFIG,
	 ":2: [host] ping_idle: empty value (leave the key out to keep the default)"},
	{"[host]\nping_idle = 0\n", KP_ERR_CONFIG, ":2: [host] ping_idle: must be between 1ms and 720h"},
	{"[host]\nping_idle = 721h\n", KP_ERR_CONFIG, ":2: [host] ping_idle: must be between 1ms and 720h"},
	{"[payment]\npay_margin = 2592000001ms\n", KP_ERR_CONFIG,
	 ":2: [payment] pay_margin: must be between 0s and 720h"},
	/* integers */
	{"[payment]\nmax_amount = 0\n", KP_ERR_CONFIG,
	 ":2: [payment] max_amount: must be between 1 and 1000000000000"},
	{"[payment]\nmax_amount = -1\n", KP_ERR_CONFIG,
	 ":2: [payment] max_amount: bad number \"-1\": not a non-negative integer"},
	{"[payment]\nmax_amount = 10.50\n", KP_ERR_CONFIG,
	 ":2: [payment] max_amount: bad number \"10.50\": not a plain integer"},
	{"[payment]\nmax_amount = 1e3\n", KP_ERR_CONFIG,
	 ":2: [payment] max_amount: bad number \"1e3\": not a plain integer"},
	{"[payment]\nmax_amount = 9223372036854775808\n", KP_ERR_CONFIG,
	 ":2: [payment] max_amount: bad number \"9223372036854775808\": number too large"},
	{"[api]\nmax_payload = 10\n", KP_ERR_CONFIG, ":2: [api] max_payload: must be between 64 and 65536"},
	/* names and formats */
	{"[payment]\ncurrency = eur\n", KP_ERR_CONFIG,
	 ":2: [payment] currency: want three upper-case letters (ISO 4217), e.g. EUR"},
	{"[payment]\ncurrency = EURO\n", KP_ERR_CONFIG,
	 ":2: [payment] currency: value too long (at most 3 bytes)"},
	{"[payment]\ncurrency = E1R\n", KP_ERR_CONFIG,
	 ":2: [payment] currency: want three upper-case letters (ISO 4217), e.g. EUR"},
	{"[payment]\npower_cut_policy = maybe\n", KP_ERR_CONFIG,
	 ":2: [payment] power_cut_policy: unknown value \"maybe\": want refund or hold"},
	{"[log]\nlevel = verbose\n", KP_ERR_CONFIG,
	 ":2: [log] level: unknown value \"verbose\": want error, warn, info or debug"},
	{"[log]\nlevel = INFO\n", KP_ERR_CONFIG,
	 ":2: [log] level: unknown value \"INFO\": want error, warn, info or debug"},
	{"[api]\nlisten = localhost\n", KP_ERR_CONFIG,
	 ":2: [api] listen: want host:port (or [v6]:port) with port 1..65535"},
	{"[api]\nlisten = localhost:0\n", KP_ERR_CONFIG,
	 ":2: [api] listen: want host:port (or [v6]:port) with port 1..65535"},
	{"[host]\naddress = pay:70000\n", KP_ERR_CONFIG,
	 ":2: [host] address: want host:port (or [v6]:port) with port 1..65535"},
	{"[host]\naddress = :443\n", KP_ERR_CONFIG,
	 ":2: [host] address: want host:port (or [v6]:port) with port 1..65535"},
	{"[host]\naddress = ::1:443\n", KP_ERR_CONFIG,
	 ":2: [host] address: want host:port (or [v6]:port) with port 1..65535"},
	{"[device]\nid = kiosk/1\n", KP_ERR_CONFIG,
	 ":2: [device] id: want 1..64 characters of A-Z a-z 0-9 _ -"},
	{"[device]\nid = " LONG100 "\n", KP_ERR_CONFIG, ":2: [device] id: value too long (at most 64 bytes)"},
	{"[journal]\npath = /a\x01z\n", KP_ERR_CONFIG, ":2: [journal] path: control character in value"},
	{"[journal]\npath = /" LONG100 LONG100 "\n", KP_ERR_CONFIG, ":2: line too long (at most 198 characters)"},
	/* [mdb], [gpio], [watchdog] */
	{"[mdb]\nframing = 9bit\n", KP_ERR_CONFIG, ":2: [mdb] framing: want parity or pair"},
	{"[mdb]\nframing = paritypair\n", KP_ERR_CONFIG, ":2: [mdb] framing: value too long (at most 7 bytes)"},
	{"[mdb]\nbaud = 4800\n", KP_ERR_CONFIG, ":2: [mdb] baud: want 9600, 19200, 38400, 57600 or 115200"},
	{"[mdb]\npatience = 500ms\n", KP_ERR_CONFIG, ":2: [mdb] patience: must be between 1s and 4min"},
	{"[mdb]\npatience = 241s\n", KP_ERR_CONFIG, ":2: [mdb] patience: must be between 1s and 4min"},
	{"[mdb]\nsession_idle = 2h\n", KP_ERR_CONFIG, ":2: [mdb] session_idle: must be between 1s and 1h"},
	{"[mdb]\ndevice = /dev/tty\x02\n", KP_ERR_CONFIG, ":2: [mdb] device: control character in value"},
	{"[gpio]\npower_fail = 1024\n", KP_ERR_CONFIG,
	 ":2: [gpio] power_fail: want none or a line offset 0..1023 (optionally \"active_low\")"},
	{"[gpio]\npower_fail = -1\n", KP_ERR_CONFIG,
	 ":2: [gpio] power_fail: bad line \"-1\": not a non-negative integer"},
	{"[gpio]\nvend_ok = 3 low\n", KP_ERR_CONFIG,
	 ":2: [gpio] vend_ok: bad line \"3 low\": want none, N or \"N active_low\""},
	{"[gpio]\nvend_fail = GPIO17\n", KP_ERR_CONFIG,
	 ":2: [gpio] vend_fail: bad line \"GPIO17\": not a non-negative integer"},
	{"[gpio]\ndebounce = 2s\n", KP_ERR_CONFIG, ":2: [gpio] debounce: must be between 0s and 1s"},
	{"[watchdog]\ntimeout = 1s\n", KP_ERR_CONFIG, ":2: [watchdog] timeout: must be between 2s and 10min"},
	{"[watchdog]\ndevice =\n", KP_ERR_CONFIG,
	 ":2: [watchdog] device: empty value (leave the key out to keep the default)"},
	/* structure */
	{"[payment]\nmax_amount = 5\nfoo = 1\n", KP_ERR_CONFIG, ":3: [payment] foo: unknown key"},
	{"[payment]\nping_idle = 5s\n", KP_ERR_CONFIG, ":2: [payment] ping_idle: unknown key"},
	{"[paymnt]\nmax_amount = 5\n", KP_ERR_CONFIG, ":1: [paymnt]: unknown section"},
	{"[log]\n[extra]\n", KP_ERR_CONFIG, ":2: [extra]: unknown section"},
	{"max_amount = 5\n", KP_ERR_CONFIG, ":1: max_amount: key outside any [section]"},
	{"[host]\nping_idle = 1s\n\n[host]\nping_idle = 1s\n", KP_ERR_CONFIG,
	 ":5: [host] ping_idle: duplicate key (first set on line 2)"},
	{"[host]\nping_idle\n", KP_ERR_CONFIG,
	 ":2: syntax error: want [section], key = value or a ; comment"},
	{"[host\nping_idle = 1s\n", KP_ERR_CONFIG,
	 ":1: syntax error: want [section], key = value or a ; comment"},
	/* an indented line is not a continuation of the value above */
	{"[host]\nping_idle = 1s\n    2s\n", KP_ERR_CONFIG,
	 ":3: syntax error: want [section], key = value or a ; comment"},
	/* line numbers count comments and blank lines; the first error wins */
	{"; kioskpay\n\n[journal]\npath = /j.db\n\n# timings\n[payment]\norder_ttl = 5y\n", KP_ERR_CONFIG,
	 ":8: [payment] order_ttl: bad duration \"5y\": unknown unit (use ms, s, min or h)"},
	{"[host]\nbroken\nnope = 1\n", KP_ERR_CONFIG,
	 ":2: syntax error: want [section], key = value or a ; comment"},
	{"[host]\nnope = 1\nbroken\n", KP_ERR_CONFIG, ":2: [host] nope: unknown key"},
	{"[host]\nping_idle = 1s\nping_idle = 2s\nbroken\n", KP_ERR_CONFIG,
	 ":3: [host] ping_idle: duplicate key (first set on line 2)"},
	{"[host]\nping_idle = 1s\n\0\n", KP_ERR_CONFIG, ":3: NUL byte in file"},
	/* cross-field rules: no line, the file as a whole */
	{"[payment]\npay_margin = 300s\n", KP_ERR_CONFIG,
	 ": [payment] pay_margin (5min) must be less than [payment] order_ttl (5min)"},
	{"[payment]\norder_ttl = 1min\n", KP_ERR_CONFIG,
	 ": [payment] pay_margin (1min) must be less than [payment] order_ttl (1min)"},
	{"[payment]\nquery_every = 61s\n", KP_ERR_CONFIG,
	 ": [payment] query_every (61s) must be at most [payment] pay_window (1min)"},
	{"[payment]\ngive_up_after = 1min\n", KP_ERR_CONFIG,
	 ": [payment] pay_window (1min) must be less than [payment] give_up_after (1min)"},
	{"[payment]\nquery_backoff_min = 11min\n", KP_ERR_CONFIG,
	 ": [payment] query_backoff_min (11min) must be at most [payment] query_backoff_max (10min)"},
	{"[payment]\nrefund_retry_max = 4s\n", KP_ERR_CONFIG,
	 ": [payment] refund_retry (5s) must be at most [payment] refund_retry_max (4s)"},
	{"[host]\nreconnect_min = 1500ms\nreconnect_max = 1s\n", KP_ERR_CONFIG,
	 ": [host] reconnect_min (1500ms) must be at most [host] reconnect_max (1s)"},
	{"[gpio]\npower_fail = 4\n", KP_ERR_CONFIG, ": [gpio] lines are wired but chip is none"},
	{"[gpio]\nchip = /dev/gpiochip0\n", KP_ERR_CONFIG,
	 ": [gpio] chip is set but no line (power_fail, vend_ok, vend_fail) is wired"},
	{"[gpio]\nchip = /dev/gpiochip0\npower_fail = 4\nvend_fail = 4 active_low\n", KP_ERR_CONFIG,
	 ": [gpio] the same line offset is given twice"},
	{"[mdb]\ndevice = /dev/ttyS1\n[gpio]\nchip = /dev/gpiochip0\nvend_ok = 5\n", KP_ERR_CONFIG,
	 ": [gpio] vend_ok/vend_fail are for kiosks without MDB: the VMC reports the vend ([mdb] device is set)"},
};

static void test_bad_files(void **state)
{
	(void)state;
	kp_config before, c;
	kp_config_defaults(&before);
	before.payment.max_amount = 777; /* not a default: shows *out was not reset */
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *b = &bad_cases[i];
		/* the NUL case carries its length past the NUL */
		size_t len = strlen(b->text);
		if (strstr(b->want, "NUL byte"))
			len += 2;
		write_file(b->text, len);
		c = before;
		char err[512] = "";
		kp_err rc = kp_config_load(&c, cfgpath, err, sizeof(err));
		char want[600];
		snprintf(want, sizeof(want), "%s%s", cfgpath, b->want);
		if (rc != b->rc || strcmp(err, want) != 0)
			fail_msg("case %zu: rc %d err \"%s\"\n  want rc %d err \"%s\"", i, rc, err, b->rc, want);
		assert_memory_equal(&c, &before, sizeof(c));
	}
}

/* Pairs that are fine only together: the rules compare the final values. */
static void test_cross_field_ok_when_both_change(void **state)
{
	(void)state;
	kp_config c;
	char err[256] = "";
	assert_int_equal(load_text("[payment]\norder_ttl = 30min\npay_margin = 10min\n"
				   "query_every = 2min\npay_window = 2min\n"
				   "query_backoff_min = 1h\nquery_backoff_max = 1h\n"
				   "[host]\nreconnect_min = 1min\nreconnect_max = 1min\n",
				   &c, err, sizeof(err)),
			 KP_OK);
	assert_int_equal(c.payment.pay_margin_ms, 600000);
	assert_int_equal(c.host.reconnect_max_ms, 60000);
}

static void test_unreadable_file(void **state)
{
	(void)state;
	kp_config c, before;
	kp_config_defaults(&before);
	c = before;
	char err[512], path[400], want[600];

	snprintf(path, sizeof(path), "%s/missing.ini", tmpdir);
	assert_int_equal(kp_config_load(&c, path, err, sizeof(err)), KP_ERR_IO);
	snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
	assert_string_equal(err, want);

	assert_int_equal(kp_config_load(&c, tmpdir, err, sizeof(err)), KP_ERR_IO);
	snprintf(want, sizeof(want), "%s: cannot read: Is a directory", tmpdir);
	assert_string_equal(err, want);
	assert_memory_equal(&c, &before, sizeof(c));

	assert_int_equal(kp_config_load(&c, NULL, err, sizeof(err)), KP_ERR_INVALID);
	assert_int_equal(kp_config_load(NULL, cfgpath, NULL, 0), KP_ERR_INVALID);
}

static void test_file_too_large(void **state)
{
	(void)state;
	size_t len = KP_CONFIG_FILE_MAX + 1;
	char *big = malloc(len);
	assert_non_null(big);
	memset(big, '\n', len);
	write_file(big, len);
	free(big);
	kp_config c;
	char err[512], want[600];
	assert_int_equal(kp_config_load(&c, cfgpath, err, sizeof(err)), KP_ERR_CONFIG);
	snprintf(want, sizeof(want), "%s: file larger than %d bytes", cfgpath, KP_CONFIG_FILE_MAX);
	assert_string_equal(err, want);
}

static void test_error_buffer_bounds(void **state)
{
	(void)state;
	kp_config c;
	char small[8];
	memset(small, 'x', sizeof(small));
	assert_int_equal(load_text("[nope]\n", &c, small, sizeof(small)), KP_ERR_CONFIG);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_int_equal(load_text("[nope]\n", &c, NULL, 0), KP_ERR_CONFIG);
}

/* ---- need-host validation ---- */

static void test_validate_need_host(void **state)
{
	(void)state;
	static const char full[] = "[host]\naddress = pay.example:8443\nca = /ca.pem\ncert = /d.pem\n"
				   "key = /d.key\n[device]\nid = kiosk-1\n";
	kp_config c;
	char err[256];
	assert_int_equal(load_text(full, &c, err, sizeof(err)), KP_OK);
	assert_int_equal(kp_config_validate(&c, KP_CONFIG_NEED_HOST, err, sizeof(err)), KP_OK);

	static const struct {
		size_t off;
		const char *want;
	} missing[] = {
		{OFF(host.address), "[host] address: not set (required to reach the payment host)"},
		{OFF(host.ca), "[host] ca: not set (required to reach the payment host)"},
		{OFF(host.cert), "[host] cert: not set (required to reach the payment host)"},
		{OFF(host.key), "[host] key: not set (required to reach the payment host)"},
		{OFF(device.id), "[device] id: not set (required to reach the payment host)"},
	};
	for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
		kp_config m = c;
		((char *)&m + missing[i].off)[0] = '\0';
		assert_int_equal(kp_config_validate(&m, 0, err, sizeof(err)), KP_OK);
		assert_int_equal(kp_config_validate(&m, KP_CONFIG_NEED_HOST, err, sizeof(err)), KP_ERR_CONFIG);
		char want[600];
		snprintf(want, sizeof(want), "%s: %s", cfgpath, missing[i].want);
		assert_string_equal(err, want);
	}

	/* values a program set directly are checked too */
	kp_config m = c;
	m.payment.max_amount = 0;
	assert_int_equal(kp_config_validate(&m, 0, err, sizeof(err)), KP_ERR_CONFIG);
	assert_non_null(strstr(err, "[payment] max_amount: must be between 1 and"));
	m = c;
	m.journal.path[0] = '\0';
	assert_int_equal(kp_config_validate(&m, 0, err, sizeof(err)), KP_ERR_CONFIG);
	assert_non_null(strstr(err, "[journal] path: must not be empty"));
	m = c;
	m.log.level = (kp_log_level)9;
	assert_int_equal(kp_config_validate(&m, 0, err, sizeof(err)), KP_ERR_CONFIG);
	assert_non_null(strstr(err, "[log] level: want error, warn, info or debug"));
	assert_int_equal(kp_config_validate(NULL, 0, err, sizeof(err)), KP_ERR_INVALID);
}

/* ---- dump ---- */

static void dump_to_string(const kp_config *c, char *buf, size_t cap)
{
	FILE *f = fmemopen(buf, cap, "w");
	assert_non_null(f);
	kp_config_dump(c, f);
	assert_int_equal(fclose(f), 0);
}

static void test_dump_defaults(void **state)
{
	(void)state;
	kp_config c;
	kp_config_defaults(&c);
	char buf[4096];
	dump_to_string(&c, buf, sizeof(buf));
	static const char *const lines[] = {
		"; kioskpayd effective configuration (defaults)\n",
		"\n[journal]\npath = /var/lib/kioskpay/journal.db\n",
		"\n[api]\nlisten = 127.0.0.1:5683\nmax_payload = 1024\n",
		"; address = (not set)\n",
		"request_timeout = 10s\nping_idle = 15s\nreconnect_min = 500ms\nreconnect_max = 30s\n",
		"\n[device]\n; id = (not set)\n",
		"currency = EUR\nmax_amount = 10000\norder_ttl = 5min\npay_margin = 1min\n"
		"query_every = 5s\npay_window = 1min\ngive_up_after = 24h\nquery_backoff_min = 30s\n"
		"query_backoff_max = 10min\nrefund_retry = 5s\nrefund_retry_max = 10min\n"
		"power_cut_policy = refund\n",
		"\n[log]\nlevel = info\n",
		"\n[mdb]\ndevice = none\nframing = parity\nbaud = 9600\npatience = 1min\nsession_idle = 1min\n",
		"\n[gpio]\nchip = none\npower_fail = none\nvend_ok = none\nvend_fail = none\ndebounce = 10ms\n",
		"\n[watchdog]\ndevice = none\ntimeout = 15s\n",
	};
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		if (!strstr(buf, lines[i]))
			fail_msg("dump lacks \"%s\":\n%s", lines[i], buf);
}

static void test_dump_reads_back(void **state)
{
	(void)state;
	kp_config c, back;
	char err[256];
	assert_int_equal(load_text("[journal]\npath = /data/j.db\n[api]\nlisten = [::1]:7000\nmax_payload = 2048\n"
				   "[host]\naddress = h:1\nserver_name = h.example\nca = /c\ncert = /d\nkey = /k\n"
				   "request_timeout = 1500ms\nreconnect_min = 2s\n[device]\nid = K-9\n"
				   "[payment]\ncurrency = CHF\nmax_amount = 123456\norder_ttl = 90min\n"
				   "pay_margin = 0\ngive_up_after = 48h\npower_cut_policy = hold\n"
				   "[log]\nlevel = debug\n[mdb]\ndevice = /dev/ttyUSB0\nframing = pair\nbaud = 57600\n"
				   "patience = 45s\n[gpio]\nchip = /dev/gpiochip2\npower_fail = 6 active_low\n"
				   "[watchdog]\ndevice = /dev/watchdog\ntimeout = 1min\n",
				   &c, err, sizeof(err)),
			 KP_OK);
	char buf[4096];
	dump_to_string(&c, buf, sizeof(buf));
	assert_int_equal(load_text(buf, &back, err, sizeof(err)), KP_OK);
	assert_memory_equal(&back, &c, sizeof(c));

	kp_config_defaults(&c);
	dump_to_string(&c, buf, sizeof(buf));
	assert_int_equal(load_text(buf, &back, err, sizeof(err)), KP_OK);
	memset(back.source, 0, sizeof(back.source));
	assert_memory_equal(&back, &c, sizeof(c));
	/* A value that fills its line (198 characters, inih's limit) written
	 * without blanks still reads back: the dump must not make the line
	 * longer (found by fuzz_config: "server_name =" + 185 bytes). */
	char text[400], value[200];
	const char *const forms[] = {"server_name=", "server_name =", "server_name= ", "ca= "};
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		size_t n = 198 - strlen(forms[i]);
		memset(value, 'h', n);
		value[n] = '\0';
		char line[220];
		snprintf(line, sizeof(line), "%s%s", forms[i], value);
		assert_int_equal(strlen(line), 198);
		snprintf(text, sizeof(text), "[host]\n%s\n", line);
		if (n > KP_CONFIG_STR_MAX) {
			assert_int_equal(load_text(text, &c, err, sizeof(err)), KP_ERR_CONFIG);
			assert_non_null(strstr(err, "value too long"));
			continue;
		}
		assert_int_equal(load_text(text, &c, err, sizeof(err)), KP_OK);
		dump_to_string(&c, buf, sizeof(buf));
		assert_int_equal(load_text(buf, &back, err, sizeof(err)), KP_OK);
		memset(back.source, 0, sizeof(back.source));
		memset(c.source, 0, sizeof(c.source));
		assert_memory_equal(&back, &c, sizeof(c));
	}
}

/* ---- helpers ---- */

static void test_parse_duration(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		kp_err rc;
		int64_t ms;
	} cases[] = {
		{"0", KP_OK, 0},
		{"500ms", KP_OK, 500},
		{"5s", KP_OK, 5000},
		{"5", KP_OK, 5000},
		{"10min", KP_OK, 600000},
		{"24h", KP_OK, 86400000},
		{"2562047788015h", KP_OK, 2562047788015LL * 3600000},
		{"2562047788016h", KP_ERR_INVALID, -1},
		{"9223372036854775807ms", KP_OK, INT64_MAX},
		{"9223372036854775808ms", KP_ERR_INVALID, -1},
		{"", KP_ERR_INVALID, -1},
		{"-1s", KP_ERR_INVALID, -1},
		{"5x", KP_ERR_INVALID, -1},
		{"5m", KP_ERR_INVALID, -1},
		{"5sec", KP_ERR_INVALID, -1},
		{" 5s", KP_ERR_INVALID, -1},
		{"5s ", KP_ERR_INVALID, -1},
		{"0x10", KP_ERR_INVALID, -1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int64_t ms = -1;
		assert_int_equal(kp_config_parse_duration(cases[i].text, &ms), cases[i].rc);
		assert_int_equal(ms, cases[i].ms);
	}
	int64_t ms = 0;
	assert_int_equal(kp_config_parse_duration(NULL, &ms), KP_ERR_INVALID);
}

static void test_split_hostport(void **state)
{
	(void)state;
	static const struct {
		const char *addr;
		kp_err rc;
		const char *host;
		uint16_t port;
	} cases[] = {
		{"127.0.0.1:5683", KP_OK, "127.0.0.1", 5683},
		{"pay.example.com:1", KP_OK, "pay.example.com", 1},
		{"h:65535", KP_OK, "h", 65535},
		{"[::1]:443", KP_OK, "::1", 443},
		{"[fe80::1%eth0]:443", KP_OK, "fe80::1%eth0", 443},
		{"h:65536", KP_ERR_INVALID, "", 0},
		{"h:0", KP_ERR_INVALID, "", 0},
		{"h:", KP_ERR_INVALID, "", 0},
		{"h:80x", KP_ERR_INVALID, "", 0},
		{"h:-1", KP_ERR_INVALID, "", 0},
		{"h", KP_ERR_INVALID, "", 0},
		{":80", KP_ERR_INVALID, "", 0},
		{"::1:80", KP_ERR_INVALID, "", 0},
		{"[::1]80", KP_ERR_INVALID, "", 0},
		{"[]:80", KP_ERR_INVALID, "", 0},
		{"[::1:80", KP_ERR_INVALID, "", 0},
		{"averyveryverylonghostname:80", KP_ERR_TOO_BIG, "", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char host[16] = "";
		uint16_t port = 0;
		assert_int_equal(kp_config_split_hostport(cases[i].addr, host, sizeof(host), &port), cases[i].rc);
		assert_string_equal(host, cases[i].host);
		assert_int_equal(port, cases[i].port);
	}
}

static void test_host_server_name(void **state)
{
	(void)state;
	kp_config c;
	kp_config_defaults(&c);
	char name[32];
	assert_int_equal(kp_config_host_server_name(&c, name, sizeof(name)), KP_ERR_CONFIG);
	snprintf(c.host.address, sizeof(c.host.address), "pay.example.com:8443");
	assert_int_equal(kp_config_host_server_name(&c, name, sizeof(name)), KP_OK);
	assert_string_equal(name, "pay.example.com");
	snprintf(c.host.server_name, sizeof(c.host.server_name), "gw.example.net");
	assert_int_equal(kp_config_host_server_name(&c, name, sizeof(name)), KP_OK);
	assert_string_equal(name, "gw.example.net");
	assert_int_equal(kp_config_host_server_name(&c, name, 4), KP_ERR_TOO_BIG);
}

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(kp_config_policy_name(KP_POWER_CUT_HOLD), "hold");
	assert_string_equal(kp_config_policy_name((kp_power_cut_policy)7), "?");
	assert_string_equal(kp_config_log_level_name(KP_LOG_WARN), "warn");
	assert_string_equal(kp_config_log_level_name((kp_log_level)-1), "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_empty_and_comment_files_give_defaults),
		cmocka_unit_test(test_good_numbers),
		cmocka_unit_test(test_good_strings),
		cmocka_unit_test(test_good_lines),
		cmocka_unit_test(test_good_names),
		cmocka_unit_test(test_bad_files),
		cmocka_unit_test(test_cross_field_ok_when_both_change),
		cmocka_unit_test(test_unreadable_file),
		cmocka_unit_test(test_file_too_large),
		cmocka_unit_test(test_error_buffer_bounds),
		cmocka_unit_test(test_validate_need_host),
		cmocka_unit_test(test_dump_defaults),
		cmocka_unit_test(test_dump_reads_back),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_split_hostport),
		cmocka_unit_test(test_host_server_name),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
