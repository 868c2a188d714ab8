-- Fewer B-trees per trace (issue 17: ingest), as on libSQL (see its
-- 0026_lean_traces.up.sql): a span's events move into its row as a JSON
-- array (`events`, NULL when it has none) of `{"time_ns", "name",
-- "attributes", "dropped_attributes"}` in the span's order, and obs_events
-- goes; obs_traces trades its service, status and end indexes for a partial
-- index of failed traces by start time.

ALTER TABLE obs_spans ADD COLUMN events json;

UPDATE obs_spans s SET events = e.events
FROM (
    SELECT tenant, trace_id, span_id,
           json_agg(json_build_object('time_ns', time_ns, 'name', name, 'attributes', attributes,
                                      'dropped_attributes', dropped_attributes) ORDER BY idx) AS events
    FROM obs_events
    GROUP BY tenant, trace_id, span_id
) e
WHERE s.tenant = e.tenant AND s.trace_id = e.trace_id AND s.span_id = e.span_id;

DROP TABLE obs_events;

DROP INDEX obs_traces_service;
DROP INDEX obs_traces_status;
DROP INDEX obs_traces_end;
CREATE INDEX obs_traces_errors ON obs_traces (tenant, start_ns, trace_id) WHERE status = 'error';
