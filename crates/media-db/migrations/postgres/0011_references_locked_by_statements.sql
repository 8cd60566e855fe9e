-- The references of media and thumbnails to their blobs, and of thumbnails to their
-- media, are kept by the statements that write and delete rows, not by foreign keys (SQLite keeps its foreign keys: its checks
-- cost nothing measurable there, and one writer at a time needs no locks).
--
-- PostgreSQL checks a foreign key once per written or deleted row, each check a statement
-- of its own run by a trigger: a purge's deletion of blobs spent two-thirds of its time in
-- them (about 30 µs a deleted blob, for a look-up its own `NOT EXISTS` had just made),
-- its deletion of media half (15 µs a media, for thumbnails it had just deleted), and an
-- import 15 µs a media. What the keys did, the statements now do in sets:
-- - a writer locks the existing blob rows its media and thumbnails use (`FOR KEY SHARE`,
--   one statement per batch) and finds a row gone when a deletion got there first;
-- - a deletion locks the blob rows it may free (`FOR UPDATE`, waiting for those writers)
--   before it checks, in a statement of its own, that nothing references them;
-- - a writer adding thumbnails to a media it did not insert locks the media's row
--   (`FOR KEY SHARE`), and a deletion deletes media before their thumbnails, so that
--   it waits for such a writer and then deletes the thumbnails it added.
-- - datastore rows are never deleted, and their IDs come from registering them: the keys
--   from blobs and queued deletions to them guarded nothing a lock would, and cost 7 µs
--   for each blob an import records and each object a purge queues.
-- `media_admin check` reports rows whose blob, media or datastore row is missing.
ALTER TABLE media DROP CONSTRAINT media_sha256_fkey;
ALTER TABLE thumbnails DROP CONSTRAINT thumbnails_sha256_fkey;
ALTER TABLE thumbnails DROP CONSTRAINT thumbnails_origin_media_id_fkey;
ALTER TABLE blobs DROP CONSTRAINT blobs_datastore_id_fkey;
ALTER TABLE pending_deletions DROP CONSTRAINT pending_deletions_datastore_id_fkey;
