-- The knowledge base: collections, their grants, documents, chunks, the ingestion queue and the
-- change log the derived indexes replay.
CREATE TABLE collections (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    description TEXT NOT NULL DEFAULT '',
    owner_id INTEGER NOT NULL REFERENCES users (id),
    embedding_model TEXT NOT NULL,
    dimensions INTEGER NOT NULL,
    language TEXT NOT NULL,
    -- The index_changes log of this collection is deleted up to here: an index holding less
    -- is rebuilt from the chunks table instead of replayed.
    log_compacted_upto INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE collection_grants (
    collection_id INTEGER NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    user_id INTEGER REFERENCES users (id) ON DELETE CASCADE,
    group_id INTEGER REFERENCES groups (id) ON DELETE CASCADE,
    access TEXT NOT NULL CHECK (access IN ('read', 'write')),
    CHECK ((user_id IS NULL) <> (group_id IS NULL))
);
CREATE UNIQUE INDEX collection_grants_user ON collection_grants (collection_id, user_id)
    WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX collection_grants_group ON collection_grants (collection_id, group_id)
    WHERE group_id IS NOT NULL;

CREATE TABLE documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    filename TEXT NOT NULL,
    title TEXT,
    format TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'extracting', 'embedding', 'indexed', 'failed')),
    error_reason TEXT,
    error TEXT,
    pages INTEGER,
    chunks INTEGER NOT NULL DEFAULT 0,
    uploaded_by INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (collection_id, sha256)
);
CREATE INDEX documents_status ON documents (status);

-- AUTOINCREMENT: chunk ids are the vector index's keys and must never be reused.
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    text TEXT NOT NULL,
    heading TEXT,
    page_start INTEGER,
    page_end INTEGER,
    char_start INTEGER NOT NULL,
    char_end INTEGER NOT NULL,
    vector BLOB NOT NULL,
    UNIQUE (document_id, seq)
);

-- What the derived indexes must apply, in order: 'add' a document's chunks, or 'remove' the
-- chunk ids listed (little-endian i64s), which no longer exist in `chunks`.
CREATE TABLE index_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL,
    document_id INTEGER NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('add', 'remove')),
    chunk_ids BLOB
);
CREATE INDEX index_changes_collection ON index_changes (collection_id, seq);
