//! The error that stops an import (one item's problem is a failure in the report
//! instead).

use media_core::datastore::StoreError;
use media_core::run::{Classify, ErrorClass};
use media_db::DbError;
use media_synapse::SynapseError;

/// Errors that stop an import (per-item problems are failures in the report instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Our repository or the Synapse database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Reading the Synapse cannot go on (a setting that does not fit it, its database).
    #[error(transparent)]
    Synapse(#[from] SynapseError),
    /// The datastore failed (full disk, permissions): not a problem of one item.
    #[error("the datastore failed: {0}")]
    Store(#[from] StoreError),
    /// A setting that cannot work.
    #[error("{0}")]
    Config(String),
    /// An import worker stopped unexpectedly.
    #[error("an import worker failed: {0}")]
    Worker(String),
}

impl Classify for ImportError {
    /// A setting that cannot work or a database or datastore the operator pointed at
    /// wrongly is a usage error; anything failing during the run is fatal.
    fn class(&self) -> ErrorClass {
        match self {
            Self::Config(_) => ErrorClass::Usage,
            Self::Db(e) => e.class(),
            Self::Synapse(e) => e.class(),
            Self::Store(StoreError::Config(_)) => ErrorClass::Usage,
            Self::Store(_) | Self::Worker(_) => ErrorClass::Fatal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_of_the_synapse_source_keep_their_class() {
        let wrong_setting = ImportError::from(SynapseError::Config("x".into()));
        assert_eq!(wrong_setting.class(), ErrorClass::Usage);
        let stopped = ImportError::from(SynapseError::Task("x".into()));
        assert_eq!(stopped.class(), ErrorClass::Fatal);
        assert_eq!(ImportError::Worker("x".into()).class(), ErrorClass::Fatal);
    }
}
