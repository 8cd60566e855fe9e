//! Synapse's rows as checked media: every identifier validated before it becomes a path,
//! every impossible value refused. A row that cannot become a media is a [`RowFailure`]
//! naming it, never the end of the stream.

use std::path::PathBuf;
use std::str::FromStr;

use media_core::ids::{MediaId, MxcUri, ServerName, UserId};
use media_core::records::{MediaKey, ThumbnailMethod};
use media_core::run::{Failure, Reason};
use media_db::DbError;

use crate::db::{AvatarRow, LocalMediaRow, RemoteMediaRow, ThumbnailRow};
use crate::paths::{self, ThumbnailName};

/// Why a Synapse row does not become a media (or thumbnail, or avatar reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowFault {
    /// A media created with `/create` and never uploaded: there are no bytes.
    NeverUploaded,
    /// An identifier in the row is not valid; no path was built from it.
    InvalidIdentifier,
    /// The row's values cannot be read (text that is not UTF-8, text in a number
    /// column, a negative or impossible length).
    BadRow,
}

impl Reason for RowFault {
    fn code(self) -> &'static str {
        match self {
            Self::NeverUploaded => "never_uploaded",
            Self::InvalidIdentifier => "invalid_identifier",
            Self::BadRow => "bad_row",
        }
    }
}

/// A Synapse row that does not become a media, and why: the item is the media's
/// `mxc://` URI (or thumbnail label, or avatar) when the row says that much.
pub type RowFailure = Failure<RowFault>;

/// A Synapse media whose identifiers were checked, and where its bytes are.
#[derive(Debug, Clone)]
pub struct SynapseMedia {
    /// Origin and media ID.
    pub key: MediaKey,
    /// The upload file name.
    pub upload_name: Option<String>,
    /// The MIME type.
    pub content_type: Option<String>,
    /// The uploader (local media only).
    pub uploader: Option<UserId>,
    /// Creation time, ms.
    pub created_ts: i64,
    /// Last download, ms.
    pub last_access_ts: Option<i64>,
    /// The admin who quarantined it, when it is quarantined.
    pub quarantined_by: Option<String>,
    /// Its content's path relative to the media store, built from checked parts only.
    pub path: PathBuf,
    /// The SHA-256 Synapse recorded (absent before Synapse 1.128).
    pub sha256: Option<String>,
    /// The length Synapse recorded (a negative one is refused as a
    /// [`RowFault::BadRow`]).
    pub length: u64,
    /// Whether it is a URL-preview media.
    pub url_preview: bool,
}

/// A thumbnail of a [`SynapseMedia`] whose size, type and method were checked, and
/// where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynapseThumbnail {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// How it was made.
    pub method: ThumbnailMethod,
    /// Its MIME type.
    pub content_type: String,
    /// Its file relative to the media store, built from checked parts only.
    pub path: PathBuf,
    /// The length Synapse recorded (old Synapse versions recorded none).
    pub length: Option<u64>,
}

/// Checks a `local_media_repository` row of the server `server_name` and finds its file.
pub fn local_media(
    row: LocalMediaRow,
    server_name: &ServerName,
) -> Result<SynapseMedia, RowFailure> {
    let shown = format!("mxc://{server_name}/{}", row.media_id);
    let media_id = MediaId::try_from(row.media_id.as_str()).map_err(|e| invalid(&shown, e))?;
    let key = MediaKey::new(server_name.clone(), media_id);
    let shown = key.to_string();
    let uploader = row
        .user_id
        .as_deref()
        .map(UserId::try_from)
        .transpose()
        .map_err(|e| invalid(&shown, e))?;
    let length = media_length(
        &shown,
        row.media_length,
        "created but never uploaded: Synapse has no bytes for it",
    )?;
    let url_preview = row.url_cache.is_some();
    let path = paths::local_content(&key.media_id, url_preview)
        .ok_or_else(|| invalid(&shown, "the media ID does not map to a Synapse path"))?;
    Ok(SynapseMedia {
        key,
        upload_name: row.upload_name,
        content_type: row.media_type.filter(|t| !t.is_empty()),
        uploader,
        created_ts: row.created_ts,
        last_access_ts: row.last_access_ts,
        quarantined_by: row.quarantined_by,
        path,
        sha256: row.sha256,
        length,
        url_preview,
    })
}

/// Checks a `remote_media_cache` row and finds its file.
pub fn remote_media(row: RemoteMediaRow) -> Result<SynapseMedia, RowFailure> {
    let shown = format!("mxc://{}/{}", row.media_origin, row.media_id);
    let origin = ServerName::try_from(row.media_origin.as_str()).map_err(|e| invalid(&shown, e))?;
    let media_id = MediaId::try_from(row.media_id.as_str()).map_err(|e| invalid(&shown, e))?;
    let key = MediaKey::new(origin, media_id);
    let filesystem_id = row
        .filesystem_id
        .as_deref()
        .map(MediaId::try_from)
        .transpose()
        .map_err(|e| invalid(&shown, format!("filesystem_id: {e}")))?
        .ok_or_else(|| invalid(&shown, "filesystem_id is NULL"))?;
    let length = media_length(
        &shown,
        row.media_length,
        "no length recorded: Synapse never finished caching it",
    )?;
    let path = paths::remote_content(&key.origin, &filesystem_id)
        .ok_or_else(|| invalid(&shown, "the filesystem ID does not map to a Synapse path"))?;
    Ok(SynapseMedia {
        key,
        upload_name: row.upload_name,
        content_type: row.media_type.filter(|t| !t.is_empty()),
        uploader: None,
        created_ts: row.created_ts,
        last_access_ts: row.last_access_ts,
        quarantined_by: row.quarantined_by,
        path,
        sha256: row.sha256,
        length,
        url_preview: false,
    })
}

/// Checks a row of `local_media_repository_thumbnails` of the local `media` and finds
/// its file.
pub fn local_thumbnail(
    media: &SynapseMedia,
    row: ThumbnailRow,
) -> Result<SynapseThumbnail, RowFailure> {
    thumbnail(&media.key, row, |name| {
        paths::local_thumbnail(&media.key.media_id, media.url_preview, name)
    })
}

/// Checks a row of `remote_media_cache_thumbnails` of the remote `media` and finds its
/// file (under the row's own filesystem ID).
pub fn remote_thumbnail(
    media: &SynapseMedia,
    row: ThumbnailRow,
) -> Result<SynapseThumbnail, RowFailure> {
    let filesystem_id = row
        .filesystem_id
        .as_deref()
        .and_then(|f| MediaId::try_from(f).ok());
    thumbnail(&media.key, row, |name| {
        paths::remote_thumbnail(&media.key.origin, filesystem_id.as_ref()?, name)
    })
}

/// A thumbnail of `key`, or why none can be built from its row; `path_of` finds its
/// file from its checked name.
fn thumbnail(
    key: &MediaKey,
    row: ThumbnailRow,
    path_of: impl FnOnce(&ThumbnailName) -> Option<PathBuf>,
) -> Result<SynapseThumbnail, RowFailure> {
    let label = thumbnail_label(
        &key.to_string(),
        row.thumbnail_width,
        row.thumbnail_height,
        &row.thumbnail_method,
        &row.thumbnail_type,
    );
    let refused = || {
        invalid(
            &label,
            "its size, type, method or filesystem ID cannot be part of a Synapse path",
        )
    };
    let name = ThumbnailName {
        width: u32::try_from(row.thumbnail_width).map_err(|_| refused())?,
        height: u32::try_from(row.thumbnail_height).map_err(|_| refused())?,
        content_type: row.thumbnail_type,
        method: row.thumbnail_method,
    };
    let path = path_of(&name).ok_or_else(refused)?;
    let method: ThumbnailMethod = name.method.parse().map_err(|_| refused())?;
    let length = row
        .thumbnail_length
        .map(|length| recorded_length(&label, "thumbnail_length", length))
        .transpose()?;
    Ok(SynapseThumbnail {
        width: name.width,
        height: name.height,
        method,
        content_type: name.content_type,
        path,
        length,
    })
}

/// How a thumbnail is named in reports: `mxc://… thumbnail WxH method type`.
pub fn thumbnail_label(
    media: &str,
    width: i64,
    height: i64,
    method: &str,
    content_type: &str,
) -> String {
    format!("{media} thumbnail {width}x{height} {method} {content_type}")
}

/// The failure for a media row that could not be decoded ([`DbError::InvalidRow`]),
/// naming its media when its key could be read: `local_server` is the origin of local
/// rows (remote rows carry theirs in their key, `origin/media_id`).
pub fn unreadable_row(error: DbError, local_server: Option<&ServerName>) -> RowFailure {
    match error {
        DbError::InvalidRow { table, key, reason } => {
            let item = match local_server {
                _ if key.starts_with("key unreadable") => format!("a row of {table} ({key})"),
                Some(server) => format!("mxc://{server}/{key}"),
                None => format!("mxc://{key}"),
            };
            Failure {
                item,
                reason: RowFault::BadRow,
                detail: format!("this row of {table} cannot be read: {reason}"),
            }
        }
        other => Failure {
            item: "a Synapse media row".into(),
            reason: RowFault::BadRow,
            detail: other.to_string(),
        },
    }
}

/// The media an avatar row names, or the failure naming the row (one that cannot be
/// read, or whose URL is not a valid MXC URI).
pub fn avatar_media(row: &Result<AvatarRow, DbError>) -> Result<MediaKey, RowFailure> {
    match row {
        Ok(avatar) => MxcUri::from_str(&avatar.url)
            .map(MediaKey::from)
            .map_err(|e| Failure {
                item: format!("avatar {:?}", avatar.url),
                reason: RowFault::InvalidIdentifier,
                detail: format!(
                    "the avatar of {} in {} is not a valid MXC URI ({e}); it is not pinned",
                    avatar.key,
                    avatar.source.table()
                ),
            }),
        Err(DbError::InvalidRow { table, key, reason }) => Err(Failure {
            item: format!("avatar of {key} in {table}"),
            reason: RowFault::BadRow,
            detail: format!("this row of {table} cannot be read: {reason}"),
        }),
        Err(other) => Err(Failure {
            item: "a Synapse avatar row".into(),
            reason: RowFault::BadRow,
            detail: other.to_string(),
        }),
    }
}

fn invalid(item: &str, what: impl std::fmt::Display) -> RowFailure {
    Failure {
        item: item.to_owned(),
        reason: RowFault::InvalidIdentifier,
        detail: what.to_string(),
    }
}

/// The length Synapse recorded for a media; none means it has no bytes to import
/// (`missing` says why: never uploaded, or never finished caching).
fn media_length(item: &str, length: Option<i64>, missing: &str) -> Result<u64, RowFailure> {
    match length {
        Some(length) => recorded_length(item, "media_length", length),
        None => Err(Failure {
            item: item.to_owned(),
            reason: RowFault::NeverUploaded,
            detail: missing.into(),
        }),
    }
}

/// A length as Synapse recorded it (`BIGINT`), or the failure of an impossible one: a
/// negative length is never taken for "unknown" or for 0.
fn recorded_length(item: &str, column: &str, length: i64) -> Result<u64, RowFailure> {
    u64::try_from(length).map_err(|_| Failure {
        item: item.to_owned(),
        reason: RowFault::BadRow,
        detail: format!(
            "{column} is {length}: a length cannot be negative; fix this row in Synapse's \
             database"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::AvatarSource;

    fn server() -> ServerName {
        "example.org".parse().unwrap()
    }

    fn local_row(media_id: &str, length: Option<i64>) -> LocalMediaRow {
        LocalMediaRow {
            media_id: media_id.into(),
            media_type: Some("image/png".into()),
            media_length: length,
            created_ts: 1,
            upload_name: None,
            user_id: Some("@alice:example.org".into()),
            quarantined_by: None,
            url_cache: None,
            last_access_ts: None,
            safe_from_quarantine: false,
            sha256: None,
        }
    }

    fn thumbnail_row(width: i64, content_type: &str) -> ThumbnailRow {
        ThumbnailRow {
            media_origin: None,
            media_id: "abcdefghijkl".into(),
            thumbnail_width: width,
            thumbnail_height: 24,
            thumbnail_type: content_type.into(),
            thumbnail_method: "crop".into(),
            thumbnail_length: Some(10),
            filesystem_id: None,
        }
    }

    #[test]
    fn local_rows_become_media_under_the_media_store_or_a_named_failure() {
        let media = local_media(local_row("abcdefghijkl", Some(3)), &server()).unwrap();
        assert_eq!(media.key.to_string(), "mxc://example.org/abcdefghijkl");
        assert_eq!(media.path, PathBuf::from("local_content/ab/cd/efghijkl"));
        assert_eq!(media.length, 3);

        let never = local_media(local_row("abcdefghijkl", None), &server()).unwrap_err();
        assert_eq!(never.reason, RowFault::NeverUploaded);
        let negative = local_media(local_row("abcdefghijkl", Some(-1)), &server()).unwrap_err();
        assert_eq!(negative.reason.code(), "bad_row");
        let escape = local_media(local_row("../../etc", Some(3)), &server()).unwrap_err();
        assert_eq!(escape.reason, RowFault::InvalidIdentifier);
        assert_eq!(escape.item, "mxc://example.org/../../etc");
    }

    #[test]
    fn thumbnails_with_unsafe_types_or_sizes_are_refused_by_label() {
        let media = local_media(local_row("abcdefghijkl", Some(3)), &server()).unwrap();
        let thumbnail = local_thumbnail(&media, thumbnail_row(32, "image/png")).unwrap();
        assert_eq!(
            thumbnail.path,
            PathBuf::from("local_thumbnails/ab/cd/efghijkl/32-24-image-png-crop")
        );
        assert_eq!(thumbnail.length, Some(10));
        for row in [thumbnail_row(-1, "image/png"), thumbnail_row(32, "../x")] {
            let refused = local_thumbnail(&media, row).unwrap_err();
            assert_eq!(refused.reason, RowFault::InvalidIdentifier);
            assert!(refused.item.contains(" thumbnail "), "{}", refused.item);
        }
        // A remote thumbnail without a filesystem ID has no file.
        assert!(remote_thumbnail(&media, thumbnail_row(32, "image/png")).is_err());
    }

    #[test]
    fn unreadable_rows_and_avatars_are_named() {
        let bad = |key: &str| DbError::InvalidRow {
            table: "local_media_repository",
            key: key.into(),
            reason: "not UTF-8".into(),
        };
        let named = unreadable_row(bad("abc"), Some(&server()));
        assert_eq!(named.item, "mxc://example.org/abc");
        assert_eq!(named.reason, RowFault::BadRow);
        let anonymous = unreadable_row(bad("key unreadable: x"), None);
        assert!(
            anonymous
                .item
                .starts_with("a row of local_media_repository")
        );

        let avatar = |url: &str| {
            Ok(AvatarRow {
                source: AvatarSource::Profile,
                key: "@alice:example.org".into(),
                url: url.into(),
            })
        };
        assert_eq!(
            avatar_media(&avatar("mxc://example.org/abc")).unwrap(),
            MediaKey::new(server(), "abc".parse().unwrap())
        );
        let invalid = avatar_media(&avatar("mxc://example.org/../x")).unwrap_err();
        assert_eq!(invalid.reason, RowFault::InvalidIdentifier);
        assert_eq!(
            avatar_media(&Err(bad("x"))).unwrap_err().reason,
            RowFault::BadRow
        );
    }
}
