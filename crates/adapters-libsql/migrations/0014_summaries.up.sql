-- Thread summaries (issue 13): versioned, incremental, never altering a
-- message. Each version records the last message seq it covers
-- (`covers_through`) and how many messages all versions folded in so far
-- (`covered_messages`), so the next version folds only newer messages into
-- it. Versions are kept; the newest is the current one. A rowid table (a
-- summary is up to 64 KiB, too large for a WITHOUT ROWID row); the unique
-- index is the key a save's `ON CONFLICT (thread_id, version) DO NOTHING`
-- races on, and the newest-first read.
--
-- `summary_jobs`: at most one durable job per thread, due at `due_at`,
-- leased to a worker until `leased_until`, retried with backoff
-- (`attempts`, `last_error`); `requests` counts the asks while it was
-- queued, so a worker removes it only if none came after it read it.
--
-- Both reach their tenant through their thread and go with it: the foreign
-- keys cascade when the sweeper removes the thread row (a thread marked
-- deleted is already missing for every query, which joins `threads`).
-- Conventions of migration 1: ids are 16-byte BLOBs, times INTEGER
-- microseconds since the Unix epoch. Version 14 on both backends (11–13 are
-- other parts' numbers).

CREATE TABLE thread_summaries (
    rowid            INTEGER PRIMARY KEY,
    thread_id        BLOB    NOT NULL REFERENCES threads (id) ON DELETE CASCADE
                             CHECK (typeof(thread_id) = 'blob' AND length(thread_id) = 16),
    version          INTEGER NOT NULL CHECK (version > 0),
    text             TEXT    NOT NULL,
    covers_through   INTEGER NOT NULL CHECK (covers_through >= 0),
    covered_messages INTEGER NOT NULL CHECK (covered_messages >= 0),
    summarizer       TEXT    NOT NULL,
    created_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX thread_summaries_version ON thread_summaries (thread_id, version);

CREATE TABLE summary_jobs (
    thread_id    BLOB    NOT NULL PRIMARY KEY REFERENCES threads (id) ON DELETE CASCADE
                         CHECK (typeof(thread_id) = 'blob' AND length(thread_id) = 16),
    due_at       INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error   TEXT,
    leased_until INTEGER,
    requests     INTEGER NOT NULL DEFAULT 1 CHECK (requests > 0),
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;
-- Claims read the earliest due jobs.
CREATE INDEX summary_jobs_due ON summary_jobs (due_at, thread_id);
