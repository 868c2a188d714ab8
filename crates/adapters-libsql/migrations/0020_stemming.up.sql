-- Stemmed full text (issue 15): a word finds its other forms ("running"
-- finds "runs"), as the tantivy index and Postgres's text search do from
-- this version on. On REALTALK, stemming lifted BM25's recall@10 more than
-- any other change measured (docs/BENCHMARKS.md, "Retrieval evaluation").
--
-- FTS5 cannot change a table's tokenizer, and a contentless table cannot be
-- rebuilt from itself: the runner has dropped every tenant's table
-- (`lexical_fts_<id>`, named at run time) before this script, and the
-- catch-up makes each again, with the `porter` tokenizer, as it indexes
-- every message again from the start (as migration 5 did). Deleted
-- messages stay queued for removal (the in-process index may still hold
-- them); edited ones need no queue, their new text is indexed with the rest.
DELETE FROM lexical_stale WHERE reindex = 1;
UPDATE semantic_watermark SET caught_up_to = 0;
