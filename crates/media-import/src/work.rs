//! A worker: takes work items from the queue, streams each file once through the hasher
//! into the datastore (see `copy`), and hands the stored media to the
//! recorder. A media the repository already has is only compared.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use media_core::datastore::{LocalFile, LocalPutResult};
use media_core::hashing::HashingReader;
use media_core::ids::Sha256Hex;
use media_core::records::{MediaRecord, Purpose, ThumbnailRecord};
use media_synapse::media::thumbnail_label;
use media_synapse::{RowFailure, SynapseMedia};
use tokio::io::AsyncReadExt;
use tokio::sync::{Mutex, mpsc};

use crate::ahead::{ItemPuts, put_ahead};
use crate::context::Context;
use crate::copy::{open_failure, open_source_file, store_file};
use crate::error::ImportError;
use crate::plan::{ThumbnailDraft, WorkItem};
use crate::record::count_thumbnail;
use crate::report::{FailureReason, ImportReport, ItemFailure, ItemKind};
use crate::sink::{Content, StoredMedia};

/// Items a worker takes from the queue at once: their small files are put ahead in one
/// blocking call (see `ahead`).
pub(crate) const ITEMS_PER_TAKE: usize = 8;

/// A worker: stores items until the queue is closed and empty, and hands each stored
/// media to the recorder.
pub(crate) async fn work(
    queue: Arc<Mutex<mpsc::Receiver<WorkItem>>>,
    context: Arc<Context>,
    recorder: mpsc::Sender<StoredMedia>,
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    let mut items = Vec::with_capacity(ITEMS_PER_TAKE);
    loop {
        let taken = tokio::select! {
            biased;
            () = context.abort.cancelled() => break,
            taken = take(&queue, &mut items) => taken,
        };
        if taken == 0 {
            break;
        }
        let answers = put_ahead(&context, &items).await;
        for (item, ahead) in items.drain(..).zip(answers) {
            if context.abort.is_cancelled() {
                return Ok(report);
            }
            let media = match prepare(&context, item, ahead, &mut report).await {
                Ok(media) => media,
                Err(e) => {
                    // Fatal: stop the producer and the other workers; run() reports it.
                    context.abort.cancel();
                    return Err(e);
                }
            };
            if let Some(media) = media
                && recorder.send(media).await.is_err()
            {
                // The recorder failed (and cancelled); run() reports its error.
                return Ok(report);
            }
        }
    }
    Ok(report)
}

/// Takes up to [`ITEMS_PER_TAKE`] items into `items` (waiting for one); 0 once the
/// queue is closed and empty.
async fn take(queue: &Mutex<mpsc::Receiver<WorkItem>>, items: &mut Vec<WorkItem>) -> usize {
    queue.lock().await.recv_many(items, ITEMS_PER_TAKE).await
}

/// Stores the bytes of one item and its thumbnails; `None` when it needs no recording
/// (already present, or failed: counted in `report`).
async fn prepare(
    context: &Context,
    item: WorkItem,
    ahead: ItemPuts,
    report: &mut ImportReport,
) -> Result<Option<StoredMedia>, ImportError> {
    let shown = item.media.key.to_string();
    let done = || context.progress.items_done.fetch_add(1, Ordering::Relaxed);
    if let Some(existing) = &item.existing {
        if check_existing(context, &item, existing, report).await {
            add_missing_thumbnails(context, item, ahead.thumbnails, report).await?;
        }
        done();
        return Ok(None);
    }
    let store = context.sink.datastore_for(&item.media.key, Content::Media);
    let content = match store_file(context, &**store, &item.content, ahead.media, report).await? {
        Ok(put) => put,
        Err((reason, detail)) => {
            report.fail(
                ItemFailure {
                    item: shown,
                    reason,
                    detail,
                },
                ItemKind::Media,
            );
            done();
            return Ok(None);
        }
    };
    let thumbnails = store_thumbnails(
        context,
        &item.media,
        item.thumbnails,
        ahead.thumbnails,
        report,
    )
    .await?;
    let m = item.media;
    Ok(Some(StoredMedia {
        record: MediaRecord {
            key: m.key,
            sha256: content.blob.sha256,
            size_bytes: content.blob.size,
            upload_name: m.upload_name,
            content_type: m.content_type,
            uploader: m.uploader,
            created_ts: m.created_ts,
            last_access_ts: m.last_access_ts,
            quarantined: m.quarantined_by.is_some(),
            quarantined_by: m.quarantined_by,
            purpose: Purpose::None,
            imported_from: Some(context.options.source_label.clone()),
        },
        thumbnails,
    }))
}

/// Stores the bytes of a media's thumbnails (taking what a put ahead answered, by
/// thumbnail); those that fail are counted in `report`.
async fn store_thumbnails(
    context: &Context,
    media: &SynapseMedia,
    drafts: Vec<Result<ThumbnailDraft, RowFailure>>,
    ahead: Vec<Option<LocalPutResult>>,
    report: &mut ImportReport,
) -> Result<Vec<ThumbnailRecord>, ImportError> {
    let shown = media.key.to_string();
    let store = context.sink.datastore_for(&media.key, Content::Thumbnail);
    let mut thumbnails = Vec::with_capacity(drafts.len());
    for (t, ahead) in drafts.into_iter().zip(ahead) {
        let t = match t {
            Ok(t) => t,
            Err(failure) => {
                report.fail(failure, ItemKind::Thumbnail);
                continue;
            }
        };
        match store_file(context, &**store, &t.file, ahead, report).await? {
            Ok(put) => thumbnails.push(ThumbnailRecord {
                media: media.key.clone(),
                width: t.width,
                height: t.height,
                method: t.method,
                content_type: t.content_type,
                animated: false,
                sha256: put.blob.sha256,
                size_bytes: put.blob.size,
                created_ts: media.created_ts,
            }),
            Err((reason, detail)) => report.fail(
                ItemFailure {
                    item: thumbnail_label(
                        &shown,
                        t.width.into(),
                        t.height.into(),
                        t.method.as_str(),
                        &t.content_type,
                    ),
                    reason,
                    detail,
                },
                ItemKind::Thumbnail,
            ),
        }
    }
    Ok(thumbnails)
}

/// Imports the thumbnails a recorded media lacks (the producer dropped the recorded
/// ones): an earlier run left them out (`--include` without thumbnails), or Synapse made
/// them since. A dry run only counts them.
async fn add_missing_thumbnails(
    context: &Context,
    item: WorkItem,
    ahead: Vec<Option<LocalPutResult>>,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    let thumbnails = store_thumbnails(context, &item.media, item.thumbnails, ahead, report).await?;
    if thumbnails.is_empty() {
        return Ok(());
    }
    if context.options.mode.is_dry_run() {
        report.thumbnails_imported += thumbnails.len() as u64;
        return Ok(());
    }
    // Blob before row: the thumbnails' bytes are durable before their rows.
    context.sink.sync().await?;
    let shown = item.media.key.to_string();
    for thumbnail in &thumbnails {
        let outcome = context.sink.record_thumbnail(thumbnail).await?;
        count_thumbnail(report, &shown, thumbnail, outcome);
    }
    Ok(())
}

/// A media the repository already records: compares the bytes of Synapse's file with
/// the recorded digest, never writing anything. The same bytes count as already
/// present (and it returns true); other bytes are a [`FailureReason::Conflict`] naming
/// both digests, and the repository keeps its own. (A resumed run thus reads every media imported before
/// once more: reading is much cheaper than the writes and syncs of importing, and only
/// reading shows that Synapse's file changed. A file gone from the media store leaves
/// nothing to compare but the digest Synapse recorded.)
async fn check_existing(
    context: &Context,
    item: &WorkItem,
    existing: &Sha256Hex,
    report: &mut ImportReport,
) -> bool {
    let shown = item.media.key.to_string();
    let recorded = item
        .media
        .sha256
        .as_deref()
        .and_then(|s| Sha256Hex::parse_any_case(s).ok());
    let Some(root) = &context.options.media_store else {
        report.media_already_present += 1;
        return true;
    };
    let path = root.join(&item.content.path);
    let synapse_has = match digest_on_disk(
        root,
        &item.content.path,
        item.content.expected.expected.size,
    )
    .await
    {
        Ok((sha256, size)) => {
            report.bytes_read += size;
            context.progress.bytes.fetch_add(size, Ordering::Relaxed);
            if &sha256 == existing {
                report.media_already_present += 1;
                return true;
            }
            format!("Synapse's file {} has {sha256}", path.display())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match recorded {
            Some(recorded) if &recorded != existing => {
                format!("Synapse recorded {recorded} (its file is gone)")
            }
            _ => {
                report.media_already_present += 1;
                return true;
            }
        },
        Err(e) => {
            let (reason, detail) = open_failure(&path, e);
            report.fail(
                ItemFailure {
                    item: shown,
                    reason,
                    detail: format!("{detail} (the repository already has this media)"),
                },
                ItemKind::Media,
            );
            return false;
        }
    };
    report.fail(
        ItemFailure {
            item: shown,
            reason: FailureReason::Conflict,
            detail: format!(
                "the repository has this media with other bytes ({existing}); it was kept, \
                 {synapse_has}"
            ),
        },
        ItemKind::Media,
    );
    false
}

/// The digest and length of a file in the media store, read like an import reads it
/// (no links, regular files only, at most one byte past the recorded length).
async fn digest_on_disk(
    root: &Path,
    relative: &Path,
    recorded: Option<u64>,
) -> std::io::Result<(Sha256Hex, u64)> {
    let (root, relative) = (root.to_owned(), relative.to_owned());
    let opened = tokio::task::spawn_blocking(move || open_source_file(&root, &relative, recorded))
        .await
        .map_err(std::io::Error::other)??;
    match opened {
        LocalFile::Read(bytes) => Ok((media_core::hashing::sha256_of(&bytes), bytes.len() as u64)),
        LocalFile::Stream(file, limit) => {
            let mut reader = HashingReader::new(tokio::fs::File::from_std(file).take(limit));
            tokio::io::copy(&mut reader, &mut tokio::io::sink()).await?;
            Ok(reader.finish())
        }
    }
}
