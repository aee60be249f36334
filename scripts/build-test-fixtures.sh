#!/usr/bin/env bash
# Builds the test fixtures: a tiny Marian-shaped Optimum export (random weights, fixed seed)
# and its independent reference decode (Python onnxruntime), into
# $GATEHOUSE_MODELS_DIR/fixtures/tiny-marian-zh-en. Idempotent: skipped when the manifest's
# hashes match the files. Fixtures live below models/fixtures/, where the services never look.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODELS_DIR="${GATEHOUSE_MODELS_DIR:-$ROOT/models}"
OUT="$MODELS_DIR/fixtures/tiny-marian-zh-en"

up_to_date() {
    [[ -f "$OUT/manifest.json" && -f "$OUT/reference.json" ]] || return 1
    python3 - "$OUT" <<'PY'
import hashlib, json, pathlib, sys
d = pathlib.Path(sys.argv[1])
m = json.loads((d / "manifest.json").read_text())
ok = all(hashlib.sha256((d / f).read_bytes()).hexdigest() == h for f, h in m["files_sha256"].items())
sys.exit(0 if ok else 1)
PY
}

if [[ "${FORCE:-0}" != "1" ]] && up_to_date; then
    echo "[build-test-fixtures] tiny-marian-zh-en up to date ($OUT)" >&2
    echo "$OUT"
    exit 0
fi
PY="$(bash scripts/python-env.sh | tail -n1)"
export PYTHONDONTWRITEBYTECODE=1
mkdir -p "$OUT"
"$PY" scripts/models/build_tiny_marian.py "$OUT" >&2
"$PY" scripts/models/reference_seq2seq.py "$OUT" "$OUT/reference.json" >&2
echo "$OUT"
