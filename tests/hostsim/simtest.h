/* simtest.h — helpers for tests that drive the real kp-hostsim process: start
 * and stop it, send control commands, and a small blocking mbedtls client that
 * speaks host protocol v1 through the project's codec. Test code only: it
 * favours plainness over the non-blocking care of app/hostlink. */
#ifndef KP_SIMTEST_H
#define KP_SIMTEST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "hostproto.h"
#include "kp_error.h"

#define ST_PATH_MAX 512
#define ST_MAX_QUEUED 128

/* A running kp-hostsim. */
typedef struct st_sim {
	pid_t pid;
	int out_fd;                /* its stdout (ready / stopped lines) */
	uint16_t port;
	uint16_t ctl_port;
} st_sim;

/* Start exe with args (NULL-terminated, without argv[0]); waits up to 10 s for
 * the ready line and parses the ports. stderr is inherited (ctest shows it on
 * failure). KP_ERR_IO if it did not start. */
kp_err st_sim_start(st_sim *sim, const char *exe, const char *const *args) KP_MUST_USE;
/* SIGTERM, wait up to 10 s (then SIGKILL); returns the exit status, -1 if it
 * did not exit by itself, -2 if it did not print "kp-hostsim: stopped". */
int st_sim_stop(st_sim *sim);

/* Send one control command (printf-style JSON) and return the parsed reply
 * (caller frees with cJSON_Delete), NULL on I/O or parse failure. */
cJSON *st_ctl(const st_sim *sim, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same as st_ctl but only says whether the reply had "ok": true. */
bool st_ctl_ok(const st_sim *sim, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef struct st_client_opts {
	const char *ca;            /* PEM paths */
	const char *cert;          /* NULL: present no client certificate */
	const char *key;
	const char *server_name;   /* name to verify; NULL: "localhost" */
	bool allow_tls11;          /* offer TLS 1.1..1.2 (default 1.2 only) */
	mbedtls_ssl_session *session; /* in: resume it if set up; out: saved after the handshake */
} st_client_opts;

typedef struct st_client {
	mbedtls_net_context net;
	mbedtls_ssl_context ssl;
	mbedtls_ssl_config conf;
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	mbedtls_x509_crt ca;
	mbedtls_x509_crt cert;
	mbedtls_pk_context key;
	kp_frame_reader rd;
	int64_t next_id;
	uint8_t buf[16384];
	size_t buf_off, buf_len;
	kp_host_msg queue[ST_MAX_QUEUED];  /* confirms (and stray replies) seen while waiting */
	int queued;
	uint32_t verify_flags;     /* server certificate verify result after connect */
	bool resumed;              /* the handshake resumed the offered session */
} st_client;

/* Connect to 127.0.0.1:port and handshake. Returns 0 or the mbedtls error;
 * call st_client_close in either case. */
int st_client_connect(st_client *c, uint16_t port, const st_client_opts *o);
void st_client_close(st_client *c);
/* Send one message; requests (not ack) get the next id. */
kp_err st_client_send(st_client *c, kp_host_msg *m) KP_MUST_USE;
kp_err st_client_send_raw(st_client *c, const void *data, size_t len) KP_MUST_USE;
/* Next message from the host off the wire (queue not consulted): KP_OK,
 * KP_ERR_TIMEOUT, KP_ERR_DISCONNECTED (EOF or reset: also after a torn frame),
 * KP_ERR_PROTOCOL (a frame the codec refused). */
kp_err st_client_recv(st_client *c, kp_host_msg *out, int timeout_ms) KP_MUST_USE;
/* Send req and wait for its reply (re == id); other messages are queued. */
kp_err st_client_call(st_client *c, kp_host_msg *req, kp_host_msg *rep, int timeout_ms) KP_MUST_USE;
/* hello with device_id; KP_OK only on hello_ok. */
kp_err st_client_hello(st_client *c, const char *device_id) KP_MUST_USE;
/* Next confirm: from the queue, else off the wire. */
kp_err st_client_confirm(st_client *c, kp_host_msg *out, int timeout_ms) KP_MUST_USE;
/* Send ack for seq. */
kp_err st_client_ack(st_client *c, int64_t seq) KP_MUST_USE;

/* Request builders. */
void st_msg_create(kp_host_msg *m, const char *attempt, const char *order, int64_t amount, const char *channel);
void st_msg_attempt(kp_host_msg *m, kp_host_op op, const char *attempt);
void st_msg_refund(kp_host_msg *m, const char *refund, const char *attempt, const char *txn, int64_t amount,
		   const char *reason);

/* Run a command line tool (argv[0] is a path), wait; exit status or -1. */
int st_run(const char *const *argv);
/* mkdtemp under /tmp with prefix; out gets the path. */
bool st_tmpdir(const char *prefix, char *out, size_t cap);
/* rm -r of a directory made by st_tmpdir (one level of subdirectories). */
void st_rmtree(const char *dir);

#endif
