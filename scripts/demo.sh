#!/usr/bin/env bash
# End-to-end demo (run by `make demo`, after services, models and build):
#   migrate -> (re)start gatehouse-api serve + gatehouse-worker in the background ->
#   create a tenant and API key -> submit samples/moderation.json -> wait for the job ->
#   print the results as a table. The api and worker keep running; `make stop` stops them.
#
# Env: GATEHOUSE_BIN_DIR     directory with gatehouse-api and gatehouse-worker (default target/debug)
#      GATEHOUSE_API_LISTEN / GATEHOUSE_WORKER_LISTEN and the other GATEHOUSE_* variables are
#      passed through to the binaries unchanged.
# Logs and pid files: .cache/demo/{api,worker}.{log,pid}
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$REPO_ROOT"

BIN_DIR="${GATEHOUSE_BIN_DIR:-target/debug}"
API_BIN="$BIN_DIR/gatehouse-api"
WORKER_BIN="$BIN_DIR/gatehouse-worker"
DEMO_DIR="$REPO_ROOT/.cache/demo"
SAMPLE="samples/moderation.json"
START_TIMEOUT=60
JOB_TIMEOUT=120

step() { printf '\n==> %s\n' "$*"; }
die() { echo "demo: ERROR: $*" >&2; exit 1; }

# "host:port" listen address -> base URL reachable from this machine.
base_url() {
    local listen="$1" host port
    host="${listen%:*}"
    port="${listen##*:}"
    case "$host" in
        "" | 0.0.0.0) host=127.0.0.1 ;;
        "[::]") host="[::1]" ;;
    esac
    echo "http://$host:$port"
}

API_URL="$(base_url "${GATEHOUSE_API_LISTEN:-127.0.0.1:8080}")"
WORKER_URL="$(base_url "${GATEHOUSE_WORKER_LISTEN:-127.0.0.1:9091}")"

for bin in "$API_BIN" "$WORKER_BIN"; do
    [[ -x "$bin" ]] || die "$bin not found: run \`make build\` (or set GATEHOUSE_BIN_DIR)"
done
[[ -f "$SAMPLE" ]] || die "$SAMPLE not found"
command -v curl >/dev/null 2>&1 || die "curl is required"
command -v python3 >/dev/null 2>&1 || die "python3 is required"

http_code() { # url -> HTTP status code, 000 when unreachable
    curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$1" 2>/dev/null || true
}

show_logs() {
    local name
    for name in api worker; do
        if [[ -f "$DEMO_DIR/$name.log" ]]; then
            echo "---- last lines of .cache/demo/$name.log ----" >&2
            tail -n 25 "$DEMO_DIR/$name.log" >&2
            # With RUST_BACKTRACE set, the error itself scrolls out of the tail: repeat it.
            if grep -qE '^Error: |panicked at' "$DEMO_DIR/$name.log"; then
                echo "---- errors in .cache/demo/$name.log ----" >&2
                grep -E -A1 '^Error: |panicked at' "$DEMO_DIR/$name.log" | head -n 6 >&2
            fi
        fi
    done
}

is_running() { # pid binary-name
    [[ -r "/proc/$1/cmdline" ]] && [[ "$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)" == *"$2"* ]]
}

# start_bg NAME BINARY ARGS...: detached (own session, immune to hangups), logs + pid file.
# NO_COLOR keeps ANSI colour codes out of the log files (unless the caller set NO_COLOR).
start_bg() {
    local name="$1"
    shift
    local log="$DEMO_DIR/$name.log" pidfile="$DEMO_DIR/$name.pid" pid
    {
        echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) demo: $*"
    } >"$log"
    if command -v setsid >/dev/null 2>&1; then
        NO_COLOR="${NO_COLOR:-1}" setsid nohup "$@" >>"$log" 2>&1 </dev/null &
    else
        NO_COLOR="${NO_COLOR:-1}" nohup "$@" >>"$log" 2>&1 </dev/null &
    fi
    pid=$!
    echo "$pid" >"$pidfile"
    echo "$name: started (pid $pid, log .cache/demo/$name.log)"
}

# wait_ok NAME PID BINARY URL: until URL answers 200, the process dies, or the timeout.
wait_ok() {
    local name="$1" pid="$2" bin="$3" url="$4" deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        if [[ "$(http_code "$url")" == "200" ]]; then
            echo "$name: ready ($url)"
            return 0
        fi
        if ! is_running "$pid" "$bin"; then
            show_logs
            die "$name exited during startup (see the log above)"
        fi
        if ((SECONDS >= deadline)); then
            show_logs
            die "$name not ready after ${START_TIMEOUT}s ($url -> $(http_code "$url"))"
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------- migrate
step "migrate"
"$API_BIN" migrate

# ---------------------------------------------------------------------------- start
step "start gatehouse-api and gatehouse-worker"
mkdir -p "$DEMO_DIR"
bash "$SCRIPT_DIR/stop.sh"
# Something else on the ports would answer our readiness probes: refuse rather than mislead.
for url in "$API_URL/healthz" "$WORKER_URL/healthz"; do
    if [[ "$(http_code "$url")" != "000" ]]; then
        die "${url%/healthz} already answers, but not from a demo process: stop it, or set GATEHOUSE_API_LISTEN / GATEHOUSE_WORKER_LISTEN"
    fi
done
start_bg api "$API_BIN" serve
start_bg worker "$WORKER_BIN"
wait_ok api "$(cat "$DEMO_DIR/api.pid")" gatehouse-api "$API_URL/readyz"
wait_ok worker "$(cat "$DEMO_DIR/worker.pid")" gatehouse-worker "$WORKER_URL/healthz"

# ---------------------------------------------------------------------------- tenant + key
step "create a tenant and an API key"
json_field() { # field <<< json (last JSON line of the input)
    python3 -c '
import json, sys
lines = [l for l in sys.stdin.read().splitlines() if l.strip().startswith("{")]
print(json.loads(lines[-1])[sys.argv[1]])' "$1"
}
tenant_json="$("$API_BIN" admin tenant create --name demo --slug "demo-$(date +%Y%m%d-%H%M%S)")" || die "admin tenant create failed"
TENANT_ID="$(json_field id <<<"$tenant_json")" || die "unexpected output: $tenant_json"
key_json="$("$API_BIN" admin key create --tenant "$TENANT_ID" --name demo)" || die "admin key create failed"
KEY="$(json_field key <<<"$key_json")" || die "unexpected output from admin key create"
KEY_ID="$(json_field id <<<"$key_json")"
echo "tenant $TENANT_ID, key $KEY_ID"

# ---------------------------------------------------------------------------- submit
step "submit $SAMPLE"
n_items="$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["items"]))' "$SAMPLE")"
resp="$(curl -sS -X POST "$API_URL/v1/jobs" \
    -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    --data-binary @"$SAMPLE" -w '\n%{http_code}')" || die "POST /v1/jobs failed"
code="${resp##*$'\n'}"
body="${resp%$'\n'*}"
[[ "$code" == "202" || "$code" == "200" ]] || die "POST /v1/jobs -> HTTP $code: $body"
JOB_ID="$(json_field id <<<"$body")"
echo "HTTP $code: job $JOB_ID ($n_items items) $(json_field status <<<"$body")"

# ---------------------------------------------------------------------------- poll
step "wait for the job"
deadline=$((SECONDS + JOB_TIMEOUT))
last=""
while :; do
    job="$(curl -sS --max-time 5 -H "Authorization: Bearer $KEY" "$API_URL/v1/jobs/$JOB_ID")" || job=""
    status="$(json_field status <<<"$job" 2>/dev/null || echo "?")"
    if [[ "$status" != "$last" ]]; then
        echo "status: $status"
        last="$status"
    fi
    [[ "$status" == "completed" || "$status" == "failed" ]] && break
    if ((SECONDS >= deadline)); then
        echo "$job"
        show_logs
        die "job $JOB_ID not finished after ${JOB_TIMEOUT}s (status $status)"
    fi
    sleep 0.5
done

# ---------------------------------------------------------------------------- results
step "results"
results="$(curl -sS --fail-with-body --max-time 30 -H "Authorization: Bearer $KEY" "$API_URL/v1/jobs/$JOB_ID/results")" \
    || die "GET /v1/jobs/$JOB_ID/results failed: $results"
python3 -c '
import json, sys

sample = json.load(open(sys.argv[1]))["items"]
texts = {i: it["text"] for i, it in enumerate(sample)}
by_cid = {it.get("custom_id"): it["text"] for it in sample}

def cut(s, n):
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"

rows = []
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    r = json.loads(line)
    res = r.get("result") or {}
    cid = r.get("custom_id") or ""
    text = by_cid.get(cid) if cid in by_cid else texts.get(r.get("index"), "")
    if r.get("status") != "succeeded" and not res:
        rows.append((cid, r.get("status", "?"), "error: " + str(r.get("error")), "", cut(text, 60)))
        continue
    scores = res.get("scores") or {}
    top = max(scores.items(), key=lambda kv: kv[1]) if scores else None
    rows.append((
        cid,
        res.get("level") or ("YES" if res.get("flagged") else "no"),
        ",".join(res.get("categories") or []) or "-",
        f"{top[0]} {top[1]:.3f}" if top else "-",
        cut(text, 60),
    ))

head = ("custom_id", "level", "categories", "top score", "text")
widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
fmt = "  ".join("{:<%d}" % w for w in widths[:-1]) + "  {}"
print(fmt.format(*head))
print(fmt.format(*("-" * w for w in widths)))
for row in rows:
    print(fmt.format(*row))
flagged = sum(1 for r in rows if r[1] in ("YES", "controversial", "unsafe"))
print(f"\n{len(rows)} results, {flagged} flagged")
' "$SAMPLE" <<<"$results"

step "job"
python3 -m json.tool <<<"$job"

# ---------------------------------------------------------------------------- OpenAI-compatible
step "POST /v1/moderations (OpenAI-compatible, waits for the workers)"
modr="$(curl -sS --max-time 60 -X POST "$API_URL/v1/moderations" \
    -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d '{"model": "omni-moderation-latest", "input": ["我要杀了你", "What a lovely day."]}' \
    -w '\n%{http_code}')" || die "POST /v1/moderations failed"
code="${modr##*$'\n'}"
[[ "$code" == "200" ]] || die "POST /v1/moderations -> HTTP $code: ${modr%$'\n'*}"
python3 -c '
import json, sys
body = json.load(sys.stdin)
print("model:", body["model"])
for r in body["results"]:
    on = [k for k, v in r["categories"].items() if v]
    ours = r["gatehouse"]["categories"]
    print("  flagged=%-5s level=%-13s openai=%s gatehouse=%s" % (r["flagged"], r["level"], on, ours))
' <<<"${modr%$'\n'*}"

# ---------------------------------------------------------------------------- console
step "the web console ($API_URL/console)"
# A tenant admin to sign in with; an operator grants the demo tenant translation too.
TENANT_SLUG="$(json_field slug <<<"$tenant_json")"
CONSOLE_PASSWORD="$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')"
OPERATOR="operator-${TENANT_SLUG#demo-}"
printf '%s\n' "$CONSOLE_PASSWORD" | "$API_BIN" admin operator create --username "$OPERATOR" >/dev/null \
    || die "admin operator create failed"
printf '%s\n' "$CONSOLE_PASSWORD" | "$API_BIN" admin user create --tenant "$TENANT_ID" --username admin --role admin >/dev/null \
    || die "admin user create failed"
op_token="$(curl -sS -X POST "$API_URL/v1/auth/login" -H 'Content-Type: application/json' \
    -d "{\"username\": \"$OPERATOR\", \"password\": \"$CONSOLE_PASSWORD\"}" | json_field access_token)" \
    || die "operator login failed"
curl -sS -o /dev/null --fail-with-body -X PATCH "$API_URL/v1/tenants/$TENANT_ID" -H "Authorization: Bearer $op_token" \
    -H 'Content-Type: application/json' -d '{"scopes": ["moderate", "translate", "webhooks"]}' \
    || die "granting the demo tenant translation failed"
if [[ "$(http_code "$API_URL/console/")" != "200" ]]; then
    echo "the console is not built: run \`bash scripts/build-console.sh\` (make demo does)"
fi
echo "open $API_URL/console/ and sign in: tenant $TENANT_SLUG, user admin, password $CONSOLE_PASSWORD"
echo "(operator, without a tenant: $OPERATOR, same password)"

cat <<EOF

The api ($API_URL) and the worker ($WORKER_URL) keep running; logs in .cache/demo/.
Stop them with:  make stop

Demo API key (tenant $TENANT_ID; a throwaway demo key, for local use only):
  export GATEHOUSE_KEY=$KEY
  curl -sS -X POST $API_URL/v1/jobs -H "Authorization: Bearer \$GATEHOUSE_KEY" \\
       -H 'Content-Type: application/json' \\
       -d '{"kind":"moderate","items":[{"custom_id":"x1","text":"you are an idiot"}]}'
  curl -sS $API_URL/v1/jobs/$JOB_ID -H "Authorization: Bearer \$GATEHOUSE_KEY"
  curl -sS $API_URL/v1/jobs/$JOB_ID/results -H "Authorization: Bearer \$GATEHOUSE_KEY"
EOF

[[ "$status" == "completed" ]] || die "job $JOB_ID finished with status $status"
