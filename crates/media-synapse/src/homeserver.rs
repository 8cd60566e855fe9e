//! Downloading media from a running homeserver: the fallback for media whose files are not
//! on disk (kept by an external storage provider, or lost), and the whole source with
//! `--source http`.
//!
//! Uses the authenticated client media API (`/_matrix/client/v1/media/…`), which every
//! Synapse since authenticated media answers; quarantined media are asked for with
//! Synapse's admin bypass, which needs an admin's access token.

use futures::TryStreamExt;
use media_core::records::{MediaKey, ThumbnailMethod};
use reqwest::{StatusCode, Url};
use tokio::io::AsyncRead;

use crate::error::SynapseError;

/// How long connecting to the homeserver may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// How long a response may go without sending anything (its headers, or the next bytes
/// of its body) before the download fails, unless told otherwise
/// ([`HomeserverClient::with_read_timeout`]).
pub const DEFAULT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteContent {
    /// A media's content.
    Media {
        /// The media.
        key: MediaKey,
        /// Whether it is quarantined (then the admin bypass is asked for).
        quarantined: bool,
    },
    /// One thumbnail of a media.
    Thumbnail {
        /// The media.
        key: MediaKey,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Method.
        method: ThumbnailMethod,
        /// Whether the media is quarantined.
        quarantined: bool,
    },
}

/// Why a download failed: an item failure, not the end of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadFailure {
    /// The homeserver has no such media (404).
    NotFound(String),
    /// Any other failure (status, network), with details.
    Failed(String),
}

/// A client for one homeserver and one access token.
#[derive(Debug, Clone)]
pub struct HomeserverClient {
    client: reqwest::Client,
    base: Url,
    token: String,
    read_timeout: std::time::Duration,
}

impl HomeserverClient {
    /// A client for the homeserver at `base_url` (`https://matrix.example.org`), with the
    /// [`DEFAULT_READ_TIMEOUT`].
    pub fn new(base_url: &str, access_token: &str) -> Result<Self, SynapseError> {
        Self::with_read_timeout(base_url, access_token, DEFAULT_READ_TIMEOUT)
    }

    /// A client whose downloads fail (as item failures naming the timeout) when a
    /// response sends nothing for `read_timeout`: no headers, or no next bytes of its body.
    pub fn with_read_timeout(
        base_url: &str,
        access_token: &str,
        read_timeout: std::time::Duration,
    ) -> Result<Self, SynapseError> {
        if read_timeout.is_zero() {
            return Err(SynapseError::Config(
                "--http-timeout is 0: give the seconds a download may stall, e.g. 60".into(),
            ));
        }
        let base = Url::parse(base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                SynapseError::Config(format!(
                    "--homeserver-url {base_url:?} is not an http(s) URL: give the homeserver's \
                     client API base, e.g. https://matrix.example.org"
                ))
            })?;
        if access_token.trim().is_empty() {
            return Err(SynapseError::Config(
                "--access-token is empty: give an access token of an admin of this homeserver"
                    .into(),
            ));
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("import_synapse/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(read_timeout)
            .build()
            .map_err(|e| SynapseError::Config(format!("cannot set up HTTP: {e}")))?;
        Ok(Self {
            client,
            base,
            token: access_token.to_owned(),
            read_timeout,
        })
    }

    /// Checks that the homeserver answers and accepts the token; returns the token's user.
    pub async fn whoami(&self) -> Result<String, SynapseError> {
        let url = self.url(&["_matrix", "client", "v3", "account", "whoami"]);
        let response = self
            .client
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| {
                SynapseError::Config(format!("cannot reach the homeserver at {}: {e}", self.base))
            })?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(SynapseError::Config(format!(
                    "the homeserver at {} rejected the access token: give a valid token of an \
                     admin (Element: Settings → Help & About → Access Token)",
                    self.base
                )));
            }
            status => {
                return Err(SynapseError::Config(format!(
                    "the homeserver at {} answered {status} to whoami: is this the client API \
                     base URL?",
                    self.base
                )));
            }
        }
        let body = response
            .text()
            .await
            .map_err(|e| SynapseError::Config(format!("reading whoami failed: {e}")))?;
        let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        Ok(value["user_id"].as_str().unwrap_or("").to_owned())
    }

    /// The homeserver's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// The URL a content is downloaded from.
    pub fn url_of(&self, content: &RemoteContent) -> Url {
        let (key, quarantined) = match content {
            RemoteContent::Media { key, quarantined } => (key, *quarantined),
            RemoteContent::Thumbnail {
                key, quarantined, ..
            } => (key, *quarantined),
        };
        let kind = match content {
            RemoteContent::Media { .. } => "download",
            RemoteContent::Thumbnail { .. } => "thumbnail",
        };
        let mut url = self.url(&[
            "_matrix",
            "client",
            "v1",
            "media",
            kind,
            key.origin.as_str(),
            key.media_id.as_str(),
        ]);
        {
            let mut query = url.query_pairs_mut();
            if let RemoteContent::Thumbnail {
                width,
                height,
                method,
                ..
            } = content
            {
                query
                    .append_pair("width", &width.to_string())
                    .append_pair("height", &height.to_string())
                    .append_pair("method", method.as_str());
            }
            if quarantined {
                query.append_pair("admin_unsafely_bypass_quarantine", "true");
            }
            // Never ask other servers: the import copies what this homeserver holds.
            query.append_pair("allow_remote", "false");
        }
        url
    }

    /// Starts downloading a content; the bytes stream from the returned reader.
    pub async fn download(
        &self,
        content: &RemoteContent,
    ) -> Result<impl AsyncRead + Send + Unpin + use<>, DownloadFailure> {
        let url = self.url_of(content);
        let shown = url.to_string();
        let response = self
            .client
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| DownloadFailure::Failed(self.describe(&shown, &e)))?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(DownloadFailure::NotFound(format!(
                    "not on disk, and {shown} answered 404"
                )));
            }
            status => {
                return Err(DownloadFailure::Failed(format!(
                    "{shown} answered {status}"
                )));
            }
        }
        let client = self.clone();
        let bytes = response.bytes_stream().map_err(move |e| {
            let kind = if e.is_timeout() {
                std::io::ErrorKind::TimedOut
            } else {
                std::io::ErrorKind::Other
            };
            std::io::Error::new(kind, client.describe(&shown, &e))
        });
        Ok(tokio_util::io::StreamReader::new(bytes))
    }

    /// A download error for people: a stalled response names the timeout and the flag
    /// that sets it; any other error keeps its causes.
    fn describe(&self, shown: &str, error: &reqwest::Error) -> String {
        if error.is_timeout() {
            return format!(
                "{shown} sent nothing for {} s (the read timeout, --http-timeout): the \
                 download was given up; run the import again, or raise --http-timeout",
                self.read_timeout.as_secs_f64()
            );
        }
        let mut text = format!("{shown}: {error}");
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(origin: &str, id: &str) -> MediaKey {
        MediaKey::new(origin.parse().unwrap(), id.parse().unwrap())
    }

    #[test]
    fn urls_follow_the_authenticated_media_api() {
        let client = HomeserverClient::new("https://hs.example/", "t").unwrap();
        let media = RemoteContent::Media {
            key: key("example.org", "abc"),
            quarantined: false,
        };
        assert_eq!(
            client.url_of(&media).as_str(),
            "https://hs.example/_matrix/client/v1/media/download/example.org/abc?allow_remote=false"
        );
        let thumbnail = RemoteContent::Thumbnail {
            key: key("[::1]:8448", "x_y-z"),
            width: 32,
            height: 24,
            method: ThumbnailMethod::Crop,
            quarantined: true,
        };
        assert_eq!(
            client.url_of(&thumbnail).as_str(),
            "https://hs.example/_matrix/client/v1/media/thumbnail/[::1]:8448/x_y-z\
             ?width=32&height=24&method=crop&admin_unsafely_bypass_quarantine=true\
             &allow_remote=false"
        );
        let prefixed = HomeserverClient::new("http://127.0.0.1:8008/base", "t").unwrap();
        assert!(
            prefixed
                .url_of(&media)
                .as_str()
                .starts_with("http://127.0.0.1:8008/base/_matrix/client/v1/media/download/")
        );
    }

    #[test]
    fn bad_urls_and_tokens_are_configuration_errors() {
        for url in ["matrix.example.org", "ftp://x", "http://", ""] {
            assert!(HomeserverClient::new(url, "t").is_err(), "{url}");
        }
        assert!(HomeserverClient::new("https://x", " ").is_err());
    }
}
