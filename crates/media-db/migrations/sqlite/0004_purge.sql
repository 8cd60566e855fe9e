-- What purges leave behind (media_admin purge).
-- reserved_media: media IDs of our own servers that were purged, never to be issued or
-- imported again (a purged local media stays gone, as in matrix-media-repo).
-- blocked_hashes: the bytes of purged quarantined media, refused by every import as if
-- a quarantined media still held them.
-- Keep columns identical to ../postgres.

CREATE TABLE reserved_media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    reserved_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id)
);

CREATE TABLE blocked_hashes (
    sha256 TEXT PRIMARY KEY NOT NULL,
    reason TEXT NOT NULL,
    blocked_ts BIGINT NOT NULL
);
