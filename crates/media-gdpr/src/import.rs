//! Import an archive folder into our repository, or verify it against the repository.
//!
//! The manifest is read first and every record checked (identifiers, origin, selection).
//! Then each part is streamed once, in any order: an entry is matched to its records only
//! through the manifest's `file_name`, its bytes go into the datastore with the
//! manifest's digest and size as the expectation (a mismatch stores nothing, and at most
//! one byte more than declared is ever read), and the records are written in batches.
//! Records already in the repository are skipped, so a killed import resumes where it
//! stopped. With [`Mode::Verify`] nothing is written: every entry is hashed and every
//! record looked up in the repository.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use media_core::archive::{ArchiveFolder, CheckedRecord, ManifestRecord, MediaEntry};
use media_core::datastore::{Datastore, Durability, PutOptions, PutStatus, StoreError};
use media_core::ids::Sha256Hex;
use media_core::records::{MediaRecord, Purpose};
use media_db::repo::{DatastoreId, InsertOutcome, NewMedia, Repository};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::{Entity, Failures, GdprError, Progress};

/// Chunk size of entry reads.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the archive reader and the datastore (bounds memory).
const CHUNKS_IN_FLIGHT: usize = 8;
/// Media recorded per transaction.
const BATCH_SIZE: usize = 64;
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
    /// Records the repository already had (skipped).
    pub already_present: u64,
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
    pub failures: Failures,
}

impl ImportReport {
    fn new(options: &ImportOptions, folder: &ArchiveFolder) -> Self {
        Self {
            mode: options.mode,
            directory: options.directory.clone(),
            entity: folder.manifest.entity_id.clone(),
            manifest_version: folder.manifest.version,
            records: folder.manifest.media.len() as u64,
            not_selected: 0,
            imported: 0,
            already_present: 0,
            verified: 0,
            entries_read: 0,
            bytes_read: 0,
            blobs_written: 0,
            bytes_written: 0,
            strays: folder.strays.clone(),
            failures: Failures::default(),
        }
    }

    /// Whether some records failed (or, when verifying, did not match).
    pub fn has_failures(&self) -> bool {
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
                "  media imported: {}, already present: {}, failed: {}",
                self.imported, self.already_present, self.failures.count
            )?,
            Mode::Verify => writeln!(
                f,
                "  media verified: {}, missing or different: {}",
                self.verified, self.failures.count
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

/// Imports (or verifies) the archive in `options.directory`. See the
/// [module documentation](self).
pub async fn import_archive(
    repo: &Repository,
    store: Arc<dyn Datastore>,
    options: ImportOptions,
    progress: Arc<Progress>,
) -> Result<ImportReport, GdprError> {
    let directory = options.directory.clone();
    let folder = tokio::task::spawn_blocking(move || ArchiveFolder::open(&directory))
        .await
        .map_err(|e| GdprError::Worker(e.to_string()))??;
    for stray in &folder.strays {
        tracing::warn!("{} is not an archive part; ignored", stray.display());
    }
    let (datastore_id, task) = match options.mode {
        Mode::Verify => (None, None),
        Mode::Import => {
            let params = serde_json::json!({
                "directory": options.directory,
                "entity": folder.manifest.entity_id,
                "only_entity": options.only_entity.as_ref().map(ToString::to_string),
                "datastore": store.uri(),
            });
            (
                Some(repo.register_datastore(&store.uri()).await?),
                Some(repo.start_task("gdpr_import", &params.to_string()).await?),
            )
        }
    };
    let importer = Importer {
        handle: Handle::current(),
        repo: repo.clone(),
        store,
        datastore_id,
        progress,
        source_label: format!("gdpr:{}", options.directory.display()),
        report: ImportReport::new(&options, &folder),
        options,
        wanted: HashMap::new(),
        consumed: HashSet::new(),
        batch: Vec::new(),
        in_flight: VecDeque::new(),
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
                    "failed": report.failures.count,
                    "blobs_written": report.blobs_written,
                })
                .to_string(),
                None,
            ),
            Err(e) => ("{}".to_owned(), Some(e.to_string())),
        };
        repo.finish_task(task, &counters, error.as_deref()).await?;
    }
    result
}

/// A manifest record waiting for its entry.
struct Wanted {
    mxc: String,
    checked: CheckedRecord,
    record: ManifestRecord,
}

/// The blocking side of an import: reads parts and drives the async repository and
/// datastore through `handle`.
struct Importer {
    handle: Handle,
    repo: Repository,
    store: Arc<dyn Datastore>,
    datastore_id: Option<DatastoreId>,
    progress: Arc<Progress>,
    source_label: String,
    options: ImportOptions,
    report: ImportReport,
    /// Records still waiting for their entry, by entry name.
    wanted: HashMap<String, Vec<Wanted>>,
    /// Entry names already read.
    consumed: HashSet<String>,
    /// Media whose bytes are stored, waiting to be recorded.
    batch: Vec<NewMedia>,
    /// Puts of small entries still running, oldest first.
    in_flight: VecDeque<PendingPut>,
}

/// A put running concurrently, and the records waiting for it.
struct PendingPut {
    name: String,
    records: Vec<Wanted>,
    put: tokio::task::JoinHandle<Result<media_core::datastore::Put, StoreError>>,
}

impl Importer {
    fn run(mut self, mut folder: ArchiveFolder) -> Result<ImportReport, GdprError> {
        let entity_server = folder.manifest.entity_server();
        let media = std::mem::take(&mut folder.manifest.media);
        self.progress
            .items_total
            .store(media.len() as u64, Ordering::Relaxed);
        for (mxc, record) in media {
            self.select(mxc, record, entity_server.as_ref());
        }
        for part in &folder.parts {
            match folder.read_media(part, |entry| self.on_entry(entry)) {
                Ok(()) => {}
                Err(GdprError::Archive(
                    damaged @ media_core::archive::ArchiveError::CorruptPart { .. },
                )) => {
                    tracing::warn!("{damaged}");
                    self.report.failures.push(
                        part.display().to_string(),
                        "damaged_part",
                        damaged.to_string(),
                    );
                }
                Err(other) => {
                    self.flush()?;
                    return Err(other);
                }
            }
            self.flush()?;
        }
        for (file_name, records) in std::mem::take(&mut self.wanted) {
            for wanted in records {
                self.fail(
                    &wanted.mxc,
                    "missing_from_archive",
                    format!("no part of the archive holds its entry {file_name:?}"),
                );
            }
        }
        Ok(self.report)
    }

    fn fail(&mut self, item: &str, reason: &'static str, detail: impl Into<String>) {
        self.progress.items_done.fetch_add(1, Ordering::Relaxed);
        self.report.failures.push(item, reason, detail);
    }

    /// Checks a manifest record and, when it is to be imported, files it under its entry.
    fn select(
        &mut self,
        mxc: String,
        record: ManifestRecord,
        entity_server: Option<&media_core::ids::ServerName>,
    ) {
        if record.file_name.is_empty() {
            return self.fail(
                &mxc,
                "no_data",
                "the archive holds no bytes for it (a metadata-only export)",
            );
        }
        let checked = match record.check(&mxc) {
            Ok(checked) => checked,
            Err(problem) => return self.fail(&mxc, "invalid_record", problem),
        };
        let selected = match &self.options.only_entity {
            None => true,
            Some(Entity::User(user)) => checked.uploader.as_ref() == Some(user),
            Some(Entity::Server(server)) => &checked.key.origin == server,
        };
        if !selected {
            self.report.not_selected += 1;
            self.progress.items_done.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !self.options.allow_foreign_origins {
            let origin = &checked.key.origin;
            if let Some(server) = entity_server.filter(|server| *server != origin) {
                return self.fail(
                    &mxc,
                    "foreign_origin",
                    format!(
                        "its origin {origin} is not the archive's server {server} \
                         (--allow-foreign-origins imports it anyway)"
                    ),
                );
            }
            if let Some(uploader) = checked
                .uploader
                .as_ref()
                .filter(|u| u.server_name() != origin)
            {
                return self.fail(
                    &mxc,
                    "foreign_origin",
                    format!(
                        "its uploader {uploader} is not on its origin {origin} \
                         (--allow-foreign-origins imports it anyway)"
                    ),
                );
            }
        }
        self.wanted
            .entry(record.file_name.clone())
            .or_default()
            .push(Wanted {
                mxc,
                checked,
                record,
            });
    }

    fn on_entry(&mut self, entry: MediaEntry<'_>) -> Result<(), GdprError> {
        match entry {
            MediaEntry::Refused { name, reason } => {
                let detail = format!("archive entry {name:?} was refused: {reason}");
                tracing::warn!("{detail}");
                match self.wanted.remove(&name) {
                    Some(records) => {
                        for wanted in records {
                            self.fail(&wanted.mxc, "refused_entry", detail.clone());
                        }
                    }
                    None => self.report.failures.push(name, "refused_entry", detail),
                }
                Ok(())
            }
            MediaEntry::File { name, body } => {
                let Some(records) = self.wanted.remove(name) else {
                    if self.consumed.contains(name) {
                        tracing::warn!("archive entry {name:?} appears twice; read once");
                    } else {
                        tracing::debug!("archive entry {name:?} is in no record; skipped");
                    }
                    return Ok(());
                };
                self.consumed.insert(name.to_owned());
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
        for wanted in records {
            let (sha256, length) = match &hashed {
                Ok(hashed) => hashed,
                Err(e) => {
                    self.fail(&wanted.mxc, "damaged_part", format!("entry {name:?}: {e}"));
                    continue;
                }
            };
            if let Some(problem) = mismatch(&wanted.checked, sha256, *length) {
                self.fail(
                    &wanted.mxc,
                    "archive_mismatch",
                    format!("entry {name:?}: {problem}"),
                );
                continue;
            }
            match self
                .handle
                .block_on(self.repo.get_media(&wanted.checked.key))?
            {
                None => self.fail(
                    &wanted.mxc,
                    "not_in_repository",
                    "the repository has no such media",
                ),
                Some(stored) if stored.sha256 != wanted.checked.sha256 => self.fail(
                    &wanted.mxc,
                    "different_in_repository",
                    format!(
                        "the repository has other bytes for it ({}), the archive has {}",
                        stored.sha256, wanted.checked.sha256
                    ),
                ),
                Some(_) => {
                    self.report.verified += 1;
                    self.progress.items_done.fetch_add(1, Ordering::Relaxed);
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
        let records = self.without_present(records)?;
        let Some(first) = records.first() else {
            return Ok(());
        };
        let (sha256, size) = (first.checked.sha256.clone(), first.checked.size);
        self.report.entries_read += 1;
        if self
            .handle
            .block_on(self.repo.is_hash_quarantined(&sha256))?
        {
            for wanted in records {
                self.fail(
                    &wanted.mxc,
                    "quarantined",
                    format!("its bytes ({sha256}) are quarantined in this repository"),
                );
            }
            return Ok(());
        }
        let options =
            PutOptions::expecting(Some(sha256), Some(size)).with_durability(Durability::AfterSync);
        // Never read more than one byte past the declared size: an oversized entry is
        // a mismatch, not a disk filler.
        let mut limited = body.take(size + 1);
        if size >= CHUNK as u64 {
            let put = self.put_streamed(&mut limited, options);
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
            let store = self.store.clone();
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
                            "mismatch",
                            format!("entry {name:?}: {problem}"),
                        ),
                        None => self.batch.push(NewMedia {
                            record: self.media_record(wanted),
                            thumbnails: Vec::new(),
                            datastore_id: self.datastore_id.expect("imports register a datastore"),
                        }),
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
                        "mismatch",
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
                        "damaged_part",
                        format!("entry {name:?} could not be read: {source}"),
                    );
                }
            }
            Err(fatal) => return Err(fatal.into()),
        }
        Ok(())
    }

    /// Drops (and counts) the records the repository already has.
    fn without_present(&mut self, records: Vec<Wanted>) -> Result<Vec<Wanted>, GdprError> {
        let mut present = HashSet::new();
        let origins: BTreeSet<_> = records.iter().map(|w| &w.checked.key.origin).collect();
        for origin in origins {
            let ids: Vec<&str> = records
                .iter()
                .filter(|w| &w.checked.key.origin == origin)
                .map(|w| w.checked.key.media_id.as_str())
                .collect();
            let found = self
                .handle
                .block_on(self.repo.existing_media_ids(origin, &ids))?;
            present.extend(found.into_iter().map(|id| (origin.clone(), id)));
        }
        let (kept, skipped): (Vec<_>, Vec<_>) = records.into_iter().partition(|w| {
            !present.contains(&(
                w.checked.key.origin.clone(),
                w.checked.key.media_id.to_string(),
            ))
        });
        self.report.already_present += skipped.len() as u64;
        self.progress
            .items_done
            .fetch_add(skipped.len() as u64, Ordering::Relaxed);
        Ok(kept)
    }

    /// Puts the bytes of `body` into the datastore: this thread reads (and inflates),
    /// the datastore hashes and writes on its own threads.
    fn put_streamed(
        &self,
        body: &mut dyn Read,
        options: PutOptions,
    ) -> Result<media_core::datastore::Put, StoreError> {
        let (chunks, mut receiver) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
        let store = self.store.clone();
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
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.handle.block_on(self.store.sync())?;
        let outcomes = self
            .handle
            .block_on(self.repo.insert_media_batch(&batch, &*self.store))?;
        for (media, outcome) in batch.iter().zip(outcomes) {
            match outcome.media {
                InsertOutcome::Inserted => {
                    self.report.imported += 1;
                    self.progress.items_done.fetch_add(1, Ordering::Relaxed);
                }
                InsertOutcome::AlreadyPresent => {
                    self.report.already_present += 1;
                    self.progress.items_done.fetch_add(1, Ordering::Relaxed);
                }
                InsertOutcome::Conflict { existing_sha256 } => self.fail(
                    &media.record.key.to_string(),
                    "conflict",
                    format!(
                        "the repository already has this media with other bytes \
                         ({existing_sha256}); kept as is"
                    ),
                ),
                InsertOutcome::MediaMissing => {}
            }
        }
        Ok(())
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
