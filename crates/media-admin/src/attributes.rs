//! `media_admin attributes get|set`: a media's attributes, as matrix-media-repo's admin
//! API has them: its purpose, `none` or `pinned` (a pinned media is never quarantined,
//! nor purged by the bulk purges).

use std::fmt;

use media_core::records::{MediaKey, Purpose};
use media_core::run::{Report, RunMode};
use media_db::{DbError, MediaAttributes, MediaIndex, Repository};
use serde::Serialize;

use crate::error::AdminError;

/// A media's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributesReport {
    /// Read only (`get`) or changed (`set`).
    pub mode: RunMode,
    /// The media.
    pub media: String,
    /// Its purpose now.
    pub purpose: &'static str,
    /// Its purpose before a `set`.
    pub previous_purpose: Option<&'static str>,
}

impl fmt::Display for AttributesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.previous_purpose {
            Some(previous) => writeln!(
                f,
                "{}: purpose {} (was {previous})",
                self.media, self.purpose
            ),
            None => writeln!(f, "{}: purpose {}", self.media, self.purpose),
        }
    }
}

impl Report for AttributesReport {
    fn mode(&self) -> RunMode {
        self.mode
    }

    fn has_failures(&self) -> bool {
        false
    }
}

/// The attributes of `key`, or [`DbError::NotFound`].
pub async fn get(repo: &Repository, key: &MediaKey) -> Result<AttributesReport, AdminError> {
    let media = repo
        .get_media(key)
        .await?
        .ok_or_else(|| DbError::NotFound {
            what: format!("media {key}"),
        })?;
    Ok(AttributesReport {
        mode: RunMode::DryRun,
        media: key.to_string(),
        purpose: media.purpose.as_str(),
        previous_purpose: None,
    })
}

/// Sets the purpose of `key`.
pub async fn set(
    repo: &Repository,
    key: &MediaKey,
    purpose: Purpose,
) -> Result<AttributesReport, AdminError> {
    let previous = repo.set_purpose(key, purpose).await?;
    Ok(AttributesReport {
        mode: RunMode::Apply,
        media: key.to_string(),
        purpose: purpose.as_str(),
        previous_purpose: Some(previous.as_str()),
    })
}
