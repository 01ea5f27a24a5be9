/* crashvfs.h — a crash-simulating sqlite3_vfs for tests (never linked into the
 * product's kioskpayd). It wraps the default VFS, remembers what every write
 * since the last xSync of its file overwrote, and at the crash point drops,
 * tears (per sector) or garbles those unsynced writes, then ends the process
 * on the spot: what is left on disk is what a power cut could have left.
 * Modelled on SQLite's src/test6.c. It can also fail the Nth xRead, xWrite,
 * xSync or xTruncate with SQLITE_IOERR (countdown loops). Single-threaded. */
#ifndef KP_CRASHVFS_H
#define KP_CRASHVFS_H

#include <stdbool.h>
#include <stdint.h>

#include "kp_error.h"

#define KP_CRASHVFS_NAME "kp-crash"

typedef enum kp_crash_mode {
	KP_CRASH_DROP = 0,    /* every unsynced write is lost */
	KP_CRASH_TEAR = 1,    /* per sector: written or lost, at random; the size may stay old */
	KP_CRASH_GARBAGE = 2, /* per sector: written, lost or filled with random bytes */
	KP_CRASH__COUNT
} kp_crash_mode;

/* Operations that can be made to fail with SQLITE_IOERR_*. */
typedef enum kp_crashvfs_op {
	KP_CVFS_READ = 0,
	KP_CVFS_WRITE = 1,
	KP_CVFS_SYNC = 2,
	KP_CVFS_TRUNCATE = 3,
	KP_CVFS__OPS
} kp_crashvfs_op;

typedef struct kp_crashvfs_config {
	kp_crash_mode mode;
	unsigned sector;       /* damage unit and xSectorSize; power of two 512..65536 (0: 512) */
	bool psow;             /* claim SQLITE_IOCAP_POWERSAFE_OVERWRITE: damage stays within the
				* bytes written; off: a damaged sector is damaged whole */
	uint64_t seed;         /* decisions of tear/garbage */
	/* Crash points, counted over the tracked files (main db, WAL, rollback
	 * journal) since registration; 0 = off; the first reached fires. */
	uint64_t after_sync;   /* right after the Nth xSync returned */
	uint64_t before_sync;  /* in place of the Nth xSync: it never happens */
	uint64_t after_write;  /* right after the Nth xWrite */
	bool real_sync;        /* also fsync for real (default off: durability is simulated) */
	bool quiet;            /* no line on stderr at the crash */
} kp_crashvfs_config;

/* Defaults: drop, 512-byte sectors, psow on, seed 1, no crash point. */
void kp_crashvfs_config_init(kp_crashvfs_config *cfg);

/* Parse "mode=tear,after_sync=17,sector=512,psow=0,seed=42" (keys: mode
 * drop|tear|garbage, sector, psow 0|1, seed, after_sync, before_sync,
 * after_write, real_sync 0|1, quiet 0|1) over the values already in cfg.
 * KP_ERR_INVALID for an unknown key or a bad value (cfg unchanged). */
kp_err kp_crashvfs_parse(const char *spec, kp_crashvfs_config *cfg) KP_MUST_USE;

/* Register the VFS as KP_CRASHVFS_NAME over the current default (make_default:
 * it becomes the default). Registering again replaces the config and resets
 * the counters and everything remembered. Also sets kp_failpoint_crash_hook
 * so that a failpoint crash damages the unsynced writes first. */
kp_err kp_crashvfs_register(const kp_crashvfs_config *cfg, bool make_default) KP_MUST_USE;

/* Unregister (the previous default is the default again) and forget every
 * file state. Files still open through it must be closed first. */
void kp_crashvfs_unregister(void);

/* Apply the crash mode to every unsynced write now and end the process with
 * SIGKILL (no atexit handlers, no SQLite close). Does not return. */
void kp_crashvfs_crash(void) __attribute__((noreturn));

/* Apply the crash mode to the files on disk without ending the process (the
 * unit tests' view of "what a crash would leave"); the remembered state is
 * cleared. Open SQLite connections through the VFS must be closed first. */
kp_err kp_crashvfs_simulate(void) KP_MUST_USE;

/* Make the Nth call of op from now (1 = the next) fail with SQLITE_IOERR_*;
 * persistent: every call from then on fails too. n = 0 disarms op. */
void kp_crashvfs_ioerr_arm(kp_crashvfs_op op, uint64_t n, bool persistent);
/* How many injected errors fired since the last arm of any op. */
uint64_t kp_crashvfs_ioerr_fired(void);

typedef struct kp_crashvfs_counts {
	uint64_t syncs;        /* xSync calls on tracked files */
	uint64_t writes;       /* xWrite calls on tracked files */
	uint64_t reads;
	uint64_t truncates;
	uint64_t unsynced_sectors; /* sectors with unsynced writes right now */
} kp_crashvfs_counts;
void kp_crashvfs_counts_get(kp_crashvfs_counts *out);

/* Read KP_CRASHVFS from the environment; if set, parse it and register the
 * VFS as the default. KP_OK and *active = false when unset. */
kp_err kp_crashvfs_init_from_env(bool *active) KP_MUST_USE;

const char *kp_crash_mode_str(kp_crash_mode m);

#endif
