#!/usr/bin/env bash
# Gatehouse translate load test: one job of 10,000 zh→en items through the queue.
#
#   1. makes sure the demo stack answers (api /readyz 200; otherwise runs `make demo`),
#   2. creates its own throwaway tenant granting `translate` and a key with scope `translate`
#      (admin CLI: tenant create, tenant update --scopes moderate,translate, key create),
#   3. runs `loadtest/translate.py --job` with the project venv's python; arguments pass through:
#        bash loadtest/translate.sh --items 2000 --timeout 300
#
# The key goes to translate.py through the GATEHOUSE_KEY environment variable (not argv, so it
# never shows in `ps`) and is never printed. Results: loadtest/results/translate-latest.json.
# The stack keeps running afterwards (`make stop` stops it).
#
# Env: GATEHOUSE_BIN_DIR      directory with gatehouse-api (default target/debug)
#      GATEHOUSE_API_LISTEN   api address (default 127.0.0.1:8080)
#      other GATEHOUSE_* variables pass through to the admin CLI and translate.py.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$REPO_ROOT"

BIN_DIR="${GATEHOUSE_BIN_DIR:-target/debug}"
API_BIN="$BIN_DIR/gatehouse-api"

log() { printf '[translate] %s\n' "$*" >&2; }
die() { printf '[translate] ERROR: %s\n' "$*" >&2; exit 2; }

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
    demo_log=.cache/demo/translate-make-demo.log
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
        grep -E '^(Error|demo: ERROR)' "$demo_log" | head -n 3 | sed 's/^/[translate]   /' >&2 || true
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
        die "\`gatehouse-api admin $1 $2\` failed (exit $rc). If the binaries were rebuilt since the stack started (e.g. 'database is not migrated'), restart it: make stop && bash loadtest/translate.sh"
    fi
    rm -f "$err"
    printf '%s\n' "$out"
}
# Unique per run (tenant names/slugs may have to be unique).
rand="$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
name="loadtest-translate-$(date -u +%Y%m%dt%H%M%Sz)-$rand"
tenant_json="$(admin tenant create --name "$name" --slug "lt-translate-$rand")" || exit 2
tenant_id="$(json_field id <<<"$tenant_json")" || die "unexpected output from admin tenant create"
admin tenant update --tenant "$tenant_id" --scopes moderate,translate >/dev/null || exit 2
# The key JSON holds the secret: it stays in this variable only.
key_json="$(admin key create --tenant "$tenant_id" --name loadtest-translate --scopes translate)" || exit 2
GATEHOUSE_KEY="$(json_field key <<<"$key_json")" || die "unexpected output from admin key create"
key_id="$(json_field id <<<"$key_json")" || key_id="?"
unset key_json
log "tenant $tenant_id ($name, scopes moderate,translate), key $key_id (scope translate)"

# ---------------------------------------------------------------------------- run
GATEHOUSE_KEY="$GATEHOUSE_KEY" exec "$PY" "$SCRIPT_DIR/translate.py" --job --api "$API_URL" "$@"
