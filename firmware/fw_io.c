/* fw_io.c — bounded file reads and durable file replacement for the firmware
 * tools. Every write that must survive a power cut goes through here. */
#include "fw_io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kp_failpoint.h"

kp_err kp_fw_fail(kp_fw_why *why, kp_err err, const char *fmt, ...)
{
	if (why) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why->text, sizeof(why->text), fmt, ap);
		va_end(ap);
		for (char *c = why->text; *c; c++)
			if (*c == '\n' || *c == '\r')
				*c = ' ';
	}
	return err;
}

kp_err kp_fw_path_join(char *out, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(out, cap, "%s/%s", dir, name);
	return (n < 0 || (size_t)n >= cap) ? KP_ERR_TOO_BIG : KP_OK;
}

kp_err kp_fw_fd_write_all(int fd, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return KP_ERR_IO;
		p += n;
		len -= (size_t)n;
	}
	return KP_OK;
}

kp_err kp_fw_fd_read_all(int fd, void *buf, size_t len)
{
	unsigned char *p = buf;
	while (len > 0) {
		ssize_t n = read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return KP_ERR_IO;
		if (n == 0)
			return KP_ERR_CORRUPT;
		p += n;
		len -= (size_t)n;
	}
	return KP_OK;
}

kp_err kp_fw_file_read(const char *path, size_t max, unsigned char **data, size_t *len, kp_fw_why *why)
{
	kp_err err = KP_ERR_IO;
	unsigned char *buf = NULL;
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	*data = NULL;
	*len = 0;
	if (fd < 0) {
		if (errno == ENOENT)
			return kp_fw_fail(why, KP_ERR_NOT_FOUND, "%s: no such file", path);
		return kp_fw_fail(why, KP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		err = kp_fw_fail(why, KP_ERR_IO, "%s: not a regular file", path);
		goto out;
	}
	if ((uint64_t)st.st_size > max) {
		err = kp_fw_fail(why, KP_ERR_TOO_BIG, "%s: %lld bytes, more than the %zu allowed", path,
				 (long long)st.st_size, max);
		goto out;
	}
	size_t n = (size_t)st.st_size;
	buf = malloc(n + 1);
	if (!buf) {
		err = kp_fw_fail(why, KP_ERR_NOMEM, "out of memory reading %s", path);
		goto out;
	}
	if (kp_fw_fd_read_all(fd, buf, n) != KP_OK) {
		err = kp_fw_fail(why, KP_ERR_IO, "cannot read %s: %s", path, errno ? strerror(errno) : "short read");
		goto out;
	}
	buf[n] = 0;
	*data = buf;
	*len = n;
	buf = NULL;
	err = KP_OK;
out:
	free(buf);
	close(fd);
	return err;
}

kp_err kp_fw_dir_sync(const char *dir, kp_fw_why *why)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kp_fw_fail(why, KP_ERR_IO, "cannot open directory %s: %s", dir, strerror(errno));
	kp_err err = KP_OK;
	if (fsync(fd) != 0)
		err = kp_fw_fail(why, KP_ERR_IO, "cannot fsync directory %s: %s", dir, strerror(errno));
	close(fd);
	return err;
}

/* Write data to the new file tmp (created exclusively with mode) and fsync it. */
static kp_err write_new(const char *tmp, const void *data, size_t len, mode_t mode, kp_fw_why *why)
{
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return kp_fw_fail(why, KP_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
	kp_err err = KP_OK;
	if (fchmod(fd, mode) != 0 || kp_fw_fd_write_all(fd, data, len) != KP_OK || fsync(fd) != 0)
		err = kp_fw_fail(why, KP_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
	if (close(fd) != 0 && err == KP_OK)
		err = kp_fw_fail(why, KP_ERR_IO, "cannot close %s: %s", tmp, strerror(errno));
	if (err != KP_OK)
		(void)unlink(tmp);
	return err;
}

kp_err kp_fw_file_replace(const char *dir, const char *name, const void *data, size_t len, mode_t mode,
			  kp_fw_why *why)
{
	char path[KP_FW_PATH_MAX], tmp[KP_FW_PATH_MAX], tname[256];
	kp_err err;

	if (snprintf(tname, sizeof(tname), ".%s.tmp", name) >= (int)sizeof(tname) ||
	    kp_fw_path_join(path, sizeof(path), dir, name) != KP_OK ||
	    kp_fw_path_join(tmp, sizeof(tmp), dir, tname) != KP_OK)
		return kp_fw_fail(why, KP_ERR_TOO_BIG, "path too long: %s/%s", dir, name);
	if (unlink(tmp) != 0 && errno != ENOENT)
		return kp_fw_fail(why, KP_ERR_IO, "cannot remove stale %s: %s", tmp, strerror(errno));
	if ((err = write_new(tmp, data, len, mode, why)) != KP_OK)
		return err;
	if (KP_FAILPOINT(90)) {
		(void)unlink(tmp);
		return kp_fw_fail(why, KP_ERR_FAILPOINT, "failpoint 90 before renaming %s", tmp);
	}
	if (rename(tmp, path) != 0) {
		err = kp_fw_fail(why, KP_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
		(void)unlink(tmp);
		return err;
	}
	if (KP_FAILPOINT(91))
		return kp_fw_fail(why, KP_ERR_FAILPOINT, "failpoint 91 before syncing %s", dir);
	return kp_fw_dir_sync(dir, why);
}

kp_err kp_fw_file_create(const char *dir, const char *name, const void *data, size_t len, mode_t mode,
			 kp_fw_why *why)
{
	char path[KP_FW_PATH_MAX], tmp[KP_FW_PATH_MAX], tname[256];
	kp_err err;

	if (snprintf(tname, sizeof(tname), ".%s.tmp", name) >= (int)sizeof(tname) ||
	    kp_fw_path_join(path, sizeof(path), dir, name) != KP_OK ||
	    kp_fw_path_join(tmp, sizeof(tmp), dir, tname) != KP_OK)
		return kp_fw_fail(why, KP_ERR_TOO_BIG, "path too long: %s/%s", dir, name);
	if (unlink(tmp) != 0 && errno != ENOENT)
		return kp_fw_fail(why, KP_ERR_IO, "cannot remove stale %s: %s", tmp, strerror(errno));
	if ((err = write_new(tmp, data, len, mode, why)) != KP_OK)
		return err;
	/* link() fails with EEXIST instead of replacing: no window where an
	 * existing file is overwritten. */
	if (link(tmp, path) != 0) {
		int e = errno;
		(void)unlink(tmp);
		if (e == EEXIST)
			return kp_fw_fail(why, KP_ERR_CONFLICT, "%s exists; not overwriting it", path);
		return kp_fw_fail(why, KP_ERR_IO, "cannot create %s: %s", path, strerror(e));
	}
	if (unlink(tmp) != 0)
		return kp_fw_fail(why, KP_ERR_IO, "cannot remove %s: %s", tmp, strerror(errno));
	return kp_fw_dir_sync(dir, why);
}

kp_err kp_fw_dir_ensure(const char *dir, mode_t mode, bool *created, kp_fw_why *why)
{
	struct stat st;
	if (created)
		*created = false;
	if (mkdir(dir, mode) == 0) {
		if (created)
			*created = true;
		if (chmod(dir, mode) != 0)
			return kp_fw_fail(why, KP_ERR_IO, "cannot chmod %s: %s", dir, strerror(errno));
		return KP_OK;
	}
	if (errno != EEXIST)
		return kp_fw_fail(why, KP_ERR_IO, "cannot create directory %s: %s", dir, strerror(errno));
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return kp_fw_fail(why, KP_ERR_IO, "%s exists and is not a directory", dir);
	return KP_OK;
}

kp_err kp_fw_dir_remove(const char *dir, kp_fw_why *why)
{
	char path[KP_FW_PATH_MAX];
	kp_err err = KP_OK;
	DIR *d = opendir(dir);
	if (!d) {
		if (errno == ENOENT)
			return KP_OK;
		return kp_fw_fail(why, KP_ERR_IO, "cannot open directory %s: %s", dir, strerror(errno));
	}
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (kp_fw_path_join(path, sizeof(path), dir, e->d_name) != KP_OK) {
			err = kp_fw_fail(why, KP_ERR_TOO_BIG, "path too long under %s", dir);
			goto out;
		}
		if (unlink(path) != 0) {
			err = kp_fw_fail(why, KP_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
			goto out;
		}
	}
	if (rmdir(dir) != 0)
		err = kp_fw_fail(why, KP_ERR_IO, "cannot remove directory %s: %s", dir, strerror(errno));
out:
	closedir(d);
	return err;
}

void kp_fw_hex(const unsigned char *bytes, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 15];
	}
	out[2 * n] = 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool kp_fw_unhex(const char *hex, unsigned char *out, size_t n)
{
	if (strlen(hex) != 2 * n)
		return false;
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return true;
}

bool kp_fw_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	if (!s || !*s || strlen(s) > 20)
		return false;
	uint64_t v = 0;
	for (const char *c = s; *c; c++) {
		if (*c < '0' || *c > '9')
			return false;
		unsigned d = (unsigned)(*c - '0');
		if (d > max || v > (max - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}
