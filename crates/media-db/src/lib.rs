//! The database layer of the media toolkit.
//!
//! * [`roles`]: what a media sink does, one narrow trait per role ([`BlobIndex`],
//!   [`MediaIndex`], [`Quarantine`], [`DeletionQueue`], [`BlobTransfer`], [`TaskLog`],
//!   [`MediaAttributes`], [`Purge`], [`UsageReport`], [`StoreCheck`]),
//!   speaking the values of [`model`];
//! * [`repo`]: our media repository on SQLite or PostgreSQL, which plays every role
//!   ([`connect()`] opens it by URL and brings its schema up to date).
//! * [`datastores`](mod@datastores): [`Datastores`], the datastores one run reads blobs
//!   from (each blob from the datastore its row names) and writes new bytes to;
//! * [`location`]: [`DatabaseLocation`], where a database is, parsed once (URL, bare path
//!   or `key=value` settings) and shown without its password;
//! * [`connect`](mod@connect): connection pools and migrations shared by every adapter
//!   (the Synapse adapter lives in `media-synapse`, Dendrite's in `media-dendrite`; both
//!   use them, with [`paging`] and [`error::QueryContext`]);
//! * [`scratch`]: [`scratch::DigestNames`], a job's digest → name map in bounded memory.
//!
//! A [`Repository`] records media (origin, ID, uploader, name, type, SHA-256, size…); the
//! bytes live in a datastore (`media-store`), which [`Repository::attach_datastore`] ties
//! to the repository so that a repository is never read against the wrong folder. The
//! public API speaks in `media-core` types and [`DbError`]; callers need not depend on
//! the database driver. Recording one file:
//!
//! ```
//! use media_core::{DatastoreExt, MediaKey, MediaRecord, Purpose};
//! use media_db::{AttachOptions, MediaIndex, NewMedia};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let folder = tempfile::tempdir()?;
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     // `sqlite://path` (created when missing) or `postgres://…`.
//!     let url = format!("sqlite://{}", folder.path().join("repo.db").display());
//!     let repo = media_db::connect(&url).await?;
//!     let store = media_store::open(&folder.path().join("store").display().to_string()).await?;
//!     let datastore_id = repo
//!         .attach_datastore(store.as_ref(), AttachOptions::WRITE)
//!         .await?
//!         .expect("a writable datastore is always recorded");
//!
//!     // Bytes first, then the record that points at them.
//!     let bytes = b"\x89PNG not really";
//!     let put = store.put_bytes(bytes).await?;
//!     let key = MediaKey { origin: "example.org".parse()?, media_id: "abcDEF123".parse()? };
//!     let record = MediaRecord {
//!         key: key.clone(),
//!         sha256: put.blob.sha256,
//!         size_bytes: put.blob.size,
//!         upload_name: Some("cat.png".into()),
//!         content_type: Some("image/png".into()),
//!         uploader: Some("@alice:example.org".parse()?),
//!         created_ts: media_core::now_ms(),
//!         last_access_ts: None,
//!         quarantined: false,
//!         quarantined_by: None,
//!         purpose: Purpose::None,
//!         imported_from: Some("an example".into()),
//!     };
//!     let new = NewMedia { record, thumbnails: Vec::new(), datastore_id };
//!     repo.insert_media(&new, store.as_ref()).await?;
//!
//!     let stored = repo.get_media(&key).await?.expect("just recorded");
//!     assert_eq!(stored.upload_name.as_deref(), Some("cat.png"));
//!     assert_eq!(repo.count_media_by_uploader(&"@alice:example.org".parse()?).await?, 1);
//!     repo.close().await;
//!     Ok(())
//! })
//! # }
//! ```
#![deny(missing_docs)]

mod checkpointer;
pub mod connect;
pub mod datastores;
pub mod error;
pub mod location;
pub mod model;
pub mod paging;
pub mod repo;
pub mod roles;
mod rows;
pub mod scratch;

pub use datastores::{DatastoreUnavailable, Datastores};
pub use error::DbError;
pub use location::{DatabaseLocation, Dialect, IntoDatabaseLocation, redact_url};
pub use model::{
    Blob, BlobMove, BlobOutcome, BlobTally, DatastoreId, DatastoreUsage, DeletedClaims,
    DeletedMedia, DrainReport, InsertOutcome, MediaOutcome, MoveOutcome, NewBlob, NewMedia,
    PendingDeletion, PinReport, PurgeCandidate, PurgeSelection, PurgeTally, PurgedBatch,
    QUARANTINE_CHANGES_PAGE_LIMIT, QuarantineAction, QuarantineChange, QuarantineChangesPage,
    QuarantineReport, RecordedDatastore, RoomMedia, TaskFilter, TaskId, TaskKind, TaskRecord,
    Unsound, Upload, Usage, UsageTotals,
};
pub use repo::{
    AttachOptions, DatastoreAccess, Repository, connect, connect_existing, connect_for_dry_run,
    connect_read_only, delete_claimed,
};
pub use roles::{
    BlobIndex, BlobTransfer, DeletionQueue, MediaAttributes, MediaIndex, Purge, Quarantine,
    RoomIndex, StoreCheck, TaskLog, UsageReport,
};
