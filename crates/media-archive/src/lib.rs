//! The GDPR archive format of matrix-media-repo (version 2, reading version 1 too): a
//! folder of gzip-compressed, flat tar files ("parts") and a manifest naming, for every
//! media, the entry holding its bytes.
//!
//! * [`manifest`]: `manifest.json`, parsed and checked.
//! * [`writer`]: [`ArchiveWriter`] streams entries into parts of a bounded size and writes
//!   `export-manifest.tgz` last; bytes shared by several records are stored once.
//! * [`reader`]: [`ArchiveFolder`] finds the manifest in whichever part holds it and
//!   streams the media entries of each part, refusing links, paths and other tricks.
//! * [`index`]: the `index.html` page an archive carries for people.
//!
//! Both sides hold one entry's chunk at a time: memory does not grow with the archive.
//! The format knows nothing of databases or datastores: `media-gdpr` fills archives from
//! the repository (or from Synapse) and imports them back; this crate only writes and
//! reads the files.
//!
//! ```
//! use std::io::Read;
//! use media_archive::{ArchiveFolder, ArchiveWriter, ManifestRecord, MediaEntry, NewEntry};
//!
//! let dir = tempfile::tempdir()?;
//! let out = dir.path().join("export");
//! let mut writer = ArchiveWriter::create(&out, &Default::default())?;
//! let bytes = b"hello";
//! let entry = NewEntry {
//!     name: "example.org__abc.txt",
//!     size: bytes.len() as u64,
//!     mtime_ms: 1_700_000_000_000,
//!     content_type: "text/plain",
//! };
//! writer.add_entry(entry, &mut &bytes[..])?;
//! let record = ManifestRecord {
//!     file_name: "example.org__abc.txt".into(),
//!     size_bytes: bytes.len() as u64,
//!     sha256: media_core::hashing::sha256_of(bytes).to_string(),
//!     origin: "example.org".into(),
//!     media_id: "abc".into(),
//!     ..ManifestRecord::default()
//! };
//! writer.add_record("mxc://example.org/abc", &record)?;
//! writer.finish("example.org", 1_700_000_000_000)?;
//!
//! let folder = ArchiveFolder::open(&out)?;
//! assert_eq!(folder.manifest.records, 1);
//! folder.read_media(&folder.parts[0], |entry| {
//!     if let MediaEntry::File { name, body, .. } = entry {
//!         let mut read = String::new();
//!         body.read_to_string(&mut read).unwrap();
//!         assert_eq!((name, read.as_str()), ("example.org__abc.txt", "hello"));
//!     }
//!     Ok::<_, media_archive::ArchiveError>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

mod destination;
pub mod index;
pub mod manifest;
pub mod reader;
pub mod writer;

pub use index::LeftOut;
pub use manifest::{CheckedRecord, Manifest, ManifestRecord};
pub use reader::{ArchiveFolder, MediaEntry};
pub use writer::{
    ArchiveSummary, ArchiveWriter, Compression, NewEntry, WriterOptions, WrittenEntry,
};

/// The file name of the manifest part of a version-2 archive.
pub const MANIFEST_PART: &str = "export-manifest.tgz";

/// Suffix of a file being written; renamed away once it is complete.
pub(crate) const PARTIAL_SUFFIX: &str = ".partial";

/// The file name of part `number` (counted from 1).
pub fn part_file_name(number: u32) -> String {
    format!("export-part-{number}.tgz")
}

/// What can go wrong reading or writing an archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The folder holds no gzip file at all.
    #[error("{} holds no archive: no .tgz part was found in it", dir.display())]
    NoArchive {
        /// The folder.
        dir: PathBuf,
    },
    /// No part holds a `manifest.json`.
    #[error(
        "no part in {} holds a manifest.json: the archive is incomplete (was the export \
         interrupted?)",
        dir.display()
    )]
    NoManifest {
        /// The folder.
        dir: PathBuf,
    },
    /// Two `manifest.json` entries: the archive cannot be trusted.
    #[error(
        "the archive has two manifests, in {} and in {}: refusing to guess which one is right",
        first.display(),
        second.display()
    )]
    TwoManifests {
        /// Where the first one is.
        first: PathBuf,
        /// Where the second one is.
        second: PathBuf,
    },
    /// The manifest is not a manifest we can use.
    #[error("the manifest is unusable: {0}")]
    BadManifest(String),
    /// The manifest was written by a newer or unknown format version.
    #[error("manifest version {0} is not supported: this tool reads versions 1 and 2")]
    UnsupportedVersion(u32),
    /// A part is not a valid gzip-compressed tar (truncated, corrupted).
    #[error("{} is damaged: {detail}", part.display())]
    CorruptPart {
        /// The part.
        part: PathBuf,
        /// What the decoder said.
        detail: String,
    },
    /// The destination already holds an export.
    #[error(
        "{} already holds an export ({}): choose another destination, or pass --force to \
         replace it",
        dir.display(),
        existing.display()
    )]
    DestinationHasExport {
        /// The destination folder.
        dir: PathBuf,
        /// One of the export files found there.
        existing: PathBuf,
    },
    /// A file of the archive folder is a link, a FIFO, a device or a socket: no archive
    /// is read through one (a link could lead out of the folder given, a FIFO could
    /// block forever).
    #[error(
        "{} is {what}, not a regular file: the archive's files must be in the folder \
         itself, and no link, FIFO or device in it is followed or read; copy the file it \
         stands for into the folder (or move it out of the folder) and run again",
        path.display()
    )]
    NotARegularFile {
        /// The entry of the folder.
        path: PathBuf,
        /// What it is ("a link", "a FIFO", "a device", …).
        what: &'static str,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl ArchiveError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}
