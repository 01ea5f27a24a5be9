/* kp_pan.c — finding card numbers in text (kp_pan.h): one left-to-right scan,
 * each standalone digit run (with its ' '/'-' groups) checked for length,
 * issuer digit and Luhn. */
#include "kp_pan.h"

#define PAN_MIN 13
#define PAN_MAX 19
#define PAN_KEEP_HEAD 6
#define PAN_KEEP_TAIL 4

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
	return is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* The Luhn check over n digits taken from text[start..end) (separators
 * skipped). */
static bool luhn_ok(const char *text, size_t start, size_t end)
{
	unsigned sum = 0;
	bool dbl = false;
	for (size_t i = end; i > start; i--) {
		char c = text[i - 1];
		if (!is_digit(c))
			continue;
		unsigned d = (unsigned)(c - '0');
		if (dbl) {
			d *= 2;
			if (d > 9)
				d -= 9;
		}
		sum += d;
		dbl = !dbl;
	}
	return sum % 10 == 0;
}

/* Where the run starting with a digit at s ends: digits, with a single ' '
 * or '-' allowed between two digits. */
static size_t run_end(const char *text, size_t len, size_t s)
{
	size_t i = s;
	while (i < len) {
		if (is_digit(text[i]))
			i++;
		else if ((text[i] == ' ' || text[i] == '-') && i + 1 < len && is_digit(text[i + 1]))
			i++;
		else
			break;
	}
	return i;
}

/* The run text[s..e) is not glued to an identifier or a decimal. */
static bool standalone(const char *text, size_t len, size_t s, size_t e)
{
	char before = s > 0 ? text[s - 1] : ' ';
	char after = e < len ? text[e] : ' ';
	return !is_alnum(before) && before != '_' && before != '-' && before != '.' && !is_alnum(after) &&
	       after != '_' && after != '-';
}

/* End of the space-separated group starting at g (a '-' stays inside). */
static size_t group_end(const char *text, size_t g, size_t run_end_at)
{
	while (g < run_end_at && text[g] != ' ')
		g++;
	return g;
}

/* The next card number in text[*pos..len): true with its span in
 * [*start, *end); *pos moves past everything looked at. In a run, every
 * span of whole space-separated groups is tried ("qty 2 4111 1111 1111
 * 1111" holds one), '-' groups only as a whole (ids). */
static bool next_pan(const char *text, size_t len, size_t *pos, size_t *start, size_t *end)
{
	size_t i = *pos;
	while (i < len) {
		if (!is_digit(text[i])) {
			i++;
			continue;
		}
		size_t s = i;
		i = run_end(text, len, s);
		if (!standalone(text, len, s, i))
			continue;
		for (size_t a = s; a < i;) {
			size_t digits = 0, ga = group_end(text, a, i);
			for (size_t b = a; b < i;) {
				size_t e = group_end(text, b, i);
				for (size_t k = b; k < e; k++)
					digits += is_digit(text[k]);
				if (digits > PAN_MAX)
					break;
				if (digits >= PAN_MIN && text[a] >= '2' && text[a] <= '6' && luhn_ok(text, a, e)) {
					*start = a;
					*end = e;
					*pos = e;
					return true;
				}
				b = e + 1;
			}
			a = ga + 1;
		}
	}
	*pos = i;
	return false;
}

bool kp_text_has_pan(const char *text, size_t len)
{
	size_t pos = 0, s, e;
	return text && next_pan(text, len, &pos, &s, &e);
}

size_t kp_text_mask_pan(char *text, size_t len)
{
	size_t pos = 0, s, e, n = 0;
	if (!text)
		return 0;
	while (next_pan(text, len, &pos, &s, &e)) {
		size_t digits = 0, total = 0;
		for (size_t i = s; i < e; i++)
			total += is_digit(text[i]);
		for (size_t i = s; i < e; i++) {
			if (!is_digit(text[i]))
				continue;
			digits++;
			if (digits > PAN_KEEP_HEAD && digits <= total - PAN_KEEP_TAIL)
				text[i] = '*';
		}
		n++;
	}
	return n;
}
