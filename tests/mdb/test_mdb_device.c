/* test_mdb_device.c — the cashless state machine: every state x every command
 * (reply, action, next state, what the next POLL says), the exchanges of
 * ../shared/mdb.md §6, lost ACKs and repeats, rollback after a failed commit,
 * and broken frames that must change nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "mdb_device.h"
#include "mdb_words.h"

/* Commands as the VMC sends them (mdb.md §6). */
#define RESET "10* 10"
#define SETUP "11* 00 01 00 00 00 12"
#define PRICES "11* 01 00 C8 00 32 0C"
#define POLL "12* 12"
#define VREQ "13* 00 00 96 00 01 AA"   /* 1.50, item 1 */
#define VREQ2 "13* 00 00 64 00 02 79"  /* 1.00, item 2 */
#define VREQ_BIG "13* 00 27 11 00 01 4C" /* 100.01 > max_price 100.00 */
#define VREQ_ZERO "13* 00 00 00 00 01 14"
#define VCANCEL "13* 01 14"
#define VSUCC "13* 02 00 01 16"
#define VFAIL "13* 03 16"
#define SCOMP "13* 04 17"
#define CASH "13* 05 00 96 00 01 AF"
#define DIS "14* 00 14"
#define ENA "14* 01 15"
#define RCAN "14* 02 16"
#define EXPID "17* 00 56 4D 43 30 30 30 30 30 30 30 30 30 30 30 31 4D 4F 44 45 4C 2D 41 20 20 20 20 20 01 00 BE"
#define UNSUP "17* FF 16"
#define ACK "00"
#define RET "AA"
#define NAK "FF"

/* Our replies. */
#define R_ACK "00*"
#define R_JUST_RESET "00 00*"
#define R_CONFIG "01 01 19 78 01 02 5A 01 F1*"
#define R_ID "09 4B 50 59 30 30 30 30 30 30 30 30 30 30 34 32 4B 49 4F 53 4B 50 41 59 20 20 20 20 01 02 31*"
#define R_BEGIN "03 FF FF 01*"
#define R_SCANCEL "04 04*"
#define R_APPROVED "05 00 96 9B*"
#define R_DENIED "06 06*"
#define R_END "07 07*"
#define R_CANCELLED "08 08*"
#define R_OOS "0B 0B*"
#define SILENT ""

enum op {
	RX,      /* the VMC sends frame; we answer reply */
	APPROVE, /* engine calls, arg = amount / funds */
	DENY,
	BEGIN,
	CANCEL_SESSION,
	ROLLBACK,
	WAIT,    /* arg ms pass */
};

struct step {
	enum op op;
	const char *frame;
	const char *reply;
	kp_mdb_action action;
	kp_mdb_state state; /* after the step */
	int arg;
	kp_err rc; /* engine calls and rollback */
};

#define S_(f, r, a, s) {RX, f, r, KP_MDB_ACT_##a, KP_MDB_##s, 0, KP_OK}
#define CALL(op, arg, rc, s) {op, NULL, NULL, KP_MDB_ACT_NONE, KP_MDB_##s, arg, rc}

struct rig {
	kp_mdb_device *dev;
	int64_t now;
	kp_mdb_out last;
};

static void rig_open(struct rig *r)
{
	kp_mdb_device_config cfg;
	kp_mdb_device_config_default(&cfg);
	cfg.session_timeout_ms = 60000;
	r->now = 1000;
	assert_int_equal(kp_mdb_device_new(&r->dev, &cfg), KP_OK);
}

static void run(struct rig *r, const char *name, const struct step *steps, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct step *s = &steps[i];
		kp_err rc = KP_OK;
		switch (s->op) {
		case RX: {
			uint16_t w[64];
			size_t nw = mdb_words(s->frame, w, 64);
			if (nw > 64)
				fail_msg("%s step %zu: bad frame text \"%s\"", name, i, s->frame);
			assert_int_equal(kp_mdb_device_receive(r->dev, w, nw, r->now, &r->last), KP_OK);
			char got[200];
			kp_mdb_frame_format(r->last.reply.w, r->last.reply.n, got, sizeof(got));
			if (strcmp(got, s->reply) != 0 || r->last.action != s->action)
				fail_msg("%s step %zu (> %s): got < \"%s\" %s, want < \"%s\" %s", name, i, s->frame,
					 got, kp_mdb_action_name(r->last.action), s->reply,
					 kp_mdb_action_name(s->action));
			break;
		}
		case APPROVE:
			rc = kp_mdb_device_approve(r->dev, (uint16_t)s->arg);
			break;
		case DENY:
			rc = kp_mdb_device_deny(r->dev);
			break;
		case BEGIN:
			rc = kp_mdb_device_begin_session(r->dev, (uint16_t)s->arg);
			break;
		case CANCEL_SESSION:
			rc = kp_mdb_device_cancel_session(r->dev);
			break;
		case ROLLBACK:
			rc = kp_mdb_device_rollback(r->dev);
			break;
		case WAIT:
			r->now += s->arg;
			break;
		}
		if (rc != s->rc)
			fail_msg("%s step %zu: rc %s, want %s", name, i, kp_errname(rc), kp_errname(s->rc));
		kp_mdb_state st = kp_mdb_device_state(r->dev);
		if (st != s->state)
			fail_msg("%s step %zu: state %s, want %s", name, i, kp_mdb_state_name(st),
				 kp_mdb_state_name(s->state));
		r->now += 50; /* the VMC polls every 25-200 ms */
	}
}

#define RUN(r, steps) run((r), #steps, (steps), sizeof(steps) / sizeof((steps)[0]))

/* ---- preludes: reach each situation from power-up ---- */

static const struct step to_inactive[] = {
	S_(POLL, R_JUST_RESET, NONE, INACTIVE),
	S_(ACK, SILENT, NONE, INACTIVE),
};
static const struct step to_disabled[] = {
	S_(SETUP, R_CONFIG, SETUP, DISABLED),
	S_(ACK, SILENT, NONE, DISABLED),
	S_(POLL, R_ACK, NONE, DISABLED),
};
static const struct step to_enabled[] = {
	S_(ENA, R_ACK, READER_ENABLE, ENABLED),
	S_(POLL, R_ACK, NONE, ENABLED),
};
static const struct step to_session[] = {
	CALL(BEGIN, 0xFFFF, KP_OK, ENABLED),
	S_(POLL, R_BEGIN, NONE, ENABLED),
	S_(ACK, SILENT, SESSION_STARTED, SESSION_IDLE),
	S_(POLL, R_ACK, NONE, SESSION_IDLE),
};
static const struct step to_vend[] = {
	S_(VREQ, R_ACK, VEND_REQUEST, VEND),
	S_(POLL, R_ACK, NONE, VEND),
};
static const struct step to_approved[] = {
	CALL(APPROVE, 150, KP_OK, VEND),
	S_(POLL, R_APPROVED, NONE, VEND),
	S_(ACK, SILENT, APPROVAL_DELIVERED, VEND),
	S_(POLL, R_ACK, NONE, VEND),
};

enum situation { SIT_INACTIVE, SIT_DISABLED, SIT_ENABLED, SIT_SESSION, SIT_VEND, SIT_APPROVED, SIT_N };

static void reach(struct rig *r, enum situation sit)
{
	RUN(r, to_inactive);
	if (sit >= SIT_DISABLED)
		RUN(r, to_disabled);
	if (sit >= SIT_ENABLED)
		RUN(r, to_enabled);
	if (sit >= SIT_SESSION)
		RUN(r, to_session);
	if (sit >= SIT_VEND)
		RUN(r, to_vend);
	if (sit >= SIT_APPROVED)
		RUN(r, to_approved);
}

/* ---- every situation x every command ---- */

struct cell {
	enum situation sit;
	const char *frame;
	const char *reply;
	kp_mdb_action action;
	kp_mdb_state state;
	const char *next_poll; /* what the POLL after it gets */
};

#define C_(sit, f, r, a, s, p) {SIT_##sit, f, r, KP_MDB_ACT_##a, KP_MDB_##s, p}

static const struct cell matrix[] = {
	C_(INACTIVE, RESET, R_ACK, RESET, INACTIVE, R_JUST_RESET),
	C_(INACTIVE, SETUP, R_CONFIG, SETUP, DISABLED, R_ACK),
	C_(INACTIVE, PRICES, R_ACK, PRICES, INACTIVE, R_ACK),
	C_(INACTIVE, POLL, R_ACK, NONE, INACTIVE, R_ACK),
	C_(INACTIVE, VREQ, R_ACK, OUT_OF_SEQUENCE, INACTIVE, R_OOS),
	C_(INACTIVE, VCANCEL, R_ACK, OUT_OF_SEQUENCE, INACTIVE, R_OOS),
	C_(INACTIVE, VSUCC, R_ACK, OUT_OF_SEQUENCE, INACTIVE, R_OOS),
	C_(INACTIVE, VFAIL, R_ACK, OUT_OF_SEQUENCE, INACTIVE, R_OOS),
	C_(INACTIVE, SCOMP, R_ACK, OUT_OF_SEQUENCE, INACTIVE, R_OOS),
	C_(INACTIVE, CASH, R_ACK, OUT_OF_SEQUENCE, INACTIVE, R_OOS),
	C_(INACTIVE, DIS, R_ACK, NONE, INACTIVE, R_ACK),
	C_(INACTIVE, ENA, R_ACK, OUT_OF_SEQUENCE, INACTIVE, R_OOS),
	C_(INACTIVE, RCAN, R_ACK, OUT_OF_SEQUENCE, INACTIVE, R_OOS),
	C_(INACTIVE, EXPID, R_ID, VMC_ID, INACTIVE, R_ACK),
	C_(INACTIVE, UNSUP, R_ACK, IGNORED, INACTIVE, R_ACK),

	C_(DISABLED, RESET, R_ACK, RESET, INACTIVE, R_JUST_RESET),
	C_(DISABLED, SETUP, R_CONFIG, SETUP, DISABLED, R_ACK),
	C_(DISABLED, PRICES, R_ACK, PRICES, DISABLED, R_ACK),
	C_(DISABLED, POLL, R_ACK, NONE, DISABLED, R_ACK),
	C_(DISABLED, VREQ, R_ACK, OUT_OF_SEQUENCE, DISABLED, R_OOS),
	C_(DISABLED, VCANCEL, R_ACK, OUT_OF_SEQUENCE, DISABLED, R_OOS),
	C_(DISABLED, VSUCC, R_ACK, OUT_OF_SEQUENCE, DISABLED, R_OOS),
	C_(DISABLED, VFAIL, R_ACK, OUT_OF_SEQUENCE, DISABLED, R_OOS),
	C_(DISABLED, SCOMP, R_ACK, OUT_OF_SEQUENCE, DISABLED, R_OOS),
	C_(DISABLED, CASH, R_ACK, IGNORED, DISABLED, R_ACK),
	C_(DISABLED, DIS, R_ACK, NONE, DISABLED, R_ACK),
	C_(DISABLED, ENA, R_ACK, READER_ENABLE, ENABLED, R_ACK),
	C_(DISABLED, RCAN, R_ACK, READER_CANCEL, DISABLED, R_CANCELLED),
	C_(DISABLED, EXPID, R_ID, VMC_ID, DISABLED, R_ACK),
	C_(DISABLED, UNSUP, R_ACK, IGNORED, DISABLED, R_ACK),

	C_(ENABLED, RESET, R_ACK, RESET, INACTIVE, R_JUST_RESET),
	C_(ENABLED, SETUP, R_CONFIG, SETUP, ENABLED, R_ACK),
	C_(ENABLED, PRICES, R_ACK, PRICES, ENABLED, R_ACK),
	C_(ENABLED, POLL, R_ACK, NONE, ENABLED, R_ACK),
	C_(ENABLED, VREQ, R_ACK, OUT_OF_SEQUENCE, ENABLED, R_OOS),
	C_(ENABLED, VCANCEL, R_ACK, OUT_OF_SEQUENCE, ENABLED, R_OOS),
	C_(ENABLED, VSUCC, R_ACK, OUT_OF_SEQUENCE, ENABLED, R_OOS),
	C_(ENABLED, VFAIL, R_ACK, OUT_OF_SEQUENCE, ENABLED, R_OOS),
	C_(ENABLED, SCOMP, R_ACK, OUT_OF_SEQUENCE, ENABLED, R_OOS),
	C_(ENABLED, CASH, R_ACK, IGNORED, ENABLED, R_ACK),
	C_(ENABLED, DIS, R_ACK, READER_DISABLE, DISABLED, R_ACK),
	C_(ENABLED, ENA, R_ACK, NONE, ENABLED, R_ACK),
	C_(ENABLED, RCAN, R_ACK, READER_CANCEL, ENABLED, R_CANCELLED),
	C_(ENABLED, EXPID, R_ID, VMC_ID, ENABLED, R_ACK),
	C_(ENABLED, UNSUP, R_ACK, IGNORED, ENABLED, R_ACK),

	C_(SESSION, RESET, R_ACK, RESET, INACTIVE, R_JUST_RESET),
	C_(SESSION, SETUP, R_ACK, OUT_OF_SEQUENCE, SESSION_IDLE, R_OOS),
	C_(SESSION, PRICES, R_ACK, PRICES, SESSION_IDLE, R_ACK),
	C_(SESSION, POLL, R_ACK, NONE, SESSION_IDLE, R_ACK),
	C_(SESSION, VREQ, R_ACK, VEND_REQUEST, VEND, R_ACK),
	C_(SESSION, VCANCEL, R_ACK, OUT_OF_SEQUENCE, SESSION_IDLE, R_OOS),
	C_(SESSION, VSUCC, R_ACK, OUT_OF_SEQUENCE, SESSION_IDLE, R_OOS),
	C_(SESSION, VFAIL, R_ACK, OUT_OF_SEQUENCE, SESSION_IDLE, R_OOS),
	C_(SESSION, SCOMP, R_ACK, SESSION_COMPLETE, SESSION_IDLE, R_END),
	C_(SESSION, CASH, R_ACK, IGNORED, SESSION_IDLE, R_ACK),
	C_(SESSION, DIS, R_ACK, READER_DISABLE, SESSION_IDLE, R_ACK),
	C_(SESSION, ENA, R_ACK, NONE, SESSION_IDLE, R_ACK),
	C_(SESSION, RCAN, R_ACK, OUT_OF_SEQUENCE, SESSION_IDLE, R_OOS),
	C_(SESSION, EXPID, R_ACK, OUT_OF_SEQUENCE, SESSION_IDLE, R_OOS),
	C_(SESSION, UNSUP, R_ACK, IGNORED, SESSION_IDLE, R_ACK),

	C_(VEND, RESET, R_ACK, RESET, INACTIVE, R_JUST_RESET),
	C_(VEND, SETUP, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(VEND, PRICES, R_ACK, PRICES, VEND, R_ACK),
	C_(VEND, POLL, R_ACK, NONE, VEND, R_ACK),
	C_(VEND, VREQ, R_ACK, NONE, VEND, R_ACK), /* the same request: same order */
	C_(VEND, VREQ2, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(VEND, VCANCEL, R_ACK, VEND_CANCEL, VEND, R_ACK), /* 06 once the engine denies */
	C_(VEND, VSUCC, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(VEND, VFAIL, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(VEND, SCOMP, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS), /* vector 16 */
	C_(VEND, CASH, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(VEND, DIS, R_ACK, READER_DISABLE, VEND, R_ACK),
	C_(VEND, ENA, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(VEND, RCAN, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(VEND, EXPID, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(VEND, UNSUP, R_ACK, IGNORED, VEND, R_ACK),

	C_(APPROVED, RESET, R_ACK, RESET, INACTIVE, R_JUST_RESET),
	C_(APPROVED, SETUP, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(APPROVED, PRICES, R_ACK, PRICES, VEND, R_ACK),
	C_(APPROVED, POLL, R_ACK, NONE, VEND, R_ACK),
	C_(APPROVED, VREQ, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(APPROVED, VCANCEL, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(APPROVED, VSUCC, R_ACK, VEND_SUCCESS, SESSION_IDLE, R_ACK),
	C_(APPROVED, VFAIL, R_ACK, VEND_FAILURE, SESSION_IDLE, R_ACK),
	C_(APPROVED, SCOMP, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(APPROVED, CASH, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(APPROVED, DIS, R_ACK, READER_DISABLE, VEND, R_ACK),
	C_(APPROVED, ENA, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(APPROVED, RCAN, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(APPROVED, EXPID, R_ACK, OUT_OF_SEQUENCE, VEND, R_OOS),
	C_(APPROVED, UNSUP, R_ACK, IGNORED, VEND, R_ACK),
};

static void test_state_command_matrix(void **state)
{
	(void)state;
	unsigned seen[SIT_N] = {0};
	for (size_t i = 0; i < sizeof(matrix) / sizeof(matrix[0]); i++) {
		const struct cell *c = &matrix[i];
		struct rig r;
		rig_open(&r);
		reach(&r, c->sit);
		kp_mdb_state before = kp_mdb_device_state(r.dev);
		const struct step cmd = {RX, c->frame, c->reply, c->action, c->state, 0, KP_OK};
		char name[64];
		snprintf(name, sizeof(name), "matrix row %zu", i);
		run(&r, name, &cmd, 1);
		assert_int_equal(r.last.prev_state, before);
		uint16_t w[4];
		size_t nw = mdb_words(POLL, w, 4);
		assert_int_equal(kp_mdb_device_receive(r.dev, w, nw, r.now, &r.last), KP_OK);
		char got[200];
		kp_mdb_frame_format(r.last.reply.w, r.last.reply.n, got, sizeof(got));
		if (strcmp(got, c->next_poll) != 0)
			fail_msg("matrix row %zu (%s): next POLL got \"%s\", want \"%s\"", i, c->frame, got,
				 c->next_poll);
		seen[c->sit]++;
		kp_mdb_device_free(r.dev);
	}
	for (int s = 0; s < SIT_N; s++)
		assert_true(seen[s] >= 15); /* every command in every situation */
}

/* ---- broken frames change nothing, in every situation ---- */

static void test_broken_frames_change_nothing(void **state)
{
	(void)state;
	static const char *const broken[] = {
		"13* 00 00 96 00 01 AB", /* bad CHK (vector 15) */
		"13* 00 00 96 00 01",    /* truncated */
		"13* 01 14 00",          /* too long */
		"13* 07 1A",             /* unknown subcommand */
		"16* 16",                /* unknown command */
		"13* 01* 14",            /* mode bit on data */
		"55",                    /* stray byte */
		"30* 30",                /* for the bill validator */
		"10* 11",                /* a RESET with a bad CHK resets nothing */
	};
	for (int sit = 0; sit < SIT_N; sit++) {
		for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
			struct rig r;
			rig_open(&r);
			reach(&r, (enum situation)sit);
			kp_mdb_state before = kp_mdb_device_state(r.dev);
			kp_mdb_device_stats st0, st1;
			kp_mdb_device_stats_get(r.dev, &st0);
			uint16_t w[64];
			size_t n = mdb_words(broken[i], w, 64);
			assert_int_equal(kp_mdb_device_receive(r.dev, w, n, r.now, &r.last), KP_OK);
			assert_int_equal(r.last.reply.n, 0);
			assert_int_equal(r.last.action, KP_MDB_ACT_NONE);
			assert_int_not_equal(r.last.dec, KP_MDB_DEC_OK);
			assert_int_equal(kp_mdb_device_state(r.dev), before);
			kp_mdb_device_stats_get(r.dev, &st1);
			assert_int_equal(st1.bad_frames, st0.bad_frames + (strcmp(broken[i], "30* 30") != 0));
			/* nothing to undo, and the next POLL is as if nothing came */
			assert_int_equal(kp_mdb_device_rollback(r.dev), KP_ERR_STATE);
			const struct step after[] = {S_(POLL, R_ACK, NONE, VEND)};
			struct step s = after[0];
			s.state = before;
			run(&r, broken[i], &s, 1);
			kp_mdb_device_free(r.dev);
		}
	}
}

/* ---- mdb.md §6 exchanges ---- */

static const struct step vectors_1_to_5[] = {
	S_(RESET, R_ACK, RESET, INACTIVE),                 /* 1 */
	S_(POLL, R_JUST_RESET, NONE, INACTIVE),            /* 2 */
	S_(ACK, SILENT, NONE, INACTIVE),
	S_(POLL, R_ACK, NONE, INACTIVE),                   /* JUST RESET only until ACKed */
	S_(SETUP, R_CONFIG, SETUP, DISABLED),              /* 3 */
	S_(ACK, SILENT, NONE, DISABLED),
	S_("11* 00 03 10 02 01 27", R_CONFIG, SETUP, DISABLED), /* L3 VMC, same reply */
	S_(ACK, SILENT, NONE, DISABLED),
	S_(PRICES, R_ACK, PRICES, DISABLED),               /* 4 */
	S_("11* 01 FF FF 00 00 10", R_ACK, PRICES, DISABLED),
	S_(ENA, R_ACK, READER_ENABLE, ENABLED),            /* 5 */
	S_(DIS, R_ACK, READER_DISABLE, DISABLED),
	S_(ENA, R_ACK, READER_ENABLE, ENABLED),
	S_(EXPID, R_ID, VMC_ID, ENABLED),                  /* 6 */
	S_(ACK, SILENT, NONE, ENABLED),
};

static const struct step vectors_7_to_10[] = {
	CALL(BEGIN, 0xFFFF, KP_OK, ENABLED),
	S_(POLL, R_BEGIN, NONE, ENABLED),                  /* 7 */
	S_(ACK, SILENT, SESSION_STARTED, SESSION_IDLE),
	S_(VREQ, R_ACK, VEND_REQUEST, VEND),               /* 8 */
	S_(POLL, R_ACK, NONE, VEND),                       /* 9: paying */
	CALL(APPROVE, 150, KP_OK, VEND),
	S_(POLL, R_APPROVED, NONE, VEND),
	S_(RET, R_APPROVED, NONE, VEND),                   /* RET: the same block again */
	S_(ACK, SILENT, APPROVAL_DELIVERED, VEND),
	S_(POLL, R_ACK, NONE, VEND),
	S_(VSUCC, R_ACK, VEND_SUCCESS, SESSION_IDLE),      /* 10 */
	S_(POLL, R_ACK, NONE, SESSION_IDLE),
	S_(SCOMP, R_ACK, SESSION_COMPLETE, SESSION_IDLE),  /* 13 */
	S_(POLL, R_END, NONE, SESSION_IDLE),
	S_(ACK, SILENT, SESSION_ENDED, ENABLED),
	S_(POLL, R_ACK, NONE, ENABLED),
};

static const struct step vector_11_failure[] = {
	CALL(APPROVE, 150, KP_OK, VEND),
	S_(POLL, R_APPROVED, NONE, VEND),
	S_(ACK, SILENT, APPROVAL_DELIVERED, VEND),
	S_(VFAIL, R_ACK, VEND_FAILURE, SESSION_IDLE),      /* 11 */
	S_(POLL, R_ACK, NONE, SESSION_IDLE),               /* refund durable */
};

static const struct step vector_12_cancel[] = {
	S_(VCANCEL, R_ACK, VEND_CANCEL, VEND),             /* 12 */
	CALL(APPROVE, 150, KP_ERR_STATE, VEND),            /* too late: deny and refund */
	CALL(DENY, 0, KP_OK, VEND),
	S_(POLL, R_DENIED, NONE, VEND),
	S_(ACK, SILENT, NONE, SESSION_IDLE),
	S_(VREQ2, R_ACK, VEND_REQUEST, VEND),              /* a new vend in the same session */
};

static const struct step vector_14_reader_cancel[] = {
	S_(RCAN, R_ACK, READER_CANCEL, ENABLED),           /* 14 */
	S_(POLL, R_CANCELLED, NONE, ENABLED),
	S_(ACK, SILENT, NONE, ENABLED),
	S_(POLL, R_ACK, NONE, ENABLED),
};

static const struct step vector_15_bad_chk_then_repeat[] = {
	S_("13* 00 00 96 00 01 AB", SILENT, NONE, SESSION_IDLE), /* 15 */
	S_(VREQ, R_ACK, VEND_REQUEST, VEND),
	S_(VREQ, R_ACK, NONE, VEND),                       /* its ACK lost: one order */
	S_(POLL, R_ACK, NONE, VEND),
	S_(VREQ, R_ACK, NONE, VEND),                       /* still the same order */
};

static const struct step vector_16_out_of_sequence[] = {
	S_(SCOMP, R_ACK, OUT_OF_SEQUENCE, VEND),           /* 16 */
	S_(POLL, R_OOS, NONE, VEND),
	S_(ACK, SILENT, NONE, VEND),
	S_(RESET, R_ACK, RESET, INACTIVE),
	S_(POLL, R_JUST_RESET, NONE, INACTIVE),
};

static void test_vectors(void **state)
{
	(void)state;
	struct rig r;
	rig_open(&r);
	RUN(&r, vectors_1_to_5);
	RUN(&r, vectors_7_to_10);
	kp_mdb_device_free(r.dev);

	rig_open(&r);
	reach(&r, SIT_VEND);
	RUN(&r, vector_11_failure);
	kp_mdb_device_free(r.dev);

	rig_open(&r);
	reach(&r, SIT_VEND);
	RUN(&r, vector_12_cancel);
	kp_mdb_device_free(r.dev);

	rig_open(&r);
	reach(&r, SIT_ENABLED);
	RUN(&r, vector_14_reader_cancel);
	kp_mdb_device_free(r.dev);

	rig_open(&r);
	reach(&r, SIT_SESSION);
	RUN(&r, vector_15_bad_chk_then_repeat);
	kp_mdb_device_stats st;
	kp_mdb_device_stats_get(r.dev, &st);
	assert_int_equal(st.retransmissions, 1);
	assert_int_equal(st.bad_frames, 1);
	kp_mdb_device_free(r.dev);

	rig_open(&r);
	reach(&r, SIT_VEND);
	RUN(&r, vector_16_out_of_sequence);
	kp_mdb_device_stats_get(r.dev, &st);
	assert_int_equal(st.out_of_sequence, 1);
	kp_mdb_device_free(r.dev);
}

/* ---- lost ACKs, repeats, rollback ---- */

static const struct step approval_lost_ack[] = {
	CALL(APPROVE, 150, KP_OK, VEND),
	S_(POLL, R_APPROVED, NONE, VEND),
	S_(POLL, R_APPROVED, NONE, VEND),                  /* no ACK came: the same again */
	S_(NAK, SILENT, NONE, VEND),
	S_(POLL, R_APPROVED, NONE, VEND),                  /* NAK: again at the next POLL */
	S_(ACK, SILENT, APPROVAL_DELIVERED, VEND),
	S_(ACK, SILENT, NONE, VEND),                       /* a second ACK delivers nothing */
	S_(POLL, R_ACK, NONE, VEND),
};

static const struct step approval_implied_by_outcome[] = {
	CALL(APPROVE, 150, KP_OK, VEND),
	S_(POLL, R_APPROVED, NONE, VEND),
	S_(VSUCC, R_ACK, VEND_SUCCESS, SESSION_IDLE),      /* its ACK was lost on the way */
	S_(POLL, R_ACK, NONE, SESSION_IDLE),               /* 05 is not sent again */
};

static const struct step outcome_before_approval_sent[] = {
	CALL(APPROVE, 150, KP_OK, VEND),
	S_(VSUCC, R_ACK, OUT_OF_SEQUENCE, VEND),           /* the VMC never saw 05 */
	S_(POLL, R_APPROVED, NONE, VEND),
};

static const struct step begin_implied_by_vend[] = {
	CALL(BEGIN, 0xFFFF, KP_OK, ENABLED),
	S_(POLL, R_BEGIN, NONE, ENABLED),
	S_(VREQ, R_ACK, VEND_REQUEST, VEND),               /* the VMC got 03; its ACK was lost */
	S_(POLL, R_ACK, NONE, VEND),
};

static const struct step denial_implied_by_next_vend[] = {
	CALL(DENY, 0, KP_OK, VEND),
	S_(POLL, R_DENIED, NONE, VEND),
	S_(VREQ2, R_ACK, VEND_REQUEST, VEND),
	S_(POLL, R_ACK, NONE, VEND),
};

static const struct step just_reset_implied_by_setup[] = {
	S_(POLL, R_JUST_RESET, NONE, INACTIVE),
	S_(SETUP, R_CONFIG, SETUP, DISABLED),              /* the VMC got 00 00; its ACK was lost */
	S_(ACK, SILENT, NONE, DISABLED),
	S_(POLL, R_ACK, NONE, DISABLED),                   /* JUST RESET is not sent again */
};

static const struct step repeats[] = {
	S_(RESET, R_ACK, RESET, INACTIVE),
	S_(RESET, R_ACK, NONE, INACTIVE),                  /* repeated: no second reset */
	S_(POLL, R_JUST_RESET, NONE, INACTIVE),
	S_(ACK, SILENT, NONE, INACTIVE),
	S_(SETUP, R_CONFIG, SETUP, DISABLED),
	S_(SETUP, R_CONFIG, NONE, DISABLED),               /* our reply was lost: same reply */
	S_(RET, R_CONFIG, NONE, DISABLED),
	S_(ACK, SILENT, NONE, DISABLED),
	S_(SETUP, R_CONFIG, SETUP, DISABLED),              /* after the ACK it is new again */
	S_(ACK, SILENT, NONE, DISABLED),
	S_(ENA, R_ACK, READER_ENABLE, ENABLED),
	S_(ENA, R_ACK, NONE, ENABLED),
	S_(RET, SILENT, NONE, ENABLED),                    /* nothing to repeat after a plain ACK */
};

static void test_lost_acks_and_repeats(void **state)
{
	(void)state;
	struct rig r;
	rig_open(&r);
	reach(&r, SIT_VEND);
	RUN(&r, approval_lost_ack);
	kp_mdb_device_free(r.dev);

	rig_open(&r);
	reach(&r, SIT_VEND);
	RUN(&r, approval_implied_by_outcome);
	kp_mdb_device_free(r.dev);

	rig_open(&r);
	reach(&r, SIT_VEND);
	RUN(&r, outcome_before_approval_sent);
	kp_mdb_device_free(r.dev);

	rig_open(&r);
	reach(&r, SIT_ENABLED);
	RUN(&r, begin_implied_by_vend);
	kp_mdb_device_free(r.dev);

	rig_open(&r);
	reach(&r, SIT_VEND);
	RUN(&r, denial_implied_by_next_vend);
	kp_mdb_device_free(r.dev);

	rig_open(&r);
	RUN(&r, just_reset_implied_by_setup);
	kp_mdb_device_free(r.dev);

	rig_open(&r);
	RUN(&r, repeats);
	kp_mdb_device_stats st;
	kp_mdb_device_stats_get(r.dev, &st);
	assert_int_equal(st.retransmissions, 3);
	assert_int_equal(st.rets, 1);
	kp_mdb_device_free(r.dev);
}

static const struct step commit_fails_then_repeat[] = {
	S_(VREQ, R_ACK, VEND_REQUEST, VEND),
	CALL(ROLLBACK, 0, KP_OK, SESSION_IDLE),            /* the order did not commit: no ACK sent */
	CALL(ROLLBACK, 0, KP_ERR_STATE, SESSION_IDLE),     /* only once */
	S_(VREQ, R_ACK, VEND_REQUEST, VEND),               /* the VMC repeats: a new request */
	CALL(APPROVE, 150, KP_OK, VEND),
	CALL(ROLLBACK, 0, KP_ERR_STATE, VEND),             /* not after another call */
	S_(POLL, R_APPROVED, NONE, VEND),
	S_(ACK, SILENT, APPROVAL_DELIVERED, VEND),
	S_(VFAIL, R_ACK, VEND_FAILURE, SESSION_IDLE),
	CALL(ROLLBACK, 0, KP_OK, VEND),                    /* refund did not commit */
	S_(VFAIL, R_ACK, VEND_FAILURE, SESSION_IDLE),      /* so the repeat asks again */
	S_(VFAIL, R_ACK, NONE, SESSION_IDLE),              /* and a further repeat does not */
};

static void test_rollback(void **state)
{
	(void)state;
	struct rig r;
	rig_open(&r);
	reach(&r, SIT_SESSION);
	RUN(&r, commit_fails_then_repeat);
	kp_mdb_device_free(r.dev);
}

/* ---- engine calls and the session around a vend ---- */

static const struct step cancel_after_approval_queued[] = {
	CALL(APPROVE, 150, KP_OK, VEND),
	S_(VCANCEL, R_ACK, VEND_CANCEL, VEND),             /* before the VMC saw 05 */
	CALL(DENY, 0, KP_ERR_STATE, VEND),                 /* the device denies already */
	S_(POLL, R_DENIED, NONE, VEND),
	S_(ACK, SILENT, NONE, SESSION_IDLE),
};

static const struct step refused_prices[] = {
	S_(VREQ_BIG, R_ACK, VEND_REFUSED, VEND),
	CALL(APPROVE, 10001, KP_ERR_STATE, VEND),
	S_(POLL, R_DENIED, NONE, VEND),
	S_(ACK, SILENT, NONE, SESSION_IDLE),
	S_(VREQ_ZERO, R_ACK, VEND_REFUSED, VEND),
	S_(POLL, R_DENIED, NONE, VEND),
	S_(ACK, SILENT, NONE, SESSION_IDLE),
};

static const struct step engine_calls_out_of_place[] = {
	CALL(APPROVE, 150, KP_ERR_STATE, SESSION_IDLE),
	CALL(DENY, 0, KP_ERR_STATE, SESSION_IDLE),
	CALL(BEGIN, 0xFFFF, KP_ERR_STATE, SESSION_IDLE),
	S_(VREQ, R_ACK, VEND_REQUEST, VEND),
	CALL(CANCEL_SESSION, 0, KP_ERR_STATE, VEND),
	CALL(APPROVE, 151, KP_ERR_INVALID, VEND),          /* never more than the price */
	CALL(APPROVE, 100, KP_OK, VEND),                   /* less is fine (a discount) */
	CALL(APPROVE, 100, KP_ERR_STATE, VEND),
	CALL(DENY, 0, KP_ERR_STATE, VEND),
	S_(POLL, "05 00 64 69*", NONE, VEND),
};

static const struct step disable_during_session[] = {
	S_(DIS, R_ACK, READER_DISABLE, SESSION_IDLE),      /* the session finishes first */
	S_(SCOMP, R_ACK, SESSION_COMPLETE, SESSION_IDLE),
	S_(POLL, R_END, NONE, SESSION_IDLE),
	S_(ACK, SILENT, SESSION_ENDED, DISABLED),
	CALL(BEGIN, 0xFFFF, KP_ERR_STATE, DISABLED),
};

static const struct step disable_drops_queued_session[] = {
	CALL(BEGIN, 500, KP_OK, ENABLED),
	CALL(BEGIN, 500, KP_ERR_STATE, ENABLED),           /* one at a time */
	S_(DIS, R_ACK, READER_DISABLE, DISABLED),
	S_(POLL, R_ACK, NONE, DISABLED),
	S_(ENA, R_ACK, READER_ENABLE, ENABLED),
	CALL(BEGIN, 500, KP_OK, ENABLED),
	S_(POLL, "03 01 F4 F8*", NONE, ENABLED),
	S_(RCAN, R_ACK, READER_CANCEL, ENABLED),           /* sent, not ACKed: dropped too */
	S_(POLL, R_CANCELLED, NONE, ENABLED),
	S_(ACK, SILENT, NONE, ENABLED),
};

static const struct step session_timeout[] = {
	{WAIT, NULL, NULL, KP_MDB_ACT_NONE, KP_MDB_SESSION_IDLE, 59000, KP_OK},
	S_(POLL, R_ACK, NONE, SESSION_IDLE),
	{WAIT, NULL, NULL, KP_MDB_ACT_NONE, KP_MDB_SESSION_IDLE, 1000, KP_OK},
	S_(POLL, R_SCANCEL, SESSION_TIMEOUT, SESSION_IDLE),
	S_(ACK, SILENT, NONE, SESSION_IDLE),
	S_(POLL, R_ACK, NONE, SESSION_IDLE),               /* asked once, not at every POLL */
	S_(SCOMP, R_ACK, SESSION_COMPLETE, SESSION_IDLE),
	S_(POLL, R_END, NONE, SESSION_IDLE),
	S_(ACK, SILENT, SESSION_ENDED, ENABLED),
};

static const struct step engine_cancels_session[] = {
	CALL(CANCEL_SESSION, 0, KP_OK, SESSION_IDLE),
	S_(POLL, R_SCANCEL, NONE, SESSION_IDLE),
	S_(ACK, SILENT, NONE, SESSION_IDLE),
	S_(SCOMP, R_ACK, SESSION_COMPLETE, SESSION_IDLE),
	CALL(CANCEL_SESSION, 0, KP_ERR_STATE, SESSION_IDLE),
	S_(SCOMP, R_ACK, NONE, SESSION_IDLE),              /* repeat */
	S_(POLL, R_END, NONE, SESSION_IDLE),
	S_(VREQ, R_ACK, OUT_OF_SEQUENCE, SESSION_IDLE),    /* the session is ending */
};

static const struct step vend_drops_pending_cancel_request[] = {
	CALL(CANCEL_SESSION, 0, KP_OK, SESSION_IDLE),
	S_(VREQ, R_ACK, VEND_REQUEST, VEND),               /* the VMC vends before it heard 04 */
	S_(POLL, R_ACK, NONE, VEND),                       /* 04 belongs to Session Idle only */
};

static void test_engine_paths(void **state)
{
	(void)state;
	struct {
		enum situation sit;
		const struct step *steps;
		size_t n;
		const char *name;
	} cases[] = {
#define CASE(sit, s) {SIT_##sit, s, sizeof(s) / sizeof(s[0]), #s}
		CASE(VEND, cancel_after_approval_queued),
		CASE(SESSION, refused_prices),
		CASE(SESSION, engine_calls_out_of_place),
		CASE(SESSION, disable_during_session),
		CASE(ENABLED, disable_drops_queued_session),
		CASE(SESSION, session_timeout),
		CASE(SESSION, engine_cancels_session),
		CASE(SESSION, vend_drops_pending_cancel_request),
#undef CASE
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rig r;
		rig_open(&r);
		reach(&r, cases[i].sit);
		run(&r, cases[i].name, cases[i].steps, cases[i].n);
		kp_mdb_device_free(r.dev);
	}
}

/* What the engine learns from the flags next to an action. */
static void test_action_flags(void **state)
{
	(void)state;
	struct rig r;
	static const struct step cancel[] = {
		CALL(APPROVE, 150, KP_OK, VEND),
		S_(VCANCEL, R_ACK, VEND_CANCEL, VEND),
	};
	rig_open(&r);
	reach(&r, SIT_VEND);
	RUN(&r, cancel);
	assert_true(r.last.approved);
	assert_int_equal(r.last.cmd.kind, KP_MDB_CMD_VEND_CANCEL);
	kp_mdb_device_free(r.dev);

	/* RESET with a delivered approval: counts as a vend */
	static const struct step reset_after[] = {S_(RESET, R_ACK, RESET, INACTIVE)};
	rig_open(&r);
	reach(&r, SIT_APPROVED);
	RUN(&r, reset_after);
	assert_int_equal(r.last.prev_state, KP_MDB_VEND);
	assert_true(r.last.approved);
	assert_true(r.last.approval_delivered);
	kp_mdb_device_free(r.dev);

	/* RESET with the approval queued but not delivered: refund */
	static const struct step reset_before[] = {
		CALL(APPROVE, 150, KP_OK, VEND),
		S_(POLL, R_APPROVED, NONE, VEND),
		S_(RESET, R_ACK, RESET, INACTIVE),
	};
	static const struct step poll_after[] = {
		S_(POLL, R_JUST_RESET, NONE, INACTIVE),        /* the 05 is gone with the reset */
		S_(ACK, SILENT, NONE, INACTIVE),
		S_(POLL, R_ACK, NONE, INACTIVE),
	};
	rig_open(&r);
	reach(&r, SIT_VEND);
	RUN(&r, reset_before);
	assert_true(r.last.approved);
	assert_false(r.last.approval_delivered);
	RUN(&r, poll_after);
	kp_mdb_device_free(r.dev);

	rig_open(&r);
	reach(&r, SIT_VEND);
	static const struct step reset_open[] = {S_(RESET, R_ACK, RESET, INACTIVE)};
	RUN(&r, reset_open);
	assert_false(r.last.approved);
	assert_false(r.last.approval_delivered);
	kp_mdb_device_free(r.dev);

	/* the vend request's fields reach the engine */
	rig_open(&r);
	reach(&r, SIT_SESSION);
	static const struct step vreq[] = {S_(VREQ2, R_ACK, VEND_REQUEST, VEND)};
	RUN(&r, vreq);
	assert_int_equal(r.last.cmd.price, 100);
	assert_int_equal(r.last.cmd.item, 2);
	kp_mdb_device_free(r.dev);

	/* a dropped BEGIN SESSION is reported */
	rig_open(&r);
	reach(&r, SIT_ENABLED);
	static const struct step drop[] = {
		CALL(BEGIN, 0xFFFF, KP_OK, ENABLED),
		S_(DIS, R_ACK, READER_DISABLE, DISABLED),
	};
	RUN(&r, drop);
	assert_true(r.last.session_dropped);
	kp_mdb_device_free(r.dev);
}

static void test_cash_sale_option(void **state)
{
	(void)state;
	kp_mdb_device_config cfg;
	kp_mdb_device_config_default(&cfg);
	cfg.reader.options |= KP_MDB_OPT_CASH_SALE;
	struct rig r;
	r.now = 0;
	assert_int_equal(kp_mdb_device_new(&r.dev, &cfg), KP_OK);
	static const struct step cash[] = {
		S_(POLL, R_JUST_RESET, NONE, INACTIVE),
		S_(ACK, SILENT, NONE, INACTIVE),
		S_(SETUP, "01 01 19 78 01 02 5A 09 F9*", SETUP, DISABLED), /* Z8 b3 announced */
		S_(ACK, SILENT, NONE, DISABLED),
		S_(CASH, R_ACK, CASH_SALE, DISABLED),
	};
	RUN(&r, cash);
	assert_int_equal(r.last.cmd.price, 150);
	kp_mdb_device_free(r.dev);
}

static void test_link_up_and_bad_input(void **state)
{
	(void)state;
	struct rig r;
	rig_open(&r);
	assert_false(kp_mdb_device_link_up(r.dev, r.now));
	uint16_t w[2] = {0x112, 0x12};
	assert_int_equal(kp_mdb_device_receive(r.dev, w, 2, 10000, &r.last), KP_OK);
	assert_true(kp_mdb_device_link_up(r.dev, 14999));
	assert_false(kp_mdb_device_link_up(r.dev, 15000));

	kp_mdb_cmd c;
	memset(&c, 0, sizeof(c));
	c.kind = KP_MDB_CMD_POLL; /* no raw bytes: not from the decoder */
	assert_int_equal(kp_mdb_device_step(r.dev, &c, 0, &r.last), KP_ERR_INVALID);
	c.raw_len = 1;
	c.kind = (kp_mdb_cmd_kind)99;
	assert_int_equal(kp_mdb_device_step(r.dev, &c, 0, &r.last), KP_ERR_INVALID);
	assert_int_equal(kp_mdb_device_receive(r.dev, NULL, 1, 0, &r.last), KP_ERR_INVALID);
	assert_int_equal(kp_mdb_device_approve(NULL, 1), KP_ERR_INVALID);
	kp_mdb_device_free(r.dev);
	kp_mdb_device_free(NULL);

	kp_mdb_device_config cfg;
	kp_mdb_device_config_default(&cfg);
	cfg.reader.maker[0] = '\0';
	kp_mdb_device *dev = (kp_mdb_device *)&cfg; /* must be set to NULL on failure */
	assert_int_equal(kp_mdb_device_new(&dev, &cfg), KP_ERR_INVALID);
	assert_null(dev);

	assert_string_equal(kp_mdb_state_name(KP_MDB_SESSION_IDLE), "session_idle");
	assert_string_equal(kp_mdb_state_name((kp_mdb_state)9), "?");
	assert_string_equal(kp_mdb_action_name(KP_MDB_ACT_VEND_REQUEST), "vend_request");
	assert_string_equal(kp_mdb_action_name((kp_mdb_action)99), "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_state_command_matrix),
		cmocka_unit_test(test_broken_frames_change_nothing),
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_lost_acks_and_repeats),
		cmocka_unit_test(test_rollback),
		cmocka_unit_test(test_engine_paths),
		cmocka_unit_test(test_action_flags),
		cmocka_unit_test(test_cash_sale_option),
		cmocka_unit_test(test_link_up_and_bad_input),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
