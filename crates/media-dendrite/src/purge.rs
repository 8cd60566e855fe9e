//! The purge: content groups page by page → retention plan → rows deleted in one
//! transaction per page → hash directories no remaining row uses removed after commit.
//!
//! Order is the crash-safety: the database commits first, files go after. A crash in
//! between leaves hash directories no row uses; the sanity check lists them and `--fix`
//! removes them. The reverse (rows whose file is gone) never happens for local media.

use std::sync::atomic::Ordering::Relaxed;

use futures::TryStreamExt;
use media_core::records::MediaKey;
use media_core::retention::{Candidate, KeepReason, Locality, RetentionPolicy, plan_page};
use media_core::run::RunMode;

use crate::db::{MediaPage, MediaRow};
use crate::error::CleanError;
use crate::layout::{ContentHash, RemovedFiles, check_time};
use crate::report::{FailureReason, PurgeReport, SanityReport};
use crate::sanity::WalkFindings;
use crate::store::DendriteStore;

/// Media rows per page (whole content groups; a few MB of rows). Each page costs one
/// table scan (Dendrite has no index on base64hash), so pages are large.
pub const ROWS_PER_PAGE: i64 = 20_000;

impl DendriteStore<'_> {
    fn candidate(&self, row: MediaRow) -> Candidate {
        let avatar = self.avatars.contains(&row.key);
        // The recorded size only describes the plan (bytes freed are measured on disk), so
        // a negative one does not stop the purge; it is said, not silently read as 0.
        let size_bytes = u64::try_from(row.file_size_bytes).unwrap_or_else(|_| {
            tracing::warn!(
                "media row {} records a negative file_size_bytes {}: the database row is \
                 damaged; its size is taken as unknown (bytes freed are measured on disk)",
                row.key,
                row.file_size_bytes
            );
            0
        });
        Candidate {
            locality: if row.key.origin == *self.server_name {
                Locality::Local
            } else {
                Locality::Remote
            },
            key: row.key,
            uploader: row.uploader,
            created_ts: row.creation_ts,
            content: row.base64hash,
            size_bytes,
            avatar,
        }
    }

    /// Walks every content group once, a page at a time: decodes the page's rows (a row
    /// with an invalid identifier is listed as a failure and kept, and so is its
    /// content), checks their files (the sanity check's `rows_without_file`, repaired with
    /// `repair`), then purges what `policy` selects in it (the report's `selection` is
    /// left for the caller to describe). A dry run computes the same plan, counts the
    /// same rows and sizes the same files, and changes nothing.
    pub async fn check_and_purge(
        &self,
        policy: &RetentionPolicy,
        mode: RunMode,
        repair: Option<RunMode>,
        sanity: &mut SanityReport,
        findings: &mut WalkFindings,
    ) -> Result<PurgeReport, CleanError> {
        let mut report = PurgeReport::default();
        let mut removal = None;
        let mut pages = self.media_db.content_group_pages(ROWS_PER_PAGE);
        while let Some(rows) = pages.try_next().await? {
            let walked = rows.len() as u64;
            let mut page = MediaPage::decode(rows);
            for invalid in &page.invalid {
                report.failures.push(
                    invalid.row.mxc(),
                    FailureReason::InvalidRow,
                    format!("{}; the row and its content are kept", invalid.error),
                );
            }
            let repaired = self
                .check_page_files(&page, repair, sanity, findings)
                .await?;
            let candidates: Vec<Candidate> = std::mem::take(&mut page.rows)
                .into_iter()
                .filter(|row| !repaired.contains(&row.key))
                .map(|row| self.candidate(row))
                .collect();
            let mut plan = plan_page(policy, &candidates);
            drop(candidates);
            plan.keep_contents_in_use(|content| page.invalid_rows_use(content));
            report.kept.avatar += plan.kept.rows_for(KeepReason::Avatar);
            report.kept.recent += plan.kept.rows_for(KeepReason::Recent);
            report.kept.local += plan.kept.rows_for(KeepReason::Local);
            report.kept.shared_hash_directories += plan.kept.shared_contents;
            let mut delete_rows = plan.delete_rows;
            // In key order, the deletes walk the (media_id, media_origin) index forward.
            delete_rows.sort_unstable();
            self.delete_rows(&delete_rows, mode, &mut report).await?;
            let hashes: Vec<String> = plan
                .remove_contents
                .into_iter()
                .map(|c| c.content)
                .collect();
            let checked_at = check_time();
            let removable = self
                .removable_directories(hashes, mode, &mut report)
                .await?;
            // This page's directories go while the next page is read and deleted (pages
            // hold disjoint hashes); one removal in flight at a time.
            if let Some(previous) = removal.take() {
                let waiting = std::time::Instant::now();
                self.account_removals(previous.await, &mut report, findings);
                tracing::debug!(
                    "waited {:.2} s for the previous page's directories",
                    waiting.elapsed().as_secs_f64()
                );
            }
            self.progress.items_done.fetch_add(walked, Relaxed);
            let folder = self.folder.clone();
            removal = Some(tokio::task::spawn_blocking(move || {
                let results = folder.remove_contents(&removable, mode, checked_at);
                (removable, results)
            }));
        }
        if let Some(previous) = removal {
            self.account_removals(previous.await, &mut report, findings);
        }
        Ok(report)
    }

    async fn delete_rows(
        &self,
        rows: &[MediaKey],
        mode: RunMode,
        report: &mut PurgeReport,
    ) -> Result<(), CleanError> {
        if rows.is_empty() {
            return Ok(());
        }
        match mode {
            RunMode::Apply => {
                let deleted = self.media_db.delete_media(rows).await?;
                report.media_rows_deleted += deleted.media;
                report.thumbnail_rows_deleted += deleted.thumbnails;
            }
            RunMode::DryRun => {
                report.media_rows_deleted += rows.len() as u64;
                report.thumbnail_rows_deleted += self.media_db.count_thumbnails(rows).await?;
            }
        }
        Ok(())
    }

    /// The directories of `hashes` (whose rows the plan deleted) to remove. In a real
    /// run, a hash some row uses again (Dendrite stored the same bytes meanwhile) is
    /// kept: that is checked in SQL, after the rows' commit and right before removal. An
    /// invalid hash is listed as a failure and never becomes a path.
    async fn removable_directories(
        &self,
        hashes: Vec<String>,
        mode: RunMode,
        report: &mut PurgeReport,
    ) -> Result<Vec<ContentHash>, CleanError> {
        let in_use_again = match mode {
            RunMode::Apply if !hashes.is_empty() => self.media_db.contents_in_use(&hashes).await?,
            _ => Default::default(),
        };
        let mut valid = Vec::with_capacity(hashes.len());
        for hash in hashes {
            if in_use_again.contains(&hash) {
                report.kept.directories_in_use_again += 1;
                continue;
            }
            match ContentHash::parse(&hash) {
                Ok(hash) => valid.push(hash),
                Err(reason) => report
                    .failures
                    .push(hash, FailureReason::InvalidHash, reason),
            }
        }
        Ok(valid)
    }

    /// Adds the outcome of one page's directory removals to the report.
    fn account_removals(
        &self,
        joined: Result<RemovalOutcome, tokio::task::JoinError>,
        report: &mut PurgeReport,
        findings: &mut WalkFindings,
    ) {
        let (hashes, results) = joined.expect("a directory removal task panicked");
        for (hash, result) in hashes.iter().zip(results) {
            match result {
                Ok(removed) => {
                    report.directories_removed += u64::from(removed.directory_removed);
                    report.kept.directories_in_use_again += u64::from(removed.changed_since_check);
                    report.bytes_freed += removed.bytes;
                }
                Err(e) => {
                    report.failures.push(
                        hash.as_str(),
                        FailureReason::DirectoryNotRemoved,
                        e.to_string(),
                    );
                    findings.failed_removals.insert(hash.as_str().to_owned());
                }
            }
        }
        self.progress.bytes.store(report.bytes_freed, Relaxed);
    }
}

/// The directories one page removed, with each one's result.
type RemovalOutcome = (Vec<ContentHash>, Vec<std::io::Result<RemovedFiles>>);
