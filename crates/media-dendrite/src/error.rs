//! Errors of a Dendrite purge.

use std::path::PathBuf;

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

impl CleanError {
    /// Whether the operator's input (flags, config, URLs) is at fault, rather than the
    /// run.
    pub fn is_usage(&self) -> bool {
        match self {
            CleanError::Config { .. }
            | CleanError::MediaSelection(_)
            | CleanError::Refused { .. } => true,
            CleanError::Db(db) => db.is_usage(),
            _ => false,
        }
    }
}
