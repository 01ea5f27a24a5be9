/* count_vfs.h — an SQLite VFS shim that counts what reaches the disk: xSync
 * calls, bytes written, write and read calls, per kind of file (main
 * database, WAL, other).
 * It wraps the default VFS and changes nothing else; benchmarks open the
 * journal through it by name (kp_journal_open_ex, opts.vfs_name). */
#ifndef KP_COUNT_VFS_H
#define KP_COUNT_VFS_H

#include <stdint.h>

#include "kp_error.h"

enum { KP_COUNT_MAIN, KP_COUNT_WAL, KP_COUNT_OTHER, KP_COUNT__KINDS };

typedef struct kp_count_stats {
	int64_t syncs[KP_COUNT__KINDS];  /* xSync calls */
	int64_t bytes[KP_COUNT__KINDS];  /* bytes passed to xWrite */
	int64_t writes[KP_COUNT__KINDS]; /* xWrite calls */
	int64_t reads[KP_COUNT__KINDS];  /* xRead calls: pages the cache lacked, frames a checkpoint copies */
} kp_count_stats;

#define KP_COUNT_VFS_NAME "kpcount"

/* Register the shim as KP_COUNT_VFS_NAME (not as the default). Idempotent. */
kp_err kp_count_vfs_register(void) KP_MUST_USE;
/* The counts so far (all files opened through the shim). */
void kp_count_vfs_get(kp_count_stats *out);
void kp_count_vfs_reset(void);

#endif
