//! What the room forms of `purge` and `quarantine` say when the repository knows nothing
//! of a room: its media are recorded only by `import_synapse --include rooms`.

use media_core::ids::RoomId;
use media_db::{Repository, RoomIndex};

use crate::error::AdminError;

/// A plain notice when no media reference is recorded for `room` (the run then changes
/// nothing and succeeds), none when some are.
pub(crate) async fn unrecorded_room_notice(
    repo: &Repository,
    room: &RoomId,
) -> Result<Option<String>, AdminError> {
    if repo.count_room_references(room).await? > 0 {
        return Ok(None);
    }
    Ok(Some(format!(
        "the repository has no media recorded for room {room}: rooms are recorded by \
         import_synapse --include rooms (run it again with --include rooms to record \
         them for media imported before); nothing to do"
    )))
}
