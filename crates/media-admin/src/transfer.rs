//! `media_admin datastores transfer`: every blob of one datastore moved into another,
//! losing none whatever stops the run (see [`media_db::BlobTransfer`] for the protocol).
//!
//! A run first drains both datastores' deletion queues (what a killed run left: strays
//! in the destination, sources in the source), then walks the source's blobs by digest
//! a page at a time: queue the page's copies (write-ahead), copy `workers` at a time
//! (the bytes are hashed while they stream into the destination and checked against
//! the row) and verify each copy in the destination. Meanwhile the copies that have
//! ended are switched, as many in one transaction as have ended, and the source's queue
//! is drained; the destination's queue is drained again at the end. A failing item
//! leaves its source object and row as they were and is listed; a destination that
//! refuses [`DESTINATION_FAILURES_BEFORE_STOP`] writes in a row stops the run.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::stream::{self, StreamExt, TryStreamExt};
use media_core::datastore::{BlobKey, Datastore, PutOptions, PutStatus, StoreError};
use media_core::hashing::HashingReader;
use media_core::ids::Sha256Hex;
use media_core::moment::Moment;
use media_core::progress::{Progress, human_size};
use media_core::run::{Failures, Reason, Report, Route, RunMode};
use media_db::{
    Blob, BlobMove, BlobTransfer, DatastoreId, DeletionQueue, MoveOutcome, RecordedDatastore,
    Repository, TaskKind, TaskLog,
};
use serde::Serialize;

use crate::datastores::DatastoreSelector;
use crate::error::AdminError;

/// Destination failures in a row after which a run stops: the destination is down or
/// refuses writes, and going on would only list every blob as failed.
pub const DESTINATION_FAILURES_BEFORE_STOP: u32 = 20;

/// How a copy is checked in the destination before its row is switched to it.
///
/// Every copy's bytes are hashed while they stream into the destination and checked
/// against the row first, whatever the mode; the modes differ in what they check after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verify {
    /// Trust what the destination confirmed receiving, read back what it did not: an S3
    /// server checks every request body against the SHA-256 it was signed with (a part
    /// that arrives damaged is refused), a file datastore hashed the bytes it wrote; the
    /// copy's size is then checked, and a copy the destination already held (not written
    /// by this run) is read back and hashed.
    #[default]
    Received,
    /// Read every copy back and hash it (and check its size).
    Hash,
    /// Check the copy's size only.
    Size,
}

impl Verify {
    /// Whether a copy is read back and hashed: `written` says this run wrote it (the
    /// destination received it from us) rather than finding it already there.
    fn reads_back(self, written: bool) -> bool {
        match self {
            Self::Hash => true,
            Self::Received => !written,
            Self::Size => false,
        }
    }
}

/// What to transfer, where, and how.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// The recorded datastore to empty.
    pub from: DatastoreSelector,
    /// Where the source is now, when it is not at its recorded URI.
    pub from_uri: Option<String>,
    /// The destination's URI.
    pub to: String,
    /// Only blobs created before this moment.
    pub before: Option<Moment>,
    /// A dry run reports what would move and touches nothing.
    pub mode: RunMode,
    /// Copies in flight at once (at least 1).
    pub workers: usize,
    /// How each copy is checked.
    pub verify: Verify,
}

/// Why a blob was not moved. Its source object and row are untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferFailure {
    /// The source object is missing.
    SourceMissing,
    /// The source object could not be read.
    SourceUnreadable,
    /// The source's bytes are not the recorded ones (digest or size).
    SourceCorrupt,
    /// The destination refused the copy.
    DestinationFailed,
    /// The copy in the destination is not the blob (size or digest differ).
    VerificationFailed,
    /// A drain of the destination claimed the copy before its row was switched; a new
    /// run copies it again.
    CopyClaimed,
}

impl Reason for TransferFailure {
    fn code(self) -> &'static str {
        match self {
            Self::SourceMissing => "source_missing",
            Self::SourceUnreadable => "source_unreadable",
            Self::SourceCorrupt => "source_corrupt",
            Self::DestinationFailed => "destination_failed",
            Self::VerificationFailed => "verification_failed",
            Self::CopyClaimed => "copy_claimed",
        }
    }
}

/// What a transfer did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct TransferReport {
    /// Dry run or applied.
    pub mode: RunMode,
    /// Source and destination.
    pub route: Route,
    /// The source's ID.
    pub from: i64,
    /// The destination's ID (none in a dry run of a destination not recorded yet).
    pub to: Option<i64>,
    /// Blobs whose rows now point at the destination (in a dry run: that would).
    pub blobs_moved: u64,
    /// Their bytes.
    pub bytes_moved: u64,
    /// Of the blobs moved, those the destination already held (nothing was written).
    pub already_there: u64,
    /// Blobs deleted or moved by someone else during the run: skipped.
    pub skipped: u64,
    /// Source objects deleted (those of this run and of earlier, stopped runs).
    pub source_objects_deleted: u64,
    /// Stray copies deleted from the destination (of failed items and stopped runs).
    pub strays_deleted: u64,
    /// Blobs not moved, and why.
    pub failures: Failures<TransferFailure>,
    /// Why the run stopped before the end, if it did.
    pub stopped_early: Option<String>,
}

impl TransferReport {
    fn new(mode: RunMode, route: Route, from: DatastoreId) -> Self {
        Self {
            mode,
            route,
            from: from.0,
            to: None,
            blobs_moved: 0,
            bytes_moved: 0,
            already_there: 0,
            skipped: 0,
            source_objects_deleted: 0,
            strays_deleted: 0,
            failures: Failures::default(),
            stopped_early: None,
        }
    }

    /// The counters, as the task log records them.
    fn counters(&self) -> serde_json::Value {
        serde_json::json!({
            "blobs_moved": self.blobs_moved,
            "bytes_moved": self.bytes_moved,
            "already_there": self.already_there,
            "skipped": self.skipped,
            "source_objects_deleted": self.source_objects_deleted,
            "strays_deleted": self.strays_deleted,
            "failed": self.failures.count(),
        })
    }
}

impl fmt::Display for TransferReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.route
            .write_headline(f, "media_admin datastores transfer", self.mode)?;
        let verb = if self.mode.is_dry_run() {
            "would move"
        } else {
            "moved"
        };
        writeln!(
            f,
            "  {verb} {} blobs ({}), {} of them already in the destination",
            self.blobs_moved,
            human_size(self.bytes_moved),
            self.already_there
        )?;
        writeln!(
            f,
            "  skipped {} (deleted or moved meanwhile); deleted {} source objects and {} \
             stray copies",
            self.skipped, self.source_objects_deleted, self.strays_deleted
        )?;
        if self.failures.any() {
            writeln!(
                f,
                "  {} blobs failed (their source is untouched):",
                self.failures.count()
            )?;
            self.failures.write_lines(f)?;
        }
        if let Some(why) = &self.stopped_early {
            writeln!(
                f,
                "  stopped early: {why}; nothing is lost, run it again once fixed"
            )?;
        }
        Ok(())
    }
}

impl Report for TransferReport {
    fn mode(&self) -> RunMode {
        self.mode
    }

    fn has_failures(&self) -> bool {
        self.failures.any() || self.stopped_early.is_some()
    }
}

/// The source and destination of a transfer, opened.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The recorded source datastore.
    pub from: RecordedDatastore,
    /// It, opened where it is (writable: its objects are deleted once moved).
    pub source: Arc<dyn Datastore>,
    /// The destination, opened for writing (for a dry run, as for a dry run).
    pub destination: Arc<dyn Datastore>,
}

/// Opens both ends of the transfer `options` asks for, before anything is written: the
/// source where it is recorded (or at `--from-uri`), checked to be the recorded
/// datastore by its identity marker; the destination for writing (an unreachable
/// endpoint, a missing bucket or refused credentials is [`AdminError::Open`]), or in a
/// dry run without creating anything.
pub async fn open_endpoints(
    repo: &Repository,
    options: &TransferOptions,
) -> Result<Endpoints, AdminError> {
    let from = options.from.resolve(repo).await?;
    let from_uri = options.from_uri.clone().unwrap_or_else(|| from.uri.clone());
    if options.to == from_uri || options.to == from.uri {
        return Err(media_db::DbError::UnusableDestination {
            given: options.to.clone(),
            why: format!("it is the source datastore #{} itself", from.id.0),
        }
        .into());
    }
    let open_error = |uri: &str| {
        let uri = uri.to_owned();
        move |source| AdminError::Open { uri, source }
    };
    // Looked at read-only first: a source that is not where it is recorded is never
    // created there.
    let look = media_store::open_read_only(&from_uri)
        .await
        .map_err(open_error(&from_uri))?;
    let marker = look.read_marker().await.map_err(open_error(&from_uri))?;
    if let Some(identity) = &from.identity
        && marker.as_deref() != Some(identity)
    {
        return Err(AdminError::SourceElsewhere {
            uri: from_uri,
            id: from.id.0,
            why: match marker {
                Some(other) => format!("it holds identity marker {other}, not {identity}"),
                None => format!(
                    "it holds no identity marker (datastore #{} holds {identity})",
                    from.id.0
                ),
            },
        });
    }
    let (source, destination) = match options.mode {
        RunMode::DryRun => (
            look,
            media_store::open_for_dry_run(&options.to)
                .await
                .map_err(open_error(&options.to))?,
        ),
        RunMode::Apply => {
            let destination = media_store::open(&options.to)
                .await
                .map_err(open_error(&options.to))?;
            let source = media_store::open(&from_uri)
                .await
                .map_err(open_error(&from_uri))?;
            (source, destination)
        }
    };
    Ok(Endpoints {
        from,
        source,
        destination,
    })
}

/// Opens both ends ([`open_endpoints`]) and moves every blob of the source (created
/// before `options.before`, when given) into the destination: see [`transfer_between`].
pub async fn transfer(
    repo: &Repository,
    options: &TransferOptions,
    progress: Arc<Progress>,
) -> Result<TransferReport, AdminError> {
    let endpoints = open_endpoints(repo, options).await?;
    transfer_between(repo, &endpoints, options, progress).await
}

/// Moves every blob of `endpoints.from` (created before `options.before`, when given)
/// into `endpoints.destination`, which is recorded (and marked) first, like any new
/// datastore. A dry run walks the same blobs and counts them, writing nothing.
pub async fn transfer_between(
    repo: &Repository,
    endpoints: &Endpoints,
    options: &TransferOptions,
    progress: Arc<Progress>,
) -> Result<TransferReport, AdminError> {
    let Endpoints {
        from,
        source,
        destination,
    } = endpoints;
    let route = Route::new(
        format!("datastore #{} ({})", from.id.0, source.uri()),
        destination.uri(),
    );
    let mut report = TransferReport::new(options.mode, route, from.id);
    let before = options.before.map(Moment::unix_ms);
    let total = repo.tally_blobs(from.id, before).await?;
    progress.items_total.store(total.blobs, Ordering::Relaxed);
    if options.mode.is_dry_run() {
        count_blobs(repo, from.id, before, &mut report, &progress).await?;
        return Ok(report);
    }
    let to = repo
        .attach_transfer_destination(destination.as_ref(), from.id)
        .await?;
    report.to = Some(to.0);
    let params = serde_json::json!({
        "from": from.id.0,
        "from_uri": source.uri(),
        "to": to.0,
        "to_uri": destination.uri(),
        "before": options.before.map(|m| m.to_string()),
        "workers": options.workers,
        "verify": options.verify,
    });
    let task = repo.start_task(TaskKind::Transfer, &params).await?;
    let outcome = Mover {
        repo,
        source: source.as_ref(),
        destination: destination.as_ref(),
        from: from.id,
        to,
        options,
        progress: &progress,
    }
    .run(before, &mut report)
    .await;
    let error = outcome.as_ref().err().map(ToString::to_string);
    repo.finish_task(
        task,
        &report.counters().to_string(),
        error.as_deref().or(report.stopped_early.as_deref()),
    )
    .await?;
    outcome.map(|()| report)
}

/// A dry run: the blobs a transfer would move, walked the way it walks them.
async fn count_blobs(
    repo: &Repository,
    from: DatastoreId,
    before: Option<i64>,
    report: &mut TransferReport,
    progress: &Progress,
) -> Result<(), AdminError> {
    let mut after = None;
    loop {
        let page = repo
            .blobs_in(from, before, after.as_ref(), None, PAGE_LIMIT)
            .await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.sha256.clone());
        for blob in &page {
            report.blobs_moved += 1;
            report.bytes_moved += blob.size_bytes;
        }
        progress
            .items_done
            .fetch_add(page.len() as u64, Ordering::Relaxed);
    }
}

/// Blobs read per page of a dry run.
const PAGE_LIMIT: i64 = 500;

/// The state of one real transfer run.
struct Mover<'a> {
    repo: &'a Repository,
    source: &'a dyn Datastore,
    destination: &'a dyn Datastore,
    from: DatastoreId,
    to: DatastoreId,
    options: &'a TransferOptions,
    progress: &'a Progress,
}

/// A copy made and verified, ready to switch to.
struct Copied {
    location: BlobKey,
    already_there: bool,
}

/// Why one copy failed, with the detail for the report.
struct CopyFailure {
    reason: TransferFailure,
    detail: String,
}

/// One blob whose copy has ended.
struct Ended {
    /// Its row, as the walk read it.
    blob: Blob,
    /// Its copy's write-ahead entry.
    guard: i64,
    /// How the copy went.
    copied: Result<Copied, CopyFailure>,
    /// Its place among the copies not switched yet, released once switched.
    place: tokio::sync::OwnedSemaphorePermit,
}

impl Mover<'_> {
    /// Blobs per page of the walk (one write-ahead transaction) and at most per switch
    /// transaction: a few per worker.
    fn batch_size(&self) -> usize {
        (self.options.workers.max(1) * 4).clamp(16, 256)
    }

    /// Copies begun and not switched yet, at most: bounds what waits for the switching
    /// side when it falls behind.
    fn unswitched_limit(&self) -> usize {
        self.batch_size() * 4
    }

    /// Drains both queues, copies every blob while the ended copies are switched
    /// ([`Self::copy_all`] and [`Self::switch_all`] run at once: no worker waits for a
    /// batch's slowest copy or its switch), then drains both queues again.
    ///
    /// The channel between them is unbounded, its length bounded by
    /// [`Self::unswitched_limit`] instead: a copy waits for a place before it starts. A
    /// full bounded channel would stop the walk from being polled while a write-ahead
    /// transaction inside it holds SQLite's single writer, which the switch waits for.
    async fn run(
        &self,
        before: Option<i64>,
        report: &mut TransferReport,
    ) -> Result<(), AdminError> {
        self.drain(report).await?;
        let (sender, ended) = futures::channel::mpsc::unbounded();
        let (stopped_early, ()) = futures::try_join!(
            self.copy_all(before, sender),
            self.switch_all(ended, report)
        )?;
        report.stopped_early = stopped_early;
        // The strays of failed copies, and the last sources.
        self.drain(report).await
    }

    /// Walks the source's blobs by digest, a page at a time, queues each page's copies
    /// (write-ahead) and copies `workers` blobs at a time, sending each ended copy to
    /// `ended`. Returns why it stopped before the end, if it did: the destination
    /// refused [`DESTINATION_FAILURES_BEFORE_STOP`] writes in a row.
    async fn copy_all(
        &self,
        before: Option<i64>,
        ended: futures::channel::mpsc::UnboundedSender<Ended>,
    ) -> Result<Option<String>, AdminError> {
        // Set when the run stops early: no page is read and no copy starts after it, and
        // the copies in flight end (a copy abandoned mid-way could land after the final
        // drain, a stray no entry names). A page's copies that never started leave
        // entries for objects that do not exist; the final drain drops them.
        let stopping = AtomicBool::new(false);
        let stopping = &stopping;
        let unswitched = Arc::new(tokio::sync::Semaphore::new(self.unswitched_limit()));
        let unswitched = &unswitched;
        let pages = stream::try_unfold(None, move |after: Option<Sha256Hex>| async move {
            if stopping.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let page = self
                .repo
                .blobs_in(
                    self.from,
                    before,
                    after.as_ref(),
                    None,
                    self.batch_size() as i64,
                )
                .await?;
            let Some(last) = page.last() else {
                return Ok::<_, AdminError>(None);
            };
            let after = Some(last.sha256.clone());
            let guards = self.repo.queue_copies(self.to, &page).await?;
            let queued = page.into_iter().zip(guards).map(Ok::<_, AdminError>);
            Ok(Some((stream::iter(queued), after)))
        });
        let copies = pages
            .try_flatten()
            .map_ok(|(blob, guard)| async move {
                let place = unswitched
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                if stopping.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                let copied = self.copy(&blob).await;
                Ok(Some(Ended {
                    blob,
                    guard,
                    copied,
                    place,
                }))
            })
            .try_buffer_unordered(self.options.workers.max(1));
        let mut copies = std::pin::pin!(copies);
        let mut destination_failures_in_a_row = 0u32;
        let mut stopped_early = None;
        while let Some(copy) = copies.try_next().await? {
            let Some(copy) = copy else { continue };
            match &copy.copied {
                Err(failure) if failure.reason == TransferFailure::DestinationFailed => {
                    destination_failures_in_a_row += 1;
                }
                _ => destination_failures_in_a_row = 0,
            }
            if ended.unbounded_send(copy).is_err() {
                // The switching side has stopped, with the error the run returns.
                return Ok(None);
            }
            if stopped_early.is_none()
                && destination_failures_in_a_row >= DESTINATION_FAILURES_BEFORE_STOP
            {
                stopping.store(true, Ordering::Relaxed);
                stopped_early = Some(format!(
                    "the destination {} refused {destination_failures_in_a_row} writes in a row",
                    self.destination.uri()
                ));
            }
        }
        Ok(stopped_early)
    }

    /// Switches the rows of the copies `ended` delivers, as many at once as have ended
    /// (up to a batch), lists the failed ones, and drains the source's queue after each
    /// switch. The destination's queue is drained only before and after the walk: it
    /// holds the write-ahead entries of the copies in flight.
    async fn switch_all(
        &self,
        ended: futures::channel::mpsc::UnboundedReceiver<Ended>,
        report: &mut TransferReport,
    ) -> Result<(), AdminError> {
        let mut batches = ended.ready_chunks(self.batch_size());
        while let Some(batch) = batches.next().await {
            let mut moves = Vec::new();
            let mut already = Vec::new();
            let mut places = Vec::with_capacity(batch.len());
            for Ended {
                blob,
                guard,
                copied,
                place,
            } in batch
            {
                places.push(place);
                self.progress.items_done.fetch_add(1, Ordering::Relaxed);
                match copied {
                    Ok(copied) => {
                        already.push(copied.already_there);
                        moves.push(BlobMove {
                            location: copied.location,
                            to: self.to,
                            guard,
                            blob,
                        });
                    }
                    Err(failure) => report.failures.push(
                        blob.sha256.to_string(),
                        failure.reason,
                        failure.detail,
                    ),
                }
            }
            let outcomes = self.repo.switch_blobs(&moves).await?;
            drop(places);
            for ((m, outcome), already_there) in moves.iter().zip(outcomes).zip(already) {
                match outcome {
                    MoveOutcome::Switched => {
                        report.blobs_moved += 1;
                        report.bytes_moved += m.blob.size_bytes;
                        report.already_there += u64::from(already_there);
                        self.progress
                            .bytes
                            .fetch_add(m.blob.size_bytes, Ordering::Relaxed);
                    }
                    MoveOutcome::Vanished => report.skipped += 1,
                    MoveOutcome::CopyClaimed => report.failures.push(
                        m.blob.sha256.to_string(),
                        TransferFailure::CopyClaimed,
                        "a drain of the destination claimed the copy before the switch; \
                         run the transfer again",
                    ),
                }
            }
            self.drain_sources(report).await?;
        }
        Ok(())
    }

    /// Deletes what the queues hold: stray copies in the destination, moved blobs'
    /// objects in the source.
    async fn drain(&self, report: &mut TransferReport) -> Result<(), AdminError> {
        let strays = self
            .repo
            .drain_pending_deletions(self.to, self.destination)
            .await?;
        // An entry whose object is already gone is a copy that never started or never
        // wrote anything (a refused put, a run stopped early): no stray to count.
        report.strays_deleted += strays.deleted;
        self.drain_sources(report).await
    }

    /// Deletes the source objects of moved blobs.
    async fn drain_sources(&self, report: &mut TransferReport) -> Result<(), AdminError> {
        let sources = self
            .repo
            .drain_pending_deletions(self.from, self.source)
            .await?;
        report.source_objects_deleted += sources.deleted + sources.already_gone;
        Ok(())
    }

    /// Copies one blob into the destination, its bytes hashed on the way and checked
    /// against the row, then verifies the copy there.
    async fn copy(&self, blob: &Blob) -> Result<Copied, CopyFailure> {
        let fail = |reason, detail: String| CopyFailure { reason, detail };
        let mut reader = self
            .source
            .get(&blob.location, None)
            .await
            .map_err(|e| match e {
                StoreError::NotFound { .. } => fail(
                    TransferFailure::SourceMissing,
                    format!("{} is not in {}", blob.location, self.source.uri()),
                ),
                e => fail(TransferFailure::SourceUnreadable, e.to_string()),
            })?;
        let options = PutOptions::expecting(Some(blob.sha256.clone()), Some(blob.size_bytes));
        let put = self
            .destination
            .put(&mut reader, &options)
            .await
            .map_err(|e| match e {
                StoreError::Mismatch { .. } => fail(
                    TransferFailure::SourceCorrupt,
                    format!("{} in {}: {e}", blob.location, self.source.uri()),
                ),
                StoreError::Source { .. } => fail(TransferFailure::SourceUnreadable, e.to_string()),
                e => fail(TransferFailure::DestinationFailed, e.to_string()),
            })?;
        let written = put.status == PutStatus::Written;
        self.verify(blob, &put.blob.key, written)
            .await
            .map_err(|detail| fail(TransferFailure::VerificationFailed, detail))?;
        Ok(Copied {
            location: put.blob.key,
            already_there: put.status == PutStatus::AlreadyPresent,
        })
    }

    /// Checks the copy at `key` in the destination: its size, and its digest, read back,
    /// when the mode asks for it ([`Verify::reads_back`]; `written` says this run wrote
    /// the copy). `Err` says what differs.
    async fn verify(&self, blob: &Blob, key: &BlobKey, written: bool) -> Result<(), String> {
        let at = || format!("the copy {key} in {}", self.destination.uri());
        let size = self
            .destination
            .size(key)
            .await
            .map_err(|e| e.to_string())?;
        if size != Some(blob.size_bytes) {
            return Err(format!(
                "{} has {}, expected {} bytes",
                at(),
                size.map_or("no object".to_owned(), |n| format!("{n} bytes")),
                blob.size_bytes
            ));
        }
        if !self.options.verify.reads_back(written) {
            return Ok(());
        }
        let reader = self
            .destination
            .get(key, None)
            .await
            .map_err(|e| e.to_string())?;
        let mut hashing = HashingReader::new(reader);
        tokio::io::copy(&mut hashing, &mut tokio::io::sink())
            .await
            .map_err(|e| format!("reading {} back failed: {e}", at()))?;
        let (sha256, len) = hashing.finish();
        if sha256 != blob.sha256 || len != blob.size_bytes {
            return Err(format!(
                "{} reads back as {sha256} ({len} bytes), expected {} ({} bytes)",
                at(),
                blob.sha256,
                blob.size_bytes
            ));
        }
        Ok(())
    }
}
