//! A matrix-media-repo deployment as the sink of a GDPR import: `gdpr_import -config
//! media-repo.yaml -directory …` records an archive's media into MMR, and `-verify`
//! reads back what the archive says.
//!
//! Recording goes through the same [`MmrSink`] as `import_synapse`: rows as MMR writes
//! them, bytes into the datastore MMR picks for their kind (`local_media` for an origin
//! of the config's `homeservers`, else `remote_media`), dedup under the advisory lock
//! on the hash (bytes MMR stores already lend their `(datastore_id, location)`), IDs in
//! `reserved_media` or `media_id_hold` never written. An archive holds no thumbnails;
//! MMR makes them on demand.
//!
//! Bytes the deployment stores already are checked where their row says they are (any
//! location, whoever wrote it): the row of the media imported or verified when it holds
//! them, else the first row holding them. They are put back only when they are the
//! content-addressed object of the datastore this import writes them to; bytes in
//! another datastore, or under a location MMR named itself, are only checked, and their
//! records fail when they are missing or damaged, naming the place.
//!
//! The run is recorded in `background_tasks` as `gdpr_import` once it ended.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use media_core::datastore::{BlobKey, BlobPayload, BlobReader, Datastore, StoreError};
use media_core::ids::{ServerName, Sha256Hex};
use media_core::records::{MediaKey, MediaRecord};
use media_db::{DbError, InsertOutcome, TaskId};
use media_gdpr::sink::check_bytes;
use media_gdpr::{ArchiveSink, GdprError, RecordedBytes, Stored};
use media_import::{Content, ImportSink, StoredMedia};

use crate::config::MediaKind;
use crate::datastores::location_for;
use crate::deployment::MmrDeployment;
use crate::error::MmrError;
use crate::sink::MmrSink;

/// A matrix-media-repo deployment as an archive's sink. See the [module
/// documentation](self).
pub struct MmrArchiveSink {
    sink: MmrSink,
}

impl fmt::Debug for MmrArchiveSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&ArchiveSink::describe(self))
    }
}

impl MmrArchiveSink {
    /// The sink over an open deployment (with a datastore for each of `local_media`,
    /// `remote_media` and `thumbnails`, see [`MmrSink::new`]).
    pub fn new(deployment: MmrDeployment) -> Result<Self, MmrError> {
        Ok(Self {
            sink: MmrSink::new(deployment)?,
        })
    }

    /// The deployment written into.
    pub fn deployment(&self) -> &MmrDeployment {
        self.sink.deployment()
    }
}

#[async_trait]
impl ArchiveSink for MmrArchiveSink {
    fn describe(&self) -> String {
        ImportSink::describe(&self.sink)
    }

    fn datastore_for(&self, key: &MediaKey) -> &Arc<dyn Datastore> {
        ImportSink::datastore_for(&self.sink, key, Content::Media)
    }

    async fn sync(&self) -> Result<(), StoreError> {
        ImportSink::sync(&self.sink).await
    }

    async fn existing_media_digests(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, Sha256Hex>, DbError> {
        self.sink.existing_media_digests(origin, media_ids).await
    }

    async fn reserved_media_ids(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, String>, DbError> {
        self.sink.reserved_media_ids(origin, media_ids).await
    }

    async fn recorded_bytes(
        &self,
        sha256: &Sha256Hex,
        key: &MediaKey,
    ) -> Result<Option<RecordedBytes>, GdprError> {
        let deployment = self.deployment();
        let Some(placement) = deployment
            .placement_of(sha256, Some(key))
            .await
            .map_err(gdpr_error)?
        else {
            return Ok(None);
        };
        let kind = if deployment.config().is_local(&key.origin) {
            MediaKind::LocalMedia
        } else {
            MediaKind::RemoteMedia
        };
        let target = deployment.datastores().for_kind(kind).map_err(gdpr_error)?;
        let content_addressed = location_for(sha256);
        let repairable = target.config().id == placement.datastore_id
            && BlobKey::parse(&placement.location).as_ref() == Some(&content_addressed);
        let id = placement.datastore_id.as_str().to_owned();
        Ok(Some(RecordedBytes {
            shown: format!(
                "matrix-media-repo datastore {id:?} (location {})",
                placement.location
            ),
            repair_elsewhere: format!(
                "put the bytes back at {} in datastore {id:?}: this import writes new \
                 bytes only to {:?}, content-addressed",
                placement.location,
                target.config().id.as_str()
            ),
            repairable_at: repairable.then_some(content_addressed),
            datastore: id,
            location: placement.location,
        }))
    }

    async fn check(
        &self,
        recorded: &RecordedBytes,
        sha256: &Sha256Hex,
        size: u64,
    ) -> Result<Result<Stored, String>, GdprError> {
        let Some(store) = self.deployment().datastores().get(&recorded.datastore) else {
            return Ok(Err(format!(
                "its bytes are in datastore {:?}, which media-repo.yaml does not list",
                recorded.datastore
            )));
        };
        Ok(match store.open_location(&recorded.location).await {
            Ok(payload) => Ok(check_bytes(reader(payload), sha256, size).await),
            Err(MmrError::MissingObject { .. }) => Ok(Stored::Missing),
            Err(unreadable) => Err(unreadable.to_string()),
        })
    }

    async fn is_hash_quarantined(&self, sha256: &Sha256Hex) -> Result<bool, DbError> {
        self.deployment().is_hash_quarantined(sha256).await
    }

    async fn record_media(&self, batch: &[MediaRecord]) -> Result<Vec<InsertOutcome>, DbError> {
        let batch: Vec<StoredMedia> = batch
            .iter()
            .map(|record| StoredMedia {
                record: record.clone(),
                thumbnails: Vec::new(),
            })
            .collect();
        let outcomes = self.sink.record_media(&batch).await?;
        Ok(outcomes.into_iter().map(|o| o.media).collect())
    }

    async fn start_task(&self, params: &serde_json::Value) -> Result<TaskId, DbError> {
        ImportSink::start_task(&self.sink, params).await
    }

    async fn finish_task(
        &self,
        task: TaskId,
        counters: &str,
        error: Option<&str>,
    ) -> Result<(), DbError> {
        self.sink
            .record_task("gdpr_import", task, counters, error)
            .await
    }
}

/// The bytes of an opened object as a stream.
fn reader(payload: BlobPayload) -> BlobReader {
    match payload {
        BlobPayload::File { file, .. } => Box::pin(tokio::fs::File::from_std(file)),
        BlobPayload::Stream(stream) => stream,
    }
}

/// An error of the deployment that stops the import.
fn gdpr_error(error: MmrError) -> GdprError {
    match error {
        MmrError::Db(e) => GdprError::Db(e),
        other => GdprError::Config(other.to_string()),
    }
}
