//! What an import did (or, for a dry run, would do): counters, and the items that were
//! not imported with their reasons.

use std::fmt;

use media_core::progress::human_size;
use media_core::run::{Failure, Failures, Reason, Report, Route, RunMode};
use media_synapse::RowFault;
use serde::Serialize;

use crate::shard::Shard;

/// Why an item was not imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The file is not in the media store.
    FileMissing,
    /// The bytes do not match the SHA-256 Synapse recorded (bit rot).
    Corrupt,
    /// The content is longer or shorter than the length Synapse recorded (reading stops
    /// one byte past it).
    SizeMismatch,
    /// The file could not be read.
    Unreadable,
    /// The repository already has this media (or thumbnail) with other bytes; kept as is.
    Conflict,
    /// The bytes vanished from the datastore while recording (a concurrent purge); run
    /// the import again.
    RetryLater,
    /// The sink reserved this media ID (purged, or held for an upload in progress): it
    /// is never written.
    Reserved,
    /// Synapse's row does not become a media (never uploaded, an invalid identifier, a
    /// row that cannot be read): written as the row's own code.
    Row(RowFault),
}

impl Reason for FailureReason {
    fn code(self) -> &'static str {
        match self {
            Self::FileMissing => "file_missing",
            Self::Corrupt => "corrupt",
            Self::SizeMismatch => "size_mismatch",
            Self::Unreadable => "unreadable",
            Self::Conflict => "conflict",
            Self::RetryLater => "retry_later",
            Self::Reserved => "reserved",
            Self::Row(fault) => fault.code(),
        }
    }
}

impl From<RowFault> for FailureReason {
    fn from(fault: RowFault) -> Self {
        Self::Row(fault)
    }
}

/// One item that was not imported, and why.
pub type ItemFailure = Failure<FailureReason>;

/// Whether a failed item is a media or one of its thumbnails (they are counted apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemKind {
    Media,
    Thumbnail,
}

/// What an import did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// True when nothing was written.
    pub dry_run: bool,
    /// The Synapse database imported from, and the repository and datastore imported to.
    pub route: Route,
    /// The share of the media this run took (`"K/N"`; `"1/1"`: every media). The
    /// counters below are this share's.
    pub shard: Shard,
    /// Media rows considered.
    pub media_total: u64,
    /// Media recorded by this run.
    pub media_imported: u64,
    /// Media that were already in the repository.
    pub media_already_present: u64,
    /// Of those, media another run recorded while this one ran (this run found them
    /// missing, read them, and found them recorded when it came to record them): two
    /// imports at once each say what the other did.
    pub media_recorded_by_another_run: u64,
    /// Media not imported (listed in `failures`).
    pub media_failed: u64,
    /// Thumbnails recorded by this run.
    pub thumbnails_imported: u64,
    /// Thumbnails already in the repository.
    pub thumbnails_already_present: u64,
    /// Of those, thumbnails another run recorded while this one ran.
    pub thumbnails_recorded_by_another_run: u64,
    /// Thumbnails not imported (listed in `failures`).
    pub thumbnails_failed: u64,
    /// New blobs written to the datastore.
    pub blobs_written: u64,
    /// Bytes read from the media store.
    pub bytes_read: u64,
    /// Bytes written to the datastore.
    pub bytes_written: u64,
    /// Bytes not written because the same content was already stored.
    pub bytes_deduplicated: u64,
    /// Media pinned by this run because they are in use as avatars.
    pub avatars_pinned: u64,
    /// Media in use as avatars that were pinned already.
    pub avatars_already_pinned: u64,
    /// Avatar references to media that are not in the repository.
    pub avatars_not_in_repository: u64,
    /// Avatar rows that could not be read or whose URL is not a valid MXC URI (listed in
    /// `failures`); the other avatars are still pinned.
    pub avatars_failed: u64,
    /// Which rooms hold which media (`--include rooms`; none when not read).
    pub rooms: Option<RoomsTally>,
    /// Items that were not imported: all counted, the first
    /// [`Failures::LISTED`](media_core::run::Failures::LISTED) listed.
    pub failures: Failures<FailureReason>,
}

impl Report for ImportReport {
    fn mode(&self) -> RunMode {
        RunMode::from_dry_run(self.dry_run)
    }

    /// Whether any item failed (the tools then exit with code 1).
    fn has_failures(&self) -> bool {
        let unreadable_events = self.rooms.map_or(0, |r| r.unreadable_events);
        self.media_failed + self.thumbnails_failed + self.avatars_failed + unreadable_events > 0
    }
}

impl ImportReport {
    /// An empty report for a run in `mode`.
    pub(crate) fn new(mode: RunMode) -> Self {
        Self {
            dry_run: mode.is_dry_run(),
            ..Self::default()
        }
    }

    /// Counts and lists a media or thumbnail that was not imported.
    pub(crate) fn fail<R: Into<FailureReason>>(&mut self, failure: Failure<R>, kind: ItemKind) {
        match kind {
            ItemKind::Media => self.media_failed += 1,
            ItemKind::Thumbnail => self.thumbnails_failed += 1,
        }
        self.list(failure);
    }

    /// Lists a failure (only counted once the list is full) without counting an item.
    pub(crate) fn list<R: Into<FailureReason>>(&mut self, failure: Failure<R>) {
        self.failures
            .push(failure.item, failure.reason.into(), failure.detail);
    }

    /// Adds the counters and failures of a part of the run (a worker's).
    pub(crate) fn merge(&mut self, other: ImportReport) {
        self.media_total += other.media_total;
        self.media_imported += other.media_imported;
        self.media_already_present += other.media_already_present;
        self.media_recorded_by_another_run += other.media_recorded_by_another_run;
        self.media_failed += other.media_failed;
        self.thumbnails_imported += other.thumbnails_imported;
        self.thumbnails_already_present += other.thumbnails_already_present;
        self.thumbnails_recorded_by_another_run += other.thumbnails_recorded_by_another_run;
        self.thumbnails_failed += other.thumbnails_failed;
        self.blobs_written += other.blobs_written;
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.bytes_deduplicated += other.bytes_deduplicated;
        self.avatars_pinned += other.avatars_pinned;
        self.avatars_already_pinned += other.avatars_already_pinned;
        self.avatars_not_in_repository += other.avatars_not_in_repository;
        self.avatars_failed += other.avatars_failed;
        self.rooms = self.rooms.or(other.rooms);
        self.failures.merge(other.failures);
    }

    /// The counters as JSON, without the failure list (for the task log).
    pub fn counters_json(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.remove("failures");
        }
        value.to_string()
    }
}

/// `1536` → `1.5 KiB`.
/// What a summary line adds when another run recorded some of the items meanwhile.
fn by_another_run(count: u64) -> String {
    match count {
        0 => String::new(),
        n => format!(" ({n} of them recorded by another run while this one ran)"),
    }
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (verb, written) = if self.dry_run {
            ("would be imported", "would be written")
        } else {
            ("imported", "written")
        };
        self.route
            .write_headline(f, "import_synapse", self.mode())?;
        if self.shard != Shard::ALL {
            writeln!(
                f,
                "shard {}: only the media of this share (the other shards import the rest)",
                self.shard
            )?;
        }
        writeln!(
            f,
            "media: {} considered, {} {verb}, {} already present{}, {} failed",
            self.media_total,
            self.media_imported,
            self.media_already_present,
            by_another_run(self.media_recorded_by_another_run),
            self.media_failed
        )?;
        writeln!(
            f,
            "thumbnails: {} {verb}, {} already present{}, {} failed",
            self.thumbnails_imported,
            self.thumbnails_already_present,
            by_another_run(self.thumbnails_recorded_by_another_run),
            self.thumbnails_failed
        )?;
        writeln!(
            f,
            "bytes: {} read, {} {written} in {} new blobs, {} saved by deduplication",
            human_size(self.bytes_read),
            human_size(self.bytes_written),
            self.blobs_written,
            human_size(self.bytes_deduplicated)
        )?;
        if !self.dry_run {
            writeln!(
                f,
                "avatars: {} media pinned, {} pinned already, {} avatar references to media \
                 not in the repository, {} unreadable or invalid",
                self.avatars_pinned,
                self.avatars_already_pinned,
                self.avatars_not_in_repository,
                self.avatars_failed
            )?;
        }
        if let Some(rooms) = &self.rooms {
            writeln!(f, "{rooms}")?;
        }
        if self.failures.any() {
            writeln!(f, "not imported:")?;
            self.failures.write_lines(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn a_summary_says_what_another_run_recorded_meanwhile() {
        let mut report = ImportReport::new(RunMode::Apply);
        report.media_already_present = 9;
        report.media_recorded_by_another_run = 4;
        let text = report.to_string();
        assert!(
            text.contains(
                "9 already present (4 of them recorded by another run while this one ran)"
            ),
            "{text}"
        );
        assert!(
            !text.contains("thumbnails: 0 imported, 0 already present ("),
            "{text}"
        );
    }

    #[test]
    fn reasons_of_synapse_rows_keep_their_codes() {
        let mut report = ImportReport::new(RunMode::Apply);
        report.fail(
            Failure {
                item: "mxc://example.org/a".into(),
                reason: RowFault::NeverUploaded,
                detail: "never uploaded".into(),
            },
            ItemKind::Media,
        );
        report.fail(
            Failure {
                item: "mxc://example.org/a thumbnail".into(),
                reason: FailureReason::FileMissing,
                detail: "gone".into(),
            },
            ItemKind::Thumbnail,
        );
        assert_eq!((report.media_failed, report.thumbnails_failed), (1, 1));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["failures"]["listed"][0]["reason"], "never_uploaded");
        assert_eq!(json["failures"]["by_reason"]["file_missing"], 1);
        assert!(!report.counters_json().contains("failures"));
        assert!(report.to_string().contains("[never_uploaded]"));
    }
}

/// Where the rooms were read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomsSource {
    /// Synapse's `events` and `event_json`.
    #[default]
    Events,
    /// Nowhere: the database has no `events` table (a copy of the media tables alone),
    /// so no room was recorded.
    NoEventsTable,
    /// Nowhere: the target keeps no rooms (a matrix-media-repo asks the homeserver).
    NotKept,
}

/// What recording the rooms found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RoomsTally {
    /// Where the rooms were read from.
    pub source: RoomsSource,
    /// Events with URLs read.
    pub events: u64,
    /// Media references of those events (of this shard's media).
    pub references: u64,
    /// (room, media) links recorded by this run; the others were recorded already, or
    /// came several times.
    pub links_recorded: u64,
    /// URLs that are not valid MXC URIs (they name no media; left out, as Synapse does).
    pub invalid_urls: u64,
    /// Events that could not be read (listed in the failures); their media are not
    /// recorded in a room.
    pub unreadable_events: u64,
}

impl fmt::Display for RoomsTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            RoomsSource::NoEventsTable => {
                return write!(
                    f,
                    "rooms: none recorded: Synapse's database has no events table (give \
                     the whole database to record which rooms hold which media)"
                );
            }
            RoomsSource::NotKept => {
                return write!(
                    f,
                    "rooms: none recorded: the target keeps no rooms (matrix-media-repo \
                     asks the homeserver which media a room holds)"
                );
            }
            RoomsSource::Events => {}
        }
        write!(
            f,
            "rooms: {} events with media read, {} references, {} new room-media links \
             recorded, {} URLs that are not MXCs left out, {} events unreadable",
            self.events,
            self.references,
            self.links_recorded,
            self.invalid_urls,
            self.unreadable_events
        )
    }
}
