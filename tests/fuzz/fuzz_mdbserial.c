/* fuzz_mdbserial.c — the MDB serial backend's stream side (drivers/mdb
 * mdb_serial.h): bytes of either framing (pair, PARMRK parity) through the
 * unframer into words, and words through the frame cutter of either end of
 * the bus, with gaps in between. The first byte picks framing (bit 0) and
 * role (bit 1); then chunks: a control byte (low 6 bits: length of the chunk
 * that follows; bit 6: a gap passes before it; bit 7: one more ms passes).
 * Every frame that comes out must fit a block and carry only 9-bit words; at
 * the reader's end a block starts with the mode bit (or is a lone byte); at
 * the VMC's end a frame that was not cut by a gap ends with it. */
#include <string.h>

#include "fuzz.h"
#include "mdb_serial.h"

#define GAP_MS 50

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

void kp_fuzz_cleanup(void)
{
}

static void drain(kp_mdb_asm *a)
{
	kp_mdb_frame f;
	while (kp_mdb_asm_pop(a, &f)) {
		FUZZ_CHECK(f.n >= 1 && f.n <= KP_MDB_BLOCK_MAX);
		for (size_t i = 0; i < f.n; i++)
			FUZZ_CHECK(f.w[i] <= 0x1FF);
		if (a->role == KP_MDB_ROLE_PERIPHERAL) {
			/* a block has its mode bit first and nowhere else; a lone word has none */
			for (size_t i = 1; i < f.n; i++)
				FUZZ_CHECK(!(f.w[i] & KP_MDB_MODE));
			FUZZ_CHECK(f.n == 1 || (f.w[0] & KP_MDB_MODE));
			/* a fixed-length block is never longer than its command */
			int len = kp_mdb_block_len(f.w, f.n);
			FUZZ_CHECK(len <= 0 || f.n <= (size_t)len);
		} else {
			for (size_t i = 0; i + 1 < f.n; i++)
				FUZZ_CHECK(!(f.w[i] & KP_MDB_MODE));
		}
	}
	FUZZ_CHECK(a->qn == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	kp_mdb_framing framing = (data[0] & 1) ? KP_MDB_FRAMING_PARITY : KP_MDB_FRAMING_PAIR;
	kp_mdb_role role = (data[0] & 2) ? KP_MDB_ROLE_VMC : KP_MDB_ROLE_PERIPHERAL;
	kp_mdb_unframer u;
	kp_mdb_asm a;
	kp_mdb_unframer_init(&u, framing);
	kp_mdb_asm_init(&a, role, GAP_MS);
	int64_t now = 1000;
	uint64_t dropped = 0;
	size_t pos = 1;
	while (pos < size) {
		uint8_t ctrl = data[pos++];
		size_t len = ctrl & 0x3F;
		if (len > size - pos)
			len = size - pos;
		if (ctrl & 0x80)
			now += 1;
		if (ctrl & 0x40) {
			now += GAP_MS;
			FUZZ_CHECK(kp_mdb_asm_deadline(&a) <= now);
			kp_mdb_asm_gap(&a, now);
			kp_mdb_unframer_reset(&u);
			FUZZ_CHECK(a.n == 0 && !a.discard);
		}
		uint16_t words[64];
		size_t n = 0;
		uint64_t before = dropped;
		kp_mdb_unframer_feed(&u, data + pos, len, words, 64, &n, &dropped);
		FUZZ_CHECK(n <= len + 1 && dropped - before <= len); /* + a parity FF held from before */
		for (size_t i = 0; i < n; i++) {
			FUZZ_CHECK(words[i] <= 0x1FF || words[i] == KP_MDB_WORD_BUS_RESET);
			FUZZ_CHECK(framing == KP_MDB_FRAMING_PAIR || words[i] != KP_MDB_WORD_BUS_RESET);
			kp_mdb_asm_push(&a, words[i], now);
			FUZZ_CHECK(a.n <= KP_MDB_BLOCK_MAX);
			drain(&a);
		}
		/* the encoder and the unframer agree on whole frames */
		if (n > 0 && n <= KP_MDB_BLOCK_MAX) {
			uint16_t clean[KP_MDB_BLOCK_MAX];
			size_t k = 0;
			for (size_t i = 0; i < n; i++)
				if (words[i] != KP_MDB_WORD_BUS_RESET)
					clean[k++] = words[i];
			uint8_t bytes[2 * KP_MDB_BLOCK_MAX];
			size_t blen = kp_mdb_frame_bytes(KP_MDB_FRAMING_PAIR, clean, k, bytes, sizeof(bytes));
			FUZZ_CHECK(blen == 2 * k);
			kp_mdb_unframer v;
			kp_mdb_unframer_init(&v, KP_MDB_FRAMING_PAIR);
			uint16_t back[KP_MDB_BLOCK_MAX * 2];
			size_t m = 0;
			uint64_t d2 = 0;
			kp_mdb_unframer_feed(&v, bytes, blen, back, sizeof(back) / sizeof(back[0]), &m, &d2);
			FUZZ_CHECK(m == k && d2 == 0 && memcmp(back, clean, k * sizeof(clean[0])) == 0);
		}
		pos += len;
	}
	kp_mdb_asm_gap(&a, now + GAP_MS);
	drain(&a);
	return 0;
}
