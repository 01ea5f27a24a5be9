/* slots.c — the A/B state machine and the install/boot/commit/rollback steps
 * around it. Every step computes the new state on a copy, stores it through
 * the backend (atomic, durable), and only then adopts it; the crash-safety
 * argument for install is written out at kp_slots_install. */
#include "slots.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kp_failpoint.h"

struct kp_slots {
	const kp_env *env;
	const kp_slot_ops *ops;
	void *be;
	bool has_record;
	kp_slots_state state;
};

static const char *const status_names[] = {
	[KP_SLOT_EMPTY] = "empty",
	[KP_SLOT_TRIAL] = "trial",
	[KP_SLOT_GOOD] = "good",
	[KP_SLOT_BAD] = "bad",
};

const char *kp_slot_status_to_string(kp_slot_status s)
{
	if ((unsigned)s >= sizeof(status_names) / sizeof(status_names[0]))
		return "unknown";
	return status_names[s];
}

kp_err kp_slot_status_from_string(const char *text, kp_slot_status *out)
{
	for (size_t i = 0; text && i < sizeof(status_names) / sizeof(status_names[0]); i++)
		if (strcmp(text, status_names[i]) == 0) {
			*out = (kp_slot_status)i;
			return KP_OK;
		}
	return KP_ERR_INVALID;
}

const char *kp_slot_name(kp_slot_id slot)
{
	return slot == KP_SLOT_A ? "a" : slot == KP_SLOT_B ? "b" : "none";
}

kp_err kp_slot_from_name(const char *text, kp_slot_id *out)
{
	if (text && strcmp(text, "a") == 0)
		*out = KP_SLOT_A;
	else if (text && strcmp(text, "b") == 0)
		*out = KP_SLOT_B;
	else
		return KP_ERR_INVALID;
	return KP_OK;
}

static kp_slot_id other(kp_slot_id s)
{
	return s == KP_SLOT_A ? KP_SLOT_B : KP_SLOT_A;
}

void kp_slots_state_default(kp_slots_state *st)
{
	memset(st, 0, sizeof(*st));
	st->active = KP_SLOT_A;
	st->trial = KP_SLOT_NONE;
	st->booted = KP_SLOT_A;
	st->max_boots = KP_SLOTS_MAX_BOOTS_DEFAULT;
	st->slot[KP_SLOT_A].status = KP_SLOT_EMPTY;
	st->slot[KP_SLOT_B].status = KP_SLOT_EMPTY;
}

kp_err kp_slot_move(kp_slot_info *slot, kp_slot_status to)
{
	bool ok = false;
	switch (slot->status) {
	case KP_SLOT_EMPTY:
		ok = to == KP_SLOT_TRIAL;
		break;
	case KP_SLOT_TRIAL:
		ok = to == KP_SLOT_GOOD || to == KP_SLOT_BAD || to == KP_SLOT_EMPTY;
		break;
	case KP_SLOT_GOOD:
		ok = to == KP_SLOT_EMPTY || to == KP_SLOT_BAD;
		break;
	case KP_SLOT_BAD:
		ok = to == KP_SLOT_EMPTY;
		break;
	}
	if (!ok)
		return KP_ERR_ILLEGAL_MOVE;
	slot->status = to;
	if (to == KP_SLOT_EMPTY)
		memset(slot, 0, sizeof(*slot)); /* status EMPTY is 0 */
	return KP_OK;
}

static void event(kp_slots_state *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void event(kp_slots_state *st, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(st->last_event, sizeof(st->last_event), fmt, ap);
	va_end(ap);
}

static void vtext(const kp_slot_info *s, char *buf, size_t cap)
{
	if (s->status == KP_SLOT_EMPTY)
		snprintf(buf, cap, "empty");
	else
		kp_fw_version_format(&s->version, buf, cap);
}

/* ---- JSON ---- */

static bool get_uint(const cJSON *obj, const char *key, double max, uint64_t *out)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
	if (!cJSON_IsNumber(it))
		return false;
	double d = it->valuedouble;
	if (!isfinite(d) || d < 0 || d > max || floor(d) != d)
		return false;
	*out = (uint64_t)d;
	return true;
}

static kp_err parse_slot(const cJSON *slots, kp_slot_id id, kp_slot_info *out, kp_fw_why *why)
{
	const cJSON *o = cJSON_GetObjectItemCaseSensitive(slots, kp_slot_name(id));
	const cJSON *status = cJSON_GetObjectItemCaseSensitive(o, "status");
	const cJSON *version = cJSON_GetObjectItemCaseSensitive(o, "version");
	uint64_t u;
	memset(out, 0, sizeof(*out));
	if (!cJSON_IsObject(o) || !cJSON_IsString(status) ||
	    kp_slot_status_from_string(status->valuestring, &out->status) != KP_OK)
		return kp_fw_fail(why, KP_ERR_CORRUPT, "state: slot %s has no valid status", kp_slot_name(id));
	if (out->status == KP_SLOT_EMPTY)
		return KP_OK;
	if (!cJSON_IsString(version) || kp_fw_version_parse(version->valuestring, &out->version) != KP_OK)
		return kp_fw_fail(why, KP_ERR_CORRUPT, "state: slot %s has no valid version", kp_slot_name(id));
	if (!get_uint(o, "rollback_counter", UINT32_MAX, &u))
		return kp_fw_fail(why, KP_ERR_CORRUPT, "state: slot %s has no valid rollback_counter", kp_slot_name(id));
	out->rollback_counter = (uint32_t)u;
	if (!get_uint(o, "installed_ms", 9007199254740992.0, &u))
		return kp_fw_fail(why, KP_ERR_CORRUPT, "state: slot %s has no valid installed_ms", kp_slot_name(id));
	out->installed_ms = (int64_t)u;
	return KP_OK;
}

kp_err kp_slots_state_parse(const char *json, size_t len, kp_slots_state *st, kp_fw_why *why)
{
	kp_err err = KP_ERR_CORRUPT;
	cJSON *root = cJSON_ParseWithLength(json, len);
	kp_slots_state s;
	uint64_t u;

	kp_slots_state_default(&s);
	if (!cJSON_IsObject(root)) {
		err = kp_fw_fail(why, KP_ERR_CORRUPT, "state: not a JSON object");
		goto out;
	}
	if (!get_uint(root, "format", 1000, &u) || u != 1) {
		err = kp_fw_fail(why, KP_ERR_CORRUPT, "state: format is not 1");
		goto out;
	}
	const cJSON *active = cJSON_GetObjectItemCaseSensitive(root, "active");
	const cJSON *trial = cJSON_GetObjectItemCaseSensitive(root, "trial");
	const cJSON *booted = cJSON_GetObjectItemCaseSensitive(root, "booted");
	const cJSON *ev = cJSON_GetObjectItemCaseSensitive(root, "last_event");
	if (!cJSON_IsString(active) || kp_slot_from_name(active->valuestring, &s.active) != KP_OK ||
	    !cJSON_IsString(booted) || kp_slot_from_name(booted->valuestring, &s.booted) != KP_OK) {
		err = kp_fw_fail(why, KP_ERR_CORRUPT, "state: active and booted must be \"a\" or \"b\"");
		goto out;
	}
	if (cJSON_IsNull(trial))
		s.trial = KP_SLOT_NONE;
	else if (!cJSON_IsString(trial) || kp_slot_from_name(trial->valuestring, &s.trial) != KP_OK) {
		err = kp_fw_fail(why, KP_ERR_CORRUPT, "state: trial must be \"a\", \"b\" or null");
		goto out;
	}
	if (!get_uint(root, "max_boots", KP_SLOTS_MAX_BOOTS_LIMIT, &u) || u == 0) {
		err = kp_fw_fail(why, KP_ERR_CORRUPT, "state: max_boots is not 1..%d", KP_SLOTS_MAX_BOOTS_LIMIT);
		goto out;
	}
	s.max_boots = (uint32_t)u;
	if (!get_uint(root, "boot_count", s.max_boots, &u)) {
		err = kp_fw_fail(why, KP_ERR_CORRUPT, "state: boot_count is not 0..max_boots");
		goto out;
	}
	s.boot_count = (uint32_t)u;
	if (!get_uint(root, "rollback_counter", UINT32_MAX, &u)) {
		err = kp_fw_fail(why, KP_ERR_CORRUPT, "state: rollback_counter is not a 32-bit integer");
		goto out;
	}
	s.rollback_counter = (uint32_t)u;
	if (get_uint(root, "updated_ms", 9007199254740992.0, &u))
		s.updated_ms = (int64_t)u;
	if (cJSON_IsString(ev))
		snprintf(s.last_event, sizeof(s.last_event), "%s", ev->valuestring);
	const cJSON *slots = cJSON_GetObjectItemCaseSensitive(root, "slots");
	for (int i = 0; i < KP_SLOT_COUNT; i++)
		if ((err = parse_slot(slots, (kp_slot_id)i, &s.slot[i], why)) != KP_OK)
			goto out;
	/* Invariants: the trial slot and only it has status trial; it is not the active one. */
	for (int i = 0; i < KP_SLOT_COUNT; i++)
		if ((s.slot[i].status == KP_SLOT_TRIAL) != (s.trial == (kp_slot_id)i)) {
			err = kp_fw_fail(why, KP_ERR_CORRUPT, "state: slot %s status %s does not match trial %s",
					 kp_slot_name((kp_slot_id)i), kp_slot_status_to_string(s.slot[i].status),
					 kp_slot_name(s.trial));
			goto out;
		}
	if (s.trial == s.active) {
		err = kp_fw_fail(why, KP_ERR_CORRUPT, "state: the active slot is also on trial");
		goto out;
	}
	*st = s;
	err = KP_OK;
out:
	cJSON_Delete(root);
	return err;
}

kp_err kp_slots_state_to_json(const kp_slots_state *st, char **json, size_t *len)
{
	char v[KP_FW_VERSION_TEXT_MAX];
	kp_err err = KP_ERR_NOMEM;
	cJSON *root = cJSON_CreateObject(), *slots = NULL;
	*json = NULL;
	if (!root || !cJSON_AddNumberToObject(root, "format", 1) ||
	    !cJSON_AddStringToObject(root, "active", kp_slot_name(st->active)) ||
	    !(st->trial == KP_SLOT_NONE ? cJSON_AddNullToObject(root, "trial")
					: cJSON_AddStringToObject(root, "trial", kp_slot_name(st->trial))) ||
	    !cJSON_AddStringToObject(root, "booted", kp_slot_name(st->booted)) ||
	    !cJSON_AddNumberToObject(root, "boot_count", st->boot_count) ||
	    !cJSON_AddNumberToObject(root, "max_boots", st->max_boots) ||
	    !cJSON_AddNumberToObject(root, "rollback_counter", st->rollback_counter) ||
	    !cJSON_AddNumberToObject(root, "updated_ms", (double)st->updated_ms) ||
	    !cJSON_AddStringToObject(root, "last_event", st->last_event) ||
	    !(slots = cJSON_AddObjectToObject(root, "slots")))
		goto out;
	for (int i = 0; i < KP_SLOT_COUNT; i++) {
		const kp_slot_info *si = &st->slot[i];
		cJSON *o = cJSON_AddObjectToObject(slots, kp_slot_name((kp_slot_id)i));
		if (!o || !cJSON_AddStringToObject(o, "status", kp_slot_status_to_string(si->status)))
			goto out;
		if (si->status == KP_SLOT_EMPTY)
			continue;
		kp_fw_version_format(&si->version, v, sizeof(v));
		if (!cJSON_AddStringToObject(o, "version", v) ||
		    !cJSON_AddNumberToObject(o, "rollback_counter", si->rollback_counter) ||
		    !cJSON_AddNumberToObject(o, "installed_ms", (double)si->installed_ms))
			goto out;
	}
	if (!(*json = cJSON_Print(root)))
		goto out;
	*len = strlen(*json);
	err = KP_OK;
out:
	cJSON_Delete(root);
	return err;
}

/* ---- decisions ---- */

kp_err kp_slots_decide_boot(kp_slots_state *st, kp_slot_id *picked, bool *rolled_back, kp_fw_why *why)
{
	char v[KP_FW_VERSION_TEXT_MAX];
	kp_err err;
	*rolled_back = false;
	*picked = KP_SLOT_NONE;
	if (st->trial != KP_SLOT_NONE) {
		kp_slot_id t = st->trial;
		if (st->boot_count < st->max_boots) {
			st->boot_count++;
			st->booted = t;
			*picked = t;
			return KP_OK;
		}
		vtext(&st->slot[t], v, sizeof(v));
		if ((err = kp_slot_move(&st->slot[t], KP_SLOT_BAD)) != KP_OK)
			return kp_fw_fail(why, err, "slot %s: cannot mark it bad", kp_slot_name(t));
		event(st, "slot %s (%s) failed %u boots without a commit: rolled back to slot %s", kp_slot_name(t), v,
		      (unsigned)st->boot_count, kp_slot_name(st->active));
		st->trial = KP_SLOT_NONE;
		st->boot_count = 0;
		*rolled_back = true;
	}
	if (st->slot[st->active].status != KP_SLOT_GOOD)
		return kp_fw_fail(why, KP_ERR_NOT_FOUND, "no bootable slot: slot %s is %s and nothing else is committed",
				  kp_slot_name(st->active), kp_slot_status_to_string(st->slot[st->active].status));
	st->booted = st->active;
	*picked = st->active;
	return KP_OK;
}

kp_err kp_slots_decide_commit(kp_slots_state *st, bool *already, kp_fw_why *why)
{
	char v[KP_FW_VERSION_TEXT_MAX];
	kp_err err;
	*already = false;
	if (st->trial == KP_SLOT_NONE) {
		if (st->booted == st->active && st->slot[st->active].status == KP_SLOT_GOOD) {
			*already = true;
			return KP_OK;
		}
		return kp_fw_fail(why, KP_ERR_STATE, "nothing to commit: no slot is on trial");
	}
	kp_slot_id t = st->trial;
	if (st->booted != t)
		return kp_fw_fail(why, KP_ERR_STATE,
				  "slot %s is on trial but not running: boot it and check its health before committing",
				  kp_slot_name(t));
	if ((err = kp_slot_move(&st->slot[t], KP_SLOT_GOOD)) != KP_OK)
		return kp_fw_fail(why, err, "slot %s: cannot mark it good", kp_slot_name(t));
	vtext(&st->slot[t], v, sizeof(v));
	st->active = t;
	st->trial = KP_SLOT_NONE;
	st->boot_count = 0;
	if (st->slot[t].rollback_counter > st->rollback_counter)
		st->rollback_counter = st->slot[t].rollback_counter;
	event(st, "committed slot %s (%s); rollback counter %u", kp_slot_name(t), v, (unsigned)st->rollback_counter);
	return KP_OK;
}

kp_err kp_slots_decide_rollback(kp_slots_state *st, kp_fw_why *why)
{
	char v[KP_FW_VERSION_TEXT_MAX];
	kp_err err;
	if (st->trial != KP_SLOT_NONE) {
		kp_slot_id t = st->trial;
		vtext(&st->slot[t], v, sizeof(v));
		if ((err = kp_slot_move(&st->slot[t], KP_SLOT_BAD)) != KP_OK)
			return kp_fw_fail(why, err, "slot %s: cannot mark it bad", kp_slot_name(t));
		st->trial = KP_SLOT_NONE;
		st->boot_count = 0;
		event(st, "trial of slot %s (%s) cancelled by hand; next boot: slot %s", kp_slot_name(t), v,
		      kp_slot_name(st->active));
		return KP_OK;
	}
	kp_slot_id o = other(st->active);
	const kp_slot_info *si = &st->slot[o];
	if (si->status != KP_SLOT_GOOD)
		return kp_fw_fail(why, KP_ERR_STATE, "nothing to roll back to: slot %s is %s", kp_slot_name(o),
				  kp_slot_status_to_string(si->status));
	if (si->rollback_counter < st->rollback_counter)
		return kp_fw_fail(why, KP_ERR_STATE,
				  "slot %s has rollback counter %u, below the device's %u: rolling back to it is refused",
				  kp_slot_name(o), (unsigned)si->rollback_counter, (unsigned)st->rollback_counter);
	vtext(si, v, sizeof(v));
	st->active = o;
	event(st, "rolled back by hand to slot %s (%s); next boot: slot %s", kp_slot_name(o), v, kp_slot_name(o));
	return KP_OK;
}

kp_err kp_slots_decide_install(const kp_slots_state *st, kp_slot_id *target, kp_fw_why *why)
{
	kp_slot_id t = other(st->active);
	if (t == st->booted)
		return kp_fw_fail(why, KP_ERR_STATE,
				  "slot %s is running (%s): commit it, or roll back and boot, before installing again",
				  kp_slot_name(t), st->trial == t ? "on trial" : "not the active slot");
	*target = t;
	return KP_OK;
}

/* ---- through the backend ---- */

kp_err kp_slots_open_dir(const kp_env *env, const char *dir, unsigned flags, kp_slots **out, kp_fw_why *why)
{
	char *buf = NULL;
	size_t len = 0;
	kp_err err;
	kp_slots *s = calloc(1, sizeof(*s));
	*out = NULL;
	if (!s || !(buf = malloc(KP_SLOT_STATE_MAX))) {
		err = kp_fw_fail(why, KP_ERR_NOMEM, "out of memory");
		goto out;
	}
	s->env = env;
	kp_slots_state_default(&s->state);
	if ((err = kp_slot_dir_open(dir, flags, &s->ops, &s->be, why)) != KP_OK)
		goto out;
	err = s->ops->state_load(s->be, buf, KP_SLOT_STATE_MAX, &len, why);
	if (err == KP_OK) {
		if ((err = kp_slots_state_parse(buf, len, &s->state, why)) != KP_OK)
			goto out;
		s->has_record = true;
	} else if (err != KP_ERR_NOT_FOUND) {
		goto out;
	}
	*out = s;
	s = NULL;
	err = KP_OK;
out:
	free(buf);
	kp_slots_close(s);
	return err;
}

void kp_slots_close(kp_slots *s)
{
	if (!s)
		return;
	if (s->ops)
		s->ops->close(s->be);
	free(s);
}

const kp_slots_state *kp_slots_get_state(const kp_slots *s)
{
	return &s->state;
}

bool kp_slots_has_record(const kp_slots *s)
{
	return s->has_record;
}

const char *kp_slots_backend(const kp_slots *s)
{
	return s->ops->name;
}

void kp_slots_policy(const kp_slots *s, const char *board, uint64_t max_size, kp_fw_policy *policy)
{
	const kp_slot_info *a = &s->state.slot[s->state.active];
	memset(policy, 0, sizeof(*policy));
	policy->board = board;
	policy->max_size = max_size;
	policy->has_installed = a->status == KP_SLOT_GOOD;
	policy->installed = a->version;
	policy->rollback_counter = s->state.rollback_counter;
}

/* Store st through the backend, then adopt it. */
static kp_err store(kp_slots *s, kp_slots_state *st, kp_fw_why *why)
{
	char *json = NULL;
	size_t len = 0;
	st->updated_ms = kp_now_wall(s->env);
	kp_err err = kp_slots_state_to_json(st, &json, &len);
	if (err != KP_OK)
		return kp_fw_fail(why, err, "cannot encode the slot state");
	err = s->ops->state_store(s->be, json, len, why);
	free(json);
	if (err != KP_OK)
		return err;
	s->state = *st;
	s->has_record = true;
	return KP_OK;
}

/* The sink that copies payloads into the backend's staging area. */
static kp_err sink_begin(void *ctx, const kp_fw_payload *p, kp_fw_why *why)
{
	kp_slots *s = ctx;
	return s->ops->stage_open(s->be, p->name, p->size, why);
}

static kp_err sink_write(void *ctx, const void *buf, size_t len, kp_fw_why *why)
{
	kp_slots *s = ctx;
	return s->ops->stage_write(s->be, buf, len, why);
}

static kp_err sink_end(void *ctx, const kp_fw_payload *p, kp_fw_why *why)
{
	kp_slots *s = ctx;
	(void)p;
	return s->ops->stage_close(s->be, why);
}

/* Crash safety, step by step (failpoints 80-89 sit between the steps):
 *  1. staging: payloads and the manifest copy go to a staging area that no
 *     state names. A crash leaves leftovers that the next install removes.
 *  2. the state marks the target slot empty (durable). From here on the
 *     target's old content is not trusted, and nothing boots it.
 *  3. the backend swaps the staged content in (renames + directory fsyncs).
 *     A crash leaves the target empty in the state: the active slot boots.
 *  4. the state marks the target trial with its version (durable). A crash
 *     before it: as in 3; after it: the trial boots, with the active slot to
 *     fall back to.
 * The active slot is never touched, and the state always names it. */
kp_err kp_slots_install(kp_slots *s, kp_fw_bundle *b, uint32_t max_boots, kp_fw_check *chk)
{
	const kp_fw_manifest *m = kp_fw_bundle_manifest(b);
	kp_fw_sink sink = {sink_begin, sink_write, sink_end, s};
	kp_slots_state st = s->state;
	char v[KP_FW_VERSION_TEXT_MAX];
	char *mjson = NULL;
	size_t mlen = 0;
	kp_slot_id target = KP_SLOT_NONE;
	bool staged = false;
	kp_err err;

	chk->refusal = KP_FW_ACCEPTED;
	chk->why.text[0] = 0;
	kp_fw_version_format(&m->version, v, sizeof(v));
	if (max_boots == 0 || max_boots > KP_SLOTS_MAX_BOOTS_LIMIT) {
		err = kp_fw_fail(&chk->why, KP_ERR_INVALID, "max boots %u is not 1..%d", (unsigned)max_boots,
				 KP_SLOTS_MAX_BOOTS_LIMIT);
		goto out;
	}
	if ((err = kp_slots_decide_install(&st, &target, &chk->why)) != KP_OK)
		goto out;

	/* 1. staging */
	staged = true; /* abort is safe even if begin fails half-way */
	if ((err = s->ops->stage_begin(s->be, target, &chk->why)) != KP_OK)
		goto out;
	if ((err = kp_fw_bundle_read_payloads(b, &sink, chk)) != KP_OK)
		goto out;
	if ((err = kp_fw_manifest_to_json(m, &mjson, &mlen)) != KP_OK) {
		err = kp_fw_fail(&chk->why, err, "cannot encode the manifest copy");
		goto out;
	}
	if ((err = s->ops->stage_open(s->be, KP_SLOT_MANIFEST_NAME, mlen, &chk->why)) != KP_OK ||
	    (err = s->ops->stage_write(s->be, mjson, mlen, &chk->why)) != KP_OK ||
	    (err = s->ops->stage_close(s->be, &chk->why)) != KP_OK)
		goto out;
	if (KP_FAILPOINT(83)) {
		err = kp_fw_fail(&chk->why, KP_ERR_FAILPOINT, "failpoint 83 after staging");
		goto out;
	}

	/* 2. the target is empty from now on */
	if (st.trial == target)
		st.trial = KP_SLOT_NONE;
	if (st.slot[target].status != KP_SLOT_EMPTY && (err = kp_slot_move(&st.slot[target], KP_SLOT_EMPTY)) != KP_OK) {
		err = kp_fw_fail(&chk->why, err, "slot %s cannot be emptied", kp_slot_name(target));
		goto out;
	}
	st.boot_count = 0;
	event(&st, "installing %s into slot %s", v, kp_slot_name(target));
	if ((err = store(s, &st, &chk->why)) != KP_OK)
		goto out;
	if (KP_FAILPOINT(84)) {
		err = kp_fw_fail(&chk->why, KP_ERR_FAILPOINT, "failpoint 84 after emptying slot %s", kp_slot_name(target));
		goto out;
	}

	/* 3. swap the content in */
	if ((err = s->ops->stage_commit(s->be, target, &chk->why)) != KP_OK)
		goto out;
	staged = false;
	if (KP_FAILPOINT(88)) {
		err = kp_fw_fail(&chk->why, KP_ERR_FAILPOINT, "failpoint 88 before marking slot %s trial",
				 kp_slot_name(target));
		goto out;
	}

	/* 4. on trial */
	if ((err = kp_slot_move(&st.slot[target], KP_SLOT_TRIAL)) != KP_OK) {
		err = kp_fw_fail(&chk->why, err, "slot %s cannot go on trial", kp_slot_name(target));
		goto out;
	}
	st.slot[target].version = m->version;
	st.slot[target].rollback_counter = m->rollback_counter;
	st.slot[target].installed_ms = kp_now_wall(s->env);
	st.trial = target;
	st.boot_count = 0;
	st.max_boots = max_boots;
	event(&st, "installed %s into slot %s: on trial for %u boots", v, kp_slot_name(target), (unsigned)max_boots);
	if ((err = store(s, &st, &chk->why)) != KP_OK)
		goto out;
	if (KP_FAILPOINT(89)) {
		err = kp_fw_fail(&chk->why, KP_ERR_FAILPOINT, "failpoint 89 after installing");
		goto out;
	}
	err = KP_OK;
out:
	if (staged)
		s->ops->stage_abort(s->be, target);
	free(mjson);
	return err;
}

kp_err kp_slots_boot(kp_slots *s, kp_slot_id *picked, bool *rolled_back, kp_fw_why *why)
{
	kp_slots_state st = s->state;
	kp_fw_why damage;
	kp_err err = KP_OK;
	bool rb = false;
	*rolled_back = false;
	*picked = KP_SLOT_NONE;
	why->text[0] = 0;
	/* At most: trial damaged, active damaged, then the other slot. */
	for (int round = 0; round < 3; round++) {
		kp_slot_id p;
		if ((err = kp_slots_decide_boot(&st, &p, &rb, why)) != KP_OK)
			break;
		*rolled_back = *rolled_back || rb;
		if (s->ops->slot_check(s->be, p, false, &damage) == KP_OK) {
			*picked = p;
			break;
		}
		err = KP_ERR_NOT_FOUND;
		if (p == st.trial) {
			if (kp_slot_move(&st.slot[p], KP_SLOT_BAD) != KP_OK)
				break;
			st.trial = KP_SLOT_NONE;
			st.boot_count = 0;
			*rolled_back = true;
			event(&st, "slot %s on trial is damaged (%s): booting slot %s", kp_slot_name(p), damage.text,
			      kp_slot_name(st.active));
			continue;
		}
		/* The active slot is damaged: fall back to the other one if it is good. */
		if (kp_slot_move(&st.slot[p], KP_SLOT_BAD) != KP_OK)
			break;
		event(&st, "slot %s is damaged (%s)", kp_slot_name(p), damage.text);
		if (st.slot[other(p)].status != KP_SLOT_GOOD) {
			err = kp_fw_fail(why, KP_ERR_NOT_FOUND, "no bootable slot: %s", damage.text);
			break;
		}
		st.active = other(p);
		*rolled_back = true;
	}
	if (err == KP_ERR_NOT_FOUND && why->text[0] == 0)
		kp_fw_fail(why, err, "no bootable slot");
	if (memcmp(&st, &s->state, sizeof(st)) == 0)
		return err;
	if (KP_FAILPOINT(92))
		return kp_fw_fail(why, KP_ERR_FAILPOINT, "failpoint 92 before recording the boot");
	/* Record even a failed boot: a rolled-back or damaged slot stays marked. */
	kp_fw_why store_why;
	kp_err serr = store(s, &st, &store_why);
	if (serr != KP_OK && err == KP_OK) {
		*why = store_why;
		return serr;
	}
	return err;
}

kp_err kp_slots_commit(kp_slots *s, bool *already, kp_fw_why *why)
{
	kp_slots_state st = s->state;
	kp_err err = kp_slots_decide_commit(&st, already, why);
	if (err != KP_OK || *already)
		return err;
	if (KP_FAILPOINT(93))
		return kp_fw_fail(why, KP_ERR_FAILPOINT, "failpoint 93 before recording the commit");
	return store(s, &st, why);
}

kp_err kp_slots_rollback(kp_slots *s, kp_fw_why *why)
{
	kp_slots_state st = s->state;
	kp_err err = kp_slots_decide_rollback(&st, why);
	if (err != KP_OK)
		return err;
	if (KP_FAILPOINT(94))
		return kp_fw_fail(why, KP_ERR_FAILPOINT, "failpoint 94 before recording the rollback");
	return store(s, &st, why);
}

kp_err kp_slots_check(kp_slots *s, kp_slot_id slot, bool hashes, kp_fw_why *why)
{
	return s->ops->slot_check(s->be, slot, hashes, why);
}

kp_err kp_slots_location(kp_slots *s, kp_slot_id slot, char *buf, size_t cap)
{
	return s->ops->slot_location(s->be, slot, buf, cap);
}
