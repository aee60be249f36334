-- One typed job contract (issue 10): results move out of `job_items` into an insert-only
-- table written once per chunk by one statement, in a compact encoding rendered on read.

CREATE TABLE job_results (
    job_id        uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    item_index    integer NOT NULL,
    tenant_id     uuid NOT NULL,
    chunk_index   integer NOT NULL,
    status        text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    -- A success: one tag byte + postcard (common/src/job/result.rs); NULL for a failure.
    result        bytea,
    -- Results stored by versions before this one, as they were.
    legacy_result jsonb,
    error         jsonb,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, item_index)
);

-- The models that judged a chunk (name, sha256, ref, label order): how its stored scores
-- are read. Written with the chunk's results.
ALTER TABLE job_chunks ADD COLUMN models jsonb;

INSERT INTO job_results (job_id, item_index, tenant_id, chunk_index, status, legacy_result,
                         error, processed_at)
SELECT i.job_id, i.item_index, i.tenant_id, c.chunk_index, i.status, i.result, i.error,
       coalesce(i.processed_at, now())
FROM job_items i
JOIN job_chunks c
  ON c.job_id = i.job_id AND i.item_index >= c.item_start AND i.item_index < c.item_end
WHERE i.status <> 'pending';

-- Inputs only from now on: written once at submission.
ALTER TABLE job_items
    DROP COLUMN status,
    DROP COLUMN result,
    DROP COLUMN error,
    DROP COLUMN processed_at;

GRANT SELECT, INSERT, DELETE ON job_results TO gatehouse_app;
ALTER TABLE job_results ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON job_results
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());
