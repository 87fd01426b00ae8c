#!/usr/bin/env bash
# nft (Debian package `nftables`) and ip (`iproute2`), for the network-partition faults of
# tests/chaos and `conveyor chaos --faults partition`. Idempotent: exits at once when both
# are on PATH. Without root or apt it says why and exits 0; the partition faults then skip
# with that reason.
set -euo pipefail

if command -v nft >/dev/null 2>&1 && command -v ip >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: nftables/iproute2 not installed (needs root for apt-get); partition faults will skip"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: nftables/iproute2 not installed (no apt-get here); partition faults will skip"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# The package's own service must not start (it would load /etc/nftables.conf, flushing rules).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
if ! apt-get install -y -qq --no-install-recommends nftables iproute2 >/dev/null; then
    apt-get update -qq || true
    if ! apt-get install -y -qq --no-install-recommends nftables iproute2 >/dev/null; then
        echo "system-deps: apt-get could not install nftables/iproute2; partition faults will skip"
        exit 0
    fi
fi
