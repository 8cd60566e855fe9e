//! Errors of working on a matrix-media-repo deployment.

use std::path::PathBuf;

use media_core::datastore::StoreError;
use media_core::run::{Classify, ErrorClass};
use media_db::DbError;

/// What can go wrong reading an MMR deployment's config, schema, rows or datastores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MmrError {
    /// `media-repo.yaml` cannot be read or asks for something this toolkit cannot honour.
    /// The reason never holds a secret (passwords, S3 keys).
    #[error("matrix-media-repo config {}: {reason}", path.display())]
    Config {
        /// The config file (or folder) given.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The database lacks tables or columns the tools need: MMR has not created (or not
    /// yet migrated) its schema there.
    #[error(
        "the matrix-media-repo database {database} lacks {}: start matrix-media-repo once \
         (at the version these tools target or newer) so that it creates its schema; this \
         tool never creates or migrates it",
        missing.join(", ")
    )]
    SchemaMissing {
        /// The database, password hidden.
        database: String,
        /// Each missing `table` or `table.column`.
        missing: Vec<String>,
    },
    /// A datastore the config lists cannot be used.
    #[error("matrix-media-repo datastore {id:?}: {source}")]
    Datastore {
        /// The datastore's ID in the config.
        id: String,
        /// What failed.
        source: StoreError,
    },
    /// No datastore of the config takes this kind of media.
    #[error(
        "no datastore of the matrix-media-repo config takes {kind} (none lists it, or \
         \"all\", in forKinds): add it to a datastore's forKinds"
    )]
    NoDatastoreFor {
        /// The kind as MMR spells it (`local_media`, …).
        kind: &'static str,
    },
    /// A row names a datastore the config does not list.
    #[error(
        "{item} is stored in datastore {id:?}, which the matrix-media-repo config does not \
         list: add that datastore (with forKinds: [] to keep it read-only) to the config"
    )]
    UnknownDatastore {
        /// The media or thumbnail.
        item: String,
        /// The datastore ID of its row.
        id: String,
    },
    /// A row's object is not in its datastore.
    #[error("{location} is not in matrix-media-repo datastore {id:?}")]
    MissingObject {
        /// The datastore's ID.
        id: String,
        /// The row's `location`.
        location: String,
    },
    /// The database failed, or holds a row we refuse to use.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl Classify for MmrError {
    /// A config, schema or datastore the operator must fix is a usage error; a row
    /// naming an unknown datastore concerns that item; the database's own errors keep
    /// their class.
    fn class(&self) -> ErrorClass {
        match self {
            Self::Config { .. } | Self::SchemaMissing { .. } | Self::NoDatastoreFor { .. } => {
                ErrorClass::Usage
            }
            Self::Datastore { source, .. } => match source.class() {
                ErrorClass::Item => ErrorClass::Usage,
                class => class,
            },
            Self::UnknownDatastore { .. } | Self::MissingObject { .. } => ErrorClass::Item,
            Self::Db(e) => e.class(),
        }
    }
}
