/* kp_free_port.h — a loopback port for a test's or benchmark's server. */
#ifndef KP_FREE_PORT_H
#define KP_FREE_PORT_H

#include <stdbool.h>

/* A port on 127.0.0.1 the kernel handed out just now (bound to port 0 and
 * released), for TCP or (udp) UDP; -1 if it handed out none. */
int kp_free_port(bool udp);

#endif
