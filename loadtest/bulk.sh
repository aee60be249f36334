#!/usr/bin/env bash
# Bulk benchmark (issue 13): a 100,000-line JSONL upload -> job -> results, the same items as
# a JSON body (baseline), and a 200 MB upload with the api's peak RSS. Starts the demo stack
# if needed; options pass through to loadtest/bulk.py (--lines, --big-mb, --no-baseline).
set -euo pipefail
LOADTEST_KIND=bulk exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" "$@"
