-- Gatehouse foundation: tenants, API keys, jobs, their items and chunks, the outbox and the
-- audit log. Public ids are `<prefix>_<uuid simple>`; the tables keep the uuid.

CREATE TABLE tenants (
    tenant_id   uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The secret is never stored: only its SHA-256 (the secret has 256 bits of entropy, so a fast
-- hash is the right tool; passwords get argon2id in the identity slice).
CREATE TABLE api_keys (
    key_id        uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (tenant_id),
    name          text NOT NULL DEFAULT '',
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

CREATE TABLE jobs (
    job_id          uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (tenant_id),
    key_id          uuid REFERENCES api_keys (key_id),
    kind            text NOT NULL,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    options         jsonb NOT NULL DEFAULT '{}'::jsonb,
    idempotency_key text,
    total           integer NOT NULL CHECK (total > 0),
    succeeded       integer NOT NULL DEFAULT 0 CHECK (succeeded >= 0),
    failed          integer NOT NULL DEFAULT 0 CHECK (failed >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    completed_at    timestamptz,
    CHECK (succeeded + failed <= total)
);
CREATE INDEX jobs_tenant_created_idx ON jobs (tenant_id, created_at DESC);
CREATE UNIQUE INDEX jobs_idempotency_idx ON jobs (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- One row per submitted item, keyed by its position: a redelivered chunk can only ever
-- write the same rows, and only while they are still pending.
CREATE TABLE job_items (
    job_id       uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    item_index   integer NOT NULL CHECK (item_index >= 0),
    custom_id    text,
    input        text NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'succeeded', 'failed')),
    result       jsonb,
    error        jsonb,
    processed_at timestamptz,
    PRIMARY KEY (job_id, item_index)
);

-- A chunk is the unit of work on the queue: items [item_start, item_end).
-- `status` flips from pending exactly once, in the transaction that writes the results,
-- which is what makes redelivery harmless.
CREATE TABLE job_chunks (
    job_id          uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    chunk_index     integer NOT NULL CHECK (chunk_index >= 0),
    item_start      integer NOT NULL,
    item_end        integer NOT NULL CHECK (item_end > item_start),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'done', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    last_attempt_at timestamptz,
    completed_at    timestamptz,
    PRIMARY KEY (job_id, chunk_index)
);

-- Transactional outbox: written with the job, published by the relay with publisher
-- confirms, then stamped. Unstamped rows are republished (at-least-once).
CREATE TABLE outbox (
    outbox_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    routing_key  text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text
);
CREATE INDEX outbox_unpublished_idx ON outbox (outbox_id) WHERE published_at IS NULL;

CREATE TABLE audit_events (
    audit_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid REFERENCES tenants (tenant_id),
    actor       text NOT NULL,
    action      text NOT NULL,
    job_id      uuid REFERENCES jobs (job_id) ON DELETE CASCADE,
    chunk_index integer,
    outcome     text NOT NULL DEFAULT 'success',
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_tenant_idx ON audit_events (tenant_id, created_at DESC);
CREATE INDEX audit_events_job_idx ON audit_events (job_id) WHERE job_id IS NOT NULL;
-- One audit record per processed chunk, whatever the redeliveries.
CREATE UNIQUE INDEX audit_events_chunk_once_idx ON audit_events (job_id, chunk_index, action)
    WHERE chunk_index IS NOT NULL;
