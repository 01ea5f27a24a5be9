/* kp_failpoint.c — the failpoint table. Global on purpose: it is a test hook
 * that the code under test must not have to carry around. */
#include "kp_failpoint.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fp {
	unsigned countdown; /* 0 = not armed */
	unsigned times;     /* remaining fires after the first; 0 = unlimited */
	bool once_only;
	kp_fp_action action;
	unsigned hits;
};

bool kp_failpoints_armed;
void (*kp_failpoint_crash_hook)(void);
static struct fp fps[KP_FAILPOINT_MAX];

bool kp_failpoint_hit(unsigned n)
{
	if (n >= KP_FAILPOINT_MAX)
		return false;
	struct fp *p = &fps[n];
	p->hits++;
	if (p->countdown == 0)
		return false;
	if (p->countdown > 1) {
		p->countdown--;
		return false;
	}
	/* countdown == 1: fire */
	if (p->action == KP_FP_CRASH) {
		if (kp_failpoint_crash_hook)
			kp_failpoint_crash_hook();
		raise(SIGKILL);
		_exit(137);
	}
	if (p->once_only) {
		if (p->times <= 1)
			p->countdown = 0;
		else
			p->times--;
	}
	return true;
}

kp_err kp_failpoint_arm(unsigned n, unsigned countdown, unsigned times, kp_fp_action action)
{
	if (n >= KP_FAILPOINT_MAX || countdown == 0)
		return KP_ERR_INVALID;
	fps[n].countdown = countdown;
	fps[n].times = times;
	fps[n].once_only = times != 0;
	fps[n].action = action;
	kp_failpoints_armed = true;
	return KP_OK;
}

void kp_failpoint_disarm_all(void)
{
	memset(fps, 0, sizeof(fps));
	kp_failpoints_armed = false;
}

unsigned kp_failpoint_hits(unsigned n)
{
	return n < KP_FAILPOINT_MAX ? fps[n].hits : 0;
}

static bool parse_uint(const char *s, const char *end, unsigned long max, unsigned *out)
{
	if (s == end)
		return false;
	unsigned long v = 0;
	for (const char *c = s; c < end; c++) {
		if (*c < '0' || *c > '9')
			return false;
		v = v * 10 + (unsigned long)(*c - '0');
		if (v > max)
			return false;
	}
	*out = (unsigned)v;
	return true;
}

kp_err kp_failpoint_arm_spec(const char *spec)
{
	if (!spec || !*spec)
		return KP_OK;
	struct {
		unsigned n, countdown;
		kp_fp_action action;
	} items[KP_FAILPOINT_MAX];
	size_t count = 0;
	const char *p = spec;
	while (*p) {
		const char *end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		const char *c1 = memchr(p, ':', (size_t)(end - p));
		const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(end - c1 - 1)) : NULL;
		if (!c1 || !c2 || count == KP_FAILPOINT_MAX)
			return KP_ERR_INVALID;
		if (!parse_uint(p, c1, KP_FAILPOINT_MAX - 1, &items[count].n) ||
		    !parse_uint(c1 + 1, c2, 1000000000UL, &items[count].countdown) ||
		    items[count].countdown == 0)
			return KP_ERR_INVALID;
		size_t alen = (size_t)(end - c2 - 1);
		if (alen == 5 && memcmp(c2 + 1, "crash", 5) == 0)
			items[count].action = KP_FP_CRASH;
		else if (alen == 5 && memcmp(c2 + 1, "error", 5) == 0)
			items[count].action = KP_FP_ERROR;
		else
			return KP_ERR_INVALID;
		count++;
		p = *end ? end + 1 : end;
	}
	for (size_t i = 0; i < count; i++)
		(void)kp_failpoint_arm(items[i].n, items[i].countdown, 1, items[i].action);
	return KP_OK;
}

kp_err kp_failpoint_init_from_env(void)
{
	return kp_failpoint_arm_spec(getenv("KP_FAILPOINTS"));
}
