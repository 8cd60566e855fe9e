//! Where Synapse keeps each file under its `media_store_path`.
//!
//! Every path is built only from validated parts: media IDs and filesystem IDs must be
//! [`MediaId`]s (`[A-Za-z0-9_=-]+`), origins [`ServerName`]s, thumbnail types `type/subtype`
//! of `[a-z0-9.+-]`. So no row, however malicious, yields a path outside the media store.

use std::path::PathBuf;

use media_core::ids::{MediaId, ServerName};

/// A thumbnail's identity as Synapse names its file: `<w>-<h>-<top>-<sub>-<method>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailName {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// MIME type, e.g. `image/png`.
    pub content_type: String,
    /// `crop` or `scale`.
    pub method: String,
}

impl ThumbnailName {
    /// The file name, or `None` when the type or method cannot be part of a safe path.
    pub fn file_name(&self) -> Option<String> {
        let (top, sub) = self.content_type.split_once('/')?;
        let safe = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'+' | b'-')
                })
        };
        if !(safe(top) && safe(sub) && matches!(self.method.as_str(), "crop" | "scale")) {
            return None;
        }
        Some(format!(
            "{}-{}-{top}-{sub}-{}",
            self.width, self.height, self.method
        ))
    }
}

/// Splits an ID into Synapse's fan-out `ab/cd/rest`; `None` when it is too short.
fn fan_out(id: &str) -> Option<PathBuf> {
    (id.len() > 4).then(|| [&id[0..2], &id[2..4], &id[4..]].iter().collect())
}

/// URL-preview media IDs are `<date>_<rest>`; their files live under `url_cache/<date>/<rest>`.
fn url_cache_parts(media_id: &MediaId) -> Option<(&str, &str)> {
    let (date, rest) = media_id.as_str().split_once('_')?;
    let is_date = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    (is_date && !rest.is_empty()).then_some((date, rest))
}

/// The content of a local media (`url_preview` for URL-preview rows).
pub fn local_content(media_id: &MediaId, url_preview: bool) -> Option<PathBuf> {
    if url_preview {
        let (date, rest) = url_cache_parts(media_id)?;
        return Some(["url_cache", date, rest].iter().collect());
    }
    Some(PathBuf::from("local_content").join(fan_out(media_id.as_str())?))
}

/// The folder holding every thumbnail of a local media (`url_preview` for URL-preview
/// rows).
pub fn local_thumbnail_folder(media_id: &MediaId, url_preview: bool) -> Option<PathBuf> {
    if url_preview {
        let (date, rest) = url_cache_parts(media_id)?;
        return Some(["url_cache_thumbnails", date, rest].iter().collect());
    }
    Some(PathBuf::from("local_thumbnails").join(fan_out(media_id.as_str())?))
}

/// A thumbnail of a local media.
pub fn local_thumbnail(
    media_id: &MediaId,
    url_preview: bool,
    thumbnail: &ThumbnailName,
) -> Option<PathBuf> {
    Some(local_thumbnail_folder(media_id, url_preview)?.join(thumbnail.file_name()?))
}

/// The cached content of a remote media, by its filesystem ID.
pub fn remote_content(origin: &ServerName, filesystem_id: &MediaId) -> Option<PathBuf> {
    Some(
        PathBuf::from("remote_content")
            .join(origin.as_str())
            .join(fan_out(filesystem_id.as_str())?),
    )
}

/// The folder holding every thumbnail of a remote media, by its filesystem ID.
pub fn remote_thumbnail_folder(origin: &ServerName, filesystem_id: &MediaId) -> Option<PathBuf> {
    Some(
        PathBuf::from("remote_thumbnail")
            .join(origin.as_str())
            .join(fan_out(filesystem_id.as_str())?),
    )
}

/// A thumbnail of a remote media.
pub fn remote_thumbnail(
    origin: &ServerName,
    filesystem_id: &MediaId,
    thumbnail: &ThumbnailName,
) -> Option<PathBuf> {
    Some(remote_thumbnail_folder(origin, filesystem_id)?.join(thumbnail.file_name()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn id(s: &str) -> MediaId {
        s.parse().unwrap()
    }

    fn thumb(content_type: &str, method: &str) -> ThumbnailName {
        ThumbnailName {
            width: 32,
            height: 32,
            content_type: content_type.into(),
            method: method.into(),
        }
    }

    #[test]
    fn paths_match_what_synapse_writes() {
        let m = id("NntqDSKfjkSxexHiGcbaEELC");
        assert_eq!(
            local_content(&m, false).unwrap(),
            Path::new("local_content/Nn/tq/DSKfjkSxexHiGcbaEELC")
        );
        assert_eq!(
            local_thumbnail(&m, false, &thumb("image/png", "crop")).unwrap(),
            Path::new("local_thumbnails/Nn/tq/DSKfjkSxexHiGcbaEELC/32-32-image-png-crop")
        );
        let origin: ServerName = "127.0.0.1:50779".parse().unwrap();
        let fid = id("fNifQrvygXigPBJUbAhfDexh");
        assert_eq!(
            remote_content(&origin, &fid).unwrap(),
            Path::new("remote_content/127.0.0.1:50779/fN/if/QrvygXigPBJUbAhfDexh")
        );
        assert_eq!(
            remote_thumbnail(&origin, &fid, &thumb("image/jpeg", "crop")).unwrap(),
            Path::new(
                "remote_thumbnail/127.0.0.1:50779/fN/if/QrvygXigPBJUbAhfDexh/32-32-image-jpeg-crop"
            )
        );
        let preview = id("2024-01-31_AbCdEfGhIjKl");
        assert_eq!(
            local_content(&preview, true).unwrap(),
            Path::new("url_cache/2024-01-31/AbCdEfGhIjKl")
        );
        assert_eq!(
            local_thumbnail(&preview, true, &thumb("image/png", "scale")).unwrap(),
            Path::new("url_cache_thumbnails/2024-01-31/AbCdEfGhIjKl/32-32-image-png-scale")
        );
    }

    #[test]
    fn unsafe_parts_yield_no_path() {
        assert_eq!(
            local_content(&id("abcd"), false),
            None,
            "too short to fan out"
        );
        assert_eq!(local_content(&id("notadate_x"), true), None);
        let m = id("NntqDSKfjkSxexHiGcbaEELC");
        for (ty, method) in [
            ("image/../png", "crop"),
            ("../x", "crop"),
            ("image", "crop"),
            ("image/png", "../crop"),
            ("image/.png", "crop"),
            ("IMAGE/PNG", "crop"),
            ("image/png/x", "crop"),
            ("image/png", "resize"),
        ] {
            assert_eq!(
                local_thumbnail(&m, false, &thumb(ty, method)),
                None,
                "{ty} {method}"
            );
        }
        assert!(local_thumbnail(&m, false, &thumb("image/svg+xml", "scale")).is_some());
    }
}
