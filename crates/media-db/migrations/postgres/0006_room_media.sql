-- Which rooms hold which media (import_synapse --include rooms, from Synapse's events):
-- what `media_admin purge room` and `quarantine room` select. A row records a reference
-- seen in a room's events, whether or not the repository holds the media (a purge
-- removes media, not the record of where they were posted).
-- Keyed room first (a room's media); the second index answers "which rooms hold this
-- media".
-- Keep columns identical in ../sqlite and ../postgres.

CREATE TABLE room_media (
    room_id TEXT NOT NULL,
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    PRIMARY KEY (room_id, origin, media_id)
);

CREATE INDEX room_media_by_media ON room_media (origin, media_id, room_id);
