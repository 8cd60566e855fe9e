//! Implementations of the [`Datastore`] trait: a content-addressed folder on a local
//! filesystem ([`FileDatastore`]), a bucket of an S3-compatible object store
//! ([`S3Datastore`]) and an in-memory store ([`MemoryDatastore`]), and [`open`], which
//! picks one from a URI; for tests, [`faulty::FaultyDatastore`] fails
//! on demand, and (feature `conformance`) the conformance suite every backend runs,
//! `conformance` and `datastore_conformance!`.
//!
//! A datastore holds bytes only, each blob once, under a key derived from its SHA-256;
//! what the bytes are (which media, whose) is recorded in the repository (`media-db`).
//! Every put is hashed while it streams and written atomically:
//!
//! ```
//! use media_core::{DatastoreExt, PutStatus};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let folder = tempfile::tempdir()?;
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let store = media_store::open(&folder.path().display().to_string()).await?;
//!     let put = store.put_bytes(b"hello, matrix").await?;
//!     assert_eq!(put.blob.size, 13);
//!     // The same bytes again are deduplicated: nothing new is written.
//!     assert_eq!(store.put_bytes(b"hello, matrix").await?.status, PutStatus::AlreadyPresent);
//!     assert_eq!(store.get_bytes(&put.blob.key).await?, b"hello, matrix");
//!     Ok(())
//! })
//! # }
//! ```
#![deny(missing_docs)]

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod faulty;
pub mod fs;
pub mod memory;
pub mod s3;

use std::path::PathBuf;
use std::sync::Arc;

pub use fs::{CleanupReport, FileDatastore};
use media_core::datastore::{Datastore, DatastoreOpener, StoreError};
pub use memory::MemoryDatastore;
pub use s3::{S3Datastore, S3Location};

/// The datastore URIs [`open`] accepts, for error messages and `--help`. (`memory://`,
/// an in-memory store for tests, is accepted too but never suggested: a repository that
/// outlives the process refuses it.)
pub const ACCEPTED_URIS: &str = "file:///absolute/path, file://relative/path, a bare path, or \
     s3://bucket/optional/prefix?endpoint=http://host:port&region=name";

/// Where a datastore URI points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreLocation {
    /// A local folder.
    Folder(PathBuf),
    /// A fresh in-memory store.
    Memory,
    /// A bucket (and prefix) of an S3-compatible object store.
    S3(S3Location),
}

/// Parses a datastore URI without opening anything.
pub fn parse_uri(uri: &str) -> Result<DatastoreLocation, StoreError> {
    let unsupported = |why: &str| {
        StoreError::Config(format!(
            "unsupported datastore {uri:?}: {why}; use {ACCEPTED_URIS}"
        ))
    };
    if uri.trim().is_empty() {
        return Err(unsupported("it is empty"));
    }
    if uri == "memory://" || uri == "memory:" {
        return Ok(DatastoreLocation::Memory);
    }
    if let Some(path) = uri.strip_prefix("file://") {
        if path.is_empty() {
            return Err(unsupported("the file:// URI names no folder"));
        }
        return Ok(DatastoreLocation::Folder(PathBuf::from(path)));
    }
    if uri.starts_with("s3://") {
        return S3Location::parse(uri).map(DatastoreLocation::S3);
    }
    match uri.split_once("://") {
        Some((scheme, _)) => Err(unsupported(&format!("unknown scheme {scheme:?}"))),
        None if uri.contains(':') && !uri.starts_with(['/', '.']) => {
            Err(unsupported("it looks like a URI without //"))
        }
        None => Ok(DatastoreLocation::Folder(PathBuf::from(uri))),
    }
}

/// Opens the datastore a URI names: see [`ACCEPTED_URIS`]. Folders are created when
/// missing and checked for write access; an S3 bucket is checked for access before
/// anything is written (see [`S3Datastore::open`]).
pub async fn open(uri: &str) -> Result<Arc<dyn Datastore>, StoreError> {
    Ok(match parse_uri(uri)? {
        DatastoreLocation::Folder(path) => Arc::new(FileDatastore::open(path).await?),
        DatastoreLocation::Memory => Arc::new(MemoryDatastore::new()),
        DatastoreLocation::S3(location) => Arc::new(S3Datastore::open(location).await?),
    })
}

/// For a dry run: opens the datastore like [`open`] when its folder exists, but never
/// creates one; a missing folder is an empty in-memory stand-in with the folder's URI.
pub async fn open_for_dry_run(uri: &str) -> Result<Arc<dyn Datastore>, StoreError> {
    match parse_uri(uri)? {
        DatastoreLocation::Folder(path) if !path.is_dir() => Ok(stand_in(path)),
        _ => open(uri).await,
    }
}

/// An empty stand-in for the missing folder `path`, reporting the URI the folder would
/// have (see [`MemoryDatastore::stand_in_for`]).
fn stand_in(path: PathBuf) -> Arc<dyn Datastore> {
    let absolute = std::path::absolute(&path).unwrap_or(path);
    Arc::new(MemoryDatastore::stand_in_for(format!(
        "file://{}",
        absolute.display()
    )))
}

/// For tools that only read (exports, verification): opens the datastore without
/// creating or writing anything, so that it works on a read-only mount; a missing folder
/// is an empty in-memory stand-in with the folder's URI.
pub async fn open_read_only(uri: &str) -> Result<Arc<dyn Datastore>, StoreError> {
    Ok(match parse_uri(uri)? {
        DatastoreLocation::Folder(path) if !path.is_dir() => stand_in(path),
        DatastoreLocation::Folder(path) => Arc::new(FileDatastore::open_read_only(path)),
        DatastoreLocation::Memory => Arc::new(MemoryDatastore::new()),
        DatastoreLocation::S3(location) => Arc::new(S3Datastore::open_read_only(location).await?),
    })
}

/// Opens any datastore URI [`open_read_only`] accepts: the [`DatastoreOpener`] through
/// which a repository reaches the other datastores it recorded.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOnlyOpener;

#[async_trait::async_trait]
impl DatastoreOpener for ReadOnlyOpener {
    async fn open_read_only(&self, uri: &str) -> Result<Arc<dyn Datastore>, StoreError> {
        open_read_only(uri).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_map_to_locations() {
        let folder = |p: &str| DatastoreLocation::Folder(PathBuf::from(p));
        let parse = |uri: &str| parse_uri(uri).unwrap();
        assert_eq!(parse("file:///srv/media"), folder("/srv/media"));
        assert_eq!(parse("file://media-store"), folder("media-store"));
        assert_eq!(parse("file://./a/b"), folder("./a/b"));
        assert_eq!(parse("media-store"), folder("media-store"));
        assert_eq!(parse("/abs/store"), folder("/abs/store"));
        assert_eq!(parse("memory://"), DatastoreLocation::Memory);
        assert_eq!(
            parse("s3://media/store?endpoint=http://127.0.0.1:3900"),
            DatastoreLocation::S3(S3Location {
                bucket: "media".into(),
                prefix: "store".into(),
                endpoint: Some("http://127.0.0.1:3900".into()),
                region: None,
                profile: None,
            })
        );
    }

    #[test]
    fn unknown_schemes_name_the_accepted_ones() {
        for bad in ["http://x", "", "file://", "c:media"] {
            let err = parse_uri(bad).unwrap_err().to_string();
            assert!(err.contains("file:///absolute/path"), "{bad}: {err}");
        }
    }
}
