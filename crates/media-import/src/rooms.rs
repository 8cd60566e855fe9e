//! Recording which rooms hold which media, read from Synapse's events once the media are
//! imported (`--include rooms`): what `media_admin purge room` and `quarantine room`
//! select.
//!
//! The events with URLs are read page by page along Synapse's `event_contains_url_index`
//! ([`SynapseDb::room_media`]) and their references recorded in batches, one transaction
//! each, so memory stays flat whatever the number of events. Recording a reference twice
//! changes nothing: a run again records only what is new. A reference is recorded
//! whether or not the repository holds its media (the media of another server may not
//! be cached); a shard records the references of its own media only, so that the
//! shards together record what one run would.

use std::fmt;

use futures::TryStreamExt;
use media_core::ids::MxcUri;
use media_core::records::MediaKey;
use media_db::{DbError, RoomIndex, RoomMedia};
use media_synapse::{RowFault, SynapseDb};
use serde::Serialize;

use crate::context::Context;
use crate::error::ImportError;
use crate::report::ImportReport;

/// References recorded per transaction.
const LINKS_PER_BATCH: usize = 1_000;

/// Where the rooms were read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomsSource {
    /// Synapse's `events` and `event_json`.
    #[default]
    Events,
    /// Nowhere: the database has no `events` table (a copy of the media tables alone),
    /// so no room was recorded.
    NoEventsTable,
    /// Nowhere: the target keeps no rooms (a matrix-media-repo asks the homeserver).
    NotKept,
}

/// What recording the rooms found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RoomsTally {
    /// Where the rooms were read from.
    pub source: RoomsSource,
    /// Events with URLs read.
    pub events: u64,
    /// Media references of those events (of this shard's media).
    pub references: u64,
    /// (room, media) links recorded by this run; the others were recorded already, or
    /// came several times.
    pub links_recorded: u64,
    /// URLs that are not valid MXC URIs (they name no media; left out, as Synapse does).
    pub invalid_urls: u64,
    /// Events that could not be read (listed in the failures); their media are not
    /// recorded in a room.
    pub unreadable_events: u64,
}

impl fmt::Display for RoomsTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            RoomsSource::NoEventsTable => {
                return write!(
                    f,
                    "rooms: none recorded: Synapse's database has no events table (give \
                     the whole database to record which rooms hold which media)"
                );
            }
            RoomsSource::NotKept => {
                return write!(
                    f,
                    "rooms: none recorded: the target keeps no rooms (matrix-media-repo \
                     asks the homeserver which media a room holds)"
                );
            }
            RoomsSource::Events => {}
        }
        write!(
            f,
            "rooms: {} events with media read, {} references, {} new room-media links \
             recorded, {} URLs that are not MXCs left out, {} events unreadable",
            self.events,
            self.references,
            self.links_recorded,
            self.invalid_urls,
            self.unreadable_events
        )
    }
}

/// Records the room of every media reference in Synapse's events (see the module
/// documentation) into `report.rooms`.
pub(crate) async fn record_rooms(
    synapse: &SynapseDb,
    context: &Context,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    let shard = context.options.shard;
    let mut tally = RoomsTally::default();
    let Some(index) = context.sink.room_index() else {
        tally.source = RoomsSource::NotKept;
        report.rooms = Some(tally);
        return Ok(());
    };
    if !synapse.has_room_events().await? {
        tally.source = RoomsSource::NoEventsTable;
        report.rooms = Some(tally);
        return Ok(());
    }
    let mut batch: Vec<RoomMedia> = Vec::with_capacity(LINKS_PER_BATCH);
    let mut pages = synapse.room_media();
    while let Some(page) = pages.try_next().await? {
        for event in page {
            tally.events += 1;
            let event = match event {
                Ok(event) => event,
                // One shard (the one its event ID falls to) counts and lists it.
                Err(DbError::InvalidRow { key, .. }) if !shard.takes_label(&key) => continue,
                Err(DbError::InvalidRow { table, key, reason }) => {
                    tally.unreadable_events += 1;
                    report.failures.push(
                        format!("event {key} in {table}"),
                        RowFault::BadRow.into(),
                        reason,
                    );
                    continue;
                }
                Err(other) => return Err(other.into()),
            };
            for url in event.urls {
                let Ok(mxc) = url.parse::<MxcUri>() else {
                    tally.invalid_urls += 1;
                    continue;
                };
                let media = MediaKey::from(mxc);
                if shard.takes(&media) {
                    tally.references += 1;
                    batch.push(RoomMedia {
                        room: event.room.clone(),
                        media,
                    });
                }
            }
        }
        if batch.len() >= LINKS_PER_BATCH {
            tally.links_recorded += flush(index, &mut batch).await?;
        }
    }
    tally.links_recorded += flush(index, &mut batch).await?;
    report.rooms = Some(tally);
    Ok(())
}

/// Records `batch` (once each) and empties it; how many links were new.
async fn flush(index: &dyn RoomIndex, batch: &mut Vec<RoomMedia>) -> Result<u64, ImportError> {
    batch.sort();
    batch.dedup();
    let added = index.record_room_media(batch).await?;
    batch.clear();
    Ok(added)
}
