//! What a check of a Synapse media store found, by category with bytes, and what
//! `--fix` repaired; the shape is the same either way.

use std::fmt;

use media_core::progress::human_size;
use media_core::run::{Failures, Reason, Route, RunMode};
use serde::{Serialize, Serializer};

/// Why one item of a check could not be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckFault {
    /// A folder or entry of the media store could not be read.
    Unreadable,
    /// A fix could not remove a file or folder (a link or a foreign entry inside it, an
    /// I/O error).
    NotRemoved,
}

impl Reason for CheckFault {
    fn code(self) -> &'static str {
        match self {
            Self::Unreadable => "unreadable",
            Self::NotRemoved => "not_removed",
        }
    }
}

/// One category of findings: how many, their bytes, how many a fix repaired, and the
/// first [`Finding::LISTED`] of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How many were found.
    pub count: u64,
    /// Their bytes: measured on disk for files, as recorded for rows.
    pub bytes: u64,
    /// How many `--fix` repaired (0 without it).
    pub fixed: u64,
    /// The first ones found: paths relative to the media store, or `mxc://` URIs.
    pub listed: Vec<String>,
    /// How many more were found than listed.
    pub not_listed: u64,
}

impl Finding {
    /// How many findings of a category are listed by name.
    pub const LISTED: usize = 1_000;

    /// Counts one finding of `bytes`, listing it while there is room.
    pub fn add(&mut self, item: impl fmt::Display, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
        if self.listed.len() < Self::LISTED {
            self.listed.push(item.to_string());
        } else {
            self.not_listed += 1;
        }
    }

    /// How many are still there.
    pub fn left(&self) -> u64 {
        self.count - self.fixed
    }
}

/// A whole check of a Synapse media store against its database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// A check changes nothing (JSON `"dry_run": true`); `--fix` repairs.
    #[serde(rename = "dry_run", serialize_with = "is_dry_run")]
    pub mode: RunMode,
    /// The Synapse database (password hidden) and the media store.
    pub route: Route,
    /// Entries changed at or after this moment (Unix milliseconds) are left alone:
    /// Synapse may be writing them.
    pub settled_before_ts: i64,
    /// Media files and thumbnail folders checked against their rows.
    pub media_checked: u64,
    /// Content files (`local_content`, `url_cache`, `remote_content`) no row names.
    /// Fixed by removing them.
    pub orphan_files: Finding,
    /// Thumbnail folders whose media row is gone. Fixed by removing them.
    pub orphan_thumbnails: Finding,
    /// Regular files where Synapse never writes one: temporary or partial names,
    /// misplaced files. Fixed by removing them.
    pub stray_files: Finding,
    /// Folders with nothing in them (below the top-level folders). Fixed by removing
    /// them, and the folders that leaves empty.
    pub empty_folders: Finding,
    /// Uploaded media whose content file is missing (never "fixed": the row may be
    /// served by a storage provider, and deleting it loses the record).
    pub rows_without_files: Finding,
    /// Links, FIFOs, sockets and devices in the media store: never followed, never
    /// touched.
    pub not_regular: Finding,
    /// Problems found in entries that changed too recently to be judged: left alone.
    pub recent: Finding,
    /// Media listed by the journal of an interrupted purge (a purge run finishes it).
    pub interrupted_purge: u64,
    /// Folders removed by a fix: the empty ones found, the orphan thumbnail folders and
    /// the folders their removal left empty.
    pub folders_removed: u64,
    /// Items that could not be handled.
    pub failures: Failures<CheckFault>,
}

impl CheckReport {
    /// The problems still there (after a fix: those it did not repair).
    pub fn problems_left(&self) -> u64 {
        self.orphan_files.left()
            + self.orphan_thumbnails.left()
            + self.stray_files.left()
            + self.empty_folders.left()
            + self.rows_without_files.left()
            + self.not_regular.left()
            + self.interrupted_purge
    }
}

fn is_dry_run<S: Serializer>(mode: &RunMode, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bool(mode.is_dry_run())
}

impl media_core::run::Report for CheckReport {
    fn mode(&self) -> RunMode {
        self.mode
    }

    /// Problems left, or items that failed: exit code 1.
    fn has_failures(&self) -> bool {
        self.problems_left() > 0 || self.failures.any()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.route
            .write_headline(f, "synapse_media check", self.mode)?;
        writeln!(
            f,
            "  checked {} media files and thumbnail folders",
            self.media_checked
        )?;
        for (name, finding) in [
            ("files no row names", &self.orphan_files),
            ("thumbnail folders of media gone", &self.orphan_thumbnails),
            ("stray files", &self.stray_files),
            ("empty folders", &self.empty_folders),
            ("rows without their file", &self.rows_without_files),
            ("links and special files (not followed)", &self.not_regular),
            ("recently changed, left alone", &self.recent),
        ] {
            if finding.count == 0 {
                continue;
            }
            write!(
                f,
                "  {name}: {}, {}",
                finding.count,
                human_size(finding.bytes)
            )?;
            if self.mode.applies() {
                write!(f, ", {} fixed", finding.fixed)?;
            }
            writeln!(f)?;
            for item in finding.listed.iter().take(Failures::<CheckFault>::PRINTED) {
                writeln!(f, "    {item}")?;
            }
            if finding.count as usize > Failures::<CheckFault>::PRINTED {
                writeln!(f, "    … (--json lists more)")?;
            }
        }
        if self.interrupted_purge > 0 {
            writeln!(
                f,
                "  an interrupted purge's journal lists {} media: run the purge again to \
                 finish it",
                self.interrupted_purge
            )?;
        }
        if self.folders_removed > 0 {
            writeln!(f, "  folders removed: {}", self.folders_removed)?;
        }
        match self.problems_left() {
            0 => writeln!(f, "  no problem left")?,
            n => writeln!(f, "  problems left: {n}")?,
        }
        if self.failures.any() {
            writeln!(f, "  failed: {} items", self.failures.count())?;
            self.failures.write_lines(f)?;
        }
        Ok(())
    }
}
