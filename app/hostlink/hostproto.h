/* hostproto.h — the host protocol v1 (../shared/host-protocol.md) as C: frames
 * and messages, both directions, with every field type-checked. No I/O here:
 * the TLS link and the host simulator both use this codec, and the fuzzers
 * call it directly. */
#ifndef KP_HOSTPROTO_H
#define KP_HOSTPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kp_error.h"

#define KP_FRAME_MAX 65536u     /* largest payload N of a frame */
#define KP_FRAME_HDR 4u         /* big-endian length prefix */
#define KP_PROTO_ID_SIZE 65     /* ids: 1..64 of [A-Za-z0-9_-] + NUL */

typedef enum kp_host_op {
	KP_OP_NONE = 0,
	/* kiosk -> host */
	KP_OP_HELLO,
	KP_OP_CREATE_PAYMENT,
	KP_OP_QUERY_PAYMENT,
	KP_OP_CANCEL_PAYMENT,
	KP_OP_REFUND,
	KP_OP_QUERY_REFUND,
	KP_OP_ACK,
	KP_OP_PING,
	/* host -> kiosk */
	KP_OP_HELLO_OK,
	KP_OP_PAYMENT,
	KP_OP_REFUND_REPLY,      /* "refund" as a reply (op text is "refund" too) */
	KP_OP_PONG,
	KP_OP_ERROR,
	KP_OP_CONFIRM,
	KP_OP__COUNT
} kp_host_op;

/* One message of either direction. Fields that an op does not use stay zero /
 * empty. Strings are NUL-terminated and length-checked at decode. */
typedef struct kp_host_msg {
	kp_host_op op;
	int64_t id;                 /* request id (kiosk->host), 0 if none */
	int64_t re;                 /* reply-to id (host->kiosk), 0 if none */
	bool has_re;
	char attempt_id[KP_PROTO_ID_SIZE];
	char order_id[KP_PROTO_ID_SIZE];
	char refund_id[KP_PROTO_ID_SIZE];
	char host_txn[KP_PROTO_ID_SIZE];
	char device_id[KP_PROTO_ID_SIZE];
	char status[16];            /* payment/refund/confirm status text */
	char channel[17];
	char currency[4];
	char reason[24];
	char code[32];              /* error code */
	char message[256];          /* error message (truncated if longer) */
	char fw[32];
	char qr[512];
	int64_t amount;
	bool has_amount;
	int64_t expires_at;
	int64_t seq;
	int64_t at;
	int64_t host_time;
	int64_t proto;
} kp_host_msg;

const char *kp_host_op_str(kp_host_op op);

/* True if s is a valid protocol id: 1..64 chars of [A-Za-z0-9_-]. */
bool kp_proto_id_valid(const char *s);

/* Encode msg as one frame (length prefix + JSON) into buf. Only the fields of
 * msg->op are written. KP_ERR_TOO_BIG if it does not fit in cap or exceeds
 * KP_FRAME_MAX; KP_ERR_INVALID if a required field is missing or ill-formed.
 * *len is the whole frame's length. */
kp_err kp_hostproto_encode(const kp_host_msg *msg, uint8_t *buf, size_t cap, size_t *len) KP_MUST_USE;

/* Decode one JSON payload (no length prefix) into *out, checking that the op is
 * known and every field it requires is present with the right type and range;
 * unknown fields are ignored. `from_host` selects which ops are acceptable.
 * Errors: KP_ERR_PROTOCOL with a reason in why (may be NULL). */
kp_err kp_hostproto_decode(const uint8_t *json, size_t len, bool from_host, kp_host_msg *out,
			   char *why, size_t why_cap) KP_MUST_USE;

/* Incremental frame reader: feed bytes, take whole payloads out. */
typedef struct kp_frame_reader {
	uint8_t hdr[KP_FRAME_HDR];
	size_t hdr_have;
	uint8_t *payload;           /* KP_FRAME_MAX bytes, owned */
	size_t need;                /* payload length of the current frame, 0 = reading header */
	size_t have;
} kp_frame_reader;

void kp_frame_reader_init(kp_frame_reader *r);
kp_err kp_frame_reader_setup(kp_frame_reader *r) KP_MUST_USE;  /* allocates */
void kp_frame_reader_free(kp_frame_reader *r);
/* Forget any partial frame (after a reconnect); keeps the buffer. */
void kp_frame_reader_reset(kp_frame_reader *r);
/* Consume up to len bytes of data; *used says how many were taken. When a whole
 * frame is in, *frame and *frame_len point at its payload (valid until the next
 * call) and *used stops right after it. A length of 0 or > KP_FRAME_MAX gives
 * KP_ERR_PROTOCOL. */
kp_err kp_frame_reader_feed(kp_frame_reader *r, const uint8_t *data, size_t len, size_t *used,
			    const uint8_t **frame, size_t *frame_len) KP_MUST_USE;

#endif
