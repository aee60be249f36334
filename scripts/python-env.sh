#!/usr/bin/env bash
# Create (or reuse) the project's Python tooling venv at <repo>/.cache/venv and
# install the pinned scripts/requirements.txt into it.
#
# pip is skipped when the stamp file .cache/venv/.requirements.sha256 matches
# the sha256 of requirements.txt + the interpreter version, so re-runs are fast
# and offline. The venv is recreated when it is missing or broken.
#
# Usage:  scripts/python-env.sh            # progress on stderr
#         PY="$(scripts/python-env.sh)"    # last (only) stdout line = venv python
# Env:    PYTHON=python3.11                # base interpreter (default: python3)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV_DIR="$CACHE_DIR/venv"
VENV_PY="$VENV_DIR/bin/python"
REQS="$SCRIPT_DIR/requirements.txt"
STAMP="$VENV_DIR/.requirements.sha256"

use_base_python
[[ -f "$REQS" ]] || die "missing $REQS"
mkdir -p "$CACHE_DIR"

# Serialize concurrent callers (e.g. make -j) when flock is available.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_DIR/venv.lock"
    flock 9
fi

# A venv is usable if its python runs and is the same minor version as the base.
want_ver="$("$BASE_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
have_ver=""
if [[ -x "$VENV_PY" ]]; then
    have_ver="$("$VENV_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
fi
if [[ "$have_ver" != "$want_ver" ]]; then
    if [[ -e "$VENV_DIR" ]]; then
        log "existing venv unusable (python '${have_ver:-broken}', want $want_ver); recreating"
        rm -rf "$VENV_DIR"
    fi
    log "creating venv at $VENV_DIR (python $want_ver)"
    "$BASE_PY" -m venv "$VENV_DIR" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
fi

want_stamp="$( { cat "$REQS"; echo "python=$want_ver"; } | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]]; then
    log "venv up to date ($VENV_DIR)"
else
    log "installing scripts/requirements.txt into the venv ..."
    rm -f "$STAMP"
    "$VENV_PY" -m pip install --disable-pip-version-check --no-input -q -r "$REQS" >&2 \
        || die "pip install failed"
    echo "$want_stamp" >"$STAMP"
    log "venv ready"
fi

echo "$VENV_PY"
