/* test_pki.c — runs the real kp-pki and checks what a TLS peer would see: each
 * certificate verifies (or fails for the intended reason) against its CA and
 * name, keys match certificates, file modes, idempotency and bad arguments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#ifndef KP_PKI_EXE
#error "KP_PKI_EXE must name the kp-pki executable"
#endif

extern char **environ;

struct fixture {
	char root[256];       /* mkdtemp dir */
	char dir[PATH_MAX];   /* root/pki: made by kp-pki */
};

static int run_pki(const char *const *args)
{
	char *argv[8];
	size_t n = 0;
	argv[n++] = (char *)KP_PKI_EXE;
	for (; args[n - 1] != NULL && n < 7; n++)
		argv[n] = (char *)args[n - 1];
	argv[n] = NULL;
	pid_t pid;
	if (posix_spawn(&pid, KP_PKI_EXE, NULL, NULL, argv, environ) != 0)
		return -1;
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static void path_of(const struct fixture *f, const char *name, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s/%s", f->dir, name);
	assert_true(n > 0 && (size_t)n < cap);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return -1;
	snprintf(f->root, sizeof(f->root), "/tmp/kp-test-pki-XXXXXX");
	if (mkdtemp(f->root) == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "%s/pki", f->root);
	const char *args[] = {f->dir, NULL};
	if (run_pki(args) != 0)
		return -1;
	*state = f;
	return 0;
}

static void rm_tree(const char *dir)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		char p[PATH_MAX];
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		struct stat st;
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
			rm_tree(p);
		else
			unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	rm_tree(f->root);
	free(f);
	return 0;
}

/* Verify crt against ca for name; returns the mbedtls verify flags (0 = good). */
static uint32_t verify(const struct fixture *f, const char *crt_name, const char *ca_name, const char *cn)
{
	char p[PATH_MAX];
	mbedtls_x509_crt crt, ca;
	mbedtls_x509_crt_init(&crt);
	mbedtls_x509_crt_init(&ca);
	path_of(f, crt_name, p, sizeof(p));
	assert_int_equal(mbedtls_x509_crt_parse_file(&crt, p), 0);
	path_of(f, ca_name, p, sizeof(p));
	assert_int_equal(mbedtls_x509_crt_parse_file(&ca, p), 0);
	uint32_t flags = 0;
	(void)mbedtls_x509_crt_verify(&crt, &ca, NULL, cn, &flags, NULL, NULL);
	mbedtls_x509_crt_free(&crt);
	mbedtls_x509_crt_free(&ca);
	return flags;
}

static void test_chains(void **state)
{
	const struct fixture *f = *state;
	static const struct {
		const char *crt, *ca, *cn;
		uint32_t flags;
	} cases[] = {
		{"host.crt", "ca.crt", "localhost", 0},
		{"device.crt", "ca.crt", "kiosk-dev-1", 0},
		{"device-2.crt", "ca.crt", "kiosk-dev-2", 0},
		{"ca.crt", "ca.crt", NULL, 0},
		{"other-ca.crt", "other-ca.crt", NULL, 0},
		{"host-other-ca.crt", "other-ca.crt", "localhost", 0},
		{"device-other-ca.crt", "other-ca.crt", NULL, 0},
		{"host-other-ca.crt", "ca.crt", "localhost", MBEDTLS_X509_BADCERT_NOT_TRUSTED},
		{"device-other-ca.crt", "ca.crt", NULL, MBEDTLS_X509_BADCERT_NOT_TRUSTED},
		{"host.crt", "other-ca.crt", "localhost", MBEDTLS_X509_BADCERT_NOT_TRUSTED},
		{"host-expired.crt", "ca.crt", "localhost", MBEDTLS_X509_BADCERT_EXPIRED},
		{"host-wrong-name.crt", "ca.crt", "localhost", MBEDTLS_X509_BADCERT_CN_MISMATCH},
		{"host-wrong-name.crt", "ca.crt", "other.example", 0},
		{"host.crt", "ca.crt", "other.example", MBEDTLS_X509_BADCERT_CN_MISMATCH},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint32_t got = verify(f, cases[i].crt, cases[i].ca, cases[i].cn);
		if (got != cases[i].flags)
			fail_msg("%s against %s as %s: flags 0x%x, want 0x%x", cases[i].crt, cases[i].ca,
				 cases[i].cn ? cases[i].cn : "-", got, cases[i].flags);
	}
}

static void test_keys_match_and_modes(void **state)
{
	const struct fixture *f = *state;
	static const char *const names[] = {"ca", "host", "device", "device-2", "other-ca", "host-other-ca",
					    "host-expired", "host-wrong-name", "device-other-ca"};
	struct stat st;
	assert_int_equal(stat(f->dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char crt_p[PATH_MAX], key_p[PATH_MAX], n[64];
		snprintf(n, sizeof(n), "%s.crt", names[i]);
		path_of(f, n, crt_p, sizeof(crt_p));
		snprintf(n, sizeof(n), "%s.key", names[i]);
		path_of(f, n, key_p, sizeof(key_p));
		assert_int_equal(stat(key_p, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0600);

		mbedtls_x509_crt crt;
		mbedtls_pk_context key;
		mbedtls_x509_crt_init(&crt);
		mbedtls_pk_init(&key);
		assert_int_equal(mbedtls_x509_crt_parse_file(&crt, crt_p), 0);
		assert_int_equal(mbedtls_pk_parse_keyfile(&key, key_p, NULL), 0);
		assert_int_equal(mbedtls_pk_get_type(&key), MBEDTLS_PK_ECKEY);
		assert_int_equal(mbedtls_pk_ec(key)->grp.id, MBEDTLS_ECP_DP_SECP256R1);
		assert_int_equal(mbedtls_pk_check_pair(&crt.pk, &key), 0);
		mbedtls_pk_free(&key);
		mbedtls_x509_crt_free(&crt);
	}
	/* No temp or pending files left behind. */
	DIR *d = opendir(f->dir);
	assert_non_null(d);
	struct dirent *e;
	int files = 0;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		assert_null(strstr(e->d_name, "pending"));
		files++;
	}
	closedir(d);
	assert_int_equal(files, 18);
}

static void test_host_cert_san_and_usage(void **state)
{
	const struct fixture *f = *state;
	char p[PATH_MAX];
	mbedtls_x509_crt crt;
	mbedtls_x509_crt_init(&crt);
	path_of(f, "host.crt", p, sizeof(p));
	assert_int_equal(mbedtls_x509_crt_parse_file(&crt, p), 0);
	assert_true(crt.ext_types & MBEDTLS_X509_EXT_SUBJECT_ALT_NAME);
	/* First SAN entry is dNSName localhost; a second one is the loopback IP. */
	assert_int_equal(crt.subject_alt_names.buf.tag, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2);
	assert_int_equal(crt.subject_alt_names.buf.len, 9);
	assert_memory_equal(crt.subject_alt_names.buf.p, "localhost", 9);
	assert_non_null(crt.subject_alt_names.next);
	assert_int_equal(crt.subject_alt_names.next->buf.len, 4);
	assert_memory_equal(crt.subject_alt_names.next->buf.p, "\x7f\x00\x00\x01", 4);
	assert_int_equal(mbedtls_x509_crt_check_extended_key_usage(&crt, MBEDTLS_OID_SERVER_AUTH,
			 MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)), 0);
	assert_int_not_equal(mbedtls_x509_crt_check_extended_key_usage(&crt, MBEDTLS_OID_CLIENT_AUTH,
			     MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)), 0);
	assert_int_equal(crt.ca_istrue, 0);
	mbedtls_x509_crt_free(&crt);

	path_of(f, "device.crt", p, sizeof(p));
	mbedtls_x509_crt_init(&crt);
	assert_int_equal(mbedtls_x509_crt_parse_file(&crt, p), 0);
	assert_int_equal(mbedtls_x509_crt_check_extended_key_usage(&crt, MBEDTLS_OID_CLIENT_AUTH,
			 MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)), 0);
	mbedtls_x509_crt_free(&crt);

	path_of(f, "ca.crt", p, sizeof(p));
	mbedtls_x509_crt_init(&crt);
	assert_int_equal(mbedtls_x509_crt_parse_file(&crt, p), 0);
	assert_int_equal(crt.ca_istrue, 1);
	mbedtls_x509_crt_free(&crt);
}

static char *slurp(const char *path)
{
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	char *buf = calloc(1, 8192);
	assert_non_null(buf);
	size_t n = fread(buf, 1, 8191, fp);
	fclose(fp);
	assert_true(n > 0);
	return buf;
}

static void test_idempotent_and_force(void **state)
{
	const struct fixture *f = *state;
	char p[PATH_MAX];
	path_of(f, "ca.crt", p, sizeof(p));
	char *before = slurp(p);
	const char *again[] = {f->dir, NULL};
	assert_int_equal(run_pki(again), 0);
	char *same = slurp(p);
	assert_string_equal(before, same);
	const char *force[] = {f->dir, "--force", NULL};
	assert_int_equal(run_pki(force), 0);
	char *fresh = slurp(p);
	assert_string_not_equal(before, fresh);
	/* After --force everything was reissued together: host chains to the new CA. */
	assert_int_equal(verify(f, "host.crt", "ca.crt", "localhost"), 0);
	free(before);
	free(same);
	free(fresh);
}

static void test_custom_names(void **state)
{
	const struct fixture *f = *state;
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/custom", f->root);
	const char *args[] = {dir, "--device-id", "kiosk-42", "--host-name", "pay.example", NULL};
	assert_int_equal(run_pki(args), 0);
	struct fixture g;
	memset(&g, 0, sizeof(g));
	snprintf(g.dir, sizeof(g.dir), "%s", dir);
	assert_int_equal(verify(&g, "device.crt", "ca.crt", "kiosk-42"), 0);
	assert_int_equal(verify(&g, "host.crt", "ca.crt", "pay.example"), 0);
	assert_int_equal(verify(&g, "host.crt", "ca.crt", "localhost"), MBEDTLS_X509_BADCERT_CN_MISMATCH);
}

static void test_bad_arguments(void **state)
{
	const struct fixture *f = *state;
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/bad", f->root);
	static const char *const bad[][4] = {
		{NULL},
		{"--device-id", "a,b", NULL},
		{"--host-name", "x y", NULL},
		{"--bogus", NULL},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *args[6];
		size_t n = 0;
		args[n++] = dir;
		for (size_t j = 0; bad[i][j] != NULL; j++)
			args[n++] = bad[i][j];
		args[n] = NULL;
		if (i == 0)
			args[0] = NULL; /* no DIR at all */
		assert_int_equal(run_pki(args), 2);
	}
	assert_int_equal(access(dir, F_OK), -1);
	/* A DIR that is a file is an error, not a silent success. */
	char file[PATH_MAX];
	path_of(f, "ca.crt", file, sizeof(file));
	const char *args[] = {file, NULL};
	assert_int_equal(run_pki(args), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chains),
		cmocka_unit_test(test_keys_match_and_modes),
		cmocka_unit_test(test_host_cert_san_and_usage),
		cmocka_unit_test(test_custom_names),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_idempotent_and_force),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
