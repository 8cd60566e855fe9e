//! What the rows say of a datastore's objects ([`StoreCheck`], `media_admin check`):
//! objects are looked up by digest (the primary key of `blobs`, the `sha256` index of
//! `pending_deletions`), a chunk of listed keys per query, so a check reads a datastore's
//! listing as a stream and never holds more than a chunk of it.

use std::collections::HashSet;

use async_trait::async_trait;
use media_core::datastore::BlobKey;
use media_core::now_ms;

use super::Repository;
use super::sql::{ROWS_PER_STATEMENT, placeholder_list};
use crate::connect::on_pool;
use crate::error::{DbError, QueryContext};
use crate::model::{DatastoreId, ObjectState};
use crate::roles::StoreCheck;

#[async_trait]
impl StoreCheck for Repository {
    async fn object_states(
        &self,
        datastore_id: DatastoreId,
        keys: &[BlobKey],
    ) -> Result<Vec<ObjectState>, DbError> {
        let mut referenced = HashSet::new();
        let mut queued = HashSet::new();
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let digests = placeholder_list(self.dialect, chunk.len(), 1);
            // The datastore ID is a number of ours, written into the statement so that
            // the digests are its only (anonymous on SQLite) placeholders.
            let id = datastore_id.0;
            let in_blobs = format!(
                "SELECT location FROM blobs WHERE sha256 IN ({digests}) AND datastore_id = {id}"
            );
            let in_queue = format!(
                "SELECT location FROM pending_deletions \
                 WHERE sha256 IN ({digests}) AND datastore_id = {id}"
            );
            for (sql, found) in [(in_blobs, &mut referenced), (in_queue, &mut queued)] {
                let locations: Vec<String> = on_pool!(&self.pool, |p| {
                    let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
                    for key in chunk {
                        query = query.bind(key.sha256().to_string());
                    }
                    query
                        .fetch_all(p)
                        .await
                        .during("look up the rows of listed objects")?
                });
                found.extend(locations);
            }
        }
        Ok(keys
            .iter()
            .map(|key| {
                if referenced.contains(key.as_str()) {
                    ObjectState::Referenced
                } else if queued.contains(key.as_str()) {
                    ObjectState::Queued
                } else {
                    ObjectState::Unreferenced
                }
            })
            .collect())
    }

    async fn queue_orphans(
        &self,
        datastore_id: DatastoreId,
        keys: &[BlobKey],
    ) -> Result<u64, DbError> {
        let ts = now_ms();
        on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;
            let mut queued = 0;
            for key in keys {
                queued += sqlx::query(
                    "INSERT INTO pending_deletions (datastore_id, location, sha256, enqueued_ts) \
                     SELECT $1, $2, $3, $4 \
                     WHERE NOT EXISTS (SELECT 1 FROM blobs \
                         WHERE sha256 = $3 AND datastore_id = $1 AND location = $2) \
                     AND NOT EXISTS (SELECT 1 FROM pending_deletions \
                         WHERE sha256 = $3 AND datastore_id = $1 AND location = $2)",
                )
                .bind(datastore_id.0)
                .bind(key.as_str())
                .bind(key.sha256().to_string())
                .bind(ts)
                .execute(&mut *tx)
                .await
                .during("queue an orphan object's deletion")?
                .rows_affected();
            }
            tx.commit().await.during("commit queued orphans")?;
            Ok(queued)
        })
    }
}
