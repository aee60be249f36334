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

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT_DIR="$CACHE_DIR/onnxruntime"
LIB_NAME="libonnxruntime.so.$ORT_VERSION"
LIB_PATH="$OUT_DIR/$LIB_NAME"
MEMBER="onnxruntime/capi/$LIB_NAME"

if [[ -s "$LIB_PATH" ]]; then
    log "already present: $LIB_PATH"
    echo "$LIB_PATH"
    exit 0
fi

use_base_python
mkdir -p "$WHEEL_DIR" "$OUT_DIR"

find_wheel() {
    # Newest matching wheel for this version (there should be exactly one per platform).
    ls -1t "$WHEEL_DIR"/onnxruntime-"$ORT_VERSION"-*.whl 2>/dev/null | head -n1 || true
}

wheel="$(find_wheel)"
if [[ -z "$wheel" ]]; then
    log "downloading onnxruntime==$ORT_VERSION wheel from PyPI into $WHEEL_DIR ..."
    pip_download "onnxruntime==$ORT_VERSION" "$BASE_PY" \
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
