//! Errors of a Dendrite purge.

use std::path::PathBuf;

use media_core::run::{Classify, ErrorClass};
use media_db::DbError;

/// What stops a purge or a sanity check. Per-item problems (a directory that cannot be
/// removed) are not errors: the report lists them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CleanError {
    /// The Dendrite config cannot be used.
    #[error("config {path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong, naming the key to fix.
        reason: String,
    },
    /// `-m` named a media that does not exist, or a bare media ID several origins use.
    #[error("{0}")]
    MediaSelection(String),
    /// The media folder is not one a run may change (the root directory, foreign
    /// entries, or it looks unmounted); nothing was changed.
    #[error("media folder {path} {reason}")]
    Refused {
        /// The media folder.
        path: PathBuf,
        /// Why, and what to do next.
        reason: String,
    },
    /// A database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The media folder cannot be read.
    #[error("media folder {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl Classify for CleanError {
    /// The operator's input (flags, config, URLs, a folder that looks unmounted) is a
    /// usage error; a failing database or folder during the run is fatal.
    fn class(&self) -> ErrorClass {
        match self {
            CleanError::Config { .. }
            | CleanError::MediaSelection(_)
            | CleanError::Refused { .. } => ErrorClass::Usage,
            CleanError::Db(db) => db.class(),
            CleanError::Io { .. } => ErrorClass::Fatal,
        }
    }
}
