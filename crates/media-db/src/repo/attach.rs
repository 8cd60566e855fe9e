//! The datastore registry, and which datastore holds a repository's bytes: every tool
//! checks the datastore it is given against the ones the repository recorded before
//! using it.
//!
//! A datastore is recognised by its identity marker (see
//! [`Datastore::claim_marker`]), not by its URI: a relative `file://media-store` and its
//! absolute form, or a folder mounted elsewhere, are the same datastore. The repository
//! records each datastore's marker and the location it was last used at.
//!
//! * A datastore whose marker the repository recorded is accepted (its new location is
//!   recorded when it moved).
//! * An empty repository (no blobs) records any datastore it is given, writing a marker
//!   into it first when it holds none.
//! * A repository with blobs refuses any other datastore ([`DbError::WrongDatastore`]),
//!   unless the operator says the data moved there ([`AttachOptions::moved`]) and a
//!   sample of the recorded blobs is found in it.
//! * An in-memory datastore is refused for a repository that outlives the process
//!   ([`DbError::EphemeralDatastore`]).
//!
//! # Where a blob's bytes are read
//!
//! A repository's blobs may live in several datastores (after a transfer moved some of
//! them). Each `blobs` row says where its bytes are: `(datastore_id, location)`. So:
//!
//! * The datastore a tool is given (`--datastore`) is the one it **writes** new bytes
//!   to, and must be one the repository knows (the rules above).
//! * A blob is **read** from the datastore its row names, at the recorded `location`
//!   (never a key recomputed from the digest): the given datastore when it is that one,
//!   otherwise the recorded datastore opened read-only from its recorded URI, after its
//!   identity marker was checked against the recorded one
//!   ([`Datastores`](crate::Datastores) does this, opening each datastore once per run,
//!   lazily, shared by every worker). A recorded datastore that cannot be opened, or
//!   holds another marker (or none), fails each item it holds with
//!   [`DatastoreUnavailable`](crate::DatastoreUnavailable), which names it: it is never
//!   taken for a missing blob.
//! * [`Repository::datastore_records`] lists the datastores (ID, URI, identity),
//!   [`Repository::recorded_datastore`] finds one by ID, and
//!   [`Repository::recorded_blobs`] reads the rows saying where blobs are, in batches.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use media_core::datastore::{BlobKey, Datastore};
use media_core::ids::Sha256Hex;
use media_core::now_ms;

use super::Repository;
use super::sql::{ROWS_PER_STATEMENT, placeholder_list};
use crate::connect::{Dialect, on_pool};
use crate::error::{DbError, QueryContext};
use crate::model::{Blob, DatastoreId, RecordedDatastore};
use crate::rows::BlobRow;

/// Blobs of a recorded datastore looked for in a datastore said to hold its moved data.
pub const MOVED_SAMPLE: i64 = 20;

/// How a tool uses the datastore it attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatastoreAccess {
    /// The tool writes blobs (and may record the datastore and write its marker).
    Write,
    /// The tool only reads, or makes a dry run: nothing is recorded or written.
    ReadOnly,
}

/// How [`Repository::attach_datastore`] treats the datastore it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachOptions {
    /// Whether the tool writes.
    pub access: DatastoreAccess,
    /// The operator says a recorded datastore's data moved to the given one: record its
    /// new location once a sample of its blobs is found there.
    pub moved: bool,
}

impl AttachOptions {
    /// For a tool that writes, with no claim that the data moved.
    pub const WRITE: Self = Self {
        access: DatastoreAccess::Write,
        moved: false,
    };
}

/// The recorded datastores, for messages: `uri (datastore #id), …`.
fn describe(list: &[RecordedDatastore]) -> String {
    let names: Vec<String> = list
        .iter()
        .map(|r| format!("{} (datastore #{})", r.uri, r.id.0))
        .collect();
    names.join(", ")
}

/// A fresh identity marker: 128 random bits in hex.
pub(super) fn new_marker() -> String {
    let mut marker = String::with_capacity(32);
    for part in 0..2u8 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u8(part);
        hasher.write_u64(now_ms() as u64);
        hasher.write_u32(std::process::id());
        marker.push_str(&format!("{:016x}", hasher.finish()));
    }
    marker
}

impl Repository {
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

    /// Checks that `store` is a datastore this repository knows (see the module
    /// `repo::attach`'s documentation) and returns its ID; with [`DatastoreAccess::Write`] an empty
    /// repository records a new datastore. `None` when reading a datastore the
    /// repository has not recorded (it then holds none of the repository's blobs, which
    /// only happens when the repository has none).
    pub async fn attach_datastore(
        &self,
        store: &dyn Datastore,
        options: AttachOptions,
    ) -> Result<Option<DatastoreId>, DbError> {
        let given = store.uri();
        let write = options.access == DatastoreAccess::Write;
        if store.is_ephemeral() && self.outlives_process().await? {
            return Err(DbError::EphemeralDatastore { given });
        }
        let recorded = self.datastore_records().await?;
        let marker = store.read_marker().await?;
        if let Some(marker) = &marker
            && let Some(known) = recorded
                .iter()
                .find(|r| r.identity.as_deref() == Some(marker))
        {
            if known.uri != given && write {
                self.relocate(known, &given, &recorded).await?;
            }
            return Ok(Some(known.id));
        }
        let same_place = recorded.iter().find(|r| r.uri == given);
        // Recorded before markers existed: the URI is all there is to go by.
        if let Some(legacy) = same_place.filter(|r| r.identity.is_none())
            && marker.is_none()
        {
            if write {
                let marker = store.claim_marker(&new_marker()).await?;
                self.set_identity(legacy.id, &marker).await?;
            }
            return Ok(Some(legacy.id));
        }
        if !self.has_blobs().await? {
            if !write {
                return Ok(same_place.map(|r| r.id));
            }
            let marker = match marker {
                Some(marker) => marker,
                None => store.claim_marker(&new_marker()).await?,
            };
            return self.record_new(&given, &marker).await.map(Some);
        }
        if options.moved {
            return self.record_move(store, &given, &recorded, write).await;
        }
        let why = match (marker, same_place) {
            (None, Some(_)) => format!(
                "{given} holds no identity marker: it is not the datastore the repository \
                 was filled into, or it was emptied or replaced"
            ),
            (None, None) => format!("{given} holds no identity marker: it is a new datastore"),
            (Some(marker), _) => format!(
                "{given} is datastore {marker}, which this repository never recorded \
                 (it belongs to another repository)"
            ),
        };
        Err(DbError::WrongDatastore {
            given,
            recorded: describe(&recorded),
            first: recorded.first().map(|r| r.uri.clone()).unwrap_or_default(),
            why,
        })
    }

    /// Whether the repository's records survive this process (anything but an in-memory
    /// SQLite database).
    async fn outlives_process(&self) -> Result<bool, DbError> {
        Ok(match self.dialect {
            Dialect::Postgres => true,
            Dialect::Sqlite => {
                let file: Option<String> = on_pool!(&self.pool, |p| {
                    sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                        .fetch_optional(p)
                        .await
                        .during("find where the repository is kept")?
                });
                file.is_some_and(|f| !f.is_empty())
            }
        })
    }

    /// The recorded datastore with this ID, if any.
    pub async fn recorded_datastore(
        &self,
        id: DatastoreId,
    ) -> Result<Option<RecordedDatastore>, DbError> {
        let row: Option<(i64, String, Option<String>)> = on_pool!(&self.pool, |p| {
            sqlx::query_as("SELECT id, uri, identity FROM datastores WHERE id = $1")
                .bind(id.0)
                .fetch_optional(p)
                .await
                .during("look up a datastore")?
        });
        Ok(row.map(|(id, uri, identity)| RecordedDatastore {
            id: DatastoreId(id),
            uri,
            identity,
        }))
    }

    /// The rows of those of `digests` that are recorded, by digest: which datastore
    /// holds each blob, and where. A few statements for any number of digests.
    pub async fn recorded_blobs(
        &self,
        digests: &[&Sha256Hex],
    ) -> Result<HashMap<Sha256Hex, Blob>, DbError> {
        let mut found = HashMap::with_capacity(digests.len());
        for chunk in digests.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT sha256, size_bytes, datastore_id, location, created_ts \
                 FROM blobs WHERE sha256 IN ({})",
                placeholder_list(self.dialect, chunk.len(), 1)
            );
            let rows: Vec<BlobRow> = on_pool!(&self.pool, |p| {
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).persistent(false);
                for sha256 in chunk {
                    query = query.bind(sha256.as_str());
                }
                query.fetch_all(p).await.during("look up blobs")?
            });
            for row in rows {
                let blob = row.into_blob()?;
                found.insert(blob.sha256.clone(), blob);
            }
        }
        Ok(found)
    }

    /// Whether any blob is recorded.
    async fn has_blobs(&self) -> Result<bool, DbError> {
        let any: Option<String> = on_pool!(&self.pool, |p| {
            sqlx::query_scalar("SELECT sha256 FROM blobs LIMIT 1")
                .fetch_optional(p)
                .await
                .during("look for blobs")?
        });
        Ok(any.is_some())
    }

    /// Records `marker` as the identity of datastore `id`.
    pub(super) async fn set_identity(&self, id: DatastoreId, marker: &str) -> Result<(), DbError> {
        on_pool!(&self.pool, |p| {
            sqlx::query("UPDATE datastores SET identity = $1 WHERE id = $2")
                .bind(marker)
                .bind(id.0)
                .execute(p)
                .await
                .map(drop)
                .during("record a datastore's identity")?
        });
        Ok(())
    }

    /// Records the datastore at `uri` with `marker` (an empty repository's new datastore).
    async fn record_new(&self, uri: &str, marker: &str) -> Result<DatastoreId, DbError> {
        let id = self.register_datastore(uri).await?;
        self.set_identity(id, marker).await?;
        tracing::info!("recorded datastore #{} at {uri}", id.0);
        Ok(id)
    }

    /// Records that `known` is now at `uri`.
    async fn relocate(
        &self,
        known: &RecordedDatastore,
        uri: &str,
        recorded: &[RecordedDatastore],
    ) -> Result<(), DbError> {
        if let Some(other) = recorded.iter().find(|r| r.uri == uri && r.id != known.id) {
            return Err(DbError::WrongDatastore {
                given: uri.to_owned(),
                recorded: describe(recorded),
                first: known.uri.clone(),
                why: format!(
                    "{uri} holds the marker of datastore #{} but is recorded as datastore #{}",
                    known.id.0, other.id.0
                ),
            });
        }
        on_pool!(&self.pool, |p| {
            sqlx::query("UPDATE datastores SET uri = $1 WHERE id = $2")
                .bind(uri)
                .bind(known.id.0)
                .execute(p)
                .await
                .map(drop)
                .during("record a datastore's new location")?
        });
        tracing::info!(
            "datastore #{} was recorded at {}, and is now at {uri} (its marker matches): \
             its new location is recorded",
            known.id.0,
            known.uri
        );
        Ok(())
    }

    /// `--datastore-moved`: finds the recorded datastore whose sampled blobs are all in
    /// `store`, and (when writing) records `store` as its new location and marks it.
    async fn record_move(
        &self,
        store: &dyn Datastore,
        given: &str,
        recorded: &[RecordedDatastore],
        write: bool,
    ) -> Result<Option<DatastoreId>, DbError> {
        let mut findings = Vec::new();
        for candidate in recorded {
            let sample: Vec<(String, i64)> = on_pool!(&self.pool, |p| {
                sqlx::query_as(
                    "SELECT location, size_bytes FROM blobs WHERE datastore_id = $1 \
                     ORDER BY sha256 LIMIT $2",
                )
                .bind(candidate.id.0)
                .bind(MOVED_SAMPLE)
                .fetch_all(p)
                .await
                .during("sample a datastore's blobs")?
            });
            if sample.is_empty() {
                continue;
            }
            // A location that is no key names no object: it is missing.
            let expected: Vec<(BlobKey, Option<u64>)> = sample
                .iter()
                .filter_map(|(location, size)| {
                    Some((BlobKey::parse(location)?, u64::try_from(*size).ok()))
                })
                .collect();
            let keys: Vec<BlobKey> = expected.iter().map(|(key, _)| key.clone()).collect();
            let held = store.sizes(&keys).await?;
            let present = expected
                .iter()
                .zip(held)
                .filter(|((_, size), held)| size == held)
                .count();
            let missing = sample.len() - present;
            if missing == 0 {
                if write {
                    let marker = match &candidate.identity {
                        Some(marker) => marker.clone(),
                        None => new_marker(),
                    };
                    store.replace_marker(&marker).await?;
                    if candidate.identity.is_none() {
                        self.set_identity(candidate.id, &marker).await?;
                    }
                    if candidate.uri != given {
                        self.relocate(candidate, given, recorded).await?;
                    }
                }
                return Ok(Some(candidate.id));
            }
            findings.push(format!(
                "{missing} of {} sampled blobs of datastore #{} are missing there",
                sample.len(),
                candidate.id.0
            ));
        }
        Err(DbError::WrongDatastore {
            given: given.to_owned(),
            recorded: describe(recorded),
            first: recorded.first().map(|r| r.uri.clone()).unwrap_or_default(),
            why: format!(
                "the data was said to have moved to {given}, but {}",
                findings.join("; ")
            ),
        })
    }
}
