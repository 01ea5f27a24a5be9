/* check_inv.h — the invariants of design.md ("Invariants" 1-7) as SQL over a
 * kp_check_db, with a report of one line per invariant, the offending records
 * under it, and WARN / ALARM lines. Written apart from the engine on purpose:
 * it shares no code with what it checks. docs/check.md says what each computes. */
#ifndef KP_CHECK_INV_H
#define KP_CHECK_INV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "check_db.h"
#include "kp_error.h"

#define KP_CHECK_INVARIANTS 7

typedef struct kp_check_opts {
	FILE *out;           /* report lines go here */
	bool quiet_expected; /* run to quiescence: work still in flight is a violation */
	int max_list;        /* records listed per invariant and severity (0..10000) */
} kp_check_opts;

typedef struct kp_check_result {
	int pass, fail, skip; /* invariants by verdict */
	int warn, alarm;      /* WARN and ALARM findings */
	bool failed[KP_CHECK_INVARIANTS + 1]; /* failed[n]: invariant n failed */
} kp_check_result;

/* Check every invariant the evidence allows (2-4 need a ledger) and write the
 * report to opts->out. Fills *res. A journal that cannot be read part-way
 * (corruption) makes the invariant concerned FAIL, not an error. Returns
 * KP_OK when all were checked, whatever they found; another code (why set)
 * when checking itself failed (I/O, memory). */
kp_err kp_check_run(kp_check_db *db, const kp_check_opts *opts, kp_check_result *res, char *why,
		    size_t why_size) KP_MUST_USE;

#endif
