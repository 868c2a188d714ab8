-- Back to unstemmed full text: the runner has dropped every tenant's FTS5
-- table again, and the catch-up of the version before this one makes each
-- again with its own tokenizer (`unicode61 remove_diacritics 2`) as it
-- indexes every message from the start.
DELETE FROM lexical_stale WHERE reindex = 1;
UPDATE semantic_watermark SET caught_up_to = 0;
