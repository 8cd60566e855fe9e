//! The errors that stop an upkeep run. One media that cannot be handled is not an error
//! but a listed failure of the report.

use std::path::PathBuf;

use media_core::run::{Classify, ErrorClass};
use media_db::DbError;
use media_synapse::SynapseError;

use crate::admin_api::ApiError;

/// Why an upkeep run cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum UpkeepError {
    /// Synapse's database cannot be opened or failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Synapse's database or media store does not fit (wrong server name, a folder
    /// that is not its media store).
    #[error(transparent)]
    Synapse(#[from] SynapseError),
    /// Synapse's admin API as a whole: a wrong URL or token, an unreachable Synapse, a
    /// refused request that applies the whole plan.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Another run is purging the same media store.
    #[error("{0}")]
    Busy(String),
    /// Synapse's database lacks what the run reads (a table of a later Synapse).
    #[error("{0}")]
    Unsupported(String),
    /// The media store (or the purge journal in it) cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A background file task stopped unexpectedly.
    #[error("removing files stopped unexpectedly: {0}")]
    Task(String),
}

impl Classify for UpkeepError {
    /// A wrong setting, a busy store and a database too old for the run are the operator's to sort out (nothing was
    /// changed); the database's and the admin API's errors classify themselves; the rest is fatal, and a
    /// new run carries on where this one stopped.
    fn class(&self) -> ErrorClass {
        match self {
            Self::Db(e) => e.class(),
            Self::Synapse(e) => e.class(),
            Self::Api(e) => e.class(),
            Self::Busy(_) | Self::Unsupported(_) => ErrorClass::Usage,
            Self::Io { .. } | Self::Task(_) => ErrorClass::Fatal,
        }
    }
}
