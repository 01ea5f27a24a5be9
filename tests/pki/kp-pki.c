/* kp-pki.c — makes a throw-away development PKI for tests and demos: a
 * provisioning CA, a host and a device certificate, and the wrong ones that the
 * negative TLS tests need (other CA, expired, wrong name). mbedtls only; EC P-256.
 * Keys are generated here on every fresh run and must never be committed. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include "kp_env.h"
#include "kp_error.h"

#define PKI_PATH_MAX 4096
#define PKI_PEM_MAX 4096
#define PKI_NAME_MAX 64
#define DAY_MS (24LL * 3600 * 1000)

enum pki_role { ROLE_CA, ROLE_SERVER, ROLE_CLIENT };

/* One key pair with its certificate, as written to NAME.crt / NAME.key. */
struct pki_ent {
	mbedtls_pk_context key;
	char subject[160];
};

struct pki {
	const char *dir;
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	int64_t now_ms;
};

/* What to issue: the subject, who signs, the role, validity relative to now. */
struct pki_spec {
	const char *file;        /* base name: writes file.crt and file.key */
	const char *cn;
	enum pki_role role;
	struct pki_ent *issuer;  /* NULL: self-signed */
	int64_t from_ms;         /* offsets from now */
	int64_t to_ms;
	bool ip_san;             /* add iPAddress 127.0.0.1 (server certificates) */
};

static void tls_why(int ret, char *buf, size_t cap)
{
	mbedtls_strerror(ret, buf, cap);
}

static kp_err fail_tls(const char *what, const char *on, int ret)
{
	char why[128];
	tls_why(ret, why, sizeof(why));
	fprintf(stderr, "kp-pki: %s failed on %s: %s (-0x%04x)\n", what, on, why, (unsigned)-ret);
	return KP_ERR_TLS;
}

static bool name_ok(const char *s, const char *extra)
{
	size_t n = strlen(s);
	if (n == 0 || n > PKI_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  strchr(extra, c) != NULL;
		if (!ok)
			return false;
	}
	return true;
}

/* Format now+off as the YYYYMMDDhhmmss that mbedtls_x509write wants. */
static kp_err fmt_time(int64_t ms, char out[15])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL)
		return KP_ERR_INVALID;
	int n = snprintf(out, 15, "%04d%02d%02d%02d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1,
			 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	return (n == 14) ? KP_OK : KP_ERR_INVALID;
}

/* Write data to dir/name durably (temp file, fsync, rename) with mode. */
static kp_err write_file(const char *dir, const char *name, const unsigned char *data, size_t len,
			 mode_t mode)
{
	char path[PKI_PATH_MAX], tmp[PKI_PATH_MAX];
	kp_err err = KP_ERR_IO;
	int fd = -1;

	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path) ||
	    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= (int)sizeof(tmp)) {
		fprintf(stderr, "kp-pki: path too long under %s\n", dir);
		return KP_ERR_TOO_BIG;
	}
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0) {
		fprintf(stderr, "kp-pki: cannot create %s: %s\n", tmp, strerror(errno));
		goto out;
	}
	if (fchmod(fd, mode) != 0)
		goto io;
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, data + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto io;
		off += (size_t)n;
	}
	if (fsync(fd) != 0)
		goto io;
	if (close(fd) != 0) {
		fd = -1;
		goto io;
	}
	fd = -1;
	if (rename(tmp, path) != 0)
		goto io;
	err = KP_OK;
	goto out;
io:
	fprintf(stderr, "kp-pki: cannot write %s: %s\n", path, strerror(errno));
out:
	if (fd >= 0)
		close(fd);
	if (err != KP_OK)
		(void)unlink(tmp);
	return err;
}

/* DER value of a subjectAltName: SEQUENCE { [2] dNSName, [7] iPAddress? }. */
static int san_der(const char *dns, bool ip, unsigned char *buf, size_t cap, const unsigned char **start,
		   size_t *len)
{
	static const unsigned char loopback[4] = {127, 0, 0, 1};
	unsigned char *p = buf + cap;
	size_t n = 0;
	int ret;

	if (ip) {
		if ((ret = mbedtls_asn1_write_raw_buffer(&p, buf, loopback, sizeof(loopback))) < 0)
			return ret;
		n += (size_t)ret;
		if ((ret = mbedtls_asn1_write_len(&p, buf, sizeof(loopback))) < 0)
			return ret;
		n += (size_t)ret;
		if ((ret = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7)) < 0)
			return ret;
		n += (size_t)ret;
	}
	size_t dlen = strlen(dns);
	if ((ret = mbedtls_asn1_write_raw_buffer(&p, buf, (const unsigned char *)dns, dlen)) < 0)
		return ret;
	n += (size_t)ret;
	if ((ret = mbedtls_asn1_write_len(&p, buf, dlen)) < 0)
		return ret;
	n += (size_t)ret;
	if ((ret = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2)) < 0)
		return ret;
	n += (size_t)ret;
	if ((ret = mbedtls_asn1_write_len(&p, buf, n)) < 0)
		return ret;
	n += (size_t)ret;
	if ((ret = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) < 0)
		return ret;
	n += (size_t)ret;
	*start = p;
	*len = n;
	return 0;
}

/* DER value of an extendedKeyUsage with one purpose OID. */
static int eku_der(const char *oid, size_t oid_len, unsigned char *buf, size_t cap,
		   const unsigned char **start, size_t *len)
{
	unsigned char *p = buf + cap;
	size_t n = 0;
	int ret;
	if ((ret = mbedtls_asn1_write_oid(&p, buf, oid, oid_len)) < 0)
		return ret;
	n += (size_t)ret;
	if ((ret = mbedtls_asn1_write_len(&p, buf, n)) < 0)
		return ret;
	n += (size_t)ret;
	if ((ret = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) < 0)
		return ret;
	n += (size_t)ret;
	*start = p;
	*len = n;
	return 0;
}

static kp_err gen_key(struct pki *pki, mbedtls_pk_context *key, const char *on)
{
	int ret = mbedtls_pk_setup(key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
	if (ret != 0)
		return fail_tls("mbedtls_pk_setup", on, ret);
	ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*key), mbedtls_ctr_drbg_random,
				  &pki->drbg);
	if (ret != 0)
		return fail_tls("mbedtls_ecp_gen_key", on, ret);
	return KP_OK;
}

/* Generate a key, issue its certificate per spec, write both files. The key
 * and subject stay in *ent so that it can sign others. */
static kp_err issue(struct pki *pki, const struct pki_spec *spec, struct pki_ent *ent)
{
	mbedtls_x509write_cert crt;
	mbedtls_mpi serial;
	unsigned char pem[PKI_PEM_MAX];
	unsigned char ext[256];
	unsigned char rnd[16];
	char from[15], to[15], name[PKI_PATH_MAX];
	const unsigned char *der;
	size_t der_len;
	kp_err err = KP_ERR_TLS;
	int ret;

	mbedtls_x509write_crt_init(&crt);
	mbedtls_mpi_init(&serial);

	if (gen_key(pki, &ent->key, spec->file) != KP_OK)
		goto out;
	if (snprintf(ent->subject, sizeof(ent->subject), "CN=%s,O=kioskpay dev", spec->cn) >=
	    (int)sizeof(ent->subject)) {
		err = KP_ERR_TOO_BIG;
		goto out;
	}
	struct pki_ent *iss = spec->issuer ? spec->issuer : ent;

	mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
	mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
	mbedtls_x509write_crt_set_subject_key(&crt, &ent->key);
	mbedtls_x509write_crt_set_issuer_key(&crt, &iss->key);

	/* A random positive 127-bit serial. */
	if ((ret = mbedtls_ctr_drbg_random(&pki->drbg, rnd, sizeof(rnd))) != 0) {
		fail_tls("mbedtls_ctr_drbg_random", spec->file, ret);
		goto out;
	}
	rnd[0] = (unsigned char)((rnd[0] & 0x7f) | 0x40);
	if ((ret = mbedtls_mpi_read_binary(&serial, rnd, sizeof(rnd))) != 0 ||
	    (ret = mbedtls_x509write_crt_set_serial(&crt, &serial)) != 0) {
		fail_tls("set serial", spec->file, ret);
		goto out;
	}
	if (fmt_time(pki->now_ms + spec->from_ms, from) != KP_OK ||
	    fmt_time(pki->now_ms + spec->to_ms, to) != KP_OK) {
		fprintf(stderr, "kp-pki: cannot format validity of %s\n", spec->file);
		err = KP_ERR_INVALID;
		goto out;
	}
	if ((ret = mbedtls_x509write_crt_set_validity(&crt, from, to)) != 0) {
		fail_tls("set validity", spec->file, ret);
		goto out;
	}
	if ((ret = mbedtls_x509write_crt_set_subject_name(&crt, ent->subject)) != 0 ||
	    (ret = mbedtls_x509write_crt_set_issuer_name(&crt, iss->subject)) != 0) {
		fail_tls("set names", spec->file, ret);
		goto out;
	}
	bool is_ca = spec->role == ROLE_CA;
	if ((ret = mbedtls_x509write_crt_set_basic_constraints(&crt, is_ca, is_ca ? 0 : -1)) != 0 ||
	    (ret = mbedtls_x509write_crt_set_subject_key_identifier(&crt)) != 0 ||
	    (ret = mbedtls_x509write_crt_set_authority_key_identifier(&crt)) != 0) {
		fail_tls("set constraints/key ids", spec->file, ret);
		goto out;
	}
	unsigned int usage = is_ca ? (MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN)
				   : MBEDTLS_X509_KU_DIGITAL_SIGNATURE;
	if ((ret = mbedtls_x509write_crt_set_key_usage(&crt, usage)) != 0) {
		fail_tls("set key usage", spec->file, ret);
		goto out;
	}
	if (spec->role == ROLE_SERVER) {
		if ((ret = san_der(spec->cn, spec->ip_san, ext, sizeof(ext), &der, &der_len)) != 0 ||
		    (ret = mbedtls_x509write_crt_set_extension(&crt, MBEDTLS_OID_SUBJECT_ALT_NAME,
			      MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, der, der_len)) != 0) {
			fail_tls("set subjectAltName", spec->file, ret);
			goto out;
		}
	}
	if (!is_ca) {
		const char *oid = spec->role == ROLE_SERVER ? MBEDTLS_OID_SERVER_AUTH : MBEDTLS_OID_CLIENT_AUTH;
		size_t oid_len = spec->role == ROLE_SERVER ? MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)
							   : MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH);
		if ((ret = eku_der(oid, oid_len, ext, sizeof(ext), &der, &der_len)) != 0 ||
		    (ret = mbedtls_x509write_crt_set_extension(&crt, MBEDTLS_OID_EXTENDED_KEY_USAGE,
			      MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE), 0, der, der_len)) != 0) {
			fail_tls("set extendedKeyUsage", spec->file, ret);
			goto out;
		}
	}

	/* The key first, the certificate second: a .crt never exists without its key. */
	memset(pem, 0, sizeof(pem));
	if ((ret = mbedtls_pk_write_key_pem(&ent->key, pem, sizeof(pem))) != 0) {
		fail_tls("mbedtls_pk_write_key_pem", spec->file, ret);
		goto out;
	}
	snprintf(name, sizeof(name), "%s.key", spec->file);
	if ((err = write_file(pki->dir, name, pem, strlen((char *)pem), 0600)) != KP_OK)
		goto out;
	err = KP_ERR_TLS;
	memset(pem, 0, sizeof(pem));
	if ((ret = mbedtls_x509write_crt_pem(&crt, pem, sizeof(pem), mbedtls_ctr_drbg_random, &pki->drbg)) != 0) {
		fail_tls("mbedtls_x509write_crt_pem", spec->file, ret);
		goto out;
	}
	snprintf(name, sizeof(name), "%s.crt", spec->file);
	if ((err = write_file(pki->dir, name, pem, strlen((char *)pem), 0644)) != KP_OK)
		goto out;
	err = KP_OK;
out:
	mbedtls_platform_zeroize(pem, sizeof(pem));
	mbedtls_x509write_crt_free(&crt);
	mbedtls_mpi_free(&serial);
	return err;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kp-pki DIR [--device-id ID] [--device2-id ID] [--host-name NAME] [--force]\n"
		"  Writes a development PKI into DIR (created 0700, keys 0600):\n"
		"  ca, host, device, device-2, other-ca, host-other-ca, host-expired,\n"
		"  host-wrong-name, device-other-ca (.crt + .key each). Does nothing if\n"
		"  DIR/ca.crt exists, unless --force. Defaults: --device-id kiosk-dev-1,\n"
		"  --device2-id kiosk-dev-2, --host-name localhost.\n"
		"  Exit: 0 done or already there, 1 failure, 2 usage.\n");
}

static kp_err make_dir(const char *dir)
{
	if (mkdir(dir, 0700) == 0)
		return chmod(dir, 0700) == 0 ? KP_OK : KP_ERR_IO;
	if (errno != EEXIST) {
		fprintf(stderr, "kp-pki: cannot create %s: %s\n", dir, strerror(errno));
		return KP_ERR_IO;
	}
	struct stat st;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "kp-pki: %s exists and is not a directory\n", dir);
		return KP_ERR_IO;
	}
	return KP_OK;
}

int main(int argc, char **argv)
{
	const char *dir = NULL;
	const char *device_id = "kiosk-dev-1";
	const char *device2_id = "kiosk-dev-2";
	const char *host_name = "localhost";
	bool force = false;
	int rc = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--device-id") == 0 && i + 1 < argc) {
			device_id = argv[++i];
		} else if (strcmp(argv[i], "--device2-id") == 0 && i + 1 < argc) {
			device2_id = argv[++i];
		} else if (strcmp(argv[i], "--host-name") == 0 && i + 1 < argc) {
			host_name = argv[++i];
		} else if (strcmp(argv[i], "--force") == 0) {
			force = true;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (argv[i][0] != '-' && dir == NULL) {
			dir = argv[i];
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (dir == NULL) {
		usage(stderr);
		return 2;
	}
	if (!name_ok(device_id, "_-")) {
		fprintf(stderr, "kp-pki: bad --device-id '%s': 1..64 of [A-Za-z0-9_-]\n", device_id);
		return 2;
	}
	if (!name_ok(device2_id, "_-")) {
		fprintf(stderr, "kp-pki: bad --device2-id '%s': 1..64 of [A-Za-z0-9_-]\n", device2_id);
		return 2;
	}
	if (!name_ok(host_name, ".-")) {
		fprintf(stderr, "kp-pki: bad --host-name '%s': 1..64 of [A-Za-z0-9.-]\n", host_name);
		return 2;
	}

	if (make_dir(dir) != KP_OK)
		return 1;
	char ca_path[PKI_PATH_MAX];
	if (snprintf(ca_path, sizeof(ca_path), "%s/ca.crt", dir) >= (int)sizeof(ca_path)) {
		fprintf(stderr, "kp-pki: path too long: %s\n", dir);
		return 2;
	}
	if (!force && access(ca_path, F_OK) == 0) {
		printf("kp-pki: %s exists, nothing to do\n", ca_path);
		return 0;
	}

	kp_env env;
	kp_env_init_system(&env);
	struct pki pki = {.dir = dir, .now_ms = kp_now_wall(&env)};
	enum { CA, OTHER_CA, N_ENT };
	struct pki_ent ca[N_ENT];
	struct pki_ent leaf;
	mbedtls_entropy_init(&pki.entropy);
	mbedtls_ctr_drbg_init(&pki.drbg);
	for (int i = 0; i < N_ENT; i++)
		mbedtls_pk_init(&ca[i].key);
	mbedtls_pk_init(&leaf.key);

	static const char pers[] = "kp-pki";
	int ret = mbedtls_ctr_drbg_seed(&pki.drbg, mbedtls_entropy_func, &pki.entropy,
					(const unsigned char *)pers, sizeof(pers) - 1);
	if (ret != 0) {
		fail_tls("mbedtls_ctr_drbg_seed", "entropy", ret);
		goto out;
	}

	const int64_t years10 = 10 * 365 * DAY_MS; /* ends before 2038: 32-bit time_t boards */
	/* CAs first; ca.crt is written last of all so that its presence means a
	 * complete set (see the idempotency check above). */
	const struct pki_spec cas[N_ENT] = {
		[CA] = {"ca.pending", "kioskpay dev provisioning CA", ROLE_CA, NULL, -DAY_MS, years10, false},
		[OTHER_CA] = {"other-ca", "kioskpay other CA", ROLE_CA, NULL, -DAY_MS, years10, false},
	};
	for (int i = 0; i < N_ENT; i++)
		if (issue(&pki, &cas[i], &ca[i]) != KP_OK)
			goto out;

	const struct pki_spec leaves[] = {
		{"host", host_name, ROLE_SERVER, &ca[CA], -DAY_MS, years10, true},
		{"device", device_id, ROLE_CLIENT, &ca[CA], -DAY_MS, years10, false},
		{"device-2", device2_id, ROLE_CLIENT, &ca[CA], -DAY_MS, years10, false},
		{"host-other-ca", host_name, ROLE_SERVER, &ca[OTHER_CA], -DAY_MS, years10, true},
		{"host-expired", host_name, ROLE_SERVER, &ca[CA], -2 * 365 * DAY_MS, -365 * DAY_MS, true},
		{"host-wrong-name", "other.example", ROLE_SERVER, &ca[CA], -DAY_MS, years10, false},
		{"device-other-ca", device_id, ROLE_CLIENT, &ca[OTHER_CA], -DAY_MS, years10, false},
	};
	for (size_t i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++) {
		mbedtls_pk_free(&leaf.key);
		mbedtls_pk_init(&leaf.key);
		if (issue(&pki, &leaves[i], &leaf) != KP_OK)
			goto out;
	}

	char from[PKI_PATH_MAX], to[PKI_PATH_MAX];
	static const char *const ext[] = {"key", "crt"};
	for (int i = 0; i < 2; i++) {
		snprintf(from, sizeof(from), "%s/ca.pending.%s", dir, ext[i]);
		snprintf(to, sizeof(to), "%s/ca.%s", dir, ext[i]);
		if (rename(from, to) != 0) {
			fprintf(stderr, "kp-pki: cannot rename %s: %s\n", from, strerror(errno));
			goto out;
		}
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	printf("kp-pki: wrote %s (device %s, host %s)\n", dir, device_id, host_name);
	rc = 0;
out:
	for (int i = 0; i < N_ENT; i++)
		mbedtls_pk_free(&ca[i].key);
	mbedtls_pk_free(&leaf.key);
	mbedtls_ctr_drbg_free(&pki.drbg);
	mbedtls_entropy_free(&pki.entropy);
	return rc;
}
