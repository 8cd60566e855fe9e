//! `manifest.json`: the table of contents of an archive (matrix-media-repo's format,
//! version 2; version 1 is read too).

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

use super::ArchiveError;
use crate::ids::{MediaId, MxcUri, ServerName, Sha256Hex, UserId};
use crate::records::MediaKey;

/// The manifest version this toolkit writes.
pub const MANIFEST_VERSION: u32 = 2;

/// The name of the manifest entry inside an archive.
pub const MANIFEST_ENTRY: &str = "manifest.json";

/// The name of the human-readable index entry inside an archive.
pub const INDEX_ENTRY: &str = "index.html";

/// A parsed `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The version the archive was written with (1 or 2).
    pub version: u32,
    /// The exported user ID or server name.
    pub entity_id: String,
    /// When the archive was written, ms since the epoch.
    pub created_ts: i64,
    /// Every record, keyed by its MXC URI as written in the manifest.
    pub media: BTreeMap<String, ManifestRecord>,
}

/// One media of an archive, as its manifest describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ManifestRecord {
    /// The original upload file name (may be empty).
    pub name: String,
    /// The name of the archive entry holding the bytes; several records may share one.
    /// Empty in a metadata-only archive.
    pub file_name: String,
    /// Length of the bytes.
    pub size_bytes: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    /// MIME type.
    pub content_type: String,
    /// Server part of the MXC URI.
    pub origin: String,
    /// Media ID part of the MXC URI.
    pub media_id: String,
    /// When the media was created, ms since the epoch.
    pub created_ts: i64,
    /// `<endpoint>/<bucket>/<key>` when the writer kept the blob in S3, else empty.
    pub s3_url: String,
    /// The uploader's user ID; empty for remote media.
    pub uploader: String,
}

/// A manifest record whose identifiers were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRecord {
    /// Which media.
    pub key: MediaKey,
    /// The digest the bytes must have.
    pub sha256: Sha256Hex,
    /// The length the bytes must have.
    pub size: u64,
    /// The uploader, when the record names one.
    pub uploader: Option<UserId>,
}

impl ManifestRecord {
    /// Checks the record's identifiers: its MXC key must name the same media as its
    /// `origin`/`media_id` fields (either may be missing in old archives), every
    /// identifier must be valid, and the digest well-formed.
    pub fn check(&self, mxc: &str) -> Result<CheckedRecord, String> {
        let from_key = MxcUri::try_from(mxc).map_err(|e| format!("invalid MXC URI: {e}"))?;
        let origin = match self.origin.as_str() {
            "" => from_key.server().clone(),
            origin => ServerName::try_from(origin).map_err(|e| format!("invalid origin: {e}"))?,
        };
        let media_id = match self.media_id.as_str() {
            "" => from_key.media_id().clone(),
            id => MediaId::try_from(id).map_err(|e| format!("invalid media_id: {e}"))?,
        };
        if (&origin, &media_id) != (from_key.server(), from_key.media_id()) {
            return Err(format!(
                "its key {mxc} names another media than its origin {origin:?} and media_id \
                 {media_id:?}"
            ));
        }
        let sha256 =
            Sha256Hex::parse_any_case(&self.sha256).map_err(|e| format!("invalid sha256: {e}"))?;
        let uploader = match self.uploader.as_str() {
            "" => None,
            user => Some(UserId::try_from(user).map_err(|e| format!("invalid uploader: {e}"))?),
        };
        Ok(CheckedRecord {
            key: MediaKey::new(origin, media_id),
            sha256,
            size: self.size_bytes,
            uploader,
        })
    }
}

/// The on-disk shape of a manifest, every version's fields together.
#[derive(Deserialize)]
struct RawManifest {
    version: Option<u32>,
    #[serde(default)]
    entity_id: Option<String>,
    /// Version 1 named the entity `user_id`.
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    created_ts: i64,
    #[serde(default)]
    media: Option<BTreeMap<String, ManifestRecord>>,
}

impl Manifest {
    /// Parses a manifest, upgrading version 1 (`user_id` → `entity_id`). Refuses
    /// unknown versions, an empty entity and a missing media map.
    pub fn parse(source: impl Read) -> Result<Self, ArchiveError> {
        let raw: RawManifest = serde_json::from_reader(source)
            .map_err(|e| ArchiveError::BadManifest(format!("not valid manifest JSON: {e}")))?;
        let version = raw
            .version
            .ok_or_else(|| ArchiveError::BadManifest("it has no \"version\"".into()))?;
        let entity_id = match version {
            1 => raw.entity_id.filter(|e| !e.is_empty()).or(raw.user_id),
            2 => raw.entity_id,
            other => return Err(ArchiveError::UnsupportedVersion(other)),
        }
        .unwrap_or_default();
        if entity_id.is_empty() {
            return Err(ArchiveError::BadManifest("its entity_id is empty".into()));
        }
        let media = raw
            .media
            .ok_or_else(|| ArchiveError::BadManifest("it has no \"media\" map".into()))?;
        Ok(Self {
            version,
            entity_id,
            created_ts: raw.created_ts,
            media,
        })
    }

    /// The server whose media the archive holds: the entity itself, or a user's server.
    pub fn entity_server(&self) -> Option<ServerName> {
        match UserId::try_from(self.entity_id.as_str()) {
            Ok(user) => Some(user.server_name().clone()),
            Err(_) => ServerName::try_from(self.entity_id.as_str()).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn record(origin: &str, media_id: &str) -> ManifestRecord {
        ManifestRecord {
            origin: origin.into(),
            media_id: media_id.into(),
            sha256: SHA.into(),
            size_bytes: 4,
            file_name: format!("{origin}__{media_id}.txt"),
            uploader: format!("@alice:{origin}"),
            ..Default::default()
        }
    }

    #[test]
    fn version_1_is_upgraded_from_user_id() {
        let json = r#"{"version":1,"user_id":"@alice:example.org","created_ts":5,"media":{}}"#;
        let manifest = Manifest::parse(json.as_bytes()).unwrap();
        assert_eq!(manifest.entity_id, "@alice:example.org");
        assert_eq!(manifest.version, 1);
        assert_eq!(
            manifest.entity_server().unwrap().as_str(),
            "example.org",
            "a user's archive belongs to the user's server"
        );
    }

    #[test]
    fn unknown_versions_empty_entities_and_missing_media_are_refused() {
        let cases = [
            (
                r#"{"version":3,"entity_id":"x.org","media":{}}"#,
                "version 3",
            ),
            (r#"{"version":2,"entity_id":"","media":{}}"#, "entity_id"),
            (r#"{"version":2,"entity_id":"x.org","media":null}"#, "media"),
            (r#"{"entity_id":"x.org","media":{}}"#, "version"),
            (r#"{"version":2,"#, "JSON"),
        ];
        for (json, expected) in cases {
            let error = Manifest::parse(json.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    #[test]
    fn a_record_must_name_the_media_of_its_key() {
        let good = record("example.org", "abc");
        let checked = good.check("mxc://example.org/abc").unwrap();
        assert_eq!(checked.key.mxc().to_string(), "mxc://example.org/abc");
        assert_eq!(checked.uploader.unwrap().as_str(), "@alice:example.org");

        let error = good.check("mxc://evil.org/abc").unwrap_err();
        assert!(error.contains("another media"), "{error}");

        let traversal = record("example.org", "../../etc/passwd");
        assert!(traversal.check("mxc://example.org/x").is_err());

        let bad_hash = ManifestRecord {
            sha256: "nope".into(),
            ..good.clone()
        };
        assert!(bad_hash.check("mxc://example.org/abc").is_err());
    }

    #[test]
    fn old_records_without_origin_fields_take_them_from_the_key() {
        let old = ManifestRecord {
            origin: String::new(),
            media_id: String::new(),
            uploader: String::new(),
            ..record("example.org", "abc")
        };
        let checked = old.check("mxc://example.org/abc").unwrap();
        assert_eq!(checked.key.media_id.as_str(), "abc");
        assert!(checked.uploader.is_none());
    }
}
