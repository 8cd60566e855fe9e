//! Import pipelines into our media repository.
//!
//! * [`synapse`]: a whole Synapse media store (database + `media_store` folder).
//! * [`homeserver`]: downloading media from a running homeserver (the HTTP fallback).
//! * [`synapse_paths`]: where Synapse keeps each file, built only from validated parts.
//! * [`synapse_files`]: opening those files without leaving the media store.
//! * [`store_check`]: a first look at a media store before anything is created.
//!
//! [`import_synapse`] copies a Synapse's media (local uploads, cached remote media,
//! thumbnails, URL previews; avatars pinned) into our repository: every file's bytes are
//! checked against what Synapse recorded, each distinct content stored once, and one bad
//! file is a listed failure in the [`ImportReport`], never the end of the run. Running it
//! again imports only what is new. Synapse's database is only read:
//!
//! ```
//! use std::path::Path;
//! use std::sync::Arc;
//!
//! use media_db::{AttachOptions, MediaIndex};
//! use media_import::{ImportOptions, Include, Progress};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let synapse_dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/synapse/sqlite"));
//! let folder = tempfile::tempdir()?;
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let repo = media_db::connect("sqlite::memory:").await?;
//!     let store = media_store::open(&folder.path().display().to_string()).await?;
//!     repo.attach_datastore(store.as_ref(), AttachOptions::WRITE).await?;
//!
//!     let synapse_db = synapse_dir.join("homeserver.db").display().to_string();
//!     let synapse = media_db::synapse::open_synapse(&synapse_db).await?;
//!     let options = ImportOptions {
//!         media_store: Some(synapse_dir.join("media_store")),
//!         homeserver: None, // or a HomeserverClient to download missing files
//!         server_name: media_import::resolve_server_name(&synapse, None).await?,
//!         include: Include::default(),
//!         workers: 2,
//!         dry_run: false,
//!         source_label: media_import::source_label(&synapse_db),
//!     };
//!     let progress = Arc::new(Progress::default());
//!     let report = media_import::import_synapse(&synapse, &repo, store, options, progress).await?;
//!     println!("{report}");
//!     // Alice uploaded six media; one was created but never uploaded: no bytes to import.
//!     let alice = "@alice:fixture.test".parse()?;
//!     assert_eq!(repo.count_media_by_uploader(&alice).await?, 5);
//!     synapse.close().await;
//!     repo.close().await;
//!     Ok(())
//! })
//! # }
//! ```
#![deny(missing_docs)]

pub mod homeserver;
pub mod store_check;
pub mod synapse;
pub mod synapse_files;
pub mod synapse_paths;

pub use homeserver::HomeserverClient;
pub use media_core::progress::Progress;
pub use store_check::check_media_store;
pub use synapse::{
    FailureReason, ImportError, ImportOptions, ImportReport, Include, ItemFailure, SynapseMedia,
    import_synapse, local_media, remote_media, resolve_server_name, source_label,
};
