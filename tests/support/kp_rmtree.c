/* kp_rmtree.c — one tree removal for all the tests and benchmarks. */
#define _XOPEN_SOURCE 700
#include "kp_rmtree.h"

#include <ftw.h>
#include <stdio.h>

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	(void)remove(p);
	return 0; /* go on with the rest */
}

void kp_rmtree(const char *path)
{
	if (path && *path)
		(void)nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
