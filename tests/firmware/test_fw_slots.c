/* test_fw_slots.c — A/B slots: the pure decisions in tables (boot, commit,
 * rollback, install target, slot moves, state records), then the real kioskfw
 * on real directories: install -> boot -> commit, boots without a commit
 * rolling back by themselves, manual rollback, refused commits, and kill -9
 * during install, at every failpoint (80-91) and at random instants. After
 * every crash the old slot must still be the active one, byte for byte, and
 * `boot` must pick it (or the complete new trial, with the old one behind). */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "fw_test_util.h"
#include "slots.h"

#define BOARD "qemu-aarch64"
#define PATHLEN 512
#define RANDOM_KILLS 24

static struct {
	char root[PATHLEN];
	char keys[PATHLEN], pub[PATHLEN], key[PATHLEN];
	char b100[PATHLEN];   /* 1.0.0, rollback 0: small */
	char b110[PATHLEN];   /* 1.1.0, rollback 0: small */
	char b111[PATHLEN];   /* 1.1.1, rollback 1: small */
	char big[PATHLEN];    /* 1.2.0, rollback 0: 4 x 2 MiB, for the crash runs */
	char base[PATHLEN];   /* template device: slot b = 1.0.0 committed */
	char *base_b;         /* snapshot of the template's slot b */
} g;

static void pathf(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pathf(char *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out, PATHLEN, fmt, ap);
	va_end(ap);
}

static void run(fwt_run *r, const char *const *args)
{
	fwt_run_tool(r, KIOSKFW_EXE, NULL, args);
}

/* Run and insist on the exit code. */
static void run_ok(fwt_run *r, int want, const char *const *args)
{
	run(r, args);
	if (r->status != want)
		fail_msg("kioskfw %s: exit %d (wanted %d): %s", args[0], r->status, want, r->err);
}

/* ======== the decisions, on states built by hand ======== */

typedef struct slot_spec {
	kp_slot_status status;
	const char *version;
	uint32_t rollback;
} slot_spec;

static kp_slots_state mkstate(kp_slot_id active, kp_slot_id trial, kp_slot_id booted, uint32_t count, uint32_t rc,
			      slot_spec a, slot_spec b)
{
	kp_slots_state st;
	kp_slots_state_default(&st);
	st.active = active;
	st.trial = trial;
	st.booted = booted;
	st.boot_count = count;
	st.max_boots = 3;
	st.rollback_counter = rc;
	slot_spec s[2] = {a, b};
	for (int i = 0; i < 2; i++) {
		st.slot[i].status = s[i].status;
		st.slot[i].rollback_counter = s[i].rollback;
		if (s[i].version)
			assert_int_equal(kp_fw_version_parse(s[i].version, &st.slot[i].version), KP_OK);
	}
	return st;
}

#define A KP_SLOT_A
#define B KP_SLOT_B
#define NONE KP_SLOT_NONE
#define EMPTY {KP_SLOT_EMPTY, NULL, 0}
#define GOOD(v, r) {KP_SLOT_GOOD, v, r}
#define TRIAL(v, r) {KP_SLOT_TRIAL, v, r}
#define BAD(v, r) {KP_SLOT_BAD, v, r}

enum op { BOOT, COMMIT, ROLLBACK, INSTALL };

typedef struct decision_case {
	const char *label;
	enum op op;
	kp_slots_state (*before)(void);
	kp_err err;
	kp_slot_id picked;      /* BOOT: the slot; INSTALL: the target */
	bool flag;              /* BOOT: rolled back; COMMIT: already */
	kp_slot_id active, trial, booted;
	uint32_t count, rc;
	kp_slot_status sa, sb;
} decision_case;

static kp_slots_state s_fresh(void) { return mkstate(A, NONE, A, 0, 0, (slot_spec)EMPTY, (slot_spec)EMPTY); }
static kp_slots_state s_a_good(void) { return mkstate(A, NONE, A, 0, 0, (slot_spec)GOOD("1.0.0", 0), (slot_spec)EMPTY); }
static kp_slots_state s_trial0(void)
{
	return mkstate(A, B, A, 0, 2, (slot_spec)GOOD("1.0.0", 2), (slot_spec)TRIAL("1.1.0", 5));
}
static kp_slots_state s_trial2(void)
{
	return mkstate(A, B, B, 2, 2, (slot_spec)GOOD("1.0.0", 2), (slot_spec)TRIAL("1.1.0", 5));
}
static kp_slots_state s_trial3(void)
{
	return mkstate(A, B, B, 3, 2, (slot_spec)GOOD("1.0.0", 2), (slot_spec)TRIAL("1.1.0", 5));
}
static kp_slots_state s_trial3_no_fallback(void)
{
	return mkstate(A, B, B, 3, 0, (slot_spec)EMPTY, (slot_spec)TRIAL("1.0.0", 0));
}
static kp_slots_state s_trial_running_low_rc(void)
{
	return mkstate(A, B, B, 1, 2, (slot_spec)GOOD("1.0.0", 2), (slot_spec)TRIAL("1.1.0", 1));
}
static kp_slots_state s_both_good(void)
{
	return mkstate(A, NONE, A, 0, 2, (slot_spec)GOOD("1.1.0", 2), (slot_spec)GOOD("1.0.0", 2));
}
static kp_slots_state s_other_low_rc(void)
{
	return mkstate(A, NONE, A, 0, 2, (slot_spec)GOOD("1.1.0", 2), (slot_spec)GOOD("1.0.0", 1));
}
static kp_slots_state s_other_bad(void)
{
	return mkstate(A, NONE, A, 0, 0, (slot_spec)GOOD("1.0.0", 0), (slot_spec)BAD("1.1.0", 0));
}
static kp_slots_state s_rolled_not_booted(void)
{
	return mkstate(B, NONE, A, 0, 2, (slot_spec)GOOD("1.1.0", 2), (slot_spec)GOOD("1.0.0", 2));
}

static const decision_case decisions[] = {
	/* label, op, before, err, picked, flag, active, trial, booted, count, rc, status a, status b */
	{"fresh device has nothing to boot", BOOT, s_fresh, KP_ERR_NOT_FOUND, NONE, false, A, NONE, A, 0, 0, KP_SLOT_EMPTY,
	 KP_SLOT_EMPTY},
	{"boot the committed slot", BOOT, s_a_good, KP_OK, A, false, A, NONE, A, 0, 0, KP_SLOT_GOOD, KP_SLOT_EMPTY},
	{"first trial boot", BOOT, s_trial0, KP_OK, B, false, A, B, B, 1, 2, KP_SLOT_GOOD, KP_SLOT_TRIAL},
	{"last trial boot", BOOT, s_trial2, KP_OK, B, false, A, B, B, 3, 2, KP_SLOT_GOOD, KP_SLOT_TRIAL},
	{"trial used up: automatic rollback", BOOT, s_trial3, KP_OK, A, true, A, NONE, A, 0, 2, KP_SLOT_GOOD, KP_SLOT_BAD},
	{"trial used up, nothing to fall back to", BOOT, s_trial3_no_fallback, KP_ERR_NOT_FOUND, NONE, true, A, NONE, B, 0,
	 0, KP_SLOT_EMPTY, KP_SLOT_BAD},
	{"commit the running trial raises the counter", COMMIT, s_trial2, KP_OK, NONE, false, B, NONE, B, 0, 5,
	 KP_SLOT_GOOD, KP_SLOT_GOOD},
	{"commit never lowers the counter", COMMIT, s_trial_running_low_rc, KP_OK, NONE, false, B, NONE, B, 0, 2,
	 KP_SLOT_GOOD, KP_SLOT_GOOD},
	{"commit a trial that never booted", COMMIT, s_trial0, KP_ERR_STATE, NONE, false, A, B, A, 0, 2, KP_SLOT_GOOD,
	 KP_SLOT_TRIAL},
	{"commit again", COMMIT, s_a_good, KP_OK, NONE, true, A, NONE, A, 0, 0, KP_SLOT_GOOD, KP_SLOT_EMPTY},
	{"commit after a manual rollback, before reboot", COMMIT, s_rolled_not_booted, KP_ERR_STATE, NONE, false, B, NONE,
	 A, 0, 2, KP_SLOT_GOOD, KP_SLOT_GOOD},
	{"rollback cancels a trial", ROLLBACK, s_trial2, KP_OK, NONE, false, A, NONE, B, 0, 2, KP_SLOT_GOOD, KP_SLOT_BAD},
	{"rollback to the other good slot", ROLLBACK, s_both_good, KP_OK, NONE, false, B, NONE, A, 0, 2, KP_SLOT_GOOD,
	 KP_SLOT_GOOD},
	{"rollback below the counter refused", ROLLBACK, s_other_low_rc, KP_ERR_STATE, NONE, false, A, NONE, A, 0, 2,
	 KP_SLOT_GOOD, KP_SLOT_GOOD},
	{"rollback to a bad slot refused", ROLLBACK, s_other_bad, KP_ERR_STATE, NONE, false, A, NONE, A, 0, 0, KP_SLOT_GOOD,
	 KP_SLOT_BAD},
	{"rollback with nothing there", ROLLBACK, s_a_good, KP_ERR_STATE, NONE, false, A, NONE, A, 0, 0, KP_SLOT_GOOD,
	 KP_SLOT_EMPTY},
	{"install on a fresh device writes b", INSTALL, s_fresh, KP_OK, B, false, A, NONE, A, 0, 0, KP_SLOT_EMPTY,
	 KP_SLOT_EMPTY},
	{"install over a pending, unbooted trial", INSTALL, s_trial0, KP_OK, B, false, A, B, A, 0, 2, KP_SLOT_GOOD,
	 KP_SLOT_TRIAL},
	{"install while running a trial refused", INSTALL, s_trial2, KP_ERR_STATE, NONE, false, A, B, B, 2, 2,
	 KP_SLOT_GOOD, KP_SLOT_TRIAL},
	{"install after a manual rollback, before reboot, refused", INSTALL, s_rolled_not_booted, KP_ERR_STATE, NONE, false,
	 B, NONE, A, 0, 2, KP_SLOT_GOOD, KP_SLOT_GOOD},
};

static void test_decisions(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(decisions) / sizeof(decisions[0]); i++) {
		const decision_case *c = &decisions[i];
		kp_slots_state st = c->before();
		kp_slot_id picked = NONE;
		bool flag = false;
		kp_fw_why why = {{0}};
		kp_err err = KP_ERR_INTERNAL;
		switch (c->op) {
		case BOOT: err = kp_slots_decide_boot(&st, &picked, &flag, &why); break;
		case COMMIT: err = kp_slots_decide_commit(&st, &flag, &why); break;
		case ROLLBACK: err = kp_slots_decide_rollback(&st, &why); break;
		case INSTALL: err = kp_slots_decide_install(&st, &picked, &why); break;
		}
		if (err != c->err)
			fail_msg("%s: %s, expected %s (%s)", c->label, kp_errname(err), kp_errname(c->err), why.text);
		if (err != KP_OK)
			assert_true(strlen(why.text) > 10); /* a refusal says why */
		if (c->op == BOOT || c->op == INSTALL)
			assert_int_equal(picked, c->picked);
		if (c->op != INSTALL && c->op != ROLLBACK)
			assert_int_equal(flag, c->flag);
		if (st.active != c->active || st.trial != c->trial || st.booted != c->booted || st.boot_count != c->count ||
		    st.rollback_counter != c->rc || st.slot[A].status != c->sa || st.slot[B].status != c->sb)
			fail_msg("%s: active %s trial %s booted %s count %u rc %u a %s b %s", c->label, kp_slot_name(st.active),
				 kp_slot_name(st.trial), kp_slot_name(st.booted), st.boot_count, st.rollback_counter,
				 kp_slot_status_to_string(st.slot[A].status), kp_slot_status_to_string(st.slot[B].status));
	}
}

static void test_slot_moves(void **state)
{
	(void)state;
	/* allowed[from][to] */
	static const bool allowed[4][4] = {
		[KP_SLOT_EMPTY] = {[KP_SLOT_TRIAL] = true},
		[KP_SLOT_TRIAL] = {[KP_SLOT_EMPTY] = true, [KP_SLOT_GOOD] = true, [KP_SLOT_BAD] = true},
		[KP_SLOT_GOOD] = {[KP_SLOT_EMPTY] = true, [KP_SLOT_BAD] = true},
		[KP_SLOT_BAD] = {[KP_SLOT_EMPTY] = true},
	};
	for (int from = 0; from < 4; from++)
		for (int to = 0; to < 4; to++) {
			kp_slot_info si = {.status = (kp_slot_status)from, .rollback_counter = 7};
			kp_err err = kp_slot_move(&si, (kp_slot_status)to);
			if (allowed[from][to]) {
				assert_int_equal(err, KP_OK);
				assert_int_equal(si.status, to);
			} else {
				assert_int_equal(err, KP_ERR_ILLEGAL_MOVE);
				assert_int_equal(si.status, from); /* unchanged */
				assert_int_equal(si.rollback_counter, 7);
			}
		}
	kp_slot_status s;
	assert_int_equal(kp_slot_status_from_string("good", &s), KP_OK);
	assert_int_equal(s, KP_SLOT_GOOD);
	assert_int_equal(kp_slot_status_from_string("GOOD", &s), KP_ERR_INVALID);
	assert_int_equal(kp_slot_status_from_string("committed", &s), KP_ERR_INVALID);
}

static void test_state_records(void **state)
{
	(void)state;
	kp_slots_state st = s_trial2(), back;
	char *json = NULL;
	size_t len = 0;
	kp_fw_why why;
	snprintf(st.last_event, sizeof(st.last_event), "something \"quoted\"");
	assert_int_equal(kp_slots_state_to_json(&st, &json, &len), KP_OK);
	assert_int_equal(kp_slots_state_parse(json, len, &back, &why), KP_OK);
	assert_int_equal(back.active, A);
	assert_int_equal(back.trial, B);
	assert_int_equal(back.booted, B);
	assert_int_equal(back.boot_count, 2);
	assert_int_equal(back.rollback_counter, 2);
	assert_int_equal(back.slot[B].status, KP_SLOT_TRIAL);
	assert_int_equal(back.slot[B].rollback_counter, 5);
	assert_int_equal(back.slot[B].version.minor, 1);
	assert_string_equal(back.last_event, st.last_event);
	free(json);

#define SLOTS_OK "\"slots\":{\"a\":{\"status\":\"good\",\"version\":\"1.0.0\",\"rollback_counter\":0,\"installed_ms\":1},\"b\":{\"status\":\"empty\"}}"
#define HEAD(active, trial, booted) \
	"{\"format\":1,\"active\":" active ",\"trial\":" trial ",\"booted\":" booted ",\"max_boots\":3,\"rollback_counter\":0,"
	static const struct {
		const char *label, *json;
	} bad[] = {
		{"not JSON", "{"},
		{"format 2", "{\"format\":2}"},
		{"active c", HEAD("\"c\"", "null", "\"a\"") "\"boot_count\":0," SLOTS_OK "}"},
		{"trial is active", HEAD("\"a\"", "\"a\"", "\"a\"") "\"boot_count\":0," SLOTS_OK "}"},
		{"trial slot not in trial",
		 HEAD("\"a\"", "\"b\"", "\"a\"") "\"boot_count\":0," SLOTS_OK "}"},
		{"a trial status without trial",
		 HEAD("\"a\"", "null", "\"a\"") "\"boot_count\":0,\"slots\":{\"a\":{\"status\":\"good\",\"version\":\"1.0.0\","
		 "\"rollback_counter\":0,\"installed_ms\":1},\"b\":{\"status\":\"trial\",\"version\":\"1.1.0\","
		 "\"rollback_counter\":0,\"installed_ms\":1}}}"},
		{"boot count over max", HEAD("\"a\"", "null", "\"a\"") "\"boot_count\":4," SLOTS_OK "}"},
		{"unknown status",
		 HEAD("\"a\"", "null", "\"a\"") "\"boot_count\":0,\"slots\":{\"a\":{\"status\":\"committed\"},\"b\":{\"status\":\"empty\"}}}"},
		{"good slot without version",
		 HEAD("\"a\"", "null", "\"a\"") "\"boot_count\":0,\"slots\":{\"a\":{\"status\":\"good\"},\"b\":{\"status\":\"empty\"}}}"},
		{"no slots", HEAD("\"a\"", "null", "\"a\"") "\"boot_count\":0}"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why.text[0] = 0;
		if (kp_slots_state_parse(bad[i].json, strlen(bad[i].json), &back, &why) != KP_ERR_CORRUPT)
			fail_msg("state \"%s\" was accepted", bad[i].label);
		assert_non_null(strstr(why.text, "state"));
	}
	/* The control: the same shape, valid. */
	const char *good = HEAD("\"a\"", "null", "\"a\"") "\"boot_count\":0," SLOTS_OK "}";
	assert_int_equal(kp_slots_state_parse(good, strlen(good), &back, &why), KP_OK);
}

/* ======== the real tool on real directories ======== */

/* A fresh copy of the template device in root/name. */
static void device_copy(char *dir, const char *name)
{
	char cmd[3 * PATHLEN];
	pathf(dir, "%s/%s", g.root, name);
	fwt_rmtree(dir);
	snprintf(cmd, sizeof(cmd), "cp -a '%s' '%s'", g.base, dir);
	assert_int_equal(system(cmd), 0);
}

static cJSON *status_json(const char *dir)
{
	fwt_run r;
	const char *args[] = {"--json", "status", "--slots", dir, NULL};
	run_ok(&r, 0, args);
	cJSON *j = cJSON_Parse(r.out);
	assert_non_null(j);
	return j;
}

static const char *jstr(const cJSON *o, const char *path1, const char *path2)
{
	const cJSON *it = cJSON_GetObjectItem(o, path1);
	if (path2)
		it = cJSON_GetObjectItem(it, path2);
	return cJSON_IsString(it) ? it->valuestring : cJSON_IsNull(it) ? "null" : "?";
}

static const char *slot_field(const cJSON *st, const char *slot, const char *field)
{
	const cJSON *s = cJSON_GetObjectItem(cJSON_GetObjectItem(st, "slots"), slot);
	const cJSON *f = cJSON_GetObjectItem(s, field);
	return cJSON_IsString(f) ? f->valuestring : "-";
}

static int jint(const cJSON *o, const char *key)
{
	return cJSON_GetObjectItem(o, key)->valueint;
}

/* `kioskfw boot`: returns the slot letter it printed, 0 on failure. */
static char boot(const char *dir, char *mode, size_t cap)
{
	fwt_run r;
	const char *args[] = {"boot", "--slots", dir, NULL};
	run(&r, args);
	if (r.status != 0)
		return 0;
	const char *m = strstr(r.out, "mode ");
	if (mode && m) {
		snprintf(mode, cap, "%s", m + 5);
		mode[strcspn(mode, "\n")] = 0;
	}
	return strncmp(r.out, "slot ", 5) == 0 ? r.out[5] : '?';
}

static void install(const char *dir, const char *bundle, int want)
{
	fwt_run r;
	const char *args[] = {"install", "--slots", dir, "--pubkey", g.pub, "--board", BOARD, bundle, NULL};
	run_ok(&r, want, args);
}

static void test_install_boot_commit(void **state)
{
	(void)state;
	char dir[PATHLEN], mode[64], f[PATHLEN];
	fwt_run r;
	device_copy(dir, "flow-commit");
	install(dir, g.b111, 0);
	cJSON *st = status_json(dir);
	assert_string_equal(jstr(st, "active", NULL), "b");
	assert_string_equal(jstr(st, "trial", NULL), "a");
	assert_string_equal(slot_field(st, "a", "status"), "trial");
	assert_string_equal(slot_field(st, "a", "version"), "1.1.1");
	cJSON_Delete(st);
	/* The payloads are in slot a, byte for byte. */
	pathf(f, "%s/a/kioskpayd", dir);
	char *data = fwt_read_file(f, NULL);
	assert_non_null(data);
	assert_string_equal(data, "daemon 1.1.1\n");
	free(data);

	/* Commit before booting it: refused, nothing changes. */
	char *before = fwt_snapshot(dir);
	const char *cm[] = {"commit", "--slots", dir, NULL};
	run_ok(&r, 1, cm);
	assert_int_equal(fwt_lines(r.err), 1);
	assert_non_null(strstr(r.err, "not running"));
	char *after = fwt_snapshot(dir);
	assert_string_equal(before, after);
	free(before);
	free(after);

	assert_int_equal(boot(dir, mode, sizeof(mode)), 'a');
	assert_string_equal(mode, "trial 1/3");
	const char *cmh[] = {"commit", "--slots", dir, "--health-cmd", "exit 0", NULL};
	run_ok(&r, 0, cmh);
	st = status_json(dir);
	assert_string_equal(jstr(st, "active", NULL), "a");
	assert_string_equal(jstr(st, "trial", NULL), "null");
	assert_string_equal(slot_field(st, "a", "status"), "good");
	assert_string_equal(slot_field(st, "b", "status"), "good");
	assert_int_equal(jint(st, "rollback_counter"), 1); /* raised to the bundle's */
	cJSON_Delete(st);
	assert_int_equal(boot(dir, mode, sizeof(mode)), 'a');
	assert_string_equal(mode, "committed");
	const char *sv[] = {"status", "--slots", dir, "--verify", NULL};
	run_ok(&r, 0, sv);
	assert_non_null(strstr(r.out, "slot a: content ok"));
	assert_non_null(strstr(r.out, "slot b: content ok"));
	/* Committing again is harmless. */
	run_ok(&r, 0, cm);
	assert_non_null(strstr(r.out, "already committed"));
	/* Rolling back to 1.0.0 (counter 0) is refused now that the device is at 1. */
	const char *rb[] = {"rollback", "--slots", dir, NULL};
	run_ok(&r, 1, rb);
	assert_non_null(strstr(r.err, "below the device's"));
	/* And so is installing it. */
	install(dir, g.b100, 1);
}

static void test_failed_boots_roll_back(void **state)
{
	(void)state;
	char dir[PATHLEN], mode[64], want[64];
	fwt_run r;
	device_copy(dir, "flow-auto");
	install(dir, g.b110, 0);
	for (int i = 1; i <= 3; i++) {
		assert_int_equal(boot(dir, mode, sizeof(mode)), 'a');
		snprintf(want, sizeof(want), "trial %d/3", i);
		assert_string_equal(mode, want);
	}
	/* Three boots and no commit: the fourth goes back by itself. */
	assert_int_equal(boot(dir, mode, sizeof(mode)), 'b');
	assert_string_equal(mode, "rolled-back");
	cJSON *st = status_json(dir);
	assert_string_equal(jstr(st, "active", NULL), "b");
	assert_string_equal(jstr(st, "trial", NULL), "null");
	assert_string_equal(jstr(st, "booted", NULL), "b");
	assert_string_equal(slot_field(st, "a", "status"), "bad");
	assert_string_equal(slot_field(st, "b", "version"), "1.0.0");
	assert_non_null(strstr(jstr(st, "last_event", NULL), "failed 3 boots"));
	cJSON_Delete(st);
	/* The old slot is untouched and stays the one that boots. */
	char sb[PATHLEN];
	pathf(sb, "%s/b", dir);
	char *now = fwt_snapshot(sb);
	assert_string_equal(now, g.base_b);
	free(now);
	assert_int_equal(boot(dir, mode, sizeof(mode)), 'b');
	assert_string_equal(mode, "committed");
	const char *cm[] = {"commit", "--slots", dir, NULL};
	run_ok(&r, 0, cm);
	assert_non_null(strstr(r.out, "already committed"));
	/* A bad slot can be installed over again. */
	install(dir, g.b110, 0);
}

static void test_max_boots_option(void **state)
{
	(void)state;
	char dir[PATHLEN], mode[64];
	fwt_run r;
	device_copy(dir, "flow-max1");
	const char *in[] = {"install", "--slots", dir, "--pubkey", g.pub, "--board", BOARD, "--max-boots", "1", g.b110, NULL};
	run_ok(&r, 0, in);
	assert_int_equal(boot(dir, mode, sizeof(mode)), 'a');
	assert_string_equal(mode, "trial 1/1");
	assert_int_equal(boot(dir, mode, sizeof(mode)), 'b');
	assert_string_equal(mode, "rolled-back");
}

static void test_manual_rollback(void **state)
{
	(void)state;
	char dir[PATHLEN], mode[64];
	fwt_run r;
	const char *rb[3 + 1];
	/* 1. Cancel a running trial. */
	device_copy(dir, "flow-manual");
	rb[0] = "rollback", rb[1] = "--slots", rb[2] = dir, rb[3] = NULL;
	install(dir, g.b110, 0);
	assert_int_equal(boot(dir, mode, sizeof(mode)), 'a');
	/* Installing again while the trial runs is refused, changing nothing. */
	char *before = fwt_snapshot(dir);
	install(dir, g.b111, 1);
	char *after = fwt_snapshot(dir);
	assert_string_equal(before, after);
	free(before);
	free(after);
	run_ok(&r, 0, rb);
	assert_non_null(strstr(r.out, "cancelled"));
	cJSON *st = status_json(dir);
	assert_string_equal(slot_field(st, "a", "status"), "bad");
	assert_string_equal(jstr(st, "active", NULL), "b");
	cJSON_Delete(st);
	assert_int_equal(boot(dir, mode, sizeof(mode)), 'b');
	assert_string_equal(mode, "committed");

	/* 2. Go back to the previous committed version (same counter). */
	install(dir, g.b110, 0);
	assert_int_equal(boot(dir, mode, sizeof(mode)), 'a');
	const char *cm[] = {"commit", "--slots", dir, NULL};
	run_ok(&r, 0, cm);
	run_ok(&r, 0, rb);
	assert_non_null(strstr(r.out, "rolled back by hand to slot b"));
	/* Until the reboot, the running slot is a: installing over it is refused. */
	install(dir, g.b111, 1);
	assert_int_equal(boot(dir, mode, sizeof(mode)), 'b');
	st = status_json(dir);
	assert_string_equal(jstr(st, "active", NULL), "b");
	assert_string_equal(slot_field(st, "b", "version"), "1.0.0");
	assert_string_equal(slot_field(st, "a", "status"), "good");
	cJSON_Delete(st);
	/* And forward again: a is good too. */
	run_ok(&r, 0, rb);
	assert_int_equal(boot(dir, mode, sizeof(mode)), 'a');
}

static void test_health_check_gates_commit(void **state)
{
	(void)state;
	char dir[PATHLEN], state_file[PATHLEN];
	fwt_run r;
	device_copy(dir, "flow-health");
	install(dir, g.b110, 0);
	assert_int_equal(boot(dir, NULL, 0), 'a');
	pathf(state_file, "%s/state.json", dir);
	char *before = fwt_read_file(state_file, NULL);
	static const struct {
		const char *cmd, *timeout, *says;
	} cases[] = {
		{"exit 3", "5", "exited 3"},
		{"kill -9 $$", "5", "killed by signal 9"},
		{"sleep 10", "1", "did not finish in 1 s"},
		{"/nonexistent/kioskctl health", "5", "exited 127"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *cm[] = {"commit", "--slots", dir, "--health-cmd", cases[i].cmd, "--health-timeout", cases[i].timeout,
				    NULL};
		run(&r, cm);
		if (r.status != 1 || !strstr(r.err, cases[i].says) || !strstr(r.err, "not committing"))
			fail_msg("health \"%s\": exit %d, stderr %s", cases[i].cmd, r.status, r.err);
		char *after = fwt_read_file(state_file, NULL);
		assert_string_equal(before, after);
		free(after);
	}
	free(before);
	const char *ok[] = {"commit", "--slots", dir, "--health-cmd", "test -d /", NULL};
	run_ok(&r, 0, ok);
}

static void test_damaged_trial_not_booted(void **state)
{
	(void)state;
	char dir[PATHLEN], f[PATHLEN], mode[64];
	fwt_run r;
	device_copy(dir, "flow-damaged");
	install(dir, g.b110, 0);
	pathf(f, "%s/a/kioskpayd", dir);
	fwt_write_file(f, "short", 5);
	const char *sv[] = {"status", "--slots", dir, "--verify", NULL};
	run_ok(&r, 1, sv);
	assert_non_null(strstr(r.err, "slot a content damaged"));
	assert_int_equal(boot(dir, mode, sizeof(mode)), 'b');
	assert_string_equal(mode, "rolled-back");
	cJSON *st = status_json(dir);
	assert_string_equal(slot_field(st, "a", "status"), "bad");
	assert_non_null(strstr(jstr(st, "last_event", NULL), "damaged"));
	cJSON_Delete(st);
}

static void test_lock_and_missing(void **state)
{
	(void)state;
	char dir[PATHLEN], missing[PATHLEN];
	fwt_run r;
	device_copy(dir, "flow-lock");
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX), 0);
	const char *bt[] = {"boot", "--slots", dir, NULL};
	run_ok(&r, 3, bt);
	assert_non_null(strstr(r.err, "locked"));
	install(dir, g.b110, 3);
	close(fd);
	run_ok(&r, 0, bt);
	pathf(missing, "%s/nope", g.root);
	const char *st[] = {"status", "--slots", missing, NULL};
	run_ok(&r, 3, st);
	/* A corrupt state file is not silently replaced by a fresh one. */
	char sf[PATHLEN];
	pathf(sf, "%s/state.json", dir);
	fwt_write_file(sf, "{\"format\":1", 11);
	const char *st2[] = {"status", "--slots", dir, NULL};
	run_ok(&r, 3, st2);
	run_ok(&r, 3, bt);
}

/* ======== crashes during install ======== */

/* After a crash: the old slot (b, 1.0.0) is active, good and byte-identical;
 * either no trial, or a trial of the complete new bundle in a. boot picks the
 * trial if there is one, else b; cancelling the trial brings b back.
 * Returns whether the install had completed. */
static bool check_after_crash(const char *dir, const char *what)
{
	char sb[PATHLEN];
	fwt_run r;
	cJSON *st = status_json(dir);
	if (strcmp(jstr(st, "active", NULL), "b") != 0 || strcmp(slot_field(st, "b", "status"), "good") != 0 ||
	    strcmp(slot_field(st, "b", "version"), "1.0.0") != 0)
		fail_msg("%s: old slot not active/good: active %s, b %s %s", what, jstr(st, "active", NULL),
			 slot_field(st, "b", "status"), slot_field(st, "b", "version"));
	pathf(sb, "%s/b", dir);
	char *now = fwt_snapshot(sb);
	if (strcmp(now, g.base_b) != 0)
		fail_msg("%s: the old slot's files changed", what);
	free(now);
	bool trial = strcmp(jstr(st, "trial", NULL), "a") == 0;
	if (!trial && strcmp(jstr(st, "trial", NULL), "null") != 0)
		fail_msg("%s: trial is %s", what, jstr(st, "trial", NULL));
	if (!trial && strcmp(slot_field(st, "a", "status"), "empty") != 0)
		fail_msg("%s: slot a is %s without a trial", what, slot_field(st, "a", "status"));
	cJSON_Delete(st);
	if (trial) {
		const char *sv[] = {"status", "--slots", dir, "--verify", NULL};
		run(&r, sv);
		if (r.status != 0)
			fail_msg("%s: the trial's content is not whole: %s", what, r.err);
	}
	char got = boot(dir, NULL, 0);
	if (got != (trial ? 'a' : 'b'))
		fail_msg("%s: boot picked %c", what, got ? got : '-');
	if (trial) {
		const char *rb[] = {"rollback", "--slots", dir, NULL};
		run_ok(&r, 0, rb);
		if (boot(dir, NULL, 0) != 'b')
			fail_msg("%s: the old slot does not boot after cancelling the trial", what);
	}
	/* And the device can still be updated. */
	install(dir, g.b110, 0);
	return trial;
}

static void test_crash_at_failpoints(void **state)
{
	(void)state;
	static const struct {
		unsigned fp, countdown;
	} points[] = {
		{80, 1}, {81, 1}, {81, 17}, {81, 50}, {82, 1}, {82, 3}, {82, 5}, {83, 1}, {84, 1},
		{85, 1}, {86, 1}, {87, 1}, {88, 1}, {89, 1}, {90, 1}, {90, 2}, {91, 1}, {91, 2},
	};
	char dir[PATHLEN], spec[32], what[64];
	fwt_run r;
	for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
		device_copy(dir, "crash-fp");
		snprintf(spec, sizeof(spec), "%u:%u:crash", points[i].fp, points[i].countdown);
		snprintf(what, sizeof(what), "crash at failpoint %s", spec);
		const char *args[] = {"install", "--slots", dir, "--pubkey", g.pub, "--board", BOARD, g.big, NULL};
		fwt_run_tool(&r, KIOSKFW_EXE, spec, args);
		if (r.status != 128 + SIGKILL)
			fail_msg("%s: exit %d, the point was not reached (%s)", what, r.status, r.err);
		bool done = check_after_crash(dir, what);
		/* Only a crash after the final state write leaves a trial. */
		assert_int_equal(done, points[i].fp == 89 || (points[i].fp == 91 && points[i].countdown == 2));
		print_message("%s: %s\n", what, done ? "new slot on trial, old one behind it" : "old slot active");
	}
		/* The same points as errors: install fails (exit 1), the same guarantees hold. */
	static const unsigned error_points[] = {80, 81, 82, 84, 86, 88, 89};
	for (size_t k = 0; k < sizeof(error_points) / sizeof(error_points[0]); k++) {
		unsigned fp = error_points[k];
		device_copy(dir, "error-fp");
		snprintf(spec, sizeof(spec), "%u:1:error", fp);
		snprintf(what, sizeof(what), "error at failpoint %s", spec);
		const char *args[] = {"install", "--slots", dir, "--pubkey", g.pub, "--board", BOARD, g.big, NULL};
		fwt_run_tool(&r, KIOSKFW_EXE, spec, args);
		if (fp != 89 && (r.status != 1 || fwt_lines(r.err) != 1))
			fail_msg("%s: exit %d: %s", what, r.status, r.err);
		check_after_crash(dir, what);
	}
}

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void test_kill_at_random_moments(void **state)
{
	(void)state;
	char dir[PATHLEN], what[64];
	const char *args[] = {"install", "--slots", NULL, "--pubkey", g.pub, "--board", BOARD, g.big, NULL};
	/* How long one install takes here (the quickest of three), to spread the kills over it. */
	int64_t span = INT64_MAX, t0 = 0;
	args[2] = dir;
	for (int i = 0; i < 3; i++) {
		device_copy(dir, "kill-timing");
		t0 = now_us();
		assert_int_equal(fwt_wait(fwt_spawn_tool(KIOSKFW_EXE, NULL, args)), 0);
		if (now_us() - t0 < span)
			span = now_us() - t0;
	}
	unsigned seed = (unsigned)getpid() ^ (unsigned)t0;
	const char *env_seed = getenv("KP_FW_KILL_SEED");
	if (env_seed)
		seed = (unsigned)strtoul(env_seed, NULL, 10);
	srand(seed);
	print_message("install takes %lld us; %d kills, seed %u (KP_FW_KILL_SEED to replay)\n", (long long)span,
		      RANDOM_KILLS, seed);
	int killed = 0, finished = 0, trials = 0, staging = 0, marked = 0;
	for (int i = 0; i < RANDOM_KILLS; i++) {
		device_copy(dir, "kill");
		/* Even kills anywhere in the install; odd ones near its end, where the renames are. */
		double at = (double)rand() / RAND_MAX;
		int64_t delay = (int64_t)((i % 2 ? 0.85 + 0.25 * at : at) * (double)span);
		pid_t pid = fwt_spawn_tool(KIOSKFW_EXE, NULL, args);
		struct timespec ts = {(time_t)(delay / 1000000), (long)(delay % 1000000) * 1000};
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		int st = fwt_wait(pid);
		killed += st == 128 + SIGKILL;
		finished += st == 0;
		if (st == 0)
			span = span * 9 / 10; /* the machine got quicker than measured: aim earlier */
		snprintf(what, sizeof(what), "kill %d after %lld us (exit %d)", i, (long long)delay, st);
		if (st != 0 && st != 128 + SIGKILL)
			fail_msg("%s: unexpected exit", what);
		/* Where the kill landed: while staging, or after the state marked slot a empty. */
		char p[PATHLEN];
		struct stat sst;
		pathf(p, "%s/.staging", dir);
		staging += stat(p, &sst) == 0;
		cJSON *js = status_json(dir);
		marked += strstr(jstr(js, "last_event", NULL), "installing") != NULL;
		cJSON_Delete(js);
		trials += check_after_crash(dir, what);
	}
	print_message("%d killed mid-install (%d while staging, %d after slot a was marked empty), %d finished first, "
		      "%d left a complete trial\n",
		      killed, staging, marked, finished, trials);
	assert_true(killed >= RANDOM_KILLS / 3);
}

/* A crash while recording a boot or a commit leaves the previous record. */
static void test_crash_in_boot_and_commit(void **state)
{
	(void)state;
	char dir[PATHLEN], sf[PATHLEN];
	fwt_run r;
	device_copy(dir, "crash-boot");
	install(dir, g.b110, 0);
	pathf(sf, "%s/state.json", dir);
	static const struct {
		const char *cmd, *spec;
	} cases[] = {
		{"boot", "92:1:crash"}, {"boot", "90:1:crash"}, {"commit", "93:1:crash"}, {"rollback", "94:1:crash"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (strcmp(cases[i].cmd, "boot") != 0)
			assert_int_equal(boot(dir, NULL, 0), 'a'); /* commit/rollback need the trial running */
		char *before = fwt_read_file(sf, NULL);
		const char *args[] = {cases[i].cmd, "--slots", dir, NULL};
		fwt_run_tool(&r, KIOSKFW_EXE, cases[i].spec, args);
		assert_int_equal(r.status, 128 + SIGKILL);
		char *after = fwt_read_file(sf, NULL);
		assert_string_equal(before, after);
		free(before);
		free(after);
	}
	/* 91: the new state is renamed in, the directory not yet synced: the new record stands. */
	const char *bt[] = {"boot", "--slots", dir, NULL};
	fwt_run_tool(&r, KIOSKFW_EXE, "91:1:crash", bt);
	assert_int_equal(r.status, 128 + SIGKILL);
	cJSON *st = status_json(dir);
	assert_string_equal(jstr(st, "booted", NULL), "a");
	assert_int_equal(jint(st, "boot_count"), 3); /* boots 1 and 2 before commit and rollback, then this one */
	cJSON_Delete(st);
}

/* ======== fixture ======== */

static void make_bundle(char *out, const char *name, const char *version, const char *rollback, size_t big)
{
	char dir[PATHLEN], f[PATHLEN], f2[PATHLEN], f3[PATHLEN], f4[PATHLEN], text[64];
	fwt_run r;
	pathf(dir, "%s/src-%s", g.root, name);
	mkdir(dir, 0755);
	pathf(out, "%s/%s.kpfw", g.root, name);
	pathf(f, "%s/kioskpayd", dir);
	pathf(f2, "%s/kioskpay.conf", dir);
	pathf(f3, "%s/kioskctl", dir);
	pathf(f4, "%s/libextra.so", dir);
	if (big) {
		unsigned char *data = malloc(big);
		for (size_t i = 0; i < big; i++)
			data[i] = (unsigned char)(rand() >> 7);
		fwt_write_file(f, data, big);
		fwt_write_file(f2, data + 1, big - 1);
		fwt_write_file(f3, data + 2, big - 2);
		fwt_write_file(f4, data + 3, big - 3);
		free(data);
	} else {
		snprintf(text, sizeof(text), "daemon %s\n", version);
		fwt_write_file(f, text, strlen(text));
		fwt_write_file(f2, "port=5683\n", 10);
		fwt_write_file(f3, "ctl\n", 4);
		fwt_write_file(f4, "lib\n", 4);
	}
	const char *args[] = {"pack", "--key", g.key, "--board", BOARD, "--version", version, "--rollback", rollback, "-o",
			      out, f, f2, f3, f4, NULL};
	run_ok(&r, 0, args);
}

static int setup(void **state)
{
	(void)state;
	char mode[64];
	fwt_run r;
	memset(&g, 0, sizeof(g));
	srand(1);
	fwt_mkdtemp(g.root, sizeof(g.root), "slots");
	pathf(g.keys, "%s/keys", g.root);
	pathf(g.pub, "%s/release.pub", g.keys);
	pathf(g.key, "%s/release.key", g.keys);
	const char *kg[] = {"keygen", "--out", g.keys, NULL};
	run_ok(&r, 0, kg);
	make_bundle(g.b100, "v100", "1.0.0", "0", 0);
	make_bundle(g.b110, "v110", "1.1.0", "0", 0);
	make_bundle(g.b111, "v111", "1.1.1", "1", 0);
	make_bundle(g.big, "v120", "1.2.0", "0", 1024 * 1024);

	/* The template device: 1.0.0 installed (into b), booted, committed. */
	pathf(g.base, "%s/base", g.root);
	install(g.base, g.b100, 0);
	assert_int_equal(boot(g.base, mode, sizeof(mode)), 'b');
	const char *cm[] = {"commit", "--slots", g.base, NULL};
	run_ok(&r, 0, cm);
	char sb[PATHLEN];
	pathf(sb, "%s/b", g.base);
	g.base_b = fwt_snapshot(sb);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	free(g.base_b);
	fwt_rmtree(g.root);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decisions),
		cmocka_unit_test(test_slot_moves),
		cmocka_unit_test(test_state_records),
		cmocka_unit_test(test_install_boot_commit),
		cmocka_unit_test(test_failed_boots_roll_back),
		cmocka_unit_test(test_max_boots_option),
		cmocka_unit_test(test_manual_rollback),
		cmocka_unit_test(test_health_check_gates_commit),
		cmocka_unit_test(test_damaged_trial_not_booted),
		cmocka_unit_test(test_lock_and_missing),
		cmocka_unit_test(test_crash_at_failpoints),
		cmocka_unit_test(test_kill_at_random_moments),
		cmocka_unit_test(test_crash_in_boot_and_commit),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
