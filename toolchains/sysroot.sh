#!/usr/bin/env bash
# sysroot.sh — builds a private sysroot of kioskpay's target libraries from
# Debian's packages for ARCH, so the cross toolchains and qemu-user can use it.
# The machine's own apt/dpkg state is never touched: apt runs on a private
# state, cache and source list, and the .debs are only unpacked (dpkg-deb -x).
#   toolchains/sysroot.sh ARCH [DEST]     ARCH: arm64 | armhf
#   DEST defaults to build/sysroot-ARCH; a stamp of the package list makes a
#   second run a no-op. Needs no root. Exit 0: sysroot ready; 1: failed.
set -euo pipefail

die() { printf 'sysroot: %s\n' "$*" >&2; exit 1; }
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

arch=${1:-}
case $arch in
arm64) triplet=aarch64-linux-gnu ;;
armhf) triplet=arm-linux-gnueabihf ;;
*) die "usage: $0 arm64|armhf [DEST]" ;;
esac
top=$(cd "$(dirname "$0")/.." && pwd)
dest=${2:-$top/build/sysroot-$arch}
dest=$(realpath -m "$dest")

# Runtime libraries and their -dev packages, and what those need to compile
# and link (headers of the kernel, libgcc_s). The .so files we link need only
# libc: libcoap-3-notls has no TLS library behind it. check_needed() below
# proves that the closure is complete.
PACKAGES=(
	libc6 libc6-dev linux-libc-dev libgcc-s1
	libsqlite3-0 libsqlite3-dev
	libmbedcrypto7 libmbedx509-1 libmbedtls14 libmbedtls-dev
	libcoap3 libcoap3-dev
	libcjson1 libcjson-dev
	libinih1 libinih-dev
	libcmocka0 libcmocka-dev
)
# Libraries shipped by those packages that kioskpay never links (other
# libcoap TLS backends, inih's C++ reader): their missing NEEDED are fine.
UNUSED_RE='/(libcoap-3-(gnutls|openssl|mbedtls)|libINIReader)\.so'

stamp_version=1
hash=$(printf '%s\n' "$stamp_version" "$arch" "${PACKAGES[@]}" | sha256sum | cut -c1-16)
stamp=$dest/.kp-sysroot-stamp
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
	say "sysroot $arch: cached at $dest"
	exit 0
fi

# Private apt: its own sources (copied from the machine's Debian ones), lists,
# cache, an empty dpkg status, one architecture. apt.conf.d is still read.
aptdir=$dest.apt
mkdir -p "$aptdir/sources.list.d" "$aptdir/preferences.d" \
	"$aptdir/state/lists/partial" "$aptdir/cache/archives/partial" "$aptdir/debs"
rm -f "$aptdir/sources.list.d/"*
found=0
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
	[ -f "$f" ] || continue
	grep -qE '^[^#]*(deb\.debian\.org|/debian(-security)?/?( |$))' "$f" || continue
	cp "$f" "$aptdir/sources.list.d/$(basename "$f" | sed 's/^sources\.list$/debian.list/')"
	found=1
done
[ "$found" = 1 ] || die "no Debian apt source found in /etc/apt (sources.list, sources.list.d)"
: >"$aptdir/status"

APT=(apt-get -q
	-o "APT::Architecture=$arch" -o "APT::Architectures=$arch"
	-o "Dir::State=$aptdir/state" -o "Dir::State::status=$aptdir/status"
	-o "Dir::Cache=$aptdir/cache"
	-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$aptdir/sources.list.d"
	-o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$aptdir/preferences.d"
	-o "Acquire::Languages=none"
	-o "APT::Sandbox::User=root")

t0=$(date +%s)
say "sysroot $arch: apt-get update (private state in $aptdir)"
# A security index that does not match its Release file ("Mirror sync in
# progress?", seen for armhf) is retried, then left out with a warning: the
# main suite's libraries are as good for building and testing.
update_ok=0
for try in 1 2 3; do
	if "${APT[@]}" update >"$aptdir/update.log" 2>&1; then update_ok=1; break; fi
	[ "$try" -lt 3 ] && sleep $((try * 5))
done
if [ "$update_ok" = 0 ]; then
	if grep -E '^Err:' "$aptdir/update.log" | grep -qv -- '-security'; then
		cat "$aptdir/update.log" >&2
		die "apt-get update for $arch failed"
	fi
	printf 'sysroot: warning: %s\n' "$(grep -m1 -A1 '^Err:' "$aptdir/update.log" | tr -s ' \n' ' ')" >&2
	printf 'sysroot: warning: the security suite'\''s %s index is unusable; using the other suites\n' "$arch" >&2
fi

say "sysroot $arch: download ${#PACKAGES[@]} packages"
(cd "$aptdir/debs" && rm -f ./*.deb && "${APT[@]}" download "${PACKAGES[@]}" >"$aptdir/download.log" 2>&1) ||
	{ cat "$aptdir/download.log" >&2; die "apt-get download for $arch failed"; }

new=$dest.new
rm -rf "$new"
mkdir -p "$new"
for deb in "$aptdir"/debs/*.deb; do
	dpkg-deb -x "$deb" "$new"
done

# Absolute symlinks (libfoo.so -> /lib/<triplet>/libfoo.so.1) would point at
# the host: make every one relative to its place in the sysroot.
while IFS= read -r -d '' link; do
	target=$(readlink "$link")
	case $target in /*) ;; *) continue ;; esac
	rel=$(realpath -s -m --relative-to="$(dirname "$link")" "$new$target")
	ln -sfn "$rel" "$link"
done < <(find "$new" -type l -print0)

# Every NEEDED entry of every shared library we may link must be in the sysroot.
check_needed() {
	local root=$1 missing=0 f lib
	while IFS= read -r -d '' f; do
		[[ $f =~ $UNUSED_RE ]] && continue
		head -c4 "$f" | grep -q 'ELF' || continue
		for lib in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
			if [ ! -e "$root/lib/$triplet/$lib" ] && [ ! -e "$root/usr/lib/$triplet/$lib" ]; then
				printf 'sysroot: %s needs %s, not in the sysroot\n' "${f#"$root"/}" "$lib" >&2
				missing=1
			fi
		done
	done < <(find "$root/lib/$triplet" "$root/usr/lib/$triplet" -maxdepth 1 -type f -name '*.so*' -print0)
	return $missing
}
check_needed "$new" || die "sysroot $arch is incomplete: add the packages above to PACKAGES"

printf '%s\n' "$hash" >"$new/.kp-sysroot-stamp"
rm -rf "$dest"
mv "$new" "$dest"
say "sysroot $arch: ready at $dest ($(du -sh "$dest" | cut -f1), $(( $(date +%s) - t0 )) s)"
