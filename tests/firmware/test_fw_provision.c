/* test_fw_provision.c — device provisioning with the real kioskfw: key and CSR
 * made on the device (modes 0700/0600), the development CA (tests/pki's kp-pki)
 * signing the CSR, the certificate checks at install (each refusal changes
 * nothing), and `provision show` printing the identity but never the key:
 * every byte any command printed is searched for the key's PEM body and its
 * private scalar. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <cjson/cJSON.h>
#include <mbedtls/ecp.h>
#include <mbedtls/oid.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/x509_csr.h>

#include "fw_crypto.h"
#include "fw_test_util.h"
#include "provision.h"

#define PATHLEN 512
#define DEVICE_ID "kiosk-7"

static struct {
	char root[PATHLEN], pki[PATHLEN], dev[PATHLEN];
	char ca_crt[PATHLEN], ca_key[PATHLEN], other_crt[PATHLEN], other_key[PATHLEN];
	char *printed;   /* everything any command printed */
	size_t printed_len;
} g;

static void pathf(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pathf(char *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out, PATHLEN, fmt, ap);
	va_end(ap);
}

static void keep(const char *s)
{
	size_t n = strlen(s);
	g.printed = realloc(g.printed, g.printed_len + n + 1);
	memcpy(g.printed + g.printed_len, s, n + 1);
	g.printed_len += n;
}

static void run(fwt_run *r, int want, const char *const *args)
{
	fwt_run_tool(r, KIOSKFW_EXE, NULL, args);
	keep(r->out);
	keep(r->err);
	if (r->status != want)
		fail_msg("kioskfw %s %s: exit %d (wanted %d): %s", args[0], args[1], r->status, want, r->err);
}

static unsigned mode_of(const char *dir, const char *name)
{
	char p[PATHLEN];
	struct stat st;
	pathf(p, "%s/%s", dir, name);
	assert_int_equal(stat(p, &st), 0);
	return (unsigned)(st.st_mode & 07777);
}

static void cn_of(const mbedtls_x509_name *dn, char *buf, size_t cap)
{
	buf[0] = 0;
	for (; dn; dn = dn->next)
		if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &dn->oid) == 0)
			snprintf(buf, cap, "%.*s", (int)dn->val.len, (const char *)dn->val.p);
}

static void test_keygen(void **state)
{
	(void)state;
	char p[PATHLEN], cn[80];
	fwt_run r;
	struct stat st;
	const char *kg[] = {"provision", "keygen", "--dir", g.dev, "--device-id", DEVICE_ID, NULL};
	run(&r, 0, kg);
	assert_int_equal(stat(g.dev, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(mode_of(g.dev, "device.key"), 0600);

	/* The CSR names the device and carries the device key's public half. */
	mbedtls_x509_csr csr;
	mbedtls_pk_context key;
	kp_fw_why why;
	mbedtls_x509_csr_init(&csr);
	mbedtls_pk_init(&key);
	pathf(p, "%s/device.csr", g.dev);
	assert_int_equal(mbedtls_x509_csr_parse_file(&csr, p), 0);
	cn_of(&csr.subject, cn, sizeof(cn));
	assert_string_equal(cn, DEVICE_ID);
	pathf(p, "%s/device.key", g.dev);
	assert_int_equal(kp_fw_key_load_private(p, &key, &why), KP_OK);
	assert_int_equal(mbedtls_pk_check_pair(&csr.pk, &key), 0);
	mbedtls_x509_csr_free(&csr);
	mbedtls_pk_free(&key);

	/* Never replaced: a second keygen refuses and the key is the same. */
	char *before = fwt_snapshot(g.dev);
	run(&r, 1, kg);
	assert_non_null(strstr(r.err, "refusing to replace"));
	char *after = fwt_snapshot(g.dev);
	assert_string_equal(before, after);
	free(before);
	free(after);

	/* Not into a directory others can read, not with a bad id. */
	char open_dir[PATHLEN];
	pathf(open_dir, "%s/open", g.root);
	mkdir(open_dir, 0755);
	chmod(open_dir, 0755);
	const char *kg2[] = {"provision", "keygen", "--dir", open_dir, "--device-id", DEVICE_ID, NULL};
	run(&r, 1, kg2);
	assert_non_null(strstr(r.err, "chmod 700"));
	pathf(p, "%s/device.key", open_dir);
	assert_int_not_equal(stat(p, &st), 0);
	static const char *const bad_ids[] = {"", "a/b", "../x", "has space", ".hidden"};
	for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
		char d[PATHLEN];
		pathf(d, "%s/badid-%zu", g.root, i);
		const char *kg3[] = {"provision", "keygen", "--dir", d, "--device-id", bad_ids[i], NULL};
		run(&r, 1, kg3);
		assert_int_equal(fwt_lines(r.err), 1);
		assert_non_null(strstr(r.err, "device id"));
	}

	/* Before the certificate: show knows the id from the CSR. */
	const char *sh[] = {"provision", "show", "--dir", g.dev, NULL};
	run(&r, 0, sh);
	assert_non_null(strstr(r.out, "device id: " DEVICE_ID));
	assert_non_null(strstr(r.out, "none installed yet"));
}

/* A certificate for this device's key but another CN, and one that expired:
 * made through the library (a fake clock for the expired one). */
static void forge(const char *csr_cn, int64_t wall_ms, unsigned days, const char *out)
{
	char p[PATHLEN], csrp[PATHLEN], subject[64];
	unsigned char pem[4096];
	mbedtls_pk_context key;
	mbedtls_x509write_csr w;
	kp_fw_rng rng;
	kp_env env;
	kp_fake_world world;
	kp_fw_why why;
	mbedtls_pk_init(&key);
	mbedtls_x509write_csr_init(&w);
	kp_fw_rng_init(&rng);
	kp_env_init_fake(&env, &world, 42, wall_ms);
	world.quiet = true;
	assert_int_equal(kp_fw_rng_setup(&rng, &env), KP_OK);
	pathf(p, "%s/device.key", g.dev);
	assert_int_equal(kp_fw_key_load_private(p, &key, &why), KP_OK);
	snprintf(subject, sizeof(subject), "CN=%s", csr_cn);
	mbedtls_x509write_csr_set_key(&w, &key);
	mbedtls_x509write_csr_set_md_alg(&w, MBEDTLS_MD_SHA256);
	assert_int_equal(mbedtls_x509write_csr_set_subject_name(&w, subject), 0);
	assert_int_equal(mbedtls_x509write_csr_pem(&w, pem, sizeof(pem), kp_fw_rng_random, &rng), 0);
	pathf(csrp, "%s/forged-%s.csr", g.root, csr_cn);
	fwt_write_file(csrp, pem, strlen((char *)pem));
	if (kp_prov_sign_dev(&env, g.ca_key, g.ca_crt, csrp, out, days, &why) != KP_OK)
		fail_msg("forge: %s", why.text);
	mbedtls_x509write_csr_free(&w);
	mbedtls_pk_free(&key);
	kp_fw_rng_free(&rng);
}

static void test_sign_install_show(void **state)
{
	(void)state;
	char crt[PATHLEN], csr[PATHLEN], p[PATHLEN];
	fwt_run r;
	pathf(crt, "%s/device.crt", g.root);
	pathf(csr, "%s/device.csr", g.dev);
	const char *sd[] = {"provision", "sign-dev", "--ca-key", g.ca_key, "--ca", g.ca_crt, "--csr", csr, "-o", crt, NULL};
	run(&r, 0, sd);
	assert_non_null(strstr(r.err, "DEVELOPMENT"));

	/* The refusals: each one line, exit 1 (3: unreadable input), the directory unchanged. */
	char other_ca_crt[PATHLEN], wrong_cn[PATHLEN], expired[PATHLEN], garbage[PATHLEN], missing[PATHLEN];
	pathf(other_ca_crt, "%s/by-other-ca.crt", g.root);
	const char *sd2[] = {"provision", "sign-dev", "--ca-key", g.other_key, "--ca", g.other_crt, "--csr", csr, "-o",
			     other_ca_crt, NULL};
	run(&r, 0, sd2);
	pathf(wrong_cn, "%s/wrong-cn.crt", g.root);
	forge("kiosk-8", 0, 30, wrong_cn);
	pathf(expired, "%s/expired.crt", g.root);
	forge(DEVICE_ID, 1000LL * 3600 * 24 * 365 * 30, 1, expired); /* 2000, one day */
	pathf(garbage, "%s/garbage.crt", g.root);
	fwt_write_file(garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", 58);
	pathf(missing, "%s/missing.crt", g.root);
	char pki_device[PATHLEN];
	pathf(pki_device, "%s/device.crt", g.pki);
	const struct {
		const char *label, *cert, *ca, *says;
		int status;
	} bad[] = {
		{"another device's certificate", pki_device, g.ca_crt, "not for this device's key", 1},
		{"signed by another CA", other_ca_crt, g.ca_crt, "does not chain", 1},
		{"checked against another CA", crt, g.other_crt, "does not chain", 1},
		{"another CN", wrong_cn, g.ca_crt, "is not the device id", 1},
		{"expired", expired, g.ca_crt, "not valid now", 1},
		{"not a certificate", garbage, g.ca_crt, "not a certificate", 1},
		{"no such file", missing, g.ca_crt, "no such file", 3},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *before = fwt_snapshot(g.dev);
		const char *in[] = {"provision", "install", "--dir", g.dev, "--cert", bad[i].cert, "--ca", bad[i].ca, NULL};
		fwt_run_tool(&r, KIOSKFW_EXE, NULL, in);
		keep(r.out);
		keep(r.err);
		if (r.status != bad[i].status || fwt_lines(r.err) != 1 || !strstr(r.err, bad[i].says))
			fail_msg("install %s: exit %d, stderr %s", bad[i].label, r.status, r.err);
		char *after = fwt_snapshot(g.dev);
		assert_string_equal(before, after);
		free(before);
		free(after);
	}

	const char *in[] = {"provision", "install", "--dir", g.dev, "--cert", crt, "--ca", g.ca_crt, NULL};
	run(&r, 0, in);
	assert_int_equal(mode_of(g.dev, "device.crt"), 0600);
	assert_int_equal(mode_of(g.dev, "ca.crt"), 0600);
	assert_int_equal(mode_of(g.dev, "device.key"), 0600);
	char *a = fwt_read_file(crt, NULL);
	pathf(p, "%s/device.crt", g.dev);
	char *b = fwt_read_file(p, NULL);
	assert_string_equal(a, b);
	free(a);
	free(b);

	/* show: the identity as mbedtls reads it from the installed certificate. */
	mbedtls_x509_crt x;
	mbedtls_x509_crt_init(&x);
	assert_int_equal(mbedtls_x509_crt_parse_file(&x, p), 0);
	char serial[128], fp[100], line[300];
	unsigned char h[32];
	mbedtls_x509_serial_gets(serial, sizeof(serial), &x.serial);
	assert_int_equal(kp_fw_sha256(x.raw.p, x.raw.len, h), KP_OK);
	for (int i = 0; i < 32; i++)
		snprintf(fp + 3 * i, sizeof(fp) - 3 * (size_t)i, "%02X%s", h[i], i < 31 ? ":" : "");
	uint32_t flags = 0;
	mbedtls_x509_crt ca;
	mbedtls_x509_crt_init(&ca);
	assert_int_equal(mbedtls_x509_crt_parse_file(&ca, g.ca_crt), 0);
	assert_int_equal(mbedtls_x509_crt_verify(&x, &ca, NULL, NULL, &flags, NULL, NULL), 0);
	mbedtls_x509_crt_free(&ca);
	mbedtls_x509_crt_free(&x);

	const char *sh[] = {"provision", "show", "--dir", g.dev, NULL};
	run(&r, 0, sh);
	assert_non_null(strstr(r.out, "device id: " DEVICE_ID "\n"));
	assert_non_null(strstr(r.out, "subject: CN=" DEVICE_ID "\n"));
	snprintf(line, sizeof(line), "serial: %s\n", serial);
	assert_non_null(strstr(r.out, line));
	snprintf(line, sizeof(line), "sha256 fingerprint: %s\n", fp);
	assert_non_null(strstr(r.out, line));
	assert_non_null(strstr(r.out, "(valid now)"));
	assert_non_null(strstr(r.out, "key matches certificate: yes"));
	assert_non_null(strstr(r.out, "mode 0600"));

	const char *js[] = {"--json", "provision", "show", "--dir", g.dev, NULL};
	run(&r, 0, js);
	cJSON *j = cJSON_Parse(r.out);
	assert_non_null(j);
	assert_string_equal(cJSON_GetObjectItem(j, "device_id")->valuestring, DEVICE_ID);
	assert_string_equal(cJSON_GetObjectItem(j, "serial")->valuestring, serial);
	assert_string_equal(cJSON_GetObjectItem(j, "sha256_fingerprint")->valuestring, fp);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "key_matches")));
	cJSON_Delete(j);

	/* A key file opened up is reported (exit 1); so is a certificate that is not the key's. */
	pathf(p, "%s/device.key", g.dev);
	chmod(p, 0644);
	run(&r, 1, sh);
	assert_non_null(strstr(r.out, "TOO OPEN"));
	assert_non_null(strstr(r.err, "open to group or others"));
	chmod(p, 0600);
	char *mine = fwt_read_file(crt, NULL);
	char *theirs = fwt_read_file(pki_device, NULL);
	pathf(p, "%s/device.crt", g.dev);
	fwt_write_file(p, theirs, strlen(theirs));
	run(&r, 1, sh);
	assert_non_null(strstr(r.out, "key matches certificate: NO"));
	fwt_write_file(p, mine, strlen(mine));
	chmod(p, 0600);
	free(mine);
	free(theirs);
	run(&r, 0, sh);
}

/* Nothing any command printed holds the key: not its PEM body, not its scalar. */
static void test_key_never_printed(void **state)
{
	(void)state;
	char p[PATHLEN], d_hex[200];
	size_t olen = 0;
	mbedtls_pk_context key;
	kp_fw_why why;
	assert_true(g.printed_len > 500); /* the commands above did print */
	assert_null(strstr(g.printed, "PRIVATE KEY"));
	pathf(p, "%s/device.key", g.dev);
	char *pem = fwt_read_file(p, NULL);
	assert_non_null(pem);
	/* Every base64 line of the key, and any 20-character piece of it. */
	char *save = NULL;
	for (char *line = strtok_r(pem, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "-----", 5) == 0)
			continue;
		for (size_t off = 0; off + 20 <= strlen(line); off += 10) {
			char piece[21];
			memcpy(piece, line + off, 20);
			piece[20] = 0;
			if (strstr(g.printed, piece))
				fail_msg("a piece of the key's PEM was printed: %s", piece);
		}
	}
	free(pem);
	mbedtls_pk_init(&key);
	assert_int_equal(kp_fw_key_load_private(p, &key, &why), KP_OK);
	assert_int_equal(mbedtls_mpi_write_string(&mbedtls_pk_ec(key)->d, 16, d_hex, sizeof(d_hex), &olen), 0);
	mbedtls_pk_free(&key);
	for (char *c = d_hex; *c; c++)
		*c = (char)((*c >= 'A' && *c <= 'F') ? *c - 'A' + 'a' : *c);
	char lower[FWT_OUT_MAX];
	size_t n = g.printed_len < sizeof(lower) - 1 ? g.printed_len : sizeof(lower) - 1;
	for (size_t i = 0; i < n; i++)
		lower[i] = (char)((g.printed[i] >= 'A' && g.printed[i] <= 'F') ? g.printed[i] - 'A' + 'a' : g.printed[i]);
	lower[n] = 0;
	d_hex[24] = 0; /* 12 bytes of the scalar are plenty to recognise it */
	assert_null(strstr(lower, d_hex));
}

static int setup(void **state)
{
	(void)state;
	char cmd[2 * PATHLEN];
	memset(&g, 0, sizeof(g));
	fwt_mkdtemp(g.root, sizeof(g.root), "prov");
	pathf(g.pki, "%s/pki", g.root);
	pathf(g.dev, "%s/identity", g.root);
	pathf(g.ca_crt, "%s/ca.crt", g.pki);
	pathf(g.ca_key, "%s/ca.key", g.pki);
	pathf(g.other_crt, "%s/other-ca.crt", g.pki);
	pathf(g.other_key, "%s/other-ca.key", g.pki);
	snprintf(cmd, sizeof(cmd), "'%s' '%s' > /dev/null", KP_PKI_EXE, g.pki);
	assert_int_equal(system(cmd), 0);
	g.printed = calloc(1, 1);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	free(g.printed);
	fwt_rmtree(g.root);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keygen),
		cmocka_unit_test(test_sign_install_show),
		cmocka_unit_test(test_key_never_printed),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
