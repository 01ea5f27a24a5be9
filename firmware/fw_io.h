/* fw_io.h — files and directories for the firmware tools: bounded reads,
 * durable replacement (write temp, fsync, rename, fsync directory, as RAUC does)
 * and the one-line "why" that every firmware function fills when it fails. */
#ifndef KP_FW_IO_H
#define KP_FW_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kp_error.h"

#define KP_FW_PATH_MAX 4096
#define KP_FW_WHY_MAX 320

/* What failed, on what, why: one line, no newline. Filled by the function that
 * fails first; callers print it as is. */
typedef struct kp_fw_why {
	char text[KP_FW_WHY_MAX];
} kp_fw_why;

/* Set why->text (if why is not NULL) and return err, for `return kp_fw_fail(...)`. */
kp_err kp_fw_fail(kp_fw_why *why, kp_err err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Join dir and name into out (cap bytes); KP_ERR_TOO_BIG if it does not fit. */
kp_err kp_fw_path_join(char *out, size_t cap, const char *dir, const char *name) KP_MUST_USE;

/* Read a whole regular file of at most max bytes into a fresh buffer (NUL
 * added after the data; the caller frees it). KP_ERR_NOT_FOUND if it does not
 * exist, KP_ERR_TOO_BIG if it is larger than max, KP_ERR_IO otherwise. */
kp_err kp_fw_file_read(const char *path, size_t max, unsigned char **data, size_t *len, kp_fw_why *why) KP_MUST_USE;

/* Write all of len bytes to fd (retries on EINTR and short writes). */
kp_err kp_fw_fd_write_all(int fd, const void *buf, size_t len) KP_MUST_USE;

/* Read exactly len bytes from fd; KP_ERR_CORRUPT on a short read (end of file). */
kp_err kp_fw_fd_read_all(int fd, void *buf, size_t len) KP_MUST_USE;

/* Replace dir/name with data durably: write dir/.name.tmp with mode, fsync it,
 * rename it over dir/name, fsync dir. Failpoints 90 (before the rename) and 91
 * (after it, before the directory fsync). Either the old or the new content is
 * there after a crash, never a mix. */
kp_err kp_fw_file_replace(const char *dir, const char *name, const void *data, size_t len, mode_t mode,
			  kp_fw_why *why) KP_MUST_USE;

/* Create dir/name with data and mode, durably, refusing to overwrite an
 * existing file (KP_ERR_CONFLICT). For keys: a key is never silently replaced. */
kp_err kp_fw_file_create(const char *dir, const char *name, const void *data, size_t len, mode_t mode,
			 kp_fw_why *why) KP_MUST_USE;

/* fsync a directory (its entries: creations, renames, removals). */
kp_err kp_fw_dir_sync(const char *dir, kp_fw_why *why) KP_MUST_USE;

/* Make sure dir exists as a directory: create it with mode if missing.
 * *created tells which (may be NULL). An existing non-directory is an error. */
kp_err kp_fw_dir_ensure(const char *dir, mode_t mode, bool *created, kp_fw_why *why) KP_MUST_USE;

/* Remove dir and the plain files in it (one level: slots and staging areas
 * hold no subdirectories; a subdirectory is an error). Missing dir is KP_OK. */
kp_err kp_fw_dir_remove(const char *dir, kp_fw_why *why) KP_MUST_USE;

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void kp_fw_hex(const unsigned char *bytes, size_t n, char *out);

/* Parse exactly 2n hex digits into n bytes; false on anything else. */
bool kp_fw_unhex(const char *hex, unsigned char *out, size_t n);

/* Parse a decimal unsigned integer (digits only, no sign, no spaces) <= max. */
bool kp_fw_parse_u64(const char *s, uint64_t max, uint64_t *out);

#endif
