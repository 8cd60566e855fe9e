//! `manifest.json`: the table of contents of an archive (matrix-media-repo's format,
//! version 2; version 1 is read too).

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::ArchiveError;
use media_core::ids::{MediaId, MxcUri, ServerName, Sha256Hex, UserId};
use media_core::records::MediaKey;

/// The manifest version this toolkit writes.
pub const MANIFEST_VERSION: u32 = 2;

/// The name of the manifest entry inside an archive.
pub const MANIFEST_ENTRY: &str = "manifest.json";

/// The name of the human-readable index entry inside an archive.
pub const INDEX_ENTRY: &str = "index.html";

/// The most bytes a `manifest.json` may have once uncompressed (about eight million
/// records); a larger one is refused before it is read further.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 30;

/// The most bytes any string of a manifest (a key or a value) may have: a longer one is
/// refused as soon as it is seen, so no field ever takes more memory than this.
pub const MAX_STRING_BYTES: usize = 16 << 10;

/// The most bytes of a record's free-text fields (`name`, `s3_url`).
pub const MAX_TEXT_FIELD: usize = 4096;

/// The most bytes of a record's `file_name` and `content_type`.
pub const MAX_NAME_FIELD: usize = 1024;

/// The head of a `manifest.json`: everything but its records, which are streamed (see
/// [`Manifest::read`]) so that memory does not grow with their number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The version the archive was written with (1 or 2).
    pub version: u32,
    /// The exported user ID or server name, checked to be one of them.
    pub entity_id: String,
    /// The server whose media the archive holds: the entity itself, or a user's server.
    pub entity_server: ServerName,
    /// The exported user, when the entity is a user.
    pub entity_user: Option<UserId>,
    /// When the archive was written, ms since the epoch.
    pub created_ts: i64,
    /// How many records the manifest has.
    pub records: u64,
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
        for (field, value, max) in [
            ("name", &self.name, MAX_TEXT_FIELD),
            ("s3_url", &self.s3_url, MAX_TEXT_FIELD),
            ("file_name", &self.file_name, MAX_NAME_FIELD),
            ("content_type", &self.content_type, MAX_NAME_FIELD),
        ] {
            if value.len() > max {
                return Err(format!(
                    "its {field} is {} bytes long, more than the {max} allowed",
                    value.len()
                ));
            }
        }
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
        media_core::records::size_to_i64(self.size_bytes).map_err(|e| e.to_string())?;
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

/// The top-level fields of a manifest, as found.
#[derive(Default)]
struct RawHead {
    version: Option<u32>,
    entity_id: Option<String>,
    /// Version 1 named the entity `user_id`.
    user_id: Option<String>,
    created_ts: i64,
    /// `None` while no `media` key was seen; `Some(None)` for `"media": null`.
    media: Option<Option<u64>>,
}

/// What the records of a manifest are handed to.
type RecordVisitor<'a> = dyn FnMut(String, ManifestRecord) -> Result<(), ArchiveError> + 'a;

/// Streams the top-level object of a manifest, handing each record to `visit`.
struct Head<'a, 'v> {
    visit: &'a mut RecordVisitor<'v>,
    /// The visitor's own error, which stops the parse.
    failed: &'a mut Option<ArchiveError>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Head<'_, '_> {
    type Value = RawHead;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<RawHead, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Head<'_, '_> {
    type Value = RawHead;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a manifest object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RawHead, A::Error> {
        use serde::de::Error;
        let mut head = RawHead::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "version" => head.version = map.next_value()?,
                "entity_id" => head.entity_id = map.next_value()?,
                "user_id" => head.user_id = map.next_value()?,
                "created_ts" => head.created_ts = map.next_value::<Option<i64>>()?.unwrap_or(0),
                "media" if head.media.is_some() => {
                    return Err(A::Error::custom("it has two \"media\" maps"));
                }
                "media" => {
                    head.media = Some(map.next_value_seed(Records {
                        visit: &mut *self.visit,
                        failed: &mut *self.failed,
                    })?);
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(head)
    }
}

/// Streams the `media` map (or `null`): returns how many records it had.
struct Records<'a, 'v> {
    visit: &'a mut RecordVisitor<'v>,
    failed: &'a mut Option<ArchiveError>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Records<'_, '_> {
    type Value = Option<u64>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Records<'_, '_> {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map of MXC URIs to records")
    }

    fn visit_none<E>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
        use serde::de::Error;
        let mut count = 0u64;
        while let Some(mxc) = map.next_key::<String>()? {
            let record: ManifestRecord = map.next_value()?;
            if let Err(e) = (self.visit)(mxc, record) {
                *self.failed = Some(e);
                return Err(A::Error::custom("stopped"));
            }
            count += 1;
        }
        Ok(Some(count))
    }
}

/// A reader that refuses a manifest larger than [`MAX_MANIFEST_BYTES`] or holding a
/// string longer than [`MAX_STRING_BYTES`], before the parser buffers it.
struct Bounded<R> {
    inner: R,
    total: u64,
    in_string: bool,
    escaped: bool,
    string_len: usize,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        if self.total > MAX_MANIFEST_BYTES {
            return Err(std::io::Error::other(format!(
                "it is larger than {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        for &byte in &buf[..n] {
            if !self.in_string {
                if byte == b'"' {
                    self.in_string = true;
                    self.string_len = 0;
                }
                continue;
            }
            match (self.escaped, byte) {
                (true, _) => self.escaped = false,
                (false, b'\\') => self.escaped = true,
                (false, b'"') => {
                    self.in_string = false;
                    continue;
                }
                _ => {}
            }
            self.string_len += 1;
            if self.string_len > MAX_STRING_BYTES {
                return Err(std::io::Error::other(format!(
                    "it holds a string longer than {MAX_STRING_BYTES} bytes (ending past byte \
                     {} of the manifest); no field of a manifest is that long",
                    self.total
                )));
            }
        }
        Ok(n)
    }
}

impl Manifest {
    /// Reads a manifest, handing each record to `visit` as it is parsed (memory does not
    /// grow with the number of records), and checks its head: a known version (1 is
    /// upgraded: `user_id` → `entity_id`), an entity that is a valid user ID or server
    /// name, a media map. Records may reach `visit` before the head is found invalid.
    pub fn read(source: impl Read, visit: &mut RecordVisitor<'_>) -> Result<Self, ArchiveError> {
        let mut failed = None;
        let bounded = Bounded {
            inner: source,
            total: 0,
            in_string: false,
            escaped: false,
            string_len: 0,
        };
        let mut deserializer = serde_json::Deserializer::from_reader(bounded);
        let parsed = serde::de::DeserializeSeed::deserialize(
            Head {
                visit,
                failed: &mut failed,
            },
            &mut deserializer,
        )
        .and_then(|head| deserializer.end().map(|()| head));
        if let Some(error) = failed {
            return Err(error);
        }
        let raw = parsed.map_err(|e| match e.io_error_kind() {
            Some(_) => ArchiveError::BadManifest(format!("{e}")),
            None => ArchiveError::BadManifest(format!("not valid manifest JSON: {e}")),
        })?;
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
        let (entity_server, entity_user) = parse_entity(&entity_id)?;
        let records = raw
            .media
            .flatten()
            .ok_or_else(|| ArchiveError::BadManifest("it has no \"media\" map".into()))?;
        Ok(Self {
            version,
            entity_id,
            entity_server,
            entity_user,
            created_ts: raw.created_ts,
            records,
        })
    }

    /// Reads a whole manifest into memory, records included: for small manifests and
    /// tests. Tools stream records with [`Manifest::read`].
    pub fn parse(
        source: impl Read,
    ) -> Result<(Self, BTreeMap<String, ManifestRecord>), ArchiveError> {
        let mut media = BTreeMap::new();
        let manifest = Self::read(source, &mut |mxc, record| {
            media.insert(mxc, record);
            Ok(())
        })?;
        Ok((manifest, media))
    }
}

/// An entity ID is a user ID or a server name; anything else refuses the archive (its
/// records could not be checked against their origin).
fn parse_entity(entity_id: &str) -> Result<(ServerName, Option<UserId>), ArchiveError> {
    let shown: String = entity_id.chars().take(100).collect();
    let shown = if shown.len() < entity_id.len() {
        format!("{shown}… ({} bytes)", entity_id.len())
    } else {
        shown
    };
    let problem = if entity_id.starts_with('@') {
        match UserId::try_from(entity_id) {
            Ok(user) => return Ok((user.server_name().clone(), Some(user))),
            Err(e) => e.to_string(),
        }
    } else {
        match ServerName::try_from(entity_id) {
            Ok(server) => return Ok((server, None)),
            Err(e) => e.to_string(),
        }
    };
    Err(ArchiveError::BadManifest(format!(
        "its entity_id {shown:?} is neither a user ID (@user:server) nor a server name \
         ({problem}): the origin of its records cannot be checked, so the archive is refused"
    )))
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
        let (manifest, _) = Manifest::parse(json.as_bytes()).unwrap();
        assert_eq!(manifest.entity_id, "@alice:example.org");
        assert_eq!(manifest.version, 1);
        assert_eq!(
            manifest.entity_server.as_str(),
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
            (
                r#"{"version":2,"entity_id":"x.org","media":{},"media":{}}"#,
                "two",
            ),
        ];
        for (json, expected) in cases {
            let error = Manifest::parse(json.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    #[test]
    fn an_entity_id_that_is_not_a_user_or_a_server_refuses_the_archive() {
        for entity in ["evil test!", "@alice:evil..test", "@alice", "a..b"] {
            let json = format!(r#"{{"version":2,"entity_id":{entity:?},"media":{{}}}}"#);
            let error = Manifest::parse(json.as_bytes()).unwrap_err().to_string();
            assert!(error.contains("neither a user ID"), "{entity}: {error}");
        }
        let long = format!("{}.org", "a".repeat(300));
        let json = format!(r#"{{"version":2,"entity_id":"{long}","media":{{}}}}"#);
        let error = Manifest::parse(json.as_bytes()).unwrap_err().to_string();
        assert!(
            error.contains("neither a user ID") && error.len() < 1000,
            "{error}"
        );
    }

    #[test]
    fn a_manifest_bomb_is_refused_before_its_string_is_buffered() {
        // A 500 MB entity_id, produced lazily: the parse stops at MAX_STRING_BYTES.
        let head = br#"{"version":2,"media":{},"entity_id":""#;
        let body = std::io::repeat(b'a').take(500 << 20);
        let mut read = 0u64;
        let source = head.chain(body).inspect_bytes(&mut read);
        let error = Manifest::read(source, &mut |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("longer than"), "{error}");
        assert!(read < 1 << 20, "read {read} bytes of the bomb");
        // Escapes count; a string of escaped quotes is still one string.
        let escaped = format!(r#"{{"version":2,"entity_id":"{}"#, "\\\"".repeat(20_000));
        let error = Manifest::read(escaped.as_bytes(), &mut |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("longer than"), "{error}");
    }

    /// Counts the bytes a reader yields.
    trait InspectBytes: Read + Sized {
        fn inspect_bytes(self, count: &mut u64) -> Counting<'_, Self> {
            Counting { inner: self, count }
        }
    }
    impl<R: Read> InspectBytes for R {}
    struct Counting<'a, R> {
        inner: R,
        count: &'a mut u64,
    }
    impl<R: Read> Read for Counting<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            *self.count += n as u64;
            Ok(n)
        }
    }

    #[test]
    fn records_are_streamed_and_overlong_fields_refused() {
        let json = format!(
            r#"{{"media":{{"mxc://example.org/a":{a},"mxc://example.org/b":{b}}},"version":2,"entity_id":"example.org"}}"#,
            a = serde_json::to_string(&record("example.org", "a")).unwrap(),
            b = serde_json::to_string(&ManifestRecord {
                name: "n".repeat(MAX_TEXT_FIELD + 1),
                ..record("example.org", "b")
            })
            .unwrap(),
        );
        let mut seen = Vec::new();
        let manifest = Manifest::read(json.as_bytes(), &mut |mxc, record| {
            seen.push((mxc, record));
            Ok(())
        })
        .unwrap();
        assert_eq!(manifest.records, 2);
        assert_eq!(seen.len(), 2);
        assert!(seen[0].1.check(&seen[0].0).is_ok());
        let error = seen[1].1.check(&seen[1].0).unwrap_err();
        assert!(error.contains("its name is 4097 bytes long"), "{error}");
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
