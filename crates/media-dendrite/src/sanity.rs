//! Sanity checks between Dendrite's media tables and its media folder, and their repairs.

use std::collections::HashSet;

use futures::TryStreamExt;
use media_core::retention::MediaRef;
use media_db::dendrite::GroupFilter;

use crate::error::CleanError;
use crate::layout::{ContentHash, Mode};
use crate::purge::{DendriteStore, ROWS_PER_PAGE};
use crate::report::{LISTED_ITEMS, Listed, SanityReport};

/// Hash directories checked against the database per query.
const DIRECTORIES_PER_CHECK: usize = 20_000;

/// The rows a dry run's repairs would have deleted: the rest of the dry run (the
/// other checks, the purge) must see the database as the real run will, or the dry run
/// would report those rows twice.
#[derive(Debug, Default)]
pub struct SimulatedRepairs {
    /// Rows that would have been deleted.
    pub rows: HashSet<MediaRef>,
    /// Hashes no row would use any more.
    pub emptied_contents: HashSet<String>,
}

impl DendriteStore<'_> {
    /// Runs every sanity check; with `fix`, repairs what it finds (a dry run only counts
    /// what would be repaired, and returns it for the purge to leave out).
    pub async fn sanity_check(
        &self,
        fix: bool,
        mode: Mode,
    ) -> Result<(SanityReport, SimulatedRepairs), CleanError> {
        let repair = if fix { Some(mode) } else { None };
        let mut report = SanityReport::default();
        let mut simulated = SimulatedRepairs::default();
        let started = std::time::Instant::now();
        let checked = |check: &str| {
            tracing::debug!(
                "{check} checked at {:.1} s",
                started.elapsed().as_secs_f64()
            );
        };
        self.check_orphan_thumbnails(repair, &mut report.orphan_thumbnail_rows)
            .await?;
        checked("orphan thumbnails");
        self.check_rows_have_files(repair, &mut report, &mut simulated)
            .await?;
        checked("rows without file");
        self.check_unreferenced_directories(
            repair,
            &simulated,
            &mut report.unreferenced_directories,
        )
        .await?;
        checked("unreferenced directories");
        self.check_stale_tmp(repair, &mut report.stale_tmp_directories)?;
        Ok((report, simulated))
    }

    async fn check_orphan_thumbnails(
        &self,
        repair: Option<Mode>,
        found: &mut Listed,
    ) -> Result<(), CleanError> {
        let (count, sample) = self.media_db.orphan_thumbnails(LISTED_ITEMS as i64).await?;
        found.found = count;
        found.items = sample
            .iter()
            .map(|key| format!("mxc://{}/{}", key.origin, key.media_id))
            .collect();
        found.fixed = match repair {
            Some(Mode::Apply) => self.media_db.delete_orphan_thumbnails().await?,
            Some(Mode::DryRun) => count,
            None => 0,
        };
        Ok(())
    }

    async fn check_rows_have_files(
        &self,
        repair: Option<Mode>,
        report: &mut SanityReport,
        simulated: &mut SimulatedRepairs,
    ) -> Result<(), CleanError> {
        let mut pages = self
            .media_db
            .content_group_pages(GroupFilter::All, ROWS_PER_PAGE);
        while let Some(rows) = pages.try_next().await? {
            let mut refetchable = Vec::new();
            for group in rows.chunk_by(|a, b| a.base64hash == b.base64hash) {
                let present = match ContentHash::parse(&group[0].base64hash) {
                    Ok(hash) => self.folder.has_file(&hash),
                    Err(reason) => {
                        for row in group {
                            report.rows_with_invalid_hash.push(|| {
                                format!("mxc://{}/{}: {reason}", row.media_origin, row.media_id)
                            });
                        }
                        continue;
                    }
                };
                if present {
                    continue;
                }
                let refetchable_before = refetchable.len();
                for row in group {
                    let local = row.media_origin == self.server_name.as_str();
                    report.rows_without_file.push(|| {
                        format!(
                            "mxc://{}/{} ({}, {})",
                            row.media_origin,
                            row.media_id,
                            if local { "local: lost" } else { "remote" },
                            row.base64hash
                        )
                    });
                    if !local {
                        refetchable.push(MediaRef {
                            origin: row.media_origin.clone(),
                            media_id: row.media_id.clone(),
                        });
                    }
                }
                if repair == Some(Mode::DryRun) {
                    let group_rows = refetchable.len() - refetchable_before;
                    if group_rows == group.len() {
                        simulated
                            .emptied_contents
                            .insert(group[0].base64hash.clone());
                    }
                    simulated
                        .rows
                        .extend(refetchable[refetchable_before..].iter().cloned());
                }
            }
            report.rows_without_file.fixed += match repair {
                Some(Mode::Apply) if !refetchable.is_empty() => {
                    self.media_db.delete_media(&refetchable).await?.media
                }
                Some(_) => refetchable.len() as u64,
                None => 0,
            };
        }
        Ok(())
    }

    async fn check_unreferenced_directories(
        &self,
        repair: Option<Mode>,
        simulated: &SimulatedRepairs,
        found: &mut Listed,
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
                self.repair_unreferenced(std::mem::take(&mut batch), repair, simulated, found)
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
        repair: Option<Mode>,
        simulated: &SimulatedRepairs,
        found: &mut Listed,
    ) -> Result<(), CleanError> {
        if batch.is_empty() {
            return Ok(());
        }
        let hashes: Vec<String> = batch.iter().map(|h| h.as_str().to_owned()).collect();
        let in_use = self.media_db.contents_in_use(&hashes).await?;
        let unreferenced: Vec<ContentHash> = batch
            .into_iter()
            .filter(|h| {
                !in_use.contains(h.as_str()) || simulated.emptied_contents.contains(h.as_str())
            })
            .collect();
        for hash in &unreferenced {
            found.push(|| self.folder.content_dir(hash).display().to_string());
        }
        if let Some(mode) = repair {
            let results = self.folder.remove_contents(&unreferenced, mode);
            for (hash, result) in unreferenced.iter().zip(results) {
                match result {
                    Ok(_) => found.fixed += 1,
                    Err(e) => tracing::warn!("cannot remove {}: {e}", hash.as_str()),
                }
            }
        }
        Ok(())
    }

    fn check_stale_tmp(&self, repair: Option<Mode>, found: &mut Listed) -> Result<(), CleanError> {
        let stale = self
            .folder
            .stale_tmp_dirs()
            .map_err(|source| CleanError::Io {
                path: self.folder.base().join("tmp"),
                source,
            })?;
        for path in stale {
            found.push(|| path.display().to_string());
            match repair {
                Some(Mode::Apply) => match self.folder.remove_tmp_dir(&path) {
                    Ok(()) => found.fixed += 1,
                    Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
                },
                Some(Mode::DryRun) => found.fixed += 1,
                None => {}
            }
        }
        Ok(())
    }
}
