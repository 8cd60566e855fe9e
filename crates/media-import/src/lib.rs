//! Import pipelines into our media repository.
//!
//! * [`synapse`]: a whole Synapse media store (database + `media_store` folder).
//! * [`homeserver`]: downloading media from a running homeserver (the HTTP fallback).
//! * [`synapse_paths`]: where Synapse keeps each file, built only from validated parts.
//! * [`synapse_files`]: opening those files without leaving the media store.
//! * [`store_check`]: a first look at a media store before anything is created.
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
