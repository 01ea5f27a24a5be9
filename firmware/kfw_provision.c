/* kfw_provision.c — kioskfw provision keygen|install|show|sign-dev: the device
 * identity on the device, and a development signer for tests. */
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "kioskfw.h"
#include "provision.h"

int kfw_prov_keygen(kfw_ctx *ctx, int argc, char **argv)
{
	const char *dir = NULL, *id = NULL;
	const kfw_opt opts[] = {{"--dir", &dir, NULL}, {"--device-id", &id, NULL}};
	size_t npos;
	kp_fw_why why;
	int rc = kfw_parse(ctx, kfw_prov_keygen, argc, argv, opts, 2, NULL, 0, &npos);
	if (rc != KFW_EXIT_OK)
		return rc;
	if (!dir || !id)
		return kfw_usage_error(ctx, kfw_prov_keygen, "needs --dir D and --device-id ID");
	kp_err err = kp_prov_keygen(&ctx->env, dir, id, &why);
	if (err != KP_OK)
		return kfw_fail(ctx, kfw_prov_keygen, err == KP_ERR_IO ? KFW_EXIT_CANNOT_OPEN : KFW_EXIT_FAILED, "%s",
				why.text);
	printf("device key: %s/%s (0600, stays on this device)\n"
	       "CSR: %s/%s (CN=%s): send it to the provisioning CA\n",
	       dir, KP_PROV_KEY_FILE, dir, KP_PROV_CSR_FILE, id);
	return KFW_EXIT_OK;
}

int kfw_prov_install(kfw_ctx *ctx, int argc, char **argv)
{
	const char *dir = NULL, *cert = NULL, *ca = NULL;
	const kfw_opt opts[] = {{"--dir", &dir, NULL}, {"--cert", &cert, NULL}, {"--ca", &ca, NULL}};
	size_t npos;
	kp_fw_why why;
	int rc = kfw_parse(ctx, kfw_prov_install, argc, argv, opts, 3, NULL, 0, &npos);
	if (rc != KFW_EXIT_OK)
		return rc;
	if (!dir || !cert || !ca)
		return kfw_usage_error(ctx, kfw_prov_install, "needs --dir, --cert and --ca");
	kp_err err = kp_prov_install(&ctx->env, dir, cert, ca, &why);
	if (err != KP_OK)
		return kfw_fail(ctx, kfw_prov_install, kfw_exit_for(err), "%s", why.text);
	printf("installed %s/%s and %s/%s (0600)\n", dir, KP_PROV_CRT_FILE, dir, KP_PROV_CA_FILE);
	return KFW_EXIT_OK;
}

int kfw_prov_show(kfw_ctx *ctx, int argc, char **argv)
{
	const char *dir = NULL;
	const kfw_opt opts[] = {{"--dir", &dir, NULL}};
	size_t npos;
	kp_prov_identity id;
	kp_fw_why why;
	int rc = kfw_parse(ctx, kfw_prov_show, argc, argv, opts, 1, NULL, 0, &npos);
	if (rc != KFW_EXIT_OK)
		return rc;
	if (!dir)
		return kfw_usage_error(ctx, kfw_prov_show, "needs --dir D");
	kp_err err = kp_prov_show(&ctx->env, dir, &id, &why);
	if (err != KP_OK)
		return kfw_fail(ctx, kfw_prov_show, kfw_exit_for(err), "%s", why.text);
	bool key_private = (id.key_mode & 077) == 0;
	if (ctx->json) {
		cJSON *o = cJSON_CreateObject();
		char mode[8];
		snprintf(mode, sizeof(mode), "%04o", id.key_mode);
		if (o) {
			cJSON_AddStringToObject(o, "device_id", id.device_id);
			cJSON_AddStringToObject(o, "key_mode", mode);
			cJSON_AddBoolToObject(o, "certificate", id.cert_present);
			cJSON_AddBoolToObject(o, "ca", id.ca_present);
			if (id.cert_present) {
				cJSON_AddStringToObject(o, "subject", id.subject);
				cJSON_AddStringToObject(o, "issuer", id.issuer);
				cJSON_AddStringToObject(o, "serial", id.serial);
				cJSON_AddStringToObject(o, "not_before", id.not_before);
				cJSON_AddStringToObject(o, "not_after", id.not_after);
				cJSON_AddStringToObject(o, "sha256_fingerprint", id.fingerprint);
				cJSON_AddBoolToObject(o, "valid_now", id.valid_now);
				cJSON_AddBoolToObject(o, "key_matches", id.key_matches);
			} else {
				cJSON_AddStringToObject(o, "csr_subject", id.csr_subject);
			}
			char *text = cJSON_Print(o);
			if (text)
				printf("%s\n", text);
			free(text);
			cJSON_Delete(o);
		}
	} else {
		printf("device id: %s\n", id.device_id[0] ? id.device_id : "(unknown)");
		printf("key: %s/%s, mode %04o%s\n", dir, KP_PROV_KEY_FILE, id.key_mode,
		       key_private ? "" : " (TOO OPEN: chmod 600)");
		if (!id.cert_present) {
			printf("certificate: none installed yet (CSR: %s)\n", id.csr_present ? id.csr_subject : "missing");
		} else {
			printf("subject: %s\nissuer: %s\nserial: %s\nvalid: %s to %s (%s)\nsha256 fingerprint: %s\n"
			       "key matches certificate: %s\nCA certificate: %s\n",
			       id.subject, id.issuer, id.serial, id.not_before, id.not_after,
			       id.valid_now ? "valid now" : "NOT valid now", id.fingerprint, id.key_matches ? "yes" : "NO",
			       id.ca_present ? "installed" : "missing");
		}
	}
	if (!key_private)
		return kfw_fail(ctx, kfw_prov_show, KFW_EXIT_FAILED, "%s/%s is open to group or others (mode %04o)", dir,
				KP_PROV_KEY_FILE, id.key_mode);
	if (id.cert_present && !id.key_matches)
		return kfw_fail(ctx, kfw_prov_show, KFW_EXIT_FAILED, "%s/%s is not for the device key", dir, KP_PROV_CRT_FILE);
	if (id.cert_present && !id.valid_now)
		return kfw_fail(ctx, kfw_prov_show, KFW_EXIT_FAILED, "%s/%s is not valid now", dir, KP_PROV_CRT_FILE);
	return KFW_EXIT_OK;
}

int kfw_prov_sign_dev(kfw_ctx *ctx, int argc, char **argv)
{
	const char *ca_key = NULL, *ca = NULL, *csr = NULL, *out = NULL, *days = NULL;
	const kfw_opt opts[] = {{"--ca-key", &ca_key, NULL}, {"--ca", &ca, NULL}, {"--csr", &csr, NULL},
				{"-o", &out, NULL},          {"--output", &out, NULL}, {"--days", &days, NULL}};
	size_t npos;
	uint64_t ndays = 365;
	kp_fw_why why;
	int rc = kfw_parse(ctx, kfw_prov_sign_dev, argc, argv, opts, sizeof(opts) / sizeof(opts[0]), NULL, 0, &npos);
	if (rc != KFW_EXIT_OK)
		return rc;
	if (!ca_key || !ca || !csr || !out)
		return kfw_usage_error(ctx, kfw_prov_sign_dev, "needs --ca-key, --ca, --csr and -o");
	if (days && (!kfw_number(ctx, kfw_prov_sign_dev, "--days", days, 3650, &ndays) || ndays == 0))
		return ndays == 0 ? kfw_usage_error(ctx, kfw_prov_sign_dev, "--days must be 1..3650") : KFW_EXIT_USAGE;
	fprintf(stderr, "kioskfw provision sign-dev: DEVELOPMENT CA ONLY, not for production devices\n");
	kp_err err = kp_prov_sign_dev(&ctx->env, ca_key, ca, csr, out, (unsigned)ndays, &why);
	if (err != KP_OK)
		return kfw_fail(ctx, kfw_prov_sign_dev, kfw_exit_for(err), "%s", why.text);
	printf("wrote %s (development certificate, %llu days)\n", out, (unsigned long long)ndays);
	return KFW_EXIT_OK;
}
