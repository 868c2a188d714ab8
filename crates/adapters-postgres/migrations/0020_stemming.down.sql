-- Back to migration 8's unstemmed documents (the `simple` configuration),
-- every stored document computed again.
ALTER TABLE messages DROP COLUMN document;
CREATE OR REPLACE FUNCTION memlayer_message_document(content text, tool_name text, tool_calls jsonb) RETURNS tsvector
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    doc text := content || ' ' || coalesce(tool_name, '') || ' ' || coalesce((
        SELECT string_agg(coalesce(c ->> 'name', '') || ' ' || coalesce(c ->> 'arguments', ''), ' ' ORDER BY i)
        FROM jsonb_array_elements(tool_calls) WITH ORDINALITY AS calls (c, i)), '');
BEGIN
    IF length(doc) <= 200000 THEN
        RETURN to_tsvector('simple'::regconfig, doc);
    END IF;
    BEGIN
        RETURN to_tsvector('simple'::regconfig, doc);
    EXCEPTION WHEN program_limit_exceeded THEN
        RETURN to_tsvector('simple'::regconfig, left(doc, 200000));
    END;
END
$$;
ALTER TABLE messages ADD COLUMN document tsvector
    GENERATED ALWAYS AS (memlayer_message_document(content, tool_name, tool_calls)) STORED;
CREATE INDEX messages_document ON messages USING gin (document);
DROP FUNCTION memlayer_text_query(text);
DROP TEXT SEARCH CONFIGURATION memlayer_english;
DROP TEXT SEARCH DICTIONARY memlayer_english_stem;
