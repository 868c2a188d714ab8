-- An agent's workflow runner (issue 16): `RunnerSpec` as JSON text
-- (`{"kind": "http", "url": …}`, `{"kind": "openai"}`, `{"kind": "noop"}`),
-- NULL when unset. A workflow step that names no runner of its own runs
-- with its agent's, else with `workflows.default_runner`.
ALTER TABLE config_agents ADD COLUMN runner TEXT;
