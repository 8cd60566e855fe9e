//! Reading matrix-media-repo's `media-repo.yaml`: the database, the local homeservers and
//! the datastores, which is all a tool needs to read or fill the deployment.
//!
//! # What is read
//! * `database.postgres`: the PostgreSQL URL (MMR supports no other database).
//! * `homeservers[].name`: the origins local to the deployment; every other origin is
//!   remote.
//! * `datastores[]`: `id`, `type` (`file` or `s3`), `forKinds` (`thumbnails`,
//!   `remote_media`, `local_media`, `archives`, or `all` for every kind as MMR accepts it;
//!   an empty or missing list makes the datastore read-only) and `opts`:
//!   * file: `path`, the folder (a relative path is relative to the working directory, as
//!     it is to MMR's process);
//!   * s3: `endpoint` (`host[:port]`, no scheme), `ssl` (`true` unless set to a false value;
//!     MMR's default), `bucketName`, `region`, `accessKeyId`, `accessSecret`,
//!     `prefixLength` and `storageClass`.
//!
//! Every other top-level key (MMR's config is large: `repo`, `uploads`, `thumbnails`, …)
//! is ignored, and so are these datastore options, with a warning when they are set:
//! `storageClass` (our writes get the bucket's default class), `prefixLength` (it only
//! shapes the names MMR gives new objects; ours are content-addressed, see
//! [`crate::datastores`]), `multipartUploads`, `tempPath`, `publicBaseUrl` and the CDN
//! options (`cdn`, `fastly…`), which concern serving and uploading, not where bytes are.
//! Unknown options are warned about too.
//!
//! # What is not read, and refused
//! * Configuration folders. MMR's `-config` may name a folder: it then reads every file
//!   in it, in name order, each over the previous ones, and a file with a top-level
//!   `homeserver:` key is a per-domain config, which may add homeservers and datastores of
//!   its own. A folder, or a per-domain file, is refused here: give the tools one file
//!   holding the whole main config.
//! * Environment overrides. MMR's container image takes the config's path from
//!   `REPO_CONFIG`; these tools take the path from `-config` only, and read no setting
//!   of the file from the environment. (S3 credentials come from the file; only an S3
//!   datastore whose opts hold none is opened with the standard AWS sources: environment
//!   variables, then a profile; see [`crate::datastores`].)
//! * Anything that would make the tools write where MMR would not read: a datastore with
//!   no `id`, two with one `id`, a `type` other than `file` or `s3`, a file datastore
//!   without `path`, an S3 one without `endpoint` or `bucketName`, an `endpoint` with a
//!   scheme, an `ssl` or `prefixLength` that is not a boolean or a number; and a config
//!   without `database.postgres` or without any homeserver.
//!
//! Secrets (the database password, `accessSecret`) never appear in [`Debug`] output or in
//! errors: YAML errors are reported without the quoted source line, the database URL only
//! with its password hidden.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use media_core::ids::ServerName;
use media_db::{DatabaseLocation, Dialect};
use media_store::S3Location;
use media_store::s3::S3Keys;
use serde::Deserialize;

use crate::error::MmrError;

/// The config file MMR's tools read when `-config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "media-repo.yaml";

/// What the tools use of an MMR config, checked. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct MmrConfig {
    /// `database.postgres`.
    pub database: DatabaseLocation,
    /// `homeservers[].name`: media of these origins are local.
    pub local_origins: Vec<ServerName>,
    /// `datastores`, in the config's order.
    pub datastores: Vec<DatastoreConfig>,
    /// Settings the tools ignore although they are set, for the operator to read.
    pub warnings: Vec<String>,
}

/// A datastore's permanent ID, stored in the `datastore_id` column of every row whose
/// bytes it holds (MMR's IDs are strings, unlike our repository's numeric ones).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MmrDatastoreId(String);

impl MmrDatastoreId {
    /// An ID as a config or a row spells it; `None` when it is empty or only whitespace.
    pub fn new(id: &str) -> Option<Self> {
        (!id.trim().is_empty()).then(|| Self(id.to_owned()))
    }

    /// The ID as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MmrDatastoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kinds of bytes MMR sorts into datastores (`forKinds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MediaKind {
    /// Media uploaded to one of the deployment's homeservers.
    LocalMedia,
    /// Cached copies of other servers' media.
    RemoteMedia,
    /// Thumbnails.
    Thumbnails,
    /// MMR's stored exports (`gdpr_export` archives kept by MMR).
    Archives,
}

impl MediaKind {
    /// Every kind, as `all` stands for.
    pub const ALL: [MediaKind; 4] = [
        MediaKind::LocalMedia,
        MediaKind::RemoteMedia,
        MediaKind::Thumbnails,
        MediaKind::Archives,
    ];

    /// The kind as `forKinds` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::LocalMedia => "local_media",
            MediaKind::RemoteMedia => "remote_media",
            MediaKind::Thumbnails => "thumbnails",
            MediaKind::Archives => "archives",
        }
    }

    fn parse(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

/// One entry of `datastores`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatastoreConfig {
    /// `id`.
    pub id: MmrDatastoreId,
    /// `forKinds`, `all` expanded; empty for a read-only datastore.
    pub kinds: BTreeSet<MediaKind>,
    /// `type` and `opts`.
    pub backend: DatastoreBackend,
}

impl DatastoreConfig {
    /// Whether MMR puts new bytes of `kind` here.
    pub fn takes(&self, kind: MediaKind) -> bool {
        self.kinds.contains(&kind)
    }
}

/// Where a datastore keeps its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreBackend {
    /// `type: file`: a folder; a row's bytes are at `<path>/<location>`.
    File {
        /// `opts.path`.
        path: PathBuf,
    },
    /// `type: s3`: a bucket; a row's bytes are the object whose key is its `location`.
    S3(S3Options),
}

/// The options of an S3 datastore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    /// `endpoint`: `host[:port]`, no scheme.
    pub endpoint: String,
    /// `ssl`: how to reach the endpoint.
    pub transport: Transport,
    /// `bucketName`.
    pub bucket: String,
    /// `region`, when set.
    pub region: Option<String>,
    /// `accessKeyId` and `accessSecret`, when set.
    pub credentials: Option<S3Keys>,
    /// `prefixLength` (0 when unset): how many characters of a new object's random name
    /// MMR puts in front of it as a folder. It does not change how a location is read.
    pub prefix_length: u32,
    /// `storageClass`, when set (MMR's default is `STANDARD`).
    pub storage_class: Option<String>,
}

impl S3Options {
    /// Where these options point, as our S3 datastore takes it: the whole bucket (MMR
    /// keys objects from the bucket's root), at `http(s)://endpoint` with path-style
    /// requests.
    pub fn location(&self) -> S3Location {
        let scheme = match self.transport {
            Transport::Https => "https",
            Transport::Http => "http",
        };
        S3Location {
            bucket: self.bucket.clone(),
            prefix: String::new(),
            endpoint: Some(format!("{scheme}://{}", self.endpoint)),
            region: self.region.clone(),
            profile: None,
        }
    }
}

/// Whether an S3 endpoint is reached over TLS (`ssl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `https://` (MMR's default).
    Https,
    /// Plain `http://` (`ssl: false`).
    Http,
}

/// Datastore options that shape serving or uploading, not where bytes are: read by MMR,
/// ignored here with a warning when set.
const IGNORED_OPTIONS: [&str; 7] = [
    "multipartUploads",
    "tempPath",
    "publicBaseUrl",
    "cdn",
    "fastlyApiToken",
    "fastlyDictionaryName",
    "fastlyServiceId",
];

// Every field may be missing or null in a real config. No Debug: they hold secrets.
#[derive(Default, Deserialize)]
#[serde(default)]
struct RawConfig {
    database: Option<RawDatabase>,
    homeservers: Option<Vec<RawHomeserver>>,
    datastores: Option<Vec<RawDatastore>>,
    /// Only in MMR's per-domain config files.
    homeserver: Option<serde::de::IgnoredAny>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawDatabase {
    postgres: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawHomeserver {
    name: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawDatastore {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "forKinds")]
    for_kinds: Option<Vec<String>>,
    opts: Option<BTreeMap<String, OptionValue>>,
}

/// A datastore option: MMR reads them all as strings, so any scalar (`ssl: false`,
/// `prefixLength: 2`) is taken as its text; null is empty.
#[derive(Default)]
struct OptionValue(String);

impl<'de> Deserialize<'de> for OptionValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Scalar;
        impl serde::de::Visitor<'_> for Scalar {
            type Value = OptionValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<OptionValue, E> {
                Ok(OptionValue(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<OptionValue, E> {
                Ok(OptionValue(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<OptionValue, E> {
                Ok(OptionValue(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<OptionValue, E> {
                Ok(OptionValue(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<OptionValue, E> {
                Ok(OptionValue(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<OptionValue, E> {
                Ok(OptionValue::default())
            }
            fn visit_none<E>(self) -> Result<OptionValue, E> {
                Ok(OptionValue::default())
            }
        }
        deserializer.deserialize_any(Scalar)
    }
}

impl MmrConfig {
    /// [`MmrConfig::load`], each of its [`MmrConfig::warnings`] logged as a warning for
    /// the operator (what a tool does before it opens the deployment).
    pub fn load_logging_warnings(path: &Path) -> Result<Self, MmrError> {
        let config = Self::load(path)?;
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        Ok(config)
    }

    /// Reads the config file at `path` (see the [module documentation](self)).
    pub fn load(path: &Path) -> Result<Self, MmrError> {
        let refuse = |reason: String| MmrError::Config {
            path: path.to_owned(),
            reason,
        };
        if path.is_dir() {
            return Err(refuse(
                "it is a folder. matrix-media-repo reads every file of a config folder over \
                 the previous ones (and per-domain files in it may add datastores); these \
                 tools read one file: give -config the file holding the whole main config"
                    .into(),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            refuse(format!(
                "cannot read it: {e}. Give matrix-media-repo's config file with -config"
            ))
        })?;
        Self::parse(&text).map_err(refuse)
    }

    /// Parses config text; the error says what is wrong (never quoting a secret).
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawConfig = serde_saphyr::from_str_with_options(
            text,
            serde_saphyr::options! { with_snippet: false },
        )
        .map_err(|e| format!("not valid YAML: {e}"))?;
        if raw.homeserver.is_some() {
            return Err(
                "this is a per-domain config file (it has a top-level `homeserver:`); \
                 give -config matrix-media-repo's main config file"
                    .into(),
            );
        }
        let database = database(raw.database)?;
        let local_origins = homeservers(raw.homeservers.unwrap_or_default())?;
        let mut warnings = Vec::new();
        let mut datastores: Vec<DatastoreConfig> = Vec::new();
        for (index, raw) in raw.datastores.unwrap_or_default().into_iter().enumerate() {
            let datastore = datastore(index, raw, &mut warnings)?;
            if datastores.iter().any(|d| d.id == datastore.id) {
                return Err(format!(
                    "two datastores have the id {:?}: each needs its own permanent id",
                    datastore.id.as_str()
                ));
            }
            datastores.push(datastore);
        }
        if datastores.is_empty() {
            return Err("it lists no datastores: where does matrix-media-repo keep bytes?".into());
        }
        Ok(Self {
            database,
            local_origins,
            datastores,
            warnings,
        })
    }

    /// Whether media of `origin` are local to this deployment.
    pub fn is_local(&self, origin: &ServerName) -> bool {
        self.local_origins.contains(origin)
    }
}

fn database(raw: Option<RawDatabase>) -> Result<DatabaseLocation, String> {
    let url = raw.and_then(|d| d.postgres).unwrap_or_default();
    if url.trim().is_empty() {
        return Err(
            "database.postgres is not set: matrix-media-repo keeps its records in the \
                    PostgreSQL database that setting names"
                .into(),
        );
    }
    let location: DatabaseLocation = url.parse().map_err(|e| format!("database.postgres: {e}"))?;
    if location.dialect() != Dialect::Postgres {
        return Err(format!(
            "database.postgres is {location}, not a postgres:// URL: matrix-media-repo \
             supports PostgreSQL only"
        ));
    }
    Ok(location)
}

fn homeservers(raw: Vec<RawHomeserver>) -> Result<Vec<ServerName>, String> {
    let mut names = Vec::new();
    for (index, homeserver) in raw.into_iter().enumerate() {
        let name = homeserver.name.unwrap_or_default();
        let name: ServerName = name
            .parse()
            .map_err(|e| format!("homeservers[{index}].name {name:?} is not a server name: {e}"))?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err(
            "it lists no homeservers: the tools need homeservers[].name to tell local \
                    media from remote media"
                .into(),
        );
    }
    Ok(names)
}

fn datastore(
    index: usize,
    raw: RawDatastore,
    warnings: &mut Vec<String>,
) -> Result<DatastoreConfig, String> {
    let at = format!("datastores[{index}]");
    let id = raw
        .id
        .as_deref()
        .and_then(MmrDatastoreId::new)
        .ok_or_else(|| {
            format!(
                "{at} has no id: every datastore needs the permanent id its rows' datastore_id \
             holds (matrix-media-repo requires one since v1.3)"
            )
        })?;
    let at = format!("datastore {:?}", id.as_str());
    let mut kinds = BTreeSet::new();
    for kind in raw.for_kinds.unwrap_or_default() {
        if kind == "all" {
            kinds.extend(MediaKind::ALL);
        } else if let Some(kind) = MediaKind::parse(&kind) {
            kinds.insert(kind);
        } else {
            warnings.push(format!(
                "{at}: forKinds lists {kind:?}, which is no kind matrix-media-repo knows \
                 (local_media, remote_media, thumbnails, archives, all); it is ignored, as \
                 matrix-media-repo ignores it"
            ));
        }
    }
    let mut opts: BTreeMap<String, String> = raw
        .opts
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let mut take = |name: &str| opts.remove(name).filter(|v| !v.trim().is_empty());
    let backend = match raw.kind.as_deref() {
        Some("file") => {
            let path = take("path").ok_or_else(|| {
                format!("{at} is a file datastore without opts.path: which folder is it?")
            })?;
            if Path::new(&path).is_relative() {
                warnings.push(format!(
                    "{at}: opts.path {path:?} is relative; it is taken relative to the \
                     current working directory, as matrix-media-repo takes it relative to \
                     its own: run the tools from matrix-media-repo's working directory"
                ));
            }
            DatastoreBackend::File {
                path: PathBuf::from(path),
            }
        }
        Some("s3") => DatastoreBackend::S3(s3_options(&at, &mut take, warnings)?),
        Some(other) => {
            return Err(format!(
                "{at} has type {other:?}: these tools read and write file and s3 datastores \
                 only"
            ));
        }
        None => return Err(format!("{at} has no type (file or s3)")),
    };
    for ignored in IGNORED_OPTIONS {
        if take(ignored).is_some() {
            warnings.push(format!(
                "{at}: opts.{ignored} concerns how matrix-media-repo serves or uploads, not \
                 where bytes are; it is ignored"
            ));
        }
    }
    for unknown in opts.keys() {
        warnings.push(format!("{at}: unknown option opts.{unknown} is ignored"));
    }
    Ok(DatastoreConfig { id, kinds, backend })
}

fn s3_options(
    at: &str,
    take: &mut impl FnMut(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<S3Options, String> {
    let endpoint =
        take("endpoint").ok_or_else(|| format!("{at} is an s3 datastore without opts.endpoint"))?;
    if endpoint.contains("://") || endpoint.contains('/') {
        return Err(format!(
            "{at}: opts.endpoint {endpoint:?} must be host[:port] without a scheme or a path \
             (TLS is opts.ssl), as matrix-media-repo requires"
        ));
    }
    let bucket = take("bucketName")
        .ok_or_else(|| format!("{at} is an s3 datastore without opts.bucketName"))?;
    let transport = match take("ssl") {
        None => Transport::Https,
        Some(ssl) => match go_bool(&ssl) {
            Some(true) => Transport::Https,
            Some(false) => Transport::Http,
            None => {
                return Err(format!(
                    "{at}: opts.ssl {ssl:?} is not a boolean (true or false)"
                ));
            }
        },
    };
    let credentials = match (take("accessKeyId"), take("accessSecret")) {
        (None, None) => None,
        (Some(access_key_id), Some(secret)) => Some(S3Keys::new(access_key_id, secret)),
        (Some(_), None) => return Err(format!("{at}: opts.accessKeyId is set, accessSecret not")),
        (None, Some(_)) => return Err(format!("{at}: opts.accessSecret is set, accessKeyId not")),
    };
    let prefix_length = match take("prefixLength") {
        None => 0,
        Some(length) => length.trim().parse().map_err(|_| {
            format!("{at}: opts.prefixLength {length:?} is not a non-negative whole number")
        })?,
    };
    if prefix_length > 0 {
        warnings.push(format!(
            "{at}: opts.prefixLength only shapes the names matrix-media-repo gives new \
             objects; these tools name objects by their SHA-256 (ab/cd/<sha256>) and read \
             every row's own location"
        ));
    }
    let storage_class = take("storageClass");
    if let Some(class) = &storage_class
        && class != "STANDARD"
    {
        warnings.push(format!(
            "{at}: opts.storageClass {class:?} is not applied: objects these tools write get \
             the bucket's default storage class"
        ));
    }
    Ok(S3Options {
        endpoint,
        transport,
        bucket,
        region: take("region"),
        credentials,
        prefix_length,
        storage_class,
    })
}

/// A boolean as Go's `strconv.ParseBool` (which MMR uses) reads one.
fn go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deployment shaped like MMR's sample config: many sections these tools ignore,
    /// two homeservers, a file datastore for local media and thumbnails, an S3 one for
    /// remote media and a retired read-only one.
    const SAMPLE: &str = r#"
repo:
  bindAddress: '127.0.0.1'
  port: 8000
  logDirectory: logs
federation:
  backoffAt: 20
database:
  postgres: "postgres://mmr:hunter2-db@db.internal:5432/media?sslmode=disable"
  pool:
    maxConnections: 25
    maxIdleConnections: 5
homeservers:
  - name: example.org
    csApi: "https://matrix.example.org/"
    backoffAt: 10
    adminApiKind: "matrix"
  - name: "chat.example.net:8448"
    csApi: "https://chat.example.net/"
admins:
  - "@admin:example.org"
datastores:
  - type: file
    id: "local-disk-1"
    forKinds: ["local_media", "thumbnails"]
    opts:
      path: /srv/mmr/media
  - type: s3
    id: remote-bucket
    forKinds: ["remote_media", "archives"]
    opts:
      tempPath: "/tmp/mediarepo_s3_upload"
      endpoint: s3.example.org:9000
      accessKeyId: "AKIDEXAMPLE"
      accessSecret: "s3cr3t-never-shown"
      ssl: false
      bucketName: "mmr-remote"
      region: "eu-west-1"
      prefixLength: 3
      storageClass: STANDARD
  - type: file
    id: retired
    forKinds: []
    opts:
      path: /srv/mmr/old
uploads:
  maxBytes: 104857600
  quotas:
    enabled: false
thumbnails:
  sizes:
    - width: 32
      height: 32
featureSupport:
  redis:
    enabled: false
"#;

    fn parse_err(text: &str) -> String {
        MmrConfig::parse(text).unwrap_err()
    }

    fn with_datastores(datastores: &str) -> String {
        format!(
            "database:\n  postgres: postgres://u:pw@h/db\nhomeservers:\n  - name: example.org\n\
             datastores:\n{datastores}"
        )
    }

    #[test]
    fn the_sample_shape_is_read_and_the_rest_ignored() {
        let config = MmrConfig::parse(SAMPLE).unwrap();
        assert_eq!(
            config.database.connection_url(),
            "postgres://mmr:hunter2-db@db.internal:5432/media?sslmode=disable"
        );
        let origins: Vec<&str> = config.local_origins.iter().map(|o| o.as_str()).collect();
        assert_eq!(origins, ["example.org", "chat.example.net:8448"]);
        assert!(config.is_local(&"example.org".parse().unwrap()));
        assert!(!config.is_local(&"elsewhere.org".parse().unwrap()));

        let [disk, bucket, retired] = &config.datastores[..] else {
            panic!("three datastores: {:?}", config.datastores);
        };
        assert_eq!(disk.id.as_str(), "local-disk-1");
        assert_eq!(
            disk.kinds,
            BTreeSet::from([MediaKind::LocalMedia, MediaKind::Thumbnails])
        );
        assert_eq!(
            disk.backend,
            DatastoreBackend::File {
                path: "/srv/mmr/media".into()
            }
        );
        assert!(disk.takes(MediaKind::Thumbnails) && !disk.takes(MediaKind::RemoteMedia));
        assert!(retired.kinds.is_empty());

        let DatastoreBackend::S3(s3) = &bucket.backend else {
            panic!("an S3 datastore: {bucket:?}");
        };
        assert_eq!(s3.endpoint, "s3.example.org:9000");
        assert_eq!(s3.transport, Transport::Http);
        assert_eq!(s3.bucket, "mmr-remote");
        assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s3.prefix_length, 3);
        assert_eq!(s3.storage_class.as_deref(), Some("STANDARD"));
        assert_eq!(
            s3.credentials,
            Some(S3Keys::new("AKIDEXAMPLE", "s3cr3t-never-shown"))
        );
        assert_eq!(
            s3.location(),
            S3Location {
                bucket: "mmr-remote".into(),
                prefix: String::new(),
                endpoint: Some("http://s3.example.org:9000".into()),
                region: Some("eu-west-1".into()),
                profile: None,
            }
        );
        // tempPath and prefixLength are ignored, and said so.
        assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
        assert!(config.warnings.iter().any(|w| w.contains("opts.tempPath")));
        assert!(config.warnings.iter().any(|w| w.contains("prefixLength")));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config = MmrConfig::parse(SAMPLE).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t-never-shown"), "{shown}");
        assert!(!shown.contains("hunter2-db"), "{shown}");
        assert!(shown.contains("AKIDEXAMPLE") && shown.contains("db.internal"));
    }

    #[test]
    fn secrets_never_show_in_errors() {
        // A YAML error on the secret's own line.
        let broken = SAMPLE.replace(
            "accessSecret: \"s3cr3t-never-shown\"",
            "accessSecret: \"s3cr3t-never-shown\" ]",
        );
        let err = parse_err(&broken);
        assert!(err.contains("not valid YAML"), "{err}");
        assert!(!err.contains("s3cr3t-never-shown"), "{err}");
        // A refused setting next to the secrets.
        let err = parse_err(&SAMPLE.replace("ssl: false", "ssl: perhaps"));
        assert!(err.contains("opts.ssl \"perhaps\""), "{err}");
        assert!(!err.contains("s3cr3t-never-shown") && !err.contains("hunter2-db"));
        let err = parse_err(&SAMPLE.replace("postgres://mmr", "mysql://mmr"));
        assert!(!err.contains("hunter2-db"), "{err}");
    }

    #[test]
    fn ssl_defaults_to_tls_and_reads_go_booleans() {
        let s3 = |opts: &str| {
            let text = with_datastores(&format!(
                "  - type: s3\n    id: b\n    opts:\n      endpoint: h:9000\n      \
                 bucketName: b\n{opts}"
            ));
            match MmrConfig::parse(&text)
                .unwrap()
                .datastores
                .remove(0)
                .backend
            {
                DatastoreBackend::S3(s3) => s3,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(s3("").transport, Transport::Https);
        assert_eq!(s3("      ssl: true\n").transport, Transport::Https);
        assert_eq!(s3("      ssl: \"False\"\n").transport, Transport::Http);
        assert_eq!(s3("      ssl: 0\n").transport, Transport::Http);
        assert_eq!(
            s3("").location().endpoint.as_deref(),
            Some("https://h:9000")
        );
        assert_eq!(s3("").credentials, None);
        assert_eq!(s3("").prefix_length, 0);
    }

    #[test]
    fn all_stands_for_every_kind() {
        let text = with_datastores(
            "  - type: file\n    id: a\n    forKinds: [all]\n    opts: {path: /m}\n",
        );
        let config = MmrConfig::parse(&text).unwrap();
        assert_eq!(config.datastores[0].kinds, BTreeSet::from(MediaKind::ALL));
    }

    #[test]
    fn unknown_kinds_and_options_are_warned_about() {
        let text = with_datastores(
            "  - type: file\n    id: a\n    forKinds: [local-media]\n    opts: {path: /m, colour: blue}\n",
        );
        let config = MmrConfig::parse(&text).unwrap();
        assert!(config.datastores[0].kinds.is_empty());
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.contains("\"local-media\""))
        );
        assert!(config.warnings.iter().any(|w| w.contains("opts.colour")));
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_with_a_reason() {
        let file = "    opts: {path: /m}\n";
        for (datastores, expected) in [
            (format!("  - type: file\n{file}"), "has no id"),
            (format!("  - type: file\n    id: \"  \"\n{file}"), "has no id"),
            (
                format!("  - type: file\n    id: a\n{file}  - type: file\n    id: a\n{file}"),
                "two datastores have the id \"a\"",
            ),
            (format!("  - type: ipfs\n    id: a\n{file}"), "type \"ipfs\""),
            (format!("  - id: a\n{file}"), "has no type"),
            ("  - type: file\n    id: a\n".into(), "without opts.path"),
            (
                "  - type: s3\n    id: a\n    opts: {bucketName: b}\n".into(),
                "without opts.endpoint",
            ),
            (
                "  - type: s3\n    id: a\n    opts: {endpoint: h}\n".into(),
                "without opts.bucketName",
            ),
            (
                "  - type: s3\n    id: a\n    opts: {endpoint: 'https://h', bucketName: b}\n"
                    .into(),
                "without a scheme",
            ),
            (
                "  - type: s3\n    id: a\n    opts: {endpoint: h, bucketName: b, accessKeyId: k}\n"
                    .into(),
                "accessSecret not",
            ),
            (
                "  - type: s3\n    id: a\n    opts: {endpoint: h, bucketName: b, prefixLength: x}\n"
                    .into(),
                "prefixLength \"x\"",
            ),
            ("  []\n".into(), "lists no datastores"),
        ] {
            let err = parse_err(&with_datastores(&datastores));
            assert!(err.contains(expected), "{datastores}: {err}");
        }
        let datastores = format!("datastores:\n  - type: file\n    id: a\n{file}");
        for (text, expected) in [
            (
                format!("homeservers: [{{name: a.org}}]\n{datastores}"),
                "database.postgres is not set",
            ),
            (
                format!(
                    "database: {{postgres: 'sqlite://x.db'}}\nhomeservers: [{{name: a.org}}]\n\
                     {datastores}"
                ),
                "supports PostgreSQL only",
            ),
            (
                format!("database: {{postgres: 'postgres://h/d'}}\n{datastores}"),
                "lists no homeservers",
            ),
            (
                format!(
                    "database: {{postgres: 'postgres://h/d'}}\nhomeservers: [{{name: 'a b'}}]\n\
                     {datastores}"
                ),
                "is not a server name",
            ),
            (
                format!("homeserver: a.org\n{datastores}"),
                "per-domain config file",
            ),
        ] {
            let err = parse_err(&text);
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn a_config_folder_is_refused() {
        let folder = tempfile::tempdir().unwrap();
        let err = MmrConfig::load(folder.path()).unwrap_err().to_string();
        assert!(err.contains("it is a folder"), "{err}");
        let missing = folder.path().join("media-repo.yaml");
        let err = MmrConfig::load(&missing).unwrap_err().to_string();
        assert!(
            err.contains("cannot read it") && err.contains("-config"),
            "{err}"
        );
    }
}
