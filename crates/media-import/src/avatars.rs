//! Pinning the media Synapse uses as avatars, once they are imported.

use futures::TryStreamExt;
use media_synapse::SynapseDb;

use crate::context::Context;
use crate::error::ImportError;
use crate::report::ImportReport;

/// Pins every imported media that Synapse uses as a profile, room or member avatar. An
/// avatar row that cannot be read, or whose URL is not a valid MXC URI, is a listed
/// failure (counted in `avatars_failed`); the others are still pinned.
///
/// A shard pins only the avatars whose media are its own (and lists only the bad rows
/// that fall to it): once it has imported its share, every one of those media that can
/// be imported is recorded, whatever the other shards are doing, so that the shards
/// together pin exactly what one run would, in whatever order they finish.
pub(crate) async fn pin_avatars(
    synapse: &SynapseDb,
    context: &Context,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    const PINS_PER_BATCH: usize = 500;
    let shard = context.options.shard;
    let mut pages = synapse.avatars();
    let mut batch = Vec::with_capacity(PINS_PER_BATCH);
    loop {
        let page = pages.try_next().await?;
        for row in page.iter().flatten() {
            match media_synapse::media::avatar_media(row) {
                Ok(key) if shard.takes(&key) => batch.push(key),
                Ok(_) => {}
                Err(failure) if !shard.takes_label(&failure.item) => {}
                Err(failure) => {
                    report.avatars_failed += 1;
                    report.list(failure);
                }
            }
        }
        if batch.len() >= PINS_PER_BATCH || (page.is_none() && !batch.is_empty()) {
            batch.sort();
            batch.dedup();
            let pins = context.sink.pin_media(&batch).await?;
            report.avatars_pinned += pins.pinned;
            report.avatars_already_pinned += pins.already_pinned;
            report.avatars_not_in_repository += pins.missing;
            batch.clear();
        }
        if page.is_none() {
            return Ok(());
        }
    }
}
