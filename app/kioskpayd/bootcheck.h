/* bootcheck.h — the journal's quick_check at start, in a thread of its own.
 * It reads the whole file (about 13 ms per MiB on a desktop core, far more on
 * a kiosk's SD card), so run before the service, it alone would break the
 * ready-to-sell target on a journal with history. The daemon starts selling
 * at once and polls kp_bootcheck_fd(); a failed check stops the service. */
#ifndef KP_BOOTCHECK_H
#define KP_BOOTCHECK_H

#include <stddef.h>

#include "kp_error.h"

typedef struct kp_bootcheck kp_bootcheck;

/* Start checking the journal file at path (copied). *out owns the thread. */
kp_err kp_bootcheck_start(kp_bootcheck **out, const char *path) KP_MUST_USE;
/* Readable once the verdict is in; -1 once it was collected. */
int kp_bootcheck_fd(const kp_bootcheck *b);
/* Collect the verdict after kp_bootcheck_fd() became readable (waits for it
 * otherwise): KP_OK, or why the file failed (why filled). Once only. */
kp_err kp_bootcheck_collect(kp_bootcheck *b, char *why, size_t why_size) KP_MUST_USE;
/* Waits for the thread if it still runs. Safe on NULL. */
void kp_bootcheck_free(kp_bootcheck *b);

#endif
