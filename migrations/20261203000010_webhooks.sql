-- Outbound webhooks (issue 12): tenant endpoints, one message per event (an outbox written in
-- the transaction of the state change it reports), one delivery per message × endpoint (its
-- retry state; the worker's delivery loop claims due ones), one attempt row per HTTP attempt.

CREATE TABLE webhook_endpoints (
    endpoint_id          uuid PRIMARY KEY,
    tenant_id            uuid NOT NULL REFERENCES tenants (tenant_id),
    url                  text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description          text NOT NULL DEFAULT '',
    -- Empty: every event type except the opt-in ones (`job.progress`).
    event_types          text[] NOT NULL DEFAULT '{}',
    enabled              boolean NOT NULL DEFAULT true,
    disabled_reason      text,
    disabled_at          timestamptz,
    -- Extra request headers: {"X-Name": "value"}.
    headers              jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Deliveries per second (NULL: unlimited); `rate_next_at` is the earliest time of the next
    -- one (deliveries are spaced 1/rate apart, on every worker).
    rate_limit_per_sec   integer CHECK (rate_limit_per_sec BETWEEN 1 AND 10000),
    rate_next_at         timestamptz,
    -- `whsec_…` signing secrets: version byte + AES-256-GCM nonce + ciphertext, or version 0
    -- + the plain secret when no GATEHOUSE_WEBHOOK_SECRET_KEY is configured
    -- (common/src/webhook/secret.rs). After a rotation the previous secret signs too until
    -- `previous_valid_until`.
    secret               bytea NOT NULL,
    previous_secret      bytea,
    previous_valid_until timestamptz,
    -- The first failed attempt since the last success: past GATEHOUSE_WEBHOOK_DISABLE_AFTER_SECS
    -- the endpoint is disabled.
    failing_since        timestamptz,
    created_by           text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant_idx ON webhook_endpoints (tenant_id, endpoint_id);

-- One row per event. `payload` is the exact body sent: {"type", "timestamp", "data"}.
-- `endpoint_id` set: the event goes to that endpoint only (a job naming its endpoint, a test
-- event). Rows are inserted by `job::store::complete` (job.completed, job.failed,
-- job.progress), `webhook::record_job_event` (job.cancelled), the delivery loop
-- (endpoint.disabled) and the api (test events); the trigger below fans them out.
CREATE TABLE webhook_messages (
    message_id  uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    event_type  text NOT NULL,
    endpoint_id uuid,
    job_id      uuid REFERENCES jobs (job_id) ON DELETE CASCADE,
    -- A test event (`POST …/test`): sent whatever the endpoint's event filter says.
    test        boolean NOT NULL DEFAULT false,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_messages_tenant_idx ON webhook_messages (tenant_id, message_id DESC);
CREATE INDEX webhook_messages_job_idx ON webhook_messages (job_id) WHERE job_id IS NOT NULL;
-- At most one progress event per job and instant, whatever the concurrency.
CREATE UNIQUE INDEX webhook_messages_progress_once_idx ON webhook_messages (job_id, created_at)
    WHERE event_type = 'job.progress';

CREATE TABLE webhook_deliveries (
    message_id       uuid NOT NULL REFERENCES webhook_messages (message_id) ON DELETE CASCADE,
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (endpoint_id) ON DELETE CASCADE,
    tenant_id        uuid NOT NULL,
    -- pending: (re)tried at next_attempt_at · succeeded: a 2xx · exhausted: every attempt of
    -- the schedule failed · failed: stopped early (endpoint disabled, 410)
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'succeeded', 'failed', 'exhausted')),
    -- HTTP attempts made (and refused ones), and the position in the retry schedule (a manual
    -- retry or a recovery starts the schedule again).
    attempts         integer NOT NULL DEFAULT 0,
    step             integer NOT NULL DEFAULT 0,
    -- When pending: when it is due. A worker claiming it moves this to the end of its lease,
    -- so the delivery of a worker that died is due again then.
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- Bumped by every claim: only the latest claimant may record the outcome.
    claims           integer NOT NULL DEFAULT 0,
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, status);

CREATE TABLE webhook_attempts (
    attempt_id      uuid PRIMARY KEY,
    message_id      uuid NOT NULL,
    endpoint_id     uuid NOT NULL,
    tenant_id       uuid NOT NULL,
    attempt         integer NOT NULL,
    url             text NOT NULL,
    -- succeeded (2xx), failed (any other answer, a timeout, a connection error), refused (not
    -- sent: SSRF rules, scheme)
    outcome         text NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'refused')),
    status_code     integer,
    duration_ms     integer NOT NULL,
    -- The first GATEHOUSE_WEBHOOK_RESPONSE_MAX_BYTES of the response body.
    response        text,
    error           text,
    -- When the next attempt is due (NULL: none).
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (message_id, endpoint_id)
        REFERENCES webhook_deliveries (message_id, endpoint_id) ON DELETE CASCADE
);
CREATE INDEX webhook_attempts_message_idx ON webhook_attempts (message_id, attempt_id DESC);

-- A job may name the one endpoint it notifies; its progress events are rate-limited per job.
ALTER TABLE jobs
    ADD COLUMN webhook_endpoint_id uuid,
    ADD COLUMN last_progress_event_at timestamptz;

-- Which events an endpoint's filter takes: the listed ones, or (empty) all but the opt-in ones.
CREATE FUNCTION gatehouse_webhook_subscribes(event_types text[], event_type text) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS
$$ SELECT CASE WHEN cardinality(event_types) = 0 THEN event_type <> 'job.progress'
               ELSE event_type = ANY (event_types) END $$;

-- Whether an event of the tenant has anyone to go to (events nobody receives are not stored).
CREATE FUNCTION gatehouse_webhook_wanted(tenant uuid, target uuid, event_type text)
    RETURNS boolean LANGUAGE sql STABLE AS
$$ SELECT EXISTS (SELECT 1 FROM webhook_endpoints e
                  WHERE e.tenant_id = tenant AND e.enabled
                    AND (target IS NULL OR e.endpoint_id = target)
                    AND gatehouse_webhook_subscribes(e.event_types, event_type)) $$;

-- RFC 3339 in UTC as the api writes timestamps (chrono: 0, 3 or 6 fraction digits, `Z`).
CREATE FUNCTION gatehouse_webhook_time(ts timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE AS
$$ SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
          || CASE WHEN extract(microseconds FROM ts)::bigint % 1000000 = 0 THEN ''
                  WHEN extract(microseconds FROM ts)::bigint % 1000 = 0
                      THEN '.' || to_char(ts AT TIME ZONE 'UTC', 'MS')
                  ELSE '.' || to_char(ts AT TIME ZONE 'UTC', 'US') END
          || 'Z' $$;

-- The Standard Webhooks payload.
CREATE FUNCTION gatehouse_webhook_payload(event_type text, at timestamptz, data jsonb)
    RETURNS jsonb LANGUAGE sql IMMUTABLE AS
$$ SELECT jsonb_build_object('type', event_type, 'timestamp', gatehouse_webhook_time(at),
                             'data', data) $$;

-- Fan-out: a message gets one delivery per enabled endpoint it is for, in the transaction that
-- wrote it, and wakes the delivery loops.
CREATE FUNCTION gatehouse_webhook_fan_out() RETURNS trigger LANGUAGE plpgsql AS
$$
BEGIN
    INSERT INTO webhook_deliveries (message_id, endpoint_id, tenant_id)
    SELECT NEW.message_id, e.endpoint_id, NEW.tenant_id
    FROM webhook_endpoints e
    WHERE e.tenant_id = NEW.tenant_id AND e.enabled
      AND (NEW.endpoint_id IS NULL OR e.endpoint_id = NEW.endpoint_id)
      AND (NEW.test OR gatehouse_webhook_subscribes(e.event_types, NEW.event_type));
    PERFORM pg_notify('gatehouse_webhook', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER webhook_messages_fan_out AFTER INSERT ON webhook_messages
    FOR EACH ROW EXECUTE FUNCTION gatehouse_webhook_fan_out();

GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_endpoints, webhook_deliveries TO gatehouse_app;
GRANT SELECT, INSERT, DELETE ON webhook_messages, webhook_attempts TO gatehouse_app;

ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_endpoints
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());
ALTER TABLE webhook_messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_messages
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_deliveries
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());
ALTER TABLE webhook_attempts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_attempts
    USING (gatehouse_platform() OR tenant_id = gatehouse_tenant())
    WITH CHECK (gatehouse_platform() OR tenant_id = gatehouse_tenant());
