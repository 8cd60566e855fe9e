//! A matrix-media-repo (MMR) deployment.
#![deny(missing_docs)]

pub mod config;
pub mod error;

pub use error::MmrError;
