//! A first look at a Synapse media store before anything is created: a wrong
//! `--media-store` (an empty folder, a parent folder, another server's store) would
//! otherwise create the repository and list one `file_missing` per media — millions on
//! a real server.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use media_core::ids::{MediaId, ServerName};

use crate::db::SynapseDb;
use crate::error::SynapseError;
use crate::include::Include;
use crate::{files, paths};

/// Media rows of each kind (local, remote) whose files are looked for.
pub const SAMPLE: usize = 20;

/// Checks that `media_store` looks like the media store of `synapse`: the folders its
/// media rows need exist (`local_content/` or `url_cache/` for local media,
/// `remote_content/` for remote ones), and not every one of the first [`SAMPLE`] local
/// and remote media rows' files is missing. Fails with [`SynapseError::Config`] saying
/// what is missing; reads nothing but those files' existence.
pub async fn check_media_store(
    synapse: &SynapseDb,
    media_store: &Path,
    include: Include,
) -> Result<(), SynapseError> {
    let (local, remote) = synapse.media_counts().await?;
    let wants_local = (include.local || include.url_previews) && local > 0;
    let wants_remote = include.remote && remote > 0;
    let has = |folder: &str| media_store.join(folder).is_dir();
    let mut missing = Vec::new();
    if wants_local && !has("local_content") && !has("url_cache") {
        missing.push(format!("local_content/ (for {local} local media)"));
    }
    if wants_remote && !has("remote_content") {
        missing.push(format!("remote_content/ (for {remote} remote media)"));
    }
    if !missing.is_empty() {
        return Err(SynapseError::Config(format!(
            "--media-store {} does not look like Synapse's media store: it has no {}. Give \
             the media_store_path of homeserver.yaml (the folder holding local_content/, \
             remote_content/, local_thumbnails/…){}",
            media_store.display(),
            missing.join(" and no "),
            if wants_local && wants_remote {
                ", or leave a kind out with --include"
            } else {
                ""
            }
        )));
    }

    let mut sampled: Vec<PathBuf> = Vec::new();
    if wants_local {
        let mut pages = synapse.local_media_rows();
        if let Some(page) = pages.next().await {
            sampled.extend(page?.into_iter().flatten().take(SAMPLE).filter_map(|row| {
                let id: MediaId = row.media_id.parse().ok()?;
                paths::local_content(&id, row.url_cache.is_some())
            }));
        }
    }
    if wants_remote {
        let mut pages = synapse.remote_media_rows();
        if let Some(page) = pages.next().await {
            sampled.extend(page?.into_iter().flatten().take(SAMPLE).filter_map(|row| {
                let origin: ServerName = row.media_origin.parse().ok()?;
                let id: MediaId = row.filesystem_id?.parse().ok()?;
                paths::remote_content(&origin, &id)
            }));
        }
    }
    if sampled.is_empty() {
        return Ok(());
    }
    let root = media_store.to_owned();
    let count = sampled.len();
    let found = tokio::task::spawn_blocking(move || {
        sampled
            .iter()
            .filter(|relative| files::open_in_media_store(&root, relative).is_ok())
            .count()
    })
    .await
    .map_err(|e| SynapseError::Task(e.to_string()))?;
    if found == 0 {
        return Err(SynapseError::Config(format!(
            "--media-store {} looks wrong: none of the files of the first {count} media \
             rows is in it. Give the media_store_path of homeserver.yaml of the server \
             whose database this is; nothing was created",
            media_store.display()
        )));
    }
    Ok(())
}
