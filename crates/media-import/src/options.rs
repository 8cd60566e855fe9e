//! How to run an import.

use std::path::PathBuf;

use media_core::ids::ServerName;
use media_core::run::RunMode;
use media_synapse::{HomeserverClient, Include};

use crate::shard::Shard;

/// How to run an import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Synapse's `media_store_path` (`None`: everything comes from the homeserver).
    pub media_store: Option<PathBuf>,
    /// Where to download media whose file is missing (or all media, when there is no
    /// media store).
    pub homeserver: Option<HomeserverClient>,
    /// The Synapse server's name (the origin of its local media).
    pub server_name: ServerName,
    /// What to import.
    pub include: Include,
    /// Files copied concurrently.
    pub workers: usize,
    /// A dry run reads and checks everything and writes nothing.
    pub mode: RunMode,
    /// Recorded as `imported_from` on every media (e.g. `synapse:/srv/homeserver.db`).
    pub source_label: String,
    /// The share of the media this run imports ([`Shard::ALL`]: every media).
    pub shard: Shard,
}
