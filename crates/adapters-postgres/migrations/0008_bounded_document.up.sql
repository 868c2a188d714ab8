-- A message's full-text entry never fails its write. Postgres refuses a
-- tsvector over 1 MiB ("string is too long for tsvector": its distinct words
-- plus 2-4 bytes of bookkeeping and position each), which a 1 MiB message of
-- distinct words, or long tool-call arguments, can exceed; the append then
-- failed as a whole. Now a document that does not fit is indexed by its first
-- 200,000 characters (at most ~5 bytes of tsvector per character, so always
-- under the limit): the message is stored whole and searchable by that
-- prefix, as its embedding covers its first 256 tokens only. Documents that
-- fit are indexed whole, as before; the exception block (a subtransaction)
-- is entered only for documents longer than the prefix.
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
