/* kioskctl.c — the command table and the dispatcher of kioskctl: global
 * options first (--json, --api), then "GROUP NAME ARGS" or "NAME ARGS".
 * Every command answers --help; exit codes are the same for all. */
#include "kioskctl.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "kp_cli.h"

#define EXIT_CODES_HELP                                                              \
	"exit codes: 0 ok, 1 check found problems / operation failed, 2 usage error, " \
	"3 cannot open the journal or reach kioskpayd\n"

/* The commands. Add a row (and its handler) to add a command. */
static const kctl_cmd commands[] = {
	{"journal", "init", kctl_journal_init, "PATH", "create a journal, or migrate it to this version",
	 "Creates the file (mode 0600, its directory 0700) with the current schema, or brings\n"
	 "an older journal to it. Refuses a corrupt file or one from a newer kioskpay.\n"
	 "Do not run it on the journal of a running kioskpayd of another version.\n"},
	{"journal", "check", kctl_journal_check, "PATH", "check a journal, read-only",
	 "Opens the journal read-only and runs integrity_check, foreign_key_check and the\n"
	 "invariants that need no host (one kept success per order, ...). Prints one line\n"
	 "per problem on stdout and exits 1 if there is any; otherwise prints\n"
	 "\"ok: N orders, ...\" and exits 0. A file that fails its integrity check at open\n"
	 "is a problem too (exit 1). With --json: one object {\"ok\", \"problems\", counts}.\n"},
	{"journal", "export", kctl_journal_export, "PATH", "print a journal as JSON, read-only",
	 "Prints one JSON object: every order with its attempts and refunds, the orphan\n"
	 "refunds (no order), every confirmation and every event. Read-only.\n"},
	{"order", "create", kctl_order_create, "--dedup-key KEY --amount N [--currency CUR] [--items JSON] [--channel CH]",
	 "create an order (or get the one with this dedup key); --channel: and pay it, in one request",
	 "POST /orders on kioskpayd. --amount is an integer in minor units, --items a JSON\n"
	 "array or object. The same --dedup-key with the same content returns the same order\n"
	 "(\"duplicated\"); with other content kioskpayd answers 4.09 conflict (exit 1).\n"
	 "Prints \"order ID STATUS AMOUNT CURRENCY, expires TIME\"; --json: the API's answer.\n" KCTL_API_HELP_TAIL},
	{"order", "show", kctl_order_show, "ID", "show an order with its attempts and refunds",
	 "GET /orders/ID: the order, then one line per attempt and per refund.\n" KCTL_API_HELP_TAIL},
	{"order", "pay", kctl_order_pay, "ID --channel CHANNEL", "start paying an order on a channel",
	 "POST /orders/ID/pay. Waits (up to 20 s) until the host took the payment request;\n"
	 "prints the attempt and its QR code if the host gave one. 4.09 expired: the order\n"
	 "is past its pay deadline; 5.03 disconnected: the host link is down.\n" KCTL_API_HELP_TAIL},
	{"order", "cancel", kctl_order_cancel, "ID", "cancel a pending order",
	 "POST /orders/ID/cancel; a live attempt is canceled at the host. Prints the order.\n" KCTL_API_HELP_TAIL},
	{"order", "vend", kctl_order_vend, "ID success|failure", "record the vend outcome of a paid order",
	 "POST /orders/ID/vend: success makes it fulfilled; failure makes it fulfill_failed\n"
	 "and refunds it. Prints the order.\n" KCTL_API_HELP_TAIL},
	{NULL, "events", kctl_events, "[--since N] [--limit N]", "print journal events after seq N",
	 "GET /events: events with seq > N (default 0), oldest first, at most --limit\n"
	 "(1..100, default 100), then \"next M\": pass --since M for the rest.\n" KCTL_API_HELP_TAIL},
	{NULL, "health", kctl_health, "", "print kioskpayd's status",
	 "GET /health: status ok|degraded, journal ok|error|closed, host up|down, uptime.\n"
	 "A degraded service still exits 0 (it answered).\n" KCTL_API_HELP_TAIL},
	{NULL, "metrics", kctl_metrics, "", "print kioskpayd's counters",
	 "GET /metrics: counts per state of orders, attempts and refunds, alarms, journal\n"
	 "size, host link and engine counters, one \"name value\" per line.\n" KCTL_API_HELP_TAIL},
	{NULL, "reconcile", kctl_reconcile, "", "make every unfinished record due now",
	 "POST /reconcile: the reconciler looks at every unfinished attempt and refund on\n"
	 "kioskpayd's next loop turn.\n" KCTL_API_HELP_TAIL},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

const kctl_cmd *kctl_cmd_of(kctl_handler run)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (commands[i].run == run)
			return &commands[i];
	return NULL;
}

static void cmd_name(const kctl_cmd *c, char *buf, size_t cap)
{
	if (c->group)
		snprintf(buf, cap, "%s %s", c->group, c->name);
	else
		snprintf(buf, cap, "%s", c->name);
}

int kctl_usage_error(const kctl_ctx *ctx, const kctl_cmd *cmd, const char *fmt, ...)
{
	char name[64] = "";
	if (cmd)
		cmd_name(cmd, name, sizeof(name));
	fprintf(stderr, "%s%s%s: ", ctx->prog, name[0] ? " " : "", name);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (cmd)
		fprintf(stderr, " (usage: %s %s %s; see --help)\n", ctx->prog, name, cmd->usage);
	else
		fprintf(stderr, " (see %s --help)\n", ctx->prog);
	return KCTL_EXIT_USAGE;
}

static void print_list(FILE *out, const char *group)
{
	for (size_t i = 0; i < NCOMMANDS; i++) {
		const kctl_cmd *c = &commands[i];
		if (group && (!c->group || strcmp(c->group, group) != 0))
			continue;
		char name[64], line[128];
		cmd_name(c, name, sizeof(name));
		snprintf(line, sizeof(line), "%s %s", name, c->usage);
		fprintf(out, "  %-28s %s\n", line, c->summary);
	}
}

static void print_help(FILE *out, const char *prog)
{
	fprintf(out,
		"usage: %s [--json] [--api HOST:PORT] COMMAND [ARGS...]\n"
		"       %s COMMAND --help\n"
		"\n"
		"The technician's and scripts' tool for kioskpay.\n"
		"\n"
		"commands:\n",
		prog, prog);
	print_list(out, NULL);
	fprintf(out,
		"\n"
		"global options (before the command):\n"
		"  --json             machine-readable output on stdout\n"
		"  --api HOST:PORT    kioskpayd's CoAP API (default " KCTL_DEFAULT_API ")\n"
		"  -h, --help         this help\n"
		"  --version          print the version\n"
		"\n" EXIT_CODES_HELP);
}

static void print_cmd_help(const kctl_ctx *ctx, const kctl_cmd *c)
{
	char name[64];
	cmd_name(c, name, sizeof(name));
	printf("usage: %s [--json] %s %s\n\n%s\n%s\n%s", ctx->prog, name, c->usage, c->summary, c->help,
	       EXIT_CODES_HELP);
}

int main(int argc, char **argv)
{
	kctl_ctx ctx = {.prog = "kioskctl", .api = KCTL_DEFAULT_API};
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--json") == 0) {
			ctx.json = true;
		} else if (strcmp(a, "--api") == 0) {
			if (++i >= argc)
				return kctl_usage_error(&ctx, NULL, "--api needs HOST:PORT");
			ctx.api = argv[i];
		} else if (strncmp(a, "--api=", 6) == 0) {
			ctx.api = a + 6;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			print_help(stdout, ctx.prog);
			return KCTL_EXIT_OK;
		} else if (strcmp(a, "--version") == 0) {
			printf("kioskctl %s\n", KP_VERSION);
			return KCTL_EXIT_OK;
		} else {
			return kctl_usage_error(&ctx, NULL, "unknown option %s", a);
		}
	}
	if (i >= argc) {
		print_help(stderr, ctx.prog);
		return KCTL_EXIT_USAGE;
	}
	const char *word = argv[i];
	const char *sub = i + 1 < argc ? argv[i + 1] : NULL;
	bool group_known = false;
	int at = i; /* index of the command's own name in argv */
	static const kp_cli_table table = {commands, NCOMMANDS, sizeof(commands[0]),
					   offsetof(kctl_cmd, group), offsetof(kctl_cmd, name)};
	long k = kp_cli_find(&table, argc, argv, i, &at, &group_known);
	if (k >= 0) {
		const kctl_cmd *c = &commands[k];
		if (kp_cli_wants_help(argc - at, argv + at)) {
			print_cmd_help(&ctx, c);
			return KCTL_EXIT_OK;
		}
		return c->run(&ctx, argc - at, argv + at);
	}
	if (group_known) {
		bool help = sub && (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0);
		FILE *out = help ? stdout : stderr;
		if (!help)
			fprintf(stderr, "%s %s: %s%s\n", ctx.prog, word, sub ? "unknown command " : "missing command",
				sub ? sub : "");
		fprintf(out, "%s commands:\n", word);
		print_list(out, word);
		return help ? KCTL_EXIT_OK : KCTL_EXIT_USAGE;
	}
	return kctl_usage_error(&ctx, NULL, "unknown command %s", word);
}
