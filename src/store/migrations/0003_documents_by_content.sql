-- Finding the documents that hold a blob (deletes, the orphan sweep) by its hash alone: the
-- UNIQUE (collection_id, sha256) index cannot answer that without a scan.
CREATE INDEX documents_sha256 ON documents (sha256);
