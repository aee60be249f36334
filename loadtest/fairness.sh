#!/usr/bin/env bash
# Fairness benchmark (issue 11): tenant B's sync latency and small-job time, idle vs while
# tenant A's 20,000-item job runs. Starts the demo stack if needed; options pass through to
# loadtest/fairness.py (--a-items, --b-items, --sync, --wait-a). See loadtest/README.md.
set -euo pipefail
LOADTEST_KIND=fairness exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" "$@"
