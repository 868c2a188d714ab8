DROP POLICY resource_isolation ON working_memory_versions;
DROP POLICY resource_isolation ON working_memory;
DROP POLICY resource_isolation ON summary_jobs;
DROP POLICY resource_isolation ON thread_summaries;
