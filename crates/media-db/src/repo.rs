//! Our media repository: blobs, media, thumbnails, quarantine, the deletion queue and
//! the task log, on SQLite or PostgreSQL with one implementation.
//!
//! The invariants of DESIGN.md live here: the `blobs` table decides dedup (insert-or-get
//! inside a transaction), a row is only committed once its object exists, and deletions
//! go through `pending_deletions` in the same transaction that removes the last reference.

use std::collections::{BTreeSet, HashMap, HashSet};

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use media_core::datastore::{BlobKey, Datastore, DeleteStatus};
use media_core::ids::{ServerName, Sha256Hex, UserId};
use media_core::now_ms;
use media_core::records::{MediaKey, MediaRecord, ThumbnailRecord};
use sqlx::migrate::Migrator;

use crate::connect::{self, Dialect, OpenOptions, Pool, on_pool};
use crate::error::{DbError, QueryContext};
use crate::paging::{full_page, keyset_pages};
use crate::rows::{
    BlobRow, MediaRow, ThumbnailIdentity, ThumbnailRow, append_quarantine_change_in,
    bind_thumbnail, compare_existing, insert_blob_in, insert_thumbnail_in, placeholder_list,
    select_media, size_column, thumbnail_identity, values_list,
};

mod attach;
mod suggest;
pub use attach::{AttachOptions, DatastoreAccess, MOVED_SAMPLE};
pub use suggest::{closest, edit_distance};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");

/// Rows per multi-row statement: far below the bound-parameter limits of SQLite (32766)
/// and PostgreSQL (65535) at 13 columns.
const ROWS_PER_STATEMENT: usize = 1_000;
/// Datastore lookups in flight while a batch checks that its new blobs are stored.
const BLOB_CHECKS_IN_FLIGHT: usize = 16;

/// Rows fetched per page by the keyset-paginated streams.
const PAGE_SIZE: i64 = 500;

/// The most changes one page of [`Repository::quarantine_changes`] returns, as Synapse's
/// quarantine-changes admin API.
pub const QUARANTINE_CHANGES_PAGE_LIMIT: usize = 100;

/// The numeric ID of a datastore registered in the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatastoreId(pub i64);

/// Our media repository. Cheap to clone; clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Repository {
    pool: Pool,
    dialect: Dialect,
    /// Where write transactions run: for a SQLite file, its one write connection (see
    /// `connect::open_sqlite_writer`); otherwise the pool itself.
    writer: Pool,
}

/// A blob row as the repository holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Digest of the bytes.
    pub sha256: Sha256Hex,
    /// Length of the bytes.
    pub size_bytes: u64,
    /// The datastore holding the object.
    pub datastore_id: DatastoreId,
    /// The object's key in that datastore.
    pub location: BlobKey,
    /// When the row was created, ms since the epoch.
    pub created_ts: i64,
}

/// A blob that has just been put into a datastore, to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBlob {
    /// Digest of the bytes.
    pub sha256: Sha256Hex,
    /// Length of the bytes.
    pub size_bytes: u64,
    /// The datastore the bytes were put into.
    pub datastore_id: DatastoreId,
}

/// What recording a blob did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobOutcome {
    /// A new row; the datastore was checked to hold the object.
    Inserted,
    /// A row for this digest already existed (perhaps in another datastore); it is kept.
    Existing(Blob),
}

/// What inserting a media or thumbnail row did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// A new row.
    Inserted,
    /// The same record (same bytes) was already there; nothing changed.
    AlreadyPresent,
    /// A record with the same identity but other bytes exists; it was NOT overwritten.
    Conflict {
        /// The digest of the existing record.
        existing_sha256: Sha256Hex,
    },
    /// A thumbnail whose media is not in the repository; nothing was written.
    MediaMissing,
}

/// A media and the blob holding its bytes, to be recorded together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMedia {
    /// The record.
    pub record: MediaRecord,
    /// Its thumbnails, recorded with it in the same transaction.
    pub thumbnails: Vec<ThumbnailRecord>,
    /// The datastore its bytes (and its thumbnails' bytes) were put into.
    pub datastore_id: DatastoreId,
}

/// What recording a media and its thumbnails did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaOutcome {
    /// The media row.
    pub media: InsertOutcome,
    /// One outcome per thumbnail, in order; empty when the media was a conflict (its
    /// thumbnails are then not recorded).
    pub thumbnails: Vec<InsertOutcome>,
}

/// The result of (un)quarantining a media.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QuarantineReport {
    /// Every media whose state changed (the target and those sharing its bytes).
    pub changed: Vec<MediaKey>,
    /// Media with the same bytes left alone because they are pinned.
    pub skipped_pinned: u64,
}

/// One entry of the quarantine-changes stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineChange {
    /// Position in the stream.
    pub stream_id: i64,
    /// The media changed.
    pub media: MediaKey,
    /// Its new state.
    pub quarantined: bool,
    /// When, ms since the epoch.
    pub ts: i64,
}

/// One page of the quarantine-changes stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineChangesPage {
    /// The changes, oldest first.
    pub changes: Vec<QuarantineChange>,
    /// Pass this as `from` to get the next page (unchanged when the page is empty).
    pub next_batch: i64,
}

/// An object waiting to be deleted from its datastore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDeletion {
    /// The datastore holding it.
    pub datastore_id: DatastoreId,
    /// Its key there.
    pub location: BlobKey,
    /// Its digest.
    pub sha256: Sha256Hex,
}

/// What [`Repository::delete_media`] deleted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeletedMedia {
    /// Media rows deleted.
    pub media: Vec<MediaKey>,
    /// Requested media that did not exist.
    pub not_found: Vec<MediaKey>,
    /// Thumbnail rows deleted with them.
    pub thumbnails: u64,
    /// Blobs that lost their last reference: their rows are gone and their objects are
    /// queued for deletion.
    pub enqueued: Vec<PendingDeletion>,
}

/// What [`Repository::pin_media`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PinReport {
    /// Media pinned now.
    pub pinned: u64,
    /// Media that were pinned already.
    pub already_pinned: u64,
    /// Keys with no media in the repository.
    pub missing: u64,
}

/// What [`Repository::drain_pending_deletions`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainReport {
    /// Objects deleted from the datastore.
    pub deleted: u64,
    /// Queued objects that were already gone.
    pub already_gone: u64,
    /// Queued objects kept because their blob was recorded again meanwhile.
    pub kept: u64,
}

/// For a dry run: opens the repository at `url` like [`connect()`] when it exists, but
/// instead of creating a missing SQLite file, opens an empty in-memory repository.
pub async fn connect_for_dry_run(url: &str) -> Result<Repository, DbError> {
    if connect::dialect_of(url)? == Dialect::Sqlite && !connect::sqlite_file_exists(url) {
        return connect("sqlite::memory:").await;
    }
    connect(url).await
}

/// For tools that only read (exports, verification): opens the repository at `url` like
/// [`connect()`], but a missing SQLite file is [`DbError::NotFound`] instead of a new,
/// empty repository.
pub async fn connect_existing(url: &str) -> Result<Repository, DbError> {
    if connect::dialect_of(url)? == Dialect::Sqlite && !connect::sqlite_file_exists(url) {
        return Err(DbError::NotFound {
            what: format!("repository {}", connect::redact_url(url)),
        });
    }
    connect(url).await
}

/// For tools that must work on a read-only mount (exports, verification): opens the
/// existing repository at `url` without writing anything — no migration, no journal
/// change, no file created. A missing SQLite file is [`DbError::NotFound`]; a repository
/// whose schema is not exactly this build's is refused (a newer one as
/// [`DbError::NewerSchema`], an older one with the advice to run a writing tool once).
pub async fn connect_read_only(url: &str) -> Result<Repository, DbError> {
    let dialect = connect::dialect_of(url)?;
    if dialect == Dialect::Sqlite && !connect::sqlite_file_exists(url) {
        return Err(DbError::NotFound {
            what: format!("repository {}", connect::redact_url(url)),
        });
    }
    let pool = connect::open_read_only(url).await?;
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
                url: connect::redact_url(url),
                version,
                known,
            });
        }
        Some(version) if version == known => {}
        _ => {
            return Err(DbError::NotFound {
                what: format!(
                    "an up-to-date repository at {} (its schema is missing or older than this \
                     build's; run a tool that writes it, such as gdpr_import, once)",
                    connect::redact_url(url)
                ),
            });
        }
    }
    Ok(Repository {
        writer: pool.clone(),
        pool,
        dialect,
    })
}

/// Opens (creating a missing SQLite file) our repository at `url` and brings its schema
/// up to date. Accepts `sqlite://…` and `postgres://…` URLs.
pub async fn connect(url: &str) -> Result<Repository, DbError> {
    let pool = connect::open_pool(
        url,
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
    connect::migrate(&pool, migrator, url).await?;
    let writer = match dialect {
        Dialect::Sqlite => connect::open_sqlite_writer(url).await?,
        Dialect::Postgres => None,
    }
    .unwrap_or_else(|| pool.clone());
    Ok(Repository {
        pool,
        dialect,
        writer,
    })
}

impl Repository {
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
        on_pool!(&self.writer, |p| p.close().await);
        on_pool!(&self.pool, |p| p.close().await)
    }

    /// The ID of the datastore with this URI, registering it on first use.
    pub async fn register_datastore(&self, uri: &str) -> Result<DatastoreId, DbError> {
        let id: i64 = on_pool!(&self.pool, |p| {
            sqlx::query(
                "INSERT INTO datastores (uri, created_ts) VALUES ($1, $2) \
                 ON CONFLICT (uri) DO NOTHING",
            )
            .bind(uri)
            .bind(now_ms())
            .execute(p)
            .await
            .during("register a datastore")?;
            sqlx::query_scalar("SELECT id FROM datastores WHERE uri = $1")
                .bind(uri)
                .fetch_one(p)
                .await
                .during("look up a datastore")?
        });
        Ok(DatastoreId(id))
    }

    /// Records a blob that was just put into `store`, or returns the existing row for its
    /// digest. A new row is only committed after checking that `store` holds the object.
    pub async fn insert_blob(
        &self,
        blob: &NewBlob,
        store: &dyn Datastore,
    ) -> Result<BlobOutcome, DbError> {
        on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;
            let outcome = insert_blob_in!(&mut *tx, blob, store)?;
            tx.commit().await.during("commit a blob")?;
            Ok(outcome)
        })
    }

    /// Records media with their thumbnails and blobs, all in one transaction (one batch of
    /// an import): a media is never visible without the thumbnails that came with it. Its
    /// bytes must have been put into `store`, registered as its `datastore_id`. A media
    /// inserted already quarantined appends a quarantine change. Returns one outcome per
    /// media, in order.
    pub async fn insert_media_batch(
        &self,
        batch: &[NewMedia],
        store: &dyn Datastore,
    ) -> Result<Vec<MediaOutcome>, DbError> {
        // Multi-row statements: a handful of round trips per batch, not several per media.
        let now = now_ms();
        let mut sizes: HashMap<&str, u64> = HashMap::new();
        let mut blobs: Vec<(&Sha256Hex, u64, DatastoreId)> = Vec::new();
        for item in batch {
            // A size no column can hold is refused, naming its media, before anything is
            // written (the blob rows below would otherwise name only a digest).
            size_column(item.record.size_bytes, || item.record.key.to_string())?;
            for t in &item.thumbnails {
                size_column(t.size_bytes, || format!("a thumbnail of {}", t.media))?;
            }
            let media = std::iter::once((&item.record.sha256, item.record.size_bytes));
            let thumbnails = item.thumbnails.iter().map(|t| (&t.sha256, t.size_bytes));
            for (sha256, size) in media.chain(thumbnails) {
                if sizes.insert(sha256.as_str(), size).is_none() {
                    blobs.push((sha256, size, item.datastore_id));
                }
            }
        }
        on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;

            // 1. Blobs: insert-or-get; new rows cancel queued deletions and are only kept
            //    when the datastore holds their object.
            let mut new_blobs: Vec<String> = Vec::new();
            for chunk in blobs.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO blobs (sha256, size_bytes, datastore_id, location, created_ts) \
                     VALUES {} ON CONFLICT (sha256) DO NOTHING RETURNING sha256",
                    values_list(self.dialect, chunk.len(), 5)
                );
                let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
                for (sha256, size, datastore_id) in chunk {
                    query = query
                        .bind(sha256.as_str())
                        .bind(size_column(*size, || format!("blob {sha256}"))?)
                        .bind(datastore_id.0)
                        .bind(BlobKey::for_hash(sha256).as_str().to_owned())
                        .bind(now);
                }
                new_blobs.extend(query.fetch_all(&mut *tx).await.during("insert blobs")?);
            }
            for chunk in new_blobs.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "DELETE FROM pending_deletions WHERE sha256 IN ({})",
                    placeholder_list(self.dialect, chunk.len(), 1)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for sha256 in chunk {
                    query = query.bind(sha256.as_str());
                }
                query
                    .execute(&mut *tx)
                    .await
                    .during("cancel queued deletions")?;
            }
            // The write lock is held: ask the datastore about every new blob at once.
            let checks: Vec<_> = new_blobs
                .iter()
                .map(|sha256| blob_missing(store, sha256, sizes.get(sha256.as_str()).copied()))
                .collect();
            let missing: Vec<Option<&String>> = stream::iter(checks)
                .buffer_unordered(BLOB_CHECKS_IN_FLIGHT)
                .try_collect()
                .await?;
            if let Some(sha256) = missing.into_iter().flatten().min() {
                return Err(DbError::BlobMissing {
                    sha256: sha256.clone(),
                    datastore: store.uri(),
                });
            }

            // 2. Media: never overwritten; an existing one is the same bytes or a conflict.
            let mut inserted: HashSet<(String, String)> = HashSet::new();
            for chunk in batch.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO media (origin, media_id, sha256, upload_name, content_type, \
                     user_id, size_bytes, created_ts, last_access_ts, quarantined, \
                     quarantined_by, purpose, imported_from) VALUES {} \
                     ON CONFLICT (origin, media_id) DO NOTHING RETURNING origin, media_id",
                    values_list(self.dialect, chunk.len(), 13)
                );
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                for item in chunk {
                    let r = &item.record;
                    query = query
                        .bind(r.key.origin.as_str())
                        .bind(r.key.media_id.as_str())
                        .bind(r.sha256.as_str())
                        .bind(r.upload_name.as_deref())
                        .bind(r.content_type.as_deref())
                        .bind(r.uploader.as_ref().map(|u| u.as_str()))
                        .bind(size_column(r.size_bytes, || r.key.to_string())?)
                        .bind(r.created_ts)
                        .bind(r.last_access_ts)
                        .bind(r.quarantined)
                        .bind(r.quarantined_by.as_deref())
                        .bind(r.purpose.as_str())
                        .bind(r.imported_from.as_deref());
                }
                let rows: Vec<(String, String)> =
                    query.fetch_all(&mut *tx).await.during("insert media")?;
                inserted.extend(rows);
            }
            let mut outcomes = Vec::with_capacity(batch.len());
            for item in batch {
                let r = &item.record;
                let id = (r.key.origin.to_string(), r.key.media_id.to_string());
                let media = if inserted.contains(&id) {
                    if r.quarantined {
                        append_quarantine_change_in!(
                            &mut *tx,
                            &r.key.origin,
                            &r.key.media_id,
                            true,
                            now
                        )?;
                    }
                    InsertOutcome::Inserted
                } else {
                    let existing: String = sqlx::query_scalar(
                        "SELECT sha256 FROM media WHERE origin = $1 AND media_id = $2",
                    )
                    .bind(&id.0)
                    .bind(&id.1)
                    .fetch_one(&mut *tx)
                    .await
                    .during("read an existing media")?;
                    compare_existing("media", &r.key.to_string(), &existing, &r.sha256)?
                };
                outcomes.push(MediaOutcome {
                    media,
                    thumbnails: Vec::new(),
                });
            }

            // 3. Thumbnails of the media that are now recorded with these bytes.
            let thumbnails: Vec<(usize, &ThumbnailRecord)> = batch
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    matches!(
                        outcomes[*i].media,
                        InsertOutcome::Inserted | InsertOutcome::AlreadyPresent
                    )
                })
                .flat_map(|(i, item)| item.thumbnails.iter().map(move |t| (i, t)))
                .collect();
            let mut inserted: HashSet<ThumbnailIdentity> = HashSet::new();
            for chunk in thumbnails.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO thumbnails (origin, media_id, width, height, method, \
                     content_type, animated, sha256, size_bytes, created_ts) VALUES {} \
                     ON CONFLICT (origin, media_id, width, height, method, content_type, \
                     animated) DO NOTHING RETURNING origin, media_id, width, height, method, \
                     content_type, animated",
                    values_list(self.dialect, chunk.len(), 10)
                );
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                for (_, t) in chunk {
                    query = bind_thumbnail!(query, t, all);
                }
                let rows: Vec<ThumbnailIdentity> = query
                    .fetch_all(&mut *tx)
                    .await
                    .during("insert thumbnails")?;
                inserted.extend(rows);
            }
            for (i, t) in thumbnails {
                let outcome = if inserted.contains(&thumbnail_identity(t)) {
                    InsertOutcome::Inserted
                } else {
                    insert_thumbnail_in!(&mut *tx, t)?
                };
                outcomes[i].thumbnails.push(outcome);
            }
            tx.commit().await.during("commit media")?;
            Ok(outcomes)
        })
    }

    /// Records one media, its thumbnails and their blobs (see [`Repository::insert_media_batch`]).
    pub async fn insert_media(
        &self,
        media: &NewMedia,
        store: &dyn Datastore,
    ) -> Result<MediaOutcome, DbError> {
        let mut outcomes = self
            .insert_media_batch(std::slice::from_ref(media), store)
            .await?;
        Ok(outcomes.pop().expect("one outcome per media"))
    }

    /// Records a thumbnail and its blob. Its media must already be recorded.
    pub async fn insert_thumbnail(
        &self,
        thumbnail: &ThumbnailRecord,
        datastore_id: DatastoreId,
        store: &dyn Datastore,
    ) -> Result<InsertOutcome, DbError> {
        let t = thumbnail;
        size_column(t.size_bytes, || format!("a thumbnail of {}", t.media))?;
        on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;
            let blob = NewBlob {
                sha256: t.sha256.clone(),
                size_bytes: t.size_bytes,
                datastore_id,
            };
            insert_blob_in!(&mut *tx, &blob, store)?;
            let outcome = insert_thumbnail_in!(&mut *tx, t)?;
            tx.commit().await.during("commit a thumbnail")?;
            Ok(outcome)
        })
    }

    /// One media, if recorded.
    pub async fn get_media(&self, key: &MediaKey) -> Result<Option<MediaRecord>, DbError> {
        let row: Option<MediaRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(select_media!("WHERE origin = $1 AND media_id = $2"))
                .bind(key.origin.as_str())
                .bind(key.media_id.as_str())
                .fetch_optional(p)
                .await
                .during("read a media")?
        });
        row.map(MediaRow::into_record).transpose()
    }

    /// The thumbnails of a media, ordered by size, method and type.
    pub async fn thumbnails_of(&self, key: &MediaKey) -> Result<Vec<ThumbnailRecord>, DbError> {
        let rows: Vec<ThumbnailRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT origin, media_id, width, height, method, content_type, animated, sha256, \
                 size_bytes, created_ts FROM thumbnails WHERE origin = $1 AND media_id = $2 \
                 ORDER BY width, height, method, content_type, animated",
            )
            .bind(key.origin.as_str())
            .bind(key.media_id.as_str())
            .fetch_all(p)
            .await
            .during("read thumbnails")?
        });
        rows.into_iter().map(ThumbnailRow::into_record).collect()
    }

    /// The digests of those of `media_ids` of `origin` that are recorded, by media ID
    /// (one query per 1,000 IDs): to compare them with the bytes of another copy.
    pub async fn existing_media_digests(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, Sha256Hex>, DbError> {
        let mut found = HashMap::new();
        for chunk in media_ids.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT media_id, sha256 FROM media WHERE origin = {} AND media_id IN ({})",
                placeholder_list(self.dialect, 1, 1),
                placeholder_list(self.dialect, chunk.len(), 2)
            );
            let rows: Vec<(String, String)> = on_pool!(&self.pool, |p| {
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(origin.as_str());
                for id in chunk {
                    query = query.bind(*id);
                }
                query.fetch_all(p).await.during("look up media")?
            });
            for (media_id, sha256) in rows {
                let sha256 =
                    Sha256Hex::try_from(sha256.as_str()).map_err(|e| DbError::InvalidRow {
                        table: "media",
                        key: format!("{origin}/{media_id}"),
                        reason: format!("sha256: {e}"),
                    })?;
                found.insert(media_id, sha256);
            }
        }
        Ok(found)
    }

    /// The blob row for a digest, if any.
    pub async fn get_blob(&self, sha256: &Sha256Hex) -> Result<Option<Blob>, DbError> {
        let row: Option<BlobRow> = on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT sha256, size_bytes, datastore_id, location, created_ts \
                 FROM blobs WHERE sha256 = $1",
            )
            .bind(sha256.as_str())
            .fetch_optional(p)
            .await
            .during("read a blob")?
        });
        row.map(BlobRow::into_blob).transpose()
    }

    /// Whether any media with these bytes is quarantined: such bytes are refused by
    /// every import.
    pub async fn is_hash_quarantined(&self, sha256: &Sha256Hex) -> Result<bool, DbError> {
        let quarantined: Option<i64> = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM media WHERE sha256 = $1 AND quarantined LIMIT 1",
            )
            .bind(sha256.as_str())
            .fetch_optional(p)
            .await
            .during("look up the quarantine of a hash")?
        });
        Ok(quarantined.is_some())
    }

    /// How many media and thumbnail rows reference a blob.
    pub async fn blob_reference_count(&self, sha256: &Sha256Hex) -> Result<u64, DbError> {
        let count: i64 = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1) \
                 + (SELECT COUNT(*) FROM thumbnails WHERE sha256 = $1)",
            )
            .bind(sha256.as_str())
            .fetch_one(p)
            .await
            .during("count blob references")?
        });
        Ok(count as u64)
    }

    /// Every media uploaded by `user`, ordered by (origin, media_id), fetched page by page.
    pub fn media_by_uploader(
        &self,
        user: &UserId,
    ) -> BoxStream<'static, Result<MediaRecord, DbError>> {
        self.media_pages(MediaFilter::Uploader(user.as_str().to_owned()))
    }

    /// Every media of `origin`, ordered by media_id, fetched page by page.
    pub fn media_by_origin(
        &self,
        origin: &ServerName,
    ) -> BoxStream<'static, Result<MediaRecord, DbError>> {
        self.media_pages(MediaFilter::Origin(origin.as_str().to_owned()))
    }

    /// How many media `user` uploaded.
    pub async fn count_media_by_uploader(&self, user: &UserId) -> Result<u64, DbError> {
        self.count_media(
            "SELECT COUNT(*) FROM media WHERE user_id = $1",
            user.as_str(),
        )
        .await
    }

    /// How many media `origin` has.
    pub async fn count_media_by_origin(&self, origin: &ServerName) -> Result<u64, DbError> {
        self.count_media(
            "SELECT COUNT(*) FROM media WHERE origin = $1",
            origin.as_str(),
        )
        .await
    }

    async fn count_media(&self, sql: &'static str, value: &str) -> Result<u64, DbError> {
        let count: i64 = on_pool!(&self.pool, |p| {
            sqlx::query_scalar(sql)
                .bind(value)
                .fetch_one(p)
                .await
                .during("count media")?
        });
        Ok(count as u64)
    }

    fn media_pages(&self, filter: MediaFilter) -> BoxStream<'static, Result<MediaRecord, DbError>> {
        let repo = self.clone();
        // The cursor: the (origin, media_id) of the last row of the previous page.
        keyset_pages((String::new(), String::new()), move |(origin, media_id)| {
            let (repo, filter) = (repo.clone(), filter.clone());
            async move {
                let rows = repo.media_page(&filter, &origin, &media_id).await?;
                let next =
                    full_page(&rows, PAGE_SIZE).map(|r| (r.origin.clone(), r.media_id.clone()));
                Ok((rows, next))
            }
        })
        .map_ok(|rows| stream::iter(rows.into_iter().map(MediaRow::into_record)))
        .try_flatten()
        .boxed()
    }

    async fn media_page(
        &self,
        filter: &MediaFilter,
        after_origin: &str,
        after_media_id: &str,
    ) -> Result<Vec<MediaRow>, DbError> {
        let (sql, value) = match filter {
            MediaFilter::Uploader(user) => (
                select_media!(
                    "WHERE user_id = $1 AND (origin > $2 OR (origin = $2 AND media_id > $3)) \
                     ORDER BY origin, media_id LIMIT $4"
                ),
                user,
            ),
            MediaFilter::Origin(origin) => (
                select_media!(
                    "WHERE origin = $1 AND origin >= $2 AND media_id > $3 \
                     ORDER BY origin, media_id LIMIT $4"
                ),
                origin,
            ),
        };
        Ok(on_pool!(&self.pool, |p| {
            sqlx::query_as(sql)
                .bind(value.as_str())
                .bind(after_origin)
                .bind(after_media_id)
                .bind(PAGE_SIZE)
                .fetch_all(p)
                .await
                .during("read a page of media")?
        }))
    }

    /// Quarantines (or lifts the quarantine of) a media and every media with the same
    /// bytes, except pinned ones, and appends one quarantine change per media changed.
    /// `by` is recorded as `quarantined_by` (cleared when lifting).
    pub async fn set_quarantined(
        &self,
        key: &MediaKey,
        quarantined: bool,
        by: Option<&str>,
    ) -> Result<QuarantineReport, DbError> {
        let by = if quarantined { by } else { None };
        let ts = now_ms();
        on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;
            // The write comes first, so SQLite holds its lock for the whole transaction.
            let changed: Vec<(String, String)> = sqlx::query_as(
                "UPDATE media SET quarantined = $3, quarantined_by = $4 \
                 WHERE sha256 = (SELECT sha256 FROM media WHERE origin = $1 AND media_id = $2) \
                 AND quarantined <> $3 AND purpose <> 'pinned' \
                 RETURNING origin, media_id",
            )
            .bind(key.origin.as_str())
            .bind(key.media_id.as_str())
            .bind(quarantined)
            .bind(by)
            .fetch_all(&mut *tx)
            .await
            .during("update quarantine state")?;
            let skipped_pinned: Option<i64> = sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM media AS same WHERE same.sha256 = target.sha256 \
                 AND same.purpose = 'pinned') FROM media AS target \
                 WHERE target.origin = $1 AND target.media_id = $2",
            )
            .bind(key.origin.as_str())
            .bind(key.media_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .during("count pinned media")?;
            let Some(skipped_pinned) = skipped_pinned else {
                return Err(DbError::NotFound {
                    what: format!("media {key}"),
                });
            };
            let mut report = QuarantineReport {
                changed: Vec::with_capacity(changed.len()),
                skipped_pinned: skipped_pinned as u64,
            };
            for (origin, media_id) in changed {
                append_quarantine_change_in!(&mut *tx, origin, media_id, quarantined, ts)?;
                report
                    .changed
                    .push(crate::rows::media_key("media", &origin, &media_id)?);
            }
            report.changed.sort();
            tx.commit().await.during("commit a quarantine change")?;
            Ok(report)
        })
    }

    /// Up to `limit` (at most [`QUARANTINE_CHANGES_PAGE_LIMIT`]) quarantine changes after
    /// stream position `from` (0 for the start), oldest first.
    pub async fn quarantine_changes(
        &self,
        from: i64,
        limit: usize,
    ) -> Result<QuarantineChangesPage, DbError> {
        let limit = limit.clamp(1, QUARANTINE_CHANGES_PAGE_LIMIT) as i64;
        let rows: Vec<(i64, String, String, bool, i64)> = on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT stream_id, origin, media_id, quarantined, ts FROM quarantine_changes \
                 WHERE stream_id > $1 ORDER BY stream_id LIMIT $2",
            )
            .bind(from)
            .bind(limit)
            .fetch_all(p)
            .await
            .during("read quarantine changes")?
        });
        let next_batch = rows.last().map_or(from, |r| r.0);
        let changes = rows
            .into_iter()
            .map(|(stream_id, origin, media_id, quarantined, ts)| {
                Ok(QuarantineChange {
                    stream_id,
                    media: crate::rows::media_key("quarantine_changes", &origin, &media_id)?,
                    quarantined,
                    ts,
                })
            })
            .collect::<Result<_, DbError>>()?;
        Ok(QuarantineChangesPage {
            changes,
            next_batch,
        })
    }

    /// Deletes media rows and their thumbnails in one transaction, and in that same
    /// transaction removes the blob rows nothing references any more and queues their
    /// objects in `pending_deletions`. Objects are not touched: run
    /// [`Repository::drain_pending_deletions`] after this returns. Which media may be
    /// deleted (pinned, quarantined) is the caller's policy.
    pub async fn delete_media(&self, keys: &[MediaKey]) -> Result<DeletedMedia, DbError> {
        let ts = now_ms();
        on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;
            let mut report = DeletedMedia::default();
            let mut candidates = BTreeSet::new();
            for key in keys {
                let thumbs: Vec<String> = sqlx::query_scalar(
                    "DELETE FROM thumbnails WHERE origin = $1 AND media_id = $2 RETURNING sha256",
                )
                .bind(key.origin.as_str())
                .bind(key.media_id.as_str())
                .fetch_all(&mut *tx)
                .await
                .during("delete thumbnails")?;
                report.thumbnails += thumbs.len() as u64;
                candidates.extend(thumbs);
                let media: Option<String> = sqlx::query_scalar(
                    "DELETE FROM media WHERE origin = $1 AND media_id = $2 RETURNING sha256",
                )
                .bind(key.origin.as_str())
                .bind(key.media_id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .during("delete a media")?;
                match media {
                    Some(sha256) => {
                        candidates.insert(sha256);
                        report.media.push(key.clone());
                    }
                    None => report.not_found.push(key.clone()),
                }
            }
            for sha256 in candidates {
                // Reference safety, checked inside the deleting transaction.
                let gone: Option<(i64, String)> = sqlx::query_as(
                    "DELETE FROM blobs WHERE sha256 = $1 \
                     AND NOT EXISTS (SELECT 1 FROM media WHERE sha256 = $1) \
                     AND NOT EXISTS (SELECT 1 FROM thumbnails WHERE sha256 = $1) \
                     RETURNING datastore_id, location",
                )
                .bind(&sha256)
                .fetch_optional(&mut *tx)
                .await
                .during("delete an unreferenced blob")?;
                let Some((datastore_id, location)) = gone else {
                    continue;
                };
                sqlx::query(
                    "INSERT INTO pending_deletions (datastore_id, location, sha256, enqueued_ts) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(datastore_id)
                .bind(&location)
                .bind(&sha256)
                .bind(ts)
                .execute(&mut *tx)
                .await
                .during("queue an object deletion")?;
                report.enqueued.push(crate::rows::pending_deletion(
                    datastore_id,
                    &location,
                    &sha256,
                )?);
            }
            tx.commit().await.during("commit a deletion")?;
            Ok(report)
        })
    }

    /// The queued object deletions of a datastore, oldest first (at most `limit`).
    pub async fn pending_deletions(
        &self,
        datastore_id: DatastoreId,
        limit: i64,
    ) -> Result<Vec<(i64, PendingDeletion)>, DbError> {
        let rows: Vec<(i64, i64, String, String)> = on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT id, datastore_id, location, sha256 FROM pending_deletions \
                 WHERE datastore_id = $1 ORDER BY id LIMIT $2",
            )
            .bind(datastore_id.0)
            .bind(limit)
            .fetch_all(p)
            .await
            .during("read queued deletions")?
        });
        rows.into_iter()
            .map(|(id, ds, location, sha256)| {
                Ok((id, crate::rows::pending_deletion(ds, &location, &sha256)?))
            })
            .collect()
    }

    /// Deletes the queued objects of `datastore_id` from `store` and dequeues them. Each
    /// entry is handled in its own transaction that holds the queue row while the object
    /// is deleted, so a concurrent import of the same bytes either sees the deletion
    /// cancelled or finds the object gone and puts it again. An object whose blob was
    /// recorded again meanwhile is kept.
    pub async fn drain_pending_deletions(
        &self,
        datastore_id: DatastoreId,
        store: &dyn Datastore,
    ) -> Result<DrainReport, DbError> {
        let mut report = DrainReport::default();
        loop {
            let batch = self.pending_deletions(datastore_id, 100).await?;
            if batch.is_empty() {
                return Ok(report);
            }
            for (id, pending) in batch {
                on_pool!(&self.writer, |p| {
                    let mut tx = p
                        .begin_with(self.begin_write())
                        .await
                        .during("begin a transaction")?;
                    let claimed = sqlx::query("DELETE FROM pending_deletions WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .during("dequeue a deletion")?
                        .rows_affected();
                    if claimed == 0 {
                        continue; // another drain took it
                    }
                    let recorded: Option<i64> =
                        sqlx::query_scalar("SELECT CAST(1 AS BIGINT) FROM blobs WHERE sha256 = $1")
                            .bind(pending.sha256.as_str())
                            .fetch_optional(&mut *tx)
                            .await
                            .during("check a queued blob")?;
                    if recorded.is_some() {
                        report.kept += 1;
                    } else {
                        match store.delete(&pending.location).await? {
                            DeleteStatus::Deleted => report.deleted += 1,
                            DeleteStatus::NotFound => report.already_gone += 1,
                        }
                    }
                    tx.commit().await.during("commit a dequeue")?;
                })
            }
        }
    }

    /// Pins media (for instance because they are in use as avatars), in one transaction.
    pub async fn pin_media(&self, keys: &[MediaKey]) -> Result<PinReport, DbError> {
        on_pool!(&self.writer, |p| {
            let mut tx = p
                .begin_with(self.begin_write())
                .await
                .during("begin a transaction")?;
            let mut report = PinReport::default();
            for key in keys {
                let changed = sqlx::query(
                    "UPDATE media SET purpose = 'pinned' \
                     WHERE origin = $1 AND media_id = $2 AND purpose <> 'pinned'",
                )
                .bind(key.origin.as_str())
                .bind(key.media_id.as_str())
                .execute(&mut *tx)
                .await
                .during("pin a media")?
                .rows_affected();
                if changed == 1 {
                    report.pinned += 1;
                    continue;
                }
                let exists: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(1 AS BIGINT) FROM media WHERE origin = $1 AND media_id = $2",
                )
                .bind(key.origin.as_str())
                .bind(key.media_id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .during("look up a media")?;
                match exists {
                    Some(_) => report.already_pinned += 1,
                    None => report.missing += 1,
                }
            }
            tx.commit().await.during("commit pins")?;
            Ok(report)
        })
    }

    /// The ID of an already registered datastore (read-only, for dry runs).
    pub async fn find_datastore(&self, uri: &str) -> Result<Option<DatastoreId>, DbError> {
        let id: Option<i64> = on_pool!(&self.pool, |p| {
            sqlx::query_scalar("SELECT id FROM datastores WHERE uri = $1")
                .bind(uri)
                .fetch_optional(p)
                .await
                .during("look up a datastore")?
        });
        Ok(id.map(DatastoreId))
    }

    /// Records the start of a run of a tool; returns its task ID.
    pub async fn start_task(&self, kind: &str, params: &str) -> Result<i64, DbError> {
        Ok(on_pool!(&self.pool, |p| {
            sqlx::query_scalar(
                "INSERT INTO tasks (kind, params, started_ts) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(kind)
            .bind(params)
            .bind(now_ms())
            .fetch_one(p)
            .await
            .during("record a task")?
        }))
    }

    /// Records the end of a run: its counters (JSON) and its error, if it failed.
    pub async fn finish_task(
        &self,
        id: i64,
        counters: &str,
        error: Option<&str>,
    ) -> Result<(), DbError> {
        on_pool!(&self.pool, |p| {
            sqlx::query(
                "UPDATE tasks SET finished_ts = $2, counters = $3, error = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(now_ms())
            .bind(counters)
            .bind(error)
            .execute(p)
            .await
            .during("finish a task")?;
        });
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum MediaFilter {
    Uploader(String),
    Origin(String),
}

/// `Some(sha256)` when `store` does not hold the blob `sha256` with `expected_size` bytes.
async fn blob_missing<'a>(
    store: &dyn Datastore,
    sha256: &'a String,
    expected_size: Option<u64>,
) -> Result<Option<&'a String>, DbError> {
    let held = match BlobKey::parse(&format!("{}/{}/{sha256}", &sha256[0..2], &sha256[2..4])) {
        Some(key) => store.size(&key).await?,
        None => None,
    };
    Ok((held != expected_size).then_some(sha256))
}
