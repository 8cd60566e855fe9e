//! Export one user's or one server's media from our repository into an archive.
//!
//! Two stages run side by side: an async producer pages through the records, reads
//! each distinct blob from the datastore in chunks and hashes them; a blocking writer
//! thread packs the chunks into the archive parts. The producer holds back each blob's
//! last chunk until the digest is known, so a blob that no longer matches its hash
//! (bit rot in the store) turns into a failed entry that no record references.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use media_core::archive::writer::extension_for;
use media_core::archive::{ArchiveWriter, Compression, ManifestRecord, NewEntry, WrittenEntry};
use media_core::datastore::{BlobKey, Datastore};
use media_core::ids::Sha256Hex;
use media_core::records::MediaRecord;
use media_db::repo::Repository;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;

use crate::{Entity, Failures, GdprError, Progress};

/// Chunk size of blob reads.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the producer and the writer (bounds memory).
const CHUNKS_IN_FLIGHT: usize = 8;

/// What to export, and how.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Whose media.
    pub entity: Entity,
    /// The archive folder (created when missing).
    pub destination: PathBuf,
    /// A part is closed once this many uncompressed bytes were written to it.
    pub part_size: u64,
    /// How entries are compressed.
    pub compression: Compression,
    /// Write the media bytes (`false`: a metadata-only archive).
    pub include_data: bool,
    /// Replace an export already in the destination.
    pub replace: bool,
}

/// What an export did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportReport {
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
    pub failures: Failures,
}

impl ExportReport {
    /// Whether some media could not be exported.
    pub fn has_failures(&self) -> bool {
        self.failures.any()
    }
}

impl std::fmt::Display for ExportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use media_core::archive::writer::human_size;
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
                self.failures.count
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
    /// A media the producer could not export.
    Failed { mxc: String, detail: String },
}

/// Exports `options.entity`'s media from `repo` and `store`. See the
/// [module documentation](self).
pub async fn export_from_repository(
    repo: &Repository,
    store: Arc<dyn Datastore>,
    options: ExportOptions,
    progress: Arc<Progress>,
) -> Result<ExportReport, GdprError> {
    let total = match &options.entity {
        Entity::User(user) => repo.count_media_by_uploader(user).await?,
        Entity::Server(server) => repo.count_media_by_origin(server).await?,
    };
    progress.items_total.store(total, Ordering::Relaxed);
    let writer = ArchiveWriter::create(
        &options.destination,
        options.part_size,
        options.compression,
        options.replace,
    )?;
    let (steps, step_receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let entity_id = options.entity.to_string();
    let writer_progress = progress.clone();
    let writer_task = tokio::task::spawn_blocking(move || {
        write_archive(writer, step_receiver, &entity_id, &writer_progress)
    });
    let produced = produce(repo, &*store, &options, steps, &progress).await;
    let written = writer_task
        .await
        .map_err(|e| GdprError::Worker(e.to_string()))?;
    // A writer error explains a producer that stopped because the writer went away.
    let (summary, failures) = written?;
    let produced = produced?;
    Ok(ExportReport {
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

/// Counters only the producer knows.
#[derive(Default)]
struct Produced {
    shared_records: u64,
    bytes_saved: u64,
    quarantined: u64,
}

async fn produce(
    repo: &Repository,
    store: &dyn Datastore,
    options: &ExportOptions,
    steps: mpsc::Sender<Step>,
    progress: &Progress,
) -> Result<Produced, GdprError> {
    let mut records = match &options.entity {
        Entity::User(user) => repo.media_by_uploader(user),
        Entity::Server(server) => repo.media_by_origin(server),
    };
    let mut produced = Produced::default();
    // The entry already holding each blob's bytes.
    let mut entries: HashMap<Sha256Hex, String> = HashMap::new();
    let writer_gone = || GdprError::Worker("the archive writer stopped".into());
    while let Some(record) = records.try_next().await? {
        if record.quarantined {
            produced.quarantined += 1;
            progress.items_done.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mxc = record.key.to_string();
        let mut manifest = manifest_record(&record);
        if options.include_data {
            if let Some(name) = entries.get(&record.sha256) {
                manifest.file_name = name.clone();
                produced.shared_records += 1;
                produced.bytes_saved += record.size_bytes;
            } else {
                let name = format!(
                    "{}__{}{}",
                    record.key.origin,
                    record.key.media_id,
                    extension_for(record.content_type.as_deref().unwrap_or_default())
                );
                let blob = match store.get(&BlobKey::for_hash(&record.sha256), None).await {
                    Ok(blob) => blob,
                    Err(e) => {
                        let detail = format!("its bytes cannot be read from the datastore: {e}");
                        steps
                            .send(Step::Failed { mxc, detail })
                            .await
                            .map_err(|_| writer_gone())?;
                        continue;
                    }
                };
                let (body, body_receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
                let step = Step::Entry {
                    name: name.clone(),
                    size: record.size_bytes,
                    mtime_ms: record.created_ts,
                    content_type: record.content_type.clone().unwrap_or_default(),
                    body: body_receiver,
                };
                steps.send(step).await.map_err(|_| writer_gone())?;
                send_checked_chunks(blob, &record, body, progress).await;
                entries.insert(record.sha256.clone(), name.clone());
                manifest.file_name = name;
            }
        }
        steps
            .send(Step::Record {
                mxc,
                record: manifest,
            })
            .await
            .map_err(|_| writer_gone())?;
    }
    Ok(produced)
}

/// Streams a blob's chunks to the writer, hashing them; the last chunk goes out only
/// when the digest and length match the record, otherwise an error replaces it.
async fn send_checked_chunks(
    blob: media_core::datastore::BlobReader,
    record: &MediaRecord,
    body: mpsc::Sender<std::io::Result<Bytes>>,
    progress: &Progress,
) {
    let mut chunks = ReaderStream::with_capacity(blob, CHUNK);
    let mut hasher = Sha256::new();
    let mut length = 0u64;
    let mut held: Option<Bytes> = None;
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = body.send(Err(e)).await;
                return;
            }
        };
        hasher.update(&chunk);
        length += chunk.len() as u64;
        progress
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if let Some(previous) = held.replace(chunk)
            && body.send(Ok(previous)).await.is_err()
        {
            return;
        }
    }
    let actual = Sha256Hex::from_digest(&hasher.finalize().into());
    let last = if actual == record.sha256 && length == record.size_bytes {
        Ok(held.unwrap_or_default())
    } else {
        Err(std::io::Error::other(format!(
            "the stored bytes are damaged: they hash to {actual} ({length} bytes) instead \
             of {} ({} bytes)",
            record.sha256, record.size_bytes
        )))
    };
    let _ = body.send(last).await;
}

fn manifest_record(record: &MediaRecord) -> ManifestRecord {
    ManifestRecord {
        name: record.upload_name.clone().unwrap_or_default(),
        file_name: String::new(),
        size_bytes: record.size_bytes,
        sha256: record.sha256.to_string(),
        content_type: record.content_type.clone().unwrap_or_default(),
        origin: record.key.origin.to_string(),
        media_id: record.key.media_id.to_string(),
        created_ts: record.created_ts,
        s3_url: String::new(),
        uploader: record
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
) -> Result<(media_core::archive::ArchiveSummary, Failures), GdprError> {
    let mut failures = Failures::default();
    let mut failed_entries: HashMap<String, String> = HashMap::new();
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
                if let WrittenEntry::SourceFailed(problem) =
                    writer.add_entry(entry, &mut ChannelReader::new(body))?
                {
                    failed_entries.insert(name, problem.to_string());
                }
            }
            Step::Record { mxc, record } => {
                progress.items_done.fetch_add(1, Ordering::Relaxed);
                match failed_entries.get(&record.file_name) {
                    Some(problem) => failures.push(mxc, "unreadable", problem.clone()),
                    None => writer.add_record(&mxc, &record)?,
                }
            }
            Step::Failed { mxc, detail } => {
                progress.items_done.fetch_add(1, Ordering::Relaxed);
                failures.push(mxc, "unreadable", detail);
            }
        }
    }
    let summary = writer.finish(entity_id, media_core::now_ms())?;
    Ok((summary, failures))
}

/// A blocking [`Read`] over chunks arriving on a channel.
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

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
