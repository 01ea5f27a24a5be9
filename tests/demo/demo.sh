#!/usr/bin/env bash
# demo.sh BUILD_DIR — a real sale end to end, as `./run demo` shows it:
# kp-hostsim (the payment host, TLS) and kioskpayd (the kiosk service) start on
# loopback with a fresh dev PKI; coap-client and kioskctl act as the kiosk UI.
# Shows: order -> pay -> customer pays -> paid -> vend -> fulfilled, then a
# customer who pays one order twice (card and phone) and gets one refunded
# automatically; prints the journal and the host ledger. Stops what it started.
set -euo pipefail
build=${1:?usage: demo.sh BUILD_DIR}
build=$(cd "$build" && pwd)
top=$(cd "$(dirname "$0")/../.." && pwd)

KIOSKPAYD=$build/app/kioskpayd/kioskpayd
KIOSKCTL=$build/app/kioskctl/kioskctl
HOSTSIM=$build/tests/hostsim/kp-hostsim
PKI=$build/tests/pki/kp-pki
COAP=$(command -v coap-client-notls || command -v coap-client)

work=$build/demo
rm -rf "$work"
mkdir -p "$work"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

step() { printf '\n\033[1;36m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

# free_port, wait_tcp
. "$top/tests/support/ports.sh"

host_port=$(free_port tcp)
ctl_port=$(free_port tcp)
api_port=$(free_port udp)
API=127.0.0.1:$api_port

sim() { # one control command to the simulator, one JSON line back
	exec 3<>"/dev/tcp/127.0.0.1/$ctl_port"
	printf '%s\n' "$1" >&3
	local line
	IFS= read -r line <&3 || true
	exec 3<&-
	printf '%s\n' "$line"
}

json_field() { # json_field FIELD  (reads JSON on stdin; first string/number value of FIELD)
	sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p" | head -n 1
}

step "dev PKI (CA, payment host, device) in $work/pki"
"$PKI" "$work/pki" >/dev/null
ls "$work/pki" | tr '\n' ' '; echo

step "payment host simulator (TLS 1.2, mutual auth) on 127.0.0.1:$host_port"
"$HOSTSIM" --listen "127.0.0.1:$host_port" --control "127.0.0.1:$ctl_port" \
	--ledger "$work/ledger.db" --ca "$work/pki/ca.crt" --cert "$work/pki/host.crt" \
	--key "$work/pki/host.key" >"$work/hostsim.log" 2>&1 &
pids+=($!)
wait_tcp "$ctl_port" || true

cat >"$work/kioskpayd.ini" <<EOF
[journal]
path = $work/state/journal.db

[api]
listen = $API

[host]
address = 127.0.0.1:$host_port
server_name = localhost
ca = $work/pki/ca.crt
cert = $work/pki/device.crt
key = $work/pki/device.key

[device]
id = kiosk-dev-1

[payment]
currency = EUR
max_amount = 5000
EOF
step "kioskpayd with $work/kioskpayd.ini"
show "$KIOSKPAYD" --check-config -c "$work/kioskpayd.ini" | tail -n 1
"$KIOSKPAYD" -c "$work/kioskpayd.ini" >"$work/kioskpayd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	"$KIOSKCTL" --api "$API" --json health 2>/dev/null | grep -q '"host":"up"' && break
	sleep 0.1
done
show "$KIOSKCTL" --api "$API" health

step "1. a sale: the UI creates an order (coap-client, POST /orders)"
cart=cart-$(date +%s)-$RANDOM
order_json=$(show "$COAP" -m post -t json -e "{\"dedup_key\":\"$cart\",\"amount\":250,\"items\":[{\"sku\":\"coffee\",\"qty\":1}]}" "coap://$API/orders")
echo "$order_json"
order=$(echo "$order_json" | json_field order_id)
echo "a double tap sends the same dedup_key again and gets the same order:"
show "$COAP" -m post -t json -e "{\"dedup_key\":\"$cart\",\"amount\":250,\"items\":[{\"sku\":\"coffee\",\"qty\":1}]}" "coap://$API/orders"

step "the customer chooses card: the attempt is journaled as paying before the host hears of it"
pay_json=$(show "$KIOSKCTL" --api "$API" --json order pay "$order" --channel card)
echo "$pay_json"
attempt=$(echo "$pay_json" | json_field attempt_id)

step "the customer taps the card (simulator control: pay $attempt)"
sim "{\"cmd\":\"pay\",\"attempt_id\":\"$attempt\"}"
for _ in $(seq 50); do
	"$KIOSKCTL" --api "$API" --json order show "$order" | grep -q '"status":"paid"' && break
	sleep 0.1
done
show "$KIOSKCTL" --api "$API" order show "$order"

step "the machine dispenses: vend success"
show "$KIOSKCTL" --api "$API" order vend "$order" success

step "2. a double payment: card and phone both pay one order"
echo "(this order is created and paid in one request: --channel, one journal commit for both)"
cart2=cart-$(date +%s)-$RANDOM
created2=$(show "$KIOSKCTL" --api "$API" --json order create --dedup-key "$cart2" --amount 480 --channel card)
echo "$created2"
order2=$(echo "$created2" | json_field order_id)
sim "{\"cmd\":\"pay_order_twice\",\"order_id\":\"$order2\"}"
for _ in $(seq 100); do
	[ "$(sqlite3 "$work/state/journal.db" "SELECT count(*) FROM refunds WHERE state='refunded'" 2>/dev/null)" = 1 ] && break
	sleep 0.1
done
show "$KIOSKCTL" --api "$API" order show "$order2"
echo "one payment kept, the other refunded automatically with its own refund_id."

step "journal: what the kiosk knows (kioskctl journal check, read-only)"
show "$KIOSKCTL" journal check "$work/state/journal.db"
sqlite3 -header -column "$work/state/journal.db" \
	"SELECT o.dedup_key, o.amount, o.state AS order_state, a.channel, a.state AS attempt_state FROM orders o LEFT JOIN attempts a USING (order_id) ORDER BY o.created_at;" 2>/dev/null || true
sqlite3 -header -column "$work/state/journal.db" \
	"SELECT reason, amount, state, substr(host_txn, 1, 12) AS host_txn FROM refunds;" 2>/dev/null || true

step "host ledger: what the payment host captured and refunded, per order"
sqlite3 -header -column "$work/ledger.db" \
	"SELECT substr(p.order_id, 1, 8) AS 'order', count(*) AS captures, sum(p.amount) AS captured,
	        coalesce(sum(CASE WHEN r.status = 'refunded' THEN r.amount END), 0) AS refunded,
	        sum(p.amount) - coalesce(sum(CASE WHEN r.status = 'refunded' THEN r.amount END), 0) AS net
	 FROM payments p LEFT JOIN refunds r ON r.host_txn = p.host_txn
	 WHERE p.status = 'succeeded' GROUP BY p.order_id ORDER BY min(p.created_at);"
echo "net = what the customer finally paid: the price of each order, once."

step "done: stopping kioskpayd and the simulator (logs in $work)"
