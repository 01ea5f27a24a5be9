# shellcheck shell=bash
# boards/common.sh — sourced by boards/qemu-*/test.sh: builds a board's cross
# preset against its private sysroot and runs the ctest suite under qemu-user.
# The board's board.conf says which arch, preset and ctest subset. ctest runs in
# toolchains/qemu-ns.sh, so tests may start other built programs as on the host.
# Called through `./run test --board NAME`, which exports say/die/ensure_packages.

board_test() {
	local boarddir=$1; shift
	local top t0 t_sysroot t_build t_test ctest_rc=0 exe size
	top=$(cd "$boarddir/../.." && pwd)
	declare -F ensure_packages >/dev/null ||
		{ printf '%s: run me as ./run test --board %s\n' "$0" "$(basename "$boarddir")" >&2; exit 1; }
	# shellcheck source=/dev/null
	. "$boarddir/board.conf"
	cd "$top" || return 1

	# shellcheck disable=SC2086
	ensure_packages $BOARD_HOST_PACKAGES time

	t0=$(date +%s)
	toolchains/sysroot.sh "$BOARD_ARCH"
	t_sysroot=$(( $(date +%s) - t0 ))

	t0=$(date +%s)
	say "build ($BOARD_PRESET)"
	cmake --preset "$BOARD_PRESET" >/dev/null
	cmake --build --preset "$BOARD_PRESET" -j"$(nproc)"
	t_build=$(( $(date +%s) - t0 ))

	t0=$(date +%s)
	say "test ($BOARD_PRESET under $BOARD_EMULATOR${BOARD_CTEST_ARGS:+, $BOARD_CTEST_ARGS})"
	# shellcheck disable=SC2086
	/usr/bin/time -f %M -o "build/$BOARD_PRESET/peak-rss-kib" \
		toolchains/qemu-ns.sh "$BOARD_ARCH" "$top/build/sysroot-$BOARD_ARCH" \
		ctest --preset "$BOARD_PRESET" -j"$(nproc)" $BOARD_CTEST_ARGS "$@" || ctest_rc=$?
	t_test=$(( $(date +%s) - t0 ))

	exe=$(find "build/$BOARD_PRESET" -type f -name kioskpayd -perm -u+x 2>/dev/null | head -n1)
	if [ -n "$exe" ]; then
		"$BOARD_TRIPLET-strip" -o "$exe.stripped" "$exe"
		size=$(stat -c %s "$exe.stripped")
		say "kioskpayd stripped ($BOARD_ARCH, $BOARD_PRESET preset): $size bytes, $(( (size + 1023) / 1024 )) KiB"
	else
		say "kioskpayd: not built yet, no size"
	fi
	say "$BOARD_PRESET: sysroot ${t_sysroot}s, build ${t_build}s, ctest ${t_test}s, peak RSS of one process under qemu $(tail -n1 "build/$BOARD_PRESET/peak-rss-kib") KiB"
	return "$ctest_rc"
}
