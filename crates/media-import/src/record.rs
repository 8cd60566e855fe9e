//! The recorder: records the stored media with their thumbnails, all that queued up
//! since its last transaction in the next one (group commit: the busier the database,
//! the larger its batches). Blob before row: the datastore is synced first.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use media_core::records::ThumbnailRecord;
use media_db::DbError;
use media_db::repo::InsertOutcome;
use media_synapse::media::thumbnail_label;
use tokio::sync::mpsc;

use crate::context::Context;
use crate::error::ImportError;
use crate::report::{FailureReason, ImportReport, ItemFailure, ItemKind};
use crate::sink::StoredMedia;

/// At most this many media are recorded per transaction. Each transaction rewrites
/// every index page its rows land on (the digests and media IDs are random), and syncs
/// the datastore once: at 512 an import of 100,000 small media wrote 5.7 GB to disk for
/// 200 MB of media and ran at 1.9× `cp -r`; at 4,096 it writes 2.1 GB, at 1.3×.
pub(crate) const MAX_BATCH: usize = 4096;

/// The recorder: records stored media until every worker is done, each transaction
/// taking all that queued up meanwhile (at most [`MAX_BATCH`]).
pub(crate) async fn record(
    context: Arc<Context>,
    mut stored: mpsc::Receiver<StoredMedia>,
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while stored.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if let Err(e) = flush(&context, &mut batch, &mut report).await {
            // Fatal: the workers and the producer stop; run() reports it.
            context.abort.cancel();
            return Err(e);
        }
    }
    Ok(report)
}

/// Records the prepared media (a dry run only counts them).
async fn flush(
    context: &Context,
    pending: &mut Vec<StoredMedia>,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    if pending.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(pending);
    let count = batch.len() as u64;
    if context.options.mode.is_dry_run() {
        report.media_imported += count;
        report.thumbnails_imported += batch.iter().map(|m| m.thumbnails.len() as u64).sum::<u64>();
        context
            .progress
            .items_done
            .fetch_add(count, Ordering::Relaxed);
        return Ok(());
    }
    // Blob before row: every blob of the batch is durable before any row refers to it.
    context.sink.sync().await?;
    let outcomes = match context.sink.record_media(&batch).await {
        Ok(outcomes) => outcomes,
        Err(DbError::BlobMissing { sha256, datastore }) => {
            for media in &batch {
                report.fail(
                    ItemFailure {
                        item: media.record.key.to_string(),
                        reason: FailureReason::RetryLater,
                        detail: format!(
                            "blob {sha256} of this batch vanished from {datastore} while \
                             recording: run the import again"
                        ),
                    },
                    ItemKind::Media,
                );
            }
            context
                .progress
                .items_done
                .fetch_add(count, Ordering::Relaxed);
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    for (media, outcome) in batch.iter().zip(outcomes) {
        let shown = media.record.key.to_string();
        match outcome.media {
            InsertOutcome::Inserted => report.media_imported += 1,
            // The producer found it missing: another run recorded it since.
            InsertOutcome::AlreadyPresent => {
                report.media_already_present += 1;
                report.media_recorded_by_another_run += 1;
            }
            InsertOutcome::Conflict { existing_sha256 } => report.fail(
                ItemFailure {
                    item: shown.clone(),
                    reason: FailureReason::Conflict,
                    detail: format!(
                        "the repository has this media with other bytes ({existing_sha256}); \
                         it was kept, Synapse's copy has {}",
                        media.record.sha256
                    ),
                },
                ItemKind::Media,
            ),
            InsertOutcome::MediaMissing => {}
        }
        for (thumbnail, outcome) in media.thumbnails.iter().zip(outcome.thumbnails) {
            count_thumbnail(report, &shown, thumbnail, outcome);
        }
    }
    context
        .progress
        .items_done
        .fetch_add(count, Ordering::Relaxed);
    Ok(())
}

/// Counts what recording one thumbnail of the media `shown` did (only thumbnails the
/// repository did not record when the run planned them get here).
pub(crate) fn count_thumbnail(
    report: &mut ImportReport,
    shown: &str,
    thumbnail: &ThumbnailRecord,
    outcome: InsertOutcome,
) {
    match outcome {
        InsertOutcome::Inserted => report.thumbnails_imported += 1,
        // The producer left out the recorded ones: another run recorded it since.
        InsertOutcome::AlreadyPresent => {
            report.thumbnails_already_present += 1;
            report.thumbnails_recorded_by_another_run += 1;
        }
        InsertOutcome::Conflict { existing_sha256 } => report.fail(
            ItemFailure {
                item: thumbnail_label(
                    shown,
                    thumbnail.width.into(),
                    thumbnail.height.into(),
                    thumbnail.method.as_str(),
                    &thumbnail.content_type,
                ),
                reason: FailureReason::Conflict,
                detail: format!("the repository has it with other bytes ({existing_sha256})"),
            },
            ItemKind::Thumbnail,
        ),
        InsertOutcome::MediaMissing => {}
    }
}
