/* slot_dir.c — the directory backend of the A/B slots: DIR/a and DIR/b hold the
 * payload files, DIR/state.json the state, DIR/.staging the slot being written.
 * A slot is replaced by renames (old to DIR/.trash, staging to the slot), each
 * followed by an fsync of DIR; a lock on DIR keeps two writers apart. */
#include "slot_ops.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/md.h>

#include "bundle.h"
#include "kp_failpoint.h"

#define STATE_NAME "state.json"
#define STAGING_NAME ".staging"
#define TRASH_NAME ".trash"
#define CHUNK (64 * 1024)

typedef struct slot_dir {
	char dir[KP_FW_PATH_MAX];
	int lock_fd;           /* DIR opened and flock'ed; -1 without KP_SLOT_DIR_LOCK */
	int file_fd;           /* the staged file being written, or -1 */
	char file_path[KP_FW_PATH_MAX];
	uint64_t file_size;    /* announced by stage_open */
	uint64_t file_written;
} slot_dir;

static const char *slot_subdir(kp_slot_id slot)
{
	return slot == KP_SLOT_A ? "a" : "b";
}

static kp_err sub_path(const slot_dir *d, const char *name, char *out, size_t cap, kp_fw_why *why)
{
	if (kp_fw_path_join(out, cap, d->dir, name) != KP_OK)
		return kp_fw_fail(why, KP_ERR_TOO_BIG, "path too long under %s", d->dir);
	return KP_OK;
}

static kp_err dir_state_load(void *be, char *buf, size_t cap, size_t *len, kp_fw_why *why)
{
	slot_dir *d = be;
	char path[KP_FW_PATH_MAX];
	unsigned char *data = NULL;
	size_t n = 0;
	kp_err err = sub_path(d, STATE_NAME, path, sizeof(path), why);
	if (err != KP_OK)
		return err;
	if ((err = kp_fw_file_read(path, cap - 1, &data, &n, why)) != KP_OK)
		return err;
	memcpy(buf, data, n);
	buf[n] = 0;
	*len = n;
	free(data);
	return KP_OK;
}

static kp_err dir_state_store(void *be, const char *buf, size_t len, kp_fw_why *why)
{
	slot_dir *d = be;
	return kp_fw_file_replace(d->dir, STATE_NAME, buf, len, 0644, why);
}

static void close_file(slot_dir *d)
{
	if (d->file_fd >= 0)
		close(d->file_fd);
	d->file_fd = -1;
}

static kp_err dir_stage_begin(void *be, kp_slot_id slot, kp_fw_why *why)
{
	slot_dir *d = be;
	char staging[KP_FW_PATH_MAX], trash[KP_FW_PATH_MAX];
	kp_err err;
	(void)slot;
	close_file(d);
	if ((err = sub_path(d, STAGING_NAME, staging, sizeof(staging), why)) != KP_OK ||
	    (err = sub_path(d, TRASH_NAME, trash, sizeof(trash), why)) != KP_OK)
		return err;
	/* Leftovers of an install that was killed: neither is named by the state. */
	if ((err = kp_fw_dir_remove(staging, why)) != KP_OK || (err = kp_fw_dir_remove(trash, why)) != KP_OK)
		return err;
	if (mkdir(staging, 0755) != 0)
		return kp_fw_fail(why, KP_ERR_IO, "cannot create %s: %s", staging, strerror(errno));
	if (KP_FAILPOINT(80))
		return kp_fw_fail(why, KP_ERR_FAILPOINT, "failpoint 80 after creating %s", staging);
	return KP_OK;
}

static kp_err dir_stage_open(void *be, const char *name, uint64_t size, kp_fw_why *why)
{
	slot_dir *d = be;
	char staging[KP_FW_PATH_MAX];
	kp_err err;
	if (!kp_fw_name_valid(name) && strcmp(name, KP_SLOT_MANIFEST_NAME) != 0)
		return kp_fw_fail(why, KP_ERR_INVALID, "refusing to stage a file named \"%s\"", name);
	close_file(d);
	if ((err = sub_path(d, STAGING_NAME, staging, sizeof(staging), why)) != KP_OK)
		return err;
	if (kp_fw_path_join(d->file_path, sizeof(d->file_path), staging, name) != KP_OK)
		return kp_fw_fail(why, KP_ERR_TOO_BIG, "path too long under %s", staging);
	d->file_fd = open(d->file_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (d->file_fd < 0)
		return kp_fw_fail(why, KP_ERR_IO, "cannot create %s: %s", d->file_path, strerror(errno));
	d->file_size = size;
	d->file_written = 0;
	/* Reserve the space now: a full disk shows up before any byte is copied. */
	if (size > 0) {
		int e = posix_fallocate(d->file_fd, 0, (off_t)size);
		if (e != 0 && e != EOPNOTSUPP && e != EINVAL) {
			close_file(d);
			return kp_fw_fail(why, KP_ERR_IO, "cannot reserve %llu bytes for %s: %s",
					  (unsigned long long)size, d->file_path, strerror(e));
		}
	}
	return KP_OK;
}

static kp_err dir_stage_write(void *be, const void *buf, size_t len, kp_fw_why *why)
{
	slot_dir *d = be;
	if (d->file_fd < 0 || len > d->file_size - d->file_written)
		return kp_fw_fail(why, KP_ERR_INTERNAL, "stage_write past the announced size of %s", d->file_path);
	if (kp_fw_fd_write_all(d->file_fd, buf, len) != KP_OK)
		return kp_fw_fail(why, KP_ERR_IO, "cannot write %s: %s", d->file_path, strerror(errno));
	d->file_written += len;
	if (KP_FAILPOINT(81))
		return kp_fw_fail(why, KP_ERR_FAILPOINT, "failpoint 81 while writing %s", d->file_path);
	return KP_OK;
}

static kp_err dir_stage_close(void *be, kp_fw_why *why)
{
	slot_dir *d = be;
	char staging[KP_FW_PATH_MAX];
	kp_err err;
	if (d->file_fd < 0)
		return kp_fw_fail(why, KP_ERR_INTERNAL, "stage_close without an open file");
	if (d->file_written != d->file_size) {
		close_file(d);
		return kp_fw_fail(why, KP_ERR_INTERNAL, "%s: %llu bytes written, %llu announced", d->file_path,
				  (unsigned long long)d->file_written, (unsigned long long)d->file_size);
	}
	if (fsync(d->file_fd) != 0) {
		close_file(d);
		return kp_fw_fail(why, KP_ERR_IO, "cannot fsync %s: %s", d->file_path, strerror(errno));
	}
	int rc = close(d->file_fd);
	d->file_fd = -1;
	if (rc != 0)
		return kp_fw_fail(why, KP_ERR_IO, "cannot close %s: %s", d->file_path, strerror(errno));
	if ((err = sub_path(d, STAGING_NAME, staging, sizeof(staging), why)) != KP_OK ||
	    (err = kp_fw_dir_sync(staging, why)) != KP_OK)
		return err;
	if (KP_FAILPOINT(82))
		return kp_fw_fail(why, KP_ERR_FAILPOINT, "failpoint 82 after syncing %s", d->file_path);
	return KP_OK;
}

static kp_err dir_stage_commit(void *be, kp_slot_id slot, kp_fw_why *why)
{
	slot_dir *d = be;
	char staging[KP_FW_PATH_MAX], trash[KP_FW_PATH_MAX], target[KP_FW_PATH_MAX];
	kp_err err;
	if ((err = sub_path(d, STAGING_NAME, staging, sizeof(staging), why)) != KP_OK ||
	    (err = sub_path(d, TRASH_NAME, trash, sizeof(trash), why)) != KP_OK ||
	    (err = sub_path(d, slot_subdir(slot), target, sizeof(target), why)) != KP_OK)
		return err;
	if ((err = kp_fw_dir_remove(trash, why)) != KP_OK)
		return err;
	if (rename(target, trash) != 0 && errno != ENOENT)
		return kp_fw_fail(why, KP_ERR_IO, "cannot move %s aside: %s", target, strerror(errno));
	if (KP_FAILPOINT(85))
		return kp_fw_fail(why, KP_ERR_FAILPOINT, "failpoint 85 after moving %s aside", target);
	if (rename(staging, target) != 0)
		return kp_fw_fail(why, KP_ERR_IO, "cannot rename %s to %s: %s", staging, target, strerror(errno));
	if (KP_FAILPOINT(86))
		return kp_fw_fail(why, KP_ERR_FAILPOINT, "failpoint 86 before syncing %s", d->dir);
	if ((err = kp_fw_dir_sync(d->dir, why)) != KP_OK)
		return err;
	if (KP_FAILPOINT(87))
		return kp_fw_fail(why, KP_ERR_FAILPOINT, "failpoint 87 before removing %s", trash);
	if ((err = kp_fw_dir_remove(trash, why)) != KP_OK)
		return err;
	return kp_fw_dir_sync(d->dir, why);
}

static void dir_stage_abort(void *be, kp_slot_id slot)
{
	slot_dir *d = be;
	char staging[KP_FW_PATH_MAX];
	(void)slot;
	close_file(d);
	/* Best effort: the next stage_begin removes whatever is left. */
	if (sub_path(d, STAGING_NAME, staging, sizeof(staging), NULL) == KP_OK && kp_fw_dir_remove(staging, NULL) != KP_OK)
		return;
}

/* SHA-256 of a file. */
static kp_err hash_file(const char *path, unsigned char out[KP_FW_SHA256_LEN])
{
	unsigned char *buf = malloc(CHUNK);
	mbedtls_md_context_t md;
	kp_err err = KP_ERR_IO;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	mbedtls_md_init(&md);
	if (!buf || fd < 0 || mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 0) != 0)
		goto out;
	mbedtls_md_starts(&md);
	for (;;) {
		ssize_t n = read(fd, buf, CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto out;
		if (n == 0)
			break;
		mbedtls_md_update(&md, buf, (size_t)n);
	}
	mbedtls_md_finish(&md, out);
	err = KP_OK;
out:
	mbedtls_md_free(&md);
	if (fd >= 0)
		close(fd);
	free(buf);
	return err;
}

static kp_err dir_slot_check(void *be, kp_slot_id slot, bool hashes, kp_fw_why *why)
{
	slot_dir *d = be;
	char sdir[KP_FW_PATH_MAX], path[KP_FW_PATH_MAX];
	unsigned char *text = NULL;
	unsigned char digest[KP_FW_SHA256_LEN];
	size_t len = 0;
	kp_fw_manifest *m = malloc(sizeof(*m));
	kp_fw_check chk;
	struct stat st;
	kp_err err;

	if (!m)
		return kp_fw_fail(why, KP_ERR_NOMEM, "out of memory");
	if ((err = sub_path(d, slot_subdir(slot), sdir, sizeof(sdir), why)) != KP_OK)
		goto out;
	if (kp_fw_path_join(path, sizeof(path), sdir, KP_SLOT_MANIFEST_NAME) != KP_OK) {
		err = kp_fw_fail(why, KP_ERR_TOO_BIG, "path too long under %s", sdir);
		goto out;
	}
	if ((err = kp_fw_file_read(path, KP_FW_MANIFEST_MAX, &text, &len, why)) != KP_OK) {
		if (err == KP_ERR_NOT_FOUND)
			kp_fw_fail(why, err, "slot %s holds no firmware (%s missing)", slot_subdir(slot), path);
		goto out;
	}
	if (kp_fw_manifest_parse((const char *)text, len, m, &chk) != KP_OK) {
		err = kp_fw_fail(why, KP_ERR_CORRUPT, "slot %s: %s: %s", slot_subdir(slot), path, chk.why.text);
		goto out;
	}
	for (size_t i = 0; i < m->npayloads; i++) {
		const kp_fw_payload *p = &m->payloads[i];
		if (kp_fw_path_join(path, sizeof(path), sdir, p->name) != KP_OK) {
			err = kp_fw_fail(why, KP_ERR_TOO_BIG, "path too long under %s", sdir);
			goto out;
		}
		if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != p->size) {
			err = kp_fw_fail(why, KP_ERR_CORRUPT, "slot %s: %s is missing or not %llu bytes", slot_subdir(slot),
					 path, (unsigned long long)p->size);
			goto out;
		}
		if (hashes && (hash_file(path, digest) != KP_OK || memcmp(digest, p->sha256, sizeof(digest)) != 0)) {
			err = kp_fw_fail(why, KP_ERR_CORRUPT, "slot %s: SHA-256 of %s differs from its manifest",
					 slot_subdir(slot), path);
			goto out;
		}
	}
	err = KP_OK;
out:
	free(text);
	free(m);
	return err;
}

static kp_err dir_slot_location(void *be, kp_slot_id slot, char *buf, size_t cap)
{
	slot_dir *d = be;
	return kp_fw_path_join(buf, cap, d->dir, slot_subdir(slot));
}

static void dir_close(void *be)
{
	slot_dir *d = be;
	if (!d)
		return;
	close_file(d);
	if (d->lock_fd >= 0)
		close(d->lock_fd); /* releases the flock */
	free(d);
}

static const kp_slot_ops dir_ops = {
	.name = "dir",
	.state_load = dir_state_load,
	.state_store = dir_state_store,
	.stage_begin = dir_stage_begin,
	.stage_open = dir_stage_open,
	.stage_write = dir_stage_write,
	.stage_close = dir_stage_close,
	.stage_commit = dir_stage_commit,
	.stage_abort = dir_stage_abort,
	.slot_check = dir_slot_check,
	.slot_location = dir_slot_location,
	.close = dir_close,
};

kp_err kp_slot_dir_open(const char *dir, unsigned flags, const kp_slot_ops **ops, void **be, kp_fw_why *why)
{
	struct stat st;
	kp_err err;
	slot_dir *d = calloc(1, sizeof(*d));
	*ops = NULL;
	*be = NULL;
	if (!d)
		return kp_fw_fail(why, KP_ERR_NOMEM, "out of memory");
	d->lock_fd = -1;
	d->file_fd = -1;
	if (snprintf(d->dir, sizeof(d->dir), "%s", dir) >= (int)sizeof(d->dir) - 16) {
		err = kp_fw_fail(why, KP_ERR_TOO_BIG, "slots directory path too long: %s", dir);
		goto out;
	}
	errno = 0;
	if (flags & KP_SLOT_DIR_CREATE) {
		if ((err = kp_fw_dir_ensure(dir, 0755, NULL, why)) != KP_OK)
			goto out;
	} else if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		err = kp_fw_fail(why, KP_ERR_NOT_FOUND, "slots directory %s: %s", dir,
				 errno ? strerror(errno) : "not a directory");
		goto out;
	}
	if (flags & KP_SLOT_DIR_LOCK) {
		d->lock_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (d->lock_fd < 0) {
			err = kp_fw_fail(why, KP_ERR_IO, "cannot open %s: %s", dir, strerror(errno));
			goto out;
		}
		if (flock(d->lock_fd, LOCK_EX | LOCK_NB) != 0) {
			err = kp_fw_fail(why, errno == EWOULDBLOCK ? KP_ERR_BUSY : KP_ERR_IO,
					 "slots directory %s is locked by another kioskfw", dir);
			goto out;
		}
	}
	*ops = &dir_ops;
	*be = d;
	d = NULL;
	err = KP_OK;
out:
	dir_close(d);
	return err;
}
