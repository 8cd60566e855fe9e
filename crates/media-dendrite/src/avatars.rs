//! The media in use as avatars, which no purge deletes.

use std::collections::HashSet;

use futures::TryStreamExt;
use media_core::records::MediaKey;
use media_db::DbError;

use crate::db::DendriteDb;

/// The media of an `mxc://origin/media_id` URI (a `?query` or `#fragment` after it is
/// ignored), or `None` when the string is not one or its origin or media ID is invalid.
/// An avatar with an invalid media ID needs no protection: a row with that media ID is
/// never deleted (see [`crate::db::MediaPage`]).
pub fn parse_mxc(uri: &str) -> Option<MediaKey> {
    let (origin, media_id) = uri.strip_prefix("mxc://")?.split_once('/')?;
    let media_id = media_id.split(['?', '#']).next().unwrap_or_default();
    Some(MediaKey::new(origin.parse().ok()?, media_id.parse().ok()?))
}

/// Every distinct media used as a profile, room, member or server-notices avatar. Its
/// size grows with the number of distinct avatars, not with the number of media.
#[derive(Debug, Clone, Default)]
pub struct AvatarSet {
    media: HashSet<MediaKey>,
}

impl AvatarSet {
    /// Reads the avatars of the user database (profiles) and the sync database (current
    /// room and member state), page by page, plus `extra` (the server-notices avatar).
    pub async fn load(
        user_db: &DendriteDb,
        sync_db: &DendriteDb,
        extra: Option<MediaKey>,
    ) -> Result<Self, DbError> {
        let mut set = Self::default();
        set.media.extend(extra);
        for mut pages in [
            user_db.profile_avatar_pages(),
            sync_db.room_state_avatar_pages(),
        ] {
            while let Some(page) = pages.try_next().await? {
                set.media
                    .extend(page.iter().filter_map(|uri| parse_mxc(uri)));
            }
        }
        Ok(set)
    }

    /// Whether this media (matched on origin AND media ID) is an avatar.
    pub fn contains(&self, media: &MediaKey) -> bool {
        self.media.contains(media)
    }

    /// How many distinct avatars there are.
    pub fn len(&self) -> usize {
        self.media.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.media.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mxc_uris_split_into_origin_and_media_id() {
        let key = parse_mxc("mxc://example.org:8448/abc_-").unwrap();
        assert_eq!(
            (key.origin.as_str(), key.media_id.as_str()),
            ("example.org:8448", "abc_-")
        );
        let key = parse_mxc("mxc://[::1]/m?width=1#x").unwrap();
        assert_eq!((key.origin.as_str(), key.media_id.as_str()), ("[::1]", "m"));
        assert_eq!(
            parse_mxc("mxc://example.org/abc.d"),
            None,
            "invalid media ID"
        );
        assert_eq!(parse_mxc("mxc://exa mple.org/abc"), None, "invalid origin");
        assert_eq!(parse_mxc("mxc://example.org/"), None);
        assert_eq!(parse_mxc("mxc:///abc"), None);
        assert_eq!(parse_mxc("https://example.org/abc"), None);
        assert_eq!(parse_mxc("mxc://example.org/a/b"), None);
        assert_eq!(parse_mxc(""), None);
    }
}
