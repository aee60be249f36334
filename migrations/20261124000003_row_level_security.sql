-- Isolation in depth: row-level security on every tenant-owned table.
--
-- The services connect as (or switch to) `gatehouse_app`, which owns nothing and cannot bypass
-- RLS. Each transaction says whose rows it may see with `SET LOCAL`-style settings:
--   gatehouse.tenant_id = '<uuid>'  → that tenant's rows only
--   gatehouse.platform  = 'on'      → every tenant (authentication look-ups, operator routes)
-- A query that forgets its tenant filter still cannot read or change another tenant's rows.

-- Tenant ids on item, chunk and rotation rows, so every policy is a plain column test.
ALTER TABLE job_items ADD COLUMN tenant_id uuid;
UPDATE job_items i SET tenant_id = j.tenant_id FROM jobs j WHERE j.job_id = i.job_id;
ALTER TABLE job_items ALTER COLUMN tenant_id SET NOT NULL;

ALTER TABLE job_chunks ADD COLUMN tenant_id uuid;
UPDATE job_chunks c SET tenant_id = j.tenant_id FROM jobs j WHERE j.job_id = c.job_id;
ALTER TABLE job_chunks ALTER COLUMN tenant_id SET NOT NULL;

ALTER TABLE key_rotations ADD COLUMN tenant_id uuid;
UPDATE key_rotations r SET tenant_id = k.tenant_id FROM api_keys k WHERE k.key_id = r.key_id;
ALTER TABLE key_rotations ALTER COLUMN tenant_id SET NOT NULL;

-- The application role (cluster-wide; several databases may race to create it).
DO $$
BEGIN
    CREATE ROLE gatehouse_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO gatehouse_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON
    tenants, api_keys, key_rotations, users, jobs, job_items, job_chunks, outbox,
    audit_events, signing_keys, login_failures
    TO gatehouse_app;
GRANT SELECT ON _sqlx_migrations TO gatehouse_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO gatehouse_app;

CREATE FUNCTION gatehouse_tenant() RETURNS uuid LANGUAGE sql STABLE AS
$$ SELECT nullif(current_setting('gatehouse.tenant_id', true), '')::uuid $$;
CREATE FUNCTION gatehouse_platform() RETURNS boolean LANGUAGE sql STABLE AS
$$ SELECT coalesce(current_setting('gatehouse.platform', true), '') = 'on' $$;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());

ALTER TABLE key_rotations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON key_rotations
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());

ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON jobs
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());

ALTER TABLE job_items ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON job_items
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());

ALTER TABLE job_chunks ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON job_chunks
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_events
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());
-- outbox, signing_keys and login_failures are system tables, not tenant-owned.
