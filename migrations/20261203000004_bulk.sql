-- Bulk work (issue 13): files, jobs from files with per-line errors, the OpenAI Batch API,
-- cancel and retry, retention, chained jobs.

-- Jobs: cancel (cancelling while in-flight chunks finish), children of retried jobs, purge.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelling', 'cancelled'));
ALTER TABLE jobs
    ADD COLUMN cancelled integer NOT NULL DEFAULT 0 CHECK (cancelled >= 0),
    ADD COLUMN cancelled_at timestamptz,
    ADD COLUMN parent_job_id uuid REFERENCES jobs (job_id) ON DELETE SET NULL,
    ADD COLUMN input_file_id uuid,
    -- Lines of the input refused as invalid (on_invalid = skip); listed in job_line_errors.
    ADD COLUMN invalid_lines integer NOT NULL DEFAULT 0,
    -- When retention deleted the job's texts and results (the row and its counts stay).
    ADD COLUMN purged_at timestamptz;
ALTER TABLE jobs DROP CONSTRAINT jobs_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_counts_check CHECK (succeeded + failed + cancelled <= total);
CREATE INDEX jobs_created_idx ON jobs (created_at) WHERE purged_at IS NULL;

ALTER TABLE job_chunks DROP CONSTRAINT job_chunks_status_check;
ALTER TABLE job_chunks ADD CONSTRAINT job_chunks_status_check
    CHECK (status IN ('pending', 'done', 'dead', 'cancelled'));

-- The input line an item came from (jobs from files and NDJSON bodies).
ALTER TABLE job_items ADD COLUMN line_no integer;

-- Lines refused by per-line validation (on_invalid = skip): line number, field, reason.
CREATE TABLE job_line_errors (
    job_id    uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL,
    line_no   integer NOT NULL,
    field     text,
    code      text NOT NULL,
    message   text NOT NULL,
    PRIMARY KEY (job_id, line_no)
);

-- Retention per tenant (NULL: GATEHOUSE_DEFAULT_RETENTION_DAYS).
ALTER TABLE tenants ADD COLUMN retention_days integer CHECK (retention_days BETWEEN 1 AND 3650);

-- Files (OpenAI Files API): uploads, stored in 1 MiB parts; and batch outputs, rendered from
-- the job's results on read (no parts).
CREATE TABLE files (
    file_id       uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (tenant_id),
    purpose       text NOT NULL,
    filename      text NOT NULL,
    kind          text NOT NULL DEFAULT 'upload'
                  CHECK (kind IN ('upload', 'batch_output', 'batch_error')),
    bytes         bigint NOT NULL DEFAULT 0,
    lines         integer NOT NULL DEFAULT 0,
    sha256        bytea,
    source_job_id uuid REFERENCES jobs (job_id) ON DELETE CASCADE,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE INDEX files_tenant_idx ON files (tenant_id, file_id DESC);

CREATE TABLE file_parts (
    file_id   uuid NOT NULL REFERENCES files (file_id) ON DELETE CASCADE,
    part_no   integer NOT NULL,
    tenant_id uuid NOT NULL,
    data      bytea NOT NULL,
    PRIMARY KEY (file_id, part_no)
);

-- OpenAI Batch API: a batch is a job from a file, with OpenAI's envelope.
CREATE TABLE batches (
    batch_id          uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (tenant_id),
    job_id            uuid REFERENCES jobs (job_id) ON DELETE SET NULL,
    endpoint          text NOT NULL,
    completion_window text NOT NULL,
    metadata          jsonb,
    input_file_id     uuid NOT NULL,
    output_file_id    uuid,
    error_file_id     uuid,
    -- Validation failed: the reason (status `failed`, no job).
    errors            jsonb,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batches_tenant_idx ON batches (tenant_id, batch_id DESC);

GRANT SELECT, INSERT, UPDATE, DELETE ON job_line_errors, files, file_parts, batches TO gatehouse_app;
GRANT DELETE ON job_items, job_results TO gatehouse_app;

ALTER TABLE job_line_errors ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON job_line_errors
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());
ALTER TABLE files ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON files
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());
ALTER TABLE file_parts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON file_parts
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());
ALTER TABLE batches ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON batches
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());
