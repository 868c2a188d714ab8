DROP TABLE workflow_events;
DROP TABLE workflow_steps;
DROP TABLE workflows;
