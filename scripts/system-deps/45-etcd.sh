#!/usr/bin/env bash
# etcd (Debian package `etcd-server`, 3.4) and etcdctl (`etcd-client`), for the
# coordinator's etcd metadata store: its conformance tests, the high-availability failure
# tests (tests/ha) and `conveyor dev --ha`. Idempotent: exits at once when both are on
# PATH. Without root or apt it says why and exits 0; those tests then skip with that reason.
set -euo pipefail

if command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: etcd not installed (needs root for apt-get); etcd store and HA tests will skip"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: etcd not installed (no apt-get here); etcd store and HA tests will skip"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# The package's own service must not start: tests run their own members on free ports.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
if ! apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null; then
    apt-get update -qq || true
    if ! apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null; then
        echo "system-deps: apt-get could not install etcd-server/etcd-client; etcd store and HA tests will skip"
        exit 0
    fi
fi
