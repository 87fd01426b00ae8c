#!/usr/bin/env bash
# `make test-repeat N=5`: the end-to-end (integration) suite N times, plain and over HTTPS,
# on a fresh clone of HEAD (so nothing local hides a missing step). Stops at the first
# failing pass and keeps its output; prints one line per pass with its wall time.
# Usage: scripts/test_repeat.sh N [pytest args...]
set -euo pipefail

runs="${1:-5}"
shift || true
top="$(git rev-parse --show-toplevel)"
work="$(mktemp -d /tmp/conveyor-repeat.XXXXXX)"
git clone --quiet "$top" "$work/clone"
cd "$work/clone"
echo "test-repeat: $runs x (plain + HTTPS) of tests/integration at $(git rev-parse --short HEAD) in $work/clone"
make --no-print-directory .venv/.installed bytecode >/dev/null

# the same pytest-xdist workers as make test (JOBS=0: one process)
jobs="${JOBS:-3}"
parallel=()
if [ "$jobs" != 0 ]; then
    parallel=(-n "$jobs" --dist loadgroup)
fi

summary="$work/summary.txt"
started_all=$(date +%s)
for run in $(seq 1 "$runs"); do
    for mode in plain tls; do
        log="$work/run-$run-$mode.log"
        started=$(date +%s)
        if [ "$mode" = tls ]; then
            env_tls=(CONVEYOR_TEST_TLS=1)
        else
            env_tls=()
        fi
        if env "${env_tls[@]}" .venv/bin/pytest tests/integration -q -p no:cacheprovider "${parallel[@]}" "$@" \
            >"$log" 2>&1 < /dev/null; then
            status=passed
        else
            status=FAILED
        fi
        elapsed=$(( $(date +%s) - started ))
        line="run $run $mode: $status in ${elapsed}s ($(tail -1 "$log" | tr -d '='))"
        echo "$line" | tee -a "$summary"
        if [ "$status" = FAILED ]; then
            echo "test-repeat: failing output kept in $log"
            grep -E '^(FAILED|ERROR)' "$log" || true
            exit 1
        fi
    done
done
echo "test-repeat: $runs consecutive passes (plain + HTTPS) in $(( $(date +%s) - started_all ))s;" \
    "summary in $summary"
rm -rf "$work/clone"
