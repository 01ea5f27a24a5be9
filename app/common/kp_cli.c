/* kp_cli.c — see kp_cli.h. */
#include "kp_cli.h"

#include <string.h>

static const char *field(const kp_cli_table *t, size_t k, size_t off)
{
	const char *entry = (const char *)t->entries + k * t->stride;
	const char *v;
	memcpy(&v, entry + off, sizeof(v));
	return v;
}

long kp_cli_find(const kp_cli_table *t, int argc, char **argv, int i, int *at, bool *group_known)
{
	*group_known = false;
	if (i >= argc)
		return -1;
	const char *word = argv[i];
	const char *sub = i + 1 < argc ? argv[i + 1] : NULL;
	for (size_t k = 0; k < t->n; k++) {
		const char *group = field(t, k, t->group_off), *name = field(t, k, t->name_off);
		if (!group && strcmp(name, word) == 0) {
			*at = i;
			return (long)k;
		}
		if (group && strcmp(group, word) == 0) {
			*group_known = true;
			if (sub && strcmp(name, sub) == 0) {
				*at = i + 1;
				return (long)k;
			}
		}
	}
	return -1;
}

bool kp_cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return false;
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return true;
	}
	return false;
}
