//! Errors of the administration jobs.

use media_core::datastore::StoreError;
use media_core::run::{Classify, ErrorClass};
use media_db::DbError;

/// Why an administration job could not run (items that fail are listed in reports,
/// not errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Our repository failed, or refused what was asked.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A datastore given could not be opened (unreachable endpoint, missing bucket,
    /// refused credentials, a folder that cannot be created): nothing was written.
    #[error("datastore {uri}: {source}")]
    Open {
        /// The datastore, as given.
        uri: String,
        /// What failed.
        source: StoreError,
    },
    /// A datastore of the repository failed during the run.
    #[error("datastore {uri}: {source}")]
    Store {
        /// The datastore.
        uri: String,
        /// What failed.
        source: StoreError,
    },
    /// The matrix-media-repo deployment failed, or cannot be used as it is configured.
    #[error(transparent)]
    Mmr(#[from] media_mmr::MmrError),
    /// `--from` names no recorded datastore.
    #[error("no recorded datastore is {given}: the repository records {recorded}")]
    UnknownDatastore {
        /// What was given.
        given: String,
        /// The recorded datastores, `#ID URI` each.
        recorded: String,
    },
    /// The source datastore found at a location is not the recorded one.
    #[error(
        "{uri} is not datastore #{id}: {why}. If its data moved, give its new location \
         with --from-uri"
    )]
    SourceElsewhere {
        /// The location opened.
        uri: String,
        /// The recorded datastore.
        id: i64,
        /// What was found instead.
        why: String,
    },
    /// A recorded datastore's location holds another datastore (or none): its queued
    /// deletions are left queued.
    #[error(
        "{uri} is not datastore #{id} (it holds {}): its queued deletions stay queued; \
         mount datastore #{id} where the repository records it and run again",
        found.as_deref().map_or("no identity marker".to_owned(), |m| format!("identity marker {m}"))
    )]
    NotRecordedDatastore {
        /// The recorded location.
        uri: String,
        /// The recorded datastore.
        id: i64,
        /// The marker found there.
        found: Option<String>,
    },
    /// A purge of remote media needs to know which origins are ours.
    #[error(
        "the repository records no server of its own (no import_synapse run recorded one), \
         so every origin would count as remote: name yours with --local-server NAME"
    )]
    NoOwnServers,
    /// A file the run writes (a report page) could not be written.
    #[error("cannot write {}: {source}; choose another path", path.display())]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// No recorded run has this ID.
    #[error("no task {id} in the task log (media_admin tasks list shows them)")]
    UnknownTask {
        /// The ID given.
        id: i64,
    },
}

impl Classify for AdminError {
    /// A wrong or unreachable datastore is for the operator to fix; the repository's
    /// errors keep their class; a datastore failing mid-run is fatal.
    fn class(&self) -> ErrorClass {
        match self {
            Self::Db(e) => e.class(),
            Self::Mmr(e) => e.class(),
            Self::Open { .. }
            | Self::UnknownDatastore { .. }
            | Self::SourceElsewhere { .. }
            | Self::NotRecordedDatastore { .. }
            | Self::NoOwnServers
            | Self::UnknownTask { .. }
            | Self::Write { .. } => ErrorClass::Usage,
            Self::Store { source, .. } => match source.class() {
                ErrorClass::Usage => ErrorClass::Usage,
                _ => ErrorClass::Fatal,
            },
        }
    }
}
