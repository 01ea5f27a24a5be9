#!/usr/bin/env bash
# lint.sh BUILD_DIR — static analysis of kioskpay's own C sources (app/,
# storage/, drivers/, firmware/; not tests/) with the compile commands of
# BUILD_DIR (a host build: CMAKE_EXPORT_COMPILE_COMMANDS is on): cppcheck
# (warning, performance, portability) and clang-tidy with the checks of
# tests/lint/clang-tidy.yaml. Accepted findings, each with its reason, are in
# tests/lint/suppressions.txt. Exit 0 with no finding left, 1 with findings
# (printed), 2 when a tool or the compile commands are missing.
set -euo pipefail

build=${1:?usage: lint.sh BUILD_DIR}
top=$(cd "$(dirname "$0")/../.." && pwd)
here=$top/tests/lint
db=$build/compile_commands.json
[ -f "$db" ] || { echo "lint: $db missing (configure a host build first)" >&2; exit 2; }
for tool in cppcheck clang-tidy; do
	command -v "$tool" >/dev/null || { echo "lint: $tool not installed (./run deps)" >&2; exit 2; }
done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# The sources: the compile database's entries under the product folders.
sed -n 's/^ *"file": "\(.*\)",\{0,1\}$/\1/p' "$db" | grep -E "^$top/(app|storage|drivers|firmware)/" |
	sort -u >"$out/files"
[ -s "$out/files" ] || { echo "lint: no sources of app/ storage/ drivers/ firmware/ in $db" >&2; exit 2; }
nfiles=$(wc -l <"$out/files")

# cppcheck: one pass over the database, only our folders. cppcheck 2.10
# matches --file-filter only against paths relative to the working directory
# and only when --project is relative too: otherwise it says "could not find
# any files matching the filter" on stdout and checks nothing. Hence the cd.
filters=()
for d in app storage drivers firmware; do filters+=("--file-filter=$d/*"); done
db_rel=$(realpath --relative-to="$top" "$db")
(cd "$top" && cppcheck --project="$db_rel" "${filters[@]}" --enable=warning,performance,portability \
	--std=c11 --suppress=missingIncludeSystem --inline-suppr -q -j"$(nproc)" \
	--template='{file}:{line}:{column}: warning: {message} [{id}]') >"$out/cppcheck.stdout" \
	2>"$out/cppcheck" || true
if grep -q "could not find any files" "$out/cppcheck.stdout" "$out/cppcheck"; then
	echo "lint: cppcheck matched no file (filters: ${filters[*]})" >&2
	exit 2
fi

# clang-tidy: the files in parallel; warnings only (notes and the
# "N warnings generated" lines are dropped).
xargs -P "$(nproc)" -n 4 clang-tidy -p "$build" --config-file="$here/clang-tidy.yaml" --quiet \
	<"$out/files" >"$out/tidy" 2>/dev/null || true

# Keep what is not suppressed: "FILE:LINE:COL: warning: TEXT [check,...]".
filter() { # TOOL FILE
	awk -v tool="$1" -v top="$top/" '
		FNR == NR {
			if ($0 !~ /^[ \t]*(#|$)/ && $1 == tool)
				sup[$2 SUBSEP $3] = 1
			next
		}
		/: (warning|error): / {
			file = $0; sub(/:.*/, "", file); sub("^" top, "", file)
			if (!match($0, /\[[^]]*\]$/)) { print; next }
			n = split(substr($0, RSTART + 1, RLENGTH - 2), checks, ",")
			for (i = 1; i <= n; i++)
				if ((file SUBSEP checks[i]) in sup) { suppressed++; next }
			print
		}
		END { print suppressed + 0 > "/dev/stderr" }
	' "$here/suppressions.txt" "$2"
}
filter cppcheck "$out/cppcheck" 2>"$out/cppcheck.sup" | sort -u >"$out/cppcheck.left"
filter tidy "$out/tidy" 2>"$out/tidy.sup" | sort -u >"$out/tidy.left"

found=0
for t in cppcheck tidy; do
	n=$(wc -l <"$out/$t.left")
	found=$((found + n))
	sed "s|^$top/||" "$out/$t.left"
	printf 'lint: %-9s %d findings, %d suppressed (tests/lint/suppressions.txt)\n' \
		"$t" "$n" "$(cat "$out/$t.sup")" >&2
done
echo "lint: $nfiles files, $found findings" >&2
[ "$found" -eq 0 ]
