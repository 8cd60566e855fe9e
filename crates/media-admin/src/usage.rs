//! `media_admin usage servers|users|uploads`: who uses the space, largest first, with
//! what deduplication saves: the media's bytes as uploaded ("logical") against the bytes
//! of the distinct blobs they use ("stored"). The database aggregates and returns only
//! the first `--limit` groups (see [`media_db::UsageReport`]), so memory does not grow
//! with the repository.

use std::fmt;

use media_core::ids::UserId;
use media_core::moment::Moment;
use media_core::progress::human_size;
use media_core::records::MediaKey;
use media_core::run::{Report, RunMode};
use media_db::{Repository, Upload, Usage, UsageReport};
use serde::Serialize;

use crate::error::AdminError;

/// What a usage report ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageView {
    /// Servers (media origins).
    Servers,
    /// Uploaders: these, or every one when none is named.
    Users(Vec<UserId>),
    /// Media: these, or every one when none is named.
    Uploads(Vec<MediaKey>),
}

impl UsageView {
    /// The view's name, as the subcommand spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Servers => "servers",
            Self::Users(_) => "users",
            Self::Uploads(_) => "uploads",
        }
    }
}

/// Media, their bytes as uploaded and as stored, and what deduplication saves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Space {
    /// Media rows.
    pub media: u64,
    /// The sum of their sizes.
    pub bytes: u64,
    /// The sum of the sizes of the distinct blobs they use.
    pub stored_bytes: u64,
    /// `bytes - stored_bytes`: what deduplication saves.
    pub saved_bytes: u64,
}

impl<K> From<&Usage<K>> for Space {
    fn from(usage: &Usage<K>) -> Self {
        Self {
            media: usage.media,
            bytes: usage.bytes,
            stored_bytes: usage.stored_bytes,
            saved_bytes: usage.bytes.saturating_sub(usage.stored_bytes),
        }
    }
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} media, {} ({} stored, {} saved by deduplication)",
            self.media,
            human_size(self.bytes),
            human_size(self.stored_bytes),
            human_size(self.saved_bytes)
        )
    }
}

/// One ranked line of a usage report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum UsageEntry {
    /// A server or a user, and the space its media use.
    Owner {
        /// The server name or the user ID.
        of: String,
        /// The space its media use.
        #[serde(flatten)]
        space: Space,
    },
    /// One media.
    Upload {
        /// The media, as an `mxc://` URI.
        media: String,
        /// Its uploader, for a local media.
        uploader: Option<String>,
        /// Its size.
        bytes: u64,
        /// Its content type, as uploaded.
        content_type: Option<String>,
        /// When it was uploaded (RFC 3339).
        created: String,
        /// How many media (this one included) share its bytes.
        copies: u64,
    },
}

impl UsageEntry {
    /// The entry of a server or a user.
    fn owner<K: fmt::Display>(usage: &Usage<K>) -> Self {
        Self::Owner {
            of: usage.of.to_string(),
            space: usage.into(),
        }
    }
}

impl From<Upload> for UsageEntry {
    fn from(upload: Upload) -> Self {
        Self::Upload {
            media: upload.key.to_string(),
            uploader: upload.uploader.map(|u| u.to_string()),
            bytes: upload.size_bytes,
            content_type: upload.content_type,
            created: Moment::from_unix_ms(upload.created_ts).to_string(),
            copies: upload.copies,
        }
    }
}

impl fmt::Display for UsageEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Owner { of, space } => writeln!(f, "  {of}: {space}"),
            Self::Upload {
                media,
                uploader,
                bytes,
                content_type,
                created,
                copies,
            } => writeln!(
                f,
                "  {media}: {} {}, uploaded {created}{}; {copies} media with these bytes",
                human_size(*bytes),
                content_type.as_deref().unwrap_or("(no type)"),
                uploader
                    .as_deref()
                    .map_or(String::new(), |u| format!(" by {u}")),
            ),
        }
    }
}

/// What `media_admin usage` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpaceReport {
    /// What is ranked: `servers`, `users` or `uploads`.
    pub view: &'static str,
    /// At most this many entries are listed.
    pub limit: u32,
    /// The whole repository.
    pub totals: Space,
    /// The largest first.
    pub entries: Vec<UsageEntry>,
}

impl fmt::Display for SpaceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "media_admin usage {}: {}", self.view, self.totals)?;
        writeln!(
            f,
            "the {} largest ({} listed):",
            self.limit,
            self.entries.len()
        )?;
        self.entries.iter().try_for_each(|entry| entry.fmt(f))
    }
}

impl Report for SpaceReport {
    fn mode(&self) -> RunMode {
        RunMode::DryRun
    }

    fn has_failures(&self) -> bool {
        false
    }
}

/// The `limit` largest entries of `view`, and the repository's totals.
pub async fn usage(
    repo: &Repository,
    view: &UsageView,
    limit: u32,
) -> Result<SpaceReport, AdminError> {
    let entries = match view {
        UsageView::Servers => repo
            .usage_by_server(limit)
            .await?
            .iter()
            .map(UsageEntry::owner)
            .collect(),
        UsageView::Users(users) => repo
            .usage_by_user(users, limit)
            .await?
            .iter()
            .map(UsageEntry::owner)
            .collect(),
        UsageView::Uploads(keys) => repo
            .largest_uploads(keys, limit)
            .await?
            .into_iter()
            .map(UsageEntry::from)
            .collect(),
    };
    Ok(SpaceReport {
        view: view.name(),
        limit,
        totals: (&repo.usage_totals().await?).into(),
        entries,
    })
}
