/* kioskfw.h — the firmware tool: one table of subcommands (kioskfw.c), each a
 * row with its handler, usage and help, RAUC rcommands[] style. Bundle
 * commands in kfw_bundle.c, slot commands in kfw_slots.c, provisioning in
 * kfw_provision.c. */
#ifndef KIOSKFW_H
#define KIOSKFW_H

#include <stdbool.h>
#include <stddef.h>

#include "bundle.h"
#include "kp_env.h"
#include "kp_error.h"

/* Exit codes, the same for every command. */
enum {
	KFW_EXIT_OK = 0,          /* done */
	KFW_EXIT_FAILED = 1,      /* refused (verify/install), or the operation failed */
	KFW_EXIT_USAGE = 2,       /* bad command line */
	KFW_EXIT_CANNOT_OPEN = 3, /* an input file, key or slot state cannot be read, or is locked */
};

typedef struct kfw_ctx {
	const char *prog; /* "kioskfw" */
	bool json;        /* --json: machine-readable output on stdout */
	kp_env env;       /* the real world */
} kfw_ctx;

/* argv[0] is the command's own name; returns an exit code. */
typedef int (*kfw_handler)(kfw_ctx *ctx, int argc, char **argv);

typedef struct kfw_cmd {
	const char *group;   /* "provision"; NULL for a top-level command */
	const char *name;
	kfw_handler run;
	const char *usage;
	const char *summary;
	const char *help;    /* what it does, output, exit codes beyond the common ones */
} kfw_cmd;

/* One option of a command: "--name VALUE" (or "--name=VALUE") when value is
 * set, a flag "--name" when flag is set. */
typedef struct kfw_opt {
	const char *name;
	const char **value;
	bool *flag;
} kfw_opt;

/* Parse argv[1..] into opts and up to max_pos positional words. Prints a
 * usage error and returns KFW_EXIT_USAGE on an unknown option, a missing
 * value or too many words; KFW_EXIT_OK otherwise. */
int kfw_parse(const kfw_ctx *ctx, kfw_handler self, int argc, char **argv, const kfw_opt *opts, size_t nopts,
	      const char **pos, size_t max_pos, size_t *npos);

/* "kioskfw CMD: msg (usage: ...)" on stderr; returns KFW_EXIT_USAGE. */
int kfw_usage_error(const kfw_ctx *ctx, kfw_handler self, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* "kioskfw CMD: msg" on stderr, one line; returns code. */
int kfw_fail(const kfw_ctx *ctx, kfw_handler self, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Exit code for a kp_err from opening inputs: KFW_EXIT_CANNOT_OPEN for
 * not-found, I/O, busy and corrupt state; KFW_EXIT_FAILED for the rest. */
int kfw_exit_for(kp_err err);

/* Parse a decimal number in 0..max from an option; prints the usage error. */
bool kfw_number(const kfw_ctx *ctx, kfw_handler self, const char *opt, const char *text, uint64_t max,
		uint64_t *out);

/* ---- kfw_bundle.c ---- */
int kfw_keygen(kfw_ctx *ctx, int argc, char **argv);
int kfw_pack(kfw_ctx *ctx, int argc, char **argv);
int kfw_verify(kfw_ctx *ctx, int argc, char **argv);
/* Load --pubkey / --keys-dir into ring; prints the error and returns an exit
 * code (KFW_EXIT_OK when loaded). */
int kfw_load_keys(const kfw_ctx *ctx, kfw_handler self, const char *pubkey, const char *keys_dir,
		  kp_fw_keyring *ring);
/* Print a refusal line ("kioskfw CMD: refused: ... [reason]") and return its exit code. */
int kfw_refused(const kfw_ctx *ctx, kfw_handler self, kp_err err, const kp_fw_check *chk);

/* ---- kfw_slots.c ---- */
int kfw_install(kfw_ctx *ctx, int argc, char **argv);
int kfw_status(kfw_ctx *ctx, int argc, char **argv);
int kfw_commit(kfw_ctx *ctx, int argc, char **argv);
int kfw_rollback(kfw_ctx *ctx, int argc, char **argv);
int kfw_boot(kfw_ctx *ctx, int argc, char **argv);

/* ---- kfw_provision.c ---- */
int kfw_prov_keygen(kfw_ctx *ctx, int argc, char **argv);
int kfw_prov_install(kfw_ctx *ctx, int argc, char **argv);
int kfw_prov_show(kfw_ctx *ctx, int argc, char **argv);
int kfw_prov_sign_dev(kfw_ctx *ctx, int argc, char **argv);

#endif
