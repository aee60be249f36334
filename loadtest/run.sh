#!/usr/bin/env bash
# Gatehouse load tests. LOADTEST_KIND=moderate (default; `make loadtest`): pipeline items/s
# against raw ONNX Runtime. LOADTEST_KIND=translate (`bash loadtest/translate.sh`): one job of
# 10,000 zh→en items through the queue.
#
#   1. makes sure the demo stack answers (api /readyz 200; otherwise runs `make demo`),
#   2. creates its own throwaway tenant + API key with the admin CLI (for translate: a tenant
#      granting `translate` and a key with that scope),
#   3. runs loadtest/moderation.py or `loadtest/translate.py --job` with the project venv's
#      python; arguments pass through:
#        bash loadtest/run.sh --items 2000 --jobs 4
#
# The key goes to the script through the GATEHOUSE_KEY environment variable (not argv, so it
# never shows in `ps`) and is never printed. Results: loadtest/results/.
# The stack keeps running afterwards (`make stop` stops it).
#
# Env: GATEHOUSE_BIN_DIR      directory with gatehouse-api (default target/debug)
#      GATEHOUSE_API_LISTEN   api address (default 127.0.0.1:8080)
#      other GATEHOUSE_* variables pass through to the admin CLI and the python script.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$REPO_ROOT"

BIN_DIR="${GATEHOUSE_BIN_DIR:-target/debug}"
API_BIN="$BIN_DIR/gatehouse-api"

KIND="${LOADTEST_KIND:-moderate}"
case "$KIND" in
    moderate) TAG=loadtest; RESTART="make loadtest" ;;
    translate) TAG=translate; RESTART="bash loadtest/translate.sh" ;;
    fairness) TAG=fairness; RESTART="bash loadtest/fairness.sh" ;;
    bulk) TAG=bulk; RESTART="bash loadtest/bulk.sh" ;;
    *) printf 'LOADTEST_KIND must be moderate, translate, fairness or bulk\n' >&2; exit 2 ;;
esac

log() { printf '[%s] %s\n' "$TAG" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$TAG" "$*" >&2; exit 2; }

command -v curl >/dev/null 2>&1 || die "curl is required"

# "host:port" listen address -> base URL reachable from this machine (as scripts/demo.sh).
listen="${GATEHOUSE_API_LISTEN:-127.0.0.1:8080}"
host="${listen%:*}"
port="${listen##*:}"
case "$host" in
    "" | 0.0.0.0) host=127.0.0.1 ;;
    "[::]") host="[::1]" ;;
esac
API_URL="http://$host:$port"

http_code() { # url -> HTTP status code, 000 when unreachable
    curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------------------- stack
if [[ "$(http_code "$API_URL/readyz")" == "200" ]]; then
    log "stack already up ($API_URL/readyz = 200)"
else
    log "$API_URL/readyz is not 200: starting the demo stack with \`make demo\` ..."
    # The demo prints its own demo key; keep its output out of ours (it is in the log).
    mkdir -p .cache/demo
    demo_log=".cache/demo/$TAG-make-demo.log"
    demo_rc=0
    make --no-print-directory demo >"$demo_log" 2>&1 || demo_rc=$?
    # Bounded wait, in case readiness lags the demo's own check.
    for _ in $(seq 1 20); do
        [[ "$(http_code "$API_URL/readyz")" == "200" ]] && break
        sleep 0.5
    done
    if [[ "$(http_code "$API_URL/readyz")" != "200" ]]; then
        grep -v -E '^\s+(at |[0-9]+: )|^Stack backtrace:' "$demo_log" | tail -n 20 >&2
        die "the stack is not up after \`make demo\` (exit $demo_rc; full output: $demo_log)"
    fi
    if ((demo_rc != 0)); then
        # The api and worker run; only the demo's own sample step failed. Not our concern.
        log "WARNING: \`make demo\` exited $demo_rc after starting the stack (see $demo_log); continuing"
        grep -E '^(Error|demo: ERROR)' "$demo_log" | head -n 3 | sed "s/^/[$TAG]   /" >&2 || true
    fi
    log "stack up (make demo output: $demo_log)"
fi

# ---------------------------------------------------------------------------- python
PY="$(bash scripts/python-env.sh | tail -n 1)" || die "scripts/python-env.sh failed"
[[ -x "$PY" ]] || die "no venv python ($PY)"

# ---------------------------------------------------------------------------- tenant + key
[[ -x "$API_BIN" ]] || die "$API_BIN not found: run \`make build\` (or set GATEHOUSE_BIN_DIR)"
json_field() { # field <<< output (last JSON line)
    "$PY" -c '
import json, sys
lines = [l for l in sys.stdin.read().splitlines() if l.strip().startswith("{")]
print(json.loads(lines[-1])[sys.argv[1]])' "$1"
}
# admin ARGS...: stdout of the admin command; on failure its error (not the backtrace) + a hint.
admin() {
    local out err rc=0
    err="$(mktemp)"
    out="$(RUST_BACKTRACE=0 "$API_BIN" admin "$@" 2>"$err")" || rc=$?
    if ((rc != 0)); then
        grep -v -E '^\s+(at |[0-9]+: )|^Stack backtrace:' "$err" | head -n 5 >&2
        rm -f "$err"
        die "\`gatehouse-api admin $1 $2\` failed (exit $rc). If the binaries were rebuilt since the stack started (e.g. 'database is not migrated'), restart it: make stop && $RESTART"
    fi
    rm -f "$err"
    printf '%s\n' "$out"
}
# Unique per run (tenant names/slugs may have to be unique).
rand="$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
name="$TAG-$(date -u +%Y%m%dt%H%M%Sz)-$rand"
tenant_json="$(admin tenant create --name "$name" --slug "lt-$TAG-$rand")" || exit 2
tenant_id="$(json_field id <<<"$tenant_json")" || die "unexpected output from admin tenant create"
key_args=(--name "$TAG")
script=(moderation.py)
if [[ "$KIND" == translate ]]; then
    admin tenant update --tenant "$tenant_id" --scopes moderate,translate >/dev/null || exit 2
    key_args+=(--scopes translate)
    script=(translate.py --job)
fi
# The key JSON holds the secret: it stays in this variable only.
key_json="$(admin key create --tenant "$tenant_id" "${key_args[@]}")" || exit 2
GATEHOUSE_KEY="$(json_field key <<<"$key_json")" || die "unexpected output from admin key create"
key_id="$(json_field id <<<"$key_json")" || key_id="?"
unset key_json
log "tenant $tenant_id ($name), key $key_id"

if [[ "$KIND" == bulk ]]; then
    script=(bulk.py)
fi
if [[ "$KIND" == fairness ]]; then
    # A second tenant (B), whose latency under A's load is what is measured.
    tenant_b_json="$(admin tenant create --name "$name-b" --slug "lt-$TAG-$rand-b")" || exit 2
    tenant_b="$(json_field id <<<"$tenant_b_json")" || die "unexpected output from admin tenant create"
    key_b_json="$(admin key create --tenant "$tenant_b" --name "$TAG-b")" || exit 2
    GATEHOUSE_KEY_B="$(json_field key <<<"$key_b_json")" || die "unexpected output from admin key create"
    unset key_b_json
    log "tenant B $tenant_b"
    script=(fairness.py)
    export GATEHOUSE_KEY_B
fi

# ---------------------------------------------------------------------------- run
GATEHOUSE_KEY="$GATEHOUSE_KEY" exec "$PY" "$SCRIPT_DIR/${script[0]}" "${script[@]:1}" --api "$API_URL" "$@"
