//! Recording which rooms hold which media, read from Synapse's events while the media
//! are imported (`--include rooms`): what `media_admin purge room` and `quarantine room`
//! select.
//!
//! The events with URLs are read page by page along Synapse's `event_contains_url_index`
//! ([`SynapseDb::room_media`]) and their references recorded in batches, one transaction
//! each, so memory stays flat whatever the number of events. Recording a reference twice
//! changes nothing: a run again records only what is new. A reference is recorded
//! whether or not the repository holds its media (the media of another server may not
//! be cached); a shard records the references of its own media only, so that the
//! shards together record what one run would.

use futures::TryStreamExt;
use media_core::ids::MxcUri;
use media_core::records::MediaKey;
use media_db::{DbError, RoomIndex, RoomMedia};
use media_synapse::{RowFault, SynapseDb};

use crate::context::Context;
use crate::error::ImportError;
use crate::report::{ImportReport, RoomsSource, RoomsTally};

/// References recorded per transaction.
const LINKS_PER_BATCH: usize = 1_000;

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
    loop {
        // Another task's error stops the run: run() reports it.
        let page = tokio::select! {
            biased;
            () = context.abort.cancelled() => return Ok(()),
            page = pages.try_next() => page?,
        };
        let Some(page) = page else { break };
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
