#!/usr/bin/env bash
# The console's browser tests (tests/console): Debian's chromium (driven by the Python
# `playwright` package through executable_path=/usr/bin/chromium; Playwright's own browser
# download is not used) and axe-core for the accessibility check, npm-installed from the
# committed lock file into tests/console/axe/node_modules (git-ignored).
# Idempotent: exits at once when both are present. Without root, apt or npm it says why
# and exits 0; the browser tests then skip with that reason.
set -euo pipefail

axe_dir="$(cd "$(dirname "$0")/../../tests/console/axe" && pwd)"
stamp="$axe_dir/node_modules/.conveyor-installed"

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "system-deps: chromium not installed (needs root and apt-get); console browser tests will skip"
    else
        export DEBIAN_FRONTEND=noninteractive
        packages=(chromium fonts-dejavu-core)
        if ! apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; then
            apt-get update -qq || true
            if ! apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; then
                echo "system-deps: apt-get install chromium failed; console browser tests will skip"
            fi
        fi
        [ -x /usr/bin/chromium ] && echo "system-deps: installed $(/usr/bin/chromium --version 2>/dev/null)"
    fi
fi

if [ -f "$stamp" ] && [ "$stamp" -nt "$axe_dir/package-lock.json" ] \
    && [ -f "$axe_dir/node_modules/axe-core/axe.min.js" ]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "system-deps: npm not found; the console accessibility check will skip"
    exit 0
fi
if ! (cd "$axe_dir" && npm ci --no-audit --no-fund --silent); then
    echo "system-deps: npm ci in $axe_dir failed; the console accessibility check will skip"
    exit 0
fi
touch "$stamp"
echo "system-deps: installed axe-core in $axe_dir/node_modules"
