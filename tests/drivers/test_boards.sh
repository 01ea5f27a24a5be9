#!/usr/bin/env bash
# test_boards.sh — every board folder has its metadata, a default config that
# kioskpayd --check-config accepts and that names the devices board.conf
# says, and a hardened systemd unit that allows exactly those devices.
# Usage: test_boards.sh TOP KIOSKPAYD
set -euo pipefail
top=$1
kioskpayd=$2
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# value of [section] key in an INI text on stdin
ini_get() {
	awk -v s="[$1]" -v k="$2" '
		/^\[/ { in_s = ($0 == s) }
		in_s && $1 == k && $2 == "=" { sub(/^[^=]*= */, ""); print; exit }'
}

boards=(host qemu-aarch64 qemu-armhf rpi4 imx6ull-evk)
for b in "${boards[@]}"; do
	d=$top/boards/$b
	for f in board.conf kioskpayd.ini kioskpayd.service; do
		[ -f "$d/$f" ] || fail "$b: no $f"
	done
	(
		# shellcheck source=/dev/null
		. "$d/board.conf"
		for v in BOARD_DESCRIPTION BOARD_ARCH BOARD_TRIPLET BOARD_PRESET BOARD_MDB_DEVICE BOARD_MDB_FRAMING \
			BOARD_GPIO_CHIP BOARD_GPIO_POWER_FAIL BOARD_WATCHDOG BOARD_CONFIG BOARD_UNIT; do
			[ -n "${!v:-}" ] || fail "$b: board.conf lacks $v"
		done
		grep -q "\"name\": \"$BOARD_PRESET\"" "$top/CMakePresets.json" || fail "$b: no preset $BOARD_PRESET"
		[ -z "${BOARD_TOOLCHAIN:-}" ] || [ -f "$top/$BOARD_TOOLCHAIN" ] || fail "$b: no $BOARD_TOOLCHAIN"
		[ "$BOARD_PRESET" = host ] || [ -x "$d/test.sh" ] || fail "$b: no test.sh"

		dump=$("$kioskpayd" --check-config -c "$d/$BOARD_CONFIG") || fail "$b: kioskpayd refuses $BOARD_CONFIG"
		[ "$(ini_get mdb device <<<"$dump")" = "$BOARD_MDB_DEVICE" ] || fail "$b: [mdb] device"
		[ "$(ini_get mdb framing <<<"$dump")" = "$BOARD_MDB_FRAMING" ] || fail "$b: [mdb] framing"
		[ "$(ini_get gpio chip <<<"$dump")" = "$BOARD_GPIO_CHIP" ] || fail "$b: [gpio] chip"
		[ "$(ini_get gpio power_fail <<<"$dump")" = "$BOARD_GPIO_POWER_FAIL" ] || fail "$b: [gpio] power_fail"
		[ "$(ini_get watchdog device <<<"$dump")" = "$BOARD_WATCHDOG" ] || fail "$b: [watchdog] device"
		[ "$(ini_get journal path <<<"$dump")" = /var/lib/kioskpay/journal.db ] || fail "$b: [journal] path"

		unit=$d/$BOARD_UNIT
		for line in Type=notify User=kioskpay Group=kioskpay ProtectSystem=strict \
			ReadWritePaths=/var/lib/kioskpay PrivateTmp=yes NoNewPrivileges=yes Restart=on-failure \
			WatchdogSec=10s StateDirectory=kioskpay ProtectHome=yes CapabilityBoundingSet= \
			DevicePolicy=closed "ExecStart=/usr/sbin/kioskpayd -c /etc/kioskpay/kioskpayd.ini"; do
			grep -qxF "$line" "$unit" || fail "$b: $BOARD_UNIT lacks $line"
		done
		want=0
		for dev in "$BOARD_MDB_DEVICE" "$BOARD_GPIO_CHIP" "$BOARD_WATCHDOG"; do
			[ "$dev" = none ] && continue
			want=$((want + 1))
			grep -qxF "DeviceAllow=$dev rw" "$unit" || fail "$b: $BOARD_UNIT does not allow $dev"
		done
		[ "$(grep -c '^DeviceAllow=' "$unit" || true)" = "$want" ] || fail "$b: $BOARD_UNIT allows other devices"
	) || exit 1
	printf 'ok %s\n' "$b"
done
for f in kioskpay.sysusers 60-kioskpay.rules; do
	[ -f "$top/boards/common/$f" ] || fail "no boards/common/$f"
done
grep -q '^u kioskpay ' "$top/boards/common/kioskpay.sysusers" || fail "sysusers: no kioskpay user"
echo "all boards ok"
