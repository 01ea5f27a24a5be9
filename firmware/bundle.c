/* bundle.c — reading, checking and writing kioskpay firmware bundles. The
 * order of checks matters: sizes before reads, the signature before the JSON
 * parser sees the manifest, the policy before a single payload byte is used. */
#include "bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <mbedtls/md.h>
#include <mbedtls/platform_util.h>

#define COPY_CHUNK (64 * 1024)
#define MAX_JSON_INT 9007199254740992.0 /* 2^53: integers above are not exact in a double */

struct kp_fw_bundle {
	int fd;
	char path[KP_FW_PATH_MAX];
	uint64_t file_size;
	bool payloads_read;
	unsigned char key_id[KP_FW_KEY_ID_LEN];
	kp_fw_manifest manifest;
};

static const char *const refusal_names[KP_FW_R__COUNT] = {
	[KP_FW_ACCEPTED] = "accepted",
	[KP_FW_R_IO] = "io",
	[KP_FW_R_NOT_BUNDLE] = "not_bundle",
	[KP_FW_R_TRUNCATED] = "truncated",
	[KP_FW_R_OVERSIZE] = "oversize",
	[KP_FW_R_NO_SIGNATURE] = "no_signature",
	[KP_FW_R_BAD_SIGNATURE] = "bad_signature",
	[KP_FW_R_UNKNOWN_KEY] = "unknown_key",
	[KP_FW_R_BAD_MANIFEST] = "bad_manifest",
	[KP_FW_R_BAD_NAME] = "bad_name",
	[KP_FW_R_WRONG_BOARD] = "wrong_board",
	[KP_FW_R_DOWNGRADE] = "downgrade",
	[KP_FW_R_MIN_VERSION] = "min_version",
	[KP_FW_R_ROLLBACK] = "rollback",
	[KP_FW_R_SIZE_MISMATCH] = "size_mismatch",
	[KP_FW_R_HASH_MISMATCH] = "hash_mismatch",
	[KP_FW_R_CORRUPT] = "corrupt",
};

const char *kp_fw_refusal_name(kp_fw_refusal r)
{
	if ((int)r < 0 || r >= KP_FW_R__COUNT || !refusal_names[r])
		return "unknown";
	return refusal_names[r];
}

/* Fill chk and return err. */
static kp_err refuse(kp_fw_check *chk, kp_err err, kp_fw_refusal r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static kp_err refuse(kp_fw_check *chk, kp_err err, kp_fw_refusal r, const char *fmt, ...)
{
	chk->refusal = r;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(chk->why.text, sizeof(chk->why.text), fmt, ap);
	va_end(ap);
	return err;
}

/* ---- versions and names ---- */

static bool parse_part(const char **p, char stop, uint32_t *out)
{
	const char *s = *p;
	uint64_t v = 0;
	size_t n = 0;
	while (s[n] >= '0' && s[n] <= '9') {
		v = v * 10 + (uint64_t)(s[n] - '0');
		if (++n > 10 || v > UINT32_MAX)
			return false;
	}
	if (n == 0 || (n > 1 && s[0] == '0') || s[n] != stop)
		return false;
	*out = (uint32_t)v;
	*p = s + n + (stop ? 1 : 0);
	return true;
}

kp_err kp_fw_version_parse(const char *text, kp_fw_version *out)
{
	kp_fw_version v;
	const char *p = text;
	if (!text || !parse_part(&p, '.', &v.major) || !parse_part(&p, '.', &v.minor) || !parse_part(&p, 0, &v.patch))
		return KP_ERR_INVALID;
	*out = v;
	return KP_OK;
}

int kp_fw_version_cmp(const kp_fw_version *a, const kp_fw_version *b)
{
	if (a->major != b->major)
		return a->major < b->major ? -1 : 1;
	if (a->minor != b->minor)
		return a->minor < b->minor ? -1 : 1;
	if (a->patch != b->patch)
		return a->patch < b->patch ? -1 : 1;
	return 0;
}

void kp_fw_version_format(const kp_fw_version *v, char *buf, size_t cap)
{
	snprintf(buf, cap, "%u.%u.%u", (unsigned)v->major, (unsigned)v->minor, (unsigned)v->patch);
}

bool kp_fw_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > KP_FW_NAME_MAX || name[0] == '.' || strstr(name, "..") != NULL)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
			  c == '_' || c == '-';
		if (!ok)
			return false;
	}
	return true;
}

/* ---- manifest ---- */

static bool json_uint(const cJSON *item, double max, uint64_t *out)
{
	if (!cJSON_IsNumber(item))
		return false;
	double d = item->valuedouble;
	if (!isfinite(d) || d < 0 || d > max || floor(d) != d)
		return false;
	*out = (uint64_t)d;
	return true;
}

/* Printable, bounded copy of untrusted text for a message. */
static void shown(const char *s, char *buf, size_t cap)
{
	size_t j = 0;
	for (size_t i = 0; s[i] && j + 1 < cap; i++)
		buf[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	buf[j] = 0;
}

/* Each key at most once, and only the known ones. */
static bool keys_ok(const cJSON *obj, const char *const *known, size_t nknown, char *bad, size_t cap)
{
	const cJSON *a, *b;
	cJSON_ArrayForEach(a, obj)
	{
		bool found = false;
		for (size_t i = 0; i < nknown; i++)
			found = found || strcmp(a->string, known[i]) == 0;
		if (!found) {
			snprintf(bad, cap, "unknown field \"%.40s\"", a->string);
			return false;
		}
		for (b = a->next; b; b = b->next)
			if (strcmp(a->string, b->string) == 0) {
				snprintf(bad, cap, "field \"%.40s\" twice", a->string);
				return false;
			}
	}
	return true;
}

static kp_err parse_payload(const cJSON *it, size_t i, kp_fw_payload *p, kp_fw_check *chk)
{
	static const char *const known[] = {"name", "size", "sha256"};
	char bad[96], txt[80];
	uint64_t size;
	if (!cJSON_IsObject(it))
		return refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST, "manifest: payloads[%zu] is not an object", i);
	if (!keys_ok(it, known, 3, bad, sizeof(bad)))
		return refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST, "manifest: payloads[%zu]: %s", i, bad);
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
	const cJSON *sz = cJSON_GetObjectItemCaseSensitive(it, "size");
	const cJSON *sha = cJSON_GetObjectItemCaseSensitive(it, "sha256");
	if (!cJSON_IsString(name) || !sz || !cJSON_IsString(sha))
		return refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST,
			      "manifest: payloads[%zu] needs name (string), size (integer), sha256 (string)", i);
	if (!kp_fw_name_valid(name->valuestring)) {
		shown(name->valuestring, txt, sizeof(txt));
		return refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_NAME,
			      "manifest: payload name \"%s\" is not 1..64 of [A-Za-z0-9._-] without a leading '.' or \"..\"",
			      txt);
	}
	if (!json_uint(sz, MAX_JSON_INT, &size))
		return refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST,
			      "manifest: payload \"%s\": size is not a non-negative integer", name->valuestring);
	if (strlen(sha->valuestring) != 2 * KP_FW_SHA256_LEN ||
	    strspn(sha->valuestring, "0123456789abcdef") != 2 * KP_FW_SHA256_LEN ||
	    !kp_fw_unhex(sha->valuestring, p->sha256, KP_FW_SHA256_LEN))
		return refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST,
			      "manifest: payload \"%s\": sha256 is not 64 lower-case hex digits", name->valuestring);
	snprintf(p->name, sizeof(p->name), "%s", name->valuestring);
	p->size = size;
	return KP_OK;
}

kp_err kp_fw_manifest_parse(const char *json, size_t len, kp_fw_manifest *out, kp_fw_check *chk)
{
	static const char *const known[] = {"format", "version", "board", "min_version", "rollback_counter",
					    "payloads"};
	kp_err err = KP_ERR_INVALID;
	cJSON *root = NULL;
	const char *end = NULL;
	char bad[96], txt[80];
	uint64_t u;

	memset(out, 0, sizeof(*out));
	chk->refusal = KP_FW_ACCEPTED;
	chk->why.text[0] = 0;
	if (len == 0 || len > KP_FW_MANIFEST_MAX || memchr(json, 0, len) != NULL) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST, "manifest: empty, over 64 KiB or holds a NUL byte");
		goto out;
	}
	root = cJSON_ParseWithLengthOpts(json, len, &end, false);
	if (!root) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST, "manifest: not valid JSON (near byte %zu)",
			     end && end >= json ? (size_t)(end - json) : (size_t)0);
		goto out;
	}
	while (end && (size_t)(end - json) < len && strchr(" \t\r\n", *end))
		end++;
	if (!end || (size_t)(end - json) != len) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST, "manifest: text after the JSON object");
		goto out;
	}
	if (!cJSON_IsObject(root)) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST, "manifest: not a JSON object");
		goto out;
	}
	if (!keys_ok(root, known, sizeof(known) / sizeof(known[0]), bad, sizeof(bad))) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST, "manifest: %s", bad);
		goto out;
	}
	const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
	const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "version");
	const cJSON *board = cJSON_GetObjectItemCaseSensitive(root, "board");
	const cJSON *minv = cJSON_GetObjectItemCaseSensitive(root, "min_version");
	const cJSON *rb = cJSON_GetObjectItemCaseSensitive(root, "rollback_counter");
	const cJSON *payloads = cJSON_GetObjectItemCaseSensitive(root, "payloads");
	const char *missing = !format ? "format" : !version ? "version" : !board ? "board" : !minv ? "min_version"
			      : !rb ? "rollback_counter" : !payloads ? "payloads" : NULL;
	if (missing) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST, "manifest: field \"%s\" missing", missing);
		goto out;
	}
	if (!json_uint(format, MAX_JSON_INT, &u) || u != KP_FW_FORMAT) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST, "manifest: format is not %d", KP_FW_FORMAT);
		goto out;
	}
	if (!cJSON_IsString(version) || kp_fw_version_parse(version->valuestring, &out->version) != KP_OK) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST, "manifest: version is not \"MAJOR.MINOR.PATCH\"");
		goto out;
	}
	if (!cJSON_IsString(minv) || kp_fw_version_parse(minv->valuestring, &out->min_version) != KP_OK) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST, "manifest: min_version is not \"MAJOR.MINOR.PATCH\"");
		goto out;
	}
	if (kp_fw_version_cmp(&out->min_version, &out->version) > 0) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST, "manifest: min_version is above version");
		goto out;
	}
	if (!cJSON_IsString(board)) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST, "manifest: board is not a string");
		goto out;
	}
	if (!kp_fw_name_valid(board->valuestring)) {
		shown(board->valuestring, txt, sizeof(txt));
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_NAME, "manifest: board \"%s\" is not a valid name", txt);
		goto out;
	}
	snprintf(out->board, sizeof(out->board), "%s", board->valuestring);
	if (!json_uint(rb, UINT32_MAX, &u)) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST,
			     "manifest: rollback_counter is not an integer in 0..4294967295");
		goto out;
	}
	out->rollback_counter = (uint32_t)u;
	int n = cJSON_IsArray(payloads) ? cJSON_GetArraySize(payloads) : -1;
	if (n < 1 || n > KP_FW_PAYLOADS_MAX) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST, "manifest: payloads is not an array of 1..%d entries",
			     KP_FW_PAYLOADS_MAX);
		goto out;
	}
	const cJSON *it;
	size_t i = 0;
	cJSON_ArrayForEach(it, payloads)
	{
		if ((err = parse_payload(it, i, &out->payloads[i], chk)) != KP_OK)
			goto out;
		for (size_t j = 0; j < i; j++)
			if (strcmp(out->payloads[j].name, out->payloads[i].name) == 0) {
				err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_NAME, "manifest: payload \"%s\" listed twice",
					     out->payloads[i].name);
				goto out;
			}
		i++;
	}
	out->npayloads = i;
	err = KP_OK;
out:
	cJSON_Delete(root);
	return err;
}

kp_err kp_fw_manifest_to_json(const kp_fw_manifest *m, char **json, size_t *len)
{
	char v[KP_FW_VERSION_TEXT_MAX], mv[KP_FW_VERSION_TEXT_MAX], hex[2 * KP_FW_SHA256_LEN + 1];
	kp_err err = KP_ERR_NOMEM;
	cJSON *root = cJSON_CreateObject(), *arr = NULL;

	*json = NULL;
	kp_fw_version_format(&m->version, v, sizeof(v));
	kp_fw_version_format(&m->min_version, mv, sizeof(mv));
	if (!root || !cJSON_AddNumberToObject(root, "format", KP_FW_FORMAT) || !cJSON_AddStringToObject(root, "version", v) ||
	    !cJSON_AddStringToObject(root, "board", m->board) || !cJSON_AddStringToObject(root, "min_version", mv) ||
	    !cJSON_AddNumberToObject(root, "rollback_counter", (double)m->rollback_counter) ||
	    !(arr = cJSON_AddArrayToObject(root, "payloads")))
		goto out;
	for (size_t i = 0; i < m->npayloads; i++) {
		cJSON *p = cJSON_CreateObject();
		if (!p)
			goto out;
		cJSON_AddItemToArray(arr, p);
		kp_fw_hex(m->payloads[i].sha256, KP_FW_SHA256_LEN, hex);
		if (!cJSON_AddStringToObject(p, "name", m->payloads[i].name) ||
		    !cJSON_AddNumberToObject(p, "size", (double)m->payloads[i].size) ||
		    !cJSON_AddStringToObject(p, "sha256", hex))
			goto out;
	}
	if (!(*json = cJSON_PrintUnformatted(root)))
		goto out;
	*len = strlen(*json);
	err = *len <= KP_FW_MANIFEST_MAX ? KP_OK : KP_ERR_TOO_BIG;
	if (err != KP_OK) {
		free(*json);
		*json = NULL;
	}
out:
	cJSON_Delete(root);
	return err;
}

/* ---- reading ---- */

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_u64(const unsigned char *p)
{
	return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

static void put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void put_u64(unsigned char *p, uint64_t v)
{
	put_u32(p, (uint32_t)(v >> 32));
	put_u32(p + 4, (uint32_t)v);
}

/* Read len bytes at the current offset; a short read is truncation. */
static kp_err read_exact(kp_fw_bundle *b, void *buf, size_t len, const char *what, kp_fw_check *chk)
{
	kp_err err = kp_fw_fd_read_all(b->fd, buf, len);
	if (err == KP_ERR_CORRUPT)
		return refuse(chk, KP_ERR_CORRUPT, KP_FW_R_TRUNCATED, "%s: truncated: the file ends inside %s", b->path, what);
	if (err != KP_OK)
		return refuse(chk, KP_ERR_IO, KP_FW_R_IO, "%s: cannot read %s: %s", b->path, what, strerror(errno));
	return KP_OK;
}

static kp_err check_policy(const kp_fw_bundle *b, const kp_fw_policy *pol, kp_fw_check *chk)
{
	const kp_fw_manifest *m = &b->manifest;
	char v[KP_FW_VERSION_TEXT_MAX], iv[KP_FW_VERSION_TEXT_MAX], mv[KP_FW_VERSION_TEXT_MAX];
	kp_fw_version_format(&m->version, v, sizeof(v));
	kp_fw_version_format(&m->min_version, mv, sizeof(mv));
	kp_fw_version_format(&pol->installed, iv, sizeof(iv));
	if (!pol->board || strcmp(pol->board, m->board) != 0)
		return refuse(chk, KP_ERR_INVALID, KP_FW_R_WRONG_BOARD, "%s: wrong board: built for %s, this is %s", b->path,
			      m->board, pol->board ? pol->board : "(none given)");
	if (pol->has_installed && kp_fw_version_cmp(&m->version, &pol->installed) < 0)
		return refuse(chk, KP_ERR_INVALID, KP_FW_R_DOWNGRADE, "%s: version %s is below the installed %s", b->path, v,
			      iv);
	if (pol->has_installed && kp_fw_version_cmp(&pol->installed, &m->min_version) < 0)
		return refuse(chk, KP_ERR_INVALID, KP_FW_R_MIN_VERSION,
			      "%s: needs version %s or later installed first, this device has %s", b->path, mv, iv);
	if (m->rollback_counter < pol->rollback_counter)
		return refuse(chk, KP_ERR_INVALID, KP_FW_R_ROLLBACK, "%s: rollback counter %u is below the device's %u",
			      b->path, (unsigned)m->rollback_counter, (unsigned)pol->rollback_counter);
	return KP_OK;
}

kp_err kp_fw_bundle_open(const char *path, kp_fw_keyring *keys, const kp_fw_policy *policy, kp_fw_bundle **out,
			 kp_fw_check *chk)
{
	unsigned char hdr[KP_FW_HEADER_LEN], sig[KP_FW_SIG_MAX], digest[KP_FW_SHA256_LEN];
	char idhex[2 * KP_FW_KEY_ID_LEN + 1];
	char *mtext = NULL;
	kp_err err;
	struct stat st;
	uint64_t max = policy->max_size ? policy->max_size : KP_FW_BUNDLE_MAX_DEFAULT;
	kp_fw_bundle *b = calloc(1, sizeof(*b));

	*out = NULL;
	chk->refusal = KP_FW_ACCEPTED;
	chk->why.text[0] = 0;
	if (!b)
		return refuse(chk, KP_ERR_NOMEM, KP_FW_R_IO, "%s: out of memory", path);
	snprintf(b->path, sizeof(b->path), "%s", path);
	b->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (b->fd < 0) {
		err = refuse(chk, errno == ENOENT ? KP_ERR_NOT_FOUND : KP_ERR_IO, KP_FW_R_IO, "%s: cannot open: %s", path,
			     strerror(errno));
		goto out;
	}
	if (fstat(b->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		err = refuse(chk, KP_ERR_IO, KP_FW_R_IO, "%s: not a regular file", path);
		goto out;
	}
	b->file_size = (uint64_t)st.st_size;
	if (b->file_size > max) {
		err = refuse(chk, KP_ERR_TOO_BIG, KP_FW_R_OVERSIZE, "%s: oversize: %llu bytes, more than the %llu allowed",
			     path, (unsigned long long)b->file_size, (unsigned long long)max);
		goto out;
	}
	size_t got = b->file_size < sizeof(hdr) ? (size_t)b->file_size : sizeof(hdr);
	if ((err = read_exact(b, hdr, got, "the header", chk)) != KP_OK)
		goto out;
	if (got < 8 || memcmp(hdr, KP_FW_MAGIC, 8) != 0) {
		err = refuse(chk, KP_ERR_CORRUPT, KP_FW_R_NOT_BUNDLE, "%s: not a kioskpay bundle (no %s magic)", path,
			     KP_FW_MAGIC);
		goto out;
	}
	if (got < sizeof(hdr)) {
		err = refuse(chk, KP_ERR_CORRUPT, KP_FW_R_TRUNCATED, "%s: truncated: %zu bytes, shorter than the header",
			     path, got);
		goto out;
	}
	uint32_t format = get_u32(hdr + 8), mlen = get_u32(hdr + 12), slen = get_u32(hdr + 16);
	if (format != KP_FW_FORMAT || get_u32(hdr + 20) != 0) {
		err = refuse(chk, KP_ERR_CORRUPT, KP_FW_R_NOT_BUNDLE, "%s: bundle format %u, this tool reads %d", path,
			     (unsigned)format, KP_FW_FORMAT);
		goto out;
	}
	if (mlen > KP_FW_MANIFEST_MAX) {
		err = refuse(chk, KP_ERR_TOO_BIG, KP_FW_R_OVERSIZE, "%s: oversize manifest: %u bytes, more than %d", path,
			     (unsigned)mlen, KP_FW_MANIFEST_MAX);
		goto out;
	}
	if (mlen == 0) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_MANIFEST, "%s: empty manifest", path);
		goto out;
	}
	if (slen == 0) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_NO_SIGNATURE, "%s: unsigned: the bundle carries no signature",
			     path);
		goto out;
	}
	if (slen > KP_FW_SIG_MAX) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_SIGNATURE, "%s: bad signature: %u bytes, more than %d", path,
			     (unsigned)slen, KP_FW_SIG_MAX);
		goto out;
	}
	if ((uint64_t)KP_FW_HEADER_LEN + mlen + slen > b->file_size) {
		err = refuse(chk, KP_ERR_CORRUPT, KP_FW_R_TRUNCATED,
			     "%s: truncated: %llu bytes, the header announces a manifest and signature past the end", path,
			     (unsigned long long)b->file_size);
		goto out;
	}
	memcpy(b->key_id, hdr + 24, KP_FW_KEY_ID_LEN);
	if (!(mtext = malloc(mlen))) {
		err = refuse(chk, KP_ERR_NOMEM, KP_FW_R_IO, "%s: out of memory", path);
		goto out;
	}
	if ((err = read_exact(b, mtext, mlen, "the manifest", chk)) != KP_OK ||
	    (err = read_exact(b, sig, slen, "the signature", chk)) != KP_OK)
		goto out;

	/* Authenticate before parsing: the JSON parser only sees signed bytes. */
	kp_fw_hex(b->key_id, KP_FW_KEY_ID_LEN, idhex);
	mbedtls_pk_context *key = kp_fw_keyring_find(keys, b->key_id);
	if (!key) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_UNKNOWN_KEY, "%s: unknown key: signed by key %.16s..., not a trusted key",
			     path, idhex);
		goto out;
	}
	if (kp_fw_sha256(mtext, mlen, digest) != KP_OK) {
		err = refuse(chk, KP_ERR_INTERNAL, KP_FW_R_IO, "%s: SHA-256 unavailable", path);
		goto out;
	}
	if (!kp_fw_verify_digest(key, digest, sig, slen)) {
		err = refuse(chk, KP_ERR_INVALID, KP_FW_R_BAD_SIGNATURE,
			     "%s: bad signature: the manifest does not verify with key %.16s...", path, idhex);
		goto out;
	}
	if ((err = kp_fw_manifest_parse(mtext, mlen, &b->manifest, chk)) != KP_OK) {
		char inner[KP_FW_WHY_MAX];
		snprintf(inner, sizeof(inner), "%s", chk->why.text);
		refuse(chk, err, chk->refusal, "%s: %s", path, inner);
		goto out;
	}
	if ((err = check_policy(b, policy, chk)) != KP_OK)
		goto out;
	*out = b;
	b = NULL;
	err = KP_OK;
out:
	free(mtext);
	kp_fw_bundle_close(b);
	return err;
}

const kp_fw_manifest *kp_fw_bundle_manifest(const kp_fw_bundle *b)
{
	return &b->manifest;
}

void kp_fw_bundle_key_id_hex(const kp_fw_bundle *b, char out[2 * KP_FW_KEY_ID_LEN + 1])
{
	kp_fw_hex(b->key_id, KP_FW_KEY_ID_LEN, out);
}

/* Check one record header against the manifest entry p. */
static kp_err read_record_header(kp_fw_bundle *b, size_t i, const kp_fw_payload *p, kp_fw_check *chk)
{
	unsigned char rh[KP_FW_RECORD_HEADER_LEN];
	char name[KP_FW_NAME_MAX + 1], what[128], txt[80];
	kp_err err;

	snprintf(what, sizeof(what), "the record of payload \"%s\"", p->name);
	if ((err = read_exact(b, rh, sizeof(rh), what, chk)) != KP_OK)
		return err;
	uint32_t nlen = get_u32(rh + 4);
	uint64_t size = get_u64(rh + 8);
	if (memcmp(rh, KP_FW_RECORD_MAGIC, 4) != 0 || nlen == 0 || nlen > KP_FW_NAME_MAX)
		return refuse(chk, KP_ERR_CORRUPT, KP_FW_R_CORRUPT, "%s: corrupt: record %zu (payload \"%s\") is damaged",
			      b->path, i, p->name);
	if ((err = read_exact(b, name, nlen, what, chk)) != KP_OK)
		return err;
	name[nlen] = 0;
	if (strcmp(name, p->name) != 0) {
		shown(name, txt, sizeof(txt));
		return refuse(chk, KP_ERR_CORRUPT, KP_FW_R_CORRUPT, "%s: corrupt: record %zu is \"%s\", the manifest says \"%s\"",
			      b->path, i, txt, p->name);
	}
	if (size != p->size)
		return refuse(chk, KP_ERR_INVALID, KP_FW_R_SIZE_MISMATCH,
			      "%s: payload size mismatch: \"%s\" is %llu bytes, the manifest says %llu", b->path, p->name,
			      (unsigned long long)size, (unsigned long long)p->size);
	return KP_OK;
}

kp_err kp_fw_bundle_read_payloads(kp_fw_bundle *b, const kp_fw_sink *sink, kp_fw_check *chk)
{
	unsigned char digest[KP_FW_SHA256_LEN];
	unsigned char *buf = NULL;
	char what[128];
	kp_err err = KP_OK;
	mbedtls_md_context_t md;

	mbedtls_md_init(&md);
	chk->refusal = KP_FW_ACCEPTED;
	chk->why.text[0] = 0;
	if (b->payloads_read) {
		err = refuse(chk, KP_ERR_STATE, KP_FW_R_IO, "%s: payloads already read", b->path);
		goto out;
	}
	b->payloads_read = true;
	if (!(buf = malloc(COPY_CHUNK)) ||
	    mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 0) != 0) {
		err = refuse(chk, KP_ERR_NOMEM, KP_FW_R_IO, "%s: out of memory", b->path);
		goto out;
	}
	for (size_t i = 0; i < b->manifest.npayloads; i++) {
		const kp_fw_payload *p = &b->manifest.payloads[i];
		if ((err = read_record_header(b, i, p, chk)) != KP_OK)
			goto out;
		if (sink && (err = sink->begin(sink->ctx, p, &chk->why)) != KP_OK) {
			chk->refusal = KP_FW_R_IO;
			goto out;
		}
		snprintf(what, sizeof(what), "payload \"%s\"", p->name);
		mbedtls_md_starts(&md);
		for (uint64_t left = p->size; left > 0;) {
			size_t n = left < COPY_CHUNK ? (size_t)left : COPY_CHUNK;
			if ((err = read_exact(b, buf, n, what, chk)) != KP_OK)
				goto out;
			mbedtls_md_update(&md, buf, n);
			if (sink && (err = sink->write(sink->ctx, buf, n, &chk->why)) != KP_OK) {
				chk->refusal = KP_FW_R_IO;
				goto out;
			}
			left -= n;
		}
		mbedtls_md_finish(&md, digest);
		if (memcmp(digest, p->sha256, sizeof(digest)) != 0) {
			err = refuse(chk, KP_ERR_INVALID, KP_FW_R_HASH_MISMATCH,
				     "%s: payload hash mismatch: SHA-256 of \"%s\" differs from the manifest", b->path,
				     p->name);
			goto out;
		}
		if (sink && (err = sink->end(sink->ctx, p, &chk->why)) != KP_OK) {
			chk->refusal = KP_FW_R_IO;
			goto out;
		}
	}
	ssize_t extra = read(b->fd, buf, 1);
	if (extra != 0) {
		err = extra < 0 ? refuse(chk, KP_ERR_IO, KP_FW_R_IO, "%s: read error: %s", b->path, strerror(errno))
				: refuse(chk, KP_ERR_CORRUPT, KP_FW_R_CORRUPT, "%s: corrupt: bytes after the last payload",
					 b->path);
		goto out;
	}
	err = KP_OK;
out:
	mbedtls_md_free(&md);
	free(buf);
	return err;
}

void kp_fw_bundle_close(kp_fw_bundle *b)
{
	if (!b)
		return;
	if (b->fd >= 0)
		close(b->fd);
	free(b);
}

kp_err kp_fw_bundle_verify(const char *path, kp_fw_keyring *keys, const kp_fw_policy *policy,
			   kp_fw_manifest *manifest, kp_fw_check *chk)
{
	kp_fw_bundle *b = NULL;
	kp_err err = kp_fw_bundle_open(path, keys, policy, &b, chk);
	if (err == KP_OK)
		err = kp_fw_bundle_read_payloads(b, NULL, chk);
	if (err == KP_OK && manifest)
		*manifest = b->manifest;
	kp_fw_bundle_close(b);
	return err;
}

/* ---- writing ---- */

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

/* Hash fd from its start; *size gets the byte count. */
static kp_err hash_fd(int fd, unsigned char *buf, unsigned char out[KP_FW_SHA256_LEN], uint64_t *size)
{
	mbedtls_md_context_t md;
	kp_err err = KP_ERR_IO;
	uint64_t total = 0;
	mbedtls_md_init(&md);
	if (lseek(fd, 0, SEEK_SET) != 0 || mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 0) != 0)
		goto out;
	mbedtls_md_starts(&md);
	for (;;) {
		ssize_t n = read(fd, buf, COPY_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto out;
		if (n == 0)
			break;
		mbedtls_md_update(&md, buf, (size_t)n);
		total += (uint64_t)n;
	}
	mbedtls_md_finish(&md, out);
	*size = total;
	err = KP_OK;
out:
	mbedtls_md_free(&md);
	return err;
}

/* Copy fd (which must still be `size` bytes with hash `sha`) to out, hashing again. */
static kp_err copy_checked(int fd, int out, unsigned char *buf, const kp_fw_payload *p)
{
	unsigned char again[KP_FW_SHA256_LEN];
	mbedtls_md_context_t md;
	kp_err err = KP_ERR_IO;
	uint64_t total = 0;
	mbedtls_md_init(&md);
	if (lseek(fd, 0, SEEK_SET) != 0 || mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 0) != 0)
		goto out;
	mbedtls_md_starts(&md);
	for (;;) {
		ssize_t n = read(fd, buf, COPY_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto out;
		if (n == 0)
			break;
		total += (uint64_t)n;
		if (total > p->size) {
			err = KP_ERR_CONFLICT;
			goto out;
		}
		mbedtls_md_update(&md, buf, (size_t)n);
		if (kp_fw_fd_write_all(out, buf, (size_t)n) != KP_OK)
			goto out;
	}
	mbedtls_md_finish(&md, again);
	err = (total == p->size && memcmp(again, p->sha256, sizeof(again)) == 0) ? KP_OK : KP_ERR_CONFLICT;
out:
	mbedtls_md_free(&md);
	return err;
}

kp_err kp_fw_bundle_pack(kp_fw_rng *rng, mbedtls_pk_context *key, const kp_fw_pack_opts *o, const char *out_path,
			 kp_fw_why *why)
{
	kp_fw_manifest *m = calloc(1, sizeof(*m));
	unsigned char *buf = malloc(COPY_CHUNK);
	unsigned char hdr[KP_FW_HEADER_LEN], rh[KP_FW_RECORD_HEADER_LEN], digest[KP_FW_SHA256_LEN], sig[KP_FW_SIG_MAX];
	char tmp[KP_FW_PATH_MAX], dir[KP_FW_PATH_MAX];
	char *mtext = NULL;
	size_t mlen = 0, slen = 0;
	int fds[KP_FW_PAYLOADS_MAX];
	size_t nopen = 0;
	int out = -1;
	bool made_tmp = false;
	kp_err err = KP_ERR_INVALID;
	uint64_t max = o->max_size ? o->max_size : KP_FW_BUNDLE_MAX_DEFAULT;

	if (!m || !buf) {
		err = kp_fw_fail(why, KP_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (!o->board || !kp_fw_name_valid(o->board)) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "board \"%s\" is not 1..64 of [A-Za-z0-9._-]", o->board ? o->board : "");
		goto out;
	}
	snprintf(m->board, sizeof(m->board), "%s", o->board);
	if (!o->version || kp_fw_version_parse(o->version, &m->version) != KP_OK) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "version \"%s\" is not MAJOR.MINOR.PATCH", o->version ? o->version : "");
		goto out;
	}
	if (kp_fw_version_parse(o->min_version ? o->min_version : "0.0.0", &m->min_version) != KP_OK ||
	    kp_fw_version_cmp(&m->min_version, &m->version) > 0) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "min-version \"%s\" is not MAJOR.MINOR.PATCH at most the version",
				 o->min_version ? o->min_version : "0.0.0");
		goto out;
	}
	m->rollback_counter = o->rollback_counter;
	if (o->nfiles == 0 || o->nfiles > KP_FW_PAYLOADS_MAX) {
		err = kp_fw_fail(why, KP_ERR_INVALID, "%zu payload files; 1..%d allowed", o->nfiles, KP_FW_PAYLOADS_MAX);
		goto out;
	}
	uint64_t total = KP_FW_HEADER_LEN;
	for (size_t i = 0; i < o->nfiles; i++) {
		kp_fw_payload *p = &m->payloads[i];
		const char *name = base_name(o->files[i]);
		struct stat st;
		if (!kp_fw_name_valid(name)) {
			err = kp_fw_fail(why, KP_ERR_INVALID,
					 "%s: payload name \"%s\" is not 1..64 of [A-Za-z0-9._-] without a leading '.' or \"..\"",
					 o->files[i], name);
			goto out;
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(m->payloads[j].name, name) == 0) {
				err = kp_fw_fail(why, KP_ERR_INVALID, "%s: payload name \"%s\" given twice", o->files[i], name);
				goto out;
			}
		snprintf(p->name, sizeof(p->name), "%s", name);
		fds[nopen] = open(o->files[i], O_RDONLY | O_CLOEXEC);
		if (fds[nopen] < 0) {
			err = kp_fw_fail(why, errno == ENOENT ? KP_ERR_NOT_FOUND : KP_ERR_IO, "cannot open %s: %s",
					 o->files[i], strerror(errno));
			goto out;
		}
		nopen++;
		if (fstat(fds[i], &st) != 0 || !S_ISREG(st.st_mode)) {
			err = kp_fw_fail(why, KP_ERR_INVALID, "%s: not a regular file", o->files[i]);
			goto out;
		}
		if (hash_fd(fds[i], buf, p->sha256, &p->size) != KP_OK) {
			err = kp_fw_fail(why, KP_ERR_IO, "cannot read %s: %s", o->files[i], strerror(errno));
			goto out;
		}
		total += KP_FW_RECORD_HEADER_LEN + strlen(name) + p->size;
	}
	m->npayloads = o->nfiles;
	if ((err = kp_fw_manifest_to_json(m, &mtext, &mlen)) != KP_OK) {
		err = kp_fw_fail(why, err, "cannot encode the manifest (%s)", kp_strerror(err));
		goto out;
	}
	if ((err = kp_fw_sha256(mtext, mlen, digest)) != KP_OK ||
	    (err = kp_fw_sign_digest(rng, key, digest, sig, sizeof(sig), &slen, why)) != KP_OK)
		goto out;
	total += mlen + slen;
	if (total > max) {
		err = kp_fw_fail(why, KP_ERR_TOO_BIG, "bundle would be %llu bytes, more than the %llu allowed",
				 (unsigned long long)total, (unsigned long long)max);
		goto out;
	}

	memcpy(hdr, KP_FW_MAGIC, 8);
	put_u32(hdr + 8, KP_FW_FORMAT);
	put_u32(hdr + 12, (uint32_t)mlen);
	put_u32(hdr + 16, (uint32_t)slen);
	put_u32(hdr + 20, 0);
	if ((err = kp_fw_key_id(key, hdr + 24)) != KP_OK) {
		err = kp_fw_fail(why, err, "cannot compute the key id");
		goto out;
	}

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", out_path) >= (int)sizeof(tmp) ||
	    snprintf(dir, sizeof(dir), "%s", out_path) >= (int)sizeof(dir)) {
		err = kp_fw_fail(why, KP_ERR_TOO_BIG, "path too long: %s", out_path);
		goto out;
	}
	char *slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = 0;
	else
		*slash = 0;
	(void)unlink(tmp);
	out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (out < 0) {
		err = kp_fw_fail(why, KP_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
		goto out;
	}
	made_tmp = true;
	if (kp_fw_fd_write_all(out, hdr, sizeof(hdr)) != KP_OK || kp_fw_fd_write_all(out, mtext, mlen) != KP_OK ||
	    kp_fw_fd_write_all(out, sig, slen) != KP_OK) {
		err = kp_fw_fail(why, KP_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	for (size_t i = 0; i < m->npayloads; i++) {
		const kp_fw_payload *p = &m->payloads[i];
		size_t nlen = strlen(p->name);
		memcpy(rh, KP_FW_RECORD_MAGIC, 4);
		put_u32(rh + 4, (uint32_t)nlen);
		put_u64(rh + 8, p->size);
		if (kp_fw_fd_write_all(out, rh, sizeof(rh)) != KP_OK || kp_fw_fd_write_all(out, p->name, nlen) != KP_OK) {
			err = kp_fw_fail(why, KP_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
			goto out;
		}
		err = copy_checked(fds[i], out, buf, p);
		if (err == KP_ERR_CONFLICT) {
			err = kp_fw_fail(why, KP_ERR_CONFLICT, "%s changed while it was being packed", o->files[i]);
			goto out;
		}
		if (err != KP_OK) {
			err = kp_fw_fail(why, KP_ERR_IO, "cannot copy %s into %s: %s", o->files[i], tmp, strerror(errno));
			goto out;
		}
	}
	if (fsync(out) != 0 || close(out) != 0) {
		out = -1;
		err = kp_fw_fail(why, KP_ERR_IO, "cannot sync %s: %s", tmp, strerror(errno));
		goto out;
	}
	out = -1;
	if (rename(tmp, out_path) != 0) {
		err = kp_fw_fail(why, KP_ERR_IO, "cannot rename %s to %s: %s", tmp, out_path, strerror(errno));
		goto out;
	}
	made_tmp = false;
	err = kp_fw_dir_sync(dir, why);
out:
	if (out >= 0)
		close(out);
	if (made_tmp)
		(void)unlink(tmp);
	for (size_t i = 0; i < nopen; i++)
		close(fds[i]);
	free(mtext);
	free(buf);
	free(m);
	return err;
}
