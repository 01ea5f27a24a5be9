/* crashvfs.c — the crash-simulating VFS. Writes go to the real file at once;
 * what each unsynced sector held at the last xSync (its pre-image) is kept in
 * memory, with the byte range written since. At the crash every such sector
 * is kept, restored (lost) or garbled according to the mode, the size is put
 * back or not, and the process is killed. Like SQLite's test6.c, but undoing
 * in place instead of holding the writes back, which is the same on disk and
 * keeps reads trivially right. Durability is simulated: xSync does not reach
 * the disk unless real_sync is set. */
#include "crashvfs.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kp_failpoint.h"

#define SECTOR_MIN 512u
#define SECTOR_MAX 65536u

/* A sector with writes since the last sync of its file. */
struct sect {
	int64_t idx;       /* offset / sector */
	uint32_t pre_len;  /* bytes of the pre-image that existed (below the synced size) */
	uint8_t *pre;      /* the synced content of the sector (sector bytes), then a
			    * bitmap of the bytes written since the sync (sector / 8) */
};

/* What is remembered of one file (by path; survives close until a sync or delete). */
struct fstate {
	struct fstate *next;
	char *path;
	int64_t synced_size;
	struct sect *sects;
	size_t n, cap;
	int64_t *slots;    /* open addressing: index into sects + 1, 0 = empty */
	size_t nslots;     /* power of two */
	int refs;          /* open handles */
};

struct cfile {
	sqlite3_file base;
	struct fstate *st; /* NULL: not tracked (temp files) */
	sqlite3_file *real;
};

static struct {
	kp_crashvfs_config cfg;
	sqlite3_vfs *real;
	bool registered;
	struct fstate *files;
	uint64_t rng;
	kp_crashvfs_counts counts;
	uint64_t ioerr_at[KP_CVFS__OPS];    /* fail when the op's counter reaches this; 0 = off */
	bool ioerr_persist[KP_CVFS__OPS];
	uint64_t ioerr_calls[KP_CVFS__OPS]; /* calls since armed */
	uint64_t ioerr_fired;
} g;

static sqlite3_vfs crash_vfs;

/* ---------- small helpers ---------- */

static uint64_t rnd(void)
{
	uint64_t x = g.rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	g.rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static unsigned sector_size(void)
{
	return g.cfg.sector ? g.cfg.sector : SECTOR_MIN;
}

const char *kp_crash_mode_str(kp_crash_mode m)
{
	switch (m) {
	case KP_CRASH_DROP: return "drop";
	case KP_CRASH_TEAR: return "tear";
	case KP_CRASH_GARBAGE: return "garbage";
	default: return "?";
	}
}

void kp_crashvfs_config_init(kp_crashvfs_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->mode = KP_CRASH_DROP;
	cfg->sector = SECTOR_MIN;
	cfg->psow = true;
	cfg->seed = 1;
}

static bool parse_u64(const char *s, size_t len, uint64_t *out)
{
	if (len == 0 || len > 20)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		uint64_t d = (uint64_t)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

static bool key_is(const char *k, size_t klen, const char *name)
{
	return strlen(name) == klen && memcmp(k, name, klen) == 0;
}

kp_err kp_crashvfs_parse(const char *spec, kp_crashvfs_config *cfg)
{
	if (!spec || !cfg)
		return KP_ERR_INVALID;
	kp_crashvfs_config c = *cfg;
	const char *p = spec;
	while (*p) {
		const char *end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		const char *eq = memchr(p, '=', (size_t)(end - p));
		if (end == p) { /* empty item (",,", trailing comma) */
			p = *end ? end + 1 : end;
			continue;
		}
		if (!eq)
			return KP_ERR_INVALID;
		size_t klen = (size_t)(eq - p), vlen = (size_t)(end - eq - 1);
		const char *v = eq + 1;
		uint64_t n = 0;
		if (key_is(p, klen, "mode")) {
			if (vlen == 4 && memcmp(v, "drop", 4) == 0)
				c.mode = KP_CRASH_DROP;
			else if (vlen == 4 && memcmp(v, "tear", 4) == 0)
				c.mode = KP_CRASH_TEAR;
			else if (vlen == 7 && memcmp(v, "garbage", 7) == 0)
				c.mode = KP_CRASH_GARBAGE;
			else
				return KP_ERR_INVALID;
		} else if (!parse_u64(v, vlen, &n)) {
			return KP_ERR_INVALID;
		} else if (key_is(p, klen, "sector")) {
			if (n < SECTOR_MIN || n > SECTOR_MAX || (n & (n - 1)) != 0)
				return KP_ERR_INVALID;
			c.sector = (unsigned)n;
		} else if (key_is(p, klen, "psow") || key_is(p, klen, "real_sync") ||
			   key_is(p, klen, "quiet")) {
			if (n > 1)
				return KP_ERR_INVALID;
			if (key_is(p, klen, "psow"))
				c.psow = n == 1;
			else if (key_is(p, klen, "real_sync"))
				c.real_sync = n == 1;
			else
				c.quiet = n == 1;
		} else if (key_is(p, klen, "seed")) {
			c.seed = n;
		} else if (key_is(p, klen, "after_sync")) {
			c.after_sync = n;
		} else if (key_is(p, klen, "before_sync")) {
			c.before_sync = n;
		} else if (key_is(p, klen, "after_write")) {
			c.after_write = n;
		} else {
			return KP_ERR_INVALID;
		}
		p = *end ? end + 1 : end;
	}
	*cfg = c;
	return KP_OK;
}

/* ---------- remembered file states ---------- */

static void fstate_clear(struct fstate *f)
{
	for (size_t i = 0; i < f->n; i++)
		free(f->sects[i].pre);
	f->n = 0;
	if (f->slots)
		memset(f->slots, 0, f->nslots * sizeof(*f->slots));
}

static void fstate_free(struct fstate *f)
{
	if (!f)
		return;
	fstate_clear(f);
	free(f->sects);
	free(f->slots);
	free(f->path);
	free(f);
}

static void fstate_unlink(struct fstate *f)
{
	for (struct fstate **pp = &g.files; *pp; pp = &(*pp)->next) {
		if (*pp == f) {
			*pp = f->next;
			return;
		}
	}
}

static struct fstate *fstate_find(const char *path)
{
	for (struct fstate *f = g.files; f; f = f->next)
		if (strcmp(f->path, path) == 0)
			return f;
	return NULL;
}

static size_t slot_of(const struct fstate *f, int64_t idx)
{
	uint64_t h = (uint64_t)idx * 0x9E3779B97F4A7C15ULL;
	return (size_t)(h >> 17) & (f->nslots - 1);
}

static struct sect *sect_find(struct fstate *f, int64_t idx)
{
	if (!f->nslots)
		return NULL;
	for (size_t s = slot_of(f, idx);; s = (s + 1) & (f->nslots - 1)) {
		if (f->slots[s] == 0)
			return NULL;
		struct sect *x = &f->sects[f->slots[s] - 1];
		if (x->idx == idx)
			return x;
	}
}

static int slots_grow(struct fstate *f)
{
	size_t ns = f->nslots ? f->nslots * 2 : 64;
	int64_t *slots = calloc(ns, sizeof(*slots));
	if (!slots)
		return SQLITE_NOMEM;
	free(f->slots);
	f->slots = slots;
	f->nslots = ns;
	for (size_t i = 0; i < f->n; i++) {
		size_t s = slot_of(f, f->sects[i].idx);
		while (f->slots[s])
			s = (s + 1) & (ns - 1);
		f->slots[s] = (int64_t)i + 1;
	}
	return SQLITE_OK;
}

/* Remember sector idx of f as it is now (its synced content), if not yet. */
static int sect_capture(struct fstate *f, sqlite3_file *real, int64_t idx, struct sect **out)
{
	struct sect *x = sect_find(f, idx);
	if (x) {
		*out = x;
		return SQLITE_OK;
	}
	unsigned S = sector_size();
	if ((f->n + 1) * 2 > f->nslots && slots_grow(f) != SQLITE_OK)
		return SQLITE_NOMEM;
	if (f->n == f->cap) {
		size_t nc = f->cap ? f->cap * 2 : 32;
		struct sect *ns = realloc(f->sects, nc * sizeof(*ns));
		if (!ns)
			return SQLITE_NOMEM;
		f->sects = ns;
		f->cap = nc;
	}
	int64_t off = idx * (int64_t)S;
	int64_t have = f->synced_size - off;
	uint32_t pre_len = have <= 0 ? 0 : have >= (int64_t)S ? S : (uint32_t)have;
	uint8_t *pre = calloc(1, S + S / 8);
	if (!pre)
		return SQLITE_NOMEM;
	if (pre_len) {
		int rc = real->pMethods->xRead(real, pre, (int)pre_len, off);
		if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ) {
			free(pre);
			return rc;
		}
	}
	x = &f->sects[f->n];
	*x = (struct sect){.idx = idx, .pre_len = pre_len, .pre = pre};
	size_t s = slot_of(f, idx);
	while (f->slots[s])
		s = (s + 1) & (f->nslots - 1);
	f->slots[s] = (int64_t)f->n + 1;
	f->n++;
	g.counts.unsynced_sectors++;
	*out = x;
	return SQLITE_OK;
}

/* Before a write of [off, off+len): remember every sector it touches. */
static int capture_range(struct fstate *f, sqlite3_file *real, int64_t off, int64_t len, bool mark)
{
	unsigned S = sector_size();
	for (int64_t i = off / S; i * (int64_t)S < off + len; i++) {
		struct sect *x;
		int rc = sect_capture(f, real, i, &x);
		if (rc != SQLITE_OK)
			return rc;
		if (mark) {
			int64_t base = i * (int64_t)S;
			uint32_t lo = (uint32_t)(off > base ? off - base : 0);
			int64_t e = off + len - base;
			uint32_t hi = e >= (int64_t)S ? S : (uint32_t)e;
			uint8_t *bits = x->pre + S;
			for (uint32_t b = lo; b < hi; b++)
				bits[b / 8] |= (uint8_t)(1u << (b % 8));
		}
	}
	return SQLITE_OK;
}

/* ---------- the crash ---------- */

enum fate { KEEP, LOST, GARBLE };

struct tally {
	unsigned files;
	uint64_t kept, lost, garbled;
};

static int pwrite_all(int fd, const uint8_t *buf, size_t len, int64_t off)
{
	while (len > 0) {
		ssize_t w = pwrite(fd, buf, len, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += w;
		len -= (size_t)w;
		off += w;
	}
	return 0;
}

/* Put file f into a state a power cut could have left. */
static int apply_file(struct fstate *f, struct tally *t)
{
	unsigned S = sector_size();
	int fd = open(f->path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	struct stat sb;
	if (fstat(fd, &sb) != 0) {
		close(fd);
		return -1;
	}
	int64_t cur = sb.st_size;
	int64_t final = f->synced_size;
	if (g.cfg.mode != KP_CRASH_DROP && (rnd() & 1))
		final = cur; /* the new size reached the disk */
	uint8_t buf[SECTOR_MAX];
	int rc = 0;
	t->files++;
	for (size_t i = 0; i < f->n && rc == 0; i++) {
		struct sect *x = &f->sects[i];
		int64_t base = x->idx * (int64_t)S;
		if (base >= final)
			continue; /* cut off by the size */
		enum fate fate = LOST;
		if (base + (int64_t)S > cur && final > cur)
			fate = LOST; /* only the pre-image can bring a truncated part back */
		else if (g.cfg.mode == KP_CRASH_TEAR)
			fate = (rnd() & 1) ? KEEP : LOST;
		else if (g.cfg.mode == KP_CRASH_GARBAGE)
			fate = (enum fate)(rnd() % 3);
		int64_t lim = final - base < (int64_t)S ? final - base : (int64_t)S;
		if (fate == KEEP) {
			t->kept++;
			continue;
		}
		if (fate == LOST) {
			t->lost++;
			memset(buf, 0, S);
			if (x->pre_len)
				memcpy(buf, x->pre, x->pre_len);
			rc = pwrite_all(fd, buf, (size_t)lim, base);
			continue;
		}
		t->garbled++;
		if (getenv("KP_CRASHVFS_DEBUG"))
			fprintf(stderr, "crashvfs: %s: sector %lld garbled\n", f->path, (long long)x->idx);
		/* Power-safe overwrite: only the bytes written can be damaged;
		 * without it, the whole sector can. */
		ssize_t got = pread(fd, buf, (size_t)lim, (off_t)base);
		if (got < 0) {
			rc = -1;
			continue;
		}
		if (got < lim)
			memset(buf + got, 0, (size_t)(lim - got));
		const uint8_t *bits = x->pre + S;
		for (uint32_t k = 0; k < (uint32_t)lim; k += 8) {
			uint64_t r = rnd();
			for (uint32_t b = k; b < k + 8 && b < (uint32_t)lim; b++)
				if (!g.cfg.psow || (bits[b / 8] >> (b % 8)) & 1)
					buf[b] = (uint8_t)(r >> (8 * (b - k)));
		}
		rc = pwrite_all(fd, buf, (size_t)lim, base);
	}
	if (rc == 0 && ftruncate(fd, (off_t)final) != 0)
		rc = -1;
	close(fd);
	if (getenv("KP_CRASHVFS_DEBUG"))
		fprintf(stderr, "crashvfs: %s: synced %lld, now %lld, left %lld; %zu unsynced sectors\n",
			f->path, (long long)f->synced_size, (long long)cur, (long long)final, f->n);
	return rc;
}

static int apply_all(struct tally *t)
{
	int rc = 0;
	for (struct fstate *f = g.files; f; f = f->next)
		if (apply_file(f, t) != 0)
			rc = -1;
	return rc;
}

static void forget_all(void)
{
	while (g.files) {
		struct fstate *f = g.files;
		g.files = f->next;
		fstate_free(f);
	}
	g.counts.unsynced_sectors = 0;
}

static const char *why_now;

void kp_crashvfs_crash(void)
{
	struct tally t = {0};
	int rc = apply_all(&t);
	if (!g.cfg.quiet || rc != 0) {
		char line[256];
		int n = snprintf(line, sizeof(line),
				 "crashvfs: crash (%s) mode=%s sector=%u psow=%d seed=%llu: %u files, "
				 "%llu sectors kept, %llu lost, %llu garbled%s\n",
				 why_now ? why_now : "asked", kp_crash_mode_str(g.cfg.mode), sector_size(),
				 g.cfg.psow ? 1 : 0, (unsigned long long)g.cfg.seed, t.files,
				 (unsigned long long)t.kept, (unsigned long long)t.lost,
				 (unsigned long long)t.garbled, rc ? " (APPLY FAILED)" : "");
		if (n > 0)
			(void)!write(2, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
	}
	raise(SIGKILL);
	_exit(137);
}

kp_err kp_crashvfs_simulate(void)
{
	struct tally t = {0};
	int rc = apply_all(&t);
	forget_all();
	return rc == 0 ? KP_OK : KP_ERR_IO;
}

static void failpoint_hook(void)
{
	why_now = "failpoint";
	kp_crashvfs_crash();
}

/* ---------- error injection ---------- */

static bool ioerr_now(kp_crashvfs_op op)
{
	if (!g.ioerr_at[op])
		return false;
	g.ioerr_calls[op]++;
	if (g.ioerr_calls[op] == g.ioerr_at[op] ||
	    (g.ioerr_persist[op] && g.ioerr_calls[op] > g.ioerr_at[op])) {
		g.ioerr_fired++;
		return true;
	}
	return false;
}

void kp_crashvfs_ioerr_arm(kp_crashvfs_op op, uint64_t n, bool persistent)
{
	if (op >= KP_CVFS__OPS)
		return;
	g.ioerr_at[op] = n;
	g.ioerr_persist[op] = persistent;
	g.ioerr_calls[op] = 0;
	g.ioerr_fired = 0;
}

uint64_t kp_crashvfs_ioerr_fired(void)
{
	return g.ioerr_fired;
}

void kp_crashvfs_counts_get(kp_crashvfs_counts *out)
{
	*out = g.counts;
}

/* ---------- sqlite3_io_methods ---------- */

static int cf_close(sqlite3_file *file)
{
	struct cfile *p = (struct cfile *)file;
	int rc = p->real->pMethods ? p->real->pMethods->xClose(p->real) : SQLITE_OK;
	if (p->st) {
		p->st->refs--;
		if (p->st->refs == 0 && p->st->n == 0) {
			/* Nothing unsynced: nothing to remember once closed. */
			fstate_unlink(p->st);
			fstate_free(p->st);
		}
		p->st = NULL;
	}
	return rc;
}

static int cf_read(sqlite3_file *file, void *buf, int amt, sqlite3_int64 off)
{
	struct cfile *p = (struct cfile *)file;
	if (p->st) {
		g.counts.reads++;
		if (ioerr_now(KP_CVFS_READ))
			return SQLITE_IOERR_READ;
	}
	return p->real->pMethods->xRead(p->real, buf, amt, off);
}

static int cf_write(sqlite3_file *file, const void *buf, int amt, sqlite3_int64 off)
{
	struct cfile *p = (struct cfile *)file;
	if (!p->st)
		return p->real->pMethods->xWrite(p->real, buf, amt, off);
	if (ioerr_now(KP_CVFS_WRITE))
		return SQLITE_IOERR_WRITE;
	int rc = capture_range(p->st, p->real, off, amt, true);
	if (rc != SQLITE_OK)
		return rc == SQLITE_NOMEM ? SQLITE_IOERR_NOMEM : rc;
	rc = p->real->pMethods->xWrite(p->real, buf, amt, off);
	g.counts.writes++;
	if (g.cfg.after_write && g.counts.writes == g.cfg.after_write) {
		why_now = "after_write";
		kp_crashvfs_crash();
	}
	return rc;
}

static int cf_truncate(sqlite3_file *file, sqlite3_int64 size)
{
	struct cfile *p = (struct cfile *)file;
	if (!p->st)
		return p->real->pMethods->xTruncate(p->real, size);
	g.counts.truncates++;
	if (ioerr_now(KP_CVFS_TRUNCATE))
		return SQLITE_IOERR_TRUNCATE;
	sqlite3_int64 cur = 0;
	int rc = p->real->pMethods->xFileSize(p->real, &cur);
	if (rc != SQLITE_OK)
		return rc;
	int64_t top = cur < p->st->synced_size ? cur : p->st->synced_size;
	if (size < top) {
		/* The part cut off was synced: remember it, a crash may bring it back. */
		rc = capture_range(p->st, p->real, size, top - size, false);
		if (rc != SQLITE_OK)
			return rc == SQLITE_NOMEM ? SQLITE_IOERR_NOMEM : rc;
	}
	return p->real->pMethods->xTruncate(p->real, size);
}

static int cf_sync(sqlite3_file *file, int flags)
{
	struct cfile *p = (struct cfile *)file;
	if (!p->st)
		return g.cfg.real_sync ? p->real->pMethods->xSync(p->real, flags) : SQLITE_OK;
	if (ioerr_now(KP_CVFS_SYNC))
		return SQLITE_IOERR_FSYNC;
	g.counts.syncs++;
	if (g.cfg.before_sync && g.counts.syncs == g.cfg.before_sync) {
		why_now = "before_sync";
		kp_crashvfs_crash();
	}
	int rc = g.cfg.real_sync ? p->real->pMethods->xSync(p->real, flags) : SQLITE_OK;
	if (rc != SQLITE_OK)
		return rc;
	sqlite3_int64 size = 0;
	rc = p->real->pMethods->xFileSize(p->real, &size);
	if (rc != SQLITE_OK)
		return rc;
	g.counts.unsynced_sectors -= p->st->n;
	fstate_clear(p->st);
	p->st->synced_size = size;
	if (g.cfg.after_sync && g.counts.syncs == g.cfg.after_sync) {
		why_now = "after_sync";
		kp_crashvfs_crash();
	}
	return SQLITE_OK;
}

static int cf_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
	struct cfile *p = (struct cfile *)file;
	return p->real->pMethods->xFileSize(p->real, size);
}

static int cf_lock(sqlite3_file *file, int lock)
{
	struct cfile *p = (struct cfile *)file;
	return p->real->pMethods->xLock(p->real, lock);
}

static int cf_unlock(sqlite3_file *file, int lock)
{
	struct cfile *p = (struct cfile *)file;
	return p->real->pMethods->xUnlock(p->real, lock);
}

static int cf_check_reserved(sqlite3_file *file, int *out)
{
	struct cfile *p = (struct cfile *)file;
	return p->real->pMethods->xCheckReservedLock(p->real, out);
}

static int cf_file_control(sqlite3_file *file, int op, void *arg)
{
	struct cfile *p = (struct cfile *)file;
	if (op == SQLITE_FCNTL_VFSNAME) {
		*(char **)arg = sqlite3_mprintf("%s", KP_CRASHVFS_NAME);
		return SQLITE_OK;
	}
	return p->real->pMethods->xFileControl(p->real, op, arg);
}

static int cf_sector_size(sqlite3_file *file)
{
	(void)file;
	return (int)sector_size();
}

static int cf_device_characteristics(sqlite3_file *file)
{
	(void)file;
	return g.cfg.psow ? SQLITE_IOCAP_POWERSAFE_OVERWRITE : 0;
}

static int cf_shm_map(sqlite3_file *file, int pg, int pgsz, int extend, void volatile **pp)
{
	struct cfile *p = (struct cfile *)file;
	return p->real->pMethods->xShmMap(p->real, pg, pgsz, extend, pp);
}

static int cf_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
	struct cfile *p = (struct cfile *)file;
	return p->real->pMethods->xShmLock(p->real, offset, n, flags);
}

static void cf_shm_barrier(sqlite3_file *file)
{
	struct cfile *p = (struct cfile *)file;
	p->real->pMethods->xShmBarrier(p->real);
}

static int cf_shm_unmap(sqlite3_file *file, int del)
{
	struct cfile *p = (struct cfile *)file;
	return p->real->pMethods->xShmUnmap(p->real, del);
}

static int cf_fetch(sqlite3_file *file, sqlite3_int64 off, int amt, void **pp)
{
	/* No memory-mapped reads: every read goes through xRead. */
	(void)file;
	(void)off;
	(void)amt;
	*pp = NULL;
	return SQLITE_OK;
}

static int cf_unfetch(sqlite3_file *file, sqlite3_int64 off, void *ptr)
{
	(void)file;
	(void)off;
	(void)ptr;
	return SQLITE_OK;
}

static const sqlite3_io_methods crash_io = {
	.iVersion = 3,
	.xClose = cf_close,
	.xRead = cf_read,
	.xWrite = cf_write,
	.xTruncate = cf_truncate,
	.xSync = cf_sync,
	.xFileSize = cf_file_size,
	.xLock = cf_lock,
	.xUnlock = cf_unlock,
	.xCheckReservedLock = cf_check_reserved,
	.xFileControl = cf_file_control,
	.xSectorSize = cf_sector_size,
	.xDeviceCharacteristics = cf_device_characteristics,
	.xShmMap = cf_shm_map,
	.xShmLock = cf_shm_lock,
	.xShmBarrier = cf_shm_barrier,
	.xShmUnmap = cf_shm_unmap,
	.xFetch = cf_fetch,
	.xUnfetch = cf_unfetch,
};

/* ---------- sqlite3_vfs ---------- */

#define CFILE_HDR ((sizeof(struct cfile) + 15) & ~(size_t)15)

static int cv_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out_flags)
{
	(void)vfs;
	struct cfile *p = (struct cfile *)file;
	memset(p, 0, sizeof(*p));
	p->real = (sqlite3_file *)((char *)file + CFILE_HDR);
	int rc = g.real->xOpen(g.real, name, p->real, flags, out_flags);
	if (rc != SQLITE_OK) {
		p->base.pMethods = NULL;
		return rc;
	}
	if (!p->real->pMethods || p->real->pMethods->iVersion < 3) {
		if (p->real->pMethods)
			p->real->pMethods->xClose(p->real);
		p->base.pMethods = NULL;
		return SQLITE_CANTOPEN;
	}
	p->base.pMethods = &crash_io;
	bool tracked = name && (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL));
	if (!tracked)
		return SQLITE_OK;
	struct fstate *f = fstate_find(name);
	if (!f) {
		f = calloc(1, sizeof(*f));
		if (f)
			f->path = strdup(name);
		sqlite3_int64 size = 0;
		if (!f || !f->path || p->real->pMethods->xFileSize(p->real, &size) != SQLITE_OK) {
			fstate_free(f);
			p->real->pMethods->xClose(p->real);
			p->base.pMethods = NULL;
			return SQLITE_CANTOPEN;
		}
		f->synced_size = size; /* what is on disk at open counts as durable */
		f->next = g.files;
		g.files = f;
	}
	f->refs++;
	p->st = f;
	return SQLITE_OK;
}

static int cv_delete(sqlite3_vfs *vfs, const char *name, int dir_sync)
{
	(void)vfs;
	struct fstate *f = fstate_find(name);
	if (f) {
		g.counts.unsynced_sectors -= f->n;
		fstate_clear(f);
		if (f->refs == 0) {
			fstate_unlink(f);
			fstate_free(f);
		} else {
			f->synced_size = 0;
		}
	}
	/* The directory sync is a durability step too: simulated unless real_sync. */
	return g.real->xDelete(g.real, name, g.cfg.real_sync ? dir_sync : 0);
}

static int cv_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	(void)vfs;
	return g.real->xAccess(g.real, name, flags, out);
}

static int cv_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	(void)vfs;
	return g.real->xFullPathname(g.real, name, n, out);
}

static void *cv_dlopen(sqlite3_vfs *vfs, const char *name)
{
	(void)vfs;
	return g.real->xDlOpen(g.real, name);
}

static void cv_dlerror(sqlite3_vfs *vfs, int n, char *msg)
{
	(void)vfs;
	g.real->xDlError(g.real, n, msg);
}

static void (*cv_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
	(void)vfs;
	return g.real->xDlSym(g.real, h, sym);
}

static void cv_dlclose(sqlite3_vfs *vfs, void *h)
{
	(void)vfs;
	g.real->xDlClose(g.real, h);
}

static int cv_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs;
	return g.real->xRandomness(g.real, n, out);
}

static int cv_sleep(sqlite3_vfs *vfs, int us)
{
	(void)vfs;
	return g.real->xSleep(g.real, us);
}

static int cv_current_time(sqlite3_vfs *vfs, double *out)
{
	(void)vfs;
	return g.real->xCurrentTime(g.real, out);
}

static int cv_last_error(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs;
	return g.real->xGetLastError ? g.real->xGetLastError(g.real, n, out) : 0;
}

static int cv_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
	(void)vfs;
	if (g.real->iVersion >= 2 && g.real->xCurrentTimeInt64)
		return g.real->xCurrentTimeInt64(g.real, out);
	double d = 0;
	int rc = g.real->xCurrentTime(g.real, &d);
	*out = (sqlite3_int64)(d * 86400000.0);
	return rc;
}

static sqlite3_vfs crash_vfs = {
	.iVersion = 2,
	.zName = KP_CRASHVFS_NAME,
	.xOpen = cv_open,
	.xDelete = cv_delete,
	.xAccess = cv_access,
	.xFullPathname = cv_full_pathname,
	.xDlOpen = cv_dlopen,
	.xDlError = cv_dlerror,
	.xDlSym = cv_dlsym,
	.xDlClose = cv_dlclose,
	.xRandomness = cv_randomness,
	.xSleep = cv_sleep,
	.xCurrentTime = cv_current_time,
	.xGetLastError = cv_last_error,
	.xCurrentTimeInt64 = cv_current_time64,
};

kp_err kp_crashvfs_register(const kp_crashvfs_config *cfg, bool make_default)
{
	if (!cfg || cfg->mode >= KP_CRASH__COUNT)
		return KP_ERR_INVALID;
	unsigned s = cfg->sector ? cfg->sector : SECTOR_MIN;
	if (s < SECTOR_MIN || s > SECTOR_MAX || (s & (s - 1)) != 0)
		return KP_ERR_INVALID;
	if (sqlite3_initialize() != SQLITE_OK)
		return KP_ERR_INTERNAL;
	for (struct fstate *f = g.files; f; f = f->next)
		if (f->refs > 0)
			return KP_ERR_BUSY; /* files still open through it */
	if (!g.registered) {
		g.real = sqlite3_vfs_find(NULL);
		if (!g.real || g.real == &crash_vfs)
			return KP_ERR_INTERNAL;
	}
	forget_all();
	g.cfg = *cfg;
	g.cfg.sector = s;
	g.rng = cfg->seed * 0x9E3779B97F4A7C15ULL + 0x1234567ULL;
	if (g.rng == 0)
		g.rng = 1;
	memset(&g.counts, 0, sizeof(g.counts));
	memset(g.ioerr_at, 0, sizeof(g.ioerr_at));
	g.ioerr_fired = 0;
	crash_vfs.szOsFile = (int)(CFILE_HDR + (size_t)g.real->szOsFile);
	crash_vfs.mxPathname = g.real->mxPathname;
	crash_vfs.pAppData = g.real;
	if (sqlite3_vfs_register(&crash_vfs, make_default ? 1 : 0) != SQLITE_OK)
		return KP_ERR_INTERNAL;
	g.registered = true;
	why_now = NULL;
	kp_failpoint_crash_hook = failpoint_hook;
	return KP_OK;
}

void kp_crashvfs_unregister(void)
{
	if (!g.registered)
		return;
	sqlite3_vfs_unregister(&crash_vfs);
	sqlite3_vfs_register(g.real, 1);
	forget_all();
	g.registered = false;
	if (kp_failpoint_crash_hook == failpoint_hook)
		kp_failpoint_crash_hook = NULL;
}

kp_err kp_crashvfs_init_from_env(bool *active)
{
	*active = false;
	const char *spec = getenv("KP_CRASHVFS");
	if (!spec || !*spec)
		return KP_OK;
	kp_crashvfs_config cfg;
	kp_crashvfs_config_init(&cfg);
	kp_err err = kp_crashvfs_parse(spec, &cfg);
	if (err != KP_OK)
		return err;
	err = kp_crashvfs_register(&cfg, true);
	if (err == KP_OK)
		*active = true;
	return err;
}
