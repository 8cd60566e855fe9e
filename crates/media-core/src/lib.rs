//! Domain types shared by every tool of the Matrix media toolkit.
//!
//! * [`ids`]: validated Matrix identifiers (server names, media IDs, MXC URIs, user IDs) and
//!   SHA-256 digests. Every identifier that may end up in a path is validated here first.
//! * [`records`]: media and thumbnail records as our repository stores them.
//! * [`retention`]: retention policies and the purge plans they give (pure functions).
//! * [`datastore`]: the [`Datastore`] trait every byte store implements, with its key scheme
//!   and the [`HashingReader`] that hashes bytes while they stream.
//! * [`local_files`]: opening a file below a folder without following links or opening
//!   anything but a regular file.
//! * [`moment`]: points in time as operators write them (a date, Unix milliseconds, an
//!   age such as `30d`).
//! * [`progress`]: live counters for progress displays, and sizes for people.
//! * [`run`]: the vocabulary every job shares: run mode, error class, failure list,
//!   report.
//!
//! This crate is for programs that embed the toolkit: everything else (the repository in
//! `media-db`, the datastores in `media-store`, imports in `media-import`, the GDPR archive
//! format in `media-archive`, GDPR exports and imports in `media-gdpr`) speaks in these
//! types. Identifiers are parsed once, at the edge, and are valid from then on:
//!
//! ```
//! use media_core::{MediaKey, MxcUri, UserId};
//!
//! let mxc: MxcUri = "mxc://example.org/abcDEF123".parse()?;
//! assert_eq!(mxc.server().as_str(), "example.org");
//! let key = MediaKey::from(mxc);
//! assert_eq!(key.media_id.as_str(), "abcDEF123");
//!
//! let alice: UserId = "@alice:example.org".parse()?;
//! assert_eq!(alice.server_name().as_str(), "example.org");
//!
//! // A media ID that could escape a folder is refused, with the reason.
//! assert!("mxc://example.org/../../etc".parse::<MxcUri>().is_err());
//! # Ok::<(), media_core::IdError>(())
//! ```
#![deny(missing_docs)]

pub mod blocking;
pub mod datastore;
pub mod hashing;
pub mod html;
pub mod ids;
pub mod local_files;
pub mod moment;
pub mod progress;
pub mod records;
pub mod retention;
pub mod run;

pub use datastore::{
    BlobKey, BlobPayload, BlobReader, ByteRange, Datastore, DatastoreExt, DeleteStatus, Durability,
    Expected, Put, PutOptions, PutStatus, StoreError, StoredBlob,
};
pub use hashing::HashingReader;
pub use ids::{IdError, MediaId, MxcUri, ServerName, Sha256Hex, UserId};
pub use progress::{Progress, human_size};
pub use records::{MediaKey, MediaRecord, Purpose, ThumbnailMethod, ThumbnailRecord};

/// Milliseconds since the Unix epoch, the time unit of every timestamp in the toolkit
/// (Synapse, Dendrite and matrix-media-repo all use it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
