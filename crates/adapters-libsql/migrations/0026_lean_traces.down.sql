DROP INDEX obs_traces_errors;
CREATE INDEX obs_traces_service ON obs_traces (tenant, service, start_ns, trace_id) WHERE service IS NOT NULL;
CREATE INDEX obs_traces_status ON obs_traces (tenant, status, start_ns, trace_id);
CREATE INDEX obs_traces_end ON obs_traces (end_ns);

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

INSERT INTO obs_events (tenant, trace_id, span_id, idx, time_ns, name, attributes, dropped_attributes)
SELECT s.tenant, s.trace_id, s.span_id, e.key, e.value ->> 'time_ns', e.value ->> 'name',
       e.value -> 'attributes', e.value ->> 'dropped_attributes'
FROM obs_spans s, json_each(s.events) e
WHERE s.events IS NOT NULL;

ALTER TABLE obs_spans DROP COLUMN events;
