//! What a run did (or, in a dry run, would do): the shape is the same either way.

use std::fmt;

use media_core::run::{Failures, Reason, RunMode};
use serde::{Serialize, Serializer};

/// Findings listed by name in a report, at most; the counts are always complete.
pub const LISTED_ITEMS: usize = 100;

/// What a run does with what the sanity checks find.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Repair {
    /// List the findings only.
    #[default]
    ListOnly,
    /// Repair them too (`--fix`; in a dry run, count what would be repaired).
    Fix,
}

impl Repair {
    /// How the repairs run in a run of `mode`: `None` when there are none.
    pub fn in_mode(self, mode: RunMode) -> Option<RunMode> {
        match self {
            Repair::ListOnly => None,
            Repair::Fix => Some(mode),
        }
    }
}

/// Why an item of a run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// A hash directory could not be removed (a foreign entry or a link in it, an I/O
    /// error); its rows are gone, so a later `--fix` run removes it.
    DirectoryNotRemoved,
    /// A hash recorded by the rows is not a valid base64hash: it never becomes a path.
    InvalidHash,
    /// A media row's origin, media ID or uploader is not a valid identifier: the row is
    /// kept, and so is its content.
    InvalidRow,
    /// The `tmp/` folder could not be listed.
    TmpNotChecked,
    /// A stale `tmp/` directory could not be removed.
    TmpNotRemoved,
}

impl Reason for FailureReason {
    fn code(self) -> &'static str {
        match self {
            FailureReason::DirectoryNotRemoved => "directory_not_removed",
            FailureReason::InvalidHash => "invalid_hash",
            FailureReason::InvalidRow => "invalid_row",
            FailureReason::TmpNotChecked => "tmp_not_checked",
            FailureReason::TmpNotRemoved => "tmp_not_removed",
        }
    }
}

/// A whole `cleanmedia` run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanReport {
    /// A dry run changed nothing (JSON: `"dry_run": true`).
    #[serde(rename = "dry_run", serialize_with = "is_dry_run")]
    pub mode: RunMode,
    /// Whether sanity findings were repaired (or, in a dry run, would be) (JSON: `"fix"`).
    #[serde(rename = "fix", serialize_with = "is_fix")]
    pub repair: Repair,
    /// The Dendrite media database and media folder the run was about.
    pub store: String,
    /// The sanity checks: orphan thumbnails before the purge, the rows' files during
    /// it (page by page), unused and stale directories after it.
    pub sanity: SanityReport,
    /// The purge.
    pub purge: PurgeReport,
}

/// What a purge deleted and kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// What the purge was about.
    pub selection: String,
    /// `mediaapi_media_repository` rows deleted.
    pub media_rows_deleted: u64,
    /// `mediaapi_thumbnail` rows deleted.
    pub thumbnail_rows_deleted: u64,
    /// Hash directories removed.
    pub directories_removed: u64,
    /// Bytes of the files removed (content and thumbnails).
    pub bytes_freed: u64,
    /// What was kept, and why.
    pub kept: KeptReport,
    /// Directories that could not be removed (their rows are gone: a later `--fix` run
    /// removes them), and rows that could not be judged (kept).
    pub failures: Failures<FailureReason>,
}

/// Kept media rows by reason, and directories kept although rows using them went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeptReport {
    /// Selected rows kept because they are avatars.
    pub avatar: u64,
    /// Rows younger than the cutoff.
    pub recent: u64,
    /// Old local rows kept because `-l` was not given.
    pub local: u64,
    /// Directories kept because a kept row still uses their hash.
    pub shared_hash_directories: u64,
    /// Directories kept because Dendrite started using their hash again during the run:
    /// a new row, or the directory changed after the database was checked.
    pub directories_in_use_again: u64,
}

/// The sanity checks, each with what was found and what was repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SanityReport {
    /// Thumbnail rows whose media row (same media ID and origin) is gone. Fix: delete.
    pub orphan_thumbnail_rows: Listed,
    /// Media rows whose `file` is missing. Fix: delete remote ones (Dendrite fetches
    /// them again); local ones cannot be repaired and stay listed.
    pub rows_without_file: Listed,
    /// Media rows whose base64hash is not a valid hash (their files are never touched).
    pub rows_with_invalid_hash: Listed,
    /// Hash directories (older than an hour) that no media row uses. Fix: remove.
    pub unreferenced_directories: Listed,
    /// `tmp/` staging directories (named as Dendrite names them) older than a day. Fix:
    /// remove.
    pub stale_tmp_directories: Listed,
    /// What the checks or their repairs could not handle (a link where Dendrite keeps a
    /// folder, a foreign file in a directory to remove), each with the reason: exit 1.
    pub failures: Failures<FailureReason>,
}

/// A sanity finding: a count, how many of those were fixed, and the first
/// [`LISTED_ITEMS`] by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// How many were found.
    pub found: u64,
    /// How many were repaired (in a dry run: would be).
    pub fixed: u64,
    /// The first ones, by name.
    pub items: Vec<String>,
}

impl Listed {
    /// Counts one item, keeping its name while the list is short.
    pub fn push(&mut self, item: impl FnOnce() -> String) {
        self.found += 1;
        if self.items.len() < LISTED_ITEMS {
            self.items.push(item());
        }
    }
}

fn is_dry_run<S: Serializer>(mode: &RunMode, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bool(mode.is_dry_run())
}

fn is_fix<S: Serializer>(repair: &Repair, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bool(*repair == Repair::Fix)
}

impl media_core::run::Report for CleanReport {
    fn mode(&self) -> RunMode {
        self.mode
    }

    /// Whether some item could not be handled (a directory not removed, a link not
    /// followed, a row not judged): exit code 1.
    fn has_failures(&self) -> bool {
        self.purge.failures.any() || self.sanity.failures.any()
    }
}

impl fmt::Display for CleanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.purge;
        writeln!(
            f,
            "cleanmedia: {} in {}{}",
            p.selection,
            self.store,
            self.mode.headline_suffix()
        )?;
        writeln!(
            f,
            "  deleted: {} media rows, {} thumbnail rows, {} directories, {} bytes",
            p.media_rows_deleted, p.thumbnail_rows_deleted, p.directories_removed, p.bytes_freed
        )?;
        let k = &p.kept;
        writeln!(
            f,
            "  kept: {} avatars, {} recent, {} local; {} directories shared with kept media, \
             {} in use again",
            k.avatar, k.recent, k.local, k.shared_hash_directories, k.directories_in_use_again
        )?;
        let s = &self.sanity;
        for (name, listed) in [
            ("orphan thumbnail rows", &s.orphan_thumbnail_rows),
            ("rows without their file", &s.rows_without_file),
            ("rows with an invalid hash", &s.rows_with_invalid_hash),
            ("directories no row uses", &s.unreferenced_directories),
            ("stale tmp directories", &s.stale_tmp_directories),
        ] {
            if listed.found > 0 {
                let action = match self.repair.in_mode(self.mode) {
                    None => "repair with --fix".to_owned(),
                    Some(RunMode::Apply) => format!("{} fixed", listed.fixed),
                    Some(RunMode::DryRun) => format!("{} would be fixed", listed.fixed),
                };
                writeln!(f, "  sanity: {} {name} ({action})", listed.found)?;
                for item in &listed.items {
                    writeln!(f, "    {item}")?;
                }
            }
        }
        if p.failures.any() {
            writeln!(f, "  failed: {} purge items", p.failures.count())?;
            p.failures.write_lines(f)?;
        }
        if s.failures.any() {
            writeln!(
                f,
                "  failed: {} sanity items not handled",
                s.failures.count()
            )?;
            s.failures.write_lines(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_keeps_dry_run_and_fix_as_flags() {
        let report = CleanReport {
            mode: RunMode::DryRun,
            repair: Repair::Fix,
            ..Default::default()
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["dry_run"], true);
        assert_eq!(json["fix"], true);
        let json = serde_json::to_value(CleanReport::default()).unwrap();
        assert_eq!(
            (&json["dry_run"], &json["fix"]),
            (&false.into(), &false.into())
        );
    }

    #[test]
    fn failures_are_reported_with_their_reason() {
        let mut report = CleanReport::default();
        assert!(!media_core::run::Report::has_failures(&report));
        report
            .sanity
            .failures
            .push("/m/tmp", FailureReason::TmpNotChecked, "permission denied");
        assert!(media_core::run::Report::has_failures(&report));
        let text = report.to_string();
        assert!(
            text.contains(
                "failed: 1 sanity items not handled\n  /m/tmp [tmp_not_checked]: permission denied"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["sanity"]["failures"]["by_reason"]["tmp_not_checked"],
            1
        );
        assert_eq!(json["sanity"]["failures"]["listed"][0]["item"], "/m/tmp");
    }
}
