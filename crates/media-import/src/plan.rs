//! From Synapse's rows to work items: each media with where its bytes are (on disk and
//! over HTTP), what they must be, and its thumbnails; or the failure naming the row.

use std::path::PathBuf;

use media_core::datastore::{Durability, PutOptions};
use media_core::ids::{ServerName, Sha256Hex};
use media_core::records::{ThumbnailMethod, ThumbnailRecord};
use media_synapse::db::{DecodedPage, LocalMediaRow, RemoteMediaRow, ThumbnailRow};
use media_synapse::homeserver::RemoteContent;
use media_synapse::{RowFailure, SynapseMedia, SynapseThumbnail};

use crate::report::{ImportReport, ItemKind};
use crate::shard::Shard;

/// Where to read a file (under the media store, or from the homeserver), and what its
/// bytes must be.
#[derive(Debug, Clone)]
pub(crate) struct SourceFile {
    /// Relative to the media store.
    pub path: PathBuf,
    /// The same bytes over HTTP.
    pub remote: RemoteContent,
    pub expected: PutOptions,
}

/// A thumbnail to store with its media.
#[derive(Debug, Clone)]
pub(crate) struct ThumbnailDraft {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
    pub content_type: String,
    pub file: SourceFile,
}

/// One media to import, with its thumbnails (or why a thumbnail cannot be read).
#[derive(Debug)]
pub(crate) struct WorkItem {
    pub media: SynapseMedia,
    pub content: SourceFile,
    pub thumbnails: Vec<Result<ThumbnailDraft, RowFailure>>,
    /// The digest the repository already records for this media: its bytes are only
    /// compared, never stored again (see `work::check_existing`).
    pub existing: Option<Sha256Hex>,
}

impl WorkItem {
    /// A media whose content is at `media.path` under the media store, with what Synapse
    /// recorded about its bytes.
    fn new(media: SynapseMedia, thumbnails: Vec<Result<SynapseThumbnail, RowFailure>>) -> Self {
        let quarantined = media.quarantined_by.is_some();
        let content = SourceFile {
            path: media.path.clone(),
            remote: RemoteContent::Media {
                key: media.key.clone(),
                quarantined,
            },
            expected: expected(media.sha256.as_deref(), Some(media.length)),
        };
        let thumbnails = thumbnails
            .into_iter()
            .map(|t| {
                t.map(|t| ThumbnailDraft {
                    width: t.width,
                    height: t.height,
                    method: t.method,
                    file: SourceFile {
                        path: t.path,
                        remote: RemoteContent::Thumbnail {
                            key: media.key.clone(),
                            width: t.width,
                            height: t.height,
                            method: t.method,
                            quarantined,
                        },
                        expected: expected(None, t.length),
                    },
                    content_type: t.content_type,
                })
            })
            .collect();
        Self {
            media,
            content,
            thumbnails,
            existing: None,
        }
    }

    /// Drops the thumbnails `recorded` already has (same size, method and type) from a
    /// media the repository records; returns how many were dropped.
    pub(crate) fn drop_recorded_thumbnails(&mut self, recorded: &[ThumbnailRecord]) -> u64 {
        let before = self.thumbnails.len();
        self.thumbnails.retain(|t| {
            !t.as_ref().is_ok_and(|t| {
                recorded.iter().any(|r| {
                    (r.width, r.height, r.method, r.content_type.as_str())
                        == (t.width, t.height, t.method, t.content_type.as_str())
                })
            })
        });
        (before - self.thumbnails.len()) as u64
    }
}

/// The expectations for a file from what Synapse recorded. Its folder is synced once per
/// batch, right before the batch is recorded (see `record::flush`).
fn expected(sha256: Option<&str>, length: Option<u64>) -> PutOptions {
    PutOptions::expecting(
        sha256.and_then(|s| Sha256Hex::parse_any_case(s).ok()),
        length,
    )
    .with_durability(Durability::AfterSync)
}

/// A local media of `server_name` and its thumbnails, as a work item.
pub(crate) fn plan_local(
    row: LocalMediaRow,
    thumbnails: Vec<ThumbnailRow>,
    server_name: &ServerName,
) -> Result<WorkItem, RowFailure> {
    let media = media_synapse::local_media(row, server_name)?;
    let thumbnails = thumbnails
        .into_iter()
        .map(|t| media_synapse::local_thumbnail(&media, t))
        .collect();
    Ok(WorkItem::new(media, thumbnails))
}

/// A cached remote media and its thumbnails, as a work item.
pub(crate) fn plan_remote(
    row: RemoteMediaRow,
    thumbnails: Vec<ThumbnailRow>,
) -> Result<WorkItem, RowFailure> {
    let media = media_synapse::remote_media(row)?;
    let thumbnails = thumbnails
        .into_iter()
        .map(|t| media_synapse::remote_thumbnail(&media, t))
        .collect();
    Ok(WorkItem::new(media, thumbnails))
}

/// The decoded thumbnail rows of a page; those that could not be decoded are counted as
/// failed thumbnails of their media (by the shard of their media).
pub(crate) fn split_thumbnail_rows(
    rows: DecodedPage<ThumbnailRow>,
    server: Option<&ServerName>,
    shard: Shard,
    report: &mut ImportReport,
) -> Vec<ThumbnailRow> {
    let (good, bad) = split_rows(rows, server);
    let failures = bad.into_iter().filter_map(Result::err);
    for failure in failures.filter(|f| shard.takes_label(&f.item)) {
        report.fail(
            RowFailure {
                item: format!("{} thumbnail", failure.item),
                ..failure
            },
            ItemKind::Thumbnail,
        );
    }
    good
}

/// Separates a page's decoded rows from those that could not be decoded, which become
/// failures naming the media (`server`: the origin of local media; remote rows carry
/// theirs in their key).
pub(crate) fn split_rows<T>(
    rows: DecodedPage<T>,
    server: Option<&ServerName>,
) -> (Vec<T>, Vec<Result<WorkItem, RowFailure>>) {
    let mut good = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for row in rows {
        match row {
            Ok(row) => good.push(row),
            Err(error) => bad.push(Err(media_synapse::media::unreadable_row(error, server))),
        }
    }
    (good, bad)
}

/// Takes the thumbnails of one media from a sorted stream of thumbnails: `order` says how
/// a thumbnail's media compares with the current media.
pub(crate) fn take_thumbnails(
    thumbnails: &mut std::iter::Peekable<std::vec::IntoIter<ThumbnailRow>>,
    order: impl Fn(&ThumbnailRow) -> std::cmp::Ordering,
) -> Vec<ThumbnailRow> {
    use std::cmp::Ordering::{Equal, Less};
    while thumbnails.next_if(|t| order(t) == Less).is_some() {}
    let mut own = Vec::new();
    while let Some(t) = thumbnails.next_if(|t| order(t) == Equal) {
        own.push(t);
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_are_matched_to_their_media_in_sorted_order() {
        let row = |id: &str| ThumbnailRow {
            media_origin: None,
            media_id: id.into(),
            thumbnail_width: 1,
            thumbnail_height: 1,
            thumbnail_type: "image/png".into(),
            thumbnail_method: "crop".into(),
            thumbnail_length: None,
            filesystem_id: None,
        };
        let mut all = vec![row("a"), row("b"), row("b"), row("d")]
            .into_iter()
            .peekable();
        let ids = |v: Vec<ThumbnailRow>| v.into_iter().map(|t| t.media_id).collect::<Vec<_>>();
        assert_eq!(
            ids(take_thumbnails(&mut all, |t| t.media_id.as_str().cmp("b"))),
            ["b", "b"]
        );
        assert!(take_thumbnails(&mut all, |t| t.media_id.as_str().cmp("c")).is_empty());
        assert_eq!(
            ids(take_thumbnails(&mut all, |t| t.media_id.as_str().cmp("d"))),
            ["d"]
        );
    }
}
