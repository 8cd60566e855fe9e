-- A datastore's identity: the marker it holds (a file .datastore-id in a folder), written
-- when the repository first records it. A repository recognises its datastore by this
-- marker wherever it is mounted, and refuses a datastore it does not know.
-- Keep columns identical to ../postgres.

ALTER TABLE datastores ADD COLUMN identity TEXT;
CREATE UNIQUE INDEX datastores_identity ON datastores (identity);
