/* fuzz_hostframe.c — the host protocol codec (app/hostlink/hostproto.h) on
 * hostile bytes: the input is decoded as one payload in both directions, fed
 * to the frame reader in uneven chunks (every whole frame decoded both ways),
 * and read as a raw kp_host_msg for the encoder. Whatever decodes must encode
 * again and decode to the same message; whatever encodes must decode. */
#include <string.h>

#include "fuzz.h"
#include "hostproto.h"

static kp_frame_reader reader;
static uint8_t *frame_buf; /* one encoded frame */
#define FRAME_BUF_SIZE (KP_FRAME_HDR + KP_FRAME_MAX)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	FUZZ_CHECK(kp_frame_reader_setup(&reader) == KP_OK);
	frame_buf = malloc(FRAME_BUF_SIZE);
	FUZZ_CHECK(frame_buf != NULL);
	return 0;
}

void kp_fuzz_cleanup(void)
{
	kp_frame_reader_free(&reader);
	free(frame_buf);
	frame_buf = NULL;
}

/* Encode m, check the frame's header, decode it back: the same message. */
static void round_trip(const kp_host_msg *m, bool from_host)
{
	size_t len = 0;
	kp_err err = kp_hostproto_encode(m, frame_buf, FRAME_BUF_SIZE, &len);
	FUZZ_CHECK(err == KP_OK);
	FUZZ_CHECK(len > KP_FRAME_HDR && len <= FRAME_BUF_SIZE);
	size_t n = (size_t)frame_buf[0] << 24 | (size_t)frame_buf[1] << 16 | (size_t)frame_buf[2] << 8 |
		   frame_buf[3];
	FUZZ_CHECK(n == len - KP_FRAME_HDR);

	kp_host_msg *back = malloc(sizeof(*back));
	FUZZ_CHECK(back != NULL);
	err = kp_hostproto_decode(frame_buf + KP_FRAME_HDR, n, from_host, back, NULL, 0);
	FUZZ_CHECK(err == KP_OK);
	/* decode zeroes the struct first, so equal messages are equal bytes */
	FUZZ_CHECK(memcmp(back, m, sizeof(*m)) == 0);
	free(back);
}

/* Decode a payload both ways; round-trip whatever is accepted. */
static void decode_both(const uint8_t *p, size_t n)
{
	kp_host_msg *m = malloc(sizeof(*m));
	char why[128];
	FUZZ_CHECK(m != NULL);
	for (int dir = 0; dir < 2; dir++) {
		bool from_host = dir == 1;
		kp_err err = kp_hostproto_decode(p, n, from_host, m, why, sizeof(why));
		FUZZ_CHECK(err == KP_OK || err == KP_ERR_PROTOCOL);
		FUZZ_CHECK(memchr(why, '\0', sizeof(why)) != NULL);
		if (err == KP_OK) {
			FUZZ_CHECK(why[0] == '\0');
			FUZZ_CHECK(m->op > KP_OP_NONE && m->op < KP_OP__COUNT);
			round_trip(m, from_host);
		}
	}
	free(m);
}

/* The stream through the reader, in chunks of 1..8 bytes chosen by seed. */
static void read_frames(const uint8_t *data, size_t size, unsigned seed)
{
	size_t off = 0;
	kp_frame_reader_reset(&reader);
	while (off < size) {
		size_t chunk = 1 + (seed + off) % 8;
		if (chunk > size - off)
			chunk = size - off;
		size_t pos = 0;
		while (pos < chunk) {
			size_t used = 0, flen = 0;
			const uint8_t *frame = NULL;
			kp_err err = kp_frame_reader_feed(&reader, data + off + pos, chunk - pos, &used,
							  &frame, &flen);
			FUZZ_CHECK(used >= 1 && used <= chunk - pos);
			if (err != KP_OK) {
				/* the link drops the connection; a new one starts clean */
				FUZZ_CHECK(err == KP_ERR_PROTOCOL && !frame);
				kp_frame_reader_reset(&reader);
			} else if (frame) {
				FUZZ_CHECK(flen >= 1 && flen <= KP_FRAME_MAX);
				decode_both(frame, flen);
			} else {
				FUZZ_CHECK(used == chunk - pos); /* all taken, frame not complete */
			}
			pos += used;
		}
		off += chunk;
	}
}

/* The input's bytes as a message for the encoder, strings unterminated and
 * all: encode must refuse or produce a frame that decodes. */
static void encode_raw(const uint8_t *data, size_t size)
{
	kp_host_msg m;
	unsigned char b[2] = {0, 0};
	unsigned op = 0;
	memset(&m, 0, sizeof(m));
	memcpy(&m, data, size < sizeof(m) ? size : sizeof(m));
	/* bools and the enum from bytes, so that no invalid value is loaded */
	memcpy(&op, &m.op, sizeof(op));
	memcpy(&b[0], &m.has_re, 1);
	memcpy(&b[1], &m.has_amount, 1);
	m.op = (kp_host_op)(op % (KP_OP__COUNT + 1));
	m.has_re = b[0] & 1;
	m.has_amount = b[1] & 1;
	size_t len = 0;
	kp_err err = kp_hostproto_encode(&m, frame_buf, FRAME_BUF_SIZE, &len);
	FUZZ_CHECK(err == KP_OK || err == KP_ERR_INVALID || err == KP_ERR_TOO_BIG);
	if (err != KP_OK)
		return;
	bool from_host = m.op >= KP_OP_HELLO_OK;
	kp_host_msg *back = malloc(sizeof(*back));
	FUZZ_CHECK(back != NULL);
	FUZZ_CHECK(kp_hostproto_decode(frame_buf + KP_FRAME_HDR, len - KP_FRAME_HDR, from_host, back,
				       NULL, 0) == KP_OK);
	FUZZ_CHECK(back->op == m.op);
	free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0 || size > KP_FRAME_MAX + 64)
		return 0;
	decode_both(data, size);
	read_frames(data, size, data[0]);
	encode_raw(data, size);
	return 0;
}
