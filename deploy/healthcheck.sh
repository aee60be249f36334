#!/usr/bin/env bash
# gatehouse-healthcheck [http://HOST:PORT/PATH]   (default: http://127.0.0.1:8080/readyz)
#
# Container healthcheck without curl/wget (the runtime image is debian:bookworm-slim):
# one HTTP/1.1 GET over bash's /dev/tcp; exit 0 on a 2xx status, 1 otherwise.
# Installed in the image as /usr/local/bin/gatehouse-healthcheck (see deploy/Dockerfile).
#   api:    gatehouse-healthcheck http://127.0.0.1:8080/readyz
#   worker: gatehouse-healthcheck http://127.0.0.1:9091/readyz
# Env: GATEHOUSE_HEALTHCHECK_TIMEOUT  seconds for connect + status line (default 5)
set -euo pipefail

url="${1:-http://127.0.0.1:8080/readyz}"
timeout_secs="${GATEHOUSE_HEALTHCHECK_TIMEOUT:-5}"

case "$url" in
    http://*) rest="${url#http://}" ;;
    *) echo "gatehouse-healthcheck: only http:// URLs are supported: $url" >&2; exit 2 ;;
esac
hostport="${rest%%/*}"
if [[ "$rest" == */* ]]; then path="/${rest#*/}"; else path="/"; fi
if [[ "$hostport" == *:* ]]; then
    host="${hostport%:*}"
    port="${hostport##*:}"
else
    host="$hostport"
    port=80
fi

if ! status_line="$(timeout "$timeout_secs" bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: gatehouse-healthcheck\r\nConnection: close\r\n\r\n" "$2" "$0" >&3
    IFS= read -r line <&3 || exit 1
    # Drain the rest (the server closes: Connection: close) so the socket closes cleanly.
    while IFS= read -r -t 1 _ <&3; do :; done
    printf "%s" "$line"
' "$host" "$port" "$path" 2>/dev/null)"; then
    echo "unhealthy: no HTTP response from $url" >&2
    exit 1
fi
status_line="${status_line%$'\r'}"

if [[ "$status_line" =~ ^HTTP/1\.[01]\ 2[0-9][0-9] ]]; then
    echo "healthy: $url -> $status_line"
    exit 0
fi
echo "unhealthy: $url -> ${status_line:-<empty>}" >&2
exit 1
