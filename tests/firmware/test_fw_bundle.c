/* test_fw_bundle.c — firmware bundles: versions and names, pack then verify,
 * and the table of refusals. Each bad bundle is built byte by byte from the
 * layout in docs/firmware.md (so the test also checks the document), then
 * given to the library, to `kioskfw verify` and to `kioskfw install`: every one
 * must be refused with one line naming the reason, and the device's slots and
 * state must stay byte-identical. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "bundle.h"
#include "fw_crypto.h"
#include "fw_test_util.h"

#define BOARD "qemu-aarch64"
#define PATHLEN 512

static struct {
	char root[PATHLEN];
	char keys[PATHLEN], other[PATHLEN], both[PATHLEN]; /* key dirs */
	char pub[PATHLEN];
	char slots[PATHLEN];     /* a device: slot b good 1.0.0, rollback counter 2 */
	mbedtls_pk_context key, other_key;
	kp_fw_rng rng;
	kp_env env;
	unsigned char big[3000]; /* payload "kioskpayd" */
} g;

static const char conf[] = "port=5683\n"; /* payload "kioskpay.conf" */

static void pathf(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pathf(char *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out, PATHLEN, fmt, ap);
	va_end(ap);
}

static void run(fwt_run *r, const char *const *args)
{
	fwt_run_tool(r, KIOSKFW_EXE, NULL, args);
}

/* ---- versions and names ---- */

static void test_version_parse(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		bool ok;
		uint32_t ma, mi, pa;
	} cases[] = {
		{"1.2.3", true, 1, 2, 3},
		{"0.0.0", true, 0, 0, 0},
		{"10.20.30", true, 10, 20, 30},
		{"4294967295.0.1", true, 4294967295u, 0, 1},
		{"4294967296.0.0", false, 0, 0, 0},
		{"1.2", false, 0, 0, 0},
		{"1.2.3.4", false, 0, 0, 0},
		{"01.2.3", false, 0, 0, 0},
		{"1.2.3-rc1", false, 0, 0, 0},
		{"1..3", false, 0, 0, 0},
		{" 1.2.3", false, 0, 0, 0},
		{"a.b.c", false, 0, 0, 0},
		{"", false, 0, 0, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kp_fw_version v = {9, 9, 9};
		kp_err err = kp_fw_version_parse(cases[i].text, &v);
		if (cases[i].ok) {
			assert_int_equal(err, KP_OK);
			assert_int_equal(v.major, cases[i].ma);
			assert_int_equal(v.minor, cases[i].mi);
			assert_int_equal(v.patch, cases[i].pa);
			char back[KP_FW_VERSION_TEXT_MAX];
			kp_fw_version_format(&v, back, sizeof(back));
			assert_string_equal(back, cases[i].text);
		} else {
			assert_int_equal(err, KP_ERR_INVALID);
		}
	}
	kp_fw_version a, b;
	assert_int_equal(kp_fw_version_parse("1.10.0", &a), KP_OK);
	assert_int_equal(kp_fw_version_parse("1.9.99", &b), KP_OK);
	assert_true(kp_fw_version_cmp(&a, &b) > 0);
	assert_true(kp_fw_version_cmp(&b, &a) < 0);
	assert_int_equal(kp_fw_version_cmp(&a, &a), 0);
}

static void test_name_valid(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		bool ok;
	} cases[] = {
		{"kioskpayd", true},
		{"kioskpay.conf", true},
		{"a_b-c.1", true},
		{"x", true},
		{"0123456789012345678901234567890123456789012345678901234567890123", true},  /* 64 */
		{"01234567890123456789012345678901234567890123456789012345678901234", false}, /* 65 */
		{"", false},
		{".", false},
		{"..", false},
		{".hidden", false},
		{"../etc/passwd", false},
		{"a/b", false},
		{"/abs", false},
		{"a..b", false},
		{"with space", false},
		{"tab\t", false},
		{"back\\slash", false},
		{"uml\xc3\xa4ut", false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(kp_fw_name_valid(cases[i].name), cases[i].ok);
}

/* ---- building bundles by hand ---- */

enum mutation {
	M_NONE,
	M_UNSIGNED,        /* signature length 0 */
	M_FLIP_SIG,        /* one signature bit flipped */
	M_WRONG_SIGNER,    /* signed by the other key, naming the trusted key's id */
	M_OTHER_KEY,       /* signed by the other key, naming it */
	M_TRUNCATE_TAIL,   /* last 100 bytes cut */
	M_TRUNCATE_HEADER, /* only the first 20 bytes */
	M_TRUNCATE_SIG,    /* ends inside the signature */
	M_FLIP_PAYLOAD,    /* one payload byte changed */
	M_RECORD_SIZE,     /* the record of payload 0 is one byte shorter than the manifest says */
	M_RECORD_NAME,     /* the record of payload 0 names another file */
	M_TRAILING,        /* a byte after the last payload */
	M_GARBAGE,         /* not a bundle at all */
	M_FORMAT2,         /* header format 2 */
	M_HUGE_MANIFEST,   /* header announces a 64 KiB + 1 manifest */
	M_SMALL_MAX,       /* verified with a 1000-byte size limit */
};

typedef struct bad_case {
	const char *label;
	kp_fw_refusal want;
	const char *want_text;     /* must appear in the one-line message */
	const char *version;       /* NULL: 1.1.0 */
	const char *board;         /* NULL: BOARD */
	const char *min_version;   /* NULL: 0.0.0 */
	long long rollback;        /* -1: 2 */
	const char *name0;         /* NULL: "kioskpayd" */
	const char *manifest_raw;  /* the whole manifest instead ("%s": payload 0's sha256) */
	enum mutation mut;
} bad_case;

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

typedef struct buf {
	unsigned char *p;
	size_t n, cap;
} buf;

static void add(buf *b, const void *data, size_t len)
{
	if (b->n + len > b->cap) {
		b->cap = (b->n + len) * 2;
		b->p = realloc(b->p, b->cap);
	}
	memcpy(b->p + b->n, data, len);
	b->n += len;
}

static void add_record(buf *b, const char *name, const void *data, size_t len)
{
	unsigned char rh[16];
	memcpy(rh, "KPPL", 4);
	put32(rh + 4, (uint32_t)strlen(name));
	put64(rh + 8, len);
	add(b, rh, 16);
	add(b, name, strlen(name));
	add(b, data, len);
}

static void hex_sha(const void *data, size_t len, char out[65])
{
	unsigned char h[32];
	assert_int_equal(kp_fw_sha256(data, len, h), KP_OK);
	kp_fw_hex(h, 32, out);
}

/* Copy tmpl into out with each "%s" replaced by sha. */
static void subst_sha(char *out, size_t cap, const char *tmpl, const char *sha)
{
	size_t n = 0;
	for (const char *p = tmpl; *p && n + 65 < cap; p++) {
		if (p[0] == '%' && p[1] == 's') {
			memcpy(out + n, sha, 64);
			n += 64;
			p++;
		} else {
			out[n++] = *p;
		}
	}
	out[n] = 0;
}

/* Write the bundle of case c to path, by the layout of docs/firmware.md. */
static void build(const char *path, const bad_case *c)
{
	char manifest[4096], h0[65], h1[65];
	unsigned char hdr[56], digest[32], sig[KP_FW_SIG_MAX];
	size_t slen = 0;
	buf b = {0};
	const char *name0 = c->name0 ? c->name0 : "kioskpayd";

	hex_sha(g.big, sizeof(g.big), h0);
	hex_sha(conf, strlen(conf), h1);
	if (c->manifest_raw)
		subst_sha(manifest, sizeof(manifest), c->manifest_raw, h0);
	else
		snprintf(manifest, sizeof(manifest),
			 "{\"format\":1,\"version\":\"%s\",\"board\":\"%s\",\"min_version\":\"%s\",\"rollback_counter\":%lld,"
			 "\"payloads\":[{\"name\":\"%s\",\"size\":%zu,\"sha256\":\"%s\"},"
			 "{\"name\":\"kioskpay.conf\",\"size\":%zu,\"sha256\":\"%s\"}]}",
			 c->version ? c->version : "1.1.0", c->board ? c->board : BOARD,
			 c->min_version ? c->min_version : "0.0.0", c->rollback < 0 ? 2 : c->rollback, name0, sizeof(g.big), h0,
			 strlen(conf), h1);
	size_t mlen = strlen(manifest);

	mbedtls_pk_context *signer = (c->mut == M_WRONG_SIGNER || c->mut == M_OTHER_KEY) ? &g.other_key : &g.key;
	mbedtls_pk_context *named = c->mut == M_OTHER_KEY ? &g.other_key : &g.key;
	assert_int_equal(kp_fw_sha256(manifest, mlen, digest), KP_OK);
	kp_fw_why why;
	assert_int_equal(kp_fw_sign_digest(&g.rng, signer, digest, sig, sizeof(sig), &slen, &why), KP_OK);
	if (c->mut == M_FLIP_SIG)
		sig[slen / 2] ^= 0x01;
	if (c->mut == M_UNSIGNED)
		slen = 0;

	memcpy(hdr, "KPFWBNDL", 8);
	put32(hdr + 8, c->mut == M_FORMAT2 ? 2 : 1);
	put32(hdr + 12, c->mut == M_HUGE_MANIFEST ? 65537 : (uint32_t)mlen);
	put32(hdr + 16, (uint32_t)slen);
	put32(hdr + 20, 0);
	assert_int_equal(kp_fw_key_id(named, hdr + 24), KP_OK);
	add(&b, hdr, sizeof(hdr));
	add(&b, manifest, mlen);
	add(&b, sig, slen);

	unsigned char payload0[sizeof(g.big)];
	memcpy(payload0, g.big, sizeof(g.big));
	size_t len0 = sizeof(payload0);
	if (c->mut == M_FLIP_PAYLOAD)
		payload0[1234] ^= 0x40;
	if (c->mut == M_RECORD_SIZE)
		len0--;
	add_record(&b, c->mut == M_RECORD_NAME ? "kioskpayd.old" : name0, payload0, len0);
	add_record(&b, "kioskpay.conf", conf, strlen(conf));
	if (c->mut == M_TRAILING)
		add(&b, "x", 1);

	size_t n = b.n;
	if (c->mut == M_TRUNCATE_TAIL)
		n -= 100;
	if (c->mut == M_TRUNCATE_HEADER)
		n = 20;
	if (c->mut == M_TRUNCATE_SIG)
		n = 56 + mlen + slen / 2;
	if (c->mut == M_GARBAGE) {
		for (size_t i = 0; i < 1000; i++)
			b.p[i] = (unsigned char)(i * 7 + 3);
		n = 1000;
	}
	fwt_write_file(path, b.p, n);
	free(b.p);
}

#define SHA0 "%s"
#define ONE_PAYLOAD "\"payloads\":[{\"name\":\"kioskpayd\",\"size\":3000,\"sha256\":\"" SHA0 "\"}]"
#define HEAD_OK "\"format\":1,\"version\":\"1.1.0\",\"board\":\"" BOARD "\",\"min_version\":\"0.0.0\","

static const bad_case bad_cases[] = {
	{"unsigned", KP_FW_R_NO_SIGNATURE, "no signature", NULL, NULL, NULL, -1, NULL, NULL, M_UNSIGNED},
	{"flipped signature", KP_FW_R_BAD_SIGNATURE, "bad signature", NULL, NULL, NULL, -1, NULL, NULL, M_FLIP_SIG},
	{"signed by another key under our id", KP_FW_R_BAD_SIGNATURE, "bad signature", NULL, NULL, NULL, -1, NULL, NULL,
	 M_WRONG_SIGNER},
	{"unknown key", KP_FW_R_UNKNOWN_KEY, "unknown key", NULL, NULL, NULL, -1, NULL, NULL, M_OTHER_KEY},
	{"wrong board", KP_FW_R_WRONG_BOARD, "wrong board", NULL, "qemu-armhf", NULL, -1, NULL, NULL, M_NONE},
	{"version below installed", KP_FW_R_DOWNGRADE, "below the installed 1.0.0", "0.9.9", NULL, NULL, -1, NULL, NULL,
	 M_NONE},
	{"installed below min_version", KP_FW_R_MIN_VERSION, "needs version 1.5.0", "2.0.0", NULL, "1.5.0", -1, NULL, NULL,
	 M_NONE},
	{"rollback counter below the device's", KP_FW_R_ROLLBACK, "rollback counter 1 is below", NULL, NULL, NULL, 1, NULL,
	 NULL, M_NONE},
	{"truncated payload", KP_FW_R_TRUNCATED, "truncated", NULL, NULL, NULL, -1, NULL, NULL, M_TRUNCATE_TAIL},
	{"truncated header", KP_FW_R_TRUNCATED, "truncated", NULL, NULL, NULL, -1, NULL, NULL, M_TRUNCATE_HEADER},
	{"truncated signature", KP_FW_R_TRUNCATED, "truncated", NULL, NULL, NULL, -1, NULL, NULL, M_TRUNCATE_SIG},
	{"oversize bundle", KP_FW_R_OVERSIZE, "oversize", NULL, NULL, NULL, -1, NULL, NULL, M_SMALL_MAX},
	{"oversize manifest", KP_FW_R_OVERSIZE, "oversize manifest", NULL, NULL, NULL, -1, NULL, NULL, M_HUGE_MANIFEST},
	{"payload hash mismatch", KP_FW_R_HASH_MISMATCH, "hash mismatch", NULL, NULL, NULL, -1, NULL, NULL, M_FLIP_PAYLOAD},
	{"payload size mismatch", KP_FW_R_SIZE_MISMATCH, "size mismatch", NULL, NULL, NULL, -1, NULL, NULL, M_RECORD_SIZE},
	{"record names another file", KP_FW_R_CORRUPT, "corrupt", NULL, NULL, NULL, -1, NULL, NULL, M_RECORD_NAME},
	{"trailing bytes", KP_FW_R_CORRUPT, "after the last payload", NULL, NULL, NULL, -1, NULL, NULL, M_TRAILING},
	{"not a bundle", KP_FW_R_NOT_BUNDLE, "not a kioskpay bundle", NULL, NULL, NULL, -1, NULL, NULL, M_GARBAGE},
	{"unknown format", KP_FW_R_NOT_BUNDLE, "format 2", NULL, NULL, NULL, -1, NULL, NULL, M_FORMAT2},
	{"name ../", KP_FW_R_BAD_NAME, "payload name", NULL, NULL, NULL, -1, "../evil", NULL, M_NONE},
	{"name with /", KP_FW_R_BAD_NAME, "payload name", NULL, NULL, NULL, -1, "bin/kioskpayd", NULL, M_NONE},
	{"absolute name", KP_FW_R_BAD_NAME, "payload name", NULL, NULL, NULL, -1, "/etc/passwd", NULL, M_NONE},
	{"name ..", KP_FW_R_BAD_NAME, "payload name", NULL, NULL, NULL, -1, "..", NULL, M_NONE},
	{"hidden name", KP_FW_R_BAD_NAME, "payload name", NULL, NULL, NULL, -1, ".manifest.json", NULL, M_NONE},
	{"empty name", KP_FW_R_BAD_NAME, "payload name", NULL, NULL, NULL, -1, "", NULL, M_NONE},
	{"65-byte name", KP_FW_R_BAD_NAME, "payload name", NULL, NULL, NULL, -1,
	 "01234567890123456789012345678901234567890123456789012345678901234", NULL, M_NONE},
	{"board with a slash", KP_FW_R_BAD_NAME, "board", NULL, "../qemu", NULL, -1, NULL, NULL, M_NONE},
	{"duplicate payload", KP_FW_R_BAD_NAME, "listed twice", NULL, NULL, NULL, -1, NULL,
	 "{" HEAD_OK "\"rollback_counter\":2,\"payloads\":[{\"name\":\"kioskpayd\",\"size\":3000,\"sha256\":\"" SHA0
	 "\"},{\"name\":\"kioskpayd\",\"size\":3000,\"sha256\":\"" SHA0 "\"}]}",
	 M_NONE},
	{"not JSON", KP_FW_R_BAD_MANIFEST, "not valid JSON", NULL, NULL, NULL, -1, NULL, "{\"format\":1,", M_NONE},
	{"JSON array", KP_FW_R_BAD_MANIFEST, "not a JSON object", NULL, NULL, NULL, -1, NULL, "[1,2]", M_NONE},
	{"text after JSON", KP_FW_R_BAD_MANIFEST, "text after", NULL, NULL, NULL, -1, NULL,
	 "{" HEAD_OK "\"rollback_counter\":2," ONE_PAYLOAD "} {}", M_NONE},
	{"missing board", KP_FW_R_BAD_MANIFEST, "\"board\" missing", NULL, NULL, NULL, -1, NULL,
	 "{\"format\":1,\"version\":\"1.1.0\",\"min_version\":\"0.0.0\",\"rollback_counter\":2," ONE_PAYLOAD "}", M_NONE},
	{"missing rollback_counter", KP_FW_R_BAD_MANIFEST, "\"rollback_counter\" missing", NULL, NULL, NULL, -1, NULL,
	 "{" HEAD_OK ONE_PAYLOAD "}", M_NONE},
	{"missing payloads", KP_FW_R_BAD_MANIFEST, "\"payloads\" missing", NULL, NULL, NULL, -1, NULL,
	 "{" HEAD_OK "\"rollback_counter\":2}", M_NONE},
	{"missing format", KP_FW_R_BAD_MANIFEST, "\"format\" missing", NULL, NULL, NULL, -1, NULL,
	 "{\"version\":\"1.1.0\",\"board\":\"" BOARD "\",\"min_version\":\"0.0.0\",\"rollback_counter\":2," ONE_PAYLOAD "}",
	 M_NONE},
	{"rollback as string", KP_FW_R_BAD_MANIFEST, "rollback_counter", NULL, NULL, NULL, -1, NULL,
	 "{" HEAD_OK "\"rollback_counter\":\"2\"," ONE_PAYLOAD "}", M_NONE},
	{"negative rollback", KP_FW_R_BAD_MANIFEST, "rollback_counter", NULL, NULL, NULL, -1, NULL,
	 "{" HEAD_OK "\"rollback_counter\":-1," ONE_PAYLOAD "}", M_NONE},
	{"fractional rollback", KP_FW_R_BAD_MANIFEST, "rollback_counter", NULL, NULL, NULL, -1, NULL,
	 "{" HEAD_OK "\"rollback_counter\":2.5," ONE_PAYLOAD "}", M_NONE},
	{"version not semver", KP_FW_R_BAD_MANIFEST, "version is not", NULL, NULL, NULL, -1, NULL,
	 "{\"format\":1,\"version\":\"1.1\",\"board\":\"" BOARD "\",\"min_version\":\"0.0.0\",\"rollback_counter\":2,"
	 ONE_PAYLOAD "}",
	 M_NONE},
	{"min_version above version", KP_FW_R_BAD_MANIFEST, "min_version is above", "1.1.0", NULL, "1.2.0", -1, NULL, NULL,
	 M_NONE},
	{"unknown field", KP_FW_R_BAD_MANIFEST, "unknown field", NULL, NULL, NULL, -1, NULL,
	 "{" HEAD_OK "\"rollback_counter\":2,\"run_as_root\":true," ONE_PAYLOAD "}", M_NONE},
	{"duplicate field", KP_FW_R_BAD_MANIFEST, "twice", NULL, NULL, NULL, -1, NULL,
	 "{" HEAD_OK "\"rollback_counter\":2,\"rollback_counter\":9," ONE_PAYLOAD "}", M_NONE},
	{"no payloads", KP_FW_R_BAD_MANIFEST, "payloads is not an array", NULL, NULL, NULL, -1, NULL,
	 "{" HEAD_OK "\"rollback_counter\":2,\"payloads\":[]}", M_NONE},
	{"payload size missing", KP_FW_R_BAD_MANIFEST, "needs name", NULL, NULL, NULL, -1, NULL,
	 "{" HEAD_OK "\"rollback_counter\":2,\"payloads\":[{\"name\":\"kioskpayd\",\"sha256\":\"" SHA0 "\"}]}", M_NONE},
	{"short sha256", KP_FW_R_BAD_MANIFEST, "sha256", NULL, NULL, NULL, -1, NULL,
	 "{" HEAD_OK "\"rollback_counter\":2,\"payloads\":[{\"name\":\"kioskpayd\",\"size\":3000,\"sha256\":\"abcd\"}]}",
	 M_NONE},
};

static const bad_case good_case = {"good", KP_FW_ACCEPTED, NULL, NULL, NULL, NULL, -1, NULL, NULL, M_NONE};

static kp_fw_policy device_policy(const bad_case *c)
{
	kp_fw_policy pol = {.board = BOARD, .has_installed = true, .rollback_counter = 2};
	assert_int_equal(kp_fw_version_parse("1.0.0", &pol.installed), KP_OK);
	if (c->mut == M_SMALL_MAX)
		pol.max_size = 1000;
	return pol;
}

static void test_hand_built_good_bundle_is_accepted(void **state)
{
	(void)state;
	char path[PATHLEN];
	kp_fw_keyring ring;
	kp_fw_manifest m;
	kp_fw_check chk;
	fwt_run r;
	pathf(path, "%s/good.kpfw", g.root);
	build(path, &good_case);
	kp_fw_keyring_init(&ring);
	assert_int_equal(kp_fw_keyring_add_file(&ring, g.pub, &chk.why), KP_OK);
	kp_fw_policy pol = device_policy(&good_case);
	assert_int_equal(kp_fw_bundle_verify(path, &ring, &pol, &m, &chk), KP_OK);
	assert_int_equal(chk.refusal, KP_FW_ACCEPTED);
	assert_int_equal(m.npayloads, 2);
	assert_string_equal(m.payloads[0].name, "kioskpayd");
	assert_int_equal(m.payloads[0].size, sizeof(g.big));
	assert_int_equal(m.rollback_counter, 2);
	kp_fw_keyring_free(&ring);

	const char *args[] = {"verify", "--pubkey", g.pub, "--board", BOARD, "--installed-version", "1.0.0",
			      "--rollback-counter", "2", path, NULL};
	run(&r, args);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "ok: "));
	assert_string_equal(r.err, "");
}

static void test_refusals(void **state)
{
	(void)state;
	char path[PATHLEN], maxarg[32];
	kp_fw_keyring ring;
	kp_fw_check chk;
	fwt_run r;
	kp_fw_keyring_init(&ring);
	assert_int_equal(kp_fw_keyring_add_file(&ring, g.pub, &chk.why), KP_OK);

	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const bad_case *c = &bad_cases[i];
		char tag[64];
		snprintf(tag, sizeof(tag), "[%s]", kp_fw_refusal_name(c->want));
		pathf(path, "%s/bad-%zu.kpfw", g.root, i);
		build(path, c);
		print_message("refusal %zu: %s -> %s\n", i, c->label, tag);

		/* The library. */
		kp_fw_policy pol = device_policy(c);
		kp_fw_manifest m;
		kp_err err = kp_fw_bundle_verify(path, &ring, &pol, &m, &chk);
		assert_int_not_equal(err, KP_OK);
		if (chk.refusal != c->want)
			fail_msg("%s: refusal %s, expected %s (%s)", c->label, kp_fw_refusal_name(chk.refusal),
				 kp_fw_refusal_name(c->want), chk.why.text);
		if (!strstr(chk.why.text, c->want_text))
			fail_msg("%s: \"%s\" does not say \"%s\"", c->label, chk.why.text, c->want_text);

		/* kioskfw verify: exit 1, one line on stderr naming the reason, nothing on stdout. */
		snprintf(maxarg, sizeof(maxarg), "%s", c->mut == M_SMALL_MAX ? "1000" : "268435456");
		const char *vargs[] = {"verify", "--pubkey", g.pub, "--board", BOARD, "--installed-version", "1.0.0",
				       "--rollback-counter", "2", "--max-size", maxarg, path, NULL};
		run(&r, vargs);
		if (r.status != 1 || fwt_lines(r.err) != 1 || !strstr(r.err, tag) || !strstr(r.err, c->want_text))
			fail_msg("%s: verify exit %d, stderr \"%s\"", c->label, r.status, r.err);
		assert_string_equal(r.out, "");

		/* The policy refusals again, with the version and counter from the device's state. */
		if (c->want == KP_FW_R_DOWNGRADE || c->want == KP_FW_R_MIN_VERSION || c->want == KP_FW_R_ROLLBACK) {
			const char *sargs[] = {"verify", "--pubkey", g.pub, "--board", BOARD, "--slots", g.slots, path, NULL};
			run(&r, sargs);
			if (r.status != 1 || !strstr(r.err, tag))
				fail_msg("%s: verify --slots exit %d, stderr \"%s\"", c->label, r.status, r.err);
		}

		/* kioskfw install: refused the same way, slots and state byte-identical. */
		char *before = fwt_snapshot(g.slots);
		const char *iargs[] = {"install", "--slots", g.slots, "--pubkey", g.pub, "--board", BOARD, "--max-size",
				       maxarg, path, NULL};
		run(&r, iargs);
		char *after = fwt_snapshot(g.slots);
		if (r.status != 1 || fwt_lines(r.err) != 1 || !strstr(r.err, tag))
			fail_msg("%s: install exit %d, stderr \"%s\"", c->label, r.status, r.err);
		assert_string_equal(before, after);
		free(before);
		free(after);
	}
	kp_fw_keyring_free(&ring);
}

/* The keys-dir: a bundle by either trusted key passes, by neither fails. */
static void test_keys_dir(void **state)
{
	(void)state;
	char mine[PATHLEN], theirs[PATHLEN];
	fwt_run r;
	bad_case c = good_case;
	pathf(mine, "%s/by-release.kpfw", g.root);
	pathf(theirs, "%s/by-other.kpfw", g.root);
	build(mine, &c);
	c.mut = M_OTHER_KEY;
	build(theirs, &c);
	const char *a1[] = {"verify", "--keys-dir", g.both, "--board", BOARD, mine, NULL};
	run(&r, a1);
	assert_int_equal(r.status, 0);
	const char *a2[] = {"verify", "--keys-dir", g.both, "--board", BOARD, theirs, NULL};
	run(&r, a2);
	assert_int_equal(r.status, 0);
	const char *a3[] = {"verify", "--keys-dir", g.keys, "--board", BOARD, theirs, NULL};
	run(&r, a3);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, "[unknown_key]"));
	/* No trusted key at all is a usage error, not a pass. */
	const char *a4[] = {"verify", "--board", BOARD, mine, NULL};
	run(&r, a4);
	assert_int_equal(r.status, 2);
}

/* kioskfw pack, then verify: sizes and hashes are the files'. */
static void test_pack_verify(void **state)
{
	(void)state;
	char f1[PATHLEN], f2[PATHLEN], out[PATHLEN], tmp[PATHLEN];
	fwt_run r;
	pathf(f1, "%s/kioskpayd", g.root);
	pathf(f2, "%s/kioskpay.conf", g.root);
	pathf(out, "%s/packed.kpfw", g.root);
	pathf(tmp, "%s/packed.kpfw.tmp", g.root);
	fwt_write_file(f1, g.big, sizeof(g.big));
	fwt_write_file(f2, conf, strlen(conf));
	char key[PATHLEN];
	pathf(key, "%s/release.key", g.keys);
	const char *pargs[] = {"pack", "--key", key, "--board", BOARD, "--version", "1.4.2", "--min-version", "1.0.0",
			       "--rollback", "3", "-o", out, f1, f2, NULL};
	run(&r, pargs);
	assert_int_equal(r.status, 0);
	assert_null(fwt_read_file(tmp, NULL)); /* the temp file is gone */

	const char *vargs[] = {"verify", "--pubkey", g.pub, "--board", BOARD, "--installed-version", "1.0.0",
			       "--rollback-counter", "3", out, NULL};
	run(&r, vargs);
	assert_int_equal(r.status, 0);

	const char *jargs[] = {"--json", "verify", "--pubkey", g.pub, "--board", BOARD, out, NULL};
	run(&r, jargs);
	assert_int_equal(r.status, 0);
	cJSON *j = cJSON_Parse(r.out);
	assert_non_null(j);
	cJSON *m = cJSON_GetObjectItem(j, "manifest");
	assert_string_equal(cJSON_GetObjectItem(m, "version")->valuestring, "1.4.2");
	assert_string_equal(cJSON_GetObjectItem(m, "min_version")->valuestring, "1.0.0");
	assert_string_equal(cJSON_GetObjectItem(m, "board")->valuestring, BOARD);
	assert_int_equal(cJSON_GetObjectItem(m, "rollback_counter")->valueint, 3);
	cJSON *p = cJSON_GetObjectItem(m, "payloads");
	assert_int_equal(cJSON_GetArraySize(p), 2);
	char h[65];
	hex_sha(g.big, sizeof(g.big), h);
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(p, 0), "name")->valuestring, "kioskpayd");
	assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(p, 0), "size")->valueint, 3000);
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(p, 0), "sha256")->valuestring, h);
	hex_sha(conf, strlen(conf), h);
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(p, 1), "sha256")->valuestring, h);
	cJSON_Delete(j);

	/* The device below min_version, and a device whose counter is ahead. */
	const char *low[] = {"verify", "--pubkey", g.pub, "--board", BOARD, "--installed-version", "0.9.0", out, NULL};
	run(&r, low);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, "[min_version]"));
	const char *ahead[] = {"verify", "--pubkey", g.pub, "--board", BOARD, "--rollback-counter", "4", out, NULL};
	run(&r, ahead);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, "[rollback]"));
}

/* pack refuses what verify would refuse, and leaves no output behind. */
static void test_pack_refusals(void **state)
{
	(void)state;
	char hidden[PATHLEN], f1[PATHLEN], out[PATHLEN], key[PATHLEN];
	fwt_run r;
	pathf(hidden, "%s/.hidden", g.root);
	pathf(f1, "%s/kioskpayd", g.root);
	pathf(out, "%s/never.kpfw", g.root);
	pathf(key, "%s/release.key", g.keys);
	fwt_write_file(hidden, "x", 1);
	fwt_write_file(f1, g.big, sizeof(g.big));
	/* KEY, OUT, HIDDEN, F1, PUB stand for paths made above. */
	static const struct {
		const char *label;
		int status;
		const char *args[16];
	} cases[] = {
		{"hidden file name", 1, {"pack", "--key", "KEY", "--board", BOARD, "--version", "1.0.0", "-o", "OUT", "HIDDEN"}},
		{"bad version", 1, {"pack", "--key", "KEY", "--board", BOARD, "--version", "1.0", "-o", "OUT", "F1"}},
		{"min above version", 1,
		 {"pack", "--key", "KEY", "--board", BOARD, "--version", "1.0.0", "--min-version", "2.0.0", "-o", "OUT", "F1"}},
		{"bad board", 1, {"pack", "--key", "KEY", "--board", "a/b", "--version", "1.0.0", "-o", "OUT", "F1"}},
		{"same file twice", 1, {"pack", "--key", "KEY", "--board", BOARD, "--version", "1.0.0", "-o", "OUT", "F1", "F1"}},
		{"too small max", 1,
		 {"pack", "--key", "KEY", "--board", BOARD, "--version", "1.0.0", "--max-size", "100", "-o", "OUT", "F1"}},
		{"no files", 2, {"pack", "--key", "KEY", "--board", BOARD, "--version", "1.0.0", "-o", "OUT"}},
		{"public key as signer", 1, {"pack", "--key", "PUB", "--board", BOARD, "--version", "1.0.0", "-o", "OUT", "F1"}},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *args[16] = {0};
		for (size_t k = 0; k < 15 && cases[i].args[k]; k++) {
			const char *a = cases[i].args[k];
			args[k] = strcmp(a, "KEY") == 0 ? key : strcmp(a, "OUT") == 0 ? out
				: strcmp(a, "HIDDEN") == 0 ? hidden : strcmp(a, "F1") == 0 ? f1
				: strcmp(a, "PUB") == 0 ? g.pub : a;
		}
		run(&r, args);
		if (r.status != cases[i].status || fwt_lines(r.err) != 1)
			fail_msg("pack %s: exit %d, stderr \"%s\"", cases[i].label, r.status, r.err);
		assert_null(fwt_read_file(out, NULL));
	}
}

/* ---- fixture ---- */

static int setup(void **state)
{
	(void)state;
	char key[PATHLEN], path[PATHLEN], f1[PATHLEN], f2[PATHLEN], bundle[PATHLEN];
	fwt_run r;
	kp_fw_why why;
	memset(&g, 0, sizeof(g));
	fwt_mkdtemp(g.root, sizeof(g.root), "bundle");
	pathf(g.keys, "%s/keys", g.root);
	pathf(g.other, "%s/other", g.root);
	pathf(g.both, "%s/both", g.root);
	pathf(g.pub, "%s/release.pub", g.keys);
	pathf(g.slots, "%s/slots", g.root);
	for (size_t i = 0; i < sizeof(g.big); i++)
		g.big[i] = (unsigned char)(i * 31 + i / 7);

	const char *k1[] = {"keygen", "--out", g.keys, NULL};
	run(&r, k1);
	assert_int_equal(r.status, 0);
	const char *k2[] = {"keygen", "--out", g.other, NULL};
	run(&r, k2);
	assert_int_equal(r.status, 0);
	/* A second keygen into the same place refuses: keys are never replaced. */
	run(&r, k1);
	assert_int_equal(r.status, 1);

	mkdir(g.both, 0700);
	char *pub = fwt_read_file(g.pub, NULL);
	pathf(path, "%s/release.pub", g.both);
	fwt_write_file(path, pub, strlen(pub));
	free(pub);
	pathf(path, "%s/release.pub", g.other);
	pub = fwt_read_file(path, NULL);
	pathf(path, "%s/other.pub", g.both);
	fwt_write_file(path, pub, strlen(pub));
	free(pub);

	kp_env_init_system(&g.env);
	kp_fw_rng_init(&g.rng);
	assert_int_equal(kp_fw_rng_setup(&g.rng, &g.env), KP_OK);
	mbedtls_pk_init(&g.key);
	mbedtls_pk_init(&g.other_key);
	pathf(key, "%s/release.key", g.keys);
	assert_int_equal(kp_fw_key_load_private(key, &g.key, &why), KP_OK);
	pathf(key, "%s/release.key", g.other);
	assert_int_equal(kp_fw_key_load_private(key, &g.other_key, &why), KP_OK);

	/* The device: 1.0.0 with rollback counter 2, installed, booted, committed. */
	pathf(f1, "%s/kioskpayd", g.root);
	pathf(f2, "%s/kioskpay.conf", g.root);
	pathf(bundle, "%s/base.kpfw", g.root);
	fwt_write_file(f1, "old daemon", 10);
	fwt_write_file(f2, conf, strlen(conf));
	pathf(key, "%s/release.key", g.keys);
	const char *pk[] = {"pack", "--key", key, "--board", BOARD, "--version", "1.0.0", "--rollback", "2", "-o", bundle,
			    f1, f2, NULL};
	run(&r, pk);
	assert_int_equal(r.status, 0);
	const char *in[] = {"install", "--slots", g.slots, "--pubkey", g.pub, "--board", BOARD, bundle, NULL};
	run(&r, in);
	assert_int_equal(r.status, 0);
	const char *bt[] = {"boot", "--slots", g.slots, NULL};
	run(&r, bt);
	assert_int_equal(r.status, 0);
	const char *cm[] = {"commit", "--slots", g.slots, NULL};
	run(&r, cm);
	assert_int_equal(r.status, 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	mbedtls_pk_free(&g.key);
	mbedtls_pk_free(&g.other_key);
	kp_fw_rng_free(&g.rng);
	fwt_rmtree(g.root);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_version_parse),
		cmocka_unit_test(test_name_valid),
		cmocka_unit_test(test_hand_built_good_bundle_is_accepted),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_keys_dir),
		cmocka_unit_test(test_pack_verify),
		cmocka_unit_test(test_pack_refusals),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
