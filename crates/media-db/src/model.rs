//! The values the repository roles ([`crate::roles`]) take and return: what a sink
//! records and reports, independent of any schema. This module depends on nothing else
//! in the crate, so every role, every implementation and the raw rows can use it.

use media_core::datastore::BlobKey;
use media_core::ids::{RoomId, ServerName, Sha256Hex, UserId};
use media_core::records::{MediaKey, MediaRecord, ThumbnailRecord};

/// The most changes one page of [`crate::Quarantine::quarantine_changes`] returns, as
/// Synapse's quarantine-changes admin API.
pub const QUARANTINE_CHANGES_PAGE_LIMIT: usize = 100;

/// The numeric ID of a datastore registered in the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatastoreId(pub i64);

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

/// What [`crate::MediaIndex::pin_media`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PinReport {
    /// Media pinned now.
    pub pinned: u64,
    /// Media that were pinned already.
    pub already_pinned: u64,
    /// Keys with no media in the repository.
    pub missing: u64,
}

/// Which way [`crate::Quarantine::set_quarantined`] moves a media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineAction<'a> {
    /// Quarantine it, recording who did (`quarantined_by`).
    Quarantine {
        /// The administrator responsible, if known.
        by: Option<&'a str>,
    },
    /// Lift its quarantine (and clear `quarantined_by`).
    Lift,
}

impl QuarantineAction<'_> {
    /// The `quarantined` state the media end up in.
    pub fn quarantined(self) -> bool {
        matches!(self, Self::Quarantine { .. })
    }

    /// The `quarantined_by` the media end up with.
    pub fn by(&self) -> Option<&str> {
        match self {
            Self::Quarantine { by } => *by,
            Self::Lift => None,
        }
    }
}

/// The result of (un)quarantining a media.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QuarantineReport {
    /// Every media whose state changed (the target and those sharing its bytes).
    pub changed: Vec<MediaKey>,
    /// Media with the same bytes left alone because they are pinned.
    pub skipped_pinned: u64,
    /// Those pinned media.
    pub pinned: Vec<MediaKey>,
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

/// What [`crate::DeletionQueue::delete_media`] deleted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeletedMedia {
    /// Media rows deleted.
    pub media: Vec<MediaKey>,
    /// Requested media that did not exist.
    pub not_found: Vec<MediaKey>,
    /// Thumbnail rows deleted with them.
    pub thumbnails: u64,
    /// Blobs that lost their last reference: their rows are gone and their objects are
    /// queued for deletion (each with its queue position).
    pub enqueued: Vec<(i64, PendingDeletion)>,
    /// The bytes of those blobs.
    pub bytes_freed: u64,
}

/// What [`crate::DeletionQueue::drain_pending_deletions`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainReport {
    /// Objects deleted from the datastore.
    pub deleted: u64,
    /// Queued objects that were already gone.
    pub already_gone: u64,
    /// Queued objects kept because their blob was recorded again meanwhile.
    pub kept: u64,
}

impl std::ops::AddAssign for DrainReport {
    fn add_assign(&mut self, other: Self) {
        self.deleted += other.deleted;
        self.already_gone += other.already_gone;
        self.kept += other.kept;
    }
}

/// A datastore the repository records (see [`crate::Repository::datastore_records`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedDatastore {
    /// Its ID.
    pub id: DatastoreId,
    /// Where it was last used.
    pub uri: String,
    /// The identity marker it holds, once one was recorded.
    pub identity: Option<String>,
}

/// A datastore the repository records, and what of the repository is in it (see
/// [`crate::Repository::datastore_usage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatastoreUsage {
    /// Its ID.
    pub id: DatastoreId,
    /// Where it was last used.
    pub uri: String,
    /// The identity marker it holds, once one was recorded.
    pub identity: Option<String>,
    /// Media rows whose blob is in it.
    pub media: u64,
    /// Thumbnail rows whose blob is in it.
    pub thumbnails: u64,
    /// Blobs (distinct digests) in it.
    pub blobs: u64,
    /// The bytes of those blobs.
    pub bytes: u64,
    /// Objects queued for deletion from it.
    pub queued_deletions: u64,
}

/// A count of distinct blobs and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlobTally {
    /// Distinct blobs.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A blob whose object was copied to another datastore and checked there, ready to
/// have its row switched to the copy ([`crate::BlobTransfer::switch_blobs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMove {
    /// The blob, as its row was read (its datastore and location are the source's).
    pub blob: Blob,
    /// The datastore holding the copy.
    pub to: DatastoreId,
    /// The copy's key there.
    pub location: BlobKey,
    /// The queue entry that deletes the copy unless the switch commits (the write-ahead
    /// entry [`crate::BlobTransfer::queue_copies`] returned).
    pub guard: i64,
}

/// What [`crate::BlobTransfer::switch_blobs`] did with one [`BlobMove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveOutcome {
    /// The row points at the copy; the source object is queued for deletion.
    Switched,
    /// The blob's row was deleted or moved meanwhile: nothing changed, and the copy stays
    /// queued for deletion (it is a stray).
    Vanished,
    /// A drain claimed the copy's write-ahead entry (it may be deleting the copy):
    /// nothing changed; copy the blob again.
    CopyClaimed,
}

/// Which tool a recorded run ([`crate::TaskLog`]) belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// `import_synapse`.
    ImportSynapse,
    /// `gdpr_import`.
    GdprImport,
    /// `gdpr_export`.
    GdprExport,
    /// `media_admin datastores transfer`.
    Transfer,
    /// `media_admin purge …`.
    Purge,
    /// `media_admin quarantine …` and `unquarantine …`.
    Quarantine,
    /// `media_admin mmr pull`: a matrix-media-repo deployment moved into the repository.
    MmrPull,
}

impl TaskKind {
    /// The name stored in the task log: the tool's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ImportSynapse => "import_synapse",
            Self::GdprImport => "gdpr_import",
            Self::GdprExport => "gdpr_export",
            Self::Transfer => "media_admin datastores transfer",
            Self::Purge => "media_admin purge",
            Self::Quarantine => "media_admin quarantine",
            Self::MmrPull => "media_admin mmr pull",
        }
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The ID of a run recorded in the task log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub i64);

/// One run recorded in the task log ([`crate::TaskLog::tasks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// Its ID.
    pub id: TaskId,
    /// The tool (and subcommand) that ran, as stored ([`TaskKind::as_str`]).
    pub kind: String,
    /// Its parameters (JSON, as recorded).
    pub params: String,
    /// When it started, ms since the epoch.
    pub started_ts: i64,
    /// When it finished; none while it runs, or when it was stopped (killed).
    pub finished_ts: Option<i64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Its counters (JSON, as recorded at the end).
    pub counters: Option<String>,
}

/// Which runs [`crate::TaskLog::tasks`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskFilter {
    /// Every run.
    #[default]
    All,
    /// Runs not recorded as finished (still running, or stopped before their end).
    Unfinished,
}

/// Which media a purge removes ([`crate::Purge`]). Every bulk form spares pinned media,
/// and every form but [`PurgeSelection::Quarantined`] and [`PurgeSelection::Media`]
/// spares quarantined media (their rows keep their bytes blocked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeSelection {
    /// Media of every origin but `spare` (the repository's own servers), created
    /// (downloaded) before `before` (ms).
    Remote {
        /// The origins that are ours.
        spare: Vec<ServerName>,
        /// Only media created before this moment (ms).
        before: i64,
    },
    /// Quarantined media, and every other media holding bytes that are quarantined
    /// (held by a quarantined media, or blocked by an earlier purge): their bytes are
    /// deleted and stay blocked ([`crate::Quarantine::is_hash_quarantined`]).
    Quarantined,
    /// The named media, pinned or quarantined alike.
    Media(Vec<MediaKey>),
    /// Media uploaded by a user.
    User {
        /// The uploader.
        user: UserId,
        /// Only media created before this moment (ms), when given.
        before: Option<i64>,
    },
    /// Media of one origin.
    Server {
        /// The origin.
        origin: ServerName,
        /// Only media created before this moment (ms), when given.
        before: Option<i64>,
    },
    /// Media recorded in a room ([`crate::RoomIndex`]).
    Room {
        /// The room.
        room: RoomId,
        /// Only media created before this moment (ms), when given.
        before: Option<i64>,
    },
    /// Media last accessed (or, never accessed, created) before `since`, except those
    /// of the origins in `spare`.
    Unaccessed {
        /// The moment (ms).
        since: i64,
        /// Origins left alone (ours, unless local media are included).
        spare: Vec<ServerName>,
    },
}

/// A media referenced in a room's events ([`crate::RoomIndex`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoomMedia {
    /// The room.
    pub room: RoomId,
    /// The media.
    pub media: MediaKey,
}

/// Rows that point at a row that is not there (`media_admin check`): none in a sound
/// repository. SQLite's foreign keys refuse them; PostgreSQL's repository keeps these
/// references with row locks instead
/// (`migrations/postgres/0011_references_locked_by_statements.sql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsound {
    /// Media and thumbnail rows whose bytes have no blob row.
    RowsWithoutBlob,
    /// Thumbnail rows whose media row is gone (listed once per media).
    ThumbnailsWithoutMedia,
    /// Blob rows and queued deletions whose datastore is not recorded.
    RowsWithoutDatastore,
}

/// A media a purge selected, as its row was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeCandidate {
    /// The media.
    pub key: MediaKey,
    /// Its bytes.
    pub sha256: Sha256Hex,
    /// Whether it is quarantined (its bytes are then blocked for good when it is purged).
    pub quarantined: bool,
}

/// What purging one batch of media did (or, in a dry run, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgeTally {
    /// Media rows deleted.
    pub media: u64,
    /// Thumbnail rows deleted with them.
    pub thumbnails: u64,
    /// Blobs that lost their last reference (rows deleted, objects queued).
    pub blobs_freed: u64,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Media IDs of our own servers reserved (never to be reused).
    pub reserved: u64,
}

/// What [`crate::Purge::purge_batch`] did: its tally, and the object deletions it
/// queued, claimed already by the caller, who deletes them
/// ([`crate::delete_claimed`]) and then acknowledges them.
#[derive(Debug, Clone, Default)]
pub struct PurgedBatch {
    /// What the batch purged.
    pub tally: PurgeTally,
    /// The queued deletions of the blobs it freed, each with its queue position.
    pub claimed: Vec<(i64, PendingDeletion)>,
}

/// What deleting claimed objects did ([`crate::delete_claimed`]).
#[derive(Debug, Default)]
pub struct DeletedClaims {
    /// The queue positions of the objects now gone, to acknowledge.
    pub gone: Vec<i64>,
    /// Objects deleted, and objects already gone.
    pub report: DrainReport,
    /// The first deletion that failed (its entry and those of the other failures stay
    /// queued).
    pub failure: Option<media_core::datastore::StoreError>,
}

impl std::ops::AddAssign for PurgeTally {
    fn add_assign(&mut self, other: Self) {
        self.media += other.media;
        self.thumbnails += other.thumbnails;
        self.blobs_freed += other.blobs_freed;
        self.bytes_freed += other.bytes_freed;
        self.reserved += other.reserved;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifting_a_quarantine_forgets_who_set_it() {
        let set = QuarantineAction::Quarantine {
            by: Some("@admin:example.org"),
        };
        assert!(set.quarantined());
        assert_eq!(set.by(), Some("@admin:example.org"));
        assert!(!QuarantineAction::Lift.quarantined());
        assert_eq!(QuarantineAction::Lift.by(), None);
    }

    #[test]
    fn task_kinds_are_stored_under_the_tool_names() {
        let names: Vec<String> = [
            TaskKind::ImportSynapse,
            TaskKind::GdprImport,
            TaskKind::GdprExport,
            TaskKind::Transfer,
            TaskKind::Purge,
            TaskKind::Quarantine,
            TaskKind::MmrPull,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            names,
            [
                "import_synapse",
                "gdpr_import",
                "gdpr_export",
                "media_admin datastores transfer",
                "media_admin purge",
                "media_admin quarantine",
                "media_admin mmr pull"
            ]
        );
    }
}

/// How much of the repository something uses (a server, a user): its media, their bytes
/// as uploaded, and the bytes stored for them once deduplicated (see
/// [`crate::UsageReport`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage<K> {
    /// What uses it: a server name, a user.
    pub of: K,
    /// Its media rows.
    pub media: u64,
    /// The sum of their sizes ("logical" bytes: what they would take without
    /// deduplication).
    pub bytes: u64,
    /// The sum of the sizes of the distinct blobs they use (what they take stored).
    pub stored_bytes: u64,
}

/// The whole repository's [`Usage`]: every media, their bytes and the bytes of the
/// distinct blobs they use.
pub type UsageTotals = Usage<()>;

/// One media, by size (`media_admin usage uploads`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The media.
    pub key: MediaKey,
    /// Its uploader, for a local media.
    pub uploader: Option<UserId>,
    /// Its size.
    pub size_bytes: u64,
    /// Its content type, as uploaded.
    pub content_type: Option<String>,
    /// When it was uploaded (ms since the epoch).
    pub created_ts: i64,
    /// How many media rows (this one included) share its bytes.
    pub copies: u64,
}
