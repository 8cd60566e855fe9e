//! A matrix-media-repo (MMR) deployment.
#![deny(missing_docs)]

pub mod config;
pub mod datastores;
pub mod deployment;
pub mod error;
pub mod schema;

pub use config::{MediaKind, MmrConfig, MmrDatastoreId};
pub use datastores::{Access, MmrDatastore, MmrDatastores};
pub use deployment::{BlockedId, MmrDeployment, MmrMedia, MmrThumbnail, Placement};
pub use error::MmrError;
