//! What a run works on: Dendrite's media database and media folder, with what decides
//! which media are local and which are avatars. The purge and the sanity checks are its
//! methods, each in its own module; this one depends on neither.

use media_core::Progress;
use media_core::ids::ServerName;

use crate::avatars::AvatarSet;
use crate::db::DendriteDb;
use crate::layout::MediaFolder;

/// One Dendrite media store, as a run sees it.
#[derive(Debug, Clone, Copy)]
pub struct DendriteStore<'a> {
    /// The media API database.
    pub media_db: &'a DendriteDb,
    /// The media folder.
    pub folder: &'a MediaFolder,
    /// `global.server_name`: media of this origin are local.
    pub server_name: &'a ServerName,
    /// The media in use as avatars.
    pub avatars: &'a AvatarSet,
    /// Live counters: media rows walked, bytes freed.
    pub progress: &'a Progress,
}
