//! What a purge did (in a dry run: would do); the shape is the same either way.

use std::fmt;

use media_core::progress::human_size;
use media_core::run::{Failures, Reason, Route, RunMode};
use serde::{Serialize, Serializer};

/// Why one item of a purge could not be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeFault {
    /// A selected row's identifiers are not valid (or map to no Synapse path): no path
    /// is built from it, and the row is kept.
    InvalidRow,
    /// A media's rows are gone but a file or folder of it could not be removed (a link
    /// or a foreign entry where Synapse keeps files, an I/O error); it is named so it
    /// can be removed by hand.
    FileNotRemoved,
    /// A line of an interrupted run's journal could not be read back; nothing was done
    /// with it.
    UnreadableJournalEntry,
    /// A media named on the command line has no row (Synapse's API answers 404).
    NotFound,
    /// Synapse's admin API deletes local media only: a cached remote media named for a
    /// purge through it is left alone.
    NotLocal,
    /// Synapse's admin API refused to delete this media (its answer is the detail).
    RefusedBySynapse,
    /// The plan selected this media and Synapse was asked to delete it, but its row is
    /// still there afterwards.
    NotDeletedBySynapse,
    /// Synapse deleted media rows the plan kept (counted, not named: their rows are
    /// gone).
    DeletedOutsidePlan,
}

impl Reason for PurgeFault {
    fn code(self) -> &'static str {
        match self {
            Self::InvalidRow => "invalid_row",
            Self::FileNotRemoved => "file_not_removed",
            Self::UnreadableJournalEntry => "unreadable_journal_entry",
            Self::NotFound => "not_found",
            Self::NotLocal => "not_local",
            Self::RefusedBySynapse => "refused_by_synapse",
            Self::NotDeletedBySynapse => "not_deleted_by_synapse",
            Self::DeletedOutsidePlan => "deleted_outside_plan",
        }
    }
}

/// A whole purge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// A dry run changed nothing (JSON: `"dry_run": true`).
    #[serde(rename = "dry_run", serialize_with = "is_dry_run")]
    pub mode: RunMode,
    /// The Synapse database (password hidden) and the media store.
    pub route: Route,
    /// What was purged, in words.
    pub selection: String,
    /// The cutoff, in Unix milliseconds (Synapse's `before_ts`); `null` for the
    /// selections without one.
    pub before_ts: Option<i64>,
    /// Media rows deleted.
    pub media_deleted: u64,
    /// Thumbnail rows deleted with them.
    pub thumbnail_rows_deleted: u64,
    /// Files removed: contents and thumbnails.
    pub files_deleted: u64,
    /// Bytes of those files, measured on disk.
    pub bytes_freed: u64,
    /// Folders removed: thumbnail folders, and the folders the removals left empty (0 in
    /// a dry run).
    pub directories_removed: u64,
    /// Deleted media whose content file was not there (never uploaded, already lost, or
    /// held by a storage provider).
    pub media_without_file: u64,
    /// What was old enough but kept, and why.
    pub kept: KeptReport,
    /// Files of an interrupted run removed before this run's purge.
    pub recovered: RecoveredReport,
    /// A purge through Synapse's admin API: what Synapse did, what was verified and
    /// cleaned up after it (`null` for a direct purge). The counts above are then the
    /// verified ones: media whose rows are gone, with the files they had.
    pub synapse_api: Option<ApiPurgeReport>,
    /// The items that could not be handled, each with why: exit code 1.
    pub failures: Failures<PurgeFault>,
}

/// Media old enough for the purge that it kept, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeptReport {
    /// Quarantined media.
    pub quarantined: u64,
    /// Protected media (`safe_from_quarantine`), not quarantined.
    pub protected: u64,
    /// Local media in use as profile, member, user-directory or room avatars.
    pub avatar: u64,
    /// Media that stopped matching between planning and deleting (downloaded again,
    /// quarantined, protected, made an avatar).
    pub changed_during_run: u64,
    /// Deleted media whose files another remaining row still names: the files stay.
    pub files_shared: u64,
}

/// A purge applied by Synapse through its admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApiPurgeReport {
    /// The admin API's base URL.
    pub api: String,
    /// Media the plan selected for Synapse to delete.
    pub planned: u64,
    /// Media Synapse said it deleted (its answer's count).
    pub deleted_by_synapse: u64,
    /// Planned media whose rows were gone afterwards.
    pub verified: u64,
    /// What Synapse left behind of the verified media and this run removed.
    pub cleaned_up: CleanedUpReport,
}

/// What Synapse left behind and a purge through its admin API removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanedUpReport {
    /// Files (contents, thumbnails, URL previews) whose rows Synapse deleted.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Folders left empty.
    pub directories: u64,
}

/// What the end of an interrupted run (found in its journal) removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveredReport {
    /// Media whose rows that run had deleted.
    pub media: u64,
    /// Their files removed now.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Folders removed with them.
    pub directories: u64,
}

/// Serializes a mode as `true` for a dry run.
pub(crate) fn is_dry_run<S: Serializer>(mode: &RunMode, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bool(mode.is_dry_run())
}

impl media_core::run::Report for PurgeReport {
    fn mode(&self) -> RunMode {
        self.mode
    }

    fn has_failures(&self) -> bool {
        self.failures.any()
    }
}

impl fmt::Display for PurgeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.route.write_headline(f, "synapse_media", self.mode)?;
        writeln!(f, "  purge: {}", self.selection)?;
        writeln!(
            f,
            "  deleted: {} media ({} thumbnail rows), {} files, {} ({} bytes), {} folders",
            self.media_deleted,
            self.thumbnail_rows_deleted,
            self.files_deleted,
            human_size(self.bytes_freed),
            self.bytes_freed,
            self.directories_removed
        )?;
        if self.media_without_file > 0 {
            writeln!(
                f,
                "  {} deleted media had no file in the media store",
                self.media_without_file
            )?;
        }
        match (&self.synapse_api, self.mode) {
            (Some(api), RunMode::DryRun) => writeln!(
                f,
                "  through Synapse's admin API {}: {} planned; Synapse not called",
                api.api, api.planned
            )?,
            (Some(api), RunMode::Apply) => writeln!(
                f,
                "  through Synapse's admin API {}: {} planned, {} deleted by Synapse (its \
                 count), {} verified gone; left behind and cleaned up: {} files, {}, {} \
                 folders",
                api.api,
                api.planned,
                api.deleted_by_synapse,
                api.verified,
                api.cleaned_up.files,
                human_size(api.cleaned_up.bytes),
                api.cleaned_up.directories
            )?,
            (None, _) => {}
        }
        let k = &self.kept;
        writeln!(
            f,
            "  kept: {} quarantined, {} protected, {} avatars, {} changed during the run, \
             {} sharing their files",
            k.quarantined, k.protected, k.avatar, k.changed_during_run, k.files_shared
        )?;
        let r = &self.recovered;
        if r.media > 0 {
            writeln!(
                f,
                "  finished an interrupted run: {} media, {} files, {}",
                r.media,
                r.files,
                human_size(r.bytes)
            )?;
        }
        if self.failures.any() {
            writeln!(f, "  failed: {} items", self.failures.count())?;
            self.failures.write_lines(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_names_the_mode_and_lists_failures_by_reason() {
        let mut report = PurgeReport {
            mode: RunMode::DryRun,
            ..PurgeReport::default()
        };
        report
            .failures
            .push("mxc://a.example/x", PurgeFault::FileNotRemoved, "a link");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["dry_run"], true);
        assert_eq!(json["failures"]["by_reason"]["file_not_removed"], 1);
        let text = report.to_string();
        assert!(
            text.contains("mxc://a.example/x [file_not_removed]: a link"),
            "{text}"
        );
        assert!(media_core::run::Report::has_failures(&report));
    }
}
