#!/usr/bin/env bash
# `make test`'s two test sessions side by side: every suite (plain), and the HTTPS pass of
# the integration suite. They share nothing (own ports, data directories, certificates,
# the chaos suite's nftables table and addresses), and both mostly wait on their clusters,
# so together they take about the longer one's time and keep the 2 cores busy
# (docs/testing.md, "Budget"). The plain session runs on JOBS workers by xdist group
# (tests/conftest.py: the container tests on one worker, the chaos set on another, both
# started first), the HTTPS pass on TLS_JOBS workers (0: in the pytest process itself,
# one test at a time). Each writes its own log, printed whole when both are done; fails if
# either failed.
# Usage: scripts/test_side_by_side.sh BIN JOBS TLS_JOBS
set -uo pipefail
bin="$1"
jobs="$2"
tls_jobs="$3"
logs="$(mktemp -d /tmp/conveyor-phases.XXXXXX)"
workers() {
    if [ "$1" != 0 ]; then
        echo -n "-n $1 --dist loadgroup"
    fi
}
# each session its own test ports (tests/integration/cluster.py), in proportion to its workers
# shellcheck disable=SC2046  # the worker options are meant to split
CONVEYOR_TEST_PORTS=20000-28000 "$bin/pytest" $(workers "$jobs") --durations=25 tests \
    >"$logs/plain.log" 2>&1 </dev/null &
plain=$!
# shellcheck disable=SC2046
CONVEYOR_TEST_TLS=1 CONVEYOR_TEST_PORTS=28000-32000 \
    "$bin/pytest" $(workers "$tls_jobs") --durations=10 tests/integration \
    >"$logs/tls.log" 2>&1 </dev/null &
tls=$!
wait "$plain"
plain_rc=$?
wait "$tls"
tls_rc=$?
echo "=== every suite: exit $plain_rc"
cat "$logs/plain.log"
echo "=== HTTPS pass (tests/integration, CONVEYOR_TEST_TLS=1): exit $tls_rc"
cat "$logs/tls.log"
[ "$plain_rc" = 0 ] && [ "$tls_rc" = 0 ]
