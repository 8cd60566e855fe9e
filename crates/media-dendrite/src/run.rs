//! One `cleanmedia` run, wired from a config: open the databases, read the avatars,
//! check orphan thumbnails, walk the media rows once (checking their files and purging),
//! then check the media folder for what no row uses.

use std::sync::atomic::Ordering;

use media_core::Progress;
use media_core::retention::{MediaRef, RetentionPolicy, Selection};

use crate::avatars::{AvatarSet, parse_mxc};
use crate::config::DendriteConfig;
use crate::db::{Component, DendriteDb, open_dendrite};
use crate::error::CleanError;
use crate::layout::{MediaFolder, Mode};
use crate::lock;
use crate::report::{CleanReport, SanityReport};
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
    /// One media: a bare media ID (it must name media of one origin only) or an
    /// `mxc://origin/media_id` URI.
    Media(String),
    /// Every media a user uploaded (`@user:server`).
    User(String),
}

/// A whole run's options.
#[derive(Debug, Clone)]
pub struct CleanOptions {
    /// The Dendrite config.
    pub config: DendriteConfig,
    /// What to purge.
    pub request: Request,
    /// Dry run or real run.
    pub mode: Mode,
    /// Repair sanity findings.
    pub fix: bool,
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
    let media_db = open_dendrite(
        &config.media_database,
        Component::MediaApi,
        options.mode == Mode::DryRun,
    )
    .await?;
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
    let policy = RetentionPolicy {
        selection: selection(options, media_db).await?,
        keep_avatars: true,
    };
    let user_db = open_dendrite(&config.user_database, Component::UserApi, true).await?;
    let sync_db = open_dendrite(&config.sync_database, Component::SyncApi, true).await?;
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
    let repair = options.fix.then_some(options.mode);
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
    purge.selection = match (&options.request, &policy.selection) {
        (
            Request::OlderThan {
                days,
                include_local,
            },
            _,
        ) => format!(
            "{} media older than {days} days",
            if *include_local {
                "remote and local"
            } else {
                "remote"
            }
        ),
        (Request::User(user), _) => format!("media uploaded by {user}"),
        (Request::Media(_), Selection::Media { origin, media_id }) => {
            format!("media mxc://{origin}/{media_id}")
        }
        (Request::Media(spec), _) => format!("media {spec}"),
    };
    Ok(CleanReport {
        dry_run: options.mode == Mode::DryRun,
        fix: options.fix,
        sanity,
        purge,
    })
}

async fn selection(options: &CleanOptions, media_db: &DendriteDb) -> Result<Selection, CleanError> {
    Ok(match &options.request {
        Request::OlderThan {
            days,
            include_local,
        } => RetentionPolicy::older_than_days(*days, *include_local, options.now_ms).selection,
        Request::Media(spec) => {
            let MediaRef { origin, media_id } = resolve_media(spec, media_db).await?;
            Selection::Media { origin, media_id }
        }
        Request::User(user_id) => {
            if !user_id.starts_with('@') || !user_id.contains(':') {
                return Err(CleanError::MediaSelection(format!(
                    "-u {user_id:?} is not a user ID: give it as @user:server"
                )));
            }
            Selection::User {
                user_id: user_id.clone(),
            }
        }
    })
}

/// The media `-m` names: an MXC URI as is, or the one origin with that bare media ID.
async fn resolve_media(spec: &str, media_db: &DendriteDb) -> Result<MediaRef, CleanError> {
    if spec.starts_with("mxc://") {
        return parse_mxc(spec).ok_or_else(|| {
            CleanError::MediaSelection(format!("-m {spec:?} is not an mxc://origin/media_id URI"))
        });
    }
    let origins = media_db.origins_of_media_id(spec).await?;
    match origins.as_slice() {
        [] => Err(CleanError::MediaSelection(format!(
            "no media has the media ID {spec:?}; nothing was deleted"
        ))),
        [origin] => Ok(MediaRef {
            origin: origin.clone(),
            media_id: spec.to_owned(),
        }),
        several => Err(CleanError::MediaSelection(format!(
            "media ID {spec:?} exists on several origins ({}); nothing was deleted. Name one \
             as mxc://<origin>/{spec}",
            several.join(", ")
        ))),
    }
}
