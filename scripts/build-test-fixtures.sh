#!/usr/bin/env bash
# Builds the test fixtures: a tiny Marian-shaped Optimum export (random weights, fixed seed)
# and its independent reference decode (Python onnxruntime), into
# $GATEHOUSE_MODELS_DIR/fixtures/tiny-marian-zh-en. Idempotent: skipped when the manifest's
# hashes match the files. Fixtures live below models/fixtures/, where the services never look.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
MODEL_NAME="tiny-marian-zh-en"
OUT="$MODELS_DIR/fixtures/$MODEL_NAME"
MANIFEST="$OUT/manifest.json"

up_to_date() {
    # shellcheck disable=SC2119  # no file is required, every listed one must match
    [[ -f "$OUT/reference.json" ]] && manifest_files_ok
}
exit_if_up_to_date "" up_to_date

use_venv_python
mkdir -p "$OUT"
"$PY" scripts/models/build_tiny_marian.py "$OUT" >&2
"$PY" scripts/models/reference_seq2seq.py "$OUT" "$OUT/reference.json" >&2
echo "$OUT"
