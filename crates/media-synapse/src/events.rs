//! The media rooms hold, read from Synapse's events.
//!
//! Synapse flags an event `contains_url` when its content has a `url` string, and keeps a
//! partial index over the flagged events that are not outliers (`event_contains_url_index`:
//! room, topological and stream ordering). Both readers here walk that index, so their
//! cost follows the number of events with media, not the size of the `events` table:
//!
//! * [`room_media_page`]: one room's media, newest first, a page at a time (the reading of
//!   Synapse's admin API "list media in a room");
//! * [`SynapseDb::room_media`]: every room's media, room by room, for an import.
//!
//! In each event the MXCs of [`event_media_urls`] count: `content.url`,
//! `content.info.thumbnail_url`, and the encrypted-attachment forms `content.file.url` and
//! `content.info.thumbnail_file.url`. Events of encrypted rooms hide their content (their
//! type is `m.room.encrypted`), so their media are not found here; Synapse's admin API
//! cannot see them either.

use futures::stream::BoxStream;
use sqlx::Row;

use media_core::ids::{MxcUri, RoomId};
use media_db::DbError;
use media_db::connect::{Pool, on_pool};
use media_db::error::QueryContext;
use media_db::paging::{full_page, keyset_pages};

use crate::db::{DecodedPage, SynapseDb};

/// Events read per page by [`room_media_page`].
const ROOM_PAGE: i64 = 100;

/// Events read per page by [`SynapseDb::room_media`].
const ALL_ROOMS_PAGE: i64 = 1_000;

/// A page of every room's events with URLs, after a key of `event_contains_url_index`.
/// The condition is written as the index's own (`contains_url = true AND outlier =
/// false`, in lower case): SQLite uses a partial index only when the query's terms match
/// its definition, and otherwise walks `events_order_room`, which holds every event.
const ALL_ROOMS_SQL: &str = "SELECT e.event_id, e.room_id, \
     CAST(e.topological_ordering AS BIGINT) AS topological, \
     CAST(e.stream_ordering AS BIGINT) AS stream, j.json \
     FROM events AS e JOIN event_json AS j ON j.event_id = e.event_id \
     WHERE e.contains_url = true AND e.outlier = false \
     AND (e.room_id, e.topological_ordering, e.stream_ordering) > ($1, $2, $3) \
     ORDER BY e.room_id, e.topological_ordering, e.stream_ordering LIMIT $4";

/// The MXC URIs an event references, as written (not yet validated), from its JSON:
/// `content.url`, `content.info.thumbnail_url`, `content.file.url` and
/// `content.info.thumbnail_file.url`, those that are strings. An error says why the JSON
/// cannot be read.
pub fn event_media_urls(event_json: &str) -> Result<Vec<String>, serde_json::Error> {
    let event: serde_json::Value = serde_json::from_str(event_json)?;
    let content = &event["content"];
    let info = &content["info"];
    Ok([
        &content["url"],
        &info["thumbnail_url"],
        &content["file"]["url"],
        &info["thumbnail_file"]["url"],
    ]
    .into_iter()
    .filter_map(|url| url.as_str().map(str::to_owned))
    .collect())
}

/// The MXCs of a page of a room's events with URLs, newest first, before the stream
/// position `before` (`i64::MAX` for the first page); where the next page starts, if
/// any. URLs that are not valid MXCs, and events whose JSON does not parse, are left out
/// (they name no media), as Synapse's admin API does.
pub async fn room_media_page(
    pool: &Pool,
    room: &RoomId,
    before: i64,
) -> Result<(Vec<MxcUri>, Option<i64>), DbError> {
    let rows: Vec<(i64, String)> = on_pool!(pool, |p| {
        sqlx::query_as(
            "SELECT CAST(e.stream_ordering AS BIGINT), j.json FROM events AS e \
             JOIN event_json AS j ON j.event_id = e.event_id \
             WHERE e.room_id = $1 AND e.stream_ordering < $2 \
             AND e.contains_url = true AND e.outlier = false \
             ORDER BY e.stream_ordering DESC LIMIT $3",
        )
        .bind(room.as_str())
        .bind(before)
        .bind(ROOM_PAGE)
        .fetch_all(p)
        .await
        .during("read a room's events")?
    });
    let next = full_page(&rows, ROOM_PAGE).map(|(stream, _)| *stream);
    let mxcs = rows
        .iter()
        .filter_map(|(_, json)| event_media_urls(json).ok())
        .flatten()
        .filter_map(|url| url.parse::<MxcUri>().ok())
        .collect();
    Ok((mxcs, next))
}

/// The media references of one event with URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMedia {
    /// The room the event is in.
    pub room: RoomId,
    /// The MXC URIs it references, as written (not yet validated; see
    /// [`event_media_urls`]).
    pub urls: Vec<String>,
}

/// Where a page of [`SynapseDb::room_media`] starts: after this key of
/// `event_contains_url_index`.
type EventCursor = (String, i64, i64);

impl SynapseDb {
    /// Whether the database has the tables of rooms' events (`events`, `event_json`):
    /// every Synapse's has, a copy of its media tables alone has not.
    pub async fn has_room_events(&self) -> Result<bool, DbError> {
        for table in ["events", "event_json"] {
            if !self
                .pool()
                .has_table(table, "inspect the Synapse schema")
                .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The media references of every room's events with URLs (not outliers), a page at a
    /// time, in the order of Synapse's `event_contains_url_index` (room, then topological
    /// and stream ordering): one index range scan, whatever the size of `events`. Each
    /// event is decoded on its own: one whose room ID or JSON cannot be read is a
    /// [`DbError::InvalidRow`] naming it, and the events after it still come.
    pub fn room_media(&self) -> BoxStream<'static, Result<DecodedPage<EventMedia>, DbError>> {
        let pool = self.pool().clone();
        let start: EventCursor = (String::new(), i64::MIN, i64::MIN);
        keyset_pages(start, move |(room, topological, stream): EventCursor| {
            let pool = pool.clone();
            async move {
                let (events, last_key) = on_pool!(&pool, |p| {
                    let rows = sqlx::query(ALL_ROOMS_SQL)
                        .bind(&room)
                        .bind(topological)
                        .bind(stream)
                        .bind(ALL_ROOMS_PAGE)
                        .fetch_all(p)
                        .await
                        .during("read the events with media of every room")?;
                    let last_key = rows.last().map(|row| -> Result<EventCursor, sqlx::Error> {
                        Ok((
                            row.try_get("room_id")?,
                            row.try_get("topological")?,
                            row.try_get("stream")?,
                        ))
                    });
                    let events: DecodedPage<EventMedia> = rows
                        .iter()
                        .map(|row| {
                            let event_id = row
                                .try_get::<String, _>("event_id")
                                .unwrap_or_else(|e| format!("event_id unreadable: {e}"));
                            let bad = |reason: String| DbError::InvalidRow {
                                table: "events",
                                key: event_id.clone(),
                                reason: format!(
                                    "{reason}: its media are not recorded in a room; fix or \
                                     redact this event in Synapse's database"
                                ),
                            };
                            let room = row
                                .try_get::<String, _>("room_id")
                                .map_err(|e| bad(e.to_string()))?
                                .parse::<RoomId>()
                                .map_err(|e| bad(e.to_string()))?;
                            let json = row
                                .try_get::<String, _>("json")
                                .map_err(|e| bad(e.to_string()))?;
                            let urls = event_media_urls(&json).map_err(|e| {
                                bad(format!("the event's JSON does not parse ({e})"))
                            })?;
                            Ok(EventMedia { room, urls })
                        })
                        .collect();
                    (events, last_key)
                });
                let next = match (full_page(&events, ALL_ROOMS_PAGE), last_key) {
                    (Some(_), Some(key)) => Some(key.map_err(|e| DbError::InvalidRow {
                        table: "events",
                        key: "the last row of a page".into(),
                        reason: format!(
                            "its key cannot be read ({e}), so the events after it cannot be \
                             found: fix this row in Synapse's database"
                        ),
                    })?),
                    _ => None,
                };
                Ok((events, next))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_media_field_of_an_event_is_read() {
        let image = r#"{"type":"m.room.message","content":{"msgtype":"m.image",
            "url":"mxc://a.example/main","info":{"thumbnail_url":"mxc://a.example/thumb"}}}"#;
        assert_eq!(
            event_media_urls(image).unwrap(),
            ["mxc://a.example/main", "mxc://a.example/thumb"]
        );
        let encrypted = r#"{"content":{"file":{"url":"mxc://a.example/enc","key":{}},
            "info":{"thumbnail_file":{"url":"mxc://a.example/encthumb"}}}}"#;
        assert_eq!(
            event_media_urls(encrypted).unwrap(),
            ["mxc://a.example/enc", "mxc://a.example/encthumb"]
        );
        assert!(
            event_media_urls(r#"{"content":{"url":5,"info":null}}"#)
                .unwrap()
                .is_empty()
        );
        assert!(event_media_urls("not json").is_err());
    }

    /// On a real Synapse's schema (the fixture's), every room's media are read along
    /// the partial index of the events with URLs, not an index of every event.
    #[tokio::test]
    async fn every_rooms_media_are_read_along_the_index_of_events_with_urls() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/synapse/sqlite/homeserver.db"
        );
        let synapse = crate::open_synapse(path).await.unwrap();
        let Pool::Sqlite(pool) = synapse.pool() else {
            panic!("the fixture is a SQLite database");
        };
        let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {ALL_ROOMS_SQL}"
        )))
        .bind("")
        .bind(0_i64)
        .bind(0_i64)
        .bind(ALL_ROOMS_PAGE)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>("detail"))
        .collect();
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX event_contains_url_index")),
            "{plan:?}"
        );
        synapse.close().await;
    }
}
