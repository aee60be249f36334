#!/usr/bin/env bash
# `make fuzz-api`: Schemathesis (pinned in scripts/requirements.txt) against a live stack —
# gatehouse-api + gatehouse-worker on a private database, queue prefix and free ports, real
# Postgres, RabbitMQ and Redis — driven by the committed openapi.json, authenticated as a real
# tenant admin (a JWT from POST /v1/auth/login), so requests reach the handlers.
#
# Every check runs but one (no 5xx, status codes, content types, headers and bodies as
# documented, schema-invalid input refused, authentication enforced, …); it fails on any
# failure. Left out: `positive_data_acceptance` ("schema-valid input accepted"): much of the
# validation is not expressible in a schema (scopes the tenant grants, a webhook URL that
# resolves to a public address, a file or cursor that exists, a password's strength), so
# schema-valid requests are rightly refused with 422/400 and their problem `code`. Bounded: at most
# FUZZ_MAX_EXAMPLES cases per operation and phase (default 15), FUZZ_MAX_TIME seconds in all.
#
# Env: GATEHOUSE_BIN_DIR (default target/debug), FUZZ_MAX_EXAMPLES, FUZZ_MAX_TIME (default
#      240), FUZZ_SEED (default: random; printed), FUZZ_KEEP=1 keeps the database and logs.
# Logs and the report: .cache/fuzz/ (api.log, worker.log, report/).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$REPO_ROOT"

BIN_DIR="${GATEHOUSE_BIN_DIR:-target/debug}"
API_BIN="$BIN_DIR/gatehouse-api"
WORKER_BIN="$BIN_DIR/gatehouse-worker"
OUT="$REPO_ROOT/.cache/fuzz"
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-15}"
MAX_TIME="${FUZZ_MAX_TIME:-240}"
SEED="${FUZZ_SEED:-$RANDOM$RANDOM}"

die() { echo "fuzz-api: ERROR: $*" >&2; exit 1; }
for bin in "$API_BIN" "$WORKER_BIN"; do
    [[ -x "$bin" ]] || die "$bin not found: run \`make build\`"
done
PY="$(bash "$SCRIPT_DIR/python-env.sh" | tail -n 1)"
ST="$(dirname "$PY")/schemathesis"
[[ -x "$ST" ]] || die "schemathesis is not in the venv ($ST)"

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# A private stack: its own database, queue/Redis prefix and ports (like the tests' TestEnv).
RUN="gh_fuzz_$(date +%s)_$$"
export GATEHOUSE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$RUN"
export GATEHOUSE_QUEUE_PREFIX="$RUN"
export GATEHOUSE_REDIS_PREFIX="$RUN"
API_PORT="$(free_port)"
WORKER_PORT="$(free_port)"
export GATEHOUSE_API_LISTEN="127.0.0.1:$API_PORT"
export GATEHOUSE_WORKER_LISTEN="127.0.0.1:$WORKER_PORT"
export GATEHOUSE_MODERATION_MODELS="${GATEHOUSE_MODERATION_MODELS:-toxic-bilstm}"
export GATEHOUSE_ORT_INTRA_THREADS="${GATEHOUSE_ORT_INTRA_THREADS:-1}"
export NO_COLOR=1
# Webhook endpoints on this machine (the seeded one points at a closed local port).
export GATEHOUSE_WEBHOOK_ALLOW_HTTP=true
export GATEHOUSE_WEBHOOK_ALLOW_CIDRS=127.0.0.0/8
API_URL="http://127.0.0.1:$API_PORT"

rm -rf "$OUT" && mkdir -p "$OUT"
API_PID=""
WORKER_PID=""
cleanup() {
    local pid
    for pid in "$API_PID" "$WORKER_PID"; do
        [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "$API_PID" "$WORKER_PID"; do
        [[ -n "$pid" ]] && wait "$pid" 2>/dev/null || true
    done
    if [[ "${FUZZ_KEEP:-}" != 1 ]]; then
        psql -h 127.0.0.1 -U postgres -d postgres -Xqc "DROP DATABASE IF EXISTS \"$RUN\" WITH (FORCE)" >/dev/null 2>&1 || true
        if command -v rabbitmqctl >/dev/null 2>&1; then
            for q in $(rabbitmqctl -q list_queues name 2>/dev/null | grep "^$RUN" || true); do
                rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true
            done
        fi
    fi
}
trap cleanup EXIT

echo "==> stack: database and queue prefix $RUN, api $API_URL, worker :$WORKER_PORT"
"$API_BIN" migrate
"$API_BIN" serve >"$OUT/api.log" 2>&1 &
API_PID=$!
"$WORKER_BIN" >"$OUT/worker.log" 2>&1 &
WORKER_PID=$!
for _ in $(seq 1 120); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$API_URL/readyz" || true)" == 200 ]] && break
    kill -0 "$API_PID" 2>/dev/null || { tail -n 30 "$OUT/api.log" >&2; die "the api exited"; }
    sleep 0.5
done
[[ "$(curl -s -o /dev/null -w '%{http_code}' "$API_URL/readyz" || true)" == 200 ]] || die "the api is not ready"

echo "==> a tenant, its admin, a login"
field() { "$PY" -c 'import json, sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])[sys.argv[1]])' "$1"; }
TENANT="$("$API_BIN" admin tenant create --name "Fuzz" --slug fuzz | field id)"
PASSWORD="fuzzing passphrase $RANDOM$RANDOM"
echo "$PASSWORD" | "$API_BIN" admin user create --tenant "$TENANT" --username fuzzer --role admin >/dev/null
TOKEN="$(curl -sS "$API_URL/v1/auth/login" -H 'Content-Type: application/json' \
    -d "{\"tenant\": \"fuzz\", \"username\": \"fuzzer\", \"password\": \"$PASSWORD\"}" | field access_token)"
[[ "$TOKEN" == ey* ]] || die "no token from POST /v1/auth/login"

# One real resource of each kind, so the operations on `/{id}` reach their handlers with an id
# that exists (Schemathesis sends these ids; everything else it generates).
echo "==> seed: a job, a file, a batch, a key, a user, a webhook endpoint and message"
api() { # METHOD PATH [JSON] -> response body; fails unless 2xx
    local method="$1" path="$2" body="${3:-}"
    if [[ -n "$body" ]]; then
        curl -sS --fail-with-body -X "$method" "$API_URL$path" -H "Authorization: Bearer $TOKEN" \
            -H 'Content-Type: application/json' -d "$body"
    else
        curl -sS --fail-with-body -X "$method" "$API_URL$path" -H "Authorization: Bearer $TOKEN"
    fi
}
JOB="$(api POST /v1/jobs '{"kind": "moderate", "items": [{"custom_id": "a", "text": "have a nice day"}, {"text": "you are so dumb"}]}' | field id)"
printf '%s\n' '{"custom_id": "r1", "method": "POST", "url": "/v1/moderations", "body": {"input": "hello"}}' \
    '{"custom_id": "r2", "method": "POST", "url": "/v1/moderations", "body": {"input": ["a", "b"]}}' >"$OUT/batch.jsonl"
FILE="$(curl -sS --fail-with-body "$API_URL/v1/files" -H "Authorization: Bearer $TOKEN" \
    -F purpose=batch -F file=@"$OUT/batch.jsonl" | field id)"
BATCH="$(api POST /v1/batches "{\"input_file_id\": \"$FILE\", \"endpoint\": \"/v1/moderations\", \"completion_window\": \"24h\"}" | field id)"
KEY="$(api POST /v1/keys '{"name": "seeded", "scopes": ["moderate"]}' | field id)"
USER="$(api POST /v1/users '{"username": "seeded", "password": "a seeded passphrase", "role": "reviewer"}' | field id)"
ENDPOINT="$(api POST /v1/webhooks/endpoints '{"url": "http://127.0.0.1:9/hook"}' | field id)"
MESSAGE="$(api POST "/v1/webhooks/endpoints/$ENDPOINT/test" | field id)"
cat >"$OUT/schemathesis.toml" <<TOML
# Written by scripts/fuzz-api.sh: the seeded ids.
$(for pair in "jobs/:$JOB" "files/:$FILE" "batches/:$BATCH" "keys/:$KEY" "users/:$USER" \
    "webhooks/endpoints/:$ENDPOINT" "webhooks/messages/:$MESSAGE"; do
    printf '[[operations]]\ninclude-path-regex = "^/v1/%s"\nparameters = { "path.id" = "%s" }\n\n' "${pair%%:*}" "${pair#*:}"
done)
TOML

# The document the stack serves is the committed one (the drift test guards the code side).
curl -sS "$API_URL/openapi.json" | cmp -s - openapi.json || die "GET /openapi.json differs from openapi.json: run \`make openapi\`"

echo "==> schemathesis $("$ST" --version | awk '{print $NF}') (seed $SEED, $MAX_EXAMPLES examples per operation, at most ${MAX_TIME}s)"
status=0
"$ST" --config-file "$OUT/schemathesis.toml" run openapi.json \
    --url "$API_URL" \
    -H "Authorization: Bearer $TOKEN" \
    --checks all \
    --exclude-checks positive_data_acceptance \
    --phases examples,coverage,fuzzing \
    --max-examples "$MAX_EXAMPLES" \
    --max-time "$MAX_TIME" \
    --seed "$SEED" \
    --workers 1 \
    --request-timeout 30 \
    --suppress-health-check all \
    --report junit --report-dir "$OUT/report" \
    || status=$?

if grep -qE 'panicked at' "$OUT/api.log" "$OUT/worker.log"; then
    grep -E -A2 'panicked at' "$OUT/api.log" "$OUT/worker.log" | head -n 20 >&2
    die "a process panicked during the run"
fi
if ((status != 0)); then
    echo "fuzz-api: schemathesis found failures (seed $SEED; logs in .cache/fuzz/)" >&2
    exit "$status"
fi
echo "fuzz-api: ok (seed $SEED)"
