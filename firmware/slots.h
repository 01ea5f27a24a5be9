/* slots.h — A/B firmware slots with boot counting: which slot is committed,
 * which one is on trial, how many boots the trial has had, the device's
 * rollback counter. The decisions (boot, commit, rollback, where to install)
 * are pure functions on a kp_slots_state; kp_slots_* around them load and
 * store the state through a backend's ops table (slot_ops.h). */
#ifndef KP_SLOTS_H
#define KP_SLOTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bundle.h"
#include "fw_io.h"
#include "kp_env.h"
#include "kp_error.h"
#include "slot_ops.h"

#define KP_SLOTS_MAX_BOOTS_DEFAULT 3
#define KP_SLOTS_MAX_BOOTS_LIMIT 100
#define KP_SLOTS_EVENT_MAX 200

/* The life of one slot's content. Persisted by name. */
typedef enum kp_slot_status {
	KP_SLOT_EMPTY = 0, /* nothing usable: never written, or being replaced */
	KP_SLOT_TRIAL = 1, /* installed, boots on trial until committed */
	KP_SLOT_GOOD = 2,  /* committed once: may be booted and rolled back to */
	KP_SLOT_BAD = 3,   /* failed its trial, was cancelled, or its content is damaged */
} kp_slot_status;

const char *kp_slot_status_to_string(kp_slot_status s);
/* KP_ERR_INVALID for anything but "empty", "trial", "good", "bad". */
kp_err kp_slot_status_from_string(const char *text, kp_slot_status *out) KP_MUST_USE;

/* "a" / "b" / "none". */
const char *kp_slot_name(kp_slot_id slot);
/* "a" or "b"; KP_ERR_INVALID otherwise. */
kp_err kp_slot_from_name(const char *text, kp_slot_id *out) KP_MUST_USE;

typedef struct kp_slot_info {
	kp_slot_status status;
	kp_fw_version version;     /* what is in it; zero when empty */
	uint32_t rollback_counter; /* its bundle's */
	int64_t installed_ms;      /* wall clock at install; 0 when empty */
} kp_slot_info;

typedef struct kp_slots_state {
	kp_slot_id active;         /* the committed slot: boots when there is no trial */
	kp_slot_id trial;          /* the slot on trial, or KP_SLOT_NONE */
	kp_slot_id booted;         /* the slot the last boot picked: the one running */
	uint32_t boot_count;       /* boots the trial has had */
	uint32_t max_boots;        /* boots a trial gets; the next one rolls back */
	uint32_t rollback_counter; /* the device's; raised by commit, never lowered */
	int64_t updated_ms;
	char last_event[KP_SLOTS_EVENT_MAX];
	kp_slot_info slot[KP_SLOT_COUNT];
} kp_slots_state;

/* A fresh device: slot a active but empty, no trial, counter 0, max_boots 3. */
void kp_slots_state_default(kp_slots_state *st);

/* The one transition function of a slot's status: moves slot to `to` if the
 * move is allowed (empty->trial, trial->good|bad|empty, good->empty|bad,
 * bad->empty), KP_ERR_ILLEGAL_MOVE otherwise, leaving it unchanged. */
kp_err kp_slot_move(kp_slot_info *slot, kp_slot_status to) KP_MUST_USE;

/* State record <-> JSON. Parse checks names, ranges and the invariants (trial
 * is not active and has status trial, active is good unless nothing was ever
 * committed); KP_ERR_CORRUPT with why otherwise. to_json: caller frees. */
kp_err kp_slots_state_parse(const char *json, size_t len, kp_slots_state *st, kp_fw_why *why) KP_MUST_USE;
kp_err kp_slots_state_to_json(const kp_slots_state *st, char **json, size_t *len) KP_MUST_USE;

/* ---- the decisions, pure: they change *st (and nothing else) or fail ---- */

/* What a boot does. With a trial whose boot_count is below max_boots: count
 * one more boot and pick it. With a trial that used up its boots: mark it
 * bad and pick the active slot (*rolled_back = true). No trial: pick the
 * active slot. KP_ERR_NOT_FOUND if that is not good (nothing bootable). */
kp_err kp_slots_decide_boot(kp_slots_state *st, kp_slot_id *picked, bool *rolled_back, kp_fw_why *why) KP_MUST_USE;
/* Make the running trial permanent: it becomes active and good, the device's
 * rollback counter rises to its bundle's. KP_ERR_STATE when there is no trial
 * or it is not the booted slot. *already is set (and nothing changes) when the
 * running slot is the active, good one: a repeated commit. */
kp_err kp_slots_decide_commit(kp_slots_state *st, bool *already, kp_fw_why *why) KP_MUST_USE;
/* Roll back by hand: cancel a trial (it becomes bad; the next boot picks the
 * active slot), or with no trial make the other good slot active. Refused
 * (KP_ERR_STATE) when the other slot is not good or its rollback counter is
 * below the device's. */
kp_err kp_slots_decide_rollback(kp_slots_state *st, kp_fw_why *why) KP_MUST_USE;
/* The slot an install writes: the one that is not active. KP_ERR_STATE when
 * that is the slot running now (a trial not yet committed or rolled back). */
kp_err kp_slots_decide_install(const kp_slots_state *st, kp_slot_id *target, kp_fw_why *why) KP_MUST_USE;

/* ---- the slots of one device, through a backend ---- */

typedef struct kp_slots kp_slots;

/* Open the directory-backed slots in dir (see kp_slot_dir_open for flags) and
 * load the state (the default one if none was ever written). */
kp_err kp_slots_open_dir(const kp_env *env, const char *dir, unsigned flags, kp_slots **out,
			 kp_fw_why *why) KP_MUST_USE;
/* Close; safe on NULL. */
void kp_slots_close(kp_slots *s);

/* The loaded state; owned by s. */
const kp_slots_state *kp_slots_get_state(const kp_slots *s);
/* True if a state record exists (false: a fresh device). */
bool kp_slots_has_record(const kp_slots *s);
/* The backend's name ("dir"). */
const char *kp_slots_backend(const kp_slots *s);

/* The policy this device applies to a bundle: board, installed (active,
 * good) version, rollback counter. */
void kp_slots_policy(const kp_slots *s, const char *board, uint64_t max_size, kp_fw_policy *policy);

/* Install an opened bundle into the inactive slot: stage and check every
 * payload, mark the slot empty, put the staged content in place, mark it
 * trial with max_boots boots. Any refusal (chk->refusal set) or failure
 * before the slot is marked empty leaves state and slots as they were.
 * A crash anywhere leaves the active slot bootable. */
kp_err kp_slots_install(kp_slots *s, kp_fw_bundle *b, uint32_t max_boots, kp_fw_check *chk) KP_MUST_USE;
/* Decide and record a boot (kp_slots_decide_boot), checking the picked
 * slot's files first: a trial slot whose files are damaged is marked bad and
 * the active slot booted instead. The state is stored before returning. */
kp_err kp_slots_boot(kp_slots *s, kp_slot_id *picked, bool *rolled_back, kp_fw_why *why) KP_MUST_USE;
/* Record a commit (kp_slots_decide_commit); *already as there. */
kp_err kp_slots_commit(kp_slots *s, bool *already, kp_fw_why *why) KP_MUST_USE;
/* Record a manual rollback (kp_slots_decide_rollback). */
kp_err kp_slots_rollback(kp_slots *s, kp_fw_why *why) KP_MUST_USE;
/* Check a slot's files (and hashes) through the backend. */
kp_err kp_slots_check(kp_slots *s, kp_slot_id slot, bool hashes, kp_fw_why *why) KP_MUST_USE;
/* Where a slot's content is ("/slots/a"). */
kp_err kp_slots_location(kp_slots *s, kp_slot_id slot, char *buf, size_t cap) KP_MUST_USE;

#endif
