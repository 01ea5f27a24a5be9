/* kp-check — the independent invariant checker: reads a kioskpay journal with
 * plain SQL and the host simulator's ledger, and tells per invariant of
 * design.md whether it holds. Exit 0: all hold; 1: a violation; 2: usage or
 * unreadable evidence. Used by crash campaigns and by hand (docs/check.md). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_db.h"
#include "check_inv.h"

#define EXIT_VIOLATION 1
#define EXIT_USAGE 2

struct args {
	const char *journal;
	const char *ledger_json;
	const char *ledger_db;
	const char *device;
	const char *seed;
	bool quiet_expected;
	long list;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kp-check --journal FILE [--ledger-json FILE|- | --ledger DB] [--device ID]\n"
		"                [--seed S] [--quiet-expected] [--list N]\n"
		"  --journal FILE      kioskpay journal (opened read-only)\n"
		"  --ledger-json FILE  kp-hostsim ledger dump (kp-hostsim --dump --ledger DB); - for stdin\n"
		"  --ledger DB         kp-hostsim ledger file itself (opened read-only)\n"
		"  --device ID         only this device's records of the ledger (needed if it holds several)\n"
		"  --seed S            campaign seed, printed as the replay command on failure\n"
		"  --quiet-expected    the system ran to quiescence: work still in flight is a violation\n"
		"  --list N            offending records listed per invariant (default 10)\n"
		"exit: 0 every invariant holds, 1 a violation, 2 usage or evidence unreadable\n");
}

static bool parse_long(const char *s, long min, long max, long *out)
{
	char *end = NULL;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* A seed is a decimal number that fits 64 bits unsigned. */
static bool seed_ok(const char *s)
{
	char *end = NULL;
	if (s[0] < '0' || s[0] > '9')
		return false;
	errno = 0;
	(void)strtoumax(s, &end, 10);
	return errno == 0 && *end == '\0';
}

/* 0 to run, EXIT_USAGE on a usage error, -1 for --help. */
static int parse_args(int argc, char **argv, struct args *a)
{
	a->list = 10;
	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		const char **slot = NULL;
		if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0)
			return -1;
		if (strcmp(opt, "--quiet-expected") == 0) {
			a->quiet_expected = true;
			continue;
		}
		if (strcmp(opt, "--journal") == 0)
			slot = &a->journal;
		else if (strcmp(opt, "--ledger-json") == 0)
			slot = &a->ledger_json;
		else if (strcmp(opt, "--ledger") == 0)
			slot = &a->ledger_db;
		else if (strcmp(opt, "--device") == 0)
			slot = &a->device;
		else if (strcmp(opt, "--seed") == 0)
			slot = &a->seed;
		else if (strcmp(opt, "--list") != 0) {
			fprintf(stderr, "kp-check: unknown option %s\n", opt);
			return EXIT_USAGE;
		}
		if (!val || val[0] == '\0') {
			fprintf(stderr, "kp-check: %s needs a value\n", opt);
			return EXIT_USAGE;
		}
		i++;
		if (!slot) {
			if (!parse_long(val, 0, 10000, &a->list)) {
				fprintf(stderr, "kp-check: --list wants a number 0..10000, not '%s'\n", val);
				return EXIT_USAGE;
			}
			continue;
		}
		if (*slot) {
			fprintf(stderr, "kp-check: %s given twice\n", opt);
			return EXIT_USAGE;
		}
		*slot = val;
	}
	if (!a->journal) {
		fprintf(stderr, "kp-check: --journal FILE is required\n");
		return EXIT_USAGE;
	}
	if (a->ledger_json && a->ledger_db) {
		fprintf(stderr, "kp-check: give --ledger-json or --ledger, not both\n");
		return EXIT_USAGE;
	}
	if (a->device && !a->ledger_json && !a->ledger_db) {
		fprintf(stderr, "kp-check: --device needs a ledger\n");
		return EXIT_USAGE;
	}
	if (a->seed && !seed_ok(a->seed)) {
		fprintf(stderr, "kp-check: --seed wants a decimal number, not '%s'\n", a->seed);
		return EXIT_USAGE;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct args a = {0};
	kp_check_db *db = NULL;
	kp_check_result res;
	char why[512] = "", device[80] = "";
	int rc = parse_args(argc, argv, &a);

	if (rc == -1) {
		usage(stdout);
		return 0;
	}
	if (rc != 0) {
		usage(stderr);
		return rc;
	}
	rc = EXIT_USAGE;
	if (kp_check_db_open(&db, a.journal, why, sizeof(why)) != KP_OK)
		goto out;
	if (a.ledger_json && kp_check_db_ledger_json(db, a.ledger_json, why, sizeof(why)) != KP_OK)
		goto out;
	if (a.ledger_db && kp_check_db_ledger_sqlite(db, a.ledger_db, why, sizeof(why)) != KP_OK)
		goto out;
	if (kp_check_db_has_ledger(db) &&
	    kp_check_db_ledger_device(db, a.device, device, sizeof(device), why, sizeof(why)) != KP_OK)
		goto out;

	printf("kp-check: journal %s", a.journal);
	if (kp_check_db_has_ledger(db))
		printf(", ledger %s%s%s", a.ledger_json ? a.ledger_json : a.ledger_db,
		       device[0] ? " device " : "", device);
	printf("%s\n", a.quiet_expected ? " (quiet expected)" : "");
	kp_check_opts opts = {.out = stdout, .quiet_expected = a.quiet_expected, .max_list = (int)a.list};
	if (kp_check_run(db, &opts, &res, why, sizeof(why)) != KP_OK)
		goto out;
	printf("kp-check: %d pass, %d fail, %d skipped; %d warning%s, %d alarm%s\n", res.pass, res.fail,
	       res.skip, res.warn, res.warn == 1 ? "" : "s", res.alarm, res.alarm == 1 ? "" : "s");
	rc = res.fail > 0 ? EXIT_VIOLATION : 0;
out:
	if (rc == EXIT_USAGE && why[0])
		fprintf(stderr, "kp-check: %s\n", why);
	if (rc != 0 && a.seed)
		printf("replay with: ./run campaign 1 %s\n", a.seed);
	if (fflush(stdout) != 0 && rc == 0)
		rc = EXIT_USAGE;
	kp_check_db_close(db);
	return rc;
}
