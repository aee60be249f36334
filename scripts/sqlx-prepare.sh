#!/usr/bin/env bash
# The offline data of the compile-time checked queries (`sqlx::query!` / `query_as!`): one
# JSON file per query in .sqlx/, committed, so builds need no database (CI builds with
# SQLX_OFFLINE=true). Regenerate after changing a query or a migration:
#
#   bash scripts/sqlx-prepare.sh            # rewrite .sqlx/
#   bash scripts/sqlx-prepare.sh --check    # fail if .sqlx/ is stale (CI, `make lint`)
#
# How: migrations are applied to a throwaway database, the crates with query macros are
# re-checked against it with SQLX_OFFLINE_DIR set (the macros then write their data there),
# and the result replaces (or is compared with) .sqlx/. No sqlx-cli needed.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$REPO_ROOT"

MODE="${1:-write}"
SERVER="${GATEHOUSE_TEST_DATABASE_SERVER:-postgres://postgres@127.0.0.1:5432}"
DB="gh_sqlx_prepare_$$"
OUT="$(mktemp -d)"
log() { echo "[sqlx-prepare] $*" >&2; }
cleanup() {
    psql "$SERVER/postgres" -XAtqc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$OUT"
}
trap cleanup EXIT

command -v psql >/dev/null || { log "psql is required"; exit 2; }
psql "$SERVER/postgres" -XAtqc "CREATE DATABASE \"$DB\"" >/dev/null
# The table sqlx's migrator keeps (a migration grants on it).
psql "$SERVER/$DB" -XAtq -v ON_ERROR_STOP=1 -c "CREATE TABLE _sqlx_migrations (
    version bigint PRIMARY KEY, description text NOT NULL,
    installed_on timestamptz NOT NULL DEFAULT now(), success boolean NOT NULL,
    checksum bytea NOT NULL, execution_time bigint NOT NULL)" >/dev/null
for migration in migrations/*.sql; do
    psql "$SERVER/$DB" -XAtq -v ON_ERROR_STOP=1 -f "$migration" >/dev/null
done

# Force the macros to run again: touch every source file that holds one.
grep -rlE 'sqlx::query(_as|_scalar)?!' common/src api/src worker/src | xargs -r touch
log "checking the workspace against a fresh database ..."
DATABASE_URL="$SERVER/$DB" SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$OUT" \
    cargo check --workspace --all-targets --quiet
# The macros of the previous run are cached for unchanged files: restore determinism.
grep -rlE 'sqlx::query(_as|_scalar)?!' common/src api/src worker/src | xargs -r touch

if [[ "$MODE" == "--check" ]]; then
    if ! diff -r -q .sqlx "$OUT" >/dev/null 2>&1; then
        diff -r -q .sqlx "$OUT" >&2 || true
        log "ERROR: .sqlx/ is stale: run \`bash scripts/sqlx-prepare.sh\` and commit it"
        exit 1
    fi
    log ".sqlx/ is up to date ($(ls "$OUT" | wc -l) queries)"
else
    rm -rf .sqlx
    mkdir -p .sqlx
    cp "$OUT"/*.json .sqlx/ 2>/dev/null || true
    log "wrote .sqlx/ ($(ls .sqlx | wc -l) queries)"
fi
