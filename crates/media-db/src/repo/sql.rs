//! SQL shared by the roles of our repository: statement fragments, placeholders and the
//! in-transaction steps several roles take (recording a blob or a thumbnail, appending a
//! quarantine change). The steps are macros so that one body serves both dialects'
//! transaction types.

use std::collections::HashSet;

use media_core::ids::Sha256Hex;
use media_core::records::ThumbnailRecord;

use crate::connect::Dialect;
use crate::error::DbError;
use crate::model::InsertOutcome;

/// Rows per multi-row statement: far below the bound-parameter limits of SQLite (32766)
/// and PostgreSQL (65535) at 13 columns.
pub(crate) const ROWS_PER_STATEMENT: usize = 1_000;

/// The condition that a `pending_deletions` row names an object a blob row points at
/// (same digest, datastore and location): such an object is live, and its queued
/// deletion is cancelled (by a writer) or dropped (by a drain) instead of carried out.
/// The digest alone is not enough: during and after a transfer the same bytes are queued
/// for deletion in one datastore while the blob row points at the other.
pub(crate) const LIVE_OBJECT: &str = "EXISTS (SELECT 1 FROM blobs \
     WHERE blobs.sha256 = pending_deletions.sha256 \
     AND blobs.datastore_id = pending_deletions.datastore_id \
     AND blobs.location = pending_deletions.location)";

/// How many times a write transaction the database aborted to break a deadlock is tried
/// again before its error is reported.
const DEADLOCK_RETRIES: u32 = 3;

/// Runs `transaction` (one write transaction, rolled back when it fails) and runs it
/// again when the database aborted it to break a deadlock ([`DbError::is_deadlock`]),
/// up to [`DEADLOCK_RETRIES`] times: the other transaction of the circle went on.
pub(crate) async fn retrying_deadlocks<T, F, Fut>(mut transaction: F) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbError>>,
{
    let mut deadlocks = 0;
    loop {
        match transaction().await {
            Err(e) if e.is_deadlock() && deadlocks < DEADLOCK_RETRIES => deadlocks += 1,
            result => return result,
        }
    }
}

/// One try at a write transaction that records blobs.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    /// Committed, with this result.
    Done(T),
    /// Rolled back: these new blobs were not checked in the datastore before the
    /// transaction (their rows vanished after the check for recorded digests, or while
    /// the transaction ran: [`lock_blobs_in`]), or a drain may have deleted their objects
    /// since they were checked (the deletion epoch moved). Check them, then try again.
    /// None: a row the attempt met (a media recorded already) was deleted meanwhile; try
    /// again.
    Unverified(Vec<String>),
}

/// The blobs a writer saw in the datastore before its transaction, and the deletion
/// epoch read before it looked (see `migrations/*/0010_deletion_epoch.sql`).
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    /// The digests whose objects were seen with their sizes.
    pub digests: HashSet<String>,
    /// The deletion epoch read before any of them was looked at.
    pub epoch: i64,
}

/// Reads the deletion epoch on `$conn`; evaluates to `Result<i64, DbError>`.
macro_rules! deletion_epoch_in {
    ($conn:expr) => {
        async {
            sqlx::query_scalar::<_, i64>("SELECT epoch FROM deletion_epoch WHERE id = 1")
                .fetch_one($conn)
                .await
                .during("read the deletion epoch")
        }
        .await
    };
}
pub(crate) use deletion_epoch_in;

/// How a transaction locks the blob rows it depends on. PostgreSQL only: the references
/// of media and thumbnails to blobs have no foreign keys there
/// (`migrations/postgres/0011_references_locked_by_statements.sql`), and these locks
/// keep them; SQLite's one writer at a time needs none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlobLock {
    /// A writer's: the rows its media and thumbnails reference stay until it commits
    /// (`FOR KEY SHARE`, which other writers share).
    Referenced,
    /// A deletion's: it waits for every writer referencing the rows and keeps new ones
    /// out until it commits (`FOR UPDATE`), so that a check made after it sees every
    /// reference.
    Deleting,
}

/// The clause that holds the rows a writer's statement reads until its transaction
/// commits, as a foreign key's check would: ` FOR KEY SHARE` on PostgreSQL (shared with
/// other writers, waited for by a deletion); nothing on SQLite, whose one writer at a
/// time needs no lock.
pub(crate) fn held_by_writer(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => " FOR KEY SHARE",
        Dialect::Sqlite => "",
    }
}

/// Locks the blob rows of `$digests` (in digest order) in the open transaction `$conn`
/// (of `$dialect`) as `$lock` (a [`BlobLock`]) says; evaluates to
/// `Result<Vec<String>, DbError>`, the digests whose row is gone (a deletion committed
/// after this transaction found the row). Locked in digest order, so two transactions
/// locking the same rows never wait for each other in a circle.
macro_rules! lock_blobs_in {
    ($conn:expr, $dialect:expr, $digests:expr, $lock:expr) => {
        async {
            let digests: &[&str] = $digests;
            let mut gone = Vec::new();
            if $dialect != $crate::Dialect::Postgres {
                return Ok::<_, $crate::error::DbError>(gone);
            }
            let mode = match $lock {
                $crate::repo::sql::BlobLock::Referenced => {
                    $crate::repo::sql::held_by_writer($dialect)
                }
                $crate::repo::sql::BlobLock::Deleting => " FOR UPDATE",
            };
            for chunk in digests.chunks($crate::repo::sql::ROWS_PER_STATEMENT) {
                let sql = format!(
                    "SELECT sha256 FROM blobs WHERE sha256 IN ({}) ORDER BY sha256{mode}",
                    $crate::repo::sql::placeholder_list($dialect, chunk.len(), 1)
                );
                let mut query =
                    sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).persistent(false);
                for sha256 in chunk {
                    query = query.bind(*sha256);
                }
                let locked: std::collections::HashSet<String> = query
                    .fetch_all($conn)
                    .await
                    .during("lock blob rows")?
                    .into_iter()
                    .collect();
                gone.extend(
                    chunk
                        .iter()
                        .filter(|sha256| !locked.contains(**sha256))
                        .map(|sha256| sha256.to_string()),
                );
            }
            Ok(gone)
        }
        .await
    };
}
pub(crate) use lock_blobs_in;

/// `SELECT <every media column> FROM media <tail>`, as a literal.
macro_rules! select_media {
    ($tail:literal) => {
        concat!(
            "SELECT origin, media_id, sha256, upload_name, content_type, user_id, size_bytes, \
             created_ts, last_access_ts, quarantined, quarantined_by, purpose, imported_from \
             FROM media ",
            $tail
        )
    };
}
pub(crate) use select_media;

/// Lets the statements of the open transaction `$conn` (of `$dialect`) that look up one
/// key reuse their cached plans on PostgreSQL; evaluates to `Result<(), DbError>`. The
/// connection's `force_custom_plan` (connect.rs) plans every execution again, which a
/// look-up by key does not need: planning one took longer than running it (first seen on
/// the foreign-key checks PostgreSQL ran per row, before migration 0011 dropped them).
/// A generic plan of a key look-up stays one (checked on a table of ten rows grown to
/// 300,000). The transaction's statements whose plan depends on the tables' size must
/// then be unnamed (`persistent(false)`): an unnamed statement is planned at each
/// execution in `auto` mode too.
macro_rules! reuse_key_lookup_plans_in {
    ($conn:expr, $dialect:expr) => {
        async {
            if $dialect == $crate::Dialect::Postgres {
                sqlx::query("SET LOCAL plan_cache_mode = auto")
                    .execute($conn)
                    .await
                    .during("let key look-ups reuse their plans")?;
            }
            Ok::<_, $crate::error::DbError>(())
        }
        .await
    };
}
pub(crate) use reuse_key_lookup_plans_in;

/// Inserts a blob row in the open transaction `$conn` (insert-or-get) and evaluates to
/// `Result<Attempt<BlobOutcome>, DbError>`. A new row must be one whose object was seen
/// in the datastore before the transaction (`$verified`, a [`Verified`], holds its
/// digest) with no deletion acknowledged since; otherwise the attempt is
/// [`Attempt::Unverified`] and the caller rolls back, checks, and retries. A new row
/// cancels any queued deletion of the same digest (see [`cancel_deletions_in`]).
/// A macro so that one body serves both dialects' transaction types.
macro_rules! insert_blob_in {
    ($conn:expr, $dialect:expr, $blob:expr, $verified:expr, $datastore:expr) => {
        async {
            let blob: &$crate::model::NewBlob = $blob;
            let verified: &$crate::repo::sql::Verified = $verified;
            let key = media_core::datastore::BlobKey::for_hash(&blob.sha256);
            let inserted = sqlx::query(
                "INSERT INTO blobs (sha256, size_bytes, datastore_id, location, created_ts) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(blob.sha256.as_str())
            .bind($crate::repo::sql::size_column(blob.size_bytes, || {
                format!("blob {}", blob.sha256)
            })?)
            .bind(blob.datastore_id.0)
            .bind(key.as_str())
            .bind(media_core::now_ms())
            .execute($conn)
            .await
            .during("insert a blob")?
            .rows_affected();
            if inserted == 1 {
                if !verified.digests.contains(blob.sha256.as_str()) {
                    return Ok($crate::repo::sql::Attempt::Unverified(vec![
                        blob.sha256.to_string(),
                    ]));
                }
                if let Some(again) = $crate::repo::sql::cancel_deletions_in!(
                    $conn,
                    $dialect,
                    &[blob.sha256.as_str()],
                    $datastore,
                    verified
                )? {
                    return Ok($crate::repo::sql::Attempt::Unverified(again));
                }
                Ok::<_, $crate::error::DbError>($crate::repo::sql::Attempt::Done(
                    $crate::model::BlobOutcome::Inserted,
                ))
            } else {
                let gone = $crate::repo::sql::lock_blobs_in!(
                    $conn,
                    $dialect,
                    &[blob.sha256.as_str()],
                    $crate::repo::sql::BlobLock::Referenced
                )?;
                if !gone.is_empty() {
                    // Deleted since the insert found it: the bytes are new again.
                    return Ok($crate::repo::sql::Attempt::Unverified(gone));
                }
                let row: $crate::rows::BlobRow = sqlx::query_as(
                    "SELECT sha256, size_bytes, datastore_id, location, created_ts \
                     FROM blobs WHERE sha256 = $1",
                )
                .bind(blob.sha256.as_str())
                .fetch_one($conn)
                .await
                .during("read an existing blob")?;
                Ok($crate::repo::sql::Attempt::Done(
                    $crate::model::BlobOutcome::Existing(row.into_blob()?),
                ))
            }
        }
        .await
    };
}
pub(crate) use insert_blob_in;

/// Cancels the queued deletions of `$digests` (the new blob rows of the open
/// transaction `$conn`, whose objects were seen as `$verified` holds) and confirms that
/// no drain deleted one of those objects since; evaluates to
/// `Result<Option<Vec<String>>, DbError>`, `Some` of the digests to check again. Only the
/// deletions of the very objects the blob rows now point at are cancelled
/// ([`LIVE_OBJECT`]: same digest, datastore and location); a queued deletion of the same
/// bytes in another datastore (a transfer's source, or its write-ahead entry for a copy)
/// stays queued.
///
/// - A deletion already claimed by a drain may have removed the object (the drain
///   deletes with no transaction open), so finding one is [`DbError::BlobMissing`]: the
///   transaction must roll back, and the bytes be put again once the drain has
///   acknowledged the deletion.
/// - A drain deletes an object and only then dequeues its entry, so an entry already
///   gone may have taken the object after it was seen, and only the deletion epoch shows
///   it: when it moved since `$verified` was read, every digest is to be checked again.
macro_rules! cancel_deletions_in {
    ($conn:expr, $dialect:expr, $digests:expr, $datastore:expr, $verified:expr) => {
        async {
            let digests: &[&str] = $digests;
            let verified: &$crate::repo::sql::Verified = $verified;
            if digests.is_empty() {
                return Ok::<_, $crate::error::DbError>(None);
            }
            for chunk in digests.chunks($crate::repo::sql::ROWS_PER_STATEMENT) {
                let sql = format!(
                    "DELETE FROM pending_deletions WHERE sha256 IN ({}) AND {} \
                     RETURNING sha256, claimed_ts",
                    $crate::repo::sql::placeholder_list($dialect, chunk.len(), 1),
                    $crate::repo::sql::LIVE_OBJECT
                );
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).persistent(false);
                for sha256 in chunk {
                    query = query.bind(*sha256);
                }
                let cancelled: Vec<(String, Option<i64>)> = query
                    .fetch_all($conn)
                    .await
                    .during("cancel queued deletions")?;
                if let Some(sha256) = cancelled
                    .into_iter()
                    .filter(|(_, claimed)| claimed.is_some())
                    .map(|(sha256, _)| sha256)
                    .min()
                {
                    return Err($crate::error::DbError::BlobMissing {
                        sha256,
                        datastore: $datastore,
                    });
                }
            }
            let epoch = $crate::repo::sql::deletion_epoch_in!($conn)?;
            Ok((epoch != verified.epoch)
                .then(|| digests.iter().map(|sha256| sha256.to_string()).collect()))
        }
        .await
    };
}
pub(crate) use cancel_deletions_in;

/// Binds a thumbnail's identity columns (origin, media_id, width, height, method,
/// content_type, animated) to `$query`, and with `all` also sha256, size_bytes, created_ts.
macro_rules! bind_thumbnail {
    ($query:expr, $t:expr, identity) => {
        $query
            .bind($t.media.origin.as_str())
            .bind($t.media.media_id.as_str())
            .bind(i64::from($t.width))
            .bind(i64::from($t.height))
            .bind($t.method.as_str())
            .bind($t.content_type.as_str())
            .bind($t.animated)
    };
    ($query:expr, $t:expr, all) => {
        bind_thumbnail!($query, $t, identity)
            .bind($t.sha256.as_str())
            .bind($crate::repo::sql::size_column($t.size_bytes, || {
                format!("a thumbnail of {}", $t.media)
            })?)
            .bind($t.created_ts)
    };
}
pub(crate) use bind_thumbnail;

/// `size` as the value of a `size_bytes` column, or [`DbError::SizeOutOfRange`] naming
/// the `item` it belongs to: a size is never wrapped into a negative number.
pub(crate) fn size_column(size: u64, item: impl FnOnce() -> String) -> Result<i64, DbError> {
    media_core::records::size_to_i64(size).map_err(|source| DbError::SizeOutOfRange {
        item: item(),
        source,
    })
}

/// Holds the row of the media `$key` in the open transaction `$conn` (of `$dialect`)
/// until it commits ([`held_by_writer`]); evaluates to `Result<bool, DbError>`, whether
/// the media is there. A deletion of the media waits for it, then deletes the thumbnails
/// added under it (see [`BlobLock`]).
macro_rules! hold_media_in {
    ($conn:expr, $dialect:expr, $key:expr) => {
        async {
            let key: &media_core::records::MediaKey = $key;
            let held: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT CAST(1 AS BIGINT) FROM media WHERE origin = $1 AND media_id = $2{}",
                $crate::repo::sql::held_by_writer($dialect)
            )))
            .bind(key.origin.as_str())
            .bind(key.media_id.as_str())
            .fetch_optional($conn)
            .await
            .during("hold a media's row")?;
            Ok::<_, $crate::error::DbError>(held.is_some())
        }
        .await
    };
}
pub(crate) use hold_media_in;

/// Inserts a thumbnail row (never overwriting) in the open transaction `$conn`; evaluates
/// to `Result<InsertOutcome, DbError>`. Its blob row must exist and be held
/// ([`lock_blobs_in`]), and its media's row be held ([`hold_media_in`]) when this
/// transaction did not insert it.
macro_rules! insert_thumbnail_in {
    ($conn:expr, $thumbnail:expr) => {
        async {
            let t: &media_core::records::ThumbnailRecord = $thumbnail;
            let outcome = {
                // Guarded by the media's existence, so a missing media is an outcome, not a
                // foreign-key error.
                let inserted = bind_thumbnail!(sqlx::query(
                    "INSERT INTO thumbnails (origin, media_id, width, height, method, \
                     content_type, animated, sha256, size_bytes, created_ts) \
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 \
                     WHERE EXISTS (SELECT 1 FROM media WHERE origin = $1 AND media_id = $2) \
                     ON CONFLICT (origin, media_id, width, height, method, content_type, animated) \
                     DO NOTHING",
                ), t, all)
                .execute($conn)
                .await
                .during("insert a thumbnail")?
                .rows_affected();
                if inserted == 1 {
                    $crate::model::InsertOutcome::Inserted
                } else {
                    let existing: Option<String> = bind_thumbnail!(sqlx::query_scalar(
                        "SELECT sha256 FROM thumbnails WHERE origin = $1 AND media_id = $2 \
                         AND width = $3 AND height = $4 AND method = $5 AND content_type = $6 \
                         AND animated = $7",
                    ), t, identity)
                    .fetch_optional($conn)
                    .await
                    .during("read an existing thumbnail")?;
                    match existing {
                        None => $crate::model::InsertOutcome::MediaMissing,
                        Some(existing) => {
                            $crate::repo::sql::compare_existing("thumbnails", &t.media.to_string(), &existing, &t.sha256)?
                        }
                    }
                }
            };
            Ok::<_, $crate::error::DbError>(outcome)
        }
        .await
    };
}
pub(crate) use insert_thumbnail_in;

/// Appends one entry to the quarantine-changes stream in the open transaction `$conn`.
macro_rules! append_quarantine_change_in {
    ($conn:expr, $origin:expr, $media_id:expr, $quarantined:expr, $ts:expr) => {
        sqlx::query(
            "INSERT INTO quarantine_changes (origin, media_id, quarantined, ts) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind($origin.as_str())
        .bind($media_id.as_str())
        .bind($quarantined)
        .bind($ts)
        .execute($conn)
        .await
        .during("append a quarantine change")
    };
}
pub(crate) use append_quarantine_change_in;

/// `($1, $2, $3), ($4, $5, $6)`: placeholders for `rows` rows of `columns` values.
///
/// A statement built with it (or with [`placeholder_list`]) changes with its batch's size,
/// so it is prepared with `.persistent(false)`: sqlx would otherwise keep each size's
/// compiled program on each connection (up to a hundred of them, tens of kilobytes each
/// at a thousand rows), which was 40 MiB of an import's 90 MiB heap.
pub(crate) fn values_list(dialect: Dialect, rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            format!(
                "({})",
                placeholder_list(dialect, columns, row * columns + 1)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$first, $first+1, …`: `count` placeholders. SQLite gets anonymous `?`s: looking up
/// numbered ones costs SQLite time linear in their count, per bound value.
pub(crate) fn placeholder_list(dialect: Dialect, count: usize, first: usize) -> String {
    match dialect {
        Dialect::Sqlite => vec!["?"; count].join(", "),
        Dialect::Postgres => (first..first + count)
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The unique key of a thumbnail row: origin, media_id, width, height, method, type,
/// animated.
pub(crate) type ThumbnailIdentity = (String, String, i32, i32, String, String, bool);

/// The unique key of a thumbnail record, as the database returns it.
pub(crate) fn thumbnail_identity(t: &ThumbnailRecord) -> ThumbnailIdentity {
    (
        t.media.origin.to_string(),
        t.media.media_id.to_string(),
        t.width as i32,
        t.height as i32,
        t.method.as_str().to_owned(),
        t.content_type.clone(),
        t.animated,
    )
}

/// Compares the digest of an existing row with the one being inserted.
pub(crate) fn compare_existing(
    table: &'static str,
    key: &str,
    existing: &str,
    wanted: &Sha256Hex,
) -> Result<InsertOutcome, DbError> {
    if existing == wanted.as_str() {
        return Ok(InsertOutcome::AlreadyPresent);
    }
    let existing_sha256 = Sha256Hex::try_from(existing).map_err(|e| DbError::InvalidRow {
        table,
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(InsertOutcome::Conflict { existing_sha256 })
}

/// Asserts that SQLite's plan of a page (the rows of `EXPLAIN QUERY PLAN`) reads a range
/// of an index after the previous page's key, in the index's order: no scan or sort of
/// every row before it. `what` names the page in the message.
#[cfg(test)]
pub(crate) fn assert_reads_a_key_range(plan: &[(i64, i64, i64, String)], what: &str) {
    let steps: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
    assert!(
        steps
            .iter()
            .any(|step| step.contains("media_id>?") || step.contains("(origin,media_id)>(?,?)")),
        "{what}: {steps:?}"
    );
    assert!(
        !steps.iter().any(|step| step.contains("TEMP B-TREE")),
        "{what}: {steps:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_across_rows() {
        assert_eq!(placeholder_list(Dialect::Postgres, 3, 4), "$4, $5, $6");
        assert_eq!(
            values_list(Dialect::Postgres, 2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(values_list(Dialect::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }
}
