-- The trigger and tables first, then the full-text column and its function.
-- The `vector` extension stays: other objects (the vector index tables) may
-- use it, and dropping it needs a superuser.
DROP TRIGGER messages_enqueue_embeddings ON messages;
DROP FUNCTION memlayer_enqueue_embeddings();
DROP TABLE embedding_jobs;
DROP TABLE message_vectors;
ALTER TABLE messages DROP COLUMN document;
DROP FUNCTION memlayer_message_document(text, text, jsonb);
