/* faults.c — arming, counting and deciding the host simulator's faults (see
 * faults.h). Chaos mode draws from its own seeded xorshift64* so that a run
 * replays from its seed given the same sequence of requests. */
#include "faults.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const close_names[KP_CLOSE__COUNT] = {
	[KP_CLOSE_NONE] = "none",
	[KP_CLOSE_BEFORE_HANDLING] = "close_before_handling",
	[KP_CLOSE_AFTER_HANDLING] = "close_after_handling",
	[KP_CLOSE_BEFORE_REPLY] = "close_before_reply",
	[KP_CLOSE_AFTER_REPLY] = "close_after_reply",
};

static const char *const stat_names[KP_FAULT_STAT__COUNT] = {
	[KP_FAULT_STAT_CLOSE] = "none",
	[KP_CLOSE_BEFORE_HANDLING] = "close_before_handling",
	[KP_CLOSE_AFTER_HANDLING] = "close_after_handling",
	[KP_CLOSE_BEFORE_REPLY] = "close_before_reply",
	[KP_CLOSE_AFTER_REPLY] = "close_after_reply",
	[KP_FAULT_STAT_DROP] = "drop_confirms",
	[KP_FAULT_STAT_DUPLICATE] = "duplicate_confirms",
	[KP_FAULT_STAT_DELAY] = "delay_confirms",
	[KP_FAULT_STAT_REORDER] = "reorder_confirms",
	[KP_FAULT_STAT_REFUND_LATE] = "refund_late",
	[KP_FAULT_STAT_REFUND_REJECT] = "refund_reject",
	[KP_FAULT_STAT_MALFORMED] = "malformed_frame",
};

void kp_faults_init(kp_faults *f)
{
	memset(f, 0, sizeof(*f));
}

const char *kp_close_fault_name(kp_close_fault c)
{
	if ((int)c < 0 || c >= KP_CLOSE__COUNT)
		return "?";
	return close_names[c];
}

kp_host_op kp_faults_op_parse(const char *s)
{
	for (int op = KP_OP_HELLO; op <= KP_OP_PING; op++)
		if (strcmp(s, kp_host_op_str((kp_host_op)op)) == 0)
			return (kp_host_op)op;
	return KP_OP_NONE;
}

static uint64_t rng_next(kp_faults *f)
{
	uint64_t x = f->chaos_rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	f->chaos_rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, 1). */
static double rng_unit(kp_faults *f)
{
	return (double)(rng_next(f) >> 11) * (1.0 / 9007199254740992.0);
}

static bool chaos_hit(kp_faults *f)
{
	return f->chaos && f->chaos_rate > 0 && rng_unit(f) < f->chaos_rate;
}

/* Optional non-negative integer member; def if absent. */
static kp_err get_count(const cJSON *cmd, const char *name, int64_t def, int64_t max, int64_t *out,
			char *why, size_t why_cap)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(cmd, name);
	if (!it) {
		*out = def;
		return KP_OK;
	}
	double v = cJSON_IsNumber(it) ? it->valuedouble : -1;
	if (!cJSON_IsNumber(it) || !isfinite(v) || v != floor(v) || v < 0 || v > (double)max) {
		snprintf(why, why_cap, "%s must be an integer in 0..%lld", name, (long long)max);
		return KP_ERR_INVALID;
	}
	*out = (int64_t)v;
	return KP_OK;
}

kp_err kp_faults_arm(kp_faults *f, const cJSON *cmd, char *why, size_t why_cap)
{
	const cJSON *name_it = cJSON_GetObjectItemCaseSensitive(cmd, "fault");
	const char *name = cJSON_IsString(name_it) ? name_it->valuestring : NULL;
	int64_t count = 0, ms = 0;
	const int64_t max_count = 1000000, max_ms = 24LL * 3600 * 1000;

	if (!name) {
		snprintf(why, why_cap, "fault: missing or not a string");
		return KP_ERR_INVALID;
	}
	if (get_count(cmd, "count", 1, max_count, &count, why, why_cap) != KP_OK ||
	    get_count(cmd, "ms", 0, max_ms, &ms, why, why_cap) != KP_OK)
		return KP_ERR_INVALID;

	if (strcmp(name, "clear") == 0) {
		uint64_t fired[KP_FAULT_STAT__COUNT];
		memcpy(fired, f->fired, sizeof(fired));
		kp_faults_init(f);
		memcpy(f->fired, fired, sizeof(fired));
		return KP_OK;
	}
	for (int c = KP_CLOSE_BEFORE_HANDLING; c < KP_CLOSE__COUNT; c++) {
		if (strcmp(name, close_names[c]) != 0)
			continue;
		kp_host_op op = KP_OP_NONE;
		const cJSON *op_it = cJSON_GetObjectItemCaseSensitive(cmd, "op");
		if (op_it) {
			op = cJSON_IsString(op_it) ? kp_faults_op_parse(op_it->valuestring) : KP_OP_NONE;
			if (op == KP_OP_NONE) {
				snprintf(why, why_cap, "op: not a kiosk request op");
				return KP_ERR_INVALID;
			}
		}
		f->close[c].count = count;
		f->close[c].op = op;
		return KP_OK;
	}
	if (strcmp(name, "drop_confirms") == 0) {
		f->drop_confirms = count;
	} else if (strcmp(name, "duplicate_confirms") == 0) {
		f->duplicate_confirms = count;
	} else if (strcmp(name, "reorder_confirms") == 0) {
		f->reorder_confirms = count;
	} else if (strcmp(name, "delay_confirms") == 0) {
		f->delay_confirms_ms = ms;
	} else if (strcmp(name, "refund_late") == 0) {
		if (ms == 0 && count > 0) {
			snprintf(why, why_cap, "refund_late needs ms > 0");
			return KP_ERR_INVALID;
		}
		f->refund_late_ms = ms;
		f->refund_late_count = count;
	} else if (strcmp(name, "refund_reject") == 0) {
		f->refund_reject = count;
	} else {
		snprintf(why, why_cap, "unknown fault '%.40s'", name);
		return KP_ERR_INVALID;
	}
	return KP_OK;
}

kp_err kp_faults_chaos(kp_faults *f, uint64_t seed, double rate)
{
	if (!isfinite(rate) || rate < 0 || rate > 1)
		return KP_ERR_INVALID;
	f->chaos = rate > 0;
	f->chaos_rate = rate;
	f->chaos_seed = seed;
	f->chaos_rng = seed ? seed : 0x9E3779B97F4A7C15ULL;
	return KP_OK;
}

kp_close_fault kp_faults_take_close(kp_faults *f, kp_host_op op)
{
	for (int c = KP_CLOSE_BEFORE_HANDLING; c < KP_CLOSE__COUNT; c++) {
		if (f->close[c].count > 0 && (f->close[c].op == KP_OP_NONE || f->close[c].op == op)) {
			f->close[c].count--;
			f->fired[c]++;
			return (kp_close_fault)c;
		}
	}
	if (chaos_hit(f)) {
		kp_close_fault c = (kp_close_fault)(KP_CLOSE_BEFORE_HANDLING + (int)(rng_next(f) % 4));
		f->fired[c]++;
		return c;
	}
	return KP_CLOSE_NONE;
}

kp_confirm_fault kp_faults_take_confirm(kp_faults *f)
{
	if (f->drop_confirms > 0) {
		f->drop_confirms--;
		f->fired[KP_FAULT_STAT_DROP]++;
		return KP_CONFIRM_DROP;
	}
	if (f->duplicate_confirms > 0) {
		f->duplicate_confirms--;
		f->fired[KP_FAULT_STAT_DUPLICATE]++;
		return KP_CONFIRM_DUPLICATE;
	}
	if (chaos_hit(f)) {
		bool drop = rng_next(f) & 1;
		f->fired[drop ? KP_FAULT_STAT_DROP : KP_FAULT_STAT_DUPLICATE]++;
		return drop ? KP_CONFIRM_DROP : KP_CONFIRM_DUPLICATE;
	}
	return KP_CONFIRM_SEND;
}

bool kp_faults_take_reorder(kp_faults *f)
{
	if (f->reorder_confirms <= 0)
		return false;
	f->reorder_confirms--;
	f->fired[KP_FAULT_STAT_REORDER]++;
	return true;
}

void kp_faults_take_refund(kp_faults *f, int64_t *late_ms, bool *reject)
{
	*late_ms = 0;
	*reject = false;
	if (f->refund_late_count > 0 && f->refund_late_ms > 0) {
		f->refund_late_count--;
		f->fired[KP_FAULT_STAT_REFUND_LATE]++;
		*late_ms = f->refund_late_ms;
	} else if (chaos_hit(f)) {
		f->fired[KP_FAULT_STAT_REFUND_LATE]++;
		*late_ms = 1000;
	}
	if (f->refund_reject > 0) {
		f->refund_reject--;
		f->fired[KP_FAULT_STAT_REFUND_REJECT]++;
		*reject = true;
	}
}

cJSON *kp_faults_json(const kp_faults *f)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *armed = cJSON_AddObjectToObject(o, "armed");
	cJSON *fired = cJSON_AddObjectToObject(o, "fired");
	if (!o || !armed || !fired) {
		cJSON_Delete(o);
		return NULL;
	}
	bool ok = true;
	for (int c = KP_CLOSE_BEFORE_HANDLING; c < KP_CLOSE__COUNT; c++) {
		cJSON *e = cJSON_AddObjectToObject(armed, close_names[c]);
		ok = ok && e && cJSON_AddNumberToObject(e, "count", (double)f->close[c].count) &&
		     cJSON_AddStringToObject(e, "op", f->close[c].op == KP_OP_NONE
							  ? "any" : kp_host_op_str(f->close[c].op));
	}
	ok = ok && cJSON_AddNumberToObject(armed, "drop_confirms", (double)f->drop_confirms) &&
	     cJSON_AddNumberToObject(armed, "duplicate_confirms", (double)f->duplicate_confirms) &&
	     cJSON_AddNumberToObject(armed, "reorder_confirms", (double)f->reorder_confirms) &&
	     cJSON_AddNumberToObject(armed, "delay_confirms_ms", (double)f->delay_confirms_ms) &&
	     cJSON_AddNumberToObject(armed, "refund_late_ms", (double)f->refund_late_ms) &&
	     cJSON_AddNumberToObject(armed, "refund_late_count", (double)f->refund_late_count) &&
	     cJSON_AddNumberToObject(armed, "refund_reject", (double)f->refund_reject) &&
	     cJSON_AddBoolToObject(armed, "chaos", f->chaos) &&
	     cJSON_AddNumberToObject(armed, "chaos_rate", f->chaos_rate) &&
	     cJSON_AddNumberToObject(armed, "chaos_seed", (double)f->chaos_seed);
	for (int s = KP_CLOSE_BEFORE_HANDLING; s < KP_FAULT_STAT__COUNT; s++)
		ok = ok && cJSON_AddNumberToObject(fired, stat_names[s], (double)f->fired[s]);
	if (!ok) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}
