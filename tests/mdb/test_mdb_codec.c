/* test_mdb_codec.c — the MDB codec against ../shared/mdb.md §6's test vectors:
 * every good command decodes to its fields, every broken frame to its reason,
 * every response encodes byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "mdb_codec.h"
#include "mdb_words.h"

#define EXPID_VMC "17* 00 56 4D 43 30 30 30 30 30 30 30 30 30 30 30 31 4D 4F 44 45 4C 2D 41 20 20 20 20 20 01 00 BE"
#define PERIPH_ID "09 4B 50 59 30 30 30 30 30 30 30 30 30 30 34 32 4B 49 4F 53 4B 50 41 59 20 20 20 20 01 02 31*"

static size_t words_or_fail(const char *text, uint16_t *w, size_t cap)
{
	size_t n = mdb_words(text, w, cap);
	if (n > cap)
		fail_msg("bad test frame \"%s\"", text);
	return n;
}

/* ---- decoding good frames ---- */

struct good {
	const char *frame;
	kp_mdb_cmd_kind kind;
	uint16_t price, item, max_price, min_price;
	uint8_t level, cols, rows, type;
};

static const struct good goods[] = {
	{.frame = "10* 10", .kind = KP_MDB_CMD_RESET},
	{.frame = "12* 12", .kind = KP_MDB_CMD_POLL},
	{.frame = "11* 00 01 00 00 00 12", .kind = KP_MDB_CMD_SETUP_CONFIG, .level = 1},
	{.frame = "11* 00 03 10 02 01 27", .kind = KP_MDB_CMD_SETUP_CONFIG, .level = 3, .cols = 16, .rows = 2, .type = 1},
	{.frame = "11* 01 00 C8 00 32 0C", .kind = KP_MDB_CMD_SETUP_PRICES, .max_price = 200, .min_price = 50},
	{.frame = "11* 01 FF FF 00 00 10", .kind = KP_MDB_CMD_SETUP_PRICES, .max_price = 0xFFFF, .min_price = 0},
	{.frame = "13* 00 00 96 00 01 AA", .kind = KP_MDB_CMD_VEND_REQUEST, .price = 150, .item = 1},
	{.frame = "13* 00 FF FF FF FF 0F", .kind = KP_MDB_CMD_VEND_REQUEST, .price = 0xFFFF, .item = 0xFFFF},
	{.frame = "13* 01 14", .kind = KP_MDB_CMD_VEND_CANCEL},
	{.frame = "13* 02 00 01 16", .kind = KP_MDB_CMD_VEND_SUCCESS, .item = 1},
	{.frame = "13* 03 16", .kind = KP_MDB_CMD_VEND_FAILURE},
	{.frame = "13* 04 17", .kind = KP_MDB_CMD_SESSION_COMPLETE},
	{.frame = "13* 05 00 96 00 01 AF", .kind = KP_MDB_CMD_CASH_SALE, .price = 150, .item = 1},
	{.frame = "14* 00 14", .kind = KP_MDB_CMD_READER_DISABLE},
	{.frame = "14* 01 15", .kind = KP_MDB_CMD_READER_ENABLE},
	{.frame = "14* 02 16", .kind = KP_MDB_CMD_READER_CANCEL},
	{.frame = EXPID_VMC, .kind = KP_MDB_CMD_EXPANSION_ID},
	/* level 2/3 and maker commands: valid, not implemented */
	{.frame = "13* 06 00 96 00 01 B0", .kind = KP_MDB_CMD_UNSUPPORTED},
	{.frame = "14* 03 31 32 33 34 00 00 00 00 E1", .kind = KP_MDB_CMD_UNSUPPORTED},
	{.frame = "15* 00 01 00 16", .kind = KP_MDB_CMD_UNSUPPORTED},
	{.frame = "15* 01 16", .kind = KP_MDB_CMD_UNSUPPORTED},
	{.frame = "17* 01 00 00 00 00 18", .kind = KP_MDB_CMD_UNSUPPORTED},
	{.frame = "17* FF 16", .kind = KP_MDB_CMD_UNSUPPORTED},
	/* the VMC's link bytes */
	{.frame = "00", .kind = KP_MDB_CMD_VMC_ACK},
	{.frame = "AA", .kind = KP_MDB_CMD_VMC_RET},
	{.frame = "FF", .kind = KP_MDB_CMD_VMC_NAK},
};

static void test_decode_good(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
		const struct good *g = &goods[i];
		uint16_t w[64];
		size_t n = words_or_fail(g->frame, w, 64);
		kp_mdb_cmd c;
		kp_mdb_dec d = kp_mdb_decode(w, n, &c);
		if (d != KP_MDB_DEC_OK || c.kind != g->kind)
			fail_msg("case %zu \"%s\": %s %s", i, g->frame, kp_mdb_dec_name(d), kp_mdb_cmd_name(c.kind));
		assert_int_equal(c.price, g->price);
		assert_int_equal(c.item, g->item);
		assert_int_equal(c.max_price, g->max_price);
		assert_int_equal(c.min_price, g->min_price);
		assert_int_equal(c.vmc_level, g->level);
		assert_int_equal(c.display_cols, g->cols);
		assert_int_equal(c.display_rows, g->rows);
		assert_int_equal(c.display_type, g->type);
		assert_int_equal(c.raw_len, n);
		for (size_t k = 0; k < n; k++)
			assert_int_equal(c.raw[k], w[k] & 0xFF);
	}
}

static void test_decode_expansion_id(void **state)
{
	(void)state;
	uint16_t w[64];
	size_t n = words_or_fail(EXPID_VMC, w, 64);
	assert_int_equal(n, 32);
	kp_mdb_cmd c;
	assert_int_equal(kp_mdb_decode(w, n, &c), KP_MDB_DEC_OK);
	assert_string_equal(c.vmc_maker, "VMC");
	assert_string_equal(c.vmc_serial, "000000000001");
	assert_string_equal(c.vmc_model, "MODEL-A");
	assert_int_equal(c.vmc_version, 0x0100);

	/* non-printable bytes never reach a log line raw */
	w[2] = 0x01;
	w[31] = (uint16_t)((w[31] - 0x56 + 0x01) & 0xFF);
	assert_int_equal(kp_mdb_decode(w, n, &c), KP_MDB_DEC_OK);
	assert_string_equal(c.vmc_maker, "?MC");
}

/* ---- decoding broken frames ---- */

static const struct {
	const char *frame;
	kp_mdb_dec dec;
} bads[] = {
	{"13* 00 00 96 00 01 AB", KP_MDB_DEC_BAD_CHK}, /* vector 15 */
	{"12* 13", KP_MDB_DEC_BAD_CHK},
	{"10* 00", KP_MDB_DEC_BAD_CHK},
	{"16* 17", KP_MDB_DEC_BAD_CHK},
	{"17* FF 17", KP_MDB_DEC_BAD_CHK},
	{"13* 00 00 96 00 01", KP_MDB_DEC_SHORT}, /* truncated */
	{"13* 00", KP_MDB_DEC_SHORT},
	{"13*", KP_MDB_DEC_SHORT},
	{"12*", KP_MDB_DEC_SHORT},
	{"10*", KP_MDB_DEC_SHORT},
	{"17* 00 56 4D 43", KP_MDB_DEC_SHORT},
	{"", KP_MDB_DEC_SHORT},
	{"13* 01 14 00", KP_MDB_DEC_LONG},
	{"12* 12 12", KP_MDB_DEC_LONG},
	{"13* 07 1A", KP_MDB_DEC_UNKNOWN},
	{"11* 02 13", KP_MDB_DEC_UNKNOWN},
	{"14* 04 18", KP_MDB_DEC_UNKNOWN},
	{"15* 02 17", KP_MDB_DEC_UNKNOWN},
	{"16* 16", KP_MDB_DEC_UNKNOWN},
	{"17* 05 1C", KP_MDB_DEC_UNKNOWN},
	{"13* 01* 14", KP_MDB_DEC_BAD_MODE},
	{"13* 01 14*", KP_MDB_DEC_BAD_MODE},
	{"12 12", KP_MDB_DEC_STRAY},
	{"55", KP_MDB_DEC_STRAY},
	{"00 00", KP_MDB_DEC_STRAY},
	{"08* 08", KP_MDB_DEC_OTHER_ADDR},  /* coin changer */
	{"30* 30", KP_MDB_DEC_OTHER_ADDR},  /* bill validator */
	{"60* 60", KP_MDB_DEC_OTHER_ADDR},  /* cashless #2 */
	{"18* 18", KP_MDB_DEC_OTHER_ADDR},
	{"0F* 0F", KP_MDB_DEC_OTHER_ADDR},
};

static void test_decode_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		uint16_t w[64];
		size_t n = words_or_fail(bads[i].frame, w, 64);
		kp_mdb_cmd c;
		memset(&c, 0x5a, sizeof(c));
		kp_mdb_dec d = kp_mdb_decode(w, n, &c);
		if (d != bads[i].dec)
			fail_msg("case %zu \"%s\": %s, want %s", i, bads[i].frame, kp_mdb_dec_name(d),
				 kp_mdb_dec_name(bads[i].dec));
		assert_int_equal(c.kind, KP_MDB_CMD_NONE);
		assert_int_equal(c.raw_len, 0);
	}
}

static void test_decode_limits(void **state)
{
	(void)state;
	uint16_t w[KP_MDB_BLOCK_MAX + 1];
	kp_mdb_cmd c;
	/* a word wider than 9 bits */
	w[0] = 0x112;
	w[1] = 0x212;
	assert_int_equal(kp_mdb_decode(w, 2, &c), KP_MDB_DEC_BAD_MODE);
	/* a block longer than any MDB block */
	w[0] = 0x117;
	for (size_t i = 1; i < KP_MDB_BLOCK_MAX + 1; i++)
		w[i] = 0xFF;
	assert_int_equal(kp_mdb_decode(w, KP_MDB_BLOCK_MAX + 1, &c), KP_MDB_DEC_LONG);
	/* the longest block that fits, with a right CHK: an unsupported command */
	uint8_t b[KP_MDB_BLOCK_MAX];
	for (size_t i = 0; i < KP_MDB_BLOCK_MAX; i++)
		b[i] = (uint8_t)(w[i] & 0xFF);
	w[KP_MDB_BLOCK_MAX - 1] = kp_mdb_checksum(b, KP_MDB_BLOCK_MAX - 1);
	assert_int_equal(kp_mdb_decode(w, KP_MDB_BLOCK_MAX, &c), KP_MDB_DEC_OK);
	assert_int_equal(c.kind, KP_MDB_CMD_UNSUPPORTED);
	assert_int_equal(kp_mdb_decode(NULL, 0, &c), KP_MDB_DEC_SHORT);
}

/* Where a transport may cut the stream: the block length as soon as the
 * words so far tell it. */
static const struct {
	const char *words;
	int len;
} block_lens[] = {
	{"", 0},
	{"00", 1},                 /* lone ACK */
	{"AA", 1},                 /* lone RET */
	{"55", 1},                 /* stray byte: complete, and broken */
	{"10*", 2},                /* RESET */
	{"12*", 2},                /* POLL */
	{"11*", 0},                /* SETUP: which one? */
	{"11* 00", 7},
	{"11* 01", 7},
	{"13* 00", 7},             /* VEND REQUEST */
	{"13* 01", 3},
	{"13* 02", 5},
	{"13* 04", 3},
	{"14* 01", 3},
	{"17* 00", 32},            /* EXPANSION REQUEST ID */
	{"13* 06", -1},            /* level 3: the gap ends it */
	{"17* FF", -1},            /* maker diagnostics */
	{"13* 09", -1},            /* no such subcommand */
	{"16*", -1},               /* no such command */
	{"08* 08", -1},            /* coin changer */
	{"30*", -1},               /* bill validator */
};

static void test_block_len(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(block_lens) / sizeof(block_lens[0]); i++) {
		uint16_t w[8];
		size_t n = words_or_fail(block_lens[i].words, w, 8);
		int got = kp_mdb_block_len(w, n);
		if (got != block_lens[i].len)
			fail_msg("\"%s\": %d, want %d", block_lens[i].words, got, block_lens[i].len);
	}
	assert_int_equal(kp_mdb_block_len(NULL, 3), 0);
}

/* ---- encoding ---- */

static void assert_frame(const kp_mdb_frame *f, const char *want)
{
	char got[200];
	kp_mdb_frame_format(f->w, f->n, got, sizeof(got));
	assert_string_equal(got, want);
}

static void test_encode_vectors(void **state)
{
	(void)state;
	kp_mdb_reader_info info;
	kp_mdb_reader_info_default(&info);
	static const struct {
		kp_mdb_resp r;
		const char *want;
	} cases[] = {
		{{KP_MDB_R_JUST_RESET, 0}, "00 00*"},
		{{KP_MDB_R_READER_CONFIG, 0}, "01 01 19 78 01 02 5A 01 F1*"},
		{{KP_MDB_R_BEGIN_SESSION, KP_MDB_FUNDS_UNKNOWN}, "03 FF FF 01*"},
		{{KP_MDB_R_BEGIN_SESSION, 500}, "03 01 F4 F8*"},
		{{KP_MDB_R_SESSION_CANCEL, 0}, "04 04*"},
		{{KP_MDB_R_VEND_APPROVED, 150}, "05 00 96 9B*"},
		{{KP_MDB_R_VEND_DENIED, 0}, "06 06*"},
		{{KP_MDB_R_END_SESSION, 0}, "07 07*"},
		{{KP_MDB_R_CANCELLED, 0}, "08 08*"},
		{{KP_MDB_R_PERIPHERAL_ID, 0}, PERIPH_ID},
		{{KP_MDB_R_MALFUNCTION, 0xC0}, "0A C0 CA*"},
		{{KP_MDB_R_OUT_OF_SEQUENCE, 0}, "0B 0B*"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kp_mdb_frame f;
		assert_int_equal(kp_mdb_encode(&cases[i].r, &info, &f), KP_OK);
		assert_frame(&f, cases[i].want);
	}
	kp_mdb_frame f;
	kp_mdb_frame_ack(&f);
	assert_frame(&f, "00*");
	kp_mdb_frame_nak(&f);
	assert_frame(&f, "FF*");
	/* the spec's own checksum example */
	static const uint8_t three[] = {0x06, 0x0A, 0x07, 0x04};
	assert_int_equal(kp_mdb_frame_block(&f, three, sizeof(three)), KP_OK);
	assert_frame(&f, "06 0A 07 04 1B*");
}

static void test_encode_rejects(void **state)
{
	(void)state;
	kp_mdb_reader_info ok, bad;
	kp_mdb_reader_info_default(&ok);
	kp_mdb_frame f;
	kp_mdb_resp cfg = {KP_MDB_R_READER_CONFIG, 0}, id = {KP_MDB_R_PERIPHERAL_ID, 0};

	assert_int_equal(kp_mdb_encode(&cfg, NULL, &f), KP_ERR_INVALID);
	assert_int_equal(kp_mdb_encode(&id, NULL, &f), KP_ERR_INVALID);
	bad = ok;
	bad.level = 0;
	assert_int_equal(kp_mdb_encode(&cfg, &bad, &f), KP_ERR_INVALID);
	bad = ok;
	memcpy(bad.maker, "KP", 3);
	assert_int_equal(kp_mdb_encode(&id, &bad, &f), KP_ERR_INVALID);
	bad = ok;
	memcpy(bad.serial, "1234567890123", 13); /* 13 characters, no NUL in the field */
	assert_int_equal(kp_mdb_encode(&id, &bad, &f), KP_ERR_INVALID);
	bad = ok;
	bad.model[0] = '\t';
	assert_int_equal(kp_mdb_encode(&id, &bad, &f), KP_ERR_INVALID);
	assert_int_equal(f.n, 0);

	kp_mdb_resp r = {KP_MDB_R_MALFUNCTION, 0x100};
	assert_int_equal(kp_mdb_encode(&r, &ok, &f), KP_ERR_INVALID);
	r = (kp_mdb_resp){(kp_mdb_resp_kind)0x02, 0}; /* DISPLAY REQUEST: not implemented */
	assert_int_equal(kp_mdb_encode(&r, &ok, &f), KP_ERR_INVALID);

	uint8_t big[KP_MDB_BLOCK_MAX] = {0};
	assert_int_equal(kp_mdb_frame_block(&f, big, KP_MDB_BLOCK_MAX - 1), KP_OK);
	assert_int_equal(f.n, KP_MDB_BLOCK_MAX);
	assert_int_equal(kp_mdb_frame_block(&f, big, KP_MDB_BLOCK_MAX), KP_ERR_TOO_BIG);
	assert_int_equal(kp_mdb_frame_block(&f, big, 0), KP_ERR_INVALID);
}

/* What we encode, we decode as the VMC would see the bytes (CHK right). */
static void test_encode_checksums(void **state)
{
	(void)state;
	kp_mdb_reader_info info;
	kp_mdb_reader_info_default(&info);
	for (unsigned v = 0; v <= 0xFFFF; v += 0x0101) {
		kp_mdb_resp r = {KP_MDB_R_VEND_APPROVED, (uint16_t)v};
		kp_mdb_frame f;
		assert_int_equal(kp_mdb_encode(&r, &info, &f), KP_OK);
		assert_int_equal(f.n, 4);
		assert_int_equal(f.w[0], 0x05);
		assert_int_equal(f.w[1], v >> 8);
		assert_int_equal(f.w[2], v & 0xFF);
		assert_int_equal(f.w[3], 0x100 | ((0x05 + (v >> 8) + (v & 0xFF)) & 0xFF));
	}
}

static void test_country_and_names(void **state)
{
	(void)state;
	uint16_t c = 0;
	assert_int_equal(kp_mdb_country_from_currency("EUR", &c), KP_OK);
	assert_int_equal(c, 0x1978);
	assert_int_equal(kp_mdb_country_from_currency("USD", &c), KP_OK);
	assert_int_equal(c, 0x1840);
	assert_int_equal(kp_mdb_country_from_currency("XXX", &c), KP_ERR_NOT_FOUND);
	assert_int_equal(kp_mdb_country_from_currency(NULL, &c), KP_ERR_INVALID);
	assert_string_equal(kp_mdb_dec_name(KP_MDB_DEC_BAD_CHK), "bad_chk");
	assert_string_equal(kp_mdb_dec_name((kp_mdb_dec)99), "?");
	assert_string_equal(kp_mdb_cmd_name(KP_MDB_CMD_VEND_REQUEST), "VEND REQUEST");
	assert_string_equal(kp_mdb_cmd_name((kp_mdb_cmd_kind)99), "?");
}

static void test_frame_format(void **state)
{
	(void)state;
	uint16_t w[64];
	size_t n = words_or_fail(EXPID_VMC, w, 64);
	char buf[200];
	assert_string_equal(kp_mdb_frame_format(w, n, buf, sizeof(buf)), EXPID_VMC);
	/* a short buffer keeps whole words and stays terminated */
	assert_string_equal(kp_mdb_frame_format(w, n, buf, 8), "17* 00");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode_good),
		cmocka_unit_test(test_decode_expansion_id),
		cmocka_unit_test(test_decode_bad),
		cmocka_unit_test(test_decode_limits),
		cmocka_unit_test(test_block_len),
		cmocka_unit_test(test_encode_vectors),
		cmocka_unit_test(test_encode_rejects),
		cmocka_unit_test(test_encode_checksums),
		cmocka_unit_test(test_country_and_names),
		cmocka_unit_test(test_frame_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
