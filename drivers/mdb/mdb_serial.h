/* mdb_serial.h — the MDB bus through a serial port (termios), behind the
 * transport ops of mdb_transport.h. Two ways to carry the 9th (mode) bit, see
 * docs/mdb.md "Serial framings": "parity" for a UART wired to the bus through
 * a level shifter (the mode bit is the parity bit, mark = 1, space = 0), and
 * "pair" for a byte stream that carries each word as two bytes [flags][data]
 * (a pty to kp-vmcsim, or a USB bridge that speaks it). The same code is the
 * reader's end (kioskpayd) and the VMC's end (kp-vmcsim): the role decides how
 * the stream is cut into frames. */
#ifndef KP_MDB_SERIAL_H
#define KP_MDB_SERIAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kp_env.h"
#include "kp_error.h"
#include "mdb_codec.h"
#include "mdb_transport.h"

typedef enum kp_mdb_framing {
	KP_MDB_FRAMING_PAIR = 0, /* [flags][data] per word: flags 01 = mode bit, 80 = bus reset */
	KP_MDB_FRAMING_PARITY,   /* 9-bit UART: mark/space parity out, PARMRK in */
} kp_mdb_framing;

typedef enum kp_mdb_role {
	KP_MDB_ROLE_PERIPHERAL = 0, /* we are the reader: frames from the VMC start with the mode bit */
	KP_MDB_ROLE_VMC,            /* we are the VMC: frames from a peripheral end with it */
} kp_mdb_role;

#define KP_MDB_SERIAL_GAP_PAIR_MS 50   /* default inter-byte gap that cuts a frame, pair framing */
#define KP_MDB_SERIAL_GAP_PARITY_MS 3  /* ... parity framing (the bus allows 1 ms) */
#define KP_MDB_SERIAL_REOPEN_MS 1000   /* a missing or hung-up port is tried again this often */

typedef struct kp_mdb_serial_config {
	const char *path;       /* the tty (kp_mdb_serial_open only) */
	kp_mdb_framing framing;
	kp_mdb_role role;
	unsigned baud;          /* 0 = 9600, the bus rate; a pty ignores it */
	int gap_ms;             /* 0 = the framing's default */
} kp_mdb_serial_config;

typedef struct kp_mdb_serial_stats {
	uint64_t frames_in;     /* complete frames handed to recv() */
	uint64_t cut_by_gap;    /* frames ended by the gap (variable length or truncated) */
	uint64_t bytes_dropped; /* bytes that did not parse (bad flags) */
	uint64_t bus_resets;    /* pair framing: bus reset marks seen */
	uint64_t opens;         /* successful opens (first one included) */
	uint64_t hangups;       /* read errors or EOF that closed the port */
} kp_mdb_serial_stats;

/* Open the port at cfg->path: raw mode, 8 data bits, the framing's parity,
 * non-blocking. A port that is missing or fails to open is not an error
 * here: it is logged and tried again every KP_MDB_SERIAL_REOPEN_MS (fd() is
 * -1 meanwhile), and so is a port that hangs up (USB unplugged, the pty's
 * other end gone). KP_ERR_INVALID for a bad config, KP_ERR_NOMEM. On success
 * *t owns the backend: kp_mdb_transport_close() frees it. env is borrowed
 * (clock for the gap, log). */
kp_err kp_mdb_serial_open(kp_mdb_transport *t, const kp_mdb_serial_config *cfg, const kp_env *env) KP_MUST_USE;

/* The same over a descriptor the caller opened (a pty master, one end of a
 * socketpair); cfg->path is ignored. termios is set only if fd is a tty. The
 * transport owns fd from the call on (closed on error too); once it hangs up
 * recv() gives KP_ERR_IO and it is not reopened. */
kp_err kp_mdb_serial_open_fd(kp_mdb_transport *t, int fd, const kp_mdb_serial_config *cfg,
			     const kp_env *env) KP_MUST_USE;

/* Counters of a transport made by this module; false if t is another backend. */
bool kp_mdb_serial_stats_get(const kp_mdb_transport *t, kp_mdb_serial_stats *out);

/* "pair" / "parity" and back; KP_ERR_INVALID for other text. */
kp_err kp_mdb_framing_from_string(const char *text, kp_mdb_framing *out) KP_MUST_USE;
const char *kp_mdb_framing_name(kp_mdb_framing f);

/* ---- the pieces, pure, exposed for tests ---- */

/* Stream decoder: bytes of a framing in, 9-bit words out. */
typedef struct kp_mdb_unframer {
	kp_mdb_framing framing;
	int state;      /* pair: 0 or 1 (flags byte held); parity: 0, 1 (after FF), 2 (after FF 00) */
	uint8_t held;
} kp_mdb_unframer;

/* A bus reset mark in the word stream (pair framing flags 80). */
#define KP_MDB_WORD_BUS_RESET 0x8000u

void kp_mdb_unframer_init(kp_mdb_unframer *u, kp_mdb_framing framing);
/* Forget a half-read word (after a gap). */
void kp_mdb_unframer_reset(kp_mdb_unframer *u);
/* Decode len bytes; the words go to out[cap], *n set to how many were made
 * (a bus reset is the word KP_MDB_WORD_BUS_RESET). *dropped counts bytes
 * that made no sense (a pair whose flags byte is not 00, 01 or 80: the byte
 * is dropped so that the stream can fall back into step). cap must be at
 * least len + 1 (a byte makes one word, but a parity FF held from the last
 * call makes two with the byte after it). */
void kp_mdb_unframer_feed(kp_mdb_unframer *u, const uint8_t *bytes, size_t len, uint16_t *out, size_t cap,
			  size_t *n, uint64_t *dropped);
/* Encode words for the framing into bytes[cap]; returns the length, 0 if it
 * does not fit. Parity framing: the data bytes only (the mode bits are set
 * by switching the parity, see mdb_serial.c). */
size_t kp_mdb_frame_bytes(kp_mdb_framing framing, const uint16_t *words, size_t n, uint8_t *bytes, size_t cap);

#define KP_MDB_ASM_QUEUE 4

/* Frame assembler: words in (with their arrival time), whole frames out. */
typedef struct kp_mdb_asm {
	kp_mdb_role role;
	int gap_ms;
	uint16_t w[KP_MDB_BLOCK_MAX]; /* the frame being assembled */
	size_t n;
	bool discard;                 /* over-long frame: drop words until the next start */
	int64_t last_ms;              /* arrival of the last word */
	kp_mdb_frame q[KP_MDB_ASM_QUEUE]; /* complete frames, oldest first */
	size_t qn;
	uint64_t cut_by_gap;
	uint64_t lost;                /* frames dropped because the queue was full */
} kp_mdb_asm;

void kp_mdb_asm_init(kp_mdb_asm *a, kp_mdb_role role, int gap_ms);
/* One word that arrived at now_ms (KP_MDB_WORD_BUS_RESET: the peripheral
 * side turns it into a RESET frame, the VMC side ignores it). */
void kp_mdb_asm_push(kp_mdb_asm *a, uint16_t word, int64_t now_ms);
/* A partial frame whose last word is gap_ms old is complete as it is. */
void kp_mdb_asm_gap(kp_mdb_asm *a, int64_t now_ms);
/* Take the oldest complete frame; false if none. */
bool kp_mdb_asm_pop(kp_mdb_asm *a, kp_mdb_frame *out);
/* When the partial frame's gap runs out (monotonic ms), 0 if none. */
int64_t kp_mdb_asm_deadline(const kp_mdb_asm *a);

#endif
