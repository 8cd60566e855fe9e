//! Room history as synupkeep purges it: for every room, the last event received at or
//! before a cutoff ([`plan_history`]), for Synapse's admin API to purge the room's
//! history up to that event ([`AdminApi::purge_history`](crate::admin_api::AdminApi::purge_history)).
//!
//! Synapse does the purging itself (`POST /_synapse/admin/v1/purge_history/<room>` with
//! `delete_local_events`, then `GET …/purge_history_status/<purge_id>` until it is no
//! longer `active`): its event graph has too many tables to delete from safely by hand.

use std::fmt;
use std::str::FromStr;

use media_core::moment::Moment;
use media_db::DatabaseLocation;
use media_db::connect::{Pool, on_pool};
use media_db::error::{DbError, QueryContext};
use serde::{Serialize, Serializer};

use media_core::ids::RoomId;

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
    let pool = crate::rows::open_read_only(location).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_start_with_a_dollar() {
        assert!("$abc:example.org".parse::<EventId>().is_ok());
        assert!("$Ab_c-d".parse::<EventId>().is_ok());
        assert!("abc".parse::<EventId>().is_err());
        assert!("$".parse::<EventId>().is_err());
        assert!("$a b".parse::<EventId>().is_err());
    }
}
