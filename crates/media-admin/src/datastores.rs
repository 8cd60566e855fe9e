//! The datastores a repository records: which one an operator means
//! ([`DatastoreSelector`]), what each holds ([`list`]) and what a transfer out of one
//! would move ([`estimate`]).

use std::fmt;
use std::str::FromStr;

use media_core::moment::Moment;
use media_core::progress::human_size;
use media_core::run::{Report, RunMode};
use media_db::{BlobTransfer, DatastoreId, RecordedDatastore, Repository};
use serde::Serialize;

use crate::error::AdminError;

/// A recorded datastore as an operator names it: by its ID (`3` or `#3`) or by the URI
/// the repository records for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreSelector {
    /// By ID.
    Id(DatastoreId),
    /// By recorded URI.
    Uri(String),
}

impl FromStr for DatastoreSelector {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = text.strip_prefix('#').unwrap_or(text);
        Ok(match digits.parse::<i64>() {
            Ok(id) if !digits.starts_with(['+', '-']) => Self::Id(DatastoreId(id)),
            _ => Self::Uri(text.to_owned()),
        })
    }
}

impl fmt::Display for DatastoreSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "#{}", id.0),
            Self::Uri(uri) => f.write_str(uri),
        }
    }
}

impl DatastoreSelector {
    /// The recorded datastore this names, or [`AdminError::UnknownDatastore`] listing
    /// those there are.
    pub async fn resolve(&self, repo: &Repository) -> Result<RecordedDatastore, AdminError> {
        let recorded = repo.datastore_records().await?;
        let found = recorded.iter().find(|r| match self {
            Self::Id(id) => r.id == *id,
            Self::Uri(uri) => r.uri == *uri,
        });
        match found {
            Some(found) => Ok(found.clone()),
            None => Err(AdminError::UnknownDatastore {
                given: self.to_string(),
                recorded: if recorded.is_empty() {
                    "none".to_owned()
                } else {
                    let names: Vec<String> = recorded
                        .iter()
                        .map(|r| format!("#{} {}", r.id.0, r.uri))
                        .collect();
                    names.join(", ")
                },
            }),
        }
    }
}

/// One datastore of [`ListReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatastoreEntry {
    /// Its ID.
    pub id: i64,
    /// Where it was last used.
    pub uri: String,
    /// Its identity marker, once recorded.
    pub identity: Option<String>,
    /// Media rows whose blob is in it.
    pub media: u64,
    /// Distinct blobs in it.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Thumbnail rows whose blob is in it.
    pub thumbnails: u64,
    /// Objects queued for deletion from it.
    pub queued_deletions: u64,
}

/// What `media_admin datastores list` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListReport {
    /// The repository (shown without a password).
    pub repository: String,
    /// Each recorded datastore, oldest first.
    pub datastores: Vec<DatastoreEntry>,
}

/// Each datastore `repo` records and what it holds, from the rows alone: no datastore
/// is opened, so this works while one is offline.
pub async fn list(repo: &Repository) -> Result<ListReport, AdminError> {
    let datastores = repo
        .datastore_usage()
        .await?
        .into_iter()
        .map(|u| DatastoreEntry {
            id: u.id.0,
            uri: u.uri,
            identity: u.identity,
            media: u.media,
            blobs: u.blobs,
            bytes: u.bytes,
            thumbnails: u.thumbnails,
            queued_deletions: u.queued_deletions,
        })
        .collect();
    Ok(ListReport {
        repository: repo.location().to_string(),
        datastores,
    })
}

impl fmt::Display for ListReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "media_admin datastores list: {} records {} datastore(s)",
            self.repository,
            self.datastores.len()
        )?;
        for d in &self.datastores {
            writeln!(
                f,
                "  #{} {}\n      identity {}; {} media, {} thumbnails, {} blobs ({}), \
                 {} queued deletions",
                d.id,
                d.uri,
                d.identity.as_deref().unwrap_or("(none yet)"),
                d.media,
                d.thumbnails,
                d.blobs,
                human_size(d.bytes),
                d.queued_deletions
            )?;
        }
        Ok(())
    }
}

impl Report for ListReport {
    fn mode(&self) -> RunMode {
        RunMode::DryRun
    }

    fn has_failures(&self) -> bool {
        false
    }
}

/// What `media_admin datastores estimate` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EstimateReport {
    /// The datastore's ID.
    pub from: i64,
    /// Its recorded URI.
    pub from_uri: String,
    /// Only blobs created before this moment count (RFC 3339), when given.
    pub before: Option<String>,
    /// Distinct blobs a transfer would move.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The distinct blobs and bytes a transfer out of `from` would move (only those created
/// before `before`, when given). Reads the rows only.
pub async fn estimate(
    repo: &Repository,
    from: &DatastoreSelector,
    before: Option<Moment>,
) -> Result<EstimateReport, AdminError> {
    let source = from.resolve(repo).await?;
    let tally = repo
        .tally_blobs(source.id, before.map(Moment::unix_ms))
        .await?;
    Ok(EstimateReport {
        from: source.id.0,
        from_uri: source.uri,
        before: before.map(|m| m.to_string()),
        blobs: tally.blobs,
        bytes: tally.bytes,
    })
}

impl fmt::Display for EstimateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let before = match &self.before {
            Some(before) => format!(" created before {before}"),
            None => String::new(),
        };
        writeln!(
            f,
            "media_admin datastores estimate: datastore #{} ({})",
            self.from, self.from_uri
        )?;
        writeln!(
            f,
            "  a transfer would move {} blobs{before} ({}, {} bytes)",
            self.blobs,
            human_size(self.bytes),
            self.bytes
        )
    }
}

impl Report for EstimateReport {
    fn mode(&self) -> RunMode {
        RunMode::DryRun
    }

    fn has_failures(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datastore_is_named_by_id_with_or_without_hash_or_by_uri() {
        let parse = |text: &str| text.parse::<DatastoreSelector>().unwrap();
        assert_eq!(parse("3"), DatastoreSelector::Id(DatastoreId(3)));
        assert_eq!(parse("#12"), DatastoreSelector::Id(DatastoreId(12)));
        assert_eq!(
            parse("file:///srv/media"),
            DatastoreSelector::Uri("file:///srv/media".into())
        );
        assert_eq!(parse("-1"), DatastoreSelector::Uri("-1".into()));
        assert_eq!(parse("#3").to_string(), "#3");
    }
}
