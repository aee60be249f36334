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

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

use_models_dir
OUT="$MODELS_DIR/$MODEL_NAME"
MANIFEST="$OUT/manifest.json"

up_to_date() {
    local recorded
    recorded="$(manifest_key sha256)"
    [[ -n "$recorded" && "$recorded" == "$(concat_sha256 "$OUT/model.onnx" "$OUT/tokenizer.json")" ]]
}
exit_if_up_to_date "sha256 $(manifest_key sha256)" up_to_date

start=$SECONDS
use_venv_python

# --- download the source wheel (cached, hash-pinned) ---
fetch_wheel "toxic-comment-classifier==$TCC_VERSION" "$TCC_WHEEL" "$TCC_WHEEL_SHA256"
wheel="$WHEEL"

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

log "done in $((SECONDS - start))s: $OUT (sha256 $(manifest_key sha256))"
echo "$OUT"
