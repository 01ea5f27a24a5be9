/* slot_ops.h — how the A/B slot logic (slots.c) reaches the storage of one
 * board: an ops table per backend, like SWUpdate's bootloader backends. The
 * directory backend (slot_dir.c) keeps each slot in a directory; a board with
 * partitions would add slot_blk.c with the same table. */
#ifndef KP_SLOT_OPS_H
#define KP_SLOT_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fw_io.h"
#include "kp_error.h"

typedef enum kp_slot_id {
	KP_SLOT_NONE = -1,
	KP_SLOT_A = 0,
	KP_SLOT_B = 1,
} kp_slot_id;

#define KP_SLOT_COUNT 2
#define KP_SLOT_STATE_MAX (64 * 1024)       /* the state record at most */
#define KP_SLOT_MANIFEST_NAME ".manifest.json" /* a slot's own copy of its manifest */

/* Every function fills why on failure. Staging is one slot at a time: begin,
 * then open/write/close per file, then commit or abort. Until commit, nothing
 * a reader (status, boot) looks at has changed. */
typedef struct kp_slot_ops {
	const char *name; /* "dir" */

	/* Read the state record into buf (up to cap bytes). KP_ERR_NOT_FOUND when
	 * there is none yet (a fresh device). */
	kp_err (*state_load)(void *be, char *buf, size_t cap, size_t *len, kp_fw_why *why);
	/* Replace the state record atomically and durably: after a crash the old
	 * or the new record is there, whole. */
	kp_err (*state_store)(void *be, const char *buf, size_t len, kp_fw_why *why);

	/* Start staging content for slot, dropping what an interrupted earlier
	 * attempt left behind. */
	kp_err (*stage_begin)(void *be, kp_slot_id slot, kp_fw_why *why);
	/* Open the staged file name (a payload name or KP_SLOT_MANIFEST_NAME) that
	 * will be exactly size bytes. */
	kp_err (*stage_open)(void *be, const char *name, uint64_t size, kp_fw_why *why);
	kp_err (*stage_write)(void *be, const void *buf, size_t len, kp_fw_why *why);
	/* Check the size, make the file durable, close it. */
	kp_err (*stage_close)(void *be, kp_fw_why *why);
	/* Make the staged content the slot's, durably. Called only once the state
	 * record says the slot is empty, so that no crash point leaves a state
	 * that names half-replaced content. */
	kp_err (*stage_commit)(void *be, kp_slot_id slot, kp_fw_why *why);
	/* Throw the staged content away; safe when there is none. */
	void (*stage_abort)(void *be, kp_slot_id slot);

	/* Check the slot's content against its own manifest copy: every file there
	 * with its size, and with its SHA-256 if hashes. KP_ERR_NOT_FOUND if the
	 * slot holds nothing, KP_ERR_CORRUPT if something differs. */
	kp_err (*slot_check)(void *be, kp_slot_id slot, bool hashes, kp_fw_why *why);
	/* Where the slot's content is, for the boot script: "/slots/a". */
	kp_err (*slot_location)(void *be, kp_slot_id slot, char *buf, size_t cap);

	/* Release the backend (locks, descriptors); safe on NULL. */
	void (*close)(void *be);
} kp_slot_ops;

/* Open flags of kp_slot_dir_open. */
enum {
	KP_SLOT_DIR_CREATE = 1, /* create the directory if it does not exist */
	KP_SLOT_DIR_LOCK = 2,   /* take the exclusive lock (writers); KP_ERR_BUSY if held */
};

/* The directory backend: dir/state.json, dir/a, dir/b, and dir/.staging while
 * installing. *be is freed by ops->close. */
kp_err kp_slot_dir_open(const char *dir, unsigned flags, const kp_slot_ops **ops, void **be,
			kp_fw_why *why) KP_MUST_USE;

#endif
