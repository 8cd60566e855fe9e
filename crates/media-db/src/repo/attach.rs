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

use std::hash::{BuildHasher, Hasher};

use media_core::datastore::{BlobKey, Datastore};
use media_core::now_ms;

use super::Repository;
use crate::connect::{Dialect, on_pool};
use crate::error::{DbError, QueryContext};
use crate::model::DatastoreId;

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

/// A row of the `datastores` table.
#[derive(Debug, Clone)]
struct Recorded {
    id: i64,
    uri: String,
    identity: Option<String>,
}

impl Recorded {
    fn describe(list: &[Recorded]) -> String {
        let names: Vec<String> = list
            .iter()
            .map(|r| format!("{} (datastore #{})", r.uri, r.id))
            .collect();
        names.join(", ")
    }
}

/// A fresh identity marker: 128 random bits in hex.
fn new_marker() -> String {
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
        let recorded = self.recorded_datastores().await?;
        let marker = store.read_marker().await?;
        if let Some(marker) = &marker
            && let Some(known) = recorded
                .iter()
                .find(|r| r.identity.as_deref() == Some(marker))
        {
            if known.uri != given && write {
                self.relocate(known, &given, &recorded).await?;
            }
            return Ok(Some(DatastoreId(known.id)));
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
            return Ok(Some(DatastoreId(legacy.id)));
        }
        if !self.has_blobs().await? {
            if !write {
                return Ok(same_place.map(|r| DatastoreId(r.id)));
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
            recorded: Recorded::describe(&recorded),
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

    /// Every recorded datastore, oldest first.
    async fn recorded_datastores(&self) -> Result<Vec<Recorded>, DbError> {
        let rows: Vec<(i64, String, Option<String>)> = on_pool!(&self.pool, |p| {
            sqlx::query_as("SELECT id, uri, identity FROM datastores ORDER BY id")
                .fetch_all(p)
                .await
                .during("list the recorded datastores")?
        });
        Ok(rows
            .into_iter()
            .map(|(id, uri, identity)| Recorded { id, uri, identity })
            .collect())
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

    async fn set_identity(&self, id: i64, marker: &str) -> Result<(), DbError> {
        on_pool!(&self.pool, |p| {
            sqlx::query("UPDATE datastores SET identity = $1 WHERE id = $2")
                .bind(marker)
                .bind(id)
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
        self.set_identity(id.0, marker).await?;
        tracing::info!("recorded datastore #{} at {uri}", id.0);
        Ok(id)
    }

    /// Records that `known` is now at `uri`.
    async fn relocate(
        &self,
        known: &Recorded,
        uri: &str,
        recorded: &[Recorded],
    ) -> Result<(), DbError> {
        if let Some(other) = recorded.iter().find(|r| r.uri == uri && r.id != known.id) {
            return Err(DbError::WrongDatastore {
                given: uri.to_owned(),
                recorded: Recorded::describe(recorded),
                first: known.uri.clone(),
                why: format!(
                    "{uri} holds the marker of datastore #{} but is recorded as datastore #{}",
                    known.id, other.id
                ),
            });
        }
        on_pool!(&self.pool, |p| {
            sqlx::query("UPDATE datastores SET uri = $1 WHERE id = $2")
                .bind(uri)
                .bind(known.id)
                .execute(p)
                .await
                .map(drop)
                .during("record a datastore's new location")?
        });
        tracing::info!(
            "datastore #{} was recorded at {}, and is now at {uri} (its marker matches): \
             its new location is recorded",
            known.id,
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
        recorded: &[Recorded],
        write: bool,
    ) -> Result<Option<DatastoreId>, DbError> {
        let mut findings = Vec::new();
        for candidate in recorded {
            let sample: Vec<(String, i64)> = on_pool!(&self.pool, |p| {
                sqlx::query_as(
                    "SELECT location, size_bytes FROM blobs WHERE datastore_id = $1 \
                     ORDER BY sha256 LIMIT $2",
                )
                .bind(candidate.id)
                .bind(MOVED_SAMPLE)
                .fetch_all(p)
                .await
                .during("sample a datastore's blobs")?
            });
            if sample.is_empty() {
                continue;
            }
            let mut missing = 0;
            for (location, size) in &sample {
                let present = match BlobKey::parse(location) {
                    Some(key) => store.size(&key).await? == u64::try_from(*size).ok(),
                    None => false,
                };
                missing += usize::from(!present);
            }
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
                return Ok(Some(DatastoreId(candidate.id)));
            }
            findings.push(format!(
                "{missing} of {} sampled blobs of datastore #{} are missing there",
                sample.len(),
                candidate.id
            ));
        }
        Err(DbError::WrongDatastore {
            given: given.to_owned(),
            recorded: Recorded::describe(recorded),
            first: recorded.first().map(|r| r.uri.clone()).unwrap_or_default(),
            why: format!(
                "the data was said to have moved to {given}, but {}",
                findings.join("; ")
            ),
        })
    }
}
