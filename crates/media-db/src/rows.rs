//! Raw rows of our repository and their validated conversions into domain types.

use media_core::datastore::BlobKey;
use media_core::ids::{MediaId, ServerName, Sha256Hex, UserId};
use media_core::records::{MediaKey, MediaRecord, ThumbnailRecord};

use crate::connect::Dialect;
use crate::error::DbError;
use crate::repo::{Blob, DatastoreId, PendingDeletion};

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

/// Inserts a blob row in the open transaction `$conn` (insert-or-get) and evaluates to
/// `Result<BlobOutcome, DbError>`. A new row cancels any queued deletion of the same
/// digest (waiting for a drain in progress) and is only kept when `$store` holds the
/// object. A macro so that one body serves both dialects' transaction types.
macro_rules! insert_blob_in {
    ($conn:expr, $blob:expr, $store:expr) => {
        async {
            let blob: &$crate::repo::NewBlob = $blob;
            let store: &dyn media_core::datastore::Datastore = $store;
            let key = media_core::datastore::BlobKey::for_hash(&blob.sha256);
            let inserted = sqlx::query(
                "INSERT INTO blobs (sha256, size_bytes, datastore_id, location, created_ts) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(blob.sha256.as_str())
            .bind($crate::rows::size_column(blob.size_bytes, || {
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
                sqlx::query("DELETE FROM pending_deletions WHERE sha256 = $1")
                    .bind(blob.sha256.as_str())
                    .execute($conn)
                    .await
                    .during("cancel a queued deletion")?;
                match store.size(&key).await? {
                    Some(size) if size == blob.size_bytes => {
                        Ok::<_, $crate::error::DbError>($crate::repo::BlobOutcome::Inserted)
                    }
                    _ => Err($crate::error::DbError::BlobMissing {
                        sha256: blob.sha256.to_string(),
                        datastore: store.uri(),
                    }),
                }
            } else {
                let row: $crate::rows::BlobRow = sqlx::query_as(
                    "SELECT sha256, size_bytes, datastore_id, location, created_ts \
                     FROM blobs WHERE sha256 = $1",
                )
                .bind(blob.sha256.as_str())
                .fetch_one($conn)
                .await
                .during("read an existing blob")?;
                Ok($crate::repo::BlobOutcome::Existing(row.into_blob()?))
            }
        }
        .await
    };
}
pub(crate) use insert_blob_in;

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
            .bind($crate::rows::size_column($t.size_bytes, || {
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

/// Inserts a thumbnail row (never overwriting) in the open transaction `$conn`; evaluates
/// to `Result<InsertOutcome, DbError>`. Its blob row must exist.
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
                    $crate::repo::InsertOutcome::Inserted
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
                        None => $crate::repo::InsertOutcome::MediaMissing,
                        Some(existing) => {
                            $crate::rows::compare_existing("thumbnails", &t.media.to_string(), &existing, &t.sha256)?
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
) -> Result<crate::repo::InsertOutcome, DbError> {
    if existing == wanted.as_str() {
        return Ok(crate::repo::InsertOutcome::AlreadyPresent);
    }
    let existing_sha256 = Sha256Hex::try_from(existing).map_err(|e| DbError::InvalidRow {
        table,
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(crate::repo::InsertOutcome::Conflict { existing_sha256 })
}

fn invalid(table: &'static str, key: String) -> impl Fn(String) -> DbError {
    move |reason| DbError::InvalidRow {
        table,
        key: key.clone(),
        reason,
    }
}

/// A validated media key from raw columns.
pub(crate) fn media_key(
    table: &'static str,
    origin: &str,
    media_id: &str,
) -> Result<MediaKey, DbError> {
    let bad = invalid(table, format!("{origin}/{media_id}"));
    Ok(MediaKey::new(
        ServerName::try_from(origin).map_err(|e| bad(e.to_string()))?,
        MediaId::try_from(media_id).map_err(|e| bad(e.to_string()))?,
    ))
}

/// A validated queue entry from raw columns.
pub(crate) fn pending_deletion(
    datastore_id: i64,
    location: &str,
    sha256: &str,
) -> Result<PendingDeletion, DbError> {
    let bad = invalid("pending_deletions", location.to_owned());
    Ok(PendingDeletion {
        datastore_id: DatastoreId(datastore_id),
        location: BlobKey::parse(location).ok_or_else(|| bad("not a blob key".to_owned()))?,
        sha256: Sha256Hex::try_from(sha256).map_err(|e| bad(e.to_string()))?,
    })
}

/// A row of `media`, as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct MediaRow {
    pub origin: String,
    pub media_id: String,
    pub sha256: String,
    pub upload_name: Option<String>,
    pub content_type: Option<String>,
    pub user_id: Option<String>,
    pub size_bytes: i64,
    pub created_ts: i64,
    pub last_access_ts: Option<i64>,
    pub quarantined: bool,
    pub quarantined_by: Option<String>,
    pub purpose: String,
    pub imported_from: Option<String>,
}

impl MediaRow {
    /// Validates every identifier of the row.
    pub fn into_record(self) -> Result<MediaRecord, DbError> {
        let key = media_key("media", &self.origin, &self.media_id)?;
        let bad = invalid("media", key.to_string());
        Ok(MediaRecord {
            sha256: Sha256Hex::try_from(self.sha256.as_str()).map_err(|e| bad(e.to_string()))?,
            size_bytes: u64::try_from(self.size_bytes)
                .map_err(|_| bad(format!("negative size {}", self.size_bytes)))?,
            upload_name: self.upload_name,
            content_type: self.content_type,
            uploader: self
                .user_id
                .map(|u| UserId::try_from(u.as_str()).map_err(|e| bad(e.to_string())))
                .transpose()?,
            created_ts: self.created_ts,
            last_access_ts: self.last_access_ts,
            quarantined: self.quarantined,
            quarantined_by: self.quarantined_by,
            purpose: self.purpose.parse().map_err(&bad)?,
            imported_from: self.imported_from,
            key,
        })
    }
}

/// A row of `thumbnails`, as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ThumbnailRow {
    pub origin: String,
    pub media_id: String,
    pub width: i32,
    pub height: i32,
    pub method: String,
    pub content_type: String,
    pub animated: bool,
    pub sha256: String,
    pub size_bytes: i64,
    pub created_ts: i64,
}

impl ThumbnailRow {
    /// Validates the row.
    pub fn into_record(self) -> Result<ThumbnailRecord, DbError> {
        let media = media_key("thumbnails", &self.origin, &self.media_id)?;
        let bad = invalid("thumbnails", media.to_string());
        let dimension = |v: i32| u32::try_from(v).map_err(|_| bad(format!("dimension {v}")));
        Ok(ThumbnailRecord {
            width: dimension(self.width)?,
            height: dimension(self.height)?,
            method: self.method.parse().map_err(&bad)?,
            content_type: self.content_type,
            animated: self.animated,
            sha256: Sha256Hex::try_from(self.sha256.as_str()).map_err(|e| bad(e.to_string()))?,
            size_bytes: u64::try_from(self.size_bytes)
                .map_err(|_| bad(format!("negative size {}", self.size_bytes)))?,
            created_ts: self.created_ts,
            media,
        })
    }
}

/// A row of `blobs`, as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct BlobRow {
    pub sha256: String,
    pub size_bytes: i64,
    pub datastore_id: i64,
    pub location: String,
    pub created_ts: i64,
}

impl BlobRow {
    /// Validates the row.
    pub fn into_blob(self) -> Result<Blob, DbError> {
        let bad = invalid("blobs", self.sha256.clone());
        Ok(Blob {
            sha256: Sha256Hex::try_from(self.sha256.as_str()).map_err(|e| bad(e.to_string()))?,
            size_bytes: u64::try_from(self.size_bytes)
                .map_err(|_| bad(format!("negative size {}", self.size_bytes)))?,
            datastore_id: DatastoreId(self.datastore_id),
            location: BlobKey::parse(&self.location)
                .ok_or_else(|| bad(format!("location {:?} is not a blob key", self.location)))?,
            created_ts: self.created_ts,
        })
    }
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
