//! Reading a Synapse homeserver's media: everything the toolkit knows about Synapse.
//!
//! * [`db`]: a read-only adapter over Synapse's database (SQLite or PostgreSQL): its
//!   media and thumbnail tables and the avatars in use, read page by page, each row
//!   decoded on its own. [`open_synapse`] opens it.
//! * [`media`]: those rows as checked media ([`SynapseMedia`], [`SynapseThumbnail`]):
//!   every identifier validated before it becomes a path; a row that cannot become a
//!   media is a [`RowFailure`] naming it.
//! * [`events`]: the media rooms hold, read from Synapse's events.
//! * [`paths`]: where Synapse keeps each file under its `media_store_path`.
//! * [`files`]: opening those files without ever leaving the media store.
//! * [`store_check`]: a first look at a media store before a job starts.
//! * [`homeserver_config`]: the database, media store and server name that
//!   `homeserver.yaml` sets.
//! * [`server`]: which server a Synapse belongs to, and the label of its media.
//! * `homeserver` (feature `http`): downloading media from the running homeserver.
//!
//! The jobs that read a Synapse (`media-import`'s import, `media-gdpr`'s export) build
//! on these pieces; the shared SQL plumbing (URLs, pools, pagination, [`DbError`]) is
//! `media-db`'s. Listing a user's uploads with their files:
//!
//! ```
//! use futures::TryStreamExt;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let synapse_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/synapse/sqlite");
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let synapse = media_synapse::open_synapse(&format!("{synapse_dir}/homeserver.db")).await?;
//!     let server = media_synapse::resolve_server_name(&synapse, None).await?;
//!     let alice = "@alice:fixture.test".parse()?;
//!     let mut pages = synapse.local_media_rows_of(&alice);
//!     let (mut with_bytes, mut refused) = (0, 0);
//!     while let Some(page) = pages.try_next().await? {
//!         for row in page {
//!             match media_synapse::local_media(row?, &server) {
//!                 Ok(media) => {
//!                     assert!(media.path.starts_with("local_content"));
//!                     with_bytes += 1;
//!                 }
//!                 // One was created but never uploaded: there are no bytes to read.
//!                 Err(failure) => refused += u32::from(failure.reason == media_synapse::RowFault::NeverUploaded),
//!             }
//!         }
//!     }
//!     assert_eq!((with_bytes, refused), (5, 1));
//!     synapse.close().await;
//!     Ok(())
//! })
//! # }
//! ```
//!
//! [`DbError`]: media_db::DbError
#![deny(missing_docs)]

pub mod db;
pub mod error;
pub mod events;
pub mod files;
#[cfg(feature = "http")]
pub mod homeserver;
pub mod homeserver_config;
pub mod include;
pub mod media;
pub mod paths;
pub mod server;
pub mod store_check;

pub use db::{SynapseDb, open_synapse};
pub use error::SynapseError;
pub use events::{EventMedia, event_media_urls};
#[cfg(feature = "http")]
pub use homeserver::HomeserverClient;
pub use homeserver_config::HomeserverConfig;
pub use include::Include;
pub use media::{
    RowFailure, RowFault, SynapseMedia, SynapseThumbnail, local_media, local_thumbnail,
    remote_media, remote_thumbnail,
};
pub use server::{resolve_server_name, source_label};
pub use store_check::check_media_store;
