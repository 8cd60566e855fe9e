//! GDPR exports and imports between a media repository and matrix-media-repo v2 archives.
//!
//! * [`export`]: one user's uploads, or all media of one server, into an archive folder:
//!   bytes streamed from the datastore (hashed on the way, so bit rot is caught), each
//!   distinct blob written once, quarantined media left out. The sources are our
//!   repository, a Synapse (straight from its database and media store) and any source
//!   whose rows name their bytes by datastore and location ([`PlacedStores`]:
//!   `media_mmr::export_from_mmr` reads a matrix-media-repo deployment so); one writer
//!   serves them all.
//! * [`import`]: an archive folder back into a repository, every record's bytes checked
//!   against the manifest before anything is written; `verify` checks without writing.
//!   It writes through the narrow [`ArchiveSink`] ([`sink`]): our repository
//!   ([`import_archive`]) or a matrix-media-repo deployment (`media_mmr::MmrArchiveSink`
//!   with [`import_archive_into`]).
//!
//! An export reads a repository and its datastores (filled, for instance, by
//! `media_import::import_synapse`) and writes `export-part-N.tgz` files and
//! `export-manifest.tgz`, which matrix-media-repo's own tools read too. Importing a
//! Synapse and exporting one user (`examples/import_and_export.rs` does the same as a
//! program):
//!
//! ```
//! use std::path::Path;
//! use std::sync::Arc;
//!
//! use media_archive::WriterOptions;
//! use media_core::run::Report;
//! use media_db::{AttachOptions, Datastores};
//! use media_gdpr::{ExportOptions, MediaBytes, Progress};
//! use media_import::{ImportOptions, Include};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let synapse_dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/synapse/sqlite"));
//! let folder = tempfile::tempdir()?;
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let repo = media_db::connect("sqlite::memory:").await?;
//!     let store = media_store::open(&folder.path().join("store").display().to_string()).await?;
//!     // The datastore new bytes go to, and the repository's other datastores (read
//!     // when a blob's row names one of them).
//!     let opener = Arc::new(media_store::ReadOnlyOpener);
//!     let datastores =
//!         Datastores::attach(&repo, store.clone(), AttachOptions::WRITE, opener).await?;
//!
//!     let synapse_db = synapse_dir.join("homeserver.db").display().to_string();
//!     let synapse = media_synapse::open_synapse(&synapse_db).await?;
//!     let options = ImportOptions {
//!         media_store: Some(synapse_dir.join("media_store")),
//!         homeserver: None,
//!         server_name: media_synapse::resolve_server_name(&synapse, None).await?,
//!         include: Include::default(),
//!         workers: 2,
//!         mode: media_core::run::RunMode::Apply,
//!         source_label: media_synapse::source_label(&synapse_db),
//!         shard: media_import::Shard::ALL,
//!     };
//!     let progress = Arc::new(Progress::default());
//!     media_import::import_synapse(&synapse, &repo, store.clone(), options, progress).await?;
//!     synapse.close().await;
//!
//!     let options = ExportOptions {
//!         entity: "@alice:fixture.test".parse()?,
//!         destination: folder.path().join("alice"),
//!         writer: WriterOptions::default(),
//!         media_bytes: MediaBytes::Included,
//!     };
//!     let progress = Arc::new(Progress::default());
//!     let report = media_gdpr::export_from_repository(&repo, datastores, options, progress).await?;
//!     println!("{report}");
//!     assert!(report.manifest.is_file());
//!     assert!(!report.has_failures());
//!     repo.close().await;
//!     Ok(())
//! })
//! # }
//! ```
#![deny(missing_docs)]

use std::io::Read;
use std::str::FromStr;

use media_archive::ArchiveError;
use media_core::datastore::StoreError;
use media_core::ids::{ServerName, UserId};
use media_core::run::{Classify, ErrorClass};
use media_db::DbError;

pub mod export;
pub mod import;
mod record_index;
pub mod sink;

pub use export::{
    Content, ExportItem, ExportItems, ExportOptions, ExportReason, ExportReport, MediaBytes,
    NotOpened, PlacedStores, export_from_placed, export_from_repository, export_from_synapse,
};
pub use import::{ImportOptions, ImportReason, ImportReport, import_archive, import_archive_into};
pub use sink::{ArchiveSink, RecordedBytes, RepositoryArchiveSink, Stored};

/// Whose media: one user's uploads, or every media of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    /// A user (`@alice:example.org`).
    User(UserId),
    /// A server (`example.org`).
    Server(ServerName),
}

impl Entity {
    /// The server the entity's media belong to.
    pub fn server(&self) -> &ServerName {
        match self {
            Self::User(user) => user.server_name(),
            Self::Server(server) => server,
        }
    }
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(user) => user.fmt(f),
            Self::Server(server) => server.fmt(f),
        }
    }
}

impl FromStr for Entity {
    type Err = String;

    /// `@user:server` is a user, anything else must be a server name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with('@') {
            UserId::try_from(s)
                .map(Self::User)
                .map_err(|e| e.to_string())
        } else {
            ServerName::try_from(s)
                .map(Self::Server)
                .map_err(|e| format!("{e} (a user ID starts with @)"))
        }
    }
}

pub use media_core::progress::Progress;

/// What stops an export or import as a whole (problems of single items are listed in
/// the reports instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GdprError {
    /// Our repository failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The datastore failed (full disk, permissions): not a problem of one item.
    #[error("the datastore failed: {0}")]
    Store(#[from] StoreError),
    /// The archive cannot be read or written.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A setting that cannot work.
    #[error("{0}")]
    Config(String),
    /// A worker thread stopped unexpectedly.
    #[error("a worker failed: {0}")]
    Worker(String),
    /// The entity has no media at all: an export would be an empty answer to a GDPR
    /// request, so none is written.
    #[error(
        "no media of {entity} found: no archive was written.{}",
        suggest_line(suggestions)
    )]
    NoMedia {
        /// The entity asked for.
        entity: String,
        /// Known users or servers it may have meant, nearest first.
        suggestions: Vec<String>,
    },
}

/// The "did you mean" sentence of [`GdprError::NoMedia`].
fn suggest_line(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        " Check the user ID (@localpart:server) or server name.".to_owned()
    } else {
        format!(" Did you mean {}?", suggestions.join(", "))
    }
}

impl Classify for GdprError {
    /// What the operator asked for or pointed at is wrong (usage); an entity without
    /// media is an item-level outcome (exit 1); anything failing during the run is fatal.
    fn class(&self) -> ErrorClass {
        match self {
            Self::Config(_) => ErrorClass::Usage,
            Self::Db(e) => e.class(),
            Self::NoMedia { .. } => ErrorClass::Item,
            Self::Archive(
                ArchiveError::NoArchive { .. }
                | ArchiveError::NoManifest { .. }
                | ArchiveError::TwoManifests { .. }
                | ArchiveError::BadManifest(_)
                | ArchiveError::UnsupportedVersion(_)
                | ArchiveError::DestinationHasExport { .. }
                | ArchiveError::NotARegularFile { .. },
            ) => ErrorClass::Usage,
            _ => ErrorClass::Fatal,
        }
    }
}

/// Reads until `buf` is full or the source ends.
pub(crate) fn read_full(source: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_are_users_or_servers() {
        let user: Entity = "@alice:example.org".parse().unwrap();
        assert!(matches!(user, Entity::User(_)));
        assert_eq!(user.server().as_str(), "example.org");
        let server: Entity = "example.org:8448".parse().unwrap();
        assert!(matches!(server, Entity::Server(_)));
        assert!("@".parse::<Entity>().is_err());
        assert!("../etc".parse::<Entity>().is_err());
    }
}
