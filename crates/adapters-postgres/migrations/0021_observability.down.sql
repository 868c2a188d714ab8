DROP TABLE obs_metrics;
DROP TABLE obs_eval_examples;
DROP TABLE obs_eval_runs;
DROP TABLE obs_links;
DROP TABLE obs_events;
DROP TABLE obs_spans;
DROP TABLE obs_traces;
