/* fuzz.h — what every fuzz target in tests/fuzz defines, so that one body
 * serves both libFuzzer (clang, -fsanitize=fuzzer) and the plain C corpus
 * replay (replay.c) that every ctest run executes under gcc and ASan. */
#ifndef KP_FUZZ_H
#define KP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* libFuzzer's entry points: set up once, then one call per input. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Release what LLVMFuzzerInitialize made (the replay calls it at the end so
 * that LeakSanitizer sees a clean exit; libFuzzer never does). */
void kp_fuzz_cleanup(void);

/* An invariant of the code under test: a broken one aborts, which both
 * libFuzzer and the replay report as a crash with this line. Not assert():
 * it must hold in every build type. */
#define FUZZ_CHECK(cond)                                                                  \
	do {                                                                              \
		if (!(cond)) {                                                            \
			fprintf(stderr, "%s:%d: fuzz invariant broken: %s\n", __FILE__,   \
				__LINE__, #cond);                                         \
			abort();                                                          \
		}                                                                         \
	} while (0)

#endif
