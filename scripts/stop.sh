#!/usr/bin/env bash
# Stop the demo's gatehouse-api and gatehouse-worker (started by scripts/demo.sh).
#
# Reads the pid files in <repo>/.cache/demo/; a pid is only signalled when it still
# belongs to the matching gatehouse binary. SIGTERM (graceful shutdown), then SIGKILL
# after GATEHOUSE_STOP_TIMEOUT seconds (default 40). No error when nothing runs.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
DEMO_DIR="$REPO_ROOT/.cache/demo"
STOP_TIMEOUT="${GATEHOUSE_STOP_TIMEOUT:-40}"

# is_ours PID BINARY: the process exists and runs BINARY.
is_ours() {
    local cmd
    [[ -r "/proc/$1/cmdline" ]] || return 1
    cmd="$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)" || return 1
    [[ "$cmd" == *"$2"* ]]
}

stop_one() { # name binary
    local name="$1" bin="$2" pidfile="$DEMO_DIR/$1.pid" pid i
    [[ -f "$pidfile" ]] || return 0
    pid="$(tr -dc '0-9' <"$pidfile")"
    if [[ -z "$pid" ]] || ! is_ours "$pid" "$bin"; then
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
        is_ours "$pid" "$bin" || break
        sleep 0.2
    done
    if is_ours "$pid" "$bin"; then
        echo "$name: still running after ${STOP_TIMEOUT}s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
    echo "$name: stopped (pid $pid)"
}

# The api first, so no new work is published while the worker drains.
stop_one api gatehouse-api
stop_one worker gatehouse-worker
