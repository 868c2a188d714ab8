-- Observability (issue 17): OpenTelemetry spans with their events and links,
-- the traces derived from them, evaluation runs with their examples, and the
-- server's system metric samples.
--
-- Conventions: the tenant first in every key; trace ids (and evaluation run
-- ids) 16-byte blobs; span ids their 8 bytes as a big-endian signed INTEGER;
-- span, event, trace and sample times INTEGER nanoseconds since the epoch
-- (OTLP's; bucketing is integer arithmetic on both backends); evaluation times
-- INTEGER microseconds as every other time of memlayer; JSON as text; booleans
-- 0/1.
--
-- Indexes, each serving one listing so its cost stays flat as data grows:
-- - obs_traces: keyset by start time and by duration, and per model, agent,
--   service and status by start time (partial where the column may be NULL);
--   by end time across tenants for retention;
-- - obs_spans: its key (tenant, trace, span) reads a trace's spans; the
--   partial covering index of model calls (spans with a model) serves model
--   performance and costs without touching other spans;
-- - events and links by their span (WITHOUT ROWID: read only by key).

CREATE TABLE obs_traces (
    tenant        TEXT    NOT NULL,
    trace_id      BLOB    NOT NULL CHECK (typeof(trace_id) = 'blob' AND length(trace_id) = 16),
    name          TEXT    NOT NULL,
    root_span_id  INTEGER,
    service       TEXT,
    root_status   TEXT    NOT NULL CHECK (root_status IN ('unset', 'ok', 'error')),
    status        TEXT    NOT NULL CHECK (status IN ('unset', 'ok', 'error')),
    start_ns      INTEGER NOT NULL,
    end_ns        INTEGER NOT NULL,
    duration_ns   INTEGER NOT NULL CHECK (duration_ns >= 0),
    span_count    INTEGER NOT NULL CHECK (span_count > 0),
    error_count   INTEGER NOT NULL CHECK (error_count >= 0),
    model         TEXT,
    agent         TEXT,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    UNIQUE (tenant, trace_id)
);
CREATE INDEX obs_traces_start ON obs_traces (tenant, start_ns, trace_id);
CREATE INDEX obs_traces_duration ON obs_traces (tenant, duration_ns, trace_id);
CREATE INDEX obs_traces_model ON obs_traces (tenant, model, start_ns, trace_id) WHERE model IS NOT NULL;
CREATE INDEX obs_traces_agent ON obs_traces (tenant, agent, start_ns, trace_id) WHERE agent IS NOT NULL;
CREATE INDEX obs_traces_service ON obs_traces (tenant, service, start_ns, trace_id) WHERE service IS NOT NULL;
CREATE INDEX obs_traces_status ON obs_traces (tenant, status, start_ns, trace_id);
CREATE INDEX obs_traces_end ON obs_traces (end_ns);

CREATE TABLE obs_spans (
    tenant               TEXT    NOT NULL,
    trace_id             BLOB    NOT NULL CHECK (typeof(trace_id) = 'blob' AND length(trace_id) = 16),
    span_id              INTEGER NOT NULL,
    parent_span_id       INTEGER,
    name                 TEXT    NOT NULL,
    kind                 TEXT    NOT NULL,
    start_ns             INTEGER NOT NULL,
    end_ns               INTEGER NOT NULL CHECK (end_ns >= start_ns),
    status_code          TEXT    NOT NULL,
    status_message       TEXT,
    trace_state          TEXT,
    attributes           TEXT    NOT NULL,
    resource             TEXT    NOT NULL,
    scope_name           TEXT,
    scope_version        TEXT,
    dropped_attributes   INTEGER NOT NULL,
    dropped_events       INTEGER NOT NULL,
    dropped_links        INTEGER NOT NULL,
    truncated_attributes INTEGER NOT NULL,
    model                TEXT,
    agent                TEXT,
    operation            TEXT,
    input_tokens         INTEGER,
    output_tokens        INTEGER,
    ttft_ns              INTEGER,
    error                INTEGER NOT NULL CHECK (error IN (0, 1)),
    PRIMARY KEY (tenant, trace_id, span_id)
);
CREATE INDEX obs_spans_calls ON obs_spans
    (tenant, start_ns, model, agent, operation, end_ns, input_tokens, output_tokens, ttft_ns, error, trace_id)
    WHERE model IS NOT NULL;

CREATE TABLE obs_events (
    tenant             TEXT    NOT NULL,
    trace_id           BLOB    NOT NULL,
    span_id            INTEGER NOT NULL,
    idx                INTEGER NOT NULL,
    time_ns            INTEGER NOT NULL,
    name               TEXT    NOT NULL,
    attributes         TEXT    NOT NULL,
    dropped_attributes INTEGER NOT NULL,
    PRIMARY KEY (tenant, trace_id, span_id, idx)
) WITHOUT ROWID;

CREATE TABLE obs_links (
    tenant             TEXT    NOT NULL,
    trace_id           BLOB    NOT NULL,
    span_id            INTEGER NOT NULL,
    idx                INTEGER NOT NULL,
    linked_trace_id    BLOB    NOT NULL,
    linked_span_id     INTEGER NOT NULL,
    trace_state        TEXT,
    attributes         TEXT    NOT NULL,
    dropped_attributes INTEGER NOT NULL,
    PRIMARY KEY (tenant, trace_id, span_id, idx)
) WITHOUT ROWID;

CREATE TABLE obs_eval_runs (
    tenant        TEXT    NOT NULL,
    id            BLOB    NOT NULL PRIMARY KEY CHECK (typeof(id) = 'blob' AND length(id) = 16),
    name          TEXT,
    model         TEXT,
    agent         TEXT,
    dataset       TEXT    NOT NULL,
    at            INTEGER NOT NULL,
    metrics       TEXT    NOT NULL,
    example_count INTEGER NOT NULL,
    metadata      TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    CHECK (model IS NOT NULL OR agent IS NOT NULL)
);
CREATE INDEX obs_eval_runs_at ON obs_eval_runs (tenant, at, id);
CREATE INDEX obs_eval_runs_dataset ON obs_eval_runs (tenant, dataset, at, id);
CREATE INDEX obs_eval_runs_model ON obs_eval_runs (tenant, model, at, id) WHERE model IS NOT NULL;
CREATE INDEX obs_eval_runs_agent ON obs_eval_runs (tenant, agent, at, id) WHERE agent IS NOT NULL;

CREATE TABLE obs_eval_examples (
    tenant   TEXT    NOT NULL,
    run_id   BLOB    NOT NULL REFERENCES obs_eval_runs (id) ON DELETE CASCADE,
    idx      INTEGER NOT NULL,
    input    TEXT    NOT NULL,
    expected TEXT,
    output   TEXT    NOT NULL,
    scores   TEXT    NOT NULL,
    PRIMARY KEY (tenant, run_id, idx)
) WITHOUT ROWID;

CREATE TABLE obs_metrics (
    name     TEXT    NOT NULL,
    instance TEXT    NOT NULL,
    at_ns    INTEGER NOT NULL,
    value    REAL    NOT NULL,
    PRIMARY KEY (name, instance, at_ns)
) WITHOUT ROWID;
CREATE INDEX obs_metrics_at ON obs_metrics (at_ns);
