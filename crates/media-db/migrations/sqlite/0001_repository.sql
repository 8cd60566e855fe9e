-- Our media repository, first version (SQLite). Keep columns identical to ../postgres.

CREATE TABLE datastores (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uri TEXT NOT NULL UNIQUE,
    created_ts BIGINT NOT NULL
);

-- One row per distinct content. The database decides dedup: sha256 is the key.
CREATE TABLE blobs (
    sha256 TEXT PRIMARY KEY NOT NULL,
    size_bytes BIGINT NOT NULL,
    datastore_id BIGINT NOT NULL REFERENCES datastores (id),
    location TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);

CREATE TABLE media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    sha256 TEXT NOT NULL REFERENCES blobs (sha256),
    upload_name TEXT,
    content_type TEXT,
    user_id TEXT,
    size_bytes BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    last_access_ts BIGINT,
    quarantined BOOLEAN NOT NULL DEFAULT FALSE,
    quarantined_by TEXT,
    purpose TEXT NOT NULL DEFAULT 'none' CHECK (purpose IN ('none', 'pinned')),
    imported_from TEXT,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_user_id ON media (user_id, origin, media_id);

CREATE TABLE thumbnails (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL CHECK (method IN ('crop', 'scale')),
    content_type TEXT NOT NULL,
    animated BOOLEAN NOT NULL DEFAULT FALSE,
    sha256 TEXT NOT NULL REFERENCES blobs (sha256),
    size_bytes BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    UNIQUE (origin, media_id, width, height, method, content_type, animated),
    FOREIGN KEY (origin, media_id) REFERENCES media (origin, media_id)
);
CREATE INDEX thumbnails_sha256 ON thumbnails (sha256);

-- Append-only stream of quarantine changes, paged by stream_id.
CREATE TABLE quarantine_changes (
    stream_id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    quarantined BOOLEAN NOT NULL,
    ts BIGINT NOT NULL
);

-- Objects whose last reference is gone, deleted from their datastore after commit.
CREATE TABLE pending_deletions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    datastore_id BIGINT NOT NULL REFERENCES datastores (id),
    location TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    enqueued_ts BIGINT NOT NULL
);
CREATE INDEX pending_deletions_sha256 ON pending_deletions (sha256);

-- One row per run of a tool, for audit and resume.
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    started_ts BIGINT NOT NULL,
    finished_ts BIGINT,
    error TEXT,
    counters TEXT
);
