/* provision.h — the device identity: an EC P-256 key made on the device and
 * never exported, a CSR for it (CN = device id), then the certificate the
 * provisioning CA signed and the CA certificate, checked and installed. All in
 * one directory (0700): device.key, device.csr, device.crt, ca.crt (0600).
 * kp_prov_sign_dev is a development CA for tests and demos only. */
#ifndef KP_PROVISION_H
#define KP_PROVISION_H

#include <stdbool.h>
#include <stdint.h>

#include "fw_io.h"
#include "kp_env.h"
#include "kp_error.h"

#define KP_PROV_KEY_FILE "device.key"
#define KP_PROV_CSR_FILE "device.csr"
#define KP_PROV_CRT_FILE "device.crt"
#define KP_PROV_CA_FILE "ca.crt"
#define KP_PROV_CERT_MAX (64 * 1024) /* a certificate or CA file at most */

/* Make dir (0700; an existing one must not be readable by group or others),
 * generate the device key into dir/device.key (0600) and a CSR with
 * CN=device_id into dir/device.csr. KP_ERR_CONFLICT if a key exists: a device
 * identity is never replaced by accident. A key without its CSR (a crash
 * in between) gets its CSR made from the existing key. device_id: 1..64 of
 * [A-Za-z0-9._-]. */
kp_err kp_prov_keygen(const kp_env *env, const char *dir, const char *device_id, kp_fw_why *why) KP_MUST_USE;

/* Check cert_path against the device: its public key is the device key's,
 * its CN is the CSR's, it chains to a certificate in ca_path, it is valid
 * now (env clock) and, if it has an extended key usage, allows clientAuth.
 * Then install it and the CA as dir/device.crt and dir/ca.crt (0600). */
kp_err kp_prov_install(const kp_env *env, const char *dir, const char *cert_path, const char *ca_path,
		       kp_fw_why *why) KP_MUST_USE;

/* What `provision show` prints. Never holds key material. */
typedef struct kp_prov_identity {
	bool key_present;
	unsigned key_mode;         /* permission bits of device.key */
	bool csr_present;
	char csr_subject[256];
	bool cert_present;
	char device_id[128];       /* the certificate's CN (or the CSR's without a certificate) */
	char subject[256];
	char issuer[256];
	char serial[128];
	char not_before[32];       /* "2025-01-31 12:00:00 UTC" */
	char not_after[32];
	char fingerprint[96];      /* SHA-256 of the certificate DER, hex pairs with ':' */
	bool valid_now;            /* within its validity at env's wall clock */
	bool key_matches;          /* the certificate's key is the device key */
	bool ca_present;
} kp_prov_identity;

/* Read the identity in dir. KP_ERR_NOT_FOUND if there is no device key. */
kp_err kp_prov_show(const kp_env *env, const char *dir, kp_prov_identity *id, kp_fw_why *why) KP_MUST_USE;

/* DEVELOPMENT ONLY: sign csr_path with the CA key and certificate into
 * out_path (PEM, 0644): CN from the CSR, clientAuth, `days` days from now
 * (env clock), random serial. The CSR's own signature is checked first. */
kp_err kp_prov_sign_dev(const kp_env *env, const char *ca_key_path, const char *ca_crt_path, const char *csr_path,
			const char *out_path, unsigned days, kp_fw_why *why) KP_MUST_USE;

#endif
