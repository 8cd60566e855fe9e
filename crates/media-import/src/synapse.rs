//! Import a Synapse media store into our repository: local media, remote media, their
//! thumbnails, URL previews, quarantine state, and avatars pinned.
//!
//! A producer reads the Synapse tables page by page and turns each row into a work item
//! (or a listed failure: invalid identifiers never become paths); `workers` tasks pull
//! items from a bounded queue and stream each file once through the hasher into the
//! datastore; one recorder records the stored media together with their thumbnails, all
//! that have queued up since its last transaction in the next one (group commit: the
//! busier the database, the larger its batches). The repository's unique keys decide
//! deduplication, so any number of workers gives the same result, and a re-run skips
//! every media already recorded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::TryStreamExt;
use media_core::datastore::{Datastore, Durability, Put, PutOptions, PutStatus, StoreError};
use media_core::hashing::HashingReader;
use media_core::ids::{MediaId, MxcUri, ServerName, Sha256Hex, UserId};
use media_core::progress::{Progress, human_size};
use media_core::records::{MediaKey, MediaRecord, Purpose, ThumbnailMethod, ThumbnailRecord};
use media_core::run::{Classify, ErrorClass};
use media_db::DbError;
use media_db::repo::{DatastoreId, InsertOutcome, NewMedia, Repository};
use media_db::synapse::{AvatarRow, LocalMediaRow, RemoteMediaRow, SynapseDb, ThumbnailRow};
use media_db::{BlobIndex, MediaIndex, TaskKind, TaskLog};
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::homeserver::{DownloadFailure, HomeserverClient, RemoteContent};
use crate::synapse_files;
use crate::synapse_paths::{self, ThumbnailName};

/// At most this many media are recorded per transaction.
const MAX_BATCH: usize = 512;
/// Stored media waiting for the recorder; workers wait when it is full.
const RECORD_QUEUE: usize = 2 * MAX_BATCH;
/// Failures listed in a report; more are only counted.
const MAX_LISTED_FAILURES: usize = 10_000;

/// Which kinds of Synapse media to import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Include {
    /// Media uploaded by local users.
    pub local: bool,
    /// Cached copies of other servers' media.
    pub remote: bool,
    /// Thumbnails of the imported media.
    pub thumbnails: bool,
    /// Media fetched for URL previews.
    pub url_previews: bool,
}

impl Default for Include {
    fn default() -> Self {
        Self {
            local: true,
            remote: true,
            thumbnails: true,
            url_previews: true,
        }
    }
}

impl FromStr for Include {
    type Err = String;

    /// A comma-separated list of `local`, `remote`, `thumbnails`, `url-previews`.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let mut include = Include {
            local: false,
            remote: false,
            thumbnails: false,
            url_previews: false,
        };
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "local" => include.local = true,
                "remote" => include.remote = true,
                "thumbnails" => include.thumbnails = true,
                "url-previews" | "url_previews" => include.url_previews = true,
                other => {
                    return Err(format!(
                        "unknown kind {other:?}: use a comma-separated list of local, remote, \
                         thumbnails, url-previews"
                    ));
                }
            }
        }
        if !(include.local || include.remote || include.url_previews) {
            return Err("nothing to import: include local, remote or url-previews".into());
        }
        Ok(include)
    }
}

/// How to run an import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Synapse's `media_store_path` (`None`: everything comes from the homeserver).
    pub media_store: Option<PathBuf>,
    /// Where to download media whose file is missing (or all media, when there is no
    /// media store).
    pub homeserver: Option<HomeserverClient>,
    /// The Synapse server's name (the origin of its local media).
    pub server_name: ServerName,
    /// What to import.
    pub include: Include,
    /// Files copied concurrently.
    pub workers: usize,
    /// Read and check everything, write nothing.
    pub dry_run: bool,
    /// Recorded as `imported_from` on every media (e.g. `synapse:/srv/homeserver.db`).
    pub source_label: String,
}

/// Why an item was not imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// A media created with `/create` and never uploaded: there are no bytes.
    NeverUploaded,
    /// The file is not in the media store.
    FileMissing,
    /// The bytes do not match the SHA-256 Synapse recorded (bit rot).
    Corrupt,
    /// The content is longer or shorter than the length Synapse recorded (reading stops
    /// one byte past it).
    SizeMismatch,
    /// An identifier in the row is not valid; no path was built from it.
    InvalidIdentifier,
    /// The row's values cannot be read (text that is not UTF-8, text in a number
    /// column, a negative or impossible length).
    BadRow,
    /// The file could not be read.
    Unreadable,
    /// The repository already has this media (or thumbnail) with other bytes; kept as is.
    Conflict,
    /// The bytes vanished from the datastore while recording (a concurrent purge); run
    /// the import again.
    RetryLater,
}

impl FailureReason {
    /// The reason as a code, as reports write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NeverUploaded => "never_uploaded",
            Self::FileMissing => "file_missing",
            Self::Corrupt => "corrupt",
            Self::SizeMismatch => "size_mismatch",
            Self::InvalidIdentifier => "invalid_identifier",
            Self::BadRow => "bad_row",
            Self::Unreadable => "unreadable",
            Self::Conflict => "conflict",
            Self::RetryLater => "retry_later",
        }
    }
}

/// One item that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemFailure {
    /// The media (`mxc://…`) or thumbnail (`mxc://… thumbnail WxH method type`).
    pub item: String,
    /// The reason, as a code.
    pub reason: FailureReason,
    /// The details: path, expected and actual values, the error.
    pub detail: String,
}

/// What an import did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// True when nothing was written.
    pub dry_run: bool,
    /// Media rows considered.
    pub media_total: u64,
    /// Media recorded by this run.
    pub media_imported: u64,
    /// Media that were already in the repository.
    pub media_already_present: u64,
    /// Media not imported (listed in `failures`).
    pub media_failed: u64,
    /// Thumbnails recorded by this run.
    pub thumbnails_imported: u64,
    /// Thumbnails already in the repository.
    pub thumbnails_already_present: u64,
    /// Thumbnails not imported (listed in `failures`).
    pub thumbnails_failed: u64,
    /// New blobs written to the datastore.
    pub blobs_written: u64,
    /// Bytes read from the media store.
    pub bytes_read: u64,
    /// Bytes written to the datastore.
    pub bytes_written: u64,
    /// Bytes not written because the same content was already stored.
    pub bytes_deduplicated: u64,
    /// Media pinned because they are in use as avatars.
    pub avatars_pinned: u64,
    /// Avatar references to media that are not in the repository.
    pub avatars_not_in_repository: u64,
    /// Avatar rows that could not be read or whose URL is not a valid MXC URI (listed in
    /// `failures`); the other avatars are still pinned.
    pub avatars_failed: u64,
    /// Items that were not imported (at most 10,000 are listed).
    pub failures: Vec<ItemFailure>,
    /// Failures beyond those listed.
    pub failures_not_listed: u64,
}

impl media_core::run::Report for ImportReport {
    fn mode(&self) -> media_core::run::RunMode {
        media_core::run::RunMode::from_dry_run(self.dry_run)
    }

    /// Whether any item failed (the tools then exit with code 1).
    fn has_failures(&self) -> bool {
        self.media_failed + self.thumbnails_failed + self.avatars_failed > 0
    }
}

impl ImportReport {
    fn fail(&mut self, failure: ItemFailure, thumbnail: bool) {
        if thumbnail {
            self.thumbnails_failed += 1;
        } else {
            self.media_failed += 1;
        }
        self.list(failure);
    }

    /// Lists a failure, or only counts it once the list is full.
    fn list(&mut self, failure: ItemFailure) {
        if self.failures.len() < MAX_LISTED_FAILURES {
            self.failures.push(failure);
        } else {
            self.failures_not_listed += 1;
        }
    }

    fn merge(&mut self, other: ImportReport) {
        self.media_total += other.media_total;
        self.media_imported += other.media_imported;
        self.media_already_present += other.media_already_present;
        self.media_failed += other.media_failed;
        self.thumbnails_imported += other.thumbnails_imported;
        self.thumbnails_already_present += other.thumbnails_already_present;
        self.thumbnails_failed += other.thumbnails_failed;
        self.blobs_written += other.blobs_written;
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.bytes_deduplicated += other.bytes_deduplicated;
        self.avatars_pinned += other.avatars_pinned;
        self.avatars_not_in_repository += other.avatars_not_in_repository;
        self.avatars_failed += other.avatars_failed;
        for failure in other.failures {
            self.list(failure);
        }
        self.failures_not_listed += other.failures_not_listed;
    }

    /// The counters as JSON, without the failure list (for the task log).
    pub fn counters_json(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.remove("failures");
        }
        value.to_string()
    }
}

/// Errors that stop an import (per-item problems are failures in the report instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Our repository or the Synapse database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The datastore failed (full disk, permissions): not a problem of one item.
    #[error("the datastore failed: {0}")]
    Store(#[from] StoreError),
    /// A setting that cannot work.
    #[error("{0}")]
    Config(String),
    /// An import worker stopped unexpectedly.
    #[error("an import worker failed: {0}")]
    Worker(String),
}

impl Classify for ImportError {
    /// A setting that cannot work or a database or datastore the operator pointed at
    /// wrongly is a usage error; anything failing during the run is fatal.
    fn class(&self) -> ErrorClass {
        match self {
            Self::Config(_) => ErrorClass::Usage,
            Self::Db(e) => e.class(),
            Self::Store(StoreError::Config(_)) => ErrorClass::Usage,
            Self::Store(_) | Self::Worker(_) => ErrorClass::Fatal,
        }
    }
}

/// The server name to import under: `given` when it matches the Synapse users, else the
/// one server all local users belong to.
pub async fn resolve_server_name(
    synapse: &SynapseDb,
    given: Option<ServerName>,
) -> Result<ServerName, ImportError> {
    let found = synapse.user_server_names().await?;
    match (given, found.as_slice()) {
        (Some(given), []) => Ok(given),
        (Some(given), servers) if servers.iter().any(|s| s == given.as_str()) => Ok(given),
        (Some(given), servers) => Err(ImportError::Config(format!(
            "--server-name {given} does not match the users of this Synapse database \
             (they are on {}): check that this is the right database",
            servers.join(", ")
        ))),
        (None, [one]) => ServerName::try_from(one.as_str()).map_err(|e| {
            ImportError::Config(format!(
                "the users of this Synapse database are on {one:?}, which is not a valid \
                 server name ({e}): pass --server-name"
            ))
        }),
        (None, []) => Err(ImportError::Config(
            "this Synapse database has no users to derive the server name from: pass \
             --server-name"
                .into(),
        )),
        (None, servers) => Err(ImportError::Config(format!(
            "the users of this Synapse database are on several servers ({}): pass \
             --server-name",
            servers.join(", ")
        ))),
    }
}

/// Where to read a file (under the media store, or from the homeserver), and what its
/// bytes must be.
#[derive(Debug, Clone)]
struct SourceFile {
    /// Relative to the media store.
    path: PathBuf,
    /// The same bytes over HTTP.
    remote: RemoteContent,
    expected: PutOptions,
}

/// A Synapse media whose identifiers were checked, and where its bytes are.
#[derive(Debug, Clone)]
pub struct SynapseMedia {
    /// Origin and media ID.
    pub key: MediaKey,
    /// The upload file name.
    pub upload_name: Option<String>,
    /// The MIME type.
    pub content_type: Option<String>,
    /// The uploader (local media only).
    pub uploader: Option<UserId>,
    /// Creation time, ms.
    pub created_ts: i64,
    /// Last download, ms.
    pub last_access_ts: Option<i64>,
    /// The admin who quarantined it, when it is quarantined.
    pub quarantined_by: Option<String>,
    /// Its content's path relative to the media store, built from checked parts only.
    pub path: PathBuf,
    /// The SHA-256 Synapse recorded (absent before Synapse 1.128).
    pub sha256: Option<String>,
    /// The length Synapse recorded (a negative one is refused as a
    /// [`FailureReason::BadRow`]).
    pub length: u64,
    /// Whether it is a URL-preview media.
    pub url_preview: bool,
}

#[derive(Debug, Clone)]
struct ThumbnailDraft {
    width: u32,
    height: u32,
    method: ThumbnailMethod,
    content_type: String,
    file: SourceFile,
}

/// One media to import, with its thumbnails (or why a thumbnail cannot be read).
#[derive(Debug)]
struct WorkItem {
    media: SynapseMedia,
    content: SourceFile,
    thumbnails: Vec<Result<ThumbnailDraft, ItemFailure>>,
    /// The digest the repository already records for this media: its bytes are only
    /// compared, never stored again ([`check_existing`]).
    existing: Option<Sha256Hex>,
}

impl WorkItem {
    /// A media whose content is at `path` under the media store, with what Synapse
    /// recorded about its bytes.
    fn new(media: SynapseMedia, thumbnails: Vec<Result<ThumbnailDraft, ItemFailure>>) -> Self {
        let remote = RemoteContent::Media {
            key: media.key.clone(),
            quarantined: media.quarantined_by.is_some(),
        };
        let content = SourceFile {
            path: media.path.clone(),
            remote,
            expected: expected(media.sha256.as_deref(), Some(media.length)),
        };
        Self {
            media,
            content,
            thumbnails,
            existing: None,
        }
    }
}

/// What the workers share.
struct Context {
    repo: Repository,
    store: Arc<dyn Datastore>,
    datastore_id: Option<DatastoreId>,
    options: ImportOptions,
    progress: Arc<Progress>,
    /// Digests seen by a dry run (a real run lets the repository decide).
    dry_run_seen: std::sync::Mutex<HashSet<Sha256Hex>>,
    /// Cancelled by the first fatal error: the producer stops queueing, the workers stop
    /// taking items, and every task ends, so that the run reports the error instead of
    /// waiting forever.
    abort: CancellationToken,
}

/// Imports a Synapse media store. See the [module documentation](self).
pub async fn import_synapse(
    synapse: &SynapseDb,
    repo: &Repository,
    store: Arc<dyn Datastore>,
    options: ImportOptions,
    progress: Arc<Progress>,
) -> Result<ImportReport, ImportError> {
    let workers = options.workers.max(1);
    let datastore_id = if options.dry_run {
        repo.find_datastore(&store.uri()).await?
    } else {
        Some(repo.register_datastore(&store.uri()).await?)
    };
    let (local, remote) = synapse.media_counts().await?;
    let total = u64::from(options.include.local || options.include.url_previews) * local
        + u64::from(options.include.remote) * remote;
    progress.items_total.store(total, Ordering::Relaxed);

    let task = if options.dry_run {
        None
    } else {
        let params = serde_json::json!({
            "source": options.source_label,
            "media_store": options.media_store,
            "homeserver": options.homeserver.as_ref().map(|h| h.base_url().to_string()),
            "server_name": options.server_name.as_str(),
            "include": options.include,
            "workers": workers,
            "datastore": store.uri(),
        });
        Some(repo.start_task(TaskKind::ImportSynapse, &params).await?)
    };

    let context = Arc::new(Context {
        repo: repo.clone(),
        store,
        datastore_id,
        options,
        progress,
        dry_run_seen: Default::default(),
        abort: CancellationToken::new(),
    });
    let result = run(synapse, context.clone(), workers).await;
    if let Some(task) = task {
        let (counters, error) = match &result {
            Ok(report) => (report.counters_json(), None),
            Err(e) => ("{}".to_owned(), Some(e.to_string())),
        };
        repo.finish_task(task, &counters, error.as_deref()).await?;
    }
    result
}

async fn run(
    synapse: &SynapseDb,
    context: Arc<Context>,
    workers: usize,
) -> Result<ImportReport, ImportError> {
    let (sender, receiver) = mpsc::channel::<WorkItem>(workers * 4);
    let receiver = Arc::new(Mutex::new(receiver));
    let (to_record, stored) = mpsc::channel::<NewMedia>(RECORD_QUEUE);
    let recorder = tokio::spawn(record(context.clone(), stored));
    let mut handles: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(work(receiver.clone(), context.clone(), to_record.clone())))
        .collect();
    // Only the workers hold the queue and the recorder's inbox: once they are gone, the
    // producer's sends fail instead of waiting for room that never comes.
    drop((receiver, to_record));
    let produced = produce(synapse, &context, sender).await;
    if produced.is_err() {
        context.abort.cancel();
    }
    let mut report = ImportReport {
        dry_run: context.options.dry_run,
        ..Default::default()
    };
    let mut first_error = None;
    match produced {
        Ok(part) => report.merge(part),
        Err(e) => first_error = Some(e),
    }
    // The recorder ends once every worker is done; its error, if any, is the cause of
    // theirs.
    handles.insert(0, recorder);
    for handle in handles {
        match handle.await {
            Ok(Ok(part)) => report.merge(part),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(ImportError::Worker(e.to_string()));
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    if !context.options.dry_run {
        pin_avatars(synapse, &context, &mut report).await?;
    }
    report
        .failures
        .sort_by(|a, b| a.item.cmp(&b.item).then(a.detail.cmp(&b.detail)));
    Ok(report)
}

/// Reads the Synapse tables and queues a work item per importable media.
async fn produce(
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
            let thumbnails =
                split_thumbnail_rows(thumbnails, Some(&options.server_name), &mut report);
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
                    planned.push(plan_local(row, own, options));
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
            let thumbnails = split_thumbnail_rows(thumbnails, None, &mut report);
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
    Ok(report)
}

/// Counts the failures of a page, skips the media already recorded (one query per
/// origin, so a resumed import does not touch them again), and queues the rest. Returns
/// false when the workers are gone.
async fn dispatch(
    context: &Context,
    planned: Vec<Result<WorkItem, ItemFailure>>,
    sender: &mpsc::Sender<WorkItem>,
    report: &mut ImportReport,
) -> Result<bool, ImportError> {
    let mut items = Vec::with_capacity(planned.len());
    for plan in planned {
        report.media_total += 1;
        match plan {
            Ok(item) => items.push(item),
            Err(failure) => {
                report.fail(failure, false);
                context.progress.items_done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let mut by_origin: BTreeMap<&ServerName, Vec<&str>> = BTreeMap::new();
    for item in &items {
        let key = &item.media.key;
        by_origin
            .entry(&key.origin)
            .or_default()
            .push(key.media_id.as_str());
    }
    let mut present = HashMap::new();
    for (origin, ids) in by_origin {
        for (id, sha256) in context.repo.existing_media_digests(origin, &ids).await? {
            present.insert((origin.clone(), id), sha256);
        }
    }
    for mut item in items {
        let key = &item.media.key;
        item.existing = present.remove(&(key.origin.clone(), key.media_id.to_string()));
        if item.existing.is_some() && context.options.media_store.is_none() {
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
    Ok(true)
}

/// The decoded thumbnail rows of a page; those that could not be decoded are counted as
/// failed thumbnails of their media.
fn split_thumbnail_rows(
    rows: media_db::synapse::DecodedPage<ThumbnailRow>,
    server: Option<&ServerName>,
    report: &mut ImportReport,
) -> Vec<ThumbnailRow> {
    let (good, bad) = split_rows(rows, server);
    for failure in bad.into_iter().filter_map(Result::err) {
        report.fail(
            ItemFailure {
                item: format!("{} thumbnail", failure.item),
                ..failure
            },
            true,
        );
    }
    good
}

/// Separates a page's decoded rows from those that could not be decoded, which become
/// failures naming the media (`server`: the origin of local media; remote rows carry
/// theirs in their key).
fn split_rows<T>(
    rows: media_db::synapse::DecodedPage<T>,
    server: Option<&ServerName>,
) -> (Vec<T>, Vec<Result<WorkItem, ItemFailure>>) {
    let mut good = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for row in rows {
        match row {
            Ok(row) => good.push(row),
            Err(DbError::InvalidRow { table, key, reason }) => {
                let item = match server {
                    _ if key.starts_with("key unreadable") => format!("a row of {table} ({key})"),
                    Some(server) => format!("mxc://{server}/{key}"),
                    None => format!("mxc://{key}"),
                };
                bad.push(Err(ItemFailure {
                    item,
                    reason: FailureReason::BadRow,
                    detail: format!("this row of {table} cannot be read: {reason}"),
                }));
            }
            Err(other) => bad.push(Err(ItemFailure {
                item: "a Synapse media row".into(),
                reason: FailureReason::BadRow,
                detail: other.to_string(),
            })),
        }
    }
    (good, bad)
}

/// Takes the thumbnails of one media from a sorted stream of thumbnails: `order` says how
/// a thumbnail's media compares with the current media.
fn take_thumbnails(
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

fn invalid(item: &str, what: impl std::fmt::Display) -> ItemFailure {
    ItemFailure {
        item: item.to_owned(),
        reason: FailureReason::InvalidIdentifier,
        detail: what.to_string(),
    }
}

/// The expectations for a file from what Synapse recorded. Its folder is synced once per
/// batch, right before the batch is recorded ([`flush`]).
fn expected(sha256: Option<&str>, length: Option<u64>) -> PutOptions {
    PutOptions::expecting(
        sha256.and_then(|s| Sha256Hex::parse_any_case(s).ok()),
        length,
    )
    .with_durability(Durability::AfterSync)
}

/// A length as Synapse recorded it (`BIGINT`), or the failure of an impossible one: a
/// negative length is never taken for "unknown" or for 0.
fn recorded_length(item: &str, column: &str, length: i64) -> Result<u64, ItemFailure> {
    u64::try_from(length).map_err(|_| ItemFailure {
        item: item.to_owned(),
        reason: FailureReason::BadRow,
        detail: format!(
            "{column} is {length}: a length cannot be negative; fix this row in Synapse's \
             database"
        ),
    })
}

fn plan_local(
    row: LocalMediaRow,
    thumbnails: Vec<ThumbnailRow>,
    options: &ImportOptions,
) -> Result<WorkItem, ItemFailure> {
    let media = local_media(row, &options.server_name)?;
    let thumbnails = thumbnails
        .into_iter()
        .map(|t| {
            plan_thumbnail(&media.key, media.quarantined_by.is_some(), t, |name| {
                synapse_paths::local_thumbnail(&media.key.media_id, media.url_preview, name)
            })
        })
        .collect();
    Ok(WorkItem::new(media, thumbnails))
}

fn plan_remote(
    row: RemoteMediaRow,
    thumbnails: Vec<ThumbnailRow>,
) -> Result<WorkItem, ItemFailure> {
    let media = remote_media(row)?;
    let thumbnails = thumbnails
        .into_iter()
        .map(|t| {
            let fid = t
                .filesystem_id
                .as_deref()
                .and_then(|f| MediaId::try_from(f).ok());
            plan_thumbnail(&media.key, media.quarantined_by.is_some(), t, |name| {
                synapse_paths::remote_thumbnail(&media.key.origin, fid.as_ref()?, name)
            })
        })
        .collect();
    Ok(WorkItem::new(media, thumbnails))
}

/// Checks a `local_media_repository` row of the server `server_name` and finds its file.
pub fn local_media(
    row: LocalMediaRow,
    server_name: &ServerName,
) -> Result<SynapseMedia, ItemFailure> {
    let shown = format!("mxc://{server_name}/{}", row.media_id);
    let media_id = MediaId::try_from(row.media_id.as_str()).map_err(|e| invalid(&shown, e))?;
    let key = MediaKey::new(server_name.clone(), media_id);
    let shown = key.to_string();
    let uploader = row
        .user_id
        .as_deref()
        .map(UserId::try_from)
        .transpose()
        .map_err(|e| invalid(&shown, e))?;
    let Some(length) = row.media_length else {
        return Err(ItemFailure {
            item: shown,
            reason: FailureReason::NeverUploaded,
            detail: "created but never uploaded: Synapse has no bytes for it".into(),
        });
    };
    let length = recorded_length(&shown, "media_length", length)?;
    let url_preview = row.url_cache.is_some();
    let path = synapse_paths::local_content(&key.media_id, url_preview)
        .ok_or_else(|| invalid(&shown, "the media ID does not map to a Synapse path"))?;
    Ok(SynapseMedia {
        key,
        upload_name: row.upload_name,
        content_type: row.media_type.filter(|t| !t.is_empty()),
        uploader,
        created_ts: row.created_ts,
        last_access_ts: row.last_access_ts,
        quarantined_by: row.quarantined_by,
        path,
        sha256: row.sha256,
        length,
        url_preview,
    })
}

/// Checks a `remote_media_cache` row and finds its file.
pub fn remote_media(row: RemoteMediaRow) -> Result<SynapseMedia, ItemFailure> {
    let shown = format!("mxc://{}/{}", row.media_origin, row.media_id);
    let origin = ServerName::try_from(row.media_origin.as_str()).map_err(|e| invalid(&shown, e))?;
    let media_id = MediaId::try_from(row.media_id.as_str()).map_err(|e| invalid(&shown, e))?;
    let key = MediaKey::new(origin, media_id);
    let filesystem_id = row
        .filesystem_id
        .as_deref()
        .map(MediaId::try_from)
        .transpose()
        .map_err(|e| invalid(&shown, format!("filesystem_id: {e}")))?
        .ok_or_else(|| invalid(&shown, "filesystem_id is NULL"))?;
    let Some(length) = row.media_length else {
        return Err(ItemFailure {
            item: shown,
            reason: FailureReason::NeverUploaded,
            detail: "no length recorded: Synapse never finished caching it".into(),
        });
    };
    let length = recorded_length(&shown, "media_length", length)?;
    let path = synapse_paths::remote_content(&key.origin, &filesystem_id)
        .ok_or_else(|| invalid(&shown, "the filesystem ID does not map to a Synapse path"))?;
    Ok(SynapseMedia {
        key,
        upload_name: row.upload_name,
        content_type: row.media_type.filter(|t| !t.is_empty()),
        uploader: None,
        created_ts: row.created_ts,
        last_access_ts: row.last_access_ts,
        quarantined_by: row.quarantined_by,
        path,
        sha256: row.sha256,
        length,
        url_preview: false,
    })
}

/// How a thumbnail is named in reports.
fn thumbnail_label(
    media: &str,
    width: i64,
    height: i64,
    method: &str,
    content_type: &str,
) -> String {
    format!("{media} thumbnail {width}x{height} {method} {content_type}")
}

/// A thumbnail's source file, or why none can be built from its row.
fn plan_thumbnail(
    key: &MediaKey,
    quarantined: bool,
    row: ThumbnailRow,
    path_of: impl FnOnce(&ThumbnailName) -> Option<PathBuf>,
) -> Result<ThumbnailDraft, ItemFailure> {
    let label = thumbnail_label(
        &key.to_string(),
        row.thumbnail_width,
        row.thumbnail_height,
        &row.thumbnail_method,
        &row.thumbnail_type,
    );
    let refused = || {
        invalid(
            &label,
            "its size, type, method or filesystem ID cannot be part of a Synapse path",
        )
    };
    let name = ThumbnailName {
        width: u32::try_from(row.thumbnail_width).map_err(|_| refused())?,
        height: u32::try_from(row.thumbnail_height).map_err(|_| refused())?,
        content_type: row.thumbnail_type,
        method: row.thumbnail_method,
    };
    let path = path_of(&name).ok_or_else(refused)?;
    let method: ThumbnailMethod = name.method.parse().map_err(|_| refused())?;
    let length = row
        .thumbnail_length
        .map(|length| recorded_length(&label, "thumbnail_length", length))
        .transpose()?;
    Ok(ThumbnailDraft {
        width: name.width,
        height: name.height,
        method,
        content_type: name.content_type,
        file: SourceFile {
            path,
            remote: RemoteContent::Thumbnail {
                key: key.clone(),
                width: name.width,
                height: name.height,
                method,
                quarantined,
            },
            expected: expected(None, length),
        },
    })
}

/// A worker: stores items until the queue is closed and empty, and hands each stored
/// media to the recorder.
async fn work(
    queue: Arc<Mutex<mpsc::Receiver<WorkItem>>>,
    context: Arc<Context>,
    recorder: mpsc::Sender<NewMedia>,
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    loop {
        let item = tokio::select! {
            biased;
            () = context.abort.cancelled() => break,
            item = queue_recv(&queue) => item,
        };
        let Some(item) = item else { break };
        let media = match prepare(&context, item, &mut report).await {
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
            break; // the recorder failed (and cancelled); run() reports its error
        }
    }
    Ok(report)
}

/// The recorder: records stored media until every worker is done, each transaction
/// taking all that queued up meanwhile (at most [`MAX_BATCH`]).
async fn record(
    context: Arc<Context>,
    mut stored: mpsc::Receiver<NewMedia>,
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

async fn queue_recv(queue: &Mutex<mpsc::Receiver<WorkItem>>) -> Option<WorkItem> {
    queue.lock().await.recv().await
}

/// Stores the bytes of one item and its thumbnails; `None` when it needs no recording
/// (already present, or failed: counted in `report`).
async fn prepare(
    context: &Context,
    item: WorkItem,
    report: &mut ImportReport,
) -> Result<Option<NewMedia>, ImportError> {
    let shown = item.media.key.to_string();
    let done = || context.progress.items_done.fetch_add(1, Ordering::Relaxed);
    if let Some(existing) = &item.existing {
        check_existing(context, &item, existing, report).await;
        done();
        return Ok(None);
    }
    let content = match store_file(context, &item.content, report).await? {
        Ok(put) => put,
        Err((reason, detail)) => {
            report.fail(
                ItemFailure {
                    item: shown,
                    reason,
                    detail,
                },
                false,
            );
            done();
            return Ok(None);
        }
    };
    let mut thumbnails = Vec::with_capacity(item.thumbnails.len());
    for t in item.thumbnails {
        let t = match t {
            Ok(t) => t,
            Err(failure) => {
                report.fail(failure, true);
                continue;
            }
        };
        match store_file(context, &t.file, report).await? {
            Ok(put) => thumbnails.push(ThumbnailRecord {
                media: item.media.key.clone(),
                width: t.width,
                height: t.height,
                method: t.method,
                content_type: t.content_type,
                animated: false,
                sha256: put.blob.sha256,
                size_bytes: put.blob.size,
                created_ts: item.media.created_ts,
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
                true,
            ),
        }
    }
    let m = item.media;
    Ok(Some(NewMedia {
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
        datastore_id: context.datastore_id.unwrap_or(DatastoreId(0)),
    }))
}

/// A media the repository already records: compares the bytes of Synapse's file with
/// the recorded digest, never writing anything. The same bytes count as already
/// present; other bytes are a [`FailureReason::Conflict`] naming both digests, and the
/// repository keeps its own. (A resumed run thus reads every media imported before
/// once more: reading is much cheaper than the writes and syncs of importing, and only
/// reading shows that Synapse's file changed. A file gone from the media store leaves
/// nothing to compare but the digest Synapse recorded.)
async fn check_existing(
    context: &Context,
    item: &WorkItem,
    existing: &Sha256Hex,
    report: &mut ImportReport,
) {
    let shown = item.media.key.to_string();
    let recorded = item
        .media
        .sha256
        .as_deref()
        .and_then(|s| Sha256Hex::parse_any_case(s).ok());
    let Some(root) = &context.options.media_store else {
        report.media_already_present += 1;
        return;
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
                return;
            }
            format!("Synapse's file {} has {sha256}", path.display())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match recorded {
            Some(recorded) if &recorded != existing => {
                format!("Synapse recorded {recorded} (its file is gone)")
            }
            _ => {
                report.media_already_present += 1;
                return;
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
                false,
            );
            return;
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
        false,
    );
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
        OpenedFile::Read(bytes) => Ok((media_core::hashing::sha256_of(&bytes), bytes.len() as u64)),
        OpenedFile::Stream(file, limit) => {
            let mut reader = HashingReader::new(tokio::fs::File::from_std(file).take(limit));
            tokio::io::copy(&mut reader, &mut tokio::io::sink()).await?;
            Ok(reader.finish())
        }
    }
}

/// Streams one file into the datastore (or, in a dry run, only through the hasher). The
/// inner error is a per-item failure; the outer one stops the run.
async fn store_file(
    context: &Context,
    file: &SourceFile,
    report: &mut ImportReport,
) -> Result<Result<Put, (FailureReason, String)>, ImportError> {
    let options = &context.options;
    if let Some(put) = already_stored(context, &file.expected).await? {
        report.bytes_deduplicated += put.blob.size;
        return Ok(Ok(put));
    }
    let on_disk = options
        .media_store
        .as_ref()
        .map(|root| root.join(&file.path));
    let mut shown = on_disk
        .as_ref()
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    let from_disk = match (&on_disk, &options.media_store) {
        (Some(path), Some(root)) => match put_from_disk(context, root, &file.path, &file.expected)
            .await
        {
            Ok(put) => Some(put),
            // Not on disk: the homeserver may still have it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && options.homeserver.is_some() => {
                None
            }
            Err(e) => return Ok(Err(open_failure(path, e))),
        },
        _ => None,
    };
    let put = match (from_disk, &options.homeserver) {
        (Some(put), _) => put,
        (None, Some(homeserver)) => {
            shown = homeserver.url_of(&file.remote).to_string();
            let reader = match homeserver.download(&file.remote).await {
                Ok(reader) => reader,
                Err(DownloadFailure::NotFound(detail)) => {
                    return Ok(Err((FailureReason::FileMissing, detail)));
                }
                Err(DownloadFailure::Failed(detail)) => {
                    return Ok(Err((FailureReason::Unreadable, detail)));
                }
            };
            // Never more than one byte past what Synapse recorded: a body that does not
            // end is cut there and reported as a size mismatch.
            match file.expected.expected.size {
                Some(size) => {
                    let mut reader = reader.take(synapse_files::read_limit(Some(size), 0));
                    sink_put(context, &mut reader, &file.expected).await
                }
                None => {
                    let mut reader =
                        synapse_files::RefuseBeyond::new(reader, UNRECORDED_LENGTH_LIMIT);
                    sink_put(context, &mut reader, &file.expected).await
                }
            }
        }
        (None, None) => {
            return Err(ImportError::Config(
                "neither a media store nor a homeserver to read media from".into(),
            ));
        }
    };
    let put = match put {
        Ok(put) => put,
        Err(StoreError::Mismatch {
            what: "size",
            expected,
            actual,
        }) => {
            let longer = expected
                .parse::<u64>()
                .is_ok_and(|e| actual.parse::<u64>() == Ok(e + 1));
            let actual = if longer {
                "more (reading stopped one byte past the recorded length)".to_owned()
            } else {
                actual
            };
            return Ok(Err((
                FailureReason::SizeMismatch,
                format!("{shown}: Synapse recorded {expected} bytes, the content has {actual}"),
            )));
        }
        Err(StoreError::Mismatch {
            what,
            expected,
            actual,
        }) => {
            return Ok(Err((
                FailureReason::Corrupt,
                format!("{shown}: Synapse recorded {what} {expected}, the bytes have {actual}"),
            )));
        }
        Err(StoreError::Source { source, .. }) => {
            return Ok(Err((
                FailureReason::Unreadable,
                format!("{shown}: {source}"),
            )));
        }
        Err(e) => return Err(e.into()),
    };
    report.bytes_read += put.blob.size;
    context
        .progress
        .bytes
        .fetch_add(put.blob.size, Ordering::Relaxed);
    match put.status {
        PutStatus::Written => {
            report.blobs_written += 1;
            report.bytes_written += put.blob.size;
        }
        PutStatus::AlreadyPresent => report.bytes_deduplicated += put.blob.size,
    }
    Ok(Ok(put))
}

/// Files up to this size are read in one go.
const SMALL_FILE: u64 = 1 << 20;
/// At most this many bytes are downloaded for a content whose length Synapse did not
/// record (thumbnails of old Synapse versions).
const UNRECORDED_LENGTH_LIMIT: u64 = 1 << 30;

/// A large file whose digest Synapse recorded and whose bytes the repository already
/// holds is not read at all: the import references the stored copy.
async fn already_stored(
    context: &Context,
    expected: &PutOptions,
) -> Result<Option<Put>, ImportError> {
    let (Some(sha256), Some(size)) = (&expected.expected.sha256, expected.expected.size) else {
        return Ok(None);
    };
    if size <= SMALL_FILE {
        return Ok(None); // reading it costs less than asking first
    }
    Ok(context
        .repo
        .get_blob(sha256)
        .await?
        .filter(|blob| blob.size_bytes == size)
        .map(|blob| Put {
            blob: media_core::datastore::StoredBlob {
                sha256: blob.sha256,
                size,
                key: blob.location,
            },
            status: PutStatus::AlreadyPresent,
        }))
}

/// Puts (or, in a dry run, hashes) the bytes of `reader`.
async fn sink_put(
    context: &Context,
    reader: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    expected: &PutOptions,
) -> Result<Put, StoreError> {
    if context.options.dry_run {
        hash_only(context, reader, expected).await
    } else {
        context.store.put(reader, expected).await
    }
}

/// What [`open_source_file`] found: a small file already read, or a large one to stream.
enum OpenedFile {
    /// At most [`SMALL_FILE`] + 1 bytes, read in one blocking call.
    Read(Vec<u8>),
    /// A larger file, and how many bytes to read from it at most.
    Stream(std::fs::File, u64),
}

/// Blocking: opens `relative` below the media store `root` (no links, regular files
/// only: [`synapse_files::open_in_media_store`]) and reads it when it is small. Never
/// reads more than [`synapse_files::read_limit`] bytes.
fn open_source_file(
    root: &Path,
    relative: &Path,
    recorded: Option<u64>,
) -> std::io::Result<OpenedFile> {
    use std::io::Read;
    let file = synapse_files::open_in_media_store(root, relative)?;
    let limit = synapse_files::read_limit(recorded, file.metadata()?.len());
    if limit > SMALL_FILE + 1 {
        return Ok(OpenedFile::Stream(file, limit));
    }
    let mut bytes = Vec::with_capacity(limit as usize);
    file.take(limit).read_to_end(&mut bytes).map_err(|e| {
        std::io::Error::new(e.kind(), format!("{}: {e}", root.join(relative).display()))
    })?;
    Ok(OpenedFile::Read(bytes))
}

/// Puts (or, in a dry run, hashes) the file at `relative` below the media store `root`;
/// the outer error is opening it.
async fn put_from_disk(
    context: &Context,
    root: &Path,
    relative: &Path,
    expected: &PutOptions,
) -> std::io::Result<Result<Put, StoreError>> {
    let (root, relative, recorded) = (root.to_owned(), relative.to_owned(), expected.expected.size);
    let opened = tokio::task::spawn_blocking(move || open_source_file(&root, &relative, recorded))
        .await
        .map_err(std::io::Error::other)??;
    Ok(match opened {
        OpenedFile::Read(bytes) => sink_put(context, &mut &bytes[..], expected).await,
        OpenedFile::Stream(file, limit) if !context.options.dry_run => {
            // One blocking loop reads, hashes and writes it (fewer copies and hand-offs).
            context.store.put_file(file, limit, expected).await
        }
        OpenedFile::Stream(file, limit) => {
            let mut reader = tokio::fs::File::from_std(file).take(limit);
            sink_put(context, &mut reader, expected).await
        }
    })
}

/// A file that could not be opened or read: its error names the path.
fn open_failure(path: &Path, error: std::io::Error) -> (FailureReason, String) {
    if error.kind() == std::io::ErrorKind::NotFound {
        (
            FailureReason::FileMissing,
            format!("{} does not exist", path.display()),
        )
    } else {
        (FailureReason::Unreadable, error.to_string())
    }
}

/// A dry run's "put": hashes and checks the bytes, and says whether a real run would
/// write them (new to the repository and to this run) without writing anything.
async fn hash_only(
    context: &Context,
    source: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    expected: &PutOptions,
) -> Result<Put, StoreError> {
    let mut reader = HashingReader::new(source);
    if let Err(source) = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await {
        return Err(StoreError::Source {
            bytes_read: reader.bytes_read(),
            source,
        });
    }
    let (sha256, size) = reader.finish();
    expected.check(&sha256, size)?;
    let known = context
        .repo
        .get_blob(&sha256)
        .await
        .map_err(|e| StoreError::Config(e.to_string()))?
        .is_some();
    let first_time = context
        .dry_run_seen
        .lock()
        .expect("poisoned")
        .insert(sha256.clone());
    let key = media_core::datastore::BlobKey::for_hash(&sha256);
    Ok(Put {
        blob: media_core::datastore::StoredBlob { sha256, size, key },
        status: if first_time && !known {
            PutStatus::Written
        } else {
            PutStatus::AlreadyPresent
        },
    })
}

/// Records the prepared media (a dry run only counts them).
async fn flush(
    context: &Context,
    pending: &mut Vec<NewMedia>,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    if pending.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(pending);
    let count = batch.len() as u64;
    if context.options.dry_run {
        report.media_imported += count;
        report.thumbnails_imported += batch.iter().map(|m| m.thumbnails.len() as u64).sum::<u64>();
        context
            .progress
            .items_done
            .fetch_add(count, Ordering::Relaxed);
        return Ok(());
    }
    // Blob before row: every blob of the batch is durable before any row refers to it.
    context.store.sync().await?;
    let outcomes = match context
        .repo
        .insert_media_batch(&batch, &*context.store)
        .await
    {
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
                    false,
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
            InsertOutcome::AlreadyPresent => report.media_already_present += 1,
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
                false,
            ),
            InsertOutcome::MediaMissing => {}
        }
        for (thumbnail, outcome) in media.thumbnails.iter().zip(outcome.thumbnails) {
            match outcome {
                InsertOutcome::Inserted => report.thumbnails_imported += 1,
                InsertOutcome::AlreadyPresent => report.thumbnails_already_present += 1,
                InsertOutcome::Conflict { existing_sha256 } => report.fail(
                    ItemFailure {
                        item: thumbnail_label(
                            &shown,
                            thumbnail.width.into(),
                            thumbnail.height.into(),
                            thumbnail.method.as_str(),
                            &thumbnail.content_type,
                        ),
                        reason: FailureReason::Conflict,
                        detail: format!(
                            "the repository has it with other bytes ({existing_sha256})"
                        ),
                    },
                    true,
                ),
                InsertOutcome::MediaMissing => {}
            }
        }
    }
    context
        .progress
        .items_done
        .fetch_add(count, Ordering::Relaxed);
    Ok(())
}

/// Pins every imported media that Synapse uses as a profile, room or member avatar. An
/// avatar row that cannot be read, or whose URL is not a valid MXC URI, is a listed
/// failure (counted in `avatars_failed`); the others are still pinned.
async fn pin_avatars(
    synapse: &SynapseDb,
    context: &Context,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    const PINS_PER_BATCH: usize = 500;
    let mut pages = synapse.avatars();
    let mut batch = Vec::with_capacity(PINS_PER_BATCH);
    loop {
        let page = pages.try_next().await?;
        for row in page.iter().flatten() {
            match avatar_key(row) {
                Ok(key) => batch.push(key),
                Err(failure) => {
                    report.avatars_failed += 1;
                    report.list(failure);
                }
            }
        }
        if batch.len() >= PINS_PER_BATCH || (page.is_none() && !batch.is_empty()) {
            batch.sort();
            batch.dedup();
            let pins = context.repo.pin_media(&batch).await?;
            report.avatars_pinned += pins.pinned;
            report.avatars_not_in_repository += pins.missing;
            batch.clear();
        }
        if page.is_none() {
            return Ok(());
        }
    }
}

/// The media an avatar row names, or the failure naming the row.
fn avatar_key(row: &Result<AvatarRow, DbError>) -> Result<MediaKey, ItemFailure> {
    match row {
        Ok(avatar) => MxcUri::from_str(&avatar.url)
            .map(MediaKey::from)
            .map_err(|e| ItemFailure {
                item: format!("avatar {:?}", avatar.url),
                reason: FailureReason::InvalidIdentifier,
                detail: format!(
                    "the avatar of {} in {} is not a valid MXC URI ({e}); it is not pinned",
                    avatar.key,
                    avatar.source.table()
                ),
            }),
        Err(DbError::InvalidRow { table, key, reason }) => Err(ItemFailure {
            item: format!("avatar of {key} in {table}"),
            reason: FailureReason::BadRow,
            detail: format!("this row of {table} cannot be read: {reason}"),
        }),
        Err(other) => Err(ItemFailure {
            item: "a Synapse avatar row".into(),
            reason: FailureReason::BadRow,
            detail: other.to_string(),
        }),
    }
}

/// `imported_from` label for a Synapse database location.
pub fn source_label(synapse_db: &str) -> String {
    let shown = media_db::redact_url(synapse_db);
    if shown.contains("://") {
        format!("synapse:{shown}")
    } else {
        let path = Path::new(synapse_db);
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        format!("synapse:{}", absolute.display())
    }
}

/// `1536` → `1.5 KiB`.
impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (verb, written) = if self.dry_run {
            ("would be imported", "would be written")
        } else {
            ("imported", "written")
        };
        writeln!(
            f,
            "{}media: {} considered, {} {verb}, {} already present, {} failed",
            if self.dry_run {
                "DRY RUN, nothing written. "
            } else {
                ""
            },
            self.media_total,
            self.media_imported,
            self.media_already_present,
            self.media_failed
        )?;
        writeln!(
            f,
            "thumbnails: {} {verb}, {} already present, {} failed",
            self.thumbnails_imported, self.thumbnails_already_present, self.thumbnails_failed
        )?;
        writeln!(
            f,
            "bytes: {} read, {} {written} in {} new blobs, {} saved by deduplication",
            human_size(self.bytes_read),
            human_size(self.bytes_written),
            self.blobs_written,
            human_size(self.bytes_deduplicated)
        )?;
        if !self.dry_run {
            writeln!(
                f,
                "avatars: {} media pinned, {} avatar references to media not in the \
                 repository, {} unreadable or invalid",
                self.avatars_pinned, self.avatars_not_in_repository, self.avatars_failed
            )?;
        }
        if !self.failures.is_empty() {
            writeln!(f, "not imported:")?;
            for failure in &self.failures {
                let reason = serde_json::to_value(failure.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                writeln!(f, "  {} [{reason}] {}", failure.item, failure.detail)?;
            }
            if self.failures_not_listed > 0 {
                writeln!(f, "  … and {} more", self.failures_not_listed)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_lists_parse_and_refuse_unknown_kinds() {
        assert_eq!(
            "local,remote,thumbnails,url-previews".parse::<Include>(),
            Ok(Include::default())
        );
        let only_local: Include = "local".parse().unwrap();
        assert!(only_local.local && !only_local.remote && !only_local.thumbnails);
        assert!(
            "local,avatars"
                .parse::<Include>()
                .unwrap_err()
                .contains("avatars")
        );
        assert!("thumbnails".parse::<Include>().is_err());
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }

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
