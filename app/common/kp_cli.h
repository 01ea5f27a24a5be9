/* kp_cli.h — the subcommand table walk shared by the command-line tools
 * (kioskctl, kioskfw): `tool [options] [GROUP] NAME [args...]`. Each tool
 * keeps its own command struct; it tells where the group and name fields are. */
#ifndef KP_CLI_H
#define KP_CLI_H

#include <stdbool.h>
#include <stddef.h>

/* A table of n command structs, stride bytes apart, whose `const char *`
 * group (NULL for a top-level command) and name fields sit at these offsets. */
typedef struct kp_cli_table {
	const void *entries;
	size_t n, stride, group_off, name_off;
} kp_cli_table;

/* The entry that argv[i] (and, for a group, argv[i + 1]) names: its index,
 * or -1 if none. *at is set to the argv index of the command's own name;
 * *group_known tells whether argv[i] is a group of the table. */
long kp_cli_find(const kp_cli_table *t, int argc, char **argv, int i, int *at, bool *group_known);

/* True if "--help" or "-h" comes in argv[1..argc-1] before any "--". */
bool kp_cli_wants_help(int argc, char **argv);

#endif
