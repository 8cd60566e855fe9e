//! Which kinds of a Synapse's media a job reads: local uploads, cached remote media,
//! thumbnails, URL previews, and the rooms media were posted in.

use std::str::FromStr;

use serde::Serialize;

/// Which kinds of Synapse media to read (and import).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Include {
    /// Media uploaded by local users.
    pub local: bool,
    /// Cached copies of other servers' media.
    pub remote: bool,
    /// Thumbnails of the imported media.
    pub thumbnails: bool,
    /// Media fetched for URL previews.
    pub url_previews: bool,
    /// Which rooms hold which media, read from the rooms' events ([`crate::events`]).
    pub rooms: bool,
}

impl Default for Include {
    fn default() -> Self {
        Self {
            local: true,
            remote: true,
            thumbnails: true,
            url_previews: true,
            rooms: true,
        }
    }
}

impl FromStr for Include {
    type Err = String;

    /// A comma-separated list of `local`, `remote`, `thumbnails`, `url-previews`,
    /// `rooms`.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let mut include = Include {
            local: false,
            remote: false,
            thumbnails: false,
            url_previews: false,
            rooms: false,
        };
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "local" => include.local = true,
                "remote" => include.remote = true,
                "thumbnails" => include.thumbnails = true,
                "url-previews" | "url_previews" => include.url_previews = true,
                "rooms" => include.rooms = true,
                other => {
                    return Err(format!(
                        "unknown kind {other:?}: use a comma-separated list of local, remote, \
                         thumbnails, url-previews, rooms"
                    ));
                }
            }
        }
        // `rooms` alone records the rooms of media an earlier import brought in.
        if !(include.local || include.remote || include.url_previews || include.rooms) {
            return Err("nothing to import: include local, remote, url-previews or rooms".into());
        }
        Ok(include)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_lists_parse_and_refuse_unknown_kinds() {
        assert_eq!(
            "local,remote,thumbnails,url-previews,rooms".parse::<Include>(),
            Ok(Include::default())
        );
        let only_local: Include = "local".parse().unwrap();
        assert!(only_local.local && !only_local.remote && !only_local.thumbnails);
        assert!(!only_local.rooms);
        let only_rooms: Include = "rooms".parse().unwrap();
        assert!(only_rooms.rooms && !only_rooms.local && !only_rooms.remote);
        assert!(
            "local,avatars"
                .parse::<Include>()
                .unwrap_err()
                .contains("avatars")
        );
        assert!("thumbnails".parse::<Include>().is_err());
    }
}
