#!/usr/bin/env bash
# Make Postgres, RabbitMQ and Redis reachable for development, tests and the demo.
#
#   Postgres  target: GATEHOUSE_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/gatehouse)
#   RabbitMQ  target: GATEHOUSE_AMQP_URL     (default amqp://guest:guest@127.0.0.1:5672/%2f)
#   Redis     target: GATEHOUSE_REDIS_URL    (default redis://127.0.0.1:6379; rate limits)
#
# Idempotent: when a service already answers, nothing is started or installed.
# Otherwise, for a local target (127.0.0.1 / localhost / ::1) only:
#   Postgres: start the existing Debian cluster (pg_ctlcluster), or apt-get install
#             postgresql, start it, and trust TCP logins from 127.0.0.1/::1.
#   RabbitMQ: `rabbitmq-server -detached`, after apt-get install rabbitmq-server if needed,
#             then wait for the port and `rabbitmqctl await_startup`.
#   Redis:    `redis-server --daemonize yes` (no persistence: rate-limit windows only),
#             after apt-get install redis-server if needed.
# A remote target is only probed. Prints one line per service on stdout, e.g.
# "postgres: up (127.0.0.1:5432)"; progress and errors go to stderr. Exits 1 if a
# service could not be made reachable.
# Env: GATEHOUSE_SERVICES_PG_WAIT / GATEHOUSE_SERVICES_RABBIT_WAIT  seconds to wait for a
#      started service (default 60 / 120).
set -euo pipefail

DEFAULT_DATABASE_URL="postgres://postgres@127.0.0.1:5432/gatehouse"
DEFAULT_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f"
PG_WAIT_SECS="${GATEHOUSE_SERVICES_PG_WAIT:-60}"
RABBIT_WAIT_SECS="${GATEHOUSE_SERVICES_RABBIT_WAIT:-120}"

note() { echo "[services] $*" >&2; }

# parse_url URL DEFAULT_PORT -> sets URL_HOST URL_PORT URL_USER URL_PASS URL_SHOW (host:port)
parse_url() {
    local url="$1" default_port="$2" rest userinfo
    rest="${url#*://}"
    rest="${rest%%[/?#]*}"
    userinfo=""
    if [[ "$rest" == *@* ]]; then
        userinfo="${rest%@*}"
        rest="${rest##*@}"
    fi
    URL_USER="${userinfo%%:*}"
    URL_PASS=""
    [[ "$userinfo" == *:* ]] && URL_PASS="${userinfo#*:}"
    if [[ "$rest" == \[* ]]; then # [ipv6]:port
        URL_HOST="${rest#\[}"
        URL_HOST="${URL_HOST%%\]*}"
        rest="${rest#*\]}"
        URL_PORT="${rest#:}"
    elif [[ "$rest" == *:* ]]; then
        URL_HOST="${rest%%:*}"
        URL_PORT="${rest##*:}"
    else
        URL_HOST="$rest"
        URL_PORT=""
    fi
    [[ -n "$URL_HOST" ]] || URL_HOST="127.0.0.1"
    [[ -n "$URL_PORT" ]] || URL_PORT="$default_port"
    URL_SHOW="$URL_HOST:$URL_PORT"
    [[ "$URL_HOST" == *:* ]] && URL_SHOW="[$URL_HOST]:$URL_PORT"
    if ! [[ "$URL_PORT" =~ ^[0-9]+$ ]]; then
        note "cannot parse a port from '$url'"
        return 1
    fi
}

is_local() {
    case "$1" in
        127.0.0.1 | localhost | ::1 | localhost.localdomain) return 0 ;;
        *) return 1 ;;
    esac
}

tcp_open() { # host port
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" >/dev/null 2>&1
}

# ---------------------------------------------------------------------------- apt
APT_UPDATED=0
APT_LOG=""
apt_install() { # packages...
    command -v apt-get >/dev/null 2>&1 || { note "apt-get not found: install $* manually"; return 1; }
    if [[ "$(id -u)" != "0" ]]; then
        note "not root: cannot apt-get install $* (install it, or run as root)"
        return 1
    fi
    [[ -n "$APT_LOG" ]] || APT_LOG="$(mktemp -t gatehouse-services-apt.XXXXXX)"
    if [[ "$APT_UPDATED" == "0" ]]; then
        note "apt-get update ..."
        if ! apt-get update >>"$APT_LOG" 2>&1; then
            tail -n 20 "$APT_LOG" >&2
            note "apt-get update failed (full log: $APT_LOG)"
            return 1
        fi
        APT_UPDATED=1
    fi
    note "apt-get install -y $* (this can take a minute) ..."
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" \
        >>"$APT_LOG" 2>&1 </dev/null; then
        tail -n 20 "$APT_LOG" >&2
        note "apt-get install $* failed (full log: $APT_LOG)"
        return 1
    fi
}

# ---------------------------------------------------------------------------- postgres
pg_ready() { # host port
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$1" -p "$2" -t 3 >/dev/null 2>&1
    else
        tcp_open "$1" "$2"
    fi
}

# Prints "version name" of the local cluster to use: the one on $1 (port), else the first.
pg_pick_cluster() {
    local port="$1" line first=""
    if command -v pg_lsclusters >/dev/null 2>&1; then
        while read -r ver name cport _; do
            [[ -n "$ver" ]] || continue
            [[ -n "$first" ]] || first="$ver $name"
            if [[ "$cport" == "$port" ]]; then
                echo "$ver $name"
                return 0
            fi
        done < <(pg_lsclusters -h 2>/dev/null)
    fi
    if [[ -z "$first" && -d /etc/postgresql ]]; then
        # shellcheck disable=SC2012 # version directory names
        line="$(ls /etc/postgresql 2>/dev/null | head -n1)"
        [[ -n "$line" && -d "/etc/postgresql/$line/main" ]] && first="$line main"
    fi
    [[ -n "$first" ]] && echo "$first"
}

pg_cluster_running() { # ver name
    pg_ctlcluster --skip-systemctl-redirect "$1" "$2" status >/dev/null 2>&1
}

pg_start_cluster() { # ver name
    if pg_cluster_running "$1" "$2"; then
        return 0
    fi
    note "postgres: starting cluster $1/$2 ..."
    # Output to a file, not $(...): a daemon inheriting the pipe would block the read.
    local out
    out="$(mktemp)"
    if ! pg_ctlcluster --skip-systemctl-redirect "$1" "$2" start >"$out" 2>&1 </dev/null; then
        pg_cluster_running "$1" "$2" || { cat "$out" >&2; rm -f "$out"; return 1; }
    fi
    rm -f "$out"
}

# Put trust rules for TCP logins from 127.0.0.1 and ::1 first in pg_hba.conf.
pg_trust_local_tcp() { # ver name
    local hba="/etc/postgresql/$1/$2/pg_hba.conf" tmp marker="# added by gatehouse scripts/services.sh"
    [[ -f "$hba" ]] || { note "postgres: $hba not found"; return 1; }
    tmp="$(mktemp)"
    {
        echo "$marker: trust local TCP logins (development only)"
        echo "host all all 127.0.0.1/32 trust"
        echo "host all all ::1/128 trust"
        grep -v -F -e "$marker" -e "host all all 127.0.0.1/32 trust" -e "host all all ::1/128 trust" "$hba" || true
    } >"$tmp"
    cat "$tmp" >"$hba" # keep the file's owner and mode
    rm -f "$tmp"
    if pg_cluster_running "$1" "$2"; then
        pg_ctlcluster --skip-systemctl-redirect "$1" "$2" reload >/dev/null 2>&1 || true
    fi
}

pg_wait() { # host port
    local deadline=$((SECONDS + PG_WAIT_SECS))
    until pg_ready "$1" "$2"; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

# Warn (don't fail) when the server answers but the URL's user cannot log in.
pg_check_login() { # host port user pass
    command -v psql >/dev/null 2>&1 || return 0
    local out
    if ! out="$(PGPASSWORD="$4" PGCONNECT_TIMEOUT=5 psql -h "$1" -p "$2" -U "${3:-postgres}" \
        -d postgres -w -Atqc 'SELECT 1' 2>&1 </dev/null)"; then
        note "postgres: warning: the server answers but login as '${3:-postgres}' failed: ${out%%$'\n'*}"
    fi
}

ensure_postgres() {
    local url="${GATEHOUSE_DATABASE_URL:-$DEFAULT_DATABASE_URL}" host port cluster ver name
    parse_url "$url" 5432 || { echo "postgres: bad GATEHOUSE_DATABASE_URL"; return 1; }
    host="$URL_HOST" port="$URL_PORT"
    if pg_ready "$host" "$port"; then
        echo "postgres: up ($URL_SHOW)"
        return 0
    fi
    if ! is_local "$host"; then
        echo "postgres: UNREACHABLE at $URL_SHOW (remote host: not starting anything)"
        return 1
    fi

    cluster="$(pg_pick_cluster "$port" || true)"
    if [[ -z "$cluster" ]]; then
        if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
            apt_install postgresql || { echo "postgres: install failed"; return 1; }
        fi
        cluster="$(pg_pick_cluster "$port" || true)"
        if [[ -z "$cluster" ]]; then # installed without a default cluster
            # shellcheck disable=SC2012 # version directory names
            ver="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
            note "postgres: creating cluster $ver/main ..."
            pg_createcluster "$ver" main >/dev/null || { echo "postgres: pg_createcluster failed"; return 1; }
            cluster="$ver main"
        fi
        read -r ver name <<<"$cluster"
        pg_trust_local_tcp "$ver" "$name" || { echo "postgres: cannot configure pg_hba.conf"; return 1; }
    fi
    read -r ver name <<<"$cluster"
    pg_start_cluster "$ver" "$name" || { echo "postgres: cannot start cluster $ver/$name"; return 1; }
    if ! pg_wait "$host" "$port"; then
        note "postgres: last log lines:"
        tail -n 15 "/var/log/postgresql/postgresql-$ver-$name.log" >&2 2>/dev/null || true
        echo "postgres: UNREACHABLE at $URL_SHOW after ${PG_WAIT_SECS}s (cluster $ver/$name started; does its port match?)"
        return 1
    fi
    pg_check_login "$host" "$port" "$URL_USER" "$URL_PASS"
    echo "postgres: up ($URL_SHOW; started cluster $ver/$name)"
}

# ---------------------------------------------------------------------------- rabbitmq
ensure_rabbitmq() {
    local url="${GATEHOUSE_AMQP_URL:-$DEFAULT_AMQP_URL}" host port out
    parse_url "$url" 5672 || { echo "rabbitmq: bad GATEHOUSE_AMQP_URL"; return 1; }
    host="$URL_HOST" port="$URL_PORT"
    if tcp_open "$host" "$port"; then
        echo "rabbitmq: up ($URL_SHOW)"
        return 0
    fi
    if ! is_local "$host"; then
        echo "rabbitmq: UNREACHABLE at $URL_SHOW (remote host: not starting anything)"
        return 1
    fi

    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        apt_install rabbitmq-server || { echo "rabbitmq: install failed"; return 1; }
        tcp_open "$host" "$port" || sleep 2 # the package's init script may have started it
    fi
    if ! tcp_open "$host" "$port"; then
        # A node that is already booting would refuse a second start; only start when down.
        if command -v rabbitmqctl >/dev/null 2>&1 && timeout 20 rabbitmqctl -q ping >/dev/null 2>&1; then
            note "rabbitmq: node is running but $URL_SHOW is not open yet; waiting ..."
        else
            note "rabbitmq: starting (rabbitmq-server -detached) ..."
            # Output to a file, not $(...): the detached node could inherit the pipe.
            out="$(mktemp)"
            if ! rabbitmq-server -detached >"$out" 2>&1 </dev/null; then
                cat "$out" >&2
                rm -f "$out"
                echo "rabbitmq: 'rabbitmq-server -detached' failed"
                return 1
            fi
            rm -f "$out"
        fi
    fi

    local deadline=$((SECONDS + RABBIT_WAIT_SECS))
    until tcp_open "$host" "$port"; do
        if ((SECONDS >= deadline)); then
            note "rabbitmq: last log lines:"
            for f in /var/log/rabbitmq/rabbit@*.log; do
                [[ -f "$f" && "$f" != *_upgrade.log ]] && tail -n 8 "$f" >&2
            done
            echo "rabbitmq: UNREACHABLE at $URL_SHOW after ${RABBIT_WAIT_SECS}s"
            return 1
        fi
        sleep 1
    done
    if command -v rabbitmqctl >/dev/null 2>&1; then
        local left=$((deadline - SECONDS))
        ((left > 10)) || left=10
        if ! out="$(timeout "$left" rabbitmqctl -q await_startup 2>&1 </dev/null)"; then
            echo "$out" >&2
            echo "rabbitmq: port $URL_SHOW is open but 'rabbitmqctl await_startup' did not succeed"
            return 1
        fi
    fi
    echo "rabbitmq: up ($URL_SHOW; started)"
}

# ---------------------------------------------------------------------------- redis
ensure_redis() {
    local url="${GATEHOUSE_REDIS_URL:-redis://127.0.0.1:6379}"
    parse_url "$url" 6379 || { echo "redis: bad GATEHOUSE_REDIS_URL"; return 1; }
    if tcp_open "$URL_HOST" "$URL_PORT"; then
        echo "redis: up ($URL_SHOW)"
        return 0
    fi
    if ! is_local "$URL_HOST"; then
        echo "redis: UNREACHABLE at $URL_SHOW (remote host: not starting anything)"
        return 1
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server || { echo "redis: install failed"; return 1; }
    fi
    note "redis: starting (redis-server --daemonize yes) ..."
    mkdir -p /tmp/gatehouse-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port "$URL_PORT" --save "" \
        --appendonly no --dir /tmp/gatehouse-redis \
        --logfile /tmp/gatehouse-redis/redis.log >/dev/null 2>&1 </dev/null || true
    for _ in $(seq 1 50); do
        if tcp_open "$URL_HOST" "$URL_PORT"; then
            echo "redis: up ($URL_SHOW; started)"
            return 0
        fi
        sleep 0.2
    done
    echo "redis: UNREACHABLE at $URL_SHOW after starting it"
    return 1
}

rc=0
ensure_postgres || rc=1
ensure_rabbitmq || rc=1
ensure_redis || rc=1
exit "$rc"
