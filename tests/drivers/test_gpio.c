/* test_gpio.c — the kiosk's signal inputs through the sim backend (a FIFO a
 * test or technician writes "power_fail 1" into): edges become events, equal
 * levels do not, unwired or unknown lines and bad text are skipped; the
 * config is checked (no line, one pin twice) and a missing chip is an error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gpio.h"
#include "kp_env.h"

struct fixture {
	char dir[64];
	char fifo[128];
	char chip[140];
	kp_env env;
	kp_fake_world world;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/kp-gpio-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->fifo, sizeof(f->fifo), "%s/gpio", f->dir);
	snprintf(f->chip, sizeof(f->chip), "sim:%s", f->fifo);
	kp_env_init_fake(&f->env, &f->world, 3, 1700000000000);
	f->world.quiet = true;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	unlink(f->fifo);
	rmdir(f->dir);
	free(f);
	return 0;
}

static kp_gpio_config wiring(const struct fixture *f)
{
	kp_gpio_config c = {.chip = f->chip};
	c.lines[KP_GPIO_POWER_FAIL] = (kp_gpio_line_cfg){.offset = 17, .active_low = true};
	c.lines[KP_GPIO_VEND_OK] = (kp_gpio_line_cfg){.offset = 22};
	c.lines[KP_GPIO_VEND_FAIL] = (kp_gpio_line_cfg){.offset = -1};
	return c;
}

static void put(const struct fixture *f, const char *text)
{
	int fd = open(f->fifo, O_WRONLY | O_NONBLOCK);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

/* All events now waiting, as "name+" / "name-", space-separated. */
static void events(kp_gpio *g, char *out, size_t cap)
{
	size_t used = 0;
	out[0] = '\0';
	kp_gpio_event ev;
	kp_err err;
	while ((err = kp_gpio_read(g, &ev)) == KP_OK)
		used += (size_t)snprintf(out + used, cap - used, "%s%s%c", used ? " " : "",
					 kp_gpio_line_name(ev.line), ev.active ? '+' : '-');
	assert_int_equal(err, KP_ERR_TIMEOUT);
}

static const struct {
	const char *in;
	const char *events;
} script[] = {
	{"power_fail 1\n", "power_fail+"},
	{"power_fail 1\n", ""},                          /* no edge */
	{"vend_ok 1\nvend_ok 0\n", "vend_ok+ vend_ok-"},
	{"vend_fail 1\n", ""},                           /* not wired */
	{"door 1\n", ""},                                /* no such line */
	{"power_fail 2\npower_fail\n\n", ""},            /* bad text */
	{"power_fail 0", ""},                            /* half a line waits ... */
	{"\n", "power_fail-"},                           /* ... for its end */
};

static void test_sim_edges(void **state)
{
	struct fixture *f = *state;
	kp_gpio_config c = wiring(f);
	kp_gpio *g = NULL;
	assert_int_equal(kp_gpio_open(&g, &c, &f->env), KP_OK); /* makes the FIFO */
	assert_true(kp_gpio_fd(g) >= 0);
	bool on = true;
	assert_int_equal(kp_gpio_get(g, KP_GPIO_POWER_FAIL, &on), KP_OK);
	assert_false(on);
	for (size_t i = 0; i < sizeof(script) / sizeof(script[0]); i++) {
		put(f, script[i].in);
		char got[128];
		events(g, got, sizeof(got));
		if (strcmp(got, script[i].events) != 0)
			fail_msg("step %zu: \"%s\", want \"%s\"", i, got, script[i].events);
		if (i == 0) {
			assert_int_equal(kp_gpio_get(g, KP_GPIO_POWER_FAIL, &on), KP_OK);
			assert_true(on);
		}
	}
	assert_int_equal(kp_gpio_get(g, KP_GPIO_VEND_FAIL, &on), KP_ERR_INVALID);
	kp_gpio_close(g);
	/* the FIFO stays for the next run; opening again works */
	assert_int_equal(kp_gpio_open(&g, &c, &f->env), KP_OK);
	kp_gpio_close(g);
	kp_gpio_close(NULL);
}

static void test_config_checked(void **state)
{
	struct fixture *f = *state;
	kp_gpio *g = NULL;
	kp_gpio_config c = wiring(f);
	c.lines[KP_GPIO_VEND_OK].offset = 17; /* the power-fail pin again */
	assert_int_equal(kp_gpio_open(&g, &c, &f->env), KP_ERR_INVALID);
	kp_gpio_config none = {.chip = f->chip};
	for (int l = 0; l < KP_GPIO__COUNT; l++)
		none.lines[l].offset = -1;
	assert_int_equal(kp_gpio_open(&g, &none, &f->env), KP_ERR_INVALID);
	c = wiring(f);
	c.chip = "/nonexistent/gpiochip9";
	assert_int_equal(kp_gpio_open(&g, &c, &f->env), KP_ERR_IO);
	assert_null(g);
	assert_true(strstr(f->world.last_log, "/nonexistent/gpiochip9") != NULL);
	c.chip = "";
	assert_int_equal(kp_gpio_open(&g, &c, &f->env), KP_ERR_INVALID);
	assert_string_equal(kp_gpio_line_name(KP_GPIO_VEND_FAIL), "vend_fail");
	assert_string_equal(kp_gpio_line_name(KP_GPIO__COUNT), "?");
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_sim_edges),
		T(test_config_checked),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
