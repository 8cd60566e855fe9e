//! Where an import writes: the narrow [`ImportSink`] the pipeline goes through, and its
//! implementation over our own repository ([`RepositorySink`]). A matrix-media-repo
//! deployment is the other implementation (`media_mmr::MmrSink`).
//!
//! The sink answers exactly what an import asks: where new bytes go (per media and kind
//! of content, since a matrix-media-repo sorts bytes by kind into datastores), which
//! media are recorded or may never be written (reserved IDs), whether bytes are stored
//! already, and the recording itself (media with their thumbnails in batches, pins, the
//! task log). Every implementation keeps the repository roles' rules
//! (`media_db::roles`): dedup is decided by the database, inside a transaction; a row is
//! only committed once the object it references is stored and synced
//! ([`ImportSink::sync`] runs before every recording); no datastore call is made while a
//! transaction is held.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use media_core::datastore::{Datastore, StoreError};
use media_core::ids::{ServerName, Sha256Hex};
use media_core::records::{MediaKey, MediaRecord, ThumbnailRecord};
use media_db::repo::{DatastoreId, NewMedia, Repository};
use media_db::{
    BlobIndex, DbError, InsertOutcome, MediaIndex, MediaOutcome, PinReport, Purge, RoomIndex,
    TaskId, TaskKind, TaskLog,
};

/// Which content of a media some bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// The media's own bytes.
    Media,
    /// One of its thumbnails.
    Thumbnail,
}

/// A media whose bytes (and its thumbnails' bytes) are stored in the datastores
/// [`ImportSink::datastore_for`] named, ready to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMedia {
    /// The media.
    pub record: MediaRecord,
    /// Its thumbnails, recorded with it.
    pub thumbnails: Vec<ThumbnailRecord>,
}

/// What an import writes into. See the [module documentation](self).
#[async_trait]
pub trait ImportSink: Send + Sync {
    /// Where the sink is, for the report's route (no password).
    fn describe(&self) -> String;

    /// The datastore new bytes of `content` of the media `key` go to.
    fn datastore_for(&self, key: &MediaKey, content: Content) -> &Arc<dyn Datastore>;

    /// Makes every object put into [`ImportSink::datastore_for`]'s datastores durable
    /// (blob before row: runs before each recording).
    async fn sync(&self) -> Result<(), StoreError>;

    /// Where the rooms of media are recorded (`--include rooms`), if the sink keeps
    /// them: a matrix-media-repo does not (it asks the homeserver).
    fn room_index(&self) -> Option<&dyn RoomIndex>;

    /// The digests of those of `media_ids` of `origin` that are recorded, by media ID.
    async fn existing_media_digests(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, Sha256Hex>, DbError>;

    /// The thumbnails recorded for those of `media_ids` of `origin`, by media ID.
    async fn recorded_thumbnails(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, Vec<ThumbnailRecord>>, DbError>;

    /// Those of `media_ids` of `origin` that must never be written (reserved, or held
    /// for an upload in progress), each with the reason the sink records.
    async fn reserved_media_ids(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, String>, DbError>;

    /// The size of the bytes with this digest, when the sink stores them already.
    async fn stored_size(&self, sha256: &Sha256Hex) -> Result<Option<u64>, DbError>;

    /// Records media with their thumbnails, in one transaction; one outcome per media,
    /// in order.
    async fn record_media(&self, batch: &[StoredMedia]) -> Result<Vec<MediaOutcome>, DbError>;

    /// Records one thumbnail of a recorded media.
    async fn record_thumbnail(&self, thumbnail: &ThumbnailRecord)
    -> Result<InsertOutcome, DbError>;

    /// Pins media (in use as avatars), in one transaction.
    async fn pin_media(&self, keys: &[MediaKey]) -> Result<PinReport, DbError>;

    /// Records the start of an import with its parameters.
    async fn start_task(&self, params: &serde_json::Value) -> Result<TaskId, DbError>;

    /// Before recording `incoming` media: sets aside what the sink builds more cheaply
    /// once at the end (a SQLite repository's secondary indexes); whether it did.
    async fn prepare_bulk_load(&self, _incoming: u64) -> Result<bool, DbError> {
        Ok(false)
    }

    /// After a load [`ImportSink::prepare_bulk_load`] prepared, whether it succeeded or
    /// not: builds what it set aside.
    async fn finish_bulk_load(&self) -> Result<(), DbError> {
        Ok(())
    }

    /// Records the end of an import: its counters (JSON) and its error, if it failed.
    async fn finish_task(
        &self,
        task: TaskId,
        counters: &str,
        error: Option<&str>,
    ) -> Result<(), DbError>;
}

/// Our repository as an import's sink: every byte goes to its one datastore.
pub struct RepositorySink {
    repo: Repository,
    store: Arc<dyn Datastore>,
    /// `None` in a dry run on a datastore the repository has not recorded yet.
    datastore_id: Option<DatastoreId>,
}

impl RepositorySink {
    /// The sink over `repo` writing into `store`, which a real run records as one of the
    /// repository's datastores (a dry run only looks it up).
    pub async fn open(
        repo: &Repository,
        store: Arc<dyn Datastore>,
        dry_run: bool,
    ) -> Result<Self, DbError> {
        let datastore_id = if dry_run {
            repo.find_datastore(&store.uri()).await?
        } else {
            Some(repo.register_datastore(&store.uri()).await?)
        };
        Ok(Self {
            repo: repo.clone(),
            store,
            datastore_id,
        })
    }

    fn datastore_id(&self) -> DatastoreId {
        // Only a dry run lacks one, and a dry run records nothing.
        self.datastore_id.unwrap_or(DatastoreId(0))
    }
}

impl fmt::Debug for RepositorySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[async_trait]
impl ImportSink for RepositorySink {
    fn describe(&self) -> String {
        format!("{}, datastore {}", self.repo.location(), self.store.uri())
    }

    fn datastore_for(&self, _: &MediaKey, _: Content) -> &Arc<dyn Datastore> {
        &self.store
    }

    fn room_index(&self) -> Option<&dyn RoomIndex> {
        Some(&self.repo)
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

    async fn recorded_thumbnails(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, Vec<ThumbnailRecord>>, DbError> {
        self.repo.recorded_thumbnails(origin, media_ids).await
    }

    async fn reserved_media_ids(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, String>, DbError> {
        self.repo.reserved_media_ids(origin, media_ids).await
    }

    async fn stored_size(&self, sha256: &Sha256Hex) -> Result<Option<u64>, DbError> {
        Ok(self
            .repo
            .get_blob(sha256)
            .await?
            .map(|blob| blob.size_bytes))
    }

    async fn record_media(&self, batch: &[StoredMedia]) -> Result<Vec<MediaOutcome>, DbError> {
        let batch: Vec<NewMedia> = batch
            .iter()
            .map(|m| NewMedia {
                record: m.record.clone(),
                thumbnails: m.thumbnails.clone(),
                datastore_id: self.datastore_id(),
            })
            .collect();
        self.repo.insert_media_batch(&batch, &*self.store).await
    }

    async fn record_thumbnail(
        &self,
        thumbnail: &ThumbnailRecord,
    ) -> Result<InsertOutcome, DbError> {
        self.repo
            .insert_thumbnail(thumbnail, self.datastore_id(), &*self.store)
            .await
    }

    async fn pin_media(&self, keys: &[MediaKey]) -> Result<PinReport, DbError> {
        self.repo.pin_media(keys).await
    }

    async fn start_task(&self, params: &serde_json::Value) -> Result<TaskId, DbError> {
        self.repo.start_task(TaskKind::ImportSynapse, params).await
    }

    async fn prepare_bulk_load(&self, incoming: u64) -> Result<bool, DbError> {
        self.repo.defer_indexes_for_load(incoming).await
    }

    async fn finish_bulk_load(&self) -> Result<(), DbError> {
        self.repo.build_deferred_indexes().await.map(drop)
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
