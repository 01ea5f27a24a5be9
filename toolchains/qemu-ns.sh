#!/usr/bin/env bash
# qemu-ns.sh — runs a command in which ARM programs of ARCH start under
# qemu-user by themselves, so that a test running under qemu can start other
# built programs (kp-hostsim, kioskpayd, kioskctl, ...) like it does on the host.
# It registers qemu in a binfmt_misc of its own, inside a new user and mount
# namespace (Linux >= 6.7): nothing outside the command sees it; needs no root.
#   toolchains/qemu-ns.sh arm64|armhf SYSROOT CMD [ARGS...]
# Exit: CMD's status; 1 if the namespace or the registration fails.
set -euo pipefail

die() { printf 'qemu-ns: %s\n' "$*" >&2; exit 1; }

inside=0
if [ "${1:-}" = --inside ]; then inside=1; shift; fi
[ $# -ge 3 ] || die "usage: $0 arm64|armhf SYSROOT CMD [ARGS...]"
arch=$1 sysroot=$2
shift 2

# ELF header magic and mask for each target (as in QEMU's qemu-binfmt-conf.sh):
# class, data, version, e_type EXEC or DYN, e_machine.
case $arch in
arm64)
	emu=qemu-aarch64
	magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00' ;;
armhf)
	emu=qemu-arm
	magic='\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00' ;;
*) die "unknown arch '$arch' (arm64|armhf)" ;;
esac
mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'

if [ "$inside" = 0 ]; then
	[ -f "$sysroot/.kp-sysroot-stamp" ] || die "no sysroot at $sysroot (toolchains/sysroot.sh $arch)"
	command -v "$emu" >/dev/null || die "$emu not found (Debian package qemu-user)"
	command -v unshare >/dev/null || die "unshare not found (Debian package util-linux)"
	exec unshare --user --map-root-user --mount --propagation private -- "$0" --inside "$arch" "$sysroot" "$@"
fi

bm=/proc/sys/fs/binfmt_misc
mount -t binfmt_misc binfmt_misc "$bm" 2>/dev/null ||
	die "cannot mount a private binfmt_misc (needs Linux >= 6.7 with user namespaces)"
# F: the kernel opens the emulator now, so it is found whatever the command's
# mount or root; the emulator finds the target's libraries via QEMU_LD_PREFIX.
printf '%s' ":kp-$emu:M::$magic:$mask:$(command -v "$emu"):F" >"$bm/register" ||
	die "cannot register $emu in the private binfmt_misc"
export QEMU_LD_PREFIX=$sysroot
exec "$@"
