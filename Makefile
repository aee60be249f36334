# Gatehouse developer tasks. `make` (or `make help`) lists them.
# Every GATEHOUSE_* / ORT_DYLIB_PATH variable already exported in the environment is passed
# through unchanged to the scripts, cargo and the binaries.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Compile-time checked queries read their committed offline data (.sqlx/), never a live
# database: `make sqlx-prepare` regenerates it, `make lint` checks it is current.
export SQLX_OFFLINE := true
API_BIN := target/debug/gatehouse-api
# Name prefix of the databases, queues and exchanges the tests create.
TEST_PREFIX ?= gh_test_

.PHONY: console console-screenshots
.PHONY: help services models build migrate demo stop test lint sqlx-prepare sqlx-check clean-test-data loadtest loadtest-fairness loadtest-bulk loadtest-webhooks bench-translate chaos chaos-short openapi fuzz-api

help: ## List the targets
	@echo "Gatehouse make targets:"
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z_-]+:.*## / { printf "  %-16s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

services: ## Make Postgres and RabbitMQ reachable (starts or installs them locally if needed)
	bash scripts/services.sh

models: ## Fetch ONNX Runtime and build every model into models/ (idempotent)
	bash scripts/fetch-onnxruntime.sh && bash scripts/build-models.sh && bash scripts/build-guard-model.sh && bash scripts/build-translation-models.sh && bash scripts/build-test-fixtures.sh

build: ## Build gatehouse-api and gatehouse-worker (debug)
	$(CARGO) build --workspace --bins

migrate: services build ## Create the database if missing and apply the migrations
	$(API_BIN) migrate

demo: services models build ## Run api + worker in the background and moderate samples/moderation.json
	bash scripts/build-console.sh >/dev/null  # the web console at /console
	bash scripts/demo.sh

stop: ## Stop the demo's api and worker
	bash scripts/stop.sh

test: services models ## Run the whole test suite (needs Postgres and RabbitMQ)
	bash scripts/python-env.sh >/dev/null  # the OpenAI interop test runs the pinned `openai` client
	bash scripts/build-console.sh >/dev/null && bash scripts/browser-env.sh >/dev/null  # the console's browser suite
	bash scripts/promtool.sh >/dev/null    # the dashboard and alert tests run promtool
	$(CARGO) test --workspace --all-targets

lint: ## rustfmt check, clippy with warnings denied, the Dockerfile checks, and .sqlx/ current
	$(CARGO) fmt --all -- --check && $(CARGO) clippy --workspace --all-targets -- -D warnings
	bash deploy/check-dockerfile.sh
	$(MAKE) --no-print-directory sqlx-check

sqlx-prepare: services ## Regenerate .sqlx/ (offline data of the compile-time checked queries)
	bash scripts/sqlx-prepare.sh

sqlx-check: services ## Fail if .sqlx/ is stale against the migrations
	bash scripts/sqlx-prepare.sh --check

clean-test-data: ## Drop leftover test databases and RabbitMQ queues/exchanges (gh_test_*)
	@n=0; \
	for db in $$(psql -h 127.0.0.1 -U postgres -d postgres -XAtqc \
	        "SELECT datname FROM pg_database WHERE starts_with(datname, '$(TEST_PREFIX)')"); do \
	    psql -h 127.0.0.1 -U postgres -d postgres -Xqc "DROP DATABASE \"$$db\" WITH (FORCE)" && n=$$((n + 1)); \
	done; \
	echo "postgres: dropped $$n $(TEST_PREFIX)* databases"
	@n=0; \
	for q in $$(rabbitmqctl -q list_queues name | grep '^$(TEST_PREFIX)' || true); do \
	    rabbitmqctl -q delete_queue "$$q" >/dev/null && n=$$((n + 1)); \
	done; \
	echo "rabbitmq: deleted $$n $(TEST_PREFIX)* queues"; \
	if command -v rabbitmqadmin >/dev/null 2>&1; then \
	    if ex="$$(rabbitmqadmin -q -f tsv list exchanges name 2>/dev/null)"; then \
	        n=0; \
	        for e in $$(printf '%s\n' "$$ex" | grep '^$(TEST_PREFIX)' || true); do \
	            rabbitmqadmin -q delete exchange name="$$e" >/dev/null && n=$$((n + 1)); \
	        done; \
	        echo "rabbitmq: deleted $$n $(TEST_PREFIX)* exchanges"; \
	    else \
	        echo "rabbitmq: exchanges skipped (rabbitmqadmin cannot reach the management API)"; \
	    fi; \
	fi

loadtest: ## Measure pipeline items/s against raw ONNX Runtime (starts the demo stack if needed)
	bash loadtest/run.sh

loadtest-fairness: ## Tenant B's sync p99 and small-job time, idle vs under tenant A's 20,000-item job
	bash loadtest/fairness.sh

loadtest-bulk: ## 100,000-line JSONL upload -> job -> results (MB/s, items/s, api RSS) and a 200 MB upload
	bash loadtest/bulk.sh
loadtest-webhooks: ## Webhook delivery lag (job completed -> webhook received) on an idle system, p50/p99
	bash loadtest/webhooks.sh

console: ## Build the web console into console/dist (npm ci + vite build; served at /console)
	bash scripts/build-console.sh

console-screenshots: services models ## Run the console's browser suite and refresh docs/screenshots/*.png
	bash scripts/build-console.sh >/dev/null && bash scripts/browser-env.sh >/dev/null
	CONSOLE_SCREENSHOTS_DIR="$(CURDIR)/docs/screenshots" $(CARGO) test -p gatehouse-api --test console the_console_works_in_a_real_browser

fuzz-api: services models build ## Schemathesis against a live stack (api + worker, private db/queues) from openapi.json
	bash scripts/fuzz-api.sh

openapi: ## Regenerate openapi.json (the OpenAPI 3.1 description) from the code
	$(CARGO) run -q -p gatehouse-api -- openapi > openapi.json

bench-translate: ## Greedy zh→en decode tokens/s: Rust engine (cargo bench, release) vs Python onnxruntime
	$(CARGO) bench -p gatehouse-worker --bench translate
	PY="$$(bash scripts/python-env.sh | tail -n 1)" && "$$PY" loadtest/translate.py --bench

.PHONY: loadtest-audit
loadtest-audit: ## Audit trail cost: sync moderation and a 10,000-item job, with vs without auditing
	bash loadtest/audit.sh

chaos: services build ## Chaos benchmark: a 20,000-item job + a file batch while workers are kill -9ed, the api aborts mid-submit, a webhook receiver goes down (loadtest/chaos)
	bash loadtest/chaos/run.sh

chaos-short: services build ## The CI form of the chaos benchmark (~1-2 min): same faults, 2,000 + 300 + 300 items
	bash loadtest/chaos/run.sh --short
