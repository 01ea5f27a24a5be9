#!/usr/bin/env bash
# fuzz.sh TOP [SECONDS] — `./run fuzz [SECONDS]`: build the libFuzzer targets
# (preset "fuzz": clang, ASan+UBSan) and run each for SECONDS (default 60) on
# a copy of its committed seed corpus (tests/fuzz/corpus/X; what a run finds
# stays in build/fuzz/work, the committed corpus never grows by itself).
# Up to nproc targets run at once. Prints executions per target and in total;
# exits 1 if any target crashed (input saved under build/fuzz/crashes/X/),
# 2 on usage or build errors.
set -euo pipefail

top=${1:?usage: fuzz.sh TOP [SECONDS]}
secs=${2:-60}
case $secs in '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number" >&2; exit 2 ;; esac
cd "$top"

cmake --preset fuzz >/dev/null || exit 2
cmake --build --preset fuzz --target kp_fuzzers -j"$(nproc)" >/dev/null || exit 2

bin=build/fuzz/tests/fuzz
out=build/fuzz/run
rm -rf "$out"
mkdir -p "$out" build/fuzz/crashes

targets=()
for f in "$bin"/fuzz_*; do
	[ -x "$f" ] && targets+=("${f##*/fuzz_}")
done
[ ${#targets[@]} -gt 0 ] || { echo "fuzz.sh: no fuzz targets built in $bin" >&2; exit 2; }

# One target: its own copy of the corpus, crashes kept, stats at the end.
run_one() {
	local t=$1 work=$out/$1
	mkdir -p "$work/corpus" "build/fuzz/crashes/$t"
	cp tests/fuzz/corpus/"$t"/* "$work/corpus/"
	local rc=0
	(cd "$work" && "$top/$bin/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 \
		-timeout=25 -rss_limit_mb=2048 -max_len=4096 \
		-artifact_prefix="$top/build/fuzz/crashes/$t/" corpus >log 2>&1) || rc=$?
	echo "$rc" >"$work/rc"
}

echo "fuzz: ${#targets[@]} targets, $secs s each, $(nproc) at a time" >&2
running=0
for t in "${targets[@]}"; do
	if [ "$running" -ge "$(nproc)" ]; then
		wait -n || true
		running=$((running - 1))
	fi
	run_one "$t" &
	running=$((running + 1))
done
wait

total=0
failed=0
printf '%-12s %14s %10s %8s  %s\n' target executions exec/s corpus result
for t in "${targets[@]}"; do
	log=$out/$t/log
	rc=$(cat "$out/$t/rc" 2>/dev/null || echo 99)
	# clang 14 prints number_of_executed_units; newer ones number_of_executed_runs
	runs=$(sed -n 's/^stat::number_of_executed_\(units\|runs\): *\([0-9]*\).*/\2/p' "$log" | tail -n 1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
	seeds=$(ls tests/fuzz/corpus/"$t" | wc -l)
	grown=$(ls "$out/$t/corpus" | wc -l)
	runs=${runs:-0}
	total=$((total + runs))
	if [ "$rc" = 0 ]; then
		result=ok
	else
		failed=1
		crash=$(sed -n "s/.*Test unit written to \(.*\)$/\1/p" "$log" | tail -n 1)
		result="CRASH (exit $rc): ${crash:-see $log}"
	fi
	printf '%-12s %14s %10s %8s  %s\n' "$t" "$runs" "${rate:-?}" "$seeds->$grown" "$result"
done
printf '%-12s %14s\n' total "$total"

if [ "$failed" = 1 ]; then
	cat >&2 <<EOT
fuzz: a target crashed. Its log: build/fuzz/run/TARGET/log. Reproduce with
  build/fuzz/tests/fuzz/fuzz_TARGET CRASH_FILE
(fuzz_api keeps state between inputs: when one file does not reproduce, see
docs/security.md "Fuzzing"). Add the input to tests/fuzz/corpus/TARGET/ as
regress-<what> together with the fix.
EOT
	exit 1
fi
