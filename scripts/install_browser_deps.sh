#!/usr/bin/env bash
# Install what tests/test_dagster_browser.py needs: Debian's headless Chromium and the
# npm package playwright-core (driver only; it uses /usr/bin/chromium, never downloads a
# browser). Idempotent: re-running skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq chromium chromium-driver
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "node and npm are needed for the browser test (apt-get install -y nodejs npm)" >&2
    exit 1
fi

if [ ! -d tests/browser/node_modules/playwright-core ]; then
    # Never fetch browsers: the Debian chromium is the one under test.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix tests/browser --no-audit --no-fund \
        --loglevel=error
fi
echo "browser test dependencies ready: $(chromium --version 2>/dev/null | head -1), playwright-core $(node -p "require('./tests/browser/node_modules/playwright-core/package.json').version")"
