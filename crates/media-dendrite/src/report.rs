//! What a run did (or, in a dry run, would do): the shape is the same either way.

use std::fmt;

use serde::Serialize;

/// Items listed by name in a report, at most; the counts are always complete.
pub const LISTED_ITEMS: usize = 100;

/// A whole `cleanmedia` run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Sanity findings were repaired (or, in a dry run, would be).
    pub fix: bool,
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
    /// removes them).
    pub failures: Listed,
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
    pub failures: Listed,
}

/// A count, how many of those were fixed, and the first [`LISTED_ITEMS`] by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// How many were found.
    pub found: u64,
    /// How many were repaired (in a dry run: would be).
    pub fixed: u64,
    /// The first ones, by name (with the reason, for failures).
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

impl media_core::run::Report for CleanReport {
    fn mode(&self) -> media_core::run::RunMode {
        media_core::run::RunMode::from_dry_run(self.dry_run)
    }

    /// Whether some item could not be handled (a directory not removed, a link not
    /// followed): exit code 1.
    fn has_failures(&self) -> bool {
        self.purge.failures.found > 0 || self.sanity.failures.found > 0
    }
}

impl fmt::Display for CleanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.purge;
        let would = if self.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        };
        writeln!(f, "cleanmedia: {}{would}", p.selection)?;
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
                let action = match (self.fix, self.dry_run) {
                    (false, _) => "repair with --fix".to_owned(),
                    (true, false) => format!("{} fixed", listed.fixed),
                    (true, true) => format!("{} would be fixed", listed.fixed),
                };
                writeln!(f, "  sanity: {} {name} ({action})", listed.found)?;
                for item in &listed.items {
                    writeln!(f, "    {item}")?;
                }
            }
        }
        if p.failures.found > 0 {
            writeln!(f, "  failed: {} directories not removed", p.failures.found)?;
            for item in &p.failures.items {
                writeln!(f, "    {item}")?;
            }
        }
        if s.failures.found > 0 {
            writeln!(f, "  failed: {} sanity items not handled", s.failures.found)?;
            for item in &s.failures.items {
                writeln!(f, "    {item}")?;
            }
        }
        Ok(())
    }
}
