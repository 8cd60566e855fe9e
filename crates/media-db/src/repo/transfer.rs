//! Moving blobs from one datastore to another ([`BlobTransfer`]), and recording a
//! transfer's destination ([`Repository::attach_transfer_destination`]).
//!
//! Nothing is ever lost, whatever stops a transfer, because every object that may be a
//! stray is queued for deletion *before* it can become one, and every switch of a row is
//! a compare-and-swap:
//!
//! * a copy is queued for deletion in the destination (its write-ahead entry) before it
//!   is made; until its row is switched to it, it is a stray and a drain removes it;
//! * the switch (one transaction per batch) updates a row only while it still points at
//!   the source object, drops the copy's entry only while no drain has claimed it (a
//!   claimed entry means the copy may be gone: the switch of that blob is undone), and
//!   queues the source object, which a drain then deletes;
//! * a drain keeps an object only when a blob row points at that very object (digest,
//!   datastore and location: see `sql::LIVE_OBJECT`).
//!
//! A run killed anywhere leaves rows pointing at objects that exist, and queue entries
//! for every possible stray: draining both datastores' queues, as each run does first,
//! converges.

use async_trait::async_trait;
use media_core::datastore::{BlobKey, Datastore};
use media_core::ids::Sha256Hex;
use media_core::now_ms;

use super::Repository;
use super::attach::new_marker;
use super::sql::reuse_key_lookup_plans_in;
use crate::connect::{Pool, on_pool};
use crate::error::{DbError, QueryContext};
use crate::model::{Blob, BlobMove, BlobTally, DatastoreId, MoveOutcome};
use crate::roles::BlobTransfer;
use crate::rows::BlobRow;

#[async_trait]
impl BlobTransfer for Repository {
    async fn tally_blobs(
        &self,
        datastore_id: DatastoreId,
        created_before: Option<i64>,
    ) -> Result<BlobTally, DbError> {
        let (blobs, bytes): (i64, i64) = on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT COUNT(*), CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM blobs \
                 WHERE datastore_id = $1 AND created_ts < $2",
            )
            .bind(datastore_id.0)
            .bind(created_before.unwrap_or(i64::MAX))
            .fetch_one(p)
            .await
            .during("count a datastore's blobs")?
        });
        Ok(BlobTally {
            blobs: u64::try_from(blobs).unwrap_or(0),
            bytes: u64::try_from(bytes).unwrap_or(0),
        })
    }

    async fn blobs_in(
        &self,
        datastore_id: DatastoreId,
        created_before: Option<i64>,
        after: Option<&Sha256Hex>,
        through: Option<&Sha256Hex>,
        limit: i64,
    ) -> Result<Vec<Blob>, DbError> {
        // Lowercase hex digests all sort before "g".
        let past_every_digest = "g";
        // The page comes back as one row, a JSON array of rows: reading rows one at a
        // time cost more than the database's own work (sqlx copies every value and, on
        // SQLite, hands each row over from its worker thread), most of a check's time at
        // a million objects.
        let page: Option<String> = on_pool!(&self.pool, |p| {
            let aggregate = match self.pool {
                Pool::Sqlite(_) => {
                    "json_group_array(json_array(sha256, size_bytes, \
                     datastore_id, location, created_ts))"
                }
                Pool::Postgres(_) => {
                    "CAST(json_agg(json_build_array(sha256, size_bytes, \
                     datastore_id, location, created_ts)) AS TEXT)"
                }
            };
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT {aggregate} FROM (SELECT sha256, size_bytes, datastore_id, location, \
                 created_ts FROM blobs WHERE datastore_id = $1 AND created_ts < $2 \
                 AND sha256 > $3 AND sha256 <= $4 ORDER BY sha256 LIMIT $5) page"
            )))
            .bind(datastore_id.0)
            .bind(created_before.unwrap_or(i64::MAX))
            .bind(after.map_or("", |sha256| sha256.as_str()))
            .bind(through.map_or(past_every_digest, |sha256| sha256.as_str()))
            .bind(limit)
            .fetch_one(p)
            .await
            .during("read a page of a datastore's blobs")?
        });
        let mut rows: Vec<BlobRow> = match page {
            // PostgreSQL's aggregate of no rows is NULL.
            None => Vec::new(),
            Some(page) => serde_json::from_str(&page)
                .map_err(|e| sqlx::Error::Decode(e.into()))
                .during("read a page of a datastore's blobs")?,
        };
        // An aggregate promises no order, and asking it for one makes the database sort
        // again; the rows arrive in order all the same, which this sort confirms in one
        // pass.
        rows.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        rows.into_iter().map(BlobRow::into_blob).collect()
    }

    async fn queue_copies(&self, to: DatastoreId, blobs: &[Blob]) -> Result<Vec<i64>, DbError> {
        let ts = now_ms();
        on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;
            // One key per statement: their plans can be reused.
            reuse_key_lookup_plans_in!(&mut *tx, self.dialect)?;
            let mut ids = Vec::with_capacity(blobs.len());
            for blob in blobs {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO pending_deletions (datastore_id, location, sha256, enqueued_ts) \
                     VALUES ($1, $2, $3, $4) RETURNING id",
                )
                .bind(to.0)
                .bind(BlobKey::for_hash(&blob.sha256).as_str())
                .bind(blob.sha256.as_str())
                .bind(ts)
                .fetch_one(&mut *tx)
                .await
                .during("queue a copy's write-ahead deletion")?;
                ids.push(id);
            }
            tx.commit().await.during("commit write-ahead deletions")?;
            Ok(ids)
        })
    }

    async fn switch_blobs(&self, moves: &[BlobMove]) -> Result<Vec<MoveOutcome>, DbError> {
        let ts = now_ms();
        on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;
            // One key per statement: their plans can be reused.
            reuse_key_lookup_plans_in!(&mut *tx, self.dialect)?;
            let mut outcomes = Vec::with_capacity(moves.len());
            for m in moves {
                let switched = sqlx::query(
                    "UPDATE blobs SET datastore_id = $1, location = $2 \
                     WHERE sha256 = $3 AND datastore_id = $4 AND location = $5",
                )
                .bind(m.to.0)
                .bind(m.location.as_str())
                .bind(m.blob.sha256.as_str())
                .bind(m.blob.datastore_id.0)
                .bind(m.blob.location.as_str())
                .execute(&mut *tx)
                .await
                .during("switch a blob to its copy")?
                .rows_affected();
                if switched == 0 {
                    // Deleted or moved meanwhile: the copy's entry stays, a drain removes it.
                    outcomes.push(MoveOutcome::Vanished);
                    continue;
                }
                let released = sqlx::query(
                    "DELETE FROM pending_deletions WHERE id = $1 AND claimed_ts IS NULL",
                )
                .bind(m.guard)
                .execute(&mut *tx)
                .await
                .during("drop a copy's write-ahead deletion")?
                .rows_affected();
                if released == 0 {
                    // A drain claimed the copy (it may be gone): the row stays on the source.
                    sqlx::query(
                        "UPDATE blobs SET datastore_id = $1, location = $2 WHERE sha256 = $3",
                    )
                    .bind(m.blob.datastore_id.0)
                    .bind(m.blob.location.as_str())
                    .bind(m.blob.sha256.as_str())
                    .execute(&mut *tx)
                    .await
                    .during("undo the switch of a blob whose copy was claimed")?;
                    outcomes.push(MoveOutcome::CopyClaimed);
                    continue;
                }
                sqlx::query(
                    "INSERT INTO pending_deletions (datastore_id, location, sha256, enqueued_ts) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(m.blob.datastore_id.0)
                .bind(m.blob.location.as_str())
                .bind(m.blob.sha256.as_str())
                .bind(ts)
                .execute(&mut *tx)
                .await
                .during("queue a moved blob's source object")?;
                outcomes.push(MoveOutcome::Switched);
            }
            tx.commit().await.during("commit switched blobs")?;
            Ok(outcomes)
        })
    }
}

impl Repository {
    /// Checks that `store` can be the destination of a transfer out of datastore `from`
    /// and returns its ID, recording it (and writing an identity marker into it) when it
    /// is new, like any new datastore. Refused ([`DbError::UnusableDestination`]): the
    /// source itself (its marker is `from`'s), a datastore holding the marker of another
    /// repository, and a datastore recorded with a marker it no longer holds.
    pub async fn attach_transfer_destination(
        &self,
        store: &dyn Datastore,
        from: DatastoreId,
    ) -> Result<DatastoreId, DbError> {
        let given = store.uri();
        let refuse = |why: String| DbError::UnusableDestination {
            given: given.clone(),
            why,
        };
        if store.is_ephemeral() {
            return Err(refuse(
                "it keeps blobs only in this process's memory".to_owned(),
            ));
        }
        let recorded = self.datastore_records().await?;
        let marker = store.read_marker().await?;
        if let Some(marker) = &marker {
            return match recorded
                .iter()
                .find(|r| r.identity.as_deref() == Some(marker))
            {
                Some(known) if known.id == from => Err(refuse(format!(
                    "it is the source datastore #{} itself (recorded at {}; it holds its \
                     identity marker)",
                    from.0, known.uri
                ))),
                Some(known) => Ok(known.id),
                None => Err(refuse(format!(
                    "it holds identity marker {marker}, which this repository never recorded: \
                     it is another repository's datastore"
                ))),
            };
        }
        if let Some(known) = recorded.iter().find(|r| r.uri == given) {
            if known.id == from {
                return Err(refuse(format!(
                    "it is the source datastore #{} itself",
                    from.0
                )));
            }
            if let Some(identity) = &known.identity {
                return Err(refuse(format!(
                    "it is recorded as datastore #{} with identity marker {identity}, but \
                     holds no marker now: it was emptied or replaced",
                    known.id.0
                )));
            }
        }
        let marker = store.claim_marker(&new_marker()).await?;
        let id = self.register_datastore(&given).await?;
        self.set_identity(id, &marker).await?;
        tracing::info!("recorded datastore #{} at {given}", id.0);
        Ok(id)
    }
}
