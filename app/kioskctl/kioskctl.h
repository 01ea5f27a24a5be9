/* kioskctl.h — the technician's CLI: one table of subcommands (kioskctl.c),
 * each a row with its handler, usage and help, RAUC rcommands[] style.
 * Adding a command = writing a handler and adding a row. */
#ifndef KIOSKCTL_H
#define KIOSKCTL_H

#include <stdbool.h>

/* Exit codes, the same for every command. */
enum {
	KCTL_EXIT_OK = 0,          /* done; for checks: nothing found */
	KCTL_EXIT_FAILED = 1,      /* a check found problems, or the operation failed */
	KCTL_EXIT_USAGE = 2,       /* bad command line */
	KCTL_EXIT_CANNOT_OPEN = 3, /* cannot open the journal / reach the service */
};

#define KCTL_DEFAULT_API "127.0.0.1:5683"

/* What the global options said; passed to every handler. */
typedef struct kctl_ctx {
	const char *prog; /* "kioskctl" */
	bool json;        /* --json: machine-readable output on stdout */
	const char *api;  /* --api HOST:PORT of kioskpayd's CoAP API */
} kctl_ctx;

/* A handler gets the words after the command name (argv[0] is the command's
 * own name, like a main()); it returns one of the exit codes above. Errors go
 * to stderr in one line: what failed, on what, why. */
typedef int (*kctl_handler)(const kctl_ctx *ctx, int argc, char **argv);

typedef struct kctl_cmd {
	const char *group;   /* "journal", "order"; NULL for a top-level command */
	const char *name;    /* "check" */
	kctl_handler run;
	const char *usage;   /* the arguments, e.g. "PATH" */
	const char *summary; /* one line for the command list */
	const char *help;    /* the rest of --help: what it does, output, exit codes */
} kctl_cmd;

/* Print "kioskctl GROUP NAME: msg" to stderr and return KCTL_EXIT_USAGE. */
int kctl_usage_error(const kctl_ctx *ctx, const kctl_cmd *cmd, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The row of a handler's command (for its messages); NULL if none. */
const kctl_cmd *kctl_cmd_of(kctl_handler run);

/* ---- journal commands (ctl_journal.c): offline, on the file itself ---- */
int kctl_journal_init(const kctl_ctx *ctx, int argc, char **argv);
int kctl_journal_check(const kctl_ctx *ctx, int argc, char **argv);
int kctl_journal_export(const kctl_ctx *ctx, int argc, char **argv);

/* ---- API commands (ctl_api.c): over kioskpayd's CoAP API (--api) ---- */
#define KCTL_API_HELP_TAIL                                                                \
	"Exit 1: kioskpayd answered an error (code, error and message on stderr);\n"   \
	"exit 3: kioskpayd unreachable or no answer in 20 s.\n"
int kctl_order_create(const kctl_ctx *ctx, int argc, char **argv);
int kctl_order_show(const kctl_ctx *ctx, int argc, char **argv);
int kctl_order_pay(const kctl_ctx *ctx, int argc, char **argv);
int kctl_order_cancel(const kctl_ctx *ctx, int argc, char **argv);
int kctl_order_vend(const kctl_ctx *ctx, int argc, char **argv);
int kctl_events(const kctl_ctx *ctx, int argc, char **argv);
int kctl_health(const kctl_ctx *ctx, int argc, char **argv);
int kctl_metrics(const kctl_ctx *ctx, int argc, char **argv);
int kctl_reconcile(const kctl_ctx *ctx, int argc, char **argv);

#endif
