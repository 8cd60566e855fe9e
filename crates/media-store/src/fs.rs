//! A content-addressed datastore in a local folder.
//!
//! Layout: `<root>/ab/cd/abcdef…` for each blob, `<root>/.tmp/<writer>/<n>/` for writes
//! in progress (spread over [`TEMP_SHARDS`] folders, so that concurrent puts do not queue
//! for one folder's lock; older versions wrote into `.tmp/<n>/` or straight into
//! `.tmp/`). `<root>/.datastore-id` holds the store's identity marker (see
//! [`Datastore::claim_marker`]).
//!
//! Each open datastore (each writer process) owns one folder in `.tmp/`, and holds an
//! advisory lock (`flock`) on it for as long as it is open. Opening a datastore first
//! removes every temporary folder whose lock nobody holds: what a killed writer left
//! behind (its lock went with its process). So after any crash, the next writer leaves
//! exactly the blobs, and never touches the temporary files of a writer still running.
//! A put streams into a temporary file beside the final location (same filesystem),
//! hashing on the way, syncs it (unless the store gives at most
//! [`Durability::Unsynced`]), then links it into place without ever replacing an existing
//! blob, and syncs the folder. A put of a small blob (under
//! one read chunk) with [`Durability::AfterSync`] stops after writing its temporary
//! file: the next
//! [`Datastore::sync`] makes every such file durable with one `syncfs`, links them into
//! place, and makes the new names durable with a second one. (The kernel then writes a
//! whole batch in large sorted runs and commits its journal twice, where an fsync per
//! file and per folder waits for the disk each time; on small media that doubled the
//! import rate.) Either way a blob's name only appears once its bytes are on
//! disk, so a crash never leaves a partial file under a blob key, only a stale temporary
//! file that [`FileDatastore::cleanup`] removes and [`Datastore::list`] never reports.

use std::collections::HashMap;
use std::io::{ErrorKind, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use media_core::datastore::{
    BlobKey, BlobPayload, ByteRange, Datastore, DeleteStatus, Durability, LocalPut, LocalPutResult,
    OpenLocalFile, Put, PutOptions, PutStatus, StoreError, StoredBlob,
};
use media_core::hashing::digest_of_read;
use media_core::ids::Sha256Hex;
use media_core::local_files::{RootFolder, open_regular_beneath};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Name of the folder, inside the root, that holds writes in progress.
pub const TEMP_DIR: &str = ".tmp";

/// Name of the file, inside the root, that holds the store's identity marker.
pub const MARKER_FILE: &str = ".datastore-id";
/// The longest identity marker accepted.
const MAX_MARKER_LEN: usize = 128;

/// Bytes read from the source per write; two such buffers are in flight per put.
const CHUNK: usize = 1 << 20;
/// Folders inside [`TEMP_DIR`] that puts spread their temporary files over.
pub const TEMP_SHARDS: usize = 16;
/// Threads linking a sync's staged blobs into place at once.
const LINK_THREADS: usize = 8;

/// A datastore in a local folder. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct FileDatastore {
    root: PathBuf,
    /// The most durability a put gets (see [`FileDatastore::with_max_durability`]).
    max_durability: Durability,
    /// This writer's temporary folder, locked while any clone is alive; dropping the
    /// last clone removes it. `None` when opened read-only.
    temp: Option<Arc<WriterFolder>>,
    /// The datastore folder, opened once, through which puts link blobs into place
    /// (never following a link below it). `None` when opened read-only.
    blobs_folder: Option<Arc<RootFolder>>,
    /// Blobs put with [`Durability::AfterSync`], written to temporary files
    /// that the next [`Datastore::sync`] makes durable and links into place. Shared by
    /// clones; dropping the last clone removes the files.
    /// A sync takes the files out while it links them (leaving `None`), so that a put of
    /// the same bytes meanwhile still finds them.
    staged: Arc<Mutex<HashMap<BlobKey, Option<tempfile::TempPath>>>>,
    /// Picks the temporary folder of the next put; shared by clones.
    next_shard: Arc<AtomicUsize>,
    /// Set when a [`Datastore::sync`] linked blobs into place but failed to make their
    /// names durable: the next one retries. Shared by clones.
    names_unsynced: Arc<AtomicBool>,
    /// Held for a whole [`Datastore::sync`], so that a sync never returns while another
    /// one is still syncing folders it took over.
    sync_in_progress: Arc<tokio::sync::Mutex<()>>,
}

/// What [`FileDatastore::cleanup`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Stale temporary files removed.
    pub removed_files: u64,
    /// Their total size.
    pub removed_bytes: u64,
}

impl FileDatastore {
    /// Opens an existing datastore folder for reading only: nothing is created, probed
    /// or written (exports and verification must work on a read-only mount). Writing
    /// through it fails like writing to a read-only folder does.
    pub fn open_read_only(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            max_durability: Durability::OnReturn,
            temp: None,
            blobs_folder: None,
            staged: Arc::default(),
            next_shard: Arc::default(),
            names_unsynced: Arc::default(),
            sync_in_progress: Arc::default(),
        }
    }

    /// The SHA-256 digest and length of `key`'s object, read whole on the calling thread:
    /// it blocks, so call it from a blocking thread (a check hashing many small objects
    /// runs a few such threads instead of handing every object's reads to one). A missing
    /// object is [`StoreError::NotFound`]; no link is followed.
    pub fn digest_blocking(&self, key: &BlobKey) -> Result<(Sha256Hex, u64), StoreError> {
        let (file, path, len) = open_blob(&self.root, key, None)?;
        digest_of_read(std::io::Read::take(file, len))
            .map_err(|source| io_error("read", &path, source))
    }

    /// Opens (creating it if needed) a datastore rooted at `root`. Fails with a clear
    /// error when the folder cannot be created or written to.
    ///
    /// Removes what crashed writers left in the temporary folder (see the [module
    /// documentation](self)) and takes a temporary folder of its own.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root: PathBuf = root.into();
        let temp = root.join(TEMP_DIR);
        tokio::fs::create_dir_all(&temp)
            .await
            .map_err(|source| io_error("create datastore folder", &temp, source))?;
        let (folder, blobs_folder) = {
            let (datastore, temp) = (root.clone(), temp.clone());
            blocking(move || {
                let blobs_folder = RootFolder::open(&datastore, "the datastore")
                    .map_err(|source| io_error("open datastore folder", &datastore, source))?;
                if std::fs::symlink_metadata(&temp).is_ok_and(|meta| meta.is_symlink()) {
                    return Err(StoreError::Config(format!(
                        "{} is a symbolic link: a datastore writes only inside its own \
                         folder; replace the link with a folder",
                        temp.display()
                    )));
                }
                remove_abandoned(&temp, Duration::ZERO, Sweep::Remove)?;
                Ok((WriterFolder::create(&temp)?, blobs_folder))
            })
            .await
            .map_err(|e| match e {
                StoreError::Io { source, target, .. }
                    if source.kind() == ErrorKind::PermissionDenied =>
                {
                    StoreError::Config(format!(
                        "datastore folder {} is not writable ({target}: {source}): make it \
                     writable by this user or choose another --datastore",
                        root.display()
                    ))
                }
                e => e,
            })?
        };
        // Prove we may write here now rather than on the first media of a long run.
        let probe = tempfile::Builder::new()
            .prefix("probe-")
            .tempfile_in(&folder.path)
            .map_err(|source| {
                StoreError::Config(format!(
                    "datastore folder {} is not writable ({source}): make it writable by this \
                     user or choose another --datastore",
                    root.display()
                ))
            })?;
        drop(probe);
        Ok(Self {
            root,
            max_durability: Durability::OnReturn,
            temp: Some(Arc::new(folder)),
            blobs_folder: Some(Arc::new(blobs_folder)),
            staged: Arc::default(),
            next_shard: Arc::default(),
            names_unsynced: Arc::default(),
            sync_in_progress: Arc::default(),
        })
    }

    /// Gives every put at most `limit` durability, whatever it asks for (see
    /// [`Durability::at_most`]). [`Durability::OnReturn`] (the default) gives each put
    /// what it asks for; [`Durability::Unsynced`] syncs nothing, which is faster and still
    /// atomic, but a power loss may lose recently written blobs.
    pub fn with_max_durability(mut self, limit: Durability) -> Self {
        self.max_durability = limit;
        self
    }

    /// The folder this datastore lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether a blob with this key is stored (a regular file reached without following a
    /// link), or staged for the next sync.
    fn holds(&self, key: &BlobKey) -> bool {
        let stored = self.blobs_folder.as_ref().is_some_and(|folder| {
            matches!(
                folder.regular_file_len(Path::new(key.as_str())),
                Ok(Some(_))
            )
        });
        stored || self.staged.lock().expect("poisoned").contains_key(key)
    }

    /// What a put of `size` bytes that asks for `durability` gets: at most this store's
    /// limit, and only small blobs wait for [`Datastore::sync`]: a blob of a chunk or more
    /// is synced by its own put, which costs it no more than its share of a batch's
    /// `syncfs`, while a caller that waits for each sync would otherwise wait for hundreds
    /// of megabytes at once (the archive importer's rate halved).
    fn durability_of(&self, durability: Durability, size: u64) -> Durability {
        match durability.at_most(self.max_durability) {
            Durability::AfterSync if size >= CHUNK as u64 => Durability::OnReturn,
            given => given,
        }
    }

    fn path_of(&self, key: &BlobKey) -> PathBuf {
        // A BlobKey only ever holds `hex2/hex2/hex64`, so this cannot leave the root.
        self.root.join(key.as_str())
    }

    /// Removes what writers that are gone left in the temporary folder: every temporary
    /// folder whose lock no writer holds, and loose temporary files (of older versions)
    /// older than `older_than`. [`FileDatastore::open`] does this already; the folders
    /// of running writers (this one included) are never touched.
    pub async fn cleanup(&self, older_than: Duration) -> Result<CleanupReport, StoreError> {
        let temp = self.root.join(TEMP_DIR);
        blocking(move || remove_abandoned(&temp, older_than, Sweep::Remove)).await
    }

    /// What [`FileDatastore::cleanup`] would remove now, removing nothing (a store
    /// check's report). A store without a temporary folder has none.
    pub async fn stale_temporaries(
        &self,
        older_than: Duration,
    ) -> Result<CleanupReport, StoreError> {
        let temp = self.root.join(TEMP_DIR);
        if !temp.is_dir() {
            return Ok(CleanupReport::default());
        }
        blocking(move || remove_abandoned(&temp, older_than, Sweep::Count)).await
    }
}

/// A writer's temporary folder in `.tmp/`, with the locked handle that marks it as in
/// use. Dropping it removes the folder (and releases the lock).
#[derive(Debug)]
struct WriterFolder {
    path: PathBuf,
    _lock: std::fs::File,
}

impl WriterFolder {
    /// Blocking: creates and locks a new folder in `temp`, with its shards.
    fn create(temp: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::MetadataExt;
        loop {
            let name = format!("w-{}-{:016x}", std::process::id(), rand_u64());
            let path = temp.join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(io_error("create temporary folder", &path, source)),
            }
            let lock = match std::fs::File::open(&path) {
                Ok(lock) => lock,
                // A writer sweeping abandoned folders removed it before we could lock
                // it (two tools starting at once): take another one.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(source) => return Err(io_error("open temporary folder", &path, source)),
            };
            if !try_lock(&lock).map_err(|source| io_error("lock", &path, source))? {
                continue; // a writer sweeping abandoned folders took it first
            }
            // A sweeper may have removed it between its creation and our lock.
            let ours = lock.metadata().map(|m| (m.dev(), m.ino())).ok();
            let there = std::fs::symlink_metadata(&path)
                .map(|m| (m.dev(), m.ino()))
                .ok();
            if ours.is_none() || ours != there {
                continue;
            }
            for shard in 0..TEMP_SHARDS {
                let folder = path.join(shard.to_string());
                std::fs::create_dir(&folder)
                    .map_err(|source| io_error("create temporary folder", &folder, source))?;
            }
            return Ok(Self { path, _lock: lock });
        }
    }
}

impl Drop for WriterFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Blocking: takes the exclusive advisory lock of an open file or folder without
/// waiting; `false` when another open handle holds it.
fn try_lock(handle: &std::fs::File) -> std::io::Result<bool> {
    match rustix::fs::flock(handle, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A random number for temporary folder names (from the standard library's hasher
/// keys, which the OS seeds).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

/// Whether a sweep of the temporary folder removes what it finds or only counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sweep {
    Count,
    Remove,
}

/// Blocking: removes (or with [`Sweep::Count`] only counts) every folder in `temp` whose
/// lock nobody holds (locking it first, so that no writer can take it meanwhile), and
/// loose files older than `older_than`.
fn remove_abandoned(
    temp: &Path,
    older_than: Duration,
    sweep: Sweep,
) -> Result<CleanupReport, StoreError> {
    let cutoff = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = CleanupReport::default();
    let entries = std::fs::read_dir(temp).map_err(|source| io_error("list", temp, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| io_error("list", temp, source))?;
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue; // removed meanwhile
        };
        if meta.is_dir() {
            let Ok(handle) = std::fs::File::open(&path) else {
                continue;
            };
            if !try_lock(&handle).map_err(|source| io_error("lock", &path, source))? {
                continue; // a running writer's
            }
            count_files(&path, &mut report);
            if sweep == Sweep::Count {
                continue;
            }
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => return Err(io_error("remove", &path, source)),
            }
        } else if meta.modified().map(|m| m <= cutoff).unwrap_or(true) {
            if sweep == Sweep::Count {
                report.removed_files += 1;
                report.removed_bytes += meta.len();
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    report.removed_files += 1;
                    report.removed_bytes += meta.len();
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => return Err(io_error("remove", &path, source)),
            }
        }
    }
    Ok(report)
}

/// Blocking: adds the files below `folder` to `report` (before it is removed).
fn count_files(folder: &Path, report: &mut CleanupReport) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            count_files(&entry.path(), report);
        } else {
            report.removed_files += 1;
            report.removed_bytes += meta.len();
        }
    }
}

/// Reads the identity marker at `path`: `None` when there is none.
fn read_marker_file(path: &Path) -> Result<Option<String>, StoreError> {
    match std::fs::read(path) {
        Ok(text) => parse_marker(&text, &path.display().to_string()).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_error("read the identity marker", path, source)),
    }
}

/// The identity marker in `text`, read from `location` (named in the error when the
/// marker is damaged): one line of letters, digits, `-` or `_`.
pub(crate) fn parse_marker(text: &[u8], location: &str) -> Result<String, StoreError> {
    let marker = String::from_utf8_lossy(text).trim().to_owned();
    let valid = !marker.is_empty()
        && marker.len() <= MAX_MARKER_LEN
        && marker
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(StoreError::Config(format!(
            "datastore identity marker {location} is damaged (expected one line of letters, \
             digits, '-' or '_'): restore it from a backup, or remove it if this store holds \
             no repository's blobs"
        )));
    }
    Ok(marker)
}

/// Writes `marker` into the file `path` atomically (a temporary file beside it, synced,
/// then linked or renamed into place), never replacing an existing marker unless
/// `replace`. Returns the marker the file holds afterwards.
fn write_marker_file(path: &Path, marker: &str, replace: bool) -> Result<String, StoreError> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".datastore-id.")
        .tempfile_in(folder)
        .map_err(|source| io_error("write the identity marker", folder, source))?;
    temp.write_all(format!("{marker}\n").as_bytes())
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|source| io_error("write the identity marker", temp.path(), source))?;
    let placed = if replace {
        temp.persist(path).map(drop)
    } else {
        temp.persist_noclobber(path).map(drop)
    };
    match placed {
        Ok(()) => {}
        Err(e) if !replace && e.error.kind() == ErrorKind::AlreadyExists => {
            return read_marker_file(path)?.ok_or_else(|| {
                io_error("read the identity marker", path, ErrorKind::NotFound.into())
            });
        }
        Err(e) => return Err(io_error("write the identity marker", path, e.error)),
    }
    std::fs::File::open(folder)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| io_error("sync", folder, source))?;
    Ok(marker.to_owned())
}

fn io_error(operation: &'static str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        operation,
        target: path.display().to_string(),
        source,
    }
}

/// A temporary file being filled by a put, on a blocking thread.
struct Staging {
    file: std::fs::File,
    hasher: Sha256,
    len: u64,
}

impl Staging {
    fn absorb(mut self, chunk: Vec<u8>) -> std::io::Result<(Self, Vec<u8>)> {
        self.hasher.update(&chunk);
        self.file.write_all(&chunk)?;
        self.len += chunk.len() as u64;
        Ok((self, chunk))
    }
}

/// A chunk being hashed and written on a blocking thread; hands back the staging file
/// and the emptied buffer.
type PendingWrite = tokio::task::JoinHandle<std::io::Result<(Staging, Vec<u8>)>>;

/// Reads until `buf` is full or the source ends; returns the bytes read.
async fn fill(
    source: &mut (dyn AsyncRead + Send + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    buf.clear();
    if buf.capacity() < CHUNK {
        buf.reserve(CHUNK - buf.len());
    }
    let mut limited = source.take(CHUNK as u64);
    limited.read_to_end(buf).await
}

fn join_error(e: tokio::task::JoinError) -> std::io::Error {
    std::io::Error::other(e)
}

impl FileDatastore {
    /// Streams `first` and then the rest of `data` into a new temporary file, hashing on
    /// the way. The file is removed on any error (and when the result is dropped).
    async fn stage(
        &self,
        first: Vec<u8>,
        data: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<(Staging, tempfile::TempPath), StoreError> {
        let (file, path) = self.new_temp_file()?.into_parts();
        let staging = Staging {
            file,
            hasher: Sha256::new(),
            len: 0,
        };
        // Double buffering: read the next chunk from the source while the previous one
        // is hashed and written on a blocking thread.
        let mut read_total = first.len() as u64;
        let mut writing: Option<PendingWrite> =
            Some(tokio::task::spawn_blocking(move || staging.absorb(first)));
        let mut idle = None;
        let mut buf = Vec::with_capacity(CHUNK);
        let mut spare = Vec::new();
        loop {
            let n = fill(data, &mut buf)
                .await
                .map_err(|source| StoreError::Source {
                    bytes_read: read_total,
                    source,
                })?;
            read_total += n as u64;
            if let Some(handle) = writing.take() {
                let (back, returned) = handle
                    .await
                    .map_err(join_error)
                    .and_then(|r| r)
                    .map_err(|source| io_error("write", &path, source))?;
                idle = Some(back);
                spare = returned;
            }
            if n == 0 {
                break;
            }
            let chunk = std::mem::replace(&mut buf, std::mem::take(&mut spare));
            let staging = idle.take().expect("no write is in flight here");
            writing = Some(tokio::task::spawn_blocking(move || staging.absorb(chunk)));
        }
        Ok((idle.expect("every write has been awaited"), path))
    }

    /// The error for a write to a datastore opened read-only.
    fn read_only(&self) -> StoreError {
        StoreError::Config(format!(
            "datastore {} was opened read-only: nothing can be written to it",
            self.root.display()
        ))
    }

    /// The datastore folder that blobs are linked into place through.
    fn blobs_folder(&self) -> Result<&RootFolder, StoreError> {
        self.blobs_folder.as_deref().ok_or_else(|| self.read_only())
    }

    fn new_temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        let Some(temp) = &self.temp else {
            return Err(self.read_only());
        };
        let shard = self.next_shard.fetch_add(1, Ordering::Relaxed) % TEMP_SHARDS;
        let temp_dir = temp.path.join(shard.to_string());
        tempfile::Builder::new()
            .prefix("put-")
            .tempfile_in(&temp_dir)
            .map_err(|source| io_error("create temporary file in", &temp_dir, source))
    }

    /// Blocking: stores a blob that fitted in one chunk.
    fn put_small(&self, bytes: &[u8], options: &PutOptions) -> Result<Put, StoreError> {
        let sha256 = Sha256Hex::from_digest(&Sha256::digest(bytes).into());
        let blob = self.checked_blob(sha256, bytes.len() as u64, options)?;
        if self.holds(&blob.key) {
            return Ok(Put {
                blob,
                status: PutStatus::AlreadyPresent,
            });
        }
        let durability = self.durability_of(options.durability, blob.size);
        let mut temp = self.new_temp_file()?;
        temp.write_all(bytes)
            .and_then(|()| {
                if durability == Durability::OnReturn {
                    temp.as_file().sync_all()
                } else {
                    Ok(())
                }
            })
            .map_err(|source| io_error("write", temp.path(), source))?;
        self.commit(temp.into_temp_path(), blob, durability)
    }

    /// Blocking: reads (at most `limit` bytes), hashes and writes a local file in one loop
    /// on one thread, with no
    /// copy beyond the read and the write. A file that fits one chunk is stored as
    /// [`FileDatastore::put_small`] does (no temporary file when the blob exists).
    fn put_file_blocking(
        &self,
        file: std::fs::File,
        limit: u64,
        options: &PutOptions,
    ) -> Result<Put, StoreError> {
        use std::io::Read;
        let source_error = |bytes_read, source| StoreError::Source { bytes_read, source };
        // Sized for the file (one byte more, to see its end), so that a small file does
        // not pay for zeroing a whole chunk.
        let expected_len = file.metadata().map_or(CHUNK as u64, |m| m.len()).min(limit);
        let mut source = file.take(limit);
        let mut buf = vec![0u8; expected_len.saturating_add(1).min(CHUNK as u64) as usize];
        let mut n = read_chunk(&mut source, &mut buf).map_err(|e| source_error(0, e))?;
        if n < buf.len() {
            return self.put_small(&buf[..n], options);
        }
        if buf.len() < CHUNK {
            // It grew since: stream it in whole chunks.
            buf.resize(CHUNK, 0);
            n += read_chunk(&mut source, &mut buf[n..]).map_err(|e| source_error(n as u64, e))?;
        }
        let (file, temp) = self.new_temp_file()?.into_parts();
        let mut staging = Staging {
            file,
            hasher: Sha256::new(),
            len: 0,
        };
        while n > 0 {
            staging.hasher.update(&buf[..n]);
            staging
                .file
                .write_all(&buf[..n])
                .map_err(|e| io_error("write", &temp, e))?;
            staging.len += n as u64;
            n = read_chunk(&mut source, &mut buf).map_err(|e| source_error(staging.len, e))?;
        }
        self.finish_put(staging, temp, options)
    }

    /// Blocking: checks and commits a blob staged by [`FileDatastore::stage`].
    fn finish_put(
        &self,
        staging: Staging,
        temp: tempfile::TempPath,
        options: &PutOptions,
    ) -> Result<Put, StoreError> {
        let Staging { file, hasher, len } = staging;
        let sha256 = Sha256Hex::from_digest(&hasher.finalize().into());
        let blob = self.checked_blob(sha256, len, options)?;
        if self.holds(&blob.key) {
            // Same digest, same bytes: keep the stored copy; dropping `temp` removes ours.
            return Ok(Put {
                blob,
                status: PutStatus::AlreadyPresent,
            });
        }
        let durability = self.durability_of(options.durability, len);
        if durability == Durability::OnReturn {
            file.sync_all()
                .map_err(|source| io_error("sync", &temp, source))?;
        }
        drop(file);
        self.commit(temp, blob, durability)
    }

    fn checked_blob(
        &self,
        sha256: Sha256Hex,
        size: u64,
        options: &PutOptions,
    ) -> Result<StoredBlob, StoreError> {
        options.check(&sha256, size)?;
        let key = BlobKey::for_hash(&sha256);
        Ok(StoredBlob { sha256, size, key })
    }

    /// Blocking: moves a complete temporary file to its blob key, or stages it for the
    /// next [`Datastore::sync`] when its durability (as [`FileDatastore::durability_of`]
    /// gave it) is deferred.
    fn commit(
        &self,
        temp: tempfile::TempPath,
        blob: StoredBlob,
        durability: Durability,
    ) -> Result<Put, StoreError> {
        let status = if durability == Durability::AfterSync {
            match self
                .staged
                .lock()
                .expect("poisoned")
                .entry(blob.key.clone())
            {
                // Dropping `temp` removes this copy of the same bytes.
                std::collections::hash_map::Entry::Occupied(_) => PutStatus::AlreadyPresent,
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(Some(temp));
                    PutStatus::Written
                }
            }
        } else {
            match link_into_place(self.blobs_folder()?, temp, &blob.key)? {
                Some(folder) => {
                    if durability == Durability::OnReturn {
                        folder.sync_all().map_err(|source| {
                            io_error("sync folder of", &self.path_of(&blob.key), source)
                        })?;
                    }
                    PutStatus::Written
                }
                None => PutStatus::AlreadyPresent,
            }
        };
        Ok(Put { blob, status })
    }

    /// Blocking: makes the staged blobs durable, links them into place, and makes their
    /// names durable.
    fn commit_staged(&self, staged: Vec<(BlobKey, tempfile::TempPath)>) -> Result<(), StoreError> {
        let temp_dir = self.root.join(TEMP_DIR);
        if !staged.is_empty() {
            // Their bytes first; only then their names.
            sync_filesystem(&temp_dir)?;
            self.names_unsynced.store(true, Ordering::SeqCst);
            link_all(self.blobs_folder()?, staged)?;
        }
        sync_filesystem(&temp_dir)?;
        self.names_unsynced.store(false, Ordering::SeqCst);
        Ok(())
    }
}

/// Blocking: links temporary files into place (see [`link_into_place`]) on several
/// threads at once: creating a fan-out folder may wait for the disk (ext4 reads inode
/// tables to pick a free inode), and one thread at a time spent most of a sync waiting.
fn link_all(
    blobs_folder: &RootFolder,
    staged: Vec<(BlobKey, tempfile::TempPath)>,
) -> Result<(), StoreError> {
    let per_thread = staged.len().div_ceil(LINK_THREADS).max(1);
    let mut staged = staged.into_iter();
    let chunks: Vec<Vec<_>> = std::iter::from_fn(|| {
        let chunk: Vec<_> = staged.by_ref().take(per_thread).collect();
        (!chunk.is_empty()).then_some(chunk)
    })
    .collect();
    std::thread::scope(|scope| {
        let linkers: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk.into_iter().try_for_each(|(key, temp)| {
                        link_into_place(blobs_folder, temp, &key).map(drop)
                    })
                })
            })
            .collect();
        linkers
            .into_iter()
            .try_for_each(|linker| linker.join().expect("a link thread panicked"))
    })
}

/// Blocking: links a complete temporary file to `key` in the datastore folder, creating
/// its folders and following no link on the way. Never replaces an existing blob (a hard
/// link fails when the name exists), so when several writers race with the same bytes
/// exactly one of them gets the folder it linked in (`None` for the others).
fn link_into_place(
    blobs_folder: &RootFolder,
    temp: tempfile::TempPath,
    key: &BlobKey,
) -> Result<Option<std::fs::File>, StoreError> {
    // Dropping `temp` then removes the temporary name (if a filesystem without hard
    // links had the file moved instead, there is nothing left to remove).
    blobs_folder
        .link_file(&temp, Path::new(key.as_str()))
        .map_err(|source| io_error("link into place", &temp, source))
}

/// Blocking: writes every unsynced byte and name of the filesystem that holds `dir` to
/// disk (`syncfs`).
#[cfg(target_os = "linux")]
fn sync_filesystem(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|handle| rustix::fs::syncfs(&handle).map_err(std::io::Error::from))
        .map_err(|source| io_error("sync the filesystem of", dir, source))
}

/// Blocking: writes every unsynced byte and name to disk (`sync`, which waits for the
/// writes on Linux only: the toolkit's durability guarantees are made for Linux).
#[cfg(not(target_os = "linux"))]
fn sync_filesystem(_dir: &Path) -> Result<(), StoreError> {
    rustix::fs::sync();
    Ok(())
}

/// Blocking: reads until `buf` is full or the source ends; returns the bytes read.
fn read_chunk(source: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Blocking: opens the blob `key` below `root` (following no link below the root, and
/// opening nothing but a regular file), positioned at the start of `range`: the file, its
/// path and the length to read.
fn open_blob(
    root: &Path,
    key: &BlobKey,
    range: Option<ByteRange>,
) -> Result<(std::fs::File, PathBuf, u64), StoreError> {
    let path = root.join(key.as_str());
    let mut file = match open_regular_beneath(root, Path::new(key.as_str()), "the datastore") {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(StoreError::NotFound { key: key.clone() });
        }
        Err(source) => return Err(io_error("open", &path, source)),
    };
    let size = file
        .metadata()
        .map_err(|source| io_error("stat", &path, source))?
        .len();
    let len = match range {
        None => size,
        Some(range) if range.start <= size && range.start <= range.end => {
            std::io::Seek::seek(&mut file, SeekFrom::Start(range.start))
                .map_err(|source| io_error("seek", &path, source))?;
            range.end.min(size) - range.start
        }
        Some(range) => {
            return Err(StoreError::InvalidRange {
                key: key.clone(),
                start: range.start,
                end: range.end,
                size,
            });
        }
    };
    Ok((file, path, len))
}

/// Files [`FileDatastore::delete_many`] removes, or [`FileDatastore::sizes`] looks up,
/// per blocking call.
const FILES_PER_CALL: usize = 256;

/// Blocking calls of [`FileDatastore::delete_many`] or [`FileDatastore::sizes`] at once:
/// a disk overlaps their waits (for its journal, or for inode tables).
const FILE_CALLS_IN_FLIGHT: usize = 4;

/// Blocking: removes the files of `keys` below `root`, following no link below it (a
/// linked fan-out folder is refused, never deleted through); a missing file is
/// [`DeleteStatus::NotFound`].
fn remove_blob_files(root: &Path, keys: &[BlobKey]) -> Vec<Result<DeleteStatus, StoreError>> {
    let opened = match RootFolder::open(root, "the datastore") {
        Ok(opened) => opened,
        Err(e) => return each_failed(keys.len(), root, &e.to_string()),
    };
    keys.iter()
        .map(|key| match opened.remove_file(Path::new(key.as_str())) {
            Ok(true) => Ok(DeleteStatus::Deleted),
            Ok(false) => Ok(DeleteStatus::NotFound),
            Err(source) => Err(io_error("delete", &root.join(key.as_str()), source)),
        })
        .collect()
}

/// Blocking: the lengths of the blob files of `keys` below `root`. A link (or anything
/// but a regular file) under a key is not a blob, and no link below the root is followed
/// to find one.
fn blob_lengths(root: &Path, keys: &[BlobKey]) -> Result<Vec<Option<u64>>, StoreError> {
    let folder = match RootFolder::open(root, "the datastore") {
        Ok(folder) => folder,
        // A read-only stand-in for a folder that does not exist holds nothing.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(vec![None; keys.len()]),
        Err(e) => return Err(io_error("stat", root, e)),
    };
    keys.iter()
        .map(|key| {
            folder
                .regular_file_len(Path::new(key.as_str()))
                .map_err(|source| io_error("stat", &root.join(key.as_str()), source))
        })
        .collect()
}

/// `count` deletions below `root` that all failed for one `reason`.
fn each_failed(count: usize, root: &Path, reason: &str) -> Vec<Result<DeleteStatus, StoreError>> {
    (0..count)
        .map(|_| {
            Err(io_error(
                "delete",
                root,
                std::io::Error::other(reason.to_owned()),
            ))
        })
        .collect()
}

/// Runs a blocking datastore operation off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::Io {
            operation: "run",
            target: "a datastore worker".into(),
            source: std::io::Error::other(e),
        })
    })
}

#[async_trait]
impl Datastore for FileDatastore {
    fn uri(&self) -> String {
        let absolute = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        format!("file://{}", absolute.display())
    }

    async fn put(
        &self,
        data: &mut (dyn AsyncRead + Send + Unpin),
        options: &PutOptions,
    ) -> Result<Put, StoreError> {
        let mut first = Vec::with_capacity(CHUNK);
        let n = fill(data, &mut first)
            .await
            .map_err(|source| StoreError::Source {
                bytes_read: 0,
                source,
            })?;
        let (store, options) = (self.clone(), options.clone());
        if n < CHUNK {
            // The whole blob fitted in one chunk: one blocking call hashes, checks and
            // writes it (most media are small; this saves several thread hand-offs).
            return blocking(move || store.put_small(&first, &options)).await;
        }
        let (staging, temp) = self.stage(first, data).await?;
        blocking(move || store.finish_put(staging, temp, &options)).await
    }

    async fn put_file(
        &self,
        file: std::fs::File,
        limit: u64,
        options: &PutOptions,
    ) -> Result<Put, StoreError> {
        let (store, options) = (self.clone(), options.clone());
        blocking(move || store.put_file_blocking(file, limit, &options)).await
    }

    async fn put_local(&self, open: OpenLocalFile, options: &PutOptions) -> LocalPutResult {
        let file = LocalPut {
            open,
            options: options.clone(),
        };
        let mut answers = self.put_local_many(vec![file]).await;
        answers.pop().expect("one answer per file")
    }

    async fn put_local_many(&self, files: Vec<LocalPut>) -> Vec<LocalPutResult> {
        let (store, count) = (self.clone(), files.len());
        // One blocking call opens, reads, hashes and writes them all.
        tokio::task::spawn_blocking(move || {
            files
                .into_iter()
                .map(|LocalPut { open, options }| {
                    let (file, limit) = open()?;
                    Ok(store.put_file_blocking(file, limit, &options))
                })
                .collect()
        })
        .await
        .unwrap_or_else(|e| {
            (0..count)
                .map(|_| Err(std::io::Error::other(e.to_string())))
                .collect()
        })
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.sync_in_progress.lock().await;
        let taken: Vec<(BlobKey, tempfile::TempPath)> = self
            .staged
            .lock()
            .expect("poisoned")
            .iter_mut()
            .filter_map(|(key, temp)| Some((key.clone(), temp.take()?)))
            .collect();
        if taken.is_empty() && !self.names_unsynced.load(Ordering::SeqCst) {
            return Ok(());
        }
        let keys: Vec<BlobKey> = taken.iter().map(|(key, _)| key.clone()).collect();
        let store = self.clone();
        let result = blocking(move || store.commit_staged(taken)).await;
        // Linked, or lost with the failed sync: either way no longer staged.
        let mut staged = self.staged.lock().expect("poisoned");
        for key in keys {
            staged.remove(&key);
        }
        result
    }

    async fn open(
        &self,
        key: &BlobKey,
        range: Option<ByteRange>,
    ) -> Result<BlobPayload, StoreError> {
        let (root, key) = (self.root.clone(), key.clone());
        let (file, path, len) = blocking(move || open_blob(&root, &key, range)).await?;
        Ok(BlobPayload::File { file, path, len })
    }

    async fn size(&self, key: &BlobKey) -> Result<Option<u64>, StoreError> {
        let mut sizes = self.sizes(std::slice::from_ref(key)).await?;
        Ok(sizes.pop().expect("one size per key"))
    }

    /// Looks the files up a few hundred per blocking call, a few calls at once (as
    /// [`FileDatastore::delete_many`] removes them).
    async fn sizes(&self, keys: &[BlobKey]) -> Result<Vec<Option<u64>>, StoreError> {
        let per_call: Vec<Vec<Option<u64>>> =
            stream::iter(keys.chunks(FILES_PER_CALL).map(<[BlobKey]>::to_vec))
                .map(|chunk| {
                    let root = self.root.clone();
                    blocking(move || blob_lengths(&root, &chunk))
                })
                .buffered(FILE_CALLS_IN_FLIGHT)
                .try_collect()
                .await?;
        Ok(per_call.into_iter().flatten().collect())
    }

    async fn delete(&self, key: &BlobKey) -> Result<DeleteStatus, StoreError> {
        let mut removed = self.delete_many(std::slice::from_ref(key)).await;
        removed.pop().expect("one status per key")
    }

    /// Removes the files a few hundred per blocking call, a few calls at once: a
    /// blocking call per file costs more than removing it (a thread wakes for each).
    async fn delete_many(&self, keys: &[BlobKey]) -> Vec<Result<DeleteStatus, StoreError>> {
        stream::iter(keys.chunks(FILES_PER_CALL).map(<[BlobKey]>::to_vec))
            .map(|chunk| async move {
                let (root, count) = (self.root.clone(), chunk.len());
                let removed = blocking(move || Ok(remove_blob_files(&root, &chunk)));
                // A worker that died reports each of its removals failed (they stay queued).
                removed
                    .await
                    .unwrap_or_else(|e| each_failed(count, &self.root, &e.to_string()))
            })
            .buffered(FILE_CALLS_IN_FLIGHT)
            .flat_map(stream::iter)
            .collect()
            .await
    }

    fn list(&self) -> BoxStream<'_, Result<BlobKey, StoreError>> {
        // Walk the two fan-out levels lazily, one first-level folder (and every folder in
        // it) per blocking call: a call per folder would cost more than the listing. Each
        // folder's entries are sorted, so the keys come in ascending order.
        let root = self.root.clone();
        let top = stream::once(async move { blocking(move || read_fanout_dir(&root)).await })
            .flat_map(stream_of);
        top.flat_map(|first| match first {
            Err(e) => stream::iter(vec![Err(e)]).boxed(),
            Ok(first) => stream::once(async move {
                blocking(move || {
                    let mut keys = Vec::new();
                    for second in read_fanout_dir(&first)? {
                        keys.extend(read_blob_dir(&second)?);
                    }
                    Ok(keys)
                })
                .await
            })
            .flat_map(stream_of)
            .boxed(),
        })
        .boxed()
    }

    async fn read_marker(&self) -> Result<Option<String>, StoreError> {
        let path = self.root.join(MARKER_FILE);
        blocking(move || read_marker_file(&path)).await
    }

    async fn claim_marker(&self, proposed: &str) -> Result<String, StoreError> {
        let (path, proposed) = (self.root.join(MARKER_FILE), proposed.to_owned());
        blocking(move || write_marker_file(&path, &proposed, false)).await
    }

    async fn replace_marker(&self, marker: &str) -> Result<(), StoreError> {
        let (path, marker) = (self.root.join(MARKER_FILE), marker.to_owned());
        blocking(move || write_marker_file(&path, &marker, true).map(drop)).await
    }
}

fn stream_of<T: Send + 'static>(
    items: Result<Vec<T>, StoreError>,
) -> BoxStream<'static, Result<T, StoreError>> {
    match items {
        Ok(items) => stream::iter(items.into_iter().map(Ok)).boxed(),
        Err(e) => stream::iter(vec![Err(e)]).boxed(),
    }
}

fn is_hex_pair(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The two-hex-digit subfolders of `dir`, sorted (temporary and foreign entries are
/// skipped).
fn read_fanout_dir(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|source| io_error("list", dir, source))? {
        let entry = entry.map_err(|source| io_error("list", dir, source))?;
        let name = entry.file_name();
        if name.to_str().is_some_and(is_hex_pair) && entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(entry.path());
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The blob keys of files in a second-level folder, checked against the layout, sorted.
fn read_blob_dir(dir: &Path) -> Result<Vec<BlobKey>, StoreError> {
    let mut out = Vec::new();
    let second = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let first = dir
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    for entry in std::fs::read_dir(dir).map_err(|source| io_error("list", dir, source))? {
        let entry = entry.map_err(|source| io_error("list", dir, source))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Ok(key) = BlobKey::parse_owned(format!("{first}/{second}/{name}"))
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            out.push(key);
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use media_core::DatastoreExt;

    fn staged(store: &FileDatastore) -> usize {
        store.staged.lock().unwrap().len()
    }

    #[tokio::test]
    async fn only_deferred_puts_of_a_syncing_store_wait_for_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileDatastore::open(dir.path()).await.unwrap();
        let deferred = PutOptions::default().with_durability(Durability::AfterSync);
        store.put(&mut &b"one"[..], &deferred).await.unwrap();
        store.put(&mut &b"two"[..], &deferred).await.unwrap();
        assert_eq!(staged(&store), 2);
        store.sync().await.unwrap();
        assert_eq!(staged(&store), 0);
        assert!(!store.names_unsynced.load(Ordering::SeqCst));
        let immediate = store
            .put(&mut &b"three"[..], &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(
            staged(&store),
            0,
            "an immediate put is linked and synced at once"
        );
        assert!(store.path_of(&immediate.blob.key).exists());
        let without_fsync = store.clone().with_max_durability(Durability::Unsynced);
        let put = without_fsync
            .put(&mut &b"four"[..], &deferred)
            .await
            .unwrap();
        assert_eq!(
            staged(&store),
            0,
            "without fsync there is nothing to wait for"
        );
        assert!(store.path_of(&put.blob.key).exists());
        let unsynced = PutOptions::default().with_durability(Durability::Unsynced);
        let put = store.put(&mut &b"five"[..], &unsynced).await.unwrap();
        assert_eq!(staged(&store), 0, "an unsynced put is linked at once");
        assert!(store.path_of(&put.blob.key).exists());
    }

    #[tokio::test]
    async fn a_store_limited_to_after_sync_defers_every_small_put() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileDatastore::open(dir.path())
            .await
            .unwrap()
            .with_max_durability(Durability::AfterSync);
        let put = store
            .put(&mut &b"small"[..], &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(staged(&store), 1);
        assert!(!store.path_of(&put.blob.key).exists());
        store.sync().await.unwrap();
        assert!(store.path_of(&put.blob.key).exists());
    }

    #[tokio::test]
    async fn a_folder_store_opens_blobs_as_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileDatastore::open(dir.path()).await.unwrap();
        let key = store.put_bytes(b"0123456789").await.unwrap().blob.key;
        let Ok(BlobPayload::File { file, path, len }) = store.open(&key, Some(3..5)).await else {
            panic!("a folder store hands out files");
        };
        assert_eq!((path, len), (dir.path().join(key.as_str()), 2));
        let mut bytes = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, len), &mut bytes).unwrap();
        assert_eq!(bytes, "34");
    }

    #[tokio::test]
    async fn the_size_of_a_link_or_a_non_file_under_a_key_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileDatastore::open(dir.path().join("store")).await.unwrap();
        let linked = store.put_bytes(b"linked").await.unwrap().blob.key;
        let folder = store.put_bytes(b"a folder").await.unwrap().blob.key;
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"not the store's").unwrap();
        let linked_path = store.path_of(&linked);
        std::fs::remove_file(&linked_path).unwrap();
        std::os::unix::fs::symlink(&secret, &linked_path).unwrap();
        let folder_path = store.path_of(&folder);
        std::fs::remove_file(&folder_path).unwrap();
        std::fs::create_dir(&folder_path).unwrap();
        for key in [&linked, &folder] {
            assert_eq!(store.size(key).await.unwrap(), None, "{key}");
            assert!(!store.exists(key).await.unwrap(), "{key}");
        }
    }

    #[tokio::test]
    async fn deletion_never_goes_through_a_linked_fan_out_folder() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileDatastore::open(dir.path().join("store")).await.unwrap();
        let key = store.put_bytes(b"kept outside").await.unwrap().blob.key;
        // The blob's second-level folder moves out of the store; a link takes its place.
        let folder = store.path_of(&key).parent().unwrap().to_path_buf();
        let outside = dir.path().join("elsewhere");
        std::fs::rename(&folder, &outside).unwrap();
        std::os::unix::fs::symlink(&outside, &folder).unwrap();
        let error = store.delete(&key).await.unwrap_err().to_string();
        assert!(error.contains("never followed"), "{error}");
        let statuses = store.delete_many(std::slice::from_ref(&key)).await;
        assert!(statuses[0].is_err());
        let name = store.path_of(&key).file_name().unwrap().to_owned();
        assert_eq!(std::fs::read(outside.join(name)).unwrap(), b"kept outside");
    }

    #[tokio::test]
    async fn a_put_never_goes_through_a_linked_fan_out_folder() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("elsewhere");
        std::fs::create_dir(&outside).unwrap();
        let bytes = b"never written outside";
        let key = BlobKey::for_hash(&Sha256Hex::from_digest(&Sha256::digest(bytes).into()));
        for durability in [Durability::OnReturn, Durability::AfterSync] {
            let root = dir.path().join(format!("{durability:?}"));
            let store = FileDatastore::open(&root).await.unwrap();
            // The blob's first-level folder is a link out of the store.
            let first_level = root.join(&key.as_str()[..2]);
            std::os::unix::fs::symlink(&outside, &first_level).unwrap();
            let options = PutOptions::default().with_durability(durability);
            let error = match store.put(&mut &bytes[..], &options).await {
                Err(error) => error,
                Ok(_) => {
                    assert_eq!(staged(&store), 1, "only a deferred put may succeed");
                    store.sync().await.unwrap_err()
                }
            };
            assert!(error.to_string().contains("never followed"), "{error}");
            let written: Vec<_> = files_below(&outside);
            assert!(written.is_empty(), "{durability:?}: {written:?}");
        }
        let linked_temp = dir.path().join("linked-temp");
        std::fs::create_dir(&linked_temp).unwrap();
        std::os::unix::fs::symlink(&outside, linked_temp.join(TEMP_DIR)).unwrap();
        let error = FileDatastore::open(&linked_temp).await.unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert!(files_below(&outside).is_empty());
        // A copy of the blob where the link leads is not the store's: the put fails
        // rather than report the blob present.
        let copy = outside.join(&key.as_str()[3..]);
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        std::fs::write(&copy, bytes).unwrap();
        let store = FileDatastore::open(dir.path().join("OnReturn"))
            .await
            .unwrap();
        let error = store.put_bytes(bytes).await.unwrap_err();
        assert!(error.to_string().contains("never followed"), "{error}");
        assert_eq!(store.size(&key).await.unwrap(), None);
    }

    /// Every file below `folder`, at any depth.
    fn files_below(folder: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(files_below(&path));
            } else {
                files.push(path);
            }
        }
        files
    }
}
