-- Usage by server and by uploader (media_admin usage) in one pass over an index, with no
-- sort and no hash table: the media of each owner in digest order, their sizes at hand.
CREATE INDEX media_origin_sha256 ON media (origin, sha256, size_bytes);
CREATE INDEX media_user_sha256 ON media (user_id, sha256, size_bytes) WHERE user_id IS NOT NULL;
