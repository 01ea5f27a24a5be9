/* kp_env.h — what the outside world gives a module: clocks, randomness, logging.
 * Logic never calls time() or rand() itself; it asks the env, so that tests can
 * run it on a fake clock with seeded randomness (SQLite's VFS carries I/O, clock
 * and randomness the same way). */
#ifndef KP_ENV_H
#define KP_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kp_error.h"

typedef enum kp_log_level {
	KP_LOG_ERROR = 0,
	KP_LOG_WARN = 1,
	KP_LOG_INFO = 2,
	KP_LOG_DEBUG = 3,
} kp_log_level;

/* A UUID as text: 36 characters + NUL. Valid as a host-protocol id. */
#define KP_UUID_LEN 36
typedef struct kp_uuid {
	char s[KP_UUID_LEN + 1];
} kp_uuid;

typedef struct kp_env {
	/* Monotonic milliseconds: for timeouts and scheduling within one run. */
	int64_t (*mono_ms)(void *ctx);
	/* Wall-clock milliseconds since the Unix epoch: for what is journaled. */
	int64_t (*wall_ms)(void *ctx);
	/* Fill buf with len random bytes; KP_ERR_IO if the source fails. */
	kp_err (*random)(void *ctx, void *buf, size_t len);
	/* Write one log line (no trailing newline in msg). */
	void (*log)(void *ctx, kp_log_level level, const char *msg);
	void *ctx;
	kp_log_level log_level; /* lines above this level are dropped */
} kp_env;

/* The real world: CLOCK_MONOTONIC, CLOCK_REALTIME, getrandom(2), stderr. */
void kp_env_init_system(kp_env *env);

/* A fake world for tests: time moves only when the test moves it, and the
 * random bytes come from a seeded generator, so a run replays from its seed. */
typedef struct kp_fake_world {
	int64_t mono_ms;
	int64_t wall_ms;
	uint64_t rng;         /* xorshift64* state; never 0 */
	unsigned log_lines;   /* lines logged so far */
	char last_log[256];   /* the last line logged, for assertions */
	bool quiet;           /* true: do not echo log lines to stderr */
} kp_fake_world;

void kp_env_init_fake(kp_env *env, kp_fake_world *world, uint64_t seed, int64_t wall_ms);
/* Move both fake clocks forward. */
void kp_fake_advance(kp_fake_world *world, int64_t ms);

static inline int64_t kp_now_mono(const kp_env *env) { return env->mono_ms(env->ctx); }
static inline int64_t kp_now_wall(const kp_env *env) { return env->wall_ms(env->ctx); }

/* A time-ordered (version 7) UUID: the env's wall clock in milliseconds, then
 * 74 bits of its randomness. */
kp_err kp_uuid_new(const kp_env *env, kp_uuid *out) KP_MUST_USE;

/* Log a formatted line at a level, if the env's level lets it through; card
 * numbers in it are masked first (kp_text_mask_pan). */
void kp_log(const kp_env *env, kp_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define kp_log_error(env, ...) kp_log((env), KP_LOG_ERROR, __VA_ARGS__)
#define kp_log_warn(env, ...) kp_log((env), KP_LOG_WARN, __VA_ARGS__)
#define kp_log_info(env, ...) kp_log((env), KP_LOG_INFO, __VA_ARGS__)
#define kp_log_debug(env, ...) kp_log((env), KP_LOG_DEBUG, __VA_ARGS__)

#endif
