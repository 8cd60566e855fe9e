//! The producer: reads Synapse's tables page by page and queues a work item per media
//! to import (or lists why a row cannot be imported).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use futures::TryStreamExt;
use media_core::ids::ServerName;
use media_synapse::{RowFailure, SynapseDb};
use tokio::sync::mpsc;

use crate::context::Context;
use crate::error::ImportError;
use crate::plan::{
    WorkItem, plan_local, plan_remote, split_rows, split_thumbnail_rows, take_thumbnails,
};
use crate::report::{FailureReason, ImportReport, ItemFailure, ItemKind};

/// Reads the Synapse tables and queues a work item per importable media.
pub(crate) async fn produce(
    synapse: &SynapseDb,
    context: &Context,
    sender: mpsc::Sender<WorkItem>,
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    let options = &context.options;
    let include = options.include;
    if include.local || include.url_previews {
        let mut pages = synapse.local_media_rows();
        while let Some(rows) = pages.try_next().await? {
            let (page, bad) = split_rows(rows, Some(&options.server_name));
            let thumbnails = match (include.thumbnails, page.first(), page.last()) {
                (true, Some(first), Some(last)) => {
                    synapse
                        .local_thumbnails_between(&first.media_id, &last.media_id)
                        .await?
                }
                _ => Vec::new(),
            };
            let thumbnails = split_thumbnail_rows(
                thumbnails,
                Some(&options.server_name),
                options.shard,
                &mut report,
            );
            let mut thumbnails = thumbnails.into_iter().peekable();
            let mut planned = bad;
            for row in page {
                let own = take_thumbnails(&mut thumbnails, |t| t.media_id.cmp(&row.media_id));
                let wanted = if row.url_cache.is_some() {
                    include.url_previews
                } else {
                    include.local
                };
                if wanted {
                    planned.push(plan_local(row, own, &options.server_name));
                }
            }
            if !dispatch(context, planned, &sender, &mut report).await? {
                return Ok(report);
            }
        }
    }
    if include.remote {
        let mut pages = synapse.remote_media_rows();
        while let Some(rows) = pages.try_next().await? {
            let (page, bad) = split_rows(rows, None);
            let thumbnails = match (include.thumbnails, page.first(), page.last()) {
                (true, Some(first), Some(last)) => {
                    synapse
                        .remote_thumbnails_between(
                            (&first.media_origin, &first.media_id),
                            (&last.media_origin, &last.media_id),
                        )
                        .await?
                }
                _ => Vec::new(),
            };
            let thumbnails = split_thumbnail_rows(thumbnails, None, options.shard, &mut report);
            let mut thumbnails = thumbnails.into_iter().peekable();
            let mut planned = bad;
            for row in page {
                let own = take_thumbnails(&mut thumbnails, |t| {
                    (t.media_origin.as_deref().unwrap_or(""), t.media_id.as_str())
                        .cmp(&(row.media_origin.as_str(), row.media_id.as_str()))
                });
                planned.push(plan_remote(row, own));
            }
            if !dispatch(context, planned, &sender, &mut report).await? {
                return Ok(report);
            }
        }
    }
    // Every row read: the total is exact now (it was an estimate for a shard).
    context
        .progress
        .items_total
        .store(report.media_total, Ordering::Relaxed);
    Ok(report)
}

/// Leaves out the media of other shards, counts the failures of a page, skips the media
/// already recorded (one query per origin, so a resumed import does not touch them
/// again), queues the rest and raises the progress total. Returns false when the workers
/// are gone.
async fn dispatch(
    context: &Context,
    planned: Vec<Result<WorkItem, RowFailure>>,
    sender: &mpsc::Sender<WorkItem>,
    report: &mut ImportReport,
) -> Result<bool, ImportError> {
    let shard = context.options.shard;
    let mut candidates = Vec::with_capacity(planned.len());
    for plan in planned {
        let ours = match &plan {
            Ok(item) => shard.takes(&item.media.key),
            Err(failure) => shard.takes_label(&failure.item),
        };
        if !ours {
            continue;
        }
        report.media_total += 1;
        match plan {
            Ok(item) => candidates.push(item),
            Err(failure) => {
                report.fail(failure, ItemKind::Media);
                context.progress.items_done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let items = leave_out_reserved(context, candidates, report).await?;
    let by_origin = ids_by_origin(&items);
    let mut present = HashMap::new();
    let mut recorded_thumbnails = HashMap::new();
    for (origin, ids) in by_origin {
        let digests = context.sink.existing_media_digests(origin, &ids).await?;
        let present_ids: Vec<&str> = digests.keys().map(String::as_str).collect();
        if !present_ids.is_empty() && context.options.include.thumbnails {
            for (id, thumbnails) in context
                .sink
                .recorded_thumbnails(origin, &present_ids)
                .await?
            {
                recorded_thumbnails.insert((origin.clone(), id), thumbnails);
            }
        }
        for (id, sha256) in digests {
            present.insert((origin.clone(), id), sha256);
        }
    }
    for mut item in items {
        let key = (
            item.media.key.origin.clone(),
            item.media.key.media_id.to_string(),
        );
        item.existing = present.remove(&key);
        if item.existing.is_some() {
            // A recorded media keeps its recorded thumbnails; those it lacks (an earlier
            // run without thumbnails, or made by Synapse since) are still imported.
            let recorded = recorded_thumbnails.remove(&key).unwrap_or_default();
            report.thumbnails_already_present += item.drop_recorded_thumbnails(&recorded);
        }
        if item.existing.is_some()
            && context.options.media_store.is_none()
            && item.thumbnails.is_empty()
        {
            // Only a download could show different bytes: a resumed run over HTTP does
            // not fetch everything again to compare it.
            report.media_already_present += 1;
            context.progress.items_done.fetch_add(1, Ordering::Relaxed);
        } else {
            let sent = tokio::select! {
                biased;
                () = context.abort.cancelled() => false,
                sent = sender.send(item) => sent.is_ok(),
            };
            if !sent {
                return Ok(false);
            }
        }
    }
    // A shard's total starts as an estimate: it grows with what the pages hold.
    context
        .progress
        .items_total
        .fetch_max(report.media_total, Ordering::Relaxed);
    Ok(true)
}

/// Lists the items whose media ID the sink reserved (one query per origin) and returns
/// the others: an import never writes a reserved ID.
async fn leave_out_reserved(
    context: &Context,
    items: Vec<WorkItem>,
    report: &mut ImportReport,
) -> Result<Vec<WorkItem>, ImportError> {
    let by_origin = ids_by_origin(&items);
    let mut reserved = HashMap::new();
    for (origin, ids) in by_origin {
        for (id, reason) in context.sink.reserved_media_ids(origin, &ids).await? {
            reserved.insert((origin.clone(), id), reason);
        }
    }
    if reserved.is_empty() {
        return Ok(items);
    }
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        let key = (
            item.media.key.origin.clone(),
            item.media.key.media_id.to_string(),
        );
        match reserved.remove(&key) {
            None => kept.push(item),
            Some(reason) => {
                report.fail(
                    ItemFailure {
                        item: item.media.key.to_string(),
                        reason: FailureReason::Reserved,
                        detail: format!(
                            "{} reserves this media ID ({reason}): it is never written",
                            context.sink.describe()
                        ),
                    },
                    ItemKind::Media,
                );
                context.progress.items_done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(kept)
}

/// The media IDs of `items`, by origin (for one query per origin).
fn ids_by_origin(items: &[WorkItem]) -> BTreeMap<&ServerName, Vec<&str>> {
    let mut by_origin: BTreeMap<&ServerName, Vec<&str>> = BTreeMap::new();
    for item in items {
        let key = &item.media.key;
        by_origin
            .entry(&key.origin)
            .or_default()
            .push(key.media_id.as_str());
    }
    by_origin
}
