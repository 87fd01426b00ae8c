#!/usr/bin/env bash
# The real Prometheus server and promtool, for tests/monitoring (Debian package `prometheus`).
# Idempotent: exits at once when both are on PATH. Without root or apt it says why and
# exits 0; the monitoring tests then skip with that reason.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: prometheus not installed (needs root for apt-get); monitoring tests will skip"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: prometheus not installed (no apt-get here); monitoring tests will skip"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# The package's own service must not start (and hold port 9090): the tests run their own.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
if ! apt-cache show prometheus >/dev/null 2>&1; then
    apt-get update -qq || true
fi
if ! apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
    apt-get update -qq || true
    if ! apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
        echo "system-deps: apt-get install prometheus failed; monitoring tests will skip"
        exit 0
    fi
fi
echo "system-deps: installed $(prometheus --version 2>&1 | head -1)"
