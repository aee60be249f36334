-- Tenant moderation policies: thresholds, enabled categories, PII rule level and blocklist.
-- Append-only: every change a tenant admin makes is the next `version`; a job records the
-- version current when it was accepted, so its results (and any redelivery) are judged by
-- exactly that policy. No row = version 0, the built-in default.
CREATE TABLE moderation_policies (
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    version     integer NOT NULL CHECK (version > 0),
    policy      jsonb NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, version)
);

ALTER TABLE jobs ADD COLUMN policy_version integer NOT NULL DEFAULT 0 CHECK (policy_version >= 0);

GRANT SELECT, INSERT ON moderation_policies TO gatehouse_app;

ALTER TABLE moderation_policies ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON moderation_policies
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());
