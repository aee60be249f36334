#!/usr/bin/env bash
# Fetch ONNX Runtime's shared library from the official PyPI wheel.
#
#   pip download onnxruntime==$ORT_VERSION (binary wheel for this python's
#   platform) -> <repo>/.cache/wheels/, then extract
#   onnxruntime/capi/libonnxruntime.so.$ORT_VERSION -> <repo>/.cache/onnxruntime/
#
# Idempotent: does nothing (no network) when the .so already exists; reuses an
# already-downloaded wheel. Prints the absolute path of the .so as the last
# (only) stdout line; progress goes to stderr.
#
# Usage:  ORT_DYLIB_PATH="$(scripts/fetch-onnxruntime.sh)"
# Env:    PYTHON=python3   base interpreter whose pip/platform is used
set -euo pipefail

ORT_VERSION="1.31.1"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
WHEEL_DIR="$REPO_ROOT/.cache/wheels"
OUT_DIR="$REPO_ROOT/.cache/onnxruntime"
LIB_NAME="libonnxruntime.so.$ORT_VERSION"
LIB_PATH="$OUT_DIR/$LIB_NAME"
MEMBER="onnxruntime/capi/$LIB_NAME"
BASE_PY="${PYTHON:-python3}"

log() { echo "[fetch-onnxruntime] $*" >&2; }
die() { echo "[fetch-onnxruntime] ERROR: $*" >&2; exit 1; }

if [[ -s "$LIB_PATH" ]]; then
    log "already present: $LIB_PATH"
    echo "$LIB_PATH"
    exit 0
fi

command -v "$BASE_PY" >/dev/null 2>&1 || die "'$BASE_PY' not found (set PYTHON=/path/to/python3)"
mkdir -p "$WHEEL_DIR" "$OUT_DIR"

find_wheel() {
    # Newest matching wheel for this version (there should be exactly one per platform).
    ls -1t "$WHEEL_DIR"/onnxruntime-"$ORT_VERSION"-*.whl 2>/dev/null | head -n1 || true
}

wheel="$(find_wheel)"
if [[ -z "$wheel" ]]; then
    log "downloading onnxruntime==$ORT_VERSION wheel from PyPI into $WHEEL_DIR ..."
    "$BASE_PY" -m pip download --disable-pip-version-check --no-input -q \
        --no-deps --only-binary=:all: --dest "$WHEEL_DIR" "onnxruntime==$ORT_VERSION" >&2 \
        || die "pip download onnxruntime==$ORT_VERSION failed"
    wheel="$(find_wheel)"
    [[ -n "$wheel" ]] || die "pip reported success but no onnxruntime-$ORT_VERSION-*.whl in $WHEEL_DIR"
else
    log "using cached wheel $(basename "$wheel")"
fi

log "extracting $MEMBER"
# Python's zipfile instead of unzip (not installed everywhere). Write to a temp
# file and rename so an interrupted run never leaves a truncated .so behind.
"$BASE_PY" - "$wheel" "$MEMBER" "$LIB_PATH" <<'PY' || die "extraction failed"
import os, shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
tmp = dest + ".tmp"
with zipfile.ZipFile(wheel) as zf:
    try:
        info = zf.getinfo(member)
    except KeyError:
        libs = [n for n in zf.namelist() if "libonnxruntime" in n]
        sys.exit(f"{member} not in {os.path.basename(wheel)} (has: {libs})")
    with zf.open(info) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
PY

log "ok: $LIB_PATH ($(du -h "$LIB_PATH" | cut -f1))"
echo "$LIB_PATH"
