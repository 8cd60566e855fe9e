//! Deleting media, and the deletion queue (DESIGN.md invariant 4): rows are deleted and
//! the objects nothing references any more are queued in one transaction; the objects
//! are deleted afterwards by a drain that holds no transaction while the datastore works:
//!
//! 1. **claim** a batch of queued entries in a short transaction (stamping
//!    `claimed_ts`), dropping at once those whose object a blob row points at again
//!    (same digest, datastore *and* location: a transfer queues the source object of a
//!    blob whose row now points at its copy, and that object must go);
//! 2. **delete** the claimed objects, with no transaction open, a few at a time;
//! 3. **acknowledge** the entries deleted, in a short transaction.
//!
//! A drain that stops anywhere leaves its unacknowledged entries queued, claimed, and the
//! next drain claims and deletes them again (a delete is idempotent). A writer that
//! records a blob again cancels its queued deletion in its own transaction, but finding
//! the deletion claimed it rolls back with [`DbError::BlobMissing`]: the object may be
//! gone already, so its bytes must be put again once the claim is acknowledged. A drain
//! that deleted the object and acknowledged it between the writer's look at the object
//! and its transaction leaves no entry to find; it moved the deletion epoch on, which the
//! writer reads before looking and again in its transaction, and looks again when it
//! moved (`repo::sql::cancel_deletions_in`).

use async_trait::async_trait;
use media_core::datastore::{BlobKey, Datastore, DeleteStatus};
use media_core::now_ms;
use media_core::records::MediaKey;

use super::Repository;
use super::sql::{LIVE_OBJECT, retrying_deadlocks};
use crate::connect::on_pool;
use crate::error::{DbError, QueryContext};
use crate::model::{DatastoreId, DeletedClaims, DeletedMedia, DrainReport, PendingDeletion};
use crate::roles::DeletionQueue;
use crate::rows::pending_deletion;

/// Queued deletions claimed (and acknowledged) per transaction of a drain.
const DRAIN_BATCH: i64 = 500;

/// Media keys (or digests, or queued objects) per statement of a deletion: 2,000 bound
/// values at most, far below both dialects' limits.
pub(crate) const KEYS_PER_STATEMENT: usize = 500;

/// Deletes the media `$keys` and their thumbnails in the open transaction `$conn` (of
/// `$dialect`), and in it removes the blob rows nothing references any more and queues
/// their objects (stamped `$ts`, and claimed at `$claimed` when it is `Some`: see
/// [`crate::Purge::purge_batch`]); evaluates to `Result<DeletedMedia, DbError>`. Set-based:
/// a few statements per [`KEYS_PER_STATEMENT`] media, not per media. A macro so that one
/// body serves both dialects' transaction types (and both
/// [`DeletionQueue::delete_media`] and the purges of [`crate::Purge`]).
macro_rules! delete_media_in {
    ($conn:expr, $dialect:expr, $keys:expr, $ts:expr, $claimed:expr) => {
        async {
            use $crate::repo::deletion::KEYS_PER_STATEMENT;
            use $crate::repo::sql::{placeholder_list, values_list};
            let keys: &[media_core::records::MediaKey] = $keys;
            $crate::repo::sql::reuse_key_lookup_plans_in!($conn, $dialect)?;
            let mut report = $crate::model::DeletedMedia::default();
            let mut candidates = std::collections::BTreeSet::new();
            // Which table goes first. PostgreSQL: the media, which waits for any writer
            // adding a thumbnail to one of them (it holds the media's row: see
            // `migrations/postgres/0011_…`); the thumbnails then deleted include what it
            // added. SQLite: the thumbnails, as its foreign key from them to their media
            // requires (its one writer never meets another).
            let thumbnails_first = $dialect != $crate::Dialect::Postgres;
            for chunk in keys.chunks(KEYS_PER_STATEMENT) {
                let key_list = values_list($dialect, chunk.len(), 2);
                for thumbnails in [thumbnails_first, !thumbnails_first] {
                    if thumbnails {
                        let sql = format!(
                            "DELETE FROM thumbnails WHERE (origin, media_id) IN \
                             (VALUES {key_list}) RETURNING sha256"
                        );
                        let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
                            .persistent(false);
                        for key in chunk {
                            query = query.bind(key.origin.as_str()).bind(key.media_id.as_str());
                        }
                        let thumbs = query.fetch_all($conn).await.during("delete thumbnails")?;
                        report.thumbnails += thumbs.len() as u64;
                        candidates.extend(thumbs);
                        continue;
                    }
                    let sql = format!(
                        "DELETE FROM media WHERE (origin, media_id) IN (VALUES {key_list}) \
                         RETURNING origin, media_id, sha256"
                    );
                    let mut query =
                        sqlx::query_as::<_, (String, String, String)>(sqlx::AssertSqlSafe(sql))
                            .persistent(false);
                    for key in chunk {
                        query = query.bind(key.origin.as_str()).bind(key.media_id.as_str());
                    }
                    let mut found = std::collections::HashSet::new();
                    for (origin, media_id, sha256) in
                        query.fetch_all($conn).await.during("delete media")?
                    {
                        candidates.insert(sha256);
                        found.insert((origin, media_id));
                    }
                    for key in chunk {
                        // `remove`: a key named twice is deleted once, then not found.
                        if found.remove(&(key.origin.to_string(), key.media_id.to_string())) {
                            report.media.push(key.clone());
                        } else {
                            report.not_found.push(key.clone());
                        }
                    }
                }
            }
            let candidates: Vec<String> = candidates.into_iter().collect();
            let mut freed: Vec<(String, i64, String, i64)> = Vec::new();
            for chunk in candidates.chunks(KEYS_PER_STATEMENT) {
                // Reference safety, checked inside the deleting transaction, after every
                // writer referencing these rows committed (see `BlobLock`).
                let digests: Vec<&str> = chunk.iter().map(String::as_str).collect();
                $crate::repo::sql::lock_blobs_in!(
                    $conn,
                    $dialect,
                    &digests,
                    $crate::repo::sql::BlobLock::Deleting
                )?;
                let sql = format!(
                    "DELETE FROM blobs WHERE sha256 IN ({}) \
                     AND NOT EXISTS (SELECT 1 FROM media WHERE media.sha256 = blobs.sha256) \
                     AND NOT EXISTS (SELECT 1 FROM thumbnails \
                     WHERE thumbnails.sha256 = blobs.sha256) \
                     RETURNING sha256, datastore_id, location, size_bytes",
                    placeholder_list($dialect, chunk.len(), 1)
                );
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).persistent(false);
                for sha256 in chunk {
                    query = query.bind(sha256);
                }
                freed.extend(
                    query
                        .fetch_all($conn)
                        .await
                        .during("delete unreferenced blobs")?,
                );
            }
            freed.sort_unstable();
            let claimed: Option<i64> = $claimed;
            let mut queued = std::collections::HashMap::with_capacity(freed.len());
            for rows in freed.chunks(KEYS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO pending_deletions \
                     (datastore_id, location, sha256, enqueued_ts, claimed_ts) \
                     VALUES {} RETURNING sha256, id",
                    values_list($dialect, rows.len(), 5)
                );
                let mut query =
                    sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql)).persistent(false);
                for (sha256, datastore_id, location, _) in rows {
                    query = query
                        .bind(*datastore_id)
                        .bind(location)
                        .bind(sha256)
                        .bind($ts)
                        .bind(claimed);
                }
                queued.extend(
                    query
                        .fetch_all($conn)
                        .await
                        .during("queue object deletions")?,
                );
            }
            for (sha256, datastore_id, location, size_bytes) in &freed {
                // One blob row per digest was deleted, so one entry per digest queued.
                let Some(id) = queued.get(sha256).copied() else {
                    return Err($crate::error::DbError::InvalidRow {
                        table: "pending_deletions",
                        key: sha256.clone(),
                        reason: "the queued deletion was not returned".to_owned(),
                    });
                };
                report.enqueued.push((
                    id,
                    $crate::rows::pending_deletion(*datastore_id, location, sha256)?,
                ));
                report.bytes_freed += u64::try_from(*size_bytes).unwrap_or(0);
            }
            Ok::<_, $crate::error::DbError>(report)
        }
        .await
    };
}
pub(crate) use delete_media_in;

/// A subquery of the queue IDs bound as placeholder `$1` by [`id_array`]: one value
/// rather than one placeholder per ID.
pub(crate) fn id_list(dialect: crate::Dialect) -> &'static str {
    match dialect {
        crate::Dialect::Sqlite => "SELECT value FROM json_each($1)",
        crate::Dialect::Postgres => {
            "SELECT CAST(value AS BIGINT) FROM json_array_elements_text(CAST($1 AS json))"
        }
    }
}

/// `ids` as the JSON array [`id_list`] reads.
pub(crate) fn id_array(ids: &[i64]) -> String {
    serde_json::Value::from(ids.to_vec()).to_string()
}

/// Dequeues the deletions `$ids` (whose objects are gone) on `$conn` (of `$dialect`),
/// after moving the deletion epoch on (see [`crate::repo::sql::deletion_epoch_in`]);
/// evaluates to `Result<(), DbError>`. The IDs are bound as one JSON array: hundreds of
/// placeholders cost SQLite a search of its parameter names for each.
///
/// The epoch moves first: outside a transaction, a writer that finds the entries gone
/// then finds the epoch moved too; inside one, every transaction that dequeues takes the
/// epoch's row before any other lock, so two of them never wait for each other in a
/// circle.
macro_rules! dequeue_in {
    ($conn:expr, $dialect:expr, $ids:expr) => {
        async {
            let ids: &[i64] = $ids;
            if ids.is_empty() {
                return Ok::<_, $crate::error::DbError>(());
            }
            sqlx::query("UPDATE deletion_epoch SET epoch = epoch + 1")
                .execute($conn)
                .await
                .during("move the deletion epoch on")?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM pending_deletions WHERE id IN ({})",
                $crate::repo::deletion::id_list($dialect)
            )))
            .bind($crate::repo::deletion::id_array(ids))
            .execute($conn)
            .await
            .during("acknowledge deleted objects")?;
            Ok(())
        }
        .await
    };
}
pub(crate) use dequeue_in;

#[async_trait]
impl DeletionQueue for Repository {
    async fn delete_media(&self, keys: &[MediaKey]) -> Result<DeletedMedia, DbError> {
        let ts = now_ms();
        // A writer recording these media or their bytes at once may still meet this
        // transaction in a circle of waits, which the database breaks by aborting one of
        // them: tried again, as a purge's batch is.
        retrying_deadlocks(|| async {
            on_pool!(&self.writer, |p| {
                let mut tx = p
                    .begin_with(self.begin_write())
                    .await
                    .during("begin a transaction")?;
                let report = delete_media_in!(&mut *tx, self.dialect, keys, ts, None)?;
                tx.commit().await.during("commit a deletion")?;
                Ok(report)
            })
        })
        .await
    }

    async fn pending_deletions(
        &self,
        datastore_id: DatastoreId,
        limit: i64,
    ) -> Result<Vec<(i64, PendingDeletion)>, DbError> {
        let rows: Vec<(i64, i64, String, String)> = on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT id, datastore_id, location, sha256 FROM pending_deletions \
                 WHERE datastore_id = $1 ORDER BY id LIMIT $2",
            )
            .bind(datastore_id.0)
            .bind(limit)
            .fetch_all(p)
            .await
            .during("read queued deletions")?
        });
        rows.into_iter()
            .map(|(id, ds, location, sha256)| Ok((id, pending_deletion(ds, &location, &sha256)?)))
            .collect()
    }

    async fn still_due(
        &self,
        claimed: &[(i64, PendingDeletion)],
    ) -> Result<Vec<(i64, PendingDeletion)>, DbError> {
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = claimed.iter().map(|(id, _)| *id).collect();
        let sql = format!(
            "SELECT id FROM pending_deletions WHERE id IN ({}) AND NOT {LIVE_OBJECT}",
            id_list(self.dialect)
        );
        let due: std::collections::HashSet<i64> = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(id_array(&ids))
                .fetch_all(p)
                .await
                .during("check claimed deletions")?
                .into_iter()
                .collect()
        });
        Ok(claimed
            .iter()
            .filter(|(id, _)| due.contains(id))
            .cloned()
            .collect())
    }

    async fn acknowledge_deletions(&self, ids: &[i64]) -> Result<(), DbError> {
        on_pool!(&self.writer, |p| dequeue_in!(p, self.dialect, ids)?);
        Ok(())
    }

    async fn drain_pending_deletions(
        &self,
        datastore_id: DatastoreId,
        store: &dyn Datastore,
    ) -> Result<DrainReport, DbError> {
        let mut report = DrainReport::default();
        // Each claim starts after the last entry this drain took: a queue table's index
        // keeps the entries deleted before (until a vacuum), and a claim from its start
        // walked past all of them (on PostgreSQL 0.2 s a claim after 100,000 deletions).
        let mut after = 0;
        // The entries whose objects the previous batch deleted: the next claim
        // acknowledges them in its transaction.
        let mut done = Vec::new();
        loop {
            let (claimed, kept) = self.claim_deletions(datastore_id, after, &done).await?;
            report.kept += kept.len() as u64;
            let Some(last) = claimed.iter().map(|(id, _)| *id).chain(kept).max() else {
                return Ok(report);
            };
            after = last;
            let deleted = delete_claimed(store, &claimed).await;
            report += deleted.report;
            done = deleted.gone;
            if let Some(e) = deleted.failure {
                self.acknowledge_deletions(&done).await?;
                return Err(e.into());
            }
        }
    }
}

/// Deletes the objects of `claimed` (queued deletions of `store`'s datastore, claimed)
/// from `store`, with no transaction open; every deletion that ends counts, even after
/// another failed. Acknowledge [`DeletedClaims::gone`] afterwards.
pub async fn delete_claimed(
    store: &dyn Datastore,
    claimed: &[(i64, PendingDeletion)],
) -> DeletedClaims {
    let keys: Vec<BlobKey> = claimed.iter().map(|(_, p)| p.location.clone()).collect();
    let mut deleted = DeletedClaims::default();
    for ((id, _), status) in claimed.iter().zip(store.delete_many(&keys).await) {
        match status {
            Ok(DeleteStatus::Deleted) => deleted.report.deleted += 1,
            Ok(DeleteStatus::NotFound) => deleted.report.already_gone += 1,
            Err(e) => {
                deleted.failure.get_or_insert(e);
                continue;
            }
        }
        deleted.gone.push(*id);
    }
    deleted
}

impl Repository {
    /// Claims up to [`DRAIN_BATCH`] queued deletions of `datastore_id` with IDs above
    /// `after`, oldest first, in one short transaction, which first dequeues the claimed
    /// deletions `acknowledged` (their objects are gone); the entries whose blob was
    /// recorded again are dequeued instead (kept). Returns the claimed entries and the
    /// IDs of the kept ones. Entries claimed by an earlier drain that stopped are claimed
    /// again; one queued while this drain runs, under an ID it has passed, waits for the
    /// next drain.
    async fn claim_deletions(
        &self,
        datastore_id: DatastoreId,
        after: i64,
        acknowledged: &[i64],
    ) -> Result<(Vec<(i64, PendingDeletion)>, Vec<i64>), DbError> {
        let (claimed, kept) = on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;
            dequeue_in!(&mut *tx, self.dialect, acknowledged)?;
            let sql = format!(
                "DELETE FROM pending_deletions WHERE id IN (SELECT id FROM pending_deletions \
                 WHERE datastore_id = $1 AND id > $3 ORDER BY id LIMIT $2) AND {LIVE_OBJECT} \
                 RETURNING id"
            );
            let kept: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(datastore_id.0)
                .bind(DRAIN_BATCH)
                .bind(after)
                .fetch_all(&mut *tx)
                .await
                .during("dequeue deletions of blobs recorded again")?;
            let mut claimed: Vec<(i64, i64, String, String)> = sqlx::query_as(
                "UPDATE pending_deletions SET claimed_ts = $3 WHERE id IN \
                 (SELECT id FROM pending_deletions WHERE datastore_id = $1 AND id > $4 \
                 ORDER BY id LIMIT $2) RETURNING id, datastore_id, location, sha256",
            )
            .bind(datastore_id.0)
            .bind(DRAIN_BATCH)
            .bind(now_ms())
            .bind(after)
            .fetch_all(&mut *tx)
            .await
            .during("claim queued deletions")?;
            tx.commit().await.during("commit a claim")?;
            claimed.sort_unstable_by_key(|row| row.0);
            (claimed, kept)
        });
        let claimed = claimed
            .into_iter()
            .map(|(id, ds, location, sha256)| Ok((id, pending_deletion(ds, &location, &sha256)?)))
            .collect::<Result<_, DbError>>()?;
        Ok((claimed, kept))
    }
}
