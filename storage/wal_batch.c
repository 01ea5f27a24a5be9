/* wal_batch.c — the WAL write-batching VFS shim (wal_batch.h). Files other
 * than WAL files are opened by the base VFS straight into SQLite's file
 * object, so they run the base's own methods and pay nothing. */
#include "wal_batch.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#define MAX_SHIMS 4
#define NAME_SIZE 24

struct bfile {
	sqlite3_file base;
	sqlite3_file *real;  /* the base VFS's file, right after this struct */
	unsigned char *buf;  /* KP_WAL_BATCH_BYTES, allocated at the first write */
	sqlite3_int64 off;   /* file offset of buf[0] */
	int len;             /* bytes held */
	int batch;           /* 0: write through (see v_open) */
};

struct shim {
	sqlite3_vfs vfs;
	char name[NAME_SIZE];
};

static struct shim shims[MAX_SHIMS];
static int n_shims;
static pthread_mutex_t shims_lock = PTHREAD_MUTEX_INITIALIZER;

#define BASE_VFS(v) ((sqlite3_vfs *)(v)->pAppData)
#define REAL(f) (((struct bfile *)(f))->real)

/* Write out what is held. Whatever the outcome the bytes are no longer held:
 * an error reaches SQLite from the call that needed them written, and that
 * transaction fails as it would have at the write itself. */
static int flush(struct bfile *b)
{
	if (b->len == 0)
		return SQLITE_OK;
	int rc = b->real->pMethods->xWrite(b->real, b->buf, b->len, b->off);
	b->len = 0;
	return rc;
}

static int b_close(sqlite3_file *f)
{
	struct bfile *b = (struct bfile *)f;
	int rc = flush(b);
	sqlite3_free(b->buf);
	b->buf = NULL;
	int rc2 = b->real->pMethods->xClose(b->real);
	return rc != SQLITE_OK ? rc : rc2;
}

static int b_read(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off)
{
	int rc = flush((struct bfile *)f);
	return rc != SQLITE_OK ? rc : REAL(f)->pMethods->xRead(REAL(f), buf, amt, off);
}

static int b_write(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off)
{
	struct bfile *b = (struct bfile *)f;
	if (!b->batch)
		return b->real->pMethods->xWrite(b->real, buf, amt, off);
	if (!b->buf && amt <= KP_WAL_BATCH_BYTES)
		b->buf = sqlite3_malloc(KP_WAL_BATCH_BYTES); /* NULL: write through */
	if (b->len > 0 && (off != b->off + b->len || b->len + amt > KP_WAL_BATCH_BYTES)) {
		int rc = flush(b);
		if (rc != SQLITE_OK)
			return rc;
	}
	if (!b->buf || amt > KP_WAL_BATCH_BYTES)
		return b->real->pMethods->xWrite(b->real, buf, amt, off);
	if (b->len == 0)
		b->off = off;
	memcpy(b->buf + b->len, buf, (size_t)amt);
	b->len += amt;
	return SQLITE_OK;
}

static int b_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	int rc = flush((struct bfile *)f);
	return rc != SQLITE_OK ? rc : REAL(f)->pMethods->xTruncate(REAL(f), size);
}

static int b_sync(sqlite3_file *f, int flags)
{
	int rc = flush((struct bfile *)f);
	return rc != SQLITE_OK ? rc : REAL(f)->pMethods->xSync(REAL(f), flags);
}

static int b_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
	int rc = flush((struct bfile *)f);
	return rc != SQLITE_OK ? rc : REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int b_lock(sqlite3_file *f, int level)
{
	return REAL(f)->pMethods->xLock(REAL(f), level);
}

static int b_unlock(sqlite3_file *f, int level)
{
	return REAL(f)->pMethods->xUnlock(REAL(f), level);
}

static int b_check_reserved(sqlite3_file *f, int *out)
{
	return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int b_file_control(sqlite3_file *f, int op, void *arg)
{
	int rc = flush((struct bfile *)f);
	return rc != SQLITE_OK ? rc : REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int b_sector_size(sqlite3_file *f)
{
	return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int b_device_chars(sqlite3_file *f)
{
	return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

/* Version 1: SQLite asks no shared memory nor mmap of a WAL file. */
static const sqlite3_io_methods wal_io = {
	1, b_close, b_read, b_write, b_truncate, b_sync, b_file_size, b_lock, b_unlock,
	b_check_reserved, b_file_control, b_sector_size, b_device_chars,
	NULL, NULL, NULL, NULL, NULL, NULL,
};

static int v_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags, int *out_flags)
{
	sqlite3_vfs *base = BASE_VFS(vfs);
	if (!(flags & SQLITE_OPEN_WAL)) /* the base's file and methods, in SQLite's object */
		return base->xOpen(base, name, f, flags, out_flags);
	struct bfile *b = (struct bfile *)f;
	memset(b, 0, sizeof(*b));
	b->real = (sqlite3_file *)(b + 1);
	int rc = base->xOpen(base, name, b->real, flags, out_flags);
	if (b->real->pMethods) { /* set even on failure: then SQLite calls xClose */
		b->base.pMethods = &wal_io;
		/* Without powersafe overwrite SQLite pads a commit to the sector
		 * with copies of its last frame, written *after* the sync (and
		 * published): held here, another connection would read a WAL
		 * shorter than its index says. So then every write goes through. */
		b->batch = (b->real->pMethods->xDeviceCharacteristics(b->real) &
			    SQLITE_IOCAP_POWERSAFE_OVERWRITE) != 0;
	}
	return rc;
}

static int v_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
	return BASE_VFS(vfs)->xDelete(BASE_VFS(vfs), name, sync_dir);
}

static int v_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	return BASE_VFS(vfs)->xAccess(BASE_VFS(vfs), name, flags, out);
}

static int v_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	return BASE_VFS(vfs)->xFullPathname(BASE_VFS(vfs), name, n, out);
}

static void *v_dlopen(sqlite3_vfs *vfs, const char *name)
{
	return BASE_VFS(vfs)->xDlOpen(BASE_VFS(vfs), name);
}

static void v_dlerror(sqlite3_vfs *vfs, int n, char *msg)
{
	BASE_VFS(vfs)->xDlError(BASE_VFS(vfs), n, msg);
}

static void (*v_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
	return BASE_VFS(vfs)->xDlSym(BASE_VFS(vfs), h, sym);
}

static void v_dlclose(sqlite3_vfs *vfs, void *h)
{
	BASE_VFS(vfs)->xDlClose(BASE_VFS(vfs), h);
}

static int v_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	return BASE_VFS(vfs)->xRandomness(BASE_VFS(vfs), n, out);
}

static int v_sleep(sqlite3_vfs *vfs, int us)
{
	return BASE_VFS(vfs)->xSleep(BASE_VFS(vfs), us);
}

static int v_current_time(sqlite3_vfs *vfs, double *t)
{
	return BASE_VFS(vfs)->xCurrentTime(BASE_VFS(vfs), t);
}

static int v_last_error(sqlite3_vfs *vfs, int n, char *buf)
{
	return BASE_VFS(vfs)->xGetLastError(BASE_VFS(vfs), n, buf);
}

static int v_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *t)
{
	return BASE_VFS(vfs)->xCurrentTimeInt64(BASE_VFS(vfs), t);
}

kp_err kp_wal_batch_vfs(const char *base_name, const char **name)
{
	kp_err err = KP_OK;
	pthread_mutex_lock(&shims_lock);
	/* By the VFS itself, not its name: the default may change (the crash
	 * tests make theirs the default). */
	sqlite3_vfs *base = sqlite3_vfs_find(base_name);
	if (!base || base->iVersion < 2) {
		err = KP_ERR_NOT_FOUND;
		goto out;
	}
	for (int i = 0; i < n_shims; i++)
		if (BASE_VFS(&shims[i].vfs) == base) {
			*name = shims[i].name;
			goto out;
		}
	if (n_shims == MAX_SHIMS) {
		err = KP_ERR_TOO_BIG;
		goto out;
	}
	struct shim *s = &shims[n_shims];
	snprintf(s->name, sizeof(s->name), "kp-wal-batch-%d", n_shims);
	s->vfs = (sqlite3_vfs){
		.iVersion = 2,
		.szOsFile = (int)sizeof(struct bfile) + base->szOsFile,
		.mxPathname = base->mxPathname,
		.zName = s->name,
		.pAppData = base,
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
	if (sqlite3_vfs_register(&s->vfs, 0) != SQLITE_OK) {
		err = KP_ERR_INTERNAL;
		goto out;
	}
	n_shims++;
	*name = s->name;
out:
	pthread_mutex_unlock(&shims_lock);
	return err;
}
