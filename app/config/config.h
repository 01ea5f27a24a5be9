/* config.h — kioskpayd's settings: the INI file of design.md "Config file",
 * parsed with inih into one plain struct with every default filled in. The
 * section and key names are a contract with operators, boards and test
 * harnesses; docs/config.md lists them all. */
#ifndef KP_CONFIG_H
#define KP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kp_env.h"
#include "kp_error.h"

/* Longest path or address value, in bytes, without the NUL. */
#define KP_CONFIG_STR_MAX 191
/* Longest device id (host-protocol.md: ids are 1..64 of [A-Za-z0-9_-]). */
#define KP_CONFIG_ID_MAX 64
/* Largest config file read, in bytes. */
#define KP_CONFIG_FILE_MAX (64 * 1024)

/* What to do with a paid but not yet vended order found after a power cut. */
typedef enum kp_power_cut_policy {
	KP_POWER_CUT_REFUND = 0, /* refund it (the customer is gone) */
	KP_POWER_CUT_HOLD = 1,   /* keep it paid for a person to decide */
} kp_power_cut_policy;

/* One input line of [gpio]: its offset on the chip, or none. */
typedef struct kp_config_line {
	int64_t offset;  /* -1 = not wired */
	bool active_low; /* written "17 active_low" */
} kp_config_line;

/* Every setting. Durations are int64 milliseconds (fields end in _ms);
 * amounts are minor units; strings are NUL-terminated, "" when not set. */
typedef struct kp_config {
	char source[KP_CONFIG_STR_MAX + 1]; /* file it was loaded from; "" = defaults only */
	struct {
		char path[KP_CONFIG_STR_MAX + 1];
	} journal;
	struct {
		char listen[KP_CONFIG_STR_MAX + 1]; /* "host:port" of the CoAP API */
		int64_t max_payload;                /* bytes of one request body */
	} api;
	struct {
		char address[KP_CONFIG_STR_MAX + 1];     /* "host:port" */
		char server_name[KP_CONFIG_STR_MAX + 1]; /* "" = the host part of address */
		char ca[KP_CONFIG_STR_MAX + 1];          /* pinned CA, PEM file */
		char cert[KP_CONFIG_STR_MAX + 1];        /* device certificate, PEM file */
		char key[KP_CONFIG_STR_MAX + 1];         /* device key, PEM file */
		int64_t request_timeout_ms;
		int64_t ping_idle_ms;
		int64_t reconnect_min_ms;
		int64_t reconnect_max_ms;
	} host;
	struct {
		char id[KP_CONFIG_ID_MAX + 1];
	} device;
	struct {
		char currency[4]; /* ISO 4217, three upper-case letters */
		int64_t max_amount;
		int64_t order_ttl_ms;
		int64_t pay_margin_ms;
		int64_t query_every_ms;
		int64_t pay_window_ms;
		int64_t give_up_after_ms;
		int64_t query_backoff_min_ms;
		int64_t query_backoff_max_ms;
		int64_t refund_retry_ms;
		int64_t refund_retry_max_ms;
		kp_power_cut_policy power_cut_policy;
	} payment;
	struct {
		kp_log_level level;
	} log;
	struct {
		char device[KP_CONFIG_STR_MAX + 1]; /* "none", a serial port or pty, or "sim" (in-process VMC) */
		char framing[8];                    /* "parity" (UART) or "pair" (pty, USB bridge) */
		char baud[8];                       /* "9600" .. "115200" */
		int64_t patience_ms;                /* a vend request unpaid this long is denied */
		int64_t session_idle_ms;            /* an idle session is ended after this */
	} mdb;
	struct {
		char chip[KP_CONFIG_STR_MAX + 1];   /* "none", "/dev/gpiochipN" or "sim:PATH" */
		kp_config_line power_fail;
		kp_config_line vend_ok;
		kp_config_line vend_fail;
		int64_t debounce_ms;
	} gpio;
	struct {
		char device[KP_CONFIG_STR_MAX + 1]; /* "none", "/dev/watchdog" or "sim:PATH" */
		int64_t timeout_ms;
	} watchdog;
} kp_config;

/* Flags for kp_config_validate(). */
#define KP_CONFIG_NEED_HOST 1u /* host.address, ca, cert, key and device.id must be set */

/* Fill *cfg with every default (docs/config.md). Cannot fail. */
void kp_config_defaults(kp_config *cfg);

/* Read the INI file at path over the defaults and check it with
 * kp_config_validate(flags 0). On success *out is replaced and KP_OK returned.
 * On failure *out is left untouched and err (if errcap > 0) holds one line:
 * "FILE:LINE: [section] key: why" for a line, "FILE: why" otherwise.
 * Returns KP_ERR_CONFIG for bad content, KP_ERR_IO when the file cannot be
 * read, KP_ERR_INVALID for NULL arguments. */
kp_err kp_config_load(kp_config *out, const char *path, char *err, size_t errcap) KP_MUST_USE;

/* Check the rules between settings (pay_margin < order_ttl, query_every <=
 * pay_window, min <= max of every backoff, [gpio] lines wired to a chip and
 * distinct, no GPIO vend outcome beside MDB, ...) and each value's range; with
 * KP_CONFIG_NEED_HOST also that what the host link needs is set. KP_OK or
 * KP_ERR_CONFIG with "SOURCE: why" in err. */
kp_err kp_config_validate(const kp_config *cfg, unsigned flags, char *err, size_t errcap) KP_MUST_USE;

/* Print the effective config as an INI file that kp_config_load reads back to
 * the same values (unset strings are written as comments). */
void kp_config_dump(const kp_config *cfg, FILE *f);

/* Parse a duration: digits with an optional unit ms, s, min or h (no unit =
 * seconds), e.g. "500ms", "10min". KP_OK and *ms, or KP_ERR_INVALID for an
 * empty, negative, unit-less-but-suffixed or overflowing value; *ms untouched
 * on error. */
kp_err kp_config_parse_duration(const char *text, int64_t *ms) KP_MUST_USE;

/* Split "host:port" or "[v6addr]:port" into host (NUL-terminated, brackets
 * removed) and port 1..65535. KP_ERR_INVALID when malformed, KP_ERR_TOO_BIG
 * when the host does not fit hostcap. */
kp_err kp_config_split_hostport(const char *addr, char *host, size_t hostcap, uint16_t *port) KP_MUST_USE;

/* The name the host's certificate must carry: [host] server_name, or else the
 * host part of [host] address. KP_ERR_CONFIG if neither is set,
 * KP_ERR_TOO_BIG if it does not fit cap. */
kp_err kp_config_host_server_name(const kp_config *cfg, char *out, size_t cap) KP_MUST_USE;

/* "refund"/"hold"; "error"/"warn"/"info"/"debug". Never NULL. */
const char *kp_config_policy_name(kp_power_cut_policy p);
const char *kp_config_log_level_name(kp_log_level level);

#endif
