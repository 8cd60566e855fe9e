//! Quarantine: a media and every media with the same bytes (except pinned ones) are
//! quarantined together, and each change is appended to a stream that pages like
//! Synapse's quarantine-changes admin API.

use async_trait::async_trait;
use media_core::ids::Sha256Hex;
use media_core::now_ms;
use media_core::records::MediaKey;

use super::Repository;
use super::sql::append_quarantine_change_in;
use crate::connect::on_pool;
use crate::error::{DbError, QueryContext};
use crate::model::{
    QUARANTINE_CHANGES_PAGE_LIMIT, QuarantineAction, QuarantineChange, QuarantineChangesPage,
    QuarantineReport,
};
use crate::roles::Quarantine;
use crate::rows::media_key;

#[async_trait]
impl Quarantine for Repository {
    async fn set_quarantined(
        &self,
        key: &MediaKey,
        action: QuarantineAction<'_>,
    ) -> Result<QuarantineReport, DbError> {
        let (quarantined, by) = (action.quarantined(), action.by());
        let ts = now_ms();
        on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;
            // The write comes first, so SQLite holds its lock for the whole transaction.
            let changed: Vec<(String, String)> = sqlx::query_as(
                "UPDATE media SET quarantined = $3, quarantined_by = $4 \
                 WHERE sha256 = (SELECT sha256 FROM media WHERE origin = $1 AND media_id = $2) \
                 AND quarantined <> $3 AND purpose <> 'pinned' \
                 RETURNING origin, media_id",
            )
            .bind(key.origin.as_str())
            .bind(key.media_id.as_str())
            .bind(quarantined)
            .bind(by)
            .fetch_all(&mut *tx)
            .await
            .during("update quarantine state")?;
            let skipped_pinned: Option<i64> = sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM media AS same WHERE same.sha256 = target.sha256 \
                 AND same.purpose = 'pinned') FROM media AS target \
                 WHERE target.origin = $1 AND target.media_id = $2",
            )
            .bind(key.origin.as_str())
            .bind(key.media_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .during("count pinned media")?;
            let Some(skipped_pinned) = skipped_pinned else {
                return Err(DbError::NotFound {
                    what: format!("media {key}"),
                });
            };
            let mut report = QuarantineReport {
                changed: Vec::with_capacity(changed.len()),
                skipped_pinned: skipped_pinned as u64,
            };
            for (origin, media_id) in changed {
                append_quarantine_change_in!(&mut *tx, origin, media_id, quarantined, ts)?;
                report.changed.push(media_key("media", &origin, &media_id)?);
            }
            report.changed.sort();
            tx.commit().await.during("commit a quarantine change")?;
            Ok(report)
        })
    }

    async fn quarantine_changes(
        &self,
        from: i64,
        limit: usize,
    ) -> Result<QuarantineChangesPage, DbError> {
        let limit = limit.clamp(1, QUARANTINE_CHANGES_PAGE_LIMIT) as i64;
        let rows: Vec<(i64, String, String, bool, i64)> = on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT stream_id, origin, media_id, quarantined, ts FROM quarantine_changes \
                 WHERE stream_id > $1 ORDER BY stream_id LIMIT $2",
            )
            .bind(from)
            .bind(limit)
            .fetch_all(p)
            .await
            .during("read quarantine changes")?
        });
        let next_batch = rows.last().map_or(from, |r| r.0);
        let changes = rows
            .into_iter()
            .map(|(stream_id, origin, media_id, quarantined, ts)| {
                Ok(QuarantineChange {
                    stream_id,
                    media: media_key("quarantine_changes", &origin, &media_id)?,
                    quarantined,
                    ts,
                })
            })
            .collect::<Result<_, DbError>>()?;
        Ok(QuarantineChangesPage {
            changes,
            next_batch,
        })
    }

    async fn is_hash_quarantined(&self, sha256: &Sha256Hex) -> Result<bool, DbError> {
        let quarantined: Option<i64> = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM media WHERE sha256 = $1 AND quarantined LIMIT 1",
            )
            .bind(sha256.as_str())
            .fetch_optional(p)
            .await
            .during("look up the quarantine of a hash")?
        });
        Ok(quarantined.is_some())
    }
}
