/* kioskfw.c — the command table and dispatcher of kioskfw, the firmware tool
 * (bundles, A/B slots, device provisioning). Global options first (--json),
 * then "GROUP NAME ARGS" or "NAME ARGS"; every command answers --help. */
#include "kioskfw.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fw_io.h"
#include "kp_cli.h"
#include "kp_failpoint.h"

#define EXIT_CODES_HELP                                                                             \
	"exit codes: 0 ok, 1 refused or failed (one line on stderr says why), 2 usage error,\n"     \
	"3 an input (bundle, key, certificate, slot state) cannot be read or the slots are locked\n"

#define KEYS_HELP                                                                         \
	"Trusted keys: --pubkey FILE (one release public key, PEM) and/or --keys-dir DIR\n" \
	"(every DIR/*.pub, at most 16). A bundle signed by any other key is refused.\n"

static const kfw_cmd commands[] = {
	{NULL, "keygen", kfw_keygen, "--out DIR", "make a development release key pair",
	 "Writes DIR/release.key (EC P-256, mode 0600, DIR made 0700) and DIR/release.pub,\n"
	 "and prints the key id. Refuses to overwrite an existing key. The release key signs\n"
	 "bundles: keep it off devices and out of git; devices get release.pub only.\n"},
	{NULL, "pack", kfw_pack,
	 "--key KEY --board B --version V [--min-version V] [--rollback N] [--max-size BYTES] -o OUT FILE...",
	 "build and sign a bundle",
	 "Writes OUT: header, manifest (version, board, min_version, rollback_counter, each\n"
	 "FILE's base name, size and SHA-256), ECDSA P-256 signature by KEY over the manifest,\n"
	 "then the files (docs/firmware.md). Names: 1..64 of [A-Za-z0-9._-], no leading '.',\n"
	 "no \"..\". --min-version: the oldest installed version this bundle may replace\n"
	 "(default 0.0.0). --rollback: the bundle's rollback counter (default 0). At most\n"
	 "64 files and --max-size bytes in all (default 268435456). OUT is replaced atomically.\n"},
	{NULL, "verify", kfw_verify,
	 "(--pubkey FILE | --keys-dir DIR) --board B [--installed-version V] [--rollback-counter N] "
	 "[--slots DIR] [--max-size BYTES] BUNDLE",
	 "check a bundle; changes nothing",
	 "Checks, in this order: size bounds, header, signature (present, by a trusted key,\n"
	 "valid), manifest, board, version against --installed-version and min_version,\n"
	 "rollback counter against --rollback-counter, then every payload's size and SHA-256.\n"
	 "--slots DIR takes the installed version and rollback counter from the device's slot\n"
	 "state instead. Prints \"ok: ...\" (or JSON with --json); a refusal is one line on\n"
	 "stderr ending in [reason] (docs/firmware.md lists them), exit 1.\n" KEYS_HELP},
	{NULL, "install", kfw_install,
	 "--slots DIR (--pubkey FILE | --keys-dir DIR) --board B [--max-boots N] [--max-size BYTES] BUNDLE",
	 "verify a bundle and write it to the inactive slot, on trial",
	 "Verifies like `verify` against the slot state, writes the payloads into a staging\n"
	 "area while hashing them, then (only if all is well) marks the inactive slot empty,\n"
	 "moves the staged files in, and puts the slot on trial for --max-boots boots\n"
	 "(default 3). The running slot is never touched: kill -9 at any point leaves it\n"
	 "bootable. Refused (exit 1, nothing changed) while the running slot is an\n"
	 "uncommitted trial: commit or roll back first. Then reboot (`kioskfw boot`), check\n"
	 "health, and `kioskfw commit`.\n" KEYS_HELP},
	{NULL, "status", kfw_status, "--slots DIR [--verify]", "show the A/B slot state",
	 "Prints the active, booted and trial slots, boots used, the rollback counter, each\n"
	 "slot's status and version, and the last event. --json: the state record. --verify:\n"
	 "also hash every non-empty slot's files against its manifest; exit 1 if any differs.\n"},
	{NULL, "commit", kfw_commit, "--slots DIR [--health-cmd CMD] [--health-timeout S]",
	 "make the running trial slot permanent",
	 "Runs CMD first (sh -c; e.g. \"kioskctl health\"), if given, and commits only if it\n"
	 "exits 0 within S seconds (default 30). The trial must be the running slot (booted\n"
	 "at least once). It becomes the active slot and the device's rollback counter rises\n"
	 "to its bundle's. Committing the already committed running slot prints so, exit 0.\n"},
	{NULL, "rollback", kfw_rollback, "--slots DIR", "go back to the other slot by hand",
	 "With a trial pending: cancels it (the slot is marked bad) and the next boot picks\n"
	 "the active slot. Without: makes the other slot active if it is good and its\n"
	 "rollback counter is not below the device's. Reboot afterwards.\n"},
	{NULL, "boot", kfw_boot, "--slots DIR", "pick the slot to boot (the boot script's job)",
	 "What the bootloader/boot script does on each boot: a trial slot with boots left\n"
	 "gets one more (counted and stored before it runs); a trial that used them all\n"
	 "without a commit is marked bad and the active slot boots (automatic rollback);\n"
	 "otherwise the active slot boots. A slot whose files are missing or of the wrong\n"
	 "size is not booted. Prints \"slot X\", \"path P\", \"version V\", \"mode M\" lines\n"
	 "(M: trial N/MAX, committed, rolled-back), or JSON. Exit 1: no bootable slot.\n"},
	{"provision", "keygen", kfw_prov_keygen, "--dir D --device-id ID", "make the device key and its CSR",
	 "Generates the device's EC P-256 key on the device into D/device.key (0600; D is\n"
	 "made 0700) and writes D/device.csr with CN=ID for the provisioning CA. The key is\n"
	 "never printed or exported; an existing key is never replaced (exit 1).\n"},
	{"provision", "install", kfw_prov_install, "--dir D --cert device.crt --ca ca.crt",
	 "check and install the signed device certificate and the CA",
	 "Checks that the certificate is for this device's key, has the CSR's CN, chains to\n"
	 "the CA, is valid now and allows client authentication; then installs it and the CA\n"
	 "as D/device.crt and D/ca.crt (0600). Refusal: exit 1, nothing installed.\n"},
	{"provision", "show", kfw_prov_show, "--dir D", "show the device identity (never the key)",
	 "Prints the device id (CN), subject, issuer, serial, validity, the certificate's\n"
	 "SHA-256 fingerprint, and whether the key (file mode shown) matches. Exit 1 if the\n"
	 "key file is open to group/others, the certificate does not match the key or is not\n"
	 "valid now.\n"},
	{"provision", "sign-dev", kfw_prov_sign_dev, "--ca-key KEY --ca CA.crt --csr device.csr -o OUT [--days N]",
	 "DEVELOPMENT ONLY: sign a CSR with a dev CA",
	 "For tests and demos (e.g. tests/pki's kp-pki CA): issues a client certificate for\n"
	 "the CSR's CN, valid N days (default 365). Production certificates come from the\n"
	 "real provisioning CA, never from this command.\n"},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const kfw_cmd *cmd_of(kfw_handler run)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (commands[i].run == run)
			return &commands[i];
	return NULL;
}

static void cmd_name(const kfw_cmd *c, char *buf, size_t cap)
{
	if (!c)
		snprintf(buf, cap, "?");
	else if (c->group)
		snprintf(buf, cap, "%s %s", c->group, c->name);
	else
		snprintf(buf, cap, "%s", c->name);
}

int kfw_usage_error(const kfw_ctx *ctx, kfw_handler self, const char *fmt, ...)
{
	const kfw_cmd *c = cmd_of(self);
	char name[64];
	cmd_name(c, name, sizeof(name));
	fprintf(stderr, "%s %s: ", ctx->prog, name);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (usage: %s %s %s; see --help)\n", ctx->prog, name, c ? c->usage : "");
	return KFW_EXIT_USAGE;
}

int kfw_fail(const kfw_ctx *ctx, kfw_handler self, int code, const char *fmt, ...)
{
	char name[64], msg[KP_FW_WHY_MAX + 128];
	cmd_name(cmd_of(self), name, sizeof(name));
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (char *c = msg; *c; c++)
		if (*c == '\n')
			*c = ' ';
	fprintf(stderr, "%s %s: %s\n", ctx->prog, name, msg);
	return code;
}

int kfw_exit_for(kp_err err)
{
	switch (err) {
	case KP_OK:
		return KFW_EXIT_OK;
	case KP_ERR_NOT_FOUND:
	case KP_ERR_IO:
	case KP_ERR_BUSY:
	case KP_ERR_CORRUPT:
		return KFW_EXIT_CANNOT_OPEN;
	default:
		return KFW_EXIT_FAILED;
	}
}

bool kfw_number(const kfw_ctx *ctx, kfw_handler self, const char *opt, const char *text, uint64_t max,
		uint64_t *out)
{
	if (!kp_fw_parse_u64(text, max, out)) {
		kfw_usage_error(ctx, self, "%s needs a number in 0..%llu, not \"%s\"", opt, (unsigned long long)max, text);
		return false;
	}
	return true;
}

int kfw_parse(const kfw_ctx *ctx, kfw_handler self, int argc, char **argv, const kfw_opt *opts, size_t nopts,
	      const char **pos, size_t max_pos, size_t *npos)
{
	bool only_pos = false;
	*npos = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!only_pos && strcmp(a, "--") == 0) {
			only_pos = true;
			continue;
		}
		if (only_pos || a[0] != '-' || a[1] == 0) {
			if (*npos == max_pos)
				return kfw_usage_error(ctx, self, "unexpected argument \"%s\"", a);
			pos[(*npos)++] = a;
			continue;
		}
		const kfw_opt *o = NULL;
		const char *inline_val = NULL;
		for (size_t k = 0; k < nopts && !o; k++) {
			size_t n = strlen(opts[k].name);
			if (strncmp(a, opts[k].name, n) == 0 && (a[n] == 0 || (a[n] == '=' && opts[k].value))) {
				o = &opts[k];
				inline_val = a[n] == '=' ? a + n + 1 : NULL;
			}
		}
		if (!o)
			return kfw_usage_error(ctx, self, "unknown option %s", a);
		if (o->flag) {
			*o->flag = true;
		} else if (inline_val) {
			*o->value = inline_val;
		} else {
			if (i + 1 >= argc)
				return kfw_usage_error(ctx, self, "%s needs a value", o->name);
			*o->value = argv[++i];
		}
	}
	return KFW_EXIT_OK;
}

static void print_list(FILE *out, const char *group)
{
	for (size_t i = 0; i < NCOMMANDS; i++) {
		const kfw_cmd *c = &commands[i];
		if (group && (!c->group || strcmp(c->group, group) != 0))
			continue;
		char name[64];
		cmd_name(c, name, sizeof(name));
		fprintf(out, "  %-20s %s\n", name, c->summary);
	}
}

static void print_help(FILE *out, const char *prog)
{
	fprintf(out,
		"usage: %s [--json] COMMAND [ARGS...]\n"
		"       %s COMMAND --help\n"
		"\n"
		"kioskpay firmware: signed bundles, A/B slots with boot counting, device provisioning.\n"
		"\n"
		"commands:\n",
		prog, prog);
	print_list(out, NULL);
	fprintf(out,
		"\n"
		"global options (before the command):\n"
		"  --json       machine-readable output on stdout (verify, status, boot, provision show)\n"
		"  -h, --help   this help\n"
		"  --version    print the version\n"
		"\n" EXIT_CODES_HELP);
}

static void print_cmd_help(const kfw_ctx *ctx, const kfw_cmd *c)
{
	char name[64];
	cmd_name(c, name, sizeof(name));
	printf("usage: %s %s %s\n\n%s\n\n%s\n%s", ctx->prog, name, c->usage, c->summary, c->help, EXIT_CODES_HELP);
}

int main(int argc, char **argv)
{
	kfw_ctx ctx = {.prog = "kioskfw"};
	kp_env_init_system(&ctx.env);
	if (kp_failpoint_init_from_env() != KP_OK) {
		fprintf(stderr, "%s: bad KP_FAILPOINTS \"%s\"\n", ctx.prog, getenv("KP_FAILPOINTS"));
		return KFW_EXIT_USAGE;
	}
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--json") == 0) {
			ctx.json = true;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			print_help(stdout, ctx.prog);
			return KFW_EXIT_OK;
		} else if (strcmp(a, "--version") == 0) {
			printf("kioskfw %s\n", KP_VERSION);
			return KFW_EXIT_OK;
		} else {
			fprintf(stderr, "%s: unknown option %s (see %s --help)\n", ctx.prog, a, ctx.prog);
			return KFW_EXIT_USAGE;
		}
	}
	if (i >= argc) {
		print_help(stderr, ctx.prog);
		return KFW_EXIT_USAGE;
	}
	const char *word = argv[i];
	const char *sub = i + 1 < argc ? argv[i + 1] : NULL;
	bool group_known = false;
	int at = i; /* index of the command's own name in argv */
	static const kp_cli_table table = {commands, NCOMMANDS, sizeof(commands[0]),
					   offsetof(kfw_cmd, group), offsetof(kfw_cmd, name)};
	long k = kp_cli_find(&table, argc, argv, i, &at, &group_known);
	if (k >= 0) {
		const kfw_cmd *c = &commands[k];
		if (kp_cli_wants_help(argc - at, argv + at)) {
			print_cmd_help(&ctx, c);
			return KFW_EXIT_OK;
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
		return help ? KFW_EXIT_OK : KFW_EXIT_USAGE;
	}
	fprintf(stderr, "%s: unknown command %s (see %s --help)\n", ctx.prog, word, ctx.prog);
	return KFW_EXIT_USAGE;
}
