-- Identity: tenant slugs, scopes and IP allowlists; scoped, expiring, rotatable API keys;
-- users with roles; JWT signing keys; login throttling.

ALTER TABLE tenants
    ADD COLUMN slug text,
    ADD COLUMN scopes text[] NOT NULL DEFAULT '{moderate}',
    ADD COLUMN ip_allowlist cidr[] NOT NULL DEFAULT '{}';
UPDATE tenants
SET slug = trim(both '-' FROM lower(regexp_replace(name, '[^a-zA-Z0-9]+', '-', 'g')))
           || '-' || substr(replace(tenant_id::text, '-', ''), 25, 8);
ALTER TABLE tenants
    ALTER COLUMN slug SET NOT NULL,
    ADD CONSTRAINT tenants_slug_key UNIQUE (slug),
    ADD CONSTRAINT tenants_slug_shape CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$');

ALTER TABLE api_keys
    ADD COLUMN scopes text[] NOT NULL DEFAULT '{moderate}',
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN created_by text NOT NULL DEFAULT 'cli',
    -- Rotation: the previous secret stays valid until previous_valid_until.
    ADD COLUMN previous_secret_sha256 bytea CHECK (length(previous_secret_sha256) = 32),
    ADD COLUMN previous_valid_until timestamptz,
    ADD COLUMN rotated_at timestamptz;

-- Replays of a rotation request with the same idempotency key return the same result.
CREATE TABLE key_rotations (
    key_id          uuid NOT NULL REFERENCES api_keys (key_id) ON DELETE CASCADE,
    idempotency_key text NOT NULL,
    secret_sha256   bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, idempotency_key)
);

-- Users of a tenant (admin, reviewer, guest) and platform operators (superadmin, no tenant).
CREATE TABLE users (
    user_id       uuid PRIMARY KEY,
    tenant_id     uuid REFERENCES tenants (tenant_id),
    username      text NOT NULL CHECK (length(username) BETWEEN 1 AND 100),
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('superadmin', 'admin', 'reviewer', 'guest')),
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'superadmin') = (tenant_id IS NULL))
);
CREATE UNIQUE INDEX users_tenant_username_idx ON users (tenant_id, lower(username)) WHERE tenant_id IS NOT NULL;
CREATE UNIQUE INDEX users_operator_username_idx ON users (lower(username)) WHERE tenant_id IS NULL;

-- Who submitted a job (`key_…` or `usr_…`): reviewers and keys read their own jobs.
ALTER TABLE jobs ADD COLUMN created_by text;
UPDATE jobs SET created_by = 'key_' || replace(key_id::text, '-', '') WHERE key_id IS NOT NULL;

-- JWT signing keys (Ed25519). New tokens use the newest active key; retired keys stop
-- verifying once retired_at has passed.
CREATE TABLE signing_keys (
    kid             text PRIMARY KEY,
    algorithm       text NOT NULL DEFAULT 'EdDSA',
    private_key_der bytea NOT NULL,
    public_key      bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    retired_at      timestamptz
);

-- Login throttling, shared by every api replica: failures per user and per client IP.
CREATE TABLE login_failures (
    subject      text PRIMARY KEY,
    failures     integer NOT NULL DEFAULT 0,
    window_start timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz
);

ALTER TABLE audit_events ADD COLUMN client_ip inet;
