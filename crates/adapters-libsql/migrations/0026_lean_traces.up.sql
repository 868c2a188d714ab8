-- Fewer B-trees per trace (issue 17: ingest). Every trace of an OTLP batch
-- dirtied a random leaf of each index of obs_traces and each event a random
-- leaf of obs_events, so a batch of 512 spans wrote ~1,175 pages to the WAL.
--
-- - A span's events move into its row, as a JSON array (`events`, NULL when
--   it has none) of `{"time_ns", "name", "attributes", "dropped_attributes"}`
--   in the span's order; obs_events goes. A trace's detail reads them with
--   its spans; nothing else read them.
-- - obs_traces loses its service, status and end indexes. Failed traces,
--   the status filter users reach for, get a partial index by start time;
--   the service filter and the other statuses walk the start index within
--   a bounded window per page, as the text filter does; retention finds the
--   traces that ended before the cutoff per tenant through the start index
--   (a trace ends no earlier than it starts).

ALTER TABLE obs_spans ADD COLUMN events TEXT;

UPDATE obs_spans SET events = (
    SELECT json_group_array(json_object(
               'time_ns', e.time_ns, 'name', e.name, 'attributes', json(e.attributes),
               'dropped_attributes', e.dropped_attributes) ORDER BY e.idx)
    FROM obs_events e
    WHERE e.tenant = obs_spans.tenant AND e.trace_id = obs_spans.trace_id AND e.span_id = obs_spans.span_id
)
WHERE EXISTS (
    SELECT 1 FROM obs_events e
    WHERE e.tenant = obs_spans.tenant AND e.trace_id = obs_spans.trace_id AND e.span_id = obs_spans.span_id
);

DROP TABLE obs_events;

DROP INDEX obs_traces_service;
DROP INDEX obs_traces_status;
DROP INDEX obs_traces_end;
CREATE INDEX obs_traces_errors ON obs_traces (tenant, start_ns, trace_id) WHERE status = 'error';
