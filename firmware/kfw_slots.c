/* kfw_slots.c — kioskfw install, status, commit, rollback and boot: the A/B
 * slot commands a technician and the boot script run on the device. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "kioskfw.h"
#include "slots.h"

#define HEALTH_TIMEOUT_DEFAULT_S 30

/* Open the slots for a command; prints the error. */
static int open_slots(kfw_ctx *ctx, kfw_handler self, const char *dir, unsigned flags, kp_slots **s)
{
	kp_fw_why why;
	if (!dir)
		return kfw_usage_error(ctx, self, "needs --slots DIR");
	kp_err err = kp_slots_open_dir(&ctx->env, dir, flags, s, &why);
	if (err != KP_OK)
		return kfw_fail(ctx, self, kfw_exit_for(err), "%s", why.text);
	return KFW_EXIT_OK;
}

int kfw_install(kfw_ctx *ctx, int argc, char **argv)
{
	const char *dir = NULL, *pubkey = NULL, *keys_dir = NULL, *board = NULL, *maxb = NULL, *maxs = NULL;
	const kfw_opt opts[] = {
		{"--slots", &dir, NULL},   {"--pubkey", &pubkey, NULL},  {"--keys-dir", &keys_dir, NULL},
		{"--board", &board, NULL}, {"--max-boots", &maxb, NULL}, {"--max-size", &maxs, NULL},
	};
	const char *pos[1];
	size_t npos;
	uint64_t max_boots = KP_SLOTS_MAX_BOOTS_DEFAULT, max_size = 0;
	kp_fw_keyring *ring = NULL;
	kp_fw_bundle *b = NULL;
	kp_slots *s = NULL;
	kp_fw_policy pol;
	kp_fw_check chk;
	kp_err err;
	int rc = kfw_parse(ctx, kfw_install, argc, argv, opts, sizeof(opts) / sizeof(opts[0]), pos, 1, &npos);
	if (rc != KFW_EXIT_OK)
		return rc;
	if (npos != 1)
		return kfw_usage_error(ctx, kfw_install, "needs the BUNDLE to install");
	if (!board)
		return kfw_usage_error(ctx, kfw_install, "needs --board B (the board of this device)");
	if (maxb && (!kfw_number(ctx, kfw_install, "--max-boots", maxb, KP_SLOTS_MAX_BOOTS_LIMIT, &max_boots) ||
		     max_boots == 0))
		return max_boots == 0 ? kfw_usage_error(ctx, kfw_install, "--max-boots must be 1..%d",
							 KP_SLOTS_MAX_BOOTS_LIMIT)
				      : KFW_EXIT_USAGE;
	if (maxs && !kfw_number(ctx, kfw_install, "--max-size", maxs, UINT64_MAX / 2, &max_size))
		return KFW_EXIT_USAGE;
	if (!(ring = malloc(sizeof(*ring))))
		return kfw_fail(ctx, kfw_install, KFW_EXIT_FAILED, "out of memory");
	kp_fw_keyring_init(ring);
	if ((rc = kfw_load_keys(ctx, kfw_install, pubkey, keys_dir, ring)) != KFW_EXIT_OK)
		goto out;
	if ((rc = open_slots(ctx, kfw_install, dir, KP_SLOT_DIR_CREATE | KP_SLOT_DIR_LOCK, &s)) != KFW_EXIT_OK)
		goto out;
	kp_slots_policy(s, board, max_size, &pol);
	if ((err = kp_fw_bundle_open(pos[0], ring, &pol, &b, &chk)) != KP_OK ||
	    (err = kp_slots_install(s, b, (uint32_t)max_boots, &chk)) != KP_OK) {
		rc = kfw_refused(ctx, kfw_install, err, &chk);
		goto out;
	}
	const kp_slots_state *st = kp_slots_get_state(s);
	char v[KP_FW_VERSION_TEXT_MAX];
	kp_fw_version_format(&st->slot[st->trial].version, v, sizeof(v));
	printf("installed %s into slot %s: on trial for %u boots; reboot, check health, then commit\n", v,
	       kp_slot_name(st->trial), (unsigned)st->max_boots);
	rc = KFW_EXIT_OK;
out:
	kp_fw_bundle_close(b);
	kp_slots_close(s);
	if (ring) {
		kp_fw_keyring_free(ring);
		free(ring);
	}
	return rc;
}

static void time_text(int64_t ms, char *buf, size_t cap)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	if (ms <= 0 || !gmtime_r(&t, &tm))
		snprintf(buf, cap, "-");
	else
		strftime(buf, cap, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

int kfw_status(kfw_ctx *ctx, int argc, char **argv)
{
	const char *dir = NULL;
	bool verify = false;
	const kfw_opt opts[] = {{"--slots", &dir, NULL}, {"--verify", NULL, &verify}};
	size_t npos;
	kp_slots *s = NULL;
	int rc = kfw_parse(ctx, kfw_status, argc, argv, opts, 2, NULL, 0, &npos);
	if (rc != KFW_EXIT_OK)
		return rc;
	if ((rc = open_slots(ctx, kfw_status, dir, 0, &s)) != KFW_EXIT_OK)
		return rc;
	const kp_slots_state *st = kp_slots_get_state(s);
	rc = KFW_EXIT_OK;
	if (ctx->json) {
		char *json = NULL;
		size_t len = 0;
		if (kp_slots_state_to_json(st, &json, &len) != KP_OK) {
			rc = kfw_fail(ctx, kfw_status, KFW_EXIT_FAILED, "out of memory");
			goto out;
		}
		printf("%s\n", json);
		free(json);
	} else {
		char when[40];
		printf("slots: %s (%s backend)%s\n", dir, kp_slots_backend(s),
		       kp_slots_has_record(s) ? "" : ", no state yet (fresh device)");
		printf("active: %s\nbooted: %s\n", kp_slot_name(st->active), kp_slot_name(st->booted));
		if (st->trial == KP_SLOT_NONE)
			printf("trial: none\n");
		else
			printf("trial: %s, boot %u of %u\n", kp_slot_name(st->trial), (unsigned)st->boot_count,
			       (unsigned)st->max_boots);
		printf("rollback counter: %u\n", (unsigned)st->rollback_counter);
		for (int i = 0; i < KP_SLOT_COUNT; i++) {
			const kp_slot_info *si = &st->slot[i];
			char v[KP_FW_VERSION_TEXT_MAX];
			if (si->status == KP_SLOT_EMPTY) {
				printf("slot %s: empty\n", kp_slot_name((kp_slot_id)i));
				continue;
			}
			kp_fw_version_format(&si->version, v, sizeof(v));
			time_text(si->installed_ms, when, sizeof(when));
			printf("slot %s: %s %s (rollback counter %u, installed %s)\n", kp_slot_name((kp_slot_id)i),
			       kp_slot_status_to_string(si->status), v, (unsigned)si->rollback_counter, when);
		}
		time_text(st->updated_ms, when, sizeof(when));
		printf("last event: %s (%s)\n", st->last_event[0] ? st->last_event : "-", when);
	}
	if (verify) {
		for (int i = 0; i < KP_SLOT_COUNT; i++) {
			kp_fw_why why;
			if (st->slot[i].status == KP_SLOT_EMPTY)
				continue;
			if (kp_slots_check(s, (kp_slot_id)i, true, &why) == KP_OK) {
				if (!ctx->json)
					printf("slot %s: content ok\n", kp_slot_name((kp_slot_id)i));
			} else {
				rc = kfw_fail(ctx, kfw_status, KFW_EXIT_FAILED, "slot %s content damaged: %s",
					      kp_slot_name((kp_slot_id)i), why.text);
			}
		}
	}
out:
	kp_slots_close(s);
	return rc;
}

/* Run cmd with sh -c; 0 if it exited 0 within timeout_s, else prints why. */
static int run_health(kfw_ctx *ctx, const char *cmd, unsigned timeout_s)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		return kfw_fail(ctx, kfw_commit, KFW_EXIT_FAILED, "health check: cannot fork: %s", strerror(errno));
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	int64_t deadline = kp_now_mono(&ctx->env) + (int64_t)timeout_s * 1000;
	int status = 0;
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (r < 0 && errno != EINTR)
			return kfw_fail(ctx, kfw_commit, KFW_EXIT_FAILED, "health check: waitpid: %s", strerror(errno));
		if (kp_now_mono(&ctx->env) >= deadline) {
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			return kfw_fail(ctx, kfw_commit, KFW_EXIT_FAILED,
					"health check \"%s\" did not finish in %u s: not committing", cmd, timeout_s);
		}
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return KFW_EXIT_OK;
	if (WIFEXITED(status))
		return kfw_fail(ctx, kfw_commit, KFW_EXIT_FAILED, "health check \"%s\" exited %d: not committing", cmd,
				WEXITSTATUS(status));
	return kfw_fail(ctx, kfw_commit, KFW_EXIT_FAILED, "health check \"%s\" was killed by signal %d: not committing",
			cmd, WTERMSIG(status));
}

int kfw_commit(kfw_ctx *ctx, int argc, char **argv)
{
	const char *dir = NULL, *health = NULL, *timeout = NULL;
	const kfw_opt opts[] = {{"--slots", &dir, NULL}, {"--health-cmd", &health, NULL}, {"--health-timeout", &timeout, NULL}};
	size_t npos;
	uint64_t timeout_s = HEALTH_TIMEOUT_DEFAULT_S;
	kp_slots *s = NULL;
	kp_fw_why why;
	bool already = false;
	kp_err err;
	int rc = kfw_parse(ctx, kfw_commit, argc, argv, opts, 3, NULL, 0, &npos);
	if (rc != KFW_EXIT_OK)
		return rc;
	if (timeout && (!kfw_number(ctx, kfw_commit, "--health-timeout", timeout, 3600, &timeout_s) || timeout_s == 0))
		return timeout_s == 0 ? kfw_usage_error(ctx, kfw_commit, "--health-timeout must be 1..3600") : KFW_EXIT_USAGE;
	if ((rc = open_slots(ctx, kfw_commit, dir, KP_SLOT_DIR_LOCK, &s)) != KFW_EXIT_OK)
		return rc;
	/* Check there is something to commit before running the health check. */
	kp_slots_state probe = *kp_slots_get_state(s);
	if ((err = kp_slots_decide_commit(&probe, &already, &why)) != KP_OK) {
		rc = kfw_fail(ctx, kfw_commit, KFW_EXIT_FAILED, "%s", why.text);
		goto out;
	}
	if (!already && health && (rc = run_health(ctx, health, (unsigned)timeout_s)) != KFW_EXIT_OK)
		goto out;
	if ((err = kp_slots_commit(s, &already, &why)) != KP_OK) {
		rc = kfw_fail(ctx, kfw_commit, KFW_EXIT_FAILED, "%s", why.text);
		goto out;
	}
	const kp_slots_state *st = kp_slots_get_state(s);
	char v[KP_FW_VERSION_TEXT_MAX];
	kp_fw_version_format(&st->slot[st->active].version, v, sizeof(v));
	if (already)
		printf("slot %s (%s) is already committed\n", kp_slot_name(st->active), v);
	else
		printf("committed slot %s (%s); rollback counter %u\n", kp_slot_name(st->active), v,
		       (unsigned)st->rollback_counter);
	rc = KFW_EXIT_OK;
out:
	kp_slots_close(s);
	return rc;
}

int kfw_rollback(kfw_ctx *ctx, int argc, char **argv)
{
	const char *dir = NULL;
	const kfw_opt opts[] = {{"--slots", &dir, NULL}};
	size_t npos;
	kp_slots *s = NULL;
	kp_fw_why why;
	kp_err err;
	int rc = kfw_parse(ctx, kfw_rollback, argc, argv, opts, 1, NULL, 0, &npos);
	if (rc != KFW_EXIT_OK)
		return rc;
	if ((rc = open_slots(ctx, kfw_rollback, dir, KP_SLOT_DIR_LOCK, &s)) != KFW_EXIT_OK)
		return rc;
	if ((err = kp_slots_rollback(s, &why)) != KP_OK) {
		rc = kfw_fail(ctx, kfw_rollback, KFW_EXIT_FAILED, "%s", why.text);
		goto out;
	}
	printf("%s\n", kp_slots_get_state(s)->last_event);
	rc = KFW_EXIT_OK;
out:
	kp_slots_close(s);
	return rc;
}

int kfw_boot(kfw_ctx *ctx, int argc, char **argv)
{
	const char *dir = NULL;
	const kfw_opt opts[] = {{"--slots", &dir, NULL}};
	size_t npos;
	kp_slots *s = NULL;
	kp_slot_id picked = KP_SLOT_NONE;
	bool rolled_back = false;
	char path[KP_FW_PATH_MAX], v[KP_FW_VERSION_TEXT_MAX], mode[64];
	kp_fw_why why;
	kp_err err;
	int rc = kfw_parse(ctx, kfw_boot, argc, argv, opts, 1, NULL, 0, &npos);
	if (rc != KFW_EXIT_OK)
		return rc;
	if ((rc = open_slots(ctx, kfw_boot, dir, KP_SLOT_DIR_LOCK, &s)) != KFW_EXIT_OK)
		return rc;
	if ((err = kp_slots_boot(s, &picked, &rolled_back, &why)) != KP_OK) {
		rc = kfw_fail(ctx, kfw_boot, err == KP_ERR_NOT_FOUND ? KFW_EXIT_FAILED : kfw_exit_for(err), "%s", why.text);
		goto out;
	}
	const kp_slots_state *st = kp_slots_get_state(s);
	if (kp_slots_location(s, picked, path, sizeof(path)) != KP_OK) {
		rc = kfw_fail(ctx, kfw_boot, KFW_EXIT_FAILED, "slot path too long");
		goto out;
	}
	kp_fw_version_format(&st->slot[picked].version, v, sizeof(v));
	if (picked == st->trial)
		snprintf(mode, sizeof(mode), "trial %u/%u", (unsigned)st->boot_count, (unsigned)st->max_boots);
	else
		snprintf(mode, sizeof(mode), "%s", rolled_back ? "rolled-back" : "committed");
	if (ctx->json) {
		cJSON *o = cJSON_CreateObject();
		if (o && cJSON_AddStringToObject(o, "slot", kp_slot_name(picked)) && cJSON_AddStringToObject(o, "path", path) &&
		    cJSON_AddStringToObject(o, "version", v) && cJSON_AddStringToObject(o, "mode", mode) &&
		    cJSON_AddStringToObject(o, "event", rolled_back ? st->last_event : "")) {
			char *text = cJSON_Print(o);
			if (text)
				printf("%s\n", text);
			free(text);
		}
		cJSON_Delete(o);
	} else {
		printf("slot %s\npath %s\nversion %s\nmode %s\n", kp_slot_name(picked), path, v, mode);
		if (rolled_back)
			printf("event %s\n", st->last_event);
	}
	rc = KFW_EXIT_OK;
out:
	kp_slots_close(s);
	return rc;
}
