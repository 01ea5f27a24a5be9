#!/usr/bin/env bash
# bench.sh — run kioskpay's benchmarks; they print figures and assert nothing.
#   tests/bench/bench.sh BUILD_DIR [name...]     (no name: every benchmark)
# A benchmark is a function bench_<name> below; add one to add a benchmark.
# Each figure goes into one table printed at the end (figure | value |
# baseline | ratio | target, the baseline measured in the same run), and each
# benchmark's figures into BUILD_DIR/bench/<name>.json (all: summary.json).
set -euo pipefail

build=${1:?usage: bench.sh BUILD_DIR [name...]}
shift
[ -d "$build" ] || { echo "bench.sh: no build directory $build" >&2; exit 2; }
build=$(cd "$build" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
# free_port, wait_tcp
. "$here/../support/ports.sh"
res=$build/bench
mkdir -p "$res"
rows=$res/rows.tsv
: >"$rows"

need() {
	[ -x "$1" ] || { echo "bench.sh: $1 not built (cmake --build $build --target $(basename "$1"))" >&2; exit 1; }
}

# fig BENCH FIGURE VALUE BASELINE RATIO TARGET: one row of the final table
# ("-" where a column does not apply).
fig() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "${3:--}" "${4:--}" "${5:--}" "${6:--}" >>"$rows"
}

# jnum FILE KEY: a number (or true/false) from a flat JSON object.
jnum() {
	sed -n "s/.*\"$2\":\([-0-9.eE+a-z]*\).*/\1/p" "$1" | head -n 1
}

# ratio A B [FORMAT]: A / B, or "-" if either is missing or B is 0.
ratio() {
	awk -v a="${1:-}" -v b="${2:-}" -v f="${3:-%.2f}" \
		'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf f "\n", a / b }'
}

# json_str TEXT: TEXT as a JSON string.
json_str() {
	printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

# json_val TEXT: a number as is, anything else as a string.
json_val() {
	if [[ $1 =~ ^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; then printf '%s' "$1"; else json_str "$1"; fi
}

# save_json BENCH [DETAIL_FILE]: BUILD_DIR/bench/BENCH.json with BENCH's rows
# and the program's own figures (a JSON object) under "detail".
save_json() {
	local name=$1 detail=${2:-} first=1 b f v base r t
	{
		printf '{"bench":%s,"date":%s,"host":%s,"load1":%s,"rows":[' "$(json_str "$name")" \
			"$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")" "$(json_str "$(uname -nm)")" \
			"$(cut -d' ' -f1 /proc/loadavg)"
		while IFS=$'\t' read -r b f v base r t; do
			[ "$b" = "$name" ] || continue
			[ $first = 1 ] || printf ','
			first=0
			printf '{"figure":%s,"value":%s,"baseline":%s,"ratio":%s,"target":%s}' "$(json_str "$f")" \
				"$(json_val "$v")" "$(json_val "$base")" "$(json_val "$r")" "$(json_str "$t")"
		done <"$rows"
		printf '],"detail":'
		if [ -n "$detail" ] && [ -s "$detail" ]; then tr -d '\n' <"$detail"; else printf 'null'; fi
		printf '}\n'
	} >"$res/$name.json"
}

# The journal: commits/s against plain SQLite, syncs and bytes per payment.
# BENCH_DIR picks the file system to measure on (default /tmp).
bench_journal() {
	local bin=$build/tests/bench/kp-bench-journal j=$res/journal-detail.json
	need "$bin"
	"$bin" --dir "${BENCH_DIR:-/tmp}" --json "$j" ${BENCH_JOURNAL_ARGS:-}
	local ja bb sp kp bsp bkp pj pn sn kn fps
	ja=$(jnum "$j" journal_commits_per_s) bb=$(jnum "$j" baseline_commits_per_s)
	sp=$(jnum "$j" syncs_per_payment) kp=$(jnum "$j" kib_per_payment)
	bsp=$(jnum "$j" baseline_syncs_per_payment) bkp=$(jnum "$j" baseline_kib_per_payment)
	pj=$(jnum "$j" vsnaive_journal_payments_per_s) pn=$(jnum "$j" naive_payments_per_s)
	sn=$(jnum "$j" naive_syncs_per_payment) kn=$(jnum "$j" naive_kib_per_payment) fps=$(jnum "$j" fsync_per_s)
	local jf
	jf=$(jnum "$j" journal_commits_per_s_vs_fsync)
	fig journal "journal commits/s (baseline: plain SQLite, same pragmas)" "$ja" "$bb" "$(ratio "$ja" "$bb")" ">= 0.8x"
	fig journal "journal commits/s (baseline: raw 4 KiB append+fdatasync, same rounds)" "$jf" "$fps" \
		"$(ratio "$jf" "$fps")" "<= 1 (bound)"
	fig journal "syncs per completed payment, one-request sale (baseline: 3 bare commits)" "$sp" "$bsp" \
		"$(ratio "$sp" "$bsp")" "<= 4"
	fig journal "KiB written per completed payment, one-request sale (baseline: 3 bare commits)" "$kp" "$bkp" \
		"$(ratio "$kp" "$bkp")" "<= 16"
	# The same on journals already holding BENCH_PREFILL (10,000) sales: what a
	# kiosk in service writes (the random-key indexes, dedup_key and host_txn,
	# then touch a different leaf with every sale, written again at each checkpoint).
	local jp=$res/journal-in-service.json pre=${BENCH_PREFILL:-10000} sp2 kp2 r2
	"$bin" --dir "${BENCH_DIR:-/tmp}" --prefill "$pre" --payments 1000 --json "$jp" ${BENCH_JOURNAL_ARGS:-} \
		>"$res/journal-in-service.log"
	sp2=$(jnum "$jp" syncs_per_payment) kp2=$(jnum "$jp" kib_per_payment) r2=$(jnum "$jp" ratio_median)
	echo "in service ($pre sales already in the journal): $sp2 syncs, $kp2 KiB per payment; vs plain SQLite $r2 (median)"
	fig journal "syncs / KiB per payment, journal holding $pre sales (baseline: empty journal)" "$sp2 / $kp2" \
		"$sp / $kp" "$(ratio "$sp2" "$sp") / $(ratio "$kp2" "$kp")" "<= 4 / <= 16"
	fig journal "journal commits/s vs plain SQLite, both holding $pre sales (median of rounds)" "$r2" "-" "-" ">= 0.8x"
	# The same journal in service when the UI makes time-ordered dedup keys
	# (UUID v7, docs/api.md): the dedup index then grows at its right edge.
	local jo=$res/journal-in-service-ordered.json so ko
	"$bin" --dir "${BENCH_DIR:-/tmp}" --prefill "$pre" --payments 1000 --ordered-keys --json "$jo" \
		${BENCH_JOURNAL_ARGS:-} >"$res/journal-in-service-ordered.log"
	so=$(jnum "$jo" syncs_per_payment) ko=$(jnum "$jo" kib_per_payment)
	echo "in service, time-ordered dedup keys: $so syncs, $ko KiB per payment"
	fig journal "syncs / KiB per payment, journal holding $pre sales, UI's dedup keys time-ordered (baseline: random keys)" \
		"$so / $ko" "$sp2 / $kp2" "$(ratio "$so" "$sp2") / $(ratio "$ko" "$kp2")" "<= 4 / <= 16"
	# The same sale as POST /orders then /pay: the order is a commit of its own.
	local j4=$res/journal-two-requests.json s4 k4
	"$bin" --dir "${BENCH_DIR:-/tmp}" --two-requests --json "$j4" ${BENCH_JOURNAL_ARGS:-} >"$res/journal-two-requests.log"
	s4=$(jnum "$j4" syncs_per_payment) k4=$(jnum "$j4" kib_per_payment)
	echo "two requests (POST /orders, then /pay): $s4 syncs, $k4 KiB per completed payment"
	fig journal "syncs / KiB per payment, POST /orders then /pay (baseline: one-request sale)" "$s4 / $k4" \
		"$sp / $kp" "$(ratio "$s4" "$sp") / $(ratio "$k4" "$kp")" "-"
	fig journal "payments/s, journal (baseline: naive design)" "$pj" "$pn" "$(ratio "$pj" "$pn")" "> 1x"
	fig journal "syncs per payment, naive design (baseline: journal)" "$sn" "$sp" "$(ratio "$sn" "$sp")" "-"
	fig journal "KiB per payment, naive design (baseline: journal)" "$kn" "$kp" "$(ratio "$kn" "$kp")" "-"
	save_json journal "$j"
}

# The whole stack: CoAP -> engine -> journal -> TLS -> simulator -> confirm ->
# commit, with kp-load as the customers, beside the journal-only rate (the
# durability limit) measured in the same run. BENCH_SALE_ORDERS (default 300).
# sim_dir NAME: a fresh directory for the simulator's ledger, under
# BENCH_SIM_DIR (default /dev/shm): the payment host's disk is not the kiosk's,
# and its fsyncs on the kiosk's device would be counted against the kiosk.
sim_dir() {
	local base=${BENCH_SIM_DIR:-/dev/shm}
	[ -d "$base" ] || base=${BENCH_DIR:-/tmp}
	mktemp -d "$base/kp-bench-$1-sim-XXXXXX"
}

# stack_start NAME: the dev PKI, kp-hostsim (its ledger under sim_dir) and a
# kioskpayd on free loopback ports, for the full-stack benchmarks; returns
# once kioskpayd says it is ready (health ok), or fails with both logs. Sets the
# caller's dir simdir hp cp ap sim_pid d_pid (declare them local first).
stack_start() {
	local pki=$build/tests/pki/kp-pki sim=$build/tests/hostsim/kp-hostsim
	local daemon=$build/app/kioskpayd/kioskpayd ctl=$build/app/kioskctl/kioskctl
	need "$pki"; need "$sim"; need "$daemon"; need "$ctl"
	dir=$(mktemp -d "${BENCH_DIR:-/tmp}/kp-bench-$1-XXXXXX")
	simdir=$(sim_dir "$1")
	hp=$(free_port tcp) cp=$(free_port tcp) ap=$(free_port udp)
	"$pki" "$dir/pki" >/dev/null
	"$sim" --listen "127.0.0.1:$hp" --control "127.0.0.1:$cp" --ledger "$simdir/ledger.db" \
		--ca "$dir/pki/ca.crt" --cert "$dir/pki/host.crt" --key "$dir/pki/host.key" >"$dir/sim.log" 2>&1 &
	sim_pid=$!
	d_pid=
	# Whatever happens next, the stack goes when the benchmark's subshell does.
	stack_pids=("$sim_pid") stack_dirs=("$dir" "$simdir")
	trap stack_stop EXIT
	if ! wait_tcp "$cp" 200; then
		stack_failed "kp-hostsim is not listening on 127.0.0.1:$cp after 10 s"
		return 1
	fi
	printf '%s\n' "[journal]" "path = $dir/state/journal.db" "[api]" "listen = 127.0.0.1:$ap" \
		"[host]" "address = 127.0.0.1:$hp" "server_name = localhost" "ca = $dir/pki/ca.crt" \
		"cert = $dir/pki/device.crt" "key = $dir/pki/device.key" "[device]" "id = kiosk-dev-1" \
		"[payment]" "max_amount = 100000" "[log]" "level = warn" >"$dir/k.ini"
	"$daemon" -c "$dir/k.ini" >"$dir/daemon.log" 2>&1 &
	d_pid=$!
	stack_pids+=("$d_pid")
	# Ready: the API answers and says the journal is open and the host up.
	local i
	for ((i = 0; i < 200; i++)); do
		"$ctl" --json --api "127.0.0.1:$ap" health 2>/dev/null | grep -q '"status":"ok"' && return 0
		kill -0 "$d_pid" 2>/dev/null || break
		sleep 0.05
	done
	stack_failed "kioskpayd is not ready (health ok) on 127.0.0.1:$ap"
	return 1
}

# stack_failed WHY: say why and what the two logs say, then stop the stack.
stack_failed() {
	echo "bench: $1" >&2
	tail -n 20 "$dir/sim.log" "$dir/daemon.log" 2>/dev/null | sed 's/^/  /' >&2 || true
	stack_stop
}

# stack_stop: end what stack_start started and remove its files (again: a
# no-op).
stack_pids=() stack_dirs=()
stack_stop() {
	if [ ${#stack_pids[@]} -gt 0 ]; then
		kill "${stack_pids[@]}" 2>/dev/null || true
		wait "${stack_pids[@]}" 2>/dev/null || true
	fi
	[ ${#stack_dirs[@]} = 0 ] || rm -rf "${stack_dirs[@]}"
	stack_pids=() stack_dirs=()
}

# customers C N PREFIX: C kp-load processes at once, N orders each, against
# the stack of stack_start. Sets the caller's paid (total), secs, rate
# (payments/s) and p50/p99 (the worst client's, ms).
customers() {
	local c=$1 n=$2 prefix=$3 i f pids=() t0 t1
	paid=0 p50=0 p99=0
	t0=$(date +%s.%N)
	for i in $(seq 1 "$c"); do
		"$build/tests/load/kp-load" --api "127.0.0.1:$ap" --control "127.0.0.1:$cp" --orders "$n" \
			--prefix "$prefix$i" --seed "$i" --one-request >"$dir/load-$prefix$i.json" 2>/dev/null &
		pids+=($!)
	done
	wait "${pids[@]}" || true
	t1=$(date +%s.%N)
	for i in $(seq 1 "$c"); do
		f=$dir/load-$prefix$i.json
		paid=$((paid + $(jnum "$f" paid)))
		p50=$(awk -v a="$p50" -v b="$(jnum "$f" order_to_paid_ms_p50)" 'BEGIN { print (b > a ? b : a) }')
		p99=$(awk -v a="$p99" -v b="$(jnum "$f" order_to_paid_ms_p99)" 'BEGIN { print (b > a ? b : a) }')
	done
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
	rate=$(awk -v p="$paid" -v s="$secs" 'BEGIN { printf "%.1f", p / s }')
}

bench_sale() {
	local load=$build/tests/load/kp-load jbin=$build/tests/bench/kp-bench-journal
	need "$load"; need "$jbin"
	local n=${BENCH_SALE_ORDERS:-300}
	local dir simdir hp cp ap sim_pid d_pid j1 j2
	# The journal-only limit once before and once after the stack, averaged:
	# this disk's fsync rate drifts by ±20% over seconds, and one run beside
	# the stack compared the stack with whatever moment the disk had then.
	j1=$("$jbin" --dir "${BENCH_DIR:-/tmp}" --payments "$n" | grep '^(a) journal')
	stack_start sale
	local out rss stack jonly conc=${BENCH_SALE_CUSTOMERS:-4} paid secs rate p50 p99 cpaid crate
	out=$("$load" --api "127.0.0.1:$ap" --control "127.0.0.1:$cp" --orders "$n" --prefix bench --one-request)
	# The same with several customers at once (a kiosk with a card reader and a
	# QR screen, or lanes): the service's throughput rather than one customer's latency.
	customers "$conc" "$n" c
	cpaid=$paid crate=$rate
	rss=$(awk '/VmHWM/ {print $2}' "/proc/$d_pid/status")
	stack_stop
	j2=$("$jbin" --dir "${BENCH_DIR:-/tmp}" --payments "$n" | grep '^(a) journal')
	stack=$(echo "$out" | sed -n 's/.*"paid_per_s":\([0-9.]*\).*/\1/p')
	j1=$(echo "$j1" | sed -n 's/.*(\([0-9.]*\) payments\/s).*/\1/p')
	j2=$(echo "$j2" | sed -n 's/.*(\([0-9.]*\) payments\/s).*/\1/p')
	jonly=$(awk -v a="$j1" -v b="$j2" 'BEGIN { printf "%.1f", (a + b) / 2 }')
	echo "kp-load: $out"
	echo "full stack:    $stack completed payments/s (one customer at a time, through CoAP, TLS and the simulator)"
	echo "  order->paid: p50 $(echo "$out" | sed -n 's/.*"order_to_paid_ms_p50":\([0-9.]*\).*/\1/p') ms, p99 $(echo "$out" | sed -n 's/.*"order_to_paid_ms_p99":\([0-9.]*\).*/\1/p') ms"
	echo "full stack:    $crate completed payments/s ($conc customers at once, $cpaid paid)"
	echo "journal only:  $jonly completed payments/s (the same 3 commits per payment, no network; $j1 before the stack, $j2 after)"
	awk -v a="$stack" -v c="$crate" -v b="$jonly" 'BEGIN { if (b > 0) printf "ratio full/journal = %.2f one customer, %.2f several (target >= 0.5)\n", a / b, c / b }'
	echo "kioskpayd peak RSS (VmHWM): $rss KiB (target < 8192 KiB)"
	local p50 p99
	p50=$(echo "$out" | sed -n 's/.*"order_to_paid_ms_p50":\([0-9.]*\).*/\1/p')
	p99=$(echo "$out" | sed -n 's/.*"order_to_paid_ms_p99":\([0-9.]*\).*/\1/p')
	fig sale "full stack payments/s, one customer at a time (baseline: journal only)" "$stack" "$jonly" \
		"$(ratio "$stack" "$jonly")" "latency-bound"
	fig sale "full stack payments/s, $conc customers at once (baseline: journal only)" "$crate" "$jonly" \
		"$(ratio "$crate" "$jonly")" ">= 0.5x"
	fig sale "order->paid p50 ms" "$p50" - - -
	fig sale "order->paid p99 ms" "$p99" - - -
	fig sale "kioskpayd peak RSS KiB (VmHWM)" "$rss" - - "< 8192"
	echo "$out" >"$res/sale-detail.json"
	save_json sale "$res/sale-detail.json"
}

# The host link: full TLS handshakes per 1000 payments with no cut, with
# host-side cuts (resumed) and with host restarts (full); ping and
# query_payment round trips beside a plain TCP echo of the same sizes.
# BENCH_LINK_PAYMENTS (default 2000), BENCH_LINK_CUTS (5).
bench_link() {
	local bin=$build/tests/bench/kp-bench-link j=$res/link-detail.json
	need "$bin"
	need "$build/tests/hostsim/kp-hostsim"
	local k=${BENCH_LINK_PAYMENTS:-2000} r=${BENCH_LINK_CUTS:-5}
	"$bin" --payments "$k" --cuts "$r" --round-trips "${BENCH_LINK_TRIPS:-5000}" --dir "${BENCH_DIR:-/tmp}" \
		--hostsim "$build/tests/hostsim/kp-hostsim" --pki "$build/tests/pki/kp-pki" --json "$j"
	local v b x q
	fig link "full TLS handshakes per 1000 payments, nothing restarts" "$(jnum "$j" none_full_per_1000)" - - "<= 1"
	fig link "full handshakes per 1000 payments, $r host restarts in $k" "$(jnum "$j" restart_full_per_1000)" \
		- - "(1+$r)/$k*1000"
	fig link "resumed handshakes per 1000 payments, $r host cuts in $k" "$(jnum "$j" kick_resumed_per_1000)" \
		- - "$r/$k*1000, 0 full"
	fig link "full handshakes per 1000 payments, $r host cuts in $k" "$(jnum "$j" kick_full_per_1000)" - - "<= 1"
	for x in ping query; do
		for q in p50 p99; do
			v=$(jnum "$j" "${x}_${q}_us") b=$(jnum "$j" "echo_${x}_${q}_us")
			fig link "$x round trip $q us (baseline: TCP echo, same sizes)" "$v" "$b" "$(ratio "$v" "$b" %.1f)" -
		done
	done
	save_json link "$j"
}

# Boot after a power cut: ready-to-sell and replay time of kioskpayd for
# BENCH_REPLAY_COUNTS in-flight attempts (default "1000 10000 100000"), each
# replay bounded by BENCH_REPLAY_TIMEOUT seconds (default 60; an unfinished one
# reports how far it got and the rate it reached).
bench_replay() {
	local bin=$build/tests/bench/kp-bench-replay n j first=1 prev_n="" prev_t=""
	need "$bin"
	local detail=$res/replay-detail.json
	rm -f "$res"/replay-*.json "$res"/replay-*.dat
	printf '{"runs":[' >"$detail"
	for n in ${BENCH_REPLAY_COUNTS:-1000 10000 100000}; do
		j=$res/replay-$n.json
		rm -f "$j"
		if ! "$bin" --count "$n" --dir "${BENCH_DIR:-/tmp}" --timeout "${BENCH_REPLAY_TIMEOUT:-60}" --json "$j" \
			--samples "$res/replay-$n.dat" --kioskpayd "$build/app/kioskpayd/kioskpayd" \
			--hostsim "$build/tests/hostsim/kp-hostsim" --pki "$build/tests/pki/kp-pki"; then
			fig replay "replay, $n in flight: FAILED (see above)" - - - -
			continue
		fi
		[ $first = 1 ] || printf ',' >>"$detail"
		first=0
		tr -d '\n' <"$j" >>"$detail"
		local ready empty done t proj host reached val
		ready=$(jnum "$j" ready_ms) empty=$(jnum "$j" ready_empty_ms) done=$(jnum "$j" done)
		t=$(jnum "$j" replay_s) proj=$(jnum "$j" projected_s) host=$(jnum "$j" host_limit_s)
		reached=$(jnum "$j" reached)
		if [ "${ready%%.*}" = -1 ]; then
			fig replay "ready-to-sell ms, $n in flight (baseline: empty journal)" \
				"not within ${BENCH_REPLAY_TIMEOUT:-60} s" "$empty" - "< 200"
		else
			fig replay "ready-to-sell ms, $n in flight (baseline: empty journal)" "$ready" "$empty" \
				"$(ratio "$ready" "$empty")" "< 200"
		fi
		if [ "$done" = true ]; then
			val=$t
		else
			val=">= $proj (unfinished: $reached done in ${BENCH_REPLAY_TIMEOUT:-60} s)"
		fi
		fig replay "replay s, $n in flight (baseline: host limit, same cancels pipelined)" "$val" "$host" \
			"$(ratio "$proj" "$host" %.1f)" "$([ "$n" = 10000 ] && echo '< 2' || echo linear)"
		if [ -n "$prev_n" ]; then
			fig replay "replay time growth ${prev_n} -> $n in flight" "$(ratio "$proj" "$prev_t" %.1f)x" \
				"$(ratio "$n" "$prev_n" %.0f)x" "$(ratio "$(ratio "$proj" "$prev_t" %.3f)" "$(ratio "$n" "$prev_n" %.3f)")" \
				"1 (linear)"
		fi
		prev_n=$n prev_t=$proj
	done
	printf ']}\n' >>"$detail"
	save_json replay "$detail"
}

# CPU: instructions for one completed payment through engine + journal (fake
# host, fake clock), counted by callgrind, beside the same 3 commits as bare
# single-row SQLite. Stable on a busy machine: kernel time (fsync) is not counted.
bench_cpu() {
	local bin=$build/tests/bench/kp-bench-cpu n=${BENCH_CPU_PAYMENTS:-200}
	need "$bin"
	if ! command -v valgrind >/dev/null; then
		echo "bench cpu: valgrind not installed (./run bench installs it)"
		"$bin" --payments "$n"
		return 0
	fi
	local mode fn ir pay base
	for mode in pay base; do
		fn=pay_many
		[ $mode = base ] && fn=base_many
		valgrind --tool=callgrind --callgrind-out-file="$res/callgrind-$mode.out" --toggle-collect=$fn \
			"$bin" --payments "$n" $([ $mode = base ] && echo --baseline) >"$res/callgrind-$mode.log" 2>&1
		ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$res/callgrind-$mode.log")
		[ $mode = pay ] && pay=$((ir / n)) || base=$((ir / n))
	done
	callgrind_annotate --inclusive=yes "$res/callgrind-pay.out" 2>/dev/null |
		grep -E 'kp_|event_add|success_in_txn|apply_|due_|pay_' | head -n 20 >"$res/callgrind-top.txt" || true
	echo "instructions per completed payment (engine + journal, fake host): $pay"
	echo "instructions per 3 bare single-row SQLite commits:               $base"
	echo "ratio $(ratio "$pay" "$base" %.1f); heaviest kp functions (inclusive) in $res/callgrind-top.txt:"
	head -n 8 "$res/callgrind-top.txt" | sed 's/^/  /'
	fig cpu "instructions per completed payment, engine+journal (baseline: 3 bare SQLite commits)" \
		"$pay" "$base" "$(ratio "$pay" "$base" %.1f)" "stable"
	# A real customer takes a while: the queries until they pay (every 5 s,
	# answered pending) are planned in memory and write nothing.
	local s0 s30
	s0=$("$bin" --payments 50 --syncs | sed -n 's/^ *\([0-9.]*\) WAL syncs per payment.*/\1/p')
	s30=$("$bin" --payments 50 --customer-ms 30000 | sed -n 's/^ *\([0-9.]*\) WAL syncs per payment.*/\1/p')
	echo "WAL syncs per sale: $s0 when the customer pays at once, $s30 when after 30 s of queries"
	fig cpu "WAL syncs per sale, the customer pays 30 s after the QR (baseline: at once)" "$s30" "$s0" \
		"$(ratio "$s30" "$s0")" "-"
	printf '{"payments":%s,"instructions_per_payment":%s,"baseline_instructions":%s,"syncs_at_once":%s,"syncs_after_30s":%s}\n' \
		"$n" "$pay" "$base" "${s0:-null}" "${s30:-null}" >"$res/cpu-detail.json"
	save_json cpu "$res/cpu-detail.json"
}

# Stripped size of kioskpayd: this build, and the ARM cross builds next to it
# (build/aarch64, build/armhf) if they exist, with their build type.
bench_size() {
	local top dir arch strip_bin bin tmp size full type
	top=$(dirname "$build")
	tmp=$(mktemp)
	for arch in host aarch64 armhf; do
		case $arch in
		host) dir=$build strip_bin=strip ;;
		aarch64) dir=$top/aarch64 strip_bin=aarch64-linux-gnu-strip ;;
		armhf) dir=$top/armhf strip_bin=arm-linux-gnueabihf-strip ;;
		esac
		bin=$dir/app/kioskpayd/kioskpayd
		[ -x "$bin" ] || { [ $arch = host ] && need "$bin"; continue; }
		command -v "$strip_bin" >/dev/null || { echo "bench size: no $strip_bin"; continue; }
		"$strip_bin" -o "$tmp" "$bin"
		size=$(stat -c %s "$tmp") full=$(stat -c %s "$bin")
		type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$dir/CMakeCache.txt" 2>/dev/null)
		echo "kioskpayd $arch (${type:-?}): $size bytes stripped ($full unstripped)"
		fig size "kioskpayd stripped bytes, $arch ${type:-?} (baseline: unstripped)" "$size" "$full" \
			"$(ratio "$size" "$full")" -
	done
	rm -f "$tmp"
	save_json size
}

# Payments/s against load: BENCH_SCALE_CLIENTS concurrent customers (kp-load
# processes, default "1 2 4 8"), BENCH_SCALE_ORDERS each (default 100), against
# one kioskpayd and one simulator.
bench_scale() {
	local load=$build/tests/load/kp-load
	need "$load"
	local c i n=${BENCH_SCALE_ORDERS:-100} one="" dat=$res/scale.dat
	local dir simdir hp cp ap sim_pid d_pid
	stack_start scale
	echo "# clients paid_per_s p50_ms p99_ms (orders per client: $n)" >"$dat"
	for c in ${BENCH_SCALE_CLIENTS:-1 2 4 8}; do
		local paid secs rate p50 p99
		customers "$c" "$n" "s$c-"
		[ -n "$one" ] || one=$rate
		echo "$c concurrent customers: $paid paid in $secs s" \
			"= $rate payments/s, order->paid p50 <= $p50 ms, p99 <= $p99 ms (worst client)"
		echo "$c $rate $p50 $p99" >>"$dat"
		fig scale "payments/s, $c concurrent customers (baseline: 1)" "$rate" "$one" "$(ratio "$rate" "$one")" -
		fig scale "order->paid p99 ms, $c concurrent customers" "$p99" - - -
	done
	stack_stop
	save_json scale
}

print_table() {
	[ -s "$rows" ] || return 0
	echo
	echo "== results ($(cut -d' ' -f1-3 /proc/loadavg) load; JSON in $res)"
	{
		printf 'bench\tfigure\tvalue\tbaseline\tratio\ttarget\n'
		cat "$rows"
	} | column -t -s $'\t' | tee "$res/table$tag.txt"
	local f first=1
	{
		printf '['
		for f in "$res"/{cpu,journal,link,qemu,replay,sale,scale,size}.json; do
			[ -f "$f" ] && [ "$f" -nt "$rows.start" ] || continue
			[ $first = 1 ] || printf ','
			first=0
			tr -d '\n' <"$f"
		done
		printf ']\n'
	} >"$res/summary$tag.json"
	echo "table: $res/table$tag.txt, JSON: $res/summary$tag.json"
	case " ${names[*]} " in
	*" replay "* | *" scale "*) ;;
	*)
		echo "plot: not redrawn (this run has neither replay nor scale)"
		return 0
		;;
	esac
	if command -v gnuplot >/dev/null && [ -x "$here/plot.sh" ]; then
		# A run of replay or scale alone plots what the folder holds of the
		# other from an earlier run: say so if nothing, the figures stand.
		if "$here/plot.sh" "$res" "$res/performance.png"; then
			echo "plot: $res/performance.png"
		else
			echo "plot: not drawn (see above)"
		fi
	fi
}

# The same figures under qemu-aarch64 where a baseline measured under the same
# emulation keeps the ratio meaningful (absolute numbers measure the emulator
# on this CPU, not an ARM kiosk): the journal against plain SQLite, syncs and
# bytes per payment (must equal the host's: the same SQLite, the same pages),
# and boot replay against the same binaries' empty-journal start and host
# limit. Every program (kioskpayd, kp-hostsim too) is the aarch64 build, run
# through toolchains/qemu-ns.sh. Needs build/aarch64 and its sysroot (made by
# ./run test --board qemu-aarch64, or BENCH_AARCH64_BUILD / _SYSROOT); without
# them one row says it was skipped. BENCH_QEMU_REPLAY_COUNTS ("1000 10000").
bench_qemu() {
	local top a64 sysroot j=$res/qemu-journal.json n r first=1
	top=$(cd "$here/../.." && pwd)
	a64=${BENCH_AARCH64_BUILD:-$(dirname "$build")/aarch64}
	sysroot=${BENCH_AARCH64_SYSROOT:-$(dirname "$build")/sysroot-arm64}
	if [ ! -f "$sysroot/.kp-sysroot-stamp" ] || [ ! -f "$a64/CMakeCache.txt" ]; then
		echo "bench qemu: no aarch64 build at $a64 or no sysroot at $sysroot (./run test --board qemu-aarch64)"
		fig qemu "skipped: no aarch64 build (./run test --board qemu-aarch64 makes one)" - - - -
		return 0
	fi
	cmake --build "$a64" --target kp-bench-journal kp-bench-replay kioskpayd kp-hostsim kp-pki >/dev/null
	local type qns=("$top/toolchains/qemu-ns.sh" arm64 "$sysroot")
	type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$a64/CMakeCache.txt")
	"${qns[@]}" "$a64/tests/bench/kp-bench-journal" --dir "${BENCH_DIR:-/tmp}" --payments 300 --json "$j"
	local ja bb sp kp hsp hkp
	ja=$(jnum "$j" journal_commits_per_s) bb=$(jnum "$j" baseline_commits_per_s)
	sp=$(jnum "$j" syncs_per_payment) kp=$(jnum "$j" kib_per_payment)
	hsp=$(jnum "$res/journal-detail.json" syncs_per_payment 2>/dev/null || true)
	hkp=$(jnum "$res/journal-detail.json" kib_per_payment 2>/dev/null || true)
	fig qemu "journal commits/s, $type (baseline: plain SQLite, both under qemu-aarch64)" "$ja" "$bb" \
		"$(ratio "$ja" "$bb")" "CPU-bound here"
	fig qemu "syncs per payment under qemu-aarch64 (baseline: the host's)" "$sp" "${hsp:--}" \
		"$(ratio "$sp" "${hsp:-}")" "= host"
	fig qemu "KiB per payment under qemu-aarch64 (baseline: the host's)" "$kp" "${hkp:--}" \
		"$(ratio "$kp" "${hkp:-}")" "= host"
	printf '{"journal":' >"$res/qemu-detail.json"
	tr -d '\n' <"$j" >>"$res/qemu-detail.json"
	printf ',"replay":[' >>"$res/qemu-detail.json"
	for n in ${BENCH_QEMU_REPLAY_COUNTS:-1000 10000}; do
		r=$res/qemu-replay-$n.json
		rm -f "$r"
		if ! "${qns[@]}" "$a64/tests/bench/kp-bench-replay" --count "$n" --dir "${BENCH_DIR:-/tmp}" \
			--timeout "${BENCH_REPLAY_TIMEOUT:-60}" --json "$r" --kioskpayd "$a64/app/kioskpayd/kioskpayd" \
			--hostsim "$a64/tests/hostsim/kp-hostsim" --pki "$a64/tests/pki/kp-pki"; then
			fig qemu "replay, $n in flight, qemu-aarch64: FAILED (see above)" - - - -
			continue
		fi
		[ $first = 1 ] || printf ',' >>"$res/qemu-detail.json"
		first=0
		tr -d '\n' <"$r" >>"$res/qemu-detail.json"
		local ready empty t host
		ready=$(jnum "$r" ready_ms) empty=$(jnum "$r" ready_empty_ms)
		t=$(jnum "$r" projected_s) host=$(jnum "$r" host_limit_s)
		fig qemu "ready-to-sell ms, $n in flight, qemu-aarch64 $type (baseline: empty journal)" "$ready" "$empty" \
			"$(ratio "$ready" "$empty")" "-"
		fig qemu "replay s, $n in flight, qemu-aarch64 $type (baseline: host limit, emulated too)" "$t" "$host" \
			"$(ratio "$t" "$host" %.1f)" "as on the host"
	done
	printf ']}\n' >>"$res/qemu-detail.json"
	save_json qemu "$res/qemu-detail.json"
}

known=$(declare -F | awk '{print $3}' | sed -n 's/^bench_//p')
names=("$@")
[ ${#names[@]} -gt 0 ] || read -r -a names <<<"$(echo $known)"
# A run of some benches only (./run bench qemu) writes its table and summary
# beside the whole run's (table-qemu.txt), not over them.
tag=""
[ $# = 0 ] || tag=-$(IFS=-; echo "$*")
for n in "${names[@]}"; do
	if ! declare -F "bench_$n" >/dev/null; then
		echo "bench.sh: unknown benchmark '$n' (known: $(echo $known))" >&2
		exit 2
	fi
done
touch "$rows.start"
failed=()
for n in "${names[@]}"; do
	echo "== bench $n"
	# Each in a subshell with errexit: one that breaks does not stop the others.
	set +e
	(
		set -e
		"bench_$n"
	)
	rc=$?
	set -e
	if [ $rc != 0 ]; then
		echo "== bench $n FAILED (exit $rc)"
		failed+=("$n")
		fig "$n" "FAILED (exit $rc): see its output above" - - - -
	fi
done
print_table
[ ${#failed[@]} = 0 ] || { echo "bench.sh: failed: ${failed[*]}" >&2; exit 1; }
