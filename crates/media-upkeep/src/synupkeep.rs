//! synupkeep's three steps, with Synapse's own semantics where synupkeep had its own:
//! with a cutoff (now − delta),
//!
//! 1. **room history**: every room is purged through Synapse's admin API up to its last
//!    event received at or before the cutoff, local events included ([`crate::history`]);
//!    a room Synapse will not purge is a listed failure, and the others go on;
//! 2. **local media**: what Synapse's `media/delete?before_ts=<cutoff>&keep_profiles=true`
//!    deletes, applied directly ([`crate::purge()`] with [`PurgeSelection::Local`]);
//! 3. **remote cache**: what Synapse's `purge_media_cache?before_ts=<cutoff>` deletes,
//!    applied directly ([`PurgeSelection::Remote`]).
//!
//! Before any step changes anything, the admin token, the database and the media store are
//! checked. A dry run lists the rooms and the events their history would be purged up to,
//! and plans both media purges, changing nothing.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;

use media_core::Progress;
use media_core::moment::Moment;
use media_core::run::{Classify, ErrorClass, Failures, Reason, Route, RunMode};
use media_db::{DatabaseLocation, DbError};
use serde::Serialize;

use crate::admin_api::{AdminApi, ApiError, Through};
use crate::error::UpkeepError;
use crate::history::{PurgePoint, plan_history};
use crate::plan::{AvatarPolicy, PurgeSelection};
use crate::purge::{PurgeOptions, check_store, purge};
use crate::report::{PurgeReport, is_dry_run};

/// What a synupkeep run works on.
#[derive(Debug, Clone)]
pub struct SynupkeepOptions {
    /// Synapse's database.
    pub synapse_db: DatabaseLocation,
    /// Synapse's `media_store_path`.
    pub media_store: PathBuf,
    /// Synapse's admin API, with an admin's token.
    pub admin_api: AdminApi,
    /// What is older than this goes.
    pub cutoff: Moment,
    /// Dry run or real run.
    pub mode: RunMode,
}

/// Why a synupkeep run stopped.
#[derive(Debug, thiserror::Error)]
pub enum SynupkeepError {
    /// The database, the media store or a media purge.
    #[error(transparent)]
    Upkeep(#[from] UpkeepError),
    /// Synapse's admin API as a whole (a room's failure is only listed).
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<DbError> for SynupkeepError {
    fn from(error: DbError) -> Self {
        Self::Upkeep(error.into())
    }
}

impl Classify for SynupkeepError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Upkeep(e) => e.class(),
            Self::Api(e) => e.class(),
        }
    }
}

/// Why one room's history was not purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryFault {
    /// The room's or its event's ID recorded in the database is not valid: left alone.
    InvalidRow,
    /// Synapse refused to purge the room (its answer is the detail).
    PurgeRefused,
    /// Synapse started the purge and reported it failed.
    PurgeFailed,
    /// Synapse answered something its API does not document.
    UnexpectedAnswer,
}

impl Reason for HistoryFault {
    fn code(self) -> &'static str {
        match self {
            Self::InvalidRow => "invalid_row",
            Self::PurgeRefused => "purge_refused",
            Self::PurgeFailed => "purge_failed",
            Self::UnexpectedAnswer => "unexpected_answer",
        }
    }
}

impl HistoryFault {
    /// The fault of an item-class API error.
    fn of(error: &ApiError) -> Self {
        match error {
            ApiError::PurgeFailed { .. } => Self::PurgeFailed,
            ApiError::Refused { .. } => Self::PurgeRefused,
            _ => Self::UnexpectedAnswer,
        }
    }
}

/// What the room-history step did (in a dry run: would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HistoryReport {
    /// Rooms in the database.
    pub rooms: u64,
    /// Rooms whose history was purged.
    pub rooms_purged: u64,
    /// Rooms with no event received at or before the cutoff: left alone.
    pub rooms_without_old_events: u64,
    /// Each room to purge and the event its history goes up to.
    pub purges: Vec<PurgePoint>,
    /// The rooms that could not be purged, each with why: exit code 1.
    pub failures: Failures<HistoryFault>,
}

/// A whole synupkeep run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SynupkeepReport {
    /// A dry run changed nothing (JSON: `"dry_run": true`).
    #[serde(rename = "dry_run", serialize_with = "is_dry_run")]
    pub mode: RunMode,
    /// The Synapse database (password hidden), its admin API and the media store.
    pub route: Route,
    /// The cutoff, in Unix milliseconds (Synapse's `before_ts`).
    pub cutoff_ts: i64,
    /// Step 1: room history.
    pub history: HistoryReport,
    /// Step 2: local media, as Synapse's `media/delete` with `keep_profiles=true`.
    pub local_media: PurgeReport,
    /// Step 3: the remote cache, as Synapse's `purge_media_cache`.
    pub remote_media: PurgeReport,
}

impl media_core::run::Report for SynupkeepReport {
    fn mode(&self) -> RunMode {
        self.mode
    }

    fn has_failures(&self) -> bool {
        self.history.failures.any()
            || self.local_media.failures.any()
            || self.remote_media.failures.any()
    }
}

impl fmt::Display for SynupkeepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.route.write_headline(f, "synupkeep", self.mode)?;
        writeln!(
            f,
            "  cutoff: {} ({} ms)",
            Moment::from_unix_ms(self.cutoff_ts),
            self.cutoff_ts
        )?;
        let h = &self.history;
        writeln!(
            f,
            "  room history: {} rooms, {} purged up to their last event before the cutoff, \
             {} without an older event",
            h.rooms, h.rooms_purged, h.rooms_without_old_events
        )?;
        if self.mode.is_dry_run() {
            for point in &h.purges {
                writeln!(f, "    {} up to {}", point.room, point.up_to)?;
            }
        }
        if h.failures.any() {
            writeln!(f, "    failed: {} rooms", h.failures.count())?;
            h.failures.write_lines(f)?;
        }
        for (step, report) in [
            ("local media", &self.local_media),
            ("remote media", &self.remote_media),
        ] {
            writeln!(f, "  {step}:")?;
            // The purge report's own lines, without its headline (ours names the run).
            for line in report.to_string().lines().skip(1) {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

/// Runs synupkeep's three steps and reports them. `progress` counts the rooms, then the
/// media of each purge.
pub async fn synupkeep(
    options: &SynupkeepOptions,
    progress: &Progress,
) -> Result<SynupkeepReport, SynupkeepError> {
    let purge_options = |selection| PurgeOptions {
        synapse_db: options.synapse_db.clone(),
        media_store: options.media_store.clone(),
        server_name: None,
        selection,
        mode: options.mode,
        through: Through::Direct,
    };
    let local = purge_options(PurgeSelection::Local {
        before: options.cutoff,
        size_gt: 0,
        avatars: AvatarPolicy::Keep,
    });
    let remote = purge_options(PurgeSelection::Remote {
        before: options.cutoff,
    });

    // Everything is checked before the first change: the database and the media store,
    // then the admin token.
    for purge in [&local, &remote] {
        let synapse = media_synapse::open_synapse(&options.synapse_db).await?;
        let checked = check_store(&synapse, purge).await;
        synapse.close().await;
        checked?;
    }
    options.admin_api.check_admin().await?;

    let history = purge_history(options, progress).await?;
    tracing::info!(
        "room history: {} of {} rooms purged",
        history.rooms_purged,
        history.rooms
    );
    let mut media = Vec::new();
    for purge_options in [local, remote] {
        progress.items_done.store(0, Relaxed);
        progress.bytes.store(0, Relaxed);
        let report = purge(&purge_options, progress).await?;
        tracing::info!(
            "{}: {} media deleted",
            report.selection,
            report.media_deleted
        );
        media.push(report);
    }
    let remote_media = media.pop().unwrap_or_default();
    let local_media = media.pop().unwrap_or_default();
    Ok(SynupkeepReport {
        mode: options.mode,
        route: Route::new(
            &options.synapse_db,
            format_args!(
                "admin API {} and media store {}",
                options.admin_api.base(),
                options.media_store.display()
            ),
        ),
        cutoff_ts: options.cutoff.unix_ms(),
        history,
        local_media,
        remote_media,
    })
}

/// Step 1: plans every room's history purge and (in a real run) has Synapse do each,
/// one room at a time, waiting for it to finish.
async fn purge_history(
    options: &SynupkeepOptions,
    progress: &Progress,
) -> Result<HistoryReport, SynupkeepError> {
    let plan = plan_history(&options.synapse_db, options.cutoff).await?;
    let mut report = HistoryReport {
        rooms: plan.rooms,
        rooms_without_old_events: plan.rooms - plan.points.len() as u64 - plan.invalid.len() as u64,
        ..HistoryReport::default()
    };
    for (item, why) in plan.invalid {
        report.failures.push(item, HistoryFault::InvalidRow, why);
    }
    progress
        .items_total
        .store(plan.points.len() as u64, Relaxed);
    progress.items_done.store(0, Relaxed);
    for point in &plan.points {
        match options.mode {
            RunMode::DryRun => report.rooms_purged += 1,
            RunMode::Apply => match options.admin_api.purge_history(point).await {
                Ok(()) => {
                    tracing::info!("purged the history of {} up to {}", point.room, point.up_to);
                    report.rooms_purged += 1;
                }
                Err(error) if error.class() == ErrorClass::Item => {
                    tracing::warn!("{}: {error}", point.room);
                    report.failures.push(
                        point.room.to_string(),
                        HistoryFault::of(&error),
                        error.to_string(),
                    );
                }
                Err(error) => return Err(error.into()),
            },
        }
        progress.items_done.fetch_add(1, Relaxed);
    }
    report.purges = plan.points;
    Ok(report)
}
