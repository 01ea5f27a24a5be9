#!/usr/bin/env bash
# campaign.sh — `./run campaign N [seed]`: the power-cut campaign. N cuts of the
# real daemon over real processes (kp-campaign: kioskpayd-crash cut by the crash
# VFS or a failpoint, or kioskpayd killed with kill -9, then restarted, run to
# quiescence against kp-hostsim and checked by kp-check), then N cuts of the
# in-process loop (kp-crash-cuts: engine and journal in forked children).
# Exit 0 only if neither found a violation. See docs/crash.md.
#   tests/crash/campaign.sh BUILD_DIR N [seed]
#   env: KP_CAMPAIGN_JOBS (default 2), KP_CAMPAIGN_KEEP=1 (keep the files)
set -euo pipefail
build=${1:?usage: campaign.sh BUILD_DIR N [seed]}
cuts=${2:?usage: campaign.sh BUILD_DIR N [seed]}
seed=${3:-$(( $(date +%s) % 1000000 ))}
jobs=${KP_CAMPAIGN_JOBS:-2}
keep=()
[ "${KP_CAMPAIGN_KEEP:-0}" = 1 ] && keep=(--keep)
case $cuts in ''|*[!0-9]*) echo "campaign.sh: N must be a number" >&2; exit 2 ;; esac
case $seed in ''|*[!0-9]*) echo "campaign.sh: seed must be a number" >&2; exit 2 ;; esac
for bin in tests/crash/kp-campaign tests/crash/kp-crash-cuts; do
	[ -x "$build/$bin" ] || { echo "campaign.sh: $build/$bin not built" >&2; exit 2; }
done
echo "==> power-cut campaign: $cuts cuts, seed $seed (replay: ./run campaign $cuts $seed)"
rc=0
"$build/tests/crash/kp-campaign" --cuts "$cuts" --seed "$seed" --jobs "$jobs" "${keep[@]}" || rc=1
"$build/tests/crash/kp-crash-cuts" --cuts "$cuts" --seed "$seed" "${keep[@]}" || rc=1
if [ $rc = 0 ]; then echo "==> campaign clean: 0 violations"; else echo "==> campaign FOUND VIOLATIONS (seed $seed)"; fi
exit $rc
