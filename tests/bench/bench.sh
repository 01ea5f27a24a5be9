#!/usr/bin/env bash
# bench.sh — run kioskpay's benchmarks; they print figures and assert nothing.
#   tests/bench/bench.sh BUILD_DIR [name...]     (no name: every benchmark)
# A benchmark is a function bench_<name> below; add one to add a benchmark.
set -euo pipefail

build=${1:?usage: bench.sh BUILD_DIR [name...]}
shift
[ -d "$build" ] || { echo "bench.sh: no build directory $build" >&2; exit 2; }

need() {
	[ -x "$1" ] || { echo "bench.sh: $1 not built (cmake --build $build --target $(basename "$1"))" >&2; exit 1; }
}

# The journal: commits/s against plain SQLite, syncs and bytes per payment.
# BENCH_DIR picks the file system to measure on (default /tmp).
bench_journal() {
	local bin=$build/tests/bench/kp-bench-journal
	need "$bin"
	"$bin" --dir "${BENCH_DIR:-/tmp}" ${BENCH_JOURNAL_ARGS:-}
}

known=$(declare -F | awk '{print $3}' | sed -n 's/^bench_//p')
names=("$@")
[ ${#names[@]} -gt 0 ] || read -r -a names <<<"$(echo $known)"
for n in "${names[@]}"; do
	if ! declare -F "bench_$n" >/dev/null; then
		echo "bench.sh: unknown benchmark '$n' (known: $(echo $known))" >&2
		exit 2
	fi
done
for n in "${names[@]}"; do
	echo "== bench $n"
	"bench_$n"
done
