/* crashvfs_boot.c — linked only into kioskpayd-crash (tests/crash): before
 * main() runs, a set KP_CRASHVFS registers the crash VFS as SQLite's default,
 * so the daemon's unchanged main.c opens its journal through it. A bad spec
 * stops the process at once (exit 2) rather than run without the crash. */
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include "crashvfs.h"

__attribute__((constructor)) static void crashvfs_boot(void)
{
	bool active = false;
	if (kp_crashvfs_init_from_env(&active) != KP_OK) {
		fprintf(stderr, "kioskpayd-crash: KP_CRASHVFS: bad spec or cannot register the VFS\n");
		_exit(2);
	}
	if (active)
		fprintf(stderr, "kioskpayd-crash: journal through the crash VFS (%s)\n", KP_CRASHVFS_NAME);
}
