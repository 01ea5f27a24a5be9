/* mdb_transport.h — how MDB frames reach the cashless device: one ops table
 * per backend (mdb_sim.c: an in-process VMC; mdb_serial.c: a serial port or a
 * pty). The daemon loop is: recv a frame, kp_mdb_device_receive(), do the
 * action and commit it, then send the reply (if any). */
#ifndef KP_MDB_TRANSPORT_H
#define KP_MDB_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "kp_error.h"

typedef struct kp_mdb_transport_ops {
	const char *name;
	/* The next frame from the VMC (a block, or a lone ACK/RET/NAK word) into
	 * words[cap]: KP_OK with *n >= 1, KP_ERR_TIMEOUT when none is waiting,
	 * KP_ERR_TOO_BIG if it does not fit cap. */
	kp_err (*recv)(void *impl, uint16_t *words, size_t cap, size_t *n);
	/* Put our reply to the frame last received on the bus. */
	kp_err (*send)(void *impl, const uint16_t *words, size_t n);
	/* A file descriptor to poll for input, or -1 for in-process backends
	 * (and while a serial port is closed, waiting to be opened again). */
	int (*fd)(void *impl);
	/* Monotonic ms at which recv should be called even without input (a
	 * partial frame's inter-byte gap runs out, a reopen is due); 0 = none.
	 * May be NULL. */
	int64_t (*deadline)(void *impl);
	/* Release the backend; safe on NULL. */
	void (*close)(void *impl);
} kp_mdb_transport_ops;

/* A backend: its ops and its state. */
typedef struct kp_mdb_transport {
	const kp_mdb_transport_ops *ops;
	void *impl;
} kp_mdb_transport;

static inline kp_err kp_mdb_transport_recv(const kp_mdb_transport *t, uint16_t *words, size_t cap, size_t *n)
{
	return t->ops->recv(t->impl, words, cap, n);
}

static inline kp_err kp_mdb_transport_send(const kp_mdb_transport *t, const uint16_t *words, size_t n)
{
	return t->ops->send(t->impl, words, n);
}

static inline int kp_mdb_transport_fd(const kp_mdb_transport *t)
{
	return t->ops->fd(t->impl);
}

static inline int64_t kp_mdb_transport_deadline(const kp_mdb_transport *t)
{
	return t->ops->deadline ? t->ops->deadline(t->impl) : 0;
}

static inline void kp_mdb_transport_close(kp_mdb_transport *t)
{
	if (t && t->ops)
		t->ops->close(t->impl);
}

#endif
