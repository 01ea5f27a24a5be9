/* mdb_codec.c — MDB level-1 cashless framing (../shared/mdb.md §1-§3): one
 * table of command lengths decides SHORT/LONG before the checksum, then the
 * fields are read MSB first. Encoding builds data + CHK with the mode bit. */
#include "mdb_codec.h"

#include <stdio.h>
#include <string.h>

/* Length of a fixed-size command in words (CHK included); 0 = taken from the
 * frame (level 2/3, unsupported); -1 = no such command. */
#define LEN_FRAME 0
#define LEN_NONE (-1)

struct cmddef {
	uint8_t cmd, sub; /* sub ignored when has_sub is false */
	bool has_sub;
	int len;
	kp_mdb_cmd_kind kind;
};

static const struct cmddef cmddefs[] = {
	{0x10, 0, false, 2, KP_MDB_CMD_RESET},
	{0x11, 0x00, true, 7, KP_MDB_CMD_SETUP_CONFIG},
	{0x11, 0x01, true, 7, KP_MDB_CMD_SETUP_PRICES},
	{0x12, 0, false, 2, KP_MDB_CMD_POLL},
	{0x13, 0x00, true, 7, KP_MDB_CMD_VEND_REQUEST},
	{0x13, 0x01, true, 3, KP_MDB_CMD_VEND_CANCEL},
	{0x13, 0x02, true, 5, KP_MDB_CMD_VEND_SUCCESS},
	{0x13, 0x03, true, 3, KP_MDB_CMD_VEND_FAILURE},
	{0x13, 0x04, true, 3, KP_MDB_CMD_SESSION_COMPLETE},
	{0x13, 0x05, true, 7, KP_MDB_CMD_CASH_SALE},
	{0x13, 0x06, true, LEN_FRAME, KP_MDB_CMD_UNSUPPORTED}, /* negative vend (L3) */
	{0x14, 0x00, true, 3, KP_MDB_CMD_READER_DISABLE},
	{0x14, 0x01, true, 3, KP_MDB_CMD_READER_ENABLE},
	{0x14, 0x02, true, 3, KP_MDB_CMD_READER_CANCEL},
	{0x14, 0x03, true, LEN_FRAME, KP_MDB_CMD_UNSUPPORTED}, /* data entry response (L3) */
	{0x15, 0x00, true, LEN_FRAME, KP_MDB_CMD_UNSUPPORTED}, /* revalue request (L2/3) */
	{0x15, 0x01, true, LEN_FRAME, KP_MDB_CMD_UNSUPPORTED}, /* revalue limit request */
	{0x17, 0x00, true, 32, KP_MDB_CMD_EXPANSION_ID},
	{0x17, 0x01, true, LEN_FRAME, KP_MDB_CMD_UNSUPPORTED}, /* optional feature enabled */
	{0x17, 0x02, true, LEN_FRAME, KP_MDB_CMD_UNSUPPORTED}, /* FTL */
	{0x17, 0x03, true, LEN_FRAME, KP_MDB_CMD_UNSUPPORTED},
	{0x17, 0x04, true, LEN_FRAME, KP_MDB_CMD_UNSUPPORTED},
	{0x17, 0xFA, true, LEN_FRAME, KP_MDB_CMD_UNSUPPORTED},
	{0x17, 0xFB, true, LEN_FRAME, KP_MDB_CMD_UNSUPPORTED},
	{0x17, 0xFC, true, LEN_FRAME, KP_MDB_CMD_UNSUPPORTED},
	{0x17, 0xFD, true, LEN_FRAME, KP_MDB_CMD_UNSUPPORTED},
	{0x17, 0xFE, true, LEN_FRAME, KP_MDB_CMD_UNSUPPORTED},
	{0x17, 0xFF, true, LEN_FRAME, KP_MDB_CMD_UNSUPPORTED}, /* diagnostics, maker-defined */
};

static bool has_subcommands(uint8_t cmd)
{
	return cmd == 0x11 || cmd == 0x13 || cmd == 0x14 || cmd == 0x15 || cmd == 0x17;
}

/* The definition for a command (and subcommand when needed); NULL if none. */
static const struct cmddef *find_cmd(uint8_t cmd, uint8_t sub)
{
	for (size_t i = 0; i < sizeof(cmddefs) / sizeof(cmddefs[0]); i++) {
		const struct cmddef *d = &cmddefs[i];
		if (d->cmd == cmd && (!d->has_sub || d->sub == sub))
			return d;
	}
	return NULL;
}

uint8_t kp_mdb_checksum(const uint8_t *bytes, size_t n)
{
	unsigned sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += bytes[i];
	return (uint8_t)sum;
}

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* Copy n ASCII bytes into a NUL-terminated string, '?' for non-printable,
 * trailing blanks dropped. dst holds n + 1. */
static void copy_ascii(char *dst, const uint8_t *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? (char)src[i] : '?';
	while (n > 0 && dst[n - 1] == ' ')
		n--;
	dst[n] = '\0';
}

kp_mdb_dec kp_mdb_decode(const uint16_t *words, size_t n, kp_mdb_cmd *out)
{
	memset(out, 0, sizeof(*out));
	if (!words || n == 0)
		return KP_MDB_DEC_SHORT;
	if (n > KP_MDB_BLOCK_MAX)
		return KP_MDB_DEC_LONG;
	for (size_t i = 0; i < n; i++)
		if (words[i] > 0x1FF || (i > 0 && (words[i] & KP_MDB_MODE)))
			return KP_MDB_DEC_BAD_MODE;
	if (!(words[0] & KP_MDB_MODE)) {
		/* No block start: only a lone ACK, RET or NAK is meaningful. */
		if (n == 1 && words[0] == KP_MDB_ACK)
			out->kind = KP_MDB_CMD_VMC_ACK;
		else if (n == 1 && words[0] == KP_MDB_RET)
			out->kind = KP_MDB_CMD_VMC_RET;
		else if (n == 1 && words[0] == KP_MDB_NAK)
			out->kind = KP_MDB_CMD_VMC_NAK;
		else
			return KP_MDB_DEC_STRAY;
		out->raw[0] = (uint8_t)words[0];
		out->raw_len = 1;
		return KP_MDB_DEC_OK;
	}

	uint8_t b[KP_MDB_BLOCK_MAX] = {0}; /* zeroed: the analyzer cannot see n == len below */
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)words[i];
	if ((b[0] & 0xF8) != KP_MDB_ADDR)
		return KP_MDB_DEC_OTHER_ADDR;
	if (n < 2 || (has_subcommands(b[0]) && n < 3))
		return KP_MDB_DEC_SHORT;

	const struct cmddef *d = find_cmd(b[0], b[1]);
	int len = d ? d->len : LEN_NONE;
	if (len > 0 && n < (size_t)len)
		return KP_MDB_DEC_SHORT;
	if (len > 0 && n > (size_t)len)
		return KP_MDB_DEC_LONG;
	if (kp_mdb_checksum(b, n - 1) != b[n - 1])
		return KP_MDB_DEC_BAD_CHK;
	if (!d)
		return KP_MDB_DEC_UNKNOWN;

	out->kind = d->kind;
	memcpy(out->raw, b, n);
	out->raw_len = n;
	switch (d->kind) {
	case KP_MDB_CMD_SETUP_CONFIG:
		out->vmc_level = b[2];
		out->display_cols = b[3];
		out->display_rows = b[4];
		out->display_type = b[5];
		break;
	case KP_MDB_CMD_SETUP_PRICES:
		out->max_price = be16(b + 2);
		out->min_price = be16(b + 4);
		break;
	case KP_MDB_CMD_VEND_REQUEST:
	case KP_MDB_CMD_CASH_SALE:
		out->price = be16(b + 2);
		out->item = be16(b + 4);
		break;
	case KP_MDB_CMD_VEND_SUCCESS:
		out->item = be16(b + 2);
		break;
	case KP_MDB_CMD_EXPANSION_ID:
		copy_ascii(out->vmc_maker, b + 2, 3);
		copy_ascii(out->vmc_serial, b + 5, 12);
		copy_ascii(out->vmc_model, b + 17, 12);
		out->vmc_version = be16(b + 29);
		break;
	default:
		break;
	}
	return KP_MDB_DEC_OK;
}

int kp_mdb_block_len(const uint16_t *words, size_t n)
{
	if (!words || n == 0)
		return 0;
	if (!(words[0] & KP_MDB_MODE))
		return 1;
	uint8_t cmd = (uint8_t)words[0];
	if ((cmd & 0xF8) != KP_MDB_ADDR)
		return -1;
	if (has_subcommands(cmd) && n < 2)
		return 0;
	const struct cmddef *d = find_cmd(cmd, n >= 2 ? (uint8_t)words[1] : 0);
	return d && d->len > 0 ? d->len : -1;
}

const char *kp_mdb_dec_name(kp_mdb_dec d)
{
	static const char *const names[] = {
		[KP_MDB_DEC_OK] = "ok",           [KP_MDB_DEC_OTHER_ADDR] = "other_addr",
		[KP_MDB_DEC_SHORT] = "short",     [KP_MDB_DEC_LONG] = "long",
		[KP_MDB_DEC_BAD_CHK] = "bad_chk", [KP_MDB_DEC_BAD_MODE] = "bad_mode",
		[KP_MDB_DEC_UNKNOWN] = "unknown", [KP_MDB_DEC_STRAY] = "stray",
	};
	if ((unsigned)d >= sizeof(names) / sizeof(names[0]))
		return "?";
	return names[d];
}

const char *kp_mdb_cmd_name(kp_mdb_cmd_kind k)
{
	static const char *const names[] = {
		[KP_MDB_CMD_NONE] = "NONE",
		[KP_MDB_CMD_RESET] = "RESET",
		[KP_MDB_CMD_SETUP_CONFIG] = "SETUP CONFIG",
		[KP_MDB_CMD_SETUP_PRICES] = "SETUP PRICES",
		[KP_MDB_CMD_POLL] = "POLL",
		[KP_MDB_CMD_VEND_REQUEST] = "VEND REQUEST",
		[KP_MDB_CMD_VEND_CANCEL] = "VEND CANCEL",
		[KP_MDB_CMD_VEND_SUCCESS] = "VEND SUCCESS",
		[KP_MDB_CMD_VEND_FAILURE] = "VEND FAILURE",
		[KP_MDB_CMD_SESSION_COMPLETE] = "SESSION COMPLETE",
		[KP_MDB_CMD_CASH_SALE] = "CASH SALE",
		[KP_MDB_CMD_READER_DISABLE] = "READER DISABLE",
		[KP_MDB_CMD_READER_ENABLE] = "READER ENABLE",
		[KP_MDB_CMD_READER_CANCEL] = "READER CANCEL",
		[KP_MDB_CMD_EXPANSION_ID] = "EXPANSION REQUEST ID",
		[KP_MDB_CMD_UNSUPPORTED] = "UNSUPPORTED",
		[KP_MDB_CMD_VMC_ACK] = "ACK",
		[KP_MDB_CMD_VMC_RET] = "RET",
		[KP_MDB_CMD_VMC_NAK] = "NAK",
	};
	if ((unsigned)k >= sizeof(names) / sizeof(names[0]))
		return "?";
	return names[k];
}

void kp_mdb_reader_info_default(kp_mdb_reader_info *info)
{
	memset(info, 0, sizeof(*info));
	info->level = 1;
	info->country = 0x1978;
	info->scale = 1;
	info->decimals = 2;
	info->max_response_s = 90;
	info->options = KP_MDB_OPT_CAN_REFUND;
	memcpy(info->maker, "KPY", 4);
	memcpy(info->serial, "000000000042", 13);
	memcpy(info->model, "KIOSKPAY", 9);
	info->version = 0x0102;
}

kp_err kp_mdb_country_from_currency(const char *currency, uint16_t *country)
{
	static const struct {
		char code[4];
		uint16_t bcd; /* 1 + ISO 4217 numeric code */
	} table[] = {
		{"AUD", 0x1036}, {"CAD", 0x1124}, {"CHF", 0x1756}, {"CZK", 0x1203}, {"DKK", 0x1208},
		{"EUR", 0x1978}, {"GBP", 0x1826}, {"HUF", 0x1348}, {"JPY", 0x1392}, {"NOK", 0x1578},
		{"PLN", 0x1985}, {"SEK", 0x1752}, {"USD", 0x1840},
	};
	if (!currency || !country)
		return KP_ERR_INVALID;
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		if (strcmp(table[i].code, currency) == 0) {
			*country = table[i].bcd;
			return KP_OK;
		}
	}
	return KP_ERR_NOT_FOUND;
}

kp_err kp_mdb_frame_block(kp_mdb_frame *f, const uint8_t *data, size_t n)
{
	if (!f || !data || n == 0)
		return KP_ERR_INVALID;
	if (n + 1 > KP_MDB_BLOCK_MAX)
		return KP_ERR_TOO_BIG;
	for (size_t i = 0; i < n; i++)
		f->w[i] = data[i];
	f->w[n] = KP_MDB_MODE | kp_mdb_checksum(data, n);
	f->n = n + 1;
	return KP_OK;
}

void kp_mdb_frame_ack(kp_mdb_frame *f)
{
	f->w[0] = KP_MDB_MODE | KP_MDB_ACK;
	f->n = 1;
}

void kp_mdb_frame_nak(kp_mdb_frame *f)
{
	f->w[0] = KP_MDB_MODE | KP_MDB_NAK;
	f->n = 1;
}

/* Append a printable text padded with blanks to width bytes; false if it
 * does not fit or has a byte outside 20..7E. */
static bool put_text(uint8_t *dst, const char *text, size_t width, bool exact)
{
	size_t n = strnlen(text, width + 1);
	if (n > width || (exact && n != width))
		return false;
	for (size_t i = 0; i < n; i++)
		if (text[i] < 0x20 || text[i] > 0x7e)
			return false;
	memset(dst, ' ', width);
	memcpy(dst, text, n);
	return true;
}

kp_err kp_mdb_encode(const kp_mdb_resp *r, const kp_mdb_reader_info *info, kp_mdb_frame *f)
{
	uint8_t b[KP_MDB_BLOCK_MAX];
	size_t n = 0;
	if (!r || !f)
		return KP_ERR_INVALID;
	f->n = 0;
	b[n++] = (uint8_t)r->kind;
	switch (r->kind) {
	case KP_MDB_R_JUST_RESET:
	case KP_MDB_R_SESSION_CANCEL:
	case KP_MDB_R_VEND_DENIED:
	case KP_MDB_R_END_SESSION:
	case KP_MDB_R_CANCELLED:
	case KP_MDB_R_OUT_OF_SEQUENCE:
		break;
	case KP_MDB_R_BEGIN_SESSION:
	case KP_MDB_R_VEND_APPROVED:
		b[n++] = (uint8_t)(r->value >> 8);
		b[n++] = (uint8_t)r->value;
		break;
	case KP_MDB_R_MALFUNCTION:
		if (r->value > 0xFF)
			return KP_ERR_INVALID;
		b[n++] = (uint8_t)r->value;
		break;
	case KP_MDB_R_READER_CONFIG:
		if (!info || info->level < 1 || info->level > 3)
			return KP_ERR_INVALID;
		b[n++] = info->level;
		b[n++] = (uint8_t)(info->country >> 8);
		b[n++] = (uint8_t)info->country;
		b[n++] = info->scale;
		b[n++] = info->decimals;
		b[n++] = info->max_response_s;
		b[n++] = info->options;
		break;
	case KP_MDB_R_PERIPHERAL_ID:
		if (!info || !put_text(b + n, info->maker, 3, true) || !put_text(b + n + 3, info->serial, 12, false) ||
		    !put_text(b + n + 15, info->model, 12, false))
			return KP_ERR_INVALID;
		n += 27;
		b[n++] = (uint8_t)(info->version >> 8);
		b[n++] = (uint8_t)info->version;
		break;
	default:
		return KP_ERR_INVALID;
	}
	return kp_mdb_frame_block(f, b, n);
}

const char *kp_mdb_frame_format(const uint16_t *words, size_t n, char *buf, size_t cap)
{
	size_t used = 0;
	if (cap == 0)
		return buf;
	buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		int k = snprintf(buf + used, cap - used, "%s%02X%s", i ? " " : "", (unsigned)(words[i] & 0xFF),
				 (words[i] & KP_MDB_MODE) ? "*" : "");
		if (k < 0 || (size_t)k >= cap - used) {
			buf[used] = '\0'; /* drop the partial word */
			break;
		}
		used += (size_t)k;
	}
	return buf;
}
