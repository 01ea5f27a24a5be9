/* test_mdb_serial.c — the serial backend of the MDB transport: both byte
 * framings (pair and PARMRK parity) by tables, the cutting of a word stream
 * into frames for either end of the bus, and the real thing over a pty: a
 * block split across writes, a variable-length block cut by the gap, replies
 * the other way, the port hanging up and being opened again at its path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "kp_env.h"
#include "mdb_serial.h"
#include "mdb_words.h"

static size_t words_or_fail(const char *text, uint16_t *w, size_t cap)
{
	size_t n = mdb_words(text, w, cap);
	if (n > cap)
		fail_msg("bad test frame \"%s\"", text);
	return n;
}

static void assert_words(const uint16_t *w, size_t n, const char *want)
{
	char got[256];
	kp_mdb_frame_format(w, n, got, sizeof(got));
	assert_string_equal(got, want);
}

/* ---- unframer ---- */

static const struct {
	kp_mdb_framing framing;
	const char *name;
	uint8_t bytes[16];
	size_t len;
	const char *words; /* as mdb.md writes them; "R" = bus reset */
	unsigned dropped;
} unframes[] = {
	{KP_MDB_FRAMING_PAIR, "poll", {0x01, 0x12, 0x00, 0x12}, 4, "12* 12", 0},
	{KP_MDB_FRAMING_PAIR, "ack", {0x01, 0x00}, 2, "00*", 0},
	{KP_MDB_FRAMING_PAIR, "data FF and 01", {0x00, 0xFF, 0x00, 0x01}, 4, "FF 01", 0},
	{KP_MDB_FRAMING_PAIR, "half a word waits", {0x01, 0x12, 0x00}, 3, "12*", 0},
	{KP_MDB_FRAMING_PAIR, "bad flags dropped", {0x42, 0x01, 0x12, 0x00, 0x12}, 5, "12* 12", 1},
	{KP_MDB_FRAMING_PAIR, "bus reset", {0x80, 0x00, 0x01, 0x10}, 4, "R 10*", 0},
	{KP_MDB_FRAMING_PARITY, "data", {0x13, 0x00, 0x96}, 3, "13 00 96", 0},
	{KP_MDB_FRAMING_PARITY, "mode bit marked", {0xFF, 0x00, 0x12, 0x12}, 4, "12* 12", 0},
	{KP_MDB_FRAMING_PARITY, "data FF escaped", {0x05, 0xFF, 0xFF, 0xFF, 0x00, 0x03}, 6, "05 FF 03*", 0},
	{KP_MDB_FRAMING_PARITY, "mode-bit FF", {0xFF, 0x00, 0xFF}, 3, "FF*", 0},
	{KP_MDB_FRAMING_PARITY, "FF then other", {0xFF, 0x42}, 2, "FF 42", 0},
};

static void format_stream(const uint16_t *w, size_t n, char *buf, size_t cap)
{
	size_t used = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < n && used + 8 < cap; i++) {
		if (w[i] == KP_MDB_WORD_BUS_RESET)
			used += (size_t)snprintf(buf + used, cap - used, "%sR", i ? " " : "");
		else
			used += (size_t)snprintf(buf + used, cap - used, "%s%02X%s", i ? " " : "",
						 (unsigned)(w[i] & 0xFF), (w[i] & KP_MDB_MODE) ? "*" : "");
	}
}

static void test_unframer(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(unframes) / sizeof(unframes[0]); i++) {
		kp_mdb_unframer u;
		kp_mdb_unframer_init(&u, unframes[i].framing);
		uint16_t w[16];
		size_t n = 0;
		uint64_t dropped = 0;
		/* byte by byte: the state must carry across reads */
		for (size_t b = 0; b < unframes[i].len; b++) {
			size_t k = 0;
			kp_mdb_unframer_feed(&u, &unframes[i].bytes[b], 1, w + n, 16 - n, &k, &dropped);
			n += k;
		}
		char got[128];
		format_stream(w, n, got, sizeof(got));
		if (strcmp(got, unframes[i].words) != 0 || dropped != unframes[i].dropped)
			fail_msg("%s: \"%s\" (%llu dropped), want \"%s\" (%u)", unframes[i].name, got,
				 (unsigned long long)dropped, unframes[i].words, unframes[i].dropped);
	}
	/* a reset forgets a half word */
	kp_mdb_unframer u;
	kp_mdb_unframer_init(&u, KP_MDB_FRAMING_PAIR);
	uint16_t w[4];
	size_t n;
	uint64_t dropped = 0;
	kp_mdb_unframer_feed(&u, (const uint8_t[]){0x01}, 1, w, 4, &n, &dropped);
	kp_mdb_unframer_reset(&u);
	kp_mdb_unframer_feed(&u, (const uint8_t[]){0x00, 0x12}, 2, w, 4, &n, &dropped);
	assert_int_equal(n, 1);
	assert_int_equal(w[0], 0x012);
}

static void test_frame_bytes(void **state)
{
	(void)state;
	uint16_t w[8];
	size_t n = words_or_fail("05 00 96 9B*", w, 8);
	uint8_t b[16];
	static const uint8_t pair[] = {0x00, 0x05, 0x00, 0x00, 0x00, 0x96, 0x01, 0x9B};
	assert_int_equal(kp_mdb_frame_bytes(KP_MDB_FRAMING_PAIR, w, n, b, sizeof(b)), 8);
	assert_memory_equal(b, pair, 8);
	static const uint8_t parity[] = {0x05, 0x00, 0x96, 0x9B};
	assert_int_equal(kp_mdb_frame_bytes(KP_MDB_FRAMING_PARITY, w, n, b, sizeof(b)), 4);
	assert_memory_equal(b, parity, 4);
	assert_int_equal(kp_mdb_frame_bytes(KP_MDB_FRAMING_PAIR, w, n, b, 7), 0);
	assert_int_equal(kp_mdb_frame_bytes(KP_MDB_FRAMING_PARITY, w, n, b, 3), 0);

	kp_mdb_framing f;
	assert_int_equal(kp_mdb_framing_from_string("pair", &f), KP_OK);
	assert_int_equal(f, KP_MDB_FRAMING_PAIR);
	assert_int_equal(kp_mdb_framing_from_string("parity", &f), KP_OK);
	assert_int_equal(f, KP_MDB_FRAMING_PARITY);
	assert_int_equal(kp_mdb_framing_from_string("9bit", &f), KP_ERR_INVALID);
	assert_string_equal(kp_mdb_framing_name(KP_MDB_FRAMING_PARITY), "parity");
}

/* ---- assembler ----
 * Input: words with "+N" steps of N ms between them and "|" for a gap check;
 * output: the frames, "/"-separated. */
static const struct {
	kp_mdb_role role;
	const char *name;
	const char *in;
	const char *frames;
} asms[] = {
	{KP_MDB_ROLE_PERIPHERAL, "poll", "12* 12", "12* 12"},
	{KP_MDB_ROLE_PERIPHERAL, "vend request", "13* 00 00 96 00 01 AA", "13* 00 00 96 00 01 AA"},
	{KP_MDB_ROLE_PERIPHERAL, "lone ACK, RET, NAK", "00 AA FF", "00/AA/FF"},
	{KP_MDB_ROLE_PERIPHERAL, "back to back", "12* 12 13* 04 17 00", "12* 12/13* 04 17/00"},
	{KP_MDB_ROLE_PERIPHERAL, "truncated, next block starts", "13* 00 00 12* 12", "13* 00 00/12* 12"},
	{KP_MDB_ROLE_PERIPHERAL, "truncated, gap", "13* 00 00 +10 | +60 |", "13* 00 00"},
	{KP_MDB_ROLE_PERIPHERAL, "no cut before the gap", "13* 00 00 +49 |", ""},
	{KP_MDB_ROLE_PERIPHERAL, "variable length: the gap ends it", "17* FF 01 02 19 +50 |", "17* FF 01 02 19"},
	{KP_MDB_ROLE_PERIPHERAL, "other address, then ours", "08* 08 +50 | 12* 12", "08* 08/12* 12"},
	{KP_MDB_ROLE_PERIPHERAL, "bus reset", "13* 00 R", "13* 00/10* 10"},
	{KP_MDB_ROLE_VMC, "ack", "00*", "00*"},
	{KP_MDB_ROLE_VMC, "approved", "05 00 96 9B*", "05 00 96 9B*"},
	{KP_MDB_ROLE_VMC, "two replies", "00* 03 FF FF 01*", "00*/03 FF FF 01*"},
	{KP_MDB_ROLE_VMC, "no end, gap", "05 00 +50 |", "05 00"},
	{KP_MDB_ROLE_VMC, "bus reset ignored", "R 00*", "00*"},
};

static void run_asm(kp_mdb_role role, const char *in, char *out, size_t cap)
{
	kp_mdb_asm a;
	kp_mdb_asm_init(&a, role, 50);
	int64_t now = 1000;
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", in);
	for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " ")) {
		if (tok[0] == '+') {
			now += strtol(tok + 1, NULL, 10);
		} else if (tok[0] == '|') {
			kp_mdb_asm_gap(&a, now);
		} else if (tok[0] == 'R') {
			kp_mdb_asm_push(&a, KP_MDB_WORD_BUS_RESET, now);
		} else {
			uint16_t w[2];
			if (words_or_fail(tok, w, 2) != 1)
				fail_msg("bad token %s", tok);
			kp_mdb_asm_push(&a, w[0], now);
		}
	}
	size_t used = 0;
	out[0] = '\0';
	kp_mdb_frame f;
	while (kp_mdb_asm_pop(&a, &f)) {
		char fr[160];
		kp_mdb_frame_format(f.w, f.n, fr, sizeof(fr));
		used += (size_t)snprintf(out + used, cap - used, "%s%s", used ? "/" : "", fr);
	}
}

static void test_assembler(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(asms) / sizeof(asms[0]); i++) {
		char got[512];
		run_asm(asms[i].role, asms[i].in, got, sizeof(got));
		if (strcmp(got, asms[i].frames) != 0)
			fail_msg("%s: \"%s\", want \"%s\"", asms[i].name, got, asms[i].frames);
	}
}

static void test_assembler_limits(void **state)
{
	(void)state;
	kp_mdb_asm a;
	kp_mdb_asm_init(&a, KP_MDB_ROLE_PERIPHERAL, 50);
	assert_int_equal(kp_mdb_asm_deadline(&a), 0);
	/* longer than any block: cut at 36, the rest dropped until the gap */
	kp_mdb_asm_push(&a, 0x117, 100);
	kp_mdb_asm_push(&a, 0xFF, 100);
	for (int i = 0; i < 40; i++)
		kp_mdb_asm_push(&a, 0x01, 100);
	kp_mdb_frame f;
	assert_true(kp_mdb_asm_pop(&a, &f));
	assert_int_equal(f.n, KP_MDB_BLOCK_MAX);
	assert_false(kp_mdb_asm_pop(&a, &f));
	assert_int_equal(kp_mdb_asm_deadline(&a), 150);
	kp_mdb_asm_gap(&a, 150);
	kp_mdb_asm_push(&a, 0x00, 160); /* after the gap a lone ACK counts again */
	assert_true(kp_mdb_asm_pop(&a, &f));
	assert_int_equal(f.n, 1);
	/* nobody reads: the newest frames are kept */
	for (int i = 0; i < 6; i++)
		kp_mdb_asm_push(&a, (uint16_t)i, 200);
	assert_int_equal(a.qn, KP_MDB_ASM_QUEUE);
	assert_int_equal(a.lost, 2);
	assert_true(kp_mdb_asm_pop(&a, &f));
	assert_int_equal(f.w[0], 2);
}

/* ---- over a pty ---- */

struct pty {
	int master;
	char slave[64];
};

static void pty_open(struct pty *p)
{
	p->master = posix_openpt(O_RDWR | O_NOCTTY);
	assert_true(p->master >= 0);
	assert_int_equal(grantpt(p->master), 0);
	assert_int_equal(unlockpt(p->master), 0);
	snprintf(p->slave, sizeof(p->slave), "%s", ptsname(p->master));
	/* raw before anyone writes, as kp-vmcsim does */
	int s = open(p->slave, O_RDWR | O_NOCTTY);
	assert_true(s >= 0);
	struct termios t;
	assert_int_equal(tcgetattr(s, &t), 0);
	cfmakeraw(&t);
	assert_int_equal(tcsetattr(s, TCSANOW, &t), 0);
	close(s);
}

/* Read frames until one comes or tries run out (the pty needs a moment). */
static kp_err recv_wait(kp_mdb_transport *t, uint16_t *w, size_t *n)
{
	kp_err err = KP_ERR_TIMEOUT;
	for (int i = 0; i < 200 && err == KP_ERR_TIMEOUT; i++) {
		err = kp_mdb_transport_recv(t, w, KP_MDB_BLOCK_MAX, n);
		if (err == KP_ERR_TIMEOUT)
			usleep(1000);
	}
	return err;
}

static void test_pty_both_ends(void **state)
{
	(void)state;
	kp_env env;
	kp_fake_world world;
	kp_env_init_fake(&env, &world, 7, 1700000000000);
	world.quiet = true;

	char dir[] = "/tmp/kp-mdb-serial-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char link[128];
	snprintf(link, sizeof(link), "%s/mdb", dir);

	struct pty p;
	pty_open(&p);
	assert_int_equal(symlink(p.slave, link), 0);

	kp_mdb_transport reader, vmc;
	kp_mdb_serial_config rc = {.path = link, .framing = KP_MDB_FRAMING_PAIR, .role = KP_MDB_ROLE_PERIPHERAL};
	assert_int_equal(kp_mdb_serial_open(&reader, &rc, &env), KP_OK);
	assert_true(kp_mdb_transport_fd(&reader) >= 0);
	assert_string_equal(reader.ops->name, "serial");
	kp_mdb_serial_config vc = {.framing = KP_MDB_FRAMING_PAIR, .role = KP_MDB_ROLE_VMC};
	assert_int_equal(kp_mdb_serial_open_fd(&vmc, p.master, &vc, &env), KP_OK);

	uint16_t w[KP_MDB_BLOCK_MAX];
	size_t n = 0;
	assert_int_equal(kp_mdb_transport_recv(&reader, w, KP_MDB_BLOCK_MAX, &n), KP_ERR_TIMEOUT);

	/* a VEND REQUEST in two writes, then a POLL in the same read */
	uint16_t vr[8];
	size_t vn = words_or_fail("13* 00 00 96 00 01 AA", vr, 8);
	assert_int_equal(kp_mdb_transport_send(&vmc, vr, 3), KP_OK);
	assert_int_equal(kp_mdb_transport_send(&vmc, vr + 3, vn - 3), KP_OK);
	uint16_t poll[2];
	words_or_fail("12* 12", poll, 2);
	assert_int_equal(kp_mdb_transport_send(&vmc, poll, 2), KP_OK);
	assert_int_equal(recv_wait(&reader, w, &n), KP_OK);
	assert_words(w, n, "13* 00 00 96 00 01 AA");
	assert_int_equal(recv_wait(&reader, w, &n), KP_OK);
	assert_words(w, n, "12* 12");

	/* the reply the other way */
	uint16_t appr[4];
	words_or_fail("05 00 96 9B*", appr, 4);
	assert_int_equal(kp_mdb_transport_send(&reader, appr, 4), KP_OK);
	assert_int_equal(recv_wait(&vmc, w, &n), KP_OK);
	assert_words(w, n, "05 00 96 9B*");

	/* a level-3 block has no fixed length: the gap ends it */
	uint16_t l3[5];
	words_or_fail("17* FF 01 02 19", l3, 5);
	assert_int_equal(kp_mdb_transport_send(&vmc, l3, 5), KP_OK);
	for (int i = 0; i < 50; i++) { /* let it arrive: still partial */
		assert_int_equal(kp_mdb_transport_recv(&reader, w, KP_MDB_BLOCK_MAX, &n), KP_ERR_TIMEOUT);
		usleep(1000);
	}
	int64_t dl = kp_mdb_transport_deadline(&reader);
	assert_int_equal(dl, kp_now_mono(&env) + KP_MDB_SERIAL_GAP_PAIR_MS);
	kp_fake_advance(&world, KP_MDB_SERIAL_GAP_PAIR_MS);
	assert_int_equal(kp_mdb_transport_recv(&reader, w, KP_MDB_BLOCK_MAX, &n), KP_OK);
	assert_words(w, n, "17* FF 01 02 19");
	kp_mdb_serial_stats st;
	assert_true(kp_mdb_serial_stats_get(&reader, &st));
	assert_int_equal(st.frames_in, 3);
	assert_int_equal(st.cut_by_gap, 1);
	assert_int_equal(st.opens, 1);

	/* the VMC goes away: the reader hangs up and waits */
	kp_mdb_transport_close(&vmc);
	assert_int_equal(recv_wait(&reader, w, &n), KP_ERR_TIMEOUT);
	assert_int_equal(kp_mdb_transport_fd(&reader), -1);
	assert_true(kp_mdb_serial_stats_get(&reader, &st));
	assert_int_equal(st.hangups, 1);
	assert_int_equal(kp_mdb_transport_deadline(&reader), kp_now_mono(&env) + KP_MDB_SERIAL_REOPEN_MS);
	assert_int_equal(kp_mdb_transport_send(&reader, appr, 4), KP_ERR_IO);

	/* a new VMC on a new pty at the same path: opened again when due */
	struct pty p2;
	pty_open(&p2);
	assert_int_equal(unlink(link), 0);
	assert_int_equal(symlink(p2.slave, link), 0);
	assert_int_equal(kp_mdb_serial_open_fd(&vmc, p2.master, &vc, &env), KP_OK);
	assert_int_equal(kp_mdb_transport_recv(&reader, w, KP_MDB_BLOCK_MAX, &n), KP_ERR_TIMEOUT);
	assert_int_equal(kp_mdb_transport_fd(&reader), -1); /* not yet due */
	kp_fake_advance(&world, KP_MDB_SERIAL_REOPEN_MS);
	assert_int_equal(kp_mdb_transport_recv(&reader, w, KP_MDB_BLOCK_MAX, &n), KP_ERR_TIMEOUT);
	assert_true(kp_mdb_transport_fd(&reader) >= 0);
	assert_int_equal(kp_mdb_transport_send(&vmc, poll, 2), KP_OK);
	assert_int_equal(recv_wait(&reader, w, &n), KP_OK);
	assert_words(w, n, "12* 12");
	assert_true(kp_mdb_serial_stats_get(&reader, &st));
	assert_int_equal(st.opens, 2);

	kp_mdb_transport_close(&vmc);
	kp_mdb_transport_close(&reader);
	unlink(link);
	rmdir(dir);
}

static void test_open_errors(void **state)
{
	(void)state;
	kp_env env;
	kp_fake_world world;
	kp_env_init_fake(&env, &world, 7, 1700000000000);
	world.quiet = true;
	kp_mdb_transport t;
	kp_mdb_serial_config c = {.path = "/nonexistent/kp-mdb", .framing = KP_MDB_FRAMING_PAIR};
	/* a missing port is waited for, not refused */
	assert_int_equal(kp_mdb_serial_open(&t, &c, &env), KP_OK);
	assert_int_equal(kp_mdb_transport_fd(&t), -1);
	uint16_t w[KP_MDB_BLOCK_MAX];
	size_t n;
	assert_int_equal(kp_mdb_transport_recv(&t, w, KP_MDB_BLOCK_MAX, &n), KP_ERR_TIMEOUT);
	assert_true(strstr(world.last_log, "/nonexistent/kp-mdb") != NULL);
	kp_mdb_transport_close(&t);

	c.baud = 1234;
	assert_int_equal(kp_mdb_serial_open(&t, &c, &env), KP_ERR_INVALID);
	c.baud = 0;
	c.path = "";
	assert_int_equal(kp_mdb_serial_open(&t, &c, &env), KP_ERR_INVALID);

	/* parity framing needs a UART; a socket is refused (and closed) */
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	kp_mdb_serial_config pc = {.framing = KP_MDB_FRAMING_PARITY};
	assert_int_equal(kp_mdb_serial_open_fd(&t, sv[0], &pc, &env), KP_ERR_IO);
	assert_int_equal(fcntl(sv[0], F_GETFD), -1);
	/* pair framing over a socketpair works; EOF is a hang-up, not reopened */
	kp_mdb_serial_config sc = {.framing = KP_MDB_FRAMING_PAIR};
	assert_int_equal(kp_mdb_serial_open_fd(&t, sv[1], &sc, &env), KP_OK);
	assert_int_equal(kp_mdb_transport_recv(&t, w, KP_MDB_BLOCK_MAX, &n), KP_ERR_IO); /* sv[0] is gone */
	assert_int_equal(kp_mdb_transport_fd(&t), -1);
	assert_int_equal(kp_mdb_transport_deadline(&t), 0);
	kp_mdb_serial_stats st;
	assert_true(kp_mdb_serial_stats_get(&t, &st));
	assert_int_equal(st.hangups, 1);
	kp_mdb_transport_close(&t);
	assert_int_equal(kp_mdb_serial_open_fd(&t, -1, &sc, &env), KP_ERR_INVALID);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unframer),
		cmocka_unit_test(test_frame_bytes),
		cmocka_unit_test(test_assembler),
		cmocka_unit_test(test_assembler_limits),
		cmocka_unit_test(test_pty_both_ends),
		cmocka_unit_test(test_open_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
