//! What each recorded datastore holds (`media_admin datastores list`), and who uses the
//! space ([`UsageReport`], `media_admin usage`), read from the rows alone: no datastore
//! is opened, so it works while a store is offline.
//!
//! The usage queries aggregate in the database and fetch only the first `limit` groups.
//! Each groups media by (owner, digest) first, so that a blob shared by several media of
//! one owner counts once in its stored bytes, reading the covering indexes
//! `media_origin_sha256` and `media_user_sha256` (owner, digest, size) in order: one pass,
//! no sort, no hash table, on SQLite and PostgreSQL alike.

use async_trait::async_trait;
use media_core::ids::{ServerName, UserId};
use media_core::records::MediaKey;

use super::Repository;
use super::sql::{placeholder_list, values_list};
use crate::connect::{Dialect, on_pool};
use crate::error::{DbError, QueryContext};
use crate::model::{DatastoreId, DatastoreUsage, RecordedDatastore, Upload, Usage, UsageTotals};
use crate::roles::UsageReport;
use crate::rows::{media_key, user_id};

/// The most months [`UsageReport::usage_by_month`] returns (a century).
const MONTHS_AT_MOST: u32 = 1_200;

/// One group of a usage query: owner, media, bytes, stored bytes.
type GroupRow = (String, i64, i64, i64);

/// One row of [`UsageReport::largest_uploads`]' query: origin, media ID, uploader, size,
/// content type, created, copies.
type UploadRow = (
    String,
    String,
    Option<String>,
    i64,
    Option<String>,
    i64,
    i64,
);

/// A count or a sum read back from the database (never negative).
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The usage of the `limit` largest groups of media by `owner` (a column of `media`),
/// only those media `filter` (a condition, or empty) selects. `filter` and the owner
/// column are the caller's literals; values are bound.
///
/// The inner groups are (owner, digest): one per blob an owner uses, so the sum of their
/// sizes is the owner's stored bytes. A blob's size is its media's (a blob row is
/// recorded from the digest and size of the media that brought it, and equal digests
/// have equal sizes), so the blob rows need not be joined.
fn usage_by(owner: &str, filter: &str, limit: u32) -> String {
    format!(
        "SELECT owner, CAST(SUM(copies) AS BIGINT), CAST(SUM(logical) AS BIGINT), \
         CAST(SUM(stored) AS BIGINT) \
         FROM (SELECT {owner} AS owner, COUNT(*) AS copies, SUM(size_bytes) AS logical, \
               MAX(size_bytes) AS stored \
               FROM media WHERE {owner} IS NOT NULL {filter} GROUP BY {owner}, sha256) g \
         GROUP BY owner ORDER BY 3 DESC, 1 LIMIT {limit}"
    )
}

#[async_trait]
impl UsageReport for Repository {
    async fn usage_totals(&self) -> Result<UsageTotals, DbError> {
        let (media, bytes, stored): (i64, i64, i64) = on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM media), \
                 (SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM media), \
                 (SELECT CAST(COALESCE(SUM(b.size_bytes), 0) AS BIGINT) FROM blobs b \
                  WHERE EXISTS (SELECT 1 FROM media m WHERE m.sha256 = b.sha256))",
            )
            .fetch_one(p)
            .await
            .during("count the repository's media and bytes")?
        });
        Ok(Usage {
            of: (),
            media: count(media),
            bytes: count(bytes),
            stored_bytes: count(stored),
        })
    }

    async fn usage_by_server(&self, limit: u32) -> Result<Vec<Usage<ServerName>>, DbError> {
        let sql = usage_by("origin", "", limit);
        let rows: Vec<GroupRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(p)
                .await
                .during("sum the bytes of each server")?
        });
        rows.into_iter()
            .map(|(origin, media, bytes, stored)| {
                Ok(Usage {
                    of: ServerName::try_from(origin.as_str()).map_err(|e| DbError::InvalidRow {
                        table: "media",
                        key: origin.clone(),
                        reason: e.to_string(),
                    })?,
                    media: count(media),
                    bytes: count(bytes),
                    stored_bytes: count(stored),
                })
            })
            .collect()
    }

    async fn usage_by_user(
        &self,
        users: &[UserId],
        limit: u32,
    ) -> Result<Vec<Usage<UserId>>, DbError> {
        let filter = if users.is_empty() {
            String::new()
        } else {
            format!(
                "AND user_id IN ({})",
                placeholder_list(self.dialect, users.len(), 1)
            )
        };
        let sql = usage_by("user_id", &filter, limit);
        let rows: Vec<GroupRow> = on_pool!(&self.pool, |p| {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).persistent(false);
            for user in users {
                query = query.bind(user.as_str());
            }
            query
                .fetch_all(p)
                .await
                .during("sum the bytes of each uploader")?
        });
        rows.into_iter()
            .map(|(user, media, bytes, stored)| {
                Ok(Usage {
                    of: user_id("media", &user)?,
                    media: count(media),
                    bytes: count(bytes),
                    stored_bytes: count(stored),
                })
            })
            .collect()
    }

    async fn usage_by_month(&self) -> Result<Vec<Usage<String>>, DbError> {
        let month = match self.dialect {
            Dialect::Sqlite => "strftime('%Y-%m', created_ts / 1000, 'unixepoch')",
            Dialect::Postgres => {
                "to_char(to_timestamp(created_ts / 1000) AT TIME ZONE 'UTC', 'YYYY-MM')"
            }
        };
        let sql = usage_by(month, "", MONTHS_AT_MOST);
        let rows: Vec<GroupRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(p)
                .await
                .during("sum the bytes uploaded each month")?
        });
        let mut months: Vec<Usage<String>> = rows
            .into_iter()
            .map(|(month, media, bytes, stored)| Usage {
                of: month,
                media: count(media),
                bytes: count(bytes),
                stored_bytes: count(stored),
            })
            .collect();
        months.sort_unstable_by(|a, b| a.of.cmp(&b.of));
        Ok(months)
    }

    async fn largest_uploads(&self, keys: &[MediaKey], limit: u32) -> Result<Vec<Upload>, DbError> {
        let filter = if keys.is_empty() {
            String::new()
        } else {
            format!(
                "WHERE (m.origin, m.media_id) IN (VALUES {})",
                values_list(self.dialect, keys.len(), 2)
            )
        };
        let sql = format!(
            "SELECT m.origin, m.media_id, m.user_id, m.size_bytes, m.content_type, m.created_ts, \
             (SELECT COUNT(*) FROM media c WHERE c.sha256 = m.sha256) \
             FROM media m {filter} ORDER BY m.size_bytes DESC, m.origin, m.media_id LIMIT {limit}"
        );
        let rows: Vec<UploadRow> = on_pool!(&self.pool, |p| {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).persistent(false);
            for key in keys {
                query = query.bind(key.origin.as_str()).bind(key.media_id.as_str());
            }
            query.fetch_all(p).await.during("find the largest media")?
        });
        rows.into_iter()
            .map(
                |(origin, media_id, uploader, size, content_type, created_ts, copies)| {
                    Ok(Upload {
                        key: media_key("media", &origin, &media_id)?,
                        uploader: uploader
                            .as_deref()
                            .map(|u| user_id("media", u))
                            .transpose()?,
                        size_bytes: count(size),
                        content_type,
                        created_ts,
                        copies: count(copies),
                    })
                },
            )
            .collect()
    }
}

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
