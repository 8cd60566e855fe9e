//! [`ArchiveWriter`]: streams media into `export-part-N.tgz` files of a bounded size, then
//! writes `export-manifest.tgz` with `manifest.json` and `index.html` (see `index.rs`).
//!
//! The archive is written into a private staging folder beside the destination and
//! swapped in only once complete (see `destination.rs`): a failed or killed export
//! leaves the destination as it was, and every file is created exclusively, never
//! through a link, with mode 0600 from the start.
//!
//! Each part is a flat tar inside gzip. Entries whose content is already compressed
//! (images, video, audio, archives) are stored, text is deflated: a part is a sequence
//! of gzip members, one per run of entries with the same compression, which every gzip
//! reader (gzip, Go, Python, flate2's `MultiGzDecoder`) reads as one stream. Each entry
//! starts a member, so an entry whose source turns out damaged is cut off the part
//! again: no entry is left behind for it. Manifest
//! records and index rows are spooled to temporary files, so memory stays flat however
//! many records an archive has.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;

use crate::destination::Staging;
use crate::index::{self, IndexTotals, LeftOut};
use crate::manifest::{INDEX_ENTRY, MANIFEST_ENTRY, MANIFEST_VERSION, ManifestRecord};
use crate::{ArchiveError, MANIFEST_PART, PARTIAL_SUFFIX, part_file_name};

/// Tar header and padding granularity.
const TAR_BLOCK: u64 = 512;
/// A part's data is flushed to disk every this many bytes while it is written.
const SYNC_EVERY: u64 = 32 << 20;
/// The most a stored deflate block holds.
const STORED_BLOCK: usize = 65_535;
/// A gzip member header: deflate, no flags, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// How entries are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// Deflate what compresses (text, JSON, SVG…), store what is already compressed.
    #[default]
    Auto,
    /// Store everything.
    None,
    /// Deflate everything at the fastest level.
    Fast,
    /// Deflate everything at the best level.
    Best,
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "none" => Ok(Self::None),
            "fast" => Ok(Self::Fast),
            "best" => Ok(Self::Best),
            other => Err(format!(
                "unknown compression {other:?}: use auto, none, fast or best"
            )),
        }
    }
}

impl Compression {
    /// The deflate level for content of this MIME type (0 = stored).
    fn level_for(self, content_type: &str) -> u32 {
        match self {
            Self::Auto if compresses_well(content_type) => 6,
            Self::Auto | Self::None => 0,
            Self::Fast => 1,
            Self::Best => 9,
        }
    }
}

/// Whether content of this MIME type is worth deflating: text and text-like formats are;
/// images, video, audio, archives and unknown binary data are usually compressed already
/// (deflating them costs time and can even grow them).
pub fn compresses_well(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/xml"
                | "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "application/x-sh"
                | "application/x-tar"
                | "application/rtf"
                | "application/sql"
                | "image/svg+xml"
                | "image/bmp"
                | "image/x-ms-bmp"
                | "image/tiff"
        )
}

/// The extension an entry gets for content of this MIME type (readers never rely on it;
/// it helps a person who unpacks the archive).
pub fn extension_for(content_type: &str) -> &'static str {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    match essence.to_ascii_lowercase().as_str() {
        "image/png" => ".png",
        "image/jpeg" | "image/jpg" => ".jpg",
        "image/gif" => ".gif",
        "image/webp" => ".webp",
        "image/svg+xml" => ".svg",
        "image/bmp" | "image/x-ms-bmp" => ".bmp",
        "image/tiff" => ".tiff",
        "image/avif" => ".avif",
        "image/heic" => ".heic",
        "video/mp4" => ".mp4",
        "video/webm" => ".webm",
        "video/quicktime" => ".mov",
        "audio/ogg" => ".ogg",
        "audio/mpeg" => ".mp3",
        "audio/mp4" => ".m4a",
        "audio/webm" => ".weba",
        "application/pdf" => ".pdf",
        "application/zip" => ".zip",
        "application/gzip" => ".gz",
        "application/json" => ".json",
        "text/plain" => ".txt",
        "text/html" => ".html",
        "text/markdown" => ".md",
        "text/csv" => ".csv",
        _ => "",
    }
}

/// How an [`ArchiveWriter`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// A part is closed once this many uncompressed bytes were written to it.
    pub part_size: u64,
    /// How entries are compressed.
    pub compression: Compression,
    /// Replace an export already in the folder (its files, and only those): the new
    /// export is written beside it and swapped in once complete.
    pub replace: bool,
    /// Make every file durable before the archive counts as complete (parts are synced
    /// while they are written, the manifest and folder at the end). Off only for
    /// archives that are copied elsewhere at once.
    pub sync: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            part_size: 200 << 20,
            compression: Compression::Auto,
            replace: false,
            sync: true,
        }
    }
}

/// An entry to write.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    /// The entry name (`<origin>__<media_id><ext>`).
    pub name: &'a str,
    /// How many bytes the body must yield.
    pub size: u64,
    /// The entry's modification time: the media's creation time, ms since the epoch.
    pub mtime_ms: i64,
    /// The content's MIME type, which decides its compression.
    pub content_type: &'a str,
}

/// How writing an entry's body went.
#[derive(Debug)]
pub enum WrittenEntry {
    /// The body yielded exactly the announced size, then ended.
    Complete,
    /// The body failed, ended early or yielded more than announced; the entry was cut
    /// off the part again (nothing of it remains in the archive).
    SourceFailed(io::Error),
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// The media parts, in order.
    pub parts: Vec<PathBuf>,
    /// The manifest part.
    pub manifest: PathBuf,
    /// Records in the manifest.
    pub records: u64,
    /// Media entries written.
    pub entries: u64,
    /// Bytes of media written into entries.
    pub entry_bytes: u64,
    /// Size of every file of the archive together.
    pub archive_bytes: u64,
    /// Media listed in the index as left out.
    pub left_out: u64,
}

/// Writes an archive into a folder, part by part. Call [`ArchiveWriter::finish`] at the
/// end: without a manifest part, readers treat the folder as an interrupted export.
pub struct ArchiveWriter {
    staging: Staging,
    replace: bool,
    part_size: u64,
    compression: Compression,
    sync: bool,
    part: Option<OpenPart>,
    /// Closed parts being synced.
    part_syncs: Vec<(PathBuf, std::thread::JoinHandle<io::Result<()>>)>,
    summary: ArchiveSummary,
    manifest_records: Spool,
    index_rows: Spool,
    /// Index lines for the media left out, written at the end of the page.
    left_out_rows: Spool,
    /// Bytes of the records added (a shared entry counts for each of its records).
    record_bytes: u64,
}

struct OpenPart {
    /// The name it is written under.
    partial: String,
    /// The name it gets once closed.
    name: String,
    tar: tar::Builder<GzipMembers<BufWriter<File>>>,
    uncompressed: u64,
    /// Entries written into it.
    entries: u64,
    /// Flushes the part to disk while it is written (when syncing).
    syncer: Option<BackgroundSync>,
    /// `uncompressed` when the syncer was last nudged.
    nudged_at: u64,
}

/// A thread that syncs a file's data whenever nudged, so that the disk writes while the
/// file is still being filled and the final sync only waits for the tail.
struct BackgroundSync {
    nudges: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<io::Result<()>>,
}

impl BackgroundSync {
    fn start(file: File) -> Self {
        let (nudges, received) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::spawn(move || {
            let mut result = Ok(());
            while received.recv().is_ok() {
                if let Err(e) = file.sync_data() {
                    result = Err(e);
                }
            }
            result.and_then(|()| file.sync_all())
        });
        Self { nudges, thread }
    }

    /// Asks for a sync of what was written so far (ignored while one is pending).
    fn nudge(&self) {
        let _ = self.nudges.try_send(());
    }

    /// Ends the thread after a last full sync; join it to learn how that went.
    fn finish(self) -> std::thread::JoinHandle<io::Result<()>> {
        drop(self.nudges);
        self.thread
    }
}

/// Records or index rows waiting in a temporary file for the manifest part.
struct Spool {
    file: BufWriter<File>,
    len: u64,
}

impl Spool {
    fn new(dir: &Path) -> Result<Self, ArchiveError> {
        let file = tempfile::tempfile_in(dir).map_err(ArchiveError::io(dir))?;
        Ok(Self {
            file: BufWriter::new(file),
            len: 0,
        })
    }

    fn push(&mut self, text: &str) -> io::Result<()> {
        self.file.write_all(text.as_bytes())?;
        self.len += text.len() as u64;
        Ok(())
    }

    /// The spooled text, from its start.
    fn rewind(self) -> io::Result<(File, u64)> {
        let mut file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        Ok((file, self.len))
    }
}

impl ArchiveWriter {
    /// Starts an archive for the folder `dir`, written beside it and swapped in by
    /// [`ArchiveWriter::finish`]. Refuses a folder that already holds an export unless
    /// `replace` is set (the old export stays complete until the new one replaces it),
    /// and a `dir` that is a link or a file.
    pub fn create(dir: &Path, options: &WriterOptions) -> Result<Self, ArchiveError> {
        let staging = Staging::create(dir, options.replace)?;
        let spool_dir = staging.path().to_owned();
        Ok(Self {
            manifest_records: Spool::new(&spool_dir)?,
            index_rows: Spool::new(&spool_dir)?,
            left_out_rows: Spool::new(&spool_dir)?,
            record_bytes: 0,
            staging,
            replace: options.replace,
            part_size: options.part_size.max(1),
            compression: options.compression,
            sync: options.sync,
            part: None,
            part_syncs: Vec::new(),
            summary: ArchiveSummary::default(),
        })
    }

    /// The folder the archive is written into until [`ArchiveWriter::finish`] swaps it
    /// in as the destination.
    pub fn staging_dir(&self) -> &Path {
        self.staging.path()
    }

    /// Writes one media entry. The body must yield exactly `entry.size` bytes and then
    /// end; when it fails, ends early or has more, the entry is cut off the part again
    /// (no trace of it remains) and [`WrittenEntry::SourceFailed`] says why. Errors are
    /// failures to write the archive.
    pub fn add_entry(
        &mut self,
        entry: NewEntry<'_>,
        body: &mut dyn BufRead,
    ) -> Result<WrittenEntry, ArchiveError> {
        let level = self.compression.level_for(entry.content_type);
        let staging = self.staging.path().to_owned();
        let part = self.open_part()?;
        let path = staging.join(&part.partial);
        let io_error = |e| ArchiveError::io(&path)(e);
        // Each entry starts a gzip member: where it starts, the part can be cut.
        let start = part.tar.get_mut().checkpoint().map_err(io_error)?;
        let mut header = regular_header(entry.size, entry.mtime_ms);
        // The builder writes the header (and a long-name entry when needed) but would
        // copy the data 8 KiB at a time: the data and its padding follow here, in large
        // chunks.
        part.tar.get_mut().use_level(level).map_err(io_error)?;
        part.tar
            .append_data(&mut header, entry.name, io::empty())
            .map_err(io_error)?;
        let copied = copy_exact(body, part.tar.get_mut(), entry.size).map_err(io_error)?;
        if let Err(problem) = copied {
            part.tar.get_mut().cut_at(start).map_err(io_error)?;
            return Ok(WrittenEntry::SourceFailed(problem));
        }
        part.entries += 1;
        part.uncompressed += tar_size(entry.name, entry.size);
        if let Some(syncer) = &part.syncer
            && part.uncompressed - part.nudged_at >= SYNC_EVERY
        {
            syncer.nudge();
            part.nudged_at = part.uncompressed;
        }
        let part_full = part.uncompressed >= self.part_size;
        self.summary.entries += 1;
        self.summary.entry_bytes = self.summary.entry_bytes.saturating_add(entry.size);
        if part_full {
            self.close_part()?;
        }
        Ok(WrittenEntry::Complete)
    }

    /// Adds a record to the manifest (and a row to the index) under its MXC URI.
    pub fn add_record(&mut self, mxc: &str, record: &ManifestRecord) -> Result<(), ArchiveError> {
        let separator = if self.summary.records == 0 { "" } else { "," };
        let key = serde_json::to_string(mxc).map_err(io::Error::other);
        let value = serde_json::to_string(record).map_err(io::Error::other);
        let path = self.staging.path().to_owned();
        key.and_then(|key| {
            let value = value?;
            self.manifest_records
                .push(&format!("{separator}\n    {key}: {value}"))
        })
        .and_then(|()| {
            self.index_rows.push(&index::media_item(
                mxc,
                &record.name,
                &record.file_name,
                &record.content_type,
                record.size_bytes,
                record.created_ts,
            ))
        })
        .map_err(ArchiveError::io(&path))?;
        self.summary.records += 1;
        self.record_bytes = self.record_bytes.saturating_add(record.size_bytes);
        Ok(())
    }

    /// Lists a media that is not in the archive (quarantined, its bytes damaged or
    /// missing…) at the end of `index.html`, with why. The manifest does not name it.
    pub fn add_left_out(&mut self, left_out: &LeftOut<'_>) -> Result<(), ArchiveError> {
        self.left_out_rows
            .push(&index::left_out_item(left_out))
            .map_err(ArchiveError::io(self.staging.path()))?;
        self.summary.left_out += 1;
        Ok(())
    }

    /// Closes the last part, writes `export-manifest.tgz` (manifest and index) and
    /// swaps the complete archive in as the destination.
    pub fn finish(
        mut self,
        entity_id: &str,
        created_ts: i64,
    ) -> Result<ArchiveSummary, ArchiveError> {
        self.close_part()?;
        for (part, sync) in std::mem::take(&mut self.part_syncs) {
            sync.join()
                .unwrap_or_else(|_| Err(io::Error::other("the sync thread panicked")))
                .map_err(ArchiveError::io(&part))?;
        }
        let entity = serde_json::to_string(entity_id).expect("a string serializes");
        let head = format!(
            "{{\n  \"version\": {MANIFEST_VERSION},\n  \"entity_id\": {entity},\n  \"created_ts\": \
             {created_ts},\n  \"media\": {{"
        );
        let tail = "\n  }\n}\n";
        let totals = IndexTotals {
            media: self.summary.records,
            media_bytes: self.record_bytes,
            files: self.summary.entries,
            parts: self.summary.parts.len() as u64,
            left_out: self.summary.left_out,
        };
        let index_head = index::head(entity_id, created_ts, &totals);
        let index_middle = index::middle(&totals);

        let partial = format!("{MANIFEST_PART}{PARTIAL_SUFFIX}");
        let file = self.staging.create_file(&partial)?;
        let write = || -> io::Result<()> {
            let mut tar = tar::Builder::new(GzipMembers::new(BufWriter::new(file)));
            let (records, records_len) = self.manifest_records.rewind()?;
            let (rows, rows_len) = self.index_rows.rewind()?;
            let (left_out, left_out_len) = self.left_out_rows.rewind()?;
            tar.get_mut().use_level(6)?;
            let manifest = head.as_bytes().chain(records).chain(tail.as_bytes());
            let manifest_len = head.len() as u64 + records_len + tail.len() as u64;
            append_text(&mut tar, MANIFEST_ENTRY, created_ts, manifest_len, manifest)?;
            let index = index_head
                .as_bytes()
                .chain(rows)
                .chain(index_middle.as_bytes())
                .chain(left_out)
                .chain(index::TAIL.as_bytes());
            let index_len = index_head.len() as u64
                + rows_len
                + index_middle.len() as u64
                + left_out_len
                + index::TAIL.len() as u64;
            append_text(&mut tar, INDEX_ENTRY, created_ts, index_len, index)?;
            let file = finish_tar(tar)?;
            if self.sync { file.sync_all() } else { Ok(()) }
        };
        write().map_err(ArchiveError::io(&self.staging.path().join(&partial)))?;
        self.staging.rename(&partial, MANIFEST_PART)?;
        if self.sync {
            self.staging.sync()?;
        }
        let destination = self.staging.swap_in(self.replace, self.sync)?;
        for part in &mut self.summary.parts {
            *part = destination.join(part.file_name().expect("a part has a name"));
        }
        self.summary.manifest = destination.join(MANIFEST_PART);
        self.summary.archive_bytes = self
            .summary
            .parts
            .iter()
            .chain([&self.summary.manifest])
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        Ok(self.summary)
    }

    fn open_part(&mut self) -> Result<&mut OpenPart, ArchiveError> {
        if self.part.is_none() {
            let number = self.summary.parts.len() as u32 + 1;
            let name = part_file_name(number);
            let partial = format!("{name}{PARTIAL_SUFFIX}");
            let file = self.staging.create_file(&partial)?;
            let syncer = match self.sync {
                true => Some(BackgroundSync::start(
                    file.try_clone()
                        .map_err(ArchiveError::io(&self.staging.path().join(&partial)))?,
                )),
                false => None,
            };
            let mut tar =
                tar::Builder::new(GzipMembers::new(BufWriter::with_capacity(1 << 20, file)));
            tar.mode(tar::HeaderMode::Complete);
            self.part = Some(OpenPart {
                partial,
                name,
                tar,
                uncompressed: 0,
                entries: 0,
                syncer,
                nudged_at: 0,
            });
        }
        Ok(self.part.as_mut().expect("a part was just opened"))
    }

    fn close_part(&mut self) -> Result<(), ArchiveError> {
        let Some(part) = self.part.take() else {
            return Ok(());
        };
        let partial_path = self.staging.path().join(&part.partial);
        if part.entries == 0 {
            // Every entry of it was cut off again: no empty part.
            drop(part.tar);
            if let Some(syncer) = part.syncer {
                let _ = syncer.finish().join();
            }
            return self.staging.remove(&part.partial);
        }
        finish_tar(part.tar).map_err(ArchiveError::io(&partial_path))?;
        self.staging.rename(&part.partial, &part.name)?;
        let path = self.staging.path().join(&part.name);
        // The last sync runs while the next part fills; `finish` waits for every part's
        // before the manifest makes the archive complete.
        if let Some(syncer) = part.syncer {
            self.part_syncs.push((path.clone(), syncer.finish()));
        }
        self.summary.parts.push(path);
        Ok(())
    }
}

/// Appends a generated entry of `size` bytes read from `body`.
fn append_text(
    tar: &mut tar::Builder<GzipMembers<BufWriter<File>>>,
    name: &str,
    mtime_ms: i64,
    size: u64,
    body: impl Read,
) -> io::Result<()> {
    tar.append_data(&mut regular_header(size, mtime_ms), name, body)
}

/// The header of a flat archive's file: mode 0644, the given size and time.
fn regular_header(size: u64, mtime_ms: i64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(u64::try_from(mtime_ms.div_euclid(1000)).unwrap_or(0));
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// Ends a tar (its two zero blocks) and the last gzip member.
fn finish_tar(tar: tar::Builder<GzipMembers<BufWriter<File>>>) -> io::Result<File> {
    tar.into_inner()?
        .finish()?
        .into_inner()
        .map_err(|e| e.into_error())
}

/// Copies exactly `size` bytes of `body` to `out` straight from its buffer, then zeros
/// up to the next tar block. The outer error is a failure to write; the inner one a
/// problem of the source (it failed, ended early, or has more than `size` bytes).
fn copy_exact(
    body: &mut dyn BufRead,
    out: &mut dyn Write,
    size: u64,
) -> io::Result<Result<(), io::Error>> {
    let mut remaining = size;
    loop {
        let available = match body.fill_buf() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Ok(Err(e)),
            Ok(available) => available,
        };
        if remaining == 0 {
            return Ok(match available.len() {
                0 => {
                    let remainder = size % TAR_BLOCK;
                    if remainder != 0 {
                        let padding = (TAR_BLOCK - remainder) as usize;
                        out.write_all(&[0; TAR_BLOCK as usize][..padding])?;
                    }
                    Ok(())
                }
                more => Err(io::Error::other(format!(
                    "the content is longer than the {size} bytes recorded ({more} more at \
                     least)"
                ))),
            });
        }
        if available.is_empty() {
            return Ok(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the content ended {remaining} bytes early"),
            )));
        }
        let n = available
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        out.write_all(&available[..n])?;
        body.consume(n);
        remaining -= n as u64;
    }
}

/// Bytes an entry takes in an uncompressed tar: header(s), then data padded to a block.
fn tar_size(name: &str, size: u64) -> u64 {
    // Names longer than a header's 100-byte field take a GNU long-name entry before it.
    let long_name = if name.len() > 100 {
        TAR_BLOCK + (name.len() as u64 + 1).div_ceil(TAR_BLOCK) * TAR_BLOCK
    } else {
        0
    };
    long_name + TAR_BLOCK + size.div_ceil(TAR_BLOCK) * TAR_BLOCK
}

/// A gzip stream made of members, each with its own deflate level: switching level
/// ends the current member and starts the next one.
struct GzipMembers<W: Write> {
    state: Option<MemberState<W>>,
}

enum MemberState<W: Write> {
    Between(W),
    Deflated(u32, Box<GzEncoder<W>>),
    Stored(StoredMember<W>),
}

/// A gzip member of stored (uncompressed) deflate blocks, written directly: already
/// compressed media pass through with nothing but framing and a CRC.
struct StoredMember<W: Write> {
    inner: W,
    crc: flate2::Crc,
}

impl<W: Write> StoredMember<W> {
    fn start(mut inner: W) -> io::Result<Self> {
        inner.write_all(&GZIP_HEADER)?;
        Ok(Self {
            inner,
            crc: flate2::Crc::new(),
        })
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let block = &buf[..buf.len().min(STORED_BLOCK)];
        if block.is_empty() {
            return Ok(0);
        }
        let len = block.len() as u16;
        let [l0, l1] = len.to_le_bytes();
        let [n0, n1] = (!len).to_le_bytes();
        // A non-final stored block: BFINAL 0, BTYPE 00, then LEN and its complement.
        self.inner.write_all(&[0, l0, l1, n0, n1])?;
        self.inner.write_all(block)?;
        self.crc.update(block);
        Ok(block.len())
    }

    /// Ends the deflate stream with an empty final block, then the gzip trailer.
    fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(&[1, 0, 0, 0xff, 0xff])?;
        self.inner.write_all(&self.crc.sum().to_le_bytes())?;
        self.inner.write_all(&self.crc.amount().to_le_bytes())?;
        Ok(self.inner)
    }
}

impl GzipMembers<BufWriter<File>> {
    /// Ends the current member; returns the file position where the next one starts.
    fn checkpoint(&mut self) -> io::Result<u64> {
        let mut inner = self.take_inner()?;
        let position = inner.stream_position();
        self.state = Some(MemberState::Between(inner));
        position
    }

    /// Cuts the file at `position` (a [`checkpoint`](Self::checkpoint)): everything
    /// written after it is gone.
    fn cut_at(&mut self, position: u64) -> io::Result<()> {
        let mut inner = self.take_inner()?;
        inner.flush()?;
        inner.get_ref().set_len(position)?;
        inner.seek(SeekFrom::Start(position))?;
        self.state = Some(MemberState::Between(inner));
        Ok(())
    }

    /// Ends the current member, if any, and takes the writer out.
    fn take_inner(&mut self) -> io::Result<BufWriter<File>> {
        match self.state.take().expect("no write failed half-way") {
            MemberState::Between(inner) => Ok(inner),
            MemberState::Deflated(_, encoder) => encoder.finish(),
            MemberState::Stored(member) => member.finish(),
        }
    }
}

impl<W: Write> GzipMembers<W> {
    fn new(inner: W) -> Self {
        Self {
            state: Some(MemberState::Between(inner)),
        }
    }

    /// Makes the following bytes go into a member deflated at `level` (0 = stored).
    fn use_level(&mut self, level: u32) -> io::Result<()> {
        let state = match self.state.take().expect("no write failed half-way") {
            MemberState::Deflated(current, encoder) if current == level => {
                MemberState::Deflated(current, encoder)
            }
            stored @ MemberState::Stored(_) if level == 0 => stored,
            MemberState::Deflated(_, encoder) => start_member(encoder.finish()?, level)?,
            MemberState::Stored(member) => start_member(member.finish()?, level)?,
            MemberState::Between(inner) => start_member(inner, level)?,
        };
        self.state = Some(state);
        Ok(())
    }

    /// Ends the last member and returns the inner writer.
    fn finish(mut self) -> io::Result<W> {
        match self.state.take().expect("no write failed half-way") {
            MemberState::Between(inner) => Ok(inner),
            MemberState::Deflated(_, encoder) => encoder.finish(),
            MemberState::Stored(member) => member.finish(),
        }
    }
}

fn start_member<W: Write>(inner: W, level: u32) -> io::Result<MemberState<W>> {
    Ok(match level {
        0 => MemberState::Stored(StoredMember::start(inner)?),
        level => MemberState::Deflated(
            level,
            Box::new(GzEncoder::new(inner, flate2::Compression::new(level))),
        ),
    })
}

impl<W: Write> Write for GzipMembers<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if matches!(self.state, Some(MemberState::Between(_))) {
            self.use_level(6)?;
        }
        match self.state.as_mut().expect("no write failed half-way") {
            MemberState::Deflated(_, encoder) => encoder.write(buf),
            MemberState::Stored(member) => member.write(buf),
            MemberState::Between(_) => unreachable!("a member was started above"),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.state.as_mut().expect("no write failed half-way") {
            MemberState::Deflated(_, encoder) => encoder.flush(),
            MemberState::Stored(member) => member.inner.flush(),
            MemberState::Between(inner) => inner.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_deflated_and_media_stored() {
        assert!(compresses_well("text/plain; charset=utf-8"));
        assert!(compresses_well("application/ld+json"));
        assert!(compresses_well("image/svg+xml"));
        assert!(!compresses_well("image/jpeg"));
        assert!(!compresses_well("video/mp4"));
        assert!(!compresses_well("application/octet-stream"));
        assert_eq!(Compression::Auto.level_for("image/png"), 0);
        assert_eq!(Compression::Best.level_for("image/png"), 9);
        assert_eq!(Compression::None.level_for("text/plain"), 0);
    }

    #[test]
    fn a_body_must_yield_exactly_its_size() {
        let mut out = Vec::new();
        let short = copy_exact(&mut &b"abc"[..], &mut out, 6).unwrap();
        assert!(short.unwrap_err().to_string().contains("3 bytes early"));
        let long = copy_exact(&mut &b"abcdef"[..], &mut out, 3).unwrap();
        assert!(long.unwrap_err().to_string().contains("longer"));
        out.clear();
        copy_exact(&mut &b"abc"[..], &mut out, 3).unwrap().unwrap();
        assert_eq!(out.len(), 512);
    }

    #[test]
    fn tar_sizes_count_headers_padding_and_long_names() {
        assert_eq!(tar_size("a", 0), 512);
        assert_eq!(tar_size("a", 1), 1024);
        assert_eq!(tar_size("a", 512), 1024);
        assert_eq!(tar_size(&"n".repeat(150), 1), 512 + 512 + 1024);
    }
}
