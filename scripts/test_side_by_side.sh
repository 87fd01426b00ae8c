#!/usr/bin/env bash
# `make test`'s last two phases side by side: the serial suites (deploy, chaos, HA) and the
# HTTPS pass of the integration suite. They share nothing (own ports, data directories,
# chaos network), and the serial suites mostly wait on deployments and timeouts, so
# together they take the longer one's time. The serial suites run on SERIAL_JOBS workers
# by xdist group (tests/conftest.py: the container tests on one worker, the chaos set on
# one, each HA module on its own), the HTTPS pass on TLS_JOBS workers (0: in the pytest
# process itself). Each writes its own log, printed whole when both are done; fails if
# either failed.
# Usage: scripts/test_side_by_side.sh BIN TLS_JOBS SERIAL_JOBS SERIAL_SUITES...
set -uo pipefail
bin="$1"
tls_jobs="$2"
serial_jobs="$3"
shift 3
logs="$(mktemp -d /tmp/conveyor-phases.XXXXXX)"
parallel=()
if [ "$tls_jobs" != 0 ]; then
    parallel=(-n "$tls_jobs" --dist loadgroup)
fi
serial_parallel=()
if [ "$serial_jobs" != 0 ]; then
    serial_parallel=(-n "$serial_jobs" --dist loadgroup)
fi
"$bin/pytest" "${serial_parallel[@]}" --durations=10 "$@" >"$logs/serial.log" 2>&1 </dev/null &
serial=$!
CONVEYOR_TEST_TLS=1 "$bin/pytest" "${parallel[@]}" --durations=10 tests/integration \
    >"$logs/tls.log" 2>&1 </dev/null &
tls=$!
wait "$serial"
serial_rc=$?
wait "$tls"
tls_rc=$?
echo "=== serial suites ($*): exit $serial_rc"
cat "$logs/serial.log"
echo "=== HTTPS pass (tests/integration, CONVEYOR_TEST_TLS=1): exit $tls_rc"
cat "$logs/tls.log"
[ "$serial_rc" = 0 ] && [ "$tls_rc" = 0 ]
