DROP TABLE retention_leases;
DROP TABLE retention_runs;
DROP TABLE retention_policies;
