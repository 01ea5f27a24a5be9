/* harness.h — end-to-end test world: a dev PKI, the real kp-hostsim and the
 * real kioskpayd as separate processes on loopback, coap-client and kioskctl
 * as outside clients, and read-only looks at the journal and the ledger. */
#ifndef KP_E2E_HARNESS_H
#define KP_E2E_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

typedef struct kp_world {
	char dir[128];
	char pki[192];
	char journal[192];
	char ledger[192];
	char config[192];
	char daemon_log[192];
	char hostsim_log[192];
	pid_t hostsim;
	pid_t daemon;
	int host_port;
	int control_port;
	int api_port;
} kp_world;

/* Make a fresh temp dir and PKI. 0 on success. */
int w_setup(kp_world *w, const char *name);
/* Stop everything started, remove the dir (kept if KP_KEEP=1 or on failure). */
void w_teardown(kp_world *w);

/* Start kp-hostsim (extra: more command-line words, may be NULL). */
int w_start_hostsim(kp_world *w, const char *extra);
void w_stop_hostsim(kp_world *w);
/* Write the config (extra_ini appended to [payment], may be NULL), start
 * kioskpayd and wait until /health answers and the host link is up. */
int w_start_daemon(kp_world *w, const char *extra_payment_ini);
/* The same with more INI text after [log] (whole sections, e.g. "[mdb]\n
 * device = ...\n"; may be NULL). */
int w_start_daemon_ex(kp_world *w, const char *extra_payment_ini, const char *extra_sections);
/* Send sig to kioskpayd and reap it; returns its exit status or -signal. */
int w_stop_daemon(kp_world *w, int sig);

/* Run coap-client: method get|post, path like "orders", payload or NULL.
 * Returns the CoAP code as 201, 404, ... (2xx reported as 200 when
 * coap-client does not print it) and the body in out. -1 if it did not run. */
int w_coap(kp_world *w, const char *method, const char *path, const char *payload, char *out,
	   size_t cap);
/* Run kioskctl --json --api 127.0.0.1:PORT ARGS; returns its exit code and
 * its stdout in out. */
int w_ctl(kp_world *w, const char *args, char *out, size_t cap);
/* One command to the simulator's control port; the answer line in out. */
int w_sim(kp_world *w, const char *json_line, char *out, size_t cap);
/* The simulator's ledger as JSON (caller frees). */
cJSON *w_ledger(kp_world *w);

/* Poll GET /orders/{id} until its status is want (or timeout); returns the
 * last order JSON (caller frees) or NULL. */
cJSON *w_wait_order(kp_world *w, const char *order_id, const char *want, int timeout_ms);
/* Poll until fn(arg) is true or timeout; true if it became true. */
bool w_wait(bool (*fn)(kp_world *w, void *arg), kp_world *w, void *arg, int timeout_ms);

/* SQL on the journal file (read-only, sqlite3 C API): the first column of the
 * first row as integer, or -1. */
int64_t w_sql_int(kp_world *w, const char *sql);
/* The same on the host simulator's ledger file. */
int64_t w_ledger_int(kp_world *w, const char *sql);
/* kioskctl journal check on the journal; its exit code. */
int w_journal_check(kp_world *w);

#endif
