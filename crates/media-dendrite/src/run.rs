//! One `cleanmedia` run, wired from a config: open the databases, read the avatars,
//! check orphan thumbnails, walk the media rows once (checking their files and purging),
//! then check the media folder for what no row uses.

use std::sync::atomic::Ordering;

use media_core::Progress;
use media_core::ids::{MediaId, UserId};
use media_core::records::MediaKey;
use media_core::retention::{RetentionPolicy, Selection};
use media_core::run::RunMode;

use crate::avatars::{AvatarSet, parse_mxc};
use crate::config::DendriteConfig;
use crate::db::{Access, Component, DendriteDb, open_dendrite};
use crate::error::CleanError;
use crate::layout::MediaFolder;
use crate::lock;
use crate::report::{CleanReport, Repair, SanityReport};
use crate::safety::{self, MountTables};
use crate::sanity::WalkFindings;
use crate::store::DendriteStore;

/// What a run purges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Remote media older than `days` (and local ones with `include_local`).
    OlderThan {
        /// The age in days from which media go.
        days: u32,
        /// Purge local uploads too.
        include_local: bool,
    },
    /// One media, of any age.
    Media(MediaSpec),
    /// Every media a user uploaded, of any age.
    User(UserId),
}

impl Request {
    /// The request of `-m`: a bare media ID or an `mxc://origin/media_id` URI.
    pub fn media(spec: &str) -> Result<Self, CleanError> {
        let spec =
            if spec.starts_with("mxc://") {
                MediaSpec::Key(parse_mxc(spec).ok_or_else(|| {
                    CleanError::MediaSelection(format!(
                        "-m {spec:?} is not an mxc://origin/media_id URI with a valid origin and \
                     media ID"
                    ))
                })?)
            } else {
                MediaSpec::Id(spec.parse().map_err(|e| {
                    CleanError::MediaSelection(format!("-m: {e}; nothing was deleted"))
                })?)
            };
        Ok(Self::Media(spec))
    }

    /// The request of `-u`: a user ID (`@user:server`).
    pub fn user(user_id: &str) -> Result<Self, CleanError> {
        user_id.parse().map(Self::User).map_err(|e| {
            CleanError::MediaSelection(format!(
                "-u {user_id:?} is not a user ID ({e}): give it as @user:server"
            ))
        })
    }
}

/// How a request names one media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaSpec {
    /// A bare media ID: it must name media of one origin only.
    Id(MediaId),
    /// An origin and a media ID (`mxc://origin/media_id`).
    Key(MediaKey),
}

/// A whole run's options.
#[derive(Debug, Clone)]
pub struct CleanOptions {
    /// The Dendrite config.
    pub config: DendriteConfig,
    /// What to purge.
    pub request: Request,
    /// Dry run or real run.
    pub mode: RunMode,
    /// Whether sanity findings are repaired.
    pub repair: Repair,
    /// The current time, ms since the epoch (the age cutoff is computed from it).
    pub now_ms: i64,
    /// Where to read which file systems should be mounted, and which are.
    pub mounts: MountTables,
}

/// Runs the sanity checks and the purge, and reports both. `progress` counts the media
/// rows walked (of all of them) and the bytes freed as the run goes.
///
/// First it refuses a folder that is not Dendrite's or looks unmounted (see
/// [`crate::safety`]) and takes the folder's lock (see [`crate::lock`]), waiting for
/// another run that holds it.
pub async fn clean(options: &CleanOptions, progress: &Progress) -> Result<CleanReport, CleanError> {
    let config = &options.config;
    let folder = MediaFolder::new(config.base_path.clone());
    safety::refuse_unmounted_by_fstab(&folder, &options.mounts)?;
    safety::refuse_foreign_folder(&folder)?;
    let base = config.base_path.clone();
    let _lock = tokio::task::spawn_blocking(move || {
        lock::lock_folder(&base, |holder| {
            tracing::warn!(
                "waiting: {holder} holds the lock on the media folder {} (another cleanmedia \
                 run); this run starts when it ends",
                base.display()
            );
        })
    })
    .await
    .expect("the lock task panicked")?;
    // Checked again under the lock: the run that held it may have changed the folder.
    safety::refuse_foreign_folder(&folder)?;
    let access = match options.mode {
        RunMode::DryRun => Access::ReadOnly,
        RunMode::Apply => Access::ReadWrite,
    };
    let media_db = open_dendrite(&config.media_database, Component::MediaApi, access).await?;
    let result = clean_with(options, &media_db, progress).await;
    media_db.close().await;
    result
}

async fn clean_with(
    options: &CleanOptions,
    media_db: &DendriteDb,
    progress: &Progress,
) -> Result<CleanReport, CleanError> {
    let config = &options.config;
    let (selection, described) = selection(options, media_db).await?;
    let policy = RetentionPolicy {
        selection,
        keep_avatars: true,
    };
    let user_db =
        open_dendrite(&config.user_database, Component::UserApi, Access::ReadOnly).await?;
    let sync_db =
        open_dendrite(&config.sync_database, Component::SyncApi, Access::ReadOnly).await?;
    let avatars = AvatarSet::load(&user_db, &sync_db, config.server_notices_avatar.clone()).await;
    user_db.close().await;
    sync_db.close().await;
    let avatars = avatars?;
    tracing::info!("{} media are in use as avatars and kept", avatars.len());

    let folder = MediaFolder::new(config.base_path.clone());
    let rows = media_db.count_media().await?;
    safety::refuse_missing_files(&folder, media_db, rows).await?;
    let store = DendriteStore {
        media_db,
        folder: &folder,
        server_name: &config.server_name,
        avatars: &avatars,
        progress,
    };
    progress.items_total.store(rows, Ordering::Relaxed);
    let repair = options.repair.in_mode(options.mode);
    let mut sanity = SanityReport::default();
    let mut findings = WalkFindings::default();
    let started = std::time::Instant::now();
    let phase_done = |phase: &str| {
        tracing::info!("{phase} done at {:.1} s", started.elapsed().as_secs_f64());
    };
    store.check_before_purge(repair, &mut sanity).await?;
    phase_done("orphan thumbnail check");
    let mut purge = store
        .check_and_purge(&policy, options.mode, repair, &mut sanity, &mut findings)
        .await?;
    phase_done("file check and purge");
    store
        .check_after_purge(repair, &findings, &mut sanity)
        .await?;
    phase_done("directory checks");
    purge.selection = described;
    Ok(CleanReport {
        mode: options.mode,
        repair: options.repair,
        store: format!(
            "{}, media folder {}",
            media_db::redact_url(&options.config.media_database),
            options.config.base_path.display()
        ),
        sanity,
        purge,
    })
}

/// What the request selects, and how the report describes it.
async fn selection(
    options: &CleanOptions,
    media_db: &DendriteDb,
) -> Result<(Selection, String), CleanError> {
    Ok(match &options.request {
        Request::OlderThan {
            days,
            include_local,
        } => (
            RetentionPolicy::older_than_days(*days, *include_local, options.now_ms).selection,
            format!(
                "{} media older than {days} days",
                if *include_local {
                    "remote and local"
                } else {
                    "remote"
                }
            ),
        ),
        Request::Media(spec) => {
            let key = resolve_media(spec, media_db).await?;
            let described = format!("media {key}");
            (Selection::Media { key }, described)
        }
        Request::User(user_id) => (
            Selection::User {
                user_id: user_id.clone(),
            },
            format!("media uploaded by {user_id}"),
        ),
    })
}

/// The media `-m` names: an MXC URI as is, or the one origin with that bare media ID.
async fn resolve_media(spec: &MediaSpec, media_db: &DendriteDb) -> Result<MediaKey, CleanError> {
    let media_id = match spec {
        MediaSpec::Key(key) => return Ok(key.clone()),
        MediaSpec::Id(media_id) => media_id,
    };
    let origins = media_db.origins_of_media_id(media_id).await?;
    match origins.as_slice() {
        [] => Err(CleanError::MediaSelection(format!(
            "no media has the media ID {:?}; nothing was deleted",
            media_id.as_str()
        ))),
        [origin] => {
            let origin = origin.parse().map_err(|e| {
                CleanError::MediaSelection(format!(
                    "media ID {:?} has an invalid origin ({e}); nothing was deleted",
                    media_id.as_str()
                ))
            })?;
            Ok(MediaKey::new(origin, media_id.clone()))
        }
        several => Err(CleanError::MediaSelection(format!(
            "media ID {:?} exists on several origins ({}); nothing was deleted. Name one \
             as mxc://<origin>/{media_id}",
            media_id.as_str(),
            several.join(", ")
        ))),
    }
}
