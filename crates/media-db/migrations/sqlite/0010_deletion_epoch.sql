-- How many times queued deletions were acknowledged (their objects deleted), in one
-- row: every transaction that dequeues deleted objects adds one. A writer that checked
-- an object before its transaction, and records a new blob row for it, reads it before
-- the check and again in the transaction: if it moved, a drain may have deleted the
-- object in between (its queue entry is gone, so nothing else shows it), and the object
-- is checked again before the row is committed.
CREATE TABLE deletion_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
INSERT INTO deletion_epoch (id, epoch) VALUES (1, 0);
