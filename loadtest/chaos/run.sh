#!/usr/bin/env bash
# Chaos benchmark (issue 16): the delivery contract under faults. Self-contained: its own
# database `gatehouse_chaos[_short]`, queue prefix and ports (api 18580, workers 18591+,
# webhook receiver 18599); loadtest/chaos/chaos.py starts and kills every process itself.
#
#   bash loadtest/chaos/run.sh --short     # CI form (make chaos-short): 2,000 + 300 + 300 items, ~1-2 min
#   bash loadtest/chaos/run.sh             # long form: a 20,000-item job + a 2,000-line batch
#   bash loadtest/chaos/run.sh --restart-rabbitmq-cmd 'systemctl restart rabbitmq-server' \
#        --restart-postgres-cmd 'systemctl restart postgresql'   # only where that is allowed
#
# GATEHOUSE_BIN_DIR: the binaries (default target/release when built, else target/debug).
# GATEHOUSE_FAULT_INJECT is set by chaos.py for single api runs only: it is test-only.
# Logs: .cache/chaos/<name>/; results: loadtest/results/<name>.json.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
cd "$REPO_ROOT"

NAME=chaos
ARGS=()
for arg in "$@"; do
    if [[ "$arg" == "--short" ]]; then
        NAME=chaos-short
        ARGS+=(--items 2000 --batch-lines 300 --timeout 240)
    else
        ARGS+=("$arg")
    fi
done

if [[ -n "${GATEHOUSE_BIN_DIR:-}" ]]; then
    BIN_DIR="$GATEHOUSE_BIN_DIR"
elif [[ "$NAME" == chaos && -x target/release/gatehouse-worker ]]; then
    BIN_DIR=target/release
else
    BIN_DIR=target/debug
fi
for bin in gatehouse-api gatehouse-worker; do
    [[ -x "$BIN_DIR/$bin" ]] || { echo "[chaos] $BIN_DIR/$bin not found: run \`make build\` (or set GATEHOUSE_BIN_DIR)" >&2; exit 2; }
done
LOG_DIR="$REPO_ROOT/.cache/chaos/$NAME"
rm -rf "$LOG_DIR"
mkdir -p "$LOG_DIR"

DB="gatehouse_${NAME//-/_}"
SERVER="${GATEHOUSE_TEST_DATABASE_SERVER:-postgres://postgres@127.0.0.1:5432}"
psql "$SERVER/postgres" -XAtqc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null
export GATEHOUSE_DATABASE_URL="$SERVER/$DB"
export GATEHOUSE_QUEUE_PREFIX="gatehouse_${NAME//-/_}_$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
export GATEHOUSE_REDIS_PREFIX="$GATEHOUSE_QUEUE_PREFIX"
export GATEHOUSE_API_LISTEN=127.0.0.1:18580
export GATEHOUSE_MODERATION_MODELS="${GATEHOUSE_MODERATION_MODELS:-toxic-bilstm}"
export GATEHOUSE_LOG="${GATEHOUSE_LOG:-warn}"
# Small chunks so each kill lands mid-job with deliveries unacked; quick polls and retries.
export GATEHOUSE_CHUNK_ITEMS="${GATEHOUSE_CHUNK_ITEMS:-50}"
export GATEHOUSE_OUTBOX_POLL_MS=200 GATEHOUSE_DISPATCH_POLL_MS=200 GATEHOUSE_RETRY_DELAY_MS=500
export GATEHOUSE_WEBHOOK_ALLOW_HTTP=true GATEHOUSE_WEBHOOK_ALLOW_CIDRS=127.0.0.1/32
export GATEHOUSE_WEBHOOK_RETRY_SCHEDULE_SECS=1,1,2,2,3,5,5,5,10,10,10,10,10,10
export GATEHOUSE_WEBHOOK_LEASE_SECS=5 GATEHOUSE_WEBHOOK_TIMEOUT_MS=3000 GATEHOUSE_WEBHOOK_POLL_MS=200
export GATEHOUSE_WEBHOOK_PROGRESS_INTERVAL_SECS=1
export GATEHOUSE_ORT_INTRA_THREADS="${GATEHOUSE_ORT_INTRA_THREADS:-1}"
export GATEHOUSE_SYNC_LANE_SESSIONS=false
unset GATEHOUSE_FAULT_INJECT

cleanup() {
    psql "$SERVER/postgres" -XAtqc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
    if command -v rabbitmqctl >/dev/null 2>&1; then
        for q in $(rabbitmqctl -q list_queues name 2>/dev/null | grep "^$GATEHOUSE_QUEUE_PREFIX" || true); do
            rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true
        done
    fi
}
trap cleanup EXIT

echo "[chaos] $NAME with $BIN_DIR binaries, database $DB, queues $GATEHOUSE_QUEUE_PREFIX.*" >&2
python3 "$SCRIPT_DIR/chaos.py" --api-bin "$BIN_DIR/gatehouse-api" --worker-bin "$BIN_DIR/gatehouse-worker" \
    --log-dir "$LOG_DIR" --name "$NAME" "${ARGS[@]}"
