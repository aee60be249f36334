#!/usr/bin/env bash
# Make a headless Chromium available for the console's browser tests (console/tests/).
#
# Idempotent: when $GATEHOUSE_CHROMIUM (default /usr/bin/chromium) runs, nothing is installed.
# Otherwise, as root on Debian/Ubuntu: apt-get install -y chromium (Debian's package; the
# tests drive it with playwright-core, so no browser is downloaded from anywhere else).
# Prints the browser's path as its last stdout line; progress and errors go to stderr.
set -euo pipefail

CHROMIUM="${GATEHOUSE_CHROMIUM:-/usr/bin/chromium}"
note() { echo "[browser-env] $*" >&2; }

runs() { "$CHROMIUM" --headless --no-sandbox --version >/dev/null 2>&1; }

if ! runs; then
    command -v apt-get >/dev/null 2>&1 || { note "apt-get not found: install Chromium and set GATEHOUSE_CHROMIUM"; exit 1; }
    [[ "$(id -u)" == "0" ]] || { note "not root: cannot apt-get install chromium (install it, or set GATEHOUSE_CHROMIUM)"; exit 1; }
    log="$(mktemp -t gatehouse-browser-apt.XXXXXX)"
    # One installer at a time (parallel test runs share the machine's dpkg lock).
    exec 9>/tmp/gatehouse-browser-env.lock
    flock 9
    if ! runs; then
        note "apt-get install -y chromium (this can take a minute) ..."
        if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-noto-cjk; } >>"$log" 2>&1 </dev/null; then
            tail -n 20 "$log" >&2
            note "apt-get install chromium failed (full log: $log)"
            exit 1
        fi
    fi
    runs || { note "$CHROMIUM still does not run"; exit 1; }
fi
echo "$CHROMIUM"
