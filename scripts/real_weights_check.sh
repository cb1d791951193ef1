#!/usr/bin/env bash
# Run the real-weights checks (issue 11 item 6) on a machine with network; prints one summary line per check.
#   scripts/real_weights_check.sh [WEIGHTS_DIR]     (default: $SEESR_WEIGHTS, else ~/.cache/seesr/weights)
# Downloads the released weights first when missing (keeping the raw RAM checkpoint, which plain RAM needs).
# CPU is enough (about 20 minutes for the 50-step upscale); a GPU is used when present.
set -uo pipefail
cd "$(dirname "$0")/.."
export SEESR_WEIGHTS="${1:-${SEESR_WEIGHTS:-$HOME/.cache/seesr/weights}}"
log="$(mktemp -d)/real_weights"
echo "weights: $SEESR_WEIGHTS (logs: $log.*)"
if python -m seesr download --keep-originals "$SEESR_WEIGHTS" >"$log.download" 2>&1; then
    echo "PASS download: $(tail -n 1 "$log.download")"
else
    echo "FAIL download: $(tail -n 1 "$log.download")"
    exit 1
fi
status=0
for check in plain_ram_tags_demo1 release_loads_strictly default_upscale_of_demo4; do
    python -m pytest tests/test_real_weights.py -m real_weights -k "$check" -q -s -p no:cacheprovider \
        >"$log.$check" 2>&1
    rc=$?
    detail="$(grep -E '^(RAM demo1|counts|demo4 x4):' "$log.$check" | tail -n 1)"
    [ -z "$detail" ] && detail="$(grep -E '^(E |FAILED|SKIPPED|[0-9]+ (passed|failed))' "$log.$check" | tail -n 1)"
    if [ $rc -eq 0 ]; then echo "PASS $check: $detail"; else echo "FAIL $check: $detail"; status=1; fi
done
exit $status
