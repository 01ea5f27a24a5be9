/* test_tls_policy.c — the TLS policy of docs/security.md, tested against peers
 * that are not ours. The kiosk's link (kp_hostlink) against `openssl
 * s_server`: it completes a handshake only with TLS 1.2, one of its three
 * ECDHE-ECDSA AEAD suites, a host certificate from the pinned CA, valid now,
 * for the configured name, and a host that asks for the device certificate;
 * TLS 1.0/1.1/1.3, a CBC suite, another CA, a self-signed, expired or
 * wrongly named certificate and a host that asks for no client certificate
 * are refused. The simulator (kp-hostsim) against `openssl s_client`: a
 * client without a certificate, with one from another CA or self-signed, or
 * speaking TLS 1.1 or 1.3 is refused. One row per case; the figure is
 * "refused / tried" with one good handshake on each side as control. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ssl.h>
#include <mbedtls/x509.h>

#include "kp_free_port.h"
#include "hostlink.h"

static char dir[128];
static char pki[192];
static unsigned tried, refused;

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void msleep(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static bool file_has(const char *path, const char *text)
{
	char buf[65536];
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, text) != NULL;
}

/* Run a shell command line; its exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int group_setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/kp-tls-policy-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(pki, sizeof(pki), "%s/pki", dir);
	if (sh("%s %s >/dev/null 2>&1", KP_BIN_PKI, pki) != 0)
		return -1;
	/* self-signed certificates for a host and a device, with keys of the right kind */
	return sh("cd %s && openssl req -x509 -key host.key -subj /CN=localhost -addext subjectAltName=DNS:localhost "
		  "-days 30 -out host-self.crt 2>/dev/null && cp host.key host-self.key && "
		  "openssl req -x509 -key device.key -subj /CN=kiosk-dev-1 -days 30 -out device-self.crt 2>/dev/null && "
		  "cp device.key device-self.key",
		  pki) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	fprintf(stderr, "TLS policy: %u of %u foreign-peer cases refused as they must be (plus 2 good handshakes)\n",
		refused, tried);
	if (!getenv("KP_KEEP"))
		sh("rm -rf '%s'", dir);
	return 0;
}

/* ---------- the kiosk's link against openssl s_server ---------- */

struct host_case {
	const char *name;
	const char *cert;        /* the host certificate s_server shows (pki basename) */
	const char *args[6];     /* more s_server arguments */
	bool accept;             /* the link must complete the handshake */
	int error;               /* else its last_tls_error, if not 0 */
};

static const struct host_case host_cases[] = {
	{"good host (control)", "host", {"-Verify", "1"}, true, 0},
	{"TLS 1.0 only", "host", {"-Verify", "1", "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"}, false, 0},
	{"TLS 1.1 only", "host", {"-Verify", "1", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"}, false, 0},
	{"TLS 1.3 only", "host", {"-Verify", "1", "-tls1_3"}, false, 0},
	{"TLS 1.2, CBC suite only", "host", {"-Verify", "1", "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"},
	 false, 0},
	{"host cert from another CA", "host-other-ca", {"-Verify", "1"},
	 false, MBEDTLS_ERR_X509_CERT_VERIFY_FAILED},
	{"self-signed host cert", "host-self", {"-Verify", "1"},
	 false, MBEDTLS_ERR_X509_CERT_VERIFY_FAILED},
	{"expired host cert", "host-expired", {"-Verify", "1"},
	 false, MBEDTLS_ERR_X509_CERT_VERIFY_FAILED},
	{"host cert for another name", "host-wrong-name", {"-Verify", "1"},
	 false, MBEDTLS_ERR_X509_CERT_VERIFY_FAILED},
	{"host asks for no client certificate", "host", {NULL}, false, MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE},
};

/* Start a program with argv, stdout and stderr to log, stdin a pipe that the
 * caller keeps open (*in_fd); its pid. */
static pid_t spawn(const char *const *argv, const char *log, int *in_fd)
{
	int in[2];
	assert_int_equal(pipe(in), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(in[0], 0);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		close(in[1]);
		if (chdir(pki) != 0)
			_exit(126);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(in[0]);
	*in_fd = in[1];
	return pid;
}

static void stop(pid_t pid, int in_fd)
{
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	close(in_fd);
}

struct link_run {
	bool handshake_done;
	bool failed;
	int tls_error;
};

static void quiet_log(void *ctx, kp_log_level level, const char *msg)
{
	(void)ctx;
	(void)level;
	(void)msg;
}

/* Connect the link once: did it complete the handshake (it then sends hello
 * and waits for hello_ok, which s_server never sends), or refuse? */
static struct link_run run_link(int port)
{
	char addr[64], ca[256], crt[256], key[256];
	struct link_run r = {false, false, 0};
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
	snprintf(crt, sizeof(crt), "%s/device.crt", pki);
	snprintf(key, sizeof(key), "%s/device.key", pki);
	kp_env env;
	kp_env_init_system(&env);
	env.log = quiet_log;
	kp_hostlink_config cfg = {.address = addr, .server_name = "localhost", .ca_file = ca, .cert_file = crt,
				  .key_file = key, .device_id = "kiosk-dev-1", .fw_version = "test",
				  .backoff_min_ms = 60000, .backoff_max_ms = 60000, .connect_timeout_ms = 5000};
	kp_hostlink *l = NULL;
	assert_int_equal(kp_hostlink_new(&l, &cfg, &env, NULL, NULL, NULL), KP_OK);
	for (int64_t end = mono_ms() + 8000; mono_ms() < end;) {
		kp_hostlink_tick(l);
		struct pollfd pfd;
		kp_hostlink_pollfd(l, &pfd);
		if (pfd.fd >= 0 && poll(&pfd, 1, 20) > 0)
			kp_hostlink_process(l, pfd.revents);
		else if (pfd.fd < 0)
			msleep(10);
		kp_hostlink_stats st;
		kp_hostlink_stats_get(l, &st);
		r.handshake_done = st.full_handshakes + st.resumed_handshakes > 0;
		r.failed = st.tls_failures > 0 || st.connects_failed > 0;
		r.tls_error = st.last_tls_error;
		if (r.handshake_done || r.failed)
			break;
	}
	kp_hostlink_free(l);
	return r;
}

static void test_link_against_foreign_hosts(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(host_cases) / sizeof(host_cases[0]); i++) {
		const struct host_case *c = &host_cases[i];
		int port = kp_free_port(false);
		char log[256], accept[32], crt[64], key[64];
		snprintf(log, sizeof(log), "%s/s_server-%zu.log", dir, i);
		snprintf(accept, sizeof(accept), "127.0.0.1:%d", port);
		snprintf(crt, sizeof(crt), "%s.crt", c->cert);
		snprintf(key, sizeof(key), "%s.key", c->cert);
		const char *argv[20] = {"openssl", "s_server", "-accept", accept, "-cert", crt, "-key", key,
					"-CAfile", "ca.crt"};
		size_t n = 10;
		for (size_t k = 0; k < 6 && c->args[k]; k++)
			argv[n++] = c->args[k];
		int in_fd;
		pid_t pid = spawn(argv, log, &in_fd);
		for (int64_t end = mono_ms() + 5000; !file_has(log, "ACCEPT") && mono_ms() < end;)
			msleep(20);
		if (!file_has(log, "ACCEPT")) {
			stop(pid, in_fd);
			fail_msg("%s: s_server did not start (%s)", c->name, log);
		}
		struct link_run r = run_link(port);
		stop(pid, in_fd);
		if (c->accept != r.handshake_done)
			fail_msg("%s: the link %s the handshake (s_server log %s)", c->name,
				 r.handshake_done ? "completed" : "did not complete", log);
		if (c->error && r.tls_error != c->error)
			fail_msg("%s: refused with -0x%04x, want -0x%04x", c->name, (unsigned)-r.tls_error,
				 (unsigned)-c->error);
		if (!c->accept) {
			tried++;
			refused += r.failed && !r.handshake_done;
		}
	}
}

/* ---------- kp-hostsim against openssl s_client ---------- */

struct client_case {
	const char *name;
	const char *args;        /* s_client arguments (certificate, version) */
	bool accept;
};

static const struct client_case client_cases[] = {
	{"good device (control)", "-cert device.crt -key device.key", true},
	{"no client certificate", "", false},
	{"device cert from another CA", "-cert device-other-ca.crt -key device-other-ca.key", false},
	{"self-signed device cert", "-cert device-self.crt -key device-self.key", false},
	{"TLS 1.1 client", "-cert device.crt -key device.key -tls1_1 -cipher DEFAULT:@SECLEVEL=0", false},
	{"TLS 1.3 client", "-cert device.crt -key device.key -tls1_3", false},
};

static void test_simulator_against_foreign_clients(void **state)
{
	(void)state;
	int port = kp_free_port(false), control = kp_free_port(false);
	char log[256], listen[32], ctl[32], ledger[256];
	snprintf(log, sizeof(log), "%s/hostsim.log", dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(ctl, sizeof(ctl), "127.0.0.1:%d", control);
	snprintf(ledger, sizeof(ledger), "%s/ledger.db", dir);
	const char *argv[] = {KP_BIN_HOSTSIM, "--listen", listen, "--control", ctl, "--ledger", ledger, "--ca",
			      "ca.crt", "--cert", "host.crt", "--key", "host.key", NULL};
	int in_fd;
	pid_t pid = spawn(argv, log, &in_fd);
	for (int64_t end = mono_ms() + 5000; !file_has(log, "listening on") && mono_ms() < end;)
		msleep(20);
	if (!file_has(log, "listening on")) {
		stop(pid, in_fd);
		fail_msg("kp-hostsim did not start (%s)", log);
	}
	for (size_t i = 0; i < sizeof(client_cases) / sizeof(client_cases[0]); i++) {
		const struct client_case *c = &client_cases[i];
		char out[256];
		snprintf(out, sizeof(out), "%s/s_client-%zu.log", dir, i);
		/* -brief prints CONNECTION ESTABLISHED once the handshake completed;
		 * the sleep keeps the connection open for the server's verdict */
		sh("cd %s && (sleep 1 | timeout 10 openssl s_client -brief -connect 127.0.0.1:%d -servername localhost "
		   "-CAfile ca.crt -verify_return_error %s > %s 2>&1)",
		   pki, port, c->args, out);
		bool established = file_has(out, "CONNECTION ESTABLISHED");
		if (c->accept != established) {
			stop(pid, in_fd);
			fail_msg("%s: the simulator %s it (s_client log %s)", c->name,
				 established ? "accepted" : "refused", out);
		}
		if (!c->accept) {
			tried++;
			refused += !established;
		}
	}
	stop(pid, in_fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_link_against_foreign_hosts),
		cmocka_unit_test(test_simulator_against_foreign_clients),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
