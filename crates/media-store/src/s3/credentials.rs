//! Where an S3 datastore's credentials come from: keys given in code, the AWS environment
//! variables, or a profile of the AWS shared files (`~/.aws/credentials`, `~/.aws/config`).
//!
//! With [`S3Credentials::Standard`] the first of these that applies wins:
//! 1. the profile the location names (`?profile=NAME` in the URI): the operator chose it
//!    for this one datastore, so it beats the environment (as a profile named on the AWS
//!    command line does);
//! 2. the keys in `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (with `AWS_SESSION_TOKEN`);
//! 3. the profile `AWS_PROFILE` names, else the profile `default` when the shared files
//!    have one with keys;
//! 4. whatever else `object_store` finds in the environment (web identity, a container's
//!    or an EC2 instance's role).
//!
//! [`S3Credentials::Given`] keys beat all of these. A profile that is named (in the URI or
//! by `AWS_PROFILE`) but missing, or has no keys, is a [`StoreError::Config`] naming the
//! files and the profile. Secrets never appear in a URI, in `Debug` output or in errors.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use media_core::datastore::StoreError;

/// An access key, its secret and optionally a session token, for one S3 server.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Keys {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl S3Keys {
    /// An access key and its secret.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }

    /// These keys with a session token (temporary credentials).
    pub fn with_session_token(mut self, session_token: impl Into<String>) -> Self {
        self.session_token = Some(session_token.into());
        self
    }

    /// The access key's ID (not a secret: it names the key in messages).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The keys as `object_store` takes them.
    pub(super) fn to_aws(&self) -> object_store::aws::AwsCredential {
        object_store::aws::AwsCredential {
            key_id: self.access_key_id.clone(),
            secret_key: self.secret_access_key.clone(),
            token: self.session_token.clone(),
        }
    }
}

/// Shows the access key's ID only: the secret and the token are redacted.
impl fmt::Debug for S3Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Keys")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Which credentials an S3 datastore signs its requests with (see the [module
/// documentation](self) for the order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum S3Credentials {
    /// The profile the location names, else the AWS environment variables, else the
    /// profile `AWS_PROFILE` names or `default`, else the environment's role.
    #[default]
    Standard,
    /// These keys, whatever the location, the environment and the shared files say (for a
    /// configuration file that holds keys, such as matrix-media-repo's).
    Given(S3Keys),
}

/// The credentials a client gets, resolved.
#[derive(Debug)]
pub(super) enum Resolved {
    /// These keys, and the region of the profile they came from (if any).
    Keys {
        /// The keys.
        keys: S3Keys,
        /// The profile's `region`, used when neither the location nor the environment
        /// names one.
        region: Option<String>,
        /// Where the keys came from, for messages.
        origin: String,
    },
    /// Whatever `object_store` reads from the environment.
    Environment,
}

impl Resolved {
    /// Where the credentials come from, for messages (never the secret).
    pub(super) fn origin(&self) -> String {
        match self {
            Self::Keys { origin, .. } => origin.clone(),
            Self::Environment => "the AWS environment variables (AWS_ACCESS_KEY_ID, \
                 AWS_SECRET_ACCESS_KEY) or the environment's role"
                .to_owned(),
        }
    }
}

/// The environment variables credentials are resolved from: a snapshot, so that tests
/// pass their own instead of changing the process's environment.
#[derive(Debug, Clone, Default)]
pub(super) struct AwsEnvironment {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `AWS_PROFILE`.
    pub profile: Option<String>,
    /// `AWS_SHARED_CREDENTIALS_FILE`.
    pub credentials_file: Option<PathBuf>,
    /// `AWS_CONFIG_FILE`.
    pub config_file: Option<PathBuf>,
    /// `HOME`, where `.aws/` is by default.
    pub home: Option<PathBuf>,
}

impl AwsEnvironment {
    /// This process's environment.
    pub(super) fn current() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        let text = |name: &str| var(name).and_then(|value| value.into_string().ok());
        Self {
            access_key_id: text("AWS_ACCESS_KEY_ID"),
            profile: text("AWS_PROFILE"),
            credentials_file: var("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from),
            config_file: var("AWS_CONFIG_FILE").map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
        }
    }

    /// The shared credentials file and the shared config file.
    fn shared_files(&self) -> [Option<PathBuf>; 2] {
        let default = |name: &str| self.home.as_ref().map(|home| home.join(".aws").join(name));
        [
            self.credentials_file
                .clone()
                .or_else(|| default("credentials")),
            self.config_file.clone().or_else(|| default("config")),
        ]
    }
}

/// Resolves `credentials` for a location that names `profile` (see the [module
/// documentation](self) for the order).
pub(super) fn resolve(
    credentials: &S3Credentials,
    profile: Option<&str>,
    env: &AwsEnvironment,
) -> Result<Resolved, StoreError> {
    if let S3Credentials::Given(keys) = credentials {
        return Ok(Resolved::Keys {
            keys: keys.clone(),
            region: None,
            origin: format!("the access key {} given", keys.access_key_id()),
        });
    }
    if let Some(name) = profile {
        return named_profile(name, env);
    }
    if env.access_key_id.is_some() {
        return Ok(Resolved::Environment);
    }
    if let Some(name) = &env.profile {
        return named_profile(name, env);
    }
    Ok(match read_profile("default", env)? {
        Some(found) if found.has_keys() => found.into_resolved("default")?,
        _ => Resolved::Environment,
    })
}

/// A profile that was asked for by name: it must exist and hold keys.
fn named_profile(name: &str, env: &AwsEnvironment) -> Result<Resolved, StoreError> {
    let files = env
        .shared_files()
        .into_iter()
        .flatten()
        .map(|file| file.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ");
    match read_profile(name, env)? {
        None => Err(StoreError::Config(format!(
            "the AWS profile {name:?} is not in {files}: add it (a [{name}] section with \
             aws_access_key_id and aws_secret_access_key in the credentials file), or name \
             another profile (?profile= in the datastore URI, or AWS_PROFILE)"
        ))),
        Some(found) => found.into_resolved(name),
    }
}

/// A profile's settings, merged from both shared files (the credentials file wins).
#[derive(Debug)]
struct Profile {
    settings: HashMap<String, String>,
    /// The files it was found in.
    found_in: Vec<PathBuf>,
}

impl Profile {
    fn has_keys(&self) -> bool {
        self.settings.contains_key("aws_access_key_id")
            && self.settings.contains_key("aws_secret_access_key")
    }

    fn into_resolved(mut self, name: &str) -> Result<Resolved, StoreError> {
        let files = self
            .found_in
            .iter()
            .map(|file| file.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ");
        let (Some(access_key_id), Some(secret)) = (
            self.settings.remove("aws_access_key_id"),
            self.settings.remove("aws_secret_access_key"),
        ) else {
            return Err(StoreError::Config(format!(
                "the AWS profile {name:?} in {files} has no aws_access_key_id and \
                 aws_secret_access_key (profiles that assume a role, use SSO or a \
                 credential_process are not supported): add both keys to it"
            )));
        };
        let mut keys = S3Keys::new(access_key_id, secret);
        if let Some(token) = self.settings.remove("aws_session_token") {
            keys = keys.with_session_token(token);
        }
        Ok(Resolved::Keys {
            origin: format!(
                "the access key {} of the AWS profile {name:?} in {files}",
                keys.access_key_id()
            ),
            keys,
            region: self.settings.remove("region"),
        })
    }
}

/// The profile `name` from the shared files, or `None` when neither has it. A missing
/// file is an empty one; an unreadable one is a configuration error.
fn read_profile(name: &str, env: &AwsEnvironment) -> Result<Option<Profile>, StoreError> {
    let [credentials_file, config_file] = env.shared_files();
    // The credentials file's sections are bare names; the config file's are
    // `profile NAME`, except `default`.
    let config_section = if name == "default" {
        "default".to_owned()
    } else {
        format!("profile {name}")
    };
    let mut profile = Profile {
        settings: HashMap::new(),
        found_in: Vec::new(),
    };
    // The config file first, so that the credentials file's keys replace its keys.
    for (file, section) in [
        (config_file, config_section.as_str()),
        (credentials_file, name),
    ] {
        let Some(file) = file else { continue };
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(StoreError::Config(format!(
                    "cannot read the AWS shared file {}: {e}",
                    file.display()
                )));
            }
        };
        if let Some(settings) = ini_section(&text, section) {
            profile.settings.extend(settings);
            profile.found_in.push(file);
        }
    }
    Ok((!profile.found_in.is_empty()).then_some(profile))
}

/// The settings of the section `[wanted]` of an INI text as the AWS shared files write
/// it (all sections of that name, later settings winning), or `None` when there is no
/// such section. Names are lowercased; `#` and `;` start comment lines; indented lines
/// continue a nested setting (`s3 =` followed by indented settings) and are skipped.
fn ini_section(text: &str, wanted: &str) -> Option<HashMap<String, String>> {
    let wanted = normalized_header(wanted);
    let mut settings: Option<HashMap<String, String>> = None;
    let mut inside = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
            continue;
        }
        if let Some(header) = trimmed
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            inside = normalized_header(header) == wanted;
            if inside {
                settings.get_or_insert_default();
            }
            continue;
        }
        if !inside || line.starts_with([' ', '\t']) {
            continue;
        }
        if let (Some(settings), Some((name, value))) = (settings.as_mut(), trimmed.split_once('='))
        {
            settings.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    settings
}

/// A section header with its words separated by single spaces (`[profile   a]` is
/// `[profile a]`).
fn normalized_header(header: &str) -> String {
    header.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIALS: &str = "\
# keys
[default]
aws_access_key_id = DEFAULTKEY
aws_secret_access_key = default-secret

[backup]
aws_access_key_id=BACKUPKEY
aws_secret_access_key=backup/secret+x=
aws_session_token = backup-token

[regionless]
region = eu-west-1
";

    const CONFIG: &str = "\
[default]
region = garage

[profile backup]
region = eu-central-1
s3 =
  addressing_style = path

; a profile with a role only
[profile role]
role_arn = arn:aws:iam::123456789012:role/media
";

    struct Files {
        _dir: tempfile::TempDir,
        env: AwsEnvironment,
    }

    fn files(credentials: &str, config: &str) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let (credentials_path, config_path) =
            (dir.path().join("credentials"), dir.path().join("config"));
        std::fs::write(&credentials_path, credentials).unwrap();
        std::fs::write(&config_path, config).unwrap();
        Files {
            env: AwsEnvironment {
                credentials_file: Some(credentials_path),
                config_file: Some(config_path),
                ..AwsEnvironment::default()
            },
            _dir: dir,
        }
    }

    fn keys_of(resolved: Resolved) -> (S3Keys, Option<String>) {
        match resolved {
            Resolved::Keys { keys, region, .. } => (keys, region),
            Resolved::Environment => panic!("resolved to the environment"),
        }
    }

    #[test]
    fn a_profile_reads_keys_token_and_region_from_both_shared_files() {
        let files = files(CREDENTIALS, CONFIG);
        let (keys, region) =
            keys_of(resolve(&S3Credentials::Standard, Some("backup"), &files.env).unwrap());
        assert_eq!(
            keys,
            S3Keys::new("BACKUPKEY", "backup/secret+x=").with_session_token("backup-token")
        );
        assert_eq!(region.as_deref(), Some("eu-central-1"));
        let (keys, region) = keys_of(resolve(&S3Credentials::Standard, None, &files.env).unwrap());
        assert_eq!(keys, S3Keys::new("DEFAULTKEY", "default-secret"));
        assert_eq!(
            region.as_deref(),
            Some("garage"),
            "[default] in the config file"
        );
    }

    #[test]
    fn credentials_given_in_code_beat_the_environment_which_beats_aws_profile() {
        let mut files = files(CREDENTIALS, CONFIG);
        let given = S3Credentials::Given(S3Keys::new("GIVENKEY", "given-secret"));
        files.env.access_key_id = Some("ENVKEY".into());
        files.env.profile = Some("backup".into());
        let (keys, _) = keys_of(resolve(&given, Some("backup"), &files.env).unwrap());
        assert_eq!(keys.access_key_id(), "GIVENKEY");
        assert!(matches!(
            resolve(&S3Credentials::Standard, None, &files.env).unwrap(),
            Resolved::Environment
        ));
        // A profile the URI names is the operator's choice for this store: it beats the
        // environment's keys.
        let (keys, _) =
            keys_of(resolve(&S3Credentials::Standard, Some("backup"), &files.env).unwrap());
        assert_eq!(keys.access_key_id(), "BACKUPKEY");
        files.env.access_key_id = None;
        let (keys, _) = keys_of(resolve(&S3Credentials::Standard, None, &files.env).unwrap());
        assert_eq!(
            keys.access_key_id(),
            "BACKUPKEY",
            "AWS_PROFILE without keys in the environment"
        );
    }

    #[test]
    fn without_keys_anywhere_the_environment_decides() {
        let files = files("", "[default]\nregion = garage\n");
        assert!(matches!(
            resolve(&S3Credentials::Standard, None, &files.env).unwrap(),
            Resolved::Environment
        ));
        let nowhere = AwsEnvironment::default();
        assert!(matches!(
            resolve(&S3Credentials::Standard, None, &nowhere).unwrap(),
            Resolved::Environment
        ));
    }

    #[test]
    fn a_named_profile_that_is_missing_or_has_no_keys_is_a_config_error_naming_it_and_the_files() {
        let mut files = files(CREDENTIALS, CONFIG);
        for (uri_profile, env_profile, name) in [
            (Some("nobody"), None, "nobody"),
            (None, Some("nobody"), "nobody"),
            (Some("role"), None, "role"),
            (Some("regionless"), None, "regionless"),
        ] {
            files.env.profile = env_profile.map(str::to_owned);
            let err = resolve(&S3Credentials::Standard, uri_profile, &files.env).unwrap_err();
            assert!(matches!(err, StoreError::Config(_)), "{name}: {err}");
            let message = err.to_string();
            assert!(message.contains(&format!("{name:?}")), "{message}");
            let credentials = files.env.credentials_file.as_ref().unwrap();
            let config = files.env.config_file.as_ref().unwrap();
            let named_file = message.contains(&credentials.display().to_string())
                || message.contains(&config.display().to_string());
            assert!(named_file, "{message}");
            for secret in ["default-secret", "backup/secret", "backup-token"] {
                assert!(!message.contains(secret), "{message}");
            }
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let keys = S3Keys::new("AKIDSHOWN", "hidden-secret").with_session_token("hidden-token");
        for shown in [
            format!("{keys:?}"),
            format!("{:?}", S3Credentials::Given(keys.clone())),
            resolve(
                &S3Credentials::Given(keys.clone()),
                None,
                &AwsEnvironment::default(),
            )
            .unwrap()
            .origin(),
        ] {
            assert!(shown.contains("AKIDSHOWN"), "{shown}");
            assert!(!shown.contains("hidden"), "{shown}");
        }
    }

    #[test]
    fn ini_sections_merge_skip_comments_and_nested_settings() {
        let text = "[a]\nx = 1\n# y = 2\n[b]\nx = 3\n[ a ]\nz = 4\n s3 = nested\n";
        let a = ini_section(text, "a").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!((a["x"].as_str(), a["z"].as_str()), ("1", "4"));
        assert_eq!(
            ini_section("[profile   b]\n", "profile b"),
            Some(HashMap::new())
        );
        assert_eq!(ini_section(text, "c"), None);
    }
}
