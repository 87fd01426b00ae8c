#!/usr/bin/env bash
# kcat (Debian package `kafkacat`, which installs both `kafkacat` and `kcat`), for the
# real-client tests of the Kafka listener in tests/kafka. Idempotent: exits at once when
# either command is on PATH. Without root or apt it says why and exits 0; the kcat tests
# then skip with that reason.
set -euo pipefail

if command -v kcat >/dev/null 2>&1 || command -v kafkacat >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: kcat not installed (needs root for apt-get); kcat tests will skip"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: kcat not installed (no apt-get here); kcat tests will skip"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Another apt-get may hold the lock for a while (other installs on a shared machine).
apt_install() { apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >/dev/null; }
if ! apt_install kafkacat; then
    apt-get -o DPkg::Lock::Timeout=300 update -qq || true
    if ! apt_install kafkacat; then
        echo "system-deps: apt-get install kafkacat failed; kcat tests will skip"
        exit 0
    fi
fi
echo "system-deps: installed $(dpkg-query -W -f='kafkacat ${Version}' kafkacat)"
