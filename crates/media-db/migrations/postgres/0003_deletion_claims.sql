-- A drain claims a batch of queued deletions (stamping claimed_ts) in a short
-- transaction, deletes the objects with no transaction open, then dequeues them. A
-- writer that records a blob again and finds its deletion claimed rolls back: the object
-- may be gone already. An entry left claimed by a drain that stopped is claimed again by
-- the next one.
-- Keep columns identical to ../sqlite.

ALTER TABLE pending_deletions ADD COLUMN claimed_ts BIGINT;
