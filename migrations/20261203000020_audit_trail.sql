-- An audit trail compliance can trust (issue 14):
--   * request context on every record (actor kind, user agent, request id, target, status);
--   * append-only for the application role: INSERT and SELECT only, and a trigger refuses
--     UPDATE, DELETE and TRUNCATE for everyone (the retention purge goes through one
--     SECURITY DEFINER function that only deletes what a signed anchor checkpoint covers);
--   * a hash chain per tenant (the platform's own records, tenant_id NULL, form one more
--     chain): a BEFORE INSERT trigger locks the chain's head row, so the sequence has no gaps
--     and no two writers on any replica can take the same number;
--   * Ed25519-signed checkpoints of the heads, and a per-tenant audit retention (≥ 90 days).

ALTER TABLE audit_events
    ADD COLUMN actor_kind  text NOT NULL DEFAULT 'system',
    ADD COLUMN user_agent  text,
    ADD COLUMN request_id  text,
    ADD COLUMN target_type text,
    ADD COLUMN target_id   text,
    ADD COLUMN status      smallint,
    ADD COLUMN seq         bigint,
    ADD COLUMN prev_hash   bytea,
    ADD COLUMN hash        bytea;

-- An audit record outlives what it names: no cascade may delete it.
ALTER TABLE audit_events DROP CONSTRAINT IF EXISTS audit_events_job_id_fkey;

-- The chain's content: a JSON array in a fixed order (jsonb's text form is canonical; the
-- timestamp is in epoch microseconds so the session's time zone cannot change it).
CREATE FUNCTION gatehouse_audit_canonical(a audit_events) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_array(
        a.audit_id, a.seq, a.tenant_id, a.actor, a.actor_kind, a.action, a.outcome, a.status,
        a.target_type, a.target_id, a.job_id, a.chunk_index, host(a.client_ip), a.user_agent,
        a.request_id, a.details,
        (extract(epoch FROM a.created_at) * 1000000)::int8
    )::text
$$;

CREATE FUNCTION gatehouse_audit_hash(prev bytea, a audit_events) RETURNS bytea
LANGUAGE sql STABLE AS $$
    SELECT sha256(coalesce(prev, ''::bytea) || convert_to(gatehouse_audit_canonical(a), 'UTF8'))
$$;

-- One row per chain: the last sequence number and hash. Locked by every insert of the chain
-- until its transaction ends.
CREATE TABLE audit_chain_heads (
    chain_id uuid PRIMARY KEY,
    seq      bigint NOT NULL,
    hash     bytea
);

-- Readable (never writable) by the application: checkpoints sign the heads.
GRANT SELECT ON audit_chain_heads TO gatehouse_app;

-- Existing records join their chain in insertion order.
DO $$
DECLARE
    r audit_events;
    head_seq bigint;
    head_hash bytea;
    chain uuid;
BEGIN
    FOR r IN SELECT * FROM audit_events ORDER BY audit_id LOOP
        chain := coalesce(r.tenant_id, '00000000-0000-0000-0000-000000000000'::uuid);
        SELECT h.seq, h.hash INTO head_seq, head_hash FROM audit_chain_heads h
            WHERE h.chain_id = chain;
        IF NOT FOUND THEN
            head_seq := 0;
            head_hash := NULL;
            INSERT INTO audit_chain_heads VALUES (chain, 0, NULL);
        END IF;
        r.seq := head_seq + 1;
        r.prev_hash := head_hash;
        r.hash := gatehouse_audit_hash(head_hash, r);
        UPDATE audit_events SET seq = r.seq, prev_hash = r.prev_hash, hash = r.hash
            WHERE audit_id = r.audit_id;
        UPDATE audit_chain_heads SET seq = r.seq, hash = r.hash WHERE chain_id = chain;
    END LOOP;
END
$$;

ALTER TABLE audit_events ALTER COLUMN seq SET NOT NULL, ALTER COLUMN hash SET NOT NULL;
CREATE UNIQUE INDEX audit_events_chain_idx ON audit_events (tenant_id, seq)
    WHERE tenant_id IS NOT NULL;
CREATE UNIQUE INDEX audit_events_platform_chain_idx ON audit_events (seq)
    WHERE tenant_id IS NULL;
CREATE INDEX audit_events_action_idx ON audit_events (tenant_id, action, audit_id);

-- Runs as the table owner (SECURITY DEFINER): the application role cannot touch the heads.
CREATE FUNCTION gatehouse_audit_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    chain uuid := coalesce(NEW.tenant_id, '00000000-0000-0000-0000-000000000000'::uuid);
    head record;
BEGIN
    SELECT seq, hash INTO head FROM audit_chain_heads WHERE chain_id = chain FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO audit_chain_heads VALUES (chain, 0, NULL) ON CONFLICT DO NOTHING;
        SELECT seq, hash INTO head FROM audit_chain_heads WHERE chain_id = chain FOR UPDATE;
    END IF;
    -- The per-chunk record is written once whatever the redeliveries: a duplicate is
    -- skipped here, under the head's lock, so it never takes (and wastes) a number.
    IF NEW.chunk_index IS NOT NULL AND EXISTS (
        SELECT 1 FROM audit_events
        WHERE job_id = NEW.job_id AND chunk_index = NEW.chunk_index AND action = NEW.action
    ) THEN
        RETURN NULL;
    END IF;
    NEW.seq := head.seq + 1;
    NEW.prev_hash := head.hash;
    NEW.hash := gatehouse_audit_hash(head.hash, NEW);
    UPDATE audit_chain_heads SET seq = NEW.seq, hash = NEW.hash WHERE chain_id = chain;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_events_chain BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION gatehouse_audit_chain();

-- Append-only, for every role: the purge function below is the only way out.
CREATE FUNCTION gatehouse_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('gatehouse.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION gatehouse_audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION gatehouse_audit_append_only();

REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM gatehouse_app;
GRANT SELECT, INSERT ON audit_events TO gatehouse_app;

-- Signed checkpoints: `periodic` ones of each chain's head, `anchor` ones written by the
-- purge at the last record it deletes (the chain's new start).
CREATE TABLE audit_checkpoints (
    checkpoint_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid REFERENCES tenants (tenant_id),
    seq           bigint NOT NULL,
    head_hash     bytea,
    kind          text NOT NULL CHECK (kind IN ('periodic', 'anchor')),
    key_id        text NOT NULL,
    signature     bytea NOT NULL CHECK (length(signature) = 64),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_checkpoints_tenant_idx ON audit_checkpoints (tenant_id, checkpoint_id);
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION gatehouse_audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION gatehouse_audit_append_only();
ALTER TABLE audit_checkpoints ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_checkpoints
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());
GRANT SELECT, INSERT ON audit_checkpoints TO gatehouse_app;

-- The checkpoint signing keys (Ed25519, separate from the JWT keys: see docs/ARCHITECTURE.md).
CREATE TABLE audit_signing_keys (
    key_id          text PRIMARY KEY,
    private_key_der bytea NOT NULL,
    public_key      bytea NOT NULL CHECK (length(public_key) = 32),
    created_at      timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT ON audit_signing_keys TO gatehouse_app;

-- Per-tenant audit retention (NULL: GATEHOUSE_AUDIT_RETENTION_DAYS); never below 90 days.
ALTER TABLE tenants ADD COLUMN audit_retention_days integer
    CHECK (audit_retention_days BETWEEN 90 AND 36500);

-- The purge: deletes a chain's records up to `through_seq` only if a signed anchor
-- checkpoint at exactly that record exists and every deleted record is at least 90 days old,
-- so the chain stays verifiable from its new start and nothing recent can be purged.
CREATE FUNCTION gatehouse_audit_purge(tenant uuid, through_seq bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    removed bigint;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM audit_checkpoints c JOIN audit_events a
          ON a.tenant_id = c.tenant_id AND a.seq = c.seq AND a.hash = c.head_hash
        WHERE c.tenant_id = tenant AND c.seq = through_seq AND c.kind = 'anchor'
    ) THEN
        RAISE EXCEPTION 'no anchor checkpoint at record % of tenant %', through_seq, tenant;
    END IF;
    IF EXISTS (
        SELECT 1 FROM audit_events
        WHERE tenant_id = tenant AND seq <= through_seq
          AND created_at > now() - interval '90 days'
    ) THEN
        RAISE EXCEPTION 'audit records younger than 90 days cannot be purged';
    END IF;
    PERFORM set_config('gatehouse.audit_purge', 'on', true);
    DELETE FROM audit_events WHERE tenant_id = tenant AND seq <= through_seq;
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('gatehouse.audit_purge', 'off', true);
    RETURN removed;
END
$$;
REVOKE ALL ON FUNCTION gatehouse_audit_purge(uuid, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gatehouse_audit_purge(uuid, bigint) TO gatehouse_app;

-- Key hygiene: the `key.rotation_due` webhook event is emitted once per key.
ALTER TABLE api_keys ADD COLUMN rotation_reminded_at timestamptz;
