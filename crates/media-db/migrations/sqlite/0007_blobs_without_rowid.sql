-- no-transaction
-- `blobs` keyed by its digest alone (WITHOUT ROWID): a look-up by digest, and a walk in
-- digest order (media_admin check merges a datastore's listing with it), reads one
-- B-tree instead of the primary key's index and then the table's row elsewhere; a new
-- blob is one insert instead of two. Same columns as before and as ../postgres.
-- SQLite's procedure for changing a table's form: rebuild it with foreign keys off (the
-- pragma is ignored inside a transaction, hence no-transaction), in one transaction;
-- the rows are copied unchanged, so every reference still holds. Run again after a
-- crash between the commit and sqlx's bookkeeping, it rebuilds the rebuilt table.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE blobs_keyed (
    sha256 TEXT PRIMARY KEY NOT NULL,
    size_bytes BIGINT NOT NULL,
    datastore_id BIGINT NOT NULL REFERENCES datastores (id),
    location TEXT NOT NULL,
    created_ts BIGINT NOT NULL
) WITHOUT ROWID;
INSERT INTO blobs_keyed (sha256, size_bytes, datastore_id, location, created_ts)
    SELECT sha256, size_bytes, datastore_id, location, created_ts FROM blobs ORDER BY sha256;
DROP TABLE blobs;
ALTER TABLE blobs_keyed RENAME TO blobs;
COMMIT;
PRAGMA foreign_keys = ON;
