/* test_crashvfs.c — the crash VFS itself: what each mode leaves on disk for
 * raw writes (drop, tear, garbage, power-safe overwrite, truncation), that a
 * synced write always survives, the crash points and the failpoint hook in a
 * forked child, error injection, and SQLite in WAL mode surviving every cut. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crashvfs.h"
#include "kp_failpoint.h"

#define SECT 512

struct fix {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/kp-crashvfs-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/f.db", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;
	kp_crashvfs_unregister();
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

/* ---------- raw file access through the VFS ---------- */

static sqlite3_file *vopen(const char *path)
{
	sqlite3_vfs *v = sqlite3_vfs_find(KP_CRASHVFS_NAME);
	assert_non_null(v);
	sqlite3_file *file = calloc(1, (size_t)v->szOsFile);
	int out = 0;
	assert_int_equal(v->xOpen(v, path, file,
				  SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &out),
			 SQLITE_OK);
	return file;
}

static void vclose(sqlite3_file *file)
{
	assert_int_equal(file->pMethods->xClose(file), SQLITE_OK);
	free(file);
}

static void vwrite(sqlite3_file *file, int64_t off, int byte, int len)
{
	uint8_t buf[8192];
	assert_true(len <= (int)sizeof(buf));
	memset(buf, byte, (size_t)len);
	assert_int_equal(file->pMethods->xWrite(file, buf, len, off), SQLITE_OK);
}

static void vsync(sqlite3_file *file)
{
	assert_int_equal(file->pMethods->xSync(file, SQLITE_SYNC_FULL), SQLITE_OK);
}

/* The file's bytes as now on disk (read with plain POSIX). */
static size_t disk(const char *path, uint8_t *buf, size_t cap)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = read(fd, buf, cap);
	close(fd);
	assert_true(n >= 0);
	return (size_t)n;
}

static void reg(kp_crash_mode mode, bool psow, uint64_t seed)
{
	kp_crashvfs_config c;
	kp_crashvfs_config_init(&c);
	c.mode = mode;
	c.psow = psow;
	c.seed = seed;
	c.sector = SECT;
	c.quiet = true;
	assert_int_equal(kp_crashvfs_register(&c, false), KP_OK);
}

static bool all(const uint8_t *b, size_t n, int byte)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != byte)
			return false;
	return true;
}

static void test_parse(void **state)
{
	(void)state;
	static const struct {
		const char *spec;
		kp_err want;
	} cases[] = {
		{"", KP_OK},
		{"mode=tear,after_sync=17,sector=512,psow=0,seed=42", KP_OK},
		{"mode=garbage,before_sync=3,sector=4096", KP_OK},
		{"mode=drop,after_write=9,real_sync=1,quiet=1,", KP_OK},
		{"mode=melt", KP_ERR_INVALID},
		{"sector=1000", KP_ERR_INVALID},
		{"sector=256", KP_ERR_INVALID},
		{"psow=2", KP_ERR_INVALID},
		{"after_sync=-1", KP_ERR_INVALID},
		{"after_sync", KP_ERR_INVALID},
		{"colour=red", KP_ERR_INVALID},
		{"seed=18446744073709551615", KP_OK},
		{"seed=18446744073709551616", KP_ERR_INVALID},
		{"seed=99999999999999999999", KP_ERR_INVALID},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kp_crashvfs_config c;
		kp_crashvfs_config_init(&c);
		assert_int_equal(kp_crashvfs_parse(cases[i].spec, &c), cases[i].want);
	}
	kp_crashvfs_config c;
	kp_crashvfs_config_init(&c);
	assert_int_equal(kp_crashvfs_parse("mode=tear,after_sync=17,sector=1024,psow=0,seed=42", &c), KP_OK);
	assert_int_equal(c.mode, KP_CRASH_TEAR);
	assert_int_equal(c.after_sync, 17);
	assert_int_equal(c.sector, 1024);
	assert_false(c.psow);
	assert_int_equal(c.seed, 42);
	kp_crashvfs_config before = c;
	assert_int_equal(kp_crashvfs_parse("mode=drop,bogus=1", &c), KP_ERR_INVALID);
	assert_memory_equal(&c, &before, sizeof(c)); /* unchanged on error */
}

/* Drop: everything after the last sync is gone, the size included; what was
 * synced is intact, even in a sector rewritten since. */
static void test_drop(void **state)
{
	struct fix *f = *state;
	reg(KP_CRASH_DROP, true, 1);
	sqlite3_file *file = vopen(f->path);
	vwrite(file, 0, 'A', 2 * SECT);
	vsync(file);
	vwrite(file, 100, 'B', 50);        /* inside synced sector 0 */
	vwrite(file, 2 * SECT, 'C', SECT); /* appended */
	kp_crashvfs_counts c;
	kp_crashvfs_counts_get(&c);
	assert_int_equal(c.unsynced_sectors, 2);
	assert_int_equal(c.syncs, 1);
	assert_int_equal(c.writes, 3);
	vclose(file); /* closed with unsynced writes: still remembered */
	assert_int_equal(kp_crashvfs_simulate(), KP_OK);
	uint8_t buf[4 * SECT];
	assert_int_equal(disk(f->path, buf, sizeof(buf)), 2 * SECT);
	assert_true(all(buf, 2 * SECT, 'A'));
}

/* A synced write survives every mode. */
static void test_synced_survives_every_mode(void **state)
{
	struct fix *f = *state;
	for (int mode = 0; mode < KP_CRASH__COUNT; mode++) {
		for (uint64_t seed = 1; seed <= 20; seed++) {
			unlink(f->path);
			reg((kp_crash_mode)mode, seed & 1, seed);
			sqlite3_file *file = vopen(f->path);
			vwrite(file, 0, 'S', 4 * SECT);
			vsync(file);
			vwrite(file, 4 * SECT, 'U', 4 * SECT);
			vclose(file);
			assert_int_equal(kp_crashvfs_simulate(), KP_OK);
			uint8_t buf[16 * SECT];
			size_t n = disk(f->path, buf, sizeof(buf));
			assert_true(n == 4 * SECT || n == 8 * SECT);
			assert_true(all(buf, 4 * SECT, 'S'));
			for (size_t s = 4; s < n / SECT; s++) {
				const uint8_t *b = buf + s * SECT;
				if (mode == KP_CRASH_TEAR) /* each sector: written or a hole */
					assert_true(all(b, SECT, 'U') || all(b, SECT, 0));
			}
		}
	}
}

/* Tear: over many seeds, some sectors of one write survive and others not. */
static void test_tear_mixes_sectors(void **state)
{
	struct fix *f = *state;
	int kept = 0, lost = 0;
	for (uint64_t seed = 1; seed <= 10; seed++) {
		unlink(f->path);
		reg(KP_CRASH_TEAR, true, seed);
		sqlite3_file *file = vopen(f->path);
		vwrite(file, 0, 'O', 8 * SECT);
		vsync(file);
		vwrite(file, 0, 'N', 8 * SECT); /* one write over 8 synced sectors */
		vclose(file);
		assert_int_equal(kp_crashvfs_simulate(), KP_OK);
		uint8_t buf[8 * SECT];
		assert_int_equal(disk(f->path, buf, sizeof(buf)), 8 * SECT);
		for (int s = 0; s < 8; s++) {
			if (all(buf + s * SECT, SECT, 'N'))
				kept++;
			else if (all(buf + s * SECT, SECT, 'O'))
				lost++;
			else
				fail_msg("sector %d neither old nor new", s);
		}
	}
	assert_true(kept > 10 && lost > 10);
}

/* Garbage with power-safe overwrite: only the bytes written can change;
 * without it, the neighbours in the same sector can be damaged too. */
static void test_garbage_psow(void **state)
{
	struct fix *f = *state;
	int outside_damaged_psow = 0, outside_damaged_nopsow = 0, garbled = 0;
	for (int psow = 1; psow >= 0; psow--) {
		for (uint64_t seed = 1; seed <= 30; seed++) {
			unlink(f->path);
			reg(KP_CRASH_GARBAGE, psow, seed);
			sqlite3_file *file = vopen(f->path);
			vwrite(file, 0, 'O', SECT);
			vsync(file);
			vwrite(file, 100, 'N', 100); /* bytes 100..199 and 300..349 only */
			vwrite(file, 300, 'N', 50);
			vclose(file);
			assert_int_equal(kp_crashvfs_simulate(), KP_OK);
			uint8_t buf[SECT];
			assert_int_equal(disk(f->path, buf, sizeof(buf)), SECT);
			bool outside = !all(buf, 100, 'O') || !all(buf + 200, 100, 'O') ||
				       !all(buf + 350, SECT - 350, 'O');
			bool inside_ok = all(buf + 100, 100, 'N') || all(buf + 100, 100, 'O');
			if (!inside_ok)
				garbled++;
			if (psow)
				outside_damaged_psow += outside;
			else
				outside_damaged_nopsow += outside;
		}
	}
	assert_int_equal(outside_damaged_psow, 0);
	assert_true(outside_damaged_nopsow > 0);
	assert_true(garbled > 0);
}

/* An unsynced truncate of synced data can be undone by the crash. */
static void test_truncate_undone(void **state)
{
	struct fix *f = *state;
	reg(KP_CRASH_DROP, true, 3);
	sqlite3_file *file = vopen(f->path);
	vwrite(file, 0, 'T', 4 * SECT);
	vsync(file);
	assert_int_equal(file->pMethods->xTruncate(file, SECT + 10), SQLITE_OK);
	vwrite(file, SECT + 10, 'X', 20);
	vclose(file);
	assert_int_equal(kp_crashvfs_simulate(), KP_OK);
	uint8_t buf[8 * SECT];
	assert_int_equal(disk(f->path, buf, sizeof(buf)), 4 * SECT);
	assert_true(all(buf, 4 * SECT, 'T'));
}

static void test_ioerr_countdown(void **state)
{
	struct fix *f = *state;
	reg(KP_CRASH_DROP, true, 1);
	sqlite3_file *file = vopen(f->path);
	kp_crashvfs_ioerr_arm(KP_CVFS_WRITE, 2, false);
	uint8_t b[16] = {0};
	assert_int_equal(file->pMethods->xWrite(file, b, 16, 0), SQLITE_OK);
	assert_int_equal(file->pMethods->xWrite(file, b, 16, 16), SQLITE_IOERR_WRITE);
	assert_int_equal(file->pMethods->xWrite(file, b, 16, 32), SQLITE_OK); /* one-shot */
	assert_int_equal(kp_crashvfs_ioerr_fired(), 1);
	kp_crashvfs_ioerr_arm(KP_CVFS_SYNC, 1, true);
	assert_int_equal(file->pMethods->xSync(file, 0), SQLITE_IOERR_FSYNC);
	assert_int_equal(file->pMethods->xSync(file, 0), SQLITE_IOERR_FSYNC); /* persistent */
	kp_crashvfs_ioerr_arm(KP_CVFS_SYNC, 0, false);
	assert_int_equal(file->pMethods->xSync(file, 0), SQLITE_OK);
	kp_crashvfs_ioerr_arm(KP_CVFS_READ, 1, false);
	assert_int_equal(file->pMethods->xRead(file, b, 16, 0), SQLITE_IOERR_READ);
	assert_int_equal(file->pMethods->xRead(file, b, 16, 0), SQLITE_OK);
	kp_crashvfs_ioerr_arm(KP_CVFS_TRUNCATE, 1, false);
	assert_int_equal(file->pMethods->xTruncate(file, 0), SQLITE_IOERR_TRUNCATE);
	vclose(file);
}

/* ---------- crash points in a forked child ---------- */

/* Run fn in a child; returns its wait status. */
static int in_child(void (*fn)(struct fix *), struct fix *f)
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		fn(f);
		_exit(0);
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return st;
}

static void child_after_sync(struct fix *f)
{
	kp_crashvfs_config c;
	kp_crashvfs_config_init(&c);
	c.after_sync = 2;
	c.quiet = true;
	if (kp_crashvfs_register(&c, false) != KP_OK)
		_exit(3);
	sqlite3_file *file = vopen(f->path);
	vwrite(file, 0, '1', SECT);
	vsync(file);
	vwrite(file, SECT, '2', SECT);
	vsync(file);               /* dies right after this one */
	vwrite(file, 2 * SECT, '3', SECT);
	_exit(4);
}

static void child_before_sync(struct fix *f)
{
	kp_crashvfs_config c;
	kp_crashvfs_config_init(&c);
	c.before_sync = 2;
	c.quiet = true;
	if (kp_crashvfs_register(&c, false) != KP_OK)
		_exit(3);
	sqlite3_file *file = vopen(f->path);
	vwrite(file, 0, '1', SECT);
	vsync(file);
	vwrite(file, SECT, '2', SECT);
	vsync(file);               /* dies in place of this one: '2' is lost */
	_exit(4);
}

static void child_after_write(struct fix *f)
{
	kp_crashvfs_config c;
	kp_crashvfs_config_init(&c);
	c.after_write = 2;
	c.quiet = true;
	if (kp_crashvfs_register(&c, false) != KP_OK)
		_exit(3);
	sqlite3_file *file = vopen(f->path);
	vwrite(file, 0, '1', SECT);
	vsync(file);
	vwrite(file, SECT, '2', SECT); /* dies right after this write */
	_exit(4);
}

static void child_failpoint(struct fix *f)
{
	kp_crashvfs_config c;
	kp_crashvfs_config_init(&c);
	c.quiet = true;
	if (kp_crashvfs_register(&c, false) != KP_OK)
		_exit(3);
	sqlite3_file *file = vopen(f->path);
	vwrite(file, 0, '1', SECT);
	vsync(file);
	vwrite(file, SECT, '2', SECT);
	if (kp_failpoint_arm(17, 1, 1, KP_FP_CRASH) != KP_OK)
		_exit(5);
	if (KP_FAILPOINT(17)) /* the hook drops '2', then SIGKILL */
		_exit(6);
	_exit(4);
}

static void test_crash_points(void **state)
{
	struct fix *f = *state;
	static const struct {
		void (*fn)(struct fix *);
		size_t want_size;
	} cases[] = {
		{child_after_sync, 2 * SECT},
		{child_before_sync, SECT},
		{child_after_write, SECT},
		{child_failpoint, SECT},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unlink(f->path);
		int st = in_child(cases[i].fn, f);
		assert_true(WIFSIGNALED(st));
		assert_int_equal(WTERMSIG(st), SIGKILL);
		uint8_t buf[4 * SECT];
		size_t n = disk(f->path, buf, sizeof(buf));
		assert_int_equal(n, cases[i].want_size);
		assert_true(all(buf, SECT, '1'));
		if (n > SECT)
			assert_true(all(buf + SECT, SECT, '2'));
	}
}

/* ---------- SQLite in WAL mode over the VFS ---------- */

static void sql_ok(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
	if (rc != SQLITE_OK)
		fail_msg("%s: %s", sql, err ? err : "?");
}

struct wal_run {
	kp_crash_mode mode;
	bool psow;
	unsigned sector;
	uint64_t before_sync;
	uint64_t seed;
	int pipe_w;
};
static struct wal_run wal_run;

/* Child: commit rows 1..200 in WAL mode (synchronous=FULL, small
 * autocheckpoint so that checkpoints and WAL resets happen), reporting each
 * committed row on the pipe, until the crash. */
static void child_wal(struct fix *f)
{
	kp_crashvfs_config c;
	kp_crashvfs_config_init(&c);
	c.mode = wal_run.mode;
	c.psow = wal_run.psow;
	c.sector = wal_run.sector;
	c.before_sync = wal_run.before_sync;
	c.seed = wal_run.seed;
	c.quiet = true;
	if (kp_crashvfs_register(&c, false) != KP_OK)
		_exit(3);
	sqlite3 *db = NULL;
	if (sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, KP_CRASHVFS_NAME))
		_exit(5);
	sqlite3_exec(db, "PRAGMA page_size=1024; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
			 "PRAGMA wal_autocheckpoint=20;"
			 "CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v BLOB)",
		     NULL, NULL, NULL);
	for (int k = 1; k <= 200; k++) {
		char sql[128];
		snprintf(sql, sizeof(sql), "INSERT INTO t VALUES(%d, zeroblob(%d))", k, 300 + (k * 37) % 900);
		if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
			_exit(6);
		if (write(wal_run.pipe_w, &k, sizeof(k)) != sizeof(k))
			_exit(7);
	}
	_exit(0);
}

static void test_sqlite_wal_survives_cuts(void **state)
{
	struct fix *f = *state;
	unsigned cuts = 0;
	for (uint64_t i = 1; i <= 90; i++) {
		char cmd[512];
		snprintf(cmd, sizeof(cmd), "rm -f '%s' '%s-wal' '%s-shm'", f->path, f->path, f->path);
		assert_int_equal(system(cmd), 0);
		int fds[2];
		assert_int_equal(pipe(fds), 0);
		wal_run = (struct wal_run){
			.mode = (kp_crash_mode)(i % 3), .psow = (i / 3) % 2 == 0,
			.sector = (i / 6) % 2 ? 4096 : 512, .before_sync = 1 + (i * 7) % 220,
			.seed = i, .pipe_w = fds[1],
		};
		int st = in_child(child_wal, f);
		close(fds[1]);
		int last = 0, k;
		while (read(fds[0], &k, sizeof(k)) == sizeof(k))
			last = k;
		close(fds[0]);
		if (WIFSIGNALED(st))
			cuts++;
		else
			assert_int_equal(WEXITSTATUS(st), 0);
		sqlite3 *db = NULL;
		assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
		sqlite3_stmt *stm = NULL;
		assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stm, NULL), SQLITE_OK);
		assert_int_equal(sqlite3_step(stm), SQLITE_ROW);
		assert_string_equal((const char *)sqlite3_column_text(stm, 0), "ok");
		sqlite3_finalize(stm);
		int64_t n = -1;
		/* The table may not exist if the cut came before its commit. */
		if (sqlite3_prepare_v2(db, "SELECT count(*), coalesce(max(k),0) FROM t", -1, &stm, NULL) ==
		    SQLITE_OK) {
			assert_int_equal(sqlite3_step(stm), SQLITE_ROW);
			n = sqlite3_column_int64(stm, 0);
			/* Every committed row is there, and nothing but a prefix. */
			assert_true(n >= last);
			assert_true(n <= last + 1);
			assert_int_equal(sqlite3_column_int64(stm, 1), n);
			sqlite3_finalize(stm);
		} else {
			assert_int_equal(last, 0);
		}
		sql_ok(db, "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v BLOB);"
			   "INSERT INTO t VALUES(100000, x'00')");
		sqlite3_close(db);
	}
	assert_true(cuts > 60);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test_setup_teardown(test_drop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_synced_survives_every_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tear_mixes_sectors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_psow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncate_undone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ioerr_countdown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_points, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sqlite_wal_survives_cuts, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
