//! Errors of the database layer.

use media_core::datastore::StoreError;
use media_core::run::{Classify, ErrorClass};

/// Errors of our repository and of the adapters over foreign databases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// A database URL that cannot be used.
    #[error("invalid database URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL, with any password hidden.
        url: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// The database could not be reached or opened.
    #[error("cannot open database {url}: {source}. {hint}")]
    Connect {
        /// The URL, with any password hidden.
        url: String,
        /// What to check.
        hint: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The database was migrated by a newer version of this toolkit.
    #[error(
        "database {url} has schema version {version}, newer than this build knows \
         (up to {known}): upgrade this tool, or point it at another database"
    )]
    NewerSchema {
        /// The URL, with any password hidden.
        url: String,
        /// The newest migration applied to the database.
        version: i64,
        /// The newest migration this build carries.
        known: i64,
    },
    /// Running the schema migrations failed.
    #[error("migrating database {url} failed: {source}")]
    Migrate {
        /// The URL, with any password hidden.
        url: String,
        /// The migrator's error.
        source: sqlx::migrate::MigrateError,
    },
    /// A statement failed.
    #[error("database error while trying to {operation}: {source}")]
    Query {
        /// What was being done.
        operation: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A row holds a value we refuse to use (an invalid identifier, say).
    #[error("invalid row in {table} ({key}): {reason}")]
    InvalidRow {
        /// The table read.
        table: &'static str,
        /// The row's key, as read.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A record to write has a size no size column can hold (above
    /// [`media_core::records::MAX_SIZE_BYTES`]); nothing of its transaction was written.
    #[error("cannot record {item}: {source}")]
    SizeOutOfRange {
        /// The media, thumbnail or blob.
        item: String,
        /// The size refused.
        source: media_core::records::SizeOutOfRange,
    },
    /// A record the operation needs does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// A new blob row was about to be committed but its object is not in the datastore
    /// (a concurrent purge removed it after it was written): put the bytes again.
    #[error(
        "blob {sha256} is not in datastore {datastore} (removed concurrently?): \
         nothing was committed; put the bytes again and retry"
    )]
    BlobMissing {
        /// The blob's digest.
        sha256: String,
        /// The datastore checked.
        datastore: String,
    },
    /// The datastore given is not one this repository's blobs are in: using it would
    /// report media as present whose bytes are elsewhere.
    #[error(
        "the repository's blobs are in {recorded}, not in the given datastore {given}: \
         {why}. Run with --datastore {first}; if the data was moved to {given}, add \
         --datastore-moved to record its new location (a sample of the recorded blobs is \
         checked there first)"
    )]
    WrongDatastore {
        /// The datastore given, as a URI.
        given: String,
        /// The recorded datastores: location and ID.
        recorded: String,
        /// The first recorded location, to suggest.
        first: String,
        /// Why the given datastore is not a recorded one.
        why: String,
    },
    /// An in-memory datastore given for a repository that outlives the process.
    #[error(
        "datastore {given} keeps blobs only in this process's memory, but the repository is \
         kept on disk or in PostgreSQL: its records would point at bytes gone when the \
         process ends. Give --datastore a folder (e.g. file://media-store)"
    )]
    EphemeralDatastore {
        /// The datastore given, as a URI.
        given: String,
    },
    /// A datastore that cannot be a transfer's destination: the source itself, or a
    /// datastore of another repository. Nothing was written.
    #[error("cannot transfer to {given}: {why}")]
    UnusableDestination {
        /// The destination given, as a URI.
        given: String,
        /// Why it cannot be used, and what to do.
        why: String,
    },
    /// A datastore operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DbError {
    /// Whether the database aborted the statement's transaction to break a circle of
    /// transactions waiting for each other (PostgreSQL's `40P01`, "deadlock detected"):
    /// once it is rolled back, the same transaction tried again can succeed.
    pub fn is_deadlock(&self) -> bool {
        matches!(
            self,
            Self::Query { source: sqlx::Error::Database(e), .. }
                if e.code().as_deref() == Some("40P01")
        )
    }
}

impl Classify for DbError {
    /// A wrong location, a missing repository or record, an unreachable server, a newer
    /// schema or another datastore is for the operator to fix (usage); anything failing
    /// during the run is fatal.
    fn class(&self) -> ErrorClass {
        match self {
            Self::InvalidUrl { .. }
            | Self::NotFound { .. }
            | Self::Connect { .. }
            | Self::NewerSchema { .. }
            | Self::WrongDatastore { .. }
            | Self::EphemeralDatastore { .. }
            | Self::UnusableDestination { .. }
            | Self::Store(StoreError::Config(_)) => ErrorClass::Usage,
            _ => ErrorClass::Fatal,
        }
    }
}

/// Attaches what was being done to a driver error.
pub trait QueryContext<T> {
    /// Maps a driver error into [`DbError::Query`].
    fn during(self, operation: &'static str) -> Result<T, DbError>;
}

impl<T> QueryContext<T> for Result<T, sqlx::Error> {
    fn during(self, operation: &'static str) -> Result<T, DbError> {
        self.map_err(|source| DbError::Query { operation, source })
    }
}
