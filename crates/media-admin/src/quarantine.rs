//! `media_admin quarantine …` and `unquarantine …`: (un)quarantine named media, a user's
//! media, a server's media or the media posted in a room (as the import recorded them). Each media takes every media with the same bytes with it
//! (as Synapse and matrix-media-repo do), pinned media excepted (they are skipped and
//! listed), and every change is appended to the quarantine change stream
//! ([`media_db::Quarantine`]). A user's, a server's or a room's media are walked page by page and
//! changed one transaction per batch, so memory stays flat.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::TryStreamExt;
use media_core::ids::{RoomId, ServerName, UserId};
use media_core::progress::Progress;
use media_core::records::MediaKey;
use media_core::run::{Failures, Reason, Report, RunMode};
use media_db::{
    DbError, MediaIndex, Quarantine, QuarantineAction, QuarantineReport, Repository, RoomIndex,
    TaskKind, TaskLog,
};
use serde::Serialize;

use crate::error::AdminError;
use crate::rooms::unrecorded_room_notice;

/// Which media to (un)quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuarantineTarget {
    /// Named media.
    Media(Vec<MediaKey>),
    /// Every media a user uploaded.
    User(UserId),
    /// Every media of an origin (only those recorded now: the origin is not flagged for
    /// the future, as in matrix-media-repo).
    Server(ServerName),
    /// Every media posted in a room, as `import_synapse --include rooms` recorded them.
    Room(RoomId),
}

/// Which way to move them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Quarantine.
    Quarantine,
    /// Lift the quarantine.
    Unquarantine,
}

/// What to (un)quarantine, and how.
#[derive(Debug, Clone)]
pub struct QuarantineOptions {
    /// Which media.
    pub target: QuarantineTarget,
    /// Which way.
    pub direction: Direction,
    /// Who quarantines (recorded as `quarantined_by`), when known.
    pub by: Option<String>,
    /// Media per transaction for a user's or a server's media; at least 1.
    pub batch: usize,
}

/// Why a named media was not changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineFailure {
    /// The repository has no such media.
    NotFound,
}

impl Reason for QuarantineFailure {
    fn code(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
        }
    }
}

/// The most pinned media a report lists (the rest are counted).
pub const PINNED_LISTED: usize = 10_000;

/// What a quarantine run did.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineRunReport {
    /// Quarantine or unquarantine.
    pub direction: Direction,
    /// What was named: `media`, `user @…`, `server …` or `room !…`.
    pub target: String,
    /// Media walked (named, or the user's or server's).
    pub media_walked: u64,
    /// Media whose state changed (those walked and those sharing their bytes).
    pub media_changed: u64,
    /// Pinned media left alone (walked, or sharing the bytes of one walked).
    pub pinned_skipped: u64,
    /// Those pinned media (at most [`PINNED_LISTED`]).
    pub pinned: Vec<String>,
    /// The task log's ID of this run.
    pub task: i64,
    /// Named media that could not be changed.
    pub failures: Failures<QuarantineFailure>,
    /// Something the operator should know about the target (a room of which no media
    /// are recorded).
    pub notice: Option<String>,
}

impl fmt::Display for QuarantineRunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.direction {
            Direction::Quarantine => "quarantine",
            Direction::Unquarantine => "unquarantine",
        };
        writeln!(f, "media_admin {verb} {}", self.target)?;
        if let Some(notice) = &self.notice {
            writeln!(f, "  {notice}")?;
        }
        writeln!(
            f,
            "  {} media walked, {} changed (with those sharing their bytes), {} pinned \
             media skipped",
            self.media_walked, self.media_changed, self.pinned_skipped
        )?;
        for pinned in self
            .pinned
            .iter()
            .take(Failures::<QuarantineFailure>::PRINTED)
        {
            writeln!(f, "  pinned, skipped: {pinned}")?;
        }
        if self.failures.any() {
            writeln!(f, "  {} media not changed:", self.failures.count())?;
            self.failures.write_lines(f)?;
        }
        Ok(())
    }
}

impl Report for QuarantineRunReport {
    fn mode(&self) -> RunMode {
        RunMode::Apply
    }

    fn has_failures(&self) -> bool {
        self.failures.any()
    }
}

/// (Un)quarantines what `options` names, recording the run in the task log.
pub async fn quarantine(
    repo: &Repository,
    options: &QuarantineOptions,
    progress: Arc<Progress>,
) -> Result<QuarantineRunReport, AdminError> {
    let target = match &options.target {
        QuarantineTarget::Media(keys) => format!("media ({} named)", keys.len()),
        QuarantineTarget::User(user) => format!("user {user}"),
        QuarantineTarget::Server(origin) => format!("server {origin}"),
        QuarantineTarget::Room(room) => format!("room {room}"),
    };
    let notice = match &options.target {
        QuarantineTarget::Room(room) => unrecorded_room_notice(repo, room).await?,
        _ => None,
    };
    let params = serde_json::json!({
        "direction": options.direction,
        "target": target,
        "media": match &options.target {
            QuarantineTarget::Media(keys) => keys.iter().map(ToString::to_string).collect(),
            _ => Vec::new(),
        },
        "by": options.by,
        "batch": options.batch,
    });
    let task = repo.start_task(TaskKind::Quarantine, &params).await?;
    let mut run = Run {
        report: QuarantineRunReport {
            direction: options.direction,
            target,
            media_walked: 0,
            media_changed: 0,
            pinned_skipped: 0,
            pinned: Vec::new(),
            task: task.0,
            failures: Failures::default(),
            notice,
        },
        pinned: BTreeSet::new(),
    };
    let outcome = run.walk(repo, options, &progress).await;
    let mut report = run.report;
    report.pinned_skipped = run.pinned.len() as u64;
    report.pinned = run
        .pinned
        .iter()
        .take(PINNED_LISTED)
        .map(ToString::to_string)
        .collect();
    let counters = serde_json::json!({
        "media_walked": report.media_walked,
        "media_changed": report.media_changed,
        "pinned_skipped": report.pinned_skipped,
        "failed": report.failures.count(),
    });
    let error = outcome.as_ref().err().map(ToString::to_string);
    repo.finish_task(task, &counters.to_string(), error.as_deref())
        .await?;
    outcome.map(|()| report)
}

/// A quarantine run under way.
struct Run {
    report: QuarantineRunReport,
    /// Every pinned media skipped, once each.
    pinned: BTreeSet<MediaKey>,
}

impl Run {
    async fn walk(
        &mut self,
        repo: &Repository,
        options: &QuarantineOptions,
        progress: &Progress,
    ) -> Result<(), AdminError> {
        let action = match options.direction {
            Direction::Quarantine => QuarantineAction::Quarantine {
                by: options.by.as_deref(),
            },
            Direction::Unquarantine => QuarantineAction::Lift,
        };
        let walked = match &options.target {
            QuarantineTarget::Media(keys) => {
                progress
                    .items_total
                    .store(keys.len() as u64, Ordering::Relaxed);
                for key in keys {
                    self.report.media_walked += 1;
                    match repo.set_quarantined(key, action).await {
                        Ok(one) => self.add(one),
                        Err(DbError::NotFound { .. }) => self.report.failures.push(
                            key.to_string(),
                            QuarantineFailure::NotFound,
                            "the repository has no such media",
                        ),
                        Err(e) => return Err(e.into()),
                    }
                    progress.items_done.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
            QuarantineTarget::User(user) => {
                progress
                    .items_total
                    .store(repo.count_media_by_uploader(user).await?, Ordering::Relaxed);
                repo.media_by_uploader(user)
            }
            QuarantineTarget::Server(origin) => {
                progress
                    .items_total
                    .store(repo.count_media_by_origin(origin).await?, Ordering::Relaxed);
                repo.media_by_origin(origin)
            }
            QuarantineTarget::Room(room) => {
                progress
                    .items_total
                    .store(repo.count_media_in_room(room).await?, Ordering::Relaxed);
                repo.media_in_room(room)
            }
        };
        let mut pages = walked.try_chunks(options.batch.max(1));
        while let Some(page) = pages.try_next().await.map_err(|e| e.1)? {
            let keys: Vec<MediaKey> = page.into_iter().map(|m| m.key).collect();
            self.report.media_walked += keys.len() as u64;
            let changed = repo.set_quarantined_batch(&keys, action).await?;
            self.add(changed);
            progress
                .items_done
                .fetch_add(keys.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    fn add(&mut self, one: QuarantineReport) {
        self.report.media_changed += one.changed.len() as u64;
        self.pinned.extend(one.pinned);
    }
}
