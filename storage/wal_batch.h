/* wal_batch.h — a VFS shim that hands the WAL's writes of one commit to the
 * kernel as one write. SQLite writes each WAL frame as two write(2) calls
 * (24-byte header, page); a payment's commit is ~7 frames of 512 bytes, so
 * those syscalls cost more than the rest of the commit's CPU. Internal to
 * storage/. */
#ifndef KP_WAL_BATCH_H
#define KP_WAL_BATCH_H

#include "kp_error.h"

/* Register (once per base) a VFS that forwards everything to the VFS named
 * base (NULL: SQLite's default) except a WAL file's writes: those that follow
 * one another are gathered in memory (up to KP_WAL_BATCH_BYTES) and written
 * at once before anything else is done to that file: sync, read, size,
 * truncate, file control, close, a write elsewhere. So every sync covers
 * every write before it, and a read sees it, as without the shim. Only for
 * connections with synchronous=FULL: the commit's sync is what publishes
 * its frames to other connections. A base file without
 * SQLITE_IOCAP_POWERSAFE_OVERWRITE (SQLite then pads commits to the sector
 * after the sync) is written through, unbatched.
 * On success *name is the shim's name, static storage. */
kp_err kp_wal_batch_vfs(const char *base, const char **name) KP_MUST_USE;

#define KP_WAL_BATCH_BYTES (64 * 1024)

#endif
