/* kp_error.c — text for every kp_err, checked against the enum at compile time
 * so that adding a code without its text fails the build. */
#include "kp_error.h"

struct kp_errtext {
	const char *name;
	const char *text;
};

static const struct kp_errtext kp_errtab[] = {
	{"ok", "success"},
	{"nomem", "out of memory"},
	{"invalid", "invalid argument or malformed input"},
	{"not_found", "no such record"},
	{"conflict", "same key with different content"},
	{"expired", "order expired"},
	{"illegal_move", "state transition not allowed"},
	{"constraint", "journal constraint violated"},
	{"busy", "busy"},
	{"io", "I/O error"},
	{"corrupt", "journal is corrupt"},
	{"future_version", "journal was written by a newer kioskpay"},
	{"readonly", "journal is open read-only"},
	{"protocol", "protocol error"},
	{"tls", "TLS error"},
	{"timeout", "timed out"},
	{"disconnected", "payment host not connected"},
	{"host", "payment host returned an error"},
	{"too_big", "input too large"},
	{"config", "configuration error"},
	{"failpoint", "failpoint fired"},
	{"unavailable", "service unavailable"},
	{"state", "record is in the wrong state"},
	{"internal", "internal error"},
};

_Static_assert(sizeof(kp_errtab) / sizeof(kp_errtab[0]) == -(int)KP_ERR__SENTINEL,
	       "kp_errtab must have one entry per kp_err code");

const char *kp_strerror(kp_err err)
{
	int i = -(int)err;
	if (i < 0 || i >= -(int)KP_ERR__SENTINEL)
		return "unknown error";
	return kp_errtab[i].text;
}

const char *kp_errname(kp_err err)
{
	int i = -(int)err;
	if (i < 0 || i >= -(int)KP_ERR__SENTINEL)
		return "unknown";
	return kp_errtab[i].name;
}
