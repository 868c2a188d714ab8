-- Context assembly (issue 13), version 15 on both backends.
--
-- `message_tokens`: a message's token count under an encoding other than
-- the one it was appended with (`o200k_base`, `cl100k_base`), stored the
-- first time context assembly needs it, so a long thread is never
-- tokenised again. A message's text never changes, so a count is written
-- once (the first write wins). Rows go with their message (the foreign key
-- cascades; `messages_id` is the unique index it refers to); the tenant is
-- reached through the message's thread, as for agent state.
CREATE TABLE message_tokens (
    message_id BLOB    NOT NULL REFERENCES messages (id) ON DELETE CASCADE
        CHECK (typeof(message_id) = 'blob' AND length(message_id) = 16),
    encoding   TEXT    NOT NULL CHECK (length(encoding) BETWEEN 1 AND 64),
    tokens     INTEGER NOT NULL CHECK (tokens >= 0),
    PRIMARY KEY (message_id, encoding)
) WITHOUT ROWID;

-- An agent's context options (`MemoryOptions::context`): JSON text, NULL when unset.
ALTER TABLE config_agents ADD COLUMN context TEXT;
