/* mdb_words.h — test helper: MDB frames written as in ../shared/mdb.md
 * ("13* 00 00 96 00 01 AA", '*' = mode bit) turned into 9-bit words. */
#ifndef KP_TEST_MDB_WORDS_H
#define KP_TEST_MDB_WORDS_H

#include <stdint.h>
#include <stdlib.h>

/* Parse text into at most cap words; returns the count, or cap + 1 when the
 * text is malformed (so a test with a typo fails loudly). */
static inline size_t mdb_words(const char *text, uint16_t *w, size_t cap)
{
	size_t n = 0;
	const char *p = text;
	while (*p) {
		while (*p == ' ')
			p++;
		if (!*p)
			break;
		char *end = NULL;
		unsigned long v = strtoul(p, &end, 16);
		if (end == p || end - p != 2 || v > 0xFF || n == cap)
			return cap + 1;
		p = end;
		if (*p == '*') {
			v |= 0x100;
			p++;
		}
		if (*p && *p != ' ')
			return cap + 1;
		w[n++] = (uint16_t)v;
	}
	return n;
}

#endif
