#!/usr/bin/env bash
# Gatehouse translate load test: one job of 10,000 zh→en items through the queue (see run.sh).
#   bash loadtest/translate.sh --items 2000 --timeout 300
set -euo pipefail
LOADTEST_KIND=translate exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" "$@"
