-- An agent's workflow runner (issue 16), version 18 on both backends (see
-- libSQL's 0018 for the why): `RunnerSpec` as a JSON object, NULL when unset.
ALTER TABLE config_agents ADD COLUMN runner jsonb CHECK (runner IS NULL OR jsonb_typeof(runner) = 'object');
