/* mdb_codec.h — bytes of the MDB bus for a level-1 cashless device (10H), as in
 * ../shared/mdb.md: 9-bit words, checksums, VMC command blocks decoded into
 * kp_mdb_cmd, and our responses encoded into frames. No state and no I/O: the
 * state machine (mdb_device.h) and the transports build on it. */
#ifndef KP_MDB_CODEC_H
#define KP_MDB_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kp_error.h"

/* A 9-bit word: data in bits 0..7, the mode bit in bit 8. */
#define KP_MDB_MODE 0x100u
#define KP_MDB_BLOCK_MAX 36 /* words in one block, CHK included */

#define KP_MDB_ADDR 0x10 /* cashless device #1; commands are 10H..17H */
#define KP_MDB_ACK 0x00
#define KP_MDB_RET 0xAA
#define KP_MDB_NAK 0xFF

#define KP_MDB_FUNDS_UNKNOWN 0xFFFFu /* BEGIN SESSION funds not known */
#define KP_MDB_ITEM_UNDEFINED 0xFFFFu
#define KP_MDB_PRICE_UNKNOWN_MAX 0xFFFFu /* SETUP max price not known */

/* What one received frame is. */
typedef enum kp_mdb_cmd_kind {
	KP_MDB_CMD_NONE = 0,
	KP_MDB_CMD_RESET,            /* 10 */
	KP_MDB_CMD_SETUP_CONFIG,     /* 11 00: vmc_level, display_* */
	KP_MDB_CMD_SETUP_PRICES,     /* 11 01: max_price, min_price */
	KP_MDB_CMD_POLL,             /* 12 */
	KP_MDB_CMD_VEND_REQUEST,     /* 13 00: price, item */
	KP_MDB_CMD_VEND_CANCEL,      /* 13 01 */
	KP_MDB_CMD_VEND_SUCCESS,     /* 13 02: item */
	KP_MDB_CMD_VEND_FAILURE,     /* 13 03 */
	KP_MDB_CMD_SESSION_COMPLETE, /* 13 04 */
	KP_MDB_CMD_CASH_SALE,        /* 13 05: price, item */
	KP_MDB_CMD_READER_DISABLE,   /* 14 00 */
	KP_MDB_CMD_READER_ENABLE,    /* 14 01 */
	KP_MDB_CMD_READER_CANCEL,    /* 14 02 */
	KP_MDB_CMD_EXPANSION_ID,     /* 17 00: vmc_maker, vmc_serial, vmc_model, vmc_version */
	KP_MDB_CMD_UNSUPPORTED,      /* a level 2/3 or maker command: valid, not implemented */
	KP_MDB_CMD_VMC_ACK,          /* lone 00 after our data block */
	KP_MDB_CMD_VMC_RET,          /* lone AA: send the last block again */
	KP_MDB_CMD_VMC_NAK,          /* lone FF */
} kp_mdb_cmd_kind;

/* One decoded frame. Only the fields of its kind are set; the rest are 0. */
typedef struct kp_mdb_cmd {
	kp_mdb_cmd_kind kind;
	uint16_t price;           /* VEND_REQUEST, CASH_SALE: scaled price (minor units) */
	uint16_t item;            /* VEND_REQUEST, VEND_SUCCESS, CASH_SALE */
	uint8_t vmc_level;        /* SETUP_CONFIG */
	uint8_t display_cols;     /* SETUP_CONFIG */
	uint8_t display_rows;     /* SETUP_CONFIG, 0 = no display */
	uint8_t display_type;     /* SETUP_CONFIG */
	uint16_t max_price;       /* SETUP_PRICES, FFFF = unknown */
	uint16_t min_price;       /* SETUP_PRICES, 0000 = unknown */
	char vmc_maker[4];        /* EXPANSION_ID, non-printable bytes shown as '?' */
	char vmc_serial[13];
	char vmc_model[13];
	uint16_t vmc_version;     /* EXPANSION_ID, BCD */
	uint8_t raw[KP_MDB_BLOCK_MAX]; /* the block's bytes, mode bits dropped, CHK included */
	size_t raw_len;
} kp_mdb_cmd;

/* Outcome of kp_mdb_decode(). Everything but OK and OTHER_ADDR is a broken
 * frame, which the bus rule answers with silence and no state change. */
typedef enum kp_mdb_dec {
	KP_MDB_DEC_OK = 0,
	KP_MDB_DEC_OTHER_ADDR, /* a block for another peripheral: not ours, ignore */
	KP_MDB_DEC_SHORT,      /* fewer words than the command has: truncated (or more to come) */
	KP_MDB_DEC_LONG,       /* more words than the command has */
	KP_MDB_DEC_BAD_CHK,    /* checksum mismatch */
	KP_MDB_DEC_BAD_MODE,   /* mode bit on a data word, or a word above 0x1FF */
	KP_MDB_DEC_UNKNOWN,    /* no such cashless command or subcommand */
	KP_MDB_DEC_STRAY,      /* a lone data word that is not ACK, RET or NAK */
} kp_mdb_dec;

/* Decode one received frame: a block (first word with the mode bit) or a lone
 * ACK/RET/NAK word. On KP_MDB_DEC_OK *out holds the command; otherwise *out
 * is zeroed. Level 2/3 commands (13 06, 14 03, 15, 17 01..04, 17 FA..FF) decode
 * as KP_MDB_CMD_UNSUPPORTED when their CHK is right; their length is taken
 * from the frame (the transport delimits it by the inter-byte gap). */
kp_mdb_dec kp_mdb_decode(const uint16_t *words, size_t n, kp_mdb_cmd *out);

/* How long the block that starts at words[0] is, for a transport that cuts a
 * byte stream into frames: > 0 its length in words (CHK included) once known;
 * 0 when more words are needed to tell (the subcommand has not come yet);
 * -1 when only the inter-byte gap or the next block start can end it (level
 * 2/3 and unknown commands, blocks for other addresses). A first word without
 * the mode bit is a lone ACK/RET/NAK (or a stray byte): 1. */
int kp_mdb_block_len(const uint16_t *words, size_t n);

/* "ok", "bad_chk", ...; never NULL. */
const char *kp_mdb_dec_name(kp_mdb_dec d);
/* "RESET", "VEND REQUEST", ...; never NULL. */
const char *kp_mdb_cmd_name(kp_mdb_cmd_kind k);

/* Sum of n bytes mod 256. */
uint8_t kp_mdb_checksum(const uint8_t *bytes, size_t n);

/* A frame to send: words with their mode bits. n == 0 means silence. */
typedef struct kp_mdb_frame {
	uint16_t w[KP_MDB_BLOCK_MAX];
	size_t n;
} kp_mdb_frame;

/* Our response codes (first byte of the block). */
typedef enum kp_mdb_resp_kind {
	KP_MDB_R_JUST_RESET = 0x00,
	KP_MDB_R_READER_CONFIG = 0x01,
	KP_MDB_R_BEGIN_SESSION = 0x03,     /* value = funds */
	KP_MDB_R_SESSION_CANCEL = 0x04,    /* SESSION CANCEL REQUEST */
	KP_MDB_R_VEND_APPROVED = 0x05,     /* value = amount charged */
	KP_MDB_R_VEND_DENIED = 0x06,
	KP_MDB_R_END_SESSION = 0x07,
	KP_MDB_R_CANCELLED = 0x08,
	KP_MDB_R_PERIPHERAL_ID = 0x09,
	KP_MDB_R_MALFUNCTION = 0x0A,       /* value = error code byte */
	KP_MDB_R_OUT_OF_SEQUENCE = 0x0B,
} kp_mdb_resp_kind;

typedef struct kp_mdb_resp {
	kp_mdb_resp_kind kind;
	uint16_t value;
} kp_mdb_resp;

/* What the reader says about itself in READER CONFIG and PERIPHERAL ID. */
typedef struct kp_mdb_reader_info {
	uint8_t level;          /* 1 */
	uint16_t country;       /* BCD: 1978 = EUR (ISO 4217 with a leading 1), FFFF unknown */
	uint8_t scale;          /* Z5, 1: prices are minor units */
	uint8_t decimals;       /* Z6, the currency's exponent */
	uint8_t max_response_s; /* Z7: the VMC waits this long for 05/06 and 07 */
	uint8_t options;        /* Z8: b0 can refund, b1 multivend, b2 display, b3 cash sale */
	char maker[4];          /* EVA-DTS maker code, 3 printable ASCII */
	char serial[13];        /* up to 12 printable ASCII, padded with blanks */
	char model[13];         /* up to 12 printable ASCII, padded with blanks */
	uint16_t version;       /* BCD, 0102 = 1.02 */
} kp_mdb_reader_info;

#define KP_MDB_OPT_CAN_REFUND 0x01u
#define KP_MDB_OPT_CASH_SALE 0x08u

/* The reader of mdb.md §6: level 1, EUR, scale 1, 2 decimals, Z7 90 s, Z8 01,
 * "KPY" 000000000042 "KIOSKPAY" 1.02. */
void kp_mdb_reader_info_default(kp_mdb_reader_info *info);

/* The ISO 4217 code of a few currencies as MDB country BCD (EUR -> 0x1978);
 * KP_ERR_NOT_FOUND for others. */
kp_err kp_mdb_country_from_currency(const char *currency, uint16_t *country) KP_MUST_USE;

/* Frame data bytes as one block: data, then CHK with the mode bit.
 * KP_ERR_INVALID for n == 0, KP_ERR_TOO_BIG when n + 1 > KP_MDB_BLOCK_MAX. */
kp_err kp_mdb_frame_block(kp_mdb_frame *f, const uint8_t *data, size_t n) KP_MUST_USE;
/* A lone ACK (00*) or NAK (FF*). */
void kp_mdb_frame_ack(kp_mdb_frame *f);
void kp_mdb_frame_nak(kp_mdb_frame *f);

/* Encode one response. info is needed for READER_CONFIG and PERIPHERAL_ID
 * (may be NULL otherwise). KP_ERR_INVALID for an unknown kind or bad info
 * text (non-printable, too long). */
kp_err kp_mdb_encode(const kp_mdb_resp *r, const kp_mdb_reader_info *info, kp_mdb_frame *f) KP_MUST_USE;

/* Print a frame as mdb.md writes it ("05 00 96 9B*") into buf; returns buf. */
const char *kp_mdb_frame_format(const uint16_t *words, size_t n, char *buf, size_t cap);

#endif
