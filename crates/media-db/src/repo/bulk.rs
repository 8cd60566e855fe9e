//! Bulk loads into a SQLite repository: the secondary indexes set aside while an import
//! records many media, and built once at its end.
//!
//! Media IDs and digests are random, so every index of `media`, `thumbnails` and
//! `room_media` takes each new row at a random leaf. Once an index outgrows the page
//! cache, every row dirties a page of each of them, and each page goes to the
//! write-ahead log and again into the database: at a million media most of an import's
//! writes. Building an index after the load sorts its rows and writes it in order.
//!
//! Only non-unique secondary indexes are set aside (the keys that enforce uniqueness stay,
//! and an import looks media up by key only). Each is recorded in `deferred_indexes` with
//! its own `CREATE INDEX` statement, in the transaction that drops it; whatever is left
//! there (an import that was stopped) is built by the next [`crate::connect()`].

use sqlx::Row;

use super::Repository;
use crate::connect::Pool;
use crate::error::{DbError, QueryContext};

/// The tables whose secondary indexes a bulk load sets aside.
const BULK_TABLES: &str = "'media', 'thumbnails', 'room_media'";

impl Repository {
    /// Sets the secondary indexes of `media`, `thumbnails` and `room_media` aside for a
    /// load of `incoming` media, when the repository is SQLite (one writer: no other
    /// import shares it) and holds fewer media than that (the load at least doubles it,
    /// so building the indexes afterwards costs less than keeping them). Returns whether
    /// they were set aside; [`Repository::build_deferred_indexes`] builds them again.
    /// Queries that need them still run meanwhile, scanning instead.
    pub async fn defer_indexes_for_load(&self, incoming: u64) -> Result<bool, DbError> {
        let Pool::Sqlite(writer) = &self.writer else {
            return Ok(false);
        };
        let mut tx = writer
            .begin_with(self.begin_write())
            .await
            .during("begin a transaction")?;
        // The first `incoming` rows, counted no further than that.
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM (SELECT 1 FROM media LIMIT $1)")
            .bind(i64::try_from(incoming).unwrap_or(i64::MAX))
            .fetch_one(&mut *tx)
            .await
            .during("count media")?;
        if held as u64 >= incoming {
            return Ok(false);
        }
        let indexes = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL \
             AND tbl_name IN ({BULK_TABLES}) AND sql NOT LIKE 'CREATE UNIQUE%' ORDER BY name"
        )))
        .fetch_all(&mut *tx)
        .await
        .during("list the secondary indexes")?;
        for index in &indexes {
            let (name, sql): (String, String) = (index.get(0), index.get(1));
            sqlx::query("INSERT INTO deferred_indexes (name, sql) VALUES ($1, $2)")
                .bind(&name)
                .bind(&sql)
                .execute(&mut *tx)
                .await
                .during("record an index set aside")?;
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
                .execute(&mut *tx)
                .await
                .during("set an index aside")?;
        }
        tx.commit().await.during("commit setting indexes aside")?;
        Ok(!indexes.is_empty())
    }

    /// Builds every index a bulk load set aside, each in its own transaction with the
    /// removal of its record; returns how many. Nothing to do (one query) in a repository
    /// that has none set aside, and on PostgreSQL.
    pub async fn build_deferred_indexes(&self) -> Result<u64, DbError> {
        let Pool::Sqlite(writer) = &self.writer else {
            return Ok(0);
        };
        let deferred: Vec<(String, String)> =
            sqlx::query_as("SELECT name, sql FROM deferred_indexes ORDER BY name")
                .fetch_all(writer)
                .await
                .during("list the indexes set aside")?;
        if deferred.is_empty() {
            return Ok(0);
        }
        // The writer keeps its temporary files in memory (see `open_sqlite_writer`); an
        // index build's sort would hold every row of the table there. It sorts in
        // temporary files on the disk instead, for as long as it builds.
        set_temp_store(writer, "file").await?;
        let built = build_each(writer, &deferred).await;
        set_temp_store(writer, "memory").await?;
        built?;
        Ok(deferred.len() as u64)
    }
}

/// Sets where the SQLite writer keeps temporary files (`file` or `memory`).
async fn set_temp_store(writer: &sqlx::SqlitePool, store: &str) -> Result<(), DbError> {
    sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA temp_store = {store}")))
        .execute(writer)
        .await
        .during("choose where temporary files go")?;
    Ok(())
}

/// Builds each of `deferred` (name, statement) in its own transaction with the
/// removal of its record.
async fn build_each(
    writer: &sqlx::SqlitePool,
    deferred: &[(String, String)],
) -> Result<(), DbError> {
    for (name, sql) in deferred {
        let mut tx = writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .during("begin a transaction")?;
        sqlx::query(sqlx::AssertSqlSafe(sql.replacen(
            "CREATE INDEX",
            "CREATE INDEX IF NOT EXISTS",
            1,
        )))
        .execute(&mut *tx)
        .await
        .during("build an index set aside")?;
        sqlx::query("DELETE FROM deferred_indexes WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .during("forget an index built")?;
        tx.commit().await.during("commit an index built")?;
    }
    Ok(())
}
