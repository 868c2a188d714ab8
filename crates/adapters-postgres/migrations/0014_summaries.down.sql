DROP TABLE summary_jobs;
DROP TABLE thread_summaries;
