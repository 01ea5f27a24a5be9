/* provision.c — device key and CSR generation, certificate checks and
 * installation, identity display, and the development signer, on mbedtls x509.
 * The private key is only ever read to check a pair or sign a CSR; no path
 * here prints or copies it. */
#include "provision.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/bignum.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/x509_csr.h>

#include "bundle.h"
#include "fw_crypto.h"

#define PEM_MAX 4096
#define HOUR_MS (3600LL * 1000)
#define DAY_MS (24 * HOUR_MS)

static size_t parse_len(const unsigned char *data, size_t len)
{
	return (len >= 10 && memcmp(data, "-----BEGIN", 10) == 0) ? len + 1 : len;
}

static kp_err load_crt(const char *path, mbedtls_x509_crt *crt, kp_fw_why *why)
{
	unsigned char *data = NULL;
	size_t len = 0;
	char t[200];
	kp_err err = kp_fw_file_read(path, KP_PROV_CERT_MAX, &data, &len, why);
	if (err != KP_OK)
		return err;
	int ret = mbedtls_x509_crt_parse(crt, data, parse_len(data, len));
	if (ret != 0) {
		kp_fw_tls_text(ret, t, sizeof(t));
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s: not a certificate: %s", path, t);
	}
	free(data);
	return err;
}

static kp_err load_csr(const char *path, mbedtls_x509_csr *csr, kp_fw_why *why)
{
	unsigned char *data = NULL;
	size_t len = 0;
	char t[200];
	kp_err err = kp_fw_file_read(path, KP_PROV_CERT_MAX, &data, &len, why);
	if (err != KP_OK)
		return err;
	int ret = mbedtls_x509_csr_parse(csr, data, parse_len(data, len));
	if (ret != 0) {
		kp_fw_tls_text(ret, t, sizeof(t));
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s: not a CSR: %s", path, t);
	}
	free(data);
	return err;
}

/* The CN of a name, printable ASCII only; false if it has none. */
static bool get_cn(const mbedtls_x509_name *dn, char *buf, size_t cap)
{
	for (; dn; dn = dn->next) {
		if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &dn->oid) != 0)
			continue;
		size_t n = dn->val.len < cap - 1 ? dn->val.len : cap - 1;
		for (size_t i = 0; i < n; i++) {
			unsigned char c = dn->val.p[i];
			buf[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
		}
		buf[n] = 0;
		return true;
	}
	buf[0] = 0;
	return false;
}

static int64_t x509_time_ms(const mbedtls_x509_time *t)
{
	struct tm tm = {.tm_year = t->year - 1900, .tm_mon = t->mon - 1, .tm_mday = t->day,
			.tm_hour = t->hour, .tm_min = t->min, .tm_sec = t->sec};
	return (int64_t)timegm(&tm) * 1000;
}

static void x509_time_text(const mbedtls_x509_time *t, char *buf, size_t cap)
{
	snprintf(buf, cap, "%04d-%02d-%02d %02d:%02d:%02d UTC", t->year, t->mon, t->day, t->hour, t->min, t->sec);
}

/* YYYYMMDDhhmmss, as mbedtls_x509write wants it. */
static kp_err write_time(int64_t ms, char out[15])
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	if (!gmtime_r(&s, &tm))
		return KP_ERR_INVALID;
	int n = snprintf(out, 15, "%04d%02d%02d%02d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
			 tm.tm_min, tm.tm_sec);
	return n == 14 ? KP_OK : KP_ERR_INVALID;
}

static bool valid_at(const mbedtls_x509_crt *crt, int64_t now_ms)
{
	return x509_time_ms(&crt->valid_from) <= now_ms && now_ms <= x509_time_ms(&crt->valid_to);
}

static kp_err make_csr(kp_fw_rng *rng, mbedtls_pk_context *key, const char *dir, const char *device_id,
		       kp_fw_why *why)
{
	mbedtls_x509write_csr csr;
	unsigned char pem[PEM_MAX];
	char subject[128], t[200];
	kp_err err = KP_ERR_TLS;
	int ret;

	mbedtls_x509write_csr_init(&csr);
	snprintf(subject, sizeof(subject), "CN=%s", device_id);
	mbedtls_x509write_csr_set_key(&csr, key);
	mbedtls_x509write_csr_set_md_alg(&csr, MBEDTLS_MD_SHA256);
	if ((ret = mbedtls_x509write_csr_set_subject_name(&csr, subject)) != 0 ||
	    (ret = mbedtls_x509write_csr_set_key_usage(&csr, MBEDTLS_X509_KU_DIGITAL_SIGNATURE)) != 0 ||
	    (ret = mbedtls_x509write_csr_pem(&csr, pem, sizeof(pem), kp_fw_rng_random, rng)) != 0) {
		kp_fw_tls_text(ret, t, sizeof(t));
		err = kp_fw_fail(why, KP_ERR_TLS, "cannot make the CSR for %s: %s", device_id, t);
		goto out;
	}
	err = kp_fw_file_replace(dir, KP_PROV_CSR_FILE, pem, strlen((char *)pem), 0644, why);
out:
	mbedtls_x509write_csr_free(&csr);
	return err;
}

kp_err kp_prov_keygen(const kp_env *env, const char *dir, const char *device_id, kp_fw_why *why)
{
	char keyp[KP_FW_PATH_MAX], csrp[KP_FW_PATH_MAX];
	unsigned char pem[PEM_MAX];
	mbedtls_pk_context key;
	kp_fw_rng rng;
	struct stat st;
	bool created = false;
	kp_err err;

	mbedtls_pk_init(&key);
	kp_fw_rng_init(&rng);
	memset(pem, 0, sizeof(pem));
	if (!device_id || !kp_fw_name_valid(device_id)) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "device id \"%.64s\" is not 1..64 of [A-Za-z0-9._-]",
				 device_id ? device_id : "");
		goto out;
	}
	if (kp_fw_path_join(keyp, sizeof(keyp), dir, KP_PROV_KEY_FILE) != KP_OK ||
	    kp_fw_path_join(csrp, sizeof(csrp), dir, KP_PROV_CSR_FILE) != KP_OK) {
		err = kp_fw_fail(why, KP_ERR_TOO_BIG, "path too long: %s", dir);
		goto out;
	}
	if ((err = kp_fw_dir_ensure(dir, 0700, &created, why)) != KP_OK)
		goto out;
	if (!created && (stat(dir, &st) != 0 || (st.st_mode & 077) != 0)) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s is open to group or others (mode %03o): chmod 700 it first", dir,
				 (unsigned)(st.st_mode & 0777));
		goto out;
	}
	if ((err = kp_fw_rng_setup(&rng, env)) != KP_OK) {
		err = kp_fw_fail(why, err, "no randomness for the device key");
		goto out;
	}
	if (stat(keyp, &st) == 0) {
		if (stat(csrp, &st) == 0) {
			err = kp_fw_fail(why, KP_ERR_CONFLICT, "%s already has a device key; refusing to replace it", dir);
			goto out;
		}
		/* An earlier keygen stopped between the key and the CSR. */
		if ((err = kp_fw_key_load_private(keyp, &key, why)) != KP_OK)
			goto out;
	} else {
		if ((err = kp_fw_key_generate(&rng, &key, why)) != KP_OK ||
		    (err = kp_fw_key_pem(&key, true, pem, sizeof(pem), why)) != KP_OK ||
		    (err = kp_fw_file_create(dir, KP_PROV_KEY_FILE, pem, strlen((char *)pem), 0600, why)) != KP_OK)
			goto out;
	}
	err = make_csr(&rng, &key, dir, device_id, why);
out:
	mbedtls_platform_zeroize(pem, sizeof(pem));
	mbedtls_pk_free(&key);
	kp_fw_rng_free(&rng);
	return err;
}

kp_err kp_prov_install(const kp_env *env, const char *dir, const char *cert_path, const char *ca_path, kp_fw_why *why)
{
	char keyp[KP_FW_PATH_MAX], csrp[KP_FW_PATH_MAX], cn[128], csr_cn[128], info[512];
	unsigned char *crt_data = NULL, *ca_data = NULL;
	size_t crt_len = 0, ca_len = 0;
	mbedtls_pk_context key;
	mbedtls_x509_crt crt, ca;
	mbedtls_x509_csr csr;
	uint32_t flags = 0;
	kp_err err;

	mbedtls_pk_init(&key);
	mbedtls_x509_crt_init(&crt);
	mbedtls_x509_crt_init(&ca);
	mbedtls_x509_csr_init(&csr);
	if (kp_fw_path_join(keyp, sizeof(keyp), dir, KP_PROV_KEY_FILE) != KP_OK ||
	    kp_fw_path_join(csrp, sizeof(csrp), dir, KP_PROV_CSR_FILE) != KP_OK) {
		err = kp_fw_fail(why, KP_ERR_TOO_BIG, "path too long: %s", dir);
		goto out;
	}
	if ((err = kp_fw_key_load_private(keyp, &key, why)) != KP_OK) {
		if (err == KP_ERR_NOT_FOUND)
			kp_fw_fail(why, err, "%s has no device key: run provision keygen first", dir);
		goto out;
	}
	if ((err = load_csr(csrp, &csr, why)) != KP_OK || (err = load_crt(cert_path, &crt, why)) != KP_OK ||
	    (err = load_crt(ca_path, &ca, why)) != KP_OK)
		goto out;
	if (mbedtls_pk_check_pair(&crt.pk, &key) != 0) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s is not for this device's key (%s)", cert_path, keyp);
		goto out;
	}
	get_cn(&csr.subject, csr_cn, sizeof(csr_cn));
	if (!get_cn(&crt.subject, cn, sizeof(cn)) || strcmp(cn, csr_cn) != 0) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s: CN \"%s\" is not the device id \"%s\" of the CSR", cert_path, cn,
				 csr_cn);
		goto out;
	}
	/* mbedtls checks the chain; the dates are checked on the env's clock below. */
	(void)mbedtls_x509_crt_verify(&crt, &ca, NULL, NULL, &flags, NULL, NULL);
	flags &= ~(uint32_t)(MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE);
	if (flags != 0) {
		mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
		size_t il = strlen(info);
		while (il > 0 && info[il - 1] == '\n')
			info[--il] = 0;
		for (char *c = info; *c; c++)
			if (*c == '\n')
				*c = ';';
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s does not chain to %s: %s", cert_path, ca_path, info);
		goto out;
	}
	int64_t now = kp_now_wall(env);
	if (!valid_at(&crt, now)) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s is not valid now (expired or not yet valid)", cert_path);
		goto out;
	}
	for (const mbedtls_x509_crt *c = &ca; c && c->raw.len; c = c->next)
		if (!valid_at(c, now)) {
			err = kp_fw_fail(why, KP_ERR_INVALID, "%s: a CA certificate is not valid now", ca_path);
			goto out;
		}
	if (mbedtls_x509_crt_check_extended_key_usage(&crt, MBEDTLS_OID_CLIENT_AUTH,
						       MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)) != 0) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s does not allow TLS client authentication", cert_path);
		goto out;
	}
	/* Checked: install the very bytes that were checked. */
	if ((err = kp_fw_file_read(cert_path, KP_PROV_CERT_MAX, &crt_data, &crt_len, why)) != KP_OK ||
	    (err = kp_fw_file_read(ca_path, KP_PROV_CERT_MAX, &ca_data, &ca_len, why)) != KP_OK)
		goto out;
	mbedtls_x509_crt_free(&crt);
	mbedtls_x509_crt_init(&crt);
	if (mbedtls_x509_crt_parse(&crt, crt_data, parse_len(crt_data, crt_len)) != 0 ||
	    mbedtls_pk_check_pair(&crt.pk, &key) != 0) {
		err = kp_fw_fail(why, KP_ERR_CONFLICT, "%s changed while it was being checked", cert_path);
		goto out;
	}
	if ((err = kp_fw_file_replace(dir, KP_PROV_CA_FILE, ca_data, ca_len, 0600, why)) != KP_OK ||
	    (err = kp_fw_file_replace(dir, KP_PROV_CRT_FILE, crt_data, crt_len, 0600, why)) != KP_OK)
		goto out;
	err = KP_OK;
out:
	free(crt_data);
	free(ca_data);
	mbedtls_pk_free(&key);
	mbedtls_x509_crt_free(&crt);
	mbedtls_x509_crt_free(&ca);
	mbedtls_x509_csr_free(&csr);
	return err;
}

kp_err kp_prov_show(const kp_env *env, const char *dir, kp_prov_identity *id, kp_fw_why *why)
{
	char keyp[KP_FW_PATH_MAX], csrp[KP_FW_PATH_MAX], crtp[KP_FW_PATH_MAX], cap[KP_FW_PATH_MAX];
	unsigned char fp[KP_FW_SHA256_LEN];
	mbedtls_pk_context key;
	mbedtls_x509_crt crt;
	mbedtls_x509_csr csr;
	struct stat st;
	kp_fw_why ignore;
	kp_err err;

	memset(id, 0, sizeof(*id));
	mbedtls_pk_init(&key);
	mbedtls_x509_crt_init(&crt);
	mbedtls_x509_csr_init(&csr);
	if (kp_fw_path_join(keyp, sizeof(keyp), dir, KP_PROV_KEY_FILE) != KP_OK ||
	    kp_fw_path_join(csrp, sizeof(csrp), dir, KP_PROV_CSR_FILE) != KP_OK ||
	    kp_fw_path_join(crtp, sizeof(crtp), dir, KP_PROV_CRT_FILE) != KP_OK ||
	    kp_fw_path_join(cap, sizeof(cap), dir, KP_PROV_CA_FILE) != KP_OK) {
		err = kp_fw_fail(why, KP_ERR_TOO_BIG, "path too long: %s", dir);
		goto out;
	}
	if (stat(keyp, &st) != 0) {
		err = kp_fw_fail(why, KP_ERR_NOT_FOUND, "%s has no device key (%s): run provision keygen", dir,
				 strerror(errno));
		goto out;
	}
	id->key_present = true;
	id->key_mode = (unsigned)(st.st_mode & 07777);
	id->ca_present = stat(cap, &st) == 0;
	if (load_csr(csrp, &csr, &ignore) == KP_OK) {
		id->csr_present = true;
		mbedtls_x509_dn_gets(id->csr_subject, sizeof(id->csr_subject), &csr.subject);
		get_cn(&csr.subject, id->device_id, sizeof(id->device_id));
	}
	err = load_crt(crtp, &crt, why);
	if (err == KP_ERR_NOT_FOUND) {
		err = KP_OK; /* keyed, not yet certified */
		goto out;
	}
	if (err != KP_OK)
		goto out;
	id->cert_present = true;
	get_cn(&crt.subject, id->device_id, sizeof(id->device_id));
	mbedtls_x509_dn_gets(id->subject, sizeof(id->subject), &crt.subject);
	mbedtls_x509_dn_gets(id->issuer, sizeof(id->issuer), &crt.issuer);
	mbedtls_x509_serial_gets(id->serial, sizeof(id->serial), &crt.serial);
	x509_time_text(&crt.valid_from, id->not_before, sizeof(id->not_before));
	x509_time_text(&crt.valid_to, id->not_after, sizeof(id->not_after));
	id->valid_now = valid_at(&crt, kp_now_wall(env));
	if ((err = kp_fw_sha256(crt.raw.p, crt.raw.len, fp)) != KP_OK)
		goto out;
	for (size_t i = 0; i < sizeof(fp); i++)
		snprintf(id->fingerprint + 3 * i, sizeof(id->fingerprint) - 3 * i, "%02X%s", fp[i],
			 i + 1 < sizeof(fp) ? ":" : "");
	/* Loaded only to compare with the certificate; never printed. */
	if (kp_fw_key_load_private(keyp, &key, &ignore) == KP_OK)
		id->key_matches = mbedtls_pk_check_pair(&crt.pk, &key) == 0;
	err = KP_OK;
out:
	mbedtls_pk_free(&key);
	mbedtls_x509_crt_free(&crt);
	mbedtls_x509_csr_free(&csr);
	return err;
}

/* extendedKeyUsage value: SEQUENCE { id-kp-clientAuth }. */
static int eku_client_auth(unsigned char *buf, size_t cap, const unsigned char **start, size_t *len)
{
	unsigned char *p = buf + cap;
	int ret, n = 0;
	if ((ret = mbedtls_asn1_write_oid(&p, buf, MBEDTLS_OID_CLIENT_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH))) < 0)
		return ret;
	n += ret;
	if ((ret = mbedtls_asn1_write_len(&p, buf, (size_t)n)) < 0)
		return ret;
	n += ret;
	if ((ret = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) < 0)
		return ret;
	n += ret;
	*start = p;
	*len = (size_t)n;
	return 0;
}

/* Everything of a development client certificate but the signature. */
static int fill_cert(mbedtls_x509write_cert *w, mbedtls_mpi *serial, unsigned char *rnd, size_t rnd_len,
		     mbedtls_pk_context *subject_key, mbedtls_pk_context *issuer_key, const char *subject,
		     const char *issuer, const char *from, const char *to)
{
	unsigned char ext[64];
	const unsigned char *der;
	size_t der_len;
	int ret;
	rnd[0] = (unsigned char)((rnd[0] & 0x7f) | 0x40); /* positive, 127 bits */
	mbedtls_x509write_crt_set_version(w, MBEDTLS_X509_CRT_VERSION_3);
	mbedtls_x509write_crt_set_md_alg(w, MBEDTLS_MD_SHA256);
	mbedtls_x509write_crt_set_subject_key(w, subject_key);
	mbedtls_x509write_crt_set_issuer_key(w, issuer_key);
	if ((ret = mbedtls_mpi_read_binary(serial, rnd, rnd_len)) != 0 ||
	    (ret = mbedtls_x509write_crt_set_serial(w, serial)) != 0 ||
	    (ret = mbedtls_x509write_crt_set_validity(w, from, to)) != 0 ||
	    (ret = mbedtls_x509write_crt_set_subject_name(w, subject)) != 0 ||
	    (ret = mbedtls_x509write_crt_set_issuer_name(w, issuer)) != 0 ||
	    (ret = mbedtls_x509write_crt_set_basic_constraints(w, 0, -1)) != 0 ||
	    (ret = mbedtls_x509write_crt_set_subject_key_identifier(w)) != 0 ||
	    (ret = mbedtls_x509write_crt_set_authority_key_identifier(w)) != 0 ||
	    (ret = mbedtls_x509write_crt_set_key_usage(w, MBEDTLS_X509_KU_DIGITAL_SIGNATURE)) != 0 ||
	    (ret = eku_client_auth(ext, sizeof(ext), &der, &der_len)) != 0)
		return ret;
	return mbedtls_x509write_crt_set_extension(w, MBEDTLS_OID_EXTENDED_KEY_USAGE,
						   MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE), 0, der, der_len);
}

kp_err kp_prov_sign_dev(const kp_env *env, const char *ca_key_path, const char *ca_crt_path, const char *csr_path,
			const char *out_path, unsigned days, kp_fw_why *why)
{
	mbedtls_pk_context ca_key;
	mbedtls_x509_crt ca;
	mbedtls_x509_csr csr;
	mbedtls_x509write_cert w;
	mbedtls_mpi serial;
	kp_fw_rng rng;
	unsigned char pem[PEM_MAX], digest[MBEDTLS_MD_MAX_SIZE], rnd[16];
	char subject[256], issuer[256], from[15], to[15], t[200], dir[KP_FW_PATH_MAX];
	kp_err err = KP_ERR_TLS;
	int ret;

	mbedtls_pk_init(&ca_key);
	mbedtls_x509_crt_init(&ca);
	mbedtls_x509_csr_init(&csr);
	mbedtls_x509write_crt_init(&w);
	mbedtls_mpi_init(&serial);
	kp_fw_rng_init(&rng);
	if (days == 0 || days > 3650) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "days %u is not 1..3650", days);
		goto out;
	}
	if ((err = kp_fw_key_load_private(ca_key_path, &ca_key, why)) != KP_OK ||
	    (err = load_crt(ca_crt_path, &ca, why)) != KP_OK || (err = load_csr(csr_path, &csr, why)) != KP_OK)
		goto out;
	if (mbedtls_pk_check_pair(&ca.pk, &ca_key) != 0) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s is not the key of %s", ca_key_path, ca_crt_path);
		goto out;
	}
	const mbedtls_md_info_t *md = mbedtls_md_info_from_type(csr.sig_md);
	if (!md || mbedtls_md(md, csr.cri.p, csr.cri.len, digest) != 0 ||
	    mbedtls_pk_verify_ext(csr.sig_pk, csr.sig_opts, &csr.pk, csr.sig_md, digest, mbedtls_md_get_size(md),
				  csr.sig.p, csr.sig.len) != 0) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s: the CSR's signature does not verify", csr_path);
		goto out;
	}
	char cn[128];
	if (!get_cn(&csr.subject, cn, sizeof(cn)) || !kp_fw_name_valid(cn)) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s: CN \"%s\" is not a device id", csr_path, cn);
		goto out;
	}
	snprintf(subject, sizeof(subject), "CN=%s", cn);
	if (mbedtls_x509_dn_gets(issuer, sizeof(issuer), &ca.subject) < 0) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s: cannot read its subject", ca_crt_path);
		goto out;
	}
	if ((err = kp_fw_rng_setup(&rng, env)) != KP_OK) {
		err = kp_fw_fail(why, err, "no randomness for the serial");
		goto out;
	}
	int64_t now = kp_now_wall(env);
	if (write_time(now - HOUR_MS, from) != KP_OK || write_time(now + (int64_t)days * DAY_MS, to) != KP_OK) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "cannot format the validity");
		goto out;
	}
	if ((ret = kp_fw_rng_random(&rng, rnd, sizeof(rnd))) != 0 ||
	    (ret = fill_cert(&w, &serial, rnd, sizeof(rnd), &csr.pk, &ca_key, subject, issuer, from, to)) != 0 ||
	    (ret = mbedtls_x509write_crt_pem(&w, pem, sizeof(pem), kp_fw_rng_random, &rng)) != 0) {
		kp_fw_tls_text(ret, t, sizeof(t));
		err = kp_fw_fail(why, KP_ERR_TLS, "cannot issue a certificate for %s: %s", csr_path, t);
		goto out;
	}
	snprintf(dir, sizeof(dir), "%s", out_path);
	char *slash = strrchr(dir, '/');
	const char *base = out_path;
	if (!slash) {
		snprintf(dir, sizeof(dir), ".");
	} else {
		base = out_path + (slash - dir) + 1;
		if (slash == dir)
			dir[1] = 0;
		else
			*slash = 0;
	}
	if (!*base) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s: no file name", out_path);
		goto out;
	}
	err = kp_fw_file_replace(dir, base, pem, strlen((char *)pem), 0644, why);
out:
	mbedtls_pk_free(&ca_key);
	mbedtls_x509_crt_free(&ca);
	mbedtls_x509_csr_free(&csr);
	mbedtls_x509write_crt_free(&w);
	mbedtls_mpi_free(&serial);
	kp_fw_rng_free(&rng);
	return err;
}
