#!/usr/bin/env bash
# kafkajs (npm), for the Node producer/consumer test of the Kafka listener in tests/kafka:
# npm-installed from the committed lock file into tests/kafka/node/node_modules
# (git-ignored). Idempotent: exits at once when installed at the locked version. Without
# node/npm it says why and exits 0; that test then skips with the reason.
set -euo pipefail

dir="$(cd "$(dirname "$0")/../../tests/kafka/node" && pwd)"
stamp="$dir/node_modules/.conveyor-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt "$dir/package-lock.json" ] \
    && [ -f "$dir/node_modules/kafkajs/package.json" ]; then
    exit 0
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "system-deps: node/npm not found; the kafkajs test will skip"
    exit 0
fi
if ! (cd "$dir" && npm ci --no-audit --no-fund --silent); then
    echo "system-deps: npm ci in $dir failed; the kafkajs test will skip"
    exit 0
fi
touch "$stamp"
echo "system-deps: installed kafkajs in $dir/node_modules"
