#!/usr/bin/env bash
# Grafana's dashboard schema (@grafana/schema) and TypeScript, for the dashboard check in
# tests/monitoring: npm-installed from the committed lock file into
# deploy/grafana/schema-check/node_modules (git-ignored). Idempotent: exits at once when
# installed at the locked versions. Without node/npm it says why and exits 0; that test
# then skips with the reason.
set -euo pipefail

dir="$(cd "$(dirname "$0")/../../deploy/grafana/schema-check" && pwd)"
stamp="$dir/node_modules/.conveyor-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt "$dir/package-lock.json" ] \
    && [ -f "$dir/node_modules/typescript/bin/tsc" ] \
    && [ -d "$dir/node_modules/@grafana/schema/dist/types" ]; then
    exit 0
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "system-deps: node/npm not found; the Grafana dashboard schema check will skip"
    exit 0
fi
if ! (cd "$dir" && npm ci --no-audit --no-fund --silent); then
    echo "system-deps: npm ci in $dir failed; the Grafana dashboard schema check will skip"
    exit 0
fi
touch "$stamp"
echo "system-deps: installed @grafana/schema and typescript in $dir/node_modules"
