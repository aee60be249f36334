-- Hardening (issue 9).

-- Login throttling reserves an attempt before verifying it; the account backoff needs the
-- time of the previous attempt, and addresses a user has logged in from are remembered so
-- the account backoff never locks the real user out.
ALTER TABLE login_failures ADD COLUMN last_attempt_at timestamptz;

CREATE TABLE login_known_addresses (
    user_subject    text NOT NULL,
    ip_subject      text NOT NULL,
    last_success_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_subject, ip_subject)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON login_known_addresses TO gatehouse_app;

-- Idempotency keys belong to the principal that sent them (key or user), not to the whole
-- tenant, and remember a hash of the request so a replay with another body is refused.
DROP INDEX jobs_idempotency_idx;
CREATE UNIQUE INDEX jobs_idempotency_idx ON jobs (tenant_id, created_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
ALTER TABLE jobs ADD COLUMN request_sha256 bytea;
