/* kfw_bundle.c — kioskfw keygen, pack and verify: the release side (make a
 * key, sign a bundle) and the check a device or technician runs first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <mbedtls/platform_util.h>

#include "bundle.h"
#include "fw_crypto.h"
#include "kioskfw.h"
#include "slots.h"

#define PEM_MAX 4096

int kfw_load_keys(const kfw_ctx *ctx, kfw_handler self, const char *pubkey, const char *keys_dir,
		  kp_fw_keyring *ring)
{
	kp_fw_why why;
	kp_err err;
	if (!pubkey && !keys_dir)
		return kfw_usage_error(ctx, self, "needs --pubkey FILE or --keys-dir DIR (the trusted release keys)");
	if (pubkey && (err = kp_fw_keyring_add_file(ring, pubkey, &why)) != KP_OK)
		return kfw_fail(ctx, self, KFW_EXIT_CANNOT_OPEN, "trusted key: %s", why.text);
	if (keys_dir && (err = kp_fw_keyring_add_dir(ring, keys_dir, &why)) != KP_OK)
		return kfw_fail(ctx, self, KFW_EXIT_CANNOT_OPEN, "trusted keys: %s", why.text);
	return KFW_EXIT_OK;
}

int kfw_refused(const kfw_ctx *ctx, kfw_handler self, kp_err err, const kp_fw_check *chk)
{
	if (chk->refusal == KP_FW_R_IO)
		return kfw_fail(ctx, self, err == KP_ERR_NOT_FOUND || err == KP_ERR_IO ? KFW_EXIT_CANNOT_OPEN : KFW_EXIT_FAILED,
				"%s", chk->why.text);
	if (chk->refusal == KP_FW_ACCEPTED)
		return kfw_fail(ctx, self, kfw_exit_for(err), "%s", chk->why.text);
	return kfw_fail(ctx, self, KFW_EXIT_FAILED, "refused: %s [%s]", chk->why.text, kp_fw_refusal_name(chk->refusal));
}

int kfw_keygen(kfw_ctx *ctx, int argc, char **argv)
{
	const char *out = NULL;
	const kfw_opt opts[] = {{"--out", &out, NULL}};
	size_t npos;
	unsigned char pem[PEM_MAX], id[KP_FW_KEY_ID_LEN];
	char idhex[2 * KP_FW_KEY_ID_LEN + 1];
	mbedtls_pk_context key;
	kp_fw_rng rng;
	kp_fw_why why;
	kp_err err;
	int rc = kfw_parse(ctx, kfw_keygen, argc, argv, opts, 1, NULL, 0, &npos);
	if (rc != KFW_EXIT_OK)
		return rc;
	if (!out)
		return kfw_usage_error(ctx, kfw_keygen, "needs --out DIR");

	mbedtls_pk_init(&key);
	kp_fw_rng_init(&rng);
	memset(pem, 0, sizeof(pem));
	rc = KFW_EXIT_FAILED;
	if ((err = kp_fw_dir_ensure(out, 0700, NULL, &why)) != KP_OK) {
		rc = kfw_fail(ctx, kfw_keygen, KFW_EXIT_CANNOT_OPEN, "%s", why.text);
		goto out;
	}
	if ((err = kp_fw_rng_setup(&rng, &ctx->env)) != KP_OK) {
		rc = kfw_fail(ctx, kfw_keygen, KFW_EXIT_FAILED, "no randomness: %s", kp_strerror(err));
		goto out;
	}
	if ((err = kp_fw_key_generate(&rng, &key, &why)) != KP_OK ||
	    (err = kp_fw_key_pem(&key, true, pem, sizeof(pem), &why)) != KP_OK ||
	    (err = kp_fw_file_create(out, "release.key", pem, strlen((char *)pem), 0600, &why)) != KP_OK ||
	    (err = kp_fw_key_pem(&key, false, pem, sizeof(pem), &why)) != KP_OK ||
	    (err = kp_fw_file_create(out, "release.pub", pem, strlen((char *)pem), 0644, &why)) != KP_OK) {
		rc = kfw_fail(ctx, kfw_keygen, KFW_EXIT_FAILED, "%s", why.text);
		goto out;
	}
	if ((err = kp_fw_key_id(&key, id)) != KP_OK) {
		rc = kfw_fail(ctx, kfw_keygen, KFW_EXIT_FAILED, "cannot compute the key id");
		goto out;
	}
	kp_fw_hex(id, sizeof(id), idhex);
	printf("wrote %s/release.key (secret: keep it off devices, never commit it)\n"
	       "wrote %s/release.pub (install it on devices as a trusted key)\n"
	       "key id %s\n",
	       out, out, idhex);
	rc = KFW_EXIT_OK;
out:
	mbedtls_platform_zeroize(pem, sizeof(pem));
	mbedtls_pk_free(&key);
	kp_fw_rng_free(&rng);
	return rc;
}

int kfw_pack(kfw_ctx *ctx, int argc, char **argv)
{
	const char *keyp = NULL, *board = NULL, *version = NULL, *minv = NULL, *rb = NULL, *maxs = NULL, *out = NULL;
	const kfw_opt opts[] = {
		{"--key", &keyp, NULL},      {"--board", &board, NULL}, {"--version", &version, NULL},
		{"--min-version", &minv, NULL}, {"--rollback", &rb, NULL}, {"--max-size", &maxs, NULL},
		{"-o", &out, NULL},          {"--output", &out, NULL},
	};
	const char *files[KP_FW_PAYLOADS_MAX + 1];
	size_t nfiles = 0;
	uint64_t rollback = 0, max_size = 0;
	mbedtls_pk_context key;
	kp_fw_rng rng;
	kp_fw_why why;
	kp_err err;
	int rc = kfw_parse(ctx, kfw_pack, argc, argv, opts, sizeof(opts) / sizeof(opts[0]), files,
			   KP_FW_PAYLOADS_MAX + 1, &nfiles);
	if (rc != KFW_EXIT_OK)
		return rc;
	if (!keyp || !board || !version || !out)
		return kfw_usage_error(ctx, kfw_pack, "needs --key, --board, --version and -o");
	if (nfiles == 0 || nfiles > KP_FW_PAYLOADS_MAX)
		return kfw_usage_error(ctx, kfw_pack, "needs 1..%d payload files", KP_FW_PAYLOADS_MAX);
	if (rb && !kfw_number(ctx, kfw_pack, "--rollback", rb, UINT32_MAX, &rollback))
		return KFW_EXIT_USAGE;
	if (maxs && !kfw_number(ctx, kfw_pack, "--max-size", maxs, UINT64_MAX / 2, &max_size))
		return KFW_EXIT_USAGE;

	mbedtls_pk_init(&key);
	kp_fw_rng_init(&rng);
	if ((err = kp_fw_key_load_private(keyp, &key, &why)) != KP_OK) {
		rc = kfw_fail(ctx, kfw_pack, kfw_exit_for(err), "release key: %s", why.text);
		goto out;
	}
	if ((err = kp_fw_rng_setup(&rng, &ctx->env)) != KP_OK) {
		rc = kfw_fail(ctx, kfw_pack, KFW_EXIT_FAILED, "no randomness: %s", kp_strerror(err));
		goto out;
	}
	kp_fw_pack_opts po = {
		.board = board, .version = version, .min_version = minv, .rollback_counter = (uint32_t)rollback,
		.max_size = max_size, .files = files, .nfiles = nfiles,
	};
	if ((err = kp_fw_bundle_pack(&rng, &key, &po, out, &why)) != KP_OK) {
		rc = kfw_fail(ctx, kfw_pack, err == KP_ERR_NOT_FOUND ? KFW_EXIT_CANNOT_OPEN : KFW_EXIT_FAILED, "%s: %s", out,
			      why.text);
		goto out;
	}
	printf("wrote %s: version %s for board %s, %zu payload%s, rollback counter %llu\n", out, version, board, nfiles,
	       nfiles == 1 ? "" : "s", (unsigned long long)rollback);
	rc = KFW_EXIT_OK;
out:
	mbedtls_pk_free(&key);
	kp_fw_rng_free(&rng);
	return rc;
}

static void print_verified(const kfw_ctx *ctx, const char *path, const kp_fw_manifest *m, const char *keyhex)
{
	char v[KP_FW_VERSION_TEXT_MAX], mv[KP_FW_VERSION_TEXT_MAX], hex[2 * KP_FW_SHA256_LEN + 1];
	uint64_t total = 0;
	kp_fw_version_format(&m->version, v, sizeof(v));
	kp_fw_version_format(&m->min_version, mv, sizeof(mv));
	for (size_t i = 0; i < m->npayloads; i++)
		total += m->payloads[i].size;
	if (!ctx->json) {
		printf("ok: %s: version %s for board %s (min_version %s), rollback counter %u, %zu payload%s, %llu bytes, "
		       "signed by key %.16s\n",
		       path, v, m->board, mv, (unsigned)m->rollback_counter, m->npayloads, m->npayloads == 1 ? "" : "s",
		       (unsigned long long)total, keyhex);
		for (size_t i = 0; i < m->npayloads; i++) {
			kp_fw_hex(m->payloads[i].sha256, KP_FW_SHA256_LEN, hex);
			printf("  %-32s %12llu  %s\n", m->payloads[i].name, (unsigned long long)m->payloads[i].size, hex);
		}
		return;
	}
	char *mjson = NULL;
	size_t mlen = 0;
	cJSON *root = cJSON_CreateObject();
	cJSON *mobj = NULL;
	if (kp_fw_manifest_to_json(m, &mjson, &mlen) == KP_OK)
		mobj = cJSON_ParseWithLength(mjson, mlen);
	if (root && mobj) {
		cJSON_AddBoolToObject(root, "ok", 1);
		cJSON_AddStringToObject(root, "bundle", path);
		cJSON_AddStringToObject(root, "key_id", keyhex);
		cJSON_AddItemToObject(root, "manifest", mobj);
		mobj = NULL;
		char *text = cJSON_Print(root);
		if (text)
			printf("%s\n", text);
		free(text);
	}
	cJSON_Delete(mobj);
	cJSON_Delete(root);
	free(mjson);
}

int kfw_verify(kfw_ctx *ctx, int argc, char **argv)
{
	const char *pubkey = NULL, *keys_dir = NULL, *board = NULL, *installed = NULL, *counter = NULL,
		   *slots_dir = NULL, *maxs = NULL;
	const kfw_opt opts[] = {
		{"--pubkey", &pubkey, NULL},
		{"--keys-dir", &keys_dir, NULL},
		{"--board", &board, NULL},
		{"--installed-version", &installed, NULL},
		{"--rollback-counter", &counter, NULL},
		{"--slots", &slots_dir, NULL},
		{"--max-size", &maxs, NULL},
	};
	const char *pos[1];
	size_t npos;
	uint64_t n = 0;
	kp_fw_policy pol = {0};
	kp_fw_keyring *ring = NULL;
	kp_fw_bundle *b = NULL;
	kp_slots *slots = NULL;
	kp_fw_check chk;
	kp_fw_why why;
	kp_err err;
	int rc = kfw_parse(ctx, kfw_verify, argc, argv, opts, sizeof(opts) / sizeof(opts[0]), pos, 1, &npos);
	if (rc != KFW_EXIT_OK)
		return rc;
	if (npos != 1)
		return kfw_usage_error(ctx, kfw_verify, "needs the BUNDLE to verify");
	if (!board)
		return kfw_usage_error(ctx, kfw_verify, "needs --board B (the board of this device)");
	if (slots_dir && (installed || counter))
		return kfw_usage_error(ctx, kfw_verify, "--slots takes the version and counter from the device; "
							 "do not also give --installed-version/--rollback-counter");
	if (maxs && !kfw_number(ctx, kfw_verify, "--max-size", maxs, UINT64_MAX / 2, &pol.max_size))
		return KFW_EXIT_USAGE;
	if (installed) {
		if (kp_fw_version_parse(installed, &pol.installed) != KP_OK)
			return kfw_usage_error(ctx, kfw_verify, "--installed-version \"%s\" is not MAJOR.MINOR.PATCH",
					       installed);
		pol.has_installed = true;
	}
	if (counter) {
		if (!kfw_number(ctx, kfw_verify, "--rollback-counter", counter, UINT32_MAX, &n))
			return KFW_EXIT_USAGE;
		pol.rollback_counter = (uint32_t)n;
	}
	pol.board = board;

	if (!(ring = malloc(sizeof(*ring))))
		return kfw_fail(ctx, kfw_verify, KFW_EXIT_FAILED, "out of memory");
	kp_fw_keyring_init(ring);
	if ((rc = kfw_load_keys(ctx, kfw_verify, pubkey, keys_dir, ring)) != KFW_EXIT_OK)
		goto out;
	if (slots_dir) {
		if ((err = kp_slots_open_dir(&ctx->env, slots_dir, 0, &slots, &why)) != KP_OK) {
			rc = kfw_fail(ctx, kfw_verify, kfw_exit_for(err), "%s", why.text);
			goto out;
		}
		uint64_t max = pol.max_size;
		kp_slots_policy(slots, board, max, &pol);
	}
	if ((err = kp_fw_bundle_open(pos[0], ring, &pol, &b, &chk)) != KP_OK ||
	    (err = kp_fw_bundle_read_payloads(b, NULL, &chk)) != KP_OK) {
		rc = kfw_refused(ctx, kfw_verify, err, &chk);
		goto out;
	}
	char keyhex[2 * KP_FW_KEY_ID_LEN + 1];
	kp_fw_bundle_key_id_hex(b, keyhex);
	print_verified(ctx, pos[0], kp_fw_bundle_manifest(b), keyhex);
	rc = KFW_EXIT_OK;
out:
	kp_fw_bundle_close(b);
	kp_slots_close(slots);
	if (ring) {
		kp_fw_keyring_free(ring);
		free(ring);
	}
	return rc;
}
