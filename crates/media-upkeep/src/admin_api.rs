//! Synapse's admin API, as the upkeep tools call it ([`AdminApi`]): one client with an
//! admin's access token, checked before anything changes ([`AdminApi::check_admin`]),
//! whose errors say whether the operator, the run or one item is at fault ([`ApiError`]).
//!
//! Endpoints used: room history (`purge_history` and its status, for synupkeep), the
//! remote cache (`purge_media_cache`), local media by date and size (`media/delete`),
//! one media (`DELETE media/<server>/<id>`), quarantine and protection of one media, a
//! room's or a user's media (seed 002).

use std::fmt;
use std::time::Duration;

use media_core::ids::{MediaId, MxcUri, UserId};
use media_core::moment::Moment;
use media_core::run::{Classify, ErrorClass};
use reqwest::{Method, StatusCode, Url};

use crate::history::PurgePoint;
use crate::plan::AvatarPolicy;
use media_core::ids::RoomId;

/// Who applies a plan: this toolkit, on Synapse's rows and files, or Synapse itself,
/// through its admin API, with this toolkit verifying and cleaning up afterwards.
#[derive(Debug, Clone, Default)]
pub enum Through {
    /// Rows and files directly.
    #[default]
    Direct,
    /// Synapse's admin API.
    AdminApi(AdminApi),
}

/// How long connecting to Synapse may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one admin API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The first wait before asking how a purge is going; it doubles up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two status requests (synupkeep's one second).
const POLL_MAX: Duration = Duration::from_secs(1);

/// Why an admin API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API URL or the token cannot be used.
    #[error("{0}")]
    Config(String),
    /// Synapse refused the token (401/403): every request would fail.
    #[error(
        "Synapse at {base} refused the admin token (HTTP {status}): give the access token \
         of a server admin"
    )]
    TokenRefused {
        /// The API base URL.
        base: Url,
        /// The HTTP status.
        status: StatusCode,
    },
    /// Synapse did not answer at all.
    #[error("cannot reach Synapse's admin API at {base}: {detail}")]
    Unreachable {
        /// The API base URL.
        base: Url,
        /// What went wrong.
        detail: String,
    },
    /// Synapse refused or failed this one request (a room it will not purge, say).
    #[error("{what}: HTTP {status}: {body}")]
    Refused {
        /// The request.
        what: String,
        /// The HTTP status.
        status: StatusCode,
        /// Synapse's answer.
        body: String,
    },
    /// Synapse purged, and the purge failed.
    #[error("Synapse's purge {purge_id} failed: {error}")]
    PurgeFailed {
        /// The purge's ID.
        purge_id: String,
        /// What Synapse says went wrong.
        error: String,
    },
    /// An answer that is not what Synapse's API documents.
    #[error("{what}: unexpected answer {body}")]
    Unexpected {
        /// The request.
        what: String,
        /// The answer.
        body: String,
    },
}

impl Classify for ApiError {
    /// A wrong URL or token is the operator's to fix; an unreachable Synapse stops the
    /// run (a new run carries on); anything about one room is that room's failure.
    fn class(&self) -> ErrorClass {
        match self {
            Self::Config(_) | Self::TokenRefused { .. } => ErrorClass::Usage,
            Self::Unreachable { .. } => ErrorClass::Fatal,
            Self::Refused { .. } | Self::PurgeFailed { .. } | Self::Unexpected { .. } => {
                ErrorClass::Item
            }
        }
    }
}

/// Synapse's admin API at one base URL, with one admin's access token (never shown,
/// not even by `Debug`).
#[derive(Clone)]
pub struct AdminApi {
    client: reqwest::Client,
    base: Url,
    token: String,
}

impl fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminApi")
            .field("base", &self.base.as_str())
            .field("token", &"<hidden>")
            .finish()
    }
}

impl AdminApi {
    /// The admin API of the Synapse at `base_url` (`http://localhost:8008/`; endpoint
    /// paths are joined to it, so a path prefix is kept), used with `token`.
    pub fn new(base_url: &str, token: &str) -> Result<Self, ApiError> {
        let with_slash = if base_url.ends_with('/') {
            base_url.to_owned()
        } else {
            format!("{base_url}/")
        };
        let base = Url::parse(&with_slash)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                ApiError::Config(format!(
                    "{base_url:?} is not an http(s) URL: give Synapse's address, e.g. \
                     http://localhost:8008/"
                ))
            })?;
        if token.trim().is_empty() {
            return Err(ApiError::Config(
                "the admin token is empty: give the access token of a server admin".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("synupkeep/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ApiError::Config(format!("cannot set up HTTP: {e}")))?;
        Ok(Self {
            client,
            base,
            token: token.trim().to_owned(),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The URL of an admin endpoint: the base joined with `segments` (each encoded).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends a request; its status and body, or why it got none.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, String), ApiError> {
        let unreachable = |e: reqwest::Error| ApiError::Unreachable {
            base: self.base.clone(),
            detail: describe(&e),
        };
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let body = response.text().await.map_err(unreachable)?;
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(ApiError::TokenRefused {
                base: self.base.clone(),
                status,
            });
        }
        Ok((status, body))
    }

    /// Checks that Synapse answers and takes the token as a server admin's (a read-only
    /// admin request), before anything is changed.
    pub async fn check_admin(&self) -> Result<(), ApiError> {
        let url = self.url(&["_synapse", "admin", "v1", "background_updates", "enabled"]);
        match self.send(self.client.get(url)).await? {
            (StatusCode::OK, _) => Ok(()),
            (status, body) => Err(ApiError::Config(format!(
                "{} answered HTTP {status} to an admin API request ({body}): is it Synapse's \
                 address?",
                self.base
            ))),
        }
    }

    /// Starts purging `point`'s room up to its event, local events included; the purge's
    /// ID.
    pub async fn start_history_purge(&self, point: &PurgePoint) -> Result<String, ApiError> {
        let room = point.room.to_string();
        let url = self.url(&["_synapse", "admin", "v1", "purge_history", &room]);
        let body = serde_json::json!({
            "delete_local_events": true,
            "purge_up_to_event_id": point.up_to.to_string(),
        });
        let what = format!("purge_history of {room} up to {}", point.up_to);
        let (status, answer) = self
            .send(
                self.client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string()),
            )
            .await?;
        if status != StatusCode::OK {
            return Err(ApiError::Refused {
                what,
                status,
                body: answer,
            });
        }
        json_field(&answer, "purge_id").ok_or(ApiError::Unexpected { what, body: answer })
    }

    /// Waits until the purge `purge_id` is no longer active: `Ok` when it completed.
    pub async fn wait_for_purge(&self, purge_id: &str) -> Result<(), ApiError> {
        let url = self.url(&["_synapse", "admin", "v1", "purge_history_status", purge_id]);
        let what = format!("purge_history_status of {purge_id}");
        let mut wait = POLL_FIRST;
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(POLL_MAX);
            let (status, answer) = self.send(self.client.get(url.clone())).await?;
            if status != StatusCode::OK {
                return Err(ApiError::Refused {
                    what,
                    status,
                    body: answer,
                });
            }
            match json_field(&answer, "status").as_deref() {
                Some("active") => continue,
                Some("complete") => return Ok(()),
                Some("failed") => {
                    return Err(ApiError::PurgeFailed {
                        purge_id: purge_id.to_owned(),
                        error: json_field(&answer, "error").unwrap_or_else(|| answer.clone()),
                    });
                }
                _ => return Err(ApiError::Unexpected { what, body: answer }),
            }
        }
    }

    /// Purges `point`'s room up to its event and waits for Synapse to finish.
    pub async fn purge_history(&self, point: &PurgePoint) -> Result<(), ApiError> {
        let purge_id = self.start_history_purge(point).await?;
        self.wait_for_purge(&purge_id).await
    }

    /// An admin request with an empty JSON body and `query`; Synapse's JSON answer to
    /// HTTP 200, else why not (`what` names the request in errors).
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        what: String,
    ) -> Result<serde_json::Value, ApiError> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let request = self
            .client
            .request(method, url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("{}");
        let (status, body) = self.send(request).await?;
        if status != StatusCode::OK {
            return Err(ApiError::Refused { what, status, body });
        }
        serde_json::from_str(&body).map_err(|_| ApiError::Unexpected { what, body })
    }

    /// The count `field` of an answer.
    fn count(answer: &serde_json::Value, field: &str, what: String) -> Result<u64, ApiError> {
        answer
            .get(field)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| ApiError::Unexpected {
                what,
                body: answer.to_string(),
            })
    }

    /// The user the token belongs to (`GET /_matrix/client/v3/account/whoami`).
    pub async fn whoami(&self) -> Result<UserId, ApiError> {
        let what = "whoami".to_owned();
        let answer = self
            .call(
                Method::GET,
                &["_matrix", "client", "v3", "account", "whoami"],
                &[],
                what.clone(),
            )
            .await?;
        answer
            .get("user_id")
            .and_then(serde_json::Value::as_str)
            .and_then(|user| user.parse().ok())
            .ok_or_else(|| ApiError::Unexpected {
                what,
                body: answer.to_string(),
            })
    }

    /// Synapse's `purge_media_cache?before_ts=`: the cached remote media it deleted.
    pub async fn purge_media_cache(&self, before: Moment) -> Result<u64, ApiError> {
        let what = format!("purge_media_cache before {before}");
        let answer = self
            .call(
                Method::POST,
                &["_synapse", "admin", "v1", "purge_media_cache"],
                &[("before_ts", before.unix_ms().to_string())],
                what.clone(),
            )
            .await?;
        Self::count(&answer, "deleted", what)
    }

    /// Synapse's `media/delete?before_ts=&size_gt=&keep_profiles=`: the local media it
    /// deleted.
    pub async fn delete_local_media(
        &self,
        before: Moment,
        size_gt: u64,
        avatars: AvatarPolicy,
    ) -> Result<u64, ApiError> {
        let what = format!("media/delete before {before}");
        let keep_profiles = match avatars {
            AvatarPolicy::Keep => "true",
            AvatarPolicy::Delete => "false",
        };
        let answer = self
            .call(
                Method::POST,
                &["_synapse", "admin", "v1", "media", "delete"],
                &[
                    ("before_ts", before.unix_ms().to_string()),
                    ("size_gt", size_gt.to_string()),
                    ("keep_profiles", keep_profiles.to_owned()),
                ],
                what.clone(),
            )
            .await?;
        Self::count(&answer, "total", what)
    }

    /// Synapse's `DELETE media/<server>/<media_id>` (local media only): the media it
    /// deleted (0 or 1).
    pub async fn delete_media(&self, mxc: &MxcUri) -> Result<u64, ApiError> {
        let (server, id) = (mxc.server().to_string(), mxc.media_id().to_string());
        let what = format!("DELETE media {mxc}");
        let answer = self
            .call(
                Method::DELETE,
                &["_synapse", "admin", "v1", "media", &server, &id],
                &[],
                what.clone(),
            )
            .await?;
        Self::count(&answer, "total", what)
    }

    /// Synapse's `media/quarantine/<server>/<id>` (`Quarantined::Yes`) or
    /// `media/unquarantine/<server>/<id>`: one media and those sharing its hash.
    pub async fn quarantine_media(
        &self,
        mxc: &MxcUri,
        quarantined: Quarantined,
    ) -> Result<(), ApiError> {
        let verb = match quarantined {
            Quarantined::Yes => "quarantine",
            Quarantined::No => "unquarantine",
        };
        let (server, id) = (mxc.server().to_string(), mxc.media_id().to_string());
        self.call(
            Method::POST,
            &["_synapse", "admin", "v1", "media", verb, &server, &id],
            &[],
            format!("{verb} {mxc}"),
        )
        .await
        .map(drop)
    }

    /// Synapse's `media/protect/<id>` (`Protected::Yes`) or `media/unprotect/<id>`, of
    /// a local media.
    pub async fn protect_media(&self, id: &MediaId, protected: Protected) -> Result<(), ApiError> {
        let verb = match protected {
            Protected::Yes => "protect",
            Protected::No => "unprotect",
        };
        self.call(
            Method::POST,
            &["_synapse", "admin", "v1", "media", verb, id.as_str()],
            &[],
            format!("{verb} {id}"),
        )
        .await
        .map(drop)
    }

    /// Synapse's `room/<room_id>/media/quarantine`: how many media it quarantined.
    pub async fn quarantine_room(&self, room: &RoomId) -> Result<u64, ApiError> {
        let room = room.to_string();
        let what = format!("quarantine the media of {room}");
        let answer = self
            .call(
                Method::POST,
                &[
                    "_synapse",
                    "admin",
                    "v1",
                    "room",
                    &room,
                    "media",
                    "quarantine",
                ],
                &[],
                what.clone(),
            )
            .await?;
        Self::count(&answer, "num_quarantined", what)
    }

    /// Synapse's `user/<user_id>/media/quarantine`: how many media it quarantined.
    pub async fn quarantine_user(&self, user: &UserId) -> Result<u64, ApiError> {
        let what = format!("quarantine the media of {user}");
        let answer = self
            .call(
                Method::POST,
                &[
                    "_synapse",
                    "admin",
                    "v1",
                    "user",
                    user.as_str(),
                    "media",
                    "quarantine",
                ],
                &[],
                what.clone(),
            )
            .await?;
        Self::count(&answer, "num_quarantined", what)
    }
}

/// Whether a media is to be quarantined or released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quarantined {
    /// Quarantined.
    Yes,
    /// Released.
    No,
}

/// Whether a media is to be protected from quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protected {
    /// Protected.
    Yes,
    /// Not protected.
    No,
}

/// The text field `name` of a JSON object.
fn json_field(body: &str, name: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value.get(name)?.as_str().map(str::to_owned)
}

/// An HTTP error with its causes.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_joined_to_the_base_url_and_room_ids_encoded() {
        let api = AdminApi::new("http://localhost:8008", "t").unwrap();
        assert_eq!(
            api.url(&[
                "_synapse",
                "admin",
                "v1",
                "purge_history",
                "!a/b:example.org"
            ])
            .as_str(),
            "http://localhost:8008/_synapse/admin/v1/purge_history/!a%2Fb:example.org"
        );
        let prefixed = AdminApi::new("https://example.org/synapse/", "t").unwrap();
        assert_eq!(
            prefixed.url(&["_synapse", "admin"]).as_str(),
            "https://example.org/synapse/_synapse/admin"
        );
        assert!(matches!(
            AdminApi::new("localhost:8008", "t"),
            Err(ApiError::Config(_))
        ));
        assert!(matches!(
            AdminApi::new("http://localhost:8008/", " "),
            Err(ApiError::Config(_))
        ));
    }

    #[test]
    fn the_token_is_never_shown() {
        let api = AdminApi::new("http://localhost:8008", "syt_secret").unwrap();
        let shown = format!("{api:?} {:?}", Through::AdminApi(api.clone()));
        assert!(!shown.contains("syt_secret"), "{shown}");
        assert!(shown.contains("localhost:8008"), "{shown}");
    }
}
