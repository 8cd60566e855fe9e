//! Media and thumbnail records as our repository stores them.

use std::fmt;
use std::str::FromStr;

use crate::ids::{MediaId, MxcUri, ServerName, Sha256Hex, UserId};

/// Identifies one media: its origin server and media ID (the two halves of its MXC URI).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediaKey {
    /// The server the media was uploaded to.
    pub origin: ServerName,
    /// The media ID on that server.
    pub media_id: MediaId,
}

impl MediaKey {
    /// A key from its parts.
    pub fn new(origin: ServerName, media_id: MediaId) -> Self {
        Self { origin, media_id }
    }

    /// The `mxc://origin/media_id` URI of this media.
    pub fn mxc(&self) -> MxcUri {
        MxcUri::new(self.origin.clone(), self.media_id.clone())
    }
}

impl From<MxcUri> for MediaKey {
    fn from(mxc: MxcUri) -> Self {
        Self::new(mxc.server().clone(), mxc.media_id().clone())
    }
}

impl fmt::Display for MediaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mxc://{}/{}", self.origin, self.media_id)
    }
}

/// The largest size, in bytes, a media or thumbnail may have: what the signed 64-bit size
/// columns of every database we read or write (ours, Synapse's, Dendrite's,
/// matrix-media-repo's) can hold. A larger size can only come from a damaged or forged
/// source, and is refused where it enters, never wrapped or clamped.
pub const MAX_SIZE_BYTES: u64 = i64::MAX as u64;

/// A size larger than [`MAX_SIZE_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "its size of {0} bytes is more than the {max} a database size column can hold \
     (a damaged or forged record?)",
    max = MAX_SIZE_BYTES
)]
pub struct SizeOutOfRange(pub u64);

/// `size` as the signed 64-bit integer databases store, or [`SizeOutOfRange`] when it is
/// above [`MAX_SIZE_BYTES`].
pub fn size_to_i64(size: u64) -> Result<i64, SizeOutOfRange> {
    i64::try_from(size).map_err(|_| SizeOutOfRange(size))
}

/// Why a media is kept around beyond the usual rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// An ordinary media.
    #[default]
    None,
    /// Pinned (for instance in use as an avatar): never purged, never quarantined by
    /// propagation from another media with the same bytes.
    Pinned,
}

impl Purpose {
    /// The value stored in the `purpose` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::None => "none",
            Purpose::Pinned => "pinned",
        }
    }
}

impl FromStr for Purpose {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Purpose::None),
            "pinned" => Ok(Purpose::Pinned),
            other => Err(format!(
                "unknown media purpose {other:?}: expected \"none\" or \"pinned\""
            )),
        }
    }
}

/// One media as our repository records it. Local media have an uploader; remote media
/// (cached copies of other servers' media) have none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRecord {
    /// Origin server and media ID.
    pub key: MediaKey,
    /// Digest of the bytes (the blob it references).
    pub sha256: Sha256Hex,
    /// Length of the bytes.
    pub size_bytes: u64,
    /// The file name given at upload, if any.
    pub upload_name: Option<String>,
    /// The MIME type given at upload, if any.
    pub content_type: Option<String>,
    /// Who uploaded it; `None` for remote media.
    pub uploader: Option<UserId>,
    /// When the media was created, in ms since the epoch.
    pub created_ts: i64,
    /// When the media was last downloaded, in ms since the epoch, if known.
    pub last_access_ts: Option<i64>,
    /// Whether the media is quarantined (never served, never exported).
    pub quarantined: bool,
    /// The admin who quarantined it, as the source recorded it.
    pub quarantined_by: Option<String>,
    /// Whether it is pinned.
    pub purpose: Purpose,
    /// Where the record came from (e.g. `synapse:/path/homeserver.db`), for audit.
    pub imported_from: Option<String>,
}

impl MediaRecord {
    /// A media known only by its key, its bytes and when it was created: no name, type or
    /// uploader (so remote), never downloaded, neither quarantined nor pinned, and no
    /// source recorded. Fill in the rest with struct update syntax.
    pub fn new(key: MediaKey, sha256: Sha256Hex, size_bytes: u64, created_ts: i64) -> Self {
        Self {
            key,
            sha256,
            size_bytes,
            upload_name: None,
            content_type: None,
            uploader: None,
            created_ts,
            last_access_ts: None,
            quarantined: false,
            quarantined_by: None,
            purpose: Purpose::None,
            imported_from: None,
        }
    }

    /// Whether this is a cached copy of another server's media.
    pub fn is_remote(&self) -> bool {
        self.uploader.is_none()
    }
}

/// How a thumbnail was made from its media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ThumbnailMethod {
    /// Cropped to exactly the requested size.
    Crop,
    /// Scaled to fit inside the requested size.
    Scale,
}

impl ThumbnailMethod {
    /// The value stored in the `method` column, as the Matrix spec names it.
    pub fn as_str(self) -> &'static str {
        match self {
            ThumbnailMethod::Crop => "crop",
            ThumbnailMethod::Scale => "scale",
        }
    }
}

impl FromStr for ThumbnailMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "crop" => Ok(ThumbnailMethod::Crop),
            "scale" => Ok(ThumbnailMethod::Scale),
            other => Err(format!(
                "unknown thumbnail method {other:?}: expected \"crop\" or \"scale\""
            )),
        }
    }
}

/// One thumbnail of a media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailRecord {
    /// The media it was made from.
    pub media: MediaKey,
    /// Width in pixels (the requested width for dynamic thumbnails).
    pub width: u32,
    /// Height in pixels (the requested height for dynamic thumbnails).
    pub height: u32,
    /// How it was made.
    pub method: ThumbnailMethod,
    /// Its MIME type.
    pub content_type: String,
    /// Whether it is animated.
    pub animated: bool,
    /// Digest of its bytes.
    pub sha256: Sha256Hex,
    /// Length of its bytes.
    pub size_bytes: u64,
    /// When it was made, in ms since the epoch.
    pub created_ts: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purpose_and_method_round_trip_their_column_values() {
        for p in [Purpose::None, Purpose::Pinned] {
            assert_eq!(p.as_str().parse::<Purpose>().unwrap(), p);
        }
        for m in [ThumbnailMethod::Crop, ThumbnailMethod::Scale] {
            assert_eq!(m.as_str().parse::<ThumbnailMethod>().unwrap(), m);
        }
        assert!("Pinned".parse::<Purpose>().is_err());
        assert!("resize".parse::<ThumbnailMethod>().is_err());
    }

    #[test]
    fn sizes_above_i64_max_are_refused_not_wrapped() {
        assert_eq!(size_to_i64(0), Ok(0));
        assert_eq!(size_to_i64(MAX_SIZE_BYTES), Ok(i64::MAX));
        let err = size_to_i64(u64::MAX).unwrap_err();
        assert_eq!(err, SizeOutOfRange(u64::MAX));
        assert!(
            err.to_string().contains("18446744073709551615 bytes"),
            "{err}"
        );
        assert!(size_to_i64(MAX_SIZE_BYTES + 1).is_err());
    }

    #[test]
    fn media_key_displays_as_mxc() {
        let key = MediaKey::new("example.org:8448".parse().unwrap(), "abc".parse().unwrap());
        assert_eq!(key.to_string(), "mxc://example.org:8448/abc");
        assert_eq!(key.mxc().to_string(), key.to_string());
        assert_eq!(MediaKey::from(key.mxc()), key);
    }
}
