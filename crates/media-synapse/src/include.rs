//! Which kinds of a Synapse's media a job reads: local uploads, cached remote media,
//! thumbnails, URL previews.

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
}

impl Default for Include {
    fn default() -> Self {
        Self {
            local: true,
            remote: true,
            thumbnails: true,
            url_previews: true,
        }
    }
}

impl FromStr for Include {
    type Err = String;

    /// A comma-separated list of `local`, `remote`, `thumbnails`, `url-previews`.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let mut include = Include {
            local: false,
            remote: false,
            thumbnails: false,
            url_previews: false,
        };
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "local" => include.local = true,
                "remote" => include.remote = true,
                "thumbnails" => include.thumbnails = true,
                "url-previews" | "url_previews" => include.url_previews = true,
                other => {
                    return Err(format!(
                        "unknown kind {other:?}: use a comma-separated list of local, remote, \
                         thumbnails, url-previews"
                    ));
                }
            }
        }
        if !(include.local || include.remote || include.url_previews) {
            return Err("nothing to import: include local, remote or url-previews".into());
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
            "local,remote,thumbnails,url-previews".parse::<Include>(),
            Ok(Include::default())
        );
        let only_local: Include = "local".parse().unwrap();
        assert!(only_local.local && !only_local.remote && !only_local.thumbnails);
        assert!(
            "local,avatars"
                .parse::<Include>()
                .unwrap_err()
                .contains("avatars")
        );
        assert!("thumbnails".parse::<Include>().is_err());
    }
}
