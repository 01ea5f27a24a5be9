#!/usr/bin/env bash
# test_hostsim_openssl.sh — kp-hostsim against a TLS stack that is not mbedtls
# (openssl s_client) and driven from plain bash: the host certificate verifies
# by name and by IP for OpenSSL too, clients without a device certificate are
# refused, --tls11-only offers exactly TLS 1.1, a framed hello works, and the
# control port answers over /dev/tcp. Usage: test_hostsim_openssl.sh KP_HOSTSIM KP_PKI
set -u
SIM=$1
PKI=$2
command -v openssl >/dev/null || { echo "SKIP: no openssl"; exit 0; }

TMP=$(mktemp -d /tmp/kp-test-hostsim-ossl-XXXXXX)
SIM_PID=
fail() { echo "FAIL: $*"; [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null; exit 1; }
cleanup() { [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

"$PKI" "$TMP/pki" >/dev/null || fail "kp-pki"
P=$TMP/pki

# start_sim [extra args...]: sets SIM_PID, PORT, CTL
start_sim() {
	rm -f "$TMP/ports"
	"$SIM" --listen 127.0.0.1:0 --control 127.0.0.1:0 --ledger "$TMP/ledger.db" \
		--ca "$P/ca.crt" --cert "$P/host.crt" --key "$P/host.key" \
		--port-file "$TMP/ports" "$@" >"$TMP/sim.out" 2>>"$TMP/sim.log" &
	SIM_PID=$!
	for _ in $(seq 100); do [ -s "$TMP/ports" ] && break; sleep 0.05; done
	read -r PORT CTL <"$TMP/ports" || fail "no port file"
	grep -q "listening on 127.0.0.1:$PORT control 127.0.0.1:$CTL" "$TMP/sim.out" || fail "ready line"
}

stop_sim() {
	kill -TERM "$SIM_PID"
	wait "$SIM_PID"
	local rc=$?
	SIM_PID=
	[ "$rc" = 0 ] || fail "kp-hostsim exit $rc after SIGTERM"
	grep -q "kp-hostsim: stopped" "$TMP/sim.out" || fail "no stopped line"
}

# ctl JSON: one control command over bash's /dev/tcp; prints the reply line.
ctl() {
	exec 3<>"/dev/tcp/127.0.0.1/$CTL" || fail "control connect"
	printf '%s\n' "$1" >&3
	local line
	IFS= read -r -t 5 line <&3
	exec 3<&- 3>&-
	printf '%s\n' "$line"
}

stat_of() { ctl '{"cmd":"status"}' | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }

# frame JSON: 4-byte big-endian length + JSON, as printf input.
frame() {
	local n=${#1} hdr
	hdr=$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((n >> 24 & 255)) $((n >> 16 & 255)) $((n >> 8 & 255)) $((n & 255)))
	printf "$hdr"
	printf '%s' "$1"
}

start_sim
ctl '{"cmd":"ping"}' | grep -q '"ok":true' || fail "control ping"

# 1. A device with its certificate: OpenSSL verifies the host by name and IP, hello works.
HELLO='{"op":"hello","id":1,"device_id":"kiosk-dev-1","proto":1,"fw":"sh"}'
out=$( (frame "$HELLO"; sleep 1) | timeout 10 openssl s_client -connect "127.0.0.1:$PORT" \
	-CAfile "$P/ca.crt" -cert "$P/device.crt" -key "$P/device.key" \
	-verify_return_error -verify_hostname localhost -verify_ip 127.0.0.1 -tls1_2 2>&1 | tr -d '\0')
echo "$out" | grep -q "Verify return code: 0 (ok)" || fail "host cert did not verify in OpenSSL: $out"
echo "$out" | grep -q '"op":"hello_ok"' || fail "no hello_ok: $out"
[ "$(stat_of handshakes_full)" = 1 ] || fail "handshakes_full"

# 2. No client certificate, or one from another CA: refused.
before=$(stat_of handshake_failures)
(sleep 1) | timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$P/ca.crt" -tls1_2 >/dev/null 2>&1
(sleep 1) | timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$P/ca.crt" -tls1_2 \
	-cert "$P/device-other-ca.crt" -key "$P/device-other-ca.key" >/dev/null 2>&1
after=$(stat_of handshake_failures)
[ "$after" = $((before + 2)) ] || fail "refusals: handshake_failures $before -> $after"
[ "$(stat_of handshakes_full)" = 1 ] || fail "a refused client got through"

# 3. TLS 1.1 only: a TLS 1.2 client is refused, a TLS 1.1 one gets 1.1.
stop_sim
start_sim --tls11-only
out=$( (sleep 1) | timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$P/ca.crt" \
	-cert "$P/device.crt" -key "$P/device.key" -tls1_2 2>&1)
echo "$out" | grep -q "Cipher is (NONE)" || fail "TLS 1.2 accepted by --tls11-only: $out"
out=$( (sleep 1) | timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$P/ca.crt" \
	-cert "$P/device.crt" -key "$P/device.key" -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' 2>&1)
echo "$out" | grep -Eq "Protocol *: TLSv1.1|Protocol version: TLSv1.1" || fail "no TLS 1.1 session: $out"
stop_sim

# 4. The offline dump reads the same ledger.
"$SIM" --dump --ledger "$TMP/ledger.db" | grep -q '"format":"kp-hostsim-ledger/1"' || fail "offline dump"
echo "PASS"
