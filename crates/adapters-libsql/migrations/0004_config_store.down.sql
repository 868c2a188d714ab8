-- Children first: foreign keys are enforced.
DROP TABLE config_settings;
DROP TABLE config_agent_tools;
DROP TABLE config_agents;
DROP TABLE config_tools;
DROP TABLE config_models;
