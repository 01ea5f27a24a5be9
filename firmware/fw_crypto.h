/* fw_crypto.h — the mbedtls pieces the firmware tools share: a DRBG seeded from
 * the kp_env's randomness, EC P-256 keys (generate, load, save, key id), the
 * release keyring that verify trusts, SHA-256 and ECDSA over a digest. */
#ifndef KP_FW_CRYPTO_H
#define KP_FW_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/pk.h>

#include "fw_io.h"
#include "kp_env.h"
#include "kp_error.h"

#define KP_FW_SHA256_LEN 32
#define KP_FW_KEY_ID_LEN 32     /* SHA-256 of the public key's DER SubjectPublicKeyInfo */
#define KP_FW_SIG_MAX 128       /* a DER ECDSA P-256 signature is at most 72 bytes */
#define KP_FW_KEYRING_MAX 16    /* trusted release keys at most */
#define KP_FW_KEYFILE_MAX 8192  /* a PEM key file at most */

/* A CTR-DRBG whose entropy is the env's random(). */
typedef struct kp_fw_rng {
	const kp_env *env;
	mbedtls_ctr_drbg_context drbg;
} kp_fw_rng;

/* Zero the rng; cannot fail. */
void kp_fw_rng_init(kp_fw_rng *rng);
/* Seed it from env (kept by pointer: it must outlive the rng). KP_ERR_IO if the
 * env's randomness fails. */
kp_err kp_fw_rng_setup(kp_fw_rng *rng, const kp_env *env) KP_MUST_USE;
/* The f_rng for mbedtls calls, with the kp_fw_rng as its p_rng. */
int kp_fw_rng_random(void *rng, unsigned char *out, size_t len);
/* Safe on a zeroed or half-set-up rng. */
void kp_fw_rng_free(kp_fw_rng *rng);

/* SHA-256 of len bytes. */
kp_err kp_fw_sha256(const void *data, size_t len, unsigned char out[KP_FW_SHA256_LEN]) KP_MUST_USE;

/* Generate a fresh EC P-256 key pair into an initialised, empty pk. */
kp_err kp_fw_key_generate(kp_fw_rng *rng, mbedtls_pk_context *pk, kp_fw_why *why) KP_MUST_USE;
/* Load a PEM or DER private key from path into an initialised pk; it must be
 * EC P-256 (KP_ERR_INVALID otherwise). The file's bytes are wiped after use. */
kp_err kp_fw_key_load_private(const char *path, mbedtls_pk_context *pk, kp_fw_why *why) KP_MUST_USE;
/* Load a PEM or DER public key (SubjectPublicKeyInfo), EC P-256 only. */
kp_err kp_fw_key_load_public(const char *path, mbedtls_pk_context *pk, kp_fw_why *why) KP_MUST_USE;
/* The key's PEM: private (wipe it after use) or public, into buf. */
kp_err kp_fw_key_pem(mbedtls_pk_context *pk, bool private_part, unsigned char *buf, size_t cap, kp_fw_why *why) KP_MUST_USE;
/* The key id: SHA-256 of the DER public key. */
kp_err kp_fw_key_id(mbedtls_pk_context *pk, unsigned char id[KP_FW_KEY_ID_LEN]) KP_MUST_USE;

/* ECDSA signature (DER) over a SHA-256 digest with the private key. */
kp_err kp_fw_sign_digest(kp_fw_rng *rng, mbedtls_pk_context *key, const unsigned char digest[KP_FW_SHA256_LEN],
			 unsigned char *sig, size_t cap, size_t *sig_len, kp_fw_why *why) KP_MUST_USE;
/* True when sig is a valid ECDSA signature of digest by key. */
bool kp_fw_verify_digest(mbedtls_pk_context *key, const unsigned char digest[KP_FW_SHA256_LEN],
			 const unsigned char *sig, size_t sig_len);

/* The trusted release keys: a fixed array, filled from files. */
typedef struct kp_fw_keyring {
	size_t count;
	mbedtls_pk_context keys[KP_FW_KEYRING_MAX];
	unsigned char ids[KP_FW_KEYRING_MAX][KP_FW_KEY_ID_LEN];
} kp_fw_keyring;

/* Zero the keyring; cannot fail. */
void kp_fw_keyring_init(kp_fw_keyring *ring);
/* Add the public key in path. KP_ERR_TOO_BIG when the ring is full; a key
 * already in the ring is not added twice. */
kp_err kp_fw_keyring_add_file(kp_fw_keyring *ring, const char *path, kp_fw_why *why) KP_MUST_USE;
/* Add every DIR/ *.pub (in name order, so errors are reproducible).
 * KP_ERR_NOT_FOUND if the directory holds none. */
kp_err kp_fw_keyring_add_dir(kp_fw_keyring *ring, const char *dir, kp_fw_why *why) KP_MUST_USE;
/* The key with this id, or NULL if it is not trusted. Owned by the ring. */
mbedtls_pk_context *kp_fw_keyring_find(kp_fw_keyring *ring, const unsigned char id[KP_FW_KEY_ID_LEN]);
void kp_fw_keyring_free(kp_fw_keyring *ring);

/* One line of mbedtls error text for ret. */
void kp_fw_tls_text(int ret, char *buf, size_t cap);

#endif
