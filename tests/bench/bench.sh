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

# The whole stack: CoAP -> engine -> journal -> TLS -> simulator -> confirm ->
# commit, with kp-load as the customers, beside the journal-only rate (the
# durability limit) measured in the same run. BENCH_SALE_ORDERS (default 300).
bench_sale() {
	local pki=$build/tests/pki/kp-pki sim=$build/tests/hostsim/kp-hostsim
	local daemon=$build/app/kioskpayd/kioskpayd load=$build/tests/load/kp-load
	local jbin=$build/tests/bench/kp-bench-journal
	need "$pki"; need "$sim"; need "$daemon"; need "$load"; need "$jbin"
	local n=${BENCH_SALE_ORDERS:-300}
	local dir
	dir=$(mktemp -d "${BENCH_DIR:-/tmp}/kp-bench-sale-XXXXXX")
	local hp=$((20000 + RANDOM % 10000)) cp=$((30000 + RANDOM % 10000)) ap=$((40000 + RANDOM % 10000))
	"$pki" "$dir/pki" >/dev/null
	"$sim" --listen "127.0.0.1:$hp" --control "127.0.0.1:$cp" --ledger "$dir/ledger.db" \
		--ca "$dir/pki/ca.crt" --cert "$dir/pki/host.crt" --key "$dir/pki/host.key" >"$dir/sim.log" 2>&1 &
	local sim_pid=$!
	printf '%s\n' "[journal]" "path = $dir/state/journal.db" "[api]" "listen = 127.0.0.1:$ap" \
		"[host]" "address = 127.0.0.1:$hp" "server_name = localhost" "ca = $dir/pki/ca.crt" \
		"cert = $dir/pki/device.crt" "key = $dir/pki/device.key" "[device]" "id = kiosk-dev-1" \
		"[payment]" "max_amount = 100000" "[log]" "level = warn" >"$dir/k.ini"
	sleep 0.3
	"$daemon" -c "$dir/k.ini" >"$dir/daemon.log" 2>&1 &
	local d_pid=$!
	sleep 0.7
	local out rss jline stack jonly
	out=$("$load" --api "127.0.0.1:$ap" --control "127.0.0.1:$cp" --orders "$n" --prefix bench)
	rss=$(awk '/VmHWM/ {print $2}' "/proc/$d_pid/status")
	kill "$d_pid" "$sim_pid" 2>/dev/null || true
	wait "$d_pid" "$sim_pid" 2>/dev/null || true
	jline=$("$jbin" --dir "${BENCH_DIR:-/tmp}" --payments "$n" | grep '^(a) journal')
	stack=$(echo "$out" | sed -n 's/.*"paid_per_s":\([0-9.]*\).*/\1/p')
	jonly=$(echo "$jline" | sed -n 's/.*(\([0-9.]*\) payments\/s).*/\1/p')
	echo "kp-load: $out"
	echo "full stack:    $stack completed payments/s (one customer at a time, through CoAP, TLS and the simulator)"
	echo "  order->paid: p50 $(echo "$out" | sed -n 's/.*"order_to_paid_ms_p50":\([0-9.]*\).*/\1/p') ms, p99 $(echo "$out" | sed -n 's/.*"order_to_paid_ms_p99":\([0-9.]*\).*/\1/p') ms"
	echo "journal only:  $jonly completed payments/s (the same 4 commits per payment, no network)"
	awk -v a="$stack" -v b="$jonly" 'BEGIN { if (b > 0) printf "ratio full/journal = %.2f (target >= 0.5)\n", a / b }'
	echo "kioskpayd peak RSS (VmHWM): $rss KiB (target < 8192 KiB)"
	rm -rf "$dir"
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
