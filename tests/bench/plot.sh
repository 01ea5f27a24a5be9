#!/usr/bin/env bash
# plot.sh — the performance plot of docs/performance.md from a bench run:
# replay time against the number of in-flight attempts (bench replay) and
# completed payments/s against concurrent customers (bench scale).
#   tests/bench/plot.sh RESULTS_DIR OUT.png     (RESULTS_DIR: BUILD_DIR/bench)
# Needs gnuplot (Debian: gnuplot-nox). Plots whatever of the two is there.
set -euo pipefail

res=${1:?usage: plot.sh RESULTS_DIR OUT.png}
png=${2:?usage: plot.sh RESULTS_DIR OUT.png}
command -v gnuplot >/dev/null || { echo "plot.sh: gnuplot not installed (apt-get install gnuplot-nox)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

num() { sed -n "s/.*\"$2\":\([-0-9.eE+a-z]*\).*/\1/p" "$1" | head -n 1; }

# count seconds finished(1/0) host_limit_seconds, sorted by count
for f in "$res"/replay-*.json; do
	[ -f "$f" ] || continue
	d=$(num "$f" done)
	echo "$(num "$f" count) $(num "$f" projected_s) $([ "$d" = true ] && echo 1 || echo 0) $(num "$f" host_limit_s)"
done | sort -n >"$tmp/replay.dat"
[ -f "$res/scale.dat" ] && grep -v '^#' "$res/scale.dat" >"$tmp/scale.dat" || : >"$tmp/scale.dat"

if [ ! -s "$tmp/replay.dat" ] && [ ! -s "$tmp/scale.dat" ]; then
	echo "plot.sh: no replay-*.json or scale.dat in $res (run bench replay / scale)" >&2
	exit 1
fi

{
	echo "set terminal png size 960,420 font ',9' noenhanced"
	echo "set output '$png'"
	echo "set multiplot layout 1,2 title 'kioskpay on $(uname -m), $(date -u +%Y-%m-%d)'"
	if [ -s "$tmp/replay.dat" ]; then
		echo "set title 'boot replay after a power cut'"
		echo "set xlabel 'attempts in flight'; set ylabel 'seconds until none is in flight'"
		echo "set logscale xy; set grid; set key bottom right"
		echo "set xrange [100:200000]"
		# the first point's per-record time, extended linearly
		first=$(head -n 1 "$tmp/replay.dat")
		echo "lin(x) = $(echo "$first" | awk '{ printf "%.9g", $2 / $1 }') * x"
		echo "plot '$tmp/replay.dat' using 1:(\$3 == 1 ? \$2 : 1/0) with linespoints pt 7 title 'kioskpayd (finished)', \\"
		echo "     '$tmp/replay.dat' using 1:(\$3 == 0 ? \$2 : 1/0) with points pt 9 ps 1.5 title 'kioskpayd (bounded run: rate reached, extrapolated)', \\"
		echo "     '$tmp/replay.dat' using 1:4 with linespoints pt 5 title 'host limit (same cancels pipelined)', \\"
		echo "     lin(x) with lines dt 2 title 'linear from the first point', \\"
		echo "     2 with lines lc rgb 'red' dt 3 title 'target: 2 s (at 10k)'"
		echo "unset logscale; unset xrange"
	fi
	if [ -s "$tmp/scale.dat" ]; then
		echo "set title 'full stack: completed payments/s against load'"
		echo "set xlabel 'concurrent customers (kp-load processes)'; set ylabel 'payments/s'"
		echo "set y2label 'order->paid p99, ms (worst client)'; set y2tics; set ytics nomirror"
		echo "set grid; set key top left; set yrange [0:*]; set y2range [0:*]"
		echo "plot '$tmp/scale.dat' using 1:2 with linespoints pt 7 title 'payments/s', \\"
		echo "     '$tmp/scale.dat' using 1:4 axes x1y2 with linespoints pt 5 title 'p99 ms'"
	fi
	echo "unset multiplot"
} >"$tmp/plot.gp"
gnuplot "$tmp/plot.gp"
echo "plot.sh: wrote $png ($(stat -c %s "$png") bytes)"
