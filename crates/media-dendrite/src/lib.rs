//! Media retention for Dendrite: purge old remote (and optionally local) media while
//! keeping avatars and every hash directory a kept row still uses; check the media
//! tables against the media folder and repair what drifted.
//!
//! * [`db`]: Dendrite's databases: its media tables (read, and deleted from by a purge) and
//!   the avatars in use.
//! * [`config`]: `dendrite.yaml`, with Dendrite's connection-string precedence.
//! * [`layout`]: the media folder, with every hash validated before it becomes a path.
//! * [`safety`]: the checks that refuse a folder before anything changes (the root, foreign
//!   entries, a folder that looks unmounted).
//! * [`lock`]: one run at a time per media folder.
//! * [`avatars`]: the media in use as profile, room, member and server-notices avatars.
//! * [`store`]: what a run works on (the media database and folder); the purge and the
//!   sanity checks are its methods.
//! * [`purge`]: the purge (plan from [`media_core::retention`], rows then files).
//! * [`sanity`]: the sanity checks and `--fix`.
//! * [`run`]: one whole run, wired from a config.
//! * [`report`]: what a run did, the same shape in a dry run.
//!
//! [`clean`] does one whole run from a [`DendriteConfig`] and [`CleanOptions`], the same
//! run the `cleanmedia` tool does. Everything starts from Dendrite's own config, read
//! with Dendrite's precedence (a component's database over `global.database`):
//!
//! ```
//! use std::path::Path;
//!
//! use media_dendrite::DendriteConfig;
//!
//! let yaml = "
//! global:
//!   server_name: example.org
//!   database:
//!     connection_string: postgres://dendrite@localhost/dendrite
//! media_api:
//!   base_path: ./media_store
//! ";
//! let config = DendriteConfig::parse(yaml, Path::new("/srv/dendrite"))?;
//! assert_eq!(config.server_name.as_str(), "example.org");
//! assert_eq!(config.base_path, Path::new("/srv/dendrite/media_store"));
//! assert_eq!(config.media_database, "postgres://dendrite@localhost/dendrite");
//!
//! // Synapse's homeserver.yaml is refused with advice, not half understood.
//! let error = DendriteConfig::parse("server_name: example.org\nmedia_store_path: /m\n", Path::new("/"))
//!     .unwrap_err();
//! assert!(error.contains("Synapse"), "{error}");
//! # Ok::<(), String>(())
//! ```
#![deny(missing_docs)]

pub mod avatars;
pub mod config;
pub mod db;
pub mod error;
pub mod layout;
pub mod lock;
pub mod purge;
pub mod report;
pub mod run;
pub mod safety;
pub mod sanity;
pub mod store;

pub use avatars::AvatarSet;
pub use config::DendriteConfig;
pub use error::CleanError;
pub use layout::MediaFolder;
pub use report::{CleanReport, FailureReason, PurgeReport, Repair, SanityReport};
pub use run::{CleanOptions, MediaSpec, Request, clean};
pub use safety::MountTables;
pub use store::DendriteStore;
