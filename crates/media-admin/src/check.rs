//! `media_admin check [--deep] [--fix]`: every recorded datastore against the rows.
//!
//! For each datastore (opened read-only where the repository records it, its identity
//! marker checked):
//!
//! * **orphans**: objects no blob row of that datastore points at, and whose deletion is
//!   not queued. The datastore's listing is read as a stream, one chunk at a time, and
//!   merged with the rows of the chunk's digest range: listings come in key order, which
//!   is digest order, so the rows are read once, in order, along the primary key of
//!   `blobs`, and no side is ever held whole;
//! * **missing**: blob rows whose object is gone: the rows the merge meets that no listed
//!   object matches (each asked for once more, since a writer may have put its object
//!   after its folder was listed). With `--deep` the rows are walked again, in digest
//!   order, and each object is hashed;
//! * **damaged** (`--deep`): objects whose size or SHA-256 differ from their row, hashed
//!   while they stream;
//! * **stale temporary files**: what writers that are gone left in a folder store's
//!   `.tmp` (an S3 store's interrupted uploads are not visible as objects);
//! * **queued deletions** not yet carried out;
//! * **unsound rows**: media and thumbnail rows whose bytes have no blob row (so no
//!   object), thumbnails whose media row is gone, blob rows and queued deletions of a
//!   datastore that is not recorded (read beside the datastores; none in a sound
//!   repository).
//!
//! Without `--fix` nothing changes. `--fix` repairs only what is safe: it queues each
//! orphan's deletion in `pending_deletions` (re-checked inside that transaction) and
//! drains the queues, so an orphan goes through the same protocol as a purged object (a
//! writer that records the same bytes meanwhile cancels the deletion, or puts them again
//! if the drain claimed it first); it removes stale temporary files; it drains the
//! queued deletions. A missing or damaged object, or an unsound row, is reported, never
//! "repaired" by deleting the rows that point at it: its media may be restored from a
//! backup or imported again.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use media_core::blocking::map_on_threads;
use media_core::datastore::{BlobKey, BlobPayload, Datastore, StoreError};
use media_core::hashing::{HashingReader, digest_of_read};
use media_core::ids::Sha256Hex;
use media_core::progress::{Progress, human_size};
use media_core::run::{Failures, Reason, Report, RunMode};
use media_db::{
    Blob, BlobTransfer, DeletionQueue, RecordedDatastore, Repository, StoreCheck, Unsound,
};
use media_store::{DatastoreLocation, FileDatastore};
use serde::Serialize;

use crate::error::AdminError;
use crate::stores::{Access, QueueDrainer, open_recorded};

/// Listed objects merged with the rows at a time.
const LISTING_CHUNK: usize = 4_000;
/// Chunks of the listing read ahead of the merge.
const LISTING_CHUNKS_AHEAD: usize = 2;
/// Blob rows read per page: more than a chunk of the listing holds when every row has
/// its object, so the page read ahead for a chunk usually covers all of its rows.
const ROWS_PAGE: i64 = 5_000;
/// Objects asked for (or hashed) at once when the rows are walked.
const CONCURRENT_READS: usize = 8;

/// How closely objects are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Depth {
    /// Whether each object exists (from the listing).
    Presence,
    /// Also each object's size and SHA-256, read whole and hashed.
    Content,
}

/// What `media_admin check` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// [`RunMode::DryRun`]: report only (the default); [`RunMode::Apply`]: `--fix`.
    pub mode: RunMode,
    /// How closely objects are looked at.
    pub depth: Depth,
}

/// A fault a check finds (the code its reports write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckFault {
    /// A blob row's object is not in its datastore.
    MissingObject,
    /// An object's size or SHA-256 differ from its row.
    DamagedObject,
    /// An object no row points at, whose deletion is not queued.
    OrphanObject,
    /// Files a writer that is gone left in the temporary folder.
    StaleTemporaries,
    /// Object deletions queued and not carried out.
    QueuedDeletions,
    /// A media or thumbnail row whose bytes have no blob row.
    RowWithoutBlob,
    /// Thumbnail rows whose media row is gone.
    ThumbnailWithoutMedia,
    /// A blob row or queued deletion whose datastore is not recorded.
    RowWithoutDatastore,
    /// A datastore that could not be checked, or a repair that failed.
    CheckFailed,
}

impl Reason for CheckFault {
    fn code(self) -> &'static str {
        match self {
            Self::MissingObject => "missing_object",
            Self::DamagedObject => "damaged_object",
            Self::OrphanObject => "orphan_object",
            Self::StaleTemporaries => "stale_temporaries",
            Self::QueuedDeletions => "queued_deletions",
            Self::RowWithoutBlob => "row_without_blob",
            Self::ThumbnailWithoutMedia => "thumbnail_without_media",
            Self::RowWithoutDatastore => "row_without_datastore",
            Self::CheckFailed => "check_failed",
        }
    }
}

/// How many of something were found, their bytes, and how many `--fix` repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Tally {
    /// Found.
    pub count: u64,
    /// Their bytes (as found in the datastore; for a missing object, its row's size).
    pub bytes: u64,
    /// Repaired by `--fix`.
    pub repaired: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }

    /// Found and not repaired.
    fn remaining(&self) -> u64 {
        self.count - self.repaired.min(self.count)
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.count, human_size(self.bytes))?;
        if self.repaired > 0 {
            write!(f, ", {} repaired", self.repaired)?;
        }
        Ok(())
    }
}

/// What the check of one datastore found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatastoreCheck {
    /// The datastore's ID.
    pub id: i64,
    /// Its recorded URI.
    pub uri: String,
    /// Blob rows pointing into it.
    pub rows: u64,
    /// Objects its listing holds.
    pub objects: u64,
    /// Rows whose object is missing.
    pub missing: Tally,
    /// Objects whose size or hash differ from their row (`--deep` only).
    pub damaged: Tally,
    /// Objects nothing points at.
    pub orphans: Tally,
    /// Stale temporary files; none for a store without a temporary folder.
    pub temporaries: Option<Tally>,
    /// Queued deletions (bytes: of their objects still present).
    pub queued: Tally,
}

impl DatastoreCheck {
    fn new(record: &RecordedDatastore) -> Self {
        Self {
            id: record.id.0,
            uri: record.uri.clone(),
            rows: 0,
            objects: 0,
            missing: Tally::default(),
            damaged: Tally::default(),
            orphans: Tally::default(),
            temporaries: None,
            queued: Tally::default(),
        }
    }

    /// `key` in this datastore, for reports.
    fn item(&self, key: &BlobKey) -> String {
        format!("#{} {key}", self.id)
    }
}

impl fmt::Display for DatastoreCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  #{} {}: {} rows, {} objects\n      missing {}; damaged {}; orphans {}; \
             stale temporaries {}; queued deletions {}",
            self.id,
            self.uri,
            self.rows,
            self.objects,
            self.missing,
            self.damaged,
            self.orphans,
            self.temporaries
                .map_or("(none kept as files)".to_owned(), |t| t.to_string()),
            self.queued
        )
    }
}

/// What `media_admin check` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Report only (`dry_run`) or `--fix` (`apply`).
    pub mode: RunMode,
    /// How closely objects were looked at.
    pub depth: Depth,
    /// Each recorded datastore.
    pub datastores: Vec<DatastoreCheck>,
    /// Media and thumbnail rows whose bytes have no blob row.
    pub rows_without_blob: u64,
    /// Media whose thumbnail rows remain without their media row.
    pub thumbnails_without_media: u64,
    /// Blob rows and queued deletions whose datastore is not recorded.
    pub rows_without_datastore: u64,
    /// What remains wrong, each object listed (up to a bound).
    pub problems: Failures<CheckFault>,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "media_admin check{}{}: {} datastore(s), {} problem(s) remain",
            if self.depth == Depth::Content {
                " --deep"
            } else {
                ""
            },
            if self.mode.applies() { " --fix" } else { "" },
            self.datastores.len(),
            self.problems.count()
        )?;
        self.datastores.iter().try_for_each(|d| d.fmt(f))?;
        writeln!(
            f,
            "  rows without a blob: {}; thumbnails without their media: {}; rows without \
             their datastore: {}",
            self.rows_without_blob, self.thumbnails_without_media, self.rows_without_datastore
        )?;
        self.problems.write_lines(f)
    }
}

impl Report for CheckReport {
    fn mode(&self) -> RunMode {
        self.mode
    }

    fn has_failures(&self) -> bool {
        self.problems.any()
    }
}

/// Checks every recorded datastore against the rows, and with [`RunMode::Apply`]
/// repairs what is safe to repair (see the [module documentation](self)).
pub async fn check(
    repo: &Repository,
    options: CheckOptions,
    progress: Arc<Progress>,
) -> Result<CheckReport, AdminError> {
    let mut report = CheckReport {
        mode: options.mode,
        depth: options.depth,
        datastores: Vec::new(),
        rows_without_blob: 0,
        thumbnails_without_media: 0,
        rows_without_datastore: 0,
        problems: Failures::default(),
    };
    let limit = Failures::<CheckFault>::LISTED;
    let (without_blob, without_media, without_datastore, checked) = futures::join!(
        repo.unsound_rows(Unsound::RowsWithoutBlob, limit),
        repo.unsound_rows(Unsound::ThumbnailsWithoutMedia, limit),
        repo.unsound_rows(Unsound::RowsWithoutDatastore, limit),
        check_datastores(repo, options, &progress, &mut report)
    );
    checked?;
    for (found, fault, total, detail) in [
        (
            without_blob,
            CheckFault::RowWithoutBlob,
            &mut report.rows_without_blob,
            "no blob row holds its bytes",
        ),
        (
            without_media,
            CheckFault::ThumbnailWithoutMedia,
            &mut report.thumbnails_without_media,
            "its media row is gone",
        ),
        (
            without_datastore,
            CheckFault::RowWithoutDatastore,
            &mut report.rows_without_datastore,
            "no datastore of that ID is recorded",
        ),
    ] {
        match found {
            Ok((count, listed)) => {
                *total = count;
                for item in listed {
                    report.problems.push(item, fault, detail);
                }
            }
            Err(e) => report
                .problems
                .push(fault.code(), CheckFault::CheckFailed, e.to_string()),
        }
    }
    Ok(report)
}

/// Checks each recorded datastore into `report` (see [`check`]).
async fn check_datastores(
    repo: &Repository,
    options: CheckOptions,
    progress: &Progress,
    report: &mut CheckReport,
) -> Result<(), AdminError> {
    let mut drainer = QueueDrainer::default();
    for record in repo.datastore_records().await? {
        let mut checked = DatastoreCheck::new(&record);
        let run = Checker {
            repo,
            options,
            record: &record,
            progress,
        };
        // The queue is counted first: the listing queues the orphans it finds (with
        // --fix), and they are orphans, not deletions queued before the check. The rows
        // are counted beside the listing, not before it: counting them reads the whole
        // table, which would add to the check's time.
        let queued = run.repo.count_queued(record.id).await;
        let (rows, done) = futures::join!(
            run.count_rows(),
            run.datastore(&mut checked, &mut report.problems)
        );
        for result in [
            queued
                .map(|queued| checked.queued.count = queued)
                .map_err(AdminError::from),
            rows.map(|rows| checked.rows = rows),
            done,
        ] {
            if let Err(e) = result {
                report.problems.push(
                    format!("#{} {}", record.id.0, record.uri),
                    CheckFault::CheckFailed,
                    e.to_string(),
                );
            }
        }
        if options.mode.applies()
            && let Err(e) = run.repair(&mut checked, &mut drainer).await
        {
            report.problems.push(
                format!("#{} {}", record.id.0, record.uri),
                CheckFault::CheckFailed,
                format!("repair: {e}"),
            );
        }
        run.remaining(&checked, &mut report.problems);
        report.datastores.push(checked);
    }
    Ok(())
}

/// The check of one datastore.
struct Checker<'a> {
    repo: &'a Repository,
    options: CheckOptions,
    record: &'a RecordedDatastore,
    progress: &'a Progress,
}

impl Checker<'_> {
    /// The datastore's blob rows; adds them to the progress bar's total.
    async fn count_rows(&self) -> Result<u64, AdminError> {
        let rows = self.repo.tally_blobs(self.record.id, None).await?.blobs;
        self.progress.items_total.fetch_add(rows, Ordering::Relaxed);
        Ok(rows)
    }

    /// Finds the faults of the datastore (orphans listed as they are found).
    async fn datastore(
        &self,
        checked: &mut DatastoreCheck,
        problems: &mut Failures<CheckFault>,
    ) -> Result<(), AdminError> {
        let store = open_recorded(self.record, Access::ReadOnly).await?;
        self.listing(store.as_ref(), checked, problems).await?;
        if self.options.depth == Depth::Content {
            self.rows(store.as_ref(), checked, problems).await?;
        }
        if let Some(folder) = self.folder() {
            let stale = folder
                .stale_temporaries(Duration::ZERO)
                .await
                .map_err(|e| self.store_error(e))?;
            checked.temporaries = Some(Tally {
                count: stale.removed_files,
                bytes: stale.removed_bytes,
                repaired: 0,
            });
        }
        Ok(())
    }

    /// Reads the datastore's listing a chunk at a time, each merged with the rows of its
    /// digest range: the listing comes in key order, which is digest order, so the rows
    /// are read once, in order, along the primary key. The next chunks, and the first
    /// page of the next chunk's rows, are read while one is merged. Counts the objects
    /// and tallies orphans, objects whose deletion is queued and (without `--deep`, whose
    /// walk of the rows finds them) rows whose object is missing; with `--fix`, queues
    /// the orphans' deletion.
    async fn listing(
        &self,
        store: &dyn Datastore,
        checked: &mut DatastoreCheck,
        problems: &mut Failures<CheckFault>,
    ) -> Result<(), AdminError> {
        let (sender, chunks) = futures::channel::mpsc::channel(LISTING_CHUNKS_AHEAD);
        let read = store
            .list()
            .try_chunks(LISTING_CHUNK)
            .map(Ok)
            .forward(sender);
        let ranges = chunks
            .scan(None, |merged_through: &mut Option<Sha256Hex>, keys| {
                let range = keys
                    .map_err(|e| self.store_error(e.1))
                    .and_then(|keys| self.range_of(keys, merged_through));
                std::future::ready(Some(range))
            })
            .map(|range| async move {
                let range = range?;
                let first_page = self
                    .rows_page(range.after.as_ref(), Some(&range.through))
                    .await?;
                Ok::<_, AdminError>((range, first_page))
            })
            .buffered(2);
        let merge = async {
            futures::pin_mut!(ranges);
            let mut merged_through = None;
            while let Some(next) = ranges.next().await {
                let (range, first_page) = next?;
                checked.objects += range.keys.len() as u64;
                let referenced = self
                    .merge_rows(
                        store,
                        first_page,
                        Some(&range.through),
                        &range.keys,
                        checked,
                        problems,
                    )
                    .await?;
                let unreferenced: Vec<BlobKey> = range
                    .keys
                    .into_iter()
                    .zip(referenced)
                    .filter_map(|(key, referenced)| (!referenced).then_some(key))
                    .collect();
                self.unreferenced(store, unreferenced, checked, problems)
                    .await?;
                merged_through = Some(range.through);
            }
            // The rows after the last listed object have none.
            let tail = self.rows_page(merged_through.as_ref(), None).await?;
            self.merge_rows(store, tail, None, &[], checked, problems)
                .await
                .map(drop)
        };
        // A merge that stopped early drops the chunks, which ends the read.
        let (_, merged) = futures::join!(read, merge);
        merged
    }

    /// The digest range of a chunk of the listing, the ranges before it having reached
    /// `merged_through` (which it advances); an error if the listing is not in key order.
    fn range_of(
        &self,
        keys: Vec<BlobKey>,
        merged_through: &mut Option<Sha256Hex>,
    ) -> Result<ListedRange, AdminError> {
        let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
            unreachable!("a chunk of a stream is never empty");
        };
        let in_order = keys.windows(2).all(|pair| pair[0] < pair[1])
            && merged_through
                .as_ref()
                .is_none_or(|through| first.sha256() > *through);
        if !in_order {
            return Err(self.store_error(StoreError::Io {
                operation: "list",
                target: self.record.uri.clone(),
                source: std::io::Error::other(format!(
                    "the listing is not in key order (near {first}): objects cannot be \
                     merged with the rows"
                )),
            }));
        }
        let through = last.sha256();
        Ok(ListedRange {
            after: merged_through.replace(through.clone()),
            through,
            keys,
        })
    }

    /// The first page of the datastore's rows whose digest lies after `after` and, when
    /// given, not after `through`.
    async fn rows_page(
        &self,
        after: Option<&Sha256Hex>,
        through: Option<&Sha256Hex>,
    ) -> Result<Vec<Blob>, AdminError> {
        Ok(self
            .repo
            .blobs_in(self.record.id, None, after, through, ROWS_PAGE)
            .await?)
    }

    /// Merges `page`, the first page of the rows up to `through` (all of them without
    /// it), and the pages after it, with `keys` (listed, in order); returns, for each
    /// key, whether a row points at it. A row whose object is not listed is asked for
    /// again (the object may have been written since its folder was listed), and one
    /// still missing is tallied and listed, except with `--deep`, whose walk of the rows
    /// finds it.
    async fn merge_rows(
        &self,
        store: &dyn Datastore,
        mut page: Vec<Blob>,
        through: Option<&Sha256Hex>,
        keys: &[BlobKey],
        checked: &mut DatastoreCheck,
        problems: &mut Failures<CheckFault>,
    ) -> Result<Vec<bool>, AdminError> {
        let mut referenced = vec![false; keys.len()];
        // The first key no row has passed: rows come in digest order, which is the
        // order of their keys (for a row whose location is its digest's key; any other
        // row points at no listed object).
        let mut next = 0;
        loop {
            let Some(last) = page.last() else {
                return Ok(referenced);
            };
            let after = last.sha256.clone();
            let full = page.len() as i64 == ROWS_PAGE;
            let rows = page.len() as u64;
            let mut unlisted = Vec::new();
            for blob in page {
                if blob.location.is_for(&blob.sha256) {
                    while keys.get(next).is_some_and(|key| *key < blob.location) {
                        next += 1;
                    }
                    if keys.get(next) == Some(&blob.location) {
                        referenced[next] = true;
                        next += 1;
                        continue;
                    }
                }
                unlisted.push(blob);
            }
            if self.options.depth == Depth::Presence {
                self.progress.items_done.fetch_add(rows, Ordering::Relaxed);
                self.confirm_missing(store, unlisted, checked, problems)
                    .await?;
            }
            if !full {
                return Ok(referenced);
            }
            page = self.rows_page(Some(&after), through).await?;
        }
    }

    /// Listed objects no row points at: tallies those whose deletion is queued, and the
    /// orphans (listed; with `--fix`, queued for deletion).
    async fn unreferenced(
        &self,
        store: &dyn Datastore,
        keys: Vec<BlobKey>,
        checked: &mut DatastoreCheck,
        problems: &mut Failures<CheckFault>,
    ) -> Result<(), AdminError> {
        if keys.is_empty() {
            return Ok(());
        }
        let queued = self.repo.queued_among(self.record.id, &keys).await?;
        let sizes = store.sizes(&keys).await.map_err(|e| self.store_error(e))?;
        let mut orphans = Vec::new();
        for (key, size) in keys.into_iter().zip(sizes) {
            if queued.contains(&key) {
                checked.queued.bytes += size.unwrap_or(0);
                continue;
            }
            // Gone meanwhile (a drain), it is no orphan.
            let Some(size) = size else { continue };
            checked.orphans.add(size);
            if !self.options.mode.applies() {
                problems.push(
                    checked.item(&key),
                    CheckFault::OrphanObject,
                    format!("{size} bytes no row points at"),
                );
            }
            orphans.push(key);
        }
        if self.options.mode.applies() && !orphans.is_empty() {
            self.repo.queue_orphans(self.record.id, &orphans).await?;
        }
        Ok(())
    }

    /// Asks for the objects of `blobs` again (see [`Self::merge_rows`]): tallies and lists
    /// those still missing.
    async fn confirm_missing(
        &self,
        store: &dyn Datastore,
        blobs: Vec<Blob>,
        checked: &mut DatastoreCheck,
        problems: &mut Failures<CheckFault>,
    ) -> Result<(), AdminError> {
        let keys: Vec<BlobKey> = blobs.iter().map(|blob| blob.location.clone()).collect();
        let sizes = store.sizes(&keys).await.map_err(|e| self.store_error(e))?;
        for (blob, size) in blobs.into_iter().zip(sizes) {
            if size.is_none() {
                missing(&blob, checked, problems);
            }
        }
        Ok(())
    }

    /// `--deep`: walks the datastore's rows in digest order and hashes each object:
    /// tallies and lists the missing and damaged ones.
    async fn rows(
        &self,
        store: &dyn Datastore,
        checked: &mut DatastoreCheck,
        problems: &mut Failures<CheckFault>,
    ) -> Result<(), AdminError> {
        // A folder store hashes a page at a time on blocking threads.
        let hashed_in_folder = self.folder().map(Arc::new);
        let mut after = None;
        loop {
            let page = self.rows_page(after.as_ref(), None).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.sha256.clone());
            let full = page.len() as i64 == ROWS_PAGE;
            let findings = match &hashed_in_folder {
                Some(folder) => self.hash_in_folder(folder.clone(), page).await?,
                _ => {
                    futures::stream::iter(page)
                        .map(|blob| async move {
                            let finding = self.look_at(store, &blob).await;
                            (blob, finding)
                        })
                        .buffer_unordered(CONCURRENT_READS)
                        .collect()
                        .await
                }
            };
            for (blob, finding) in findings {
                self.progress.items_done.fetch_add(1, Ordering::Relaxed);
                match finding.map_err(|e| self.store_error(e))? {
                    Finding::Sound => {}
                    Finding::Missing => missing(&blob, checked, problems),
                    Finding::Damaged { sha256, size } => {
                        checked.damaged.add(size);
                        problems.push(
                            checked.item(&blob.location),
                            CheckFault::DamagedObject,
                            format!(
                                "holds {size} bytes with SHA-256 {sha256}; its row says {} \
                                 bytes with SHA-256 {}",
                                blob.size_bytes, blob.sha256
                            ),
                        );
                    }
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Whether `blob`'s object is there, whole and right (read and hashed).
    async fn look_at(&self, store: &dyn Datastore, blob: &Blob) -> Result<Finding, StoreError> {
        let payload = match store.open(&blob.location, None).await {
            Ok(payload) => payload,
            Err(StoreError::NotFound { .. }) => return Ok(Finding::Missing),
            Err(e) => return Err(e),
        };
        let read_error = |target: String| {
            move |source| StoreError::Io {
                operation: "read",
                target,
                source,
            }
        };
        let (sha256, size) = match payload {
            // A file is hashed on a blocking thread in one go, not a thread hand-off per
            // read: most media are a few KiB, and the hand-offs would cost more.
            BlobPayload::File { file, path, len } => {
                let target = path.display().to_string();
                tokio::task::spawn_blocking(move || {
                    digest_of_read(std::io::Read::take(file, len)).map_err(read_error(target))
                })
                .await
                .map_err(|e| read_error(blob.location.to_string())(std::io::Error::other(e)))??
            }
            BlobPayload::Stream(reader) => {
                let mut hashing = HashingReader::new(reader);
                tokio::io::copy(&mut hashing, &mut tokio::io::sink())
                    .await
                    .map_err(read_error(blob.location.to_string()))?;
                hashing.finish()
            }
        };
        Ok(Finding::of(blob, &sha256, size))
    }

    /// `--deep` on a folder store: hashes the objects of a page of rows on
    /// [`CONCURRENT_READS`] blocking threads, each reading its share one object after the
    /// other (most media are a few KiB: a thread hand-off per object cost more than its
    /// hashing). Returns each blob with what its object was found to be.
    async fn hash_in_folder(
        &self,
        folder: Arc<FileDatastore>,
        page: Vec<Blob>,
    ) -> Result<Vec<(Blob, Result<Finding, StoreError>)>, AdminError> {
        map_on_threads(page, CONCURRENT_READS, move |blob: Blob| {
            let finding = match folder.digest_blocking(&blob.location) {
                Ok((sha256, size)) => Ok(Finding::of(&blob, &sha256, size)),
                Err(StoreError::NotFound { .. }) => Ok(Finding::Missing),
                Err(e) => Err(e),
            };
            (blob, finding)
        })
        .await
        .map_err(|e| {
            self.store_error(StoreError::Io {
                operation: "hash",
                target: self.record.uri.clone(),
                source: std::io::Error::other(e),
            })
        })
    }

    /// `--fix`: removes stale temporary files and drains the queue (the orphans queued
    /// by the listing pass with it).
    async fn repair(
        &self,
        checked: &mut DatastoreCheck,
        drainer: &mut QueueDrainer,
    ) -> Result<(), AdminError> {
        if let (Some(folder), Some(temporaries)) = (self.folder(), checked.temporaries.as_mut()) {
            let removed = folder
                .cleanup(Duration::ZERO)
                .await
                .map_err(|e| self.store_error(e))?;
            temporaries.repaired = removed.removed_files;
        }
        drainer.drain(self.repo, self.record).await?;
        if self
            .repo
            .pending_deletions(self.record.id, 1)
            .await?
            .is_empty()
        {
            checked.queued.repaired = checked.queued.count;
            checked.orphans.repaired = checked.orphans.count;
        }
        Ok(())
    }

    /// Lists what a repair left (or, without `--fix`, what it would repair) that is not
    /// listed object by object.
    fn remaining(&self, checked: &DatastoreCheck, problems: &mut Failures<CheckFault>) {
        let item = format!("#{} {}", checked.id, checked.uri);
        if let Some(temporaries) = checked.temporaries
            && temporaries.remaining() > 0
        {
            problems.push(
                item.clone(),
                CheckFault::StaleTemporaries,
                format!(
                    "{} stale temporary file(s) ({}) in its temporary folder",
                    temporaries.remaining(),
                    human_size(temporaries.bytes)
                ),
            );
        }
        if checked.queued.remaining() > 0 {
            problems.push(
                item.clone(),
                CheckFault::QueuedDeletions,
                format!("{} object deletion(s) queued", checked.queued.remaining()),
            );
        }
        if self.options.mode.applies() && checked.orphans.remaining() > 0 {
            problems.push(
                item,
                CheckFault::OrphanObject,
                format!(
                    "{} orphan object(s) queued for deletion and not yet deleted",
                    checked.orphans.remaining()
                ),
            );
        }
    }

    /// The datastore as a folder store, when it is one (for its temporary folder).
    fn folder(&self) -> Option<FileDatastore> {
        match media_store::parse_uri(&self.record.uri) {
            Ok(DatastoreLocation::Folder(path)) if path.is_dir() => {
                Some(FileDatastore::open_read_only(path))
            }
            _ => None,
        }
    }

    fn store_error(&self, source: StoreError) -> AdminError {
        AdminError::Store {
            uri: self.record.uri.clone(),
            source,
        }
    }
}

/// A chunk of the listing and the digest range of the rows it is merged with.
struct ListedRange {
    /// The end of the range before (none for the first).
    after: Option<Sha256Hex>,
    /// The digest of the chunk's last key.
    through: Sha256Hex,
    /// The listed keys, in order.
    keys: Vec<BlobKey>,
}

/// Tallies and lists `blob`'s object as missing.
fn missing(blob: &Blob, checked: &mut DatastoreCheck, problems: &mut Failures<CheckFault>) {
    checked.missing.add(blob.size_bytes);
    problems.push(
        checked.item(&blob.location),
        CheckFault::MissingObject,
        format!(
            "no object for blob {} ({} bytes)",
            blob.sha256, blob.size_bytes
        ),
    );
}

/// What looking at one blob's object found.
enum Finding {
    Sound,
    Missing,
    Damaged { sha256: String, size: u64 },
}

impl Finding {
    /// What an object holding `size` bytes with digest `sha256` is for `blob`'s row.
    fn of(blob: &Blob, sha256: &Sha256Hex, size: u64) -> Self {
        if *sha256 == blob.sha256 && size == blob.size_bytes {
            Finding::Sound
        } else {
            Finding::Damaged {
                sha256: sha256.to_string(),
                size,
            }
        }
    }
}
