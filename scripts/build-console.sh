#!/usr/bin/env bash
# Build the web console (console/) into console/dist, which gatehouse-api serves at /console
# (GATEHOUSE_CONSOLE_DIR). Run by `make demo` and `make test`; the Rust build never needs it.
#
#   npm ci      when console/node_modules is missing or older than package-lock.json
#   vite build  when console/dist is missing or older than any source file
#
# Idempotent and quick when nothing changed. Needs Node.js >= 18 and npm (the registry only
# for `npm ci`); nothing is fetched at run time (no CDN: every asset is in dist/).
# Env: FORCE=1 rebuilds anyway.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONSOLE="$REPO_ROOT/console"
note() { echo "[build-console] $*" >&2; }
die() { echo "[build-console] ERROR: $*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "node not found: install Node.js 18 or newer (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm not found: install npm"
major="$(node -p 'process.versions.node.split(".")[0]')"
((major >= 18)) || die "Node.js $major is too old: 18 or newer is needed"

cd "$CONSOLE"
# One build at a time (make -j, parallel test runs).
exec 9>"$CONSOLE/.build.lock"
flock 9

stamp="node_modules/.package-lock.json"
if [[ "${FORCE:-0}" == "1" || ! -f "$stamp" || package-lock.json -nt "$stamp" ]]; then
    note "npm ci ..."
    npm ci --no-audit --no-fund --loglevel=error >&2
fi

newest_source="$(find index.html vite.config.js package-lock.json src public -type f -newer dist/index.html 2>/dev/null | head -n 1 || true)"
if [[ "${FORCE:-0}" == "1" || ! -f dist/index.html || -n "$newest_source" ]]; then
    note "vite build ..."
    npx --no-install vite build --logLevel warn >&2
    # The strict CSP (api/src/routes/console.rs) allows no eval and no inline script.
    if grep -lE '\beval\(|new Function\(' dist/assets/*.js >/dev/null 2>&1; then
        die "the bundle uses eval / new Function, which the console's Content-Security-Policy forbids"
    fi
    if grep -qE '<script>|<script type="module">[^<]' dist/index.html; then
        die "dist/index.html has an inline script, which the Content-Security-Policy forbids"
    fi
fi
echo "$CONSOLE/dist"
