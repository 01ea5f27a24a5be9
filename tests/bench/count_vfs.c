/* count_vfs.c — the counting VFS: every method forwards to the default VFS;
 * xRead, xWrite and xSync also add to per-kind counters. Single-threaded use. */
#include "count_vfs.h"

#include <sqlite3.h>
#include <string.h>

struct cfile {
	sqlite3_file base;
	sqlite3_file *real; /* the default VFS's file, right after this struct */
	int kind;
};

static sqlite3_vfs *real_vfs;
static sqlite3_vfs count_vfs;
static kp_count_stats counts;

#define REAL(f) (((struct cfile *)(f))->real)

static int c_close(sqlite3_file *f)
{
	return REAL(f)->pMethods->xClose(REAL(f));
}

static int c_read(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off)
{
	struct cfile *c = (struct cfile *)f;
	counts.reads[c->kind]++;
	return c->real->pMethods->xRead(c->real, buf, amt, off);
}

static int c_write(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off)
{
	struct cfile *c = (struct cfile *)f;
	counts.bytes[c->kind] += amt;
	counts.writes[c->kind]++;
	return c->real->pMethods->xWrite(c->real, buf, amt, off);
}

static int c_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	return REAL(f)->pMethods->xTruncate(REAL(f), size);
}

static int c_sync(sqlite3_file *f, int flags)
{
	struct cfile *c = (struct cfile *)f;
	counts.syncs[c->kind]++;
	return c->real->pMethods->xSync(c->real, flags);
}

static int c_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
	return REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int c_lock(sqlite3_file *f, int level)
{
	return REAL(f)->pMethods->xLock(REAL(f), level);
}

static int c_unlock(sqlite3_file *f, int level)
{
	return REAL(f)->pMethods->xUnlock(REAL(f), level);
}

static int c_check_reserved(sqlite3_file *f, int *out)
{
	return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int c_file_control(sqlite3_file *f, int op, void *arg)
{
	return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int c_sector_size(sqlite3_file *f)
{
	return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int c_device_chars(sqlite3_file *f)
{
	return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static int c_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
	return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, pp);
}

static int c_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
	return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}

static void c_shm_barrier(sqlite3_file *f)
{
	REAL(f)->pMethods->xShmBarrier(REAL(f));
}

static int c_shm_unmap(sqlite3_file *f, int del)
{
	return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}

static int c_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp)
{
	return REAL(f)->pMethods->xFetch(REAL(f), off, amt, pp);
}

static int c_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
	return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

/* Version 1 for files whose real methods are version 1 (no shm), 3 otherwise. */
static const sqlite3_io_methods io_v1 = {
	1, c_close, c_read, c_write, c_truncate, c_sync, c_file_size, c_lock, c_unlock,
	c_check_reserved, c_file_control, c_sector_size, c_device_chars,
	NULL, NULL, NULL, NULL, NULL, NULL,
};
static const sqlite3_io_methods io_v3 = {
	3, c_close, c_read, c_write, c_truncate, c_sync, c_file_size, c_lock, c_unlock,
	c_check_reserved, c_file_control, c_sector_size, c_device_chars,
	c_shm_map, c_shm_lock, c_shm_barrier, c_shm_unmap, c_fetch, c_unfetch,
};

static int v_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags, int *out_flags)
{
	(void)vfs;
	struct cfile *c = (struct cfile *)f;
	memset(c, 0, sizeof(*c));
	c->real = (sqlite3_file *)(c + 1);
	c->kind = (flags & SQLITE_OPEN_MAIN_DB) ? KP_COUNT_MAIN
		  : (flags & SQLITE_OPEN_WAL)   ? KP_COUNT_WAL
						: KP_COUNT_OTHER;
	int rc = real_vfs->xOpen(real_vfs, name, c->real, flags, out_flags);
	if (c->real->pMethods)
		c->base.pMethods = c->real->pMethods->iVersion >= 3 ? &io_v3 : &io_v1;
	return rc;
}

static int v_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
	(void)vfs;
	return real_vfs->xDelete(real_vfs, name, sync_dir);
}

static int v_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	(void)vfs;
	return real_vfs->xAccess(real_vfs, name, flags, out);
}

static int v_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	(void)vfs;
	return real_vfs->xFullPathname(real_vfs, name, n, out);
}

static void *v_dlopen(sqlite3_vfs *vfs, const char *name)
{
	(void)vfs;
	return real_vfs->xDlOpen(real_vfs, name);
}

static void v_dlerror(sqlite3_vfs *vfs, int n, char *msg)
{
	(void)vfs;
	real_vfs->xDlError(real_vfs, n, msg);
}

static void (*v_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
	(void)vfs;
	return real_vfs->xDlSym(real_vfs, h, sym);
}

static void v_dlclose(sqlite3_vfs *vfs, void *h)
{
	(void)vfs;
	real_vfs->xDlClose(real_vfs, h);
}

static int v_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs;
	return real_vfs->xRandomness(real_vfs, n, out);
}

static int v_sleep(sqlite3_vfs *vfs, int us)
{
	(void)vfs;
	return real_vfs->xSleep(real_vfs, us);
}

static int v_current_time(sqlite3_vfs *vfs, double *t)
{
	(void)vfs;
	return real_vfs->xCurrentTime(real_vfs, t);
}

static int v_last_error(sqlite3_vfs *vfs, int n, char *buf)
{
	(void)vfs;
	return real_vfs->xGetLastError(real_vfs, n, buf);
}

static int v_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *t)
{
	(void)vfs;
	return real_vfs->xCurrentTimeInt64(real_vfs, t);
}

kp_err kp_count_vfs_register(void)
{
	if (real_vfs)
		return KP_OK;
	sqlite3_vfs *def = sqlite3_vfs_find(NULL);
	if (!def || def->iVersion < 2)
		return KP_ERR_INTERNAL;
	real_vfs = def;
	count_vfs = (sqlite3_vfs){
		.iVersion = 2,
		.szOsFile = (int)sizeof(struct cfile) + def->szOsFile,
		.mxPathname = def->mxPathname,
		.zName = KP_COUNT_VFS_NAME,
		.xOpen = v_open,
		.xDelete = v_delete,
		.xAccess = v_access,
		.xFullPathname = v_full_pathname,
		.xDlOpen = v_dlopen,
		.xDlError = v_dlerror,
		.xDlSym = v_dlsym,
		.xDlClose = v_dlclose,
		.xRandomness = v_randomness,
		.xSleep = v_sleep,
		.xCurrentTime = v_current_time,
		.xGetLastError = v_last_error,
		.xCurrentTimeInt64 = v_current_time64,
	};
	if (sqlite3_vfs_register(&count_vfs, 0) != SQLITE_OK) {
		real_vfs = NULL;
		return KP_ERR_INTERNAL;
	}
	return KP_OK;
}

void kp_count_vfs_get(kp_count_stats *out)
{
	*out = counts;
}

void kp_count_vfs_reset(void)
{
	memset(&counts, 0, sizeof(counts));
}
