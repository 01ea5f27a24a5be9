/* fuzz_mdb.c — the MDB cashless codec and device state machine
 * (drivers/mdb) on hostile bus traffic. The input is a script of steps; each
 * starts with a control byte:
 *   low 3 bits 0..3  a VMC frame: 9-bit words (2 bytes each: low byte, then
 *                    bit 0 = mode bit, bit 1 = a bit above the 9 the bus has),
 *                    cut like the serial transport cuts them (kp_mdb_block_len,
 *                    or up to the next word with the mode bit); with bit 3 set,
 *                    the next byte gives the length instead (truncated, long);
 *   4                the engine approves (2 bytes: amount)
 *   5                the engine denies, or begins a session (bit 3; 2 bytes: funds)
 *   6                roll the last step back, or ask to cancel the session (bit 3)
 *   7                encode one of our responses (2 bytes: kind, value) with a
 *                    reader description taken from the next 30 bytes
 * and the high 4 bits move the clock (x 250 ms). Every reply the device puts
 * on the bus must be a well-formed frame; every decoded block must have the
 * length the transport's cutter gives it. */
#include <string.h>

#include "fuzz.h"
#include "mdb_codec.h"
#include "mdb_device.h"

#define MAX_WORDS 40 /* beyond KP_MDB_BLOCK_MAX: LONG frames too */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

void kp_fuzz_cleanup(void)
{
}

struct in {
	const uint8_t *p;
	size_t n;
};

static bool take(struct in *in, uint8_t *b)
{
	if (in->n == 0)
		return false;
	*b = *in->p++;
	in->n--;
	return true;
}

static uint16_t take16(struct in *in)
{
	uint8_t hi = 0, lo = 0;
	(void)take(in, &hi);
	(void)take(in, &lo);
	return (uint16_t)(hi << 8 | lo);
}

static bool take_word(struct in *in, uint16_t *w)
{
	if (in->n < 2)
		return false;
	*w = (uint16_t)(in->p[0] | (in->p[1] & 0x03) << 8);
	in->p += 2;
	in->n -= 2;
	return true;
}

/* A frame we put on the bus: silence, a lone ACK/NAK, or data + CHK. */
static void check_frame(const kp_mdb_frame *f)
{
	FUZZ_CHECK(f->n <= KP_MDB_BLOCK_MAX);
	if (f->n == 0)
		return;
	if (f->n == 1) {
		FUZZ_CHECK(f->w[0] == (KP_MDB_MODE | KP_MDB_ACK) || f->w[0] == (KP_MDB_MODE | KP_MDB_NAK));
		return;
	}
	uint8_t b[KP_MDB_BLOCK_MAX];
	for (size_t i = 0; i + 1 < f->n; i++) {
		FUZZ_CHECK(f->w[i] <= 0xFF); /* data words carry no mode bit */
		b[i] = (uint8_t)f->w[i];
	}
	FUZZ_CHECK((f->w[f->n - 1] & ~0xFFu) == KP_MDB_MODE);
	FUZZ_CHECK(kp_mdb_checksum(b, f->n - 1) == (uint8_t)f->w[f->n - 1]);
	char text[8];
	kp_mdb_frame_format(f->w, f->n, text, 1 + f->w[0] % sizeof(text));
	FUZZ_CHECK(strlen(text) < sizeof(text));
}

/* Cut one frame from the word stream as mdb_serial.c does. */
static size_t cut_frame(struct in *in, uint8_t ctrl, uint16_t *w)
{
	size_t n = 0;
	if (ctrl & 0x08) {
		uint8_t len = 0;
		(void)take(in, &len);
		while (n < len % (MAX_WORDS + 1) && take_word(in, &w[n]))
			n++;
		return n;
	}
	while (n < MAX_WORDS && take_word(in, &w[n])) {
		n++;
		int want = kp_mdb_block_len(w, n);
		if (want > 0 && n >= (size_t)want)
			break;
		/* open-ended: up to the next block start (the gap in real life) */
		if (want < 0 && in->n >= 2 && (in->p[1] & 0x01))
			break;
	}
	return n;
}

static void vmc_frame(kp_mdb_device *dev, struct in *in, uint8_t ctrl, int64_t now)
{
	uint16_t w[MAX_WORDS];
	size_t n = cut_frame(in, ctrl, w);
	kp_mdb_cmd cmd;
	kp_mdb_dec dec = kp_mdb_decode(w, n, &cmd);
	FUZZ_CHECK(strcmp(kp_mdb_dec_name(dec), "?") != 0);
	if (dec == KP_MDB_DEC_OK) {
		FUZZ_CHECK(cmd.raw_len == n);
		FUZZ_CHECK(strcmp(kp_mdb_cmd_name(cmd.kind), "?") != 0);
		int want = kp_mdb_block_len(w, n);
		FUZZ_CHECK(want == (int)n || want == -1);
	}
	kp_mdb_out out;
	FUZZ_CHECK(kp_mdb_device_receive(dev, w, n, now, &out) == KP_OK);
	FUZZ_CHECK(out.dec == dec);
	check_frame(&out.reply);
	FUZZ_CHECK(strcmp(kp_mdb_action_name(out.action), "?") != 0);
	FUZZ_CHECK(strcmp(kp_mdb_state_name(kp_mdb_device_state(dev)), "?") != 0);
	if (dec != KP_MDB_DEC_OK)
		FUZZ_CHECK(out.reply.n == 0 && out.action == KP_MDB_ACT_NONE);
	if (out.retransmission)
		FUZZ_CHECK(out.action == KP_MDB_ACT_NONE);
}

static void encode_one(struct in *in)
{
	kp_mdb_resp r;
	kp_mdb_reader_info info;
	kp_mdb_frame f;
	uint8_t kind = 0;
	(void)take(in, &kind);
	r.kind = (kp_mdb_resp_kind)(kind % 16);
	r.value = take16(in);
	kp_mdb_reader_info_default(&info);
	if (in->n >= 30) {
		info.level = in->p[0];
		memcpy(info.maker, in->p + 1, 3);
		memcpy(info.serial, in->p + 4, 12);
		memcpy(info.model, in->p + 16, 12);
		info.maker[3] = info.serial[12] = info.model[12] = '\0';
		info.version = (uint16_t)(in->p[28] << 8 | in->p[29]);
		in->p += 30;
		in->n -= 30;
	}
	kp_err err = kp_mdb_encode(&r, &info, &f);
	FUZZ_CHECK(err == KP_OK || err == KP_ERR_INVALID);
	if (err == KP_OK) {
		FUZZ_CHECK(f.n >= 2 && (f.w[0] & 0xFF) == (unsigned)r.kind);
		check_frame(&f);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	kp_mdb_device_config cfg;
	kp_mdb_device *dev = NULL;
	struct in in = {data, size};
	int64_t now = 1000;
	uint8_t ctrl;

	kp_mdb_device_config_default(&cfg);
	FUZZ_CHECK(kp_mdb_device_new(&dev, &cfg) == KP_OK);
	while (take(&in, &ctrl)) {
		now += (int64_t)(ctrl >> 4) * 250;
		kp_err err = KP_OK;
		switch (ctrl & 0x07) {
		case 4:
			err = kp_mdb_device_approve(dev, take16(&in));
			FUZZ_CHECK(err == KP_OK || err == KP_ERR_STATE || err == KP_ERR_INVALID || err == KP_ERR_BUSY);
			break;
		case 5:
			err = ctrl & 0x08 ? kp_mdb_device_begin_session(dev, take16(&in)) : kp_mdb_device_deny(dev);
			FUZZ_CHECK(err == KP_OK || err == KP_ERR_STATE || err == KP_ERR_BUSY);
			break;
		case 6:
			err = ctrl & 0x08 ? kp_mdb_device_cancel_session(dev) : kp_mdb_device_rollback(dev);
			FUZZ_CHECK(err == KP_OK || err == KP_ERR_STATE || err == KP_ERR_BUSY);
			break;
		case 7:
			encode_one(&in);
			break;
		default:
			vmc_frame(dev, &in, ctrl, now);
			break;
		}
		(void)kp_mdb_device_link_up(dev, now);
	}
	kp_mdb_device_free(dev);
	return 0;
}
