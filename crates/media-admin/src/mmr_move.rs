//! `media_admin mmr push` and `media_admin mmr pull`: a whole repository moved between
//! our repository and a matrix-media-repo (MMR) deployment, without an archive.
//!
//! The source is read page by page ([`Repository::all_media`] with each page's
//! thumbnails and blobs; [`MmrDeployment::all_media`] with each row's placement) and
//! written through the other side's import sink ([`MmrSink`] into MMR,
//! [`RepositorySink`] into ours), exactly as `import_synapse` writes: bytes put
//! content-addressed into the datastore the sink names for the media and kind (hashed
//! while they stream and checked against the row), synced, then the page's media
//! recorded with their thumbnails in one transaction, dedup decided by the sink's
//! database. Each blob is read from the datastore and location its own row names.
//!
//! * **Bytes copied once.** Bytes the destination stores already (the sink's
//!   [`ImportSink::stored_size`]) are not copied; bytes shared by several media of a
//!   page are copied once.
//! * **Resumable and idempotent.** A media the destination records with the same bytes
//!   is skipped (`already_there`) before anything is read, so a re-run reads rows only
//!   and writes nothing; a stopped run is simply run again.
//! * **Per-item failures.** A media whose bytes (or a thumbnail's) cannot be read or are
//!   not what its row says, one recorded in the destination with other bytes, one whose
//!   ID the destination reserves, or a source row that cannot be read, is listed and not
//!   written; the others go on.
//! * **Dry run.** Reads both sides and counts what would be moved and copied; writes,
//!   records and deletes nothing.
//! * **Task log.** The run is recorded where it writes: in MMR's `background_tasks` once
//!   it ended (as `media_admin mmr push`, see [`MmrSink::record_task`]), or in our task
//!   log (as `media_admin mmr pull`).
//!
//! What does not move, because the other side has no place for it: our
//! `quarantined_by`, `imported_from` and quarantine change stream (MMR has no columns
//! for them); MMR's `reserved_media`, `media_id_hold`, `user_stats` and its own task
//! list. Rooms of media are not moved (MMR does not keep them).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use media_core::datastore::{BlobKey, BlobPayload, BlobReader, Datastore, PutOptions, StoreError};
use media_core::ids::{ServerName, Sha256Hex};
use media_core::progress::{Progress, human_size};
use media_core::records::{MediaKey, MediaRecord, Purpose, ThumbnailRecord};
use media_core::run::{Failure, Failures, Reason, Report, Route, RunMode};
use media_db::{BlobIndex, DbError, InsertOutcome, MediaIndex, Repository, TaskKind, TaskLog};
use media_import::{Content, ImportSink, RepositorySink, StoredMedia};
use media_mmr::{MmrDeployment, MmrError, MmrSink};
use serde::Serialize;

use crate::error::AdminError;
use crate::stores::{Access, open_recorded};

/// Media read, copied and recorded per page.
pub const PAGE: usize = 200;

/// Which way a move goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveDirection {
    /// Our repository into the MMR deployment (`media_admin mmr push`).
    Push,
    /// The MMR deployment into our repository (`media_admin mmr pull`).
    Pull,
}

impl MoveDirection {
    /// The command's name, as the task log records it.
    pub fn command(self) -> &'static str {
        match self {
            Self::Push => "media_admin mmr push",
            Self::Pull => "media_admin mmr pull",
        }
    }
}

/// How to move.
#[derive(Debug, Clone, Copy)]
pub struct MoveOptions {
    /// A dry run counts and writes nothing.
    pub mode: RunMode,
    /// Copies in flight at once (at least 1).
    pub workers: usize,
}

/// Why a media was not moved. Nothing of it was recorded in the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveFailure {
    /// The source row cannot be read (an identifier, digest or size we refuse), or names
    /// no blob.
    BadRow,
    /// Its bytes (or a thumbnail's) are missing from the source.
    SourceMissing,
    /// Its bytes could not be read, or their datastore is not known.
    SourceUnreadable,
    /// Its bytes are not what the row says (digest or size).
    SourceCorrupt,
    /// The destination refused the bytes.
    DestinationFailed,
    /// The destination records this media with other bytes: not overwritten.
    Conflict,
    /// The destination reserves this media ID (or holds it for an upload).
    Reserved,
}

impl Reason for MoveFailure {
    fn code(self) -> &'static str {
        match self {
            Self::BadRow => "bad_row",
            Self::SourceMissing => "source_missing",
            Self::SourceUnreadable => "source_unreadable",
            Self::SourceCorrupt => "source_corrupt",
            Self::DestinationFailed => "destination_failed",
            Self::Conflict => "conflict",
            Self::Reserved => "reserved",
        }
    }
}

/// What a move did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct MoveReport {
    /// Dry run or applied.
    pub mode: RunMode,
    /// Which way.
    pub direction: MoveDirection,
    /// Source and destination.
    pub route: Route,
    /// Media read from the source.
    pub media_read: u64,
    /// Media recorded in the destination (in a dry run: that would be).
    pub media_moved: u64,
    /// Their thumbnails recorded.
    pub thumbnails_moved: u64,
    /// Media the destination records already with the same bytes: skipped.
    pub already_there: u64,
    /// Distinct bytes copied into the destination's datastores.
    pub blobs_copied: u64,
    /// Their size.
    pub bytes_copied: u64,
    /// Bytes the destination holds already: not copied.
    pub blobs_already_there: u64,
    /// Media not moved, and why.
    pub failures: Failures<MoveFailure>,
}

impl MoveReport {
    fn new(mode: RunMode, direction: MoveDirection, route: Route) -> Self {
        Self {
            mode,
            direction,
            route,
            media_read: 0,
            media_moved: 0,
            thumbnails_moved: 0,
            already_there: 0,
            blobs_copied: 0,
            bytes_copied: 0,
            blobs_already_there: 0,
            failures: Failures::default(),
        }
    }

    /// The counters, as the task log records them.
    fn counters(&self) -> String {
        serde_json::json!({
            "media_read": self.media_read,
            "media_moved": self.media_moved,
            "thumbnails_moved": self.thumbnails_moved,
            "already_there": self.already_there,
            "blobs_copied": self.blobs_copied,
            "bytes_copied": self.bytes_copied,
            "blobs_already_there": self.blobs_already_there,
            "failed": self.failures.count(),
        })
        .to_string()
    }
}

impl fmt::Display for MoveReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.route
            .write_headline(f, self.direction.command(), self.mode)?;
        let (moved, copied) = if self.mode.is_dry_run() {
            ("would move", "would copy")
        } else {
            ("moved", "copied")
        };
        writeln!(
            f,
            "  read {} media; {moved} {} with {} thumbnails; {} already there",
            self.media_read, self.media_moved, self.thumbnails_moved, self.already_there
        )?;
        writeln!(
            f,
            "  {copied} {} blobs ({}); {} blobs already held by the destination",
            self.blobs_copied,
            human_size(self.bytes_copied),
            self.blobs_already_there
        )?;
        if self.failures.any() {
            writeln!(
                f,
                "  {} media not moved (nothing of them was written):",
                self.failures.count()
            )?;
            self.failures.write_lines(f)?;
        }
        Ok(())
    }
}

impl Report for MoveReport {
    fn mode(&self) -> RunMode {
        self.mode
    }

    fn has_failures(&self) -> bool {
        self.failures.any()
    }
}

/// Where some bytes are in the source: a datastore (ours: its ID; MMR's: its string ID)
/// and the location its row names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Place {
    datastore: String,
    location: String,
}

/// A media of the source with where its bytes and its thumbnails' bytes are.
#[derive(Debug, Clone)]
struct SourceMedia {
    record: MediaRecord,
    place: Place,
    thumbnails: Vec<(ThumbnailRecord, Place)>,
}

/// Why some bytes were not opened or copied, and the detail to list.
type NotCopied = (MoveFailure, String);

/// A page of the source: media, or the failures of rows that cannot be moved.
type SourcePage = Vec<Result<SourceMedia, Failure<MoveFailure>>>;

/// What a move reads.
#[async_trait]
trait MoveSource: Send + Sync {
    /// Where it is, for the route (no password).
    fn describe(&self) -> String;
    /// How many media it holds (0 when not known).
    async fn count(&self) -> Result<u64, AdminError>;
    /// Its media, page by page.
    fn pages(&self) -> BoxStream<'static, Result<SourcePage, AdminError>>;
    /// Opens the bytes at `place`.
    async fn open(&self, place: &Place) -> Result<BlobPayload, NotCopied>;
}

/// Our repository as a move's source.
struct RepositorySource {
    repo: Repository,
    stores: HashMap<String, Arc<dyn Datastore>>,
}

impl RepositorySource {
    /// Opens every recorded datastore, read-only and checked by its identity marker.
    async fn open(repo: &Repository) -> Result<Self, AdminError> {
        let mut stores = HashMap::new();
        for record in repo.datastore_records().await? {
            let store = open_recorded(&record, Access::ReadOnly).await?;
            stores.insert(record.id.0.to_string(), store);
        }
        Ok(Self {
            repo: repo.clone(),
            stores,
        })
    }
}

/// Where our repository keeps the bytes `sha256`, by its blob row.
async fn blob_place(repo: &Repository, sha256: &Sha256Hex) -> Result<Option<Place>, DbError> {
    Ok(repo.get_blob(sha256).await?.map(|blob| Place {
        datastore: blob.datastore_id.0.to_string(),
        location: blob.location.to_string(),
    }))
}

/// One page of our repository's media with their thumbnails and blobs.
async fn repository_page(
    repo: &Repository,
    records: Vec<MediaRecord>,
) -> Result<SourcePage, AdminError> {
    let mut thumbnails: HashMap<(ServerName, String), Vec<ThumbnailRecord>> = HashMap::new();
    for (origin, ids) in by_origin(records.iter().map(|r| &r.key)) {
        for (id, found) in repo.recorded_thumbnails(&origin, &ids).await? {
            thumbnails.insert((origin.clone(), id), found);
        }
    }
    let mut places: HashMap<Sha256Hex, Option<Place>> = HashMap::new();
    let mut page = Vec::with_capacity(records.len());
    for record in records {
        let own = (
            record.key.origin.clone(),
            record.key.media_id.as_str().to_owned(),
        );
        let thumbnails = thumbnails.remove(&own).unwrap_or_default();
        let mut digests = vec![record.sha256.clone()];
        digests.extend(thumbnails.iter().map(|t| t.sha256.clone()));
        for sha256 in digests {
            if let Entry::Vacant(slot) = places.entry(sha256) {
                let place = blob_place(repo, slot.key()).await?;
                slot.insert(place);
            }
        }
        let place_of = |sha256: &Sha256Hex| places.get(sha256).cloned().flatten();
        let Some(place) = place_of(&record.sha256) else {
            page.push(Err(Failure {
                item: record.key.mxc().to_string(),
                reason: MoveFailure::BadRow,
                detail: format!("no blob row holds its bytes {}", record.sha256),
            }));
            continue;
        };
        let mut placed = Vec::with_capacity(thumbnails.len());
        let mut missing = None;
        for t in thumbnails {
            match place_of(&t.sha256) {
                Some(place) => placed.push((t, place)),
                None => missing = Some(t.sha256.clone()),
            }
        }
        page.push(match missing {
            Some(sha256) => Err(Failure {
                item: record.key.mxc().to_string(),
                reason: MoveFailure::BadRow,
                detail: format!("no blob row holds the bytes {sha256} of a thumbnail"),
            }),
            None => Ok(SourceMedia {
                record,
                place,
                thumbnails: placed,
            }),
        });
    }
    Ok(page)
}

#[async_trait]
impl MoveSource for RepositorySource {
    fn describe(&self) -> String {
        format!("our repository {}", self.repo.location())
    }

    async fn count(&self) -> Result<u64, AdminError> {
        Ok(0)
    }

    fn pages(&self) -> BoxStream<'static, Result<SourcePage, AdminError>> {
        let repo = self.repo.clone();
        self.repo
            .all_media()
            .map_err(AdminError::from)
            .try_chunks(PAGE)
            .map_err(|e| e.1)
            .and_then(move |records| {
                let repo = repo.clone();
                async move { repository_page(&repo, records).await }
            })
            .boxed()
    }

    async fn open(&self, place: &Place) -> Result<BlobPayload, NotCopied> {
        let Some(store) = self.stores.get(&place.datastore) else {
            return Err((
                MoveFailure::SourceUnreadable,
                format!("datastore #{} is not recorded", place.datastore),
            ));
        };
        let Some(key) = BlobKey::parse(&place.location) else {
            return Err((
                MoveFailure::BadRow,
                format!("location {:?} is not a blob key", place.location),
            ));
        };
        match store.open(&key, None).await {
            Ok(payload) => Ok(payload),
            Err(missing @ StoreError::NotFound { .. }) => {
                Err((MoveFailure::SourceMissing, missing.to_string()))
            }
            Err(e) => Err((MoveFailure::SourceUnreadable, e.to_string())),
        }
    }
}

/// An MMR deployment as a move's source.
struct MmrSource {
    deployment: Arc<MmrDeployment>,
}

/// One page of MMR's media with their thumbnails' placements.
async fn mmr_page(
    deployment: &MmrDeployment,
    rows: Vec<Result<media_mmr::MmrMedia, MmrError>>,
) -> Result<SourcePage, AdminError> {
    let mut page = Vec::with_capacity(rows.len());
    let mut media = Vec::with_capacity(rows.len());
    for row in rows {
        match row {
            Ok(m) => media.push(m),
            Err(MmrError::Db(DbError::InvalidRow { table, key, reason })) => {
                page.push(Err(Failure {
                    item: format!("mxc://{key}"),
                    reason: MoveFailure::BadRow,
                    detail: format!(
                        "this row of matrix-media-repo's {table} cannot be read: {reason}"
                    ),
                }))
            }
            Err(fatal) => return Err(mmr_error(fatal)),
        }
    }
    let mut thumbnails = HashMap::new();
    // Origins of the page with a thumbnail row that cannot be read: their media are not
    // moved without it.
    let mut unreadable: HashMap<ServerName, String> = HashMap::new();
    for (origin, ids) in by_origin(media.iter().map(|m| &m.record.key)) {
        let found = match deployment.thumbnails_of_media(&origin, &ids).await {
            Ok(found) => found,
            Err(MmrError::Db(DbError::InvalidRow { table, key, reason })) => {
                let why = format!(
                    "a row of matrix-media-repo's {table} among its page's thumbnails cannot \
                     be read ({key}: {reason})"
                );
                unreadable.insert(origin, why);
                continue;
            }
            Err(fatal) => return Err(mmr_error(fatal)),
        };
        for (id, rows) in found {
            thumbnails.insert((origin.clone(), id), rows);
        }
    }
    for m in media {
        if let Some(why) = unreadable.get(&m.record.key.origin) {
            page.push(Err(Failure {
                item: m.record.key.mxc().to_string(),
                reason: MoveFailure::BadRow,
                detail: why.clone(),
            }));
            continue;
        }
        let own = (
            m.record.key.origin.clone(),
            m.record.key.media_id.as_str().to_owned(),
        );
        let thumbnails = thumbnails
            .remove(&own)
            .unwrap_or_default()
            .into_iter()
            .map(|t| (t.record, place_of(&t.placement)))
            .collect();
        page.push(Ok(SourceMedia {
            place: place_of(&m.placement),
            record: m.record,
            thumbnails,
        }));
    }
    Ok(page)
}

fn place_of(placement: &media_mmr::Placement) -> Place {
    Place {
        datastore: placement.datastore_id.as_str().to_owned(),
        location: placement.location.clone(),
    }
}

#[async_trait]
impl MoveSource for MmrSource {
    fn describe(&self) -> String {
        format!("matrix-media-repo {}", self.deployment.config().database)
    }

    async fn count(&self) -> Result<u64, AdminError> {
        self.deployment.count_all_media().await.map_err(mmr_error)
    }

    fn pages(&self) -> BoxStream<'static, Result<SourcePage, AdminError>> {
        let deployment = self.deployment.clone();
        self.deployment
            .all_media()
            .chunks(PAGE)
            .then(move |rows| {
                let deployment = deployment.clone();
                async move { mmr_page(&deployment, rows).await }
            })
            .boxed()
    }

    async fn open(&self, place: &Place) -> Result<BlobPayload, NotCopied> {
        let Some(store) = self.deployment.datastores().get(&place.datastore) else {
            return Err((
                MoveFailure::SourceUnreadable,
                format!(
                    "its row names datastore {:?}, which media-repo.yaml does not list",
                    place.datastore
                ),
            ));
        };
        match store.open_location(&place.location).await {
            Ok(payload) => Ok(payload),
            Err(missing @ MmrError::MissingObject { .. }) => {
                Err((MoveFailure::SourceMissing, missing.to_string()))
            }
            Err(e) => Err((MoveFailure::SourceUnreadable, e.to_string())),
        }
    }
}

/// The media IDs of `keys`, by origin.
fn by_origin<'a>(keys: impl Iterator<Item = &'a MediaKey>) -> BTreeMap<ServerName, Vec<&'a str>> {
    let mut grouped: BTreeMap<ServerName, Vec<&str>> = BTreeMap::new();
    for key in keys {
        grouped
            .entry(key.origin.clone())
            .or_default()
            .push(key.media_id.as_str());
    }
    grouped
}

/// An error of the deployment that stops the move (its database's errors as ours).
fn mmr_error(error: MmrError) -> AdminError {
    match error {
        MmrError::Db(e) => AdminError::Db(e),
        other => AdminError::Mmr(other),
    }
}

/// Moves our repository's every media into the MMR deployment (`media_admin mmr push`).
/// The deployment is opened read-write ([`media_mmr::Access::ReadWrite`]) for a real
/// run, read-only for a dry run.
pub async fn push(
    repo: &Repository,
    deployment: MmrDeployment,
    options: MoveOptions,
    progress: Arc<Progress>,
) -> Result<MoveReport, AdminError> {
    let source = RepositorySource::open(repo).await?;
    let sink = MmrSink::new(deployment).map_err(mmr_error)?;
    let started = sink.start_task(&serde_json::Value::Null).await?;
    let result = run(&source, &sink, MoveDirection::Push, options, progress).await;
    if options.mode == RunMode::Apply {
        let (counters, error) = ended(&result);
        sink.record_task(
            MoveDirection::Push.command(),
            started,
            &counters,
            error.as_deref(),
        )
        .await?;
    }
    result
}

/// Moves the MMR deployment's every media into our repository, whose new bytes go to
/// `store` (`media_admin mmr pull`).
pub async fn pull(
    repo: &Repository,
    store: Arc<dyn Datastore>,
    deployment: MmrDeployment,
    options: MoveOptions,
    progress: Arc<Progress>,
) -> Result<MoveReport, AdminError> {
    let source = MmrSource {
        deployment: Arc::new(deployment),
    };
    let sink = RepositorySink::open(repo, store, options.mode.is_dry_run()).await?;
    if options.mode.is_dry_run() {
        return run(&source, &sink, MoveDirection::Pull, options, progress).await;
    }
    let params = serde_json::json!({ "from": source.describe() });
    let task = repo.start_task(TaskKind::MmrPull, &params).await?;
    let result = run(&source, &sink, MoveDirection::Pull, options, progress).await;
    let (counters, error) = ended(&result);
    repo.finish_task(task, &counters, error.as_deref()).await?;
    result
}

/// The counters and error a run's task row records.
fn ended(result: &Result<MoveReport, AdminError>) -> (String, Option<String>) {
    match result {
        Ok(report) => (report.counters(), None),
        Err(e) => ("{}".to_owned(), Some(e.to_string())),
    }
}

/// A copy to make: bytes of the source into a datastore of the destination.
struct BlobCopy {
    sha256: Sha256Hex,
    size: u64,
    place: Place,
    into: Arc<dyn Datastore>,
}

/// Moves every media of `source` into `sink`. See the [module documentation](self).
async fn run(
    source: &dyn MoveSource,
    sink: &dyn ImportSink,
    direction: MoveDirection,
    options: MoveOptions,
    progress: Arc<Progress>,
) -> Result<MoveReport, AdminError> {
    let route = Route::new(source.describe(), sink.describe());
    let mut report = MoveReport::new(options.mode, direction, route);
    progress
        .items_total
        .store(source.count().await?, Ordering::Relaxed);
    let mut pages = source.pages();
    while let Some(page) = pages.try_next().await? {
        move_page(source, sink, page, options, &mut report, &progress).await?;
    }
    Ok(report)
}

/// Moves one page: see the [module documentation](self).
async fn move_page(
    source: &dyn MoveSource,
    sink: &dyn ImportSink,
    page: SourcePage,
    options: MoveOptions,
    report: &mut MoveReport,
    progress: &Progress,
) -> Result<(), AdminError> {
    let mut media = Vec::with_capacity(page.len());
    for item in page {
        report.media_read += 1;
        match item {
            Ok(m) => media.push(m),
            Err(failure) => report.failures.record(failure),
        }
    }
    // What the destination records or reserves already.
    let mut recorded = HashMap::new();
    let mut reserved = HashMap::new();
    for (origin, ids) in by_origin(media.iter().map(|m| &m.record.key)) {
        for (id, sha256) in sink.existing_media_digests(&origin, &ids).await? {
            recorded.insert((origin.clone(), id), sha256);
        }
        for (id, why) in sink.reserved_media_ids(&origin, &ids).await? {
            reserved.insert((origin.clone(), id), why);
        }
    }
    let mut to_move = Vec::with_capacity(media.len());
    for m in media {
        let key = &m.record.key;
        let own = (key.origin.clone(), key.media_id.as_str().to_owned());
        if let Some(existing) = recorded.get(&own) {
            if *existing == m.record.sha256 {
                report.already_there += 1;
            } else {
                report.failures.push(
                    key.mxc().to_string(),
                    MoveFailure::Conflict,
                    format!("the destination records it with other bytes ({existing})"),
                );
            }
        } else if let Some(why) = reserved.get(&own) {
            report.failures.push(
                key.mxc().to_string(),
                MoveFailure::Reserved,
                format!("the destination reserves this ID ({why})"),
            );
        } else {
            to_move.push(m);
        }
    }
    // The bytes to copy: each digest once per destination datastore, unless held.
    let mut copies: Vec<BlobCopy> = Vec::new();
    let mut planned: HashSet<(Sha256Hex, String)> = HashSet::new();
    for m in &to_move {
        let key = &m.record.key;
        let wanted = std::iter::once((
            &m.record.sha256,
            m.record.size_bytes,
            &m.place,
            Content::Media,
        ))
        .chain(
            m.thumbnails
                .iter()
                .map(|(t, place)| (&t.sha256, t.size_bytes, place, Content::Thumbnail)),
        );
        for (sha256, size, place, content) in wanted {
            let into = sink.datastore_for(key, content);
            if !planned.insert((sha256.clone(), into.uri())) {
                continue;
            }
            if sink.stored_size(sha256).await?.is_some() {
                report.blobs_already_there += 1;
                continue;
            }
            copies.push(BlobCopy {
                sha256: sha256.clone(),
                size,
                place: place.clone(),
                into: into.clone(),
            });
        }
    }
    // Copy (a dry run counts); a digest whose copy failed fails its media.
    let mut failed: HashMap<Sha256Hex, NotCopied> = HashMap::new();
    if options.mode.is_dry_run() {
        report.blobs_copied += copies.len() as u64;
        report.bytes_copied += copies.iter().map(|c| c.size).sum::<u64>();
    } else {
        let results: Vec<(BlobCopy, Result<(), NotCopied>)> = stream::iter(copies)
            .map(|copy| async move {
                let result = copy_bytes(source, &copy).await;
                (copy, result)
            })
            .buffer_unordered(options.workers.max(1))
            .collect()
            .await;
        for (copy, result) in results {
            match result {
                Ok(()) => {
                    report.blobs_copied += 1;
                    report.bytes_copied += copy.size;
                    progress.bytes.fetch_add(copy.size, Ordering::Relaxed);
                }
                Err(why) => {
                    failed.insert(copy.sha256, why);
                }
            }
        }
    }
    let mut batch = Vec::with_capacity(to_move.len());
    for m in to_move {
        let failure = std::iter::once(&m.record.sha256)
            .chain(m.thumbnails.iter().map(|(t, _)| &t.sha256))
            .find_map(|sha256| failed.get(sha256));
        match failure {
            Some((reason, detail)) => {
                report
                    .failures
                    .push(m.record.key.mxc().to_string(), *reason, detail.clone())
            }
            None => batch.push(StoredMedia {
                record: m.record,
                thumbnails: m.thumbnails.into_iter().map(|(t, _)| t).collect(),
            }),
        }
    }
    progress
        .items_done
        .store(report.media_read, Ordering::Relaxed);
    if options.mode.is_dry_run() {
        report.media_moved += batch.len() as u64;
        report.thumbnails_moved += batch.iter().map(|m| m.thumbnails.len() as u64).sum::<u64>();
        return Ok(());
    }
    if batch.is_empty() {
        return Ok(());
    }
    sink.sync().await.map_err(|source| AdminError::Store {
        uri: sink.describe(),
        source,
    })?;
    let outcomes = sink.record_media(&batch).await?;
    let mut pinned = Vec::new();
    for (m, outcome) in batch.iter().zip(outcomes) {
        match outcome.media {
            InsertOutcome::Inserted => {
                report.media_moved += 1;
                report.thumbnails_moved += outcome
                    .thumbnails
                    .iter()
                    .filter(|t| **t == InsertOutcome::Inserted)
                    .count() as u64;
            }
            InsertOutcome::AlreadyPresent => report.already_there += 1,
            InsertOutcome::Conflict { existing_sha256 } => report.failures.push(
                m.record.key.mxc().to_string(),
                MoveFailure::Conflict,
                format!("the destination records it with other bytes ({existing_sha256})"),
            ),
            InsertOutcome::MediaMissing => {}
        }
        if m.record.purpose == Purpose::Pinned {
            pinned.push(m.record.key.clone());
        }
    }
    if !pinned.is_empty() {
        sink.pin_media(&pinned).await?;
    }
    Ok(())
}

/// Copies one blob: read where its row says, put content-addressed into the
/// destination's datastore, checked against the row's digest and size.
async fn copy_bytes(source: &dyn MoveSource, copy: &BlobCopy) -> Result<(), NotCopied> {
    let payload = source.open(&copy.place).await?;
    let mut reader: BlobReader = match payload {
        BlobPayload::File { file, .. } => Box::pin(tokio::fs::File::from_std(file)),
        BlobPayload::Stream(stream) => stream,
    };
    let options = PutOptions::expecting(Some(copy.sha256.clone()), Some(copy.size));
    match copy.into.put(&mut reader, &options).await {
        Ok(_) => Ok(()),
        Err(mismatch @ StoreError::Mismatch { .. }) => {
            Err((MoveFailure::SourceCorrupt, mismatch.to_string()))
        }
        Err(unreadable @ StoreError::Source { .. }) => {
            Err((MoveFailure::SourceUnreadable, unreadable.to_string()))
        }
        Err(e) => Err((
            MoveFailure::DestinationFailed,
            format!("{}: {e}", copy.into.uri()),
        )),
    }
}
