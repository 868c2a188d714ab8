-- Stemmed full text (issue 15): a word finds its other forms ("running"
-- finds "runs"), as libSQL's FTS5 (`porter` tokenizer) and the tantivy
-- index do from this version on. On REALTALK, stemming lifted lexical
-- recall@10 more than any other change measured (docs/BENCHMARKS.md,
-- "Retrieval evaluation").
--
-- `memlayer_english` is the `simple` configuration (lowercased words, no
-- stop words dropped, as on the other backends) with every word stemmed by
-- the Snowball English stemmer. The built-in `english` configuration would
-- also drop stop words: a query of only such words would then find nothing
-- here and something on libSQL.
CREATE TEXT SEARCH DICTIONARY memlayer_english_stem (TEMPLATE = snowball, LANGUAGE = english);
CREATE TEXT SEARCH CONFIGURATION memlayer_english (COPY = simple);
ALTER TEXT SEARCH CONFIGURATION memlayer_english
    ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part WITH memlayer_english_stem;

-- Migration 8's document function with the stemming configuration, named
-- with its schema in the body: a PL/pgSQL body resolves names when it runs,
-- under the caller's search_path, which a restore (pg_dump sets an empty
-- one) does not share.
DO $migration$
BEGIN
    EXECUTE format($function$
CREATE OR REPLACE FUNCTION memlayer_message_document(content text, tool_name text, tool_calls jsonb) RETURNS tsvector
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    doc text := content || ' ' || coalesce(tool_name, '') || ' ' || coalesce((
        SELECT string_agg(coalesce(c ->> 'name', '') || ' ' || coalesce(c ->> 'arguments', ''), ' ' ORDER BY i)
        FROM jsonb_array_elements(tool_calls) WITH ORDINALITY AS calls (c, i)), '');
BEGIN
    IF length(doc) <= 200000 THEN
        RETURN to_tsvector(%1$L::regconfig, doc);
    END IF;
    BEGIN
        RETURN to_tsvector(%1$L::regconfig, doc);
    EXCEPTION WHEN program_limit_exceeded THEN
        RETURN to_tsvector(%1$L::regconfig, left(doc, 200000));
    END;
END
$$
$function$, format('%I.memlayer_english', current_schema()));
END
$migration$;

-- A query's words, stemmed by the same configuration (the search names no
-- configuration itself). A SQL-standard body binds the configuration when
-- it is created.
CREATE FUNCTION memlayer_text_query(words text) RETURNS tsquery
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN to_tsquery('memlayer_english'::regconfig, words);

-- Every stored document again (a table rewrite): a generated column is
-- computed when its row is written, not when its function changes.
ALTER TABLE messages DROP COLUMN document;
ALTER TABLE messages ADD COLUMN document tsvector
    GENERATED ALWAYS AS (memlayer_message_document(content, tool_name, tool_calls)) STORED;
CREATE INDEX messages_document ON messages USING gin (document);
