//! What the rows say of a datastore's objects ([`StoreCheck`], `media_admin check`). The
//! rows themselves are read in digest order along the primary key of `blobs`
//! ([`crate::BlobTransfer::blobs_in`], a range per chunk of the listing); this looks up
//! the queue, by the `sha256` index of `pending_deletions`, for the listed objects no row
//! points at.

use std::collections::HashSet;

use async_trait::async_trait;
use futures::TryStreamExt;
use media_core::datastore::BlobKey;
use media_core::now_ms;

use super::Repository;
use super::sql::{ROWS_PER_STATEMENT, placeholder_list};
use crate::connect::on_pool;
use crate::error::{DbError, QueryContext};
use crate::model::{DatastoreId, Unsound};
use crate::roles::StoreCheck;

#[async_trait]
impl StoreCheck for Repository {
    async fn count_queued(&self, datastore_id: DatastoreId) -> Result<u64, DbError> {
        let queued: i64 = on_pool!(&self.pool, |p| {
            sqlx::query_scalar("SELECT COUNT(*) FROM pending_deletions WHERE datastore_id = $1")
                .bind(datastore_id.0)
                .fetch_one(p)
                .await
                .during("count a datastore's queued deletions")?
        });
        Ok(u64::try_from(queued).unwrap_or(0))
    }

    async fn queued_among(
        &self,
        datastore_id: DatastoreId,
        keys: &[BlobKey],
    ) -> Result<HashSet<BlobKey>, DbError> {
        let mut queued = HashSet::new();
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            // The datastore ID is a number of ours, written into the statement so that
            // the digests are its only (anonymous on SQLite) placeholders.
            let sql = format!(
                "SELECT location FROM pending_deletions \
                 WHERE sha256 IN ({}) AND datastore_id = {}",
                placeholder_list(self.dialect, chunk.len(), 1),
                datastore_id.0
            );
            let locations: Vec<String> = on_pool!(&self.pool, |p| {
                let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).persistent(false);
                for key in chunk {
                    query = query.bind(key.sha256().to_string());
                }
                query
                    .fetch_all(p)
                    .await
                    .during("look up the queued deletions of listed objects")?
            });
            let locations: HashSet<String> = locations.into_iter().collect();
            queued.extend(
                chunk
                    .iter()
                    .filter(|key| locations.contains(key.as_str()))
                    .cloned(),
            );
        }
        Ok(queued)
    }

    async fn unsound_rows(
        &self,
        kind: Unsound,
        limit: usize,
    ) -> Result<(u64, Vec<String>), DbError> {
        let (sql, operation) = match kind {
            Unsound::RowsWithoutBlob => (
                "SELECT 'mxc://' || m.origin || '/' || m.media_id FROM media AS m \
                 WHERE NOT EXISTS (SELECT 1 FROM blobs AS b WHERE b.sha256 = m.sha256) \
                 UNION ALL SELECT 'thumbnail of mxc://' || t.origin || '/' || t.media_id \
                 FROM thumbnails AS t \
                 WHERE NOT EXISTS (SELECT 1 FROM blobs AS b WHERE b.sha256 = t.sha256)",
                "find rows whose blob row is missing",
            ),
            Unsound::ThumbnailsWithoutMedia => (
                "SELECT DISTINCT 'thumbnail of mxc://' || t.origin || '/' || t.media_id \
                 FROM thumbnails AS t WHERE NOT EXISTS (SELECT 1 FROM media AS m \
                 WHERE m.origin = t.origin AND m.media_id = t.media_id)",
                "find thumbnails whose media row is missing",
            ),
            Unsound::RowsWithoutDatastore => (
                "SELECT 'blob ' || b.sha256 || ' in datastore #' || CAST(b.datastore_id AS TEXT) \
                 FROM blobs AS b \
                 WHERE NOT EXISTS (SELECT 1 FROM datastores AS d WHERE d.id = b.datastore_id) \
                 UNION ALL SELECT 'queued deletion of ' || p.location || ' in datastore #' \
                 || CAST(p.datastore_id AS TEXT) FROM pending_deletions AS p \
                 WHERE NOT EXISTS (SELECT 1 FROM datastores AS d WHERE d.id = p.datastore_id)",
                "find rows whose datastore is not recorded",
            ),
        };
        // Streamed: only the first `limit` are kept.
        on_pool!(&self.pool, |p| {
            let mut rows = sqlx::query_scalar::<_, String>(sql).fetch(p);
            let (mut count, mut listed) = (0u64, Vec::new());
            while let Some(item) = rows.try_next().await.during(operation)? {
                count += 1;
                if listed.len() < limit {
                    listed.push(item);
                }
            }
            Ok((count, listed))
        })
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
                let sha256 = key.sha256().to_string();
                // A writer may be recording these bytes in a transaction not committed
                // yet: its blob row is invisible to the check below, and its cancelling
                // of queued deletions already ran, so an entry queued now would have the
                // object deleted under its row. Inserting a row of the same digest
                // waits for that transaction (the digest is the key) and is then
                // removed again; a writer coming after waits for this transaction and
                // then cancels the entry.
                let probed = sqlx::query(
                    "INSERT INTO blobs (sha256, size_bytes, datastore_id, location, created_ts) \
                     VALUES ($1, 0, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING",
                )
                .bind(&sha256)
                .bind(datastore_id.0)
                .bind(key.as_str())
                .bind(ts)
                .execute(&mut *tx)
                .await
                .during("wait for writers of an orphan's bytes")?
                .rows_affected();
                if probed == 1 {
                    sqlx::query("DELETE FROM blobs WHERE sha256 = $1")
                        .bind(&sha256)
                        .execute(&mut *tx)
                        .await
                        .during("remove the probe of an orphan's bytes")?;
                }
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
                .bind(&sha256)
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
