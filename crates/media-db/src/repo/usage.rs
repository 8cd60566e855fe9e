//! What each recorded datastore holds (`media_admin datastores list`), read from the
//! rows alone: no datastore is opened, so it works while a store is offline.

use super::Repository;
use crate::connect::on_pool;
use crate::error::{DbError, QueryContext};
use crate::model::{DatastoreId, DatastoreUsage, RecordedDatastore};

/// One row of [`Repository::datastore_usage`]'s query, as read.
type UsageRow = (i64, String, Option<String>, i64, i64, i64, i64, i64);

impl Repository {
    /// Every datastore the repository records, oldest first: what a tool resolves
    /// `--from 3` or `--from URI` against, and what attaching a datastore checks.
    pub async fn datastore_records(&self) -> Result<Vec<RecordedDatastore>, DbError> {
        let rows: Vec<(i64, String, Option<String>)> = on_pool!(&self.pool, |p| {
            sqlx::query_as("SELECT id, uri, identity FROM datastores ORDER BY id")
                .fetch_all(p)
                .await
                .during("list the recorded datastores")?
        });
        Ok(rows
            .into_iter()
            .map(|(id, uri, identity)| RecordedDatastore {
                id: DatastoreId(id),
                uri,
                identity,
            })
            .collect())
    }

    /// Every recorded datastore with what it holds: media and thumbnail rows whose blob
    /// is in it, distinct blobs and their bytes, objects queued for deletion from it.
    pub async fn datastore_usage(&self) -> Result<Vec<DatastoreUsage>, DbError> {
        let rows: Vec<UsageRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT d.id, d.uri, d.identity, \
                 (SELECT COUNT(*) FROM media m JOIN blobs b ON b.sha256 = m.sha256 \
                  WHERE b.datastore_id = d.id), \
                 (SELECT COUNT(*) FROM thumbnails t JOIN blobs b ON b.sha256 = t.sha256 \
                  WHERE b.datastore_id = d.id), \
                 (SELECT COUNT(*) FROM blobs b WHERE b.datastore_id = d.id), \
                 (SELECT CAST(COALESCE(SUM(b.size_bytes), 0) AS BIGINT) FROM blobs b \
                  WHERE b.datastore_id = d.id), \
                 (SELECT COUNT(*) FROM pending_deletions q WHERE q.datastore_id = d.id) \
                 FROM datastores d ORDER BY d.id",
            )
            .fetch_all(p)
            .await
            .during("count what each datastore holds")?
        });
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(rows
            .into_iter()
            .map(
                |(id, uri, identity, media, thumbnails, blobs, bytes, queued)| DatastoreUsage {
                    id: DatastoreId(id),
                    uri,
                    identity,
                    media: count(media),
                    thumbnails: count(thumbnails),
                    blobs: count(blobs),
                    bytes: count(bytes),
                    queued_deletions: count(queued),
                },
            )
            .collect())
    }
}
