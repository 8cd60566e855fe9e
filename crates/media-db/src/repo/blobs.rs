//! The blob index: one row per digest, inserted-or-got inside a transaction, and only
//! once the datastore was seen (before the transaction) to hold the object, with no
//! deletion acknowledged since.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use async_trait::async_trait;
use media_core::datastore::{BlobKey, Datastore};
use media_core::ids::Sha256Hex;

use super::Repository;
use super::sql::{
    Attempt, ROWS_PER_STATEMENT, Verified, deletion_epoch_in, insert_blob_in, placeholder_list,
    retrying_deadlocks,
};
use crate::connect::on_pool;
use crate::error::{DbError, QueryContext};
use crate::model::{Blob, BlobOutcome, NewBlob};
use crate::roles::BlobIndex;
use crate::rows::BlobRow;

#[async_trait]
impl BlobIndex for Repository {
    async fn insert_blob(
        &self,
        blob: &NewBlob,
        store: &dyn Datastore,
    ) -> Result<BlobOutcome, DbError> {
        let blobs = [(&blob.sha256, blob.size_bytes)];
        self.with_verified_blobs(&blobs, store, |verified| async move {
            on_pool!(&self.writer, |p| {
                let mut tx = p
                    .begin_with(self.begin_write())
                    .await
                    .during("begin a transaction")?;
                let outcome =
                    insert_blob_in!(&mut *tx, self.dialect, blob, &verified, store.uri())?;
                if let Attempt::Done(_) = outcome {
                    tx.commit().await.during("commit a blob")?;
                }
                Ok(outcome)
            })
        })
        .await
    }

    async fn get_blob(&self, sha256: &Sha256Hex) -> Result<Option<Blob>, DbError> {
        let row: Option<BlobRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT sha256, size_bytes, datastore_id, location, created_ts \
                 FROM blobs WHERE sha256 = $1",
            )
            .bind(sha256.as_str())
            .fetch_optional(p)
            .await
            .during("read a blob")?
        });
        row.map(BlobRow::into_blob).transpose()
    }

    async fn blob_reference_count(&self, sha256: &Sha256Hex) -> Result<u64, DbError> {
        let count: i64 = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1) \
                 + (SELECT COUNT(*) FROM thumbnails WHERE sha256 = $1)",
            )
            .bind(sha256.as_str())
            .fetch_one(p)
            .await
            .during("count blob references")?
        });
        Ok(count as u64)
    }
}

impl Repository {
    /// Runs `attempt` (one write transaction recording `blobs`) with the digests whose
    /// objects were seen in `store` with their sizes, checked with no transaction open:
    /// first those `blobs` not recorded yet; then, whenever an attempt rolls back because
    /// it would record a blob that was not checked (its row vanished meanwhile) or whose
    /// object a drain may have deleted since the check (the deletion epoch moved: every
    /// check before counts no more), those too, and the attempt is tried again. An
    /// attempt the database aborted to break a deadlock is tried again too
    /// ([`retrying_deadlocks`]): the rows of one batch go in in key order, but another
    /// writer (a purge deleting the bytes this batch records again) takes its locks
    /// table by table in another order.
    pub(super) async fn with_verified_blobs<T, F, Fut>(
        &self,
        blobs: &[(&Sha256Hex, u64)],
        store: &dyn Datastore,
        mut attempt: F,
    ) -> Result<T, DbError>
    where
        F: FnMut(Verified) -> Fut,
        Fut: Future<Output = Result<Attempt<T>, DbError>>,
    {
        let sizes: HashMap<&str, u64> = blobs.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        let mut verified = Verified {
            digests: HashSet::new(),
            epoch: self.deletion_epoch().await?,
        };
        let recorded = self.recorded_digests(blobs).await?;
        let mut unchecked: Vec<String> = sizes
            .keys()
            .filter(|sha256| !recorded.contains(**sha256))
            .map(|sha256| (*sha256).to_owned())
            .collect();
        loop {
            check_stored(store, &unchecked, &sizes).await?;
            verified.digests.extend(unchecked);
            let new = match retrying_deadlocks(|| attempt(verified.clone())).await? {
                Attempt::Done(result) => return Ok(result),
                Attempt::Unverified(new) => new,
            };
            let epoch = self.deletion_epoch().await?;
            if epoch != verified.epoch {
                // A drain acknowledged deletions since the objects were seen: what was
                // seen then counts no more. Only this batch's new blobs are checked
                // again, and a round is lost only to an acknowledgement inside its
                // window: drains finish, so this ends (giving up instead would report
                // bytes as gone that are not).
                verified = Verified {
                    digests: HashSet::new(),
                    epoch,
                };
            }
            unchecked = new;
        }
    }

    /// The deletion epoch, read on a reader connection (see [`Verified`]).
    async fn deletion_epoch(&self) -> Result<i64, DbError> {
        Ok(on_pool!(&self.pool, |p| deletion_epoch_in!(p)?))
    }

    /// Those of `blobs` that have a row.
    async fn recorded_digests(
        &self,
        blobs: &[(&Sha256Hex, u64)],
    ) -> Result<HashSet<String>, DbError> {
        let mut recorded = HashSet::new();
        for chunk in blobs.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT sha256 FROM blobs WHERE sha256 IN ({})",
                placeholder_list(self.dialect, chunk.len(), 1)
            );
            let rows: Vec<String> = on_pool!(&self.pool, |p| {
                let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).persistent(false);
                for (sha256, _) in chunk {
                    query = query.bind(sha256.as_str());
                }
                query.fetch_all(p).await.during("look up blobs")?
            });
            recorded.extend(rows);
        }
        Ok(recorded)
    }
}

/// Checks that `store` holds every blob of `digests` with its size in `sizes`;
/// [`DbError::BlobMissing`] names the smallest digest that is not.
async fn check_stored(
    store: &dyn Datastore,
    digests: &[String],
    sizes: &HashMap<&str, u64>,
) -> Result<(), DbError> {
    let keys: Vec<Option<BlobKey>> = digests
        .iter()
        .map(|sha256| {
            Sha256Hex::try_from(sha256.as_str())
                .ok()
                .map(|digest| BlobKey::for_hash(&digest))
        })
        .collect();
    let valid: Vec<BlobKey> = keys.iter().flatten().cloned().collect();
    let mut held = store.sizes(&valid).await?.into_iter();
    let missing = digests
        .iter()
        .zip(&keys)
        .filter(|(sha256, key)| {
            // A digest that is not one names no object.
            let held = key.as_ref().and_then(|_| held.next().flatten());
            held != sizes.get(sha256.as_str()).copied()
        })
        .map(|(sha256, _)| sha256)
        .min();
    match missing {
        Some(sha256) => Err(DbError::BlobMissing {
            sha256: sha256.clone(),
            datastore: store.uri(),
        }),
        None => Ok(()),
    }
}
