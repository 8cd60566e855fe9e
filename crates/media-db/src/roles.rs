//! The roles a media sink plays, one narrow trait each, so that a job asks only for
//! what it uses and another schema can play the same roles: [`crate::Repository`] (our
//! own schema) implements all of them, and a matrix-media-repo deployment (its `media`,
//! `thumbnails` and `background_tasks` tables) is the next implementation.
//!
//! Rules every implementation keeps (DESIGN.md, Invariants):
//! * no datastore call is made while a database transaction or lock is held;
//! * a row is only committed once the object it references is known to be stored;
//! * dedup is decided by the database, inside a transaction;
//! * a deletion removes rows and queues objects in one transaction, and the objects
//!   are deleted afterwards, by [`DeletionQueue::drain_pending_deletions`].

use async_trait::async_trait;
use futures::stream::BoxStream;
use media_core::datastore::{BlobKey, Datastore};
use media_core::ids::{RoomId, ServerName, Sha256Hex, UserId};
use media_core::records::{MediaKey, MediaRecord, Purpose, ThumbnailRecord};
use std::collections::{HashMap, HashSet};

use crate::error::DbError;
use crate::model::{
    Blob, BlobMove, BlobOutcome, BlobTally, DatastoreId, DeletedMedia, DrainReport, InsertOutcome,
    MediaOutcome, MoveOutcome, NewBlob, NewMedia, PendingDeletion, PinReport, PurgeCandidate,
    PurgeSelection, PurgeTally, PurgedBatch, QuarantineAction, QuarantineChangesPage,
    QuarantineReport, RoomMedia, TaskFilter, TaskId, TaskKind, TaskRecord, Unsound, Upload, Usage,
    UsageTotals,
};

/// Which bytes are recorded, and where: the content-addressed index of blobs.
#[async_trait]
pub trait BlobIndex: Send + Sync {
    /// Records a blob that was just put into `store`, or returns the existing row for its
    /// digest. A new row is only committed once `store` was seen to hold the object.
    async fn insert_blob(
        &self,
        blob: &NewBlob,
        store: &dyn Datastore,
    ) -> Result<BlobOutcome, DbError>;

    /// The blob row for a digest, if any.
    async fn get_blob(&self, sha256: &Sha256Hex) -> Result<Option<Blob>, DbError>;

    /// How many media and thumbnail rows reference a blob.
    async fn blob_reference_count(&self, sha256: &Sha256Hex) -> Result<u64, DbError>;
}

/// The media and thumbnail records, never overwritten.
#[async_trait]
pub trait MediaIndex: Send + Sync {
    /// Records media with their thumbnails and blobs, all in one transaction (one batch
    /// of an import): a media is never visible without the thumbnails that came with it.
    /// Its bytes must have been put into `store`, registered as its `datastore_id`; that
    /// is checked before the transaction. A media inserted already quarantined appends a
    /// quarantine change. Returns one outcome per media, in order.
    async fn insert_media_batch(
        &self,
        batch: &[NewMedia],
        store: &dyn Datastore,
    ) -> Result<Vec<MediaOutcome>, DbError>;

    /// Records one media, its thumbnails and their blobs (see
    /// [`MediaIndex::insert_media_batch`]).
    async fn insert_media(
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
    async fn insert_thumbnail(
        &self,
        thumbnail: &ThumbnailRecord,
        datastore_id: DatastoreId,
        store: &dyn Datastore,
    ) -> Result<InsertOutcome, DbError>;

    /// One media, if recorded.
    async fn get_media(&self, key: &MediaKey) -> Result<Option<MediaRecord>, DbError>;

    /// The thumbnails of a media, ordered by size, method and type.
    async fn thumbnails_of(&self, key: &MediaKey) -> Result<Vec<ThumbnailRecord>, DbError>;

    /// The digests of those of `media_ids` of `origin` that are recorded, by media ID:
    /// to compare them with the bytes of another copy.
    async fn existing_media_digests(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, Sha256Hex>, DbError>;

    /// The thumbnails recorded for those of `media_ids` of `origin`, by media ID: to
    /// import only the thumbnails a recorded media still lacks.
    async fn recorded_thumbnails(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, Vec<ThumbnailRecord>>, DbError>;

    /// Every media uploaded by `user`, ordered by (origin, media_id), fetched page by page.
    fn media_by_uploader(&self, user: &UserId) -> BoxStream<'static, Result<MediaRecord, DbError>>;

    /// Every media of `origin`, ordered by media_id, fetched page by page.
    fn media_by_origin(
        &self,
        origin: &ServerName,
    ) -> BoxStream<'static, Result<MediaRecord, DbError>>;

    /// How many media `user` uploaded.
    async fn count_media_by_uploader(&self, user: &UserId) -> Result<u64, DbError>;

    /// How many media `origin` has.
    async fn count_media_by_origin(&self, origin: &ServerName) -> Result<u64, DbError>;

    /// Pins media (for instance because they are in use as avatars), in one transaction.
    async fn pin_media(&self, keys: &[MediaKey]) -> Result<PinReport, DbError>;
}

/// Quarantine: bytes refused everywhere, and the stream of changes to it.
#[async_trait]
pub trait Quarantine: Send + Sync {
    /// Quarantines (or lifts the quarantine of) a media and every media with the same
    /// bytes, except pinned ones, and appends one quarantine change per media changed.
    async fn set_quarantined(
        &self,
        key: &MediaKey,
        action: QuarantineAction<'_>,
    ) -> Result<QuarantineReport, DbError>;

    /// [`Quarantine::set_quarantined`] for each of `keys`, in one transaction (one batch
    /// of a bulk quarantine); keys no longer recorded are skipped. The report lists every
    /// media changed and every pinned media skipped, once each.
    async fn set_quarantined_batch(
        &self,
        keys: &[MediaKey],
        action: QuarantineAction<'_>,
    ) -> Result<QuarantineReport, DbError>;

    /// Up to `limit` (at most [`crate::QUARANTINE_CHANGES_PAGE_LIMIT`]) quarantine
    /// changes after stream position `from` (0 for the start), oldest first.
    async fn quarantine_changes(
        &self,
        from: i64,
        limit: usize,
    ) -> Result<QuarantineChangesPage, DbError>;

    /// Whether any media with these bytes is quarantined, or was purged while
    /// quarantined: such bytes are refused by every import.
    async fn is_hash_quarantined(&self, sha256: &Sha256Hex) -> Result<bool, DbError>;
}

/// Deleting media: rows and queue in one transaction, objects afterwards.
#[async_trait]
pub trait DeletionQueue: Send + Sync {
    /// Deletes media rows and their thumbnails in one transaction, and in that same
    /// transaction removes the blob rows nothing references any more and queues their
    /// objects. Objects are not touched: run [`DeletionQueue::drain_pending_deletions`]
    /// after this returns. Which media may be deleted (pinned, quarantined) is the
    /// caller's policy.
    async fn delete_media(&self, keys: &[MediaKey]) -> Result<DeletedMedia, DbError>;

    /// The queued object deletions of a datastore, oldest first (at most `limit`), each
    /// with its queue position.
    async fn pending_deletions(
        &self,
        datastore_id: DatastoreId,
        limit: i64,
    ) -> Result<Vec<(i64, PendingDeletion)>, DbError>;

    /// Those of `claimed` (deletions this process claimed) still queued and whose object
    /// no blob row points at again: another drain may have carried out and dequeued the
    /// others (the bytes may have been recorded again since), and a transfer may have
    /// moved a blob back onto the object. Check right before deleting.
    async fn still_due(
        &self,
        claimed: &[(i64, PendingDeletion)],
    ) -> Result<Vec<(i64, PendingDeletion)>, DbError>;

    /// Dequeues the claimed deletions `ids`, whose objects are gone.
    async fn acknowledge_deletions(&self, ids: &[i64]) -> Result<(), DbError>;

    /// Deletes the queued objects of `datastore_id` from `store` and dequeues them,
    /// holding no transaction while `store` is asked: a batch is claimed, its objects are
    /// deleted, then it is acknowledged. A run that stops anywhere (a crash, a failing
    /// datastore) leaves its unacknowledged entries queued for the next run. An object
    /// whose blob was recorded again before its claim is kept.
    async fn drain_pending_deletions(
        &self,
        datastore_id: DatastoreId,
        store: &dyn Datastore,
    ) -> Result<DrainReport, DbError>;
}

/// Moving blobs from one datastore to another without ever losing one (`media_admin
/// datastores transfer`). The protocol, which converges after a crash anywhere:
///
/// 1. [`queue_copies`](BlobTransfer::queue_copies): before a blob is copied, the copy is
///    queued for deletion in the destination (a write-ahead entry: until the switch
///    commits, the copy is a stray that a drain removes);
/// 2. copy and verify, with no transaction open;
/// 3. [`switch_blobs`](BlobTransfer::switch_blobs): in one transaction per batch, point
///    each row at its copy (only if it still points at the source), drop the copy's
///    write-ahead entry and queue the source object for deletion;
/// 4. drain both datastores' queues ([`DeletionQueue::drain_pending_deletions`]).
#[async_trait]
pub trait BlobTransfer: Send + Sync {
    /// The distinct blobs of `datastore_id` (created before `created_before`, ms, when
    /// given) and their bytes.
    async fn tally_blobs(
        &self,
        datastore_id: DatastoreId,
        created_before: Option<i64>,
    ) -> Result<BlobTally, DbError>;

    /// Up to `limit` blobs of `datastore_id` (created before `created_before` when given)
    /// whose digest sorts after `after` and not after `through` (each when given), in
    /// digest order: one page of a keyset walk.
    async fn blobs_in(
        &self,
        datastore_id: DatastoreId,
        created_before: Option<i64>,
        after: Option<&Sha256Hex>,
        through: Option<&Sha256Hex>,
        limit: i64,
    ) -> Result<Vec<Blob>, DbError>;

    /// Queues, in one transaction, the deletion of the copies about to be made of `blobs`
    /// in datastore `to` (at the same content-addressed location), before anything is
    /// copied; returns each entry's queue ID, in order.
    async fn queue_copies(&self, to: DatastoreId, blobs: &[Blob]) -> Result<Vec<i64>, DbError>;

    /// Switches each blob's row to its verified copy, in one transaction: compare-and-swap
    /// on the row's datastore and location; the copy's write-ahead entry is dropped and
    /// the source object is queued for deletion. Returns one outcome per move, in order.
    async fn switch_blobs(&self, moves: &[BlobMove]) -> Result<Vec<MoveOutcome>, DbError>;
}

/// The log of tool runs, for audit and resume.
#[async_trait]
pub trait TaskLog: Send + Sync {
    /// Records the start of a run of a tool with its parameters; returns its ID.
    async fn start_task(
        &self,
        kind: TaskKind,
        params: &serde_json::Value,
    ) -> Result<TaskId, DbError>;

    /// Records the end of a run: its counters (JSON) and its error, if it failed.
    async fn finish_task(
        &self,
        id: TaskId,
        counters: &str,
        error: Option<&str>,
    ) -> Result<(), DbError>;

    /// The recorded runs `filter` selects, oldest first.
    async fn tasks(&self, filter: TaskFilter) -> Result<Vec<TaskRecord>, DbError>;

    /// One recorded run, if there is one with this ID.
    async fn task(&self, id: TaskId) -> Result<Option<TaskRecord>, DbError>;
}

/// The attributes of a media (as matrix-media-repo's admin API has them): its purpose.
#[async_trait]
pub trait MediaAttributes: Send + Sync {
    /// Sets the purpose of a media; returns the one it had, or [`DbError::NotFound`].
    async fn set_purpose(&self, key: &MediaKey, purpose: Purpose) -> Result<Purpose, DbError>;
}

/// Purging media (`media_admin purge`): a [`PurgeSelection`] walked in keyset pages, each
/// batch deleted in one transaction that also queues the objects nobody references any
/// more (see [`DeletionQueue`]), reserves the purged IDs of the repository's own servers
/// and keeps the bytes of purged quarantined media blocked. A dry run tallies each batch
/// with the same pages and the same reference rule, deleting nothing. Because the plan is
/// recomputed from the rows, a run stopped anywhere converges on the next.
#[async_trait]
pub trait Purge: Send + Sync {
    /// How many media `selection` selects now.
    async fn count_purge(&self, selection: &PurgeSelection) -> Result<u64, DbError>;

    /// Up to `limit` media of `selection` after `after`, in (origin, media_id) order.
    async fn purge_page(
        &self,
        selection: &PurgeSelection,
        after: Option<&MediaKey>,
        limit: i64,
    ) -> Result<Vec<PurgeCandidate>, DbError>;

    /// What [`Purge::purge_batch`] would do with `batch` (a page of `selection`, every
    /// earlier page already purged), changing nothing.
    async fn tally_purge(
        &self,
        selection: &PurgeSelection,
        batch: &[PurgeCandidate],
        ours: &[ServerName],
    ) -> Result<PurgeTally, DbError>;

    /// Deletes `batch` (a page of a purge) in one transaction: media, thumbnails, blob
    /// rows nothing references any more (their objects queued for deletion, claimed for
    /// the caller), with the IDs of media of `ours` (the repository's own servers)
    /// reserved and the bytes of quarantined media blocked. The same transaction first
    /// acknowledges the claimed deletions `acknowledged` (an earlier batch's objects,
    /// gone now). The caller deletes the claimed objects ([`crate::delete_claimed`])
    /// and acknowledges them with the next batch or
    /// [`DeletionQueue::acknowledge_deletions`]; a run that stops first leaves them
    /// queued for the next drain.
    async fn purge_batch(
        &self,
        batch: &[PurgeCandidate],
        ours: &[ServerName],
        acknowledged: &[i64],
    ) -> Result<PurgedBatch, DbError>;

    /// The server names the repository's imports recorded as their own (the
    /// `server_name` of each `import_synapse` run in the task log).
    async fn recorded_own_servers(&self) -> Result<Vec<ServerName>, DbError>;

    /// Whether a media ID was reserved by a purge.
    async fn is_reserved(&self, key: &MediaKey) -> Result<bool, DbError>;

    /// Those of `media_ids` of `origin` that a purge reserved, each with the recorded
    /// reason: imports never write them again.
    async fn reserved_media_ids(
        &self,
        origin: &ServerName,
        media_ids: &[&str],
    ) -> Result<HashMap<String, String>, DbError>;
}

/// Who uses the space (`media_admin usage`): aggregated by the database, largest first,
/// only the first `limit` rows fetched, so memory does not grow with the repository.
/// Each figure comes with what deduplication saves: the media's bytes as uploaded
/// against the bytes of the distinct blobs they use.
#[async_trait]
pub trait UsageReport: Send + Sync {
    /// Every media, their bytes and the bytes of the distinct blobs they use.
    async fn usage_totals(&self) -> Result<UsageTotals, DbError>;

    /// The `limit` servers (origins) whose media take the most bytes, largest first.
    async fn usage_by_server(&self, limit: u32) -> Result<Vec<Usage<ServerName>>, DbError>;

    /// The `limit` uploaders whose media take the most bytes, largest first; only
    /// `users` when some are named (remote media have no uploader).
    async fn usage_by_user(
        &self,
        users: &[UserId],
        limit: u32,
    ) -> Result<Vec<Usage<UserId>>, DbError>;

    /// Every month in which media were uploaded (`2026-01`, in UTC), oldest first, with
    /// the media uploaded in it (stored bytes: of the distinct blobs they use).
    async fn usage_by_month(&self) -> Result<Vec<Usage<String>>, DbError>;

    /// The `limit` largest media, largest first; only `keys` when some are named.
    async fn largest_uploads(&self, keys: &[MediaKey], limit: u32) -> Result<Vec<Upload>, DbError>;
}

/// Checking a datastore against the rows (`media_admin check`): what the rows say of the
/// objects a datastore lists, and queueing the orphans among them for deletion through
/// the usual protocol ([`DeletionQueue`]).
#[async_trait]
pub trait StoreCheck: Send + Sync {
    /// How many object deletions from datastore `datastore_id` are queued.
    async fn count_queued(&self, datastore_id: DatastoreId) -> Result<u64, DbError>;

    /// Those of `keys`, objects listed in datastore `datastore_id`, whose deletion from it
    /// is queued.
    async fn queued_among(
        &self,
        datastore_id: DatastoreId,
        keys: &[BlobKey],
    ) -> Result<HashSet<BlobKey>, DbError>;

    /// Queues for deletion from `datastore_id`, in one transaction, those of `keys` that
    /// are still orphans in it (checked inside the transaction, once any writer recording
    /// the same bytes has committed: no blob row points at them, none is queued); returns
    /// how many were queued. Drain the queue afterwards: a writer that records one of
    /// them meanwhile cancels its deletion, or (when the drain claimed it first) puts its
    /// bytes again.
    async fn queue_orphans(
        &self,
        datastore_id: DatastoreId,
        keys: &[BlobKey],
    ) -> Result<u64, DbError>;

    /// The rows of `kind` (items such as `mxc://…`, `thumbnail of mxc://…`, `blob …`):
    /// how many, and the first `limit` of them, read in one pass.
    async fn unsound_rows(
        &self,
        kind: Unsound,
        limit: usize,
    ) -> Result<(u64, Vec<String>), DbError>;
}

/// Which rooms hold which media, as Synapse's events reference them (recorded by
/// `import_synapse --include rooms`): a room's media for `media_admin purge room` and
/// `quarantine room`.
#[async_trait]
pub trait RoomIndex: Send + Sync {
    /// Records that each media of `links` was referenced in its room, in one
    /// transaction; links already recorded stay as they are. Returns how many were new.
    async fn record_room_media(&self, links: &[RoomMedia]) -> Result<u64, DbError>;

    /// How many media references are recorded for `room` (whether or not the
    /// repository holds the media): none means the room's events were never read.
    async fn count_room_references(&self, room: &RoomId) -> Result<u64, DbError>;

    /// Every media of the repository recorded in `room`, ordered by (origin, media_id),
    /// fetched page by page.
    fn media_in_room(&self, room: &RoomId) -> BoxStream<'static, Result<MediaRecord, DbError>>;

    /// How many media of the repository are recorded in `room`.
    async fn count_media_in_room(&self, room: &RoomId) -> Result<u64, DbError>;
}
