//! Import an archive folder into a repository, or verify it against the repository: our
//! own ([`import_archive`]) or any [`ArchiveSink`] ([`import_archive_into`]; "the
//! repository" and "datastore" below are the sink's, "blob" the bytes it stores).
//!
//! [`open_archive`] checks the whole archive's structure before anything is written (or
//! a repository even opened): its manifest (streamed, with every string bounded, an
//! entity that is a user or a server) and every part (one manifest only). Then the
//! manifest's records are checked (identifiers, origin, selection) and spooled to a
//! temporary file, with only a small index by entry name in memory. Each part is
//! streamed once, in any order: an entry is matched to its records only through the
//! manifest's `file_name`, its bytes go into the datastore with the manifest's digest
//! and size as the expectation (a mismatch stores nothing, and at most one byte more
//! than declared is ever read), and the records are written in batches.
//!
//! A record already in the repository with the same digest is not written again, but
//! its stored bytes are checked, and a blob that is missing or damaged is put again from
//! the archive (a repair); a record present with other bytes is a `conflict`, never
//! overwritten. So a killed import resumes where it stopped. With [`Mode::Verify`]
//! nothing is written: every entry is hashed, every record looked up in the repository
//! and its bytes checked (presence, size, digest).
//!
//! Stored bytes are checked in the datastore their blob row names, at the recorded
//! location (see [`media_db::Datastores`]); new bytes go to the given datastore. Bytes
//! the repository already holds in another datastore are not put again (that would
//! only leave a stray copy): new records of them are recorded against the blob there
//! once it is checked intact. A blob missing or damaged in another datastore is not
//! repaired (the import writes only to the given one): its records fail, saying to
//! run the import with that datastore as `--datastore`. An ID the sink reserves (never
//! to be used) is not imported (`reserved`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use media_archive::{ArchiveFolder, CheckedRecord, ManifestRecord, MediaEntry};
use media_core::datastore::{BlobKey, Datastore, Durability, PutOptions, PutStatus, StoreError};
use media_core::ids::{ServerName, Sha256Hex};
use media_core::records::{MediaKey, MediaRecord, Purpose};
use media_core::run::{Failures, Reason, Route, RunMode};
use media_db::Datastores;
use media_db::repo::{InsertOutcome, Repository};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::record_index::{RecordIndex, Spooled};
use crate::sink::{ArchiveSink, RecordedBytes, RepositoryArchiveSink, Stored, stored_state};
use crate::{Entity, GdprError, Progress};

/// Chunk size of entry reads.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the archive reader and the datastore (bounds memory).
const CHUNKS_IN_FLIGHT: usize = 8;
/// Media recorded per transaction; each transaction first syncs the datastore (at 64,
/// an import of 100,000 small media synced the disk 1,560 times).
const BATCH_SIZE: usize = 512;
/// Puts of small entries (each at most one chunk) running at once.
const PUTS_IN_FLIGHT: usize = 16;

/// Import the archive, or only check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Write what is missing into the repository.
    Import,
    /// Write nothing: check every entry against the manifest and every record against
    /// the repository.
    Verify,
}

impl Mode {
    /// Whether the run changes anything: an import applies, verifying is a dry run (one
    /// that hashes every entry and checks every record's blob).
    pub fn run_mode(self) -> RunMode {
        match self {
            Self::Import => RunMode::Apply,
            Self::Verify => RunMode::DryRun,
        }
    }
}

/// What to import, and how.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The archive folder.
    pub directory: PathBuf,
    /// Import only this user's or server's records.
    pub only_entity: Option<Entity>,
    /// Accept records of another origin than the archive's entity (or whose uploader is
    /// on another server than their origin).
    pub allow_foreign_origins: bool,
    /// Import or verify.
    pub mode: Mode,
}

/// What an import (or verification) did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// The archive folder, and the repository and datastore imported into (or checked).
    pub route: Route,
    /// Import or verify.
    pub mode: Mode,
    /// The archive folder.
    pub directory: PathBuf,
    /// The archive's entity.
    pub entity: String,
    /// Its manifest version.
    pub manifest_version: u32,
    /// Records in the manifest.
    pub records: u64,
    /// Records left out by `only_entity`.
    pub not_selected: u64,
    /// Records imported now.
    pub imported: u64,
    /// Records the repository already had, with their bytes intact (skipped).
    pub already_present: u64,
    /// Records the repository already had whose blob was missing from the datastore or
    /// damaged there, and was put again from the archive.
    pub repaired: u64,
    /// Verify: records whose entry and repository row both match the manifest.
    pub verified: u64,
    /// Entries read.
    pub entries_read: u64,
    /// Bytes of entries read.
    pub bytes_read: u64,
    /// Blobs the datastore did not have and received.
    pub blobs_written: u64,
    /// Their bytes.
    pub bytes_written: u64,
    /// Files of the folder that are not part of the archive (ignored).
    pub strays: Vec<PathBuf>,
    /// Records not imported (or not verified), and problems of the archive.
    pub failures: Failures<ImportReason>,
}

/// Why a record was not imported (or not verified), or what is wrong with a part of the
/// archive (a code in reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportReason {
    /// A part (or one of its entries) cannot be read: truncated or corrupted.
    DamagedPart,
    /// No part holds the record's entry.
    MissingFromArchive,
    /// The record names no entry (a metadata-only export).
    NoData,
    /// The record's identifiers, digest or size are not valid.
    InvalidRecord,
    /// The record's origin or uploader is not the archive's entity.
    ForeignOrigin,
    /// The reader refused the entry (a link, a folder, a path instead of a name).
    RefusedEntry,
    /// Verify: the entry does not match its record.
    ArchiveMismatch,
    /// Verify: the repository has no such media.
    NotInRepository,
    /// Verify: the repository has other bytes for the media.
    DifferentInRepository,
    /// The repository records the media, but its blob is not in the datastore its row
    /// names (found by a verification, or by an import when that datastore is not the
    /// one it writes to, so that it cannot put the blob back).
    MissingFromDatastore,
    /// The media's blob in the datastore its row names is damaged (found as above).
    DamagedInDatastore,
    /// The datastore the media's blob row names cannot be opened, or is not the one the
    /// repository recorded (another identity marker).
    DatastoreUnavailable,
    /// The media's bytes are quarantined in the repository.
    Quarantined,
    /// The entry does not match its record: nothing was written.
    Mismatch,
    /// The repository has the media with other bytes; its record was kept.
    Conflict,
    /// The media ID must never be (re)used (matrix-media-repo's `reserved_media` or
    /// `media_id_hold`, our repository's reserved IDs): nothing was written.
    Reserved,
}

impl Reason for ImportReason {
    fn code(self) -> &'static str {
        match self {
            Self::DamagedPart => "damaged_part",
            Self::MissingFromArchive => "missing_from_archive",
            Self::NoData => "no_data",
            Self::InvalidRecord => "invalid_record",
            Self::ForeignOrigin => "foreign_origin",
            Self::RefusedEntry => "refused_entry",
            Self::ArchiveMismatch => "archive_mismatch",
            Self::NotInRepository => "not_in_repository",
            Self::DifferentInRepository => "different_in_repository",
            Self::MissingFromDatastore => "missing_from_datastore",
            Self::DamagedInDatastore => "damaged_in_datastore",
            Self::DatastoreUnavailable => "datastore_unavailable",
            Self::Quarantined => "quarantined",
            Self::Mismatch => "mismatch",
            Self::Conflict => "conflict",
            Self::Reserved => "reserved",
        }
    }
}

impl ImportReport {
    fn new(options: &ImportOptions, folder: &ArchiveFolder, to: String) -> Self {
        Self {
            route: Route::new(options.directory.display(), to),
            mode: options.mode,
            directory: options.directory.clone(),
            entity: folder.manifest.entity_id.clone(),
            manifest_version: folder.manifest.version,
            records: folder.manifest.records,
            not_selected: 0,
            imported: 0,
            already_present: 0,
            repaired: 0,
            verified: 0,
            entries_read: 0,
            bytes_read: 0,
            blobs_written: 0,
            bytes_written: 0,
            strays: folder.strays.clone(),
            failures: Failures::default(),
        }
    }
}

impl media_core::run::Report for ImportReport {
    /// Verifying changes nothing: it is the import's dry run.
    fn mode(&self) -> RunMode {
        self.mode.run_mode()
    }

    /// Whether some records failed (or, when verifying, did not match).
    fn has_failures(&self) -> bool {
        self.failures.any()
    }
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use media_core::progress::human_size;
        let verb = match self.mode {
            Mode::Import => "Imported",
            Mode::Verify => "Verified",
        };
        self.route
            .write_headline(f, "gdpr_import", media_core::run::Report::mode(self))?;
        writeln!(
            f,
            "{verb} the archive of {} in {} (manifest v{}, {} records)",
            self.entity,
            self.directory.display(),
            self.manifest_version,
            self.records
        )?;
        match self.mode {
            Mode::Import => writeln!(
                f,
                "  media imported: {}, already present: {}, repaired: {}, failed: {}",
                self.imported,
                self.already_present,
                self.repaired,
                self.failures.count()
            )?,
            Mode::Verify => writeln!(
                f,
                "  media verified: {}, missing or different: {}",
                self.verified,
                self.failures.count()
            )?,
        }
        write!(
            f,
            "  entries read: {} ({})",
            self.entries_read,
            human_size(self.bytes_read)
        )?;
        match self.mode {
            Mode::Import => writeln!(
                f,
                "; blobs written: {} ({})",
                self.blobs_written,
                human_size(self.bytes_written)
            )?,
            Mode::Verify => writeln!(f)?,
        }
        if self.not_selected > 0 {
            writeln!(f, "  left out by --only-entity: {}", self.not_selected)?;
        }
        for stray in &self.strays {
            writeln!(f, "  ignored (not an archive part): {}", stray.display())?;
        }
        if self.failures.any() {
            writeln!(f, "  FAILED:")?;
            self.failures.write_lines(f)?;
        }
        Ok(())
    }
}

/// Opens the archive in `directory` and checks its whole structure (see
/// [`ArchiveFolder::open`]): call it before opening the repository, so that a bad
/// archive or an empty folder never creates or changes one.
pub async fn open_archive(directory: &Path) -> Result<ArchiveFolder, GdprError> {
    let directory = directory.to_owned();
    let folder = tokio::task::spawn_blocking(move || ArchiveFolder::open(&directory))
        .await
        .map_err(|e| GdprError::Worker(e.to_string()))??;
    Ok(folder)
}

/// Imports (or verifies) the archive `folder` (from [`open_archive`] on
/// `options.directory`) into our repository: new bytes into the given datastore of
/// `datastores`. See the [module documentation](self).
pub async fn import_archive(
    repo: &Repository,
    datastores: Datastores,
    folder: ArchiveFolder,
    options: ImportOptions,
    progress: Arc<Progress>,
) -> Result<ImportReport, GdprError> {
    let register = options.mode == Mode::Import;
    let sink = RepositoryArchiveSink::open(repo, datastores, register).await?;
    import_archive_into(Arc::new(sink), folder, options, progress).await
}

/// Imports (or verifies) the archive `folder` (from [`open_archive`] on
/// `options.directory`) into `sink`: our repository ([`import_archive`]) or another
/// backend (a matrix-media-repo deployment). See the [module documentation](self).
pub async fn import_archive_into(
    sink: Arc<dyn ArchiveSink>,
    folder: ArchiveFolder,
    options: ImportOptions,
    progress: Arc<Progress>,
) -> Result<ImportReport, GdprError> {
    for stray in &folder.strays {
        tracing::warn!("{} is not an archive part; ignored", stray.display());
    }
    let to = sink.describe();
    let task = match options.mode {
        Mode::Verify => None,
        Mode::Import => {
            let params = serde_json::json!({
                "directory": options.directory,
                "entity": folder.manifest.entity_id,
                "only_entity": options.only_entity.as_ref().map(ToString::to_string),
                "into": to,
            });
            Some(sink.start_task(&params).await?)
        }
    };
    let importer = Importer {
        handle: Handle::current(),
        sink: sink.clone(),
        progress,
        source_label: format!("gdpr:{}", options.directory.display()),
        report: ImportReport::new(&options, &folder, to),
        options,
        wanted: RecordIndex::new()?,
        batch: Vec::new(),
        in_flight: VecDeque::new(),
        repairs_unsynced: false,
    };
    let result = tokio::task::spawn_blocking(move || importer.run(folder))
        .await
        .map_err(|e| GdprError::Worker(e.to_string()))
        .and_then(|r| r);
    if let Some(task) = task {
        let (counters, error) = match &result {
            Ok(report) => (
                serde_json::json!({
                    "imported": report.imported,
                    "already_present": report.already_present,
                    "repaired": report.repaired,
                    "failed": report.failures.count(),
                    "blobs_written": report.blobs_written,
                })
                .to_string(),
                None,
            ),
            Err(e) => ("{}".to_owned(), Some(e.to_string())),
        };
        sink.finish_task(task, &counters, error.as_deref()).await?;
    }
    result
}

/// A manifest record waiting for its entry.
struct Wanted {
    mxc: String,
    checked: CheckedRecord,
    record: ManifestRecord,
    /// Already recorded with these bytes: the entry only repairs its blob.
    present: bool,
}

/// Bytes the sink stores already, checked where its rows say they are.
struct RecordedBlob {
    /// Where they are.
    recorded: RecordedBytes,
    /// What they hold there, or why that datastore cannot be read.
    state: Result<Stored, String>,
}

impl RecordedBlob {
    /// Why the records of these bytes (`sha256`) fail, or `None` when they are intact.
    /// `repair` says how to put them back.
    fn problem(&self, sha256: &Sha256Hex, repair: &str) -> Option<(ImportReason, String)> {
        let shown = &self.recorded.shown;
        match &self.state {
            Ok(Stored::Intact) => None,
            Ok(Stored::Missing) => Some((
                ImportReason::MissingFromDatastore,
                format!("the repository records it, but {shown} has no blob {sha256} ({repair})"),
            )),
            Ok(Stored::Damaged(problem)) => Some((
                ImportReason::DamagedInDatastore,
                format!("its blob {sha256} in {shown} is damaged: {problem} ({repair})"),
            )),
            Err(unavailable) => Some((ImportReason::DatastoreUnavailable, unavailable.clone())),
        }
    }
}

/// The blocking side of an import: reads parts and drives the async sink through
/// `handle`.
struct Importer {
    handle: Handle,
    /// Where the archive goes.
    sink: Arc<dyn ArchiveSink>,
    progress: Arc<Progress>,
    source_label: String,
    options: ImportOptions,
    report: ImportReport,
    /// Records still waiting for their entry, by entry name.
    wanted: RecordIndex,
    /// Media whose bytes are stored, waiting to be recorded.
    batch: Vec<MediaRecord>,
    /// Puts of small entries still running, oldest first.
    in_flight: VecDeque<PendingPut>,
    /// Blobs put again (repairs) that the next flush must make durable.
    repairs_unsynced: bool,
}

/// What the sink records of some media IDs, by origin: the digest of each recorded ID, and
/// why each reserved ID may never be written.
type RecordedIds = HashMap<ServerName, (HashMap<String, Sha256Hex>, HashMap<String, String>)>;

/// A put running concurrently, and the records waiting for it.
struct PendingPut {
    name: String,
    records: Vec<Wanted>,
    put: tokio::task::JoinHandle<Result<media_core::datastore::Put, StoreError>>,
}

impl Importer {
    fn run(mut self, folder: ArchiveFolder) -> Result<ImportReport, GdprError> {
        self.progress
            .items_total
            .store(folder.manifest.records, Ordering::Relaxed);
        let mut spool_failed = None;
        folder
            .read_records(&mut |mxc, record| {
                if let Err(e) = self.select(mxc, record, &folder.manifest) {
                    spool_failed = Some(e);
                    return Err(media_archive::ArchiveError::BadManifest(
                        "its records could not be spooled".into(),
                    ));
                }
                Ok(())
            })
            .map_err(|e| spool_failed.take().unwrap_or(e.into()))?;
        self.wanted.seal()?;
        for part in &folder.parts {
            match folder.read_media(part, |entry| self.on_entry(entry)) {
                Ok(()) => {}
                Err(GdprError::Archive(
                    damaged @ media_archive::ArchiveError::CorruptPart { .. },
                )) => {
                    tracing::warn!("{damaged}");
                    self.report.failures.push(
                        part.display().to_string(),
                        ImportReason::DamagedPart,
                        damaged.to_string(),
                    );
                }
                Err(other) => {
                    // Record what was already put, but report the error that stopped
                    // the run, not a later one it caused.
                    if let Err(flush) = self.flush() {
                        tracing::warn!("after {other}: {flush}");
                    }
                    return Err(other);
                }
            }
            self.flush()?;
        }
        let (progress, failures) = (&self.progress, &mut self.report.failures);
        self.wanted.for_each_remaining(|spooled| {
            progress.items_done.fetch_add(1, Ordering::Relaxed);
            let detail = format!(
                "no part of the archive holds its entry {:?}",
                spooled.record.file_name
            );
            failures.push(spooled.mxc, ImportReason::MissingFromArchive, detail);
        })?;
        Ok(self.report)
    }

    fn fail(&mut self, item: &str, reason: ImportReason, detail: impl Into<String>) {
        self.progress.items_done.fetch_add(1, Ordering::Relaxed);
        self.report.failures.push(item, reason, detail);
    }

    /// Checks a manifest record and, when it is to be imported, files it under its entry.
    fn select(
        &mut self,
        mxc: String,
        record: ManifestRecord,
        manifest: &media_archive::Manifest,
    ) -> Result<(), GdprError> {
        if record.file_name.is_empty() {
            self.fail(
                &mxc,
                ImportReason::NoData,
                "the archive holds no bytes for it (a metadata-only export)",
            );
            return Ok(());
        }
        let checked = match record.check(&mxc) {
            Ok(checked) => checked,
            Err(problem) => {
                self.fail(&shown(&mxc), ImportReason::InvalidRecord, problem);
                return Ok(());
            }
        };
        if let Some(problem) = self.refusal(&checked, manifest) {
            self.fail(&mxc, ImportReason::ForeignOrigin, problem);
            return Ok(());
        }
        let selected = match &self.options.only_entity {
            None => true,
            Some(Entity::User(user)) => checked.uploader.as_ref() == Some(user),
            Some(Entity::Server(server)) => &checked.key.origin == server,
        };
        if !selected {
            self.report.not_selected += 1;
            self.progress.items_done.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.wanted.push(mxc, record)
    }

    /// Why a record of another origin (or uploader) than the archive's is refused, unless
    /// `--allow-foreign-origins`: its origin must be the archive's server, its uploader
    /// on its origin, and in a user's archive (or with `--only-entity @user`) that user.
    fn refusal(
        &self,
        checked: &CheckedRecord,
        manifest: &media_archive::Manifest,
    ) -> Option<String> {
        if self.options.allow_foreign_origins {
            return None;
        }
        let origin = &checked.key.origin;
        let server = &manifest.entity_server;
        if server != origin {
            return Some(format!(
                "its origin {origin} is not the archive's server {server} \
                 (--allow-foreign-origins imports it anyway)"
            ));
        }
        let uploader = checked.uploader.as_ref()?;
        if uploader.server_name() != origin {
            return Some(format!(
                "its uploader {uploader} is not on its origin {origin} \
                 (--allow-foreign-origins imports it anyway)"
            ));
        }
        let user = match &self.options.only_entity {
            Some(Entity::User(user)) => Some(user),
            _ => manifest.entity_user.as_ref(),
        }?;
        (uploader != user).then(|| {
            format!(
                "it was uploaded by {uploader}, not by {user} whose media the archive holds \
                 (--allow-foreign-origins imports it anyway)"
            )
        })
    }

    fn on_entry(&mut self, entry: MediaEntry<'_>) -> Result<(), GdprError> {
        match entry {
            MediaEntry::Refused { name, reason } => {
                let detail = format!("archive entry {name:?} was refused: {reason}");
                tracing::warn!("{detail}");
                match self.wanted.take(&name)? {
                    Some(records) if !records.is_empty() => {
                        for spooled in records {
                            self.fail(&spooled.mxc, ImportReason::RefusedEntry, detail.clone());
                        }
                    }
                    _ => self
                        .report
                        .failures
                        .push(name, ImportReason::RefusedEntry, detail),
                }
                Ok(())
            }
            MediaEntry::File { name, body } => {
                let records = match self.wanted.take(name)? {
                    None => {
                        tracing::debug!("archive entry {name:?} is in no record; skipped");
                        return Ok(());
                    }
                    Some(records) if records.is_empty() => {
                        tracing::warn!("archive entry {name:?} appears twice; read once");
                        return Ok(());
                    }
                    Some(records) => records,
                };
                let mut wanted = Vec::with_capacity(records.len());
                for Spooled { mxc, record } in records {
                    match record.check(&mxc) {
                        Ok(checked) => wanted.push(Wanted {
                            mxc,
                            checked,
                            record,
                            present: false,
                        }),
                        Err(problem) => self.fail(&mxc, ImportReason::InvalidRecord, problem),
                    }
                }
                let records = wanted;
                match self.options.mode {
                    Mode::Verify => self.verify_entry(name, body, records),
                    Mode::Import => self.import_entry(name, body, records),
                }
            }
        }
    }

    fn verify_entry(
        &mut self,
        name: &str,
        body: &mut dyn Read,
        records: Vec<Wanted>,
    ) -> Result<(), GdprError> {
        // One byte past the largest declared size tells an oversized entry apart.
        let declared = records.iter().map(|w| w.checked.size).max().unwrap_or(0);
        let hashed = hash_at_most(body, declared + 1);
        self.report.entries_read += 1;
        // The verdict on the blob where its row says it is, read once for the records
        // sharing it.
        let mut stored: Option<RecordedBlob> = None;
        for wanted in records {
            let (sha256, length) = match &hashed {
                Ok(hashed) => hashed,
                Err(e) => {
                    self.fail(
                        &wanted.mxc,
                        ImportReason::DamagedPart,
                        format!("entry {name:?}: {e}"),
                    );
                    continue;
                }
            };
            if let Some(problem) = mismatch(&wanted.checked, sha256, *length) {
                self.fail(
                    &wanted.mxc,
                    ImportReason::ArchiveMismatch,
                    format!("entry {name:?}: {problem}"),
                );
                continue;
            }
            let key = &wanted.checked.key;
            let recorded = self
                .handle
                .block_on(
                    self.sink
                        .existing_media_digests(&key.origin, &[key.media_id.as_str()]),
                )?
                .remove(key.media_id.as_str());
            match recorded {
                None => self.fail(
                    &wanted.mxc,
                    ImportReason::NotInRepository,
                    "the repository has no such media",
                ),
                Some(digest) if digest != wanted.checked.sha256 => self.fail(
                    &wanted.mxc,
                    ImportReason::DifferentInRepository,
                    format!(
                        "the repository has other bytes for it ({digest}), the archive has {}",
                        wanted.checked.sha256
                    ),
                ),
                Some(_) => {
                    let blob = match &stored {
                        Some(blob) => blob,
                        None => stored.insert(self.check_recorded(&wanted.checked)?),
                    };
                    let repair = match blob.recorded.repairable_at {
                        Some(_) => "gdpr_import without --verify puts it back".to_owned(),
                        None => blob.recorded.repair_elsewhere.clone(),
                    };
                    match blob.problem(&wanted.checked.sha256, &repair) {
                        None => {
                            self.report.verified += 1;
                            self.progress.items_done.fetch_add(1, Ordering::Relaxed);
                        }
                        Some((reason, detail)) => self.fail(&wanted.mxc, reason, detail),
                    }
                }
            }
        }
        if let Ok((_, length)) = hashed {
            self.report.bytes_read += length;
            self.progress.bytes.fetch_add(length, Ordering::Relaxed);
        }
        Ok(())
    }

    fn import_entry(
        &mut self,
        name: &str,
        body: &mut dyn Read,
        records: Vec<Wanted>,
    ) -> Result<(), GdprError> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        // Everything the repository is asked about an entry, asked at once: which of its
        // records it has, where it stores the first one's bytes, and whether those are
        // quarantined.
        let (sha256, key) = (first.checked.sha256.clone(), first.checked.key.clone());
        let (recorded_ids, (recorded, quarantined)) = self.handle.block_on(async {
            futures::try_join!(self.recorded_ids(&records), self.about_bytes(&sha256, &key))
        })?;
        let mut records = self.without_present(records, recorded_ids);
        let Some(first) = records.first() else {
            return Ok(());
        };
        // The first record was a conflict (or reserved): ask again about the next one's.
        let (recorded, quarantined) = if first.checked.sha256 == sha256 && first.checked.key == key
        {
            (recorded, quarantined)
        } else {
            let (sha256, key) = (&first.checked.sha256, &first.checked.key);
            self.handle.block_on(self.about_bytes(sha256, key))?
        };
        let (sha256, size) = (first.checked.sha256.clone(), first.checked.size);
        let store = self.sink.datastore_for(&first.checked.key).clone();
        let key = match recorded {
            Some(recorded) => match recorded.repairable_at.clone() {
                Some(key) => key,
                None => {
                    return self.import_stored_elsewhere(
                        recorded,
                        (&sha256, size),
                        quarantined,
                        records,
                    );
                }
            },
            None => BlobKey::for_hash(&sha256),
        };
        // Records already present: their blob is checked, and put again only when it is
        // missing or damaged.
        if records.iter().any(|w| w.present) {
            let state = self
                .handle
                .block_on(stored_state(&*store, &key, &sha256, size))?;
            match state {
                Stored::Intact => {
                    self.count_present(&mut records);
                    if records.is_empty() {
                        return Ok(());
                    }
                }
                Stored::Missing => {
                    tracing::warn!("blob {sha256} is missing from the datastore; restoring it");
                }
                Stored::Damaged(problem) => {
                    tracing::warn!("blob {sha256} is damaged ({problem}); replacing it");
                    self.handle.block_on(store.delete(&key))?;
                }
            }
        }
        self.report.entries_read += 1;
        let Some(records) = self.unless_quarantined(&sha256, quarantined, records) else {
            return Ok(());
        };
        let options =
            PutOptions::expecting(Some(sha256), Some(size)).with_durability(Durability::AfterSync);
        // Never read more than one byte past the declared size: an oversized entry is
        // a mismatch, not a disk filler.
        let mut limited = body.take(size.saturating_add(1));
        if size >= CHUNK as u64 {
            let put = self.put_streamed(store, &mut limited, options);
            self.settle(name, records, put)?;
        } else {
            // Small entries are read whole and put concurrently: their cost is mostly
            // waiting for the disk, so several are in flight while the next is read.
            let mut bytes = Vec::with_capacity(size as usize + 1);
            if let Err(e) = limited.read_to_end(&mut bytes) {
                let result = Err(StoreError::Source {
                    bytes_read: bytes.len() as u64,
                    source: e,
                });
                return self.settle(name, records, result);
            }
            let put = self
                .handle
                .spawn(async move { store.put(&mut &bytes[..], &options).await });
            self.in_flight.push_back(PendingPut {
                name: name.to_owned(),
                records,
                put,
            });
            if self.in_flight.len() >= PUTS_IN_FLIGHT {
                self.settle_oldest()?;
            }
        }
        if self.batch.len() >= BATCH_SIZE {
            self.flush()?;
        }
        Ok(())
    }

    /// The bytes of `record` the sink stores, checked (read and hashed) where its rows
    /// say they are. (A recorded media without them is a row the sink cannot explain.)
    fn check_recorded(&self, record: &CheckedRecord) -> Result<RecordedBlob, GdprError> {
        self.handle.block_on(async {
            let recorded = self
                .sink
                .recorded_bytes(&record.sha256, &record.key)
                .await?
                .ok_or_else(|| {
                    GdprError::Db(media_db::DbError::InvalidRow {
                        table: "media",
                        key: record.sha256.to_string(),
                        reason: "a media references these bytes, which are stored nowhere".into(),
                    })
                })?;
            self.check_blob(recorded, &record.sha256, record.size).await
        })
    }

    /// `recorded`, checked where it is.
    async fn check_blob(
        &self,
        recorded: RecordedBytes,
        sha256: &Sha256Hex,
        size: u64,
    ) -> Result<RecordedBlob, GdprError> {
        let state = self.sink.check(&recorded, sha256, size).await?;
        Ok(RecordedBlob { recorded, state })
    }

    /// The records of an entry whose bytes the sink holds in another datastore than the
    /// one it writes them to: nothing is put (it would only be a stray copy). The bytes
    /// are checked there; when intact, the present records are counted and the new ones
    /// recorded against them; otherwise every record fails, naming that datastore.
    fn import_stored_elsewhere(
        &mut self,
        recorded: RecordedBytes,
        (sha256, size): (&Sha256Hex, u64),
        quarantined: bool,
        mut records: Vec<Wanted>,
    ) -> Result<(), GdprError> {
        let checked = self
            .handle
            .block_on(self.check_blob(recorded, sha256, size))?;
        let repair = checked.recorded.repair_elsewhere.clone();
        if let Some((reason, detail)) = checked.problem(sha256, &repair) {
            for wanted in records {
                self.fail(&wanted.mxc, reason, detail.clone());
            }
            return Ok(());
        }
        self.count_present(&mut records);
        let Some(records) = self.unless_quarantined(sha256, quarantined, records) else {
            return Ok(());
        };
        for wanted in records {
            self.record_later(wanted);
        }
        if self.batch.len() >= BATCH_SIZE {
            self.flush()?;
        }
        Ok(())
    }

    /// Counts the present records (their blob was found intact) and leaves the others.
    fn count_present(&mut self, records: &mut Vec<Wanted>) {
        let intact = records.iter().filter(|w| w.present).count() as u64;
        self.report.already_present += intact;
        self.progress
            .items_done
            .fetch_add(intact, Ordering::Relaxed);
        records.retain(|w| !w.present);
    }

    /// `records`, unless their bytes (`sha256`) are `quarantined` in the repository: then
    /// each fails, and `None` is returned.
    fn unless_quarantined(
        &mut self,
        sha256: &Sha256Hex,
        quarantined: bool,
        records: Vec<Wanted>,
    ) -> Option<Vec<Wanted>> {
        if records.is_empty() || !quarantined {
            return Some(records);
        }
        for wanted in records {
            self.fail(
                &wanted.mxc,
                ImportReason::Quarantined,
                format!("its bytes ({sha256}) are quarantined in this repository"),
            );
        }
        None
    }

    /// Where the sink stores the bytes `sha256` already, seen from an import of `key`, and
    /// whether they are quarantined.
    async fn about_bytes(
        &self,
        sha256: &Sha256Hex,
        key: &MediaKey,
    ) -> Result<(Option<RecordedBytes>, bool), GdprError> {
        futures::try_join!(self.sink.recorded_bytes(sha256, key), async {
            Ok(self.sink.is_hash_quarantined(sha256).await?)
        })
    }

    /// Queues a record whose bytes are stored, for the next batch.
    fn record_later(&mut self, wanted: Wanted) {
        let record = self.media_record(wanted);
        self.batch.push(record);
    }

    /// Waits for the oldest concurrent put and files its records.
    fn settle_oldest(&mut self) -> Result<(), GdprError> {
        let Some(pending) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let put = self
            .handle
            .block_on(pending.put)
            .map_err(|e| StoreError::Io {
                operation: "put",
                target: format!("archive entry {:?}", pending.name),
                source: std::io::Error::other(e),
            });
        self.settle(&pending.name, pending.records, put.and_then(|r| r))
    }

    /// Files the records of an entry whose put finished: into the batch when the bytes
    /// match them, as failures otherwise.
    fn settle(
        &mut self,
        name: &str,
        records: Vec<Wanted>,
        put: Result<media_core::datastore::Put, StoreError>,
    ) -> Result<(), GdprError> {
        match put {
            Ok(put) => {
                self.report.bytes_read += put.blob.size;
                if put.status == PutStatus::Written {
                    self.report.blobs_written += 1;
                    self.report.bytes_written += put.blob.size;
                }
                for wanted in records {
                    match mismatch(&wanted.checked, &put.blob.sha256, put.blob.size) {
                        Some(problem) => self.fail(
                            &wanted.mxc,
                            ImportReason::Mismatch,
                            format!("entry {name:?}: {problem}"),
                        ),
                        None if wanted.present => {
                            self.repairs_unsynced = true;
                            self.report.repaired += 1;
                            self.progress.items_done.fetch_add(1, Ordering::Relaxed);
                        }
                        None => self.record_later(wanted),
                    }
                }
            }
            Err(StoreError::Mismatch {
                what,
                expected,
                actual,
            }) => {
                let oversized =
                    what == "size" && actual.parse::<u64>().ok() > expected.parse::<u64>().ok();
                let found = if oversized {
                    format!("it holds more than the {expected} bytes the manifest says")
                } else {
                    format!("its {what} is {actual}, the manifest says {expected}")
                };
                for wanted in records {
                    self.fail(
                        &wanted.mxc,
                        ImportReason::Mismatch,
                        format!(
                            "entry {name:?} does not match the manifest: {found}; nothing \
                             was written"
                        ),
                    );
                }
            }
            Err(StoreError::Source { source, .. }) => {
                for wanted in records {
                    self.fail(
                        &wanted.mxc,
                        ImportReason::DamagedPart,
                        format!("entry {name:?} could not be read: {source}"),
                    );
                }
            }
            Err(fatal) => return Err(fatal.into()),
        }
        Ok(())
    }

    /// What the sink records of the media IDs of `records`, origin by origin: their
    /// digests, and why those that may never be written may not.
    async fn recorded_ids(&self, records: &[Wanted]) -> Result<RecordedIds, GdprError> {
        let origins: BTreeSet<&ServerName> =
            records.iter().map(|w| &w.checked.key.origin).collect();
        let mut recorded = RecordedIds::new();
        for origin in origins {
            let ids: Vec<&str> = records
                .iter()
                .filter(|w| w.checked.key.origin == *origin)
                .map(|w| w.checked.key.media_id.as_str())
                .collect();
            let (digests, reserved) = futures::try_join!(
                self.sink.existing_media_digests(origin, &ids),
                self.sink.reserved_media_ids(origin, &ids)
            )?;
            recorded.insert(origin.clone(), (digests, reserved));
        }
        Ok(recorded)
    }

    /// Marks the records the repository already has with the same bytes as present,
    /// and fails those it has with other bytes (as conflicts, naming both digests) and
    /// those whose ID is reserved; the others stay, in their order.
    fn without_present(&mut self, records: Vec<Wanted>, recorded: RecordedIds) -> Vec<Wanted> {
        let mut kept = Vec::with_capacity(records.len());
        for mut wanted in records {
            let (digests, reserved) = &recorded[&wanted.checked.key.origin];
            let media_id = wanted.checked.key.media_id.as_str();
            if let Some(why) = reserved.get(media_id) {
                let detail = format!("its media ID must never be used: {why}");
                self.fail(&wanted.mxc, ImportReason::Reserved, detail);
                continue;
            }
            match digests.get(media_id) {
                None => kept.push(wanted),
                Some(existing) if *existing == wanted.checked.sha256 => {
                    wanted.present = true;
                    kept.push(wanted);
                }
                Some(existing) => {
                    let detail = conflict_detail(existing, &wanted.checked.sha256);
                    self.fail(&wanted.mxc, ImportReason::Conflict, detail);
                }
            }
        }
        kept
    }

    /// Puts the bytes of `body` into the datastore: this thread reads (and inflates),
    /// the datastore hashes and writes on its own threads.
    fn put_streamed(
        &self,
        store: Arc<dyn Datastore>,
        body: &mut dyn Read,
        options: PutOptions,
    ) -> Result<media_core::datastore::Put, StoreError> {
        let (chunks, mut receiver) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
        let put = self.handle.spawn(async move {
            let stream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
            let mut reader = tokio_util::io::StreamReader::new(stream);
            store.put(&mut reader, &options).await
        });
        loop {
            let mut chunk = vec![0; CHUNK];
            match crate::read_full(body, &mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    chunk.truncate(n);
                    self.progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    if chunks.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = chunks.blocking_send(Err(e));
                    break;
                }
            }
        }
        drop(chunks);
        self.handle.block_on(put).map_err(|e| StoreError::Io {
            operation: "put",
            target: "an archive entry".into(),
            source: std::io::Error::other(e),
        })?
    }

    fn media_record(&self, wanted: Wanted) -> MediaRecord {
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        MediaRecord {
            key: wanted.checked.key,
            sha256: wanted.checked.sha256,
            size_bytes: wanted.checked.size,
            upload_name: non_empty(wanted.record.name),
            content_type: non_empty(wanted.record.content_type),
            uploader: wanted.checked.uploader,
            created_ts: wanted.record.created_ts,
            last_access_ts: None,
            quarantined: false,
            quarantined_by: None,
            purpose: Purpose::None,
            imported_from: Some(self.source_label.clone()),
        }
    }

    /// Waits for the puts in flight, makes the batch's blobs durable, then records its
    /// media.
    fn flush(&mut self) -> Result<(), GdprError> {
        while !self.in_flight.is_empty() {
            self.settle_oldest()?;
        }
        if self.batch.is_empty() && !self.repairs_unsynced {
            return Ok(());
        }
        self.handle.block_on(self.sink.sync())?;
        self.repairs_unsynced = false;
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let outcomes = self.handle.block_on(self.sink.record_media(&batch))?;
        for (media, outcome) in batch.iter().zip(outcomes) {
            match outcome {
                InsertOutcome::Inserted => {
                    self.report.imported += 1;
                    self.progress.items_done.fetch_add(1, Ordering::Relaxed);
                }
                InsertOutcome::AlreadyPresent => {
                    self.report.already_present += 1;
                    self.progress.items_done.fetch_add(1, Ordering::Relaxed);
                }
                InsertOutcome::Conflict { existing_sha256 } => self.fail(
                    &media.key.to_string(),
                    ImportReason::Conflict,
                    conflict_detail(&existing_sha256, &media.sha256),
                ),
                InsertOutcome::MediaMissing => {}
            }
        }
        Ok(())
    }
}

/// The failure detail of a record whose media the repository has with other bytes.
fn conflict_detail(existing: &Sha256Hex, archived: &Sha256Hex) -> String {
    format!(
        "the repository already has this media with other bytes ({existing}); the archive \
         has {archived}; the repository's record was kept, nothing was overwritten"
    )
}

/// An identifier from a manifest, cut for messages.
fn shown(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text.to_owned(),
    }
}

/// Why bytes of `sha256` and `length` do not fit a record, if they do not.
fn mismatch(record: &CheckedRecord, sha256: &Sha256Hex, length: u64) -> Option<String> {
    if length != record.size {
        Some(format!(
            "it holds {} bytes, the manifest says {}",
            if length > record.size {
                format!("more than {}", record.size)
            } else {
                length.to_string()
            },
            record.size
        ))
    } else if sha256 != &record.sha256 {
        Some(format!(
            "its bytes hash to {sha256}, the manifest says {}",
            record.sha256
        ))
    } else {
        None
    }
}

/// Hashes at most `limit` bytes of `body`.
fn hash_at_most(body: &mut dyn Read, limit: u64) -> std::io::Result<(Sha256Hex, u64)> {
    let mut limited = body.take(limit);
    let mut hasher = Sha256::new();
    let mut buf = vec![0; CHUNK];
    let mut length = 0u64;
    loop {
        let n = crate::read_full(&mut limited, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        length += n as u64;
    }
    Ok((Sha256Hex::from_digest(&hasher.finalize().into()), length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_is_a_dry_run_and_importing_applies() {
        assert_eq!(Mode::Verify.run_mode(), RunMode::DryRun);
        assert_eq!(Mode::Import.run_mode(), RunMode::Apply);
    }
}
