//! Import pipelines into our media repository.
//!
//! [`import_synapse`] runs a whole Synapse media store (database + `media_store` folder,
//! or the homeserver over HTTP) into our repository. Reading Synapse is `media-synapse`'s
//! job; this crate is the pipeline, one module per job:
//!
//! * [`pipeline`]: the run: a producer, `workers` copying tasks and one recorder.
//! * [`options`], [`report`], [`error`]: what a run is given, reports and stops with.
//! * [`shard`]: one share of an import spread over several processes or machines.
//! * [`sink`]: where an import writes ([`ImportSink`]): our repository
//!   ([`RepositorySink`]) or, through `media-mmr`, a matrix-media-repo deployment.
//! * inside: `plan` (Synapse's rows → work items: where each file is, what it must be),
//!   `produce` (the producer, page by page, skipping what is recorded), `work` and
//!   `copy` (a worker, and copying one file into the datastore), `ahead` (a worker's
//!   small files put in one blocking call), `dry_run` (what a dry
//!   run does instead of writing), `record` (the recorder, many media per transaction),
//!   `avatars` (pinning the media in use as avatars).
//! * [`rooms`]: recording which rooms hold which media, from Synapse's events.
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
//! use media_core::run::RunMode;
//! use media_db::{AttachOptions, MediaIndex};
//! use media_import::{ImportOptions, Include, Progress, Shard};
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
//!     let synapse = media_synapse::open_synapse(&synapse_db).await?;
//!     let options = ImportOptions {
//!         media_store: Some(synapse_dir.join("media_store")),
//!         homeserver: None, // or a HomeserverClient to download missing files
//!         server_name: media_synapse::resolve_server_name(&synapse, None).await?,
//!         include: Include::default(),
//!         workers: 2,
//!         mode: RunMode::Apply,
//!         source_label: media_synapse::source_label(&synapse_db),
//!         shard: Shard::ALL, // or one share of an import spread over several machines
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

mod ahead;
mod avatars;
mod context;
mod copy;
mod dry_run;
pub mod error;
pub mod options;
pub mod pipeline;
mod plan;
mod produce;
mod record;
pub mod report;
pub mod rooms;
pub mod shard;
pub mod sink;
mod work;

pub use error::ImportError;
pub use media_core::progress::Progress;
pub use media_synapse::{HomeserverClient, Include};
pub use options::ImportOptions;
pub use pipeline::{import_synapse, import_synapse_into};
pub use report::{FailureReason, ImportReport, ItemFailure};
pub use shard::Shard;
pub use sink::{Content, ImportSink, RepositorySink, StoredMedia};
