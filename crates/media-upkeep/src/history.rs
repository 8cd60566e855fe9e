//! Room history as synupkeep purges it: for every room, the last event received at or
//! before a cutoff ([`plan_history`]), and Synapse's admin API that purges a room's
//! history up to that event and reports when it is done ([`AdminApi`]).
//!
//! Synapse does the purging itself (`POST /_synapse/admin/v1/purge_history/<room>` with
//! `delete_local_events`, then `GET …/purge_history_status/<purge_id>` until it is no
//! longer `active`): its event graph has too many tables to delete from safely by hand.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use media_core::moment::Moment;
use media_core::run::{Classify, ErrorClass};
use media_db::DatabaseLocation;
use media_db::connect::{self, OpenOptions, Pool, on_pool};
use media_db::error::{DbError, QueryContext};
use reqwest::{StatusCode, Url};
use serde::{Serialize, Serializer};

use media_core::ids::RoomId;

/// How long connecting to Synapse may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one admin API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The first wait before asking how a purge is going; it doubles up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two status requests (synupkeep's one second).
const POLL_MAX: Duration = Duration::from_secs(1);

/// A Matrix event ID (`$opaque`, or `$opaque:server` in old room versions).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl FromStr for EventId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let valid = text.len() > 1
            && text.len() <= 255
            && text.starts_with('$')
            && text.chars().all(|c| c.is_ascii_graphic());
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} is not an event ID: expected $opaque (at most 255 printable ASCII \
                 characters)"
            ))
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serializes an identifier as its text.
fn as_text<T: fmt::Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// One room's history purge: everything up to (not including) `up_to` goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurgePoint {
    /// The room.
    #[serde(rename = "room_id", serialize_with = "as_text")]
    pub room: RoomId,
    /// Its last event received at or before the cutoff (`purge_up_to_event_id`).
    #[serde(rename = "event_id", serialize_with = "as_text")]
    pub up_to: EventId,
}

/// What [`plan_history`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryPlan {
    /// Rooms in Synapse's `rooms` table.
    pub rooms: u64,
    /// The rooms with an event received at or before the cutoff, with that event.
    pub points: Vec<PurgePoint>,
    /// Rows whose room or event ID is not valid (`(as recorded, why)`): left alone.
    pub invalid: Vec<(String, String)>,
}

/// For every room of Synapse's database, its last event received at or before `cutoff`
/// (latest `received_ts`, then latest stream position); rooms without one are left out,
/// as synupkeep leaves them. Read-only.
pub async fn plan_history(
    location: &DatabaseLocation,
    cutoff: Moment,
) -> Result<HistoryPlan, DbError> {
    let pool = connect::open_pool(
        location,
        OpenOptions {
            create: false,
            read_only: true,
            max_connections: 1,
        },
    )
    .await?;
    let plan = plan_on(&pool, cutoff).await;
    on_pool!(&pool, |p| p.close().await);
    plan
}

async fn plan_on(pool: &Pool, cutoff: Moment) -> Result<HistoryPlan, DbError> {
    let rooms: Vec<String> = on_pool!(pool, |p| {
        sqlx::query_scalar("SELECT room_id FROM rooms ORDER BY room_id")
            .fetch_all(p)
            .await
            .during("list the rooms")?
    });
    let mut plan = HistoryPlan {
        rooms: rooms.len() as u64,
        ..HistoryPlan::default()
    };
    for room_id in rooms {
        let room = match room_id.parse::<RoomId>() {
            Ok(room) => room,
            Err(why) => {
                plan.invalid.push((room_id, why.to_string()));
                continue;
            }
        };
        let last: Option<String> = on_pool!(pool, |p| {
            sqlx::query_scalar(
                "SELECT event_id FROM events WHERE room_id = $1 AND received_ts <= $2 \
                 ORDER BY received_ts DESC, stream_ordering DESC LIMIT 1",
            )
            .bind(&room_id)
            .bind(cutoff.unix_ms())
            .fetch_optional(p)
            .await
            .during("find a room's last event before the cutoff")?
        });
        match last.map(|event_id| event_id.parse::<EventId>().map_err(|why| (event_id, why))) {
            None => {}
            Some(Ok(up_to)) => plan.points.push(PurgePoint { room, up_to }),
            Some(Err((event_id, why))) => plan.invalid.push((event_id, why)),
        }
    }
    Ok(plan)
}

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

/// Synapse's admin API at one base URL, with one admin's access token.
#[derive(Debug, Clone)]
pub struct AdminApi {
    client: reqwest::Client,
    base: Url,
    token: String,
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
    fn event_ids_start_with_a_dollar() {
        assert!("$abc:example.org".parse::<EventId>().is_ok());
        assert!("$Ab_c-d".parse::<EventId>().is_ok());
        assert!("abc".parse::<EventId>().is_err());
        assert!("$".parse::<EventId>().is_err());
        assert!("$a b".parse::<EventId>().is_err());
    }
}
