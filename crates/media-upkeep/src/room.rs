//! A room's media as Synapse's admin API finds them ("list media in a room", "quarantine
//! media in a room"): the `content.url` and `content.info.thumbnail_url` MXCs of the
//! room's events with `contains_url`, outliers left out, newest first.

use std::fmt;
use std::str::FromStr;

use media_core::ids::MxcUri;
use media_db::connect::{Pool, on_pool};
use media_db::error::{DbError, QueryContext};

/// Events read per page.
const PAGE: i64 = 100;

/// A Matrix room ID (`!opaque:server`, or the opaque `!…` of room version 12).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomId(String);

impl FromStr for RoomId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let valid = text.len() > 1
            && text.len() <= 255
            && text.starts_with('!')
            && text.chars().all(|c| c.is_ascii_graphic());
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} is not a room ID: expected !opaque:server.name (at most 255 \
                 printable ASCII characters)"
            ))
        }
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The MXCs of a page of a room's events with URLs, newest first, before the stream
/// position `before` (`i64::MAX` for the first page); where the next page starts, if
/// any. URLs that are not valid MXCs are left out (they name no media row).
pub async fn media_page(
    pool: &Pool,
    room: &RoomId,
    before: i64,
) -> Result<(Vec<MxcUri>, Option<i64>), DbError> {
    let rows: Vec<(i64, String)> = on_pool!(pool, |p| {
        sqlx::query_as(
            "SELECT e.stream_ordering, j.json FROM events AS e \
             JOIN event_json AS j ON j.event_id = e.event_id AND j.room_id = e.room_id \
             WHERE e.room_id = $1 AND e.stream_ordering < $2 \
             AND e.contains_url = TRUE AND e.outlier = FALSE \
             ORDER BY e.stream_ordering DESC LIMIT $3",
        )
        .bind(room.to_string())
        .bind(before)
        .bind(PAGE)
        .fetch_all(p)
        .await
        .during("read a room's events")?
    });
    let next = (rows.len() as i64 == PAGE)
        .then(|| rows.last().map(|(s, _)| *s))
        .flatten();
    let mut mxcs = Vec::new();
    for (_, json) in rows {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&json) else {
            continue;
        };
        let content = &event["content"];
        for url in [&content["url"], &content["info"]["thumbnail_url"]] {
            if let Some(mxc) = url.as_str().and_then(|u| u.parse::<MxcUri>().ok()) {
                mxcs.push(mxc);
            }
        }
    }
    Ok((mxcs, next))
}
