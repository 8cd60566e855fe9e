//! Where an archive is imported to: the narrow [`ArchiveSink`] `gdpr_import` goes
//! through, and its implementation over our own repository ([`RepositoryArchiveSink`]).
//! A matrix-media-repo deployment is the other implementation (`media_mmr`'s, which
//! records through the same `MmrSink` as `import_synapse`).
//!
//! The sink answers exactly what an import (or a verification) asks: where new bytes of
//! a media go, which media are recorded and with which bytes, which IDs may never be
//! written, where bytes it already stores are and whether they are intact there, whether
//! bytes are quarantined, and the recording itself. Every implementation keeps the
//! repository roles' rules: the database decides dedup inside a transaction; a row is
//! only committed once its object is stored and synced ([`ArchiveSink::sync`] runs
//! before each recording); no datastore call is made while a transaction is held.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use media_core::datastore::{BlobKey, BlobReader, Datastore, StoreError};
use media_core::ids::{ServerName, Sha256Hex};
use media_core::records::{MediaKey, MediaRecord};
use media_db::repo::{DatastoreId, NewMedia, Repository};
use media_db::{
    BlobIndex, Datastores, DbError, InsertOutcome, MediaIndex, Purge, Quarantine, TaskId, TaskKind,
    TaskLog,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::GdprError;

/// Chunk size of reads that check stored bytes.
const CHUNK: usize = 1 << 20;

/// Where the sink stores some bytes already (the first place its rows name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedBytes {
    /// The datastore's ID, as the sink's rows hold it (as text).
    pub datastore: String,
    /// The object's location in that datastore.
    pub location: String,
    /// The datastore, for messages (`datastore #1 (file:///…)`).
    pub shown: String,
    /// `Some(key)` when the bytes are in the datastore this import writes them to, at
    /// the content-addressed `key`: a missing or damaged object is put back there. `None`
    /// when they are elsewhere: the import records against them, never repairs them.
    pub repairable_at: Option<BlobKey>,
    /// How to put the bytes back when this import cannot.
    pub repair_elsewhere: String,
}

/// What stored bytes hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Present with the right size and digest.
    Intact,
    /// Not there.
    Missing,
    /// There, but not the right bytes (or unreadable): why.
    Damaged(String),
}

/// What an archive is imported into. See the [module documentation](self).
#[async_trait]
pub trait ArchiveSink: Send + Sync {
    /// Where the sink is, for the report's route (no password).
    fn describe(&self) -> String;

    /// The datastore new bytes of the media `key` go to.
    fn datastore_for(&self, key: &MediaKey) -> &Arc<dyn Datastore>;

    /// Makes every object put into [`ArchiveSink::datastore_for`]'s datastores durable.
    async fn sync(&self) -> Result<(), StoreError>;

    /// The digests of those of `media_ids` of `origin` that are recorded, by media ID.
    async fn existing_media_digests(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, Sha256Hex>, DbError>;

    /// Those of `media_ids` of `origin` that must never be written, with the reason.
    async fn reserved_media_ids(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, String>, DbError>;

    /// Where the bytes `sha256` are stored already, if they are, seen from an import of
    /// the media `key` (which decides the datastore it writes to).
    async fn recorded_bytes(
        &self,
        sha256: &Sha256Hex,
        key: &MediaKey,
    ) -> Result<Option<RecordedBytes>, GdprError>;

    /// Reads and hashes `recorded`: [`Stored`], or why its datastore cannot be read.
    async fn check(
        &self,
        recorded: &RecordedBytes,
        sha256: &Sha256Hex,
        size: u64,
    ) -> Result<Result<Stored, String>, GdprError>;

    /// Whether the bytes `sha256` are quarantined.
    async fn is_hash_quarantined(&self, sha256: &Sha256Hex) -> Result<bool, DbError>;

    /// Records media whose bytes are stored and synced, in one transaction, never
    /// overwriting; one outcome per media, in order.
    async fn record_media(&self, batch: &[MediaRecord]) -> Result<Vec<InsertOutcome>, DbError>;

    /// Records the start of an import with its parameters.
    async fn start_task(&self, params: &serde_json::Value) -> Result<TaskId, DbError>;

    /// Records the end of an import: its counters (JSON) and its error, if it failed.
    async fn finish_task(
        &self,
        task: TaskId,
        counters: &str,
        error: Option<&str>,
    ) -> Result<(), DbError>;
}

/// Reads `reader` to its end (at most one byte past `size`) and checks its size and
/// digest.
pub async fn check_bytes(mut reader: BlobReader, sha256: &Sha256Hex, size: u64) -> Stored {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; CHUNK];
    let mut length = 0u64;
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                length += n as u64;
                if length > size {
                    return Stored::Damaged(format!(
                        "it holds more than the {size} bytes recorded"
                    ));
                }
            }
            Err(e) => return Stored::Damaged(format!("it cannot be read: {e}")),
        }
    }
    let actual = Sha256Hex::from_digest(&hasher.finalize().into());
    if length != size {
        Stored::Damaged(format!("it holds {length} bytes, not the {size} recorded"))
    } else if &actual != sha256 {
        Stored::Damaged(format!("its bytes hash to {actual}, not {sha256}"))
    } else {
        Stored::Intact
    }
}

/// Reads the object `key` of `store` and checks it ([`check_bytes`]).
pub async fn stored_state(
    store: &dyn Datastore,
    key: &BlobKey,
    sha256: &Sha256Hex,
    size: u64,
) -> Result<Stored, StoreError> {
    match store.get(key, None).await {
        Ok(reader) => Ok(check_bytes(reader, sha256, size).await),
        Err(StoreError::NotFound { .. }) => Ok(Stored::Missing),
        Err(e) => Err(e),
    }
}

/// Our repository as an archive's sink: new bytes go to its given datastore; bytes it
/// holds in its other datastores are read there (see [`media_db::Datastores`]).
pub struct RepositoryArchiveSink {
    repo: Repository,
    store: Arc<dyn Datastore>,
    datastores: Datastores,
    /// The given datastore's ID: an import records it, a verification may not.
    datastore_id: Option<DatastoreId>,
}

impl RepositoryArchiveSink {
    /// The sink over `repo`; an import (`register`) records the given datastore of
    /// `datastores` as one of the repository's, a verification only looks it up.
    pub async fn open(
        repo: &Repository,
        datastores: Datastores,
        register: bool,
    ) -> Result<Self, DbError> {
        let store = datastores.given().clone();
        let datastore_id = if register {
            Some(repo.register_datastore(&store.uri()).await?)
        } else {
            None
        };
        Ok(Self {
            repo: repo.clone(),
            store,
            datastores,
            datastore_id,
        })
    }

    /// Whether `datastore` is the given one, which new bytes go to.
    fn is_given(&self, datastore: DatastoreId) -> bool {
        Some(datastore) == self.datastore_id.or(self.datastores.given_id())
    }
}

#[async_trait]
impl ArchiveSink for RepositoryArchiveSink {
    fn describe(&self) -> String {
        format!("{}, datastore {}", self.repo.location(), self.store.uri())
    }

    fn datastore_for(&self, _: &MediaKey) -> &Arc<dyn Datastore> {
        &self.store
    }

    async fn sync(&self) -> Result<(), StoreError> {
        self.store.sync().await
    }

    async fn existing_media_digests(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, Sha256Hex>, DbError> {
        self.repo.existing_media_digests(origin, media_ids).await
    }

    async fn reserved_media_ids(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, String>, DbError> {
        self.repo.reserved_media_ids(origin, media_ids).await
    }

    async fn recorded_bytes(
        &self,
        sha256: &Sha256Hex,
        _: &MediaKey,
    ) -> Result<Option<RecordedBytes>, GdprError> {
        let Some(blob) = self.repo.get_blob(sha256).await? else {
            return Ok(None);
        };
        let uri = match self.datastores.store(blob.datastore_id).await? {
            Ok(store) => store.uri(),
            Err(unavailable) => unavailable.uri,
        };
        let given = self.is_given(blob.datastore_id);
        Ok(Some(RecordedBytes {
            datastore: blob.datastore_id.0.to_string(),
            location: blob.location.to_string(),
            shown: format!("datastore #{} ({uri})", blob.datastore_id.0),
            repairable_at: given.then(|| blob.location.clone()),
            repair_elsewhere: format!("gdpr_import with --datastore {uri} puts it back"),
        }))
    }

    async fn check(
        &self,
        recorded: &RecordedBytes,
        sha256: &Sha256Hex,
        size: u64,
    ) -> Result<Result<Stored, String>, GdprError> {
        let (Ok(id), Some(key)) = (
            recorded.datastore.parse::<i64>(),
            BlobKey::parse(&recorded.location),
        ) else {
            return Ok(Err(format!(
                "{} holds no blob at {:?}",
                recorded.shown, recorded.location
            )));
        };
        match self.datastores.store(DatastoreId(id)).await? {
            Ok(store) => Ok(Ok(stored_state(&*store, &key, sha256, size).await?)),
            Err(unavailable) => Ok(Err(unavailable.to_string())),
        }
    }

    async fn is_hash_quarantined(&self, sha256: &Sha256Hex) -> Result<bool, DbError> {
        self.repo.is_hash_quarantined(sha256).await
    }

    async fn record_media(&self, batch: &[MediaRecord]) -> Result<Vec<InsertOutcome>, DbError> {
        let datastore_id = self
            .datastore_id
            .expect("an import registers its datastore before recording");
        let batch: Vec<NewMedia> = batch
            .iter()
            .map(|record| NewMedia {
                record: record.clone(),
                thumbnails: Vec::new(),
                datastore_id,
            })
            .collect();
        let outcomes = self.repo.insert_media_batch(&batch, &*self.store).await?;
        Ok(outcomes.into_iter().map(|o| o.media).collect())
    }

    async fn start_task(&self, params: &serde_json::Value) -> Result<TaskId, DbError> {
        self.repo.start_task(TaskKind::GdprImport, params).await
    }

    async fn finish_task(
        &self,
        task: TaskId,
        counters: &str,
        error: Option<&str>,
    ) -> Result<(), DbError> {
        self.repo.finish_task(task, counters, error).await
    }
}
