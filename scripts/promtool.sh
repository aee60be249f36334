#!/usr/bin/env bash
# Makes promtool available for the dashboard and alert tests (common/tests/dashboard.rs) and
# prints its path: the one on PATH, else Debian's `prometheus` package unpacked (not
# installed: no daemon is set up or started) into .cache/prometheus/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if command -v promtool >/dev/null 2>&1; then
    command -v promtool
    exit 0
fi
LOCAL="$CACHE_DIR/prometheus/usr/bin/promtool"
if [[ -x "$LOCAL" ]]; then
    echo "$LOCAL"
    exit 0
fi
command -v apt-get >/dev/null 2>&1 || die "promtool not found and no apt-get: install Prometheus' promtool"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
download() { (cd "$TMP" && apt-get download prometheus >&2); }
if ! download; then
    [[ "$(id -u)" == 0 ]] || die "apt-get download prometheus failed (run apt-get update as root)"
    log "apt-get update ..."
    apt-get update >&2 || die "apt-get update failed"
    download || die "apt-get download prometheus failed"
fi
mkdir -p "$CACHE_DIR/prometheus"
dpkg-deb -x "$TMP"/prometheus_*.deb "$CACHE_DIR/prometheus"
[[ -x "$LOCAL" ]] || die "the prometheus package has no usr/bin/promtool"
log "promtool unpacked into $CACHE_DIR/prometheus"
echo "$LOCAL"
