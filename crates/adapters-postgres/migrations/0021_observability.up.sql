-- Observability (issue 17), as on libSQL (migration 21 there): OpenTelemetry
-- spans with their events and links, the traces derived from them,
-- evaluation runs with their examples, and the server's system metric
-- samples.
--
-- Conventions: trace ids (and evaluation run ids) uuid, 16 bytes compared
-- bytewise like libSQL's blobs; span ids their 8 bytes as a big-endian
-- bigint; span, event, trace and sample times bigint nanoseconds since the
-- epoch (OTLP's; bucketing is integer arithmetic on both backends);
-- evaluation times timestamptz; attributes `json` (kept as sent: never
-- queried by key, only read back and searched as text); text compared
-- bytewise (`COLLATE "C"`).
--
-- Row-level security: every table but `obs_metrics` carries its tenant under
-- the same forced tenant policy as every other table, plus a restrictive
-- policy admitting no transaction bound to a resource (observability covers
-- the whole tenant; the API refuses such callers, and a query that forgot
-- to still sees nothing). `obs_metrics` holds the server's samples, no
-- tenant's: any transaction may read them, only one with `*` tenant access
-- (the sampler, retention) may write them.
--
-- Indexes as on libSQL; the model calls' index is partial and covering
-- (INCLUDE), so performance and costs read it alone.

CREATE TABLE obs_traces (
    tenant        text COLLATE "C" NOT NULL,
    trace_id      uuid             NOT NULL,
    name          text COLLATE "C" NOT NULL,
    root_span_id  bigint,
    service       text COLLATE "C",
    root_status   text             NOT NULL CHECK (root_status IN ('unset', 'ok', 'error')),
    status        text             NOT NULL CHECK (status IN ('unset', 'ok', 'error')),
    start_ns      bigint           NOT NULL,
    end_ns        bigint           NOT NULL,
    duration_ns   bigint           NOT NULL CHECK (duration_ns >= 0),
    span_count    bigint           NOT NULL CHECK (span_count > 0),
    error_count   bigint           NOT NULL CHECK (error_count >= 0),
    model         text COLLATE "C",
    agent         text COLLATE "C",
    input_tokens  bigint           NOT NULL,
    output_tokens bigint           NOT NULL,
    PRIMARY KEY (tenant, trace_id)
);
CREATE INDEX obs_traces_start ON obs_traces (tenant, start_ns, trace_id);
CREATE INDEX obs_traces_duration ON obs_traces (tenant, duration_ns, trace_id);
CREATE INDEX obs_traces_model ON obs_traces (tenant, model, start_ns, trace_id) WHERE model IS NOT NULL;
CREATE INDEX obs_traces_agent ON obs_traces (tenant, agent, start_ns, trace_id) WHERE agent IS NOT NULL;
CREATE INDEX obs_traces_service ON obs_traces (tenant, service, start_ns, trace_id) WHERE service IS NOT NULL;
CREATE INDEX obs_traces_status ON obs_traces (tenant, status, start_ns, trace_id);
CREATE INDEX obs_traces_end ON obs_traces (end_ns);

CREATE TABLE obs_spans (
    tenant               text COLLATE "C" NOT NULL,
    trace_id             uuid             NOT NULL,
    span_id              bigint           NOT NULL,
    parent_span_id       bigint,
    name                 text             NOT NULL,
    kind                 text             NOT NULL,
    start_ns             bigint           NOT NULL,
    end_ns               bigint           NOT NULL CHECK (end_ns >= start_ns),
    status_code          text             NOT NULL,
    status_message       text,
    trace_state          text,
    attributes           json             NOT NULL,
    resource             json             NOT NULL,
    scope_name           text,
    scope_version        text,
    dropped_attributes   bigint           NOT NULL,
    dropped_events       bigint           NOT NULL,
    dropped_links        bigint           NOT NULL,
    truncated_attributes bigint           NOT NULL,
    model                text COLLATE "C",
    agent                text COLLATE "C",
    operation            text COLLATE "C",
    input_tokens         bigint,
    output_tokens        bigint,
    ttft_ns              bigint,
    error                boolean          NOT NULL,
    PRIMARY KEY (tenant, trace_id, span_id)
);
CREATE INDEX obs_spans_calls ON obs_spans (tenant, start_ns)
    INCLUDE (model, agent, operation, end_ns, input_tokens, output_tokens, ttft_ns, error, trace_id)
    WHERE model IS NOT NULL;

CREATE TABLE obs_events (
    tenant             text COLLATE "C" NOT NULL,
    trace_id           uuid             NOT NULL,
    span_id            bigint           NOT NULL,
    idx                bigint           NOT NULL,
    time_ns            bigint           NOT NULL,
    name               text             NOT NULL,
    attributes         json             NOT NULL,
    dropped_attributes bigint           NOT NULL,
    PRIMARY KEY (tenant, trace_id, span_id, idx)
);

CREATE TABLE obs_links (
    tenant             text COLLATE "C" NOT NULL,
    trace_id           uuid             NOT NULL,
    span_id            bigint           NOT NULL,
    idx                bigint           NOT NULL,
    linked_trace_id    uuid             NOT NULL,
    linked_span_id     bigint           NOT NULL,
    trace_state        text,
    attributes         json             NOT NULL,
    dropped_attributes bigint           NOT NULL,
    PRIMARY KEY (tenant, trace_id, span_id, idx)
);

CREATE TABLE obs_eval_runs (
    tenant        text COLLATE "C" NOT NULL,
    id            uuid             NOT NULL PRIMARY KEY,
    name          text,
    model         text COLLATE "C",
    agent         text COLLATE "C",
    dataset       text COLLATE "C" NOT NULL,
    at            timestamptz      NOT NULL,
    metrics       json             NOT NULL,
    example_count bigint           NOT NULL,
    metadata      json             NOT NULL,
    created_at    timestamptz      NOT NULL,
    CHECK (model IS NOT NULL OR agent IS NOT NULL),
    UNIQUE (tenant, id)
);
CREATE INDEX obs_eval_runs_at ON obs_eval_runs (tenant, at, id);
CREATE INDEX obs_eval_runs_dataset ON obs_eval_runs (tenant, dataset, at, id);
CREATE INDEX obs_eval_runs_model ON obs_eval_runs (tenant, model, at, id) WHERE model IS NOT NULL;
CREATE INDEX obs_eval_runs_agent ON obs_eval_runs (tenant, agent, at, id) WHERE agent IS NOT NULL;

CREATE TABLE obs_eval_examples (
    tenant   text COLLATE "C" NOT NULL,
    run_id   uuid             NOT NULL,
    idx      bigint           NOT NULL,
    input    json             NOT NULL,
    expected json,
    output   json             NOT NULL,
    scores   json             NOT NULL,
    PRIMARY KEY (tenant, run_id, idx),
    FOREIGN KEY (tenant, run_id) REFERENCES obs_eval_runs (tenant, id) ON DELETE CASCADE
);

CREATE TABLE obs_metrics (
    name     text COLLATE "C" NOT NULL,
    instance text COLLATE "C" NOT NULL,
    at_ns    bigint           NOT NULL,
    value    double precision NOT NULL,
    PRIMARY KEY (name, instance, at_ns)
);
CREATE INDEX obs_metrics_at ON obs_metrics (at_ns);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['obs_traces', 'obs_spans', 'obs_events', 'obs_links', 'obs_eval_runs',
                             'obs_eval_examples'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (memlayer_tenant_admits(tenant))', t);
        EXECUTE format('CREATE POLICY resource_isolation ON %I AS RESTRICTIVE USING ((SELECT memlayer_unbound()))', t);
    END LOOP;
END
$$;

ALTER TABLE obs_metrics ENABLE ROW LEVEL SECURITY;
ALTER TABLE obs_metrics FORCE ROW LEVEL SECURITY;
CREATE POLICY read_by_any ON obs_metrics FOR SELECT USING (true);
CREATE POLICY write_all_tenants_only ON obs_metrics
    USING (current_setting('memlayer.tenant', true) = '*')
    WITH CHECK (current_setting('memlayer.tenant', true) = '*');
