/* kp_env.c — the system env (real clocks, getrandom, stderr) and the fake env
 * that tests drive by hand. */
#include "kp_env.h"
#include "kp_pan.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t sys_mono_ms(void *ctx)
{
	(void)ctx;
	return clock_ms(CLOCK_MONOTONIC);
}

static int64_t sys_wall_ms(void *ctx)
{
	(void)ctx;
	return clock_ms(CLOCK_REALTIME);
}

static kp_err sys_random(void *ctx, void *buf, size_t len)
{
	(void)ctx;
	unsigned char *p = buf;
	while (len > 0) {
		ssize_t n = getrandom(p, len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return KP_ERR_IO;
		}
		p += n;
		len -= (size_t)n;
	}
	return KP_OK;
}

static const char *level_name(kp_log_level level)
{
	switch (level) {
	case KP_LOG_ERROR: return "error";
	case KP_LOG_WARN: return "warn";
	case KP_LOG_INFO: return "info";
	case KP_LOG_DEBUG: return "debug";
	}
	return "?";
}

static void sys_log(void *ctx, kp_log_level level, const char *msg)
{
	(void)ctx;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s: %s\n", tm.tm_year + 1900,
		tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		ts.tv_nsec / 1000000, level_name(level), msg);
}

void kp_env_init_system(kp_env *env)
{
	memset(env, 0, sizeof(*env));
	env->mono_ms = sys_mono_ms;
	env->wall_ms = sys_wall_ms;
	env->random = sys_random;
	env->log = sys_log;
	env->log_level = KP_LOG_INFO;
}

static int64_t fake_mono_ms(void *ctx)
{
	return ((kp_fake_world *)ctx)->mono_ms;
}

static int64_t fake_wall_ms(void *ctx)
{
	return ((kp_fake_world *)ctx)->wall_ms;
}

static uint64_t xorshift64s(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static kp_err fake_random(void *ctx, void *buf, size_t len)
{
	kp_fake_world *w = ctx;
	unsigned char *p = buf;
	while (len > 0) {
		uint64_t r = xorshift64s(&w->rng);
		size_t n = len < sizeof(r) ? len : sizeof(r);
		memcpy(p, &r, n);
		p += n;
		len -= n;
	}
	return KP_OK;
}

static void fake_log(void *ctx, kp_log_level level, const char *msg)
{
	kp_fake_world *w = ctx;
	w->log_lines++;
	snprintf(w->last_log, sizeof(w->last_log), "%s", msg);
	if (!w->quiet)
		fprintf(stderr, "[t=%lld] %s: %s\n", (long long)w->mono_ms, level_name(level), msg);
}

void kp_env_init_fake(kp_env *env, kp_fake_world *world, uint64_t seed, int64_t wall_ms)
{
	memset(world, 0, sizeof(*world));
	world->mono_ms = 1000;
	world->wall_ms = wall_ms;
	world->rng = seed ? seed : 0x9E3779B97F4A7C15ULL;
	memset(env, 0, sizeof(*env));
	env->mono_ms = fake_mono_ms;
	env->wall_ms = fake_wall_ms;
	env->random = fake_random;
	env->log = fake_log;
	env->ctx = world;
	env->log_level = KP_LOG_DEBUG;
}

void kp_fake_advance(kp_fake_world *world, int64_t ms)
{
	world->mono_ms += ms;
	world->wall_ms += ms;
}

kp_err kp_uuid_new(const kp_env *env, kp_uuid *out)
{
	unsigned char b[16];
	kp_err err = env->random(env->ctx, b, sizeof(b));
	if (err != KP_OK)
		return err;
	/* Version 7 (RFC 9562): 48 bits of wall-clock milliseconds, then 74
	 * random bits. Ids made later sort later, so the journal's id indexes
	 * grow at their right edge (one page written per insert, not a random
	 * leaf and its splits). A clock set back only costs that order. */
	int64_t ms = kp_now_wall(env);
	uint64_t ts = ms > 0 ? (uint64_t)ms : 0;
	for (int i = 0; i < 6; i++)
		b[i] = (unsigned char)(ts >> (40 - 8 * i));
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x70); /* version 7 */
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 9562 variant */
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (size_t i = 0; i < sizeof(b); i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out->s[o++] = '-';
		out->s[o++] = hex[b[i] >> 4];
		out->s[o++] = hex[b[i] & 15];
	}
	out->s[o] = '\0';
	return KP_OK;
}

void kp_log(const kp_env *env, kp_log_level level, const char *fmt, ...)
{
	if (!env || !env->log || level > env->log_level)
		return;
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	kp_text_mask_pan(line, strlen(line)); /* no card number reaches a log (kp_pan.h) */
	env->log(env->ctx, level, line);
}
