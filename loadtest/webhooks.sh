#!/usr/bin/env bash
# Webhook delivery lag benchmark (issue 12): from a job's completion to its `job.completed`
# webhook arriving at a receiver on 127.0.0.1, on an idle system. Self-contained: starts its
# own gatehouse-api and gatehouse-worker (own database `gatehouse_whbench`, queue prefix,
# ports 18480/18491, loopback allowed for webhooks), runs loadtest/webhooks.py, stops them.
#
#   bash loadtest/webhooks.sh               # 200 jobs, one at a time
#   bash loadtest/webhooks.sh --jobs 500
#
# Env: GATEHOUSE_BIN_DIR (default target/debug; `cargo build --release` + target/release for
# release numbers), GATEHOUSE_MODERATION_MODELS (default toxic-bilstm: the lag measured is the
# delivery's, not the model's). Logs: .cache/webhook-bench/{api,worker}.log.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$REPO_ROOT"

BIN_DIR="${GATEHOUSE_BIN_DIR:-target/debug}"
API_BIN="$BIN_DIR/gatehouse-api"
WORKER_BIN="$BIN_DIR/gatehouse-worker"
LOG_DIR="$REPO_ROOT/.cache/webhook-bench"
log() { printf '[webhooks] %s\n' "$*" >&2; }
die() { printf '[webhooks] ERROR: %s\n' "$*" >&2; exit 2; }
for bin in "$API_BIN" "$WORKER_BIN"; do
    [[ -x "$bin" ]] || die "$bin not found: run \`make build\` (or set GATEHOUSE_BIN_DIR)"
done
mkdir -p "$LOG_DIR"

export GATEHOUSE_DATABASE_URL="${GATEHOUSE_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/gatehouse_whbench}"
export GATEHOUSE_QUEUE_PREFIX=gatehouse_whbench
export GATEHOUSE_REDIS_PREFIX=gatehouse_whbench
export GATEHOUSE_API_LISTEN=127.0.0.1:18480
export GATEHOUSE_WORKER_LISTEN=127.0.0.1:18491
export GATEHOUSE_MODERATION_MODELS="${GATEHOUSE_MODERATION_MODELS:-toxic-bilstm}"
export GATEHOUSE_WEBHOOK_ALLOW_HTTP=true
export GATEHOUSE_WEBHOOK_ALLOW_CIDRS=127.0.0.1/32
export GATEHOUSE_LOG="${GATEHOUSE_LOG:-warn}"
API_URL="http://$GATEHOUSE_API_LISTEN"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

"$API_BIN" migrate >/dev/null
"$API_BIN" serve >"$LOG_DIR/api.log" 2>&1 &
PIDS+=($!)
"$WORKER_BIN" >"$LOG_DIR/worker.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 120); do
    if curl -s -o /dev/null -w '%{http_code}' "$API_URL/readyz" 2>/dev/null | grep -q 200 &&
        curl -s -o /dev/null -w '%{http_code}' "http://$GATEHOUSE_WORKER_LISTEN/readyz" 2>/dev/null | grep -q 200; then
        break
    fi
    sleep 0.5
done
curl -sf -o /dev/null "$API_URL/readyz" || die "the api did not start (see $LOG_DIR/api.log)"
log "api and worker up ($API_URL)"

PY="$(bash scripts/python-env.sh | tail -n 1)"
rand="$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
field() { "$PY" -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])[sys.argv[1]])' "$1"; }
tenant="$("$API_BIN" admin tenant create --name "webhook bench $rand" --slug "whbench-$rand" | field id)"
"$API_BIN" admin tenant update --tenant "$tenant" --scopes moderate,webhooks >/dev/null
key_json="$("$API_BIN" admin key create --tenant "$tenant" --name bench --scopes moderate,webhooks)"
GATEHOUSE_KEY="$(field key <<<"$key_json")"
unset key_json
log "tenant $tenant"
GATEHOUSE_KEY="$GATEHOUSE_KEY" "$PY" "$SCRIPT_DIR/webhooks.py" --api "$API_URL" "$@"
