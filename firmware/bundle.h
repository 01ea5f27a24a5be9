/* bundle.h — the signed firmware bundle: one file holding a header, a JSON
 * manifest (version, board, minimum version, rollback counter, payload names,
 * sizes and SHA-256), an ECDSA P-256 signature over the manifest bytes, and the
 * payload files. The layout is in docs/firmware.md. Reading is bounded and
 * streaming: the manifest is authenticated before it is parsed, and each
 * payload is hashed while it is copied, so a 256 MiB bundle needs 64 KiB. */
#ifndef KP_FW_BUNDLE_H
#define KP_FW_BUNDLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fw_crypto.h"
#include "fw_io.h"
#include "kp_error.h"

#define KP_FW_MAGIC "KPFWBNDL"          /* 8 bytes, no NUL in the file */
#define KP_FW_FORMAT 1
#define KP_FW_HEADER_LEN 56
#define KP_FW_RECORD_MAGIC "KPPL"       /* 4 bytes */
#define KP_FW_RECORD_HEADER_LEN 16
#define KP_FW_MANIFEST_MAX (64 * 1024)
#define KP_FW_PAYLOADS_MAX 64
#define KP_FW_NAME_MAX 64               /* payload and board names: 1..64 bytes */
#define KP_FW_BUNDLE_MAX_DEFAULT (256ULL * 1024 * 1024)
#define KP_FW_VERSION_TEXT_MAX 32       /* "4294967295.4294967295.4294967295" + NUL fits */

/* MAJOR.MINOR.PATCH, each a decimal number without leading zeros. */
typedef struct kp_fw_version {
	uint32_t major, minor, patch;
} kp_fw_version;

/* Parse "1.2.3" strictly: KP_ERR_INVALID for "1.2", "01.2.3", "1.2.3-rc1", ... */
kp_err kp_fw_version_parse(const char *text, kp_fw_version *out) KP_MUST_USE;
/* <0, 0, >0 like strcmp. */
int kp_fw_version_cmp(const kp_fw_version *a, const kp_fw_version *b);
/* "1.2.3" into buf (KP_FW_VERSION_TEXT_MAX bytes is always enough). */
void kp_fw_version_format(const kp_fw_version *v, char *buf, size_t cap);

/* A payload or board name: 1..64 of [A-Za-z0-9._-], not starting with '.',
 * no "..". So it can never leave the slot directory or hide in it. */
bool kp_fw_name_valid(const char *name);

typedef struct kp_fw_payload {
	char name[KP_FW_NAME_MAX + 1];
	uint64_t size;
	unsigned char sha256[KP_FW_SHA256_LEN];
} kp_fw_payload;

/* A parsed, checked manifest. */
typedef struct kp_fw_manifest {
	kp_fw_version version;
	kp_fw_version min_version;
	char board[KP_FW_NAME_MAX + 1];
	uint32_t rollback_counter;
	size_t npayloads;
	kp_fw_payload payloads[KP_FW_PAYLOADS_MAX];
} kp_fw_manifest;

/* Why verify refused a bundle. The functions still return a kp_err; this says
 * which of the documented refusals it was (docs/firmware.md), for the message
 * and for tests. */
typedef enum kp_fw_refusal {
	KP_FW_ACCEPTED = 0,
	KP_FW_R_IO,            /* the file cannot be opened or read */
	KP_FW_R_NOT_BUNDLE,    /* no KPFWBNDL magic, unknown format */
	KP_FW_R_TRUNCATED,     /* the file ends before what its header or manifest announce */
	KP_FW_R_OVERSIZE,      /* file over the maximum size, or manifest over 64 KiB */
	KP_FW_R_NO_SIGNATURE,  /* signature length 0 */
	KP_FW_R_BAD_SIGNATURE, /* the signature does not verify with the key it names */
	KP_FW_R_UNKNOWN_KEY,   /* signed by a key that is not in the trusted set */
	KP_FW_R_BAD_MANIFEST,  /* not JSON, a field missing, of the wrong type or out of range */
	KP_FW_R_BAD_NAME,      /* a payload or board name with a path trick or bad character */
	KP_FW_R_WRONG_BOARD,   /* built for another board */
	KP_FW_R_DOWNGRADE,     /* version below the installed one */
	KP_FW_R_MIN_VERSION,   /* the installed version is below the bundle's min_version */
	KP_FW_R_ROLLBACK,      /* rollback counter below the device's */
	KP_FW_R_SIZE_MISMATCH, /* a payload record's size differs from the manifest */
	KP_FW_R_HASH_MISMATCH, /* a payload's SHA-256 differs from the manifest */
	KP_FW_R_CORRUPT,       /* damaged payload framing: record magic, name, trailing bytes */
	KP_FW_R__COUNT
} kp_fw_refusal;

/* "hash_mismatch", ...; "unknown" out of range. */
const char *kp_fw_refusal_name(kp_fw_refusal r);

/* The outcome of a check: the refusal and its one line (what, on what, why). */
typedef struct kp_fw_check {
	kp_fw_refusal refusal;
	kp_fw_why why;
} kp_fw_check;

/* Parse and check manifest JSON (len bytes, no NUL needed). Refusals:
 * KP_FW_R_BAD_MANIFEST or KP_FW_R_BAD_NAME, returned as KP_ERR_INVALID. */
kp_err kp_fw_manifest_parse(const char *json, size_t len, kp_fw_manifest *out, kp_fw_check *chk) KP_MUST_USE;
/* The manifest as compact JSON in a fresh NUL-terminated buffer (caller frees). */
kp_err kp_fw_manifest_to_json(const kp_fw_manifest *m, char **json, size_t *len) KP_MUST_USE;

/* What the device allows. */
typedef struct kp_fw_policy {
	const char *board;               /* required: the board this device is */
	bool has_installed;              /* false: no version checks (fresh device, or not asked) */
	kp_fw_version installed;         /* the version running (committed) */
	uint32_t rollback_counter;       /* the device's counter; bundles below it are refused */
	uint64_t max_size;               /* largest bundle file; 0 = KP_FW_BUNDLE_MAX_DEFAULT */
} kp_fw_policy;

typedef struct kp_fw_bundle kp_fw_bundle;

/* Open a bundle and check everything but the payload bytes: header, size
 * bounds, signature by a key of `keys`, manifest, policy. Reads only; on
 * failure *out is NULL, chk says why, and the return is KP_ERR_NOT_FOUND /
 * KP_ERR_IO (cannot read), KP_ERR_TOO_BIG (oversize), KP_ERR_CORRUPT
 * (truncated, not a bundle) or KP_ERR_INVALID (every other refusal). */
kp_err kp_fw_bundle_open(const char *path, kp_fw_keyring *keys, const kp_fw_policy *policy,
			 kp_fw_bundle **out, kp_fw_check *chk) KP_MUST_USE;

/* The verified manifest; owned by the bundle. */
const kp_fw_manifest *kp_fw_bundle_manifest(const kp_fw_bundle *b);
/* Hex key id of the key that signed it (65 bytes). */
void kp_fw_bundle_key_id_hex(const kp_fw_bundle *b, char out[2 * KP_FW_KEY_ID_LEN + 1]);

/* Where read_payloads puts the bytes (all three called in order per payload;
 * end only after the payload's size and hash were checked). */
typedef struct kp_fw_sink {
	kp_err (*begin)(void *ctx, const kp_fw_payload *p, kp_fw_why *why);
	kp_err (*write)(void *ctx, const void *buf, size_t len, kp_fw_why *why);
	kp_err (*end)(void *ctx, const kp_fw_payload *p, kp_fw_why *why);
	void *ctx;
} kp_fw_sink;

/* Read the payload records once, in manifest order, checking each record's
 * name and size and each payload's SHA-256, and that nothing follows the last.
 * Bytes go to sink (NULL: check only). On a refusal the sink has seen partial
 * data that the caller must throw away. A sink error is returned as is with
 * chk->refusal KP_FW_R_IO. Can be called once per open. */
kp_err kp_fw_bundle_read_payloads(kp_fw_bundle *b, const kp_fw_sink *sink, kp_fw_check *chk) KP_MUST_USE;

/* Close; safe on NULL. */
void kp_fw_bundle_close(kp_fw_bundle *b);

/* open + read_payloads(NULL) + close: the whole of `kioskfw verify`.
 * The manifest is copied to *manifest if it is not NULL and all is well. */
kp_err kp_fw_bundle_verify(const char *path, kp_fw_keyring *keys, const kp_fw_policy *policy,
			   kp_fw_manifest *manifest, kp_fw_check *chk) KP_MUST_USE;

/* What to pack. Payload names are the files' base names. */
typedef struct kp_fw_pack_opts {
	const char *board;
	const char *version;
	const char *min_version;      /* NULL: "0.0.0" (installs over anything not newer) */
	uint32_t rollback_counter;
	uint64_t max_size;            /* 0 = KP_FW_BUNDLE_MAX_DEFAULT */
	const char *const *files;
	size_t nfiles;
} kp_fw_pack_opts;

/* Write a signed bundle to out_path (temp, fsync, rename, fsync directory).
 * Each file is hashed, then copied; a file that changes in between fails. */
kp_err kp_fw_bundle_pack(kp_fw_rng *rng, mbedtls_pk_context *key, const kp_fw_pack_opts *opts,
			 const char *out_path, kp_fw_why *why) KP_MUST_USE;

#endif
