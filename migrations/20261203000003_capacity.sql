-- Fair capacity between tenants (issue 11): quotas reserved at intake and settled at the end,
-- per-tenant limits and weights, the sync/bulk lanes, and fair release of bulk chunks.

-- Operator-set limits. A key present = set for this tenant (`null` = unlimited); a key absent
-- = the operator's default from the configuration.
--   quotas:      {"daily_items", "daily_characters",
--                 "per_kind": {"<kind>": {"daily_items", "daily_characters"}}}
--   rate_limits: {"requests_per_minute", "items_per_minute"}
ALTER TABLE tenants
    ADD COLUMN quotas jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN rate_limits jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN weight integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 100);

-- Per-key rate limits (null = only the tenant's apply).
ALTER TABLE api_keys ADD COLUMN rate_limits jsonb NOT NULL DEFAULT '{}'::jsonb;

-- What each tenant used per UTC day and kind. `items`/`characters` are reserved when a job is
-- accepted and refunded for items that failed or were cancelled, so they count what ran.
CREATE TABLE quota_usage (
    tenant_id    uuid NOT NULL REFERENCES tenants (tenant_id),
    day          date NOT NULL,
    kind         text NOT NULL,
    items        bigint NOT NULL DEFAULT 0 CHECK (items >= 0),
    characters   bigint NOT NULL DEFAULT 0 CHECK (characters >= 0),
    jobs         integer NOT NULL DEFAULT 0,
    failed_items bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, kind)
);
GRANT SELECT, INSERT, UPDATE ON quota_usage TO gatehouse_app;
ALTER TABLE quota_usage ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON quota_usage
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());

-- A job's lane (`sync`: the synchronous endpoints, published at once to the priority queues;
-- `bulk`: released fairly by the dispatcher), and what it reserved, so refunds go to the day
-- they were taken from.
ALTER TABLE jobs
    ADD COLUMN lane text NOT NULL DEFAULT 'bulk' CHECK (lane IN ('sync', 'bulk')),
    ADD COLUMN quota_day date,
    ADD COLUMN characters bigint NOT NULL DEFAULT 0;
CREATE INDEX jobs_active_idx ON jobs (tenant_id) WHERE status IN ('queued', 'running');

-- Bulk chunks are published by the dispatcher, not at submission: `released_at` is stamped
-- once the broker confirmed the message. Existing chunks were published through the outbox.
ALTER TABLE job_chunks ADD COLUMN released_at timestamptz;
UPDATE job_chunks SET released_at = coalesce(last_attempt_at, now());
CREATE INDEX job_chunks_unreleased_idx ON job_chunks (tenant_id, job_id, chunk_index)
    WHERE released_at IS NULL AND status = 'pending';
CREATE INDEX job_chunks_in_flight_idx ON job_chunks (tenant_id)
    WHERE released_at IS NOT NULL AND status = 'pending';

-- The replica-wide backlog bound needs every tenant's count; the application role sees one
-- tenant at a time (row-level security), so this one aggregate runs as the schema owner.
CREATE FUNCTION gatehouse_bulk_backlog() RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
$$ SELECT coalesce(sum(total - succeeded - failed), 0)::bigint
   FROM jobs WHERE status IN ('queued', 'running') AND lane = 'bulk' $$;
REVOKE ALL ON FUNCTION gatehouse_bulk_backlog() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gatehouse_bulk_backlog() TO gatehouse_app;
