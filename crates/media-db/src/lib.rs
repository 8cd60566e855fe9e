//! The database layer of the media toolkit.
//!
//! * [`repo`]: our media repository on SQLite or PostgreSQL ([`connect()`] opens it by URL and
//!   brings its schema up to date).
//! * [`synapse`]: a read-only adapter over Synapse's media tables and avatars.
//! * [`dendrite`]: an adapter over Dendrite's media tables (read and purged) and avatars.
//! * [`connect`](mod@connect): URLs, dialects and connection pools shared by every adapter.
#![deny(missing_docs)]

pub mod connect;
pub mod dendrite;
pub mod error;
mod paging;
pub mod repo;
mod rows;
pub mod synapse;

pub use connect::{Dialect, redact_url};
pub use error::DbError;
pub use repo::{
    AttachOptions, Blob, BlobOutcome, DatastoreAccess, DatastoreId, DeletedMedia, DrainReport,
    InsertOutcome, MediaOutcome, NewBlob, NewMedia, PendingDeletion, PinReport, QuarantineChange,
    QuarantineChangesPage, QuarantineReport, Repository, connect, connect_existing,
    connect_for_dry_run, connect_read_only,
};
