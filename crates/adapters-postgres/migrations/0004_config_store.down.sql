-- Children first: the foreign keys hold. The policies go with their tables.
DROP TABLE config_settings;
DROP TABLE config_agent_tools;
DROP TABLE config_agents;
DROP TABLE config_tools;
DROP TABLE config_models;
