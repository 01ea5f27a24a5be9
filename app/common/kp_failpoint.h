/* kp_failpoint.h — numbered fault-injection points, inert unless a test arms them.
 * Countdown style, like SQLite's sqlite3FaultSim: "fire on the Nth hit". A fired
 * point either makes the caller return KP_ERR_FAILPOINT or ends the process on
 * the spot (SIGKILL), to simulate a power cut at that instant.
 *
 * Arming: kp_failpoint_arm() from a unit test, or the environment variable
 * KP_FAILPOINTS="17:3:crash,21:1:error" read by kp_failpoint_init_from_env() at
 * daemon start (point:countdown:action). Unarmed, KP_FAILPOINT(n) is one load of
 * a global flag and always false. The numbers are listed in docs/failpoints.md. */
#ifndef KP_FAILPOINT_H
#define KP_FAILPOINT_H

#include <stdbool.h>

#include "kp_error.h"

#define KP_FAILPOINT_MAX 128

typedef enum kp_fp_action {
	KP_FP_ERROR = 0, /* KP_FAILPOINT(n) returns true; caller fails with KP_ERR_FAILPOINT */
	KP_FP_CRASH = 1, /* the process is killed with SIGKILL at the point */
} kp_fp_action;

extern bool kp_failpoints_armed; /* any point armed at all: the fast path */

/* Called by a firing `crash` point just before SIGKILL, if set (NULL by
 * default). The crash-simulating VFS of tests/crash sets it to damage the
 * journal's unsynced writes first; it may end the process itself. */
extern void (*kp_failpoint_crash_hook)(void);

bool kp_failpoint_hit(unsigned n);

/* True when point n fires now. */
#define KP_FAILPOINT(n) (kp_failpoints_armed && kp_failpoint_hit(n))

/* Arm point n to fire on its countdown-th hit (1 = next hit), `times` times in a
 * row (0 = every hit from then on). KP_ERR_INVALID for n out of range. */
kp_err kp_failpoint_arm(unsigned n, unsigned countdown, unsigned times, kp_fp_action action);
void kp_failpoint_disarm_all(void);
/* How many times point n was hit since the last disarm_all (armed or not,
 * counted only while anything is armed). */
unsigned kp_failpoint_hits(unsigned n);
/* Parse and arm a spec like "17:3:crash,21:1:error"; KP_ERR_INVALID on bad text,
 * in which case nothing is armed. NULL or "" arms nothing. */
kp_err kp_failpoint_arm_spec(const char *spec);
/* kp_failpoint_arm_spec(getenv("KP_FAILPOINTS")). */
kp_err kp_failpoint_init_from_env(void);

#endif
