//! What a purge deletes: the selection an operator asks for, and each selected media with
//! the files it owns in the media store. The plan is the same whoever applies it: rows
//! and files directly ([`crate::purge()`]), or Synapse's admin API with this toolkit
//! verifying and cleaning up after it ([`crate::admin_api::Through`]).

use std::fmt;
use std::path::PathBuf;

use media_core::ids::{MediaId, MxcUri, ServerName, UserId};
use media_core::moment::Moment;
use media_core::records::MediaKey;
use media_synapse::paths;

/// Whether media in use as avatars are kept by a local purge (Synapse's `keep_profiles`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AvatarPolicy {
    /// Keep every local media whose full `mxc://` URI is a profile, member, user-directory
    /// or room avatar (the default, as Synapse's).
    #[default]
    Keep,
    /// Avatars go like any other media (`keep_profiles=false`).
    Delete,
}

/// Which media a purge selects, with Synapse's semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeSelection {
    /// Synapse's `purge_media_cache`: cached remote media whose `last_access_ts` is before
    /// `before` (a row never accessed is never selected), quarantined ones kept.
    Remote {
        /// The cutoff.
        before: Moment,
    },
    /// Synapse's "delete local media by date and size": local media last accessed (else
    /// created) before `before`, larger than `size_gt` bytes (so never-uploaded and empty
    /// media stay), neither quarantined nor protected, and not avatars with
    /// [`AvatarPolicy::Keep`].
    Local {
        /// The cutoff.
        before: Moment,
        /// Only media with `media_length` above this many bytes.
        size_gt: u64,
        /// Whether avatars are kept.
        avatars: AvatarPolicy,
    },
    /// Synapse's `DELETE /_synapse/admin/v1/users/<user_id>/media`: every local media
    /// the user uploaded (URL previews they fetched included), created before `before`
    /// when given. As with Synapse's API, nothing is kept: quarantined and protected
    /// media and avatars go too.
    User {
        /// The uploader.
        user: UserId,
        /// Only media created before this.
        before: Option<Moment>,
    },
    /// Synapse's `DELETE /_synapse/admin/v1/media/<server>/<id>`: these media, local
    /// (of this server) or cached remote, whatever their state: quarantined and
    /// protected media and avatars go too, as with Synapse's API.
    Media {
        /// The media, by their MXC URIs.
        media: Vec<MxcUri>,
    },
}

/// The two tables of media Synapse keeps, and so the two kinds of media a purge deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTable {
    /// `local_media_repository`: uploads and URL previews.
    Local,
    /// `remote_media_cache`: the cached media of other servers.
    Remote,
}

impl PurgeSelection {
    /// The cutoff, when the selection has one.
    pub fn before(&self) -> Option<Moment> {
        match self {
            Self::Remote { before } | Self::Local { before, .. } => Some(*before),
            Self::User { before, .. } => *before,
            Self::Media { .. } => None,
        }
    }

    /// The tables it selects media in, on the homeserver `server`.
    pub fn tables(&self, server: &ServerName) -> Vec<MediaTable> {
        match self {
            Self::Remote { .. } => vec![MediaTable::Remote],
            Self::Local { .. } | Self::User { .. } => vec![MediaTable::Local],
            Self::Media { .. } => {
                let (local, remote) = self.named_media(server);
                let mut tables = Vec::new();
                if !local.is_empty() {
                    tables.push(MediaTable::Local);
                }
                if !remote.is_empty() {
                    tables.push(MediaTable::Remote);
                }
                tables
            }
        }
    }

    /// Of the media an explicit [`PurgeSelection::Media`] names, those of `server` (local
    /// media) and the others (cached remote media); both empty for the other selections.
    pub fn named_media(&self, server: &ServerName) -> (Vec<&MxcUri>, Vec<&MxcUri>) {
        match self {
            Self::Media { media } => media.iter().partition(|mxc| mxc.server() == server),
            _ => (Vec::new(), Vec::new()),
        }
    }
}

impl fmt::Display for PurgeSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Remote { before } => {
                write!(f, "cached remote media last accessed before {before}")
            }
            Self::Local {
                before,
                size_gt,
                avatars,
            } => {
                write!(
                    f,
                    "local media last accessed (else created) before {before}, larger than \
                     {size_gt} bytes"
                )?;
                match avatars {
                    AvatarPolicy::Keep => write!(f, ", avatars kept"),
                    AvatarPolicy::Delete => write!(f, ", avatars included"),
                }
            }
            Self::User { user, before } => {
                write!(f, "local media uploaded by {user}")?;
                if let Some(before) = before {
                    write!(f, " before {before}")?;
                }
                write!(f, ", whatever their state")
            }
            Self::Media { media, .. } => {
                write!(f, "{} named media, whatever their state", media.len())
            }
        }
    }
}

/// Where a media's bytes live in Synapse's layout, and what names its files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Storage {
    /// A local upload (`local_content/…`) or a URL preview (`url_cache/…`), named by its
    /// media ID.
    Local {
        /// Whether it is a URL-preview media (files under `url_cache*/`).
        url_preview: bool,
    },
    /// A cached remote media, named by its filesystem ID (not its media ID).
    Remote {
        /// The file name Synapse chose.
        filesystem_id: MediaId,
    },
}

/// One media a purge selected, with where its files are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlannedMedia {
    /// Origin and media ID.
    pub key: MediaKey,
    /// Where its files are.
    pub storage: Storage,
}

/// The files of one media, relative to the media store: its content, and the folder of
/// its thumbnails (every file in it goes, as Synapse removes the whole folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFiles {
    /// The content file.
    pub content: PathBuf,
    /// The folder of its thumbnails.
    pub thumbnails: PathBuf,
}

impl PlannedMedia {
    /// A local media of `server_name`, or `None` when its ID maps to no Synapse path.
    pub fn local(server_name: &ServerName, media_id: MediaId, url_preview: bool) -> Option<Self> {
        let planned = Self {
            key: MediaKey::new(server_name.clone(), media_id),
            storage: Storage::Local { url_preview },
        };
        planned.files().map(|_| planned)
    }

    /// A cached remote media, or `None` when its filesystem ID maps to no Synapse path.
    pub fn remote(key: MediaKey, filesystem_id: MediaId) -> Option<Self> {
        let planned = Self {
            key,
            storage: Storage::Remote { filesystem_id },
        };
        planned.files().map(|_| planned)
    }

    /// Its files, built from validated parts only (`None` when the IDs are too short to
    /// fan out, or a URL-preview ID is not `<date>_<rest>`).
    pub fn files(&self) -> Option<MediaFiles> {
        let id = &self.key.media_id;
        Some(match &self.storage {
            Storage::Local { url_preview } => MediaFiles {
                content: paths::local_content(id, *url_preview)?,
                thumbnails: paths::local_thumbnail_folder(id, *url_preview)?,
            },
            Storage::Remote { filesystem_id } => MediaFiles {
                content: paths::remote_content(&self.key.origin, filesystem_id)?,
                thumbnails: paths::remote_thumbnail_folder(&self.key.origin, filesystem_id)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn files_are_where_synapse_keeps_them() {
        let server: ServerName = "example.org".parse().unwrap();
        let upload =
            PlannedMedia::local(&server, "NntqDSKfjkSxexHiGcbaEELC".parse().unwrap(), false)
                .unwrap();
        let files = upload.files().unwrap();
        assert_eq!(
            files.content,
            Path::new("local_content/Nn/tq/DSKfjkSxexHiGcbaEELC")
        );
        assert_eq!(
            files.thumbnails,
            Path::new("local_thumbnails/Nn/tq/DSKfjkSxexHiGcbaEELC")
        );
        let preview =
            PlannedMedia::local(&server, "2024-01-31_AbCdEfGh".parse().unwrap(), true).unwrap();
        assert_eq!(
            preview.files().unwrap().thumbnails,
            Path::new("url_cache_thumbnails/2024-01-31/AbCdEfGh")
        );
        let origin: ServerName = "127.0.0.1:8448".parse().unwrap();
        let remote = PlannedMedia::remote(
            MediaKey::new(origin, "remoteid".parse().unwrap()),
            "fNifQrvygXigPBJUbAhfDexh".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            remote.files().unwrap().content,
            Path::new("remote_content/127.0.0.1:8448/fN/if/QrvygXigPBJUbAhfDexh")
        );
        assert!(PlannedMedia::local(&server, "abcd".parse().unwrap(), false).is_none());
        assert!(PlannedMedia::local(&server, "not_a_date".parse().unwrap(), true).is_none());
    }
}
