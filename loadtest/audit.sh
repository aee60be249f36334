#!/usr/bin/env bash
# The audit trail's cost: the sync moderation path (POST /v1/moderations, one request at a
# time) and a 10,000-item job, with and without auditing, alternating rounds in one run
# against one in-process api + worker + real Postgres/RabbitMQ/ONNX model (the ignored test
# `audit::bench::audit_overhead_benchmark` in api/tests/it/audit/bench.rs explains how
# "without" is obtained). Writes loadtest/results/audit.json.
#
#   bash loadtest/audit.sh     # 5 pairs: 40 sync requests and one 10,000-item job per mode
#   AUDIT_BENCH_PAIRS=8 AUDIT_BENCH_SYNC_BLOCK=50 bash loadtest/audit.sh
#
# Budget (issue 14): auditing adds at most 5% to both (ratio with/without ≤ 1.05).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p loadtest/results
out="$(SQLX_OFFLINE=true nice cargo test -q -p gatehouse-api --test it audit::bench -- --ignored --nocapture 2>&1 | tee /dev/stderr)"
line="$(printf '%s\n' "$out" | grep '^AUDIT_BENCH ' | tail -n 1)"
[[ -n "$line" ]] || { echo "audit.sh: the benchmark printed no result" >&2; exit 1; }
printf '%s\n' "${line#AUDIT_BENCH }" > loadtest/results/audit.json
echo "loadtest/results/audit.json: ${line#AUDIT_BENCH }"
