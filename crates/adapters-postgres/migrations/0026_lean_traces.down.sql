DROP INDEX obs_traces_errors;
CREATE INDEX obs_traces_service ON obs_traces (tenant, service, start_ns, trace_id) WHERE service IS NOT NULL;
CREATE INDEX obs_traces_status ON obs_traces (tenant, status, start_ns, trace_id);
CREATE INDEX obs_traces_end ON obs_traces (end_ns);

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
ALTER TABLE obs_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE obs_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON obs_events USING (memlayer_tenant_admits(tenant));
CREATE POLICY resource_isolation ON obs_events AS RESTRICTIVE USING ((SELECT memlayer_unbound()));

INSERT INTO obs_events (tenant, trace_id, span_id, idx, time_ns, name, attributes, dropped_attributes)
SELECT s.tenant, s.trace_id, s.span_id, e.ordinality - 1, (e.value ->> 'time_ns')::bigint, e.value ->> 'name',
       e.value -> 'attributes', (e.value ->> 'dropped_attributes')::bigint
FROM obs_spans s, json_array_elements(s.events) WITH ORDINALITY AS e(value, ordinality)
WHERE s.events IS NOT NULL;

ALTER TABLE obs_spans DROP COLUMN events;
