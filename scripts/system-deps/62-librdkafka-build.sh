#!/usr/bin/env bash
# What building librdkafka and its own test suite needs (scripts/librdkafka-tests.sh,
# `make test-kafka`): a C/C++ toolchain, make, and the headers of the libraries librdkafka
# links (OpenSSL, Cyrus SASL, zlib, zstd, lz4). Idempotent: exits at once when all are
# there. Without root or apt it says why and exits 0; the librdkafka suite then skips
# with that reason.
set -euo pipefail

headers=(/usr/include/openssl/ssl.h /usr/include/sasl/sasl.h /usr/include/zlib.h
    /usr/include/zstd.h /usr/include/lz4.h)
missing=()
for command in gcc g++ make pkg-config; do
    command -v "$command" >/dev/null 2>&1 || missing+=("$command")
done
for header in "${headers[@]}"; do
    [ -f "$header" ] || missing+=("$header")
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: librdkafka build deps missing (${missing[*]}; needs root for apt-get);" \
        "the librdkafka suite will skip"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: librdkafka build deps missing (no apt-get here); the librdkafka suite will skip"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
packages=(gcc g++ make pkg-config libssl-dev libsasl2-dev zlib1g-dev libzstd-dev liblz4-dev)
apt_install() { apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >/dev/null; }
if ! apt_install "${packages[@]}"; then
    apt-get -o DPkg::Lock::Timeout=300 update -qq || true
    if ! apt_install "${packages[@]}"; then
        echo "system-deps: apt-get install ${packages[*]} failed; the librdkafka suite will skip"
        exit 0
    fi
fi
echo "system-deps: installed the librdkafka build dependencies"
