//! Our media repository, on SQLite or PostgreSQL with one implementation: it plays
//! every role of [`crate::roles`], one module per role.
//!
//! * [`blobs`]: the blob index ([`BlobIndex`](crate::BlobIndex));
//! * [`media`]: media and thumbnails ([`MediaIndex`](crate::MediaIndex));
//! * [`quarantine`]: quarantine and its change stream ([`Quarantine`](crate::Quarantine));
//! * [`deletion`]: deleting media and draining the deletion queue
//!   ([`DeletionQueue`](crate::DeletionQueue));
//! * [`tasks`]: the task log ([`TaskLog`](crate::TaskLog));
//! * [`attributes`]: a media's purpose ([`MediaAttributes`](crate::MediaAttributes));
//! * [`purge`]: purges, reserved IDs and blocked bytes ([`Purge`](crate::Purge));
//! * [`rooms`]: which rooms hold which media ([`RoomIndex`](crate::RoomIndex));
//! * [`transfer`]: moving blobs between datastores ([`BlobTransfer`](crate::BlobTransfer)),
//!   and recording a transfer's destination;
//! * [`usage`]: what each recorded datastore holds, and who uses the space
//!   ([`UsageReport`](crate::UsageReport));
//! * [`check`]: what the rows say of a datastore's objects ([`StoreCheck`](crate::StoreCheck));
//! * [`attach`]: the datastore registry, and which datastore holds the repository's bytes.
//!
//! The invariants of DESIGN.md live here: the `blobs` table decides dedup (insert-or-get
//! inside a transaction), a row is only committed once its object exists (checked before
//! the transaction: no datastore call is made while one is open), and deletions go
//! through `pending_deletions` in the same transaction that removes the last reference.

use std::sync::Arc;

use sqlx::migrate::Migrator;

use crate::checkpointer::Checkpointer;
use crate::connect::{self, Dialect, OpenOptions, Pool, on_pool};
use crate::error::{DbError, QueryContext};
use crate::location::{DatabaseLocation, IntoDatabaseLocation};

pub mod attach;
pub mod attributes;
pub mod blobs;
mod bulk;
pub mod check;
pub mod deletion;
pub mod media;
pub mod purge;
pub mod quarantine;
pub mod rooms;
mod sql;
mod suggest;
pub mod tasks;
pub mod transfer;
pub mod usage;

/// The values the repository's roles take and return, also reachable here (where they
/// were defined before the roles were split out).
#[doc(no_inline)]
pub use crate::model::*;
pub use attach::{AttachOptions, DatastoreAccess, MOVED_SAMPLE};
pub use deletion::delete_claimed;
pub use suggest::{closest, edit_distance};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Rows fetched per page by the keyset-paginated streams.
const PAGE_SIZE: i64 = 500;

/// Our media repository. Cheap to clone; clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Repository {
    pool: Pool,
    dialect: Dialect,
    /// Where it is, as the operator named it (for reports and messages).
    location: DatabaseLocation,
    /// Where write transactions run: for a SQLite file, its one write connection (see
    /// `connect::open_sqlite_writer`); otherwise the pool itself.
    writer: Pool,
    /// For a SQLite file, what copies its write-ahead log into it beside the writer.
    checkpointer: Option<Arc<Checkpointer>>,
}

/// For a dry run: opens the repository at `location` like [`connect()`] when it exists,
/// but instead of creating a missing SQLite file, opens an empty in-memory repository.
pub async fn connect_for_dry_run(
    location: impl IntoDatabaseLocation,
) -> Result<Repository, DbError> {
    let location = location.into_database_location()?;
    if location.is_missing_sqlite_file() {
        let mut empty = connect("sqlite::memory:").await?;
        // Reports name the repository the dry run was about, not its stand-in.
        empty.location = location;
        return Ok(empty);
    }
    connect(location).await
}

/// For tools that only read (exports, verification): opens the repository at
/// `location` like [`connect()`], but a missing SQLite file is [`DbError::NotFound`]
/// instead of a new, empty repository.
pub async fn connect_existing(location: impl IntoDatabaseLocation) -> Result<Repository, DbError> {
    let location = location.into_database_location()?;
    if location.is_missing_sqlite_file() {
        return Err(DbError::NotFound {
            what: format!("repository {location}"),
        });
    }
    connect(location).await
}

/// For tools that must work on a read-only mount (exports, verification): opens the
/// existing repository at `location` without writing anything — no migration, no
/// journal change, no file created. A missing SQLite file is [`DbError::NotFound`]; a
/// repository whose schema is not exactly this build's is refused (a newer one as
/// [`DbError::NewerSchema`], an older one with the advice to run a writing tool once).
pub async fn connect_read_only(location: impl IntoDatabaseLocation) -> Result<Repository, DbError> {
    let location = location.into_database_location()?;
    if location.is_missing_sqlite_file() {
        return Err(DbError::NotFound {
            what: format!("repository {location}"),
        });
    }
    let pool = connect::open_read_only(&location).await?;
    let dialect = location.dialect();
    let migrator = match dialect {
        Dialect::Sqlite => &SQLITE_MIGRATIONS,
        Dialect::Postgres => &POSTGRES_MIGRATIONS,
    };
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let applied = connect::applied_version(&pool)
        .await
        .during("read the repository's schema version")?;
    match applied {
        Some(version) if version > known => {
            return Err(DbError::NewerSchema {
                url: location.to_string(),
                version,
                known,
            });
        }
        Some(version) if version == known => {}
        _ => {
            return Err(DbError::NotFound {
                what: format!(
                    "an up-to-date repository at {location} (its schema is missing or older \
                     than this build's; run a tool that writes it, such as gdpr_import, once)"
                ),
            });
        }
    }
    Ok(Repository {
        writer: pool.clone(),
        pool,
        dialect,
        location,
        checkpointer: None,
    })
}

/// Opens (creating a missing SQLite file) our repository at `location` and brings its
/// schema up to date. Takes a [`DatabaseLocation`], or any text it parses from
/// (`sqlite://…`, `postgres://…`, a bare path, `key=value` settings).
pub async fn connect(location: impl IntoDatabaseLocation) -> Result<Repository, DbError> {
    let location = location.into_database_location()?;
    // Tools starting at once on one SQLite file take turns until it is open and migrated.
    let _turn = match location.sqlite_path() {
        Some(path) => connect::lock_sqlite_file(path).await,
        None => None,
    };
    let pool = connect::open_pool(
        &location,
        OpenOptions {
            create: true,
            read_only: false,
            max_connections: 8,
        },
    )
    .await?;
    let (dialect, migrator) = match pool {
        Pool::Sqlite(_) => (Dialect::Sqlite, &SQLITE_MIGRATIONS),
        Pool::Postgres(_) => (Dialect::Postgres, &POSTGRES_MIGRATIONS),
    };
    connect::migrate(&pool, migrator, &location).await?;
    let writer = match dialect {
        Dialect::Sqlite => connect::open_sqlite_writer(&location).await?,
        Dialect::Postgres => None,
    };
    let checkpointer = match writer {
        Some(_) => Some(Arc::new(Checkpointer::start(&location).await?)),
        None => None,
    };
    let repo = Repository {
        writer: writer.unwrap_or_else(|| pool.clone()),
        pool,
        dialect,
        location,
        checkpointer,
    };
    // What an import that was stopped set aside.
    repo.build_deferred_indexes().await?;
    Ok(repo)
}

impl Repository {
    /// Where the repository is (shown without a password).
    pub fn location(&self) -> &DatabaseLocation {
        &self.location
    }

    /// The dialect of the underlying database.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The statement that opens a write transaction: SQLite takes its write lock up front,
    /// so that concurrent writers wait for each other instead of failing mid-transaction.
    fn begin_write(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.stop().await;
        }
        on_pool!(&self.writer, |p| p.close().await);
        on_pool!(&self.pool, |p| p.close().await)
    }
}
