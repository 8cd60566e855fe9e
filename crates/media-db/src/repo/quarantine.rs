//! Quarantine: a media and every media with the same bytes (except pinned ones) are
//! quarantined together, and each change is appended to a stream that pages like
//! Synapse's quarantine-changes admin API. Bytes whose quarantined media were purged
//! stay blocked (`blocked_hashes`, see [`crate::Purge`]).

use async_trait::async_trait;
use media_core::ids::Sha256Hex;
use media_core::now_ms;
use media_core::records::MediaKey;

use super::Repository;
use super::sql::{append_quarantine_change_in, retrying_deadlocks};
use crate::connect::on_pool;
use crate::error::{DbError, QueryContext};
use crate::model::{
    QUARANTINE_CHANGES_PAGE_LIMIT, QuarantineAction, QuarantineChange, QuarantineChangesPage,
    QuarantineReport,
};
use crate::roles::Quarantine;
use crate::rows::media_key;

/// (Un)quarantines the media `$key` and every media with the same bytes except pinned
/// ones in the open transaction `$conn`, appending one quarantine change per media
/// changed (stamped `$ts`); evaluates to `Result<Option<QuarantineReport>, DbError>`,
/// none when `$key` is not recorded. A macro so that one body serves both dialects'
/// transaction types.
macro_rules! set_quarantined_in {
    ($conn:expr, $key:expr, $action:expr, $ts:expr) => {
        async {
            let key: &MediaKey = $key;
            let action: QuarantineAction<'_> = $action;
            let quarantined = action.quarantined();
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
            .bind(action.by())
            .fetch_all($conn)
            .await
            .during("update quarantine state")?;
            let target: Option<i64> = sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM media WHERE origin = $1 AND media_id = $2",
            )
            .bind(key.origin.as_str())
            .bind(key.media_id.as_str())
            .fetch_optional($conn)
            .await
            .during("look up a media")?;
            if target.is_none() {
                return Ok(None);
            }
            let pinned: Vec<(String, String)> = sqlx::query_as(
                "SELECT same.origin, same.media_id FROM media AS same \
                 JOIN media AS target ON same.sha256 = target.sha256 \
                 WHERE target.origin = $1 AND target.media_id = $2 \
                 AND same.purpose = 'pinned' ORDER BY same.origin, same.media_id",
            )
            .bind(key.origin.as_str())
            .bind(key.media_id.as_str())
            .fetch_all($conn)
            .await
            .during("list pinned media")?;
            let mut report = QuarantineReport {
                changed: Vec::with_capacity(changed.len()),
                skipped_pinned: pinned.len() as u64,
                pinned: pinned
                    .iter()
                    .map(|(origin, media_id)| media_key("media", origin, media_id))
                    .collect::<Result<_, DbError>>()?,
            };
            for (origin, media_id) in changed {
                append_quarantine_change_in!($conn, origin, media_id, quarantined, $ts)?;
                report.changed.push(media_key("media", &origin, &media_id)?);
            }
            report.changed.sort();
            Ok::<_, DbError>(Some(report))
        }
        .await
    };
}

#[async_trait]
impl Quarantine for Repository {
    async fn set_quarantined(
        &self,
        key: &MediaKey,
        action: QuarantineAction<'_>,
    ) -> Result<QuarantineReport, DbError> {
        match self
            .set_quarantined_keys(std::slice::from_ref(key), action)
            .await?
        {
            (report, true) => Ok(report),
            (_, false) => Err(DbError::NotFound {
                what: format!("media {key}"),
            }),
        }
    }

    async fn set_quarantined_batch(
        &self,
        keys: &[MediaKey],
        action: QuarantineAction<'_>,
    ) -> Result<QuarantineReport, DbError> {
        Ok(self.set_quarantined_keys(keys, action).await?.0)
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
                "SELECT CAST(1 AS BIGINT) FROM media WHERE sha256 = $1 AND quarantined \
                 UNION ALL SELECT CAST(1 AS BIGINT) FROM blocked_hashes WHERE sha256 = $1 \
                 LIMIT 1",
            )
            .bind(sha256.as_str())
            .fetch_optional(p)
            .await
            .during("look up the quarantine of a hash")?
        });
        Ok(quarantined.is_some())
    }
}

impl Repository {
    /// (Un)quarantines each of `keys` with every media sharing its bytes, in one
    /// transaction; returns what changed and whether every key is recorded. Each key
    /// locks every media with its bytes, so two runs (or a run and a pin) over shared
    /// bytes take their row locks in orders of their own: a transaction PostgreSQL
    /// aborts to break a deadlock is tried again ([`retrying_deadlocks`]).
    async fn set_quarantined_keys(
        &self,
        keys: &[MediaKey],
        action: QuarantineAction<'_>,
    ) -> Result<(QuarantineReport, bool), DbError> {
        let ts = now_ms();
        retrying_deadlocks(|| async {
            on_pool!(&self.writer, |p| {
                let mut tx = p
                    .begin_with(self.begin_write())
                    .await
                    .during("begin a transaction")?;
                let mut report = QuarantineReport::default();
                let mut all_recorded = true;
                for key in keys {
                    match set_quarantined_in!(&mut *tx, key, action, ts)? {
                        Some(one) => {
                            report.changed.extend(one.changed);
                            report.pinned.extend(one.pinned);
                        }
                        None => all_recorded = false,
                    }
                }
                tx.commit().await.during("commit quarantine changes")?;
                report.changed.sort();
                report.pinned.sort();
                report.pinned.dedup();
                report.skipped_pinned = report.pinned.len() as u64;
                Ok((report, all_recorded))
            })
        })
        .await
    }
}
