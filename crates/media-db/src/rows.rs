//! Raw rows of our repository and their validated conversions into the values of
//! [`crate::model`]. Depends only on the model and the error type.

use media_core::datastore::BlobKey;
use media_core::ids::{MediaId, ServerName, Sha256Hex, UserId};
use media_core::records::{MediaKey, MediaRecord, ThumbnailRecord};

use crate::error::DbError;
use crate::model::{Blob, DatastoreId, PendingDeletion};

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

/// A validated user ID read from a column of `table`.
pub(crate) fn user_id(table: &'static str, user: &str) -> Result<UserId, DbError> {
    UserId::try_from(user).map_err(|e| invalid(table, user.to_owned())(e.to_string()))
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

/// A row of `blobs`, as stored (also read from a JSON array of its columns, in order).
#[derive(Debug, sqlx::FromRow, serde::Deserialize)]
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
        let Self {
            sha256,
            size_bytes,
            datastore_id,
            location,
            created_ts,
        } = self;
        // The digest is checked in place, not copied: an invalid one is named by the
        // error, and the row by its location.
        let sha256 = Sha256Hex::try_from(sha256)
            .map_err(|e| invalid("blobs", location.clone())(e.to_string()))?;
        let bad = |reason: String| invalid("blobs", sha256.to_string())(reason);
        let size_bytes =
            u64::try_from(size_bytes).map_err(|_| bad(format!("negative size {size_bytes}")))?;
        let location = BlobKey::parse_owned(location)
            .map_err(|location| bad(format!("location {location:?} is not a blob key")))?;
        Ok(Blob {
            sha256,
            size_bytes,
            datastore_id: DatastoreId(datastore_id),
            location,
            created_ts,
        })
    }
}
