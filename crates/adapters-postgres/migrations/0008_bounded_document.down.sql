-- Migration 2's definition again: documents over the tsvector limit fail
-- their write once more. Stored entries are kept as they are.
CREATE OR REPLACE FUNCTION memlayer_message_document(content text, tool_name text, tool_calls jsonb) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN to_tsvector('simple'::regconfig,
        content || ' ' || coalesce(tool_name, '') || ' ' || coalesce((
            SELECT string_agg(coalesce(c ->> 'name', '') || ' ' || coalesce(c ->> 'arguments', ''), ' ' ORDER BY i)
            FROM jsonb_array_elements(tool_calls) WITH ORDINALITY AS calls (c, i)), ''));
