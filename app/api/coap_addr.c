/* coap_addr.c — see coap_addr.h. */
#include "coap_addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kp_err kp_coap_addr_parse(const char *text, bool port_zero_ok, coap_address_t *addr, bool *loopback)
{
	char host[64];
	const char *colon, *h;
	size_t hlen;
	char *end;

	if (!text || !addr)
		return KP_ERR_CONFIG;
	coap_address_init(addr);
	if (text[0] == '[') {
		const char *rb = strchr(text, ']');
		if (!rb || rb[1] != ':')
			return KP_ERR_CONFIG;
		h = text + 1;
		hlen = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(text, ':');
		if (!colon)
			return KP_ERR_CONFIG;
		h = text;
		hlen = (size_t)(colon - text);
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return KP_ERR_CONFIG;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	errno = 0;
	long port = strtol(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end || port < (port_zero_ok ? 0 : 1) || port > 65535)
		return KP_ERR_CONFIG;
	if (strcmp(host, "localhost") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	bool lo;
	if (inet_pton(AF_INET, host, &addr->addr.sin.sin_addr) == 1) {
		addr->addr.sin.sin_family = AF_INET;
		addr->addr.sin.sin_port = htons((uint16_t)port);
		addr->size = sizeof(struct sockaddr_in);
		lo = (ntohl(addr->addr.sin.sin_addr.s_addr) >> 24) == 127;
	} else if (inet_pton(AF_INET6, host, &addr->addr.sin6.sin6_addr) == 1) {
		addr->addr.sin6.sin6_family = AF_INET6;
		addr->addr.sin6.sin6_port = htons((uint16_t)port);
		addr->size = sizeof(struct sockaddr_in6);
		lo = IN6_IS_ADDR_LOOPBACK(&addr->addr.sin6.sin6_addr);
	} else {
		return KP_ERR_CONFIG;
	}
	if (loopback)
		*loopback = lo;
	return KP_OK;
}
