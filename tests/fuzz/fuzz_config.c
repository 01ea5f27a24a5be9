/* fuzz_config.c — the config parser (app/config/config.h) on hostile files:
 * the input is the INI file (written to a memfd, read through its
 * /proc/self/fd path, so config.c's own file reading is what runs). What
 * loads must validate, and dumping it and loading the dump must give the
 * same dump. The first line also goes to the duration and host:port parsers. */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"

static int fd_in = -1, fd_dump = -1;
static char path_in[64], path_dump[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fd_in = memfd_create("kp-fuzz-config", 0);
	fd_dump = memfd_create("kp-fuzz-config-dump", 0);
	FUZZ_CHECK(fd_in >= 0 && fd_dump >= 0);
	snprintf(path_in, sizeof(path_in), "/proc/self/fd/%d", fd_in);
	snprintf(path_dump, sizeof(path_dump), "/proc/self/fd/%d", fd_dump);
	return 0;
}

void kp_fuzz_cleanup(void)
{
	if (fd_in >= 0)
		close(fd_in);
	if (fd_dump >= 0)
		close(fd_dump);
	fd_in = fd_dump = -1;
}

static void put(int fd, const void *data, size_t size)
{
	FUZZ_CHECK(ftruncate(fd, 0) == 0);
	FUZZ_CHECK(pwrite(fd, data, size, 0) == (ssize_t)size);
}

/* The dump of cfg without its first line (which names the source file);
 * caller frees. */
static char *dump_body(const kp_config *cfg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	FUZZ_CHECK(f != NULL);
	kp_config_dump(cfg, f);
	FUZZ_CHECK(fclose(f) == 0);
	char *nl = strchr(text, '\n');
	FUZZ_CHECK(nl != NULL);
	memmove(text, nl + 1, strlen(nl + 1) + 1);
	return text;
}

static void check_loaded(const kp_config *cfg)
{
	char err[256];
	char name[16];
	FUZZ_CHECK(kp_config_validate(cfg, 0, err, sizeof(err)) == KP_OK);
	kp_err rc = kp_config_validate(cfg, KP_CONFIG_NEED_HOST, err, sizeof(err));
	FUZZ_CHECK(rc == KP_OK || (rc == KP_ERR_CONFIG && err[0]));
	rc = kp_config_host_server_name(cfg, name, sizeof(name));
	FUZZ_CHECK(rc == KP_OK || rc == KP_ERR_CONFIG || rc == KP_ERR_TOO_BIG);
	if (rc == KP_OK)
		FUZZ_CHECK(strlen(name) < sizeof(name));

	/* dump -> load -> dump is a fixed point */
	char *first = dump_body(cfg);
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	FUZZ_CHECK(f != NULL);
	kp_config_dump(cfg, f);
	FUZZ_CHECK(fclose(f) == 0);
	put(fd_dump, text, len);
	free(text);
	kp_config *again = malloc(sizeof(*again));
	FUZZ_CHECK(again != NULL);
	rc = kp_config_load(again, path_dump, err, sizeof(err));
	if (rc != KP_OK)
		fprintf(stderr, "reloading the dump failed: %s\n", err);
	FUZZ_CHECK(rc == KP_OK);
	char *second = dump_body(again);
	FUZZ_CHECK(strcmp(first, second) == 0);
	free(first);
	free(second);
	free(again);
}

/* The first line (up to 255 bytes) to the small parsers. */
static void small_parsers(const uint8_t *data, size_t size)
{
	char line[256];
	size_t n = 0;
	while (n < size && n < sizeof(line) - 1 && data[n] != '\n' && data[n] != '\0')
		n++;
	memcpy(line, data, n);
	line[n] = '\0';

	int64_t ms = -1;
	if (kp_config_parse_duration(line, &ms) == KP_OK)
		FUZZ_CHECK(ms >= 0);
	else
		FUZZ_CHECK(ms == -1);

	char host[32];
	uint16_t port = 0;
	size_t cap = 1 + (size ? data[size - 1] % sizeof(host) : 0);
	kp_err rc = kp_config_split_hostport(line, host, cap, &port);
	FUZZ_CHECK(rc == KP_OK || rc == KP_ERR_INVALID || rc == KP_ERR_TOO_BIG);
	if (rc == KP_OK)
		FUZZ_CHECK(port >= 1 && strlen(host) < cap && host[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	if (size > KP_CONFIG_FILE_MAX + 16)
		return 0;
	small_parsers(data, size);

	put(fd_in, data, size);
	kp_config *cfg = malloc(sizeof(*cfg));
	FUZZ_CHECK(cfg != NULL);
	memset(err, 'x', sizeof(err));
	kp_err rc = kp_config_load(cfg, path_in, err, sizeof(err));
	if (rc == KP_OK) {
		check_loaded(cfg);
	} else {
		FUZZ_CHECK(rc == KP_ERR_CONFIG);
		FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
		FUZZ_CHECK(strncmp(err, path_in, strlen(path_in)) == 0);
	}
	free(cfg);
	return 0;
}
