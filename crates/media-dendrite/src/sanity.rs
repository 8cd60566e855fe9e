//! Sanity checks between Dendrite's media tables and its media folder, and their repairs.

use std::collections::HashSet;

use media_core::records::MediaKey;
use media_core::run::RunMode;

use crate::db::MediaPage;
use crate::error::CleanError;
use crate::layout::{ContentHash, check_time};
use crate::report::{FailureReason, LISTED_ITEMS, Listed, SanityReport};
use crate::store::DendriteStore;

/// Hash directories checked against the database per query.
const DIRECTORIES_PER_CHECK: usize = 20_000;

/// What the checks after the purge must know about the walk over the rows before them.
#[derive(Debug, Default)]
pub struct WalkFindings {
    /// Hashes a dry run's repairs would leave without rows: the directory check must see
    /// them as unused, as the real run will.
    pub emptied_contents: HashSet<String>,
    /// Hashes whose directories the purge could not remove. They are reported as purge
    /// failures; the directory check does not list them again (a later run does), so
    /// a dry run and the real run list the same directories.
    pub failed_removals: HashSet<String>,
}

impl DendriteStore<'_> {
    /// The check that runs before the purge: thumbnail rows without their media row.
    /// With `repair`, repairs what it finds (a dry run only counts what would be).
    pub async fn check_before_purge(
        &self,
        repair: Option<RunMode>,
        report: &mut SanityReport,
    ) -> Result<(), CleanError> {
        self.check_orphan_thumbnails(repair, &mut report.orphan_thumbnail_rows)
            .await
    }

    /// The checks that run after the purge, on what it left: hash directories no row
    /// uses, and stale `tmp/` directories.
    pub async fn check_after_purge(
        &self,
        repair: Option<RunMode>,
        findings: &WalkFindings,
        report: &mut SanityReport,
    ) -> Result<(), CleanError> {
        self.check_unreferenced_directories(repair, findings, report)
            .await?;
        self.check_stale_tmp(repair, report);
        Ok(())
    }

    async fn check_orphan_thumbnails(
        &self,
        repair: Option<RunMode>,
        found: &mut Listed,
    ) -> Result<(), CleanError> {
        let (count, sample) = self.media_db.orphan_thumbnails(LISTED_ITEMS as i64).await?;
        found.found = count;
        found.items = sample;
        found.fixed = match repair {
            Some(RunMode::Apply) => self.media_db.delete_orphan_thumbnails().await?,
            Some(RunMode::DryRun) => count,
            None => 0,
        };
        Ok(())
    }

    /// Checks that the rows of one page of content groups have their `file` (the purge
    /// runs it on every page before planning it). With `repair`, remote rows without
    /// their file are deleted (Dendrite fetches them again), except avatars, which are
    /// never deleted; local rows cannot be fetched again and stay. The run has already
    /// refused a folder where most rows lack their file (see [`crate::safety`]), so this
    /// repairs single rows, never a folder that is not there. Returns the rows deleted
    /// or (in a dry run) to be deleted: the purge leaves them out. Rows whose identifiers
    /// are invalid are not checked (the purge lists them as failures); a content they use
    /// never counts as emptied.
    pub(crate) async fn check_page_files(
        &self,
        page: &MediaPage,
        repair: Option<RunMode>,
        report: &mut SanityReport,
        findings: &mut WalkFindings,
    ) -> Result<HashSet<MediaKey>, CleanError> {
        let mut refetchable = Vec::new();
        for group in page.rows.chunk_by(|a, b| a.base64hash == b.base64hash) {
            let present = match ContentHash::parse(&group[0].base64hash) {
                Ok(hash) => self.folder.has_file(&hash),
                Err(reason) => {
                    for row in group {
                        report
                            .rows_with_invalid_hash
                            .push(|| format!("{}: {reason}", row.key));
                    }
                    continue;
                }
            };
            if present {
                continue;
            }
            let refetchable_before = refetchable.len();
            for row in group {
                let local = row.key.origin == *self.server_name;
                let avatar = self.avatars.contains(&row.key);
                report.rows_without_file.push(|| {
                    format!(
                        "{} ({}, {})",
                        row.key,
                        match (local, avatar) {
                            (_, true) => "avatar: kept",
                            (true, false) => "local: lost",
                            (false, false) => "remote",
                        },
                        row.base64hash
                    )
                });
                if !local && !avatar {
                    refetchable.push(row.key.clone());
                }
            }
            let all_refetchable = refetchable.len() - refetchable_before == group.len()
                && !page.invalid_rows_use(&group[0].base64hash);
            if repair == Some(RunMode::DryRun) && all_refetchable {
                findings
                    .emptied_contents
                    .insert(group[0].base64hash.clone());
            }
        }
        report.rows_without_file.fixed += match repair {
            Some(RunMode::Apply) if !refetchable.is_empty() => {
                self.media_db.delete_media(&refetchable).await?.media
            }
            Some(_) => refetchable.len() as u64,
            None => return Ok(HashSet::new()),
        };
        Ok(refetchable.into_iter().collect())
    }

    async fn check_unreferenced_directories(
        &self,
        repair: Option<RunMode>,
        findings: &WalkFindings,
        report: &mut SanityReport,
    ) -> Result<(), CleanError> {
        let io_error = |source| CleanError::Io {
            path: self.folder.base().to_owned(),
            source,
        };
        let mut batch: Vec<ContentHash> = Vec::new();
        let fanouts = self.folder.fanout_dirs().map_err(io_error)?;
        for (i, fanout) in fanouts.iter().enumerate() {
            batch.extend(self.folder.content_dirs_in(fanout).map_err(io_error)?);
            if batch.len() >= DIRECTORIES_PER_CHECK || i + 1 == fanouts.len() {
                self.repair_unreferenced(std::mem::take(&mut batch), repair, findings, report)
                    .await?;
            }
        }
        Ok(())
    }

    /// Checks one batch of hash directories against the database; lists (and repairs)
    /// the ones no row uses.
    async fn repair_unreferenced(
        &self,
        batch: Vec<ContentHash>,
        repair: Option<RunMode>,
        findings: &WalkFindings,
        report: &mut SanityReport,
    ) -> Result<(), CleanError> {
        if batch.is_empty() {
            return Ok(());
        }
        let hashes: Vec<String> = batch.iter().map(|h| h.as_str().to_owned()).collect();
        let checked_at = check_time();
        let in_use = self.media_db.contents_in_use(&hashes).await?;
        let unreferenced: Vec<ContentHash> = batch
            .into_iter()
            .filter(|h| {
                let h = h.as_str();
                (!in_use.contains(h) || findings.emptied_contents.contains(h))
                    && !findings.failed_removals.contains(h)
            })
            .collect();
        let found = &mut report.unreferenced_directories;
        for hash in &unreferenced {
            found.push(|| self.folder.content_dir(hash).display().to_string());
        }
        if let Some(mode) = repair {
            let results = self.folder.remove_contents(&unreferenced, mode, checked_at);
            for (hash, result) in unreferenced.iter().zip(results) {
                match result {
                    Ok(removed) => found.fixed += u64::from(removed.directory_removed),
                    Err(e) => report.failures.push(
                        self.folder.content_dir(hash).display().to_string(),
                        FailureReason::DirectoryNotRemoved,
                        e.to_string(),
                    ),
                }
            }
        }
        Ok(())
    }

    fn check_stale_tmp(&self, repair: Option<RunMode>, report: &mut SanityReport) {
        let stale = match self.folder.stale_tmp_dirs() {
            Ok(stale) => stale,
            Err(e) => {
                report.failures.push(
                    self.folder.base().join("tmp").display().to_string(),
                    FailureReason::TmpNotChecked,
                    format!("stale tmp/ directories not checked: {e}"),
                );
                return;
            }
        };
        let found = &mut report.stale_tmp_directories;
        for name in stale {
            found.push(|| self.folder.tmp_path(&name).display().to_string());
            let Some(mode) = repair else { continue };
            match self.folder.remove_tmp_dir(&name, mode) {
                Ok(()) => found.fixed += 1,
                Err(e) => report.failures.push(
                    self.folder.tmp_path(&name).display().to_string(),
                    FailureReason::TmpNotRemoved,
                    e.to_string(),
                ),
            }
        }
    }
}
