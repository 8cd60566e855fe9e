//! The recorded datastores of a repository, opened where they are recorded, to delete
//! what the deletion queue holds (after a purge, and what a stopped run left queued).

use std::collections::HashMap;
use std::sync::Arc;

use media_core::datastore::Datastore;
use media_db::{
    DatastoreId, DeletedClaims, DeletionQueue, DrainReport, PendingDeletion, RecordedDatastore,
    Repository, delete_claimed,
};

use crate::error::AdminError;

/// Drains the deletion queue of every recorded datastore, opening each (once) where the
/// repository records it, and checking it by its identity marker first.
#[derive(Default)]
pub struct QueueDrainer {
    opened: HashMap<DatastoreId, Arc<dyn Datastore>>,
}

impl QueueDrainer {
    /// Deletes the objects queued in every recorded datastore that has some queued;
    /// returns the sum of the drains.
    pub async fn drain_all(&mut self, repo: &Repository) -> Result<DrainReport, AdminError> {
        let mut total = DrainReport::default();
        for record in repo.datastore_records().await? {
            let drained = self.drain(repo, &record).await?;
            total += drained;
        }
        Ok(total)
    }

    /// Deletes the objects queued in `record`'s datastore (opening it only when some
    /// are queued).
    pub async fn drain(
        &mut self,
        repo: &Repository,
        record: &RecordedDatastore,
    ) -> Result<DrainReport, AdminError> {
        if repo.pending_deletions(record.id, 1).await?.is_empty() {
            return Ok(DrainReport::default());
        }
        let store = self.open(record).await?;
        Ok(repo
            .drain_pending_deletions(record.id, store.as_ref())
            .await?)
    }

    /// Deletes the objects of `claimed` (queued deletions claimed by a purge) that are
    /// still due ([`DeletionQueue::still_due`]) from their datastores, opening each
    /// once; [`DeletedClaims::gone`] lists those to acknowledge.
    pub async fn delete_claimed(
        &mut self,
        repo: &Repository,
        claimed: &[(i64, PendingDeletion)],
    ) -> Result<DeletedClaims, AdminError> {
        let mut by_store: HashMap<DatastoreId, Vec<(i64, PendingDeletion)>> = HashMap::new();
        // Those another drain took over, or whose object a row uses again, stay as they
        // are (a drain dequeues them).
        for (id, pending) in repo.still_due(claimed).await? {
            by_store
                .entry(pending.datastore_id)
                .or_default()
                .push((id, pending));
        }
        let mut total = DeletedClaims::default();
        if by_store.is_empty() {
            return Ok(total);
        }
        // Every datastore is opened before anything is deleted: one that cannot be opened
        // leaves every claimed object in place, rather than objects deleted and never
        // acknowledged. Every entry's datastore is recorded (`media_admin check` reports
        // one that is not); an entry of any other would stay queued, as a drain leaves it.
        let mut work = Vec::new();
        for record in repo.datastore_records().await? {
            if let Some(claimed) = by_store.remove(&record.id) {
                work.push((self.open(&record).await?, claimed));
            }
        }
        for (store, claimed) in work {
            let deleted = delete_claimed(store.as_ref(), &claimed).await;
            total.gone.extend(deleted.gone);
            total.report += deleted.report;
            if total.failure.is_none() {
                total.failure = deleted.failure;
            }
        }
        Ok(total)
    }

    /// `record`'s datastore, opened for writing once (see [`open_recorded`]).
    async fn open(&mut self, record: &RecordedDatastore) -> Result<Arc<dyn Datastore>, AdminError> {
        if let Some(store) = self.opened.get(&record.id) {
            return Ok(store.clone());
        }
        let store = open_recorded(record, Access::ReadWrite).await?;
        self.opened.insert(record.id, store.clone());
        Ok(store)
    }
}

/// How a recorded datastore is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// To read only: nothing is created or written (not even a writer's temporary
    /// folder, nor the removal of abandoned ones).
    ReadOnly,
    /// To write and delete.
    ReadWrite,
}

/// `record`'s datastore, opened at its recorded URI once it is known to be the one
/// recorded (a datastore holding another identity marker is refused: reading it would
/// judge another repository's bytes, deleting from it would delete them).
pub async fn open_recorded(
    record: &RecordedDatastore,
    access: Access,
) -> Result<Arc<dyn Datastore>, AdminError> {
    let open_error = |source| AdminError::Open {
        uri: record.uri.clone(),
        source,
    };
    let look = media_store::open_read_only(&record.uri)
        .await
        .map_err(open_error)?;
    let marker = look.read_marker().await.map_err(open_error)?;
    if let Some(identity) = &record.identity
        && marker.as_deref() != Some(identity)
    {
        return Err(AdminError::NotRecordedDatastore {
            uri: record.uri.clone(),
            id: record.id.0,
            found: marker,
        });
    }
    match access {
        Access::ReadOnly => Ok(look),
        Access::ReadWrite => media_store::open(&record.uri).await.map_err(open_error),
    }
}
