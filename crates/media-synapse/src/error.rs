//! The error that stops reading a Synapse. One media that cannot be read is not an
//! error but a [`RowFailure`](crate::RowFailure), listed by the job that reads it.

use media_core::run::{Classify, ErrorClass};
use media_db::DbError;

/// Why reading a Synapse cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynapseError {
    /// The Synapse database cannot be opened or failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A setting that cannot work: a server name, media store, homeserver URL or access
    /// token that does not fit this Synapse. The message says what to give instead.
    #[error("{0}")]
    Config(String),
    /// A background check (of the media store's files) stopped unexpectedly.
    #[error("checking the media store stopped unexpectedly: {0}")]
    Task(String),
}

impl Classify for SynapseError {
    /// A setting that does not fit is a usage error; the database's errors classify
    /// themselves; a check that stopped is fatal.
    fn class(&self) -> ErrorClass {
        match self {
            Self::Db(e) => e.class(),
            Self::Config(_) => ErrorClass::Usage,
            Self::Task(_) => ErrorClass::Fatal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_usage_errors_and_stopped_checks_fatal() {
        assert_eq!(SynapseError::Config("x".into()).class(), ErrorClass::Usage);
        assert_eq!(SynapseError::Task("x".into()).class(), ErrorClass::Fatal);
        let missing = DbError::InvalidUrl {
            url: "nowhere.db".into(),
            reason: "no such file".into(),
        };
        assert_eq!(
            SynapseError::from(missing).class(),
            ErrorClass::Usage,
            "a wrong database location is the operator's to fix"
        );
    }
}
