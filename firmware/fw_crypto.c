/* fw_crypto.c — mbedtls for the firmware tools: DRBG over kp_env randomness,
 * EC P-256 keys and their ids, ECDSA over SHA-256 digests, the release keyring. */
#include "fw_crypto.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/ecp.h>
#include <mbedtls/error.h>
#include <mbedtls/md.h>
#include <mbedtls/platform_util.h>

void kp_fw_tls_text(int ret, char *buf, size_t cap)
{
	char t[160];
	mbedtls_strerror(ret, t, sizeof(t));
	snprintf(buf, cap, "%s (-0x%04x)", t, (unsigned)-ret);
}

static int env_entropy(void *ctx, unsigned char *out, size_t len)
{
	const kp_env *env = ctx;
	return env->random(env->ctx, out, len) == KP_OK ? 0 : MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED;
}

void kp_fw_rng_init(kp_fw_rng *rng)
{
	memset(rng, 0, sizeof(*rng));
	mbedtls_ctr_drbg_init(&rng->drbg);
}

kp_err kp_fw_rng_setup(kp_fw_rng *rng, const kp_env *env)
{
	static const unsigned char pers[] = "kioskpay-firmware";
	rng->env = env;
	int ret = mbedtls_ctr_drbg_seed(&rng->drbg, env_entropy, (void *)env, pers, sizeof(pers) - 1);
	return ret == 0 ? KP_OK : KP_ERR_IO;
}

int kp_fw_rng_random(void *rng, unsigned char *out, size_t len)
{
	kp_fw_rng *r = rng;
	return mbedtls_ctr_drbg_random(&r->drbg, out, len);
}

void kp_fw_rng_free(kp_fw_rng *rng)
{
	mbedtls_ctr_drbg_free(&rng->drbg);
}

kp_err kp_fw_sha256(const void *data, size_t len, unsigned char out[KP_FW_SHA256_LEN])
{
	const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
	if (!md)
		return KP_ERR_INTERNAL;
	return mbedtls_md(md, data, len, out) == 0 ? KP_OK : KP_ERR_INTERNAL;
}

/* PEM input is parsed with its terminating NUL counted, DER without. */
static size_t parse_len(const unsigned char *data, size_t len)
{
	return (len >= 10 && memcmp(data, "-----BEGIN", 10) == 0) ? len + 1 : len;
}

static bool is_p256(const mbedtls_pk_context *pk)
{
	if (mbedtls_pk_get_type(pk) != MBEDTLS_PK_ECKEY)
		return false;
	return mbedtls_pk_ec(*pk)->grp.id == MBEDTLS_ECP_DP_SECP256R1;
}

kp_err kp_fw_key_generate(kp_fw_rng *rng, mbedtls_pk_context *pk, kp_fw_why *why)
{
	char t[200];
	int ret = mbedtls_pk_setup(pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
	if (ret == 0)
		ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*pk), kp_fw_rng_random, rng);
	if (ret != 0) {
		kp_fw_tls_text(ret, t, sizeof(t));
		return kp_fw_fail(why, KP_ERR_TLS, "cannot generate an EC P-256 key: %s", t);
	}
	return KP_OK;
}

kp_err kp_fw_key_load_private(const char *path, mbedtls_pk_context *pk, kp_fw_why *why)
{
	unsigned char *data = NULL;
	size_t len = 0;
	char t[200];
	kp_err err = kp_fw_file_read(path, KP_FW_KEYFILE_MAX, &data, &len, why);
	if (err != KP_OK)
		return err;
	int ret = mbedtls_pk_parse_key(pk, data, parse_len(data, len), NULL, 0);
	if (ret != 0) {
		kp_fw_tls_text(ret, t, sizeof(t));
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s: not a private key: %s", path, t);
	} else if (!is_p256(pk)) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s: not an EC P-256 key", path);
	}
	mbedtls_platform_zeroize(data, len);
	free(data);
	return err;
}

kp_err kp_fw_key_load_public(const char *path, mbedtls_pk_context *pk, kp_fw_why *why)
{
	unsigned char *data = NULL;
	size_t len = 0;
	char t[200];
	kp_err err = kp_fw_file_read(path, KP_FW_KEYFILE_MAX, &data, &len, why);
	if (err != KP_OK)
		return err;
	int ret = mbedtls_pk_parse_public_key(pk, data, parse_len(data, len));
	if (ret != 0) {
		kp_fw_tls_text(ret, t, sizeof(t));
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s: not a public key: %s", path, t);
	} else if (!is_p256(pk)) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s: not an EC P-256 key", path);
	}
	free(data);
	return err;
}

kp_err kp_fw_key_pem(mbedtls_pk_context *pk, bool private_part, unsigned char *buf, size_t cap, kp_fw_why *why)
{
	char t[200];
	memset(buf, 0, cap);
	int ret = private_part ? mbedtls_pk_write_key_pem(pk, buf, cap) : mbedtls_pk_write_pubkey_pem(pk, buf, cap);
	if (ret != 0) {
		kp_fw_tls_text(ret, t, sizeof(t));
		return kp_fw_fail(why, KP_ERR_TLS, "cannot encode the %s key: %s", private_part ? "private" : "public", t);
	}
	return KP_OK;
}

kp_err kp_fw_key_id(mbedtls_pk_context *pk, unsigned char id[KP_FW_KEY_ID_LEN])
{
	unsigned char der[256];
	/* mbedtls writes DER at the end of the buffer. */
	int n = mbedtls_pk_write_pubkey_der(pk, der, sizeof(der));
	if (n <= 0)
		return KP_ERR_INVALID;
	return kp_fw_sha256(der + sizeof(der) - (size_t)n, (size_t)n, id);
}

kp_err kp_fw_sign_digest(kp_fw_rng *rng, mbedtls_pk_context *key, const unsigned char digest[KP_FW_SHA256_LEN],
			 unsigned char *sig, size_t cap, size_t *sig_len, kp_fw_why *why)
{
	unsigned char buf[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
	char t[200];
	size_t n = 0;
	int ret = mbedtls_pk_sign(key, MBEDTLS_MD_SHA256, digest, KP_FW_SHA256_LEN, buf, &n, kp_fw_rng_random, rng);
	if (ret != 0) {
		kp_fw_tls_text(ret, t, sizeof(t));
		return kp_fw_fail(why, KP_ERR_TLS, "cannot sign: %s", t);
	}
	if (n > cap || n > KP_FW_SIG_MAX)
		return kp_fw_fail(why, KP_ERR_TOO_BIG, "signature of %zu bytes does not fit", n);
	memcpy(sig, buf, n);
	*sig_len = n;
	return KP_OK;
}

bool kp_fw_verify_digest(mbedtls_pk_context *key, const unsigned char digest[KP_FW_SHA256_LEN],
			 const unsigned char *sig, size_t sig_len)
{
	return mbedtls_pk_verify(key, MBEDTLS_MD_SHA256, digest, KP_FW_SHA256_LEN, sig, sig_len) == 0;
}

void kp_fw_keyring_init(kp_fw_keyring *ring)
{
	memset(ring, 0, sizeof(*ring));
	for (size_t i = 0; i < KP_FW_KEYRING_MAX; i++)
		mbedtls_pk_init(&ring->keys[i]);
}

kp_err kp_fw_keyring_add_file(kp_fw_keyring *ring, const char *path, kp_fw_why *why)
{
	if (ring->count == KP_FW_KEYRING_MAX)
		return kp_fw_fail(why, KP_ERR_TOO_BIG, "%s: more than %d trusted keys", path, KP_FW_KEYRING_MAX);
	mbedtls_pk_context *pk = &ring->keys[ring->count];
	kp_err err = kp_fw_key_load_public(path, pk, why);
	if (err == KP_OK && kp_fw_key_id(pk, ring->ids[ring->count]) != KP_OK)
		err = kp_fw_fail(why, KP_ERR_INVALID, "%s: cannot encode the key", path);
	if (err == KP_OK && kp_fw_keyring_find(ring, ring->ids[ring->count]) == NULL)
		ring->count++;
	else {
		mbedtls_pk_free(pk);
		mbedtls_pk_init(pk);
	}
	return err;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

kp_err kp_fw_keyring_add_dir(kp_fw_keyring *ring, const char *dir, kp_fw_why *why)
{
	char *names[KP_FW_KEYRING_MAX + 1];
	size_t n = 0;
	char path[KP_FW_PATH_MAX];
	kp_err err = KP_OK;
	DIR *d = opendir(dir);
	if (!d)
		return kp_fw_fail(why, KP_ERR_IO, "cannot open key directory %s: %s", dir, strerror(errno));
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);
		if (e->d_name[0] == '.' || len < 5 || strcmp(e->d_name + len - 4, ".pub") != 0)
			continue;
		if (n == KP_FW_KEYRING_MAX) {
			err = kp_fw_fail(why, KP_ERR_TOO_BIG, "%s: more than %d *.pub keys", dir, KP_FW_KEYRING_MAX);
			goto out;
		}
		if (!(names[n] = strdup(e->d_name))) {
			err = kp_fw_fail(why, KP_ERR_NOMEM, "out of memory listing %s", dir);
			goto out;
		}
		n++;
	}
	if (n == 0) {
		err = kp_fw_fail(why, KP_ERR_NOT_FOUND, "%s holds no *.pub key", dir);
		goto out;
	}
	qsort(names, n, sizeof(names[0]), name_cmp);
	for (size_t i = 0; i < n && err == KP_OK; i++) {
		if (kp_fw_path_join(path, sizeof(path), dir, names[i]) != KP_OK)
			err = kp_fw_fail(why, KP_ERR_TOO_BIG, "path too long under %s", dir);
		else
			err = kp_fw_keyring_add_file(ring, path, why);
	}
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	closedir(d);
	return err;
}

mbedtls_pk_context *kp_fw_keyring_find(kp_fw_keyring *ring, const unsigned char id[KP_FW_KEY_ID_LEN])
{
	for (size_t i = 0; i < ring->count; i++)
		if (memcmp(ring->ids[i], id, KP_FW_KEY_ID_LEN) == 0)
			return &ring->keys[i];
	return NULL;
}

void kp_fw_keyring_free(kp_fw_keyring *ring)
{
	for (size_t i = 0; i < KP_FW_KEYRING_MAX; i++)
		mbedtls_pk_free(&ring->keys[i]);
	ring->count = 0;
}
