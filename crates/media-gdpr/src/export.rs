//! Export one user's or one server's media from our repository into an archive.
//!
//! Two stages run side by side: an async producer pages through the records, reads
//! each distinct blob in chunks from the datastore its row names (at the recorded
//! location: see [`media_db::Datastores`]) and hashes them; a blocking writer
//! thread packs the chunks into the archive parts. The producer holds back each blob's
//! last chunk until the digest is known, so a blob that no longer matches its hash
//! (bit rot in the store) turns into a failed entry, cut off the part again.

use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use media_archive::writer::extension_for;
use media_archive::{
    ArchiveWriter, LeftOut, ManifestRecord, NewEntry, WriterOptions, WrittenEntry,
};
use media_core::datastore::{BlobKey, BlobPayload, StoreError};
use media_core::ids::{ServerName, Sha256Hex, UserId};
use media_core::records::{MediaKey, MediaRecord};
use media_core::run::{Failure, Failures, Reason, Route};
use media_db::repo::Repository;
use media_db::scratch::{DigestNames, NAMES_IN_MEMORY};
use media_db::{Blob, DatastoreId, Datastores, MediaIndex};
use media_synapse::{SynapseDb, SynapseMedia, files as synapse_files};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;

use crate::{Entity, GdprError, Progress};

/// Chunk size of blob reads.
const CHUNK: usize = 512 << 10;
/// Chunks in flight between the producer and the writer (bounds memory).
const CHUNKS_IN_FLIGHT: usize = 4;
/// Media records whose blob rows are looked up together.
const RECORDS_PER_BLOB_LOOKUP: usize = 500;
/// Items whose digests are looked up together among the entries already written.
const ITEMS_PER_NAME_LOOKUP: usize = 256;

/// What to export, and how.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Whose media.
    pub entity: Entity,
    /// The archive folder (created when missing).
    pub destination: PathBuf,
    /// Part size, compression, replacing an old export, syncing.
    pub writer: WriterOptions,
    /// Whether the archive holds the media bytes or only their records.
    pub media_bytes: MediaBytes,
}

/// Whether an export writes the media bytes into the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaBytes {
    /// Every media's bytes, each distinct blob once.
    #[default]
    Included,
    /// Only the records: a metadata-only archive (its records name no entry).
    MetadataOnly,
}

impl MediaBytes {
    /// The choice a `--include-data` flag makes.
    pub fn from_include_data(include_data: bool) -> Self {
        if include_data {
            Self::Included
        } else {
            Self::MetadataOnly
        }
    }
}

/// What an export did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportReport {
    /// What was exported from (a repository and its datastore, or a Synapse database and
    /// media store), and the archive folder.
    pub route: Route,
    /// The exported entity.
    pub entity: String,
    /// The archive folder.
    pub destination: PathBuf,
    /// Records written to the manifest.
    pub records: u64,
    /// Media entries written (distinct blobs).
    pub entries: u64,
    /// Bytes of media written into entries.
    pub entry_bytes: u64,
    /// Records that share an entry with an earlier record (same bytes).
    pub shared_records: u64,
    /// Bytes not written again thanks to shared entries.
    pub bytes_saved: u64,
    /// Quarantined media, left out.
    pub quarantined_skipped: u64,
    /// The part files.
    pub parts: Vec<PathBuf>,
    /// The manifest part.
    pub manifest: PathBuf,
    /// Size of all files of the archive.
    pub archive_bytes: u64,
    /// Media that could not be exported.
    pub failures: Failures<ExportReason>,
}

/// Why a media could not be exported (a code in reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportReason {
    /// The source has no bytes for it: created and never uploaded (or never cached).
    NeverUploaded,
    /// An identifier of its row is not valid; no path was built from it.
    InvalidIdentifier,
    /// Its row of the source's media tables cannot be read.
    BadRow,
    /// Its file is not where its bytes should be.
    FileMissing,
    /// Its bytes are longer or shorter than the length recorded.
    SizeMismatch,
    /// Its bytes cannot be read, or do not hash to the digest recorded.
    Unreadable,
    /// The datastore its blob row names cannot be opened, or is not the datastore the
    /// repository recorded (another identity marker).
    DatastoreUnavailable,
}

impl Reason for ExportReason {
    fn code(self) -> &'static str {
        match self {
            Self::NeverUploaded => "never_uploaded",
            Self::InvalidIdentifier => "invalid_identifier",
            Self::BadRow => "bad_row",
            Self::FileMissing => "file_missing",
            Self::SizeMismatch => "size_mismatch",
            Self::Unreadable => "unreadable",
            Self::DatastoreUnavailable => "datastore_unavailable",
        }
    }
}

impl From<media_synapse::RowFault> for ExportReason {
    /// The export's reason for a Synapse media whose row was refused.
    fn from(fault: media_synapse::RowFault) -> Self {
        use media_synapse::RowFault;
        match fault {
            RowFault::NeverUploaded => Self::NeverUploaded,
            RowFault::InvalidIdentifier => Self::InvalidIdentifier,
            RowFault::BadRow => Self::BadRow,
        }
    }
}

impl media_core::run::Report for ExportReport {
    /// An export always writes its archive.
    fn mode(&self) -> media_core::run::RunMode {
        media_core::run::RunMode::Apply
    }

    /// Whether some media could not be exported.
    fn has_failures(&self) -> bool {
        self.failures.any()
    }
}

impl std::fmt::Display for ExportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use media_core::progress::human_size;
        use media_core::run::Report;
        self.route.write_headline(f, "gdpr_export", self.mode())?;
        writeln!(
            f,
            "Exported {} media of {} into {}",
            self.records,
            self.entity,
            self.destination.display()
        )?;
        writeln!(
            f,
            "  {} files ({}) in {} part(s) + manifest, {} on disk",
            self.entries,
            human_size(self.entry_bytes),
            self.parts.len(),
            human_size(self.archive_bytes)
        )?;
        writeln!(
            f,
            "  {} media share bytes with another one ({} not written twice)",
            self.shared_records,
            human_size(self.bytes_saved)
        )?;
        writeln!(
            f,
            "  {} quarantined media left out",
            self.quarantined_skipped
        )?;
        if self.failures.any() {
            writeln!(
                f,
                "  {} media FAILED and are not in the archive:",
                self.failures.count()
            )?;
            self.failures.write_lines(f)?;
        }
        Ok(())
    }
}

/// A step for the writer thread, in archive order.
enum Step {
    /// Write an entry whose bytes arrive on `body`.
    Entry {
        name: String,
        size: u64,
        mtime_ms: i64,
        content_type: String,
        body: mpsc::Receiver<std::io::Result<Bytes>>,
    },
    /// Add a record (its entry, if any, was sent before).
    Record { mxc: String, record: ManifestRecord },
    /// A quarantined media, left out (the index says so).
    Quarantined { mxc: String, name: String },
    /// A media the producer could not export.
    Failed(NotExportable),
    /// Every item was handed over: finish the archive. A writer whose steps end without
    /// it (the producer failed) leaves no archive and any previous export untouched.
    Finish,
}

/// A media to export, from whichever source.
#[derive(Debug, Clone)]
pub struct ExportItem {
    /// Origin and media ID.
    pub key: MediaKey,
    /// The digest of its bytes, when the source knows it (otherwise computed while the
    /// bytes are written).
    pub sha256: Option<Sha256Hex>,
    /// The length of its bytes.
    pub size_bytes: u64,
    /// The upload file name.
    pub upload_name: Option<String>,
    /// The MIME type.
    pub content_type: Option<String>,
    /// The uploader (local media).
    pub uploader: Option<UserId>,
    /// Creation time, ms.
    pub created_ts: i64,
    /// Quarantined media are left out of exports.
    pub quarantined: bool,
    /// Where its bytes are.
    pub content: Content,
}

/// Where the bytes of an [`ExportItem`] are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A blob of our repository: in the datastore its row names, at the recorded
    /// location.
    Blob {
        /// The datastore holding it.
        datastore: DatastoreId,
        /// Its key there.
        location: BlobKey,
    },
    /// Bytes a source names by its own datastore ID and any location in that datastore
    /// (a matrix-media-repo deployment's rows, whose locations MMR may have named
    /// itself): opened through the source's [`PlacedStores`].
    Placed {
        /// The datastore's ID, as the source's row holds it.
        datastore: String,
        /// The object's location in that datastore.
        location: String,
    },
    /// In Synapse's media store: the file `path` below `media_store`, opened one level
    /// at a time without following any link, and only when it is a regular file (see
    /// [`media_synapse::files::open_in_media_store`]).
    MediaStore {
        /// Synapse's `media_store_path`.
        media_store: PathBuf,
        /// The file, relative to `media_store`.
        path: PathBuf,
    },
}

impl ExportItem {
    /// The item for a media of our repository whose bytes are the blob `blob` (its row
    /// of the `blobs` table); a media without one is not exportable.
    pub fn of_repository(record: MediaRecord, blob: Option<&Blob>) -> Result<Self, NotExportable> {
        let Some(blob) = blob else {
            return Err(Failure {
                item: record.key.to_string(),
                reason: ExportReason::Unreadable,
                detail: format!(
                    "the repository records no blob {} for its bytes",
                    record.sha256
                ),
            });
        };
        Ok(Self {
            key: record.key,
            sha256: Some(record.sha256),
            size_bytes: record.size_bytes,
            upload_name: record.upload_name,
            content_type: record.content_type,
            uploader: record.uploader,
            created_ts: record.created_ts,
            quarantined: record.quarantined,
            content: Content::Blob {
                datastore: blob.datastore_id,
                location: blob.location.clone(),
            },
        })
    }
}

/// Why the bytes an item names could not be opened: a refusal of that item (listed,
/// the export goes on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotOpened {
    /// The reason listed in the report.
    pub reason: ExportReason,
    /// What happened, naming the datastore and location.
    pub detail: String,
}

/// The datastores of a source whose rows name their bytes as [`Content::Placed`].
#[async_trait]
pub trait PlacedStores: Send + Sync {
    /// Opens the object at `location` in the datastore `datastore`. Only what stops the
    /// whole export is an `Err` of the outer result; a missing object, an unknown
    /// datastore or unreadable bytes are a [`NotOpened`].
    async fn open_placed(
        &self,
        datastore: &str,
        location: &str,
    ) -> Result<Result<BlobPayload, NotOpened>, GdprError>;
}

/// A media the source could not turn into an item: its MXC URI (or, when a row cannot
/// be read, which row), why, and the details.
pub type NotExportable = Failure<ExportReason>;

/// Items to export, or media the source could not turn into items.
pub type ExportItems = BoxStream<'static, Result<Result<ExportItem, NotExportable>, GdprError>>;

/// Exports `options.entity`'s media from our repository: each media's bytes from the
/// datastore its blob row names (`datastores` opens the ones other than the given).
pub async fn export_from_repository(
    repo: &Repository,
    datastores: Datastores,
    options: ExportOptions,
    progress: Arc<Progress>,
) -> Result<ExportReport, GdprError> {
    let (total, records) = match &options.entity {
        Entity::User(user) => (
            repo.count_media_by_uploader(user).await?,
            repo.media_by_uploader(user),
        ),
        Entity::Server(server) => (
            repo.count_media_by_origin(server).await?,
            repo.media_by_origin(server),
        ),
    };
    progress.items_total.store(total, Ordering::Relaxed);
    // A page of records at a time, with one lookup of where their blobs are.
    let blob_rows = repo.clone();
    let items = records
        .try_chunks(RECORDS_PER_BLOB_LOOKUP)
        .map_err(|e| GdprError::from(e.1))
        .and_then(move |records| {
            let repo = blob_rows.clone();
            async move {
                let digests: Vec<&Sha256Hex> = records.iter().map(|r| &r.sha256).collect();
                let blobs = repo.recorded_blobs(&digests).await?;
                let items: Vec<_> = records
                    .into_iter()
                    .map(|record| {
                        let blob = blobs.get(&record.sha256);
                        Ok(ExportItem::of_repository(record, blob))
                    })
                    .collect();
                Ok(futures::stream::iter(items))
            }
        })
        .try_flatten()
        .boxed();
    let from = format!(
        "{}, datastore {}",
        repo.location(),
        datastores.given().uri()
    );
    let stores = Stores::Repository(datastores);
    match export_items(items, stores, from, options, progress, NAMES_IN_MEMORY).await {
        Err(GdprError::NoMedia { entity, .. }) => Err(GdprError::NoMedia {
            suggestions: repo.suggest_entities(&entity).await?,
            entity,
        }),
        result => result,
    }
}

/// Exports `items` (`total` of them, for the progress) of a source whose rows name
/// their bytes as [`Content::Placed`], opened through `stores`; `from` describes the
/// source in the report's route. The archive is the one [`export_from_repository`]
/// writes for the same records and bytes.
pub async fn export_from_placed(
    items: ExportItems,
    total: u64,
    stores: Arc<dyn PlacedStores>,
    from: String,
    options: ExportOptions,
    progress: Arc<Progress>,
) -> Result<ExportReport, GdprError> {
    progress.items_total.store(total, Ordering::Relaxed);
    let stores = Stores::Placed(stores);
    export_items(items, stores, from, options, progress, NAMES_IN_MEMORY).await
}

/// Exports `options.entity`'s media straight from a Synapse database and media store,
/// without importing them first: a user's uploads, every local media of the Synapse
/// server, or the cached media of another origin.
pub async fn export_from_synapse(
    synapse: &SynapseDb,
    server_name: &ServerName,
    media_store: &Path,
    options: ExportOptions,
    progress: Arc<Progress>,
) -> Result<ExportReport, GdprError> {
    let media_store_shown = media_store.to_owned();
    let media_store = media_store.to_owned();
    let entity = options.entity.to_string();
    let items: ExportItems = match options.entity.clone() {
        Entity::Server(origin) if &origin != server_name => synapse
            .remote_media_rows()
            .map_ok(move |page| {
                let items = page.into_iter().filter_map(|row| match row {
                    Ok(row) if row.media_origin == origin.as_str() => Some(
                        media_synapse::remote_media(row)
                            .map(|media| synapse_item(media, &media_store))
                            .map_err(not_exported),
                    ),
                    Ok(_) => None,
                    Err(bad) => unreadable_row(bad, None, &entity, |key| {
                        key.strip_prefix(origin.as_str())
                            .is_some_and(|rest| rest.starts_with('/'))
                    })
                    .map(Err),
                });
                futures::stream::iter(items.map(Ok).collect::<Vec<_>>())
            })
            .map_err(GdprError::from)
            .try_flatten()
            .boxed(),
        selected => {
            let server = server_name.clone();
            // A user's uploads are selected in SQL: a row of theirs that cannot be
            // decoded is still known to be theirs, and listed.
            let rows = match &selected {
                Entity::User(user) => synapse.local_media_rows_of(user),
                Entity::Server(_) => synapse.local_media_rows(),
            };
            rows.map_ok(move |page| {
                let items = page.into_iter().filter_map(|row| match row {
                    Ok(row) => Some(
                        media_synapse::local_media(row, &server)
                            .map(|media| synapse_item(media, &media_store))
                            .map_err(not_exported),
                    ),
                    Err(bad) => unreadable_row(bad, Some(&server), &entity, |_| true).map(Err),
                });
                futures::stream::iter(items.map(Ok).collect::<Vec<_>>())
            })
            .map_err(GdprError::from)
            .try_flatten()
            .boxed()
        }
    };
    let from = format!(
        "{}, media store {}",
        media_synapse::source_label(synapse.url()),
        media_store_shown.display()
    );
    match export_items(
        items,
        Stores::MediaStoreOnly,
        from,
        options,
        progress,
        NAMES_IN_MEMORY,
    )
    .await
    {
        Err(GdprError::NoMedia { entity, .. }) => {
            let localpart = entity.trim_start_matches('@').split(':').next();
            let suggestions = [
                localpart.map(|l| format!("@{}:{server_name}", l.to_lowercase())),
                Some(server_name.to_string()),
            ];
            Err(GdprError::NoMedia {
                suggestions: suggestions
                    .into_iter()
                    .flatten()
                    .filter(|s| *s != entity)
                    .collect(),
                entity,
            })
        }
        result => result,
    }
}

/// An export item for a media of Synapse's media store.
fn synapse_item(media: SynapseMedia, media_store: &Path) -> ExportItem {
    ExportItem {
        key: media.key,
        sha256: media
            .sha256
            .as_deref()
            .and_then(|s| Sha256Hex::parse_any_case(s).ok()),
        size_bytes: media.length,
        upload_name: media.upload_name,
        content_type: media.content_type,
        uploader: media.uploader,
        created_ts: media.created_ts,
        quarantined: media.quarantined_by.is_some(),
        content: Content::MediaStore {
            media_store: media_store.to_owned(),
            path: media.path,
        },
    }
}

/// A Synapse media the importer's checks refused, as a listed failure.
fn not_exported(failure: media_synapse::RowFailure) -> NotExportable {
    Failure {
        item: failure.item,
        reason: failure.reason.into(),
        detail: failure.detail,
    }
}

/// A Synapse row that cannot be read, as a listed failure (`bad_row`) when it may be one
/// of the exported media: `local_server` is the origin of local rows (remote rows carry
/// theirs in their key, `origin/media_id`), `may_be_selected` tells from the row's key
/// whether the row can belong to the export. A row whose key cannot be read is always
/// listed.
fn unreadable_row(
    error: media_db::DbError,
    local_server: Option<&ServerName>,
    entity: &str,
    may_be_selected: impl Fn(&str) -> bool,
) -> Option<NotExportable> {
    let media_db::DbError::InvalidRow { table, key, reason } = error else {
        return Some(Failure {
            item: "a Synapse media row".into(),
            reason: ExportReason::BadRow,
            detail: format!("a row of Synapse's media tables cannot be read: {error}"),
        });
    };
    let (item, whose) = if key.starts_with("key unreadable") {
        (format!("a row of {table} ({key})"), "it may be media of")
    } else if !may_be_selected(&key) {
        return None;
    } else {
        let item = match local_server {
            Some(server) => format!("mxc://{server}/{key}"),
            None => format!("mxc://{key}"),
        };
        (item, "a media of")
    };
    let detail = format!(
        "this row of {table} cannot be read, so it is not in the export ({whose} \
         {entity}): {reason}"
    );
    Some(Failure {
        item,
        reason: ExportReason::BadRow,
        detail,
    })
}

/// What an export opens item bytes through, besides Synapse's media store (which each
/// [`Content::MediaStore`] item names itself).
enum Stores {
    /// Our repository's datastores ([`Content::Blob`]).
    Repository(Datastores),
    /// A source's own datastores ([`Content::Placed`]).
    Placed(Arc<dyn PlacedStores>),
    /// None: every item is in Synapse's media store.
    MediaStoreOnly,
}

/// Writes `items` into an archive: the producer (this task) reads and hashes the bytes,
/// a blocking thread writes the archive.
async fn export_items(
    items: ExportItems,
    stores: Stores,
    from: String,
    options: ExportOptions,
    progress: Arc<Progress>,
    names_in_memory: usize,
) -> Result<ExportReport, GdprError> {
    // An empty answer to a GDPR request is never written: without a first item (a
    // media, or a row that could not be read), nothing is created at the destination.
    let mut items = items.peekable();
    if std::pin::Pin::new(&mut items).peek().await.is_none() {
        return Err(GdprError::NoMedia {
            entity: options.entity.to_string(),
            suggestions: Vec::new(),
        });
    }
    let items = items.boxed();
    let writer = ArchiveWriter::create(&options.destination, &options.writer)?;
    let (steps, step_receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let entity_id = options.entity.to_string();
    let writer_progress = progress.clone();
    let writer_task = tokio::task::spawn_blocking(move || {
        write_archive(writer, step_receiver, &entity_id, &writer_progress)
    });
    let names = DigestNames::new(&scratch_folder(&options.destination), names_in_memory);
    let produced = produce(items, &stores, &options, steps, &progress, names).await;
    let written = writer_task
        .await
        .map_err(|e| GdprError::Worker(e.to_string()))?;
    // A writer error explains a producer that stopped because the writer went away; a
    // writer that was not told to finish explains nothing: the producer's error does.
    let written = written?;
    let produced = produced?;
    let (summary, failures) =
        written.ok_or_else(|| GdprError::Worker("the export stopped before its end".into()))?;
    Ok(ExportReport {
        route: Route::new(from, options.destination.display()),
        entity: options.entity.to_string(),
        destination: options.destination,
        records: summary.records,
        entries: summary.entries,
        entry_bytes: summary.entry_bytes,
        shared_records: produced.shared_records,
        bytes_saved: produced.bytes_saved,
        quarantined_skipped: produced.quarantined,
        parts: summary.parts,
        manifest: summary.manifest,
        archive_bytes: summary.archive_bytes,
        failures,
    })
}

/// Where an export keeps its temporary index of the entries written: beside the
/// destination, where its staging folder is.
fn scratch_folder(destination: &Path) -> PathBuf {
    match destination.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Counters only the producer knows.
#[derive(Default)]
struct Produced {
    shared_records: u64,
    bytes_saved: u64,
    quarantined: u64,
}

/// Reads, hashes and hands to the writer every item's bytes, each distinct blob once:
/// an item whose digest was already written names that entry instead. The names of the
/// entries written are looked up a batch of items at a time in `names`.
async fn produce(
    items: ExportItems,
    stores: &Stores,
    options: &ExportOptions,
    steps: mpsc::Sender<Step>,
    progress: &Arc<Progress>,
    mut names: DigestNames,
) -> Result<Produced, GdprError> {
    let mut produced = Produced::default();
    let mut batches = items
        .try_chunks(ITEMS_PER_NAME_LOOKUP)
        .map_err(|unfinished| unfinished.1);
    while let Some(batch) = batches.try_next().await? {
        let digests = batch
            .iter()
            .filter_map(|item| item.as_ref().ok()?.sha256.as_ref());
        names.load(digests).await?;
        for item in batch {
            produce_item(
                item,
                stores,
                options,
                &steps,
                progress,
                &mut names,
                &mut produced,
            )
            .await?;
        }
        names.end_batch().await?;
    }
    send(&steps, Step::Finish).await?;
    Ok(produced)
}

/// Hands one item to the writer: left out (quarantined or not exportable), a record
/// naming an entry written before (`names`), or a new entry and its record.
async fn produce_item(
    item: Result<ExportItem, NotExportable>,
    stores: &Stores,
    options: &ExportOptions,
    steps: &mpsc::Sender<Step>,
    progress: &Arc<Progress>,
    names: &mut DigestNames,
    produced: &mut Produced,
) -> Result<(), GdprError> {
    let item = match item {
        Ok(item) => item,
        Err(not_exportable) => return send_failure(steps, not_exportable).await,
    };
    if item.quarantined {
        produced.quarantined += 1;
        progress.items_done.fetch_add(1, Ordering::Relaxed);
        let step = Step::Quarantined {
            mxc: item.key.to_string(),
            name: item.upload_name.unwrap_or_default(),
        };
        return send(steps, step).await;
    }
    let mxc = item.key.to_string();
    let mut manifest = manifest_record(&item);
    let shared = item.sha256.as_ref().and_then(|sha| names.get(sha));
    if options.media_bytes == MediaBytes::MetadataOnly {
        // Metadata only: the record names no entry.
    } else if let Some(name) = shared {
        manifest.file_name = name.to_owned();
        produced.shared_records += 1;
        produced.bytes_saved += item.size_bytes;
    } else {
        let source = match open_content(&item, stores).await? {
            Ok(source) => source,
            Err((reason, detail)) => {
                let failure = Failure {
                    item: mxc,
                    reason,
                    detail,
                };
                return send_failure(steps, failure).await;
            }
        };
        let name = format!(
            "{}__{}{}",
            item.key.origin,
            item.key.media_id,
            extension_for(item.content_type.as_deref().unwrap_or_default())
        );
        let (body, body_receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let step = Step::Entry {
            name: name.clone(),
            size: item.size_bytes,
            mtime_ms: item.created_ts,
            content_type: item.content_type.clone().unwrap_or_default(),
            body: body_receiver,
        };
        send(steps, step).await?;
        let expected = (item.sha256.clone(), item.size_bytes);
        let digest = match source {
            ContentSource::Stream(blob) => send_stream_chunks(blob, expected, body, progress).await,
            ContentSource::File(file) => {
                let progress = (*progress).clone();
                tokio::task::spawn_blocking(move || {
                    send_file_chunks(file, expected, body, &progress)
                })
                .await
                .map_err(|e| GdprError::Worker(e.to_string()))?
            }
        };
        if let Some(sha256) = digest {
            manifest.sha256 = sha256.to_string();
            names.insert(sha256, name.clone());
        }
        manifest.file_name = name;
    }
    send(
        steps,
        Step::Record {
            mxc,
            record: manifest,
        },
    )
    .await
}

/// Where an item's bytes are read from.
enum ContentSource {
    /// An open regular file, read with blocking I/O on its own thread (fewer copies).
    File(std::fs::File),
    /// A datastore's stream.
    Stream(media_core::datastore::BlobReader),
}

/// Why an item's bytes cannot be exported, and the details.
type Refusal = (ExportReason, String);

/// Opens an item's bytes: its file in Synapse's media store (no link followed, regular
/// files only), or its blob in the datastore its row names, at the recorded location,
/// as a local file when the datastore keeps files (read with blocking I/O, fewer
/// copies), else as its stream. A file whose length is not the recorded one is refused
/// (`size_mismatch`) before any of it is read. Only the repository failing is an error;
/// anything about the item is a refusal.
async fn open_content(
    item: &ExportItem,
    stores: &Stores,
) -> Result<Result<ContentSource, Refusal>, GdprError> {
    let (opened, shown) = match (&item.content, stores) {
        (Content::MediaStore { media_store, path }, _) => {
            let shown = media_store.join(path);
            let (root, path) = (media_store.clone(), path.clone());
            let opened = tokio::task::spawn_blocking(move || {
                let file = synapse_files::open_in_media_store(&root, &path)?;
                let length = file.metadata()?.len();
                Ok::<_, std::io::Error>((file, length))
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|opened| opened);
            (opened, shown)
        }
        (
            Content::Blob {
                datastore,
                location,
            },
            Stores::Repository(datastores),
        ) => {
            let store = match datastores.store(*datastore).await? {
                Ok(store) => store,
                Err(unavailable) => {
                    let reason = ExportReason::DatastoreUnavailable;
                    return Ok(Err((reason, unavailable.to_string())));
                }
            };
            match store.open(location, None).await {
                Ok(BlobPayload::File { file, path, len }) => (Ok((file, len)), path),
                Ok(BlobPayload::Stream(blob)) => return Ok(Ok(limited_stream(blob, item))),
                Err(e @ StoreError::NotFound { .. }) => {
                    let detail = format!("{e} (datastore #{}, {})", datastore.0, store.uri());
                    return Ok(Err((ExportReason::FileMissing, detail)));
                }
                Err(e) => {
                    let detail = format!("its bytes cannot be read: {e}");
                    return Ok(Err((ExportReason::Unreadable, detail)));
                }
            }
        }
        (
            Content::Placed {
                datastore,
                location,
            },
            Stores::Placed(stores),
        ) => match stores.open_placed(datastore, location).await? {
            Ok(BlobPayload::File { file, path, len }) => (Ok((file, len)), path),
            Ok(BlobPayload::Stream(blob)) => return Ok(Ok(limited_stream(blob, item))),
            Err(NotOpened { reason, detail }) => return Ok(Err((reason, detail))),
        },
        (Content::Blob { .. } | Content::Placed { .. }, _) => {
            let detail = "its bytes are in datastores this export does not read";
            return Ok(Err((ExportReason::Unreadable, detail.into())));
        }
    };
    Ok(match opened {
        Ok((file, length)) if length == item.size_bytes => Ok(ContentSource::File(file)),
        Ok((_, length)) => Err((
            ExportReason::SizeMismatch,
            format!(
                "{} holds {length} bytes, {} were recorded: not exported",
                shown.display(),
                item.size_bytes
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err((
            ExportReason::FileMissing,
            format!("{} does not exist", shown.display()),
        )),
        Err(e) => Err((
            ExportReason::Unreadable,
            format!("its bytes cannot be read: {e}"),
        )),
    })
}

/// A datastore's stream of an item's bytes, never read further than the item's size
/// allows.
fn limited_stream(blob: media_core::datastore::BlobReader, item: &ExportItem) -> ContentSource {
    let limit = synapse_files::read_limit(Some(item.size_bytes), 0);
    ContentSource::Stream(Box::pin(tokio::io::AsyncReadExt::take(blob, limit)))
}

/// Hands a step to the writer thread.
async fn send(steps: &mpsc::Sender<Step>, step: Step) -> Result<(), GdprError> {
    steps
        .send(step)
        .await
        .map_err(|_| GdprError::Worker("the archive writer stopped".into()))
}

/// Tells the writer thread about a media that cannot be exported.
async fn send_failure(steps: &mpsc::Sender<Step>, failure: NotExportable) -> Result<(), GdprError> {
    send(steps, Step::Failed(failure)).await
}

/// Hashes a blob's chunks as they pass, holding back the last one: it goes out only
/// once the digest and length are known to match, otherwise an error replaces it (the
/// writer then cuts the entry off the part and no record references it).
#[derive(Default)]
struct HeldBackChunks {
    hasher: Sha256,
    length: u64,
    held: Option<Bytes>,
}

impl HeldBackChunks {
    /// Takes a chunk; returns the one now safe to send.
    fn push(&mut self, chunk: Bytes) -> Option<Bytes> {
        self.hasher.update(&chunk);
        self.length += chunk.len() as u64;
        self.held.replace(chunk)
    }

    /// The last chunk (or why the bytes are wrong), and the digest when they are right.
    fn finish(
        self,
        (sha256, size): (Option<Sha256Hex>, u64),
    ) -> (std::io::Result<Bytes>, Option<Sha256Hex>) {
        let actual = Sha256Hex::from_digest(&self.hasher.finalize().into());
        if self.length != size {
            // At most one byte past the recorded length was read.
            let found = if self.length > size {
                format!("more than the {size} bytes recorded")
            } else {
                format!("{} bytes, {size} were recorded", self.length)
            };
            let problem = EntryRefused {
                reason: ExportReason::SizeMismatch,
                detail: format!("its bytes changed while being read: they are {found}"),
            };
            (Err(std::io::Error::other(problem)), None)
        } else if sha256.as_ref().is_none_or(|s| s == &actual) {
            (Ok(self.held.unwrap_or_default()), Some(actual))
        } else {
            let wanted = sha256.map_or_else(String::new, |s| s.to_string());
            let problem = std::io::Error::other(format!(
                "the stored bytes are damaged: they hash to {actual} instead of {wanted}"
            ));
            (Err(problem), None)
        }
    }
}

/// Streams a blob from an async reader to the writer; returns its digest when its
/// bytes are right.
async fn send_stream_chunks(
    blob: media_core::datastore::BlobReader,
    expected: (Option<Sha256Hex>, u64),
    body: mpsc::Sender<std::io::Result<Bytes>>,
    progress: &Progress,
) -> Option<Sha256Hex> {
    let mut chunks = ReaderStream::with_capacity(blob, CHUNK);
    let mut checker = HeldBackChunks::default();
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = body.send(Err(e)).await;
                return None;
            }
        };
        progress
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if let Some(ready) = checker.push(chunk)
            && body.send(Ok(ready)).await.is_err()
        {
            return None;
        }
    }
    let (last, digest) = checker.finish(expected);
    let _ = body.send(last).await;
    digest
}

/// Blocking: streams a file to the writer, never more than one byte past its recorded
/// length; returns its digest when its bytes are right.
fn send_file_chunks(
    file: std::fs::File,
    expected: (Option<Sha256Hex>, u64),
    body: mpsc::Sender<std::io::Result<Bytes>>,
    progress: &Progress,
) -> Option<Sha256Hex> {
    let mut file = file.take(synapse_files::read_limit(Some(expected.1), 0));
    let mut checker = HeldBackChunks::default();
    loop {
        let mut chunk = vec![0; CHUNK];
        let n = match crate::read_full(&mut file, &mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = body.blocking_send(Err(e));
                return None;
            }
        };
        chunk.truncate(n);
        progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(ready) = checker.push(Bytes::from(chunk))
            && body.blocking_send(Ok(ready)).is_err()
        {
            return None;
        }
    }
    let (last, digest) = checker.finish(expected);
    let _ = body.blocking_send(last);
    digest
}

fn manifest_record(item: &ExportItem) -> ManifestRecord {
    ManifestRecord {
        name: item.upload_name.clone().unwrap_or_default(),
        file_name: String::new(),
        size_bytes: item.size_bytes,
        sha256: item
            .sha256
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        content_type: item.content_type.clone().unwrap_or_default(),
        origin: item.key.origin.to_string(),
        media_id: item.key.media_id.to_string(),
        created_ts: item.created_ts,
        s3_url: String::new(),
        uploader: item
            .uploader
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

/// The writer thread: applies the steps in order, keeps entries that failed from being
/// referenced, and finishes the archive.
fn write_archive(
    mut writer: ArchiveWriter,
    mut steps: mpsc::Receiver<Step>,
    entity_id: &str,
    progress: &Progress,
) -> Result<Option<(media_archive::ArchiveSummary, Failures<ExportReason>)>, GdprError> {
    let mut failures = Failures::default();
    let mut failed_entries: HashMap<String, EntryRefused> = HashMap::new();
    while let Some(step) = steps.blocking_recv() {
        match step {
            Step::Entry {
                name,
                size,
                mtime_ms,
                content_type,
                body,
            } => {
                let entry = NewEntry {
                    name: &name,
                    size,
                    mtime_ms,
                    content_type: &content_type,
                };
                let mut body = ChannelReader::new(body);
                // The writer reads the body to its end, so the verdict on its digest
                // (sent after the last bytes) decides too; a failed entry is cut off
                // the part again.
                if let WrittenEntry::SourceFailed(problem) = writer.add_entry(entry, &mut body)? {
                    failed_entries.insert(name, EntryRefused::from_io(&problem));
                }
            }
            Step::Record { mxc, record } => {
                progress.items_done.fetch_add(1, Ordering::Relaxed);
                match failed_entries.get(&record.file_name) {
                    Some(refused) => {
                        let why = LeftOutBecause::Failed(refused.reason);
                        leave_out(&mut writer, &mxc, &record.name, why)?;
                        failures.push(mxc, refused.reason, refused.detail.clone());
                    }
                    None => writer.add_record(&mxc, &record)?,
                }
            }
            Step::Quarantined { mxc, name } => {
                leave_out(&mut writer, &mxc, &name, LeftOutBecause::Quarantined)?;
            }
            Step::Failed(failure) => {
                progress.items_done.fetch_add(1, Ordering::Relaxed);
                let why = LeftOutBecause::Failed(failure.reason);
                leave_out(&mut writer, &failure.item, "", why)?;
                failures.record(failure);
            }
            Step::Finish => {
                let summary = writer.finish(entity_id, media_core::now_ms())?;
                return Ok(Some((summary, failures)));
            }
        }
    }
    // The producer stopped without handing everything over: dropping the writer removes
    // what it staged, and a previous export stays as it was.
    Ok(None)
}

/// Lists a media left out of the archive at the end of its index, with a sentence for
/// the person whose data it is. Failure details are not shown there: they name the
/// server's files and are for its operators (the export's report lists them).
fn leave_out(
    writer: &mut ArchiveWriter,
    mxc: &str,
    name: &str,
    because: LeftOutBecause,
) -> Result<(), GdprError> {
    let why = match because {
        LeftOutBecause::Quarantined => {
            "Quarantined by the server's administrators: its content is withheld \
                          from exports."
                .to_owned()
        }
        LeftOutBecause::Failed(
            ExportReason::SizeMismatch
            | ExportReason::Unreadable
            | ExportReason::DatastoreUnavailable,
        ) => "Its stored copy is damaged or could not be read on \
                                           the server, so it could not be exported. Ask the \
                                           server's administrators about it."
            .to_owned(),
        LeftOutBecause::Failed(ExportReason::FileMissing) => {
            "Its stored copy is missing on the server, so it could not be exported. Ask the \
             server's administrators about it."
                .to_owned()
        }
        LeftOutBecause::Failed(other) => format!(
            "It could not be exported ({}). Ask the server's administrators about it.",
            other.code().replace('_', " ")
        ),
    };
    writer.add_left_out(&LeftOut {
        mxc,
        name,
        why: &why,
    })?;
    Ok(())
}

/// Why a media is listed as left out at the end of an archive's index.
#[derive(Debug, Clone, Copy)]
enum LeftOutBecause {
    /// It is quarantined: withheld on purpose, not a failure.
    Quarantined,
    /// It could not be exported.
    Failed(ExportReason),
}

/// Why the bytes of an entry were refused, carried through the archive writer inside
/// an I/O error so that the report gets its reason.
#[derive(Debug, Clone)]
struct EntryRefused {
    reason: ExportReason,
    detail: String,
}

impl EntryRefused {
    /// The refusal an entry's failure carries, or `unreadable` for any other error.
    fn from_io(problem: &std::io::Error) -> Self {
        match problem.get_ref().and_then(|e| e.downcast_ref::<Self>()) {
            Some(refused) => refused.clone(),
            None => Self {
                reason: ExportReason::Unreadable,
                detail: problem.to_string(),
            },
        }
    }
}

impl std::fmt::Display for EntryRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for EntryRefused {}

/// A blocking reader over chunks arriving on a channel, lending them without a copy.
struct ChannelReader {
    chunks: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(chunks: mpsc::Receiver<std::io::Result<Bytes>>) -> Self {
        Self {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, n: usize) {
        let _ = self.current.split_to(n);
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_data_false_asks_for_a_metadata_only_archive() {
        assert_eq!(MediaBytes::from_include_data(true), MediaBytes::Included);
        assert_eq!(
            MediaBytes::from_include_data(false),
            MediaBytes::MetadataOnly
        );
    }

    #[test]
    fn synapse_row_refusals_keep_their_codes() {
        use media_synapse::RowFault;
        for fault in [
            RowFault::NeverUploaded,
            RowFault::InvalidIdentifier,
            RowFault::BadRow,
        ] {
            assert_eq!(ExportReason::from(fault).code(), fault.code());
        }
    }

    fn item(media_store: &Path, media_id: &str, bytes: &[u8]) -> ExportItem {
        std::fs::write(media_store.join(media_id), bytes).unwrap();
        ExportItem {
            key: MediaKey::new("example.org".parse().unwrap(), media_id.parse().unwrap()),
            sha256: None,
            size_bytes: bytes.len() as u64,
            upload_name: None,
            content_type: Some("text/plain".into()),
            uploader: Some("@alice:example.org".try_into().unwrap()),
            created_ts: 1,
            quarantined: false,
            content: Content::MediaStore {
                media_store: media_store.to_owned(),
                path: media_id.into(),
            },
        }
    }

    /// The options of an export of Alice's media into `destination`, without syncs.
    fn alices_export(destination: PathBuf, replace: bool) -> ExportOptions {
        ExportOptions {
            entity: "@alice:example.org".parse().unwrap(),
            destination,
            writer: WriterOptions {
                replace,
                sync: false,
                ..WriterOptions::default()
            },
            media_bytes: MediaBytes::Included,
        }
    }

    /// The names in folder `dir`.
    fn names_in(dir: &Path) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[tokio::test]
    async fn a_fatal_error_mid_export_writes_no_archive_and_keeps_the_previous_export() {
        let dir = tempfile::tempdir().unwrap();
        let media_store = dir.path().join("media_store");
        std::fs::create_dir(&media_store).unwrap();
        let (one, two) = (
            item(&media_store, "one", b"first"),
            item(&media_store, "two", b"second"),
        );
        let destination = dir.path().join("archive");
        let options = |replace| alices_export(destination.clone(), replace);
        let items = futures::stream::iter([Ok(Ok(one.clone())), Ok(Ok(two))]).boxed();
        let progress = Arc::new(Progress::default());
        let report = export_items(
            items,
            Stores::MediaStoreOnly,
            "test".into(),
            options(false),
            progress.clone(),
            NAMES_IN_MEMORY,
        )
        .await
        .unwrap();
        assert_eq!(report.records, 2);
        let manifest = std::fs::read(&report.manifest).unwrap();

        // The source fails after one item (the database went away): the run fails with
        // that error, and the previous export is not replaced by a partial one.
        let failing = futures::stream::iter([
            Ok(Ok(one)),
            Err(GdprError::Config("the database went away".into())),
        ])
        .boxed();
        let error = export_items(
            failing,
            Stores::MediaStoreOnly,
            "test".into(),
            options(true),
            progress,
            NAMES_IN_MEMORY,
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("went away"), "{error}");
        assert!(
            std::fs::read(&report.manifest).unwrap() == manifest,
            "the previous export was replaced by a partial one"
        );
        let names = names_in(dir.path());
        assert_eq!(
            names.len(),
            2,
            "something was left beside the archive: {names:?}"
        );
    }

    #[tokio::test]
    async fn entries_written_long_before_are_shared_as_when_every_name_is_in_memory() {
        // 700 media over 250 distinct contents, in batches of 256: with one name in
        // memory, the names move to the temporary file after every batch, and most
        // shared media find their entry there.
        let dir = tempfile::tempdir().unwrap();
        let media_store = dir.path().join("media_store");
        std::fs::create_dir(&media_store).unwrap();
        let items: Vec<ExportItem> = (0..700)
            .map(|n| {
                let bytes = format!("content {}", n % 250);
                let mut item = item(&media_store, &format!("m{n:03}"), bytes.as_bytes());
                item.sha256 = Some(Sha256Hex::from_digest(&Sha256::digest(&bytes).into()));
                item
            })
            .collect();
        let mut manifests = Vec::new();
        for in_memory in [NAMES_IN_MEMORY, 1] {
            let options = alices_export(dir.path().join(format!("archive-{in_memory}")), false);
            let stream = futures::stream::iter(items.clone().into_iter().map(|i| Ok(Ok(i))));
            let report = export_items(
                stream.boxed(),
                Stores::MediaStoreOnly,
                "test".into(),
                options.clone(),
                Arc::new(Progress::default()),
                in_memory,
            )
            .await
            .unwrap();
            assert_eq!(
                (report.records, report.entries, report.shared_records),
                (700, 250, 450),
                "{in_memory} names in memory"
            );
            let archive = media_archive::ArchiveFolder::open(&options.destination).unwrap();
            let mut entries = std::collections::BTreeMap::new();
            archive
                .read_records(&mut |mxc, record| {
                    entries.insert(mxc, (record.file_name, record.sha256));
                    Ok(())
                })
                .unwrap();
            // Each media names the entry of the first media with its bytes.
            let first = &entries["mxc://example.org/m000"];
            assert_eq!(entries["mxc://example.org/m500"], *first);
            assert_eq!(first.0, "example.org__m000.txt");
            manifests.push(entries);
        }
        assert_eq!(manifests[0], manifests[1]);
        let left = names_in(dir.path());
        assert_eq!(
            left.len(),
            3,
            "only the media store and the archives: {left:?}"
        );
    }
}
