/* coap_addr.h — the text form of a CoAP endpoint, shared by the daemon's
 * listener ([api] listen) and kioskctl's --api: "a.b.c.d:port", "[v6]:port"
 * or "localhost:port". Numeric hosts only: no name lookup that could block. */
#ifndef KP_COAP_ADDR_H
#define KP_COAP_ADDR_H

#include <stdbool.h>

#include <coap3/coap.h>

#include "kp_error.h"

/* Parse text into *addr. Port 0 (any free port) only if port_zero_ok.
 * *loopback (if not NULL) tells whether the address is a loopback one.
 * KP_ERR_CONFIG when malformed; *addr is then unspecified. */
kp_err kp_coap_addr_parse(const char *text, bool port_zero_ok, coap_address_t *addr,
			  bool *loopback) KP_MUST_USE;

#endif
