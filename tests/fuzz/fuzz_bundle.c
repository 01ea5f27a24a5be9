/* fuzz_bundle.c — the firmware bundle reader (firmware/bundle.h) on hostile
 * files. The first byte picks what the rest is:
 *   0  a whole bundle file (header, lengths, key id, signature: the checks
 *      before anything is authenticated);
 *   1  2 bytes of manifest length M, M bytes of manifest, then the payload
 *      records: the harness writes header and signature with its own trusted
 *      key, so the manifest parser, the policy and the streaming payload
 *      check run on signed hostile bytes (the way an attacker with a stolen
 *      key, or a bug in pack, would reach them);
 *   2  a manifest for kp_fw_manifest_parse alone: what parses must print as
 *      JSON that parses to the same manifest.
 * Bundles are written to a memfd and opened through /proc/self/fd. */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bundle.h"
#include "fuzz.h"
#include "kp_env.h"

#define BUNDLE_MAX (1u << 20)

static kp_env env;
static kp_fake_world world;
static kp_fw_rng rng;
static mbedtls_pk_context key;
static kp_fw_keyring ring;
static unsigned char key_id[KP_FW_KEY_ID_LEN];
static int fd_bundle = -1;
static char path_bundle[64];
static unsigned char *file;
/* the last manifest signed, to sign again only when it changed */
static unsigned char last_digest[KP_FW_SHA256_LEN];
static unsigned char last_sig[KP_FW_SIG_MAX];
static size_t last_sig_len;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	kp_fw_why why;
	unsigned char pem[1024];

	kp_env_init_fake(&env, &world, 0xb0d1e, 0);
	world.quiet = true;
	kp_fw_rng_init(&rng);
	FUZZ_CHECK(kp_fw_rng_setup(&rng, &env) == KP_OK);
	mbedtls_pk_init(&key);
	FUZZ_CHECK(kp_fw_key_generate(&rng, &key, &why) == KP_OK);
	FUZZ_CHECK(kp_fw_key_id(&key, key_id) == KP_OK);
	FUZZ_CHECK(kp_fw_key_pem(&key, false, pem, sizeof(pem), &why) == KP_OK);

	/* the keyring reads keys from files: the public key via a memfd */
	int fd_key = memfd_create("kp-fuzz-bundle-key", 0);
	FUZZ_CHECK(fd_key >= 0);
	FUZZ_CHECK(write(fd_key, pem, strlen((const char *)pem)) == (ssize_t)strlen((const char *)pem));
	char path_key[64];
	snprintf(path_key, sizeof(path_key), "/proc/self/fd/%d", fd_key);
	kp_fw_keyring_init(&ring);
	FUZZ_CHECK(kp_fw_keyring_add_file(&ring, path_key, &why) == KP_OK);
	close(fd_key);

	fd_bundle = memfd_create("kp-fuzz-bundle", 0);
	FUZZ_CHECK(fd_bundle >= 0);
	snprintf(path_bundle, sizeof(path_bundle), "/proc/self/fd/%d", fd_bundle);
	file = malloc(BUNDLE_MAX);
	FUZZ_CHECK(file != NULL);
	return 0;
}

void kp_fuzz_cleanup(void)
{
	kp_fw_keyring_free(&ring);
	mbedtls_pk_free(&key);
	kp_fw_rng_free(&rng);
	if (fd_bundle >= 0)
		close(fd_bundle);
	fd_bundle = -1;
	free(file);
	file = NULL;
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* The sink checks the reader's promise: begin, writes adding up to at most
 * the payload's size, end only when all of it came. */
struct sink_state {
	const kp_fw_payload *cur;
	uint64_t got;
	size_t ended;
};

static kp_err sink_begin(void *ctx, const kp_fw_payload *p, kp_fw_why *why)
{
	(void)why;
	struct sink_state *s = ctx;
	FUZZ_CHECK(s->cur == NULL);
	s->cur = p;
	s->got = 0;
	return KP_OK;
}

static kp_err sink_write(void *ctx, const void *buf, size_t len, kp_fw_why *why)
{
	(void)buf;
	(void)why;
	struct sink_state *s = ctx;
	FUZZ_CHECK(s->cur != NULL);
	s->got += len;
	FUZZ_CHECK(s->got <= s->cur->size);
	return KP_OK;
}

static kp_err sink_end(void *ctx, const kp_fw_payload *p, kp_fw_why *why)
{
	(void)why;
	struct sink_state *s = ctx;
	FUZZ_CHECK(s->cur == p && s->got == p->size);
	s->cur = NULL;
	s->ended++;
	return KP_OK;
}

static void open_and_read(size_t len)
{
	kp_fw_policy policy = {
		.board = "qemu-aarch64",
		.has_installed = true,
		.installed = {1, 0, 0},
		.rollback_counter = 2,
		.max_size = BUNDLE_MAX,
	};
	kp_fw_check chk;
	kp_fw_bundle *b = NULL;

	FUZZ_CHECK(ftruncate(fd_bundle, 0) == 0);
	FUZZ_CHECK(pwrite(fd_bundle, file, len, 0) == (ssize_t)len);
	kp_err err = kp_fw_bundle_open(path_bundle, &ring, &policy, &b, &chk);
	FUZZ_CHECK(memchr(chk.why.text, '\0', sizeof(chk.why.text)) != NULL);
	if (err != KP_OK) {
		FUZZ_CHECK(b == NULL && chk.refusal != KP_FW_ACCEPTED && chk.why.text[0]);
		return;
	}
	const kp_fw_manifest *m = kp_fw_bundle_manifest(b);
	FUZZ_CHECK(m->npayloads >= 1 && m->npayloads <= KP_FW_PAYLOADS_MAX);
	FUZZ_CHECK(strcmp(m->board, "qemu-aarch64") == 0);
	struct sink_state st = {NULL, 0, 0};
	kp_fw_sink sink = {sink_begin, sink_write, sink_end, &st};
	err = kp_fw_bundle_read_payloads(b, &sink, &chk);
	if (err == KP_OK)
		FUZZ_CHECK(st.ended == m->npayloads && chk.refusal == KP_FW_ACCEPTED);
	else
		FUZZ_CHECK(chk.refusal != KP_FW_ACCEPTED && chk.why.text[0]);
	kp_fw_bundle_close(b);
}

/* Mode 1: header and signature by the harness, manifest and records fuzzed. */
static void signed_bundle(const uint8_t *data, size_t size)
{
	if (size < 2)
		return;
	size_t mlen = (size_t)data[0] << 8 | data[1];
	data += 2;
	size -= 2;
	if (mlen == 0 || mlen > size)
		mlen = size;
	if (mlen == 0 || KP_FW_HEADER_LEN + mlen + KP_FW_SIG_MAX + (size - mlen) > BUNDLE_MAX)
		return;

	unsigned char digest[KP_FW_SHA256_LEN];
	kp_fw_why why;
	FUZZ_CHECK(kp_fw_sha256(data, mlen, digest) == KP_OK);
	if (last_sig_len == 0 || memcmp(digest, last_digest, sizeof(digest)) != 0) {
		FUZZ_CHECK(kp_fw_sign_digest(&rng, &key, digest, last_sig, sizeof(last_sig), &last_sig_len, &why) ==
			   KP_OK);
		memcpy(last_digest, digest, sizeof(digest));
	}
	memcpy(file, KP_FW_MAGIC, 8);
	put32(file + 8, KP_FW_FORMAT);
	put32(file + 12, (uint32_t)mlen);
	put32(file + 16, (uint32_t)last_sig_len);
	put32(file + 20, 0);
	memcpy(file + 24, key_id, KP_FW_KEY_ID_LEN);
	size_t off = KP_FW_HEADER_LEN;
	memcpy(file + off, data, mlen);
	off += mlen;
	memcpy(file + off, last_sig, last_sig_len);
	off += last_sig_len;
	memcpy(file + off, data + mlen, size - mlen);
	off += size - mlen;
	open_and_read(off);
}

/* Mode 2: the manifest parser, and parse(print(m)) == m. */
static void manifest_only(const uint8_t *data, size_t size)
{
	kp_fw_manifest *m = malloc(sizeof(*m)), *again = malloc(sizeof(*again));
	kp_fw_check chk;
	char *json = NULL, *json2 = NULL;
	size_t len = 0, len2 = 0;
	FUZZ_CHECK(m && again);
	kp_err err = kp_fw_manifest_parse((const char *)data, size, m, &chk);
	if (err == KP_OK) {
		FUZZ_CHECK(kp_fw_manifest_to_json(m, &json, &len) == KP_OK);
		FUZZ_CHECK(strlen(json) == len);
		err = kp_fw_manifest_parse(json, len, again, &chk);
		if (err != KP_OK)
			fprintf(stderr, "printed manifest refused: %s\n%s\n", chk.why.text, json);
		FUZZ_CHECK(err == KP_OK);
		FUZZ_CHECK(kp_fw_manifest_to_json(again, &json2, &len2) == KP_OK);
		FUZZ_CHECK(len == len2 && memcmp(json, json2, len) == 0);
	} else {
		FUZZ_CHECK(err == KP_ERR_INVALID);
		FUZZ_CHECK(chk.refusal == KP_FW_R_BAD_MANIFEST || chk.refusal == KP_FW_R_BAD_NAME);
	}
	free(json);
	free(json2);
	free(m);
	free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > BUNDLE_MAX / 2)
		return 0;
	switch (data[0] % 3) {
	case 0:
		memcpy(file, data + 1, size - 1);
		open_and_read(size - 1);
		break;
	case 1:
		signed_bundle(data + 1, size - 1);
		break;
	default:
		manifest_only(data + 1, size - 1);
		break;
	}
	return 0;
}
