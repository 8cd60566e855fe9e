-- The secondary indexes a bulk import into a SQLite repository set aside, to build
-- each once at its end (a sort, written in order) instead of inserting into each at a
-- random place for every media (at a million media, most of an import's writes): the
-- index's name and the statement that creates it, recorded in the transaction that
-- dropped it. Opening the repository builds whatever is left here (an import that was
-- stopped). SQLite only: PostgreSQL repositories take several importers at once.
CREATE TABLE deferred_indexes (
    name TEXT PRIMARY KEY NOT NULL,
    sql TEXT NOT NULL
);
