/* test_wal_batch.c — the journal's WAL write batching (storage/wal_batch.c),
 * seen from below (the counting VFS under it) and from beside (a second
 * connection on SQLite's own VFS): a commit reaches the disk as one write
 * and one sync, what it wrote is there for another reader as soon as it
 * returns, and a transaction larger than the batch loses nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "count_vfs.h"
#include "journal.h"
#include "wal_batch.h"
#include "kp_rmtree.h"

#define T0 1800000000000LL
#define FRAME (KP_JOURNAL_PAGE_SIZE + 24) /* WAL frame: header + page */

struct fixture {
	char dir[64];
	char path[128];
	kp_env env;
	kp_fake_world world;
	kp_journal *j;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/kp-walbatch-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/journal.db", f->dir);
	kp_env_init_fake(&f->env, &f->world, 5, T0);
	f->world.quiet = true;
	assert_int_equal(kp_count_vfs_register(), KP_OK);
	kp_journal_opts o = {.vfs_name = KP_COUNT_VFS_NAME};
	assert_int_equal(kp_journal_open_ex(&f->j, f->path, 0, &f->env, &o), KP_OK);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	kp_journal_close(f->j);
	kp_rmtree(f->dir);
	free(f);
	return 0;
}

/* One value from a connection of its own on SQLite's default VFS. */
static int64_t peer_int(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int64_t v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static void make_order(struct fixture *f, int i)
{
	kp_uuid id;
	char key[32];
	assert_int_equal(kp_uuid_new(&f->env, &id), KP_OK);
	snprintf(key, sizeof(key), "key-%06d", i);
	kp_order_new on = {.order_id = id.s, .dedup_key = key, .amount = 250, .currency = "EUR",
			   .items = "[{\"sku\":\"cola-33cl\",\"qty\":1}]", .now = T0 + i,
			   .expires_at = T0 + i + 300000};
	kp_order o;
	bool dup = true;
	assert_int_equal(kp_journal_order_create(f->j, &on, &o, &dup), KP_OK);
	assert_false(dup);
	kp_fake_advance(&f->world, 1);
}

static void test_one_write_per_commit(void **state)
{
	struct fixture *f = *state;
	make_order(f, 0); /* the WAL's header is written with the first commit */
	kp_count_stats a, b;
	kp_count_vfs_get(&a);
	make_order(f, 1);
	kp_count_vfs_get(&b);
	int64_t writes = b.writes[KP_COUNT_WAL] - a.writes[KP_COUNT_WAL];
	int64_t bytes = b.bytes[KP_COUNT_WAL] - a.bytes[KP_COUNT_WAL];
	assert_int_equal(writes, 1);
	assert_int_equal(b.syncs[KP_COUNT_WAL] - a.syncs[KP_COUNT_WAL], 1);
	/* the order row, its indexes and the event: whole frames, several */
	assert_int_equal(bytes % FRAME, 0);
	assert_true(bytes >= 3 * FRAME);
	assert_int_equal(b.writes[KP_COUNT_MAIN], a.writes[KP_COUNT_MAIN]); /* no checkpoint yet */
	/* Visible to another connection the moment the commit returned. */
	assert_int_equal(peer_int(f->path, "SELECT count(*) FROM orders"), 2);
	assert_int_equal(peer_int(f->path, "SELECT count(*) FROM events"), 2);
}

/* 600 orders in one transaction: far more frames than one batch holds, so
 * the batch is written out whenever it fills; every order is there. */
static void test_group_larger_than_a_batch(void **state)
{
	struct fixture *f = *state;
	enum { N = 600 };
	kp_count_stats a, b;
	kp_count_vfs_get(&a);
	assert_int_equal(kp_journal_begin(f->j), KP_OK);
	for (int i = 0; i < N; i++)
		make_order(f, i);
	assert_int_equal(kp_journal_commit(f->j), KP_OK);
	kp_count_vfs_get(&b);
	int64_t writes = b.writes[KP_COUNT_WAL] - a.writes[KP_COUNT_WAL];
	int64_t bytes = b.bytes[KP_COUNT_WAL] - a.bytes[KP_COUNT_WAL];
	assert_true(bytes > 2 * KP_WAL_BATCH_BYTES);
	assert_true(writes >= bytes / KP_WAL_BATCH_BYTES);
	assert_true(writes <= bytes / KP_WAL_BATCH_BYTES + 3); /* + the WAL header, a last part */
	assert_int_equal(peer_int(f->path, "SELECT count(*) FROM orders"), N);
	assert_int_equal(peer_int(f->path, "SELECT count(*) FROM events"), N);
	assert_int_equal(kp_journal_check(f->j, NULL, NULL), KP_OK);
	/* Closed (checkpointed into the file) and opened again: all still there. */
	kp_journal_close(f->j);
	f->j = NULL;
	assert_int_equal(kp_journal_open(&f->j, f->path, 0, &f->env), KP_OK);
	assert_int_equal(peer_int(f->path, "SELECT count(*) FROM orders"), N);
	assert_int_equal(kp_journal_check(f->j, NULL, NULL), KP_OK);
}

/* A group rolled back writes nothing a reader could see, and the next
 * commit goes on from where the WAL was. */
static void test_rollback_then_commit(void **state)
{
	struct fixture *f = *state;
	make_order(f, 0);
	assert_int_equal(kp_journal_begin(f->j), KP_OK);
	for (int i = 1; i < 200; i++)
		make_order(f, i);
	kp_journal_rollback(f->j);
	assert_int_equal(peer_int(f->path, "SELECT count(*) FROM orders"), 1);
	make_order(f, 500);
	assert_int_equal(peer_int(f->path, "SELECT count(*) FROM orders"), 2);
	assert_int_equal(kp_journal_check(f->j, NULL, NULL), KP_OK);
}

/* One shim per base VFS, found again by a second call. */
static void test_one_shim_per_base(void **state)
{
	(void)state;
	const char *a = NULL, *b = NULL, *c = NULL;
	assert_int_equal(kp_wal_batch_vfs(NULL, &a), KP_OK);
	assert_int_equal(kp_wal_batch_vfs(NULL, &b), KP_OK);
	assert_string_equal(a, b);
	assert_int_equal(kp_wal_batch_vfs(KP_COUNT_VFS_NAME, &c), KP_OK);
	assert_string_not_equal(a, c);
	assert_non_null(sqlite3_vfs_find(c));
	const char *none = "unchanged";
	assert_int_equal(kp_wal_batch_vfs("no-such-vfs", &none), KP_ERR_NOT_FOUND);
	assert_string_equal(none, "unchanged");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_one_write_per_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_larger_than_a_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rollback_then_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_shim_per_base, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
