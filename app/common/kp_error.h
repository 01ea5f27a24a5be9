/* kp_error.h — the one error enum of kioskpay.
 * Every function that acts returns a kp_err; KP_OK is zero, failures are
 * negative, and kp_strerror() gives the one-line text for each. */
#ifndef KP_ERROR_H
#define KP_ERROR_H

#define KP_MUST_USE __attribute__((warn_unused_result))

typedef enum kp_err {
	KP_OK = 0,
	KP_ERR_NOMEM = -1,          /* out of memory */
	KP_ERR_INVALID = -2,        /* bad argument or malformed input */
	KP_ERR_NOT_FOUND = -3,      /* no such record */
	KP_ERR_CONFLICT = -4,       /* same key, different content */
	KP_ERR_EXPIRED = -5,        /* order past its pay deadline */
	KP_ERR_ILLEGAL_MOVE = -6,   /* state transition not allowed */
	KP_ERR_CONSTRAINT = -7,     /* a schema constraint refused the write */
	KP_ERR_BUSY = -8,           /* database locked / live attempt exists */
	KP_ERR_IO = -9,             /* file or device I/O failed */
	KP_ERR_CORRUPT = -10,       /* journal failed its integrity check */
	KP_ERR_FUTURE_VERSION = -11,/* journal written by a newer kioskpay */
	KP_ERR_READONLY = -12,      /* write attempted on a read-only handle */
	KP_ERR_PROTOCOL = -13,      /* peer broke the wire contract */
	KP_ERR_TLS = -14,           /* TLS handshake or record failure */
	KP_ERR_TIMEOUT = -15,       /* no answer in time */
	KP_ERR_DISCONNECTED = -16,  /* host link is not up */
	KP_ERR_HOST = -17,          /* host answered with an error */
	KP_ERR_TOO_BIG = -18,       /* input over its size limit */
	KP_ERR_CONFIG = -19,        /* configuration file problem */
	KP_ERR_FAILPOINT = -20,     /* an armed test failpoint fired */
	KP_ERR_UNAVAILABLE = -21,   /* service not ready (journal closed, shutting down) */
	KP_ERR_STATE = -22,         /* record is not in a state that allows this */
	KP_ERR_INTERNAL = -23,      /* a bug: should not happen */
	KP_ERR__SENTINEL = -24      /* keep last: one below the last real code */
} kp_err;

/* Text for an error code; never NULL, "unknown error" for codes out of range. */
const char *kp_strerror(kp_err err);

/* Name of the code as written in logs and JSON ("not_found", ...). */
const char *kp_errname(kp_err err);

#endif
